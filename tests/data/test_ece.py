"""The calibration-error estimators (issue 17's churn ECE): the plain ECE is the profiles'
one, the noise floor predicts the plain ECE of a calibrated model, the debiased estimators
remove (L2: all, L1: part of) the bias at perfect calibration and recover a known
miscalibration. Simulated predictions like the churn model's (logit-normal, base rate ~0.3)."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.data.ece import (
    ECE_BINS,
    bin_stats,
    binned_ece,
    debiased_ece,
    debiased_l2_sq,
    ece_report,
    ece_sweep,
    noise_floor,
)
from pushrl.data.profiles import calibration

N = 20_000  # held-out users of the churn benchmark's 100,000-user worlds
REPS = 200


def _logit(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _world(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """``(p, q)``: predictions and true probabilities ``q = logit^-1(logit p + shift)``."""
    z = rng.normal(-0.9, 1.0, n)
    return _logit(z), _logit(z + shift)


def _true_binned(shift: float) -> tuple[float, float]:
    """Population binned L1 ECE and squared L2 error of ``p`` vs ``q`` (2M users)."""
    p, q = _world(np.random.default_rng(99), 2_000_000, shift)
    n_b, mp, mq = bin_stats(p, q)
    w = n_b / n_b.sum()
    return float((w * np.abs(mp - mq)).sum()), float((w * (mp - mq) ** 2).sum())


def _replicates(shift: float, seed: int) -> np.ndarray:
    """``(REPS, 4)``: plain ECE, debiased L1, debiased L2^2, noise-floor mean per replicate."""
    rng = np.random.default_rng(seed)
    out = np.empty((REPS, 4))
    for r in range(REPS):
        p, q = _world(rng, N, shift)
        y = (rng.random(N) < q).astype(float)
        out[r] = (binned_ece(p, y), debiased_ece(p, y, resamples=300, seed=r),
                  debiased_l2_sq(p, y), noise_floor(p, draws=20, seed=r).mean())
    return out


def test_plain_ece_is_the_profiles_ece() -> None:
    rng = np.random.default_rng(0)
    p, q = _world(rng, 1234, 0.3)
    y = (rng.random(p.size) < q).astype(float)
    assert binned_ece(p, y) == pytest.approx(calibration(p, y)["ece"], abs=1e-15)
    assert binned_ece(p, q) > 0.04  # against true probabilities it needs no 0/1 outcomes


def test_calibrated_predictions_debiased_near_zero() -> None:
    """Perfect calibration at 20,000 users (10 bins of 2,000, bin sd sigma ~0.010): the plain
    ECE's mean is ~0.8 sigma and the noise floor predicts it within 5 %; the debiased squared
    L2 error averages 0 (|mean| < 3 standard errors and < 1e-5, i.e. an L2 error below
    0.0032); the debiased L1 ECE averages < 0.005 (theory 0.47 sigma ~0.0045), below 0.65x
    the plain ECE."""
    a = _replicates(0.0, seed=1)
    plain, deb, l2, floor = a.mean(axis=0)
    assert 0.006 < plain < 0.010
    assert floor == pytest.approx(plain, rel=0.05)
    se = a[:, 2].std() / np.sqrt(REPS)
    assert abs(l2) < 3 * se and abs(l2) < 1e-5
    assert deb < 0.005 and deb < 0.65 * plain


@pytest.mark.parametrize("shift", [0.15, 0.3])
def test_known_miscalibration_is_recovered(shift: float) -> None:
    """A known miscalibration (true binned ECE 0.028 / 0.055): the debiased L1 ECE's mean is
    within 0.001 of it (at 20,000 users, with every bin's error > 2 sigma, the plain ECE is
    nearly unbiased too); the debiased squared L2 error's mean within 5 % of the true one."""
    true_l1, true_l2sq = _true_binned(shift)
    assert true_l1 > 0.02
    a = _replicates(shift, seed=2)
    plain, deb, l2, _ = a.mean(axis=0)
    assert deb == pytest.approx(true_l1, abs=0.001)
    assert plain >= deb - 1e-4
    assert l2 == pytest.approx(true_l2sq, rel=0.05)


def test_noise_floor_draws_calibrated_outcomes() -> None:
    """The floor of p = 0.5 everywhere with 2 bins of 5,000: |mean of 5,000 fair coins - 0.5|,
    mean sigma sqrt(2/pi) = 0.00564."""
    f = noise_floor(np.full(10_000, 0.5), bins=2, draws=4000, seed=3)
    assert f.mean() == pytest.approx(np.sqrt(0.25 / 5000) * np.sqrt(2 / np.pi), rel=0.03)


def test_ece_sweep_uses_the_most_monotone_bins() -> None:
    # outcome means per equal-count bin: rise for <= 2 bins, fall at 3 (0.5 -> 0 at the top)
    p = np.linspace(0.01, 0.99, 6)
    y = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    ece, b = ece_sweep(p, y)
    assert b == 2
    assert ece == pytest.approx(binned_ece(p, y, bins=2))
    # perfectly ordered outcomes stay monotone up to one user per bin
    assert ece_sweep(p, np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]))[1] == 6


def test_report_is_consistent_and_seeded() -> None:
    rng = np.random.default_rng(4)
    p, q = _world(rng, 4000, 0.3)
    y = (rng.random(p.size) < q).astype(float)
    one = ece_report(p, y, boot=100, draws=100, seed=5)
    assert one == ece_report(p, y, boot=100, draws=100, seed=5)
    assert one.ece == binned_ece(p, y) and one.bins == ECE_BINS and one.n == 4000
    assert one.ece_ci95[0] < one.ece < one.ece_ci95[1]
    assert one.debiased_ece_ci95[0] < one.debiased_ece_ci95[1]
    assert one.floor_ci95[0] < one.floor_mean < one.floor_ci95[1]
    d = one.as_dict()
    assert d["debiased_l2"] == round(np.sqrt(max(one.debiased_l2_sq, 0)), 4)


@pytest.mark.parametrize(("p", "y", "match"), [
    (np.array([0.1, 0.2]), np.array([0.0]), "one length"),
    (np.array([0.1, 1.2]), np.array([0.0, 1.0]), "probabilities in"),
    (np.array([0.1, np.nan]), np.array([0.0, 1.0]), "without NaN"),
])
def test_bad_inputs(p: np.ndarray, y: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        binned_ece(p, y)


def test_bad_bins_and_outcomes() -> None:
    p = np.array([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="`bins` must be >= 1"):
        binned_ece(p, np.zeros(3), bins=0)
    with pytest.raises(ValueError, match="needs >= 2 users"):
        debiased_ece(p, np.zeros(3), bins=3)
    with pytest.raises(ValueError, match="0/1 outcomes"):
        ece_report(p, np.array([0.0, 0.5, 1.0]))
