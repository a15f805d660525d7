"""Learned trigger delays vs heuristics on the trigger world's truth (issue #16 target).

    python benchmarks/triggers.py [--users 2000 --days 28 --seed 0] [--data DIR]
                                  [--out benchmarks/results/triggers]

1. Generates the trigger world (`pushrl data synth --world triggers`) unless ``--data``.
2. Splits users (``--holdout-frac``, seeded: :class:`pushrl.data.split.UserSplit`), trains
   the VW delay policy on the training users' trigger rounds (`pushrl train triggers`'s code).
3. On the held-out users' triggers (their logged contexts), evaluates every policy with the
   world's exact per-arm truth (``ground_truth_triggers.parquet``): expected incremental
   conversions over organic, recovered conversions (push-attributed), sends, unsubscribes,
   incremental revenue, by trigger kind; paired 95 % CIs of learned - fixed 1 h by a
   bootstrap over held-out users (2000 resamples).
4. OPE (IPW, DR with a kind x arm reward model fitted on the training users) of the learned
   policy vs fixed 1 h on the held-out logs: the product's delay gate,
   :func:`pushrl.ope.evaluate_delay.evaluate_delay_policy`.
5. Writes ``OUT.json``, ``OUT.md`` and the delay distribution plot ``OUT_delays.png``.

Target: learned >= +10 % incremental conversions vs fixed 1 h at no more sends and no more
unsubscribes.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pushrl.data.split import UserSplit
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import world_config
from pushrl.ope.evaluate_delay import evaluate_delay_policy
from pushrl.policies.baselines import make_baseline
from pushrl.policies.delay_data import delay_rounds
from pushrl.rules.triggers import KINDS, TriggerConfig
from pushrl.sim.trigger_fit import TriggerSim
from pushrl.sim.trigger_metrics import ArmOutcomes, trigger_outcomes
from pushrl.sim.trigger_world import (
    TRUTH_FILE,
    WORLD_GUARDRAILS,
    WORLD_TRIGGERS,
    TriggerWorldParams,
    arm_probs,
    synthesize_triggers,
)
from pushrl.train.delay import match_send_cost, train_rounds

BASELINES = ("delay-fixed-1h", "delay-fixed-0h", "delay-fixed-24h", "delay-next-active-hour")


def _values(dist: np.ndarray, truth: pd.DataFrame, arms: tuple) -> dict[str, np.ndarray]:
    """Per-round expected outcomes of a policy's arm distribution ``(n, k)`` (the one
    definition: :func:`pushrl.sim.trigger_metrics.trigger_outcomes`)."""
    return trigger_outcomes(dist, ArmOutcomes.from_truth(truth, arms))


def _paired(a: np.ndarray, b: np.ndarray, users: np.ndarray, rng: np.random.Generator,
            n_boot: int = 2000) -> dict[str, float]:
    """Sum difference a - b and relative difference (a/b - 1) with 95 % bootstrap CIs over
    users."""
    codes, uu = np.unique(users, return_inverse=True)
    sa = np.bincount(uu, a, len(codes))
    sb = np.bincount(uu, b, len(codes))
    idx = rng.integers(0, len(codes), (n_boot, len(codes)))
    da = sa[idx].sum(1)
    db = sb[idx].sum(1)
    diff, rel = da - db, da / np.maximum(db, 1e-12) - 1
    return {"a": float(sa.sum()), "b": float(sb.sum()), "diff": float(sa.sum() - sb.sum()),
            "diff_lo": float(np.quantile(diff, 0.025)), "diff_hi": float(np.quantile(diff, 0.975)),
            "rel": float(sa.sum() / sb.sum() - 1), "rel_lo": float(np.quantile(rel, 0.025)),
            "rel_hi": float(np.quantile(rel, 0.975))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--render", type=Path, default=None,
                    help="only re-render OUT.md from an existing OUT.json")
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--holdout-frac", type=float, default=0.3)
    ap.add_argument("--send-cost", default="match",
                    help="a number, or match: chosen on the training users' log so the learned "
                         "policy's sends bound (95 %% SNIPW upper bounds of sent and due, "
                         "fitted simulator) fits 0.985 x fixed 1 h's "
                         "(pushrl.train.delay.match_send_cost)")
    ap.add_argument("--rounds-cache", type=Path, default=None,
                    help="pickle of the delay rounds (train/heldout) to reuse between runs")
    ap.add_argument("--passes", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/triggers"))
    args = ap.parse_args()
    if args.render is not None:
        _markdown(json.loads(args.render.read_text()), args.render.with_suffix(".md"))
        print(args.render.with_suffix(".md").read_text())
        return
    t0 = time.perf_counter()
    data = args.data or Path(f"/tmp/pushrl-triggers-{args.users}x{args.days}-s{args.seed}")
    if not (data / TRUTH_FILE).exists():
        cfg = world_config("triggers", users=args.users, days=args.days, seed=args.seed)
        print("generating", synthesize_triggers(data, cfg))
    t_gen = time.perf_counter() - t0
    config = TriggerConfig.parse(WORLD_TRIGGERS)
    g = WORLD_GUARDRAILS
    if args.rounds_cache is not None and args.rounds_cache.exists():
        parts = pickle.loads(args.rounds_cache.read_bytes())
    else:
        parts = {}
        for part in ("train", "heldout"):
            ds, _ = load_dataset(data, quarantine=False,
                                 split=UserSplit(args.holdout_frac, args.seed, part))
            parts[part] = delay_rounds(ds, config, g, unsub_cost=1.0)
        if args.rounds_cache is not None:
            args.rounds_cache.write_bytes(pickle.dumps(parts))
    t_rounds = time.perf_counter() - t0 - t_gen
    t1 = time.perf_counter()
    match = None
    if args.send_cost == "match":
        match = match_send_cost(parts["train"], passes=args.passes, seed=args.seed)
        args.send_cost = match.send_cost
        vw = match.policy
    else:
        args.send_cost = float(args.send_cost)
        vw = train_rounds(parts["train"].with_costs(args.send_cost, 1.0), passes=args.passes,
                          seed=args.seed)
    train, test = (parts[p].with_costs(args.send_cost, 1.0) for p in ("train", "heldout"))
    t_train = time.perf_counter() - t1
    truth = pd.read_parquet(data / TRUTH_FILE).set_index("trigger_id").loc[test.trigger_id]
    truth = truth.reset_index()
    arms = test.arms
    policies = {name: make_baseline(name) for name in BASELINES}
    policies["learned-vw"] = vw
    dists = {name: p.action_dist(test.context) for name, p in policies.items()}
    logp = np.zeros((test.n_rounds, len(arms)))
    logp[:] = arm_probs(arms, TriggerWorldParams().log_1h_share)
    dists["logging"] = logp
    # oracle with the same send cost (reference only: it knows the truth)
    cols = ["drop" if a is None else str(a) for a in arms]
    score = (truth[[f"incr_{c}" for c in cols]].to_numpy()
             - args.send_cost * truth[[f"send_{c}" for c in cols]].to_numpy())
    orc = np.zeros_like(score)
    orc[np.arange(len(score)), score.argmax(1)] = 1
    dists["oracle (truth)"] = orc
    vals = {name: _values(d, truth, arms) for name, d in dists.items()}
    rng = np.random.default_rng(args.seed)
    users = test.user_id
    summary = {}
    for name, v in vals.items():
        row = {k: float(x.sum()) for k, x in v.items()}
        row["sends_per_incremental"] = row["sends"] / max(row["incremental"], 1e-12)
        row["by_kind"] = {kind: {k: float(x[test.kind == kind].sum())
                                 for k, x in v.items() if k != "organic"}
                          for kind in sorted(set(test.kind))}
        row["arm_share"] = dict(zip(cols, map(float, dists[name].mean(0)), strict=True))
        summary[name] = row
    base = vals["delay-fixed-1h"]
    paired = {}
    for name in ("learned-vw", "delay-fixed-0h", "delay-next-active-hour", "delay-fixed-24h"):
        paired[name] = {k: _paired(vals[name][k], base[k], users, rng)
                        for k in ("incremental", "sends", "unsubscribes", "recovered",
                                  "incremental_revenue")}
    # OPE + gate of learned vs fixed 1 h on the held-out logs (the product's delay gate:
    # complete rounds only, the kind x arm reward model fitted on the training users)
    split = UserSplit(args.holdout_frac, args.seed)
    lineage = {p: {"fingerprint": None,
                   "split": split.with_part(p).record(str(data), len(set(parts[p].user_id)))}
               for p in ("train", "heldout")}
    ev = evaluate_delay_policy(train, test, dists["learned-vw"], dists["delay-fixed-1h"],
                               trained_on=lineage["train"], evaluated_on=lineage["heldout"],
                               n_bootstrap=1000, seed=args.seed)
    done = np.flatnonzero(test.complete)
    ope: dict = {"rounds": ev["rounds"]}
    for est_name, e in ev["estimates"].items():
        ope[est_name] = {"passed": e["passed"], "failed_rules": e["failed_rules"],
                         "estimate_learned": e["candidate"], "estimate_fixed_1h": e["baseline"],
                         "difference": e["difference"], "lo": e["lower"], "hi": e["upper"]}
    sc, uc = args.send_cost, 1.0

    def true_reward(name: str) -> float:
        v = vals[name]
        return float(np.mean((v["organic"] + v["incremental"] - sc * v["sends"]
                              - uc * v["unsubscribes"])[done]))

    # the simulator fitted from the training users' trigger logs, scored on held-out contexts
    fsim = TriggerSim.fit(train.kind, train.action, train.pscore, train.converted, train.sent,
                          train.arms)
    fitted = {name: fsim.evaluate(d, test.kind) for name, d in dists.items()}
    tp = TriggerWorldParams()
    true_tau = {k.value: t for k, t in zip(KINDS, tp.tau_h, strict=True)}
    ope["truth_reward_learned"] = true_reward("learned-vw")
    ope["truth_reward_fixed_1h"] = true_reward("delay-fixed-1h")
    p = paired["learned-vw"]
    target = {"incremental_rel": p["incremental"]["rel"],
              "incremental_rel_ci": [p["incremental"]["rel_lo"], p["incremental"]["rel_hi"]],
              "sends_diff_ci": [p["sends"]["diff_lo"], p["sends"]["diff_hi"]],
              "unsub_diff_ci": [p["unsubscribes"]["diff_lo"], p["unsubscribes"]["diff_hi"]],
              "met": bool(p["incremental"]["rel_lo"] >= 0.10 - 1e-12
                          and p["sends"]["diff"] <= 0 and p["unsubscribes"]["diff"] <= 0),
              "met_point": bool(p["incremental"]["rel"] >= 0.10 and p["sends"]["diff"] <= 0
                                and p["unsubscribes"]["diff"] <= 0)}
    out = {"data": str(data), "users": args.users, "days": args.days, "seed": args.seed,
           "holdout_frac": args.holdout_frac, "send_cost": args.send_cost,
           "send_cost_match": None if match is None else match.to_dict(),
           "rounds": {"train": train.n_rounds, "heldout": test.n_rounds},
           "heldout_users": len(set(users)), "target": target, "paired_vs_fixed_1h": paired,
           "policies": summary, "ope": ope,
           "fitted_simulator": {"model": fsim.to_dict(), "true_tau_h_at_median_user": true_tau,
                                "policies": fitted},
           "seconds": {"generate": t_gen, "rounds": t_rounds, "train": t_train,
                       "total": time.perf_counter() - t0},
           "load_avg": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=1))
    _plot(dists, cols, args.out.with_name(args.out.name + "_delays.png"))
    _markdown(out, args.out.with_suffix(".md"))
    print(args.out.with_suffix(".md").read_text())


def _plot(dists: dict[str, np.ndarray], cols: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(dists)
    bottom = np.zeros(len(names))
    for j, c in enumerate(cols):
        share = np.array([dists[n][:, j].mean() for n in names])
        ax.barh(names, share, left=bottom, label=("drop" if c == "drop" else f"{c} h"))
        bottom += share
    ax.set_xlabel("share of held-out triggers")
    ax.set_title("Trigger delay distribution by policy")
    ax.legend(ncol=len(cols), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _match_lines(m: dict | None) -> list[str]:
    """The send-cost search (training users' log, fitted simulator) as markdown."""
    if not m:
        return []
    tr = ", ".join(f"{t['send_cost']:.4g} -> {t['sends_ratio']:.3f}" for t in m["trials"])
    if "confidence" not in m:  # a run before the sends bound
        return [f"Send cost chosen on the training users' log (`match_send_cost`): the "
                "smallest whose learned policy's sends (the larger of the fitted simulator's "
                f"and SNIPW's estimate) are <= {m['target_ratio']:g} x {m['baseline']}'s; "
                f"tried (cost -> sends ratio): {tr}.\n"]
    return [f"Send cost chosen on the training users' log (`match_send_cost`): the smallest "
            "whose learned policy's sends bound (the largest of the one-sided "
            f"{m['confidence']:.0%} SNIPW upper bounds of the sent and due ratios and the "
            f"fitted simulator's ratio) is <= {m['target_ratio']:g} x {m['baseline']}'s; "
            f"tried (cost -> bound): {tr}.\n"]


def _markdown(o: dict, path: Path) -> None:
    t = o["target"]
    lines = ["# Trigger delays on the trigger world's truth (held-out users)\n",
             f"`python benchmarks/triggers.py --users {o['users']} --days {o['days']} "
             f"--seed {o['seed']}`; {o['rounds']['train']} training / {o['rounds']['heldout']} "
             f"held-out trigger rounds ({o['heldout_users']} held-out users), send cost "
             f"{o['send_cost']:.4g}; load avg {o['load_avg'][0]:.1f}.\n",
             *_match_lines(o.get("send_cost_match")),
             f"**Target** (learned >= +10 % incremental conversions vs fixed 1 h, no more sends "
             f"/ unsubscribes): incremental {t['incremental_rel']:+.1%} "
             f"[{t['incremental_rel_ci'][0]:+.1%}, {t['incremental_rel_ci'][1]:+.1%}], sends "
             f"diff CI [{t['sends_diff_ci'][0]:.1f}, {t['sends_diff_ci'][1]:.1f}], unsub diff "
             f"CI [{t['unsub_diff_ci'][0]:.2f}, {t['unsub_diff_ci'][1]:.2f}]: "
             + ("met" if t["met"] else "met at the point estimate" if t["met_point"]
                else "NOT met") +
             ".\n",
             "| policy | incremental conv. | recovered conv. | organic | sends | sends / incr. | "
             "unsubs | incr. revenue |", "|---|---|---|---|---|---|---|---|"]
    for name, r in o["policies"].items():
        lines.append(f"| {name} | {r['incremental']:.1f} | {r['recovered']:.1f} | "
                     f"{r['organic']:.1f} | {r['sends']:.1f} | {r['sends_per_incremental']:.2f} "
                     f"| {r['unsubscribes']:.2f} | {r['incremental_revenue']:.0f} |")
    lines += ["", "Paired vs fixed 1 h (95 % bootstrap CI over held-out users):", "",
              "| policy | incremental | sends | unsubscribes |", "|---|---|---|---|"]
    for name, p in o["paired_vs_fixed_1h"].items():
        i, s, u = p["incremental"], p["sends"], p["unsubscribes"]
        lines.append(f"| {name} | {i['rel']:+.1%} [{i['rel_lo']:+.1%}, {i['rel_hi']:+.1%}] | "
                     f"{s['rel']:+.1%} [{s['rel_lo']:+.1%}, {s['rel_hi']:+.1%}] | "
                     f"{u['rel']:+.1%} [{u['rel_lo']:+.1%}, {u['rel_hi']:+.1%}] |")
    lines += ["", "By kind (incremental conversions):", "",
              "| kind | " + " | ".join(o["policies"]) + " |",
              "|---|" + "---|" * len(o["policies"])]
    kinds = sorted(next(iter(o["policies"].values()))["by_kind"])
    for k in kinds:
        lines.append(f"| {k} | " + " | ".join(f"{r['by_kind'][k]['incremental']:.1f}"
                                             for r in o["policies"].values()) + " |")
    fs = o["fitted_simulator"]
    lines += ["", "Simulator fitted from the training users' trigger logs (per kind x arm; "
              "incremental = conversion rate - the dropped triggers' rate), the same held-out "
              "contexts:", "", "| policy | incremental (fitted) | incremental (truth) | "
              "sends (fitted) | sends (truth) |", "|---|---|---|---|---|"]
    for name, r in fs["policies"].items():
        tr = o["policies"][name]
        lines.append(f"| {name} | {r['incremental']:.1f} | {tr['incremental']:.1f} | "
                     f"{r['sends']:.1f} | {tr['sends']:.1f} |")
    decay = ", ".join(f"{k} {v['tau_h']:.1f} h" for k, v in fs["model"]["decay"].items())
    lines += ["", f"Fitted intent decay (incremental ~ A exp(-delay / tau)): {decay}; the "
              "world's tau at the median user: " + ", ".join(
                  f"{k} {v:g} h" for k, v in fs["true_tau_h_at_median_user"].items()), ""]
    ope = o["ope"]
    lines += ["", f"OPE of learned vs fixed 1 h on the held-out logs ({ope.get('rounds')} rounds "
              "whose 7-day conversion window ends inside the log; reward = converted - "
              f"{o['send_cost']}*sent - unsubscribed; truth: learned "
              f"{ope['truth_reward_learned']:.4f}, fixed 1 h {ope['truth_reward_fixed_1h']:.4f}):",
              ""]
    for est in ("ipw", "dr"):
        e = ope[est]
        lines.append(f"- {est}: learned {e['estimate_learned']:.4f}, fixed 1 h "
                     f"{e['estimate_fixed_1h']:.4f}, difference {e['difference']:+.4f} "
                     f"[{e['lo']:+.4f}, {e['hi']:+.4f}]; gate "
                     f"{'passed' if e['passed'] else 'failed ' + ', '.join(e['failed_rules'])}")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
