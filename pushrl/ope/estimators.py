"""Bandit off-policy estimators with Open Bandit Pipeline's calling convention.

Each estimator is a small dataclass whose fields are its hyperparameters. The public methods
(:meth:`BaseOffPolicyEstimator.estimate_policy_value`, ``estimate_interval``, ``round_terms``)
validate once, reduce the arrays to per-round vectors and call the single hook
``_estimate_round_rewards``, which returns the estimate's :class:`RoundTerms`.

Notation: ``w_i = pi_e(a_i | x_i, k_i) / pscore_i``, ``q_hat(x_i, pi_e)`` the reward model's
expectation under the evaluation policy, all at the logged position ``k_i``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from pushrl.ope._betting import betting_interval, term_bounds
from pushrl.ope._bootstrap import (
    bootstrap_means,
    interval_keys,
    normal_interval,
    percentile_interval,
)
from pushrl.ope._rounds import RoundData, RoundTerms, reduce_rounds
from pushrl.ope._validate import (
    FloatArray,
    RandomState,
    check_scalar,
    resolve_estimated_rewards,
    validate_bandit_inputs,
    validate_interval_args,
)

IntervalMethod = Literal["bootstrap", "normal", "betting"]


def interval_from_terms(
    terms: RoundTerms,
    *,
    alpha: float = 0.05,
    n_bootstrap_samples: int = 10000,
    random_state: RandomState = None,
    method: IntervalMethod = "bootstrap",
) -> dict[str, float]:
    """Confidence interval of an estimate given its per-round terms.

    The bootstrap resamples rounds and recomputes ``mean(direct) + mean(weighted) /
    mean(normaliser)`` on each resample, so self-normalised estimators are re-normalised inside
    every resample.

    Args:
        terms: The estimate's per-round terms.
        alpha: Miscoverage level; nominal coverage is ``1 - alpha``.
        n_bootstrap_samples: Number of bootstrap resamples.
        random_state: Seed or generator of the resampling.
        method: ``"bootstrap"`` (percentile; ``mean`` is the mean of the replicates, as in
            OBP) or ``"normal"`` (delta method; ``mean`` is the point estimate).

    Returns:
        ``{"mean": ..., "<level>% CI (lower)": ..., "<level>% CI (upper)": ...}``.
    """
    validate_interval_args(alpha, n_bootstrap_samples, random_state, method)
    if method == "betting":
        raise ValueError(
            "`method` 'betting' needs the rounds, not only the terms: call the estimator's "
            "`estimate_interval` or `estimate_intervals`"
        )
    if method == "normal":
        return normal_interval(terms.value(), terms.influence(), alpha)
    if terms.normaliser is None:
        # The estimate is linear in its columns, so a replicate is the resampled mean of the
        # per-round rewards (what OBP resamples): one column to gather instead of two, on the
        # same resamples; the replicates agree with the per-column route to rounding.
        means = bootstrap_means(terms.round_rewards()[:, np.newaxis], n_bootstrap_samples,
                                random_state)
        return percentile_interval(means[:, 0], alpha)
    present = [c for c in terms.columns() if c is not None]
    means = bootstrap_means(np.column_stack(present), n_bootstrap_samples, random_state)
    return percentile_interval(resampled_values(terms, means), alpha)


def resampled_values(terms: RoundTerms, means: FloatArray, offset: int = 0) -> FloatArray:
    """Recombine resampled column means into replicates of the estimate.

    Args:
        terms: The estimate's terms; its non-``None`` columns occupy ``means[:, offset:]`` in
            (direct, weighted, normaliser) order.
        means: Resampled means, shape ``(B, k)``.
        offset: First column of ``terms`` in ``means``.

    Returns:
        Replicates, shape ``(B,)``.
    """
    parts: list[np.ndarray | float] = []
    col = offset
    for arr, missing in zip(terms.columns(), (0.0, 0.0, 1.0), strict=True):
        if arr is None:
            parts.append(missing)
        else:
            parts.append(means[:, col])
            col += 1
    return RoundTerms.combine(parts[0], parts[1], parts[2])


class BaseOffPolicyEstimator(ABC):
    """Template of every bandit estimator: validation, reduction, intervals.

    Subclasses are dataclasses that declare their hyperparameters and ``estimator_name`` and
    implement only :meth:`_estimate_round_rewards`.
    """

    estimator_name: str
    requires_reward_model: ClassVar[bool] = False

    @abstractmethod
    def _estimate_round_rewards(self, rounds: RoundData) -> RoundTerms:
        """Return the per-round terms of the estimate from the reduced per-round vectors."""

    def round_terms(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        action_dist: np.ndarray,
        position: np.ndarray | None = None,
        estimated_rewards_by_reg_model: np.ndarray | None = None,
        *,
        estimated_rewards: np.ndarray | None = None,
    ) -> RoundTerms:
        """Validate the inputs and return the estimate's per-round terms.

        Arguments are those of :meth:`estimate_policy_value`.
        """
        return self._estimate_round_rewards(
            self._reduce(
                reward,
                action,
                pscore,
                action_dist,
                position,
                resolve_estimated_rewards(estimated_rewards_by_reg_model, estimated_rewards),
            )
        )

    def _reduce(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        action_dist: np.ndarray,
        position: np.ndarray | None,
        q_hat: np.ndarray | None,
    ) -> RoundData:
        inputs = validate_bandit_inputs(
            reward,
            action,
            pscore,
            action_dist,
            position,
            q_hat,
            require_estimated_rewards=self.requires_reward_model,
            caller=self.estimator_name,
        )
        return reduce_rounds(inputs)

    def estimate_policy_value(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        action_dist: np.ndarray,
        position: np.ndarray | None = None,
        estimated_rewards_by_reg_model: np.ndarray | None = None,
        *,
        estimated_rewards: np.ndarray | None = None,
    ) -> float:
        """Estimate the policy value of the evaluation policy.

        Args:
            reward: Observed rewards, shape ``(n_rounds,)``.
            action: Logged actions, shape ``(n_rounds,)``.
            pscore: Logging propensity of the logged action, shape ``(n_rounds,)``.
            action_dist: Evaluation-policy probabilities, shape
                ``(n_rounds, n_actions, len_list)`` (or ``(n_rounds, n_actions)``).
            position: Logged positions, shape ``(n_rounds,)``; required if ``len_list > 1``.
            estimated_rewards_by_reg_model: Reward-model predictions, shape of
                ``action_dist``; required by DM and the DR family.
            estimated_rewards: Alias of ``estimated_rewards_by_reg_model``.

        Returns:
            The estimated policy value.
        """
        return self.round_terms(
            reward,
            action,
            pscore,
            action_dist,
            position,
            estimated_rewards_by_reg_model,
            estimated_rewards=estimated_rewards,
        ).value()

    def estimate_round_rewards(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        action_dist: np.ndarray,
        position: np.ndarray | None = None,
        estimated_rewards_by_reg_model: np.ndarray | None = None,
        *,
        estimated_rewards: np.ndarray | None = None,
    ) -> FloatArray:
        """Per-round values whose mean is the estimate, as OBP's ``_estimate_round_rewards``.

        Returns:
            Shape ``(n_rounds,)``.
        """
        return self.round_terms(
            reward,
            action,
            pscore,
            action_dist,
            position,
            estimated_rewards_by_reg_model,
            estimated_rewards=estimated_rewards,
        ).round_rewards()

    def estimate_interval(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        action_dist: np.ndarray,
        position: np.ndarray | None = None,
        estimated_rewards_by_reg_model: np.ndarray | None = None,
        *,
        estimated_rewards: np.ndarray | None = None,
        alpha: float = 0.05,
        n_bootstrap_samples: int = 10000,
        random_state: RandomState = None,
        method: IntervalMethod = "bootstrap",
        reward_range: tuple[float, float] | None = None,
    ) -> dict[str, float]:
        """Estimate a ``1 - alpha`` confidence interval of the policy value.

        Array arguments are those of :meth:`estimate_policy_value`. With
        ``random_state=np.random.RandomState(seed)`` the bootstrap draws OBP's index stream
        for ``random_state=seed`` (identical intervals for the non-self-normalised
        estimators; SNIPW/SNDR differ on purpose, as they are re-normalised per resample).

        Args:
            reward: See :meth:`estimate_policy_value`.
            action: See :meth:`estimate_policy_value`.
            pscore: See :meth:`estimate_policy_value`.
            action_dist: See :meth:`estimate_policy_value`.
            position: See :meth:`estimate_policy_value`.
            estimated_rewards_by_reg_model: See :meth:`estimate_policy_value`.
            estimated_rewards: See :meth:`estimate_policy_value`.
            alpha: Miscoverage level.
            n_bootstrap_samples: Number of bootstrap resamples.
            random_state: Seed or generator of the bootstrap.
            method: ``"bootstrap"``, ``"normal"`` or ``"betting"`` (finite-sample valid for
                heavy-tailed weights and rare rewards; see :mod:`pushrl.ope._betting`).
            reward_range: Known ``(low, high)`` range of the reward, used by ``"betting"``
                only; default the observed range widened to include 0.

        Returns:
            ``{"mean": ..., "<level>% CI (lower)": ..., "<level>% CI (upper)": ...}``.
        """
        validate_interval_args(alpha, n_bootstrap_samples, random_state, method)
        rounds = self._reduce(
            reward,
            action,
            pscore,
            action_dist,
            position,
            resolve_estimated_rewards(estimated_rewards_by_reg_model, estimated_rewards),
        )
        terms = self._estimate_round_rewards(rounds)
        if method == "betting":
            return self.betting_interval(rounds, terms, alpha, reward_range)
        return interval_from_terms(
            terms,
            alpha=alpha,
            n_bootstrap_samples=n_bootstrap_samples,
            random_state=random_state,
            method=method,
        )

    def betting_interval(
        self,
        rounds: RoundData,
        terms: RoundTerms,
        alpha: float,
        reward_range: tuple[float, float] | None = None,
    ) -> dict[str, float]:
        """Betting interval (:mod:`pushrl.ope._betting`) of ``terms``, computed from ``rounds``.

        Returns:
            ``{"mean": point estimate, "<level>% CI (lower)": ..., "<level>% CI (upper)": ...}``.
        """
        bounds = term_bounds(self._estimate_round_rewards, rounds, reward_range)
        res = betting_interval(terms, bounds, alpha)
        lower_key, upper_key = interval_keys(alpha)
        return {"mean": res["mean"], lower_key: res["lower"], upper_key: res["upper"]}

    def hyperparameters(self) -> dict[str, Any]:
        """The estimator's hyperparameters (dataclass fields other than the name)."""
        return {
            k: v for k, v in vars(self).items() if k != "estimator_name" and not k.startswith("_")
        }


