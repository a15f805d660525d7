"""Scenario loading, overrides and validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushrl.envs.scenario import SCENARIO_DIR, load_scenario
from pushrl.errors import ScenarioError


@pytest.mark.parametrize("name", sorted(p.stem for p in SCENARIO_DIR.glob("*.toml")))
def test_shipped_scenarios_load(name: str) -> None:
    sc = load_scenario(name)
    assert sc.data.is_dir() and (sc.sim / "sim.json").is_file()
    assert sc.horizon == sc.horizon_days * sc.slots_per_day


def test_default_values_and_overrides() -> None:
    sc = load_scenario("default")
    assert (sc.guardrails.quiet_start, sc.guardrails.quiet_end) == (22, 8)
    assert sc.reward.unsubscribe_penalty > sc.reward.open > sc.reward.send_cost > 0
    o = load_scenario("default", truth=True, max_sends_per_day=1, quiet_hours=[21, 9],
                      fatigue_multiplier=2.0, send_cost=0.1)
    assert o.truth and o.guardrails.max_sends_per_day == 1 and o.guardrails.quiet_start == 21
    assert o.fatigue_multiplier == 2.0 and o.reward.send_cost == 0.1


def _write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(f'data = "{SCENARIO_DIR.parent}/simulator_data/synth"\n'
                 f'sim = "{SCENARIO_DIR.parent}/simulator_data/fitted/synth"\n' + body)
    return p


@pytest.mark.parametrize(("body", "match"), [
    ("slots_per_day = 5\n", "slots_per_day must divide 24"),
    ("horizon_days = 0\n", "horizon_days must be >= 1"),
    ("warm_start = 'always'\n", "warm_start must be one of"),
    ("[guardrails]\nquiet_hours = [22]\n", "quiet_hours must be"),
    ("[guardrails]\nmax_sends_per_day = -1\n", "send caps must be >= 0"),
    ("[reward]\nsend_cost = -1.0\n", "must be >= 0"),
    ("[whatif]\nactivity_shift_hours = 30\n", "activity_shift_hours must be in"),
    ("[items]\npolicy = 'greedy'\n", "items.policy must be one of"),
    ("colour = 'red'\n", "unknown keys"),
    ("start = 'yesterday'\n", "not ISO 8601"),
    ("horizon_days = [\n", "invalid TOML"),
    ("[holdout]\nshare = 0.7\n", r"\[holdout\] holdout share must be a number in \[0, 0.5\]"),
    ("[holdout]\nshare = 0.1\nsalt = ''\n", "salt must be a non-empty string"),
])
def test_invalid_scenarios_name_the_problem(tmp_path: Path, body: str, match: str) -> None:
    with pytest.raises(ScenarioError, match=match):
        load_scenario(_write(tmp_path, body))


@pytest.mark.parametrize(("ref", "kw", "match"), [
    ("no_such_scenario", {}, "unknown scenario"),
    ("/no/such/file.toml", {}, "does not exist"),
    ("default", {"colour": 1}, "unknown scenario override"),
])
def test_bad_references(ref: str, kw: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ScenarioError, match=match):
        load_scenario(ref, **kw)


def test_timing_env_refuses_the_obd_scenario() -> None:
    from pushrl.envs import PushTimingEnv

    with pytest.raises(ScenarioError, match=r"PushItem|push log"):
        PushTimingEnv("obd")


def test_holdout_section(tmp_path: Path) -> None:
    from pushrl.rules.holdout import Holdout

    sc = load_scenario(_write(tmp_path, "[holdout]\nshare = 0.05\nsalt = 'q1'\n"))
    assert sc.holdout == Holdout(0.05, "q1", "default")
    assert load_scenario("default").holdout is None
