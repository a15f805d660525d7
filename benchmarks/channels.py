"""Channel choice (push, email, in-app, or none) as a bandit decision (issue 17, item 4): does
choosing the channel per user and push beat push-only, at no more unsubscribes and no more
cost? Prints figures and JSON.

Usage: python benchmarks/channels.py [--train-users 4000] [--eval-users 3000] [--days 28]
       [--seeds 1,2] [--eval-seed-offset 1000] [--unsub-penalty 1] [--unsub-multiple 4]
       [--price logs|fixed] [--unsub-prices push:4,*:1] [--policies learned,push_only,...]
       [--out FILE]

Per seed pair (train seed s, held-out seed s + offset):

1. A synthetic world with channel effects (``pushrl data synth --channels``,
   :data:`pushrl.data.worlds.CHANNEL_KNOBS`) logs pushes with the randomised channel logger
   (10 % none, else uniform over the user's opted-in channels; ``pscore_channel``).
2. A VW channel policy (:mod:`pushrl.policies.channel_policy`) is trained on those logs.
   Objective = clicked + 0.01 * revenue - the channel's send cost
   (:data:`pushrl.rules.channels.DEFAULT_CHANNELS`: push 0.01, email 0.002, in-app 0.001)
   - ``--unsub-penalty`` * unsubscribed (:func:`pushrl.rules.reward.from_logs`). The
   "learned" policy trains with a multiple of that penalty as the price of an unsubscribe:
   ``--price logs`` (default) reads it off the training log
   (:func:`pushrl.ope.channel_price.select_unsub_multiple`: the smallest multiple whose
   model-estimated unsubscribes are <= 0.7 x push-only's, fixed on development pairs 7-10);
   ``--price fixed`` uses ``--unsub-multiple`` (default
   :data:`pushrl.policies.channel_policy.UNSUB_PRICE_MULTIPLE` = 4, fixed on development seed
   pairs 1, 2, 7, 8 with ``benchmarks/channels_margin.py``) or per-channel ``--unsub-prices``;
   "learned_ope_budget" chooses it with :func:`pushrl.ope.evaluate_channel.select_unsub_penalty`
   (the smallest whose IPW unsubscribes and cost on 30 % validation users of the TRAINING log
   are below push-only's with 95 % one-sided confidence: the previous method);
   "learned_unconstrained" trains on the objective itself. Every mask (training, OPE, the
   true runs) is the channel guardrails (opt-in, quiet hours, caps).
3. OPE + gate on the held-out users' logged rounds (:mod:`pushrl.ope.evaluate_channel`,
   baseline push-only).
4. Held-out users (another seed: new users, the same catalog) are simulated in the TRUE world
   once per channel policy (learned, push-only, uniform, unconstrained, OPE budget). The
   send logger's decisions and items, and every outcome uniform of the world, are identical
   across runs (the world draws
   them for every user at every slot; the channel policy has its own generator): common
   random numbers, paired by user. Each policy decides under the same per-channel guardrails
   and opt-in (:class:`~pushrl.policies.channel_policy.ChannelDecider`).
5. Per-user paired differences learned - push-only of the objective (the reward above summed
   over the horizon), unsubscribes and send cost: mean and normal 95 % CI; the objective's
   relative lift with a percentile-bootstrap 95 % CI over users.

Target: lift >= +5 % with unsubscribes and cost no higher (CI upper bound of the difference
<= 0 would prove it; the point estimate <= 0 is the weaker reading: both reported).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pushrl.data.features import ItemCatalog
from pushrl.data.io import write_dataset
from pushrl.data.synth import generate, world_spec
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import world_config
from pushrl.ope.channel_price import select_unsub_multiple
from pushrl.ope.evaluate_channel import evaluate_channel_policy, select_unsub_penalty
from pushrl.policies.base import ItemPolicy
from pushrl.policies.channel_policy import (
    ChannelArms,
    ChannelDecider,
    FixedChannel,
    UniformChannel,
    channel_rounds,
    UNSUB_PRICE_MULTIPLE,
    train_channel_policy,
    train_priced_channel_policy,
)
from pushrl.policies.vw import VWConfig
from pushrl.rules import reward as rules_reward
from pushrl.rules.channels import DEFAULT_CHANNELS
from pushrl.rules.reward import RewardWeights

from _output import emit_json  # benchmarks/ is sys.path[0]


#: The policies one run can simulate (learned and push_only always).
ALL_POLICIES = ("learned", "push_only", "uniform", "learned_unconstrained",
                "learned_ope_budget")


def price_of(a: argparse.Namespace) -> float | dict[str, float]:
    """The learned policy's training unsubscribe multiple(s): ``--unsub-prices`` parsed
    (``{"push": 4.0, "*": 1.0}``) or ``--unsub-multiple``."""
    if not a.unsub_prices:
        return float(a.unsub_multiple)
    return {k.strip(): float(v) for k, v in (kv.split(":") for kv in a.unsub_prices.split(","))}


def per_user(ds: Any, w: RewardWeights) -> dict[str, np.ndarray]:
    """Objective, unsubscribes, send cost and sends per user, each ``(n_users,)``."""
    p = ds.pushes
    costs = DEFAULT_CHANNELS.costs()
    r = rules_reward.from_logs(w, p, channel_costs=costs)
    u = np.asarray(p["user_id"].cat.codes, np.int64)
    n = len(ds.users)
    sent = p["sent"].fillna(False).to_numpy(bool)
    ch = p["channel"].astype(object).where(p["channel"].notna(), None).to_numpy()
    cost = rules_reward.channel_send_cost(w, ch, costs) * sent
    uns = p["unsubscribed"].fillna(False).to_numpy(bool)
    b = lambda x: np.bincount(u, weights=np.asarray(x, float), minlength=n)  # noqa: E731
    return {"obj": b(r), "unsub": b(uns), "cost": b(cost), "sends": b(sent)}


def paired(a: np.ndarray, b: np.ndarray, seed: int = 0, lift: bool = True) -> dict[str, Any]:
    """Per-user paired difference ``a - b``: mean with a normal 95 % CI and (``lift``) the
    relative lift ``mean(a - b) / mean(b)`` with a percentile-bootstrap 95 % CI."""
    d = a - b
    se = d.std(ddof=1) / np.sqrt(d.size)
    out: dict[str, Any] = {"mean_a": float(a.mean()), "mean_b": float(b.mean()),
                           "mean_diff": float(d.mean()),
                           "ci95": [float(d.mean() - 1.96 * se), float(d.mean() + 1.96 * se)]}
    if lift:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, d.size, (2000, d.size))
        boot = d[idx].mean(1) / b[idx].mean(1)
        out["lift"] = float(d.mean() / b.mean())
        out["lift_ci95"] = [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))]
    return out


def make_worlds(a: argparse.Namespace, seed: int, eval_seed: int) -> tuple[Any, Any, Any, Any]:
    """``(training log, held-out log, raw training dataset, held-out world config)`` of one
    seed pair (logs written and re-read through the contract's validation)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = world_config("default", users=a.train_users, days=a.days, seed=seed,
                           channels=True)
        ds_raw, _, _ = generate(cfg)
        write_dataset(ds_raw, f"{tmp}/train")
        ds, _ = load_dataset(f"{tmp}/train", quarantine=False)
        eval_cfg = world_config("default", users=a.eval_users, days=a.days, seed=eval_seed,
                                channels=True)
        ds_log, _, _ = generate(eval_cfg, items=ds_raw.items)
        write_dataset(ds_log, f"{tmp}/heldout")
        ds_h, _ = load_dataset(f"{tmp}/heldout", quarantine=False)
    return ds, ds_h, ds_raw, eval_cfg


