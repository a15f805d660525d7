"""Validate a fitted push simulator against a log (and the ground truth when there is one).

Three checks, each a plain dict in the report:

* ``components``: per component held-out log-loss and AUC vs a naive global-rate baseline,
  calibration (reliability bins, ECE, calibration slope). If ``DATA`` is the data the
  simulator was fitted on, the numbers are the fit's grouped cross-validation; on other data
  they are computed on that data (a true out-of-sample test).
* ``replay``: the logging policy as it acted (the logged pushes: same users, hours and
  items) replayed inside the simulator from empty states at the log's start, versus the log,
  over the pushes delivered in both (:func:`replay_logging_policy` says why): open rate by
  local hour, unsubscribe rate by pushes in the previous 7 days, click and conversion rates,
  organic activity. Each row has the relative error and ``z`` = the difference over its
  standard error (:func:`_paired_row`).
* ``truth`` (synthetic data only): the fitted models against the true probabilities on the
  logged sends, and the simulator against the same simulation run on the truth with common
  random numbers. Gates: open probability by local hour correlates >= 0.95 with the truth;
  the unsubscribe hazard is within 20 % of the truth, defined as the mean per-push hazard
  over the logged sends (also reported per ``sends_7d`` bucket, and as a dose-response curve
  at the population's median engagement).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushrl.data.features import F, ReplayResult, replay, user_index
from pushrl.data.fingerprint import same_data
from pushrl.data.io import Dataset, to_unix_seconds
from pushrl.data.validate import ValidationReport
from pushrl.rules.guardrails import Guardrails
from pushrl.sim.contexts import BatchDecision
from pushrl.sim.engine import PushSim, SimConfig
from pushrl.sim.glm import binary_metrics
from pushrl.sim.model import SimModel
from pushrl.sim.population import DEFAULT_RHYTHM, fit_population
from pushrl.sim.response import FittedResponse, ResponseModel, TruthResponse
from pushrl.units import HOUR

S7_BUCKETS: tuple[tuple[int, int], ...] = ((0, 0), (1, 2), (3, 4), (5, 7), (8, 11), (12, 999))
OPEN_CORR_GATE = 0.95
UNSUB_REL_GATE = 0.20
#: Simulated replicates of the logged actions in the replay test (at most).
REPLAY_REPS = 4
#: Simulated user slots of the replay (users x replicates; ~3 KB of feature state each):
#: large logs get fewer replicates, never fewer than one.
REPLAY_SLOTS = 100_000


def _rel(sim: float, ref: float) -> float | None:
    return None if ref == 0 else float(sim / ref - 1.0)


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


def external_model(model: SimModel, ds: Dataset, rr: ReplayResult) -> SimModel:
    """``model`` with the users of another dataset ``ds`` as its population.

    The open model's latent rhythm covariate is per user (:mod:`pushrl.sim.design`): users
    the simulator was not fitted on get theirs from their own activity in ``ds``, with the
    fit's rhythm shrinkage, as the fit did for its users (indexing the fitted population
    with another dataset's users would give every held-out user a stranger's rhythm).
    """
    rh = model.meta.get("rhythm") or {}
    params = ((float(rh["k_pop"]), float(rh["k_day"]), float(rh["smooth_hours"]))
              if "k_pop" in rh else DEFAULT_RHYTHM)
    return dataclasses.replace(model, population=fit_population(ds, model.spec, rr, params))


def components(model: SimModel, ds: Dataset, rows: dict[str, np.ndarray],
               same_data: bool, rr: ReplayResult | None = None) -> dict[str, Any]:
    """Held-out metrics per component (see module docstring).

    On other data (``same_data`` False) the components are scored on its logged sends,
    with the held-out users' latents from their own activity (:func:`external_model`;
    ``rr`` = ``replay(ds, model.spec)``).
    """
    out: dict[str, Any] = {}
    if same_data:
        for name, g in model.glms.items():
            out[name] = {"source": "fit cross-validation (grouped by user)", **g.metrics}
        out["rhythm"] = model.meta.get("rhythm", {})
        return out
    r = FittedResponse(external_model(model, ds, rr if rr is not None
                                      else replay(ds, model.spec)))
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


class _LoggedItems:
    """Item "policy" that pushes the logged item: ``item[slot]`` is set before every step."""

    uses_candidate_features = False

    def __init__(self, n: int, n_items: int) -> None:
        self.item = np.zeros(n, np.int64)
        self.n_items = n_items

    def decide_batch(self, ctx: Any, rng: np.random.Generator) -> BatchDecision:
        a = self.item[np.asarray(ctx.extra["user_index"], np.int64)]
        dist = np.zeros((a.size, self.n_items))
        dist[np.arange(a.size), a] = 1.0
        return BatchDecision(a, np.ones(a.size), dist)


def replay_logging_policy(model: SimModel, response: ResponseModel, ds: Dataset, seed: int = 0,
                          reps: int | None = None) -> dict[str, Any]:
    """Replay the logged actions in the simulator: the same users, sends and items.

    What is replayed, and why: every logged push (user, UTC hour, item) is delivered to the
    simulated twin of its user (the population row of the same logged user, from an empty
    state at the log's start, as the log started), in the same hour, with the same item; the
    simulator draws organic activity and the outcomes (open, click, conversion,
    unsubscribe), and its feature state evolves with its own draws (engagement, opens). This
    is the logging policy *as it acted*, whatever its shape (uniform, epsilon-greedy around a
    heuristic, Thompson sampling, or a company's unknown logger without propensities).

    Re-drawing the actions from the logged propensities instead (``pscore_send``, item
    ``pscore / pscore_send``) is not better: the logger's decisions depend on the real
    users' histories (an epsilon-greedy logger's most active hour, a Thompson sampler's
    pooled clicks), and only the propensity of the logged item is known, not the whole item
    distribution, so the re-drawn policy would not be the logger; and every re-draw changes
    the volume and fatigue features, adding action noise to a comparison meant to test the
    response. Holding the actions fixed makes the comparison conditional on them (a paired
    design): under the null "the simulator responds like the world", a logged push and its
    simulated replay have the same outcome probability, so any difference is the response
    model's.

    Censoring: a simulated user who unsubscribes receives none of its later logged pushes,
    and a logged user who unsubscribed has no later decisions. Rates are therefore compared
    on the *matched* pushes, those delivered in the simulation (the user is subscribed in
    both worlds): the simulated outcome vs the logged outcome of the same push.
    :func:`replay_report` computes the standard errors. ``reps`` independent simulated
    replicates (different random keys) shrink the simulation's share of the noise; None =
    :data:`REPLAY_REPS`, fewer when users x replicates would exceed :data:`REPLAY_SLOTS`.

    Returns:
        Per matched (replicate, push): ``row`` (index among the log's sent rows, the order of
        :func:`_sent_rows`), ``rep`` (replicate), ``hour``, ``s7``, ``p_open``, ``opened``,
        ``clicked``, ``converted``, ``unsub``, ``unsub_hazard``, ``pop``; ``events``
        ``(reps, n_users)`` organic events per simulated user; ``reps``, ``skipped`` (logged
        pushes not replayed: unknown item, or a second push of a user in the same hour).
    """
    pop = model.population
    if pop is None:
        raise ValueError("replay needs a push simulator with a population")
    uid = ds.users["user_id"].astype(str).to_numpy()
    if len(uid) != len(pop) or (uid != pop.user_id.astype(str)).any():
        raise ValueError("the replay runs on the data the simulator was fitted on: its users "
                         "must be the simulator's population")
    start, end = int(model.meta["start_bucket"]), int(model.meta["end_bucket"])
    p = ds.pushes
    sent = p["sent"].fillna(False).to_numpy(bool)
    s_idx = np.flatnonzero(sent)
    t = (to_unix_seconds(p["ts"])[s_idx] // HOUR - start).astype(np.int64)
    user = user_index(ds, p["user_id"].iloc[s_idx])
    item_of = {str(i): j for j, i in enumerate(model.item_ids)}
    item = pd.Series(p["item_id"].astype(object).iloc[s_idx].astype(str).to_numpy()).map(
        item_of).fillna(-1).to_numpy(np.int64)
    n_u, horizon = len(pop), end - start + 1
    if reps is None:
        reps = max(1, min(REPLAY_REPS, REPLAY_SLOTS // max(n_u, 1)))
    ok = (item >= 0) & (user >= 0) & (t >= 0) & (t < horizon)
    key = t * n_u + user
    first = np.zeros(t.size, bool)
    _, fi = np.unique(np.where(ok, key, -1 - np.arange(t.size)), return_index=True)
    first[fi] = True
    ok &= first
    rows = np.flatnonzero(ok)
    rows = rows[np.argsort(t[rows], kind="stable")]
    edges = np.searchsorted(t[rows], np.arange(horizon + 1))
    n = n_u * reps
    cfg = SimConfig(start, horizon, 1, Guardrails(0, 0, 0, 0), 0, "none")
    items = _LoggedItems(n, model.n_items)
    sim = PushSim(model, response, cfg, n, items)
    slots = np.arange(n)
    sim.reset(slots, slots % n_u, np.arange(n, dtype=np.uint64) * np.uint64(7919)
              + np.uint64(seed))
    cols: dict[str, list[np.ndarray]] = {k: [] for k in (
        "row", "rep", "hour", "s7", "p_open", "opened", "clicked", "converted", "unsub",
        "unsub_hazard", "pop")}
    send = np.zeros(n, bool)
    row_of = np.full(n, -1, np.int64)
    for step in range(horizon):
        r = rows[edges[step]:edges[step + 1]]
        obs = sim.observe()
        send[:] = False
        tgt = (user[r][None, :] + n_u * np.arange(reps)[:, None]).ravel()
        send[tgt] = True
        items.item[tgt] = np.tile(item[r], reps)
        out = sim.step(send)
        d = np.flatnonzero(out.delivered)
        row_of[tgt] = np.tile(r, reps)  # delivered slots are a subset of tgt
        cols["row"].append(row_of[d])
        cols["rep"].append(d // n_u)
        cols["hour"].append(obs.raw[d, F["local_hour"]].astype(np.int64))
        cols["s7"].append(obs.raw[d, F["sends_7d"]].astype(np.int64))
        cols["unsub_hazard"].append(response.unsub_hazard(sim.pop[d], obs.raw[d]))
        for k in ("p_open", "opened", "clicked", "converted"):
            cols[k].append(getattr(out, k)[d])
        cols["unsub"].append(out.unsubscribed[d])
        cols["pop"].append(sim.pop[d])
    res: dict[str, Any] = {k: np.concatenate(v) for k, v in cols.items()}
    res["events"] = sim.state.export_history(slots)["how"].sum(axis=1).reshape(reps, n_u)
    res["reps"] = reps
    res["skipped"] = int(t.size - rows.size)
    return res


def _paired_row(key: Any, m: np.ndarray, y_log: np.ndarray, k_sim: float,
                by_rep: np.ndarray | None = None) -> dict[str, Any]:
    """Logged vs simulated rate over matched pushes (see :func:`replay_logging_policy`).

    Args:
        key: Row label.
        m: ``(n_sent,)`` times each logged push was matched (replicates it was delivered in).
        y_log: ``(n_sent,)`` its logged outcome.
        k_sim: Simulated outcomes summed over the same matched pushes: positives, or the
            simulator's probabilities (then ``by_rep`` is given).
        by_rep: ``(reps,)`` the simulated rate of each replicate when ``k_sim`` sums
            probabilities, else None.

    The logged rate weights each push by ``m``; its variance is ``p(1-p) sum(m^2) /
    sum(m)^2`` (a push repeated over replicates is one draw) with ``p`` pooled under the
    null. The simulated rate of realised draws has variance ``p(1-p) / sum(m)``
    (independent replicates). A rate of probabilities (the simulator's expected outcome
    along its own trajectory: same expectation, no Bernoulli noise) has the variance of a
    mean over replicates, ``var(by_rep) / reps``.
    """
    n = float(m.sum())
    k_log = float(m @ y_log)
    r_log, r_sim = k_log / max(n, 1.0), k_sim / max(n, 1.0)
    pooled = (k_log + k_sim) / max(2 * n, 1.0)
    var = pooled * (1 - pooled) * float(m @ m) / max(n, 1.0) ** 2
    if by_rep is None:
        var += pooled * (1 - pooled) / max(n, 1.0)
    elif by_rep.size > 1:
        var += float(np.var(by_rep, ddof=1)) / by_rep.size
    se = float(np.sqrt(var))
    return {"key": key, "n_log": int((m > 0).sum()), "rate_log": r_log, "n_sim": int(n),
            "rate_sim": r_sim, "rel_error": _rel(r_sim, r_log),
            "z": float((r_sim - r_log) / se) if se > 0 else 0.0,
            "sim": "realised draws" if by_rep is None else "expected (probabilities)"}


def replay_report(rows: dict[str, np.ndarray], sim: dict[str, Any],
                  log_events: np.ndarray) -> dict[str, Any]:
    """Logged vs simulated rates over the matched pushes of the replay (relative errors, z).

    Open and unsubscribe rates of the simulator are its expected outcomes (``p_open``,
    ``unsub_hazard`` of every matched push, along the simulated trajectories); click and
    conversion rates are realised draws (:func:`_paired_row`).

    Args:
        rows: :func:`_sent_rows` of the log.
        sim: :func:`replay_logging_policy` output.
        log_events: ``(n_users,)`` organic events per logged user.
    """
    n_sent = rows["opened"].size
    row, rep, reps = sim["row"], sim["rep"], int(sim["reps"])
    lh = rows["raw"][:, F["local_hour"]].astype(np.int64)
    lb = _s7_bucket(rows["raw"][:, F["sends_7d"]])

    def group(key: Any, sel_log: np.ndarray, y_log: np.ndarray, y_sim: np.ndarray,
              expected: bool = False) -> dict[str, Any]:
        keep = sel_log[row]
        m = np.bincount(row[keep], minlength=n_sent).astype(np.float64)
        ys = y_sim[keep].astype(np.float64)
        by_rep = None
        if expected:
            num = np.bincount(rep[keep], weights=ys, minlength=reps)
            by_rep = num / np.maximum(np.bincount(rep[keep], minlength=reps), 1)
        return _paired_row(key, m, y_log.astype(np.float64), float(ys.sum()), by_rep)

    every = np.ones(n_sent, bool)
    by_hour = [group(h, lh == h, rows["opened"], sim["p_open"], True) for h in range(24)]
    by_s7 = [group(_s7_label(*S7_BUCKETS[i]), lb == i, rows["unsub"], sim["unsub_hazard"], True)
             for i in range(len(S7_BUCKETS))]
    overall = {"open_rate": group("open_rate", every, rows["opened"], sim["p_open"], True)}
    overall.update({k: group(k, every, rows[lk], sim[lk])
                    for k, lk in (("click_rate", "clicked"), ("conversion_rate", "converted"))})
    overall["unsubscribe_rate"] = group("unsubscribe_rate", every, rows["unsub"],
                                        sim["unsub_hazard"], True)
    ev_l, ev_s = float(np.mean(log_events)), float(np.mean(sim["events"]))
    return {"policy": "the logged actions (same users, hours and items) replayed in the "
                      f"simulator, {sim['reps']} replicates, empty states at the log start; "
                      "rates over the pushes delivered in both (see "
                      "pushrl.sim.validate.replay_logging_policy)",
            "reps": int(sim["reps"]), "logged_pushes": int(n_sent),
            "matched_share": float(row.size / max(n_sent * sim["reps"], 1)),
            "skipped": int(sim["skipped"]),
            "overall": overall, "open_rate_by_local_hour": by_hour,
            "unsubscribe_rate_by_sends_7d": by_s7,
            "activity_events_per_user": {"log": ev_l, "sim": ev_s, "rel_error": _rel(ev_s, ev_l)},
            "max_abs_z_open_by_hour": float(max(abs(r["z"]) for r in by_hour))}


def _hour_curve(hour: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.bincount(hour, weights=p, minlength=24) / np.maximum(
        np.bincount(hour, minlength=24), 1)


def truth_report(model: SimModel, ds: Dataset, rows: dict[str, np.ndarray], data: Path,
                 sim_fit: dict[str, Any], seed: int) -> dict[str, Any]:
    """Fitted simulator vs ground truth (module docstring); includes the two gates."""
    fr, tr = FittedResponse(model), TruthResponse(model, data)
    raw, u, it, aff = rows["raw"], rows["user"], rows["item"], rows["aff"]
    hour = raw[:, F["local_hour"]].astype(np.int64)
    c_fit = _hour_curve(hour, fr.p_open(u, raw, aff, it))
    c_true = _hour_curve(hour, tr.p_open(u, raw, aff, it))
    sim_true = replay_logging_policy(model, tr, ds, seed)
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


def validate_push(model: SimModel, ds: Dataset, report: ValidationReport,
                  seed: int = 0) -> dict[str, Any]:
    """The full validation report of a push simulator on dataset ``ds``."""
    same = same_data(model.meta.get("fingerprint"), report.fingerprint,
                     None if report.summary.get("sample") else ds.legacy_fingerprint)
    rr = replay(ds, model.spec)
    rows = _sent_rows(ds, rr, model)
    out: dict[str, Any] = {"sim": model.meta.get("path"), "data": str(ds.path),
                           "same_data_as_fit": same,
                           "components": components(model, ds, rows, same, rr)}
    gates: list[dict[str, Any]] = []
    if same:
        sim_fit = replay_logging_policy(model, FittedResponse(model), ds, seed)
        events = rr.state.export_history(np.arange(len(ds.users)))["how"].sum(axis=1)
        out["replay"] = replay_report(rows, sim_fit, events)
        if ds.path is not None and (Path(ds.path) / "ground_truth.json").is_file():
            out["truth"] = truth_report(model, ds, rows, Path(ds.path), sim_fit, seed)
            gates += out["truth"]["gates"]
    else:
        out["replay"] = {"skipped": "the replay test runs on the data the simulator was "
                                    "fitted on (its users are the simulated population)"}
    out["gates"] = gates
    out["passed"] = all(g["pass"] for g in gates)
    return out
