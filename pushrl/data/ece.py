"""Calibration error of probabilities against 0/1 outcomes, with its finite-sample bias shown.

The binned expected calibration error (ECE) of the churn target (issue 17) is
``sum_b n_b / n * |mean p_b - mean y_b|`` over equal-count bins of the users sorted by the
prediction ``p``. Against 0/1 outcomes it is biased upward: each bin's outcome mean carries
binomial noise of standard deviation ``sigma_b = sqrt(q_b (1 - q_b) / n_b)``, and
``E|noise| = sigma_b * sqrt(2 / pi)`` even when ``p`` is perfectly calibrated (~0.018 for 10 bins
of 400 users at a base rate of 0.3). This module reports, next to the plain ECE (always):

- the **noise floor**: the plain ECE of perfectly calibrated outcomes for the same ``p``
  (``y* ~ Bernoulli(p)``, redrawn), its mean and 95 % range: what a perfect model would score;
- the **debiased ECE** of Kumar, Liang & Ma (2019, "Verified uncertainty calibration",
  NeurIPS; their ``calibration`` library's ``normal_debiased_ce``, power 1): ``2 * plain -
  mean over resamples of the plain ECE with each bin's outcome mean redrawn from
  N(mean y_b, sigma_b^2)``, a bootstrap bias correction. Unbiased when every bin's error is far
  from 0; at a bin with no error it keeps ``(2 - sqrt 2) sigma_b sqrt(2/pi) ~ 0.47 sigma_b`` of
  the plain ECE's ``0.80 sigma_b`` (no unbiased estimator of ``|mean|`` exists), so it is
  still >= 0 on average for a calibrated model, ~40 % closer to 0;
- the **debiased squared L2 calibration error** of the same paper (their ``unbiased_l2_ce``
  without the clip at 0): ``sum_b n_b / n * ((mean p_b - mean y_b)^2 - mean y_b (1 - mean y_b)
  / (n_b - 1))``, exactly unbiased for the binned squared error with Bernoulli outcomes of a
  constant rate per bin (it may be negative). Its root is an upper bound of the binned L1 ECE
  in the population (Jensen), so ``sqrt(max(0, .)) <= 0.02`` also meets an ECE target;
- ``ECE_sweep`` (Roelofs, Cain, Shlens & Mozer 2022, AISTATS), L1: equal-count bins, as many
  as keep the bins' outcome means monotone in the prediction.

Confidence intervals: 95 % percentile bootstrap over users (bins recomputed per resample).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Bins of the churn target's ECE (issue 17).
ECE_BINS = 10


def _inputs(p: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    if p.ndim != 1 or p.shape != y.shape:
        raise ValueError(f"`p` and `y` must be 1-d of one length, got shapes {p.shape} and "
                         f"{y.shape}")
    if p.size and (np.isnan(p).any() or p.min() < 0 or p.max() > 1):
        raise ValueError("`p` must be probabilities in [0, 1] without NaN, got range "
                         f"[{np.nanmin(p)}, {np.nanmax(p)}]")
    return p, y


def equal_count_parts(p: np.ndarray, bins: int = ECE_BINS) -> list[np.ndarray]:
    """Indices of ``p``'s equal-count bins: the users sorted by ``p`` (stable) split by
    ``np.array_split`` into ``min(bins, n)`` parts (sizes differ by at most 1; the first ones
    are larger). The one binning rule of every ECE here and of
    :func:`pushrl.data.profiles.calibration`."""
    if bins < 1:
        raise ValueError(f"`bins` must be >= 1, got {bins}")
    order = np.argsort(p, kind="stable")
    return [s for s in np.array_split(order, min(bins, max(p.size, 1))) if s.size]


def bin_stats(p: Any, y: Any, bins: int = ECE_BINS
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-count bins of the users sorted by ``p`` (stable; ``np.array_split`` sizes).

    Args:
        p: ``(n,)`` predicted probabilities; y: ``(n,)`` outcomes (0/1, or any values to
            average, e.g. true probabilities).
        bins: Number of bins (at most ``n``; empty bins are dropped).

    Returns:
        ``(n_b, mean_p_b, mean_y_b)``, each ``(k,)`` for the ``k <= bins`` non-empty bins.
    """
    p, y = _inputs(p, y)
    parts = equal_count_parts(p, bins)
    n_b = np.array([s.size for s in parts], np.int64)
    return (n_b, np.array([p[s].mean() for s in parts]), np.array([y[s].mean() for s in parts]))


