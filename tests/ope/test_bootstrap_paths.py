"""The two resampling paths of `bootstrap_means` (gather for few columns, bincount + matmul for
many) are the same nonparametric bootstrap: same index stream, same means up to rounding."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.ope import _bootstrap
from pushrl.ope._bootstrap import bootstrap_means, percentile_interval
from pushrl.ope._rounds import RoundTerms
from pushrl.ope.estimators import interval_from_terms, resampled_values


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("seed", [7, "obp-stream"])
def test_gather_path_matches_count_path(
    k: int, seed: int | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cols = np.random.default_rng(0).normal(size=(1013, k))

    def rs() -> int | np.random.RandomState:
        return np.random.RandomState(11) if seed == "obp-stream" else int(seed)

    assert k <= _bootstrap.GATHER_MAX_COLUMNS
    gathered = bootstrap_means(cols, 37, rs())
    monkeypatch.setattr(_bootstrap, "GATHER_MAX_COLUMNS", 0)
    counted = bootstrap_means(cols, 37, rs())
    np.testing.assert_allclose(gathered, counted, rtol=0, atol=1e-12)
    assert not np.allclose(gathered, gathered[0])  # resamples differ from one another


def test_gather_path_is_deterministic_and_chunk_independent() -> None:
    cols = np.random.default_rng(1).random((997, 2))
    a = bootstrap_means(cols, 50, 3)
    b = bootstrap_means(cols, 50, 3, max_chunk_elements=997)
    c = bootstrap_means(cols, 50, 3, max_chunk_elements=997 * 13)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(a, c, rtol=1e-12)
    assert not np.allclose(a, bootstrap_means(cols, 50, 4))


def test_gather_path_matches_explicit_resamples() -> None:
    cols = np.random.default_rng(2).random((400, 1))
    rs = np.random.RandomState(5)
    expected = [cols[rs.choice(400, size=400), 0].mean() for _ in range(20)]
    got = bootstrap_means(cols, 20, np.random.RandomState(5))[:, 0]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("normalised", [False, True])
def test_interval_from_terms_matches_per_column_replicates(normalised: bool) -> None:
    rng = np.random.default_rng(3)
    direct, weighted = rng.random(800), rng.exponential(size=800)
    terms = RoundTerms(direct, weighted, rng.exponential(size=800) if normalised else None)
    got = interval_from_terms(terms, alpha=0.1, n_bootstrap_samples=300, random_state=9)
    present = [c for c in terms.columns() if c is not None]
    reps = resampled_values(terms, bootstrap_means(np.column_stack(present), 300, 9))
    assert got == pytest.approx(percentile_interval(reps, 0.1), rel=1e-12)
