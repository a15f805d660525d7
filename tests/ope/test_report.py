"""Reports: markdown tables and a self-contained HTML page with embedded PNG plots."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pushrl.ope import ESTIMATORS, estimate_intervals
from pushrl.ope.diagnostics import weight_diagnostics
from pushrl.ope.gate import DeploymentGate
from pushrl.ope.report import OPEReport, render_html, render_markdown, write_report


@pytest.fixture(scope="module")
def report(synthetic_bandit: Any) -> OPEReport:
    b = synthetic_bandit
    z = np.exp(b.q / 0.2)
    policy = z / z.sum(axis=1, keepdims=True)
    args = {
        "reward": b.reward,
        "action": b.action,
        "pscore": b.pscore,
        "action_dist": b.action_dist(policy),
        "estimated_rewards_by_reg_model": b.estimated_rewards(0.05),
    }
    names = ("dm", "ipw", "snipw", "dr", "sndr", "switch-dr", "dr-os")
    ests = estimate_intervals(
        [ESTIMATORS[n]() for n in names], **args, n_bootstrap_samples=200, random_state=0
    )
    gate = DeploymentGate(n_bootstrap_samples=200).evaluate(
        b.reward,
        b.action,
        b.pscore,
        args["action_dist"],
        estimated_rewards_by_reg_model=args["estimated_rewards_by_reg_model"],
        random_state=0,
    )
    diag = weight_diagnostics(b.action, b.pscore, args["action_dist"])
    weights = policy[b.context, b.action] / b.pscore
    return OPEReport(
        title="softmax(q / 0.2) vs logger <& friends>",
        estimates=list(ests.values()),
        diagnostics=diag,
        weights=weights,
        gate=gate,
        reference_value=float(b.reward.mean()),
        reference_label="logger (on-policy)",
        metadata={"dataset": "synthetic", "seed": 0},
    )


def test_markdown_lists_every_estimator_and_diagnostic(report: OPEReport) -> None:
    md = render_markdown(report)
    for est in report.estimates:
        assert f"| {est.name} | {est.value:.6g} |" in md
    assert "ESS (Kish)" in md and "support deficiency" in md
    assert "**Gate: PASS**" in md


def test_html_is_self_contained(report: OPEReport) -> None:
    page = render_html(report)
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 2  # forest plot and weight histogram
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "href=" not in page and "<script" not in page and "<link" not in page
    assert "&lt;&amp; friends&gt;" in page  # the title is escaped


def test_write_report_creates_files(report: OPEReport, tmp_path: Path) -> None:
    paths = write_report(report, tmp_path / "out", stem="r")
    assert {p.name for p in paths.values()} == {"r.md", "r.html", "r_forest.png", "r_weights.png"}
    assert "![estimates](r_forest.png)" in paths["markdown"].read_text()


def test_report_needs_estimates() -> None:
    with pytest.raises(ValueError, match="`estimates` must not be empty"):
        OPEReport(title="x", estimates=[])
