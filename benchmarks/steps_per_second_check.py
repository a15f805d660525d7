"""Check that the card's ``train/steps_per_second`` is the executed steps over the train time.

Issue 20: the figure once divided the *requested* steps, not the executed ones (SB3 runs
whole rollouts of ``n_envs x n_steps``, so a request that is not a multiple runs more). This
script counts the executed steps independently of SB3's ``num_timesteps``: it wraps the
training vector env's ``step_wait`` (every call steps ``num_envs`` users) before
:func:`pushrl.train.ppo.train_timing` runs, requests one step more than ``--rollouts`` whole
rollouts (so one more rollout executes), and compares

* ``counted / train/seconds`` (the true figure) with the card's ``train/steps_per_second``;
* ``requested / train/seconds`` (the old, wrong figure).

    python benchmarks/steps_per_second_check.py [--rollouts 2] [--json] [--out FILE]

Exit status 1 when the card's figure is not the counted one (to the card's rounding).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pushrl.train.ppo as ppo_mod
from pushrl.train.ppo_config import PPOConfig

from _output import emit_json  # benchmarks/ is sys.path[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rollouts", type=int, default=2, help="whole rollouts before the +1 step")
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    a = ap.parse_args()
    cfg = PPOConfig()
    rollout = cfg.n_envs * cfg.n_steps
    requested = a.rollouts * rollout + 1
    counted = [0]
    make = ppo_mod.make_vec_env

    def counting_make(*args: Any, **kwargs: Any) -> Any:
        venv = make(*args, **kwargs)
        wait = venv.step_wait

        def step_wait() -> Any:
            counted[0] += venv.num_envs
            return wait()

        venv.step_wait = step_wait
        return venv

    ppo_mod.make_vec_env = counting_make  # type: ignore[assignment]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            res = ppo_mod.train_timing(a.scenario, out=Path(tmp) / "p" / "check",
                                       timesteps=requested, seed=0, config=cfg,
                                       run_dir=Path(tmp) / "run", evaluate=False)
    finally:
        ppo_mod.make_vec_env = make  # type: ignore[assignment]
    card = res.card
    true_sps = counted[0] / res.seconds
    out = {
        "benchmark": "steps_per_second_check", "scenario": a.scenario,
        "rollout_steps": rollout, "requested": requested, "counted_env_steps": counted[0],
        "card_timesteps_executed_this_run": card["timesteps_executed_this_run"],
        "train_seconds": res.seconds,
        "card_train_steps_per_second": card["train/steps_per_second"],
        "counted_steps_per_second": round(true_sps),
        "requested_steps_per_second": round(requested / res.seconds),
        "card_is_true_figure": card["train/steps_per_second"] == round(true_sps)
        and card["timesteps_executed_this_run"] == counted[0],
        "load_avg": os.getloadavg(),
        "command": " ".join(["python", *sys.argv]),
    }
    emit_json(out, a.out, echo=a.json)
    if not a.json:
        print(f"requested {requested:,} steps, counted {counted[0]:,} executed env steps "
              f"(card: {card['timesteps_executed_this_run']:,}) in {res.seconds:.2f} s: card "
              f"train/steps_per_second {card['train/steps_per_second']:,} vs counted "
              f"{round(true_sps):,} (requested/s would be {round(requested / res.seconds):,}): "
              f"{'true figure' if out['card_is_true_figure'] else 'WRONG'}; load "
              f"{' '.join(f'{x:.1f}' for x in out['load_avg'])}")
    if not out["card_is_true_figure"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
