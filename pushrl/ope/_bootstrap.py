"""Vectorised nonparametric bootstrap of column means, and interval formatting.

The bootstrap draws a ``(chunk, n_rounds)`` matrix of resample indices at a time. With few
columns (one estimator's terms: ``k <= GATHER_MAX_COLUMNS``) it gathers each column at those
indices and sums the rows; with many (every estimator and every policy being compared) it turns
the indices into a count matrix with one ``bincount`` and multiplies it with the
``(n_rounds, k)`` matrix of per-round columns, one BLAS call for every column of the chunk.
Both are the same standard nonparametric bootstrap on the same index stream (they agree to
rounding). There is no Python loop per resample: the loop runs over chunks of resamples, sized
for cache locality and bounded memory.

Passing ``random_state=np.random.RandomState(seed)`` draws the exact index stream of OBP's
``estimate_confidence_interval_by_bootstrap(random_state=seed)``, which the OBP agreement tests
rely on; an ``int`` seeds a faster ``np.random.Generator``.

Drawing the ``B * n_rounds`` indices is nearly all the cost (1e8 draws for 10,000 resamples of
10,000 rounds). Nothing is kept between calls: to share that cost, put every column in one call
(:func:`pushrl.ope.estimate_intervals` bootstraps several estimators, and
:func:`pushrl.ope.bootstrap_replicates` several policies' terms, on one set of resamples).
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
from threadpoolctl import threadpool_limits

from pushrl.ope._validate import FloatArray, RandomState

# Resamples per chunk: as many as fit in CACHE_CHUNK_ELEMENTS count-matrix entries (the
# bincount scatter is ~3x faster while its target stays in L2/L3), but at least
# MIN_CHUNK_RESAMPLES so even a 1M-round log is resampled in blocks, and never more than
# MAX_CHUNK_ELEMENTS entries (~20 bytes each across indices, counts and their float copy).
# 2**16 measured fastest on the 2-core EPYC (512 KB L2 per core; 2**18 spills it and costs
# 1.6x the CPU time for 10,000 x 10,000).
CACHE_CHUNK_ELEMENTS = 1 << 16
# The gather path skips the scatter and the count matrix, whose cost does not depend on k, but
# pays one gather and one sum per column. At 10,000 rounds x 10,000 resamples (2-core EPYC,
# load ~11, CPU seconds, min of 3) one column took 0.56-0.60 s against 0.75 s for bincount +
# matmul, two 0.76-0.79 s against 0.85, three and four about even or worse; drawing the 1e8
# indices alone is ~0.4-0.5 s of it.
GATHER_MAX_COLUMNS = 2
# Its chunk (indices plus gathered values, 16 bytes per entry) stays within a 512 KB L2:
# 2**15 entries measured fastest, twice that spills and costs ~2.5x the CPU time.
GATHER_CHUNK_ELEMENTS = 1 << 15
MIN_CHUNK_RESAMPLES = 4
MAX_CHUNK_ELEMENTS = 16_000_000


def resolve_rng(random_state: RandomState) -> np.random.Generator | np.random.RandomState:
    """Return a generator: an ``int``/``None`` seeds ``np.random.default_rng``; generators pass."""
    if isinstance(random_state, np.random.Generator | np.random.RandomState):
        return random_state
    return np.random.default_rng(random_state)


def _draw_indices(
    rng: np.random.Generator | np.random.RandomState, size: int, n: int
) -> np.ndarray:
    if isinstance(rng, np.random.RandomState):
        # Same calls as RandomState.choice(samples, size=n) repeated `size` times.
        return rng.randint(0, n, size=(size, n))
    dtype = np.int32 if n < np.iinfo(np.int32).max else np.int64
    return rng.integers(0, n, size=(size, n), dtype=dtype)


def _gather_sums(
    rng: np.random.Generator | np.random.RandomState, size: int, columns: list[FloatArray]
) -> FloatArray:
    n = columns[0].shape[0]
    if isinstance(rng, np.random.RandomState):
        idx = rng.randint(0, n, size=(size, n))
    else:
        # intp: `take` would otherwise copy int32 indices to intp. Below 2**32 rounds numpy
        # draws 32-bit values either way, so the stream is the one `_draw_indices` yields.
        idx = rng.integers(0, n, size=(size, n), dtype=np.intp)
    return np.column_stack([col.take(idx).sum(axis=1) for col in columns])


def _int_counts(rng: np.random.Generator | np.random.RandomState, size: int, n: int) -> np.ndarray:
    idx = _draw_indices(rng, size, n)
    # Shift row b into [b * n, (b + 1) * n) so one bincount counts every resample at once.
    if idx.dtype == np.int32 and size * n < np.iinfo(np.int32).max:
        idx += (np.arange(size, dtype=np.int32) * n)[:, np.newaxis]
        flat = idx.ravel()
    else:
        flat = np.add(
            idx, (np.arange(size, dtype=np.int64) * n)[:, np.newaxis], dtype=np.int64
        ).ravel()
    return np.bincount(flat, minlength=size * n).reshape(size, n)


def bootstrap_means(
    columns: FloatArray,
    n_bootstrap_samples: int,
    random_state: RandomState = None,
    max_chunk_elements: int | None = None,
) -> FloatArray:
    """Means of every column over ``n_bootstrap_samples`` resamples of the rows.

    All columns share the same resamples, so statistics built from several columns (ratios,
    differences between two policies) are evaluated on identical resampled rounds.

    Args:
        columns: Per-round values, shape ``(n_rounds, k)``.
        n_bootstrap_samples: Number of resamples ``B``.
        random_state: Seed or generator (see the module docstring).
        max_chunk_elements: Resamples per chunk are ``max_chunk_elements // n_rounds`` (at
            least 1); by default the cache-friendly rule described at the top of the module.

    Returns:
        Resampled means, shape ``(B, k)``.
    """
    n, k = columns.shape
    out = np.empty((n_bootstrap_samples, k))
    gather = 1 <= k <= GATHER_MAX_COLUMNS
    if max_chunk_elements is not None:
        per_chunk = max_chunk_elements // n
    elif gather:
        per_chunk = GATHER_CHUNK_ELEMENTS // n
    else:
        per_chunk = max(CACHE_CHUNK_ELEMENTS // n, MIN_CHUNK_RESAMPLES)
        per_chunk = min(per_chunk, MAX_CHUNK_ELEMENTS // n)
    chunk = int(max(1, min(n_bootstrap_samples, per_chunk)))
    rng = resolve_rng(random_state)
    if gather:
        cols = [np.ascontiguousarray(columns[:, j]) for j in range(k)]
        for start in range(0, n_bootstrap_samples, chunk):
            size = min(chunk, n_bootstrap_samples - start)
            out[start : start + size] = _gather_sums(rng, size, cols)
        out /= n
        return out
    # The per-chunk products are small: a multi-threaded BLAS spends more time waking its
    # threads than multiplying (15x the CPU time on 2 cores), so keep it single-threaded here.
    with threadpool_limits(limits=1, user_api="blas"):
        for start in range(0, n_bootstrap_samples, chunk):
            size = min(chunk, n_bootstrap_samples - start)
            out[start : start + size] = _int_counts(rng, size, n).astype(np.float64) @ columns
    out /= n
    return out


def interval_keys(alpha: float) -> tuple[str, str]:
    """OBP's dictionary keys, e.g. ``"95.0% CI (lower)"`` for ``alpha=0.05``."""
    level = 100 * (1.0 - alpha)
    return f"{level}% CI (lower)", f"{level}% CI (upper)"


