"""OPE reports: a markdown summary and a self-contained HTML page with embedded plots.

:class:`OPEReport` is a plain results structure (estimates with intervals, weight
diagnostics, optionally the importance weights and a gate decision); nothing here knows about
the CLI. Plots are drawn with matplotlib's Agg canvas on standalone ``Figure`` objects (no
pyplot global state) and embedded in the HTML as base64 PNG, so the page needs no other file.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pushrl.ope._validate import FloatArray
from pushrl.ope.diagnostics import WeightDiagnostics
from pushrl.ope.gate import GateResult
from pushrl.ope.intervals import IntervalEstimate


@dataclass
class OPEReport:
    """Everything a report shows.

    Attributes:
        title: Report title.
        estimates: Point estimates with intervals, one per estimator.
        diagnostics: Weight diagnostics of the evaluated policy.
        weights: Importance weights, shape ``(n_rounds,)``, for the histogram.
        gate: Gate decision, if one was taken.
        reference_value: A value to mark on the forest plot (e.g. the logger's on-policy
            value).
        reference_label: Legend label of ``reference_value``.
        metadata: Extra key/value pairs listed under "Run" (dataset, policy, seed...).
    """

    title: str
    estimates: Sequence[IntervalEstimate]
    diagnostics: WeightDiagnostics | None = None
    weights: FloatArray | None = None
    gate: GateResult | None = None
    reference_value: float | None = None
    reference_label: str = "baseline"
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.estimates:
            raise ValueError("`estimates` must not be empty")


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def forest_plot(report: OPEReport) -> bytes:
    """PNG of each estimator's point estimate and confidence interval."""
    est = list(report.estimates)
    fig = Figure(figsize=(6.4, 0.45 * len(est) + 1.2))
    ax = fig.add_subplot()
    y = np.arange(len(est))[::-1]
    values = np.array([e.value for e in est])
    err = np.array([[e.value - e.lower for e in est], [e.upper - e.value for e in est]])
    ax.errorbar(values, y, xerr=np.clip(err, 0, None), fmt="o", color="#1f4e79", capsize=3)
    ax.set_yticks(y, [e.name for e in est])
    if report.reference_value is not None:
        ax.axvline(report.reference_value, color="#c00000", ls="--", label=report.reference_label)
        ax.legend(loc="best", fontsize=8)
    level = 100 * (1 - est[0].alpha)
    ax.set_xlabel(f"estimated policy value ({level:g}% CI, {est[0].method})")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def weight_plot(weights: FloatArray, diagnostics: WeightDiagnostics | None = None) -> bytes:
    """PNG histogram of log10 importance weights with the 50/90/99% quantiles and the max."""
    w = np.asarray(weights, dtype=np.float64)
    positive = w[w > 0]
    fig = Figure(figsize=(6.4, 3.2))
    ax = fig.add_subplot()
    if positive.size:
        ax.hist(np.log10(positive), bins=50, color="#7f9fbf")
        marks = {"q50": 0.5, "q90": 0.9, "q99": 0.99}
        for (label, q), color in zip(marks.items(), ("#2e7d32", "#f9a825", "#c62828"), strict=True):
            ax.axvline(np.log10(np.quantile(positive, q)), color=color, ls="--", label=label)
        ax.axvline(np.log10(positive.max()), color="black", ls=":", label="max")
        ax.legend(fontsize=8)
    zero_share = 1 - positive.size / max(w.size, 1)
    title = f"importance weights ({zero_share:.1%} zero)"
    if diagnostics is not None:
        title += f", ESS {diagnostics.ess:.0f} / {diagnostics.n_rounds}"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("log10 weight")
    ax.set_ylabel("rounds")
    return _png(fig)


def _estimate_rows(report: OPEReport) -> list[list[str]]:
    return [
        [e.name, f"{e.value:.6g}", f"{e.lower:.6g}", f"{e.upper:.6g}", f"{e.upper - e.lower:.3g}"]
        for e in report.estimates
    ]


def _diagnostic_rows(d: WeightDiagnostics) -> list[list[str]]:
    return [
        ["n_rounds", f"{d.n_rounds}"],
        ["ESS (Kish)", f"{d.ess:.1f} ({d.ess_ratio:.2%} of n)"],
        ["weight mean", f"{d.weight_mean:.4g}"],
        ["weight q50 / q90 / q99", f"{d.weight_q50:.4g} / {d.weight_q90:.4g} / {d.weight_q99:.4g}"],
        ["weight max", f"{d.weight_max:.4g}"],
        ["support deficiency", f"{d.support_deficiency:.2%} ({d.n_unsupported_pairs} pairs)"],
    ]


