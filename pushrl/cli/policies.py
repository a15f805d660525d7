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


@app.command("explore")
def explore(
    artifact: Path = typer.Argument(..., help="A PPO timing artifact (policies/NAME[/vN])."),
    data: Path = typer.Option(..., "--data", help="The logs the agent was trained from (NOT "
                              "the held-out logs its gate will decide on)."),
    scenario: str = typer.Option(..., "--scenario", help="Scenario (guardrails, reward)."),
    epsilons: str | None = typer.Option(None, "--epsilons", help="Mix shares to try, comma-"
                                        "separated (default 0,0.05,0.1,0.2,0.3,0.5,0.7)."),
    out_dir: Path | None = typer.Option(None, "--out", help="policies/NAME to version into "
                                        "(default: the artifact's own name)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    as_json: bool = _JSON,
) -> None:
    """Export a timing agent with the exploration the OPE gate's own criteria choose on its
    training logs (a new artifact version; the served pscore is the explored probability)."""
    from pushrl.data.validate import load_dataset
    from pushrl.ope.exploration import EPSILONS, select_exploration
    from pushrl.policies.ppo import PPOTimingPolicy, save_with_exploration
    from pushrl.policies.registry import load_policy

    from pushrl.errors import ArtifactError

    policy = load_policy(artifact)
    if not isinstance(policy, PPOTimingPolicy):
        raise ArtifactError(f"{artifact} is a {type(policy).__name__}, not a PPO timing agent; "
                            "exploration exports apply to `pushrl train timing` artifacts")
    grid = EPSILONS if not epsilons else tuple(float(e) for e in epsilons.split(","))
    from pushrl.envs.scenario import load_scenario

    sc = load_scenario(scenario)
    # the training users of a `pushrl init` scenario's split: its held-out users decide the gate
    part = sc.data_split("train") if Path(data).resolve() == sc.data.resolve() else None
    ds, _ = load_dataset(data, split=part)
    with console.status("scoring exploration exports with the timing gate"):
        choice = select_exploration(policy, ds, scenario, epsilons=grid, seed=seed)
    path = save_with_exploration(artifact, choice.to_dict(), out_dir)
    res = {"artifact": str(path), "exploration": choice.exploration.to_dict(),
           "reason": choice.reason, "candidates": choice.to_dict()["selection"]["candidates"]}
    if as_json:
        emit(res, True)
        return
    for c in choice.candidates:
        console.print(f"temperature {c.exploration.temperature or 'as trained'!s:<10} "
                      f"epsilon {c.exploration.epsilon:<5g} ESS {c.ess:8.0f} (floor "
                      f"{c.ess_floor:.0f})  improvement {c.difference:+.4f} "
                      f"[{c.lower:+.4f}, {c.upper:+.4f}]  "
                      f"{'ok' if c.supported else 'unsupported'}", highlight=False)
    console.print(f"chosen: temperature {choice.exploration.temperature or 'as trained'}, "
                  f"epsilon {choice.exploration.epsilon:g} (send "
                  f"{choice.exploration.send:.4f}); {choice.reason}\nwritten: {path}",
                  highlight=False)
    console.print("[yellow]note[/]: the gate compares with the logging policy per user-day; "
                  "compare the export with the heuristic in the fitted simulator "
                  "(`pushrl compare`) before promoting it")
