"""`pushrl logs`: export the policy server's durable log as pushlog v1; back it up and
restore it."""

from __future__ import annotations

from pathlib import Path

import typer

from pushrl.cli._common import console, emit

app = typer.Typer(help="Export, back up or restore the policy server's decision log.",
                  no_args_is_help=True)


@app.command("export")
def export(
    out: Path = typer.Option(..., "--out", help="Output dataset directory (pushlog v1)."),
    state: Path | None = typer.Option(None, "--state", help="Server state directory "
                                      "(default $PUSHRL_HOME, else ./.pushrl)."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Write users, items, activity and pushes (every decision with its pscore, sent or not)
    that `pushrl data validate`, `train` and `evaluate` read as they are (a sharded state,
    `pushrl serve --shards`: the shards merged into one log)."""
    from pushrl.serve.config import state_dir
    from pushrl.serve.shard_export import export_log as run

    res = run(state_dir(state), out)
    if as_json:
        emit(res, True)
        return
    console.print(f"exported {res['pushes']:,} decisions ({res['sent']:,} sent), "
                  f"{res['activity']:,} events, {res['users']:,} users, {res['items']:,} items "
                  f"and {res['feedback']:,} feedback reports ({res['late_feedback']:,} late) "
                  f"to {res['out']}")


@app.command("backup")
def backup(
    out: Path = typer.Option(..., "--out", help="Backup file to write (one SQLite file)."),
    state: Path | None = typer.Option(None, "--state", help="Server state directory "
                                      "(default $PUSHRL_HOME, else ./.pushrl)."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Copy the durable log and feature spec consistently (safe while the server runs)."""
    from pushrl.serve.backup import backup as run
    from pushrl.serve.config import state_dir

    res = run(state_dir(state), out)
    if as_json:
        emit(res, True)
        return
    console.print(f"backed up {res['decisions']:,} decisions, {res['users']:,} users, "
                  f"{res['items']:,} items and {res['feedback']:,} feedback reports to "
                  f"{res['out']}")


@app.command("restore")
def restore(
    src: Path = typer.Argument(..., help="Backup file (or the state dir's own log.sqlite3 to "
                               "accept what it holds after a lost WAL)."),
    state: Path | None = typer.Option(None, "--state", help="Server state directory "
                                      "(default $PUSHRL_HOME, else ./.pushrl)."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Install a backup as the state dir's log (the server must be stopped); the current log
    and its WAL are moved aside, not deleted."""
    from pushrl.serve.backup import restore as run
    from pushrl.serve.config import state_dir

    res = run(src, state_dir(state))
    if as_json:
        emit(res, True)
        return
    aside = f"; moved aside: {', '.join(res['moved_aside'])}" if res["moved_aside"] else ""
    console.print(f"restored {res['decisions']:,} decisions and {res['users']:,} users into "
                  f"{res['state']}{aside}")
