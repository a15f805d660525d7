"""Contract tests over every registered estimator, limits between estimators, unbiasedness."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pushrl.ope import (
    DM,
    DR,
    ESTIMATORS,
    IPW,
    SNDR,
    SNIPW,
    BaseOffPolicyEstimator,
    DRos,
    SwitchDR,
    make_estimator,
)

NAMES = sorted(ESTIMATORS)


def call_args(est: BaseOffPolicyEstimator, bandit: Any, policy: np.ndarray) -> dict[str, Any]:
    args: dict[str, Any] = {
        "reward": bandit.reward,
        "action": bandit.action,
        "pscore": bandit.pscore,
        "action_dist": bandit.action_dist(policy),
    }
    if getattr(est, "requires_context", False):
        args["context"] = np.eye(bandit.q.shape[0])[bandit.context]
    else:
        args["estimated_rewards_by_reg_model"] = bandit.estimated_rewards(bias=0.05)
    return args


def target_policy(bandit: Any) -> np.ndarray:
    """Softmax of the true rewards: better than the logger, with full support."""
    z = np.exp(8 * bandit.q)
    return z / z.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("name", NAMES)
def test_contract(name: str, synthetic_bandit: Any) -> None:
    est = make_estimator(name)
    assert est.estimator_name == name
    assert isinstance(est.hyperparameters(), dict)
    args = call_args(est, synthetic_bandit, target_policy(synthetic_bandit))
    value = est.estimate_policy_value(**args)
    assert isinstance(value, float) and np.isfinite(value)
    for method in ("bootstrap", "normal"):
        ci = est.estimate_interval(**args, n_bootstrap_samples=200, random_state=0, method=method)
        assert list(ci) == ["mean", "95.0% CI (lower)", "95.0% CI (upper)"]
        assert all(isinstance(v, float) for v in ci.values())
        assert ci["95.0% CI (lower)"] <= value <= ci["95.0% CI (upper)"]
    again = est.estimate_interval(**args, n_bootstrap_samples=200, random_state=0)
    assert again == est.estimate_interval(**args, n_bootstrap_samples=200, random_state=0)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "dr-cf"])
def test_round_rewards_average_to_the_estimate(name: str, synthetic_bandit: Any) -> None:
    est = make_estimator(name)
    args = call_args(est, synthetic_bandit, target_policy(synthetic_bandit))
    rounds = est.estimate_round_rewards(**args)
    assert rounds.shape == (synthetic_bandit.reward.shape[0],)
    assert rounds.mean() == pytest.approx(est.estimate_policy_value(**args), rel=1e-12)


def test_unknown_estimator_name() -> None:
    with pytest.raises(ValueError, match=r"unknown estimator 'xx'; choose one of"):
        make_estimator("xx")


def test_hyperparameters_reach_the_constructor() -> None:
    assert make_estimator("switch-dr", tau=3.0).hyperparameters() == {"tau": 3.0}
    assert make_estimator("dr-os", lambda_=2.0) == DRos(lambda_=2.0)


def test_limits_of_switch_and_shrinkage(synthetic_bandit: Any) -> None:
    args = call_args(DR(), synthetic_bandit, target_policy(synthetic_bandit))
    dr, dm = DR().estimate_policy_value(**args), DM().estimate_policy_value(**args)
    assert SwitchDR(tau=np.inf).estimate_policy_value(**args) == pytest.approx(dr, rel=1e-12)
    assert DRos(lambda_=np.inf).estimate_policy_value(**args) == pytest.approx(dr, rel=1e-12)
    assert DRos(lambda_=0.0).estimate_policy_value(**args) == pytest.approx(dm, rel=1e-12)
    # every weight of this policy is positive, so tau=0 switches everything to DM
    assert SwitchDR(tau=0.0).estimate_policy_value(**args) == pytest.approx(dm, rel=1e-12)


def test_on_policy_evaluation_is_the_sample_mean(synthetic_bandit: Any) -> None:
    """Evaluating the logger itself: all weights are 1, so IPW = SNIPW = mean reward."""
    b = synthetic_bandit
    args = call_args(IPW(), b, b.logging)
    assert IPW().estimate_policy_value(**args) == pytest.approx(b.reward.mean(), rel=1e-12)
    assert SNIPW().estimate_policy_value(**args) == pytest.approx(b.reward.mean(), rel=1e-12)
    assert SNDR().estimate_policy_value(**args) == pytest.approx(
        DR().estimate_policy_value(**args), rel=1e-12
    )


def test_two_dimensional_action_dist_and_alias(synthetic_bandit: Any) -> None:
    b = synthetic_bandit
    policy = target_policy(b)
    q = b.estimated_rewards(0.05)
    three_d = DR().estimate_policy_value(
        b.reward, b.action, b.pscore, b.action_dist(policy), estimated_rewards_by_reg_model=q
    )
    two_d = DR().estimate_policy_value(
        b.reward, b.action, b.pscore, policy[b.context], estimated_rewards=q[:, :, 0]
    )
    assert two_d == three_d


@pytest.mark.parametrize("name", ["ipw", "snipw", "dr", "sndr"])
def test_unbiased_within_standard_errors(name: str, make_bandit: Any) -> None:
    """On 20k rounds the estimate is within 4 normal-approximation SEs of the exact value."""
    b = make_bandit(20_000, seed=11)
    policy = target_policy(b)
    est = make_estimator(name)
    args = call_args(est, b, policy)
    ci = est.estimate_interval(**args, method="normal", alpha=0.05)
    se = (ci["95.0% CI (upper)"] - ci["95.0% CI (lower)"]) / (2 * 1.959964)
    assert abs(ci["mean"] - b.true_value(policy)) < 4 * se


def test_dm_inherits_the_reward_model_bias(synthetic_bandit: Any) -> None:
    """A reward model shifted by +0.05 moves DM by ~+0.05 and DR by ~0 (double robustness)."""
    b = synthetic_bandit
    policy = target_policy(b)
    args = call_args(DM(), b, policy)
    truth = b.true_value(policy)
    assert DM().estimate_policy_value(**args) - truth == pytest.approx(0.05, abs=0.01)
    ci = DR().estimate_interval(**args, method="normal")
    se = (ci["95.0% CI (upper)"] - ci["95.0% CI (lower)"]) / (2 * 1.959964)
    assert abs(ci["mean"] - truth) < 4 * se


def test_positions_select_the_logged_slot() -> None:
    """With len_list=2 the weight uses the evaluation probability at the logged position."""
    dist = np.zeros((2, 2, 2))
    dist[:, 0, 0] = 1.0  # position 0: always action 0
    dist[:, 1, 1] = 1.0  # position 1: always action 1
    reward = np.array([1.0, 1.0])
    action = np.array([0, 0])
    pscore = np.array([0.5, 0.5])
    value = IPW().estimate_policy_value(reward, action, pscore, dist, position=np.array([0, 1]))
    assert value == pytest.approx((2.0 + 0.0) / 2)
