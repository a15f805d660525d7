"""Self-contained HTML and markdown reports of a policy comparison.

Plots are rendered with matplotlib (Agg) and embedded as base64 PNG, so the HTML opens from
disk with no network access. The page runs one small script that marks the body with
``data-images-ok`` once every figure has decoded, which the browser test reads.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from pushrl.compare.result import CompareResult

LABELS = {
    "objective": "Objective per user",
    "sends_per_user_day": "Sends per user per day",
    "open_rate": "Open rate (opens / sends)",
    "clicks_per_user": "Clicks per user",
    "conversions_per_user": "Conversions per user",
    "revenue_per_user": "Revenue per user",
    "unsubscribe_rate": "Unsubscribe rate (share of users)",
    "guardrail_blocks_per_user": "Guardrail blocks per user",
    "sends_per_user_week": "Sends per user per week",
    "incremental_conversions_per_user": "Incremental conversions per user (vs no push)",
    "incremental_revenue_per_user": "Incremental revenue per user (vs no push)",
    "organic_conversions_per_user": "Organic conversions per user",
}

#: Trigger metrics (`pushrl compare --triggers`; ``NAME:KIND`` = the same for one kind)
TRIGGER_LABELS = {
    "trigger_recovered_per_user": "Recovered conversions per user (push-attributed)",
    "trigger_incremental_per_user": "Incremental conversions per user (over organic)",
    "trigger_organic_per_user": "Organic conversions per user (no push)",
    "trigger_sends_per_user": "Trigger sends per user",
    "trigger_sends_per_recovered": "Sends per recovered conversion",
    "trigger_incremental_over_organic": "Incremental over organic (ratio)",
    "trigger_unsubscribes_per_user": "Unsubscribes per user (from trigger sends)",
    "trigger_incremental_revenue_per_user": "Incremental revenue per user",
}
LABELS.update(TRIGGER_LABELS)


#: +1 where higher is better, -1 where lower is better, 0 where neither (volume)
BETTER = {"objective": 1, "open_rate": 1, "clicks_per_user": 1, "conversions_per_user": 1,
          "revenue_per_user": 1, "unsubscribe_rate": -1, "guardrail_blocks_per_user": -1,
          "sends_per_user_day": 0, "sends_per_user_week": 0,
          "incremental_conversions_per_user": 1, "incremental_revenue_per_user": 1,
          "organic_conversions_per_user": 0,
          "trigger_recovered_per_user": 1, "trigger_incremental_per_user": 1,
          "trigger_organic_per_user": 0, "trigger_sends_per_user": 0,
          "trigger_sends_per_recovered": -1, "trigger_incremental_over_organic": 1,
          "trigger_unsubscribes_per_user": -1, "trigger_incremental_revenue_per_user": 1}


def _png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _colors(policies: list[str]) -> dict[str, str]:
    cmap = plt.get_cmap("tab10")
    return {p: matplotlib.colors.to_hex(cmap(i % 10)) for i, p in enumerate(policies)}


def _plot_daily(r: CompareResult, column: str, scale: float, ylabel: str, title: str) -> str:
    """One line per policy of a ``r.daily`` column over days."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    col = _colors(r.policies)
    for p in r.policies:
        d = r.daily[r.daily["policy"] == p]
        ax.plot(d["day"], scale * d[column], label=p, color=col[p], lw=2)
    ax.set_xlabel("day")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_cumulative(r: CompareResult) -> str:
    """Cumulative objective per user over days, one line per policy."""
    return _plot_daily(r, "objective", 1.0, "cumulative objective per user",
                       "Cumulative objective over the horizon")


