"""The `pushrl` command line. Each group lives in its own module under ``pushrl.cli``."""

from __future__ import annotations

import os
import sys

import typer

from pushrl.cli import data

app = typer.Typer(
    help="pushrl: learn what and when to push from logged push notifications.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
)
app.add_typer(data.app, name="data")


def _register_optional() -> None:
    """Attach the groups whose modules exist (each issue adds its own module)."""
    import importlib

    for mod, name in (("sim", "sim"), ("train", "train"), ("policies", "policies"),
                      ("logs", "logs")):
        try:
            m = importlib.import_module(f"pushrl.cli.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pushrl.cli.{mod}":
                raise
            m = importlib.import_module("pushrl.cli._stubs")
            app.add_typer(m.stub_group(name), name=name)
            continue
        app.add_typer(m.app, name=name)
    for mod, name in (("evaluate", "evaluate"), ("compare", "compare"), ("serve", "serve"),
                      ("quickstart", "quickstart")):
        try:
            m = importlib.import_module(f"pushrl.cli.{mod}")
            app.command(name)(m.command)
        except ModuleNotFoundError as exc:
            if exc.name != f"pushrl.cli.{mod}":
                raise
            from pushrl.cli._stubs import stub_command

            app.command(name, help=f"({name}: not implemented yet)")(stub_command(name))


_register_optional()


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
