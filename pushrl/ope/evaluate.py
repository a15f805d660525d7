"""Evaluate a candidate policy on logged data: estimates, diagnostics, the gate and a report.

:func:`evaluate_policy` is the glue behind ``pushrl evaluate`` and the registry's promotion:

* **Item policies** (``policy.kind == "item"``): the logged sent pushes become bandit rounds
  (:func:`~pushrl.policies.item_data.build_rounds`, with the policy's own fitted encoder when it
  carries one); ``action_dist = policy.action_dist(context)`` is repeated at every logged
  position, a linear reward model over ``shared + candidate features + item + position`` is
  cross-fitted (K folds: every round is predicted by a model that never saw it) and every
  applicable estimator of :data:`pushrl.ope.ESTIMATORS` runs on shared bootstrap resamples.
  The gate is :class:`~pushrl.ope.gate.DeploymentGate` (DR by default).
* **Timing policies** (``policy.kind == "timing"``): every pushes row is a decision slot (sent
  or not). The log is replayed through the one feature pipeline bucket by bucket, so the
  policy sees point-in-time features, the live :class:`~pushrl.data.features.FeatureState`,
  the scenario's guardrail mask and the pushes already sent that local day; its probability of
  the logged action is compared with the logging probability (``pscore_send`` when sent,
  ``pscore`` otherwise). Per-decision IS, weighted PDIS, weighted DR with FQE and FQE itself
  (:mod:`pushrl.ope.sequential`, :mod:`pushrl.ope.fqe`) run over trajectories; one bootstrap
  resamples *users* (with all their trajectories) for every estimate and the paired gate
  comparison; the gate applies the bandit gate's rules to the trajectory weights.

Horizon and segmentation. Trajectory weights are products of per-slot ratios, so over 672
hourly slots they explode: on ``simulator_data/synth`` the ESS of the final weights over the
full 28 days is 4 of 2,000 users for ``random-volume`` and 0 for the deterministic
``fixed-hour``/``most-active-hour`` (no user's log agrees with them for 28 days), against
9,170 and 640-760 of 55,490 user-days per day. ``segment="day"`` (the default) cuts each
user's log into user-days, episodes of at most 25 slots, the only segmentation that gives
usable ESS there. Its bias: each day
starts from the *logging* policy's state (fatigue features, who is still subscribed), so
carry-over effects of the evaluated policy across days (fatigue from its own sends, users it
makes unsubscribe losing their later days) are not counted; the within-day unsubscribe penalty
is. ``segment="none"`` keeps whole per-user trajectories and reports where the ESS collapses.
Whichever is chosen, the diagnostics of both horizons are reported.

In-sample evidence. A candidate trained on the evaluated logs (its card's data fingerprint
equals the dataset's) or a baseline fitted on them (``most-popular`` by name) is estimated
in-sample: on ``simulator_data/obd/random``, ``policies/vw-obd`` (trained there) estimates to
a CTR of ~0.13 against a logged 0.004, and to ~0.005 on the ``bts`` logs it never saw. The
gate therefore adds the rule :data:`HELD_OUT_RULE` for such a candidate (waived with
``allow_in_sample=True``); an in-sample baseline only gets a note. Overlapping but different
logs are not detected.

Layout: this module is the entry point and holds what both paths share (policy resolution,
:class:`EvaluationResult`, estimator selection, the held-out rule, the report);
:mod:`pushrl.ope.evaluate_item` is the item path and :mod:`pushrl.ope.evaluate_timing` the
timing path (with :class:`TimingSettings`). Their public names are re-exported here.

Rounds and slots passed to policies carry ``ctx.extra["user_index"]`` (index into
``ds.users``) and ``ctx.extra["row"]`` (index into ``ds.pushes``), for oracle-type policies.
"""


from __future__ import annotations

import datetime as dt
import importlib
import inspect
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from threadpoolctl import threadpool_limits

from pushrl.data.io import Dataset
from pushrl.errors import ArtifactError, DataError
from pushrl.ope import ESTIMATORS
from pushrl.ope.diagnostics import WeightDiagnostics
from pushrl.ope.gate import DeploymentGate, GateResult
from pushrl.ope.intervals import IntervalEstimate
from pushrl.ope.report import OPEReport, write_report
from pushrl.ope.sequential import SEQUENTIAL_ESTIMATORS, SequentialDiagnostics
from pushrl.policies.base import Policy
from pushrl.policies.item_data import RewardSpec

