"""The CLI: one-line errors without tracebacks, JSON output, stubs exit non-zero."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pushrl.cli.main", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300, check=False)


def test_validate_json_on_shipped_obd() -> None:
    r = run("data", "validate", "simulator_data/obd/random", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["rejected_total"] == 0 and d["reconciles"]
    assert d["tables"]["pushes"]["read"] == 10000


@pytest.mark.parametrize(("args", "pattern"), [
    (("data", "validate", "/no/such/dir"), "does not exist"),
    (("data", "synth", "--out", "/tmp/x", "--slots-per-day", "5"), "must divide 24"),
    (("data", "import-obd", "--out", "/tmp/x", "--policy", "greedy", "--source", "/no/wheel"),
     "does not exist"),
])
def test_bad_input_is_one_line_without_traceback(args: tuple[str, ...], pattern: str) -> None:
    r = run(*args)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and pattern in lines[0]


def test_synth_json_is_deterministic(tmp_path: Path) -> None:
    outs = []
    for k in range(2):
        r = run("data", "synth", "--out", str(tmp_path / f"s{k}"), "--users", "30", "--days", "2",
                "--seed", "5", "--json")
        assert r.returncode == 0, r.stderr
        outs.append(json.loads(r.stdout))
    assert outs[0]["decisions"] == outs[1]["decisions"] and outs[0]["sent"] == outs[1]["sent"]
    a = (tmp_path / "s0" / "pushes.parquet").read_bytes()
    b = (tmp_path / "s1" / "pushes.parquet").read_bytes()
    assert a == b
