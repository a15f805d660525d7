"""Paired comparison statistics over simulated users (common random numbers).

Every policy runs on the same simulated users with the same random streams, so a user's
outcome under policy A and under the reference R form a pair. Means use the normal
approximation on per-unit differences; ratio metrics (open rate) use the delta method on the
linearised per-unit contributions. A *unit* is one (seed, user).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

#: name -> (numerator column, denominator column or None, per-day scaling)
METRICS: dict[str, tuple[str, str | None, bool]] = {
    "objective": ("objective", None, False),
    "sends_per_user_day": ("sends", None, True),
    "open_rate": ("opens", "sends", False),
    "clicks_per_user": ("clicks", None, False),
    "conversions_per_user": ("conversions", None, False),
    "revenue_per_user": ("revenue", None, False),
    "unsubscribe_rate": ("unsubscribed", None, False),
    "guardrail_blocks_per_user": ("guardrail_blocks", None, False),
    # volume and incremental outcomes (vs the same users under no push, common random
    # numbers: pushrl.compare.runner); absent columns are skipped
    "sends_per_user_week": ("sends_per_week", None, False),
    "incremental_conversions_per_user": ("incremental_conversions", None, False),
    "incremental_revenue_per_user": ("incremental_revenue", None, False),
    "organic_conversions_per_user": ("organic_conversions", None, False),
    # channels (pushrl compare --channel-policy): send cost paid; per-channel sends are
    # `sends_ch_<name>` columns, metrics `sends_ch_<name>_per_user` (:func:`metric_spec`)
    "channel_cost_per_user": ("channel_cost", None, False),
}


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a two-sided confidence interval."""

    value: float
    lower: float
    upper: float
    se: float
    n: int


def _z(alpha: float) -> float:
    return float(stats.norm.ppf(1 - alpha / 2))


#: Prefix of the per-channel sends columns of a channel comparison.
CHANNEL_SENDS = "sends_ch_"

Metrics = Mapping[str, tuple[str, str | None, bool]]


def metric_spec(metric: str, metrics: Metrics | None = None) -> tuple[str, str | None, bool]:
    """``(numerator column, denominator column or None, per day)`` of ``metric``: a key of
    ``metrics`` (default :data:`METRICS`) or ``sends_ch_<name>_per_user`` (a channel's sends
    per user)."""
    if metrics is None and metric.startswith(CHANNEL_SENDS) and metric.endswith("_per_user"):
        return metric[: -len("_per_user")], None, False
    return (metrics or METRICS)[metric]


def metrics_of(columns: pd.Index, metrics: Metrics | None = None) -> list[str]:
    """The metrics a per-user frame with ``columns`` has (those of ``metrics``, default
    :data:`METRICS`, whose column is present, then, for the default, the per-channel
    sends)."""
    defs = metrics or METRICS
    have = [m for m, v in defs.items() if v[0] in columns]
    if metrics is not None:
        return have
    return have + [f"{c}_per_user" for c in columns if str(c).startswith(CHANNEL_SENDS)]


def _linearised(df: pd.DataFrame, metric: str, days: float,
                metrics: Metrics | None = None) -> tuple[float, np.ndarray]:
    num, den, per_day = metric_spec(metric, metrics)
    a = df[num].to_numpy(float)
    if den is None:
        scale = 1.0 / days if per_day else 1.0
        return float(a.mean() * scale), a * scale
    b = df[den].to_numpy(float)
    mb = b.mean()
    if mb <= 0:
        return float("nan"), np.zeros_like(a)
    r = a.sum() / b.sum()
    return float(r), (a - r * b) / mb + r  # mean of this equals r; variance is the delta method's