if TYPE_CHECKING:  # re-exported at runtime by __getattr__ (below) to avoid an import cycle
    from pushrl.ope.evaluate_item import crossfit_item_rewards as crossfit_item_rewards
    from pushrl.ope.evaluate_timing import TimingSettings as TimingSettings
    from pushrl.ope.evaluate_timing import _seq_replicates as _seq_replicates
    from pushrl.ope.evaluate_timing import _timing_slots as _timing_slots
    from pushrl.ope.evaluate_timing import load_timing_settings as load_timing_settings

ITEM_ESTIMATORS: tuple[str, ...] = tuple(ESTIMATORS)
TIMING_ESTIMATORS: tuple[str, ...] = (*SEQUENTIAL_ESTIMATORS, "fqe")
SEGMENTS: tuple[str, ...] = ("day", "none")
#: Hyperparameters used by ``evaluate`` where the estimator's own default degenerates
#: (``dr-os`` with ``lambda_=0`` is DM; ``switch-dr`` with ``tau=1`` drops nearly every
#: correction of a deterministic policy). Weights up to ~10 keep their DR correction.
DEFAULT_HYPERPARAMETERS: dict[str, dict[str, float]] = {
    "switch-dr": {"tau": 10.0}, "dr-os": {"lambda_": 100.0},
}
HELD_OUT_RULE = "held_out_data"
"""Gate rule added here (beyond :data:`pushrl.ope.gate.RULES`): the candidate must not have
been trained on the evaluated logs, where every estimate is optimistic."""
_GATE_PREFERENCE = {"item": ("dr", "sndr", "switch-dr", "dr-os", "snipw", "ipw", "dm"),
                    "timing": ("wdr", "wpdis", "pdis", "fqe")}
Progress = Callable[[str, int, int], None]
PolicyLike = Policy | str | Path


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

    def trained_on(self, fingerprint: str) -> bool:
        """True when the policy was trained or fitted on the logs with this fingerprint."""
        data = (self.card or {}).get("data")
        return self.fitted_on_eval_data or (
            isinstance(data, Mapping) and data.get("fingerprint") == fingerprint)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {"label": self.label, "source": self.source, "kind": self.policy.kind,
                "name": getattr(self.policy, "name", "policy"),
                "version": getattr(self.policy, "version", "0"),
                "artifact": None if self.artifact is None else str(self.artifact),
                "fitted_on_eval_data": self.fitted_on_eval_data}


def _baseline_class(name: str) -> Any:
    """The baseline's policy class when it has a ``fit(ds, ...)`` classmethod."""
    for mod in ("pushrl.policies.item_baselines", "pushrl.policies.timing_baselines"):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError:
            continue
        for obj in vars(m).values():
            if (isinstance(obj, type) and issubclass(obj, Policy)
                    and getattr(obj, "name", None) == name and callable(getattr(obj, "fit", None))):
                return obj
    return None


def _make_baseline(name: str, ds: Dataset, reward: RewardSpec | None) -> tuple[Policy, bool]:
    """A baseline by name; one with a ``fit(ds, ...)`` classmethod is fitted on ``ds``."""
    from pushrl.policies.baselines import definition, make_baseline, registry

    known = registry()
    variants = list(dict.fromkeys((name, name.replace("_", "-"), name.replace("-", "_"))))
    names = [n for n in variants if n in known]
    if not names:
        raise ArtifactError(f"--policy/--baseline {name!r} is neither a policy artifact "
                            f"(policies/NAME[/vN]) nor a baseline; baselines: "
                            f"{', '.join(sorted(known))}")
    for n in variants:
        cls = _baseline_class(n)
        if cls is None:
            continue
        params = definition(n).get("params") or definition(names[0]).get("params") or {}
        sig = inspect.signature(cls.fit)
        kw = {k: v for k, v in params.items()
              if k in sig.parameters and k not in ("data", "reward")}
        if "reward" in sig.parameters:
            kw["reward"] = reward
        return cls.fit(ds, **kw), True
    try:
        return make_baseline(names[0]), False
    except ModuleNotFoundError as exc:
        raise ArtifactError(f"baseline {name!r} is not available yet ({exc})") from None


