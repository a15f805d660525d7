"""`pushrl train`: `bandit` (VW item choice) and `timing` (PPO send timing)."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(help="Train item (VW bandit) and timing (PPO) policies.", no_args_is_help=True)

for _mod, _name in (("train_bandit", "bandit"), ("train_timing", "timing")):
    try:
        _m = importlib.import_module(f"pushrl.cli.{_mod}")
        app.command(_name)(_m.command)
    except ModuleNotFoundError as _exc:
        if _exc.name != f"pushrl.cli.{_mod}":
            raise
        from pushrl.cli._stubs import stub_command

        app.command(_name, help=f"({_name}: not implemented yet)")(stub_command(f"train {_name}"))
