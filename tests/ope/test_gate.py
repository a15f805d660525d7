"""The deployment gate blocks a worse policy, passes a clearly better one, names failed rules."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from pushrl.ope import IPW, SNIPW
from pushrl.ope.gate import RULES, DeploymentGate


def softmax_policy(bandit: Any, temperature: float) -> np.ndarray:
    z = np.exp(bandit.q / temperature)
    return z / z.sum(axis=1, keepdims=True)


def evaluate(bandit: Any, policy: np.ndarray, gate: DeploymentGate, **kw: Any) -> Any:
    return gate.evaluate(
        bandit.reward,
        bandit.action,
        bandit.pscore,
        bandit.action_dist(policy),
        estimated_rewards_by_reg_model=bandit.estimated_rewards(0.05),
        random_state=0,
        **kw,
    )


@pytest.fixture(scope="module")
def gate() -> DeploymentGate:
    return DeploymentGate(n_bootstrap_samples=500)


def test_passes_a_clearly_better_policy(synthetic_bandit: Any, gate: DeploymentGate) -> None:
    b = synthetic_bandit
    better = softmax_policy(b, 0.1)
    assert b.true_value(better) > b.true_value(b.logging) + 0.05
    res = evaluate(b, better, gate)
    assert res.passed and res.failed_rules == ()
    assert res.comparison.lower > 0
    assert res.to_dict()["comparison"]["estimator_name"] == "dr"


def test_blocks_a_deliberately_worse_policy(synthetic_bandit: Any, gate: DeploymentGate) -> None:
    b = synthetic_bandit
    worse = softmax_policy(b, -0.1)  # prefers the lowest-reward actions
    assert b.true_value(worse) < b.true_value(b.logging)
    res = evaluate(b, worse, gate)
    assert not res.passed
    assert "improvement_lower_bound" in res.failed_rules
    assert res.comparison.upper < 0
    assert set(res.failed_rules) <= set(RULES)


def test_blocks_against_an_explicit_baseline(synthetic_bandit: Any, gate: DeploymentGate) -> None:
    b = synthetic_bandit
    better, best = softmax_policy(b, 0.3), softmax_policy(b, 0.1)
    assert evaluate(b, best, gate, baseline_action_dist=b.action_dist(better)).passed
    res = evaluate(b, better, gate, baseline_action_dist=b.action_dist(best))
    assert res.failed_rules == ("improvement_lower_bound",)
    assert res.baseline_diagnostics is not None


def test_ess_floor_blocks_a_near_deterministic_policy(make_bandit: Any) -> None:
    """A better but almost deterministic policy on few rounds has too small an ESS."""
    b = make_bandit(600, seed=4)
    sharp = softmax_policy(b, 0.005)
    res = DeploymentGate(estimator=IPW(), min_ess=400, n_bootstrap_samples=300).evaluate(
        b.reward, b.action, b.pscore, b.action_dist(sharp), random_state=0
    )
    assert "ess_floor" in res.failed_rules
    assert res.diagnostics.ess < res.ess_floor == 400


def test_support_deficiency_blocks_unlogged_actions(synthetic_bandit: Any) -> None:
    b = synthetic_bandit
    keep = b.action != 3  # pretend action 3 was never logged
    policy = softmax_policy(b, 0.5)
    dist = b.action_dist(policy)[keep]
    res = DeploymentGate(estimator=SNIPW(), n_bootstrap_samples=200).evaluate(
        b.reward[keep], b.action[keep], b.pscore[keep], dist, random_state=0
    )
    assert res.diagnostics.support_deficiency > 0.05
    assert "support_deficiency" in res.failed_rules
    assert any("never-logged" in m for m in res.messages)


def test_ess_floor_is_the_larger_of_absolute_and_relative() -> None:
    g = DeploymentGate()
    assert g.ess_floor(5_000) == 100 and g.ess_floor(50_000) == 500


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"alpha": 1.5}, ValueError, r"`alpha` must be in \(0, 1\)"),
        ({"min_ess": -1}, ValueError, r"`min_ess` must be in \[0, inf\]"),
        ({"max_support_deficiency": 2}, ValueError, r"`max_support_deficiency` must be in"),
        ({"estimator": "dr"}, TypeError, r"`estimator` must be a pushrl.ope estimator"),
        ({"method": "exact"}, ValueError, r"`method` must be"),
    ],
)
def test_invalid_gate_configuration(kwargs: dict[str, Any], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        DeploymentGate(**kwargs)


def test_support_ess_is_n_over_k_under_a_uniform_logger() -> None:
    from pushrl.ope.gate import support_ess

    assert support_ess(np.full(7_000, 0.01)) == pytest.approx(70.0)
    # a skewed logger: the harmonic mean of the logged propensities
    p = np.array([0.8] * 8 + [0.0025] * 2)
    assert support_ess(p) == pytest.approx(10 / np.mean(1 / p))
    assert support_ess(np.zeros(0)) == 0.0


def test_support_relative_floor_caps_the_fixed_floor() -> None:
    g = DeploymentGate(min_ess_support_fraction=0.5)
    # 7,000 rounds under a uniform logger over 100 items: a deterministic policy reaches ESS
    # ~70, below the fixed floor of 100, so the floor becomes 35
    assert DeploymentGate().ess_floor(7_000, 70.0) == 100
    assert g.ess_floor(7_000, 70.0) == 35.0
    assert g.ess_floor(50_000, 25_000.0) == 500  # never above the fixed floor
    assert g.ess_floor(7_000) == 100  # no support given: the fixed floor


def test_deterministic_policy_under_uniform_logger_passes_the_support_floor(
        make_bandit: Any) -> None:
    b = make_bandit(600, seed=4)
    sharp = softmax_policy(b, 0.005)
    fixed = DeploymentGate(estimator=IPW(), min_ess=400, n_bootstrap_samples=200)
    rel = replace(fixed, min_ess_support_fraction=0.5)
    a = fixed.evaluate(b.reward, b.action, b.pscore, b.action_dist(sharp), random_state=0)
    c = rel.evaluate(b.reward, b.action, b.pscore, b.action_dist(sharp), random_state=0)
    assert a.support_ess == c.support_ess == pytest.approx(600 / np.mean(1 / b.pscore))
    assert "ess_floor" in a.failed_rules and a.ess_floor == 400
    assert c.ess_floor == pytest.approx(0.5 * c.support_ess) and c.ess_floor < 400
    # the sharp policy keeps more than half the ESS a deterministic policy can reach here
    assert c.diagnostics.ess >= c.ess_floor and "ess_floor" not in c.failed_rules


def test_one_sided_gate_uses_the_two_sided_interval_at_twice_alpha(
        synthetic_bandit: Any) -> None:
    b = synthetic_bandit
    pol = softmax_policy(b, 0.3)
    one = evaluate(b, pol, DeploymentGate(n_bootstrap_samples=500, one_sided=True))
    two = evaluate(b, pol, DeploymentGate(n_bootstrap_samples=500, alpha=0.1))
    assert one.one_sided and not two.one_sided
    assert one.comparison.alpha == pytest.approx(0.1)
    assert (one.comparison.lower, one.comparison.upper) == (two.comparison.lower,
                                                            two.comparison.upper)
    base = evaluate(b, pol, DeploymentGate(n_bootstrap_samples=500))
    assert base.comparison.lower < one.comparison.lower  # a one-sided 5 % bound is tighter


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"one_sided": True, "alpha": 0.6}, "one-sided gate needs `alpha` < 0.5"),
     ({"min_ess_support_fraction": 0.0}, "min_ess_support_fraction"),
     ({"min_ess_support_fraction": 1.5}, "min_ess_support_fraction")],
)
def test_invalid_new_gate_options(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DeploymentGate(**kwargs)
