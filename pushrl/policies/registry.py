"""The policy registry on disk: versioned artifacts with a JSON model card and checksums.

Layout::

    policies/<name>/<version>/card.json     model card (kind, loader, data fingerprint, params,
                                            metrics, OPE report, sha256 of every file)
    policies/<name>/<version>/<files...>    model files (VW model, SB3 zip, feature spec, ...)

Artifacts are verified by sha256 *before* anything is loaded: SB3 zips contain pickles, and an
unverified one is never opened. Promotion state (which version is active) is kept by the
serving layer, not here.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pushrl.data.io import sha256_file
from pushrl.errors import ArtifactError

if TYPE_CHECKING:
    from pushrl.policies.base import Policy

CARD = "card.json"
REGISTRY_FORMAT = "pushrl/registry/v1"
#: loader name -> module that registers it on import
LOADER_MODULES: dict[str, str] = {
    "vw": "pushrl.policies.vw",
    "ppo": "pushrl.policies.ppo",
    "baseline": "pushrl.policies.baselines",
    "vw_template": "pushrl.policies.template_policy",
    "vw_channel": "pushrl.policies.channel_policy",
}
_VERSION = re.compile(r"v[0-9]+")
_LOADERS: dict[str, Callable[[Path, dict[str, Any]], Any]] = {}


def register_loader(name: str) -> Callable[[Callable[[Path, dict[str, Any]], Any]],
                                           Callable[[Path, dict[str, Any]], Any]]:
    """Decorator registering ``fn(artifact_dir, card) -> Policy`` under ``name``."""

    def deco(fn: Callable[[Path, dict[str, Any]], Any]) -> Callable[[Path, dict[str, Any]], Any]:
        _LOADERS[name] = fn
        return fn

    return deco


def _next_version(base: Path) -> str:
    if not base.exists():
        return "v1"
    nums = [int(p.name[1:]) for p in base.glob("v*") if p.name[1:].isdigit()]
    return f"v{max(nums, default=0) + 1}"


def _portable(value: Any) -> Any:
    """``value`` with absolute paths under the working directory made relative to it, so a
    model card does not record the machine it was trained on."""
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_portable(v) for v in value]
    if isinstance(value, Path | str) and os.path.isabs(value):
        try:
            return Path(value).resolve().relative_to(Path.cwd().resolve()).as_posix()
        except ValueError:
            return str(value)
    return value


def save_artifact(out: str | Path, *, kind: str, loader: str, files: dict[str, str | Path | bytes],
                  card: dict[str, Any], versioned: bool = True) -> Path:
    """Write an artifact directory with a model card and a sha256 for every file.

    Args:
        out: ``policies/NAME`` (a new version directory ``vN`` is created inside it when
            ``versioned``) or the exact target directory when not.
        kind: ``"item"`` or ``"timing"``.
        loader: Key of the loader (see :data:`LOADER_MODULES`).
        files: ``filename -> source path or bytes``.
        card: Extra model-card fields (params, metrics, training data fingerprint, ...).

    Returns:
        The artifact directory.
    """
    out = Path(out)
    target = out / _next_version(out) if versioned else out
    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    sums: dict[str, str] = {}
    for fname, src in files.items():
        dst = tmp / fname
        if isinstance(src, bytes):
            dst.write_bytes(src)
        else:
            shutil.copyfile(src, dst)
        sums[fname] = sha256_file(dst)
    full = {
        "format": REGISTRY_FORMAT,
        "name": out.name if versioned else target.parent.name,
        "version": target.name,
        "kind": kind,
        "loader": loader,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **_portable(card),
        "files": sums,
    }
    (tmp / CARD).write_text(json.dumps(full, indent=2, sort_keys=True, default=str))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def update_card(path: str | Path, key: str, value: Any) -> Path:
    """Set ``card[key] = value`` in the artifact's model card and replace ``card.json``
    atomically (temp file + rename). The card is not among the checksummed files: the OPE
    evidence (``ope``) and the selection verdict (``selection``) are recorded this way.

    Returns:
        The card path.
    """
    card_path = Path(path) / CARD
    card = json.loads(card_path.read_text())
    card[key] = value
    tmp = card_path.with_name(card_path.name + ".tmp")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=True, default=str))
    os.replace(tmp, card_path)
    return card_path


def read_card(path: str | Path) -> dict[str, Any]:
    """Read a model card without verifying files (for listing)."""
    p = Path(path) / CARD
    if not p.exists():
        raise ArtifactError(f"{path} is not a policy artifact (no {CARD}); "
                            "pass policies/NAME/VERSION or train one first")
    try:
        card = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{p}: model card is not valid JSON ({exc})") from None
    if not isinstance(card, dict):
        raise ArtifactError(f"{p}: model card must be a JSON object, got "
                            f"{type(card).__name__}; re-export the artifact")
    return card


def check_identity(path: str | Path, card: dict[str, Any]) -> None:
    """Refuse a card whose ``name``/``version`` disagree with where the artifact lives.

    An artifact's identity is its registry path ``NAME/vN``: a copied directory whose card
    still names the original (and claims its gate verdict) must not pass for it.

    Raises:
        ArtifactError: the card names another artifact than its directory.
    """
    path = Path(path)
    version = str(card.get("version", ""))
    if not (_VERSION.fullmatch(path.name) or _VERSION.fullmatch(version)):
        return  # not in the registry layout (an ad-hoc export directory)
    name = str(card.get("name", ""))
    if (name, version) != (path.parent.name, path.name):
        raise ArtifactError(
            f"{path}: its model card says it is {name or '?'}@{version or '?'} but it lives "
            f"at {path.parent.name}@{path.name}; an artifact's identity is its registry path "
            "NAME/vN, so a copied or renamed directory is refused (re-save it under its own "
            "name, e.g. re-run `pushrl train ...` with --out)")


def verify_artifact(path: str | Path) -> dict[str, Any]:
    """Check every file of an artifact against the card's sha256; return the card.

    Raises:
        ArtifactError: missing card, missing file, checksum mismatch, or a card whose
            ``name@version`` is not the artifact's registry path (:func:`check_identity`).
    """
    path = Path(path)
    card = read_card(path)
    files = card.get("files", {})
    if not isinstance(files, dict):
        raise ArtifactError(f"{path}: the model card's `files` must map file names to sha256 "
                            "digests; re-export the artifact")
    for fname, digest in files.items():
        f = path / fname
        if not f.exists():
            raise ArtifactError(f"{path}: file {fname} listed in the card is missing; "
                                "re-export the artifact")
        got = sha256_file(f)
        if got != digest:
            raise ArtifactError(f"{path}: checksum mismatch for {fname} (card {digest[:12]}, "
                                f"file {got[:12]}); refusing to load a modified artifact")
    check_identity(path, card)
    return card


def resolve(path: str | Path) -> Path:
    """Resolve ``policies/NAME`` to its newest version dir; a version dir is returned as is."""
    p = Path(path)
    if (p / CARD).exists():
        return p
    versions = sorted((v for v in p.glob("v*") if (v / CARD).exists()),
                      key=lambda v: int(v.name[1:]) if v.name[1:].isdigit() else -1)
    if not versions:
        raise ArtifactError(f"no policy artifact at {p}; train one (`pushrl train ...`) or "
                            "name a baseline")
    return versions[-1]


def load_policy(path: str | Path) -> Policy:
    """Verify and load a policy artifact (newest version when given ``policies/NAME``)."""
    p = resolve(path)
    return _load(p, verify_artifact(p))


def load_policy_of(path: str | Path, loader: str, refusal: str) -> tuple[Policy, Path]:
    """:func:`load_policy` of an artifact that must have ``loader`` (checksums verified
    once); the policy and its version directory.

    Raises:
        ArtifactError: what :func:`load_policy` raises, or ``refusal`` for another loader.
    """
    p = resolve(path)
    card = verify_artifact(p)
    if card.get("loader") != loader:
        raise ArtifactError(refusal)
    return _load(p, card), p


def _load(p: Path, card: dict[str, Any]) -> Policy:
    """The registered loader of a verified artifact ``p`` with model card ``card``."""
    loader = card.get("loader", "")
    if loader not in _LOADERS and loader in LOADER_MODULES:
        importlib.import_module(LOADER_MODULES[loader])
    if loader not in _LOADERS:
        raise ArtifactError(f"{p}: unknown loader {loader!r}; known: {sorted(LOADER_MODULES)}")
    return _LOADERS[loader](p, card)
