"""Which features could close the churn-risk AUC gap (issue 17: AUC >= 0.75 on held-out
users)? An investigation on synthetic worlds whose truth is known. Prints one JSON object.

Usage: python benchmarks/churn_features.py [--seeds 0 1] [--users 5000] [--days 28]
       [--sessions 0.15] [--out FILE]

For each world (seed): the log of ``--days + 14`` days is cut at day ``--days``; the label is
"no activity in the next 14 days"; users are split 80/20 as ``benchmarks/profiles.py`` splits
them, and every score below is fitted on the training users and scored on the held-out ones.

* ``profile_model``: the pipeline's churn risk (:func:`pushrl.data.profiles.build_profiles`,
  fitted 14 days before the cut: what the product can do).
* ``truth``: ``TrueWorld.p_no_session`` (the world's true rates; no estimator reaches it
  from a finite log: it is a ceiling, not a target).
* ``count_bayes``: the held-out label rate per (sessions, weeks observed) cell of the
  training users AT the cut (labels from the future: an oracle-fitted, nonparametric
  posterior of the count statistic; for a Poisson user with a stationary rate the count and
  the exposure are sufficient, so no other feature can beat it in expectation).
* ``logit_current`` / ``logit_extended``: the pipeline's churn features, and those plus
  candidate behaviour features (days since the last session, sessions in the last 7 / 14
  days, the trend last-14 / previous-14, mean and CV of inter-session gaps, unsubscribed),
  fitted at the cut (same oracle timing as ``count_bayes``, so the difference is the features).
* ``gbm_extended``: gradient boosting (sklearn) on the extended features (a flexible learner:
  an upper bound of what the features can carry).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np
import pandas as pd

from pushrl.data.features import FeatureSpec, replay
from pushrl.data.io import to_unix_seconds
from pushrl.data.profiles import (
    build_profiles,
    calibration,
    churn_features,
    counters_from_dataset,
    cut,
    fit_gamma,
    fit_logistic,
    _sigmoid,
    _exposure,
    _visits,
)
from pushrl.data.split import UserSplit
from pushrl.data.synth import SynthConfig, TrueWorld, WorldParams, generate
from pushrl.units import DAY, HOUR

from _output import emit_json  # benchmarks/ is sys.path[0]

EXTRA = ("days_since_session", "sessions_7d", "sessions_14d", "trend_14_vs_prev14",
         "gap_mean_days", "gap_cv", "unsubscribed")


def behaviour(ds: Any, b: int) -> np.ndarray:
    """``(n_users, len(EXTRA))`` candidate features from sessions before bucket ``b``."""
    act = ds.activity
    t = to_unix_seconds(act["ts"]) // HOUR
    s = act.loc[(act["event"].astype(str) == "session").to_numpy() & (t < b)]
    ts = to_unix_seconds(s["ts"]) / DAY
    uid = s["user_id"].astype(str).to_numpy()
    users = ds.users["user_id"].astype(str).to_numpy()
    now = b * HOUR / DAY
    frame = pd.DataFrame({"u": uid, "t": ts}).sort_values(["u", "t"])
    g = frame.groupby("u")["t"]
    last = g.max()
    n7 = frame[frame["t"] >= now - 7].groupby("u").size()
    n14 = frame[frame["t"] >= now - 14].groupby("u").size()
    p14 = frame[(frame["t"] < now - 14) & (frame["t"] >= now - 28)].groupby("u").size()
    gaps = frame.assign(d=g.diff()).dropna().groupby("u")["d"]
    gm, gs = gaps.mean(), gaps.std()
    out = np.zeros((users.size, len(EXTRA)))
    idx = pd.Index(users)
    out[:, 0] = np.minimum(now - last.reindex(idx).fillna(now - 90).to_numpy(), 90)
    out[:, 1] = n7.reindex(idx).fillna(0).to_numpy()
    out[:, 2] = n14.reindex(idx).fillna(0).to_numpy()
    out[:, 3] = np.log1p(out[:, 2]) - np.log1p(p14.reindex(idx).fillna(0).to_numpy())
    out[:, 4] = np.log1p(gm.reindex(idx).fillna(30).to_numpy())
    out[:, 5] = (gs / gm).reindex(idx).fillna(0).to_numpy()
    p = ds.pushes
    if "unsubscribed" in p:
        uns = p.loc[p["unsubscribed"].fillna(False).to_numpy(bool) &
                    (to_unix_seconds(p["ts"]) // HOUR < b), "user_id"].astype(str)
        out[:, 6] = np.isin(users, uns.unique())
    out[:, 0] = np.log1p(out[:, 0])
    out[:, 1] = np.log1p(out[:, 1])
    out[:, 2] = np.log1p(out[:, 2])
    return out


def _logit(x: np.ndarray, y: np.ndarray, tr: np.ndarray, ev: np.ndarray) -> np.ndarray:
    c, m, s = fit_logistic(x[tr], y[tr])
    return _sigmoid(c[0] + ((x[ev] - m) / s) @ c[1:])


def world(seed: int, users: int, days: int, sessions: float) -> dict[str, Any]:
    params = WorldParams(sessions_per_day_median=sessions)
    ds, _, gtu = generate(SynthConfig(users=users, days=days + 14, seed=seed, params=params))
    truth_w = TrueWorld(params, gtu, ds.items)
    start = int(ds.pushes["ts"].min().timestamp()) // HOUR
    b = start + days * 24
    held = UserSplit(0.2, seed, "heldout").held_out(ds.users["user_id"])
    res = build_profiles(cut(ds, b), b * HOUR, train=~held, evaluate=held)
    fut = ds.activity.loc[to_unix_seconds(ds.activity["ts"]) // HOUR >= b]
    y = (~ds.users["user_id"].astype(str).isin(set(fut["user_id"].astype(str)))).to_numpy(float)
    tr, ev = ~held, held
    out: dict[str, Any] = {"seed": seed, "heldout_users": int(ev.sum()),
                           "base_rate": float(y[ev].mean())}
    out["profile_model"] = calibration(res.table["churn_risk"].to_numpy()[ev], y[ev])["auc"]
    out["truth"] = calibration(truth_w.p_no_session(b, 14 * 24)[ev], y[ev])["auc"]
    # the pipeline's churn features AT the cut (its model refitted with future labels)
    now = cut(ds, b)
    counters = counters_from_dataset(now)
    fs = replay(now, FeatureSpec.fit(now), with_affinity=False).state
    allu = np.arange(len(ds.users))
    model = res.model
    model.gamma = fit_gamma(_visits(fs, allu, counters, model.visit_unit)[tr],
                            _exposure(counters, b)[tr])
    xc = churn_features(fs, allu, counters, b, model)
    xb = behaviour(ds, b)
    xe = np.concatenate([xc, xb], axis=1)
    v = _visits(fs, allu, counters, model.visit_unit)
    weeks = np.minimum(_exposure(counters, b) // 7, 4)
    cell = np.minimum(v, 60) * 10 + weeks
    rate = pd.Series(y[tr]).groupby(cell[tr]).agg(["sum", "count"])
    prior = y[tr].mean()
    post = ((rate["sum"] + 2 * prior) / (rate["count"] + 2)).reindex(cell[ev]).to_numpy()
    # unseen cells: the nearest count of the same exposure is close enough for a ceiling
    post = np.where(np.isnan(post), prior, post)
    out["count_bayes"] = calibration(post, y[ev])["auc"]
    out["logit_current"] = calibration(_logit(xc, y, tr, ev), y[ev])["auc"]
    out["logit_extended"] = calibration(_logit(xe, y, tr, ev), y[ev])["auc"]
    single = {}
    for j, name in enumerate(EXTRA):
        single[name] = calibration(_logit(np.concatenate([xc, xb[:, j:j + 1]], axis=1), y, tr,
                                          ev), y[ev])["auc"]
    out["logit_current_plus_one"] = single
    from sklearn.ensemble import HistGradientBoostingClassifier

    gbm = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_depth=3,
                                         random_state=0).fit(xe[tr], y[tr])
    out["gbm_extended"] = calibration(gbm.predict_proba(xe[ev])[:, 1], y[ev])["auc"]
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--sessions", type=float, default=0.15)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    res = {"benchmark": "churn_features", "load_avg": os.getloadavg(), "config": vars(a),
           "auc_heldout": [world(s, a.users, a.days, a.sessions) for s in a.seeds],
           "target": "churn risk AUC >= 0.75 on held-out users (issue 17)"}
    emit_json(res, a.out, indent=1)


if __name__ == "__main__":
    main()
