"""Sequential (per-trajectory) off-policy estimators for timing policies.

Inputs are per-step arrays of shape ``(n_traj, horizon)``: ``reward``, ``pscore`` (logging
probability of the logged action), ``evaluation_pscore`` (evaluation-policy probability of the
logged action) and ``mask`` (True on steps that happened; False after the episode ended). With
``rho_{i,t} = prod_{s<=t} pi_e / pi_b`` the cumulative importance weight (constant after the
episode ends, where rewards are 0):

* PDIS (per-decision IS, Precup et al. 2000): ``sum_t g^t mean_i rho_it r_it``. Unbiased.
* WPDIS (weighted PDIS): ``sum_t g^t sum_i rho_it r_it / sum_i rho_it``. Biased, consistent,
  much lower variance.
* WDR (weighted doubly robust, Thomas & Brunskill 2016)::

      sum_t g^t [ sum_i w_it (r_it - Q_it) + sum_i w_{i,t-1} V_it ],
      w_it = rho_it / sum_j rho_jt,  w_{i,-1} = 1 / n,

  with ``Q_it = Q(s_it, a_it)`` and ``V_it = sum_a pi_e(a|s_it) Q(s_it, a)`` from a fitted Q
  function (:func:`pushrl.ope.fqe.fit_fqe`).

Each estimate is ``sum_j c_j mean(num_j) / mean(den_j)`` over per-trajectory columns, so the
trajectory bootstrap re-normalises inside every resample, vectorised like the bandit one. The
Q function is fitted once, not per resample.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from pushrl.ope._bootstrap import bootstrap_means, normal_interval, percentile_interval
from pushrl.ope._validate import (
    FloatArray,
    RandomState,
    TrajectoryInputs,
    check_scalar,
    validate_interval_args,
    validate_trajectory_inputs,
)
from pushrl.ope.estimators import IntervalMethod

WEIGHT_EXPLOSION = 1e3
"""A trajectory whose final cumulative weight exceeds this counts as exploded."""


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with ``0 / 0 = 0`` (no trajectory carries weight at that step)."""
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


@dataclass(frozen=True)
class SequentialTerms:
    """An estimate ``sum_j coef_j * mean_i(num[i, j]) / mean_i(den[i, j])``.

    Attributes:
        numerators: Per-trajectory numerators, shape ``(n_traj, m)``.
        denominators: Per-trajectory denominators, shape ``(n_traj, m)``, or ``None`` (1).
        coefficients: Per-column coefficients (discounts), shape ``(m,)``.
    """

    numerators: FloatArray
    denominators: FloatArray | None
    coefficients: FloatArray

    def value(self) -> float:
        """The point estimate."""
        num = self.numerators.mean(axis=0)
        den = 1.0 if self.denominators is None else self.denominators.mean(axis=0)
        return float(self.coefficients @ _safe_ratio(num, np.asarray(den)))

    def influence(self) -> FloatArray:
        """Per-trajectory influence values (delta method), shape ``(n_traj,)``."""
        if self.denominators is None:
            return self.numerators @ self.coefficients
        num, den = self.numerators.mean(axis=0), self.denominators.mean(axis=0)
        ratio = _safe_ratio(num, den)
        lin = _safe_ratio(self.numerators - ratio * self.denominators, den) + ratio
        return lin @ self.coefficients

    def replicates(self, n_bootstrap_samples: int, random_state: RandomState) -> FloatArray:
        """Trajectory-bootstrap replicates of the estimate, shape ``(B,)``."""
        m = self.numerators.shape[1]
        cols = (
            self.numerators
            if self.denominators is None
            else np.hstack([self.numerators, self.denominators])
        )
        means = bootstrap_means(cols, n_bootstrap_samples, random_state)
        den = 1.0 if self.denominators is None else means[:, m:]
        return _safe_ratio(means[:, :m], np.asarray(den)) @ self.coefficients


