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
    r = subprocess.run([sys.executable, "-m", "pushrl.cli.main", "quickstart", "--out",
                        str(tmp_path), "--users", "300", "--days", "7", "--ppo-timesteps",
                        "4096", "--compare-users", "200", "--json"], capture_output=True,
                       text=True, cwd=ROOT, timeout=1800, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(r.stdout)
    assert Path(d["report_html"]).exists()
    assert (tmp_path / "policies" / "vw-bandit").is_dir()
    assert (tmp_path / "policies" / "ppo-timing").is_dir()
    assert d["decision"]["policy"] and 0 < d["decision"]["pscore"] <= 1
    assert d["evaluate_bandit"]["_exit"] in (0, 1) and d["evaluate_timing"]["_exit"] in (0, 1)
