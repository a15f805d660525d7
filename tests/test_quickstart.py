"""The README's main command, end to end at a small scale (slow: trains VW and PPO)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_runs_the_whole_loop(tmp_path: Path) -> None:
    # The quickstart's own data size (2000 users x 28 days: less logged data leaves the
    # bandit's lower bound below zero), a toy PPO run and a small comparison.
    r = subprocess.run([sys.executable, "-m", "pushrl.cli.main", "quickstart", "--out",
                        str(tmp_path), "--ppo-timesteps", "4096", "--compare-users", "200",
                        "--json"], capture_output=True,
                       text=True, cwd=ROOT, timeout=1800, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(r.stdout)
    assert Path(d["report_html"]).exists()
    assert (tmp_path / "policies" / "vw-bandit").is_dir()
    assert (tmp_path / "policies" / "ppo-toy").is_dir()
    # every candidate went through the gate; only what passed was promoted
    assert set(d["gates"]) == {"vw-bandit", "ppo-toy", "ppo-timing@v2"}
    assert d["gates"]["vw-bandit"], "the VW bandit should pass the gate on the quickstart data"
    timing = next((n for n in ("ppo-toy", "ppo-timing@v2") if d["gates"][n]), None)
    assert d["promoted"] == ["vw-bandit", *([timing] if timing else [])]
    # the served decision is a send chosen by the promoted policies
    dec = d["decision"]
    assert dec["send"] and 0 < dec["pscore"] <= 1
    assert dec["item_policy"].startswith("vw-bandit@"), dec
    if timing is not None:
        assert dec["policy"].startswith(timing.split("@")[0] + "@"), dec
    # the console ends with the headline: objective vs the best heuristic with a 95% CI,
    # gate verdicts, then the decision with its timing and item policies
    tail = r.stderr.strip().splitlines()[-6:]
    text = "\n".join(tail)
    assert "best heuristic:" in text
    assert "ppo-toy (toy run, 4,096 steps)" in text and "(95% CI)" in text
    assert "ppo-timing@v2 (shipped agent, trained 3M steps)" in text
    assert "vw-bandit (item policy): gate PASS" in text
    assert tail[-1].startswith("decision for quickstart-user") and "item policy=vw-bandit@" \
        in tail[-1]