def binned_ece(p: Any, y: Any, bins: int = ECE_BINS) -> float:
    """Plain ECE: ``sum_b n_b / n * |mean p_b - mean y_b|`` over equal-count bins."""
    n_b, mp, my = bin_stats(p, y, bins)
    return float((n_b / n_b.sum() * np.abs(mp - my)).sum()) if n_b.size else float("nan")


def debiased_ece(p: Any, y: Any, bins: int = ECE_BINS, *, resamples: int = 1000,
                 seed: int = 0) -> float:
    """Kumar, Liang & Ma (2019) debiased L1 ECE (see the module docstring); may be < 0."""
    n_b, mp, my = bin_stats(p, y, bins)
    if n_b.size == 0 or n_b.min() < 2:
        raise ValueError(f"every bin needs >= 2 users for the debiased ECE, got {len(p)} "
                         f"users in {bins} bins; use fewer bins")
    w = n_b / n_b.sum()
    plain = float((w * np.abs(mp - my)).sum())
    sd = np.sqrt(my * (1 - my) / n_b)
    rng = np.random.default_rng(seed)
    redrawn = rng.normal(my, sd, size=(resamples, my.size))
    return 2 * plain - float((np.abs(redrawn - mp) @ w).mean())


def debiased_l2_sq(p: Any, y: Any, bins: int = ECE_BINS) -> float:
    """Kumar, Liang & Ma (2019) unbiased estimate of the binned squared L2 calibration error
    for 0/1 outcomes (see the module docstring; not clipped, may be < 0)."""
    n_b, mp, my = bin_stats(p, y, bins)
    if n_b.size == 0 or n_b.min() < 2:
        raise ValueError(f"every bin needs >= 2 users for the debiased L2 error, got {len(p)} "
                         f"users in {bins} bins; use fewer bins")
    w = n_b / n_b.sum()
    return float((w * ((mp - my) ** 2 - my * (1 - my) / (n_b - 1))).sum())


def ece_sweep(p: Any, y: Any, *, max_bins: int | None = None) -> tuple[float, int]:
    """Roelofs et al. (2022) ECE_sweep (L1, equal-count bins): the plain ECE at the largest
    number of bins whose outcome means still rise with the prediction.

    Returns:
        ``(ece, bins)``.
    """
    p, y = _inputs(p, y)
    order = np.argsort(p, kind="stable")
    ps, ys = p[order], y[order]
    top = p.size if max_bins is None else min(max_bins, p.size)
    best, best_b = float("nan"), 0
    for b in range(1, top + 1):
        starts = np.concatenate([[0], np.cumsum([s.size for s in np.array_split(ps, b)])[:-1]])
        n_b = np.diff(np.append(starts, p.size))
        my = np.add.reduceat(ys, starts) / n_b
        if b > 1 and np.any(np.diff(my) < 0):
            break
        mp = np.add.reduceat(ps, starts) / n_b
        best, best_b = float((n_b / p.size * np.abs(mp - my)).sum()), b
    return best, best_b


def noise_floor(p: Any, bins: int = ECE_BINS, *, draws: int = 1000, seed: int = 0
                ) -> np.ndarray:
    """Plain ECE of ``draws`` perfectly calibrated outcome sets ``y* ~ Bernoulli(p)`` for the
    same ``p`` (bins fixed by ``p``, as the plain ECE's are): ``(draws,)``."""
    p, _ = _inputs(p, np.zeros(np.shape(p)))
    parts = equal_count_parts(p, bins)
    rng = np.random.default_rng(seed)
    out = np.zeros(draws)
    for s in parts:
        ps = p[s]
        hits = np.zeros(draws)
        for lo in range(0, ps.size, 4096):  # draws x 4096 doubles at a time
            chunk = ps[lo:lo + 4096]
            hits += (rng.random((draws, chunk.size)) < chunk).sum(axis=1)
        out += s.size / p.size * np.abs(ps.mean() - hits / s.size)
    return out


