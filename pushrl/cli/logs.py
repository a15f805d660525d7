"""`pushrl logs`: export the policy server's durable log as pushlog v1."""

from __future__ import annotations

from pathlib import Path

import typer

from pushrl.cli._common import console, emit

app = typer.Typer(help="Export the policy server's decision log.", no_args_is_help=True)


@app.command("export")
def export(
    out: Path = typer.Option(..., "--out", help="Output dataset directory (pushlog v1)."),
    state: Path | None = typer.Option(None, "--state", help="Server state directory "
                                      "(default $PUSHRL_HOME, else ./.pushrl)."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Write users, items, activity and pushes (every decision with its pscore, sent or not)
    that `pushrl data validate`, `train` and `evaluate` read as they are."""
    from pushrl.serve.config import state_dir
    from pushrl.serve.export import export as run

    res = run(state_dir(state), out)
    if as_json:
        emit(res, True)
        return
    console.print(f"exported {res['pushes']:,} decisions ({res['sent']:,} sent), "
                  f"{res['activity']:,} events, {res['users']:,} users, {res['items']:,} items "
                  f"and {res['feedback']:,} feedback reports ({res['late_feedback']:,} late) "
                  f"to {res['out']}")
