"""Fit a simulator from a pushlog v1 dataset, point-in-time, through the feature pipeline.

Every training row is a logged decision featurised by :func:`~pushrl.data.features.replay`
(features see only earlier events), so the simulator learns the mapping the environments
will evaluate. Components (see :mod:`pushrl.sim.design` for the designs):

* rhythm: per user hour-of-week activity, shrunk toward the population
  (:mod:`pushrl.sim.population`), checked on the last quarter of the log;
* ``open``: P(open | sent at t, state, item, the user's latent rhythm at t; see
  :func:`~pushrl.sim.design.log_user_relative_activity`);
* ``click``: P(click | open, item); ``convert``: P(convert | click, item); revenue of a
  conversion per item (``price`` times the logged revenue/price ratio, else a shrunk mean);
* ``unsubscribe``: hazard per delivered push vs recent volume (piecewise linear in the
  7-day volume, knots from the logged volume) and engagement;
* item-choice logs without opens (OBD): P(click | user context, item, position), see
  :mod:`pushrl.sim.obd`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import gammaln

from pushrl.data.features import F, FeatureSpec, ItemCatalog, replay
from pushrl.data.io import Dataset, to_unix_seconds
from pushrl.data.validate import ValidationReport
from pushrl.errors import DataError
from pushrl.sim import design
from pushrl.sim.glm import Glm, fit_glm
from pushrl.sim.model import SimModel
from pushrl.sim.population import DEFAULT_RHYTHM, WARM_DAYS, fit_population
from pushrl.units import DAY, HOUR, HOURS_PER_WEEK

Progress = Callable[[str], None]


def _fit_or_constant(x: np.ndarray, y: np.ndarray, groups: np.ndarray,
                     names: tuple[str, ...], say: Progress) -> Glm:
    """Fit a GLM; with too few outcomes to cross-validate, a shrunk constant rate instead."""
    try:
        return fit_glm(x, y, groups, names)
    except DataError as exc:
        say(f"  {exc}; using a constant rate")
        rate = (float(np.sum(y)) + 0.5) / (y.size + 1.0)
        return Glm(names, np.zeros(len(names)), float(np.log(rate / (1 - rate))),
                   {"n": int(y.size), "positives": int(np.sum(y)), "rate": rate,
                    "constant": "too few outcomes to fit and cross-validate", "log_loss": None,
                    "log_loss_baseline": None, "auc": None, "ece": None, "reliability": []})


def _bool(p: pd.DataFrame, col: str) -> tuple[np.ndarray, np.ndarray]:
    """``(value, known)`` arrays of a nullable boolean column."""
    s = p[col] if col in p else pd.Series(pd.NA, index=p.index, dtype="boolean")
    known = s.notna().to_numpy()
    return s.fillna(False).to_numpy(bool), known


def item_popularity(ds: Dataset, catalog: ItemCatalog) -> np.ndarray:
    """Organic activity events per item, shape ``(n_items,)`` (the ``popular`` sampler)."""
    ids = ds.activity["item_id"] if len(ds.activity) else pd.Series([], dtype=object)
    ids = ids.astype(object)[ids.notna()].astype(str)
    idx = catalog.indices(ids[ids.isin(catalog.index)].to_numpy())
    return np.bincount(idx, minlength=len(catalog)).astype(np.float64)


def burst_mean(ds: Dataset) -> float:
    """Mean organic events per user-hour with any activity (the simulator's burst size)."""
    act = ds.activity
    if not len(act):
        return 1.0
    b = to_unix_seconds(act["ts"]) // HOUR
    u = pd.Categorical(act["user_id"]).codes.astype(np.int64)
    _, counts = np.unique(u * (int(b.max()) + 1) + b, return_counts=True)
    return float(counts.mean())


def item_revenue(ds: Dataset, catalog: ItemCatalog, item_idx: np.ndarray,
                 converted: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Expected revenue of a conversion per item, shape ``(n_items,)``, and how it was fitted."""
    rev = ds.pushes["revenue"].to_numpy(float)
    rows = converted & ~np.isnan(rev) & (item_idx >= 0)
    n_items = len(catalog)
    if not rows.any():
        return np.zeros(n_items), {"method": "none (no converted rows)"}
    if "price" in catalog.raw:
        price = catalog.raw["price"].to_numpy(float)
        ratio = float(rev[rows].sum() / max(price[item_idx[rows]].sum(), 1e-9))
        return price * ratio, {"method": "price * ratio", "ratio": ratio,
                               "conversions": int(rows.sum())}
    k = 5.0
    tot = np.bincount(item_idx[rows], weights=rev[rows], minlength=n_items)
    cnt = np.bincount(item_idx[rows], minlength=n_items)
    mean = float(rev[rows].mean())
    return (tot + k * mean) / (cnt + k), {"method": "shrunk item mean", "k": k, "mean": mean}


def _prefix(ds: Dataset, cut: int) -> Dataset:
    """The events of ``ds`` before unix second ``cut``."""
    act, p = ds.activity, ds.pushes
    a_keep = to_unix_seconds(act["ts"]) < cut if len(act) else np.zeros(0, bool)
    return Dataset(ds.users, ds.items, act.loc[a_keep].reset_index(drop=True),
                   p.loc[to_unix_seconds(p["ts"]) < cut].reset_index(drop=True))


RHYTHM_GRID = [(kp, kd, sm) for kp in (5.0, 20.0, 80.0) for kd in (10.0, 40.0, 160.0, 1e9)
               for sm in (0.0, 1.0)]


def select_rhythm(ds: Dataset, spec: FeatureSpec, full_how: np.ndarray,
                  frac: float = 0.75) -> tuple[tuple[float, float, float], dict[str, Any]]:
    """Choose the rhythm shrinkage on held-out data: fit on the first ``frac`` of the log.

    Scores the Poisson log-likelihood per held-out event of the counts per user and local
    hour of week, for every ``(k_pop, k_day, smooth)`` of :data:`RHYTHM_GRID`, against the
    naive baseline (population rate times population profile for every user).

    Returns:
        The best parameters and the held-out metrics.
    """
    act = ds.activity
    if not len(act):
        return DEFAULT_RHYTHM, {"skipped": "no activity table"}
    sec = to_unix_seconds(act["ts"])
    lo, hi = int(sec.min()), int(sec.max())
    cut = lo + int(frac * (hi - lo))
    train = _prefix(ds, cut)
    rr = replay(train, spec, with_affinity=False)
    test = full_how.astype(np.float64) - rr.state.export_history(np.arange(len(ds.users)))["how"]
    expo = (hi - cut) / HOUR / HOURS_PER_WEEK
    n_ev = test.sum()

    def ll(lmb: np.ndarray) -> float:
        lmb = np.maximum(lmb, 1e-12)
        return float((test * np.log(lmb) - lmb - gammaln(test + 1)).sum() / max(n_ev, 1))

    scores = {}
    for params in RHYTHM_GRID:
        pop = fit_population(train, spec, rr, params)
        scores[params] = ll(pop.rate_how.astype(np.float64) * expo)
    best = max(scores, key=lambda k: scores[k])
    pop = fit_population(train, spec, rr, best)
    m = pop.hist_how.sum() / len(pop) / ((cut - lo) / HOUR)
    lam0 = np.broadcast_to(m * 168.0 * np.asarray(spec.prior_how) * expo, test.shape)
    lam = pop.rate_how.astype(np.float64) * expo
    by_hour = lambda x: x.reshape(len(x), 7, 24).sum(axis=(0, 1))  # noqa: E731
    return best, {
        "held_out": f"last {1 - frac:.0%} of the log", "held_out_events": int(n_ev),
        "k_pop": best[0], "k_day": best[1], "smooth_hours": best[2],
        "loglik_per_event": scores[best], "loglik_per_event_baseline": ll(lam0),
        "corr_by_local_hour": float(np.corrcoef(by_hour(lam), by_hour(test))[0, 1]),
        "predicted_events": float(lam.sum())}


def fit_push(ds: Dataset, report: ValidationReport, progress: Progress | None = None) -> SimModel:
    """Fit every component of a push log (see module docstring)."""
    say = progress or (lambda _m: None)
    spec = FeatureSpec.fit(ds)
    say("replaying the log through the feature pipeline")
    rr = replay(ds, spec)
    catalog = ItemCatalog(ds.items, spec)
    p = ds.pushes
    sent, _ = _bool(p, "sent")
    opened, o_known = _bool(p, "opened")
    clicked, c_known = _bool(p, "clicked")
    converted, v_known = _bool(p, "converted")
    unsub, u_known = _bool(p, "unsubscribed")
    idx = np.full(len(p), -1, np.int64)
    ids = p["item_id"].astype(object).where(p["item_id"].notna(), None).to_numpy()
    idx[sent] = catalog.indices(ids[sent])
    groups = rr.user_index
    glms = {}
    rows = sent & o_known
    if not rows.any():
        raise DataError("no sent push with a known `opened` outcome; the push simulator needs "
                        "opens (for item-choice logs such as OBD the obd fitter is used)")
    say("fitting user population and rhythm")
    full_how = rr.state.export_history(np.arange(len(ds.users)))["how"]
    best, rhythm = select_rhythm(ds, spec, full_how)
    start = int(rr.bucket.min()) * HOUR
    warm_rr = replay(_prefix(ds, start + WARM_DAYS * DAY), spec, with_affinity=False)
    warm = warm_rr.state.export_history(np.arange(len(ds.users)))
    pop = fit_population(ds, spec, rr, best, warm)
    say(f"fitting open model on {int(rows.sum())} sends")
    log_pop = design.log_population_activity(spec.prior_how)
    user_rel = design.log_user_relative_activity(pop.rate_how)[groups[rows]]
    # per-channel response (issue 17): channel indicators, when the log has several channels
    chan = (p["channel"].astype(object).where(p["channel"].notna(), None).to_numpy()
            if "channel" in p else np.full(len(p), None, dtype=object))
    levels = design.channel_levels(chan[sent])
    ch_names = design.channel_names(levels)
    if levels:
        say(f"channels {', '.join(levels)}: per-channel open and unsubscribe terms "
            f"(reference {levels[0]})")
    x = design.open_design(rr.features[rows], rr.affinity[rows], log_pop, user_rel)
    x = np.concatenate([x, design.channel_design(chan[rows], ch_names, int(rows.sum()))], 1)
    glms["open"] = fit_glm(x, opened[rows], groups[rows],
                           (*design.OPEN_NAMES, design.USER_REL_NAME, *ch_names))
    names = design.click_names(catalog.feature_names)
    rows = sent & opened & c_known
    say(f"fitting click model on {int(rows.sum())} opens")
    glms["click"] = _fit_or_constant(design.click_design(
        rr.features[rows], rr.affinity[rows], catalog.features[idx[rows]]),
        clicked[rows], groups[rows], names, say)
    rows = sent & clicked & v_known
    if rows.any():
        say(f"fitting convert model on {int(rows.sum())} clicks")
        glms["convert"] = _fit_or_constant(design.convert_design(catalog.features[idx[rows]]),
                                           converted[rows], groups[rows],
                                           catalog.feature_names, say)
    rows = sent & u_known
    say(f"fitting unsubscribe hazard on {int(rows.sum())} sends")
    names = design.unsub_names(design.volume_knots(rr.features[rows, F["sends_7d"]]))
    x = np.concatenate([design.unsub_design(rr.features[rows], names),
                        design.channel_design(chan[rows], ch_names, int(rows.sum()))], 1)
    glms["unsubscribe"] = _fit_or_constant(x, unsub[rows], groups[rows], (*names, *ch_names),
                                           say)
    revenue, rev_meta = item_revenue(ds, catalog, idx, sent & converted)
    meta = {"data": str(ds.path) if ds.path else None, "fingerprint": report.fingerprint,
            "split": ds.split, "decisions": len(p), "sent": int(sent.sum()), "users": len(pop),
            "start_bucket": int(rr.bucket.min()), "end_bucket": int(rr.bucket.max()),
            "revenue": rev_meta, "rhythm": rhythm, "generator": ds.meta.get("generator")}
    if levels:
        meta["channels"] = list(levels)
    return SimModel("push", spec, catalog.ids.astype(str), catalog.features.astype(np.float32),
                    catalog.feature_names, catalog.category, revenue, glms, pop,
                    {"item_popularity": item_popularity(ds, catalog),
                     "activity_burst_mean": np.array(burst_mean(ds))}, meta)


def check_finite(model: SimModel) -> SimModel:
    """Refuse a fit whose parameters or rhythm statistics are NaN or infinite.

    Degenerate inputs (e.g. a log whose timestamps span decades, so the rhythm's held-out
    quarter has no events) otherwise give a simulator that runs and returns nonsense.

    Raises:
        DataError: naming the first non-finite statistics.
    """
    bad = [f"{k} coefficients" for k, g in model.glms.items()
           if not (np.isfinite(g.coef).all() and np.isfinite(g.intercept))]
    rhythm = model.meta.get("rhythm") or {}
    bad += [f"rhythm {k}" for k, v in rhythm.items()
            if isinstance(v, float) and not np.isfinite(v)]
    if not np.isfinite(model.item_revenue).all():
        bad.append("item revenue")
    if bad:
        raise DataError(f"the simulator fit gave non-finite statistics ({', '.join(bad[:4])}); "
                        "the data cannot support it (e.g. timestamps spanning decades, or no "
                        "activity in the held-out last quarter): check the date range of "
                        "`pushrl data validate DATA`")
    return model


def fit_sim(ds: Dataset, report: ValidationReport, progress: Progress | None = None) -> SimModel:
    """Fit the simulator that fits the data: a push log, or an item-choice log (OBD).

    When ``ds`` is a user sample (:func:`pushrl.data.sample.load_user_sample`; the report's
    ``summary["sample"]``), the model's meta records it under ``sample``.

    Raises:
        DataError: the data has neither opens nor clicks with positions, or the fit's
            statistics are not finite (:func:`check_finite`).
    """
    model = _fit_kind(ds, report, progress)
    if "sample" in report.summary:
        model.meta["sample"] = report.summary["sample"]
    return model


def _fit_kind(ds: Dataset, report: ValidationReport, progress: Progress | None) -> SimModel:
    _, o_known = _bool(ds.pushes, "opened")
    if o_known.any():
        return check_finite(fit_push(ds, report, progress))
    if "position" in ds.pushes and ds.pushes["clicked"].notna().any():
        from pushrl.sim.obd import fit_obd

        return check_finite(fit_obd(ds, report, progress))
    raise DataError("the dataset has neither `opened` outcomes (push log) nor `clicked` with "
                    "`position` (item-choice log); nothing to fit a simulator on")
