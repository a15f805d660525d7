"""Calibrated logistic GLMs: recovery, held-out metrics, storage, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.errors import DataError
from pushrl.sim.glm import Glm, fit_glm, reliability


def _data(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(size=n), rng.uniform(0, 5, n)])
    p = 1 / (1 + np.exp(-(-2.0 + 0.8 * x[:, 0] - 0.3 * x[:, 1])))
    return x, (rng.random(n) < p).astype(int), rng.integers(0, 500, n)


def test_fit_recovers_coefficients_and_beats_the_baseline() -> None:
    x, y, g = _data()
    m = fit_glm(x, y, g, ("a", "b"), c_grid=(10.0,))
    # standard errors of the MLE at n = 20k are about 0.03 and 0.015
    assert abs(m.coef[0] - 0.8) < 0.12 and abs(m.coef[1] + 0.3) < 0.06
    assert abs(m.intercept + 2.0) < 0.15
    mt = m.metrics
    assert mt["log_loss"] < mt["log_loss_baseline"] and mt["auc"] > 0.6
    assert mt["ece"] < 0.01 and abs(mt["calibration_slope"] - 1) < 0.15
    assert abs(m.predict(x).mean() - y.mean()) < 1e-3  # calibrated in the large


def test_roundtrip_and_fatigue_scale() -> None:
    x, y, g = _data(4000)
    m = fit_glm(x, y, g, ("a", "b"), c_grid=(1.0,))
    m2 = Glm.from_dict(m.to_dict())
    np.testing.assert_allclose(m2.predict(x), m.predict(x))
    scaled = m.logit(x, {1: 2.0}) - m.logit(x)
    np.testing.assert_allclose(scaled, m.coef[1] * x[:, 1])


@pytest.mark.parametrize(("y", "groups", "match"), [
    (np.r_[np.ones(3), np.zeros(97)], np.arange(100), "3 positives"),
    (np.r_[np.ones(50), np.zeros(50)], np.zeros(100), "1 groups"),
])
def test_refuses_data_it_cannot_cross_validate(y: np.ndarray, groups: np.ndarray,
                                               match: str) -> None:
    with pytest.raises(DataError, match=match):
        fit_glm(np.ones((100, 1)), y, groups, ("a",))


def test_reliability_bins_cover_all_rows() -> None:
    p = np.linspace(0.01, 0.99, 1000)
    r = reliability((p > 0.5).astype(float), p, bins=10)
    assert sum(b["n"] for b in r["bins"]) == 1000 and r["ece"] > 0
