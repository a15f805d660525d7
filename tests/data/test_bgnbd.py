"""BG/NBD visit model (pushrl.data.bgnbd): likelihood vs direct integration, parameter
recovery on data drawn from the model, P(alive) / P(no visit) limits, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from pushrl.data.bgnbd import fit_bgnbd, log_likelihood, p_alive, p_no_visit


def _draw(n: int, params: tuple[float, float, float, float], days: float, window: float,
          seed: int) -> tuple[np.ndarray, ...]:
    """``(x, t_x, T, no_visit_in_window)`` of ``n`` users simulated from the model."""
    r, alpha, a, b = params
    rng = np.random.default_rng(seed)
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n)
    x, t_x, alive = np.zeros(n), np.zeros(n), np.ones(n, bool)
    for i in range(n):
        t = rng.exponential(1 / lam[i])
        while t <= days:
            x[i] += 1
            t_x[i] = t
            if rng.random() < p[i]:
                alive[i] = False
                break
            t += rng.exponential(1 / lam[i])
    visit = alive & (rng.exponential(1 / lam) <= window)  # memoryless: the next visit
    return x, t_x, np.full(n, days), (~visit).astype(float)


@pytest.mark.parametrize("x,t_x,big_t", [(0, 0.0, 20.0), (1, 3.0, 20.0), (4, 15.5, 20.0)])
def test_likelihood_equals_direct_integration(x: int, t_x: float, big_t: float) -> None:
    r, alpha, a, b = 1.3, 6.0, 0.9, 3.0
    # each term of the likelihood given (lambda, p) is a product of a lambda part and a p
    # part, so the double integral over the priors is a sum of products of 1-d integrals

    def over_lam(t: float) -> float:
        return integrate.quad(lambda lam: lam ** x * np.exp(-lam * t)
                              * stats.gamma.pdf(lam, r, scale=1 / alpha), 0, np.inf)[0]

    def over_p(k: int, dead: int) -> float:
        return integrate.quad(lambda p: p ** dead * (1 - p) ** k * stats.beta.pdf(p, a, b),
                              0, 1)[0]

    want = over_p(x, 0) * over_lam(big_t)
    if x > 0:
        want += over_p(x - 1, 1) * over_lam(t_x)
    got = log_likelihood(np.array([r, alpha, a, b]), np.array([float(x)]), np.array([t_x]),
                         np.array([big_t]))[0]
    assert got == pytest.approx(np.log(want), abs=1e-5)


def test_fit_recovers_parameters_and_predicts_calibrated() -> None:
    truth = (1.5, 10.0, 0.8, 4.0)
    x, t_x, big_t, y = _draw(20000, truth, 28.0, 14.0, seed=1)
    par = fit_bgnbd(x, t_x, big_t)
    # r, alpha and the mean dropout a / (a + b) are well identified at 20k users; a and b
    # each move together (their ratio is what the data pins)
    assert par[0] == pytest.approx(truth[0], rel=0.1)
    assert par[1] == pytest.approx(truth[1], rel=0.1)
    assert par[2] / (par[2] + par[3]) == pytest.approx(truth[2] / (truth[2] + truth[3]),
                                                        rel=0.1)
    pred = p_no_visit(par, x, t_x, big_t, 14.0)
    se = np.sqrt(y.mean() * (1 - y.mean()) / y.size)
    assert abs(pred.mean() - y.mean()) < 4 * se
    # recency carries the signal dropout creates: the model ranks better than the count
    from pushrl.data.profiles import calibration

    assert calibration(pred, y)["auc"] > calibration(-x, y)["auc"] + 0.05


def test_limits() -> None:
    par = [2.0, 8.0, 0.5, 5.0]
    x, t_x, big_t = np.array([0.0, 3.0, 3.0]), np.array([0.0, 27.0, 2.0]), np.full(3, 28.0)
    alive = p_alive(par, x, t_x, big_t)
    assert alive[0] == 1.0  # nobody drops out before a first visit
    assert alive[1] > alive[2]  # a recent visit: more likely alive
    # no dropout at all: the Poisson-gamma (NBD) probability of no visit
    nbd = ((8.0 + 28.0) / (8.0 + 42.0)) ** (2.0 + x)
    got = p_no_visit([2.0, 8.0, 1e-9, 1e3], x, t_x, big_t, 14.0)
    np.testing.assert_allclose(got, nbd, rtol=1e-6)


@pytest.mark.parametrize("x,t_x,big_t,match", [
    ([1.0], [2.0], [1.0], "t_x <= T"),
    ([-1.0], [0.0], [5.0], "x >= 0"),
    ([1.0, 2.0], [0.5], [5.0], "one shape"),
    ([], [], [], "at least one user"),
])
def test_bad_inputs(x: list[float], t_x: list[float], big_t: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_bgnbd(np.array(x), np.array(t_x), np.array(big_t))
