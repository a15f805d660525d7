"""Development sweep for the channel slot's unsubscribe budget (issue 17): on DEVELOPMENT seed
pairs only, how do the off-policy validation bounds of :func:`pushrl.ope.evaluate_channel.
select_unsub_penalty` relate to the true unsubscribes of each training penalty's policy?

Usage: python benchmarks/channels_margin.py [--seeds 1,2,7,8] [--penalties 1,2,4,8,16]
       [--train-users 4000] [--eval-users 3000] [--days 28] [--out FILE]

Per seed pair (train seed s, evaluation seed s + 1000; the same worlds as
``benchmarks/channels.py``): the validation table of every penalty (IPW unsubscribes, cost and
reward per round, one-sided 95 % upper bounds of the differences vs push-only, on 30 % of the
TRAINING users) and, for every penalty, the policy trained on all training rounds simulated in
the TRUE world on the evaluation users (paired with push-only: objective lift, unsubscribes and
cost per user). The margin rule of the budget (``unsub_margin``: the bound must be at most
``-margin *`` push-only's estimated unsubscribes) is then fixed from this table; the figures
against the target are measured once on new held-out seeds with ``benchmarks/channels.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from channels import make_worlds, paired, per_user, run_dev_seeds

from pushrl.data.features import ItemCatalog
from pushrl.data.synth import generate, world_spec
from pushrl.ope.evaluate_channel import select_unsub_penalty
from pushrl.policies.channel_policy import (
    ChannelArms,
    ChannelDecider,
    FixedChannel,
    channel_rounds,
    train_channel_policy,
)
from pushrl.policies.vw import VWConfig
from pushrl.rules.channels import DEFAULT_CHANNELS
from pushrl.rules.reward import RewardWeights


def run_seed(a: argparse.Namespace, seed: int, w: RewardWeights) -> dict[str, Any]:
    """The validation table and the true paired differences of every penalty's policy."""
    t0 = time.perf_counter()
    spec = world_spec()
    eval_seed = seed + 1000
    ds, _, ds_raw, eval_cfg = make_worlds(a, seed, eval_seed)
    rounds = channel_rounds(ds, DEFAULT_CHANNELS, spec=spec, weights=w)
    vw_cfg = VWConfig(gamma_scale=10.0, learning_rate=0.02)
    push_only = FixedChannel(arm=1, name="push-only")
    pens = [float(x) for x in a.penalties.split(",")]
    _, selection = select_unsub_penalty(rounds, push_only, penalties=pens, config=vw_cfg,
                                        seed=seed, unsub_margin=0.0, volume=a.volume)
    if a.no_truth:
        return {"seed": seed, "eval_seed": eval_seed, "validation": selection,
                "seconds": round(time.perf_counter() - t0, 1)}
    arms = ChannelArms(DEFAULT_CHANNELS, spec, ItemCatalog(ds.items, spec))
    base = None
    truth = []
    for k, lam in enumerate([None, *pens]):
        pol = push_only if lam is None else train_channel_policy(
            rounds.with_unsub_penalty(lam), vw_cfg)
        decider = ChannelDecider(pol, arms, a.eval_users, seed=99 + k)
        ds_e, _, _ = generate(eval_cfg, items=ds_raw.items, channel_chooser=decider)
        r = per_user(ds_e, w)
        if lam is None:
            base = r
            continue
        assert base is not None
        truth.append({"penalty": lam,
                      "objective": paired(r["obj"], base["obj"], seed),
                      "unsubscribes": paired(r["unsub"], base["unsub"], lift=False),
                      "cost": paired(r["cost"], base["cost"], lift=False)})
        o = truth[-1]
        sys.stderr.write(f"seed {seed} lam {lam:g}: lift {o['objective']['lift']:+.3f} unsub "
                         f"{o['unsubscribes']['mean_diff']:+.4f} "
                         f"[{o['unsubscribes']['ci95'][0]:+.4f}, "
                         f"{o['unsubscribes']['ci95'][1]:+.4f}] cost "
                         f"{o['cost']['mean_diff']:+.4f}\n")
    return {"seed": seed, "eval_seed": eval_seed, "validation": selection, "truth": truth,
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-users", type=int, default=4000)
    ap.add_argument("--eval-users", type=int, default=3000)
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--seeds", default="1,2,7,8")
    ap.add_argument("--penalties", default="1,2,4,8,16")
    ap.add_argument("--volume", action=argparse.BooleanOptionalAction, default=True,
                    help="Volume-corrected unsubscribe estimates (pushrl.ope.channel_volume).")
    ap.add_argument("--no-truth", action="store_true",
                    help="Validation tables only (the true runs do not depend on the budget "
                         "rule: each penalty's policy is the same).")
    ap.add_argument("--out", default=None)
    run_dev_seeds("channels_margin", ap.parse_args(), run_seed)


if __name__ == "__main__":
    main()
