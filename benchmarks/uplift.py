"""Send only if it helps: fewer sends at the same incremental conversions (issue #18 item 3).

Usage: python benchmarks/uplift.py [--train-users 20000] [--users 20000] [--days 28]
       [--seeds 11 12] [--policy most-active-hour:sends_per_day=2]
       [--out benchmarks/results/uplift]

World: the default scenario with ``truth = true`` and organic purchases
(``organic_purchases = true``, :mod:`pushrl.sim.organic`): the 30 % most active users buy on
their own (a push mostly moves their purchase), the others mostly only when pushed.

1. **Users**: the population's users are split in two by a salted hash of the id
   (:func:`pushrl.data.split.user_uniform`); the uplift model is fitted and its threshold
   chosen on one half, every figure is measured on the other (held-out users).
2. **Fit** (training half): a randomised holdout experiment (50 % held out) of the policy
   after a 7-day pre-period without pushes; a T-learner of conversions (pushed + organic)
   per user on the features at the experiment's start (:mod:`pushrl.train.uplift`).
3. **Threshold** (training half, another seed): the largest threshold of the grid whose
   validation loss of incremental conversions is at most ``--max-val-loss`` (0.5 %).
4. **Measure** (held-out half, each seed): the policy with and without the gate, and no push,
   on the same users with the same random numbers. Incremental conversions = conversions
   (pushed + organic) minus those under no push. Reported: change in sends and in
   incremental conversions with paired bootstrap 95 % CIs over users (targets: sends <= -20 %,
   incremental conversions >= -1 %), for the chosen threshold and the whole grid.

``--need-hours H`` measures the need-state gate instead (``UpliftGate(None, 0, H)``: no push
within ``H`` hours of the user's last purchase, no model): the policy with and without it and
no push on ``--users`` held-out-half users per seed, per seed and pooled over the seeds
(``results/uplift_need.{md,json}``; H chosen on development seeds beforehand,
``results/uplift_need_dev.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pushrl.compare.runner import PolicySpec
from pushrl.data.split import user_uniform
from pushrl.envs.rollout import RolloutResult, rollout
from pushrl.envs.scenario import load_scenario
from pushrl.envs.world import make_world
from pushrl.rules.holdout import Holdout
from pushrl.rules.uplift import UpliftGate, UpliftModel
from pushrl.train.uplift import PrePeriod, from_rollout, outcome_of

GRID = (-0.002, 0.0, 0.001, 0.002, 0.003, 0.004)


def users_of(part: int, n: int, seed: int, pop_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``n`` users drawn from half ``part`` (0 train, 1 held out) of the population."""
    half = user_uniform(pop_ids.astype(object), "pushrl-uplift-bench:") >= 0.5
    rows = np.flatnonzero(half == bool(part))
    g = np.random.default_rng([seed, 77])
    return (rows[g.integers(rows.size, size=n)],
            g.integers(0, np.iinfo(np.int64).max, size=n, dtype=np.int64).astype(np.uint64))


