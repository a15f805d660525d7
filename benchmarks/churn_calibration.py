"""Churn risk calibration with its noise shown (issue 17: AUC >= 0.75 and ECE <= 0.02 on
held-out users). Prints one JSON object.

Usage: python benchmarks/churn_calibration.py [--world lapsing] [--seeds 60] [--users 100000]
       [--part-users 10000] [--days 28] [--boot 400] [--draws 1000] [--out FILE]

The world is generated as ``pushrl synth`` writes a large one (:func:`pushrl.data.synth.
synthesize`): user parts of ``--part-users`` users, part ``k`` from ``default_rng([seed, k])``
after the items; each part is cut as it is generated (its activity before the cut and its
*sent* pushes: what the profiles read), its outcomes and true probabilities kept, so memory
is bounded by one part's full log (~9.5M decisions at 10,000 users x 42 days). A world of at
most ``--part-users`` users is the one-part world ``benchmarks/churn_ceiling.py`` generates.

As in ``churn_ceiling.py``: a log of ``--days + 14`` days cut at day ``--days``; outcome = no
activity in the 14 days after the cut; users split 80/20 (``UserSplit(0.2, seed)``); the
profile model (``build_profiles``) fitted on the training users, scored on the held-out ones.
Per model (``truth`` = the world's exact probability; ``profile_model``: the shipped one, its
lookback chosen by :func:`pushrl.data.profiles.choose_window_days`; ``window`` /
``whole_history``: the same fitted model with ``window_days`` = the fit's window / 0, one of
them the shipped one): AUC with a 95 % bootstrap CI, the ECE report
of :func:`pushrl.data.ece.ece_report` against the outcomes (plain ECE of 10 equal-count bins
with CI, its noise floor, the debiased ECE with CI, the debiased L2 error, ECE_sweep) and the
plain ECE against the true probabilities (``ece_vs_truth``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import time
from typing import Any

import numpy as np
import pandas as pd

from pushrl.data import lapse_world
from pushrl.data.ece import binned_ece, ece_report
from pushrl.data.io import Dataset, concat_frames, to_unix_seconds
from pushrl.data.profiles import CHURN_DAYS, build_profiles, calibration, cut
from pushrl.data.split import UserSplit
from pushrl.data.synth import TrueWorld, _make_items, generate
from pushrl.data.worlds import world_config
from pushrl.units import HOUR

from _output import emit_json  # benchmarks/ is sys.path[0]


def part_outcomes(ds: Dataset, gt: dict[str, Any], gtu: pd.DataFrame, params: Any,
                  items: pd.DataFrame, b: int, first_user: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(outcome, truth)`` per user of one generated part (its first user ``first_user``)
    at cut bucket ``b``."""
    ids = ds.users["user_id"].astype(str)
    fut = ds.activity.loc[to_unix_seconds(ds.activity["ts"]) // HOUR >= b, "user_id"]
    y = (~ids.isin(set(fut.astype(str)))).to_numpy(float)
    tw = TrueWorld(params, gtu, items)
    if "lifecycle" in gt:
        lc = {**gt["lifecycle"], "user": np.asarray(gt["lifecycle"]["user"]) - first_user}
        past = ds.activity.loc[to_unix_seconds(ds.activity["ts"]) // HOUR < b]
        last = lapse_world.last_sessions(past, ids.to_numpy(), lc["last0"], b)
        truth = lapse_world.p_no_session(params, tw.rate, gtu["timezone"].astype(str).to_numpy(),
                                         lc, last, b, CHURN_DAYS * 24)
    else:
        truth = tw.p_no_session(b, CHURN_DAYS * 24)
    return y, np.asarray(truth, np.float64)


def make_world(name: str, seed: int, users: int, days: int, sessions: float | None,
               part_users: int) -> tuple[Dataset, np.ndarray, np.ndarray, int]:
    """The log cut at day ``days`` (activity before it, sent pushes), outcomes, truth, cut."""
    over = {} if sessions is None else {"sessions_per_day_median": sessions}
    cfg = world_config(name, users=users, days=days + 14, seed=seed, **over)
    b = int(pd.Timestamp(cfg.start).timestamp()) // HOUR + days * 24
    if users <= part_users:
        ds, gt, gtu = generate(cfg)
        y, truth = part_outcomes(ds, gt, gtu, cfg.params, ds.items, b)
        return cut(ds, b), y, truth, b
    items = _make_items(cfg, np.random.default_rng(cfg.seed))
    tabs: dict[str, list[pd.DataFrame]] = {"users": [], "activity": [], "pushes": []}
    ys, truths, decisions, meta = [], [], 0, {}
    for k, lo in enumerate(range(0, users, part_users)):
        sub = dataclasses.replace(cfg, users=min(part_users, users - lo))
        ds, gt, gtu = generate(sub, rng=np.random.default_rng([cfg.seed, k]), items=items,
                               first_user=lo, first_decision=decisions)
        decisions += len(ds.pushes)
        y, truth = part_outcomes(ds, gt, gtu, cfg.params, items, b, lo)
        ys.append(y)
        truths.append(truth)
        now = cut(ds, b)
        meta = now.meta
        for t in tabs:
            tabs[t].append(now.table(t))
        del ds, gt, gtu, now
    whole = Dataset(concat_frames(tabs["users"]), items, concat_frames(tabs["activity"]),
                    concat_frames(tabs["pushes"]), meta=meta)
    return whole, np.concatenate(ys), np.concatenate(truths), b


def auc_ci(p: np.ndarray, y: np.ndarray, boot: int, seed: int) -> tuple[float, list[float]]:
    rng = np.random.default_rng(seed)
    vals = [calibration(p[i], y[i])["auc"]
            for i in (rng.integers(0, p.size, p.size) for _ in range(boot))]
    lo, hi = np.nanquantile(vals, [0.025, 0.975])
    return float(calibration(p, y)["auc"]), [round(float(lo), 4), round(float(hi), 4)]


def world(name: str, seed: int, users: int, days: int, sessions: float | None,
          part_users: int, boot: int, draws: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    now, y, truth, b = make_world(name, seed, users, days, sessions, part_users)
    t_gen = time.perf_counter() - t0
    held = UserSplit(0.2, seed, "heldout").held_out(now.users["user_id"])
    res = build_profiles(now, b * HOUR, train=~held, evaluate=held)
    prof = res.table["churn_risk"].to_numpy()
    choice = res.model.validation.get("window_choice", {})
    fit_w = choice.get("fit_window_days", res.model.window_days)
    other = build_profiles(now, b * HOUR, model=dataclasses.replace(
        res.model, window_days=fit_w if res.model.window_days == 0 else 0)
                           ).table["churn_risk"].to_numpy()
    window, whole = (other, prof) if res.model.window_days == 0 else (prof, other)
    out: dict[str, Any] = {"world": name, "seed": seed, "users": users,
                           "heldout_users": int(held.sum()),
                           "base_rate": round(float(y[held].mean()), 4),
                           "window_days": res.model.window_days, "window_choice": choice,
                           "seconds_generate": round(t_gen, 1),
                           "seconds_total": round(time.perf_counter() - t0, 1)}
    for key, p in (("truth", truth), ("profile_model", prof), ("window", window),
                   ("whole_history", whole)):
        pe, ye, te = p[held], y[held], truth[held]
        a, a_ci = auc_ci(pe, ye, boot, seed)
        rep = ece_report(pe, ye, boot=boot, draws=draws, seed=seed).as_dict()
        out[key] = {"auc": round(a, 4), "auc_ci95": a_ci, **rep,
                    "ece_vs_truth": round(binned_ece(pe, te), 4)}
    out["max_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default="lapsing", help="world family (pushrl.data.worlds)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--part-users", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--sessions", type=float, default=None,
                    help="median sessions a day (default: the family's own; the default "
                    "world's churn benchmarks use 0.15)")
    ap.add_argument("--boot", type=int, default=400)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    res = {"benchmark": "churn_calibration", "config": vars(a),
           "worlds": [], "target": "churn risk AUC >= 0.75, ECE <= 0.02 on held-out users "
           "(issue 17)"}
    for s in a.seeds:
        res["worlds"].append(world(a.world, s, a.users, a.days, a.sessions, a.part_users,
                                   a.boot, a.draws))
        res["load_avg"] = os.getloadavg()
        emit_json(res, a.out, indent=1, echo=False)
    emit_json(res, indent=1)


if __name__ == "__main__":
    main()
