"""The deployment gate: ship a candidate policy only on confident, well-supported evidence.

A candidate passes only if every rule holds:

* ``improvement_lower_bound``: the lower bound of the two-sided ``1 - alpha`` interval of its
  estimated improvement over the baseline (paired, same logged rounds) is ``> 0``;
* ``ess_floor``: the Kish ESS of its importance weights is at least
  ``max(min_ess, min_ess_fraction * n_rounds)``;
* ``support_deficiency``: the share of its probability mass on (action, position) pairs the
  logger never took is at most ``max_support_deficiency``;
* ``baseline_ess_floor`` / ``baseline_support_deficiency``: the same for an off-policy baseline
  (skipped when the baseline is the logging policy itself);
* ``finite_estimate``: the estimate and its bounds are finite.

:class:`GateResult` names the rules that failed, so callers (CLI, CI, dashboards) can act on
them without parsing text.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pushrl.ope._validate import RandomState, check_scalar, validate_bandit_inputs
from pushrl.ope.diagnostics import WeightDiagnostics, diagnostics_from_inputs
from pushrl.ope.estimators import BaseOffPolicyEstimator, DoublyRobust, IntervalMethod
from pushrl.ope.intervals import PairedDifference, paired_difference_interval

RULES = (
    "finite_estimate",
    "improvement_lower_bound",
    "ess_floor",
    "support_deficiency",
    "baseline_ess_floor",
    "baseline_support_deficiency",
    "held_out_data",
)
"""Every rule name a :class:`GateResult` can report as failed. ``held_out_data`` (the candidate
was trained on the very logs it is evaluated on, or on logs containing them: a whole log and
its user-split parts, :func:`pushrl.data.split.may_share_rows`) is applied by
:func:`pushrl.ope.evaluate.evaluate_policy`, which knows the data fingerprints."""


@dataclass(frozen=True)
class GateResult:
    """Outcome of :meth:`DeploymentGate.evaluate`.

    Attributes:
        passed: True when no rule failed.
        failed_rules: Names (from :data:`RULES`) of the rules that failed, in check order.
        comparison: The paired improvement estimate and its interval.
        diagnostics: Weight diagnostics of the candidate.
        baseline_diagnostics: Weight diagnostics of an off-policy baseline, else ``None``.
        ess_floor: The ESS floor that was applied.
        messages: One human-readable line per failed rule.
    """

    passed: bool
    failed_rules: tuple[str, ...]
    comparison: PairedDifference
    diagnostics: WeightDiagnostics
    baseline_diagnostics: WeightDiagnostics | None
    ess_floor: float
    messages: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


@dataclass
class DeploymentGate:
    """Configuration of the gate; :meth:`evaluate` applies it to logged data.

    Attributes:
        estimator: Estimator used for both policies (default: DR).
        alpha: Miscoverage of the two-sided interval of the improvement.
        min_ess: Absolute ESS floor.
        min_ess_fraction: ESS floor as a fraction of ``n_rounds``; the larger floor applies.
        max_support_deficiency: Largest tolerated unsupported probability mass, in [0, 1].
        n_bootstrap_samples: Bootstrap resamples of the paired difference.
        method: ``"bootstrap"`` or ``"normal"``.
    """

    estimator: BaseOffPolicyEstimator = field(default_factory=DoublyRobust)
    alpha: float = 0.05
    min_ess: float = 100.0
    min_ess_fraction: float = 0.01
    max_support_deficiency: float = 0.05
    n_bootstrap_samples: int = 2000
    method: IntervalMethod = "bootstrap"

    def __post_init__(self) -> None:
        if not isinstance(self.estimator, BaseOffPolicyEstimator):
            raise TypeError(
                f"`estimator` must be a pushrl.ope estimator, got {type(self.estimator).__name__}"
            )
        if getattr(self.estimator, "requires_context", False):
            raise TypeError("the gate needs an estimator that takes estimated rewards, not context")
        check_scalar(self.alpha, "alpha", low=0, high=1, low_inclusive=False, high_inclusive=False)
        check_scalar(self.min_ess, "min_ess", low=0)
        check_scalar(self.min_ess_fraction, "min_ess_fraction", low=0, high=1)
        check_scalar(self.max_support_deficiency, "max_support_deficiency", low=0, high=1)
        check_scalar(self.n_bootstrap_samples, "n_bootstrap_samples", kind="int", low=1)
        if self.method not in ("bootstrap", "normal"):
            raise ValueError(f"`method` must be 'bootstrap' or 'normal', got {self.method!r}")

    def ess_floor(self, n_rounds: int) -> float:
        """ESS floor for ``n_rounds`` logged rounds: ``max(min_ess, min_ess_fraction * n)``."""
        return max(self.min_ess, self.min_ess_fraction * n_rounds)

    def evaluate(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        candidate_action_dist: np.ndarray,
        baseline_action_dist: np.ndarray | None = None,
        position: np.ndarray | None = None,
        estimated_rewards_by_reg_model: np.ndarray | None = None,
        *,
        random_state: RandomState = None,
    ) -> GateResult:
        """Decide whether the candidate may replace the baseline.

        Args:
            reward: Observed rewards, shape ``(n_rounds,)``.
            action: Logged actions, shape ``(n_rounds,)``.
            pscore: Logging propensities, shape ``(n_rounds,)``.
            candidate_action_dist: Candidate's probabilities, ``(n_rounds, n_actions,
                len_list)``.
            baseline_action_dist: Baseline's probabilities (same shape); ``None`` compares
                against the logging policy's on-policy value ``mean(reward)``.
            position: Logged positions, shape ``(n_rounds,)``.
            estimated_rewards_by_reg_model: Reward model for both policies; required by the
                model-based estimators.
            random_state: Seed or generator of the bootstrap.

        Returns:
            The decision, the failed rules and the evidence behind them.
        """
        comparison = paired_difference_interval(
            self.estimator,
            reward,
            action,
            pscore,
            candidate_action_dist,
            baseline_action_dist,
            position,
            estimated_rewards_by_reg_model,
            alpha=self.alpha,
            n_bootstrap_samples=self.n_bootstrap_samples,
            random_state=random_state,
            method=self.method,
        )
        cand = _diagnose(reward, action, pscore, candidate_action_dist, position)
        base = (
            None
            if baseline_action_dist is None
            else _diagnose(reward, action, pscore, baseline_action_dist, position)
        )
        floor = self.ess_floor(cand.n_rounds)
        failed: list[tuple[str, str]] = []
        bounds = (comparison.difference, comparison.lower, comparison.upper)
        if not all(math.isfinite(b) for b in bounds):
            failed.append(("finite_estimate", f"non-finite improvement estimate {bounds}"))
        elif comparison.lower <= 0:
            level = 100 * (1 - self.alpha)
            failed.append(
                (
                    "improvement_lower_bound",
                    f"{level:g}% lower bound of the improvement is {comparison.lower:.6g} <= 0 "
                    f"(estimate {comparison.difference:.6g})",
                )
            )
        failed += self._support_rules(cand, floor, prefix="")
        if base is not None:
            failed += self._support_rules(base, floor, prefix="baseline_")
        return GateResult(
            passed=not failed,
            failed_rules=tuple(name for name, _ in failed),
            comparison=comparison,
            diagnostics=cand,
            baseline_diagnostics=base,
            ess_floor=floor,
            messages=tuple(msg for _, msg in failed),
        )

    def _support_rules(
        self, diag: WeightDiagnostics, floor: float, prefix: str
    ) -> list[tuple[str, str]]:
        who = "baseline" if prefix else "candidate"
        out = []
        if diag.ess < floor:
            out.append(
                (
                    f"{prefix}ess_floor",
                    f"{who} ESS {diag.ess:.1f} < floor {floor:.1f} (n_rounds={diag.n_rounds})",
                )
            )
        if diag.support_deficiency > self.max_support_deficiency:
            out.append(
                (
                    f"{prefix}support_deficiency",
                    f"{who} puts {diag.support_deficiency:.2%} of its mass on never-logged actions "
                    f"(max {self.max_support_deficiency:.2%})",
                )
            )
        return out


def _diagnose(
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    position: np.ndarray | None,
) -> WeightDiagnostics:
    return diagnostics_from_inputs(
        validate_bandit_inputs(reward, action, pscore, action_dist, position)
    )[0]
