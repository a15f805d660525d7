"""The `pushrl` command line. Each group lives in its own module under ``pushrl.cli``."""

from __future__ import annotations

import os
import sys

import typer

from pushrl.cli import compare, data, evaluate, init, logs, policies, quickstart, serve, sim, train

app = typer.Typer(
    help="pushrl: learn what and when to push from logged push notifications.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
)
app.command("init")(init.command)
app.add_typer(data.app, name="data")
app.add_typer(sim.app, name="sim")
app.add_typer(train.app, name="train")
app.command("evaluate")(evaluate.command)
app.command("compare")(compare.command)
app.add_typer(policies.app, name="policies")
app.command("serve")(serve.command)
app.add_typer(logs.app, name="logs")
app.command("quickstart")(quickstart.command)


def main() -> None:
    """Entry point: run the app, turning user errors into one line and a non-zero exit."""
    from pushrl.errors import PushrlError

    try:
        app()
    except PushrlError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(2)
    except (ValueError, TypeError, FileNotFoundError, KeyError, PermissionError) as exc:
        if os.environ.get("PUSHRL_DEBUG"):
            raise
        typer.secho(f"error: {exc} (set PUSHRL_DEBUG=1 for the traceback)", err=True, fg="red")
        sys.exit(2)


if __name__ == "__main__":
    main()