def plot_hourly(r: CompareResult) -> str:
    """Sends by local hour per policy against the population's organic activity curve."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    col = _colors(r.policies)
    for p in r.policies:
        d = r.hourly[r.hourly["policy"] == p].sort_values("local_hour")
        tot = d["sends"].sum()
        if tot > 0:
            ax.plot(d["local_hour"], d["sends"] / tot, marker="o", ms=3, label=p, color=col[p])
    ax2 = ax.twinx()
    ax2.fill_between(range(24), np.asarray(r.activity_by_hour), color="grey", alpha=0.2,
                     step="mid", label="organic activity")
    ax2.set_ylabel("share of organic activity", color="grey")
    ax.set_xlabel("user's local hour")
    ax.set_ylabel("share of a policy's sends")
    ax.set_xticks(range(0, 24, 3))
    ax.set_title("When each policy sends, against when users are active (grey)")
    ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def plot_survival(r: CompareResult) -> str:
    """Share of users still subscribed at the end of each day."""
    return _plot_daily(r, "subscribed", 100.0, "% still subscribed",
                       "Reachability: users still subscribed")


def plot_forest(r: CompareResult, metrics: list[str] | None = None) -> str:
    """Forest plot of paired differences vs the reference with 95% CIs, one panel a metric
    (``metrics``: which; default the timing comparison's)."""
    have = set(r.paired["metric"]) if "metric" in r.paired else set()
    metrics = metrics or [m for m in ("objective", "sends_per_user_week", "open_rate",
                                      "revenue_per_user", "incremental_conversions_per_user",
                                      "unsubscribe_rate")
                          if m in have] or ["objective", "sends_per_user_day", "open_rate",
                                            "revenue_per_user", "unsubscribe_rate"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(13, 0.5 + 0.45 * max(1, len(r.policies))),
                             sharey=True, squeeze=False)
    axes = axes[0]
    others = [p for p in r.policies if p != r.meta.get("reference")]
    for ax, m in zip(axes, metrics, strict=True):
        d = r.paired[r.paired["metric"] == m].set_index("policy").reindex(others)
        y = np.arange(len(others))
        err = np.vstack([d["diff"] - d["lower"], d["upper"] - d["diff"]])
        sign = BETTER.get(m, 0)
        colors = ["tab:grey" if not s else "tab:blue" if sign == 0
                  else "tab:green" if v * sign > 0 else "tab:red"
                  for s, v in zip(d["significant"], d["diff"], strict=True)]
        ax.errorbar(d["diff"], y, xerr=err, fmt="none", ecolor="k", capsize=3)
        ax.scatter(d["diff"], y, c=colors, zorder=3)
        ax.axvline(0, color="k", lw=0.8, ls="--")
        ax.set_title(LABELS[m].split(" (")[0], fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    axes[0].set_yticks(np.arange(len(others)))
    axes[0].set_yticklabels(others, fontsize=8)
    fig.suptitle(f"Difference vs {r.meta.get('reference')} (95% CI, paired)", fontsize=10,
                 y=1.0 + 0.25 / max(1, len(others)))
    return _png(fig)


def plot_segments(r: CompareResult, by: str) -> str:
    """Objective per user by segment ``by`` (bars per policy with ±1.96 SE)."""
    seg = r.segments[by]
    levels = list(dict.fromkeys(seg[by]))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    col = _colors(r.policies)
    w = 0.8 / max(1, len(r.policies))
    x = np.arange(len(levels))
    for i, p in enumerate(r.policies):
        d = seg[seg["policy"] == p].set_index(by).reindex(levels)
        ax.bar(x + i * w, d["objective"], w, yerr=1.96 * d["objective_se"], label=p,
               color=col[p], capsize=2)
    ax.set_xticks(x + w * (len(r.policies) - 1) / 2)
    ax.set_xticklabels([str(v) for v in levels], rotation=20, fontsize=8, ha="right")
    ax.set_ylabel("objective per user")
    ax.set_title(f"Objective by {by}")
    ax.legend(fontsize=7)
    return _png(fig)


def _fmt(v: float, m: str) -> str:
    if not np.isfinite(v):
        return "n/a"
    if m in ("open_rate", "unsubscribe_rate"):
        return f"{100 * v:.2f}%"
    return f"{v:.3f}"


def _rel(v: float) -> str:
    return f"{100 * v:+.1f}%" if np.isfinite(v) else "n/a (reference is 0)"


def summary_markdown(r: CompareResult) -> str:
    """Markdown table: value [95% CI] per policy and metric, and paired differences."""
    metrics = [m for m in LABELS if (r.summary["metric"] == m).any()]
    lines = ["| policy | " + " | ".join(LABELS[m] for m in metrics) + " |",
             "|---" * (len(metrics) + 1) + "|"]
    for p in r.policies:
        cells = []
        for m in metrics:
            s = r.summary[(r.summary["policy"] == p) & (r.summary["metric"] == m)].iloc[0]
            cells.append(f"{_fmt(s['value'], m)} [{_fmt(s['lower'], m)}, {_fmt(s['upper'], m)}]")
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    lines += ["", f"Paired differences vs **{r.meta.get('reference')}** (95% CI):", "",
              "| policy | metric | difference | 95% CI | relative |", "|---|---|---|---|---|"]
    for _, d in r.paired.iterrows():
        if d["metric"] not in ("objective", "sends_per_user_day", "sends_per_user_week",
                               "open_rate", "revenue_per_user", "incremental_conversions_per_user",
                               "incremental_revenue_per_user", "unsubscribe_rate"):
            continue
        lines.append(f"| {d['policy']} | {d['metric']} | {_fmt(d['diff'], d['metric'])} | "
                     f"[{_fmt(d['lower'], d['metric'])}, {_fmt(d['upper'], d['metric'])}] | "
                     f"{_rel(d['relative'])} |")
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 6px}
th{background:#f3f3f3}img{max-width:100%}.note{color:#555;font-size:14px}
h2{border-bottom:1px solid #ddd;padding-bottom:4px}"""


def _md_table_to_html(md: str) -> str:
    out, rows = [], [ln for ln in md.splitlines()]
    in_table = False
    for ln in rows:
        if ln.startswith("|") and set(ln.replace("|", "").strip()) <= {"-"}:
            continue
        if ln.startswith("|"):
            cells = [html.escape(c.strip()).replace("**", "") for c in ln.strip("|").split("|")]
            tag = "th" if not in_table else "td"
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
        else:
            if in_table:
                out.append("</table>")
                in_table = False
            if ln.strip():
                out.append(f"<p>{html.escape(ln).replace('**', '')}</p>")
    if in_table:
        out.append("</table>")
    return "\n".join(out)


def write_report(r: CompareResult, out: str | Path) -> tuple[Path, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` into ``out`` (a delay-policy
    comparison, ``meta["mode"] == "triggers"``, is written by
    :func:`pushrl.compare.trigger_report.write_trigger_report`)."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    m = r.meta
    if m.get("mode") == "triggers":
        raise ValueError("a delay-policy comparison: write it with "
                         "pushrl.compare.trigger_report.write_trigger_report")
    figs = [
        ("Cumulative objective", plot_cumulative(r),
         "Average objective per simulated user, accumulated day by day. Higher is better."),
        ("Paired differences", plot_forest(r),
         "Each dot is a policy's difference from the reference on the same simulated users; "
         "bars are 95% confidence intervals. Green: significantly better; red: significantly "
         "worse (for unsubscribes, lower is better); blue: a significant change in volume; "
         "grey: not distinguishable from the reference."),
        ("When pushes go out", plot_hourly(r),
         "Share of each policy's sends per local hour; grey is when users are active."),
        ("Reachability", plot_survival(r),
         "Users who unsubscribe can no longer be reached; flatter is better."),
        ("By engagement", plot_segments(r, "engagement"), "Objective per engagement tercile."),
        ("By time zone", plot_segments(r, "timezone"), "Objective per user's time zone."),
    ]
    md_summary = summary_markdown(r)
    intro = (f"Scenario **{m.get('scenario')}**: {m.get('users')} simulated users x "
             f"{m.get('days')} days x {m.get('seeds')} seed(s), every policy on the same users "
             "with the same random numbers, so differences are paired. The objective is the "
             "scenario's reward: weighted opens, clicks and revenue minus a cost per send and a "
             "penalty per unsubscribe. Incremental conversions and revenue are measured "
             "against the same users under no push with the same random numbers (they differ "
             "from the attributed ones when users also buy on their own: scenario "
             "`organic_purchases`); volume is sends per user per week.")
    page, md = render_page(f"Policy comparison: {m.get('scenario')}",
                           f"pushrl compare: {m.get('scenario')}", intro, md_summary, figs,
                           png_dir=d)
    hp, mp = d / "report.html", d / "report.md"
    hp.write_text(page)
    mp.write_text(md)
    return hp, mp


def render_page(heading: str, title: str, intro: str, summary_md: str,
                figs: list[tuple[str, str, str]], *, png_dir: Path | None = None
                ) -> tuple[str, str]:
    """A self-contained HTML page and its markdown twin (every report of pushrl).

    Args:
        heading: The page's ``h1``; title: the browser tab's title.
        intro: A paragraph (markdown ``**bold**`` is dropped in HTML).
        summary_md: Markdown tables and lines, rendered under "Summary".
        figs: ``(title, base64 PNG, note)`` per figure.
        png_dir: Also write each figure as ``<title>.png`` there (the markdown links them).

    Returns:
        ``(html, markdown)``. The page marks its body with ``data-images-ok`` /
        ``data-images-total`` once loaded (the browser tests read them).
    """
    md = [f"# {heading}", "", intro, "", summary_md, ""]
    body = [f"<h1>{html.escape(heading)}</h1>",
            f"<p class='note'>{html.escape(intro).replace('**', '')}</p>",
            "<h2>Summary</h2>", _md_table_to_html(summary_md)]
    for name, png, note in figs:
        body += [f"<h2>{html.escape(name)}</h2>", f"<p class='note'>{html.escape(note)}</p>",
                 f"<img alt='{html.escape(name)}' src='data:image/png;base64,{png}'>"]
        md += [f"## {name}", "", note, ""]
        fname = f"{name.lower().replace(' ', '_')}.png"
        if png_dir is not None:
            (png_dir / fname).write_bytes(base64.b64decode(png))
            md += [f"![{name}]({fname})", ""]
    script = ("<script>window.addEventListener('load',()=>{const i=[...document.images];"
              "document.body.dataset.imagesOk=i.filter(x=>x.complete&&x.naturalWidth>0).length;"
              "document.body.dataset.imagesTotal=i.length;});</script>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>"
            f"{html.escape(title)}</title><style>{_CSS}</style></head>"
            f"<body>{''.join(body)}{script}</body></html>")
    return page, "\n".join(md)


def write_page(out: str | Path, title: str, intro: str, md_summary: str,
               figs: list[tuple[str, str, str]], stem: str = "report") -> tuple[Path, Path]:
    """Write ``STEM.html`` (self-contained) and ``STEM.md`` into ``out`` with
    :func:`render_page` (figures also as PNG files): the pages of ``pushrl lift``."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    page, md = render_page(title, f"pushrl: {title}", intro, md_summary, figs, png_dir=d)
    hp, mp = d / f"{stem}.html", d / f"{stem}.md"
    hp.write_text(page)
    mp.write_text(md)
    return hp, mp

