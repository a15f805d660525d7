"""Betting intervals (method="betting"): coverage where Wald/bootstrap fail, tightness, errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from pushrl.ope import ESTIMATORS, estimate_intervals, paired_difference_interval
from pushrl.ope.estimators import interval_from_terms

N_ACTIONS = 50
N_ROUNDS = 600
N_REPLICATIONS = 100
NOMINAL = 0.95
# Binomial Monte Carlo SE of a coverage at 95% over 100 replications is 2.2 points; a correct
# 95% interval falls below 0.95 - 3 SE = 0.885 with probability ~0.1% (seeds are fixed anyway).
FLOOR = NOMINAL - 3 * math.sqrt(NOMINAL * (1 - NOMINAL) / N_REPLICATIONS)


def rare_reward_logs(seed: int, n_rounds: int = N_ROUNDS) -> dict[str, Any]:
    """Uniform logger over 50 actions, 4 context types, click rates 0.02-0.10, model off by 0.02.

    A deterministic target matches the logged action in ~12 of 600 rounds and collects ~0.7
    clicks there: the regime of the push-log coverage study's most-popular / VW targets.
    """
    rng = np.random.default_rng(seed)
    q = np.random.default_rng(0).uniform(0.02, 0.10, size=(4, N_ACTIONS))
    context = rng.integers(0, 4, n_rounds)
    action = rng.integers(0, N_ACTIONS, n_rounds)
    reward = (rng.random(n_rounds) < q[context, action]).astype(np.float64)
    target = np.zeros((4, N_ACTIONS))
    target[np.arange(4), q.argmax(axis=1)] = 1.0
    return {
        "reward": reward,
        "action": action,
        "pscore": np.full(n_rounds, 1.0 / N_ACTIONS),
        "action_dist": target[context][:, :, np.newaxis],
        "estimated_rewards_by_reg_model": np.clip(q[context] - 0.02, 0, 1)[:, :, np.newaxis],
        "truth": float((target[context] * q[context]).sum(axis=1).mean()),
    }


@pytest.fixture(scope="module")
def coverage() -> dict[tuple[str, str], float]:
    names = ("ipw", "snipw", "dr", "sndr")
    ests = [ESTIMATORS[n]() for n in names]
    hits = {(m, n): 0 for m in ("betting", "normal") for n in names}
    for r in range(N_REPLICATIONS):
        logs = rare_reward_logs(1000 + r)
        truth = logs.pop("truth")
        for method in ("betting", "normal"):
            out = estimate_intervals(ests, **logs, method=method, reward_range=(0.0, 1.0))
            for n in names:
                hits[(method, n)] += out[n].lower <= truth <= out[n].upper
    return {k: v / N_REPLICATIONS for k, v in hits.items()}


@pytest.mark.parametrize("name", ["ipw", "snipw", "dr", "sndr"])
def test_betting_covers_a_deterministic_target_with_rare_rewards(
    coverage: dict[tuple[str, str], float], name: str
) -> None:
    assert coverage[("betting", name)] >= FLOOR, coverage
    # The regime is a hard one: the Wald interval misses far more often than 5%.
    assert coverage[("normal", name)] < FLOOR, coverage


def test_betting_is_close_to_wald_when_many_rounds_match() -> None:
    logs = rare_reward_logs(7, n_rounds=4000)
    logs.pop("truth")
    logs["action_dist"] = np.full_like(logs["action_dist"], 1.0 / N_ACTIONS)
    for name in ("ipw", "dr"):
        est = ESTIMATORS[name]()
        bet = est.estimate_interval(**logs, method="betting", reward_range=(0.0, 1.0))
        wald = est.estimate_interval(**logs, method="normal")
        width = bet["95.0% CI (upper)"] - bet["95.0% CI (lower)"]
        wald_width = wald["95.0% CI (upper)"] - wald["95.0% CI (lower)"]
        # Finite-sample validity costs width, but not an order of magnitude here.
        assert wald_width < width < 1.6 * wald_width, (name, width, wald_width)
        assert bet["95.0% CI (lower)"] <= bet["mean"] <= bet["95.0% CI (upper)"]


def test_joint_betting_equals_separate_calls() -> None:
    logs = rare_reward_logs(3)
    logs.pop("truth")
    ests = [ESTIMATORS[n]() for n in ("ipw", "snipw", "dr", "sndr", "switch-dr", "dr-os")]
    joint = estimate_intervals(ests, **logs, method="betting")
    for est in ests:
        alone = est.estimate_interval(**logs, method="betting")
        assert joint[est.estimator_name].as_obp_dict() == pytest.approx(alone, rel=1e-12)


def test_snipw_betting_interval_contains_the_snipw_estimate() -> None:
    for seed in range(5):
        logs = rare_reward_logs(seed, n_rounds=2000)
        logs.pop("truth")
        ci = ESTIMATORS["snipw"]().estimate_interval(**logs, method="betting")
        assert ci["95.0% CI (lower)"] <= ci["mean"] <= ci["95.0% CI (upper)"]


def test_betting_errors() -> None:
    logs = rare_reward_logs(0)
    logs.pop("truth")
    ipw = ESTIMATORS["ipw"]()
    with pytest.raises(ValueError, match="reward_range"):
        ipw.estimate_interval(**logs, method="betting", reward_range=(1.0, 0.0))
    with pytest.raises(ValueError, match="must contain every reward"):
        ipw.estimate_interval(**logs, method="betting", reward_range=(0.0, 0.5))
    with pytest.raises(ValueError, match="needs the rounds"):
        interval_from_terms(ipw.round_terms(**logs), method="betting")
    with pytest.raises(ValueError, match="not implemented for paired"):
        paired_difference_interval(
            ipw, logs["reward"], logs["action"], logs["pscore"], logs["action_dist"],
            method="betting",
        )
