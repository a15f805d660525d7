"""Intervals for several estimators at once, and paired differences between two policies.

Both share one set of bootstrap resamples across everything they compute: the columns of
all estimators (and of the candidate and the baseline) are stacked, de-duplicated, and
resampled together (see :mod:`pushrl.ope._bootstrap`). For a paired difference that is the
point: the candidate and the baseline are evaluated on the *same* resampled logged rounds, so
the interval of the improvement reflects the correlation between the two estimates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pushrl.errors import DataError
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
    resolve_estimated_rewards,
    validate_bandit_inputs,
    validate_interval_args,
)
from pushrl.ope.estimators import BaseOffPolicyEstimator, IntervalMethod


@dataclass(frozen=True)
class IntervalEstimate:
    """A point estimate with its ``1 - alpha`` confidence interval.

    Attributes:
        name: Estimator (or comparison) name.
        value: Point estimate on the full sample.
        lower: Lower confidence bound.
        upper: Upper confidence bound.
        alpha: Miscoverage level.
        method: ``"bootstrap"``, ``"normal"`` or ``"betting"``.
        bootstrap_mean: Mean of the bootstrap replicates (OBP's ``mean``); the point estimate
            for the normal method.
    """

    name: str
    value: float
    lower: float
    upper: float
    alpha: float
    method: str
    bootstrap_mean: float

    def as_obp_dict(self) -> dict[str, float]:
        """OBP's ``{"mean", "95.0% CI (lower)", "95.0% CI (upper)"}`` dictionary."""
        lower_key, upper_key = interval_keys(self.alpha)
        return {"mean": self.bootstrap_mean, lower_key: self.lower, upper_key: self.upper}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def _stack_unique(terms_list: Sequence[RoundTerms]) -> tuple[FloatArray, list[list[int | None]]]:
    """Stack the distinct per-round columns of several terms (shared arrays count once)."""
    columns: list[FloatArray] = []
    seen: dict[int, int] = {}
    layout: list[list[int | None]] = []
    for terms in terms_list:
        idx: list[int | None] = []
        for arr in terms.columns():
            if arr is None:
                idx.append(None)
                continue
            if id(arr) not in seen:
                seen[id(arr)] = len(columns)
                columns.append(arr)
            idx.append(seen[id(arr)])
        layout.append(idx)
    return np.column_stack(columns), layout


def bootstrap_replicates(
    terms_list: Sequence[RoundTerms], n_bootstrap_samples: int, random_state: RandomState = None
) -> FloatArray:
    """Bootstrap replicates of several estimates on shared resamples.

    Args:
        terms_list: Per-round terms of each estimate; all over the same ``n_rounds``.
        n_bootstrap_samples: Number of resamples ``B``.
        random_state: Seed or generator.

    Returns:
        Replicates, shape ``(B, len(terms_list))``.
    """
    matrix, layout = _stack_unique(terms_list)
    means = bootstrap_means(matrix, n_bootstrap_samples, random_state)
    out = np.empty((n_bootstrap_samples, len(terms_list)))
    for j, (d, w, c) in enumerate(layout):
        out[:, j] = RoundTerms.combine(
            0.0 if d is None else means[:, d],
            0.0 if w is None else means[:, w],
            1.0 if c is None else means[:, c],
        )
    return out


def _interval(
    name: str, point: float, bounds: dict[str, float], alpha: float, method: str
) -> IntervalEstimate:
    """Wrap an OBP-style interval dictionary (from either method) with its point estimate."""
    lower_key, upper_key = interval_keys(alpha)
    return IntervalEstimate(
        name, point, bounds[lower_key], bounds[upper_key], alpha, method, bounds["mean"]
    )


def _reduce(
    reward: npt.ArrayLike,
    action: npt.ArrayLike,
    pscore: npt.ArrayLike,
    action_dist: npt.ArrayLike,
    position: npt.ArrayLike | None,
    q_hat: npt.ArrayLike | None,
    require_q: bool,
    caller: str,
) -> RoundData:
    inputs = validate_bandit_inputs(
        reward,
        action,
        pscore,
        action_dist,
        position,
        q_hat,
        require_estimated_rewards=require_q,
        caller=caller,
    )
    return reduce_rounds(inputs)


def estimate_intervals(
    estimators: Sequence[BaseOffPolicyEstimator],
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
) -> dict[str, IntervalEstimate]:
    """Point estimates and intervals of several estimators, validated and resampled once.

    With the same ``random_state`` each estimator's interval equals what its own
    ``estimate_interval`` returns, but the inputs are validated and reduced once and the
    resampling (the expensive part) is shared.

    Args:
        estimators: Estimators with distinct ``estimator_name`` (not :class:`CrossFitDR`,
            which needs ``context``).
        reward: Observed rewards, shape ``(n_rounds,)``.
        action: Logged actions, shape ``(n_rounds,)``.
        pscore: Logging propensities, shape ``(n_rounds,)``.
        action_dist: Evaluation-policy probabilities, ``(n_rounds, n_actions, len_list)``.
        position: Logged positions, shape ``(n_rounds,)``.
        estimated_rewards_by_reg_model: Reward-model predictions, shape of ``action_dist``.
        estimated_rewards: Alias of ``estimated_rewards_by_reg_model``.
        alpha: Miscoverage level.
        n_bootstrap_samples: Number of bootstrap resamples.
        random_state: Seed or generator.
        method: ``"bootstrap"``, ``"normal"`` or ``"betting"``.
        reward_range: Known reward range for ``"betting"`` (see
            :meth:`BaseOffPolicyEstimator.estimate_interval`).

    Returns:
        ``{estimator_name: IntervalEstimate}`` in the order given.

    Raises:
        ValueError: For duplicate estimator names or an empty list.
        TypeError: For an estimator that needs ``context``.
    """
    validate_interval_args(alpha, n_bootstrap_samples, random_state, method)
    names = [e.estimator_name for e in estimators]
    if not names:
        raise ValueError("`estimators` must not be empty")
    if len(set(names)) != len(names):
        raise ValueError(f"estimator names must be distinct, got {names}")
    for e in estimators:
        if getattr(e, "requires_context", False):
            raise TypeError(f"{e.estimator_name} needs `context`; call it on its own")
    q_hat = resolve_estimated_rewards(estimated_rewards_by_reg_model, estimated_rewards)
    need_q = [e.estimator_name for e in estimators if e.requires_reward_model]
    rounds = _reduce(
        reward, action, pscore, action_dist, position, q_hat, bool(need_q), ", ".join(need_q)
    )
    terms = [e._estimate_round_rewards(rounds) for e in estimators]
    if method == "normal":
        bounds = [normal_interval(t.value(), t.influence(), alpha) for t in terms]
    elif method == "betting":
        bounds = [
            e.betting_interval(rounds, t, alpha, reward_range)
            for e, t in zip(estimators, terms, strict=True)
        ]
    else:
        reps = bootstrap_replicates(terms, n_bootstrap_samples, random_state)
        bounds = [percentile_interval(reps[:, j], alpha) for j in range(len(terms))]
    return {
        name: _interval(name, t.value(), b, alpha, method)
        for name, t, b in zip(names, terms, bounds, strict=True)
    }


@dataclass(frozen=True)
class PairedDifference:
    """Estimated improvement of a candidate over a baseline on the same logged rounds.

    Attributes:
        estimator_name: Estimator used for both policies.
        candidate_value: Candidate's estimated policy value.
        baseline_value: Baseline's estimated policy value.
        difference: ``candidate_value - baseline_value``.
        lower: Lower ``1 - alpha`` bound of the difference.
        upper: Upper ``1 - alpha`` bound of the difference.
        alpha: Miscoverage level.
        method: ``"bootstrap"`` or ``"normal"``.
    """

    estimator_name: str
    candidate_value: float
    baseline_value: float
    difference: float
    lower: float
    upper: float
    alpha: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def paired_difference_from_terms(
    candidate: RoundTerms,
    baseline: RoundTerms,
    *,
    estimator_name: str = "",
    alpha: float = 0.05,
    n_bootstrap_samples: int = 10000,
    random_state: RandomState = None,
    method: IntervalMethod = "bootstrap",
) -> PairedDifference:
    """Interval of ``value(candidate) - value(baseline)`` from per-round terms.

    The two estimates are recomputed on identical resamples (bootstrap) or linearised
    jointly (normal: the standard error of the per-round influence differences).

    Raises:
        DataError: If the two terms cover different numbers of rounds.
    """
    validate_interval_args(alpha, n_bootstrap_samples, random_state, method)
    if method == "betting":
        raise ValueError(
            "`method` 'betting' is not implemented for paired differences; use 'bootstrap' "
            "or 'normal'"
        )
    if candidate.n_rounds != baseline.n_rounds:
        raise DataError(
            f"candidate and baseline must be evaluated on the same rounds, got "
            f"{candidate.n_rounds} and {baseline.n_rounds}"
        )
    cand, base = candidate.value(), baseline.value()
    if method == "normal":
        bounds = normal_interval(cand - base, candidate.influence() - baseline.influence(), alpha)
    else:
        reps = bootstrap_replicates([candidate, baseline], n_bootstrap_samples, random_state)
        bounds = percentile_interval(reps[:, 0] - reps[:, 1], alpha)
    est = _interval(estimator_name, cand - base, bounds, alpha, method)
    return PairedDifference(
        estimator_name, cand, base, cand - base, est.lower, est.upper, alpha, method
    )


def paired_difference_interval(
    estimator: BaseOffPolicyEstimator,
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    candidate_action_dist: np.ndarray,
    baseline_action_dist: np.ndarray | None = None,
    position: np.ndarray | None = None,
    candidate_estimated_rewards: np.ndarray | None = None,
    baseline_estimated_rewards: np.ndarray | None = None,
    *,
    alpha: float = 0.05,
    n_bootstrap_samples: int = 10000,
    random_state: RandomState = None,
    method: IntervalMethod = "bootstrap",
) -> PairedDifference:
    """Improvement of a candidate policy over a baseline, evaluated on the same logs.

    Args:
        estimator: Estimator applied to both policies.
        reward: Observed rewards, shape ``(n_rounds,)``.
        action: Logged actions, shape ``(n_rounds,)``.
        pscore: Logging propensities, shape ``(n_rounds,)``.
        candidate_action_dist: Candidate's probabilities, ``(n_rounds, n_actions, len_list)``.
        baseline_action_dist: Baseline's probabilities, same shape; ``None`` means the
            baseline is the logging policy itself, valued on-policy as ``mean(reward)``.
        position: Logged positions, shape ``(n_rounds,)``.
        candidate_estimated_rewards: Reward model for the candidate (shape of the action
            dists); the same array usually serves both policies.
        baseline_estimated_rewards: Reward model for the baseline; defaults to the
            candidate's.
        alpha: Miscoverage level; ``lower`` is a two-sided ``1 - alpha`` bound.
        n_bootstrap_samples: Number of bootstrap resamples.
        random_state: Seed or generator.
        method: ``"bootstrap"`` or ``"normal"``.

    Returns:
        The paired difference and its interval.
    """
    validate_interval_args(alpha, n_bootstrap_samples, random_state, method)
    need_q = estimator.requires_reward_model
    cand_rounds = _reduce(
        reward,
        action,
        pscore,
        candidate_action_dist,
        position,
        candidate_estimated_rewards,
        need_q,
        estimator.estimator_name,
    )
    cand_terms = estimator._estimate_round_rewards(cand_rounds)
    if baseline_action_dist is None:
        base_terms = RoundTerms(direct=None, weighted=cand_rounds.reward)
    else:
        q_base = (
            candidate_estimated_rewards
            if baseline_estimated_rewards is None
            else baseline_estimated_rewards
        )
        base_rounds = _reduce(
            reward,
            action,
            pscore,
            baseline_action_dist,
            position,
            q_base,
            need_q,
            estimator.estimator_name,
        )
        base_terms = estimator._estimate_round_rewards(base_rounds)
    return paired_difference_from_terms(
        cand_terms,
        base_terms,
        estimator_name=estimator.estimator_name,
        alpha=alpha,
        n_bootstrap_samples=n_bootstrap_samples,
        random_state=random_state,
        method=method,
    )
