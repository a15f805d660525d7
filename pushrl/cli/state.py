"""`pushrl state`: bring a push log's history into a policy server's state."""

from __future__ import annotations

from pathlib import Path

import typer

from pushrl.cli._common import console, emit

app = typer.Typer(help="Bring history into the policy server's state.", no_args_is_help=True)


@app.command("import")
def import_(
    data: Path | None = typer.Argument(None, help="pushlog v1 directory (default: the "
                                       "--scenario's data)."),
    state: Path | None = typer.Option(None, "--state", help="New server state directory "
                                      "(default $PUSHRL_HOME, else ./.pushrl)."),
    scenario: str | None = typer.Option(None, "--scenario", help="Scenario (DIR/scenario.toml "
                                        "from `pushrl init`) whose data is imported."),
    sync: str = typer.Option("full", "--sync", help="SQLite synchronous: full or normal."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Import users, items, activity and sends of a log once, so that `pushrl serve --state
    DIR` starts in seconds with every user's features as the batch replay computes them at
    the end of the log (catalog, feature spec and the default most-popular come from it)."""
    from pushrl.errors import PushrlError
    from pushrl.serve.config import state_dir
    from pushrl.serve.history import import_history

    if data is None:
        if scenario is None:
            raise PushrlError("pass the pushlog directory to import (DATA) or --scenario")
        from pushrl.envs.scenario import load_scenario

        sc_data = load_scenario(scenario).data
        if sc_data is None:
            raise PushrlError(f"scenario {scenario!r} names no data; pass DATA")
        data = Path(sc_data)
    res = import_history(data, state_dir(state), sync=sync)
    if as_json:
        emit(res, True)
        return
    console.print(f"imported {res['n_users']:,} users, {res['n_items']:,} items, "
                  f"{res['n_activity']:,} events and {res['n_sent']:,} sends "
                  f"({res['n_decisions']:,} decisions, {res['n_rejected']:,} rows rejected; "
                  f"{res['n_unsubscribed']:,} unsubscribed users, never pushed to) up "
                  f"to {res['high_water_utc']} in {res['seconds']['total']:.1f} s; start the "
                  f"server with `pushrl serve --state {state_dir(state)}`")
