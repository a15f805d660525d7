"""Development diagnosis of the channel slot (issue 17): per-channel decomposition of the
objective, unsubscribes and cost of channel policies trained with different unsubscribe
prices, each vs push-only in the TRUE world, on DEVELOPMENT seed pairs only.

Usage: python benchmarks/channels_diag.py [--seeds 9] [--eval-users 3000]
       [--prices 'm1=1;m4=4;push4=push:4'] [--out FILE]

A price is ``NAME=MULT`` (one multiple for every channel: ``train_priced_channel_policy``
with a float) or ``NAME=ch:m,ch:m[,*:m]`` (per-channel multiples, ``*`` = the others' one,
default 1). Per policy: per channel (and none) sends, opens, clicks, revenue, unsubscribes,
cost and objective per user; the paired difference vs push-only by user segment (opted into
push at the start or not); the noise of the paired objective difference (its SD, the
correlation of the two arms per user, the share of the variance that revenue brings).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from channels import make_worlds, paired, per_user, run_dev_seeds

from pushrl.data.features import ItemCatalog
from pushrl.data.synth import generate, world_spec
from pushrl.policies.base import ItemPolicy
from pushrl.policies.channel_policy import (
    ChannelArms,
    ChannelDecider,
    FixedChannel,
    channel_rounds,
    train_priced_channel_policy,
)
from pushrl.policies.vw import VWConfig
from pushrl.rules import reward as rules_reward
from pushrl.rules.channels import DEFAULT_CHANNELS
from pushrl.rules.reward import RewardWeights


def parse_prices(text: str) -> dict[str, float | dict[str, float]]:
    """``'m1=1;push4=push:4,*:1'`` -> ``{"m1": 1.0, "push4": {"push": 4.0, "*": 1.0}}``."""
    out: dict[str, float | dict[str, float]] = {}
    for part in filter(None, (x.strip() for x in text.split(";"))):
        name, spec = part.split("=", 1)
        if ":" in spec:
            out[name] = {k: float(v) for k, v in (kv.split(":") for kv in spec.split(","))}
        else:
            out[name] = float(spec)
    return out


def by_channel(ds: Any, w: RewardWeights) -> dict[str, dict[str, float]]:
    """Per channel (and ``none``): sends, opens, clicks, revenue, unsubscribes, cost and
    objective per user of a simulated run."""
    p = ds.pushes
    n = len(ds.users)
    r = rules_reward.from_logs(w, p, channel_costs=DEFAULT_CHANNELS.costs())
    sent = p["sent"].fillna(False).to_numpy(bool)
    ch = p["channel"].astype(object).where(p["channel"].notna(), "none").to_numpy()
    f = lambda c: p[c].astype("Float64").fillna(0).to_numpy(float)  # noqa: E731
    cost = rules_reward.channel_send_cost(w, np.where(ch == "none", None, ch),
                                          DEFAULT_CHANNELS.costs()) * sent
    out = {}
    for c in ("push", "email", "in_app"):
        m = sent & (ch == c)
        out[c] = {"sends": m.sum() / n, "opens": f("opened")[m].sum() / n,
                  "clicks": f("clicked")[m].sum() / n, "revenue": f("revenue")[m].sum() / n,
                  "unsub": f("unsubscribed")[m].sum() / n, "cost": cost[m].sum() / n,
                  "objective": r[m].sum() / n}
    return {c: {k: round(float(v), 5) for k, v in d.items()} for c, d in out.items()}


def run_seed(a: argparse.Namespace, seed: int, w: RewardWeights) -> dict[str, Any]:
    t0 = time.perf_counter()
    spec = world_spec()
    ds, _, ds_raw, eval_cfg = make_worlds(a, seed, seed + 1000)
    rounds = channel_rounds(ds, DEFAULT_CHANNELS, spec=spec, weights=w)
    cfg = VWConfig(gamma_scale=10.0, learning_rate=0.02)
    policies: dict[str, ItemPolicy] = {"push_only": FixedChannel(arm=1, name="push-only")}
    for name, m in parse_prices(a.prices).items():
        policies[name] = train_priced_channel_policy(rounds, cfg, multiple=m)
    arms = ChannelArms(DEFAULT_CHANNELS, spec, ItemCatalog(ds.items, spec))
    w_clicks = RewardWeights(open=0.0, click=1.0, revenue=0.0, send_cost=0.0,
                             unsubscribe_penalty=w.unsubscribe_penalty)
    runs, out = {}, {"seed": seed, "eval_seed": seed + 1000, "eval_users": a.eval_users,
                     "policies": {}}
    push_opt = None
    for k, (name, pol) in enumerate(policies.items()):
        dec = ChannelDecider(pol, arms, a.eval_users, seed=99 + k)
        ds_e, _, _ = generate(eval_cfg, items=ds_raw.items, channel_chooser=dec)
        runs[name] = {**per_user(ds_e, w), "obj_clicks": per_user(ds_e, w_clicks)["obj"]}
        if push_opt is None:
            push_opt = np.array(["push" in str(c).split(",") for c in ds_e.users["channels"]])
        out["policies"][name] = {"by_channel": by_channel(ds_e, w),
                                 "objective": float(runs[name]["obj"].mean()),
                                 "unsub": float(runs[name]["unsub"].mean()),
                                 "cost": float(runs[name]["cost"].mean())}
        sys.stderr.write(f"seed {seed} {name}: {json.dumps(out['policies'][name])}\n")
    base = runs["push_only"]
    assert push_opt is not None
    for name in policies:
        if name == "push_only":
            continue
        r = runs[name]
        d = r["obj"] - base["obj"]
        dc = r["obj_clicks"] - base["obj_clicks"]
        seg = {}
        for label, m in (("push_opted", push_opt), ("not_push_opted", ~push_opt)):
            seg[label] = {"users": int(m.sum()),
                          "objective_diff_per_all_users": float(d[m].sum() / d.size),
                          "unsub_diff_per_all_users": float(
                              (r["unsub"] - base["unsub"])[m].sum() / d.size)}
        out["policies"][name]["vs_push_only"] = {
            "objective": paired(r["obj"], base["obj"], seed),
            "unsubscribes": paired(r["unsub"], base["unsub"], lift=False),
            "cost": paired(r["cost"], base["cost"], lift=False),
            "by_segment": seg,
            "noise": {"sd_diff": float(d.std(ddof=1)),
                      "sd_arm": float(r["obj"].std(ddof=1)),
                      "sd_push_only": float(base["obj"].std(ddof=1)),
                      "corr_arms": float(np.corrcoef(r["obj"], base["obj"])[0, 1]),
                      "sd_diff_without_revenue": float(dc.std(ddof=1))}}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-users", type=int, default=4000)
    ap.add_argument("--eval-users", type=int, default=3000)
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--seeds", default="9")
    ap.add_argument("--prices", default="m1=1;m4=4;push4=push:4")
    ap.add_argument("--out", default=None)
    run_dev_seeds("channels_diag", ap.parse_args(), run_seed)


if __name__ == "__main__":
    main()
