"""Choosing the PPO agent's exploration export by the timing gate's own criteria."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pushrl.data.io import Dataset
from pushrl.data.synth import SynthConfig, synthesize
from pushrl.data.validate import load_dataset
from pushrl.ope.evaluate import evaluate_policy
from pushrl.ope.exploration import select_exploration
from pushrl.policies.ppo import Exploration, save_with_exploration
from pushrl.policies.registry import load_policy

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "policies" / "ppo-timing" / "v2"


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    d = tmp_path_factory.mktemp("explore_synth")
    synthesize(d, SynthConfig(users=300, days=7, seed=11, items=20))
    return load_dataset(d)[0]


def test_the_unexplored_candidate_is_what_the_gate_sees(logs) -> None:
    pol = load_policy(SHIPPED)
    choice = select_exploration(pol, logs, "default", epsilons=(0.0, 0.5),
                                temperatures=(None,), n_bootstrap=200)
    res = evaluate_policy(logs, pol, scenario="default", estimators=["wdr"], n_bootstrap=200)
    c0, c5 = choice.candidates
    assert c0.exploration == Exploration() and c5.exploration.epsilon == 0.5
    assert c0.ess == pytest.approx(res.diagnostics.ess, rel=1e-9)
    assert c0.difference == pytest.approx(res.gate.comparison.difference, rel=1e-9)
    assert c0.ess_floor == res.gate.ess_floor
    # mixing toward the logger's send rate raises the ESS and shrinks the difference
    assert c5.ess > c0.ess
    assert abs(c5.difference) < abs(c0.difference)
    assert 0 < choice.send < 0.2 and c5.exploration.send == choice.send
    assert choice.exploration in (c0.exploration, c5.exploration) or not any(
        c.supported for c in choice.candidates)


def test_an_export_cannot_be_gated_on_the_logs_it_was_chosen_on(logs, tmp_path: Path) -> None:
    shutil.copytree(SHIPPED, tmp_path / "ppo-timing" / "v2")
    pol = load_policy(tmp_path / "ppo-timing" / "v2")
    choice = select_exploration(pol, logs, "default", epsilons=(0.3,), temperatures=(None,),
                                n_bootstrap=50)
    art = save_with_exploration(tmp_path / "ppo-timing" / "v2", choice.to_dict())
    res = evaluate_policy(logs, str(art), scenario="default", estimators=["wdr"],
                          n_bootstrap=50)
    assert "held_out_data" in res.gate.failed_rules


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"epsilons": ()}, "epsilons"), ({"epsilons": (1.5,)}, "epsilons"),
    ({"temperatures": (0.0,)}, "temperatures"), ({"gate_estimator": "dr"}, "gate_estimator")])
def test_bad_grids_are_refused(logs, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        select_exploration(load_policy(SHIPPED), logs, "default", **kwargs)
