"""The `pushrl` command line. Each group lives in its own module under ``pushrl.cli``."""

from __future__ import annotations

import os
import sys

import shutil
from typing import Any

import typer

from pushrl import __version__
from pushrl.cli import (
    channels,
    compare,
    data,
    evaluate,
    init,
    lift,
    logs,
    plan,
    policies,
    profiles,
    quickstart,
    serve,
    sim,
    state,
    templates,
    train,
    uplift,
)

app = typer.Typer(
    help="pushrl: learn what and when to push from logged push notifications.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
    # Inherited by every sub-command: `-h`, and help that uses the terminal's width.
    context_settings={"help_option_names": ["-h", "--help"],
                      "max_content_width": max(shutil.get_terminal_size((100, 24)).columns,
                                               100)},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pushrl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """pushrl: learn what and when to push from logged push notifications."""


app.command("init")(init.command)
app.add_typer(data.app, name="data")
app.add_typer(sim.app, name="sim")
app.add_typer(train.app, name="train")
app.command("evaluate")(evaluate.command)
app.command("compare")(compare.command)
app.add_typer(policies.app, name="policies")
app.command("serve")(serve.command)
app.add_typer(logs.app, name="logs")
app.command("lift")(lift.command)
app.add_typer(uplift.app, name="uplift")
app.add_typer(state.app, name="state")
app.command("plan")(plan.command)
app.add_typer(templates.app, name="templates")
app.add_typer(channels.app, name="channels")
app.command("quickstart")(quickstart.command)
app.command("profiles")(profiles.command)


def _plain_help(t: typer.Typer) -> None:
    """Click's help formatter, which wraps long option help and defaults at the terminal's
    width; Rich's panels truncate them with an ellipsis."""
    t.rich_markup_mode = None
    for group in t.registered_groups:
        if group.typer_instance is not None:
            _plain_help(group.typer_instance)


_plain_help(app)


def _argument_metavars(cmd: Any) -> None:
    """``DATA`` rather than Typer's ``{data}`` in usage lines (positional arguments only)."""
    for param in cmd.params:
        if param.param_type_name == "argument" and param.metavar is None and param.name:
            param.metavar = param.name.upper()
            usage = param.metavar if param.required else f"[{param.metavar}]"
            if hasattr(param, "_usage_display_name"):  # Typer's usage-line hook
                param._usage_display_name = lambda usage=usage: usage
    for sub in getattr(cmd, "commands", {}).values():
        _argument_metavars(sub)


def command() -> Any:
    """The click command behind ``pushrl`` (help and usage lines polished)."""
    cmd = typer.main.get_command(app)
    _argument_metavars(cmd)
    return cmd


def main() -> None:
    """Entry point: run the app, turning user errors into one line and a non-zero exit."""
    from pushrl.errors import PushrlError

    try:
        command()(prog_name="pushrl")
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
