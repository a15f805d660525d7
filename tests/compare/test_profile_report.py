"""The user-profile report page: three embedded figures, self-contained, renders in a real
headless browser (as the comparison report's test)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from pushrl.compare.profile_report import segment_table, write_profile_report
from pushrl.data.profiles import ProfileResult, build_profiles
from pushrl.data.synth import SynthConfig, WorldParams, generate
from tests.compare.test_report import CHROMIUM, FLAGS


@pytest.fixture(scope="module")
def result() -> ProfileResult:
    ds, *_ = generate(SynthConfig(users=150, days=30, seed=3, slots_per_day=4,
                                  params=WorldParams(sessions_per_day_median=0.2)))
    return build_profiles(ds)


def test_profile_report_page(tmp_path: Path, result: ProfileResult) -> None:
    page = write_profile_report(result, tmp_path / "p" / "profiles.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "http://" not in page and "https://" not in page
    for title in ("Peak hours", "Segments", "Churn-risk calibration", "Brier"):
        assert title in page
    seg = segment_table(result.table)
    assert seg["users"].sum() == len(result.table)
    assert seg["share"].sum() == pytest.approx(1.0)
    for name in seg.index:
        assert f"<td>{name}</td>" in page


@pytest.mark.browser
def test_profile_report_renders_in_headless_chromium(tmp_path: Path,
                                                     result: ProfileResult) -> None:
    if CHROMIUM is None:
        pytest.skip("SKIPPED LOUDLY: chromium is not installed (apt-get install chromium "
                    "chromium-driver); the report was NOT checked in a browser")
    url = write_profile_report(result, tmp_path / "profiles.html").resolve().as_uri()
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'prof'}",
                          "--virtual-time-budget=5000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'data-images-ok="(\d+)" data-images-total="(\d+)"', dom.stdout)
    assert m is not None, "the page's load script did not run"
    assert m.group(1) == m.group(2) == "3"
