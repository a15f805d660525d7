"""Off-policy evaluation and the deployment gate for the channel slot (issue 17).

A channel policy (:mod:`pushrl.policies.channel_policy`) is evaluated on logged channel
rounds (the logged channel, its ``pscore_channel`` and the push's reward with that channel's
send cost) with the estimators and gate of the template slot
(:func:`pushrl.ope.evaluate_template.evaluate_template_policy`: IPW, SNIPW, DR, SNDR with a
cross-fitted reward model; :class:`~pushrl.ope.gate.DeploymentGate`). The rounds' contexts
mask each user's channels by the opt-in at the row's time, so a push-only baseline puts a
user without push on ``none`` (reward exactly 0), as it would live. ``none`` is logged
(unsent rows with a ``pscore_channel``), so it has support. Like the template slot, this
keeps the logged items and send decisions: it estimates "the logged sends with this channel
policy". Per-channel caps are not replayed into the mask (opt-in is).
"""

from __future__ import annotations

from typing import Any

from pushrl.ope.evaluate_template import evaluate_template_policy
from pushrl.ope.gate import DeploymentGate
from pushrl.policies.base import ItemPolicy
from pushrl.policies.channel_policy import ChannelRounds, FixedChannel


def evaluate_channel_policy(rounds: ChannelRounds, policy: ItemPolicy,
                            baseline: ItemPolicy | None = None, *, alpha: float = 0.05,
                            n_bootstrap: int = 2000, seed: int = 0,
                            gate: DeploymentGate | None = None) -> dict[str, Any]:
    """Estimates with ``1 - alpha`` intervals and the gate's verdict for ``policy``.

    Args:
        rounds: Logged channel rounds (:func:`~pushrl.policies.channel_policy.channel_rounds`).
        policy: The channel policy (its ``action_dist`` over ``none`` + the channels).
        baseline: Policy to beat; None = push-only (:class:`FixedChannel` on ``push``, or on
            the first channel when there is no push channel).

    Returns:
        As :func:`~pushrl.ope.evaluate_template.evaluate_template_policy`, plus ``baseline``.
    """
    if baseline is None:
        names = rounds.arms.channels.names
        baseline = FixedChannel(arm=1 + (names.index("push") if "push" in names else 0),
                                name="push-only")
    out = evaluate_template_policy(rounds, policy, baseline, alpha=alpha,
                                   n_bootstrap=n_bootstrap, seed=seed, gate=gate)
    out["baseline"] = getattr(baseline, "name", type(baseline).__name__)
    return out
