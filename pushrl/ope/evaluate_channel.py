"""Off-policy evaluation and the deployment gate for the channel slot (issue 17).

A channel policy (:mod:`pushrl.policies.channel_policy`) is evaluated on logged channel
rounds (the logged channel, its ``pscore_channel`` and the push's reward with that channel's
send cost) with the estimators and gate of the template slot
(:func:`pushrl.ope.evaluate_template.evaluate_template_policy`: IPW, SNIPW, DR, SNDR with a
cross-fitted reward model; :class:`~pushrl.ope.gate.DeploymentGate`). The rounds' contexts
mask each user's channels by the guardrails the server and the simulator apply
(:func:`~pushrl.policies.channel_policy.logged_channel_verdict`: opt-in at the row's time,
each channel's quiet hours and caps on the log's sends before the row), so a push-only
baseline puts a user without push, or in push's quiet hours, or over push's cap, on ``none``
(reward exactly 0), as it would live. ``none`` is logged (unsent rows with a
``pscore_channel``), so it has support. Like the template slot, this keeps the logged items
and send decisions: it estimates "the logged sends with this channel policy" (the caps count
the log's sends, not the evaluated policy's).

:func:`select_unsub_penalty` chooses the unsubscribe penalty of the training reward so that
the policy's off-policy unsubscribes and send cost stay within a baseline's (push-only) on
validation users: the "no more unsubscribes, no more cost" constraint of issue 17.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pushrl.ope.channel_volume import fit_volume_hazard, volume_ratio
from pushrl.ope.evaluate_template import evaluate_template_policy
from pushrl.ope.gate import DeploymentGate
from pushrl.policies.base import ItemPolicy
from pushrl.policies.channel_policy import (
    ChannelPolicy,
    ChannelRounds,
    FixedChannel,
    train_channel_policy,
)
from pushrl.policies.vw import VWConfig


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


def _ipw_terms(rounds: ChannelRounds, policy: ItemPolicy,
               volume_beta: float = 0.0) -> dict[str, np.ndarray]:
    """Per-round IPW terms ``w * y`` of reward, unsubscribes and cost, each ``(n_rounds,)``;
    ``volume_beta`` != 0 re-weights each unsubscribe by the hazard ratio of the policy's
    7-day message volume (:func:`~pushrl.ope.channel_volume.volume_ratio`)."""
    dist = policy.action_dist(rounds.context)
    w = dist[np.arange(rounds.n_rounds), rounds.action] / rounds.pscore
    uns = w * rounds.unsubscribed * volume_ratio(rounds, dist, volume_beta)
    return {"reward": w * rounds.reward, "unsubscribed": uns, "cost": w * rounds.cost}


def ipw_means(rounds: ChannelRounds, policy: ItemPolicy) -> dict[str, float]:
    """IPW estimates per logged round of ``policy``'s reward, unsubscribes and send cost
    (the same importance weights for all three; ``none`` has all three 0)."""
    return {k: float(v.mean()) for k, v in _ipw_terms(rounds, policy).items()}


def _upper(d: np.ndarray, groups: np.ndarray, rng: np.random.Generator, n_boot: int = 1000,
           q: float = 0.95) -> float:
    """One-sided ``q`` upper bound of ``mean(d)`` by a user-clustered bootstrap."""
    g = np.unique(groups, return_inverse=True)[1]
    sums = np.bincount(g, weights=d)
    cnt = np.bincount(g).astype(float)
    idx = rng.integers(0, sums.size, (n_boot, sums.size))
    return float(np.quantile(sums[idx].sum(1) / cnt[idx].sum(1), q))


#: Multiples of the objective's own unsubscribe penalty tried by :func:`select_unsub_penalty`.
PENALTY_MULTIPLES: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def select_unsub_penalty(rounds: ChannelRounds, baseline: ItemPolicy,
                         penalties: Sequence[float] | None = None,
                         config: VWConfig | None = None, *, val_share: float = 0.3,
                         unsub_margin: float = 0.0, volume: bool = False,
                         seed: int = 0) -> tuple[ChannelPolicy, dict[str, Any]]:
    """A channel policy that spends no more unsubscribes and no more send cost than
    ``baseline`` (e.g. push-only), by its unsubscribe penalty (a Lagrange multiplier).

    The training users are split (``val_share`` of them, seeded) into fit and validation
    parts; for each penalty (ascending) a policy is trained on the fit part and the paired
    difference of its IPW unsubscribes and cost per round from the baseline's is estimated on
    the validation part; the first penalty whose one-sided 95 % upper bounds (bootstrap over
    validation users) of the cost difference is <= 0 and of the unsubscribe difference is
    <= ``-unsub_margin`` x the baseline's estimated unsubscribes is chosen (the largest when
    none is) and the policy is re-trained on all rounds with it. The bound, not the point
    estimate: a policy that reaches more users sends more, and every send raises the 7-day
    volume term of the unsubscribe hazard, which per-round estimates do not see.

    Args:
        penalties: Candidate penalties; None = :data:`PENALTY_MULTIPLES` x the rounds'
            objective penalty (``rounds.weights.unsubscribe_penalty``; 1 when it is 0).
        unsub_margin: Relative margin of the unsubscribe bound (0 = no more unsubscribes
            than the baseline with 95 % confidence, per logged round).
        volume: Correct each policy's unsubscribes for its own 7-day message volume
            (:mod:`pushrl.ope.channel_volume`; the slope fitted on the fit users). Off by
            default: on development seed pairs it made the bound stricter without making it
            track the true unsubscribes (``benchmarks/results/channels_dev.md``).

    Returns:
        ``(policy, report)``; the report lists every penalty's validation estimates.

    Raises:
        ValueError: ``unsub_margin`` outside ``[0, 1)`` or ``val_share`` outside ``(0, 1)``.
    """
    if not 0.0 <= unsub_margin < 1.0:
        raise ValueError(f"`unsub_margin` must be in [0, 1), got {unsub_margin!r}")
    if not 0.0 < val_share < 1.0:
        raise ValueError(f"`val_share` must be in (0, 1), got {val_share!r}")
    if penalties is None:
        unit = rounds.weights.unsubscribe_penalty or 1.0
        penalties = [unit * m for m in PENALTY_MULTIPLES]
    users = np.unique(rounds.user)
    rng = np.random.default_rng(seed)
    val_users = users[rng.random(users.size) < val_share]
    is_val = np.isin(rounds.user, val_users)
    fit, val = rounds.take(np.flatnonzero(~is_val)), rounds.take(np.flatnonzero(is_val))
    beta = fit_volume_hazard(fit) if volume else 0.0
    base_t = _ipw_terms(val, baseline, beta)
    base = {k: float(v.mean()) for k, v in base_t.items()}
    table, chosen = [], None
    for lam in sorted(float(x) for x in penalties):
        t = _ipw_terms(val, train_channel_policy(fit.with_unsub_penalty(lam), config), beta)
        up = {k: _upper(t[k] - base_t[k], val.user, np.random.default_rng(seed))
              for k in ("unsubscribed", "cost")}
        ok = up["unsubscribed"] <= -unsub_margin * base["unsubscribed"] and up["cost"] <= 0
        table.append({"penalty": lam, **{k: float(v.mean()) for k, v in t.items()},
                      "upper95_unsub_diff": up["unsubscribed"], "upper95_cost_diff": up["cost"],
                      "within_budget": ok})
        if ok and chosen is None:
            chosen = lam
    pick = chosen if chosen is not None else max(float(x) for x in penalties)
    pol = train_channel_policy(rounds.with_unsub_penalty(pick), config)
    return pol, {"penalty": pick, "met_budget": chosen is not None, "baseline": base,
                 "unsub_margin": unsub_margin, "volume_beta": beta,
                 "validation_rounds": val.n_rounds, "candidates": table}
