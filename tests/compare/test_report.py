"""The comparison report renders in a real headless browser, and its statistics are right."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.compare.report import write_report
from pushrl.compare.result import CompareResult
from pushrl.compare.stats import estimate, paired_difference

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-quic"]


def test_report_files(tmp_path: Path, synthetic_result: CompareResult) -> None:
    html_path, md_path = write_report(synthetic_result, tmp_path)
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") == 6
    assert "http://" not in page and "https://" not in page  # self-contained
    md = md_path.read_text()
    assert "Paired differences vs **never-send**" in md
    assert len(list(tmp_path.glob("*.png"))) == 6


@pytest.mark.browser
def test_report_renders_in_headless_chromium(tmp_path: Path,
                                             synthetic_result: CompareResult) -> None:
    if CHROMIUM is None:
        pytest.skip("SKIPPED LOUDLY: chromium is not installed (apt-get install chromium "
                    "chromium-driver); the report was NOT checked in a browser")
    html_path, _ = write_report(synthetic_result, tmp_path / "r")
    prof = tmp_path / "profile"
    url = html_path.resolve().as_uri()
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={prof}", "--virtual-time-budget=5000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'data-images-ok="(\d+)" data-images-total="(\d+)"', dom.stdout)
    assert m is not None, "the page's load script did not run"
    assert m.group(1) == m.group(2) == "6"
    shot = tmp_path / "report.png"
    res = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={prof}2", "--window-size=1200,2400",
                          f"--screenshot={shot}", url], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and shot.exists() and shot.stat().st_size > 20_000


def test_paired_ci_matches_unpaired_logic() -> None:
    """The paired SE equals sd(differences)/sqrt(n), and pairing shrinks it vs independent."""
    rng = np.random.default_rng(3)
    n = 4000
    base = rng.normal(0, 3, n)
    a = pd.DataFrame({"objective": base + 0.1 + rng.normal(0, 0.5, n)})
    r = pd.DataFrame({"objective": base + rng.normal(0, 0.5, n)})
    d = paired_difference(a, r, "objective", days=1)
    diff = a["objective"] - r["objective"]
    assert d.se == pytest.approx(diff.std(ddof=1) / np.sqrt(n), rel=1e-12)
    indep = np.hypot(estimate(a, "objective", days=1).se, estimate(r, "objective", days=1).se)
    assert d.se < indep / 3
    # the true difference 0.1 lies within 4 SE of the estimate
    assert abs(d.value - 0.1) < 4 * d.se


def test_ratio_metric_delta_method_coverage() -> None:
    """Open-rate CIs from the delta method cover the true rate ~95% of the time."""
    rng = np.random.default_rng(11)
    hits, reps = 0, 300
    for _ in range(reps):
        sends = rng.poisson(5, 500)
        opens = rng.binomial(sends, 0.12)
        e = estimate(pd.DataFrame({"opens": opens, "sends": sends}), "open_rate", days=1)
        hits += e.lower <= 0.12 <= e.upper
    # binomial SE of the coverage with 300 reps is ~1.3 points: accept 95% +- 4 SE
    assert abs(hits / reps - 0.95) < 4 * np.sqrt(0.95 * 0.05 / reps)