def _gate_lines(g: GateResult) -> list[str]:
    c = g.comparison
    level = 100 * (1 - c.alpha)
    lines = [
        f"**Gate: {'PASS' if g.passed else 'BLOCK'}**",
        f"improvement ({c.estimator_name}) {c.difference:.6g}, {level:g}% CI "
        f"[{c.lower:.6g}, {c.upper:.6g}]; ESS floor {g.ess_floor:.1f}",
    ]
    lines += [f"failed `{r}`: {m}" for r, m in zip(g.failed_rules, g.messages, strict=True)]
    return lines


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def render_markdown(report: OPEReport, image_paths: Mapping[str, str] | None = None) -> str:
    """Markdown summary; ``image_paths`` maps ``"forest"``/``"weights"`` to PNG links."""
    level = 100 * (1 - report.estimates[0].alpha)
    parts = [f"# {report.title}", ""]
    if report.metadata:
        parts += ["## Run", "", *[f"- {k}: {v}" for k, v in report.metadata.items()], ""]
    if report.gate is not None:
        parts += ["## Deployment gate", "", *[f"{line}  " for line in _gate_lines(report.gate)], ""]
    parts += ["## Estimates", ""]
    header = ["estimator", "value", f"{level:g}% lower", f"{level:g}% upper", "width"]
    parts += [_md_table(header, _estimate_rows(report)), ""]
    if image_paths and "forest" in image_paths:
        parts += [f"![estimates]({image_paths['forest']})", ""]
    if report.diagnostics is not None:
        parts += ["## Importance-weight diagnostics", ""]
        parts += [_md_table(["diagnostic", "value"], _diagnostic_rows(report.diagnostics)), ""]
    if image_paths and "weights" in image_paths:
        parts += [f"![weights]({image_paths['weights']})", ""]
    return "\n".join(parts)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:860px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
    "text-align:right}th{background:#f0f0f0}td:first-child{text-align:left}"
    ".pass{color:#2e7d32}.block{color:#c62828}"
)


def render_html(report: OPEReport) -> str:
    """Self-contained HTML page (inline CSS, plots as base64 PNG)."""
    level = 100 * (1 - report.estimates[0].alpha)
    e = html.escape
    parts = [f"<h1>{e(report.title)}</h1>"]
    if report.metadata:
        items = "".join(f"<li>{e(str(k))}: {e(str(v))}</li>" for k, v in report.metadata.items())
        parts.append(f"<h2>Run</h2><ul>{items}</ul>")
    if report.gate is not None:
        cls = "pass" if report.gate.passed else "block"
        lines = [e(line.replace("**", "")) for line in _gate_lines(report.gate)]
        parts.append(f'<h2>Deployment gate</h2><p class="{cls}">' + "<br/>".join(lines) + "</p>")
    header = ["estimator", "value", f"{level:g}% lower", f"{level:g}% upper", "width"]
    parts += ["<h2>Estimates</h2>", _html_table(header, _estimate_rows(report))]
    parts.append(_img(forest_plot(report), "estimates with confidence intervals"))
    if report.diagnostics is not None:
        parts.append("<h2>Importance-weight diagnostics</h2>")
        parts.append(_html_table(["diagnostic", "value"], _diagnostic_rows(report.diagnostics)))
    if report.weights is not None:
        parts.append(_img(weight_plot(report.weights, report.diagnostics), "importance weights"))
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"/><title>{e(report.title)}'
        f"</title><style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n"
    )


def write_report(
    report: OPEReport, out_dir: str | Path, stem: str = "ope_report"
) -> dict[str, Path]:
    """Write ``<stem>.md`` (with PNGs beside it) and a self-contained ``<stem>.html``.

    Args:
        report: What to show.
        out_dir: Directory to write into (created if missing).
        stem: File name stem.

    Returns:
        Paths by kind: ``"markdown"``, ``"html"``, ``"forest"`` and, with weights, ``"weights"``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"forest": out / f"{stem}_forest.png"}
    paths["forest"].write_bytes(forest_plot(report))
    if report.weights is not None:
        paths["weights"] = out / f"{stem}_weights.png"
        paths["weights"].write_bytes(weight_plot(report.weights, report.diagnostics))
    links = {k: p.name for k, p in paths.items()}
    paths["markdown"] = out / f"{stem}.md"
    paths["markdown"].write_text(render_markdown(report, links))
    paths["html"] = out / f"{stem}.html"
    paths["html"].write_text(render_html(report))
    return paths
