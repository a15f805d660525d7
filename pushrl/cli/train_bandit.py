"""`pushrl train bandit`: a VW contextual-bandit item policy from logged pushes."""

from __future__ import annotations

import atexit
import gc
from pathlib import Path

import typer

from pushrl.cli._common import console, emit, progress_bar


def command(
    data: Path | None = typer.Option(None, "--data", help="pushlog v1 dataset directory (needs "
                                     "pscore); default: the --scenario's data"),
    out: Path = typer.Option(..., "--out", help="registry target policies/NAME (new version)"),
    exploration: str = typer.Option(
        "squarecb", help="squarecb | epsilon | cover | bag | large_action_space (> ~50 items)"),
    cb_type: str = typer.Option("mtr", "--cb-type", help="mtr | dr | ips (squarecb: mtr)"),
    passes: int = typer.Option(1, help="passes over the data (> 1 uses a VW cache file)"),
    seed: int = typer.Option(0, help="VW --random_seed"),
    reward: str = typer.Option(
        "", help="reward as \\[w*]column terms over opened, clicked, converted, revenue, e.g. "
                 "'clicked+0.01*revenue'; default: the --scenario's reward weights, else "
                 "clicked, plus 0.01*revenue when the logs have revenue"),
    interactions: str = typer.Option("UI,CI,UA", help="VW namespace interactions: U user, "
                                     "C logged context, I item, A user-item affinity"),
    bits: int = typer.Option(18, help="VW hash bits (-b)"),
    scenario: str | None = typer.Option(
        None, "--scenario", help="scenario (DIR/scenario.toml from `pushrl init`): its data "
                                 "(only the training users of its [split]), and its reward "
                                 "weights as the default --reward"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON on stdout"),
) -> None:
    """Train a VW cb_explore_adf item policy on the sent pushes of DATA.

    Each sent push is a round: shared user features from the feature pipeline (plus logged
    ctx_* columns), one line per candidate item (catalog features, user-item affinity,
    cand_* columns), label cost = -reward with the item-level logging pscore.
    """
    from pushrl.policies.vw import VWConfig
    from pushrl.rules.reward import RewardWeights
    from pushrl.train.vw_train import train_vw

    weights = RewardWeights.parse(reward) if reward else None  # bad input fails before loading
    split = None
    if scenario is not None:
        from pushrl.envs.scenario import load_scenario

        sc = load_scenario(scenario)
        data = data or sc.data
        if Path(data).resolve() == sc.data.resolve():
            split = sc.data_split("train")  # never the held-out users the gate evaluates on
        weights = weights or sc.reward.item_round()
    if data is None:
        from pushrl.errors import PushrlError

        raise PushrlError("pass --data DIR or --scenario DIR/scenario.toml")
    config = VWConfig(exploration=exploration, cb_type=cb_type, passes=passes, seed=seed,
                      interactions=tuple(q.strip() for q in interactions.split(",") if q.strip()),
                      bits=bits)
    with progress_bar("training VW", None, enabled=not as_json, unit="rounds") as update:
        res = train_vw(data, config, out=out, reward=weights, split=split,
                       progress=lambda n: update(n))
    # the process ends right after this: objects alive now are freed by reference counting
    # at exit anyway, so keep the interpreter's final garbage collections from walking them
    # all (pandas, pyarrow, the log: ~0.15 s CPU at exit); gc.freeze in an atexit hook runs
    # before those collections and only when the process ends (in-process callers: later)
    atexit.register(gc.freeze)
    m = res.metrics
    result = {"artifact": str(res.artifact), "vw_args": res.policy.args,
              "data_fingerprint": res.card["data"]["fingerprint"], "reward": res.card["reward"],
              "split": res.card["data"]["split"], "metrics": m}
    if as_json:
        emit(result, True)
        return
    loss = m.get("train/pv_loss", m.get("train/holdout_loss", float("nan")))
    console.print(f"[bold]trained[/bold] {res.artifact}  ({int(m['train/rounds'])} rounds x "
                  f"{int(m['train/n_actions'])} candidates, {m['train/seconds']:.1f} s, "
                  f"{m['train/rounds_per_second']:.0f} rounds/s)")
    console.print(f"  reward {res.card['reward']}; logged mean {m['train/logged_reward_mean']:.4f}"
                  f"; VW {'progressive' if 'train/pv_loss' in m else 'holdout'} loss "
                  f"{loss:.4f} (= -estimated reward of the learned policy)")
    console.print(f"  vw {' '.join(res.policy.args)}")
    if split is not None:
        console.print(f"  trained on the {split.part} users of {data} "
                      f"({res.card['data']['split']['n_users']}); the held-out users are left "
                      "for `pushrl evaluate --scenario`")
    missing = res.card.get("reward_missing_outcomes") or {}
    if missing:
        console.print("  [yellow]missing outcomes counted 0:[/yellow] " + ", ".join(
            f"{c} in {n} rounds" for c, n in missing.items()))