def percentile_interval(samples: FloatArray, alpha: float) -> dict[str, float]:
    """OBP-style percentile interval of bootstrap replicates.

    Args:
        samples: Bootstrap replicates of one statistic, shape ``(B,)``.
        alpha: Miscoverage level; the interval has nominal coverage ``1 - alpha``.

    Returns:
        ``{"mean": mean of replicates, "<level>% CI (lower)": ..., "<level>% CI (upper)": ...}``.
    """
    lower_key, upper_key = interval_keys(alpha)
    lower, upper = np.percentile(samples, [100 * (alpha / 2), 100 * (1.0 - alpha / 2)])
    return {"mean": float(np.mean(samples)), lower_key: float(lower), upper_key: float(upper)}


def normal_interval(point: float, influence: FloatArray, alpha: float) -> dict[str, float]:
    """Normal-approximation (delta-method) interval from per-round influence values.

    Args:
        point: The point estimate.
        influence: Per-round influence values, shape ``(n_rounds,)``; the standard error is
            their sample standard deviation over ``sqrt(n_rounds)``.
        alpha: Miscoverage level.

    Returns:
        ``{"mean": point, "<level>% CI (lower)": ..., "<level>% CI (upper)": ...}``.
    """
    lower_key, upper_key = interval_keys(alpha)
    n = influence.shape[0]
    se = float(np.std(influence, ddof=1)) / np.sqrt(n) if n > 1 else float("inf")
    z = NormalDist().inv_cdf(1.0 - alpha / 2)
    return {
        "mean": float(point),
        lower_key: float(point - z * se),
        upper_key: float(point + z * se),
    }
