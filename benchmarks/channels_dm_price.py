"""Development check (issue 17, DEVELOPMENT seed pairs only): can the channel slot's training
unsubscribe price be read off the training log with a model-based (direct-method) estimate of
each candidate policy's unsubscribes vs push-only, instead of a constant multiple?

Usage: python benchmarks/channels_dm_price.py [--seeds 1,2,7,8,9,10] [--multiples 1,2,3,4,6]
       [--out FILE]

Per seed pair (the training world of ``benchmarks/channels.py``): the logistic unsubscribe model
on the delivered rounds (the logged 7-day message volume and the channel; the one converged fit
:func:`pushrl.ope.channel_volume.fit_unsub_model`), then for each multiple the policy trained
on all rounds and its expected unsubscribes per round ``sum_a pi(a|x) p(unsub | a, V_pi)``,
``V_pi`` = the policy's own expected 7-day volume at the round, and the same for push-only
(:mod:`pushrl.ope.channel_price`, the library's estimate; this script ran first with the
same formulas inline). No true run:
the true unsubscribes of each multiple come from ``channels_diag.py`` / ``channels_margin.py``
(same worlds, same training), so a selection rule can be checked against them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from channels import make_worlds, run_dev_seeds

from pushrl.data.synth import world_spec
from pushrl.ope.channel_price import expected_unsubscribes, fit_unsub_model
from pushrl.policies.channel_policy import (
    FixedChannel,
    channel_rounds,
    train_priced_channel_policy,
)
from pushrl.policies.vw import VWConfig
from pushrl.rules.channels import DEFAULT_CHANNELS
from pushrl.rules.reward import RewardWeights


def run_seed(a: argparse.Namespace, seed: int, w: RewardWeights) -> dict[str, Any]:
    t0 = time.perf_counter()
    ds, _, _, _ = make_worlds(a, seed, seed + 1000)
    rounds = channel_rounds(ds, DEFAULT_CHANNELS, spec=world_spec(), weights=w)
    model = fit_unsub_model(rounds)
    cfg = VWConfig(gamma_scale=10.0, learning_rate=0.02)
    base_d = FixedChannel(arm=1).action_dist(rounds.context)
    base = float(expected_unsubscribes(rounds, base_d, model).mean())
    base_sends = float(1.0 - base_d[:, 0].mean())
    rows = []
    for m in (float(x) for x in a.multiples.split(",")):
        d = train_priced_channel_policy(rounds, cfg, multiple=m).action_dist(rounds.context)
        u = float(expected_unsubscribes(rounds, d, model).mean())
        rows.append({"multiple": m, "dm_unsub_per_round": u, "ratio_vs_push_only": u / base,
                     "sends_per_round": float(1.0 - d[:, 0].mean()),
                     "push_share": float(d[:, 1].mean())})
        sys.stderr.write(f"seed {seed} x{m:g}: DM unsub ratio {u / base:.3f}\n")
    return {"seed": seed, **model.to_dict(),
            "push_only_dm_unsub_per_round": base, "push_only_sends_per_round": base_sends,
            "unsubscribes_in_log": int(rounds.unsubscribed.sum()), "multiples": rows,
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-users", type=int, default=4000)
    ap.add_argument("--eval-users", type=int, default=100)  # the held-out log is not used
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--seeds", default="1,2,7,8,9,10")
    ap.add_argument("--multiples", default="1,2,3,4,6")
    ap.add_argument("--out", default=None)
    run_dev_seeds("channels_dm_price", ap.parse_args(), run_seed)


if __name__ == "__main__":
    main()