def paired(gate: RolloutResult, base: RolloutResult, none: RolloutResult, reps: int = 2000,
           seed: int = 0) -> dict[str, float]:
    """Relative change of sends and incremental conversions (gate vs base), bootstrap CIs."""
    org0 = none.extra["organic_conversions"]
    inc_g, inc_b = outcome_of(gate) - org0, outcome_of(base) - org0
    sg, sb = gate.sends.astype(float), base.sends.astype(float)
    n = sg.size
    def rel(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
        g = np.random.default_rng(seed)  # the same resamples for every metric (paired)
        boots = [a[i].sum() / b[i].sum() - 1 for i in (g.integers(n, size=n)
                                                        for _ in range(reps))]
        lo, hi = np.percentile(boots, [2.5, 97.5])
        return float(a.sum() / b.sum() - 1), float(lo), float(hi)
    s, s_lo, s_hi = rel(sg, sb)
    c, c_lo, c_hi = rel(inc_g, inc_b)
    days = base.days
    return {"sends_rel": s, "sends_low": s_lo, "sends_high": s_hi, "incr_rel": c,
            "incr_low": c_lo, "incr_high": c_hi,
            "incr_per_user_base": float(inc_b.mean()), "incr_per_user_gate": float(inc_g.mean()),
            "sends_per_user_week_base": float(sb.mean() / days * 7),
            "sends_per_user_week_gate": float(sg.mean() / days * 7),
            "objective_per_user_base": float(base.objective.mean()),
            "objective_per_user_gate": float(gate.objective.mean()),
            "push_conversions_base": float(base.conversions.mean()),
            "push_conversions_gate": float(gate.conversions.mean()),
            "organic_no_push": float(org0.mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--train-users", type=int, default=20000)
    ap.add_argument("--val-users", type=int, default=10000)
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 12])
    ap.add_argument("--policy", default="most-active-hour:sends_per_day=2")
    ap.add_argument("--max-val-loss", type=float, default=0.005)
    ap.add_argument("--grid", type=float, nargs="+", default=list(GRID))
    ap.add_argument("--model", default=None, help="reuse a fitted model (skips steps 2-3)")
    ap.add_argument("--threshold", type=float, default=None, help="with --model: the chosen "
                    "threshold (from the run that fitted it)")
    ap.add_argument("--need-hours", type=float, default=None, help="measure only the need-"
                    "state gate (no model): no push within this many hours of the user's last "
                    "purchase (chosen on development seeds beforehand)")
    ap.add_argument("--out", default="benchmarks/results/uplift")
    a = ap.parse_args()
    if a.need_hours is not None:
        need_state(a)
        return
    grid = tuple(a.grid)
    t0 = time.perf_counter()
    pol = PolicySpec.parse(a.policy).load()
    never = PolicySpec.parse("never-send").load()
    kw = dict(truth=True, organic_purchases=True)
    sc = load_scenario(a.scenario, **kw)
    pop = make_world(sc).model.population
    assert pop is not None
    ids = np.asarray(pop.user_id)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    val: list[dict] = []
    if a.model is not None:
        model = UpliftModel.load(a.model)
        chosen = a.threshold if a.threshold is not None else min(grid)
    else:
        model, chosen, val = fit_and_choose(a, pol, never, ids, kw, grid, out)
    # 4: measure on held-out users
    seeds = []
    for s in a.seeds:
        ekw = dict(n_users=a.users, days=a.days, seed=s, users=users_of(1, a.users, s, ids), **kw)
        b, n0 = rollout(pol, a.scenario, **ekw), rollout(never, a.scenario, **ekw)
        rows = []
        for th in grid:
            r = paired(rollout(pol, a.scenario, uplift=UpliftGate(model, th), **ekw), b, n0)
            rows.append({"threshold": th, **r})
            print("eval", s, th, json.dumps({k: round(v, 4) for k, v in r.items()}), flush=True)
        seeds.append({"seed": s, "grid": rows,
                      "chosen": next((g for g in rows if g["threshold"] == chosen), None)})
    report(a, model, chosen, val, seeds, out, t0)


def need_state(a: argparse.Namespace) -> None:
    """Measure the need-state gate ``UpliftGate(None, 0, H)`` once on held-out users and
    seeds, per seed and pooled over the seeds (users of all seeds in one bootstrap)."""
    t0 = time.perf_counter()
    pol = PolicySpec.parse(a.policy).load()
    never = PolicySpec.parse("never-send").load()
    kw = dict(truth=True, organic_purchases=True)
    ids = np.asarray(make_world(load_scenario(a.scenario, **kw)).model.population.user_id)
    gate = UpliftGate(None, 0.0, a.need_hours)
    runs: list[tuple[RolloutResult, RolloutResult, RolloutResult]] = []
    seeds = []
    for s in a.seeds:
        ekw = dict(n_users=a.users, days=a.days, seed=s, users=users_of(1, a.users, s, ids), **kw)
        b, n0 = rollout(pol, a.scenario, **ekw), rollout(never, a.scenario, **ekw)
        g = rollout(pol, a.scenario, uplift=gate, **ekw)
        r = paired(g, b, n0)
        runs.append((g, b, n0))
        seeds.append({"seed": s, **r, "unsub_base": float(b.unsubscribed.mean()),
                      "unsub_gate": float(g.unsubscribed.mean())})
        print("held-out", s, json.dumps({k: round(v, 4) for k, v in r.items()}), flush=True)
    pooled = paired(*(_cat([x[i] for x in runs]) for i in range(3)))
    res = {"scenario": a.scenario, "policy": a.policy, "users_per_seed": a.users,
           "days": a.days, "min_hours_since_purchase": a.need_hours, "seeds": seeds,
           "pooled": pooled, "load_avg": os.getloadavg(),
           "seconds": round(time.perf_counter() - t0, 1)}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    lines = [f"# Send only if it helps: need-state gate ({a.policy}; organic world, truth; "
             f"no push within {a.need_hours:g} h of the user's last purchase; {a.users} "
             f"held-out users x {a.days} days per seed; load {res['load_avg'][0]:.1f})", "",
             "Targets: sends <= -20 %, incremental conversions >= -1 % (paired bootstrap "
             "95 % CIs over users, common random numbers).", "",
             "| seeds | sends/user/week base -> gate | sends [95% CI] | incremental "
             "conversions/user base -> gate | incremental [95% CI] |", "|---|---|---|---|---|"]
    for name, g in [*((str(sd["seed"]), sd) for sd in seeds), ("pooled", pooled)]:
        lines.append(
            f"| {name} | {g['sends_per_user_week_base']:.2f} -> "
            f"{g['sends_per_user_week_gate']:.2f} | {100 * g['sends_rel']:+.1f} % "
            f"[{100 * g['sends_low']:+.1f}, {100 * g['sends_high']:+.1f}] | "
            f"{g['incr_per_user_base']:.4f} -> {g['incr_per_user_gate']:.4f} | "
            f"{100 * g['incr_rel']:+.1f} % [{100 * g['incr_low']:+.1f}, "
            f"{100 * g['incr_high']:+.1f}] |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


class _Cat:
    """Rollouts of several seeds as one (the fields :func:`paired` reads)."""

    def __init__(self, rs: list[RolloutResult]) -> None:
        self.sends = np.concatenate([r.sends for r in rs])
        self.conversions = np.concatenate([r.conversions for r in rs])
        self.objective = np.concatenate([r.objective for r in rs])
        self.days = rs[0].days
        self.extra = {"organic_conversions": np.concatenate(
            [np.asarray(r.extra["organic_conversions"]) for r in rs])}


def _cat(rs: list[RolloutResult]) -> Any:
    return _Cat(rs)


def fit_and_choose(a: argparse.Namespace, pol: Any, never: Any, ids: np.ndarray,
                   kw: dict[str, Any], grid: tuple[float, ...], out: Path
                   ) -> tuple[UpliftModel, float, list[dict]]:
    """Steps 2-3 on the training half: fit, save, choose the threshold."""
    tr = rollout(PrePeriod(pol, 168), a.scenario, n_users=a.train_users, days=a.days + 7,
                 seed=100, features_at=168, holdout=Holdout(0.5, "uplift-train"),
                 users=users_of(0, a.train_users, 100, ids), **kw)
    model = from_rollout(tr)
    model.save(out.with_name(out.name + "_model.json"))
    print("model", json.dumps(model.to_dict()), flush=True)
    # 3: threshold on the training half, another seed
    vu = users_of(0, a.val_users, 101, ids)
    vkw: dict[str, Any] = dict(n_users=a.val_users, days=a.days, seed=101, users=vu, **kw)
    vb, vn = rollout(pol, a.scenario, **vkw), rollout(never, a.scenario, **vkw)
    val = []
    val: list[dict] = []
    for th in grid:
        r = paired(rollout(pol, a.scenario, uplift=UpliftGate(model, th), **vkw), vb, vn)
        val.append({"threshold": th, **r})
        print("val", th, round(r["sends_rel"], 4), round(r["incr_rel"], 4), flush=True)
    ok = [v for v in val if v["incr_rel"] >= -a.max_val_loss]
    chosen = max(ok, key=lambda v: v["threshold"])["threshold"] if ok else min(grid)
    print("chosen threshold", chosen, flush=True)
    return model, chosen, val


def report(a: argparse.Namespace, model: UpliftModel, chosen: float, val: list[dict],
           seeds: list[dict], out: Path, t0: float) -> None:
    """JSON, markdown table and figure."""
    res = {"scenario": a.scenario, "policy": a.policy, "train_users": a.train_users,
           "val_users": a.val_users, "users": a.users, "days": a.days,
           "chosen_threshold": chosen, "validation": val, "seeds": seeds,
           "model_file": a.model,
           "model": model.to_dict(), "load_avg": os.getloadavg(),
           "seconds": round(time.perf_counter() - t0, 1)}
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    lines = [f"# Send only if it helps ({a.policy}; organic world, truth; fit on "
             f"{a.train_users} training users, measured on {a.users} held-out users x "
             f"{a.days} days; load {res['load_avg'][0]:.1f})", "",
             f"Threshold chosen on the training half: {chosen} incremental conversions per "
             "send. Targets: sends <= -20 %, incremental conversions >= -1 %.", "",
             "| seed | threshold | sends/user/week base -> gate | sends [95% CI] | "
             "incremental conversions/user base -> gate | incremental [95% CI] |",
             "|---|---|---|---|---|---|"]
    for sd in seeds:
        for g in sd["grid"]:
            mark = " **(chosen)**" if g["threshold"] == chosen else ""
            lines.append(
                f"| {sd['seed']} | {g['threshold']}{mark} | {g['sends_per_user_week_base']:.2f}"
                f" -> {g['sends_per_user_week_gate']:.2f} | {100 * g['sends_rel']:+.1f} % "
                f"[{100 * g['sends_low']:+.1f}, {100 * g['sends_high']:+.1f}] | "
                f"{g['incr_per_user_base']:.4f} -> {g['incr_per_user_gate']:.4f} | "
                f"{100 * g['incr_rel']:+.1f} % [{100 * g['incr_low']:+.1f}, "
                f"{100 * g['incr_high']:+.1f}] |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    _figure(seeds, chosen, out.with_suffix(".png"))
    print("\n".join(lines))


def _figure(seeds: list[dict], chosen: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for sd in seeds:
        x = [-100 * g["sends_rel"] for g in sd["grid"]]
        y = [100 * g["incr_rel"] for g in sd["grid"]]
        lo = [100 * (g["incr_rel"] - g["incr_low"]) for g in sd["grid"]]
        hi = [100 * (g["incr_high"] - g["incr_rel"]) for g in sd["grid"]]
        ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=f"seed {sd['seed']}")
        c = sd["chosen"]
        if c is None:
            continue
        ax.scatter([-100 * c["sends_rel"]], [100 * c["incr_rel"]], s=120, facecolors="none",
                   edgecolors="k")
    ax.axhline(-1, color="r", ls="--", lw=1, label="-1 % incremental conversions")
    ax.axvline(20, color="g", ls="--", lw=1, label="20 % fewer sends")
    ax.set_xlabel("fewer sends than without the gate (%)")
    ax.set_ylabel("change in incremental conversions (%)")
    ax.set_title(f"Send only if it helps (threshold grid; circled: chosen {chosen})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