@dataclass
class DirectMethod(BaseOffPolicyEstimator):
    """Direct Method: ``mean_i q_hat(x_i, pi_e)``. Unbiased only if the reward model is."""

    estimator_name: str = "dm"
    requires_reward_model: ClassVar[bool] = True

    def _estimate_round_rewards(self, rounds: RoundData) -> RoundTerms:
        return RoundTerms(direct=rounds.direct, weighted=None)


@dataclass
class InverseProbabilityWeighting(BaseOffPolicyEstimator):
    """Inverse Probability Weighting: ``mean_i w_i r_i``. Unbiased under full support."""

    estimator_name: str = "ipw"

    def _estimate_round_rewards(self, rounds: RoundData) -> RoundTerms:
        return RoundTerms(direct=None, weighted=rounds.weighted_reward)


@dataclass
class SelfNormalizedInverseProbabilityWeighting(BaseOffPolicyEstimator):
    """Self-normalised IPW: ``sum_i w_i r_i / sum_i w_i``. Biased, consistent, bounded."""

    estimator_name: str = "snipw"

    def _estimate_round_rewards(self, rounds: RoundData) -> RoundTerms:
        return RoundTerms(direct=None, weighted=rounds.weighted_reward, normaliser=rounds.iw)


@dataclass
class DoublyRobust(BaseOffPolicyEstimator):
    """Doubly Robust: ``mean_i [q_hat(x_i, pi_e) + w_i (r_i - q_hat(x_i, a_i))]``."""

    estimator_name: str = "dr"
    requires_reward_model: ClassVar[bool] = True

    def _estimate_round_rewards(self, rounds: RoundData) -> RoundTerms:
        return RoundTerms(direct=rounds.direct, weighted=rounds.weighted_residual)


