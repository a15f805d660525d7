"""Measured lift of a live holdout: treated vs held-out users, from a server's own log.

A live holdout (:mod:`pushrl.rules.holdout`) assigns each user to the treated arm (served by
the active policy) or the held-out arm (never pushed) by a hash of the user id. Because the
assignment is random and independent of everything else, the difference between the arms'
mean outcome per user is an unbiased estimate of the campaign's incremental effect per user
(the average treatment effect over the experiment's users).

**One per-user table** (:data:`COLUMNS`) is built from a server state
(:func:`pushrl.serve.holdout.lift_data`), a pushlog with the ``holdout`` column
(:func:`from_log`, e.g. ``pushrl logs export``) or a batch rollout (:func:`from_rollout`);
:func:`estimate` computes every metric from it, so the log path and the simulator path are
the same computation.

Metrics (per user, over the experiment, i.e. from its first decision with a holdout arm):

* ``opens``, ``clicks``, ``conversions``, ``revenue``: outcomes attributed to pushes
  (decision feedback inside the attribution window). Held-out users receive no push, so their
  attributed outcomes are 0 and the "lift" is the treated arm's attributed total: this is the
  incremental effect only if pushes do not displace organic outcomes. The organic metrics say
  whether they do.
* ``activity``: organic activity events (the ``activity`` table: sessions, views, carts,
  purchases); ``sessions``: ``session`` events; ``purchases``/``purchase_revenue``:
  ``purchase`` events and their revenue. These are measured for both arms alike, so their
  difference is the campaign's effect on the users' own behaviour.
* ``sends``: pushes delivered (volume).

**CUPED** (Deng et al. 2013): ``Y' = Y - theta (X - mean X)`` with ``X`` the user's organic
activity events before the experiment started (the pre-period; ``pre_days`` bounds it) and
``theta = cov(Y, X) / var(X)`` pooled over both arms. ``X`` cannot be affected by the
assignment, so the estimate stays unbiased and its variance shrinks by ``corr(Y, X)^2``.

Intervals are normal (Welch) 95 % intervals of the difference of means. The **power
calculator** (:func:`days_to_mde`) assumes outcomes accrue like independent days: the effect
grows like ``T`` and its standard error like ``sqrt(T)``, so a relative effect ``r`` of the
held-out mean is detectable (two-sided ``alpha``, power ``power``) after
``T = T_obs ((z_(1-alpha/2) + z_power) SE / (r mu))^2`` days. Users whose differences persist
over days (heterogeneity) make it optimistic; CUPED removes part of that.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from pushrl.errors import DataError
from pushrl.units import DAY

#: Outcome metrics of the per-user table, in report order.
METRICS: tuple[str, ...] = ("opens", "clicks", "conversions", "revenue", "activity",
                            "sessions", "purchases", "purchase_revenue", "sends")
#: Columns of the per-user table: id, arm, its probability, pre-period covariate, metrics.
COLUMNS: tuple[str, ...] = ("user_id", "held_out", "p_holdout", "pre", *METRICS)
#: Metrics attributed to pushes (0 for held-out users by construction).
ATTRIBUTED = ("opens", "clicks", "conversions", "revenue", "sends")


@dataclass
class LiftData:
    """Per-user outcomes of a holdout experiment.

    Attributes:
        users: One row per user in the experiment, :data:`COLUMNS`.
        days: Length of the experiment in days (first to last decision).
        source: Where it came from (a state dir, a log, ``rollout``).
        start: Unix seconds of the experiment's first decision (None: unknown).
    """

    users: pd.DataFrame
    days: float
    source: str
    start: int | None = None


@dataclass
class MetricLift:
    """The lift of one metric (per user over the experiment; ``treated - held out``).

    Attributes:
        metric: Metric name.
        treated, held_out: Mean per user of each arm.
        n_treated, n_held_out: Users per arm.
        lift, low, high, se: Difference of means, its 95 % interval and standard error.
        rel: ``lift / held_out`` (NaN when the held-out mean is 0).
        cuped_lift, cuped_low, cuped_high, cuped_se: The same with CUPED.
        variance_reduction: ``1 - (cuped_se / se)^2``.
        theta: CUPED coefficient.
    """

    metric: str
    treated: float
    held_out: float
    n_treated: int
    n_held_out: int
    lift: float
    low: float
    high: float
    se: float
    rel: float
    cuped_lift: float
    cuped_low: float
    cuped_high: float
    cuped_se: float
    variance_reduction: float
    theta: float

    def to_dict(self) -> dict[str, Any]:
        """JSON form (floats rounded to 6 significant digits)."""
        return {k: (float(f"{v:.6g}") if isinstance(v, float) and math.isfinite(v) else
                    (None if isinstance(v, float) else v)) for k, v in asdict(self).items()}


def _diff(y: np.ndarray, held: np.ndarray, z: float) -> tuple[float, float, float, float, float]:
    """Treated mean, held-out mean, difference, its SE (Welch), and z."""
    t, c = y[~held], y[held]
    se = math.sqrt(t.var(ddof=1) / t.size + c.var(ddof=1) / c.size)
    return float(t.mean()), float(c.mean()), float(t.mean() - c.mean()), se, z


def estimate(data: LiftData, metrics: tuple[str, ...] = METRICS, *, alpha: float = 0.05,
             cuped: bool = True) -> list[MetricLift]:
    """Lift of every metric with ``1 - alpha`` normal intervals (module docstring).

    Raises:
        DataError: an arm has fewer than 2 users.
    """
    u = data.users
    held = u["held_out"].to_numpy(bool)
    n_c, n_t = int(held.sum()), int((~held).sum())
    if n_c < 2 or n_t < 2:
        raise DataError(f"lift needs >= 2 users in each arm, got {n_t} treated and {n_c} held "
                        "out; wait for more traffic or raise --holdout")
    z = NormalDist().inv_cdf(1 - alpha / 2)
    x = u["pre"].to_numpy(np.float64)
    xc = x - x.mean()
    vx = float(xc @ xc)
    out = []
    for m in metrics:
        y = u[m].to_numpy(np.float64)
        mt, mc, d, se, _ = _diff(y, held, z)
        theta = float((y - y.mean()) @ xc / vx) if cuped and vx > 0 else 0.0
        _, _, dc, sec, _ = _diff(y - theta * xc, held, z)
        out.append(MetricLift(
            m, mt, mc, n_t, n_c, d, d - z * se, d + z * se, se,
            d / mc if mc else float("nan"), dc, dc - z * sec, dc + z * sec, sec,
            1 - (sec / se) ** 2 if se > 0 else 0.0, theta))
    return out


def days_to_mde(lift: MetricLift, mde: float, days: float, *, alpha: float = 0.05,
                power: float = 0.8, cuped: bool = True) -> float:
    """Days of experiment after which a relative effect ``mde`` (e.g. 0.05 = 5 % of the
    held-out mean; of the treated mean for attributed metrics, whose held-out mean is 0) is
    detectable (module docstring); NaN when the metric has no spread or mean.

    Args:
        lift: A metric's estimate over ``days`` days.
        mde: Minimum detectable effect, relative, > 0.
        days: Days the estimate covers.
        alpha: Two-sided level.
        power: Probability of detecting an effect of size ``mde``.
        cuped: Use the CUPED standard error.
    """
    if not mde > 0:
        raise DataError(f"--mde must be a relative effect > 0 (0.05 = 5 %), got {mde}")
    base = lift.held_out or lift.treated
    se = lift.cuped_se if cuped else lift.se
    if not base or not se or days <= 0:
        return float("nan")
    k = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return float(days * (k * se / (mde * abs(base))) ** 2)


# --------------------------------------------------------------------------- sources
def _table(users: pd.DataFrame, outcomes: pd.DataFrame, activity: pd.DataFrame,
           start: int, pre_days: float | None) -> pd.DataFrame:
    """Per-user table from ``users`` (user_id, held_out, p_holdout), attributed
    ``outcomes`` per user and ``activity`` events (user_id, sec, event, revenue)."""
    t = users.set_index("user_id")
    act = activity[activity["user_id"].isin(t.index)]
    post = act[act["sec"] >= start]
    lo = -np.inf if pre_days is None else start - pre_days * DAY
    pre = act[(act["sec"] < start) & (act["sec"] >= lo)]
    t["pre"] = pre.groupby("user_id").size()
    t["activity"] = post.groupby("user_id").size()
    t["sessions"] = post[post["event"] == "session"].groupby("user_id").size()
    buy = post[post["event"] == "purchase"]
    t["purchases"] = buy.groupby("user_id").size()
    t["purchase_revenue"] = buy.groupby("user_id")["revenue"].sum()
    for m in ("opens", "clicks", "conversions", "revenue", "sends"):
        t[m] = outcomes[m] if m in outcomes else 0.0
    t = t.fillna({c: 0.0 for c in ("pre", *METRICS)})
    return t.reset_index()[list(COLUMNS)]


def from_decisions(p: pd.DataFrame, activity: pd.DataFrame, source: str,
                   pre_days: float | None = None) -> LiftData:
    """The per-user table of decisions ``p`` (user_id, sec, sent, holdout, p_holdout, opened,
    clicked, converted, revenue) and ``activity`` events (user_id, sec, event, revenue).

    The server state's reader is :func:`pushrl.serve.holdout.lift_data`.
    """
    p = p[p["holdout"].notna()]
    if not len(p):
        raise DataError(f"{source}: no decision carries a holdout arm; start the server with "
                        "--holdout SHARE (or a scenario's [holdout]) to measure lift")
    start, end = int(p["sec"].min()), int(p["sec"].max())
    g = p.groupby("user_id", sort=False)
    arms = g["holdout"].agg(["min", "max"])
    if (arms["min"] != arms["max"]).any():
        bad = arms.index[arms["min"] != arms["max"]][0]
        raise DataError(f"{source}: user {bad!r} has decisions in both holdout arms (the "
                        "holdout changed mid-experiment); lift needs one arm per user")
    users = pd.DataFrame({"user_id": arms.index.astype(object),
                          "held_out": arms["max"].to_numpy().astype(bool),
                          "p_holdout": g["p_holdout"].first().to_numpy(np.float64)})
    sent = p["sent"].astype(bool)
    o = pd.DataFrame({"user_id": p["user_id"], "sends": sent.astype(float),
                      **{m: p[c].astype(float).fillna(0.0).where(sent, 0.0)
                         for m, c in (("opens", "opened"), ("clicks", "clicked"),
                                      ("conversions", "converted"), ("revenue", "revenue"))}})
    outcomes = o.groupby("user_id", sort=False).sum()
    return LiftData(_table(users, outcomes, activity, start, pre_days),
                    max((end - start) / DAY, 1 / 24), source, start)


def from_log(data: str | Path, *, pre_days: float | None = None) -> LiftData:
    """The per-user table of a pushlog whose ``pushes`` carry ``holdout``/``p_holdout``
    (``pushrl logs export`` of a server that ran a holdout)."""
    from pushrl.data.io import read_tables, to_unix_seconds

    t = read_tables(data)
    p = t["pushes"]
    if "holdout" not in p:
        raise DataError(f"{data}: pushes have no `holdout` column (the arm of each decision); "
                        "export the log of a server that ran --holdout (`pushrl logs export`)")
    q = pd.DataFrame({"user_id": p["user_id"].astype(str), "sec": to_unix_seconds(p["ts"]),
                      "sent": p["sent"].astype(bool),
                      "holdout": p["holdout"].astype("Float64").astype(float),
                      "p_holdout": p.get("p_holdout", pd.Series(np.nan, index=p.index))
                      .astype(float)})
    for c in ("opened", "clicked", "converted", "revenue"):
        q[c] = p[c].astype("Float64").astype(float) if c in p else 0.0
    act = activity_frame(t["activity"])
    return from_decisions(q, act, str(data), pre_days)


def activity_frame(a: pd.DataFrame) -> pd.DataFrame:
    """A log's ``activity`` table as :func:`from_decisions` reads it: ``user_id`` (str),
    ``sec`` (unix seconds), ``event`` (str), ``revenue`` (float, 0 when absent)."""
    from pushrl.data.io import to_unix_seconds

    return pd.DataFrame({"user_id": a["user_id"].astype(str),
                         "sec": to_unix_seconds(a["ts"]) if len(a) else np.zeros(0, np.int64),
                         "event": a["event"].astype(str),
                         "revenue": (a["revenue"].astype(float).fillna(0.0) if "revenue" in a
                                     else 0.0)})


def from_rollout(result: Any, share: float) -> LiftData:
    """The per-user table of a batch rollout run with a holdout
    (:func:`pushrl.envs.rollout.rollout` ``holdout=``; its ``extra`` holds the arms and
    the organic activity). The simulator's organic events carry no event type, so
    ``sessions``/``purchases`` are 0 and ``activity`` counts every organic event."""
    ex = result.extra
    n = result.n_users
    users = pd.DataFrame({
        "user_id": np.arange(n).astype(str).astype(object), "held_out": ex["held_out"],
        "p_holdout": np.full(n, float(share)), "pre": ex["pre_activity"],
        "opens": result.opens, "clicks": result.clicks, "conversions": result.conversions,
        "revenue": result.revenue, "activity": ex["activity"], "sessions": np.zeros(n),
        "purchases": np.zeros(n), "purchase_revenue": np.zeros(n), "sends": result.sends})
    return LiftData(users.astype({m: np.float64 for m in METRICS}), float(result.days),
                    "rollout")


# --------------------------------------------------------------------------- report
def summary_markdown(data: LiftData, lifts: list[MetricLift], mde: float | None = None,
                     *, power: float = 0.8, cuped: bool = True) -> str:
    """A markdown table: one row per metric (arms, lift with CI, CUPED lift, days to MDE)."""
    u = data.users
    head = (f"**{len(u)} users** ({int(u['held_out'].sum())} held out, share "
            f"{u['p_holdout'].iloc[0]:g}) over **{data.days:.1f} days**; 95 % intervals.")
    cols = ["metric", "treated", "held out", "lift", "95% CI", "CUPED lift", "CUPED 95% CI",
            "var. reduction"]
    if mde is not None:
        cols.append(f"days to detect {100 * mde:g} %")
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in lifts:
        row = [r.metric, f"{r.treated:.4g}", f"{r.held_out:.4g}", f"{r.lift:+.4g}",
               f"[{r.low:+.4g}, {r.high:+.4g}]", f"{r.cuped_lift:+.4g}",
               f"[{r.cuped_low:+.4g}, {r.cuped_high:+.4g}]", f"{100 * r.variance_reduction:.0f} %"]
        if mde is not None:
            d = days_to_mde(r, mde, data.days, power=power, cuped=cuped)
            row.append("n/a" if not math.isfinite(d) else f"{d:.1f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_lift(lifts: list[MetricLift]) -> str:
    """Forest plot (base64 PNG) of each metric's relative CUPED lift with its 95 % CI
    (relative to the held-out mean; attributed metrics, whose held-out mean is 0, are
    shown relative to the treated mean)."""
    import matplotlib.pyplot as plt

    from pushrl.compare.report import _png

    rows = [r for r in lifts if (r.held_out or r.treated)]
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.4 * max(1, len(rows))))
    y = np.arange(len(rows))
    base = np.array([abs(r.held_out or r.treated) for r in rows])
    mid = np.array([r.cuped_lift for r in rows]) / base * 100
    lo = np.array([r.cuped_low for r in rows]) / base * 100
    hi = np.array([r.cuped_high for r in rows]) / base * 100
    sig = (lo > 0) | (hi < 0)
    ax.errorbar(mid, y, xerr=np.vstack([mid - lo, hi - mid]), fmt="none", ecolor="k", capsize=3)
    ax.scatter(mid, y, c=["tab:green" if s and m > 0 else "tab:red" if s else "tab:grey"
                          for s, m in zip(sig, mid, strict=True)], zorder=3)
    ax.axvline(0, color="k", lw=0.8, ls="--")
    ax.set_yticks(y)
    ax.set_yticklabels([r.metric + ("*" if r.metric in ATTRIBUTED else "") for r in rows])
    ax.set_xlabel("lift, % of the held-out mean (* attributed: % of the treated mean)")
    return _png(fig)


def write_report(data: LiftData, lifts: list[MetricLift], out: str | Path,
                 mde: float | None = None) -> tuple[Path, Path]:
    """``lift.html`` and ``lift.md`` in ``out`` (the compare report's page layout)."""
    from pushrl.compare.report import write_page

    intro = (f"Live holdout of **{data.source}**: users are held out of the campaign by a "
             "seeded hash of their id, so the difference between the arms is the campaign's "
             "incremental effect per user. CUPED adjusts for each user's organic activity "
             "before the experiment.")
    figs = [("Lift", plot_lift(lifts), "Each dot is a metric's CUPED lift with its 95 % "
             "interval. Green/red: significantly above/below zero; grey: not distinguishable.")]
    return write_page(out, "Incrementality (live holdout)", intro,
                      summary_markdown(data, lifts, mde), figs, stem="lift")
