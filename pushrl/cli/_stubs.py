"""Placeholder groups for CLI commands that later issues fill: they exit non-zero."""

from __future__ import annotations

import typer

from pushrl.cli._common import not_implemented


def stub_group(name: str) -> typer.Typer:
    """A group whose every invocation says "not implemented yet" and exits non-zero."""
    g = typer.Typer(help=f"({name}: not implemented yet)", invoke_without_command=True)

    @g.callback()
    def _cb() -> None:
        not_implemented(name)

    return g


def stub_command(name: str):  # type: ignore[no-untyped-def]
    """A command that says "not implemented yet" and exits non-zero."""

    def cmd() -> None:
        not_implemented(name)

    return cmd
