"""Churn-risk quality and profile speed on a synthetic world whose truth is known.

A synthetic log of ``--days + 14`` days is cut at day ``--days``: profiles (and the churn
model, fitted on the first ``--days - 14`` days with labels from the next 14) see only the
first part; the last 14 days give each user's realised label, and the world's true session
rates give each user's true probability of no session in them, ``exp(-expected sessions)``.
Scores on the users of the held-out part (scenario-style user split: the model is fitted on
the others): Brier, AUC and ECE against the labels, and ECE / mean |error| against the true
probabilities. Prints one JSON object.

    python benchmarks/profiles.py --users 5000 --days 28 --sessions 0.15
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from pushrl.data.io import to_unix_seconds
from pushrl.data.profiles import build_profiles, calibration, cut
from pushrl.data.split import UserSplit
from pushrl.data.synth import SynthConfig, TrueWorld, WorldParams, generate
from pushrl.units import HOUR


def run(users: int, days: int, sessions: float, seed: int, holdout: float) -> dict:
    ds, _, gtu = generate(SynthConfig(users=users, days=days + 14, seed=seed,
                                      params=WorldParams(sessions_per_day_median=sessions)))
    world = TrueWorld(WorldParams(sessions_per_day_median=sessions), gtu, ds.items)
    start = int(ds.pushes["ts"].min().timestamp()) // HOUR
    b = start + days * 24
    held = UserSplit(holdout, seed, "heldout").held_out(ds.users["user_id"])
    t0 = time.perf_counter()
    c0 = time.process_time()
    res = build_profiles(cut(ds, b), b * HOUR, train=~held, evaluate=held)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    fut = ds.activity.loc[to_unix_seconds(ds.activity["ts"]) // HOUR >= b]
    active = set(fut["user_id"].astype(str))
    y = np.array([u not in active for u in res.table["user_id"]], np.float64)
    p = res.table["churn_risk"].to_numpy()
    truth = world.p_no_session(b, 14 * 24)
    lab = calibration(p[held], y[held])
    order = np.argsort(p[held])
    ece_true = sum(part.size / held.sum() * abs(p[held][part].mean() - truth[held][part].mean())
                   for part in np.array_split(order, 10))
    return {"users": users, "days": days, "sessions_per_day_median": sessions, "seed": seed,
            "heldout_users": int(held.sum()),
            "label": {k: lab[k] for k in ("brier", "auc", "ece", "base_rate")},
            "truth": {"ece": float(ece_true),
                      "mean_abs_error": float(np.abs(p[held] - truth[held]).mean()),
                      "auc_of_true_p": calibration(truth[held], y[held])["auc"]},
            "model_validation": {k: v for k, v in res.model.validation.items()
                                 if k != "reliability"},
            "seconds": {"wall": round(wall, 2), "cpu": round(cpu, 2)},
            "load_avg": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--sessions", type=float, default=0.15,
                    help="median sessions per user-day of the world (low: churn happens)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout", type=float, default=0.2)
    a = ap.parse_args()
    print(json.dumps(run(a.users, a.days, a.sessions, a.seed, a.holdout), indent=1))


if __name__ == "__main__":
    main()