def run_seed(a: argparse.Namespace, seed: int, w: RewardWeights) -> dict[str, Any]:
    """One train/held-out seed pair: training, OPE on held-out logs, paired true runs."""
    t0 = time.perf_counter()
    spec = world_spec()
    eval_seed = seed + a.eval_seed_offset
    ds, ds_h, ds_raw, eval_cfg = make_worlds(a, seed, eval_seed)
    rounds = channel_rounds(ds, DEFAULT_CHANNELS, spec=spec, weights=w)
    vw_cfg = VWConfig(gamma_scale=a.gamma_scale, learning_rate=a.learning_rate)
    push_only = FixedChannel(arm=1, name="push-only")
    price_sel: dict[str, Any] | None = None
    if a.price == "logs":  # the multiple read off the training log (pushrl.ope.channel_price)
        pol, price_sel = select_unsub_multiple(rounds, push_only, config=vw_cfg)
    else:
        pol = train_priced_channel_policy(rounds, vw_cfg, multiple=price_of(a))
    wanted = set(a.policies.split(","))
    selection: dict[str, Any] | None = None
    extra: dict[str, ItemPolicy] = {}
    if "uniform" in wanted:
        extra["uniform"] = UniformChannel()
    if "learned_unconstrained" in wanted:  # the objective's own penalty, no budget
        extra["learned_unconstrained"] = train_channel_policy(rounds, vw_cfg)
    if "learned_ope_budget" in wanted:
        extra["learned_ope_budget"], selection = select_unsub_penalty(
            rounds, push_only, config=vw_cfg, seed=seed)
    t_train = time.perf_counter() - t0
    h_rounds = channel_rounds(ds_h, DEFAULT_CHANNELS, spec=spec, weights=w)
    ope = evaluate_channel_policy(h_rounds, pol, n_bootstrap=a.n_bootstrap, seed=seed)

    arms = ChannelArms(DEFAULT_CHANNELS, spec, ItemCatalog(ds.items, spec))
    policies: dict[str, ItemPolicy] = {"learned": pol, "push_only": push_only, **extra}
    runs: dict[str, dict[str, np.ndarray]] = {}
    info: dict[str, Any] = {}
    for k, (name, policy) in enumerate(policies.items()):
        decider = ChannelDecider(policy, arms, a.eval_users, seed=99 + k)
        ds_e, _, _ = generate(eval_cfg, items=ds_raw.items, channel_chooser=decider)
        runs[name] = per_user(ds_e, w)
        sent = ds_e.pushes["sent"].to_numpy(bool)
        share = ds_e.pushes["channel"][sent].value_counts(normalize=True)
        info[name] = {
            "objective_per_user": float(runs[name]["obj"].mean()),
            "unsub_per_user": float(runs[name]["unsub"].mean()),
            "cost_per_user": float(runs[name]["cost"].mean()),
            "sends_per_user": float(runs[name]["sends"].mean()),
            "channel_share": {str(c): round(float(v), 3) for c, v in share.items()},
            "guardrail_verdicts": dict(zip(
                ["allowed", "quiet_hours", "daily_cap", "weekly_cap", "unsubscribed",
                 "held_out", "not_opted_in"], decider.blocked.tolist(), strict=True)),
        }
    lv, pv = runs["learned"], runs["push_only"]
    res: dict[str, Any] = {
        "seed": seed, "eval_seed": eval_seed, "train_rounds": rounds.n_rounds,
        "train_seconds": round(t_train, 1),
        "learned_train_unsub_price": (price_of(a) if price_sel is None
                                      else price_sel["multiple"]),
        "learned_price_selection": price_sel,
        "ope_budget_penalty_selection": selection,
        "per_policy": info,
        "learned_vs_push_only": {
            "objective": paired(lv["obj"], pv["obj"], seed),
            "unsubscribes": paired(lv["unsub"], pv["unsub"], lift=False),
            "cost": paired(lv["cost"], pv["cost"], lift=False)},
    }
    if "uniform" in runs:
        res["learned_vs_uniform"] = {"objective": paired(lv["obj"], runs["uniform"]["obj"],
                                                         seed)}
    for name, label in (("learned_ope_budget", "ope_budget_vs_push_only"),
                        ("learned_unconstrained", "unconstrained_vs_push_only")):
        if name in runs:
            res[label] = {
                "objective": paired(runs[name]["obj"], pv["obj"], seed),
                "unsubscribes": paired(runs[name]["unsub"], pv["unsub"], lift=False),
                "cost": paired(runs[name]["cost"], pv["cost"], lift=False)}
    res.update({
        "ope_heldout_logs": {"n_rounds": ope["n_rounds"], "estimates": ope["estimates"],
                             "gate": {k: ope["gate"][k] for k in ("passed", "failed_rules",
                                                                  "comparison")}},
        "seconds": round(time.perf_counter() - t0, 1),
    })
    o = res["learned_vs_push_only"]
    res["target_met"] = {
        "lift_ge_5pct": o["objective"]["lift"] >= 0.05,
        "lift_ci_lower_ge_5pct": o["objective"]["lift_ci95"][0] >= 0.05,
        "unsub_not_higher_point": o["unsubscribes"]["mean_diff"] <= 0,
        "unsub_not_higher_ci": o["unsubscribes"]["ci95"][1] <= 0,
        "cost_not_higher_point": o["cost"]["mean_diff"] <= 0,
        "cost_not_higher_ci": o["cost"]["ci95"][1] <= 0,
    }
    return res


