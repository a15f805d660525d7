"""`pushrl train`: `bandit` (VW item choice), `timing` (PPO send timing) and `triggers`
(VW trigger delays)."""

from __future__ import annotations

import typer

from pushrl.cli import train_bandit, train_timing, train_triggers

app = typer.Typer(help="Train item (VW bandit) and timing (PPO) policies.", no_args_is_help=True)
app.command("bandit")(train_bandit.command)
app.command("timing")(train_timing.command)
app.command("triggers")(train_triggers.command)
