"""Channels in the simulator (issue 17): through which channel (or none) each delivered push
goes, and the per-channel response, cost and unsubscribes.

:class:`SimChannels` is the channel slot of a :class:`~pushrl.sim.engine.PushSim` (set
``sim.channels``): for every push the timing policy sends and the guardrails allow, after
its item is chosen, a channel policy (an :class:`~pushrl.sim.contexts.ItemDecider` over the
arms ``none`` + the channels, e.g. :class:`~pushrl.policies.channel_policy.ChannelPolicy`,
``FixedChannel`` = push-only, ``UniformChannel``) chooses on the ONE channel context
(:func:`~pushrl.data.item_context.channel_context`) under the ONE channel rules
(:meth:`ChannelSet.verdict <pushrl.rules.channels.ChannelSet.verdict>`: opt-in, each
channel's quiet hours and caps on its own sends, :class:`~pushrl.rules.channels.ChannelCounts`).

* **Response**: the engine asks the response model with the channel names
  (:meth:`FittedResponse.p_open / unsub_hazard(..., channel=)
  <pushrl.sim.response.FittedResponse.p_open>`: the per-channel terms ``sim fit`` learns from
  a log's ``channel`` column). A simulator fitted on a push-only log has none and is refused;
  the synthetic truth (``truth = true``) has no per-channel response in the engine (its
  in-session effects need the world's sessions: :mod:`pushrl.data.channel_world`).
* **none** = not delivered (no push recorded, no send counted).
* **Cost**: each delivered push costs its channel's ``cost`` (the reward's ``send_cost``).
* **Unsubscribes** remove that channel's opt-in only; the user stays reachable (alive) while
  opted into any channel.
* **Opt-in** at the start: every channel, or ``opt_in_share[c]`` drawn per user from the
  episode key (counter-based: the same users opt into the same channels under every policy).

Random numbers: the policy's draws come from the episode keys (stream
:data:`~pushrl.sim.rng.CHANNEL`), so two channel policies compared on the same users face
common random numbers. The per-channel counters assume one shared clock (``rollout``: all
users step together); :meth:`SimChannels.choose` refuses otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pushrl.data.features import FeatureState, TemplateRecency
from pushrl.data.item_context import channel_context
from pushrl.rules.channels import ChannelCounts, ChannelSet
from pushrl.rules.guardrails import ALLOWED, REASONS
from pushrl.sim import rng as R
from pushrl.sim.contexts import ItemDecider


class _KeyedUniform(np.random.Generator):
    """One counter-based uniform per decision (the policy's ``rng.random(n)``)."""

    def __init__(self, u: np.ndarray) -> None:
        super().__init__(np.random.PCG64(0))
        self._u = u

    def random(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        if size is None or int(np.prod(size)) != self._u.size:
            raise ValueError(f"one uniform per decision ({self._u.size}), got size={size!r}")
        return self._u.reshape(size)


class SimChannels:
    """The channel slot of ``n`` simulator slots.

    Args:
        channels: The channels (arm ``j + 1`` is ``channels.channels[j]``).
        policy: Channel policy over ``none`` + the channels.
        n: Slots of the simulator.
        opt_in_share: Per channel, the share of users opted in at the start; None = all.
    """

    def __init__(self, channels: ChannelSet, policy: ItemDecider, n: int,
                 opt_in_share: Sequence[float] | None = None) -> None:
        if opt_in_share is not None and len(opt_in_share) != len(channels):
            raise ValueError(f"opt_in_share needs one share per channel "
                             f"({list(channels.names)}), got {list(opt_in_share)}")
        self.channels, self.policy, self.n = channels, policy, n
        self.names = np.asarray(channels.names, dtype=object)
        self.cost = channels.cost_array()
        self.share = None if opt_in_share is None else np.asarray(opt_in_share, float)
        c = len(channels)
        self.opt_in = np.ones((n, c), bool)
        self.counts = ChannelCounts(n, c)
        self.recency = TemplateRecency(n, c)
        #: Delivered pushes per slot and channel (this episode).
        self.sends = np.zeros((n, c), np.int64)
        #: Verdict counts over all channels of the decided pushes (codes of ``REASONS``).
        self.blocked = np.zeros(len(REASONS), np.int64)

    def reset(self, slots: np.ndarray, keys: np.ndarray) -> None:
        """New episodes in ``slots`` with episode ``keys``: opt-in drawn, counters cleared
        (the per-channel weekly ring is shared: resets are for a run's start)."""
        s = np.asarray(slots, np.int64)
        if self.share is None:
            self.opt_in[s] = True
        else:
            h = R.step_hash(np.asarray(keys, np.uint64), 0)
            u = np.stack([R.uniform(h, R.CHANNEL_OPTIN, j) for j in range(len(self.names))], 1)
            self.opt_in[s] = u < self.share[None, :]
        self.sends[s] = 0
        for dc in self.counts.days:
            dc.reset(s)
        fresh = TemplateRecency(s.size, len(self.names))  # never shown
        self.recency.last[s], self.recency.before[s] = fresh.last, fresh.before

    @property
    def reachable(self) -> np.ndarray:
        """bool ``(n,)``: opted into at least one channel."""
        return np.asarray(self.opt_in.any(axis=1))

    def choose(self, state: FeatureState, d: np.ndarray, bucket: np.ndarray, day: np.ndarray,
               hour: np.ndarray, raw: np.ndarray, item_features: np.ndarray,
               item_feature_names: Sequence[str], h: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """The channel of each push of slots ``d`` ``(k,)`` (-1 = none) and its probability;
        counts the delivered ones (caps, recency, :attr:`sends`).

        Args:
            state: The simulator's feature state.
            d: Slots being sent to; ``bucket``, ``day``, ``hour``: their UTC bucket, local
                day and local hour; ``raw``: ``(k, N_FEATURES)`` features.
            item_features: ``(k, d_item)`` catalog features of each push's item.
            item_feature_names: Their names.
            h: ``(k,)`` step hashes of the slots (the policy's counter-based draws).
        """
        if d.size == 0:
            return np.zeros(0, np.int64), np.zeros(0)
        b = np.asarray(bucket, np.int64)
        if np.any(b != b[0]):
            raise ValueError("simulated channels need the users on one clock (rollout steps "
                             "all users together)")
        code = self.channels.verdict(hour, self.counts.today(d, day),
                                     self.counts.week(d, int(b[0])), self.opt_in[d])
        self.blocked += np.bincount(code.ravel(), minlength=len(REASONS))
        ctx = channel_context(raw, item_features, item_feature_names,
                              self.recency.hours(d, b), code == ALLOWED)
        dec = self.policy.decide_batch(ctx, _KeyedUniform(R.uniform(h, R.CHANNEL)))
        arm = np.asarray(dec.action, np.int64) - 1
        go = arm >= 0
        if go.any():
            self.counts.record(d[go], int(b[0]), day[go], arm[go])
            self.recency.record(d[go], b[go], arm[go])
            np.add.at(self.sends, (d[go], arm[go]), 1)
        return arm, np.asarray(dec.pscore, np.float64)

    def unsubscribe(self, slots: np.ndarray, arms: np.ndarray) -> None:
        """An unsubscribe leaves that channel only."""
        self.opt_in[np.asarray(slots, np.int64), np.asarray(arms, np.int64)] = False