def run_dev_seeds(name: str, a: argparse.Namespace,
                  run_seed: Callable[[argparse.Namespace, int, RewardWeights], dict[str, Any]]
                  ) -> None:
    """The development benchmarks' driver (``channels_diag``, ``channels_dm_price``,
    ``channels_margin``): ``run_seed(a, seed, w)`` for each seed of ``a.seeds`` (comma list)
    under this benchmark's objective with unsubscribes at 1, the JSON rewritten to ``a.out``
    after each seed (a long sweep keeps what it has) and printed at the end."""
    w = RewardWeights(open=0.0, click=1.0, revenue=0.01, send_cost=0.0,
                      unsubscribe_penalty=1.0)
    out: dict[str, Any] = {"benchmark": f"{name} (development seeds only)",
                           "config": vars(a), "per_seed": []}
    for s in (int(x) for x in a.seeds.split(",")):
        out["per_seed"].append(run_seed(a, s, w))
        out["uptime_load"] = os.getloadavg()
        emit_json(out, a.out, echo=False)
    emit_json(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-users", type=int, default=4000)
    ap.add_argument("--eval-users", type=int, default=3000)
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--eval-seed-offset", type=int, default=1000)
    ap.add_argument("--unsub-penalty", type=float, default=1.0,
                    help="Unsubscribe penalty of the objective (an unsubscribe loses one "
                         "channel of the user; the others stay).")
    ap.add_argument("--unsub-multiple", type=float, default=UNSUB_PRICE_MULTIPLE,
                    help="The learned policy's training unsubscribe penalty as a multiple of "
                         "the objective's (pushrl.policies.channel_policy."
                         "UNSUB_PRICE_MULTIPLE).")
    ap.add_argument("--price", choices=("logs", "fixed"), default="logs",
                    help="The learned policy's unsubscribe multiple: read off the training log "
                         "(pushrl.ope.channel_price.select_unsub_multiple) or fixed "
                         "(--unsub-multiple / --unsub-prices).")
    ap.add_argument("--unsub-prices", default=None,
                    help="Per-channel training unsubscribe multiples 'push:4,email:1,*:1' "
                         "(pushrl.rules.reward.channel_unsub_price; '*' = the others'); "
                         "overrides --unsub-multiple.")
    ap.add_argument("--policies", default=",".join(ALL_POLICIES),
                    help="Policies simulated besides learned and push_only (comma list of "
                         f"{', '.join(ALL_POLICIES[2:])}; fewer = a faster run).")
    ap.add_argument("--gamma-scale", type=float, default=10.0)
    ap.add_argument("--learning-rate", type=float, default=0.02)
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    w = RewardWeights(open=0.0, click=1.0, revenue=0.01, send_cost=0.0,
                      unsubscribe_penalty=a.unsub_penalty)
    t0 = time.perf_counter()
    seeds = [int(s) for s in a.seeds.split(",")]
    per_seed = [run_seed(a, s, w) for s in seeds]
    out = {"benchmark": "channels", "uptime_load": os.getloadavg(), "config": vars(a),
           "objective": w.describe().replace("-0*sent", "-cost[channel]*sent"),
           "channels": DEFAULT_CHANNELS.to_dict(), "per_seed": per_seed,
           "target": "learned vs push-only objective lift >= +0.05 with no more unsubscribes "
                     "and no more cost (issue 17)",
           "seconds_total": round(time.perf_counter() - t0, 1)}
    for r in per_seed:
        o = r["learned_vs_push_only"]
        sys.stderr.write(
            f"seed {r['seed']}/{r['eval_seed']}: lift {o['objective']['lift']:+.3f} "
            f"CI [{o['objective']['lift_ci95'][0]:+.3f}, {o['objective']['lift_ci95'][1]:+.3f}]"
            f"; unsub diff {o['unsubscribes']['mean_diff']:+.4f} CI "
            f"[{o['unsubscribes']['ci95'][0]:+.4f}, {o['unsubscribes']['ci95'][1]:+.4f}]"
            f"; cost diff {o['cost']['mean_diff']:+.4f} CI [{o['cost']['ci95'][0]:+.4f}, "
            f"{o['cost']['ci95'][1]:+.4f}]; OPE gate passed="
            f"{r['ope_heldout_logs']['gate']['passed']}\n")
    emit_json(out, a.out)


if __name__ == "__main__":
    main()