def estimate(df: pd.DataFrame, metric: str, *, days: float, alpha: float = 0.05,
             metrics: Metrics | None = None) -> Estimate:
    """Mean (or ratio) of ``metric`` over units with a normal/delta-method CI.

    Args:
        df: One row per unit with the metric's columns.
        metric: A key of ``metrics``.
        days: Simulated days (for per-day metrics).
        alpha: 1 - confidence level.
        metrics: The metric definitions (default :data:`METRICS`).
    """
    val, lin = _linearised(df, metric, days, metrics)
    n = len(lin)
    se = float(lin.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    z = _z(alpha)
    return Estimate(val, val - z * se, val + z * se, se, n)


def paired_difference(df_a: pd.DataFrame, df_ref: pd.DataFrame, metric: str, *, days: float,
                      alpha: float = 0.05, metrics: Metrics | None = None) -> Estimate:
    """Paired difference ``metric(A) - metric(ref)`` over the same units, with a CI.

    Both frames must list the same units in the same order (``seed``, ``user``).
    """
    if len(df_a) != len(df_ref):
        raise ValueError(f"paired comparison needs the same units, got {len(df_a)} vs "
                         f"{len(df_ref)} rows; run both policies on the same users and seeds")
    va, la = _linearised(df_a, metric, days, metrics)
    vr, lr = _linearised(df_ref, metric, days, metrics)
    d = la - lr
    n = len(d)
    se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    z = _z(alpha)
    diff = va - vr
    return Estimate(diff, diff - z * se, diff + z * se, se, n)


def summarize(per_user: pd.DataFrame, *, reference: str, days: float,
              alpha: float = 0.05, metrics: Metrics | None = None
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-policy metrics and paired differences against ``reference``.

    Args:
        per_user: Long frame, one row per (policy, seed, user), with the metric columns.
        reference: Policy every other is compared with.
        days: Simulated days.
        metrics: The metric definitions (default :data:`METRICS`; absent columns skipped).

    Returns:
        ``(summary, paired)``: ``summary`` has one row per (policy, metric) with value and CI;
        ``paired`` one row per (policy, metric) with the difference vs the reference, its CI,
        the relative difference and whether the CI excludes 0.
    """
    if reference not in set(per_user["policy"]):
        raise ValueError(f"reference policy {reference!r} is not among the compared policies "
                         f"({', '.join(map(str, per_user['policy'].unique()))})")
    order = list(dict.fromkeys(per_user["policy"]))
    per_user = per_user.sort_values(["seed", "user"], kind="stable")
    groups = {p: per_user[per_user["policy"] == p].reset_index(drop=True) for p in order}
    rows, prow = [], []
    ref = groups[reference]
    for pol, g in groups.items():
        for m in metrics_of(g.columns, metrics):
            e = estimate(g, m, days=days, alpha=alpha, metrics=metrics)
            rows.append({"policy": pol, "metric": m, "value": e.value, "lower": e.lower,
                         "upper": e.upper, "se": e.se, "n": e.n})
            if pol == reference:
                continue
            d = paired_difference(g, ref, m, days=days, alpha=alpha, metrics=metrics)
            base = estimate(ref, m, days=days, metrics=metrics).value
            prow.append({"policy": pol, "reference": reference, "metric": m, "diff": d.value,
                         "lower": d.lower, "upper": d.upper, "se": d.se, "n": d.n,
                         "relative": d.value / abs(base) if base else float("nan"),
                         "significant": bool(d.lower > 0 or d.upper < 0)})
    return pd.DataFrame(rows), pd.DataFrame(prow)


def segment_table(per_user: pd.DataFrame, by: str, *, days: float) -> pd.DataFrame:
    """Objective, sends/day, open rate and unsubscribe rate per policy and segment ``by``."""
    rows = []
    for (pol, seg), g in per_user.groupby(["policy", by], sort=True, observed=True):
        row = {"policy": pol, by: seg, "units": len(g)}
        for m in ("objective", "sends_per_user_day", "open_rate", "unsubscribe_rate"):
            e = estimate(g, m, days=days)
            row[m], row[f"{m}_se"] = e.value, e.se
        rows.append(row)
    return pd.DataFrame(rows)
