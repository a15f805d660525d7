"""Sequential estimators on a send-timing MDP whose value is known by dynamic programming.

Each step a user is in one of S engagement states; the policy either waits (the state moves
by a fixed Markov chain) or sends (reward ~ Bernoulli(click[s]) and the episode ends).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from pushrl.ope.fqe import fit_fqe
from pushrl.ope.sequential import (
    PDIS,
    SEQUENTIAL_ESTIMATORS,
    WDR,
    WPDIS,
    sequential_diagnostics,
)

S = 4
WORLD = np.random.default_rng(5)
P0 = WORLD.dirichlet(np.ones(S))
TRANSITION = WORLD.dirichlet(np.ones(S), size=S)
CLICK = WORLD.uniform(0.05, 0.5, S)


@dataclass(frozen=True)
class Logs:
    reward: np.ndarray
    action: np.ndarray
    pscore: np.ndarray
    evaluation_pscore: np.ndarray
    mask: np.ndarray
    state: np.ndarray
    action_dist: np.ndarray


def true_value(send_prob: np.ndarray, gamma: float = 1.0) -> float:
    """Exact value of a policy sending with probability ``send_prob[t, s]``."""
    v = np.zeros(S)
    for t in range(send_prob.shape[0] - 1, -1, -1):
        v = send_prob[t] * CLICK + (1 - send_prob[t]) * gamma * (TRANSITION @ v)
    return float(P0 @ v)


def simulate(n: int, logging: np.ndarray, target: np.ndarray, seed: int) -> Logs:
    rng = np.random.default_rng(seed)
    horizon = logging.shape[0]
    s = rng.choice(S, size=n, p=P0)
    alive = np.ones(n, dtype=bool)
    out = {k: np.zeros((n, horizon)) for k in ("reward", "pscore", "evaluation_pscore")}
    action = np.zeros((n, horizon), dtype=int)
    mask = np.zeros((n, horizon), dtype=bool)
    state = np.zeros((n, horizon, S))
    dist = np.zeros((n, horizon, 2))
    for t in range(horizon):
        mask[:, t] = alive
        state[np.arange(n), t, s] = 1.0
        send = rng.random(n) < logging[t, s]
        action[:, t] = send
        out["pscore"][:, t] = np.where(send, logging[t, s], 1 - logging[t, s])
        out["evaluation_pscore"][:, t] = np.where(send, target[t, s], 1 - target[t, s])
        dist[:, t, 1], dist[:, t, 0] = target[t, s], 1 - target[t, s]
        out["reward"][:, t] = alive & send & (rng.random(n) < CLICK[s])
        alive &= ~send
        cum = np.cumsum(TRANSITION[s], axis=1)
        s = np.minimum((rng.random(n)[:, None] > cum).sum(axis=1), S - 1)
    return Logs(out["reward"], action, out["pscore"], out["evaluation_pscore"], mask, state, dist)


H = 6
LOGGING = np.full((H, S), 0.3)
TARGET = np.tile(np.linspace(0.1, 0.7, S), (H, 1))  # send sooner to engaged states


@pytest.fixture(scope="module")
def logs() -> Logs:
    return simulate(4000, LOGGING, TARGET, seed=1)


def ope_args(logs: Logs) -> dict[str, np.ndarray]:
    return {
        "reward": logs.reward,
        "pscore": logs.pscore,
        "evaluation_pscore": logs.evaluation_pscore,
        "mask": logs.mask,
    }


@pytest.fixture(scope="module")
def fqe(logs: Logs) -> object:
    return fit_fqe(logs.state, logs.action, logs.reward, logs.action_dist, logs.mask)


@pytest.mark.parametrize("name", sorted(SEQUENTIAL_ESTIMATORS))
def test_estimates_within_standard_errors_of_the_truth(name: str, logs: Logs, fqe: object) -> None:
    est = SEQUENTIAL_ESTIMATORS[name]()
    extra = {"q_hat": fqe.q_hat, "v_hat": fqe.v_hat} if name == "wdr" else {}  # type: ignore[attr-defined]
    ci = est.estimate_interval(**ope_args(logs), method="normal", **extra)
    se = (ci["95.0% CI (upper)"] - ci["95.0% CI (lower)"]) / (2 * 1.959964)
    assert abs(ci["mean"] - true_value(TARGET)) < 4 * se


def test_fqe_on_one_hot_states_recovers_the_value(fqe: object) -> None:
    """Tabular features make each per-(step, action) regression a cell mean: error ~ 1/sqrt(n)."""
    assert fqe.policy_value() == pytest.approx(true_value(TARGET), abs=0.02)  # type: ignore[attr-defined]


def test_on_policy_pdis_is_the_mean_return() -> None:
    logs = simulate(500, TARGET, TARGET, seed=2)
    value = PDIS().estimate_policy_value(**ope_args(logs))
    assert value == pytest.approx(logs.reward.sum(axis=1).mean(), rel=1e-12)
    assert WPDIS().estimate_policy_value(**ope_args(logs)) == pytest.approx(value, rel=1e-12)


def test_discounting(logs: Logs) -> None:
    gamma = 0.8
    disc = gamma ** np.arange(H)
    rho = np.cumprod(np.where(logs.mask, logs.evaluation_pscore / logs.pscore, 1.0), axis=1)
    expected = float((rho * logs.reward * disc).sum(axis=1).mean())
    assert PDIS(gamma=gamma).estimate_policy_value(**ope_args(logs)) == pytest.approx(expected)


@pytest.mark.parametrize("name", ["pdis", "wpdis", "wdr"])
def test_bootstrap_equals_a_naive_trajectory_loop(name: str, logs: Logs, fqe: object) -> None:
    est = SEQUENTIAL_ESTIMATORS[name]()
    extra = {"q_hat": fqe.q_hat, "v_hat": fqe.v_hat} if name == "wdr" else {}  # type: ignore[attr-defined]
    args = {**ope_args(logs), **extra}
    rs = np.random.RandomState(0)
    n = logs.reward.shape[0]
    reps = []
    for _ in range(100):
        idx = rs.randint(0, n, size=n)
        reps.append(est.estimate_policy_value(**{k: v[idx] for k, v in args.items()}))
    got = est.estimate_interval(
        **args, n_bootstrap_samples=100, random_state=np.random.RandomState(0)
    )
    assert got["95.0% CI (lower)"] == pytest.approx(np.percentile(reps, 2.5), rel=1e-10)
    assert got["95.0% CI (upper)"] == pytest.approx(np.percentile(reps, 97.5), rel=1e-10)


def test_wdr_has_lower_variance_than_pdis_with_a_good_model(logs: Logs, fqe: object) -> None:
    pdis = PDIS().estimate_interval(**ope_args(logs), method="normal")
    wdr = WDR().estimate_interval(
        **ope_args(logs), method="normal", q_hat=fqe.q_hat, v_hat=fqe.v_hat
    )  # type: ignore[attr-defined]

    def width(ci: dict[str, float]) -> float:
        return ci["95.0% CI (upper)"] - ci["95.0% CI (lower)"]

    assert width(wdr) < width(pdis)


def test_diagnostics_flag_the_horizon_where_weights_explode() -> None:
    """The logger sends half the time, the target almost never: each waiting step multiplies
    the weight of the surviving trajectories by 0.98 / 0.5, and fewer of them survive."""
    horizon, n = 16, 4000
    logs = simulate(n, np.full((horizon, S), 0.5), np.full((horizon, S), 0.02), seed=3)
    diag = sequential_diagnostics(**ope_args(logs))
    assert not diag.reliable
    assert diag.reliability.startswith("unreliable")
    step = diag.unreliable_from_step
    assert step is not None and 0 < step < horizon
    assert f"at step {step} (horizon {step + 1} of {horizon})" in diag.reliability
    assert diag.ess_by_step[step] < diag.ess_floor <= diag.ess_by_step[step - 1]
    log_w = np.cumsum(np.log(np.where(logs.mask, logs.evaluation_pscore / logs.pscore, 1.0)), 1)
    assert diag.max_log_weight == pytest.approx(log_w.max())
    assert diag.frac_exploded == pytest.approx(np.mean(np.exp(log_w[:, -1]) > 1e3))
    assert diag.max_log_weight > np.log(1e3) > 0


def test_diagnostics_on_policy_are_reliable(logs: Logs) -> None:
    on = simulate(300, TARGET, TARGET, seed=4)
    diag = sequential_diagnostics(**ope_args(on))
    assert diag.reliable and diag.ess_final == pytest.approx(300)
    assert diag.frac_exploded == 0 and diag.max_log_weight == pytest.approx(0)
    assert diag.reliability.startswith("reliable")


def test_weighted_estimators_survive_weights_beyond_float_range() -> None:
    """Cumulative weights of 9^400 overflow float64; WPDIS/WDR only need them per step up to a
    common factor, so they stay finite and equal the log-space computation."""
    rng = np.random.default_rng(0)
    n, horizon = 50, 400
    pscore = np.full((n, horizon), 0.1)
    evaluation_pscore = np.where(rng.random((n, 1)) < 0.5, 0.9, 0.1) * np.ones((1, horizon))
    reward = rng.random((n, horizon))
    log_rho = np.cumsum(np.log(evaluation_pscore / pscore), axis=1)
    assert log_rho.max() > np.log(np.finfo(float).max)
    w = np.exp(log_rho - log_rho.max(axis=0))
    expected = float(((w * reward).sum(axis=0) / w.sum(axis=0)).sum())
    args = {"reward": reward, "pscore": pscore, "evaluation_pscore": evaluation_pscore}
    assert WPDIS().estimate_policy_value(**args) == pytest.approx(expected, rel=1e-12)
    zeros = np.zeros((n, horizon))
    assert WDR().estimate_policy_value(**args, q_hat=zeros, v_hat=zeros) == pytest.approx(
        expected, rel=1e-12
    )
    with pytest.warns(RuntimeWarning, match="overflow"):
        assert not np.isfinite(PDIS().estimate_policy_value(**args))