@dataclass(frozen=True)
class ECEReport:
    """A calibration report of ``n`` predictions against 0/1 outcomes (see the module
    docstring). ``*_ci95``: 95 % percentile bootstrap over users; ``floor_*``: the plain ECE
    of perfectly calibrated outcomes for the same predictions (mean, 2.5 % and 97.5 %)."""

    n: int
    bins: int
    ece: float
    ece_ci95: tuple[float, float]
    floor_mean: float
    floor_ci95: tuple[float, float]
    debiased_ece: float
    debiased_ece_ci95: tuple[float, float]
    debiased_l2_sq: float
    debiased_l2_sq_ci95: tuple[float, float]
    ece_sweep: float
    ece_sweep_bins: int

    @property
    def debiased_l2(self) -> float:
        """``sqrt(max(0, debiased_l2_sq))``: an upper-bound estimate of the L1 ECE."""
        return float(np.sqrt(max(self.debiased_l2_sq, 0.0)))

    def as_dict(self, digits: int = 4) -> dict[str, Any]:
        """Rounded, JSON-ready."""
        def r(v: float) -> float:
            return round(float(v), digits)
        return {"n": self.n, "bins": self.bins, "ece": r(self.ece),
                "ece_ci95": [r(v) for v in self.ece_ci95],
                "noise_floor_mean": r(self.floor_mean),
                "noise_floor_95": [r(v) for v in self.floor_ci95],
                "debiased_ece": r(self.debiased_ece),
                "debiased_ece_ci95": [r(v) for v in self.debiased_ece_ci95],
                "debiased_l2": r(self.debiased_l2),
                "debiased_l2_sq": round(self.debiased_l2_sq, 7),
                "debiased_l2_ci95": [r(np.sqrt(max(v, 0.0))) for v in self.debiased_l2_sq_ci95],
                "ece_sweep": r(self.ece_sweep), "ece_sweep_bins": self.ece_sweep_bins}


def ece_report(p: Any, y: Any, bins: int = ECE_BINS, *, boot: int = 400, draws: int = 1000,
               seed: int = 0) -> ECEReport:
    """Plain ECE, noise floor, debiased ECE and L2, ECE_sweep, with bootstrap CIs.

    Args:
        p: ``(n,)`` predicted probabilities; y: ``(n,)`` 0/1 outcomes.
        bins: Equal-count bins.
        boot: Bootstrap resamples of users for the CIs.
        draws: Perfectly calibrated outcome sets for the noise floor.
        seed: Seeds every random draw.
    """
    p, y = _inputs(p, y)
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("`y` must be 0/1 outcomes for the ECE report")
    rng = np.random.default_rng(seed)
    stats: dict[str, list[float]] = {"ece": [], "deb": [], "l2": []}
    for _ in range(boot):
        i = rng.integers(0, p.size, p.size)
        stats["ece"].append(binned_ece(p[i], y[i], bins))
        stats["deb"].append(debiased_ece(p[i], y[i], bins, resamples=200,
                                         seed=int(rng.integers(2**31))))
        stats["l2"].append(debiased_l2_sq(p[i], y[i], bins))

    def ci(k: str) -> tuple[float, float]:
        lo, hi = np.quantile(stats[k], [0.025, 0.975])
        return float(lo), float(hi)

    floor = noise_floor(p, bins, draws=draws, seed=seed + 1)
    sweep, sweep_b = ece_sweep(p, y)
    return ECEReport(
        n=int(p.size), bins=bins, ece=binned_ece(p, y, bins), ece_ci95=ci("ece"),
        floor_mean=float(floor.mean()),
        floor_ci95=(float(np.quantile(floor, 0.025)), float(np.quantile(floor, 0.975))),
        debiased_ece=debiased_ece(p, y, bins, seed=seed), debiased_ece_ci95=ci("deb"),
        debiased_l2_sq=debiased_l2_sq(p, y, bins), debiased_l2_sq_ci95=ci("l2"),
        ece_sweep=sweep, ece_sweep_bins=sweep_b)
