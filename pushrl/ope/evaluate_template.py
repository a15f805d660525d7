"""Off-policy evaluation and the deployment gate for the template slot.

A template policy is evaluated on logged template rounds
(:func:`pushrl.policies.template_policy.template_rounds`: the logged arm, its
``pscore_template`` and the push's item-round reward) with the same estimators as items
(IPW, SNIPW, DR, SNDR; DR's reward model is the cross-fitted linear model of item OPE,
:func:`~pushrl.ope.evaluate_item.crossfit_item_rewards`, over the template context), and the
same :class:`~pushrl.ope.gate.DeploymentGate` decides whether it may replace a baseline
(default: the logging policy's on-policy value).

Because the item slot comes first and the template is drawn given the item, evaluating the
template policy on these rounds keeps the logged items: it estimates "the logged item policy
with this template policy". The whole action's logging probability is ``pscore *
pscore_template``; an item-and-template policy pair is evaluated with it by multiplying the
item and template ``action_dist`` of the logged item.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from pushrl.ope.estimators import (
    DoublyRobust,
    InverseProbabilityWeighting,
    SelfNormalizedDoublyRobust,
    SelfNormalizedInverseProbabilityWeighting,
)
from pushrl.ope.evaluate_item import crossfit_item_rewards
from pushrl.ope.gate import DeploymentGate
from pushrl.policies.base import ItemContext, ItemPolicy
from pushrl.policies.template_policy import TemplateRounds


class SlotRounds(Protocol):
    """Logged rounds of a slot after the item (templates, channels): what this module reads."""

    context: ItemContext
    action: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray
    arms: Any  # has ``ids``: the arm names

    @property
    def n_rounds(self) -> int: ...


def evaluate_template_policy(rounds: TemplateRounds | SlotRounds, policy: ItemPolicy,
                             baseline: ItemPolicy | None = None, *, alpha: float = 0.05,
                             n_bootstrap: int = 2000, seed: int = 0,
                             gate: DeploymentGate | None = None) -> dict[str, Any]:
    """Estimates with ``1 - alpha`` intervals and the gate's verdict for ``policy``.

    Args:
        rounds: Logged template rounds.
        policy: The template policy to evaluate (its ``action_dist`` over the arms).
        baseline: Template policy to beat; None = the logging policy (on-policy mean).
        alpha: Miscoverage of the intervals.
        n_bootstrap: Bootstrap resamples.
        seed: Seed of the reward model's folds and of the bootstrap.
        gate: Gate configuration (default :class:`DeploymentGate` with DR).

    Returns:
        ``{"n_rounds", "on_policy", "estimates": {name: {"value", "lower", "upper"}},
        "gate": GateResult.to_dict()}``.
    """
    ctx = rounds.context
    dist = policy.action_dist(ctx)
    q = crossfit_item_rewards(ctx, rounds.action, rounds.reward, None, 1, seed=seed)
    est: dict[str, Any] = {}
    for e in (InverseProbabilityWeighting(), SelfNormalizedInverseProbabilityWeighting(),
              DoublyRobust(), SelfNormalizedDoublyRobust()):
        iv = e.estimate_interval(rounds.reward, rounds.action, rounds.pscore, dist[:, :, None],
                                 estimated_rewards_by_reg_model=q, alpha=alpha,
                                 n_bootstrap_samples=n_bootstrap,
                                 random_state=np.random.RandomState(seed))
        lo, hi = (next(float(v) for k, v in iv.items() if side in k)
                  for side in ("(lower)", "(upper)"))
        value = e.estimate_policy_value(rounds.reward, rounds.action, rounds.pscore,
                                        dist[:, :, None], estimated_rewards_by_reg_model=q)
        est[e.estimator_name] = {"value": float(value), "lower": lo, "upper": hi}
    base = None if baseline is None else baseline.action_dist(ctx)[:, :, None]
    verdict = (gate or DeploymentGate()).evaluate(
        rounds.reward, rounds.action, rounds.pscore, dist[:, :, None], base,
        estimated_rewards_by_reg_model=q, random_state=seed)
    return {"n_rounds": rounds.n_rounds, "on_policy": float(rounds.reward.mean()),
            "arms": list(rounds.arms.ids), "estimates": est, "gate": verdict.to_dict()}