def resolve_policy(spec: PolicyLike | ResolvedPolicy, ds: Dataset, *,
                   reward: RewardSpec | None = None) -> ResolvedPolicy:
    """Load a policy: an object, a registry artifact path or a baseline name.

    Baselines with a ``fit(ds, ...)`` classmethod (e.g. ``most-popular``) are fitted on ``ds``,
    the evaluated logs, with ``reward``; that is in-sample and flagged as such.

    Raises:
        ArtifactError: Unknown name, missing artifact or checksum mismatch.
    """
    if isinstance(spec, ResolvedPolicy):
        return spec
    if isinstance(spec, Policy):
        return ResolvedPolicy(spec, getattr(spec, "name", "policy"), "object")
    if not isinstance(spec, str | Path):
        raise TypeError(f"a policy must be a Policy, an artifact path or a baseline name, "
                        f"got {type(spec).__name__}")
    text = str(spec)
    path = Path(text)
    if path.exists() or "/" in text or os.sep in text:
        from pushrl.policies.registry import load_policy, read_card, resolve

        art = resolve(path)
        return ResolvedPolicy(load_policy(art), text, "artifact", read_card(art), art)
    policy, fitted = _make_baseline(text, ds, reward)
    return ResolvedPolicy(policy, text, "baseline", fitted_on_eval_data=fitted)