@dataclass(frozen=True)
class SequentialDiagnostics:
    """Weight-explosion diagnostics of cumulative importance weights.

    Attributes:
        n_traj: Number of trajectories.
        horizon: Steps per trajectory.
        ess_final: Kish ESS of the final cumulative weights.
        ess_by_step: Kish ESS of the cumulative weights at each step, length ``horizon``.
        max_log_weight: Largest cumulative log-weight (natural log) over all steps.
        frac_exploded: Share of trajectories whose final weight exceeds ``1e3``.
        unreliable_from_step: First step whose ESS falls below the floor, else ``None``.
        ess_floor: The floor used for the verdict.
        reliability: Human-readable verdict, starting with ``"reliable"`` or
            ``"unreliable"``.
    """

    n_traj: int
    horizon: int
    ess_final: float
    ess_by_step: tuple[float, ...]
    max_log_weight: float
    frac_exploded: float
    unreliable_from_step: int | None
    ess_floor: float
    reliability: str

    @property
    def reliable(self) -> bool:
        """True when no step's ESS falls below the floor."""
        return self.unreliable_from_step is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def _log_ess(log_w: np.ndarray, axis: int = 0) -> np.ndarray:
    """Kish ESS ``(sum w)^2 / sum w^2`` computed from log-weights without overflow."""
    top = np.max(log_w, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    w = np.exp(log_w - top)
    s1, s2 = w.sum(axis=axis), (w**2).sum(axis=axis)
    return _safe_ratio(s1**2, s2)


def sequential_diagnostics(
    reward: np.ndarray,
    pscore: np.ndarray,
    evaluation_pscore: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    min_ess: float = 10.0,
    min_ess_fraction: float = 0.01,
) -> SequentialDiagnostics:
    """Diagnose the cumulative importance weights of logged trajectories.

    Args:
        reward: Per-step rewards, shape ``(n_traj, horizon)`` (validated, not used).
        pscore: Logging probabilities of the logged actions, ``(n_traj, horizon)``.
        evaluation_pscore: Evaluation-policy probabilities of the logged actions.
        mask: True on steps that happened; ``None`` for all.
        min_ess: Absolute ESS floor of the verdict.
        min_ess_fraction: ESS floor as a fraction of ``n_traj``; the larger floor applies.

    Returns:
        ESS of the final weights and per step, the largest log-weight, the share of exploded
        trajectories and a reliability verdict naming the first unreliable horizon.
    """
    check_scalar(min_ess, "min_ess", low=0)
    check_scalar(min_ess_fraction, "min_ess_fraction", low=0, high=1)
    return _diagnose(
        validate_trajectory_inputs(reward, pscore, evaluation_pscore, mask),
        min_ess,
        min_ess_fraction,
    )


def _diagnose(
    inputs: TrajectoryInputs, min_ess: float, min_ess_fraction: float
) -> SequentialDiagnostics:
    cum = np.cumsum(inputs.log_ratio, axis=1)
    ess_by_step = _log_ess(cum, axis=0)
    n, horizon = inputs.n_traj, inputs.horizon
    floor = max(min_ess, min_ess_fraction * n)
    below = np.flatnonzero(ess_by_step < floor)
    first = None if below.size == 0 else int(below[0])
    if first is None:
        verdict = (
            f"reliable: ESS of the final cumulative weights is {ess_by_step[-1]:.1f} "
            f"({ess_by_step[-1] / n:.1%} of n_traj={n}), above the floor {floor:.1f} at every "
            f"step of the horizon {horizon}"
        )
    else:
        verdict = (
            f"unreliable: ESS of the cumulative weights drops to {ess_by_step[first]:.1f} "
            f"({ess_by_step[first] / n:.2%} of n_traj={n}, floor {floor:.1f}) at step {first} "
            f"(horizon {first + 1} of {horizon}); estimates over longer horizons rest on a "
            f"handful of trajectories, so shorten the horizon to {first} steps or log closer "
            "to the evaluation policy"
        )
    finite = cum[np.isfinite(cum)]
    return SequentialDiagnostics(
        n_traj=n,
        horizon=horizon,
        ess_final=float(ess_by_step[-1]),
        ess_by_step=tuple(float(e) for e in ess_by_step),
        max_log_weight=float(finite.max()) if finite.size else float("-inf"),
        frac_exploded=float(np.mean(cum[:, -1] > np.log(WEIGHT_EXPLOSION))),
        unreliable_from_step=first,
        ess_floor=floor,
        reliability=verdict,
    )


class BaseSequentialEstimator(ABC):
    """Template of the sequential estimators: validate, build terms, estimate, interval."""

    estimator_name: str
    gamma: float
    # Weighted estimators divide by sum_i rho_it at every step, so each step's weights may be
    # rescaled by a common constant: they are computed as exp(log rho - max_i log rho), which
    # keeps them finite however long the horizon. PDIS needs the raw weights.
    self_normalised: ClassVar[bool] = False

    def _check_gamma(self) -> None:
        check_scalar(self.gamma, "gamma", low=0.0, high=1.0)

    def _discounts(self, horizon: int) -> FloatArray:
        return np.asarray(self.gamma) ** np.arange(horizon)

    @abstractmethod
    def _terms(self, inputs: TrajectoryInputs, rho: FloatArray, **kwargs: Any) -> SequentialTerms:
        """Return the estimate's terms given validated inputs and cumulative weights."""

    def terms(
        self,
        reward: np.ndarray,
        pscore: np.ndarray,
        evaluation_pscore: np.ndarray,
        mask: np.ndarray | None = None,
        **kwargs: Any,
    ) -> SequentialTerms:
        """Validate the trajectory arrays and return the estimate's terms."""
        inputs = validate_trajectory_inputs(reward, pscore, evaluation_pscore, mask)
        log_rho = np.cumsum(inputs.log_ratio, axis=1)
        if self.self_normalised:
            top = log_rho.max(axis=0, keepdims=True)
            log_rho = log_rho - np.where(np.isfinite(top), top, 0.0)
        return self._terms(inputs, np.exp(log_rho), **kwargs)

    def estimate_policy_value(
        self,
        reward: np.ndarray,
        pscore: np.ndarray,
        evaluation_pscore: np.ndarray,
        mask: np.ndarray | None = None,
        **kwargs: Any,
    ) -> float:
        """Estimate the evaluation policy's expected (discounted) return.

        Args:
            reward: Per-step rewards, shape ``(n_traj, horizon)``.
            pscore: Logging probability of the logged action, ``(n_traj, horizon)``.
            evaluation_pscore: Evaluation-policy probability of the logged action, same shape.
            mask: True on steps that happened; ``None`` for all.
            **kwargs: Estimator-specific arrays (``q_hat``, ``v_hat`` for WDR).

        Returns:
            The estimated policy value.
        """
        return self.terms(reward, pscore, evaluation_pscore, mask, **kwargs).value()

    def estimate_interval(
        self,
        reward: np.ndarray,
        pscore: np.ndarray,
        evaluation_pscore: np.ndarray,
        mask: np.ndarray | None = None,
        *,
        alpha: float = 0.05,
        n_bootstrap_samples: int = 2000,
        random_state: RandomState = None,
        method: IntervalMethod = "bootstrap",
        **kwargs: Any,
    ) -> dict[str, float]:
        """Confidence interval by bootstrapping trajectories (or the delta method).

        Returns:
            ``{"mean": ..., "<level>% CI (lower)": ..., "<level>% CI (upper)": ...}``.
        """
        validate_interval_args(alpha, n_bootstrap_samples, random_state, method)
        terms = self.terms(reward, pscore, evaluation_pscore, mask, **kwargs)
        if method == "bootstrap":
            return percentile_interval(terms.replicates(n_bootstrap_samples, random_state), alpha)
        return normal_interval(terms.value(), terms.influence(), alpha)


@dataclass
class PerDecisionIS(BaseSequentialEstimator):
    """Per-decision importance sampling (PDIS).

    Attributes:
        gamma: Discount factor in [0, 1].
    """

    gamma: float = 1.0
    estimator_name: str = "pdis"

    def __post_init__(self) -> None:
        self._check_gamma()

    def _terms(self, inputs: TrajectoryInputs, rho: FloatArray, **kwargs: Any) -> SequentialTerms:
        _no_extra(self.estimator_name, kwargs)
        return SequentialTerms(rho * inputs.reward, None, self._discounts(inputs.horizon))


@dataclass
class WeightedPerDecisionIS(BaseSequentialEstimator):
    """Weighted per-decision importance sampling (WPDIS).

    Attributes:
        gamma: Discount factor in [0, 1].
    """

    gamma: float = 1.0
    estimator_name: str = "wpdis"
    self_normalised: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self._check_gamma()

    def _terms(self, inputs: TrajectoryInputs, rho: FloatArray, **kwargs: Any) -> SequentialTerms:
        _no_extra(self.estimator_name, kwargs)
        return SequentialTerms(rho * inputs.reward, rho, self._discounts(inputs.horizon))


@dataclass
class WeightedDoublyRobust(BaseSequentialEstimator):
    """Weighted doubly robust (WDR, Thomas & Brunskill 2016).

    Pass ``q_hat`` (``Q(s_t, a_t)`` at the logged action) and ``v_hat``
    (``sum_a pi_e(a|s_t) Q(s_t, a)``), both ``(n_traj, horizon)``, as keyword arguments, e.g.
    from :func:`pushrl.ope.fqe.fit_fqe`. They are ignored on masked steps.

    Attributes:
        gamma: Discount factor in [0, 1]; use the one the Q function was fitted with.
    """

    gamma: float = 1.0
    estimator_name: str = "wdr"
    self_normalised: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self._check_gamma()

    def _terms(self, inputs: TrajectoryInputs, rho: FloatArray, **kwargs: Any) -> SequentialTerms:
        q_hat, v_hat = kwargs.pop("q_hat", None), kwargs.pop("v_hat", None)
        _no_extra(self.estimator_name, kwargs)
        q = _model_array(q_hat, "q_hat", inputs)
        v = _model_array(v_hat, "v_hat", inputs)
        rho_prev = np.hstack([np.ones((inputs.n_traj, 1)), rho[:, :-1]])
        numerators = np.hstack([rho * (inputs.reward - q), rho_prev * v])
        denominators = np.hstack([rho, rho_prev])
        disc = self._discounts(inputs.horizon)
        return SequentialTerms(numerators, denominators, np.concatenate([disc, disc]))


def _model_array(value: Any, name: str, inputs: TrajectoryInputs) -> FloatArray:
    if value is None:
        raise TypeError(f"WDR requires `{name}` of shape (n_traj, horizon); see fit_fqe")
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != inputs.reward.shape:
        raise ValueError(f"`{name}` must have shape {inputs.reward.shape}, got {arr.shape}")
    arr = np.where(inputs.mask, arr, 0.0)
    if not np.isfinite(arr).all():
        raise ValueError(f"`{name}` must be finite on valid steps")
    return arr


def _no_extra(name: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise TypeError(f"{name} got unexpected arguments {sorted(kwargs)}")


SEQUENTIAL_ESTIMATORS: dict[str, type[BaseSequentialEstimator]] = {
    "pdis": PerDecisionIS,
    "wpdis": WeightedPerDecisionIS,
    "wdr": WeightedDoublyRobust,
}
"""Sequential estimator classes by name."""

PDIS = PerDecisionIS
WPDIS = WeightedPerDecisionIS
WDR = WeightedDoublyRobust
