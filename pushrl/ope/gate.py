"""The deployment gate: ship a candidate policy only on confident, well-supported evidence.

A candidate passes only if every rule holds:

* ``improvement_lower_bound``: the lower bound of the two-sided ``1 - alpha`` interval of its
  estimated improvement over the baseline (paired, same logged rounds) is ``> 0``; with
  ``one_sided=True`` the lower bound of the one-sided ``1 - alpha`` interval (the two-sided
  ``1 - 2 alpha`` one), i.e. a one-sided test at level ``alpha`` of "no improvement";
* ``ess_floor``: the Kish ESS of its importance weights is at least
  ``max(min_ess, min_ess_fraction * n_rounds)``; with ``min_ess_support_fraction`` set, at
  least the smaller of that and ``min_ess_support_fraction * support_ess`` (below);
* ``support_deficiency``: the share of its probability mass on (action, position) pairs the
  logger never took is at most ``max_support_deficiency``;
* ``baseline_ess_floor`` / ``baseline_support_deficiency``: the same for an off-policy baseline
  (skipped when the baseline is the logging policy itself);
* ``finite_estimate``: the estimate and its bounds are finite.

:class:`GateResult` names the rules that failed, so callers (CLI, CI, dashboards) can act on
them without parsing text.

Support-relative ESS floor. A deterministic policy's importance weight is ``1 / pscore`` on
the rounds where it agrees with the logger and 0 elsewhere, so its expected Kish ESS is
``n / mean(1 / pscore)`` at best on typical rounds: ``n / K`` under a uniform logger over ``K``
items (:func:`support_ess`). A fixed floor of 1 % of ``n`` (or 100) therefore refuses *every*
deterministic item policy once ``K >= 100``, whatever the data size and however large its
improvement, and that is a property of the logger, not of the candidate. With
``min_ess_support_fraction`` the floor is relative to what the logger's support allows (e.g.
0.5: the candidate must keep at least half the ESS a deterministic policy reaches). The floor
is a guard of the intervals' validity; the gate keeps its error rate where it is relaxed
because the replicated-log benchmark ``benchmarks/gate_power.py`` measures the false-pass
rate of deterministic candidates that are not better at exactly these ESS
(``benchmarks/results/gate_power.md``).
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
        support_ess: :func:`support_ess` of the logs (the ESS a deterministic policy reaches
            on typical rounds), the reference of a support-relative floor.
        one_sided: The improvement rule used the one-sided ``1 - alpha`` lower bound
            (``comparison`` then holds the two-sided ``1 - 2 alpha`` interval).
    """

    passed: bool
    failed_rules: tuple[str, ...]
    comparison: PairedDifference
    diagnostics: WeightDiagnostics
    baseline_diagnostics: WeightDiagnostics | None
    ess_floor: float
    messages: tuple[str, ...] = field(default=())
    support_ess: float | None = None
    one_sided: bool = False

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
        one_sided: Test "no improvement" one-sided at level ``alpha`` (the lower bound of the
            two-sided ``1 - 2 alpha`` interval); the default ``False`` uses the two-sided
            ``1 - alpha`` interval's lower bound (a one-sided ``alpha / 2`` test).
        min_ess_support_fraction: If set, in (0, 1]: the ESS floor is at most this share of
            :func:`support_ess` (module docstring); ``None`` keeps the fixed floor.
    """

    estimator: BaseOffPolicyEstimator = field(default_factory=DoublyRobust)
    alpha: float = 0.05
    min_ess: float = 100.0
    min_ess_fraction: float = 0.01
    max_support_deficiency: float = 0.05
    n_bootstrap_samples: int = 2000
    method: IntervalMethod = "bootstrap"
    one_sided: bool = False
    min_ess_support_fraction: float | None = None

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
        if self.one_sided and self.alpha >= 0.5:
            raise ValueError(f"a one-sided gate needs `alpha` < 0.5, got {self.alpha}")
        if self.min_ess_support_fraction is not None:
            check_scalar(self.min_ess_support_fraction, "min_ess_support_fraction", low=0,
                         high=1, low_inclusive=False)

    def ess_floor(self, n_rounds: int, support: float | None = None) -> float:
        """ESS floor for ``n_rounds`` logged rounds: ``max(min_ess, min_ess_fraction * n)``,
        capped at ``min_ess_support_fraction * support`` when both are given (``support``:
        :func:`support_ess` of the logs)."""
        floor = max(self.min_ess, self.min_ess_fraction * n_rounds)
        if self.min_ess_support_fraction is not None and support is not None:
            floor = min(floor, self.min_ess_support_fraction * support)
        return floor

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
        level = 2 * self.alpha if self.one_sided else self.alpha
        comparison = paired_difference_interval(
            self.estimator,
            reward,
            action,
            pscore,
            candidate_action_dist,
            baseline_action_dist,
            position,
            estimated_rewards_by_reg_model,
            alpha=level,
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
        support = support_ess(pscore)
        floor = self.ess_floor(cand.n_rounds, support)
        failed: list[tuple[str, str]] = []
        bounds = (comparison.difference, comparison.lower, comparison.upper)
        if not all(math.isfinite(b) for b in bounds):
            failed.append(("finite_estimate", f"non-finite improvement estimate {bounds}"))
        elif comparison.lower <= 0:
            kind = ", one-sided" if self.one_sided else ""
            failed.append(
                (
                    "improvement_lower_bound",
                    f"{100 * (1 - self.alpha):g}% lower bound of the improvement is "
                    f"{comparison.lower:.6g} <= 0 (estimate {comparison.difference:.6g}{kind})",
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
            support_ess=support,
            one_sided=self.one_sided,
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


def support_ess(pscore: np.ndarray) -> float:
    """Expected Kish ESS of a deterministic policy on the logger's typical rounds.

    A deterministic policy that agrees with the logger with probability ``p(a|x)`` has
    weights ``1 / p`` there: ``E[w] = 1`` and ``E[w^2] = 1 / p``. Averaging ``1 / p`` over the
    logged propensities gives ``n / mean(1 / pscore)``: exactly ``n / K`` under a uniform logger
    over ``K`` actions, and under a skewed logger the ESS of a deterministic policy that
    agrees with the logger's choices as often as the logged actions do.

    Args:
        pscore: Logging propensities of the logged actions, shape ``(n_rounds,)``.

    Returns:
        The support ESS (0.0 for no rounds).
    """
    p = np.asarray(pscore, np.float64)
    return 0.0 if p.size == 0 else float(p.size / np.mean(1.0 / p))


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
