"""Off-policy evaluation and the deployment gate for the delay slot (issue #16).

A learned trigger-delay policy (`pushrl train triggers`) is evaluated against a baseline
(default ``delay-fixed-1h``) on logged delay rounds
(:func:`pushrl.policies.delay_data.delay_rounds`: the logged arm, its ``pscore`` and the
reward ``converted - send_cost * sent - unsub_cost * unsubscribed``) of users it was not
trained on: the held-out part of the same seeded user split
(:class:`pushrl.data.split.UserSplit`, ``--holdout-frac`` / ``--split-seed``).

* **Censoring**: only rounds whose conversion window ends inside the log count
  (``DelayRounds.complete``); a later round's reward is not yet known.
* **Reward model** (DR's): the mean training reward per (trigger kind, arm),
  :func:`kind_arm_reward_model`, fitted on the training users' complete rounds (never on the
  evaluated ones). On a log without the policy's training users (`pushrl evaluate` of a delay
  artifact on a new log, :mod:`pushrl.ope.evaluate_delay_log`) the same model is cross-fitted
  over seeded user folds of the evaluated rounds (:func:`crossfit_kind_arm_reward_model`):
  every round is predicted by a model that never saw its user.
* **Gate**: :class:`~pushrl.ope.gate.DeploymentGate` with DR (the decision), IPW reported
  beside it; plus the held-out rule ``held_out_data`` (:data:`pushrl.ope.evaluate.HELD_OUT_RULE`):
  the evaluated users must be provably disjoint from the policy's training users
  (:func:`pushrl.data.split.may_share_rows` of the card's ``data`` and the evaluated lineage).

:func:`record_delay_evaluation` writes the evidence into the artifact's model card
(``card["ope"]["gate"]``), which :func:`pushrl.serve.registry_ops.run_gate` reads when the
artifact is promoted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pushrl.data.split import UserSplit, may_share_rows, user_uniform
from pushrl.errors import DataError
from pushrl.ope.estimators import DoublyRobust, InverseProbabilityWeighting
from pushrl.ope.gate import DeploymentGate
from pushrl.policies.delay_data import DelayRounds
from pushrl.policies.registry import update_card
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.triggers import TriggerConfig
from pushrl.train.delay import DelayTrainResult

#: Fewest training rounds of a (kind, arm) cell for its own mean; sparser cells use the
#: arm's mean over kinds.
MIN_CELL = 20
#: The gate rule of evidence that is not held out (the same name as item/timing OPE's).
HELD_OUT_RULE = "held_out_data"
#: Default baseline of the delay gate.
BASELINE = "delay-fixed-1h"
#: User folds of the cross-fitted reward model (evaluation without training rounds).
N_FOLDS = 5


def kind_arm_reward_model(train: DelayRounds, test: DelayRounds,
                          min_cell: int = MIN_CELL) -> np.ndarray:
    """DR's reward model: the mean training reward per (trigger kind, arm).

    Args:
        train: Rounds the model is fitted on (the training users' complete rounds).
        test: Rounds it predicts for.
        min_cell: A (kind, arm) cell with fewer training rounds takes the arm's mean over
            every kind (the overall mean when the arm was never logged).

    Returns:
        ``(test.n_rounds, n_arms, 1)`` expected reward of each arm on each test round.
    """
    k = len(train.arms)
    if len(test.arms) != k:
        raise DataError(f"the reward model's training rounds have {k} arms and the evaluated "
                        f"rounds {len(test.arms)}; build both with the same trigger config")
    out = np.zeros((test.n_rounds, k))
    overall = float(train.reward.mean()) if train.n_rounds else 0.0
    arm_mean = np.array([train.reward[train.action == a].mean() if (train.action == a).any()
                         else overall for a in range(k)])
    out[:] = arm_mean
    for kind in np.unique(test.kind):
        m, mt = test.kind == kind, train.kind == kind
        for a in range(k):
            cell = mt & (train.action == a)
            if cell.sum() >= min_cell:
                out[m, a] = train.reward[cell].mean()
    return out[:, :, None]


def crossfit_kind_arm_reward_model(rounds: DelayRounds, n_folds: int = N_FOLDS, seed: int = 0,
                                   min_cell: int = MIN_CELL) -> np.ndarray:
    """:func:`kind_arm_reward_model` cross-fitted over seeded user folds of ``rounds``.

    Args:
        rounds: The evaluated rounds (their complete rounds fit the folds' models).
        n_folds: User folds (>= 2); a user's rounds are all in one fold
            (:func:`pushrl.data.split.user_uniform` with salt ``pushrl-delay-crossfit:SEED:``).
        seed: Seed of the fold assignment.
        min_cell: As in :func:`kind_arm_reward_model`.

    Returns:
        ``(rounds.n_rounds, n_arms, 1)``: each round's prediction by the model fitted on the
        other folds' complete rounds.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    u = user_uniform(np.asarray(rounds.user_id, dtype=object), f"pushrl-delay-crossfit:{seed}:")
    fold = np.minimum((u * n_folds).astype(np.int64), n_folds - 1)
    done = np.zeros(rounds.n_rounds, bool)
    done[_complete(rounds)] = True
    out = np.zeros((rounds.n_rounds, len(rounds.arms), 1))
    for f in range(n_folds):
        at = np.flatnonzero(fold == f)
        if at.size:
            fit = rounds.take(np.flatnonzero((fold != f) & done))
            out[at] = kind_arm_reward_model(fit, rounds.take(at), min_cell=min_cell)
    return out


def _complete(rounds: DelayRounds) -> np.ndarray:
    """Indices of the rounds whose conversion window ends inside the log."""
    if rounds.complete is None:
        return np.arange(rounds.n_rounds)
    return np.flatnonzero(rounds.complete)


def evaluate_delay_policy(train: DelayRounds | None, heldout: DelayRounds,
                          action_dist: np.ndarray, baseline_dist: np.ndarray, *,
                          baseline: str = BASELINE,
                          trained_on: Mapping[str, Any] | None = None,
                          evaluated_on: Mapping[str, Any] | None = None,
                          alpha: float = 0.05, n_bootstrap: int = 1000, seed: int = 0,
                          gate: DeploymentGate | None = None,
                          allow_in_sample: bool = False) -> dict[str, Any]:
    """IPW and DR estimates of a delay policy vs a baseline on held-out rounds, and the gate.

    Args:
        train: The training users' rounds (the reward model's data; censored rounds dropped
            here), or None: the reward model is cross-fitted over user folds of ``heldout``
            (:func:`crossfit_kind_arm_reward_model`, folds seeded by ``seed``).
        heldout: The evaluated users' rounds, at the policy's send and unsubscribe costs.
        action_dist: ``(heldout.n_rounds, n_arms)`` the policy's arm probabilities per round.
        baseline_dist: ``(heldout.n_rounds, n_arms)`` the baseline's.
        baseline: The baseline's name (for the record).
        trained_on: The policy card's ``data`` (``{"fingerprint", "split"}``); with
            ``evaluated_on`` (the evaluated part's lineage) it decides the held-out rule.
            Either None: the rule fails (the evidence cannot be shown to be held out).
        alpha: Miscoverage of the intervals (0.05: 95 %).
        n_bootstrap: Bootstrap resamples of the gate's paired interval.
        seed: Seed of the bootstrap.
        gate: Gate thresholds (its estimator is replaced: DR decides, IPW is reported).
        allow_in_sample: Waive the held-out rule (the evidence is then optimistic; recorded
            as ``allow_in_sample``).

    Returns:
        ``{"rounds", "censored", "baseline", "estimator": "dr", "reward_model":
        "training rounds"|"cross-fitted", "allow_in_sample", "estimates": {"ipw"|"dr":
        {"candidate", "baseline", "difference", "lower", "upper", "ess", "passed",
        "failed_rules"}}, "gate": GateResult.to_dict() of DR + the held-out rule}``.

    Raises:
        DataError: no complete held-out rounds, or the distributions have the wrong shape.
    """
    n, k = heldout.n_rounds, len(heldout.arms)
    for name, d in (("action_dist", action_dist), ("baseline_dist", baseline_dist)):
        if np.shape(d) != (n, k):
            raise DataError(f"{name} must have shape ({n}, {k}) (rounds x arms), got "
                            f"{np.shape(d)}")
    done = _complete(heldout)
    if done.size == 0:
        raise DataError("no held-out trigger round has its conversion window inside the log; "
                        "use a longer log or a shorter --horizon-h")
    if train is None:
        model = crossfit_kind_arm_reward_model(heldout, seed=seed)[done]
    else:
        model = kind_arm_reward_model(train.take(_complete(train)), heldout.take(done))
    base = gate or DeploymentGate(n_bootstrap_samples=n_bootstrap, alpha=alpha)
    estimates: dict[str, Any] = {}
    results = {}
    for name, est in (("ipw", InverseProbabilityWeighting()), ("dr", DoublyRobust())):
        g = DeploymentGate(**{**_fields(base), "estimator": est})
        res = g.evaluate(heldout.reward[done], heldout.action[done], heldout.pscore[done],
                         action_dist[done, :, None], baseline_dist[done, :, None],
                         estimated_rewards_by_reg_model=model, random_state=seed)
        c = res.comparison
        results[name] = res
        estimates[name] = {"candidate": c.candidate_value, "baseline": c.baseline_value,
                           "difference": c.difference, "lower": c.lower, "upper": c.upper,
                           "ess": res.diagnostics.ess, "passed": res.passed,
                           "failed_rules": list(res.failed_rules)}
    verdict = results["dr"].to_dict()
    held = (trained_on is not None and evaluated_on is not None
            and not may_share_rows(trained_on, evaluated_on))
    if not held and not allow_in_sample:
        verdict["passed"] = False
        verdict["failed_rules"] = [*verdict["failed_rules"], HELD_OUT_RULE]
        verdict["messages"] = [*verdict["messages"],
                               "the evaluated triggers may include the policy's training "
                               "users; evaluate on the held-out part of its user split "
                               "(`pushrl train triggers --holdout-frac F --split-seed S`)"]
    return {"rounds": int(done.size), "censored": int(n - done.size), "baseline": baseline,
            "estimator": "dr",
            "reward_model": "training rounds" if train is not None else "cross-fitted",
            "allow_in_sample": bool(allow_in_sample and not held),
            "estimates": estimates, "gate": verdict}


def _fields(gate: DeploymentGate) -> dict[str, Any]:
    """The gate's thresholds as keyword arguments."""
    import dataclasses

    return {f.name: getattr(gate, f.name) for f in dataclasses.fields(gate) if f.init}


def record_delay_evaluation(artifact: str | Path, result: Mapping[str, Any],
                            data: Mapping[str, Any]) -> Path:
    """Write a delay evaluation into an artifact's model card (``card["ope"]``), where
    promotion reads the gate (``card["ope"]["gate"]``: ``passed``, ``failed_rules``,
    ``messages``, ``estimator``).

    Args:
        artifact: The artifact directory (``policies/NAME/vN``).
        result: :func:`evaluate_delay_policy`'s result.
        data: The evaluated logs: ``{"path", "fingerprint", "split"}`` (which part of which
            split).

    Returns:
        The card path (only ``card.json`` changes; it is replaced atomically).
    """
    return update_card(artifact, "ope", {
        "evaluated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": dict(data), "baseline": {"label": result["baseline"]},
        "rounds": result["rounds"], "censored": result["censored"],
        **{k: result[k] for k in ("reward_model", "evaluated", "allow_in_sample")
           if k in result},
        "gate": {**result["gate"], "estimator": result["estimator"]},
        "estimates": result["estimates"],
    })


def gate_trained_delay(res: DelayTrainResult, data: str | Path, split: UserSplit, *,
                       triggers: TriggerConfig, guardrails: Guardrails | None = None,
                       baseline: str = BASELINE, n_bootstrap: int = 1000,
                       seed: int = 0) -> dict[str, Any]:
    """Evaluate a just-trained delay policy on the held-out users of its split and record the
    gate in its card (when it was saved).

    Args:
        res: :func:`pushrl.train.delay.train_delay`'s result (trained on ``split``'s
            ``train`` part; its ``rounds`` fit the reward model).
        data: The same log directory.
        split: The user split of training (its ``heldout`` part is evaluated).
        triggers, guardrails: The rules of training (the same rounds' contexts).
        baseline: A delay baseline name (:mod:`pushrl.policies.delay_baselines`).

    Returns:
        :func:`evaluate_delay_policy`'s result plus ``data`` (the evaluated part's lineage).
    """
    from pushrl.data.validate import load_dataset
    from pushrl.policies.baselines import make_baseline
    from pushrl.policies.delay_data import delay_rounds

    if res.rounds is None:
        raise ValueError("the training result has no rounds (train it with train_delay)")
    tp = res.card["trigger_policy"]
    ds, report = load_dataset(data, split=split.with_part("heldout"))
    held = delay_rounds(ds, triggers, guardrails or Guardrails(), horizon_h=tp["horizon_h"],
                        send_cost=tp["send_cost"], unsub_cost=tp["unsub_cost"], due=False)
    if held.arms != res.rounds.arms:
        raise DataError(f"the held-out triggers' arms {held.arms} differ from training's "
                        f"{res.rounds.arms}")
    lineage = {"path": str(data), "fingerprint": report.fingerprint, "split": ds.split}
    out = evaluate_delay_policy(
        res.rounds, held, res.policy.action_dist(held.context),
        make_baseline(baseline).action_dist(held.context), baseline=baseline,
        trained_on=res.card.get("data"), evaluated_on=lineage, n_bootstrap=n_bootstrap,
        seed=seed)
    out["data"] = lineage
    if res.artifact is not None:
        record_delay_evaluation(res.artifact, out, lineage)
    return out
