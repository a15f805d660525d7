"""`pushrl plan`: every user's sends for one local day, as Parquet, locally or on Ray."""

from __future__ import annotations

from pathlib import Path

import typer

from pushrl.cli._common import console, emit, progress_bar


def command(
    date: str = typer.Option(..., "--date", help="Local calendar day to plan, YYYY-MM-DD "
                             "(each user's own midnight to midnight)."),
    out: Path = typer.Option(..., "--out", help="Plan file (.parquet)."),
    state: Path | None = typer.Option(None, "--state", help="Server state (`pushrl state "
                                      "import` or a running server's; read only). Default "
                                      "$PUSHRL_HOME, else ./.pushrl."),
    data: Path | None = typer.Option(None, "--data", help="Plan from a pushlog instead: it "
                                     "is imported into a new --state first."),
    registry: Path = typer.Option(Path("policies"), "--registry", help="Policy registry: its "
                                  "promoted timing and item policies plan."),
    timing: str | None = typer.Option(None, "--timing", help="Timing policy NAME@vN instead "
                                      "of the promoted one."),
    item: str | None = typer.Option(None, "--item", help="Item policy NAME@vN instead of the "
                                    "promoted one."),
    scenario: str | None = typer.Option(None, "--scenario", help="Scenario whose guardrails "
                                        "apply (default: the timing policy's, as `pushrl "
                                        "serve`)."),
    quiet_hours: str | None = typer.Option(None, "--quiet-hours", help="Local quiet hours "
                                           "START-END (as `pushrl serve`)."),
    max_per_day: int | None = typer.Option(None, "--max-per-day", min=0,
                                           help="Sends per user per local day."),
    max_per_week: int | None = typer.Option(None, "--max-per-week", min=0,
                                            help="Sends per user in 168 h."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random draw: the server's "
                             "`--seed` gives that server's own decisions."),
    shard_size: int = typer.Option(50_000, "--shard-size", help="Users per unit of work "
                                   "(does not change the plan)."),
    all_hours: bool = typer.Option(False, "--all-hours", help="One row per user-hour (the "
                                   "not-sent hours with their probability too), not only "
                                   "the sends."),
    ray: bool = typer.Option(False, "--ray", help="Plan the shards on a local Ray."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Join an existing Ray "
                                           "cluster (ray://host:port or auto)."),
    workers: int | None = typer.Option(None, help="CPUs of the local Ray (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan's summary as JSON."),
) -> None:
    """Decide every user's sends for one local day in advance with the promoted policies
    (no feedback assumed; each planned send counts for the caps and features of the later
    hours), under the server's guardrails, and write them with their probabilities.

    Every draw is the server's keyed draw (seed, user, hour): with the server's --seed
    the plan is what that server would decide, and --shard-size or --ray never change it.
    """
    from pushrl.cli.serve import guardrail_options
    from pushrl.serve.config import state_dir
    from pushrl.serve.plan import plan, write_plan

    guardrails, _, _ = guardrail_options(scenario, quiet_hours, max_per_day, max_per_week)
    st = state_dir(state)
    if data is not None:
        from pushrl.serve.history import import_history

        import_history(data, st)
    # transient bar (removed when done): an error stays the only line
    with progress_bar("planning", None, enabled=not as_json, unit="shards") as update:
        res = plan(st, date, registry=registry, timing=timing, item=item,
                   guardrails=guardrails, seed=seed, shard_size=shard_size,
                   all_hours=all_hours, ray=ray, ray_address=ray_address, workers=workers,
                   progress=update)
    path = write_plan(res, out)
    if as_json:
        emit(res.meta | {"out": str(path)}, True)
        return
    m = res.meta
    console.print(f"planned {m['date']} for {m['users']:,} users: {m['sends']:,} sends "
                  f"({m['sends_per_user']:.3f} per user) with {m['timing_policy']} + "
                  f"{m['item_policy']} under {m['guardrails']} in {m['seconds']} s "
                  f"({m['mode']}, {m['shards']} shards) -> {path}")
