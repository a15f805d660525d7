"""The user-profile report page (``pushrl profiles ... --report PATH.html``).

Drawn with the comparison report's machinery (:func:`pushrl.compare.report.render_page`:
matplotlib Agg figures embedded as base64 PNG, one self-contained page): where users are
active (peak-hour heat map), the RFM segments' sizes and value, and the churn model's
calibration.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pushrl.compare.report import _png, render_page
from pushrl.data.profiles import SEGMENTS, ProfileResult


def plot_peak_hours(r: ProfileResult) -> str:
    """Share of users whose activity peaks at each local hour, weekdays and weekend, above
    the population's mean activity share per hour."""
    t = r.table
    n = max(len(t), 1)
    grid = np.stack([np.bincount(t["peak_hour_weekday"], minlength=24)[:24] / n,
                     np.bincount(t["peak_hour_weekend"], minlength=24)[:24] / n])
    fig, axes = plt.subplots(2, 1, figsize=(8, 3.8), sharex=True,
                             gridspec_kw={"height_ratios": [2, 1.2]})
    im = axes[0].imshow(grid, aspect="auto", cmap="viridis")
    axes[0].set_yticks([0, 1], ["weekday", "weekend"])
    axes[0].set_title("Users by peak local hour")
    fig.colorbar(im, ax=axes[0], label="share of users", fraction=0.03)
    mean = r.how.mean(axis=0) if len(r.how) else np.zeros((2, 24))
    axes[1].plot(np.arange(24), mean[0], label="weekday", lw=2)
    axes[1].plot(np.arange(24), mean[1], label="weekend", lw=2)
    axes[1].set_xlabel("local hour")
    axes[1].set_ylabel("activity share")
    axes[1].legend(fontsize=8)
    axes[1].grid(alpha=0.3)
    axes[1].set_xticks(range(0, 24, 2))
    return _png(fig)


def segment_table(t: pd.DataFrame) -> pd.DataFrame:
    """Per RFM segment: users, share, mean monetary, mean churn risk, mean engagement."""
    g = t.groupby("rfm_segment", observed=True)
    out = pd.DataFrame({"users": g.size(), "monetary_mean": g["monetary"].mean(),
                        "churn_risk_mean": g["churn_risk"].mean(),
                        "engagement_mean": g["engagement_score"].mean()})
    out = out.reindex([s for s in SEGMENTS if s in out.index])
    out.insert(1, "share", out["users"] / max(len(t), 1))
    return out


def plot_segments(t: pd.DataFrame) -> str:
    """Users and mean value (monetary) per RFM segment."""
    s = segment_table(t)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    axes[0].barh(s.index, s["users"], color="#4c72b0")
    axes[0].set_title("Users per segment")
    axes[0].invert_yaxis()
    axes[1].barh(s.index, s["monetary_mean"], color="#dd8452")
    axes[1].set_title("Mean revenue per user")
    axes[1].invert_yaxis()
    axes[1].set_yticklabels([])
    for ax in axes:
        ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def plot_calibration(r: ProfileResult) -> str:
    """Reliability diagram of the churn model's validation predictions and the distribution
    of churn risk at the profile time."""
    rel = r.model.validation.get("reliability", [])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    ax = axes[0]
    if rel:
        mp = [b["mean_predicted"] for b in rel]
        ob = [b["observed"] for b in rel]
        hi = max(max(mp), max(ob)) * 1.1 + 1e-3
        ax.plot([0, hi], [0, hi], color="grey", ls="--", lw=1, label="perfect")
        ax.plot(mp, ob, "o-", lw=2, label="churn model")
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, r.model.validation.get("error", "no churn model"), ha="center",
                va="center", wrap=True, fontsize=8, transform=ax.transAxes)
    ax.set_xlabel("predicted P(no activity in 14 days)")
    ax.set_ylabel("observed share")
    ax.set_title("Churn-risk calibration")
    ax.grid(alpha=0.3)
    risk = r.table["churn_risk"].dropna()
    axes[1].hist(risk, bins=30, color="#55a868")
    axes[1].set_xlabel("churn risk at as-of")
    axes[1].set_ylabel("users")
    axes[1].set_title("Churn risk now")
    axes[1].grid(alpha=0.3)
    return _png(fig)


def _fmt(v: object) -> str:
    if isinstance(v, float | np.floating):
        return "n/a" if np.isnan(v) else f"{v:.3f}"
    return str(v)


def summary_markdown(r: ProfileResult) -> str:
    """Segment table and the churn model's validation figures, as markdown."""
    s = segment_table(r.table)
    lines = ["| segment | users | share | mean revenue | mean churn risk | mean engagement |",
             "|---|---|---|---|---|---|"]
    for seg, row in s.iterrows():
        lines.append(f"| {seg} | {int(row['users'])} | {row['share']:.1%} | "
                     f"{_fmt(row['monetary_mean'])} | {_fmt(row['churn_risk_mean'])} | "
                     f"{_fmt(row['engagement_mean'])} |")
    v = r.model.validation
    lines.append("")
    if "brier" in v:
        w = r.model.window_days
        look = f", visits over the last {w} days" if w else ""
        lines.append(f"Churn model ({v.get('method')}, features at {v.get('fitted_at_utc')}"
                     f"{look}): Brier {v['brier']:.4f}, AUC {_fmt(v['auc'])}, calibration error "
                     f"(ECE, 10 equal-count bins) {v['ece']:.4f}, base rate "
                     f"{v['base_rate']:.3f}, {v['n']} users.")
    else:
        lines.append(f"Churn model: {v.get('error', 'not fitted')}.")
    return "\n".join(lines)


def write_profile_report(r: ProfileResult, path: str | Path) -> Path:
    """Write the self-contained HTML page to ``path`` (its directory is created)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    as_of = pd.Timestamp(r.as_of, unit="s", tz="UTC")
    figs = [
        ("Peak hours", plot_peak_hours(r),
         "Top: share of users whose organic activity peaks at each local hour (weekdays, "
         "weekend). Bottom: the mean activity share per local hour over users."),
        ("Segments", plot_segments(r.table),
         "RFM segments from purchases (recency, frequency, monetary): how many users, and "
         "their mean revenue so far."),
        ("Churn-risk calibration", plot_calibration(r),
         "Left: the churn model's validation predictions against what happened (points on "
         "the diagonal are calibrated). Right: every user's churn risk at the profile time."),
    ]
    intro = (f"Profiles of **{len(r.table)}** users as of **{as_of}** (events before that "
             "hour only), from pushrl's feature pipeline. Churn risk is the probability of no "
             "activity in the next 14 days.")
    page, _ = render_page("User profiles", "pushrl profiles", intro, summary_markdown(r), figs)
    p.write_text(page)
    return p
