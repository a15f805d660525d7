"""Train a learned trigger-delay policy from logs: `pushrl train triggers DATA --out DIR`.

The delay rounds of the log (:func:`pushrl.policies.delay_data.delay_rounds`: context
``pushrl/TriggerDelay-v1``, logged arm, its ``pscore``, reward ``converted - send_cost *
sent - unsub_cost * unsubscribed``) train a VW ``cb_explore_adf`` model over the arms with
the item policy's learner (:class:`~pushrl.policies.vw.VWItemPolicy`: the arms are its
"catalog", the same formatter writes training and decision text). The artifact is a normal
VW item artifact whose card says it decides delays (``trigger_policy``: arms, context id,
costs, horizon, the trigger config).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pushrl.data.split import UserSplit
from pushrl.data.validate import load_dataset
from pushrl.policies.delay_data import DelayRounds, delay_rounds
from pushrl.policies.vw import VWConfig, VWItemPolicy
from pushrl.policies.vw_format import VWLayout
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.triggers import TriggerConfig
from pushrl.sim.trigger_context import (
    ARM_STATIC,
    CANDIDATE_NAMES,
    CONTEXT_ID,
    SHARED_NAMES,
    arm_ids,
    arm_static,
)

@dataclass(frozen=True)
class DelayVW:
    """VW options of the delay learner (epsilon-greedy ``cb_explore_adf``; the arguments are
    built by the one item-learner builder, :meth:`pushrl.policies.vw.VWConfig.args`).

    The defaults were chosen on the trigger world seed 0 (``/tmp`` experiment over cb_type
    mtr/dm/dr, interactions, learning rate and send cost, scored by the truth of that
    world's held-out users) and are reported on other seeds (``benchmarks/triggers.py``).
    ``dm`` collapsed to the most-logged arm (no longer offered: the item learner's cb types
    are mtr, dr, ips); adding the user-feature interaction ``UI`` over-fitted (+7 % instead
    of +16 %).

    Attributes:
        cb_type: ``mtr`` (default), ``dr`` or ``ips``.
        epsilon: Uniform exploration of the served PMF.
        interactions: Quadratic namespace interactions (``U`` user, ``C`` trigger context,
            ``I`` arm, ``A`` per-arm send features); the user features enter linearly.
        bits: Hash bits.
        learning_rate: ``-l`` (None = VW's default 0.5).
        seed: ``--random_seed``.
    """

    cb_type: str = "mtr"
    epsilon: float = 0.02
    interactions: tuple[str, ...] = ("CI", "CA", "IA")
    bits: int = 18
    learning_rate: float | None = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        self.vw_config()  # validates (one-line ValueError naming the option)

    def vw_config(self) -> VWConfig:
        """The same options as the item learner's :class:`~pushrl.policies.vw.VWConfig`."""
        return VWConfig(exploration="epsilon", cb_type=self.cb_type, seed=self.seed,
                        interactions=self.interactions, bits=self.bits,
                        learning_rate=self.learning_rate, epsilon=self.epsilon)

    def args(self) -> list[str]:
        """VW learner arguments (:meth:`VWConfig.args` of :meth:`vw_config`)."""
        return self.vw_config().args()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "interactions": list(self.interactions)}


#: Default VW options of the delay learner.
DELAY_VW = DelayVW()
#: Rounds per VW learn call.
CHUNK = 1024


@dataclass
class DelayTrainResult:
    """A trained delay policy, its metrics and card (``artifact`` when saved)."""

    policy: VWItemPolicy
    metrics: dict[str, float]
    card: dict[str, Any] = field(default_factory=dict)
    artifact: Path | None = None


def delay_layout(arms: tuple[int | None, ...]) -> VWLayout:
    """The VW layout of delay contexts over ``arms``."""
    return VWLayout.from_catalog(SHARED_NAMES, CANDIDATE_NAMES, np.array(arm_ids(arms)),
                                 arm_static(arms), ARM_STATIC)


def train_rounds(rounds: DelayRounds, config: DelayVW = DELAY_VW, *, passes: int = 4,
                 seed: int = 0) -> VWItemPolicy:
    """A VW delay policy learned online over ``rounds`` (``passes`` shuffled passes after
    the first in log order)."""
    policy = VWItemPolicy(delay_layout(rounds.arms), config.args(), name="delay-vw")
    rng = np.random.default_rng(seed)
    n = rounds.n_rounds
    for p in range(passes):
        order = np.arange(n) if p == 0 else rng.permutation(n)
        for lo in range(0, n, CHUNK):
            r = rounds.take(order[lo:lo + CHUNK])
            policy.learn(r.context, r.action, r.reward, r.pscore)
    return policy


def train_delay(data: str | Path, *, out: str | Path | None = None,
                triggers: TriggerConfig | None = None, guardrails: Guardrails | None = None,
                split: UserSplit | None = None, send_cost: float = 0.06,
                unsub_cost: float = 1.0, horizon_h: int = 168, passes: int = 4,
                config: DelayVW = DELAY_VW, seed: int = 0) -> DelayTrainResult:
    """Train (and optionally save) a delay policy from a pushlog v1.1 directory.

    Args:
        data: Dataset directory with a ``triggers`` table.
        out: ``policies/NAME``: save a registry artifact there (new version).
        triggers: The trigger rules the log was made with (their arms); default rules.
        guardrails: Quiet hours the sender applies (the context's send times).
        split: Train on this part of a user split only.
        send_cost: Reward cost of one trigger push (keeps the sends down).
        unsub_cost: Reward cost of an unsubscribe.
        horizon_h: Conversion window after the trigger event.
        passes: Passes over the rounds.
        config: VW options.
        seed: Shuffle seed of the later passes.
    """
    t0 = time.perf_counter()
    triggers = triggers or TriggerConfig.default()
    guardrails = guardrails or Guardrails()
    ds, report = load_dataset(data, split=split)
    rounds = delay_rounds(ds, triggers, guardrails, horizon_h=horizon_h, send_cost=send_cost,
                          unsub_cost=unsub_cost)
    t_rounds = time.perf_counter() - t0
    policy = train_rounds(rounds, config, passes=passes, seed=seed)
    metrics = {"train/rounds": float(rounds.n_rounds),
               "train/logged_reward_mean": float(rounds.reward.mean()),
               "train/seconds_rounds": t_rounds,
               "train/seconds": time.perf_counter() - t0}
    card = {"trigger_policy": {"context": CONTEXT_ID, "arms": list(rounds.arms),
                               "send_cost": send_cost, "unsub_cost": unsub_cost,
                               "horizon_h": horizon_h, "triggers": triggers.to_dict(),
                               "guardrails": guardrails.to_dict()},
            "vw_config": config.to_dict(), "passes": passes,
            "reward": f"converted - {send_cost:g}*sent - {unsub_cost:g}*unsubscribed",
            "data": {"path": str(data), "fingerprint": report.fingerprint, "split": ds.split},
            "metrics": metrics}
    res = DelayTrainResult(policy, metrics, card)
    if out is not None:
        policy.name = Path(out).name
        res.artifact = policy.save(out, card)
        policy.version = res.artifact.name
    return res
