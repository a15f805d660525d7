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
``allow_in_sample=True``); an in-sample baseline only gets a note. The parts of a user split
(:mod:`pushrl.data.split`, written by ``pushrl init``) carry the whole log's fingerprint: a
policy trained on the whole log or on the evaluated part is blocked, one trained on the other
part of the same split passes (:func:`pushrl.data.split.may_share_rows`). Otherwise
overlapping but different logs are not detected.

Layout: this module is the entry point (policy resolution, the held-out rule, recording);
:mod:`pushrl.ope._common` holds what both paths share (:class:`EvaluationResult`,
:class:`ResolvedPolicy`, estimator selection), :mod:`pushrl.ope.evaluate_item` is the item
path, :mod:`pushrl.ope.evaluate_timing` the timing path (with :class:`TimingSettings`) and
:mod:`pushrl.ope.evaluate_report` turns a result into the report. The public names of all of
them are importable from here.

Rounds and slots passed to policies carry ``ctx.extra["user_index"]`` (index into
``ds.users``) and ``ctx.extra["row"]`` (index into ``ds.pushes``), for oracle-type policies.
"""


from __future__ import annotations

import datetime as dt
import inspect
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from pushrl.data.io import Dataset
from pushrl.data.sample import sample_of
from pushrl.data.validate import legacy_lineage
from pushrl.errors import ArtifactError, DataError
from pushrl.ope._common import (
    DEFAULT_HYPERPARAMETERS,
    ITEM_ESTIMATORS,
    TIMING_ESTIMATORS,
    EvaluationResult,
    Progress,
    ResolvedPolicy,
    _say,
)
from pushrl.ope.evaluate_item import _evaluate_item, crossfit_item_rewards
from pushrl.ope.evaluate_report import evaluation_report
from pushrl.ope.evaluate_timing import TimingSettings, _evaluate_timing, load_timing_settings
from pushrl.ope.gate import DeploymentGate
from pushrl.ope.report import write_report
from pushrl.policies import item_baselines, timing_baselines
from pushrl.policies.base import Policy
from pushrl.policies.baselines import definition, make_baseline, registry
from pushrl.rules.reward import RewardWeights, item_reward
from pushrl.policies.registry import load_policy, read_card, resolve, update_card

__all__ = [
    "DEFAULT_HYPERPARAMETERS",
    "HELD_OUT_RULE",
    "ITEM_ESTIMATORS",
    "SEGMENTS",
    "TIMING_ESTIMATORS",
    "EvaluationResult",
    "PolicyLike",
    "Progress",
    "ResolvedPolicy",
    "TimingSettings",
    "crossfit_item_rewards",
    "evaluate_policy",
    "load_timing_settings",
    "record_evaluation",
    "resolve_policy",
]

SEGMENTS: tuple[str, ...] = ("day", "none")
HELD_OUT_RULE = "held_out_data"
"""Gate rule added here (beyond :data:`pushrl.ope.gate.RULES`): the candidate must not have
been trained on the evaluated logs, where every estimate is optimistic."""
PolicyLike = Policy | str | Path


def _baseline_fit(name: str) -> Callable[..., Policy] | None:
    """The ``fit(ds, ...)`` classmethod of the baseline's policy class, if it has one."""
    for m in (item_baselines, timing_baselines):
        for obj in vars(m).values():
            if (isinstance(obj, type) and issubclass(obj, Policy)
                    and getattr(obj, "name", None) == name and callable(getattr(obj, "fit", None))):
                fit: Callable[..., Policy] = getattr(obj, "fit")  # noqa: B009
                return fit
    return None


def _make_baseline(name: str, ds: Dataset, reward: RewardWeights | None
                   ) -> tuple[Policy, bool]:
    """A baseline by name; one with a ``fit(ds, ...)`` classmethod is fitted on ``ds``."""
    known = registry()
    variants = list(dict.fromkeys((name, name.replace("_", "-"), name.replace("-", "_"))))
    names = [n for n in variants if n in known]
    if not names:
        raise ArtifactError(f"--policy/--baseline {name!r} is neither a policy artifact "
                            f"(policies/NAME[/vN]) nor a baseline; baselines: "
                            f"{', '.join(sorted(known))}")
    for n in variants:
        fit = _baseline_fit(n)
        if fit is None:
            continue
        params = definition(n).get("params") or definition(names[0]).get("params") or {}
        sig = inspect.signature(fit)
        kw = {k: v for k, v in params.items()
              if k in sig.parameters and k not in ("data", "reward")}
        if "reward" in sig.parameters:
            kw["reward"] = reward
        return fit(ds, **kw), True
    return make_baseline(names[0]), False


def resolve_policy(spec: PolicyLike | ResolvedPolicy, ds: Dataset, *,
                   reward: RewardWeights | None = None) -> ResolvedPolicy:
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
        art = resolve(path)
        return ResolvedPolicy(load_policy(art), text, "artifact", read_card(art), art)
    policy, fitted = _make_baseline(text, ds, reward)
    return ResolvedPolicy(policy, text, "baseline", fitted_on_eval_data=fitted)