@dataclass
class SelfNormalizedDoublyRobust(BaseOffPolicyEstimator):
    """Self-normalised DR: the DR correction divided by ``mean_i w_i``."""

    estimator_name: str = "sndr"
    requires_reward_model: ClassVar[bool] = True

    def _estimate_round_rewards(self, rounds: RoundData) -> RoundTerms:
        return RoundTerms(
            direct=rounds.direct, weighted=rounds.weighted_residual, normaliser=rounds.iw
        )


@dataclass
class SwitchDoublyRobust(BaseOffPolicyEstimator):
    """Switch-DR: the DR correction only where ``w_i <= tau`` (DM elsewhere).

    Attributes:
        tau: Switching threshold on the importance weight, ``>= 0``; ``inf`` gives DR and
            ``0`` (with positive weights) gives DM.
    """

    tau: float = 1.0
    estimator_name: str = "switch-dr"
    requires_reward_model: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_scalar(self.tau, "tau", low=0.0, allow_inf=True)

    def _estimate_round_rewards(self, rounds: RoundData) -> RoundTerms:
        keep = rounds.iw <= self.tau
        return RoundTerms(direct=rounds.direct, weighted=rounds.weighted_residual * keep)


@dataclass
class DoublyRobustWithShrinkage(BaseOffPolicyEstimator):
    """DR with optimistic shrinkage (DR-os): weights ``lambda_ w / (w^2 + lambda_)``.

    Attributes:
        lambda_: Shrinkage strength, ``>= 0``; ``0`` gives DM, ``inf`` gives DR.
    """

    lambda_: float = 0.0
    estimator_name: str = "dr-os"
    requires_reward_model: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_scalar(self.lambda_, "lambda_", low=0.0, allow_inf=True)

    def _estimate_round_rewards(self, rounds: RoundData) -> RoundTerms:
        w = rounds.iw
        if self.lambda_ == 0:
            shrunk = np.zeros_like(w)
        elif np.isinf(self.lambda_):
            shrunk = w
        else:
            shrunk = (self.lambda_ * w) / (w**2 + self.lambda_)
        return RoundTerms(direct=rounds.direct, weighted=shrunk * rounds.residual)


DM = DirectMethod
IPW = InverseProbabilityWeighting
SNIPW = SelfNormalizedInverseProbabilityWeighting
DR = DoublyRobust
SNDR = SelfNormalizedDoublyRobust
SwitchDR = SwitchDoublyRobust
DRos = DoublyRobustWithShrinkage
