"""How high can a churn-risk AUC go on the synthetic worlds (issue 17: AUC >= 0.75 and
ECE <= 0.02 on held-out users)? The ceiling, measured, and the BG/NBD model against it.
Prints one JSON object.

Usage: python benchmarks/churn_ceiling.py [--world default] [--seeds 0 1] [--users 5000]
       [--days 28] [--sessions 0.15] [--mc 2000000] [--out FILE]

``--world lapsing`` (``pushrl.data.worlds.CHURN_WORLDS``, held out for churn): users lapse and
come back (:mod:`pushrl.data.lapse_world`); ``truth`` is then the exact P(no session) given
the world's full state at the cut (:func:`pushrl.data.lapse_world.p_no_session`), the
count-based ``oracle_posterior`` and the Poisson ``population`` do not apply and are left
out (the Bayes-optimal estimate from the log has no closed form there), and ``--sessions``
defaults to the family's own median (0.4 a day).

ECE: 10 equal-count bins of users sorted by the prediction, sum of ``n_bin / n * |mean
prediction - mean outcome|`` ("vs outcomes": outcome = no activity in the 14 days after the cut;
"vs truth": the world's true probability in place of the outcome), on the held-out users.

Per world (seed), as ``benchmarks/profiles.py`` does: a log of ``--days + 14`` days cut at day
``--days``, label = no activity in the next 14 days, users split 80/20
(``UserSplit(0.2, seed)``), every model fitted on the training users, scored on the held-out
ones. Scores (AUC with a 95 % bootstrap CI over held-out users, ECE vs the outcomes, ECE vs the
world's true probabilities):

* ``truth``: ``TrueWorld.p_no_session`` (the true probability given the user's true rate).
* ``oracle_posterior``: E[true probability | the user's session count before the cut] under the
  world's TRUE rate prior (lognormal) and TRUE hourly rhythm: the Bayes-optimal estimate from
  the log (in these worlds sessions are a stationary Poisson process independent of everything
  else the log holds, so the count is a sufficient statistic). No estimator beats it in
  expectation: this is the ceiling of any churn model on the world.
* ``profile_model``: the shipped churn risk (``build_profiles``, logistic fitted 14 days before
  the cut, its Poisson-gamma feature over the lookback window the fit had).
* ``profile_model_whole_history``: the same fitted model applied with the whole history at the
  cut (``window_days = 0``: the model before the window; at the fit cut the two agree).
* ``bgnbd``: the BG/NBD P(no visit in 14 d) (``pushrl.data.bgnbd``), fitted by maximum
  likelihood on the training users' (visits, last visit, observed days) at the cut (no labels).

``population``: a Monte-Carlo of ``--mc`` users from the world's prior (rate = median x
lognormal(0, 0.5), the 14-day windows' weekday/weekend mix): the expected AUC of the truth and
of the count-based ceiling for 1, 2, 4, 8 and 16 times ``--days`` of history, without the
held-out sample's noise.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

import numpy as np

from pushrl.data import lapse_world
from pushrl.data.bgnbd import fit_bgnbd, p_no_visit
from pushrl.data.ece import binned_ece
from pushrl.data.features import FeatureSpec, replay
from pushrl.data.io import to_unix_seconds
from pushrl.data.profiles import (
    CHURN_DAYS,
    _NO_FIRST,
    _sigmoid,
    build_profiles,
    calibration,
    churn_features,
    counters_from_dataset,
    cut,
    fit_logistic,
)
from pushrl.data.split import UserSplit
from pushrl.data.synth import TrueWorld, WorldParams, generate
from pushrl.data.worlds import world_config
from pushrl.units import DAY, HOUR

from _output import emit_json  # benchmarks/ is sys.path[0]

RATE_SIGMA = 0.5  # the worlds' lognormal sigma of sessions_per_day (pushrl.data.synth)


def auc(p: np.ndarray, y: np.ndarray) -> float:
    return float(calibration(p, y)["auc"])


def scores(p: np.ndarray, y: np.ndarray, truth: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """AUC, ECE vs outcomes and ECE vs the truth (10 equal-count bins), each with a 95 %
    bootstrap CI over users (400 resamples)."""
    cal = calibration(p, y)
    rng = np.random.default_rng(seed)
    boot: dict[str, list[float]] = {"auc": [], "ece": [], "ece_vs_truth": []}
    for _ in range(400):
        i = rng.integers(0, p.size, p.size)
        if 0 < y[i].sum() < i.size:
            c = calibration(p[i], y[i])
            boot["auc"].append(c["auc"])
            boot["ece"].append(c["ece"])
            boot["ece_vs_truth"].append(ece_vs(p[i], truth[i]))

    def ci(k: str) -> list[float]:
        return [round(float(np.quantile(boot[k], q)), 4) for q in (0.025, 0.975)]

    return {"auc": round(cal["auc"], 4), "auc_ci95": ci("auc"),
            "ece": round(cal["ece"], 4), "ece_ci95": ci("ece"),
            "ece_vs_truth": round(ece_vs(p, truth), 4), "ece_vs_truth_ci95": ci("ece_vs_truth"),
            "brier": round(cal["brier"], 4)}


def ece_vs(p: np.ndarray, truth: np.ndarray) -> float:
    """ECE of ``p`` against the true probabilities (10 equal-count bins sorted by ``p``)."""
    return binned_ece(p, truth)


def oracle_posterior(n: np.ndarray, hist: np.ndarray, fut: np.ndarray, median: float
                     ) -> np.ndarray:
    """E[exp(-s * fut) | n ~ Poisson(s * hist)] for s = median * lognormal(0, sigma), per user
    (``hist``, ``fut``: expected sessions per unit of s before / after the cut)."""
    z = np.linspace(-5, 5, 801)
    s = median * np.exp(RATE_SIGMA * z)  # (g,)
    logw = -0.5 * z * z  # lognormal prior on the z grid (uniform in z)
    lam = hist[:, None] * s[None, :]
    ll = n[:, None] * np.log(lam) - lam + logw[None, :]
    ll -= ll.max(axis=1, keepdims=True)
    w = np.exp(ll)
    return (w * np.exp(-fut[:, None] * s[None, :])).sum(axis=1) / w.sum(axis=1)


def _bg_inputs(c: Any, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = c.visits.astype(np.float64)
    known = c.first < _NO_FIRST
    big_t = np.where(known, np.maximum((b - c.first) * HOUR / DAY, 1.0), 1.0)
    t_x = np.where((c.last_act >= c.first) & (n > 0), (c.last_act - c.first) * HOUR / DAY, 0.0)
    return n, np.clip(t_x, 0.0, big_t), big_t


def logistic_variants(ds: Any, now: Any, model: Any, b: int, tr: np.ndarray,
                      ev: np.ndarray) -> dict[str, np.ndarray]:
    """Churn logistic models fitted as the pipeline fits its own (features 14 days before the
    cut, labels of the 14 days up to it, training users), applied at the cut."""
    b0 = b - CHURN_DAYS * 24
    past = cut(ds, b0)
    c0 = counters_from_dataset(past)
    fs0 = replay(past, FeatureSpec.fit(past), with_affinity=False).state
    users = np.flatnonzero(c0.first < _NO_FIRST)
    x0 = churn_features(fs0, users, c0.take(users), b0, model)
    y0 = (counters_from_dataset(cut(ds, b)).last_act[users] < b0).astype(float)
    c1 = counters_from_dataset(now)
    fs1 = replay(now, FeatureSpec.fit(now), with_affinity=False).state
    allu = np.arange(len(ds.users))
    x1 = churn_features(fs1, allu, c1, b, model)
    trn = tr[users]
    n0, tx0, t0 = _bg_inputs(c0.take(users), b0)
    par0 = fit_bgnbd(n0[trn], tx0[trn], t0[trn])
    g0 = np.log(p_no_visit(par0, n0, tx0, t0, CHURN_DAYS))
    n1, tx1, t1 = _bg_inputs(c1, b)
    g1 = np.log(p_no_visit(par0, n1, tx1, t1, CHURN_DAYS))
    out = {}
    for name, cols, extra in (("logit_current", slice(None), False),
                              ("logit_bgnbd_for_poisson_gamma", slice(1, None), True),
                              ("logit_bgnbd_plus_current", slice(None), True),
                              ("logit_bgnbd_only", slice(0, 0), True)):
        f0 = np.column_stack([x0[:, cols]] + ([g0] if extra else []))
        f1 = np.column_stack([x1[:, cols]] + ([g1] if extra else []))
        c, m, s = fit_logistic(f0[trn], y0[trn])
        out[name] = _sigmoid(c[0] + ((f1 - m) / s) @ c[1:])
    out["bgnbd_fitted_14d_before"] = np.exp(g1)
    return out


def world(seed: int, users: int, days: int, sessions: float, name: str = "default"
          ) -> dict[str, Any]:
    cfg = world_config(name, users=users, days=days + 14, seed=seed,
                       sessions_per_day_median=sessions)
    params = cfg.params
    ds, gt, gtu = generate(cfg)
    tw = TrueWorld(params, gtu, ds.items)
    start = int(ds.pushes["ts"].min().timestamp()) // HOUR
    b = start + days * 24
    held = UserSplit(0.2, seed, "heldout").held_out(ds.users["user_id"])
    tr, ev = ~held, held
    fut_act = ds.activity.loc[to_unix_seconds(ds.activity["ts"]) // HOUR >= b]
    y = (~ds.users["user_id"].astype(str).isin(set(fut_act["user_id"].astype(str)))
         ).to_numpy(float)
    now = cut(ds, b)
    c = counters_from_dataset(now)
    n = c.visits.astype(np.float64)
    oracle = None
    if "lifecycle" in gt:
        lc = gt["lifecycle"]
        last = lapse_world.last_sessions(now.activity,
                                         ds.users["user_id"].astype(str).to_numpy(),
                                         lc["last0"], b)
        truth = lapse_world.p_no_session(params, tw.rate,
                                         gtu["timezone"].astype(str).to_numpy(), lc, last, b,
                                         CHURN_DAYS * 24)
    else:
        truth = tw.p_no_session(b, CHURN_DAYS * 24)
        spd = gtu["sessions_per_day"].to_numpy(float)
        hist = -np.log(tw.p_no_session(start, b - start)) / spd  # sessions per unit rate
        fut = -np.log(truth) / spd
        oracle = oracle_posterior(n, hist, fut, sessions)
    res = build_profiles(now, b * HOUR, train=tr, evaluate=ev)
    prof = res.table["churn_risk"].to_numpy()
    whole = build_profiles(now, b * HOUR, model=dataclasses.replace(res.model, window_days=0)
                           ).table["churn_risk"].to_numpy()
    # BG/NBD at the cut: observed days since the first event, last visit = last activity
    _, t_x, big_t = _bg_inputs(c, b)
    par = fit_bgnbd(n[tr], t_x[tr], big_t[tr])
    bg = p_no_visit(par, n, t_x, big_t, CHURN_DAYS)
    variants = logistic_variants(ds, now, res.model, b, tr, ev)
    out: dict[str, Any] = {"world": name, "seed": seed, "heldout_users": int(ev.sum()),
                           "base_rate": round(float(y[ev].mean()), 4),
                           "bgnbd_params_r_alpha_a_b": [round(v, 4) for v in par],
                           "window_days": res.model.window_days,
                           "ece_bins": "10 equal-count bins over held-out users"}
    models = [("truth", truth), ("oracle_posterior", oracle), ("profile_model", prof),
              ("profile_model_whole_history", whole), ("bgnbd", bg), *variants.items()]
    for key, p in models:
        if p is not None:
            out[key] = scores(p[ev], y[ev], truth[ev], seed)
    return out


def population(n: int, sessions: float, days: list[int], seed: int = 0) -> dict[str, Any]:
    """Expected AUC of the truth, and of the count over each history length (the ceiling of
    any estimator from that much history), over ``n`` users drawn from the world's prior."""
    rng = np.random.default_rng(seed)
    wp = WorldParams()
    per_day = (5 + 2 * wp.weekend_amp) / 7  # windows of whole weeks
    lam = sessions * rng.lognormal(0, RATE_SIGMA, n) * per_day
    p = np.exp(-CHURN_DAYS * lam)
    y = (rng.random(n) < p).astype(float)
    return {"users": n, "base_rate": round(float(y.mean()), 4),
            "auc_truth": round(auc(p, y), 4),
            "auc_ceiling_by_history_days": {d: round(auc(-rng.poisson(lam * d).astype(float), y),
                                                     4) for d in days}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default="default", help="world family (pushrl.data.worlds)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--sessions", type=float, default=None,
                    help="median sessions a day (default 0.15; the family's own for a "
                    "lifecycle world)")
    ap.add_argument("--mc", type=int, default=2_000_000)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    lifecycle = world_config(a.world).params.lapse_median_days > 0
    if a.sessions is None:
        a.sessions = (world_config(a.world).params.sessions_per_day_median if lifecycle
                      else 0.15)
    res = {"benchmark": "churn_ceiling", "config": vars(a),
           "population": (None if lifecycle else population(
               a.mc, a.sessions, [a.days * k for k in (1, 2, 4, 8, 16)])),
           "worlds": [world(s, a.users, a.days, a.sessions, a.world) for s in a.seeds],
           "target": "churn risk AUC >= 0.75, ECE <= 0.02 on held-out users (issue 17)",
           "load_avg": os.getloadavg()}
    emit_json(res, a.out, indent=1)


if __name__ == "__main__":
    main()