def record_evaluation(artifact: str | Path, result: EvaluationResult) -> Path:
    """Write the gate evidence into an artifact's model card (``card["ope"]``).

    The registry's promotion reads ``card["ope"]["gate"]``. Only ``card.json`` changes (it is
    not among the checksummed files); it is replaced atomically.

    Returns:
        The card path.
    """
    return update_card(artifact, "ope", {
        "evaluated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": result.data, "baseline": result.baseline or {"label": "logging"},
        "gate": {**result.gate.to_dict(), "estimator": result.gate_estimator},
        "estimates": {k: v.to_dict() for k, v in result.estimates.items()},
        "report": result.report,
    })


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
    reward: RewardWeights | str | None = None,
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
              reward: RewardWeights | str | None, scenario: str | TimingSettings, segment: str,
              gate: DeploymentGate | None, gate_estimator: str | None,
              hyperparameters: Mapping[str, Mapping[str, Any]] | None,
              allow_in_sample: bool, progress: Progress | None) -> EvaluationResult:
    t0 = time.perf_counter()
    if segment not in SEGMENTS:
        raise ValueError(f"--segment must be one of {', '.join(SEGMENTS)}, got {segment!r}")
    _say(progress, "loading policies", 0, 1)
    rs = None if reward is None or reward == "" else item_reward(reward)
    cand = resolve_policy(policy, ds, reward=rs)
    base = None if baseline is None else resolve_policy(baseline, ds, reward=rs)
    for who in (cand, base):
        if who is not None and who.card and "trigger_policy" in who.card:
            raise ArtifactError(
                f"{who.label} is a trigger delay policy: evaluate it on its trigger rounds "
                "(`pushrl evaluate` routes it; in Python "
                "pushrl.ope.evaluate_delay_log.evaluate_delay_artifact)")
    kind = cand.policy.kind
    if base is not None and base.policy.kind != kind:
        raise DataError(f"the candidate is a {kind} policy but the baseline {base.label!r} is a "
                        f"{base.policy.kind} policy; compare policies of one kind")
    if kind == "item":
        res = _evaluate_item(ds, cand, base, estimators=estimators, reward=rs,
                             n_bootstrap=n_bootstrap, seed=seed, alpha=alpha, gate=gate,
                             gate_estimator=gate_estimator, hyper=hyperparameters,
                             progress=progress)
    elif kind == "timing":
        res = _evaluate_timing(ds, cand, base, estimators=estimators, n_bootstrap=n_bootstrap,
                               seed=seed, alpha=alpha, gate=gate, gate_estimator=gate_estimator,
                               scenario=scenario, segment=segment, progress=progress)
    else:
        raise ArtifactError(f"policy {cand.label!r} has unknown kind {kind!r}")
    lineage = res.data
    sample = sample_of(ds)
    if sample is not None:
        res.notes.append(
            f"estimated on a seeded sample of {sample['users']:,} of {sample['of_users']:,} "
            f"users (seed {sample['seed']}, pushrl.data.sample): an estimate of the same "
            "value with wider intervals than the whole log's")
    if sample is None and any(p is not None and p.has_legacy_lineage() for p in (cand, base)):
        lineage = {**res.data, "legacy": legacy_lineage(ds)}  # a card from before fp2
    _check_held_out(res, cand, base, allow_in_sample, lineage)
    res.settings.update(n_bootstrap=n_bootstrap, seed=seed, alpha=alpha,
                        allow_in_sample=allow_in_sample)
    if out is not None:
        _say(progress, "writing the report", 0, 1)
        written = write_report(evaluation_report(res), out, "ope_report")
        res.report = {k: str(v) for k, v in written.items()}
    res.seconds = time.perf_counter() - t0
    return res


def _check_held_out(res: EvaluationResult, cand: ResolvedPolicy, base: ResolvedPolicy | None,
                    allow_in_sample: bool, lineage: Mapping[str, Any]) -> None:
    """Note in-sample policies; block a candidate trained on the evaluated logs
    (``lineage``: ``res.data``, with ``legacy`` when a card predates fp2)."""
    fp = res.data["fingerprint"]
    for who, role in ((cand, "candidate"), (base, "baseline")):
        if who is not None and who.trained_on(lineage):
            res.notes.append(f"the {role} {who.label} was trained or fitted on these logs "
                             f"(fingerprint {fp}): its estimate is in-sample and optimistic")
    if cand.trained_on(lineage) and not allow_in_sample:
        g = res.gate
        part = (res.data.get("split") or {}).get("part")
        what = f"the {part} users of the evaluated logs" if part else "the evaluated logs"
        msg = (f"the candidate was trained on {what} (fingerprint {fp}) or on logs containing "
               "them; evaluate it on logs it has not seen (the held-out users of a `pushrl "
               "init` scenario: `pushrl evaluate --scenario DIR/scenario.toml`, or a later "
               "period), or pass allow_in_sample / --allow-in-sample to waive this rule")
        res.gate = replace(g, passed=False, failed_rules=(*g.failed_rules, HELD_OUT_RULE),
                           messages=(*g.messages, msg))
