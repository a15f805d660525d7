"""Tables of invalid inputs: every mistake raises TypeError/ValueError with a precise message."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pushrl.errors import DataError
from pushrl.ope import (
    ESTIMATORS,
    DoublyRobust,
    DoublyRobustWithShrinkage,
    InverseProbabilityWeighting,
    SwitchDoublyRobust,
    validate_bandit_inputs,
)
from pushrl.ope.sequential import PDIS, WDR, WPDIS

N, A, L = 20, 3, 2


def valid_inputs() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    dist = rng.dirichlet(np.ones(A), size=(N, L)).transpose(0, 2, 1)
    return {
        "reward": rng.binomial(1, 0.5, N).astype(float),
        "action": rng.integers(0, A, N),
        "pscore": np.full(N, 1 / A),
        "action_dist": dist,
        "position": rng.integers(0, L, N),
        "estimated_rewards_by_reg_model": rng.random((N, A, L)),
    }


def with_row(arr: np.ndarray, rows: list[int], value: Any) -> np.ndarray:
    out = arr.astype(np.result_type(arr, type(value))).copy()
    out[rows] = value
    return out


def pscore_bad() -> np.ndarray:
    p = np.full(N, 1 / A)
    p[[17, 18, 19]] = [-0.1, 0.0, 0.5]
    return p


BASE = valid_inputs()
INVALID = [
    # (field, value, exception, message pattern)
    (
        "pscore",
        pscore_bad(),
        ValueError,
        r"`pscore` must be in \(0, 1\], got min=-0.1 in 2 rows \(first at row 17\)",
    ),
    (
        "pscore",
        with_row(BASE["pscore"], [4], 1.5),
        ValueError,
        r"`pscore` must be in \(0, 1\], got max=1.5 in 1 row \(first at row 4\)",
    ),
    (
        "pscore",
        with_row(BASE["pscore"], [2], np.nan),
        ValueError,
        r"`pscore` must be finite, got NaN or inf in 1 rows \(first at row 2\)",
    ),
    ("pscore", BASE["pscore"][:-1], ValueError, r"`pscore` must have n_rounds=20 rows"),
    ("pscore", BASE["pscore"].astype(str), TypeError, r"`pscore` must be a numeric array"),
    ("reward", with_row(BASE["reward"], [3], np.inf), ValueError, r"`reward` must be finite"),
    ("reward", BASE["reward"][:, None], ValueError, r"`reward` must be 1-dimensional"),
    ("reward", np.zeros(0), ValueError, r"`reward` must have at least one round"),
    ("reward", None, TypeError, r"`reward` is required"),
    ("action", BASE["action"].astype(float), TypeError, r"`action` must have an integer dtype"),
    (
        "action",
        with_row(BASE["action"], [5, 6], 3),
        ValueError,
        r"`action` must be integers in \[0, n_actions=3\), got max=3 in 2 rows \(first at row 5\)",
    ),
    ("action", with_row(BASE["action"], [9], -1), ValueError, r"got min=-1 in 1 row"),
    (
        "position",
        with_row(BASE["position"], [1], 2),
        ValueError,
        r"`position` must be integers in \[0, len_list=2\)",
    ),
    ("position", None, ValueError, r"`position` is required when `action_dist` has len_list=2"),
    (
        "action_dist",
        BASE["action_dist"][:, :, :, None],
        ValueError,
        r"`action_dist` must have shape \(n_rounds, n_actions, len_list\)",
    ),
    (
        "action_dist",
        BASE["action_dist"] * 1.1,
        ValueError,
        r"`action_dist` must (be probabilities in \[0, 1\]|sum to 1 over actions)",
    ),
    (
        "action_dist",
        BASE["action_dist"][:-2],
        ValueError,
        r"`action_dist` must have n_rounds=20 rows",
    ),
    (
        "estimated_rewards_by_reg_model",
        BASE["estimated_rewards_by_reg_model"][:, :2],
        ValueError,
        r"must have the shape of `action_dist`",
    ),
    (
        "estimated_rewards_by_reg_model",
        None,
        ValueError,
        r"`estimated_rewards_by_reg_model` is required by dr",
    ),
]


@pytest.mark.parametrize(("field", "value", "exc", "match"), INVALID)
def test_invalid_bandit_inputs_are_rejected(field: str, value: Any, exc: type, match: str) -> None:
    kwargs = dict(BASE, **{field: value})
    with pytest.raises(exc, match=match):
        DoublyRobust().estimate_policy_value(**kwargs)


def test_sum_to_one_message_names_row_and_position() -> None:
    dist = BASE["action_dist"].copy()
    dist[7, :, 1] = [0.2, 0.2, 0.2]
    with pytest.raises(DataError, match=r"sum to 1 .* \(first at row 7, position 1\)"):
        validate_bandit_inputs(
            BASE["reward"], BASE["action"], BASE["pscore"], dist, BASE["position"]
        )


def test_negative_probability_is_reported_with_its_row() -> None:
    dist = BASE["action_dist"].copy()
    dist[11, 0, 0] = -0.5
    dist[11, 1, 0] += 0.5
    with pytest.raises(
        DataError,
        match=r"probabilities in \[0, 1\], got min=-0.5 in 1 row "
        r"\(first at row 11\)",
    ):
        validate_bandit_inputs(
            BASE["reward"], BASE["action"], BASE["pscore"], dist, BASE["position"]
        )


def test_both_reward_model_aliases_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not both"):
        DoublyRobust().estimate_policy_value(
            **BASE, estimated_rewards=BASE["estimated_rewards_by_reg_model"]
        )


@pytest.mark.parametrize(
    ("factory", "exc", "match"),
    [
        (lambda: SwitchDoublyRobust(tau=-1.0), ValueError, r"`tau` must be in \[0, inf\]"),
        (lambda: SwitchDoublyRobust(tau=float("nan")), ValueError, r"`tau` must not be NaN"),
        (lambda: SwitchDoublyRobust(tau="1"), TypeError, r"`tau` must be a real number"),
        (lambda: DoublyRobustWithShrinkage(lambda_=-0.5), ValueError, r"`lambda_` must be in"),
        (lambda: DoublyRobustWithShrinkage(lambda_=True), TypeError, r"`lambda_` must be a real"),
        (lambda: ESTIMATORS["dr-cf"](n_folds=1), ValueError, r"`n_folds` must be in \[2, inf\]"),
        (lambda: ESTIMATORS["dr-cf"](n_folds=2.0), TypeError, r"`n_folds` must be an int"),
        (lambda: ESTIMATORS["dr-cf"](base_model="lr"), TypeError, r"`base_model` must be"),
        (lambda: PDIS(gamma=1.5), ValueError, r"`gamma` must be in \[0, 1\]"),
        (lambda: WPDIS(gamma=-0.1), ValueError, r"`gamma` must be in \[0, 1\]"),
    ],
)
def test_invalid_hyperparameters_are_rejected(factory: Any, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        factory()


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"alpha": 0.0}, ValueError, r"`alpha` must be in \(0, 1\)"),
        ({"alpha": 1}, ValueError, r"`alpha` must be in \(0, 1\)"),
        ({"alpha": "0.05"}, TypeError, r"`alpha` must be a real number"),
        ({"n_bootstrap_samples": 0}, ValueError, r"`n_bootstrap_samples` must be in \[1, inf\]"),
        ({"n_bootstrap_samples": 10.0}, TypeError, r"`n_bootstrap_samples` must be an int"),
        ({"random_state": "seed"}, TypeError, r"`random_state` must be None, an int"),
        ({"random_state": -3}, ValueError, r"`random_state` must be a non-negative int"),
        ({"method": "bca"}, ValueError, r"`method` must be 'bootstrap', 'normal' or 'betting'"),
    ],
)
def test_invalid_interval_arguments_are_rejected(
    kwargs: dict[str, Any], exc: type, match: str
) -> None:
    with pytest.raises(exc, match=match):
        InverseProbabilityWeighting().estimate_interval(**BASE, **kwargs)


def trajectories() -> dict[str, Any]:
    rng = np.random.default_rng(1)
    shape = (6, 4)
    mask = np.ones(shape, dtype=bool)
    mask[0, 2:] = False
    return {
        "reward": rng.random(shape),
        "pscore": np.full(shape, 0.5),
        "evaluation_pscore": np.full(shape, 0.25),
        "mask": mask,
    }


TRAJ = trajectories()
restarted = TRAJ["mask"].copy()
restarted[0, 3] = True
bad_pscore = TRAJ["pscore"].copy()
bad_pscore[2, 1] = 0.0
masked_nan = TRAJ["reward"].copy()
masked_nan[0, 3] = np.nan  # after the episode ended: ignored
INVALID_TRAJ = [
    (
        "mask",
        restarted,
        ValueError,
        r"`mask` must be False for every step after the episode ended, got True after False at "
        r"1 step \(first at trajectory 0, step 3\)",
    ),
    ("mask", TRAJ["mask"].astype(int), TypeError, r"`mask` must be a boolean array"),
    (
        "pscore",
        bad_pscore,
        ValueError,
        r"`pscore` must be in \(0, 1\] on valid steps, got 0 at 1 step "
        r"\(first at trajectory 2, step 1\)",
    ),
    (
        "evaluation_pscore",
        TRAJ["evaluation_pscore"] + 1,
        ValueError,
        r"`evaluation_pscore` must be in \[0, 1\] on valid steps",
    ),
    ("pscore", TRAJ["pscore"][:, :2], ValueError, r"`pscore` must have the shape of `reward`"),
    ("reward", TRAJ["reward"][0], ValueError, r"`reward` must have shape \(n_traj, horizon\)"),
]


@pytest.mark.parametrize(("field", "value", "exc", "match"), INVALID_TRAJ)
def test_invalid_trajectories_are_rejected(field: str, value: Any, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        PDIS().estimate_policy_value(**dict(TRAJ, **{field: value}))


def test_values_on_masked_steps_are_ignored() -> None:
    clean = PDIS().estimate_policy_value(**TRAJ)
    assert PDIS().estimate_policy_value(**dict(TRAJ, reward=masked_nan)) == clean


def test_wdr_requires_model_arrays() -> None:
    with pytest.raises(TypeError, match=r"WDR requires `q_hat`"):
        WDR().estimate_policy_value(**TRAJ)
    with pytest.raises(TypeError, match=r"unexpected arguments \['q_hat'\]"):
        PDIS().estimate_policy_value(**TRAJ, q_hat=np.zeros((6, 4)))
