"""`pushrl policies`: list, show, promote and roll back registry artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from pushrl.cli._common import console, emit, out

app = typer.Typer(help="The policy registry: list, show, promote (OPE gate), roll back.",
                  no_args_is_help=True)

_REG = typer.Option(Path("policies"), "--registry", help="Registry directory.")
_JSON = typer.Option(False, "--json", help="Print JSON.")


@app.command("list")
def list_(registry: Path = _REG, as_json: bool = _JSON) -> None:
    """Artifacts and which are active / shadow (an unreadable card is listed as broken)."""
    from pushrl.serve.pointer import DEFAULTS, KINDS, read_active
    from pushrl.serve.registry_ops import list_artifacts

    arts = list_artifacts(registry)
    ptr = read_active(registry)
    if as_json:
        emit({"artifacts": arts, "active": {k: ptr[k] for k in KINDS}}, True)
        return
    t = Table(title=f"policies in {registry}")
    for c in ("name@version", "kind", "loader", "created", "data", "gate", "status"):
        t.add_column(c)
    for a in arts:
        ref = f"{a['name']}@{a['version']}"
        status = "BROKEN" if a.get("broken") else ", ".join(
            f"{w}" for k in KINDS for w in ("active", "shadow") if ptr[k][w] == ref)
        gate = a["gate"]
        t.add_row(ref, str(a["kind"]), str(a["loader"]), str(a["created_at"] or ""),
                  str(a["data_fingerprint"] or ""),
                  "-" if gate is None else ("pass" if gate.get("passed") else "fail"), status)
    out.print(t)
    for a in arts:
        if a.get("broken"):
            out.print(f"{a['name']}@{a['version']} is broken: {a['broken']}", soft_wrap=True)
    for k in KINDS:
        out.print(f"{k}: active {ptr[k]['active'] or DEFAULTS[k] + ' (default baseline)'}"
                  + (f", shadow {ptr[k]['shadow']}" if ptr[k]["shadow"] else ""))


@app.command("show")
def show(name: str = typer.Argument(..., help="Policy name (or name@version)."),
         registry: Path = _REG) -> None:
    """Print an artifact's model card (checksums verified)."""
    from pushrl.policies.registry import verify_artifact
    from pushrl.serve.pointer import split_ref
    from pushrl.serve.registry_ops import artifact_dir

    n, v = split_ref(name)
    card = verify_artifact(artifact_dir(registry, n, v or None))
    out.print_json(json.dumps(card, default=str))


@app.command("promote")
def promote(
    name: str = typer.Argument(..., help="Policy name (or name@version; default newest)."),
    registry: Path = _REG,
    shadow: bool = typer.Option(False, "--shadow", help="Run it in shadow mode instead."),
    force: bool = typer.Option(False, "--force", help="Override a failing/unavailable OPE "
                               "gate (needs --reason; audited)."),
    reason: str | None = typer.Option(None, "--reason", help="Why (audit log)."),
    as_json: bool = _JSON,
) -> None:
    """Make an artifact active after the OPE gate (a running server swaps within ~1 s)."""
    from pushrl.serve.registry_ops import promote as run
    from pushrl.serve.pointer import split_ref

    n, v = split_ref(name)
    res = run(registry, n, v or None, shadow=shadow, force=force, reason=reason)
    if as_json:
        emit(res, True)
        return
    gate = res["gate"]
    if gate is not None and not gate["passed"]:
        console.print(f"[yellow]OPE gate did not pass ({gate.get('unavailable') or gate}); "
                      "forced with reason (audited)[/]")
    console.print(f"{res['kind']}: active {res['active']}, shadow {res['shadow']} "
                  f"(generation {res['generation']})")


@app.command("rollback")
def rollback(
    name: str = typer.Argument(..., help="Active (or shadow) policy name."),
    registry: Path = _REG,
    reason: str | None = typer.Option(None, "--reason", help="Why (audit log)."),
    as_json: bool = _JSON,
) -> None:
    """Return the slot to the previously active policy (or stop a shadow)."""
    from pushrl.serve.registry_ops import rollback as run

    res = run(registry, name, reason=reason)
    if as_json:
        emit(res, True)
        return
    console.print(f"{res['kind']}: active {res['active'] or 'default baseline'}, "
                  f"shadow {res['shadow']} (generation {res['generation']})")
