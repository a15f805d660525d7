"""Cross-fitted reward models: OBP's RegressionModel reproduced; no own-observation leakage."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsRegressor

from pushrl.errors import DataError
from pushrl.ope import CrossFitDR, fit_reward_model


def crossfit_against_obp(key: str, model: Any, obp_case: Any, obp_reference: Any) -> tuple:
    case = obp_case("random_logs_bts_policy")
    ref = obp_case("crossfit_random_logs")[f"estimated_rewards_{key}"]
    meta = obp_reference["crossfit"][key]
    est = CrossFitDR(
        base_model=model, n_folds=meta["n_folds"], random_state=meta["kfold_random_state"]
    )
    value = est.estimate_policy_value(
        case["reward"],
        case["action"],
        case["pscore"],
        case["action_dist"],
        case["position"],
        context=case["context"],
        action_context=case["action_context"],
    )
    assert est.estimated_rewards_ is not None
    return est.estimated_rewards_, ref, value, meta["dr_value"]


def test_reproduces_obp_regression_model_exactly_with_ridge(
    obp_case: Any, obp_reference: Any
) -> None:
    """Same folds, per-position models, features and layout as OBP's RegressionModel(n_folds=3).

    A closed-form Ridge fit leaves only rounding differences.
    """
    q, ref, value, expected = crossfit_against_obp(
        "ridge", Ridge(alpha=1.0), obp_case, obp_reference
    )
    np.testing.assert_allclose(q, ref, rtol=1e-9, atol=1e-12)
    assert value == pytest.approx(expected, rel=1e-9)


@pytest.mark.slow
def test_reproduces_obp_regression_model_with_logistic_regression(
    obp_case: Any, obp_reference: Any
) -> None:
    """A strongly convex logistic fit (C=1, tol=1e-10): lbfgs stopping noise across numpy builds
    leaves ~4e-6 of predicted CTR."""
    model = LogisticRegression(C=1.0, tol=1e-10, max_iter=100000, random_state=12345)
    q, ref, value, expected = crossfit_against_obp("logistic", model, obp_case, obp_reference)
    np.testing.assert_allclose(q, ref, atol=2e-5, rtol=0)
    assert value == pytest.approx(expected, rel=1e-5)


def test_cross_fitting_never_predicts_a_round_with_its_own_reward() -> None:
    """A 1-nearest-neighbour model memorises in sample; cross-fitted it cannot."""
    rng = np.random.default_rng(0)
    n = 300
    context = rng.normal(size=(n, 2))
    action = rng.integers(0, 2, n)
    reward = rng.normal(size=n)
    model = KNeighborsRegressor(n_neighbors=1)
    in_sample = fit_reward_model(context, action, reward, n_actions=2, base_model=model, n_folds=1)
    crossed = fit_reward_model(
        context, action, reward, n_actions=2, base_model=model, n_folds=5, random_state=0
    )
    rows = np.arange(n)
    np.testing.assert_allclose(in_sample[rows, action, 0], reward)
    assert not np.isclose(crossed[rows, action, 0], reward).any()


def test_default_model_and_one_hot_actions(synthetic_bandit: Any) -> None:
    b = synthetic_bandit
    ctx = np.eye(b.q.shape[0])[b.context]
    q = fit_reward_model(ctx, b.action, b.reward, n_actions=b.q.shape[1], random_state=0)
    assert q.shape == (b.reward.shape[0], b.q.shape[1], 1)
    assert ((q > 0) & (q < 1)).all()


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"position": None, "len_list": 2}, DataError, r"`position` is required"),
        ({"n_folds": 500}, DataError, r"`n_folds`=500 exceeds n_rounds=40"),
        ({"action_context": np.eye(3)}, DataError, r"`action_context` must have n_actions=2"),
        ({"n_actions": 0}, ValueError, r"`n_actions` must be in \[1, inf\]"),
    ],
)
def test_invalid_reward_model_arguments(kwargs: dict[str, Any], exc: type, match: str) -> None:
    rng = np.random.default_rng(0)
    args: dict[str, Any] = {
        "context": rng.normal(size=(40, 2)),
        "action": rng.integers(0, 2, 40),
        "reward": rng.binomial(1, 0.5, 40).astype(float),
        "n_actions": 2,
    }
    with pytest.raises(exc, match=match):
        fit_reward_model(**{**args, **kwargs})


def test_crossfit_dr_refuses_precomputed_rewards(synthetic_bandit: Any) -> None:
    b = synthetic_bandit
    dist = b.action_dist(b.logging)
    with pytest.raises(TypeError, match="fits its own reward model"):
        CrossFitDR().estimate_policy_value(
            b.reward, b.action, b.pscore, dist, estimated_rewards=dist
        )
    with pytest.raises(TypeError, match="requires `context`"):
        CrossFitDR().estimate_policy_value(b.reward, b.action, b.pscore, dist)
