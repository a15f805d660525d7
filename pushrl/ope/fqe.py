"""Fitted Q evaluation (FQE, Le et al. 2019) for finite-horizon timing policies.

Backward induction over the horizon: for ``t = H-1, ..., 0`` and each discrete action ``a``,
a clone of a scikit-learn regressor is fitted on the logged steps ``(s_t, a_t = a)`` to the
target ``r_t + gamma * V_{t+1}(s_{t+1})``, where ``V_{t+1}(s) = sum_a pi_e(a|s) Q_{t+1}(s, a)``
is 0 once the episode has ended. One model per (step, action) keeps even a linear regressor
free to represent action-specific, time-varying values, which is what a send-timing policy
needs. Where no logged step took ``a`` at ``t`` the prediction falls back to the mean target of
that step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pushrl.ope._validate import (
    FloatArray,
    IntArray,
    RewardModel,
    check_scalar,
    validate_fqe_inputs,
)


@dataclass(frozen=True)
class FQEResult:
    """Q-function predictions on the logged trajectories.

    Attributes:
        q_all: ``Q_t(s_it, a)`` for every action, shape ``(n_traj, horizon, n_actions)``;
            0 on masked steps.
        q_hat: ``Q_t(s_it, a_it)`` at the logged action, shape ``(n_traj, horizon)``.
        v_hat: ``sum_a pi_e(a|s_it) Q_t(s_it, a)``, shape ``(n_traj, horizon)``.
        gamma: Discount used in the targets.
    """

    q_all: FloatArray
    q_hat: FloatArray
    v_hat: FloatArray
    gamma: float

    def policy_value(self) -> float:
        """FQE's own (direct-method) estimate: the mean of ``V_0`` over trajectories."""
        return float(self.v_hat[:, 0].mean())


def _fit_predict_step(
    model: RewardModel,
    x: FloatArray,
    act: IntArray,
    target: FloatArray,
    valid: np.ndarray,
    n_actions: int,
) -> FloatArray:
    """Fit one model per action on the valid rows of step t; predict all actions, all rows."""
    from sklearn.base import clone  # scikit-learn only when fitting (~1 s to import)

    out = np.zeros((x.shape[0], n_actions))
    fallback = float(target[valid].mean()) if valid.any() else 0.0
    for a in range(n_actions):
        rows = valid & (act == a)
        if rows.sum() < 2:
            out[:, a] = target[rows].mean() if rows.any() else fallback
            continue
        fitted = clone(model).fit(x[rows], target[rows])
        out[:, a] = fitted.predict(x)
    return out


def fit_fqe(
    state: np.ndarray,
    action: np.ndarray,
    reward: np.ndarray,
    action_dist: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    gamma: float = 1.0,
    base_model: RewardModel | None = None,
) -> FQEResult:
    """Fit a finite-horizon Q function of the evaluation policy by backward induction.

    Args:
        state: Per-step state features, shape ``(n_traj, horizon, dim_state)``.
        action: Logged actions, shape ``(n_traj, horizon)``.
        reward: Per-step rewards, shape ``(n_traj, horizon)``.
        action_dist: Evaluation-policy probabilities of every action at every step, shape
            ``(n_traj, horizon, n_actions)``.
        mask: True on steps that happened; ``None`` for all.
        gamma: Discount factor in [0, 1].
        base_model: Unfitted scikit-learn regressor; ``Ridge(alpha=1e-3)`` when ``None``.

    Returns:
        Q at every action, at the logged action, and the state values under the policy.
    """
    check_scalar(gamma, "gamma", low=0.0, high=1.0)
    if base_model is not None and not hasattr(base_model, "fit"):
        raise TypeError(f"`base_model` must be a scikit-learn regressor, got {type(base_model)}")
    st, act, rew, dist, valid = validate_fqe_inputs(state, action, reward, action_dist, mask)
    if base_model is None:
        from sklearn.linear_model import Ridge  # only when fitting (~1 s to import)

        base_model = Ridge(alpha=1e-3)
    model = base_model
    n, horizon, n_actions = dist.shape
    q_all = np.zeros((n, horizon, n_actions))
    v_next = np.zeros(n)
    for t in range(horizon - 1, -1, -1):
        # V_{t+1} is 0 where step t+1 did not happen (episode over or horizon reached).
        target = rew[:, t] + gamma * v_next
        q_t = _fit_predict_step(model, st[:, t], act[:, t], target, valid[:, t], n_actions)
        q_all[:, t] = np.where(valid[:, t, np.newaxis], q_t, 0.0)
        v_next = np.einsum("ij,ij->i", dist[:, t], q_all[:, t])
    rows = np.arange(n)[:, np.newaxis]
    q_hat = q_all[rows, np.arange(horizon)[np.newaxis, :], act]
    v_hat = np.einsum("ntj,ntj->nt", dist, q_all)
    return FQEResult(q_all=q_all, q_hat=np.where(valid, q_hat, 0.0), v_hat=v_hat, gamma=gamma)
