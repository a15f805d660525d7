"""The report page of a delay-policy comparison (`pushrl compare --triggers`): the trigger
metrics with paired 95 % CIs, overall and by trigger kind, the forest plot of the paired
differences and the delay distribution of each policy. Laid out by the one page renderer
(:func:`pushrl.compare.report.render_page`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from pushrl.compare.report import _colors, _png, plot_forest, render_page
from pushrl.compare.result import CompareResult

#: Columns of the summary table: (metric, header, format).
_TABLE = (("trigger_recovered_per_user", "recovered / user", "{:.4f}"),
          ("trigger_incremental_per_user", "incremental / user", "{:.4f}"),
          ("trigger_organic_per_user", "organic / user", "{:.4f}"),
          ("trigger_sends_per_user", "sends / user", "{:.3f}"),
          ("trigger_sends_per_recovered", "sends / recovered", "{:.2f}"),
          ("trigger_incremental_over_organic", "incremental / organic", "{:.3f}"),
          ("trigger_unsubscribes_per_user", "unsubs / user", "{:.5f}"),
          ("trigger_incremental_revenue_per_user", "incr. revenue / user", "{:.3f}"))
_PAIRED = ("trigger_recovered_per_user", "trigger_incremental_per_user",
           "trigger_sends_per_user", "trigger_sends_per_recovered",
           "trigger_unsubscribes_per_user", "trigger_incremental_revenue_per_user")


def _cell(r: CompareResult, pol: str, m: str, fmt: str) -> str | None:
    s = r.summary[(r.summary["policy"] == pol) & (r.summary["metric"] == m)]
    if not len(s):
        return None
    x = s.iloc[0]
    if not np.isfinite(x["value"]):
        return "n/a"
    return f"{fmt.format(x['value'])} [{fmt.format(x['lower'])}, {fmt.format(x['upper'])}]"


def _paired_rows(r: CompareResult, metrics: tuple[str, ...], sfx: str = "") -> list[str]:
    rows = []
    for _, d in r.paired.iterrows():
        base = d["metric"][:-len(sfx)] if sfx and d["metric"].endswith(sfx) else d["metric"]
        if base not in metrics or (sfx and not d["metric"].endswith(sfx)) or \
                (not sfx and ":" in d["metric"]):
            continue
        rel = f"{100 * d['relative']:+.1f}%" if np.isfinite(d["relative"]) else "n/a"
        rows.append(f"| {d['policy']} | {d['metric']} | {d['diff']:+.5f} | "
                    f"[{d['lower']:+.5f}, {d['upper']:+.5f}] | {rel} |")
    return rows


def trigger_markdown(r: CompareResult) -> str:
    """The summary tables: metrics per policy [95 % CI], paired differences vs the
    reference, and by trigger kind."""
    have = set(r.summary["metric"])
    cols = [c for c in _TABLE if c[0] in have]
    lines = ["| policy | " + " | ".join(h for _, h, _ in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for p in r.policies:
        lines.append(f"| {p} | " + " | ".join(_cell(r, p, m, f) or "" for m, _, f in cols)
                     + " |")
    ref = r.meta.get("reference")
    head = ["| policy | metric | difference | 95% CI | relative |", "|---|---|---|---|---|"]
    lines += ["", f"Paired differences vs **{ref}** (same triggers and users; 95% CI over "
              "users):", "", *head, *_paired_rows(r, _PAIRED)]
    for kind in r.meta.get("kinds", []):
        sfx = f":{kind}"
        n = r.delays[(r.delays["kind"] == kind)]["triggers"].iloc[0] \
            if r.delays is not None and (r.delays["kind"] == kind).any() else 0
        lines += ["", f"**{kind}** ({n} triggers):", "",
                  "| policy | recovered / user | incremental / user | sends / recovered |",
                  "|---|---|---|---|"]
        for p in r.policies:
            lines.append(f"| {p} | " + " | ".join(
                _cell(r, p, m + sfx, f) or "" for m, f in (
                    ("trigger_recovered_per_user", "{:.4f}"),
                    ("trigger_incremental_per_user", "{:.4f}"),
                    ("trigger_sends_per_recovered", "{:.2f}"))) + " |")
        rows = _paired_rows(r, ("trigger_recovered_per_user", "trigger_incremental_per_user",
                                "trigger_sends_per_recovered"), sfx)
        if rows:
            lines += ["", *head, *rows]
    return "\n".join([*lines, *_holdout_rows(r)])


def _holdout_rows(r: CompareResult) -> list[str]:
    """The per-kind holdout lift table (``meta["holdout_lift"]``; none without holdouts)."""
    hl = r.meta.get("holdout_lift") or []
    if not hl:
        return []
    out = ["", "Per-kind holdouts (the users `pushrl serve --trigger-holdout` holds out with "
           "the same salt; their triggers of the kind are never sent): the lift a holdout "
           "would measure, per user with a trigger of the kind (95% Welch CI), and the true "
           "incremental conversions per treated user:", "",
           "| policy | kind | share | users (held out) | conversions lift [95% CI] | "
           "sends / treated user | true incremental / treated user |",
           "|---|---|---|---|---|---|---|"]
    for h in hl:
        m = {x["metric"]: x for x in h.get("metrics", [])}
        c, sd = m.get("conversions"), m.get("sends")
        lift = f"{c['lift']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}]" if c else "n/a"
        sends = f"{sd['treated']:.3f}" if sd else "n/a"
        out.append(f"| {h['policy']} | {h['kind']} | {100 * h['share']:g} % | {h['users']} "
                   f"({h['held_out']}) | {lift} | {sends} | "
                   f"{h['true_incremental_per_treated_user']:+.4f} |")
    return out


def plot_delays(r: CompareResult) -> str:
    """The delay distribution: per policy, the share of triggers given each arm (stacked),
    one panel for all triggers and one per kind."""
    assert r.delays is not None
    dl = r.delays
    panels = ["all", *r.meta.get("kinds", [])]
    arms = list(dict.fromkeys(dl["arm"]))
    cmap = plt.get_cmap("viridis")
    colors = {a: ("lightgrey" if a == "drop" else cmap(i / max(1, len(arms) - 2)))
              for i, a in enumerate(arms)}
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 1.0 + 0.32 * len(r.policies)
                                                      * len(panels)), squeeze=False)
    for ax, kind in zip(axes[:, 0], panels, strict=True):
        left = np.zeros(len(r.policies))
        for a in arms:
            share = np.array([float(dl[(dl["policy"] == p) & (dl["kind"] == kind)
                                       & (dl["arm"] == a)]["share"].sum())
                              for p in r.policies])
            ax.barh(r.policies, share, left=left, color=colors[a],
                    label="drop" if a == "drop" else f"{a} h")
            left += share
        ax.set_xlim(0, 1)
        ax.set_title(f"{kind} triggers" if kind != "all" else "all triggers", fontsize=9)
        ax.tick_params(labelsize=8)
    axes[-1, 0].set_xlabel("share of triggers")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, ncol=len(arms), fontsize=7, loc="lower center",
               bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _png(fig)


def plot_by_kind(r: CompareResult) -> str:
    """Incremental conversions per user by trigger kind (bars per policy, 95 % CI)."""
    kinds = r.meta.get("kinds", [])
    fig, ax = plt.subplots(figsize=(8, 3.6))
    col = _colors(r.policies)
    w = 0.8 / max(1, len(r.policies))
    x = np.arange(len(kinds))
    s = r.summary.set_index(["policy", "metric"])
    for i, p in enumerate(r.policies):
        rows = [s.loc[(p, f"trigger_incremental_per_user:{k}")] for k in kinds]
        v = np.array([float(q["value"]) for q in rows])
        err = np.array([float(q["value"] - q["lower"]) for q in rows])
        ax.bar(x + i * w, v, w, yerr=err, label=p, color=col[p], capsize=2)
    ax.set_xticks(x + w * (len(r.policies) - 1) / 2)
    ax.set_xticklabels(kinds, fontsize=8)
    ax.set_ylabel("incremental conversions per user")
    ax.set_title("Incremental conversions by trigger kind")
    ax.legend(fontsize=7)
    return _png(fig)


def trigger_page(r: CompareResult, png_dir: Path | None = None) -> tuple[str, str]:
    """``(html, markdown)`` of a delay-policy comparison."""
    m = r.meta
    src = ("the trigger world's exact per-trigger truth" if m.get("source") == "truth" else
           "a trigger simulator fitted from this log (per kind x arm: organic return, "
           "response and sends per delay)")
    intro = (f"Trigger log **{m.get('scenario_ref')}**: {m.get('triggers')} triggers of "
             f"{m.get('users')} users; every delay policy decides on the same triggers (the "
             "one delay context) and is valued with the expected outcomes of each arm from "
             f"{src}, so differences are paired per user. Recovered conversions are "
             "push-attributed; incremental conversions are over what users would have "
             "bought anyway (organic); sends per recovered conversion and incremental over "
             "organic are ratios of sums (delta-method CIs).")
    if m.get("unfitted_kinds"):
        intro += (f" Kinds left out (no dropped trigger in the log: organic rate unknown): "
                  f"{', '.join(m['unfitted_kinds'])}.")
    forest = [k for k in ("trigger_recovered_per_user", "trigger_incremental_per_user",
                          "trigger_sends_per_user", "trigger_sends_per_recovered",
                          "trigger_unsubscribes_per_user") if (r.paired["metric"] == k).any()] \
        if len(r.paired) else []
    figs = [("Delay distribution", plot_delays(r),
             "Share of each policy's triggers sent after each delay (drop = never sent), "
             "over all triggers and per trigger kind."),
            ("By trigger kind", plot_by_kind(r),
             "Incremental conversions per user by trigger kind; bars are 95% CIs.")]
    if forest:
        figs.insert(0, ("Paired differences", plot_forest(r, forest),
                        "Each dot is a policy's difference from the reference on the same "
                        "triggers; bars are 95% CIs over users. Green: significantly better; "
                        "red: significantly worse; blue: a significant change in volume."))
    return render_page(f"Delay policy comparison: {m.get('scenario')}",
                       f"pushrl compare --triggers: {m.get('scenario')}", intro,
                       trigger_markdown(r), figs, png_dir=png_dir)


def write_trigger_report(r: CompareResult, out: str | Path) -> tuple[Path, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` (figures also as PNG files)
    of a delay-policy comparison into ``out``."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    page, md = trigger_page(r, d)
    hp, mp = d / "report.html", d / "report.md"
    hp.write_text(page)
    mp.write_text(md)
    return hp, mp
