"""Off-policy evaluation: bandit estimators, intervals, diagnostics, the deployment gate.

Bandit estimators follow Open Bandit Pipeline's convention::

    est = ESTIMATORS["dr"]()
    est.estimate_policy_value(reward, action, pscore, action_dist, position,
                              estimated_rewards_by_reg_model)
    est.estimate_interval(..., alpha=0.05, n_bootstrap_samples=1000, random_state=0)

``action_dist`` and estimated rewards have shape ``(n_rounds, n_actions, len_list)``.
Sequential (timing-policy) estimators are in :mod:`pushrl.ope.sequential` (re-exported here),
the deployment gate in :mod:`pushrl.ope.gate`, and reports in :mod:`pushrl.ope.report` (not
imported here, so importing ``pushrl.ope`` does not load matplotlib). ``fit_fqe`` and
``FQEResult`` are loaded on first access; scikit-learn (~1 s of CPU to import) loads only
when a model is fitted (``CrossFitDR``, ``fit_fqe``, the item evaluation's reward models).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pushrl.ope._rounds import RoundData, RoundTerms
from pushrl.ope._validate import BanditInputs, validate_bandit_inputs
from pushrl.ope.crossfit import CrossFitDR, fit_reward_model
from pushrl.ope.diagnostics import WeightDiagnostics, kish_ess, weight_diagnostics
from pushrl.ope.estimators import (
    DM,
    DR,
    IPW,
    SNDR,
    SNIPW,
    BaseOffPolicyEstimator,
    DirectMethod,
    DoublyRobust,
    DoublyRobustWithShrinkage,
    DRos,
    InverseProbabilityWeighting,
    SelfNormalizedDoublyRobust,
    SelfNormalizedInverseProbabilityWeighting,
    SwitchDoublyRobust,
    SwitchDR,
    interval_from_terms,
)
from pushrl.ope.gate import RULES, DeploymentGate, GateResult
from pushrl.ope.intervals import (
    IntervalEstimate,
    PairedDifference,
    bootstrap_replicates,
    estimate_intervals,
    paired_difference_from_terms,
    paired_difference_interval,
)
from pushrl.ope.sequential import (
    PDIS,
    SEQUENTIAL_ESTIMATORS,
    WDR,
    WPDIS,
    PerDecisionIS,
    SequentialDiagnostics,
    WeightedDoublyRobust,
    WeightedPerDecisionIS,
    sequential_diagnostics,
)

if TYPE_CHECKING:
    from pushrl.ope.fqe import FQEResult, fit_fqe

# Names whose module imports scikit-learn at its top: resolved on first access (PEP 562).
_LAZY = {"FQEResult": "pushrl.ope.fqe", "fit_fqe": "pushrl.ope.fqe"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


ESTIMATORS: dict[str, type[BaseOffPolicyEstimator]] = {
    "dm": DirectMethod,
    "ipw": InverseProbabilityWeighting,
    "snipw": SelfNormalizedInverseProbabilityWeighting,
    "dr": DoublyRobust,
    "sndr": SelfNormalizedDoublyRobust,
    "switch-dr": SwitchDoublyRobust,
    "dr-os": DoublyRobustWithShrinkage,
    "dr-cf": CrossFitDR,
}
"""Estimator classes by name; each constructor takes the estimator's hyperparameters."""


def make_estimator(name: str, **hyperparameters: object) -> BaseOffPolicyEstimator:
    """Instantiate a registered estimator.

    Args:
        name: A key of :data:`ESTIMATORS`.
        **hyperparameters: Constructor arguments (e.g. ``tau=5.0`` for ``switch-dr``).

    Raises:
        ValueError: For an unknown name.
    """
    try:
        cls = ESTIMATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown estimator {name!r}; choose one of {sorted(ESTIMATORS)}"
        ) from None
    return cls(**hyperparameters)  # type: ignore[arg-type]


def default_estimators() -> list[BaseOffPolicyEstimator]:
    """The seven estimators that take a fixed reward model, as the OPE benchmarks run them.

    ``dm``, ``ipw``, ``snipw``, ``dr``, ``sndr``, ``switch-dr`` (``tau=5``) and ``dr-os``
    (``lambda_=10``); ``dr-cf`` is left out because it fits its own reward model.
    """
    hyper: dict[str, dict[str, float]] = {"switch-dr": {"tau": 5.0}, "dr-os": {"lambda_": 10.0}}
    return [make_estimator(n, **hyper.get(n, {})) for n in ESTIMATORS if n != "dr-cf"]


__all__ = [
    "DM",
    "DR",
    "ESTIMATORS",
    "IPW",
    "PDIS",
    "RULES",
    "SEQUENTIAL_ESTIMATORS",
    "SNDR",
    "SNIPW",
    "WDR",
    "WPDIS",
    "BanditInputs",
    "BaseOffPolicyEstimator",
    "CrossFitDR",
    "DRos",
    "DeploymentGate",
    "DirectMethod",
    "DoublyRobust",
    "DoublyRobustWithShrinkage",
    "FQEResult",
    "GateResult",
    "IntervalEstimate",
    "InverseProbabilityWeighting",
    "PairedDifference",
    "PerDecisionIS",
    "RoundData",
    "RoundTerms",
    "SelfNormalizedDoublyRobust",
    "SelfNormalizedInverseProbabilityWeighting",
    "SequentialDiagnostics",
    "SwitchDR",
    "SwitchDoublyRobust",
    "WeightDiagnostics",
    "WeightedDoublyRobust",
    "WeightedPerDecisionIS",
    "bootstrap_replicates",
    "default_estimators",
    "estimate_intervals",
    "fit_fqe",
    "fit_reward_model",
    "interval_from_terms",
    "kish_ess",
    "make_estimator",
    "paired_difference_from_terms",
    "paired_difference_interval",
    "sequential_diagnostics",
    "validate_bandit_inputs",
    "weight_diagnostics",
]
