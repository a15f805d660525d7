"""`pushrl init`: logs -> validated, simulator fitted, scenario written; later commands use it
and never fall back to the synthetic world's scenario silently."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pushrl.cli.init import DEFAULT_OBJECTIVE, read_objective
from pushrl.cli.main import app
from pushrl.data.synth import synthesize
from pushrl.data.worlds import world_config
from pushrl.envs.scenario import load_scenario, scenario_for_data
from pushrl.errors import ScenarioError
from pushrl.sim.model import load_sim
from tests.cli_runner import run_pushrl

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVE = ROOT / "examples" / "objective.toml"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_pushrl(*args)


@pytest.fixture(scope="module")
def onboarded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """A night-owls log (120 users x 6 days, slots every 2 h) onboarded with a custom
    objective."""
    root = tmp_path_factory.mktemp("init")
    data = root / "logs"
    synthesize(data, world_config("night-owls", users=120, days=6, seed=5, slots_per_day=12))
    obj = root / "objective.toml"
    obj.write_text('name = "team"\n[reward]\nopen = 1.0\nclick = 0.5\nrevenue = 0.0\n'
                   'send_cost = 0.2\nunsubscribe_penalty = 25.0\n[guardrails]\n'
                   'quiet_hours = [21, 9]\nmax_sends_per_day = 1\nmax_sends_per_week = 4\n')
    r = cli("init", str(data), "--objective", str(obj), "--out", str(root / "team"), "--json")
    assert r.returncode == 0, r.stderr
    return data, root / "team", json.loads(r.stdout)


def test_init_writes_a_scenario_from_the_objective(
        onboarded: tuple[Path, Path, dict[str, Any]]) -> None:
    data, out, res = onboarded
    sc = load_scenario(out / "scenario.toml")
    assert sc.name == "team" and sc.data == data.resolve() and sc.sim == (out / "sim").resolve()
    assert (sc.reward.click, sc.reward.send_cost, sc.reward.unsubscribe_penalty) == (0.5, 0.2, 25)
    g = sc.guardrails
    assert (g.quiet_start, g.quiet_end, g.max_sends_per_day, g.max_sends_per_week) == (21, 9, 1,
                                                                                        4)
    assert sc.slots_per_day == 12 and not sc.truth
    # episodes start at the first UTC midnight after every logged event
    import pandas as pd

    last = max(pd.read_parquet(data / f"{t}.parquet")["ts"].max() for t in ("pushes",
                                                                            "activity"))
    start = pd.Timestamp(sc.start)
    assert sc.start == res["start"] and start.hour == 0 and start.minute == 0
    assert last < start <= last + pd.Timedelta(days=1)
    assert load_sim(sc.sim).kind == "push"
    assert res["rejected"] == 0 and res["notes"] == []
    assert scenario_for_data(data) == sc  # found beside the data


def test_default_objective_is_noted_and_matches_the_server(tmp_path: Path) -> None:
    obj, notes = read_objective(None)
    assert obj == DEFAULT_OBJECTIVE and "default objective" in notes[0]
    assert obj["guardrails"]["max_sends_per_week"] == 7  # `pushrl serve`'s default
    shipped, notes = read_objective(OBJECTIVE)  # the documented example declares everything
    assert notes == [] and shipped["reward"] == DEFAULT_OBJECTIVE["reward"]


@pytest.mark.parametrize(("text", "match"), [
    ("[reward]\nclicks = 2\n", r"unknown key\(s\) \['clicks'\] in \[reward\]"),
    ("budget = 3\n", "unknown key 'budget'"),
    ("[reward\n", "invalid TOML"),
])
def test_bad_objective_is_a_one_line_error(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "objective.toml"
    p.write_text(text)
    with pytest.raises(ScenarioError, match=match):
        read_objective(p)


def test_evaluate_refuses_a_timing_policy_on_foreign_data_without_a_scenario(
        onboarded: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    other = tmp_path / "other"
    synthesize(other, world_config("commuter", users=40, days=3, seed=1))
    r = cli("evaluate", "--data", str(other), "--policy", "most-active-hour", "--out",
            str(tmp_path / "r"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "no scenario for --data" in err[0] and "pushrl init" in err[0]


def test_evaluate_infers_the_init_scenario(onboarded: tuple[Path, Path, dict[str, Any]],
                                           tmp_path: Path) -> None:
    data, out, _ = onboarded
    r = cli("evaluate", "--data", str(data), "--policy", "most-active-hour", "--estimators",
            "wpdis", "--n-bootstrap", "50", "--out", str(tmp_path / "r"), "--json")
    assert r.returncode in (0, 1), r.stderr
    d = json.loads(r.stdout)
    assert str(out / "scenario.toml") in json.dumps(d["settings"])
    assert d["settings"]["scenario"]["reward"]["send_cost"] == 0.2


def test_serve_takes_guardrails_and_catalog_from_the_scenario(
        onboarded: tuple[Path, Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    import uvicorn

    import pushrl.serve.app as serve_app

    data, out, _ = onboarded
    seen: dict[str, Any] = {}
    monkeypatch.setattr(serve_app, "create_app", lambda cfg: seen.setdefault("cfg", cfg))
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: None)
    r = CliRunner().invoke(app, ["serve", "--scenario", str(out / "scenario.toml"), "--state",
                                 str(tmp_path / "state"), "--max-per-week", "3"])
    assert r.exit_code == 0, r.output
    cfg = seen["cfg"]
    g = cfg.guardrails
    assert (g.quiet_start, g.quiet_end, g.max_sends_per_day, g.max_sends_per_week) == (21, 9, 1, 3)
    assert Path(cfg.catalog) == data.resolve()
