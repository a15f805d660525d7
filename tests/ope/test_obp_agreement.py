"""pushrl's estimators reproduce Open Bandit Pipeline 0.4.1 on identical input arrays.

Reference values come from scripts/obp_reference.py (run once in a venv with obp 0.4.1) on the
Open Bandit Dataset sample, in both directions: random logs evaluated with Bernoulli TS, and
bts logs evaluated with the uniform random policy.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from pushrl.ope import (
    ESTIMATORS,
    BaseOffPolicyEstimator,
    DoublyRobustWithShrinkage,
    SwitchDoublyRobust,
    estimate_intervals,
)

DIRECTIONS = ("random_logs_bts_policy", "bts_logs_random_policy")
# Same formula, same operation order for IPW/SNIPW: only the summation order can differ.
EXACT_RTOL = 1e-12
# Model-based estimators: the expectation under pi is a dot product here, np.average in OBP.
MODEL_RTOL = 1e-9


def make(name: str) -> BaseOffPolicyEstimator:
    m = re.fullmatch(r"(switch-dr)\(tau=(.+)\)|(dr-os)\(lambda=(.+)\)|([a-z-]+)", name)
    assert m is not None
    if m.group(1):
        return SwitchDoublyRobust(tau=float(m.group(2)), estimator_name=name)
    if m.group(3):
        return DoublyRobustWithShrinkage(lambda_=float(m.group(4)), estimator_name=name)
    return ESTIMATORS[name]()


def inputs(case: dict[str, np.ndarray]) -> dict[str, Any]:
    keys = ("reward", "action", "pscore", "action_dist", "position")
    out = {k: case[k] for k in keys}
    out["estimated_rewards_by_reg_model"] = case["estimated_rewards_by_reg_model"]
    return out


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_point_values_match_obp(direction: str, obp_case: Any, obp_reference: Any) -> None:
    ref = obp_reference["directions"][direction]["values"]
    args = inputs(obp_case(direction))
    assert set(ref) >= {"ipw", "snipw", "dm", "dr", "sndr"}
    for name, expected in ref.items():
        got = make(name).estimate_policy_value(**args)
        rtol = EXACT_RTOL if name in ("ipw", "snipw") else MODEL_RTOL
        assert got == pytest.approx(expected, rel=rtol, abs=0), name


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_bootstrap_intervals_match_obp_draw_for_draw(
    direction: str, obp_case: Any, obp_reference: Any
) -> None:
    """With OBP's RandomState stream, non-self-normalised intervals are OBP's to 1e-9."""
    ref = obp_reference["directions"][direction]["intervals"]
    prov = obp_reference["provenance"]
    estimators = [make(name) for name in ref if name not in ("snipw", "sndr")]
    got = estimate_intervals(
        estimators,
        **inputs(obp_case(direction)),
        n_bootstrap_samples=prov["n_bootstrap_fixture"],
        random_state=np.random.RandomState(prov["bootstrap_random_state"]),
    )
    for est in estimators:
        expected = ref[est.estimator_name]
        mine = got[est.estimator_name].as_obp_dict()
        assert mine.keys() == expected.keys()
        for key, value in expected.items():
            assert mine[key] == pytest.approx(value, rel=MODEL_RTOL), (est.estimator_name, key)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_self_normalised_intervals_are_renormalised_per_resample(
    direction: str, obp_case: Any, obp_reference: Any
) -> None:
    """OBP resamples values normalised by the full-sample mean; pushrl re-normalises.

    Both bootstrap the same statistic to first order, so the bounds must agree within the
    Monte Carlo error of a 1,000-resample percentile (a few percent of the width) but not to
    1e-9.
    """
    ref = obp_reference["directions"][direction]["intervals"]
    args = inputs(obp_case(direction))
    for name in ("snipw", "sndr"):
        mine = make(name).estimate_interval(
            **args, n_bootstrap_samples=1000, random_state=np.random.RandomState(12345)
        )
        width = ref[name]["95.0% CI (upper)"] - ref[name]["95.0% CI (lower)"]
        for key in ("95.0% CI (lower)", "95.0% CI (upper)"):
            assert abs(mine[key] - ref[name][key]) < 0.1 * width, (name, key)
        assert mine != ref[name]


def test_own_resampling_differs_but_agrees_within_monte_carlo_error(
    obp_case: Any, obp_reference: Any
) -> None:
    """With pushrl's own generator the IPW interval differs from OBP's only by resampling noise."""
    direction = DIRECTIONS[0]
    ref = obp_reference["directions"][direction]["intervals"]["ipw"]
    mine = make("ipw").estimate_interval(
        **inputs(obp_case(direction)), n_bootstrap_samples=2000, random_state=0
    )
    width = ref["95.0% CI (upper)"] - ref["95.0% CI (lower)"]
    for key in ("95.0% CI (lower)", "95.0% CI (upper)"):
        assert abs(mine[key] - ref[key]) < 0.15 * width
