"""Promotion state of the registry: which artifact is active (or shadow) per policy kind.

The registry (:mod:`pushrl.policies.registry`) stores immutable artifacts; this module keeps
the mutable part beside them::

    policies/_active.json    {"generation": N, "timing": {"active", "shadow", "history"},
                              "item": {...}}
    policies/_audit.jsonl    one JSON line per promote / rollback / force / kill switch

``active`` is ``"name@version"`` or ``null`` (the default baseline). Writers take a lock file
and replace the pointer atomically, so the CLI and a running server can both change it; the
server notices a new ``generation`` and swaps policies without a restart.

Promotion runs the OPE gate (:mod:`pushrl.ope.gate`) on the evidence in the artifact's model
card (``card["ope"]["gate"]``, written by ``pushrl evaluate``); ``force=True`` with a reason
overrides a failing or unavailable gate and is recorded in the audit log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import getpass
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pushrl.errors import ArtifactError, PushrlError
from pushrl.serve.pointer import ACTIVE, AUDIT, DEFAULTS, KINDS, NO_SHADOW, read_active, slot_of
from pushrl.serve.policyset import prove
from pushrl.policies.registry import (
    CARD,
    check_identity,
    read_card,
    resolve,
    verify_artifact,
)

class GateRefused(PushrlError):
    """The OPE gate refused a promotion (or is unavailable) and it was not forced."""


def _write_durably(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` atomically and durably: a temporary file is written and
    fsynced, renamed over ``path``, and the directory is fsynced (so the rename survives a
    power loss). Readers see the old or the new content, never a mix."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(registry: Path) -> Iterator[dict[str, Any]]:
    """Read-modify-write the pointer under an exclusive lock; written atomically on exit
    (nothing is written when the body raises)."""
    registry.mkdir(parents=True, exist_ok=True)
    with open(registry / (ACTIVE + ".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = read_active(registry)
        yield data
        data["generation"] = int(data.get("generation", 0)) + 1
        _write_durably(registry / ACTIVE, json.dumps(data, indent=2, sort_keys=True))


def audit(registry: str | Path, action: str, **fields: Any) -> dict[str, Any]:
    """Append one audit record (who, when, what) and return it."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    rec = {"ts": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "action": action,
           "user": fields.pop("user", who), **fields}
    Path(registry).mkdir(parents=True, exist_ok=True)
    with open(Path(registry) / AUDIT, "a") as f:
        f.write(json.dumps(rec, sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return rec


def list_artifacts(registry: str | Path) -> list[dict[str, Any]]:
    """Summary of every artifact version in the registry (cards read, files not verified).

    One unreadable card does not hide the others: its entry carries ``broken`` (the reason)
    and ``None`` for what the card would have said.
    """
    out: list[dict[str, Any]] = []
    root = Path(registry)
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        if not d.is_dir() or d.name.startswith((".", "_")):
            continue
        for v in sorted(d.glob("v*"),
                        key=lambda p: int(p.name[1:]) if p.name[1:].isdigit() else -1):
            if not (v / CARD).exists():
                continue
            entry: dict[str, Any] = {"name": d.name, "version": v.name, "kind": None,
                                     "loader": None, "created_at": None,
                                     "data_fingerprint": None, "gate": None, "broken": None}
            try:
                card = read_card(v)
                check_identity(v, card)
                entry.update({"kind": card.get("kind"), "loader": card.get("loader"),
                              "created_at": card.get("created_at"),
                              "data_fingerprint": card.get("data_fingerprint",
                                                           card.get("training_data_fingerprint")),
                              "gate": _gate_evidence(card)})
            except (ArtifactError, OSError) as exc:
                entry["broken"] = str(exc)
            out.append(entry)
    return out


def artifact_dir(registry: str | Path, name: str, version: str | None = None) -> Path:
    """Directory of ``name`` (newest version unless ``version``)."""
    if "/" in name or name.startswith((".", "_")) or not name:
        raise ArtifactError(f"invalid policy name {name!r}")
    base = Path(registry) / name
    if version is not None:
        p = base / version
        if not (p / CARD).exists():
            raise ArtifactError(f"no artifact {name}@{version} in {registry}; "
                                "see `pushrl policies list`")
        return p
    if not base.is_dir():
        raise ArtifactError(f"no policy {name!r} in {registry}; see `pushrl policies list`")
    return resolve(base)


def _gate_evidence(card: dict[str, Any]) -> dict[str, Any] | None:
    for holder in (card.get("ope"), card.get("ope_report"), card):
        if isinstance(holder, dict) and isinstance(holder.get("gate"), dict):
            return holder["gate"]  # type: ignore[no-any-return]
    return None


def run_gate(card: dict[str, Any]) -> dict[str, Any]:
    """Apply the OPE gate's decision recorded in ``card``.

    Returns:
        ``{"passed": bool, "failed_rules": [...], "messages": [...]}`` or
        ``{"passed": False, "unavailable": "..."}`` when no gate can be applied.
    """
    ev = _gate_evidence(card)
    if ev is None or "passed" not in ev:
        return {"passed": False, "unavailable": "OPE gate unavailable for this artifact: its "
                "model card has no gate decision (run `pushrl evaluate` on logged data first)"}
    return {"passed": bool(ev["passed"]), "failed_rules": list(ev.get("failed_rules", [])),
            "messages": list(ev.get("messages", []))}


def promote(registry: str | Path, name: str, version: str | None = None, *,
            shadow: bool = False, force: bool = False, reason: str | None = None,
            user: str | None = None, check: Callable[[Any], None] | None = None
            ) -> dict[str, Any]:
    """Make ``name@version`` the active (or shadow) policy of its kind.

    In order, before anything changes: checksums and identity are verified, the OPE gate is
    applied (a promotion, not a shadow, must pass it unless ``force`` with a ``reason``), the
    artifact is loaded and makes one decision on a synthetic context
    (:func:`pushrl.serve.policyset.prove`), and ``check`` (the running server's own test,
    e.g. its item catalog) accepts it. Only then is the pointer replaced, atomically. A
    refused or failed promotion leaves the pointer as it was (and is audited).

    Args:
        check: Called with the loaded :class:`~pushrl.serve.policyset.Loaded` policy; raises
            to refuse it.

    Returns:
        ``{"kind", "active", "shadow", "generation", "gate"}``.

    Raises:
        ArtifactError: missing, modified, misnamed or unloadable artifact.
        GateRefused: the gate failed or is unavailable and the promotion was not forced.
    """
    registry = Path(registry)
    who = {"user": user} if user else {}
    if force and not (reason and reason.strip()):
        raise GateRefused("--force needs --reason \"...\" (it is recorded in the audit log)")
    path = artifact_dir(registry, name, version)
    card = verify_artifact(path)
    kind = slot_of(card)
    if kind not in KINDS:
        raise ArtifactError(f"{path}: model card kind {kind!r} is not one of {KINDS}")
    if shadow and kind in NO_SHADOW:
        raise ArtifactError(f"{name}: a {kind} policy has no shadow slot; compare it first "
                            "(`pushrl compare --triggers DATA`) and promote it")
    ref = f"{name}@{path.name}"  # the registry path is the identity, never the card's name
    gate = None
    if not shadow:
        gate = run_gate(card)
        if not gate["passed"]:
            rules = gate.get("failed_rules") or []
            why = gate.get("unavailable") or (
                "OPE gate failed" + (f" ({', '.join(rules)})" if rules else "") + ": "
                + "; ".join(gate.get("messages") or rules or ["no reason given"]))
            if not force:
                audit(registry, "promote_refused", policy=ref, kind=kind, gate=gate, **who)
                raise GateRefused(f"refusing to promote {ref}: {why}; pass --force --reason "
                                  "\"...\" to override (audited)")
    try:
        loaded = prove(registry, ref, kind)
        if check is not None:
            check(loaded)
    except Exception as exc:
        audit(registry, "promote_failed", policy=ref, kind=kind, shadow=shadow, force=force,
              error=str(exc), reason=reason, **who)
        raise
    with _locked(registry) as data:
        slot = data[kind]
        if shadow:
            slot["shadow"] = ref
        else:
            if slot["active"] != ref:
                slot["history"].append(slot["active"])
            slot["active"] = ref
        out = {"kind": kind, "active": slot["active"], "shadow": slot["shadow"], "gate": gate}
    out["generation"] = read_active(registry)["generation"]
    audit(registry, "shadow" if shadow else ("promote_forced" if force and gate and not
                                             gate["passed"] else "promote"),
          policy=ref, kind=kind, gate=gate, reason=reason, **who)
    return out


def rollback(registry: str | Path, name: str, *, reason: str | None = None,
             user: str | None = None) -> dict[str, Any]:
    """Undo the last promotion of the slot where ``name`` is active, or stop its shadow.

    Raises:
        ArtifactError: ``name`` is neither active nor shadow, or there is nothing to roll back.
    """
    registry = Path(registry)
    with _locked(registry) as data:
        hit = None
        for kind in KINDS:
            slot = data[kind]
            if _name(slot["active"]) == name or (slot["active"] is None and DEFAULTS[kind]
                                                 == name.replace("_", "-")):
                hit = (kind, "active")
                break
            if _name(slot["shadow"]) == name:
                hit = (kind, "shadow")
                break
        if hit is None:
            raise ArtifactError(f"{name!r} is neither an active nor a shadow policy; see "
                                "`pushrl policies list`")
        kind, where = hit
        slot = data[kind]
        before = slot[where]
        if where == "shadow":
            slot["shadow"] = None
        else:
            if not slot["history"]:
                raise ArtifactError(f"nothing to roll back for {kind}: {name} is the first "
                                    "promoted policy (promote another one instead)")
            slot["active"] = slot["history"].pop()
        out = {"kind": kind, "active": slot["active"], "shadow": slot["shadow"], "gate": None}
    out["generation"] = read_active(registry)["generation"]
    audit(registry, f"rollback_{where}", policy=before, kind=kind, now=out["active"],
          reason=reason, **({"user": user} if user else {}))
    return out


def _name(ref: str | None) -> str | None:
    return None if ref is None else ref.split("@", 1)[0]
