"""BG/NBD ("buy till you die") visit model: the churn-risk prior of the user profiles.

Fader, Hardie and Lee (2005), "Counting your customers the easy way": while alive, a user
visits as a Poisson process of rate ``lambda ~ Gamma(r, alpha)`` (per day; the population
shrinkage of each user's rate); after every visit the user drops out for good with
probability ``p ~ Beta(a, b)``. A user's history is summarised by ``x`` visits in ``T``
observed days, the last one ``t_x`` days after the observation start. The model gives each
user's probability of being alive and of no visit in the next ``w`` days:

    P(alive | x, t_x, T) = 1 / (1 + [x > 0] * a / (b + x - 1)
                                * ((alpha + T) / (alpha + t_x))^(r + x))
    P(no visit in w | x, t_x, T) = 1 - P(alive) * (1 - ((alpha + T) / (alpha + T + w))^(r + x))

Parameters are fitted by maximum likelihood on training users (:func:`fit_bgnbd`). With no
dropout in the data the fit sends ``a / (a + b)`` towards 0 and the model is the
Poisson-gamma (NBD) posterior of the count; with dropout, recency (``T - t_x``) carries
signal the count does not.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, gammaln

#: Bounds of every parameter's log during the fit (keeps the optimiser off degenerate edges).
_LOG_BOUNDS = (-9.0, 9.0)


def _check(x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray) -> None:
    if not (x.shape == t_x.shape == big_t.shape):
        raise ValueError(f"x, t_x and T must have one shape, got {x.shape}, {t_x.shape}, "
                         f"{big_t.shape}")
    if x.size and (x.min() < 0 or (big_t <= 0).any() or (t_x < 0).any() or (t_x > big_t).any()):
        raise ValueError("BG/NBD inputs need x >= 0, 0 <= t_x <= T and T > 0 (days)")


def log_likelihood(params: np.ndarray, x: np.ndarray, t_x: np.ndarray,
                   big_t: np.ndarray) -> np.ndarray:
    """Per-user BG/NBD log-likelihood, shape ``(n,)``.

    Args:
        params: ``(r, alpha, a, b)``, all > 0.
        x: ``(n,)`` visits; t_x: ``(n,)`` days from the start to the last visit (0 if none);
            big_t: ``(n,)`` observed days.
    """
    r, alpha, a, b = (float(v) for v in params)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b)
    a3 = -(r + x) * np.log(alpha + big_t)
    pos = x > 0
    a4 = np.full(x.shape, -np.inf)
    xp = x[pos]
    a4[pos] = (np.log(a) - np.log(b + xp - 1) + betaln(a, b + xp) - betaln(a, b)
               - (r + xp) * np.log(alpha + t_x[pos]))
    return a1 + np.logaddexp(a2 + a3, a4)


def fit_bgnbd(x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray) -> list[float]:
    """Maximum-likelihood ``[r, alpha, a, b]`` of users' ``(x, t_x, T)`` (days).

    Raises:
        ValueError: Inconsistent or empty inputs.
    """
    x, t_x, big_t = (np.asarray(v, np.float64) for v in (x, t_x, big_t))
    _check(x, t_x, big_t)
    if x.size == 0:
        raise ValueError("fit_bgnbd needs at least one user")
    # start from the method of moments of the rate (no dropout) and a small dropout
    m = max(float((x / big_t).mean()), 1e-4)
    v = max(float((x / big_t).var()) - m * float(np.mean(1 / big_t)), 0.1 * m * m)
    start = np.log([m * m / v, m / v, 0.5, 10.0])

    def nll(z: np.ndarray) -> float:
        return -float(log_likelihood(np.exp(z), x, t_x, big_t).sum()) / x.size

    res = minimize(nll, np.clip(start, *_LOG_BOUNDS), method="L-BFGS-B",
                   bounds=[_LOG_BOUNDS] * 4)
    return [float(p) for p in np.exp(res.x)]


def p_alive(params: list[float] | np.ndarray, x: np.ndarray, t_x: np.ndarray,
            big_t: np.ndarray) -> np.ndarray:
    """P(the user is still alive at ``T``), shape ``(n,)``."""
    r, alpha, a, b = (float(v) for v in params)
    x, t_x, big_t = (np.asarray(v, np.float64) for v in (x, t_x, big_t))
    log_odds = (np.log(a) - np.log(np.maximum(b + x - 1, 1e-12))
                + (r + x) * (np.log(alpha + big_t) - np.log(alpha + t_x)))
    return np.where(x > 0, 1.0 / (1.0 + np.exp(np.minimum(log_odds, 700.0))), 1.0)


def p_no_visit(params: list[float] | np.ndarray, x: np.ndarray, t_x: np.ndarray,
               big_t: np.ndarray, window_days: float) -> np.ndarray:
    """P(no visit in the next ``window_days``) = 1 - P(alive) * (1 - P(none | alive)),
    shape ``(n,)``."""
    r, alpha = float(params[0]), float(params[1])
    x, big_t = np.asarray(x, np.float64), np.asarray(big_t, np.float64)
    none_alive = np.exp((r + x) * (np.log(alpha + big_t) - np.log(alpha + big_t + window_days)))
    return 1.0 - p_alive(params, x, t_x, big_t) * (1.0 - none_alive)
