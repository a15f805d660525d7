"""Betting confidence intervals: valid in finite samples, for heavy-tailed importance weights.

Wald and bootstrap intervals estimate the spread of the per-round terms from the terms seen.
When the evaluation policy is nearly deterministic and the logger spreads its mass thinly, the
value is carried by a handful of rounds with a large weight (a 100-item uniform logger and a
deterministic target match the logged item in 1% of the rounds) and, with a rare reward, most
logs contain none or one rewarded match. The observed spread is then ~0 and those intervals
collapse onto an estimate near 0: they miss whenever the rare large term happened not to occur.
No interval built from the observed terms alone can fix this; what fixes it is knowing how
large a term *could* be.

This module inverts the hedged-capital betting test of Waudby-Smith & Ramdas (2024, "Estimating
means of bounded random variables by betting", JRSS-B, Sec. 4-5) with the bounds implied by the
estimator itself. Every estimator here is ``mean(a) + mean(b) / mean(c)`` (see
:class:`~pushrl.ope._rounds.RoundTerms`); under full support ``E[c_i (a_i - V) + b_i] = 0``
exactly at the policy value ``V`` (``E[w f(x)] = E[f(x)]`` for IPW weights, and ``c = 1`` for
the linear estimators), so a candidate value ``m`` is rejected when a gambler betting on the
sign of ``Z_i(m) = c_i (a_i - m) + b_i`` multiplies her capital by ``1 / alpha``. The interval is
the set of values not rejected. It holds with probability ``>= 1 - alpha`` for any ``n_rounds``
whenever ``Z_i(m)`` stays inside the bounds used to size the bets, which are computed by
evaluating the estimator on "virtual rounds" at the extremes of the reward range, of the
reward model's range and of the importance weight ``[0, iw_max]``. For SNIPW the root of
``sum_i Z_i(m)`` is the SNIPW estimate itself; for SNDR it is the DR correction normalised by
``sum w`` applied to ``w``-weighted model terms (same expectation, slightly different centre).

The capital uses the data in their logged order (no randomness) and the running maximum of the
capital (Ville's inequality), which is valid for i.i.d. rounds in any fixed order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pushrl.ope._rounds import RoundData, RoundTerms
from pushrl.ope._validate import FloatArray

# Bet-size cap (WSR's c): a bet never stakes more than this share of what it could lose.
BET_CAP = 0.75
# Grid over the value range, then multi-section of each end of the interval.
COARSE_GRID = 129
REFINE_POINTS = 32
REFINE_ROUNDS = 4
# (candidate values x rounds) evaluated at once, to bound memory on large logs.
MAX_BLOCK_ELEMENTS = 4_000_000
# Importance weights at which the virtual rounds are evaluated: a grid on [0, iw_max] dense
# enough for non-monotone weight maps (DR-os shrinkage peaks at sqrt(lambda_)).
_N_WEIGHT_GRID = 513


@dataclass(frozen=True)
class TermBounds:
    """The estimator's ``(a, b, c)`` terms at the extreme virtual rounds.

    ``Z(m) = c (a - m) + b`` is linear in ``m`` for each virtual round, so the bounds of any
    real round's ``Z_i(m)`` are the min and max over these rows.

    Attributes:
        direct: ``a`` per virtual round, shape ``(n_virtual,)``.
        weighted: ``b`` per virtual round.
        normaliser: ``c`` per virtual round.
        value_range: ``(low, high)`` range of the policy value (the reward range).
    """

    direct: FloatArray
    weighted: FloatArray
    normaliser: FloatArray
    value_range: tuple[float, float]

    def z_range(self, m: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Lower and upper bounds of ``Z(m)`` over every possible round, shapes of ``m``."""
        z = self.normaliser[np.newaxis, :] * (self.direct[np.newaxis, :] - m[:, np.newaxis])
        z += self.weighted[np.newaxis, :]
        return z.min(axis=1), z.max(axis=1)


