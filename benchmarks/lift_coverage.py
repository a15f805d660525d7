"""Coverage of `pushrl lift`: does the holdout's 95 % CI cover the true incremental effect?

Usage: python benchmarks/lift_coverage.py [--reps 200] [--users 2000] [--days 14]
       [--share 0.1] [--truth-users 100000] [--served-runs 1] [--served-users 600]
       [--served-days 7] [--out benchmarks/results/lift_coverage]

World: the default scenario with ``truth = true`` (the synthetic world's true responses), the
server's default policies (most-active-hour timing, most-popular item of the scenario's data).

* **Truth**: the true incremental effect per user of the campaign is
  ``E[outcome | served] - E[outcome | never pushed]`` over the population. It is measured by
  two batch rollouts of ``--truth-users`` users with the same seed, the policy vs
  ``never-send`` (a held-out user is exactly a never-send user: the guardrail blocks every
  send and nothing else changes), paired by common random numbers (its SE is printed).
* **Replications**: ``--reps`` batch rollouts (each its own users, random numbers and holdout
  salt) with a live holdout of ``--share``; :func:`pushrl.compare.lift.estimate` on each
  (the same code as ``pushrl lift``); coverage = share of runs whose 95 % CI contains the
  truth, raw and with CUPED, per metric; the binomial SE of a coverage is
  ``sqrt(0.95 * 0.05 / reps)``.
* **Server log path**: ``--served-runs`` runs through a real ``pushrl serve --holdout``
  (:func:`pushrl.compare.served.drive`), lift read from its state with
  :func:`pushrl.serve.holdout.lift_data` (``pushrl lift --state``), next to the batch rollout
  of the same seed (same users, random numbers and holdout arms): the estimates should agree
  and the CI should cover the truth.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pushrl.compare import lift
from pushrl.compare.runner import PolicySpec
from pushrl.envs.rollout import rollout
from pushrl.envs.scenario import load_scenario
from pushrl.rules.holdout import Holdout

METRICS = ("opens", "clicks", "conversions", "revenue", "activity", "sends")


def _policies(sc_ref: str):
    sc = load_scenario(sc_ref)
    timing = PolicySpec.parse("most-active-hour").load()
    item = PolicySpec.parse(f"most-popular:data={Path(sc.data).resolve()}").load()
    return timing, item


def truth(sc: str, users: int, days: int, seed: int) -> dict[str, dict[str, float]]:
    """Per-metric true effect (paired policy - never-send) and its SE."""
    timing, item = _policies(sc)
    never = PolicySpec.parse("never-send").load()
    a = rollout(timing, sc, n_users=users, days=days, seed=seed, item_policy=item, truth=True)
    b = rollout(never, sc, n_users=users, days=days, seed=seed, item_policy=item, truth=True)
    out = {}
    for m in METRICS:
        if m == "activity":
            d = a.extra["activity"] - b.extra["activity"]
        else:
            d = getattr(a, m).astype(float) - getattr(b, m).astype(float)
        out[m] = {"effect": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(d.size))}
    return out


def replicate(sc: str, users: int, days: int, share: float, seed: int) -> lift.LiftData:
    timing, item = _policies(sc)
    r = rollout(timing, sc, n_users=users, days=days, seed=seed, item_policy=item,
                holdout=Holdout(share, f"rep{seed}"), truth=True)
    return lift.from_rollout(r, share)


def served(sc_ref: str, users: int, days: int, share: float, seed: int,
           ) -> dict[str, object]:
    """One run through a real server, lift from its state, and the batch twin."""
    from pushrl.compare.served import drive
    from pushrl.serve.holdout import lift_data

    salt = f"served{seed}"
    with tempfile.TemporaryDirectory(prefix="pushrl-lift-") as tmp:
        reg = Path(tmp) / "policies"
        reg.mkdir()
        state = Path(tmp) / "state"
        t0 = time.perf_counter()
        drive(reg, sc_ref, users=users, days=days, seed=seed, history="warm",
              state=state, serve_args=("--holdout", str(share), "--holdout-salt", salt))
        wall = time.perf_counter() - t0
        ld = lift_data(state)
    timing, item = _policies(sc_ref)
    batch = lift.from_rollout(rollout(timing, sc_ref, n_users=users, days=days, seed=seed,
                                      item_policy=item, holdout=Holdout(share, salt),
                                      truth=True), share)
    s_est = {m.metric: m for m in lift.estimate(ld, METRICS)}
    b_est = {m.metric: m for m in lift.estimate(batch, METRICS)}
    # served ids are LOGGED_ID.i (pushrl.envs.rollout.user_ids): order them by i
    order = np.argsort([int(u.rsplit(".", 1)[1]) for u in ld.users["user_id"]])
    held_same = bool(np.array_equal(ld.users["held_out"].to_numpy()[order],
                                    batch.users["held_out"].to_numpy()))
    return {"seed": seed, "users": users, "days": days, "wall_s": round(wall, 1),
            "served_held_out": int(ld.users["held_out"].sum()),
            "batch_held_out": int(batch.users["held_out"].sum()),
            "served_sends_to_held_out": int(ld.users.loc[ld.users["held_out"], "sends"].sum()),
            "arms_match": held_same,
            "metrics": {m: {"served": s_est[m].to_dict(), "batch": b_est[m].to_dict()}
                        for m in METRICS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--share", type=float, default=0.1)
    ap.add_argument("--truth-users", type=int, default=100_000)
    ap.add_argument("--served-runs", type=int, default=1)
    ap.add_argument("--served-users", type=int, default=600)
    ap.add_argument("--served-days", type=int, default=7)
    ap.add_argument("--out", default="benchmarks/results/lift_coverage")
    a = ap.parse_args()
    t0 = time.perf_counter()
    tr = truth(a.scenario, a.truth_users, a.days, seed=10**6)
    print(f"truth ({a.truth_users} users, {time.perf_counter() - t0:.0f} s): "
          + ", ".join(f"{m} {v['effect']:+.4f} (se {v['se']:.4f})" for m, v in tr.items()),
          flush=True)
    hits = {m: {"raw": 0, "cuped": 0} for m in METRICS}
    width = {m: [] for m in METRICS}
    vr = {m: [] for m in METRICS}
    t0 = time.perf_counter()
    for k in range(a.reps):
        est = lift.estimate(replicate(a.scenario, a.users, a.days, a.share, seed=k), METRICS)
        for e in est:
            t = tr[e.metric]["effect"]
            hits[e.metric]["raw"] += int(e.low <= t <= e.high)
            hits[e.metric]["cuped"] += int(e.cuped_low <= t <= e.cuped_high)
            width[e.metric].append(e.cuped_high - e.cuped_low)
            vr[e.metric].append(e.variance_reduction)
        if (k + 1) % 20 == 0:
            print(f"  {k + 1}/{a.reps} reps, {time.perf_counter() - t0:.0f} s", flush=True)
    cov = {m: {"raw": hits[m]["raw"] / a.reps, "cuped": hits[m]["cuped"] / a.reps,
               "mean_ci_width_cuped": float(np.mean(width[m])),
               "mean_variance_reduction": float(np.mean(vr[m]))} for m in METRICS}
    srv = [served(a.scenario, a.served_users, a.served_days, a.share, seed=1000 + k)
           for k in range(a.served_runs)]
    if srv:
        tr_s = truth(a.scenario, a.truth_users, a.served_days, seed=10**6)
        for s in srv:
            for m in METRICS:
                e = s["metrics"][m]["served"]  # type: ignore[index]
                e["covers_truth"] = bool(e["cuped_low"] <= tr_s[m]["effect"] <= e["cuped_high"])
                e["truth"] = tr_s[m]["effect"]
    res = {"scenario": a.scenario, "reps": a.reps, "users": a.users, "days": a.days,
           "share": a.share, "truth_users": a.truth_users, "truth": tr, "coverage": cov,
           "coverage_se": float(np.sqrt(0.95 * 0.05 / a.reps)), "served": srv,
           "load_avg": os.getloadavg(), "seconds": round(time.perf_counter() - t0, 1)}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    lines = [f"# Lift CI coverage ({a.reps} replicated runs, {a.users} users x {a.days} days, "
             f"holdout {a.share:g}; default world, truth)", "",
             f"Binomial SE of a coverage: {res['coverage_se']:.3f}. Load average "
             f"{res['load_avg'][0]:.1f}.", "",
             "| metric | true effect / user | coverage raw | coverage CUPED | mean CI width "
             "(CUPED) | variance reduction |", "|---|---|---|---|---|---|"]
    for m in METRICS:
        c = cov[m]
        lines.append(f"| {m} | {tr[m]['effect']:+.4f} (se {tr[m]['se']:.4f}) | {c['raw']:.3f} "
                     f"| {c['cuped']:.3f} | {c['mean_ci_width_cuped']:.4f} | "
                     f"{100 * c['mean_variance_reduction']:.0f} % |")
    for s in srv:
        lines += ["", f"Served run (real `pushrl serve --holdout {a.share:g}`, seed {s['seed']}, "
                  f"{s['users']} users x {s['days']} days, {s['wall_s']} s): held out "
                  f"{s['served_held_out']} (batch twin {s['batch_held_out']}, same users: "
                  f"{s['arms_match']}), pushes to held-out users "
                  f"{s['served_sends_to_held_out']}.", "",
                  "| metric | served CUPED lift [95% CI] | batch twin CUPED lift [95% CI] | "
                  "truth | covered |", "|---|---|---|---|---|"]
        for m in METRICS:
            e, b = s["metrics"][m]["served"], s["metrics"][m]["batch"]  # type: ignore[index]
            lines.append(f"| {m} | {e['cuped_lift']:+.4f} [{e['cuped_low']:+.4f}, "
                         f"{e['cuped_high']:+.4f}] | {b['cuped_lift']:+.4f} "
                         f"[{b['cuped_low']:+.4f}, {b['cuped_high']:+.4f}] | "
                         f"{e['truth']:+.4f} | {e['covers_truth']} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
