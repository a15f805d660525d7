"""Validate a fitted push simulator against a log (and the ground truth when there is one).

Three checks, each a plain dict in the report:

* ``components``: per component held-out log-loss and AUC vs a naive global-rate baseline,
  calibration (reliability bins, ECE, calibration slope). If ``DATA`` is the data the
  simulator was fitted on, the numbers are the fit's grouped cross-validation; on other data
  they are computed on that data (a true out-of-sample test).
* ``replay``: the logging policy (per user send probability, uniform items) run inside the
  simulator from empty states at the log's start, one simulated user per logged user, versus
  the log: open rate by local hour, unsubscribe rate by pushes in the previous 7 days, click
  and conversion rates, organic activity. Each row has the relative error and ``z`` = the
  difference over its binomial standard error.
* ``truth`` (synthetic data only): the fitted models against the true probabilities on the
  logged sends, and the simulator against the same simulation run on the truth with common
  random numbers. Gates: open probability by local hour correlates >= 0.95 with the truth;
  the unsubscribe hazard is within 20 % of the truth, defined as the mean per-push hazard
  over the logged sends (also reported per ``sends_7d`` bucket, and as a dose-response curve
  at the population's median engagement).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushrl.data.features import F, ReplayResult, replay
from pushrl.data.io import Dataset
from pushrl.data.validate import ValidationReport
from pushrl.rules.guardrails import Guardrails
from pushrl.sim.engine import PushSim, SimConfig
from pushrl.sim.glm import binary_metrics
from pushrl.sim.items import make_sampler
from pushrl.sim.model import SimModel
from pushrl.sim.response import FittedResponse, ResponseModel, TruthResponse

S7_BUCKETS: tuple[tuple[int, int], ...] = ((0, 0), (1, 2), (3, 4), (5, 7), (8, 11), (12, 999))
OPEN_CORR_GATE = 0.95
UNSUB_REL_GATE = 0.20


def _rel(sim: float, ref: float) -> float | None:
    return None if ref == 0 else float(sim / ref - 1.0)


def _rate_row(key: Any, n_log: int, k_log: float, n_sim: int, k_sim: float) -> dict[str, Any]:
    r_log, r_sim = k_log / max(n_log, 1), k_sim / max(n_sim, 1)
    pooled = (k_log + k_sim) / max(n_log + n_sim, 1)
    se = np.sqrt(pooled * (1 - pooled) * (1 / max(n_log, 1) + 1 / max(n_sim, 1)))
    return {"key": key, "n_log": int(n_log), "rate_log": r_log, "n_sim": int(n_sim),
            "rate_sim": r_sim, "rel_error": _rel(r_sim, r_log),
            "z": float((r_sim - r_log) / se) if se > 0 else 0.0}


def _s7_label(lo: int, hi: int) -> str:
    return f"{lo}" if lo == hi else (f"{lo}+" if hi >= 999 else f"{lo}-{hi}")


def _s7_bucket(s7: np.ndarray) -> np.ndarray:
    out = np.zeros(s7.shape, np.int64)
    for i, (lo, _) in enumerate(S7_BUCKETS):
        out[s7 >= lo] = i
    return out


def _sent_rows(ds: Dataset, rr: ReplayResult, model: SimModel) -> dict[str, np.ndarray]:
    p = ds.pushes
    s = p["sent"].fillna(False).to_numpy(bool)
    f = lambda c: p[c].fillna(False).to_numpy(bool)[s]  # noqa: E731
    item = pd.Series(p["item_id"].astype(object)[s].astype(str)).map(
        {str(i): j for j, i in enumerate(model.item_ids)}).fillna(-1).to_numpy(np.int64)
    return {"raw": rr.features[s], "aff": rr.affinity[s], "user": rr.user_index[s],
            "item": item, "opened": f("opened"), "clicked": f("clicked"),
            "converted": f("converted"), "unsub": f("unsubscribed")}


def components(model: SimModel, ds: Dataset, rows: dict[str, np.ndarray],
               same_data: bool) -> dict[str, Any]:
    """Held-out metrics per component (see module docstring)."""
    out: dict[str, Any] = {}
    if same_data:
        for name, g in model.glms.items():
            out[name] = {"source": "fit cross-validation (grouped by user)", **g.metrics}
        out["rhythm"] = model.meta.get("rhythm", {})
        return out
    r = FittedResponse(model)
    raw, aff, items = rows["raw"], rows["aff"], rows["item"]
    ok = items >= 0
    cases = {
        "open": (ok, r.p_open(rows["user"], raw, aff, items), rows["opened"]),
        "click": (ok & rows["opened"], r.p_click(rows["user"], raw, aff, items), rows["clicked"]),
        "convert": (ok & rows["clicked"], r.p_convert(rows["user"], items), rows["converted"]),
        "unsubscribe": (np.ones_like(ok), r.unsub_hazard(rows["user"], raw), rows["unsub"]),
    }
    for name, (m, p, y) in cases.items():
        if name in model.glms and m.any():
            base = np.full(int(m.sum()), model.glms[name].metrics.get("rate", y[m].mean()))
            out[name] = {"source": "external data", **binary_metrics(y[m], p[m], base)}
    return out


def replay_logging_policy(model: SimModel, response: ResponseModel, ds: Dataset, seed: int = 0,
                          warm_start: str = "none") -> dict[str, np.ndarray]:
    """Run the logging policy in the simulator, one slot per logged user, over the log span.

    Returns:
        Per delivered push: ``hour``, ``s7`` (sends in the previous 7 days), ``p_open``,
        ``opened``, ``clicked``, ``converted``, ``unsub``, ``unsub_hazard``, ``pop``; and
        ``events`` (organic events per simulated user).
    """
    pop = model.population
    assert pop is not None
    start, end = int(model.meta["start_bucket"]), int(model.meta["end_bucket"])
    n = len(pop)
    cfg = SimConfig(start, end - start + 1, 1, Guardrails(0, 0, 0, 0), 0, warm_start)
    sim = PushSim(model, response, cfg, n, make_sampler("uniform", model.n_items))
    sim.reset(np.arange(n), np.arange(n), np.arange(n, dtype=np.uint64) * 7919 + seed)
    rng = np.random.default_rng(seed)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in (
        "hour", "s7", "p_open", "opened", "clicked", "converted", "unsub", "unsub_hazard", "pop")}
    for _ in range(cfg.horizon):
        obs = sim.observe()
        send = rng.random(n) < pop.p_send
        out = sim.step(send)
        d = np.flatnonzero(out.delivered)
        cols["hour"].append(obs.raw[d, F["local_hour"]].astype(np.int64))
        cols["s7"].append(obs.raw[d, F["sends_7d"]].astype(np.int64))
        cols["unsub_hazard"].append(response.unsub_hazard(sim.pop[d], obs.raw[d]))
        for k in ("p_open", "opened", "clicked", "converted"):
            cols[k].append(getattr(out, k)[d])
        cols["unsub"].append(out.unsubscribed[d])
        cols["pop"].append(sim.pop[d])
    res = {k: np.concatenate(v) for k, v in cols.items()}
    res["events"] = sim.state.export_history(np.arange(n))["how"].sum(axis=1)
    return res


def replay_report(rows: dict[str, np.ndarray], sim: dict[str, np.ndarray],
                  log_events: np.ndarray) -> dict[str, Any]:
    """Logged vs simulated aggregates under the logging policy (relative errors, z)."""
    lh = rows["raw"][:, F["local_hour"]].astype(np.int64)
    sh = sim["hour"]
    by_hour = [_rate_row(h, int((lh == h).sum()), float(rows["opened"][lh == h].sum()),
                         int((sh == h).sum()), float(sim["opened"][sh == h].sum()))
               for h in range(24)]
    lb, sb = _s7_bucket(rows["raw"][:, F["sends_7d"]]), _s7_bucket(sim["s7"])
    by_s7 = [_rate_row(_s7_label(*S7_BUCKETS[i]), int((lb == i).sum()),
                       float(rows["unsub"][lb == i].sum()), int((sb == i).sum()),
                       float(sim["unsub"][sb == i].sum())) for i in range(len(S7_BUCKETS))]
    n_l, n_s = rows["opened"].size, sim["opened"].size
    overall = {k: _rate_row(k, n_l, float(rows[lk].sum()), n_s, float(sim[sk].sum()))
               for k, lk, sk in (("open_rate", "opened", "opened"),
                                 ("click_rate", "clicked", "clicked"),
                                 ("conversion_rate", "converted", "converted"),
                                 ("unsubscribe_rate", "unsub", "unsub"))}
    ev_l, ev_s = float(np.mean(log_events)), float(np.mean(sim["events"]))
    return {"policy": "logging policy (per-user p_send, uniform items), empty states at the "
                      "log start, one simulated user per logged user",
            "overall": overall, "open_rate_by_local_hour": by_hour,
            "unsubscribe_rate_by_sends_7d": by_s7,
            "activity_events_per_user": {"log": ev_l, "sim": ev_s, "rel_error": _rel(ev_s, ev_l)},
            "max_abs_z_open_by_hour": float(max(abs(r["z"]) for r in by_hour))}


def _hour_curve(hour: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.bincount(hour, weights=p, minlength=24) / np.maximum(
        np.bincount(hour, minlength=24), 1)


def truth_report(model: SimModel, rows: dict[str, np.ndarray], data: Path,
                 sim_fit: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
    """Fitted simulator vs ground truth (module docstring); includes the two gates."""
    fr, tr = FittedResponse(model), TruthResponse(model, data)
    raw, u, it, aff = rows["raw"], rows["user"], rows["item"], rows["aff"]
    hour = raw[:, F["local_hour"]].astype(np.int64)
    c_fit = _hour_curve(hour, fr.p_open(u, raw, aff, it))
    c_true = _hour_curve(hour, tr.p_open(u, raw, aff, it))
    sim_true = replay_logging_policy(model, tr, _ds_stub(), seed)
    s_fit = _hour_curve(sim_fit["hour"], sim_fit["p_open"])
    s_true = _hour_curve(sim_true["hour"], sim_true["p_open"])
    h_fit, h_true = fr.unsub_hazard(u, raw), tr.unsub_hazard(u, raw)
    b = _s7_bucket(raw[:, F["sends_7d"]])
    per_bucket = [{"sends_7d": _s7_label(*S7_BUCKETS[i]), "n": int((b == i).sum()),
                   "hazard_fit": float(h_fit[b == i].mean()) if (b == i).any() else None,
                   "hazard_true": float(h_true[b == i].mean()) if (b == i).any() else None,
                   "rel_error": _rel(float(h_fit[b == i].mean()), float(h_true[b == i].mean()))
                   if (b == i).any() else None} for i in range(len(S7_BUCKETS))]
    # dose-response at median engagement, no push in the last 24 h (fitted) vs the truth
    # averaged over users: isolates the volume effect the timing policy trades off
    curve = []
    med = np.median(raw[:, F["engagement"]])
    for s7 in range(0, 15):
        g = raw.copy()
        g[:, F["sends_7d"]], g[:, F["sends_24h"]], g[:, F["engagement"]] = s7, 0, med
        g[:, F["hours_since_push"]] = 24
        curve.append({"sends_7d": s7, "hazard_fit": float(fr.unsub_hazard(u, g).mean()),
                      "hazard_true": float(tr.unsub_hazard(u, g).mean())})
    mean_rel = float(h_fit.mean() / h_true.mean() - 1)
    corr = float(np.corrcoef(c_fit, c_true)[0, 1])
    corr_sim = float(np.corrcoef(s_fit, s_true)[0, 1])
    gates = [
        {"name": "open_by_local_hour_corr_model_vs_truth", "value": corr,
         "threshold": f">= {OPEN_CORR_GATE}", "pass": corr >= OPEN_CORR_GATE},
        {"name": "open_by_local_hour_corr_sim_vs_truth_sim", "value": corr_sim,
         "threshold": f">= {OPEN_CORR_GATE}", "pass": corr_sim >= OPEN_CORR_GATE},
        {"name": "unsub_mean_per_push_hazard_rel_error", "value": mean_rel,
         "threshold": f"|x| <= {UNSUB_REL_GATE}", "pass": abs(mean_rel) <= UNSUB_REL_GATE},
    ]
    true_rel = tr._rate_gt[tr.gt]  # (n, 168) true events per hour
    fit_rel = model.population.rate_how  # type: ignore[union-attr]
    rc = [np.corrcoef(a, b_)[0, 1] for a, b_ in zip(fit_rel, true_rel, strict=True)]
    return {
        "gates": gates,
        "open_prob_by_local_hour": {"fit": c_fit.tolist(), "true": c_true.tolist(),
                                    "corr": corr, "sd_ratio": float(c_fit.std() / c_true.std())},
        "sim_open_prob_by_local_hour": {
            "fit": s_fit.tolist(), "true": s_true.tolist(), "corr": corr_sim,
            "mean_fit": float(sim_fit["p_open"].mean()),
            "mean_true": float(sim_true["p_open"].mean())},
        "unsubscribe": {"definition": "mean per-push hazard over the logged sends (fitted "
                                      "model vs truth on the same point-in-time features)",
                        "mean_hazard_fit": float(h_fit.mean()),
                        "mean_hazard_true": float(h_true.mean()), "rel_error": mean_rel,
                        "by_sends_7d": per_bucket, "dose_response": curve,
                        "sim_mean_hazard_fit": float(sim_fit["unsub_hazard"].mean()),
                        "sim_mean_hazard_true": float(sim_true["unsub_hazard"].mean())},
        "rhythm": {"median_user_corr_fit_vs_true_rate": float(np.nanmedian(rc))},
    }


def _ds_stub() -> Dataset:
    return Dataset(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), pd.DataFrame())


def validate_push(model: SimModel, ds: Dataset, report: ValidationReport,
                  seed: int = 0) -> dict[str, Any]:
    """The full validation report of a push simulator on dataset ``ds``."""
    same = report.fingerprint == model.meta.get("fingerprint")
    rr = replay(ds, model.spec)
    rows = _sent_rows(ds, rr, model)
    out: dict[str, Any] = {"sim": model.meta.get("path"), "data": str(ds.path),
                           "same_data_as_fit": same,
                           "components": components(model, ds, rows, same)}
    gates: list[dict[str, Any]] = []
    if same:
        sim_fit = replay_logging_policy(model, FittedResponse(model), ds, seed)
        events = rr.state.export_history(np.arange(len(ds.users)))["how"].sum(axis=1)
        out["replay"] = replay_report(rows, sim_fit, events)
        if ds.path is not None and (Path(ds.path) / "ground_truth.json").is_file():
            out["truth"] = truth_report(model, rows, Path(ds.path), sim_fit, seed)
            gates += out["truth"]["gates"]
    else:
        out["replay"] = {"skipped": "the replay test runs on the data the simulator was "
                                    "fitted on (its users are the simulated population)"}
    out["gates"] = gates
    out["passed"] = all(g["pass"] for g in gates)
    return out
