"""`pushrl train timing`: the PPO send-timing agent on ``pushrl/PushTiming-v1``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from pushrl.cli._common import console, emit, progress_bar


def _override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise typer.BadParameter(f"--set/--hp take KEY=VALUE (e.g. truth=true), got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def command(
    out: Path = typer.Option(..., "--out", help="registry target policies/NAME (new version)"),
    scenario: str = typer.Option("default", help="scenario name in envs/ or a .toml path"),
    timesteps: int = typer.Option(0, help="environment steps (0 = the tuned config's "
                                  "total_timesteps); with --resume, steps added"),
    seed: int = typer.Option(0, help="seed of the training envs and the network init"),
    resume: Path | None = typer.Option(None, "--resume", help="checkpoint dir "
                                       "(runs/NAME/checkpoints/step_N) or an artifact version"),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="CSV/TensorBoard logs and "
                                        "checkpoints (default runs/NAME)"),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="evaluate on held-out users "
                                  "and put the results in the model card"),
    overrides: list[str] = typer.Option([], "--set", help="scenario override KEY=VALUE, "
                                        "repeatable (e.g. --set truth=true)"),
    hyper: list[str] = typer.Option([], "--hp", help="PPO hyperparameter KEY=VALUE, "
                                    "repeatable (e.g. --hp unsubscribe_penalty=10); see "
                                    "pushrl.train.ppo_config.PPOConfig"),
    select: int = typer.Option(0, "--select", help="after training, roll the agent (as its "
                               "card serves it) and most-active-hour out on this many "
                               "fitted-simulator validation users and say which one to ship "
                               "(recorded in the card as `selection`; 0 = skip; ~3000 "
                               "users resolve a few percent)"),
    unsubscribe_margin: float = typer.Option(
        0.005, "--unsubscribe-margin", help="--select: ship the agent only if the upper 95 % "
        "bound of its increase in the unsubscribed share of users is below this margin "
        "(non-inferiority; 0.005 = +0.5 percentage points)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON on stdout"),
) -> None:
    """Train PPO (SB3) on the vectorised timing environment and write a policy artifact.

    The artifact holds the SB3 model, the VecNormalize statistics (.npz) and the exported
    numpy actor used for serving, each with its sha256 in the model card (scenario, seed,
    timesteps, hyperparameters, training time, evaluation on held-out users). With
    ``--select N`` the agent is compared with most-active-hour on N fitted-simulator
    validation users (paired): it ships only with a positive 95 % lower bound and an
    unsubscribe increase shown to be below ``--unsubscribe-margin``; otherwise the line says
    to keep serving the heuristic and why.
    """
    from pushrl.train.ppo import train_timing
    from pushrl.train.ppo_config import PPOConfig

    if not 0 <= unsubscribe_margin < 1:  # before hours of training, not after
        from pushrl.errors import PushrlError

        raise PushrlError(f"--unsubscribe-margin must be a share of users in [0, 1), "
                          f"got {unsubscribe_margin} (0.005 = +0.5 percentage points)")
    cfg = PPOConfig.from_dict({**PPOConfig().to_dict(), **dict(_override(kv) for kv in hyper)})
    total = timesteps or cfg.total_timesteps
    if total < 0:
        raise typer.BadParameter(f"--timesteps must be >= 0, got {timesteps}")
    scenario_overrides = dict(_override(kv) for kv in overrides)
    with progress_bar("training PPO", total, enabled=not as_json, unit="steps") as update:
        res = train_timing(scenario, out=out, timesteps=total, seed=seed, config=cfg,
                           resume=resume, run_dir=run_dir, evaluate=evaluate,
                           progress=lambda done, tot: update(done, tot), **scenario_overrides)
    card = res.card
    selection = None
    if select < 0:
        raise typer.BadParameter(f"--select must be >= 0 users, got {select}")
    if select:
        selection = _select(res.artifact, scenario, select, scenario_overrides,
                            unsubscribe_margin)
        card["selection"] = selection
    result = {"artifact": str(res.artifact), "scenario": card["scenario"]["name"],
              "seed": seed, "timesteps": res.timesteps, "train/seconds": round(res.seconds, 1),
              "train/steps_per_second": card["train/steps_per_second"],
              "deterministic": card.get("deterministic"), "evaluation": card.get("evaluation"),
              "run_dir": card["run_dir"], "selection": selection}
    if as_json:
        emit(result, True)
        return
    console.print(f"[bold]trained[/bold] {res.artifact}  ({res.timesteps:,} steps, "
                  f"{res.seconds / 60:.1f} min, {card['train/steps_per_second']:,} steps/s)")
    for world, s in (card.get("evaluation") or {}).items():
        console.print(f"  held-out {world}: objective {s['sim/objective_per_user']:.3f} "
                      f"± {1.96 * s['sim/objective_per_user_se']:.3f} per user, "
                      f"{s['sim/sends_per_user_day']:.2f} sends/day, open rate "
                      f"{s['sim/open_rate']:.3f}, unsubscribed "
                      f"{s['sim/unsubscribed_per_user']:.3f}")
    console.print(f"  logs and checkpoints in {card['run_dir']}")
    if selection is not None:
        console.print(f"[bold]selection[/bold]: {selection['reason']}")


def _select(artifact: Path, scenario: str, n_users: int, overrides: dict[str, Any],
            unsubscribe_margin: float) -> dict[str, Any]:
    """:func:`pushrl.train.select.select_timing` of the new agent vs most-active-hour; the
    verdict is written into the artifact's card (``selection``) and returned."""
    from pushrl.envs.scenario import load_scenario
    from pushrl.policies.registry import load_policy, update_card
    from pushrl.train.select import explain, select_timing

    sc = load_scenario(scenario, **overrides)
    sel = select_timing({"agent": load_policy(artifact)}, sc, n_users=n_users,
                        unsubscribe_margin=unsubscribe_margin)
    out = {"ships": "agent" if sel.qualified else "most-active-hour",
           "reason": explain(sel, n_users), "validation_users": n_users,
           **{k: v for k, v in sel.to_dict().items() if k != "name"}}
    update_card(artifact, "selection", out)  # not checksummed (as `evaluate --record`)
    return out
