"""Counter-based random numbers: pure functions of (key, step, stream, j)."""

from __future__ import annotations

import numpy as np

from pushrl.sim import rng as R


def test_uniform_depends_only_on_its_counters() -> None:
    keys = np.arange(1000, dtype=np.uint64) * np.uint64(7919)
    h = R.step_hash(keys, 5)
    full = R.uniform(h, R.OPEN)
    # one user at a time gives the same numbers as the batch
    single = np.array([R.uniform(R.step_hash(keys[i:i + 1], 5), R.OPEN)[0] for i in (0, 17, 999)])
    np.testing.assert_array_equal(single, full[[0, 17, 999]])
    assert not np.array_equal(full, R.uniform(h, R.CLICK))
    assert not np.array_equal(full, R.uniform(R.step_hash(keys, 6), R.OPEN))


def test_uniform_moments_within_standard_error() -> None:
    u = R.uniform(R.step_hash(np.arange(200_000, dtype=np.uint64), 0), R.ACTIVITY)
    se = np.sqrt(1 / 12 / u.size)
    assert abs(u.mean() - 0.5) < 4 * se
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 4 / np.sqrt(u.size)


def test_poisson_by_inversion_matches_mean_and_variance() -> None:
    n, lam = 200_000, 0.7
    k = R.poisson(np.full(n, lam), R.uniform(R.step_hash(np.arange(n, dtype=np.uint64), 1),
                                             R.ACTIVITY))
    assert abs(k.mean() - lam) < 4 * np.sqrt(lam / n)
    assert abs(k.var() - lam) < 0.02
    assert (R.poisson(np.zeros(5), np.full(5, 0.999)) == 0).all()


def test_categorical_uses_row_cdf() -> None:
    cdf = np.cumsum(np.array([[0.2, 0.3, 0.5]] * 4), axis=1)
    out = R.categorical(cdf, np.array([0.0, 0.19, 0.21, 0.99]))
    np.testing.assert_array_equal(out, [0, 0, 1, 2])