def _as_columns(terms: RoundTerms, n: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    zeros = np.zeros(n)
    return (
        zeros if terms.direct is None else np.asarray(terms.direct, np.float64),
        zeros if terms.weighted is None else np.asarray(terms.weighted, np.float64),
        np.ones(n) if terms.normaliser is None else np.asarray(terms.normaliser, np.float64),
    )


def term_bounds(
    estimate_terms: Callable[[RoundData], RoundTerms],
    rounds: RoundData,
    reward_range: tuple[float, float] | None = None,
    iw_max: float | None = None,
) -> TermBounds:
    """Bounds of an estimator's per-round terms, from virtual rounds at the extremes.

    Args:
        estimate_terms: The estimator's ``_estimate_round_rewards`` hook.
        rounds: The logged rounds (for the default ranges).
        reward_range: Known ``(low, high)`` range of the reward; by default the observed range
            widened to include 0. Pass it whenever it is known a priori (e.g. ``(0, 1)`` for
            clicks): the interval is only as valid as this range.
        iw_max: Largest possible importance weight; by default ``rounds.iw_max`` (the largest
            evaluation probability over the smallest logged propensity), else the largest
            observed weight.

    Returns:
        The terms at every combination of extreme reward, reward-model values and weight.
    """
    if reward_range is None:
        reward_range = (min(0.0, float(rounds.reward.min())), max(0.0, float(rounds.reward.max())))
    r_lo, r_hi = float(reward_range[0]), float(reward_range[1])
    if not r_lo <= r_hi:
        raise ValueError(f"`reward_range` must be (low, high) with low <= high, got {reward_range}")
    outside = (rounds.reward < r_lo) | (rounds.reward > r_hi)
    if outside.any():
        raise ValueError(
            f"`reward_range` {reward_range} must contain every reward, got "
            f"{int(outside.sum())} outside it (first at row {int(np.argmax(outside))})"
        )
    w_hi = float(iw_max if iw_max is not None else (rounds.iw_max or rounds.iw.max()))
    w_hi = max(w_hi, float(rounds.iw.max()))
    # Geometric and linear points: dense near 0 and near iw_max alike.
    weights = np.unique(
        np.concatenate(
            [
                np.linspace(0.0, w_hi, _N_WEIGHT_GRID),
                np.geomspace(max(w_hi, 1e-12) * 1e-6, max(w_hi, 1e-12), _N_WEIGHT_GRID),
            ]
        )
    )
    rewards = np.array([r_lo, r_hi])
    if rounds.q_pi is None:
        grid = np.meshgrid(rewards, weights, indexing="ij")
        virtual = RoundData(reward=grid[0].ravel(), iw=grid[1].ravel())
    else:
        q_lo = min(float(np.min(rounds.q_pi)), float(np.min(rounds._need(rounds.q_logged))))
        q_hi = max(float(np.max(rounds.q_pi)), float(np.max(rounds._need(rounds.q_logged))))
        if rounds.q_range is not None:
            q_lo, q_hi = min(q_lo, rounds.q_range[0]), max(q_hi, rounds.q_range[1])
        qs = np.array([q_lo, q_hi])
        grid = np.meshgrid(rewards, weights, qs, qs, indexing="ij")
        virtual = RoundData(
            reward=grid[0].ravel(),
            iw=grid[1].ravel(),
            q_pi=grid[2].ravel(),
            q_logged=grid[3].ravel(),
        )
    a, b, c = _as_columns(estimate_terms(virtual), virtual.n_rounds)
    return TermBounds(a, b, c, (r_lo, r_hi))


def _rejected(
    m: FloatArray,
    cols: tuple[FloatArray, FloatArray, FloatArray],
    bounds: TermBounds,
    alpha: float,
) -> np.ndarray:
    """Whether each candidate value in ``m`` is rejected by the hedged betting test."""
    a, b, c = cols
    n = a.shape[0]
    out = np.empty(m.shape[0], bool)
    block = max(1, MAX_BLOCK_ELEMENTS // max(n, 1))
    t = np.arange(1, n + 1, dtype=np.float64)
    log_threshold = np.log(1.0 / alpha)
    for start in range(0, m.shape[0], block):
        mm = m[start : start + block]
        lo, hi = bounds.z_range(mm)
        span = np.maximum(hi - lo, 1e-300)[:, np.newaxis]
        # Rescale to [0, 1]: x_i in [0, 1] with mean mu = -lo / span under the null.
        x = c[np.newaxis, :] * (a[np.newaxis, :] - mm[:, np.newaxis]) + b[np.newaxis, :]
        x = np.clip((x - lo[:, np.newaxis]) / span, 0.0, 1.0)
        mu = np.clip(-lo[:, np.newaxis] / span, 0.0, 1.0)
        # Predictable plug-in bet (WSR eq. 26): variance of the data seen *before* round t.
        mu_hat = (0.5 + np.cumsum(x, axis=1)) / (t + 1.0)
        sq = np.cumsum((x - mu_hat) ** 2, axis=1)
        var_prev = (0.25 + np.concatenate([np.zeros((mm.shape[0], 1)), sq[:, :-1]], axis=1)) / t
        lam = np.sqrt(2.0 * np.log(2.0 / alpha) / (n * var_prev))
        with np.errstate(divide="ignore", invalid="ignore"):
            lam_up = np.minimum(lam, BET_CAP / np.maximum(mu, 1e-300))
            lam_dn = np.minimum(lam, BET_CAP / np.maximum(1.0 - mu, 1e-300))
        dev = x - mu
        log_up = np.cumsum(np.log1p(lam_up * dev), axis=1)
        log_dn = np.cumsum(np.log1p(-lam_dn * dev), axis=1)
        # Hedged capital max(K+/2, K-/2) and Ville's inequality on its running maximum.
        hedged = np.maximum(log_up, log_dn) + np.log(0.5)
        # A Z(m) of certain sign cannot have mean 0 (this also covers a zero-width range).
        certain = (lo > 0) | (hi < 0)
        out[start : start + block] = (hedged.max(axis=1) >= log_threshold) | certain
    return out


def _refine(inside: float, outside: float, test: Callable[[FloatArray], np.ndarray]) -> float:
    """Boundary between an accepted value ``inside`` and a rejected value ``outside``."""
    for _ in range(REFINE_ROUNDS):
        pts = np.linspace(inside, outside, REFINE_POINTS + 2)[1:-1]
        rej = test(pts)
        first = int(np.argmax(rej)) if rej.any() else REFINE_POINTS
        inside = float(pts[first - 1]) if first > 0 else inside
        outside = float(pts[first]) if first < REFINE_POINTS else outside
    return inside


def betting_interval(terms: RoundTerms, bounds: TermBounds, alpha: float) -> dict[str, float]:
    """``1 - alpha`` betting interval of the value whose per-round terms are ``terms``.

    Args:
        terms: The estimate's per-round terms, shape ``(n_rounds,)`` each.
        bounds: From :func:`term_bounds` for the same estimator and rounds.
        alpha: Miscoverage level.

    Returns:
        ``{"mean": point estimate, "lower": ..., "upper": ...}``, a sub-interval of
        ``bounds.value_range``.
    """
    cols = _as_columns(terms, terms.n_rounds)
    point = terms.value()
    lo_v, hi_v = bounds.value_range
    grid = np.unique(np.append(np.linspace(lo_v, hi_v, COARSE_GRID), np.clip(point, lo_v, hi_v)))

    def test(m: FloatArray) -> np.ndarray:
        return _rejected(np.asarray(m, np.float64), cols, bounds, alpha)

    rej = test(grid)
    if rej.all():
        # The accepted set is narrower than the coarse grid step and misses the point
        # estimate (possible for SNDR, whose test is centred slightly off its estimate, on
        # very large logs): search a fine grid between the point's neighbours.
        step = (hi_v - lo_v) / (COARSE_GRID - 1)
        grid = np.linspace(max(lo_v, point - step), min(hi_v, point + step), 8 * COARSE_GRID)
        rej = test(grid)
        if rej.all():
            return {"mean": point, "lower": float(grid[0]), "upper": float(grid[-1])}
    acc = np.flatnonzero(~rej)
    i_lo, i_hi = int(acc[0]), int(acc[-1])
    lower = float(grid[i_lo]) if i_lo == 0 else _refine(grid[i_lo], grid[i_lo - 1], test)
    upper = (
        float(grid[i_hi])
        if i_hi == grid.shape[0] - 1
        else _refine(grid[i_hi], grid[i_hi + 1], test)
    )
    return {"mean": point, "lower": lower, "upper": upper}