# --------------------------------------------------------------------- result
@dataclass
class EvaluationResult:
    """Everything one evaluation produced.

    Attributes:
        kind: ``"item"`` or ``"timing"``.
        policy: Summary of the candidate (label, source, name, version).
        baseline: Summary of the baseline; ``None`` = the logging policy.
        data: Dataset path, fingerprint and the number of rounds (item) or trajectories.
        reward: Reward definition (item: the :class:`RewardSpec`; timing: the weights).
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


def record_evaluation(artifact: str | Path, result: EvaluationResult) -> Path:
    """Write the gate evidence into an artifact's model card (``card["ope"]``).

    The registry's promotion reads ``card["ope"]["gate"]``. Only ``card.json`` changes (it is
    not among the checksummed files); it is replaced atomically.

    Returns:
        The card path.
    """
    card_path = Path(artifact) / "card.json"
    card = json.loads(card_path.read_text())
    card["ope"] = {
        "evaluated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": result.data, "baseline": result.baseline or {"label": "logging"},
        "gate": {**result.gate.to_dict(), "estimator": result.gate_estimator},
        "estimates": {k: v.to_dict() for k, v in result.estimates.items()},
        "report": result.report,
    }
    tmp = card_path.with_name(card_path.name + ".tmp")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=True, default=str))
    os.replace(tmp, card_path)
    return card_path


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
            "max_support_deficiency": g.max_support_deficiency}


# --------------------------------------------------------------------- entry point
def evaluate_policy(
    ds: Dataset,
    policy: PolicyLike | ResolvedPolicy,
    baseline: PolicyLike | ResolvedPolicy | None = None,
    *,
    estimators: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    out: str | Path | None = None,
    alpha: float = 0.05,
    reward: RewardSpec | str | None = None,
    scenario: str | TimingSettings = "default",
    segment: str = "day",
    gate: DeploymentGate | None = None,
    gate_estimator: str | None = None,
    hyperparameters: Mapping[str, Mapping[str, Any]] | None = None,
    allow_in_sample: bool = False,
    progress: Progress | None = None,
) -> EvaluationResult:
    """Estimate a candidate's value on logged data, diagnose it and apply the deployment gate.

    Args:
        ds: Logged data from :func:`~pushrl.data.validate.load_dataset`.
        policy: The candidate: a :class:`Policy`, a registry artifact path
            (``policies/NAME[/vN]``, verified before loading) or a baseline name.
        baseline: What the candidate must beat (same forms); ``None`` = the logging policy,
            valued on-policy as the mean logged reward.
        estimators: Names to run (default: every applicable one). Item:
            :data:`ITEM_ESTIMATORS`; timing: :data:`TIMING_ESTIMATORS`.
        n_bootstrap: Bootstrap resamples of every interval and of the gate.
        seed: Seed of the bootstrap and of the cross-fitting folds.
        out: Directory for the markdown and HTML report; ``None`` writes no report.
        alpha: Miscoverage of all intervals (0.05: 95%).
        reward: Item reward (default: the candidate's training reward from its card, else
            :func:`~pushrl.policies.item_data.default_reward`). Timing rewards come from the
            scenario.
        scenario: Scenario name of the guardrails and timing reward weights, or the
            :class:`TimingSettings` themselves.
        segment: Timing trajectories: ``"day"`` (user-days) or ``"none"`` (whole users).
        gate: Gate thresholds (its estimator is replaced by ``gate_estimator``).
        gate_estimator: Estimator of the gate (default: ``dr`` for items, ``wdr`` for timing).
        hyperparameters: Estimator hyperparameters by name, over
            :data:`DEFAULT_HYPERPARAMETERS`.
        allow_in_sample: Waive the gate's :data:`HELD_OUT_RULE` (a candidate trained on these
            very logs, by its card's data fingerprint, or a baseline fitted on them).
        progress: Called as ``progress(stage, done, total)``.

    Returns:
        The estimates, diagnostics, gate decision and report paths.

    Raises:
        ArtifactError: A policy cannot be resolved or loaded.
        DataError: The logs cannot support the evaluation (no ``pscore``, kinds differ...).
        ValueError: Unknown estimator or segment names.
    """
    # Many small BLAS calls (reward-model fits, FQE ridges): threads only add contention,
    # measured 3-10x slower with 2 threads on a busy 2-core machine.
    with threadpool_limits(limits=1):
        return _evaluate(ds, policy, baseline, estimators=estimators, n_bootstrap=n_bootstrap,
                         seed=seed, out=out, alpha=alpha, reward=reward, scenario=scenario,
                         segment=segment, gate=gate, gate_estimator=gate_estimator,
                         hyperparameters=hyperparameters, allow_in_sample=allow_in_sample,
                         progress=progress)


def _evaluate(ds: Dataset, policy: PolicyLike | ResolvedPolicy,
              baseline: PolicyLike | ResolvedPolicy | None, *, estimators: Sequence[str] | None,
              n_bootstrap: int, seed: int, out: str | Path | None, alpha: float,
              reward: RewardSpec | str | None, scenario: str | TimingSettings, segment: str,
              gate: DeploymentGate | None, gate_estimator: str | None,
              hyperparameters: Mapping[str, Mapping[str, Any]] | None,
              allow_in_sample: bool, progress: Progress | None) -> EvaluationResult:
    t0 = time.perf_counter()
    if segment not in SEGMENTS:
        raise ValueError(f"--segment must be one of {', '.join(SEGMENTS)}, got {segment!r}")
    _say(progress, "loading policies", 0, 1)
    rs = (reward if isinstance(reward, RewardSpec)
          else RewardSpec.parse(reward) if reward else None)
    cand = resolve_policy(policy, ds, reward=rs)
    base = None if baseline is None else resolve_policy(baseline, ds, reward=rs)
    kind = cand.policy.kind
    if base is not None and base.policy.kind != kind:
        raise DataError(f"the candidate is a {kind} policy but the baseline {base.label!r} is a "
                        f"{base.policy.kind} policy; compare policies of one kind")
    # the paths build on this module, so they are imported when used (no import cycle)
    if kind == "item":
        from pushrl.ope.evaluate_item import _evaluate_item

        res = _evaluate_item(ds, cand, base, estimators=estimators, reward=rs,
                             n_bootstrap=n_bootstrap, seed=seed, alpha=alpha, gate=gate,
                             gate_estimator=gate_estimator, hyper=hyperparameters,
                             progress=progress)
    elif kind == "timing":
        from pushrl.ope.evaluate_timing import _evaluate_timing

        res = _evaluate_timing(ds, cand, base, estimators=estimators, n_bootstrap=n_bootstrap,
                               seed=seed, alpha=alpha, gate=gate, gate_estimator=gate_estimator,
                               scenario=scenario, segment=segment, progress=progress)
    else:
        raise ArtifactError(f"policy {cand.label!r} has unknown kind {kind!r}")
    _check_held_out(res, cand, base, allow_in_sample)
    res.settings.update(n_bootstrap=n_bootstrap, seed=seed, alpha=alpha,
                        allow_in_sample=allow_in_sample)
    if out is not None:
        _say(progress, "writing the report", 0, 1)
        res.report = {k: str(v) for k, v in write_report(_report(res), out, "ope_report").items()}
    res.seconds = time.perf_counter() - t0
    return res


def _check_held_out(res: EvaluationResult, cand: ResolvedPolicy, base: ResolvedPolicy | None,
                    allow_in_sample: bool) -> None:
    """Note in-sample policies; block a candidate trained on the evaluated logs."""
    fp = res.data["fingerprint"]
    for who, role in ((cand, "candidate"), (base, "baseline")):
        if who is not None and who.trained_on(fp):
            res.notes.append(f"the {role} {who.label} was trained or fitted on these logs "
                             f"(fingerprint {fp}): its estimate is in-sample and optimistic")
    if cand.trained_on(fp) and not allow_in_sample:
        g = res.gate
        msg = (f"the candidate was trained on the evaluated logs (fingerprint {fp}); evaluate "
               "it on logs it has not seen (e.g. a later period), or pass allow_in_sample / "
               "--allow-in-sample to waive this rule")
        res.gate = replace(g, passed=False, failed_rules=(*g.failed_rules, HELD_OUT_RULE),
                           messages=(*g.messages, msg))


_SOURCES = {"artifact": "registry artifact", "baseline": "built-in baseline",
            "object": "Python object"}


def _report(res: EvaluationResult) -> OPEReport:
    base_label = "logging policy" if res.baseline is None else str(res.baseline["label"])
    ests = list(res.estimates.values()) + [
        IntervalEstimate(f"baseline: {e.name}", e.value, e.lower, e.upper, e.alpha, e.method,
                         e.bootstrap_mean) for e in res.baseline_estimates.values()]
    ref = res.gate.comparison.baseline_value
    meta: dict[str, Any] = {
        "candidate": f"{res.policy['label']} ({res.kind} policy, "
                     f"{_SOURCES.get(res.policy['source'], res.policy['source'])})",
        "baseline": base_label, "data": f"{res.data['path']} (fingerprint "
                                        f"{res.data['fingerprint']})",
        "reward": res.reward,
        **{k: v for k, v in res.data.items() if k not in ("path", "fingerprint")},
        "gate estimator": res.gate_estimator,
        "bootstrap": (f"{res.settings.get('n_bootstrap')} resamples, "
                      f"seed {res.settings.get('seed')}"),
    }
    if res.segment is not None:
        meta["segment"] = res.segment
        for k, d in res.sequential.items():
            meta[f"horizon ({k.replace('_', ' ')})"] = (
                f"{d.horizon} slots, final ESS {d.ess_final:.1f} of {d.n_traj}, max log-weight "
                f"{d.max_log_weight:.1f}, {d.frac_exploded:.1%} exploded: {d.reliability}")
    if res.baseline_diagnostics is not None:
        b = res.baseline_diagnostics
        meta["baseline weights"] = (f"ESS {b.ess:.1f} ({b.ess_ratio:.2%}), max {b.weight_max:.4g}, "
                                    f"support deficiency {b.support_deficiency:.2%}")
    for k, v in res.skipped.items():
        meta[f"skipped {k}"] = v
    for i, note in enumerate(res.notes, 1):
        meta[f"note {i}"] = note
    return OPEReport(f"Off-policy evaluation: {res.policy['label']} vs {base_label}",
                     list(ests), res.diagnostics, res.weights, res.gate, ref,
                     f"baseline ({res.gate_estimator})" if res.baseline else "logging (on-policy)",
                     meta)


# --------------------------------------------------------------------- re-exports
_REEXPORTS = {
    "crossfit_item_rewards": "pushrl.ope.evaluate_item",
    "TimingSettings": "pushrl.ope.evaluate_timing",
    "load_timing_settings": "pushrl.ope.evaluate_timing",
    "_seq_replicates": "pushrl.ope.evaluate_timing",
    "_timing_slots": "pushrl.ope.evaluate_timing",
}


def __getattr__(name: str) -> Any:
    """Names of the item and timing paths, importable from here as before the split.

    Resolved lazily: both path modules import this one, so importing them at the top would
    be circular.
    """
    if name in _REEXPORTS:
        return getattr(importlib.import_module(_REEXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
