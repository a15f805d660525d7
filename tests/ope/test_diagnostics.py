"""Weight diagnostics: Kish ESS, weight quantiles, support deficiency."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pushrl.ope import kish_ess, weight_diagnostics


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        (np.ones(50), 50.0),
        (np.r_[np.ones(10), np.zeros(40)], 10.0),
        (np.r_[100.0, np.zeros(99)], 1.0),
        (np.zeros(5), 0.0),
        (np.array([1.0, 3.0]), 16 / 10),
    ],
)
def test_kish_ess(weights: np.ndarray, expected: float) -> None:
    assert kish_ess(weights) == pytest.approx(expected)


def test_on_policy_diagnostics_are_perfect(synthetic_bandit: Any) -> None:
    b = synthetic_bandit
    d = weight_diagnostics(b.action, b.pscore, b.action_dist(b.logging))
    assert d.ess == pytest.approx(b.reward.shape[0])
    assert d.ess_ratio == pytest.approx(1.0)
    assert d.weight_max == pytest.approx(1.0)
    assert d.support_deficiency == 0.0 and d.n_unsupported_pairs == 0


def test_quantiles_and_max_of_known_weights() -> None:
    n = 1000
    action = np.zeros(n, dtype=int)
    pscore = np.linspace(0.001, 1.0, n)  # weights 1 / pscore for a policy that always plays 0
    dist = np.zeros((n, 2))
    dist[:, 0] = 1.0
    d = weight_diagnostics(action, pscore, dist)
    w = 1 / pscore
    assert d.weight_max == pytest.approx(w.max())
    assert (d.weight_q50, d.weight_q90, d.weight_q99) == pytest.approx(
        tuple(np.quantile(w, [0.5, 0.9, 0.99]))
    )
    assert d.ess == pytest.approx(w.sum() ** 2 / (w**2).sum())


def test_support_deficiency_counts_mass_on_never_logged_pairs() -> None:
    """Action 2 is never logged at position 0; action 1 never at position 1."""
    action = np.array([0, 1, 0, 2])
    position = np.array([0, 0, 1, 1])
    pscore = np.full(4, 0.5)
    dist = np.zeros((4, 3, 2))
    dist[:, :, 0] = [0.5, 0.3, 0.2]  # 0.2 on the unlogged (2, 0)
    dist[:, :, 1] = [0.4, 0.6, 0.0]  # 0.6 on the unlogged (1, 1)
    d = weight_diagnostics(action, pscore, dist, position)
    assert d.support_deficiency == pytest.approx((0.2 + 0.2 + 0.6 + 0.6) / 4)
    assert d.n_unsupported_pairs == 2
