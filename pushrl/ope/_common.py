"""What the item and timing paths of :func:`pushrl.ope.evaluate.evaluate_policy` share.

The estimator lists and defaults, :class:`ResolvedPolicy`, :class:`EvaluationResult` and the
small helpers both paths call. It sits below :mod:`pushrl.ope.evaluate`,
:mod:`pushrl.ope.evaluate_item` and :mod:`pushrl.ope.evaluate_timing`, so the entry point can
import both paths at the top and neither path imports the entry point.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pushrl.data.split import has_legacy, may_share_rows
from pushrl.errors import DataError
from pushrl.ope import ESTIMATORS
from pushrl.ope.diagnostics import WeightDiagnostics
from pushrl.ope.gate import DeploymentGate, GateResult
from pushrl.ope.intervals import IntervalEstimate
from pushrl.ope.sequential import SEQUENTIAL_ESTIMATORS, SequentialDiagnostics
from pushrl.policies.base import Policy

ITEM_ESTIMATORS: tuple[str, ...] = tuple(ESTIMATORS)
TIMING_ESTIMATORS: tuple[str, ...] = (*SEQUENTIAL_ESTIMATORS, "fqe")
#: Hyperparameters used by ``evaluate`` where the estimator's own default degenerates
#: (``dr-os`` with ``lambda_=0`` is DM; ``switch-dr`` with ``tau=1`` drops nearly every
#: correction of a deterministic policy). Weights up to ~10 keep their DR correction.
DEFAULT_HYPERPARAMETERS: dict[str, dict[str, float]] = {
    "switch-dr": {"tau": 10.0}, "dr-os": {"lambda_": 100.0},
}
_GATE_PREFERENCE = {"item": ("dr", "sndr", "switch-dr", "dr-os", "snipw", "ipw", "dm"),
                    "timing": ("wdr", "wpdis", "pdis", "fqe")}
Progress = Callable[[str, int, int], None]


# --------------------------------------------------------------------- policies
@dataclass(frozen=True)
class ResolvedPolicy:
    """A policy with where it came from.

    Attributes:
        policy: The loaded policy.
        label: What the user passed (artifact path or baseline name).
        source: ``"artifact"``, ``"baseline"`` or ``"object"``.
        card: The artifact's model card, if any.
        artifact: The resolved artifact directory, if any.
        fitted_on_eval_data: The baseline was fitted on the evaluated logs (in-sample).
    """

    policy: Policy
    label: str
    source: str
    card: Mapping[str, Any] | None = None
    artifact: Path | None = None
    fitted_on_eval_data: bool = False

    def trained_on(self, data: str | Mapping[str, Any]) -> bool:
        """True when the policy may have been trained or fitted on rows of the evaluated logs
        (or its exploration export was chosen on them).

        ``data`` is an evaluation's ``data`` (``{"fingerprint", "split"}``) or a bare
        fingerprint. Beyond equal fingerprints, user splits count
        (:func:`pushrl.data.split.may_share_rows`): a policy trained on a whole log has seen
        every part of it, and one trained on a part has seen only that part, so only the
        *other* part of the same split counts as held out. A timing agent trained in a
        fitted simulator has seen the logs that simulator was fitted on (its card's
        ``simulator_data``): those count the same way.
        """
        evaluated = {"fingerprint": data} if isinstance(data, str) else data
        try:
            return self.fitted_on_eval_data or any(
                may_share_rows(s, evaluated) for s in self.seen())
        except DataError as e:  # a card of the legacy fingerprint format
            raise DataError(f"{self.label}: {e}") from None

    def seen(self) -> list[Mapping[str, Any]]:
        """Every lineage of data the policy has seen, each ``{"fingerprint", "split"}``: its
        card's training data, the data of the simulator it was trained in, the logs its
        exploration export was chosen on."""
        card = self.card or {}
        explored = card.get("exploration")
        selection = explored.get("selection") if isinstance(explored, Mapping) else None
        seen = [card.get("data"), card.get("simulator_data")]
        if isinstance(selection, Mapping):  # an exploration export chosen on these logs
            seen.append({"fingerprint": selection.get("data_fingerprint"),
                         "split": selection.get("data_split")})
        return [s for s in seen if isinstance(s, Mapping)]

    def has_legacy_lineage(self) -> bool:
        """True when a lineage in :meth:`seen` has the fingerprint format before fp2."""
        return any(has_legacy(s) for s in self.seen())

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {"label": self.label, "source": self.source, "kind": self.policy.kind,
                "name": getattr(self.policy, "name", "policy"),
                "version": getattr(self.policy, "version", "0"),
                "artifact": None if self.artifact is None else str(self.artifact),
                "fitted_on_eval_data": self.fitted_on_eval_data}


# --------------------------------------------------------------------- result
@dataclass
class EvaluationResult:
    """Everything one evaluation produced.

    Attributes:
        kind: ``"item"`` or ``"timing"``.
        policy: Summary of the candidate (label, source, name, version).
        baseline: Summary of the baseline; ``None`` = the logging policy.
        data: Dataset path, fingerprint and the number of rounds (item) or trajectories.
        reward: The reward as a formula (item:
            :meth:`~pushrl.rules.reward.RewardWeights.item_formula`;
            timing: :meth:`~pushrl.rules.reward.RewardWeights.describe`).
        estimates: The candidate's estimates with ``1 - alpha`` intervals, by estimator.
        baseline_estimates: The baseline's (``"on-policy"`` for the logging policy).
        diagnostics: Importance-weight diagnostics of the candidate.
        baseline_diagnostics: Those of an off-policy baseline.
        gate: The deployment gate's decision.
        gate_estimator: Estimator of the gate's paired improvement.
        skipped: Estimators not run, with the reason.
        sequential: Timing only: weight-explosion diagnostics of the candidate by horizon
            (``"segment"``: the evaluated trajectories, ``"full_horizon"``: whole per-user
            trajectories).
        segment: Timing only: ``"day"`` or ``"none"``.
        settings: Scenario settings, hyperparameters and other run parameters.
        notes: Caveats a reader must see (also in the report).
        report: Paths of the written report files by kind.
        seconds: Wall time.
        weights: Candidate's importance weights (per round or per trajectory), not in
            :meth:`to_dict`.
    """

    kind: str
    policy: dict[str, Any]
    baseline: dict[str, Any] | None
    data: dict[str, Any]
    reward: str
    estimates: dict[str, IntervalEstimate]
    baseline_estimates: dict[str, IntervalEstimate]
    diagnostics: WeightDiagnostics
    baseline_diagnostics: WeightDiagnostics | None
    gate: GateResult
    gate_estimator: str
    skipped: dict[str, str] = field(default_factory=dict)
    sequential: dict[str, SequentialDiagnostics] = field(default_factory=dict)
    segment: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    report: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    weights: np.ndarray | None = field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        """The gate's verdict."""
        return self.gate.passed

    @property
    def exit_code(self) -> int:
        """``0`` when the candidate passes the gate, ``1`` when it is blocked."""
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (what ``pushrl evaluate --json`` prints)."""
        return {
            "passed": self.passed, "exit_code": self.exit_code, "kind": self.kind,
            "policy": self.policy, "baseline": self.baseline or {"label": "logging",
                                                                 "source": "logging"},
            "data": self.data, "reward": self.reward,
            "gate": {**self.gate.to_dict(), "estimator": self.gate_estimator},
            "estimates": {k: v.to_dict() for k, v in self.estimates.items()},
            "baseline_estimates": {k: v.to_dict() for k, v in self.baseline_estimates.items()},
            "diagnostics": self.diagnostics.to_dict(),
            "baseline_diagnostics": (None if self.baseline_diagnostics is None
                                     else self.baseline_diagnostics.to_dict()),
            "sequential_diagnostics": {k: v.to_dict() for k, v in self.sequential.items()},
            "segment": self.segment, "skipped_estimators": self.skipped,
            "settings": self.settings, "notes": self.notes, "report": self.report,
            "seconds": round(self.seconds, 3),
        }


# --------------------------------------------------------------------- helpers
def _select(requested: Sequence[str] | None, kind: str, applicable: Mapping[str, str | None]
            ) -> tuple[list[str], dict[str, str]]:
    """Estimators to run and skipped ones with reasons; ``applicable`` maps name -> reason."""
    known = (*ITEM_ESTIMATORS, *TIMING_ESTIMATORS)
    names = list(applicable) if requested is None else list(dict.fromkeys(requested))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"--estimators: unknown {', '.join(unknown)}; item policies take "
                         f"{', '.join(ITEM_ESTIMATORS)}, timing policies "
                         f"{', '.join(TIMING_ESTIMATORS)}")
    run, skipped = [], {}
    for n in names:
        if n not in applicable:
            skipped[n] = f"not an estimator for {kind} policies"
        elif applicable[n] is not None:
            skipped[n] = str(applicable[n])
        else:
            run.append(n)
    if not run:
        raise DataError(f"--estimators: none of {', '.join(names)} applies here ("
                        + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ")")
    return run, skipped


def _gate_estimator(kind: str, run: Sequence[str], requested: str | None) -> str:
    if requested is not None:
        if requested not in _GATE_PREFERENCE[kind]:
            raise ValueError(f"gate estimator {requested!r} is not usable for {kind} policies; "
                             f"choose one of {', '.join(_GATE_PREFERENCE[kind])}")
        return requested
    for n in _GATE_PREFERENCE[kind]:
        if n in run:
            return n
    return _GATE_PREFERENCE[kind][0]


def _hyper(name: str, overrides: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
    hp = dict(DEFAULT_HYPERPARAMETERS.get(name, {}))
    hp.update((overrides or {}).get(name, {}))
    return hp


def _missing_note(missing: Mapping[str, int], of: str) -> str:
    """One sentence on the sent rows whose weighted outcome was missing (counted 0;
    :func:`pushrl.rules.reward.missing_outcomes`)."""
    cols = ", ".join(f"`{c}` in {n}" for c, n in missing.items())
    return (f"of {of}, a weighted outcome is missing ({cols}); the reward counts it 0 "
            "(pushrl.rules.reward.from_logs)")


def _say(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


def _bootstrap_interval(name: str, point: float, d: Mapping[str, float],
                        alpha: float) -> IntervalEstimate:
    """An :class:`IntervalEstimate` from a bootstrap summary ``{lower, upper, "mean"}``."""
    lo, hi = (v for k, v in d.items() if k != "mean")
    return IntervalEstimate(name, point, lo, hi, alpha, "bootstrap", d["mean"])


def _gate_settings(g: DeploymentGate) -> dict[str, Any]:
    """The gate thresholds recorded in :attr:`EvaluationResult.settings`."""
    return {"min_ess": g.min_ess, "min_ess_fraction": g.min_ess_fraction,
            "max_support_deficiency": g.max_support_deficiency, "one_sided": g.one_sided,
            "min_ess_support_fraction": g.min_ess_support_fraction}
