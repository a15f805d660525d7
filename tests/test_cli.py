"""The CLI: one-line errors without tracebacks, JSON output, stubs exit non-zero."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_runner import run_pushrl

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_pushrl(*args)


def run_fresh(*args: str) -> subprocess.CompletedProcess[str]:
    """In a new interpreter: help text depends on the (absent) terminal's width."""
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
    (("policies", "explore", "/no/such/artifact", "--data", "/x", "--scenario", "default"),
     "no policy artifact"),
    (("train", "timing", "--out", "/tmp/pushrl-no-such-policy", "--select", "10",
      "--unsubscribe-margin", "1.5"), "--unsubscribe-margin must be a share of users"),
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


def test_version_and_short_help() -> None:
    from pushrl import __version__

    r = run_fresh("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"pushrl {__version__}"
    r = run_fresh("data", "validate", "-h")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "Usage: pushrl data validate [OPTIONS] DATA"


def test_help_wraps_instead_of_cutting() -> None:
    r = run_fresh("evaluate", "--help")
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stdout
    assert "dm,ipw,snipw,dr,sndr,switch-dr,dr-os,dr-cf" in r.stdout


def test_import_pushrl_registers_envs_without_heavy_imports() -> None:
    code = ("import sys, gymnasium, pushrl\n"
            "assert {'pushrl/PushTiming-v0', 'pushrl/PushItem-v0'} <= set(gymnasium.registry)\n"
            "heavy = {'torch', 'ray', 'pushrl.envs'} & set(sys.modules)\n"
            "assert not heavy, heavy\n"
            "env = gymnasium.make('pushrl/PushTiming-v0')\n"
            "assert env.reset(seed=0)[0].shape == env.observation_space.shape\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd="/", timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]


def test_explore_refuses_an_artifact_that_is_not_a_ppo_agent(tmp_path: Path) -> None:
    from pushrl.policies.registry import save_artifact

    art = save_artifact(tmp_path / "never", kind="timing", loader="baseline",
                        files={"x.txt": b"x"}, card={"baseline": "never-send"})
    r = run("policies", "explore", str(art), "--data", "/no/such/dir", "--scenario", "default")
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(lines) == 1 and "not a PPO timing agent" in lines[0]
