"""Reward models fitted with K-fold cross-fitting, and the DR estimator that fits its own.

Cross-fitting (Chernozhukov et al. 2018; Narita et al. 2021) predicts the reward of each round
with a model that never saw that round, which removes the own-observation bias of plugging an
in-sample fit into DR. The feature map and fold assignment follow OBP's ``RegressionModel``
(``fitting_method="normal"``): one model per position on ``[context, action_context[action]]``,
folds from ``KFold(n_folds, shuffle=True, random_state)``, classifiers predict
``predict_proba[:, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, cast

import numpy as np

from pushrl.errors import DataError
from pushrl.ope._rounds import RoundData, RoundTerms
from pushrl.ope._validate import (
    ClassifierRewardModel,
    FloatArray,
    IntArray,
    RandomState,
    RewardModel,
    as_float_array,
    as_int_array,
    check_scalar,
)
from pushrl.ope.estimators import BaseOffPolicyEstimator, IntervalMethod, interval_from_terms

# Rows of the (rounds x actions) prediction matrix built per predict call.
_PREDICT_BLOCK_ROWS = 500_000


def _features(context: FloatArray, action: IntArray, action_context: FloatArray) -> FloatArray:
    return np.column_stack([context, action_context[action]])


def _predict_all_actions(
    model: RewardModel, context: FloatArray, action_context: FloatArray
) -> FloatArray:
    """Predict ``q_hat(x_i, a)`` for every round and action, shape ``(n_rounds, n_actions)``."""
    # scikit-learn is imported where a model is fitted or predicted, not at module level: it
    # costs ~1 s of CPU and `import pushrl.ope` must stay cheap for callers that never fit.
    from sklearn.base import is_classifier

    n_rounds, n_actions = context.shape[0], action_context.shape[0]
    out = np.empty((n_rounds, n_actions))
    block = max(1, _PREDICT_BLOCK_ROWS // n_actions)
    for start in range(0, n_rounds, block):
        ctx = context[start : start + block]
        m = ctx.shape[0]
        x = _features(
            np.repeat(ctx, n_actions, axis=0), np.tile(np.arange(n_actions), m), action_context
        )
        pred = (cast(ClassifierRewardModel, model).predict_proba(x)[:, 1]
                if is_classifier(model) else model.predict(x))
        out[start : start + m] = np.asarray(pred, dtype=np.float64).reshape(m, n_actions)
    return out


def fit_reward_model(
    context: np.ndarray,
    action: np.ndarray,
    reward: np.ndarray,
    *,
    n_actions: int,
    len_list: int = 1,
    position: np.ndarray | None = None,
    action_context: np.ndarray | None = None,
    base_model: RewardModel | None = None,
    n_folds: int = 3,
    random_state: int | None = None,
) -> FloatArray:
    """Fit a reward model and return cross-fitted predictions for every action and position.

    Args:
        context: Context features, shape ``(n_rounds, dim_context)``.
        action: Logged actions, shape ``(n_rounds,)``.
        reward: Observed rewards, shape ``(n_rounds,)``.
        n_actions: Number of actions.
        len_list: Number of positions; one model is fitted per position.
        position: Logged positions, shape ``(n_rounds,)``; required if ``len_list > 1``.
        action_context: Action features, shape ``(n_actions, dim_action_context)``; one-hot
            action indicators when ``None``.
        base_model: Unfitted scikit-learn estimator (classifier or regressor); defaults to
            ``LogisticRegression(max_iter=10000)``.
        n_folds: Number of cross-fitting folds; ``1`` fits and predicts in sample.
        random_state: Seed of the fold assignment.

    Returns:
        Estimated rewards, shape ``(n_rounds, n_actions, len_list)``.

    Raises:
        TypeError: For wrong dtypes.
        DataError: For inconsistent shapes, or a fold/position without training rows.
    """
    check_scalar(n_actions, "n_actions", kind="int", low=1)
    check_scalar(len_list, "len_list", kind="int", low=1)
    check_scalar(n_folds, "n_folds", kind="int", low=1)
    ctx = as_float_array(context, "context", 2)
    n_rounds = ctx.shape[0]
    act = as_int_array(action, "action", n_actions, "n_actions")
    rew = as_float_array(reward, "reward", 1)
    if act.shape[0] != n_rounds or rew.shape[0] != n_rounds:
        raise DataError(
            f"`context`, `action` and `reward` must have the same n_rounds, got "
            f"{n_rounds}, {act.shape[0]} and {rew.shape[0]}"
        )
    if position is None:
        if len_list > 1:
            raise DataError(f"`position` is required when len_list={len_list} > 1")
        pos = np.zeros(n_rounds, dtype=np.intp)
    else:
        pos = as_int_array(position, "position", len_list, "len_list")
    a_ctx = (
        np.eye(n_actions)
        if action_context is None
        else as_float_array(action_context, "action_context", 2)
    )
    if a_ctx.shape[0] != n_actions:
        raise DataError(f"`action_context` must have n_actions={n_actions} rows, got {a_ctx.shape}")
    # Lazy for the same reason as in `_predict_all_actions`: only fitting needs scikit-learn.
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold

    model = LogisticRegression(max_iter=10000) if base_model is None else base_model
    if n_folds > n_rounds:
        raise DataError(f"`n_folds`={n_folds} exceeds n_rounds={n_rounds}")
    q_hat = np.empty((n_rounds, n_actions, len_list))
    if n_folds == 1:
        splits = [(np.arange(n_rounds), np.arange(n_rounds))]
    else:
        kf = KFold(n_splits=n_folds, shuffle=True, random_state=random_state)
        splits = list(kf.split(ctx))
    for train, test in splits:
        for k in range(len_list):
            rows = train[pos[train] == k]
            if rows.size == 0:
                raise DataError(f"no training rounds at position {k} in a cross-fitting fold")
            fitted = clone(model).fit(_features(ctx[rows], act[rows], a_ctx), rew[rows])
            q_hat[test, :, k] = _predict_all_actions(fitted, ctx[test], a_ctx)
    return q_hat


@dataclass
class CrossFitDR(BaseOffPolicyEstimator):
    """Doubly Robust whose reward model is fitted here with K-fold cross-fitting.

    Call the usual methods with the extra keyword arguments ``context`` (required) and
    ``action_context``; passing precomputed estimated rewards is an error (use
    :class:`~pushrl.ope.estimators.DoublyRobust` for that).

    Attributes:
        base_model: Unfitted scikit-learn estimator; ``LogisticRegression(max_iter=10000)``
            when ``None``.
        n_folds: Number of cross-fitting folds, ``>= 2``.
        random_state: Seed of the fold assignment (deterministic by default; ``None`` draws
            fresh folds on every call).
    """

    base_model: RewardModel | None = None
    n_folds: int = 3
    random_state: int | None = 0
    estimator_name: str = "dr-cf"
    requires_reward_model: ClassVar[bool] = True
    requires_context: ClassVar[bool] = True
    _last_estimated_rewards: FloatArray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        check_scalar(self.n_folds, "n_folds", kind="int", low=2)
        if self.random_state is not None:
            check_scalar(self.random_state, "random_state", kind="int", low=0)
        if self.base_model is not None and not hasattr(self.base_model, "fit"):
            raise TypeError(
                f"`base_model` must be a scikit-learn estimator, got {type(self.base_model)}"
            )

    def _estimate_round_rewards(self, rounds: RoundData) -> RoundTerms:
        return RoundTerms(direct=rounds.direct, weighted=rounds.weighted_residual)

    @property
    def estimated_rewards_(self) -> FloatArray | None:
        """Cross-fitted predictions of the last call, shape ``(n_rounds, n_actions, len_list)``."""
        return self._last_estimated_rewards

    def round_terms(  # type: ignore[override]
        self,
        reward: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        action_dist: np.ndarray,
        position: np.ndarray | None = None,
        estimated_rewards_by_reg_model: np.ndarray | None = None,
        *,
        estimated_rewards: np.ndarray | None = None,
        context: np.ndarray | None = None,
        action_context: np.ndarray | None = None,
    ) -> RoundTerms:
        """Fit the reward model by cross-fitting, then return the DR per-round terms.

        Args:
            reward: Observed rewards, shape ``(n_rounds,)``.
            action: Logged actions, shape ``(n_rounds,)``.
            pscore: Logging propensities, shape ``(n_rounds,)``.
            action_dist: Evaluation-policy probabilities, ``(n_rounds, n_actions, len_list)``.
            position: Logged positions, shape ``(n_rounds,)``.
            estimated_rewards_by_reg_model: Must be ``None``.
            estimated_rewards: Must be ``None``.
            context: Context features, shape ``(n_rounds, dim_context)``.
            action_context: Action features, shape ``(n_actions, dim_action_context)``.

        Raises:
            TypeError: If ``context`` is missing or estimated rewards are passed.
        """
        if estimated_rewards_by_reg_model is not None or estimated_rewards is not None:
            raise TypeError(
                "CrossFitDR fits its own reward model; pass `context` instead of estimated "
                "rewards, or use DoublyRobust"
            )
        if context is None:
            raise TypeError("CrossFitDR requires `context` (shape (n_rounds, dim_context))")
        dist = np.asarray(action_dist)
        dist3 = dist[:, :, np.newaxis] if dist.ndim == 2 else dist
        if dist3.ndim != 3:
            raise DataError(
                f"`action_dist` must have shape (n_rounds, n_actions, len_list), got {dist.shape}"
            )
        q_hat = fit_reward_model(
            context,
            action,
            reward,
            n_actions=dist3.shape[1],
            len_list=dist3.shape[2],
            position=position,
            action_context=action_context,
            base_model=self.base_model,
            n_folds=self.n_folds,
            random_state=self.random_state,
        )
        self._last_estimated_rewards = q_hat
        return super().round_terms(reward, action, pscore, dist3, position, q_hat)

    def estimate_policy_value(  # type: ignore[override]
        self,
        reward: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        action_dist: np.ndarray,
        position: np.ndarray | None = None,
        estimated_rewards_by_reg_model: np.ndarray | None = None,
        *,
        estimated_rewards: np.ndarray | None = None,
        context: np.ndarray | None = None,
        action_context: np.ndarray | None = None,
    ) -> float:
        """Estimate the policy value; arguments as in :meth:`round_terms`."""
        return self.round_terms(
            reward,
            action,
            pscore,
            action_dist,
            position,
            estimated_rewards_by_reg_model,
            estimated_rewards=estimated_rewards,
            context=context,
            action_context=action_context,
        ).value()

    def estimate_interval(  # type: ignore[override]
        self,
        reward: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        action_dist: np.ndarray,
        position: np.ndarray | None = None,
        estimated_rewards_by_reg_model: np.ndarray | None = None,
        *,
        estimated_rewards: np.ndarray | None = None,
        context: np.ndarray | None = None,
        action_context: np.ndarray | None = None,
        alpha: float = 0.05,
        n_bootstrap_samples: int = 10000,
        random_state: RandomState = None,
        method: IntervalMethod = "bootstrap",
    ) -> dict[str, float]:
        """Interval of the policy value; the reward model is fitted once, not per resample."""
        terms = self.round_terms(
            reward,
            action,
            pscore,
            action_dist,
            position,
            estimated_rewards_by_reg_model,
            estimated_rewards=estimated_rewards,
            context=context,
            action_context=action_context,
        )
        return interval_from_terms(
            terms,
            alpha=alpha,
            n_bootstrap_samples=n_bootstrap_samples,
            random_state=random_state,
            method=method,
        )
