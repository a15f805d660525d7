"""The vectorised push simulator: many user slots stepped together in numpy.

One :class:`PushSim` holds ``n`` user slots in a single
:class:`~pushrl.data.features.FeatureState`. The single environment (``n = 1``), the native
vector environment and the batch rollout all drive this engine, so they share every line of
simulation code; per-user randomness is counter-based (:mod:`pushrl.sim.rng`), which makes a
slot's trajectory independent of the other slots.

A decision step of a slot at UTC bucket ``b = start + t * step_hours``:

1. :meth:`PushSim.observe`: pipeline features at ``b`` and the guardrail mask
   (:class:`pushrl.rules.guardrails.Guardrails` at the bucket start: quiet hours in local
   time, sends per local day, ``sends_7d``; and subscribed);
2. :meth:`PushSim.step`: a send where the mask forbids it is not delivered (``blocked``);
   a delivered push gets an item from the item policy, then open, click, conversion and
   unsubscribe are drawn and the push is recorded in the state; organic activity of the
   ``step_hours`` hours is drawn from the rhythm and recorded; ``t`` advances.

With organic purchases on (the response's ``organic``, :mod:`pushrl.sim.organic`), a push
converts only with the user's current need, organic sessions buy on their own
(``Outcome.organic_converted``), and any purchase resets the need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pushrl.data.features import N_FEATURES, F, FeatureState
from pushrl.rules import reward
from pushrl.rules.guardrails import DayCount, Guardrails
from pushrl.rules.reward import RewardWeights
from pushrl.sim import rng as R
from pushrl.sim.channels import SimChannels
from pushrl.sim.contexts import ItemDecider
from pushrl.sim.items import build_item_context
from pushrl.sim.model import SimModel
from pushrl.sim.organic import OrganicModel
from pushrl.sim.response import ResponseModel

#: (user, item) rows per chunk of :meth:`PushSim.expected_send_value` (~10 MB of design).
_PAIR_ROWS = 1 << 15


@dataclass(frozen=True)
class SimConfig:
    """Clock and limits of an engine.

    Attributes:
        start_bucket: UTC hour bucket of every episode's first decision.
        horizon: Decision steps per episode.
        step_hours: Hours between decisions (24 / slots per day).
        guardrails: Delivery limits.
        activity_shift_hours: Rhythm shift (rolls the warm-start history too).
        warm_start: ``"week"``, ``"full"`` or ``"none"``: logged history seeded into each
            user's state at reset (see :mod:`pushrl.sim.population`).
    """

    start_bucket: int
    horizon: int
    step_hours: int = 1
    guardrails: Guardrails = field(default_factory=Guardrails)
    activity_shift_hours: int = 0
    warm_start: str = "week"


@dataclass
class Observation:
    """What the engine shows at a decision (all ``(n,)`` unless noted).

    Attributes:
        raw: ``(n, N_FEATURES)`` float32 pipeline features.
        allowed: A send would be delivered (subscribed, in horizon, no guardrail hit).
        quiet: Local quiet hour now.
        sends_today: Pushes delivered in the current local day.
        bucket: UTC bucket of the decision.
    """

    raw: np.ndarray
    allowed: np.ndarray
    quiet: np.ndarray
    sends_today: np.ndarray
    bucket: np.ndarray


@dataclass
class Outcome:
    """What happened at a step (all ``(n,)``; zeros where nothing was delivered)."""

    delivered: np.ndarray
    blocked: np.ndarray
    item: np.ndarray
    item_pscore: np.ndarray
    p_open: np.ndarray
    opened: np.ndarray
    clicked: np.ndarray
    converted: np.ndarray
    revenue: np.ndarray
    unsubscribed: np.ndarray
    organic_converted: np.ndarray | None = None
    organic_revenue: np.ndarray | None = None
    #: With channels (:mod:`pushrl.sim.channels`): channel index of each delivered push
    #: (-1 = none / not sent) and the send cost paid, ``(n,)``; None without channels.
    channel: np.ndarray | None = None
    send_cost: np.ndarray | None = None

    def reward(self, w: RewardWeights) -> np.ndarray:
        """Per-slot reward under weights ``w`` (:func:`pushrl.rules.reward.realised`),
        float64 ``(n,)``."""
        return reward.realised(w, delivered=self.delivered, opened=self.opened,
                               clicked=self.clicked, revenue=self.revenue,
                               unsubscribed=self.unsubscribed, converted=self.converted,
                               organic_converted=(0.0 if self.organic_converted is None
                                                  else self.organic_converted),
                               organic_revenue=(0.0 if self.organic_revenue is None
                                                else self.organic_revenue),
                               send_cost=self.send_cost)


class PushSim:
    """``n`` simulated users stepped together.

    Args:
        model: Fitted push simulator (spec, population, items).
        response: The users' responses (:class:`~pushrl.sim.response.FittedResponse` or
            ``TruthResponse``).
        cfg: Clock and guardrails.
        n: Number of slots.
        item_policy: Chooses the item of every delivered push.
        item_rng: Generator handed to ``item_policy`` (samplers ignore it).
    """

    def __init__(self, model: SimModel, response: ResponseModel, cfg: SimConfig, n: int,
                 item_policy: ItemDecider, item_rng: np.random.Generator | None = None) -> None:
        assert model.population is not None
        self.model, self.response, self.cfg, self.n = model, response, cfg, n
        self.population = model.population
        self.item_policy = item_policy
        self.item_rng = item_rng or np.random.default_rng(0)
        self.state = FeatureState(model.spec, ["UTC"] * n, cfg.start_bucket)
        self.slots = np.arange(n)
        self.pop = np.zeros(n, np.int64)
        self.key = np.zeros(n, np.uint64)
        self.t = np.zeros(n, np.int64)
        self.alive = np.zeros(n, bool)
        #: Slots held out of the campaign (:mod:`pushrl.rules.holdout`): never delivered.
        self.held_out = np.zeros(n, bool)
        self.sends = DayCount(n)
        self._day = np.zeros(n, np.int64)  # local day of each slot's current decision
        self._item_x = model.item_features.astype(np.float32)
        self._item_cat = model.item_category.astype(np.int64)
        self._obs: Observation | None = None
        #: Organic purchases (:mod:`pushrl.sim.organic`), None = off.
        self.organic: OrganicModel | None = getattr(response, "organic", None)
        #: UTC bucket (float hours) of each slot's last purchase (organic model only).
        self.last_buy = np.zeros(n)
        #: The channel slot (:mod:`pushrl.sim.channels`), None = push only.
        self.channels: SimChannels | None = None

    # ------------------------------------------------------------------ episodes
    def reset(self, slots: np.ndarray, pop_idx: np.ndarray, keys: np.ndarray) -> None:
        """Start new episodes in ``slots`` for population users ``pop_idx`` with ``keys``."""
        s = np.asarray(slots, np.int64)
        if not s.size:
            return
        p = np.asarray(pop_idx, np.int64)
        hist = self.population.history(p, self.cfg.activity_shift_hours, self.cfg.warm_start)
        self.state.reset_users(s, self.cfg.start_bucket, self.population.timezone[p].tolist(),
                               hist)
        self.pop[s], self.key[s] = p, np.asarray(keys, np.uint64)
        # who unsubscribed in the log starts unsubscribed (as the server's history import)
        self.t[s], self.alive[s] = 0, self.population.subscribed(p, self.cfg.warm_start)
        self.sends.reset(s)
        if self.channels is not None:
            self.channels.reset(s, self.key[s])
        if self.organic is not None:
            self.last_buy[s] = self.cfg.start_bucket - self.organic.start_hours(self.key[s])
            # the warm start's last purchase is part of the user's history (pipeline state)
            self.state.record_purchase(s, np.floor(self.last_buy[s]).astype(np.int64))
        if self._obs is not None:  # refresh only the reset slots of the cached observation
            self._observe_into(self._obs, s)

    def set_held_out(self, slots: np.ndarray, held_out: np.ndarray) -> None:
        """Put ``slots`` ``(k,)`` in (True) or out of (False) the campaign's holdout
        ``held_out`` ``(k,)`` (the same guardrail as the server's)."""
        self.held_out[np.asarray(slots, np.int64)] = np.asarray(held_out, bool)
        self._obs = None

    def bucket(self) -> np.ndarray:
        """UTC bucket of every slot's current decision, ``(n,)``."""
        return self.cfg.start_bucket + self.t * self.cfg.step_hours

    # ------------------------------------------------------------------ decisions
    def observe(self) -> Observation:
        """Features and guardrail mask of every slot now (cached until :meth:`step`)."""
        if self._obs is None:
            n = self.n
            self._obs = Observation(np.zeros((n, N_FEATURES), np.float32), np.zeros(n, bool),
                                    np.zeros(n, bool), np.zeros(n, np.int32),
                                    np.zeros(n, np.int64))
            self._observe_into(self._obs, self.slots)
        return self._obs

    def _observe_into(self, obs: Observation, s: np.ndarray) -> None:
        full = s.size == self.n
        ix: Any = slice(None) if full else s  # slices avoid 100k-element gathers
        b = self.bucket()[ix]
        raw = self.state.features(s, b)
        _, _, day = self.state.local_time(s, b)
        today = self.sends.get(ix, day)
        self._day[ix] = day
        g = self.cfg.guardrails
        hour = raw[:, F["local_hour"]].astype(np.int64)
        quiet = g.quiet(hour)
        # `alive` = still subscribed: the same rule as the server's (rules.guardrails)
        held = self.held_out[ix] if self.held_out.any() else None
        allowed = (g.allowed(hour, today, raw[:, F["sends_7d"]], subscribed=self.alive[ix],
                             held_out=held)
                   & (self.t[ix] < self.cfg.horizon))
        obs.raw[ix], obs.allowed[ix], obs.quiet[ix] = raw, allowed, quiet
        obs.sends_today[ix], obs.bucket[ix] = today, b

    def step(self, send: np.ndarray, active: np.ndarray | None = None) -> Outcome:
        """Apply ``send`` ``(n,)`` bool decisions, draw outcomes and organic activity.

        Args:
            send: ``(n,)`` True = send now.
            active: ``(n,)`` slots that take this step (default all); the others stay put.
        """
        obs = self.observe()
        act = np.ones(self.n, bool) if active is None else np.asarray(active, bool)
        send = np.asarray(send, dtype=bool) & self.alive & act
        delivered = send & obs.allowed
        n = self.n
        out = Outcome(delivered, send & ~obs.allowed, np.full(n, -1, np.int64), np.zeros(n),
                      np.zeros(n), np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool),
                      np.zeros(n), np.zeros(n, bool))
        if self.organic is not None:
            out.organic_converted, out.organic_revenue = np.zeros(n), np.zeros(n)
        if self.channels is not None:
            out.channel, out.send_cost = np.full(n, -1, np.int64), np.zeros(n)
        h = R.step_hash(self.key, self.t)
        d = np.flatnonzero(delivered)
        if d.size:
            self._deliver(d, obs, h[d], out)
        if self.channels is None:
            self.alive &= ~out.unsubscribed
        else:  # an unsubscribe leaves one channel: reachable while opted into any
            self.alive &= self.channels.reachable
        self._organic(h, obs, act, out)
        self.t += act
        self._obs = None
        return out

    def _deliver(self, d: np.ndarray, obs: Observation, h: np.ndarray, out: Outcome) -> None:
        raw, pop, r = obs.raw[d], self.pop[d], self.response
        ctx = build_item_context(
            self.state, d, raw, self._item_x, self._item_cat, self.model.item_feature_names,
            candidates=None, with_features=getattr(self.item_policy,
                                                   "uses_candidate_features", True),
            extra={"uniform": R.uniform(h, R.ITEM), "population_index": pop,
                   "user_index": d, "bucket": obs.bucket[d]})
        dec = self.item_policy.decide_batch(ctx, self.item_rng)
        items = np.asarray(ctx.candidates)[np.arange(d.size), np.asarray(dec.action)]
        item_pscore = np.asarray(dec.pscore)
        ch: dict[str, Any] = {}  # the channel keyword of the response (channels only)
        if self.channels is not None:
            d, raw, pop, h, items, item_pscore, arm = self._channel_step(
                d, obs, raw, pop, h, items, item_pscore, out)
            ch["channel"] = self.channels.names[arm]
        aff = self.state.affinity(d, self._item_cat[items])
        p_open = r.p_open(pop, raw, aff, items, **ch)
        opened = R.uniform(h, R.OPEN) < p_open
        clicked = opened & (R.uniform(h, R.CLICK) < r.p_click(pop, raw, aff, items))
        p_conv = r.p_convert(pop, items)
        if self.organic is not None:  # a push converts only a user who needs something
            p_conv = p_conv * self.organic.need(obs.bucket[d] - self.last_buy[d])
        converted = clicked & (R.uniform(h, R.CONVERT) < p_conv)
        if self.organic is not None:
            self.last_buy[d[converted]] = obs.bucket[d[converted]]
        if converted.any():  # a purchase in the pipeline's state (the uplift gate's need)
            self.state.record_purchase(d[converted], obs.bucket[d[converted]])
        unsub = R.uniform(h, R.UNSUB) < r.unsub_hazard(pop, raw, **ch)
        if self.channels is not None:
            self.channels.unsubscribe(d[unsub], arm[unsub])
        out.item[d], out.item_pscore[d], out.p_open[d] = items, item_pscore, p_open
        out.opened[d], out.clicked[d], out.converted[d] = opened, clicked, converted
        out.revenue[d] = np.where(converted, r.revenue(items), 0.0)
        out.unsubscribed[d] = unsub
        self.state.record_push(d, obs.bucket[d], opened)
        self.sends.add(d, self._day[d])

    def _channel_step(self, d: np.ndarray, obs: Observation, raw: np.ndarray,
                      pop: np.ndarray, h: np.ndarray, items: np.ndarray,
                      item_pscore: np.ndarray, out: Outcome) -> tuple[np.ndarray, ...]:
        """The channel of each push (:meth:`SimChannels.choose`); a "none" is not delivered.
        Returns the delivered rows' ``(d, raw, pop, h, items, item_pscore, channel arm)``."""
        assert self.channels is not None and out.channel is not None
        assert out.send_cost is not None
        b = obs.bucket[d]
        arm, _ = self.channels.choose(self.state, d, b, self._day[d],
                                      raw[:, F["local_hour"]].astype(np.int64), raw,
                                      self._item_x[items], self.model.item_feature_names, h)
        go = arm >= 0
        out.delivered[d[~go]] = False
        out.channel[d[go]] = arm[go]
        out.send_cost[d[go]] = self.channels.cost[arm[go]]
        return d[go], raw[go], pop[go], h[go], items[go], item_pscore[go], arm[go]

    def _organic(self, h: np.ndarray, obs: Observation, active: np.ndarray,
                 out: Outcome) -> None:
        org = self.organic
        # organic purchases go on after an unsubscribe (it stops pushes, not shopping); the
        # activity log then records only subscribed users' events, as without the model
        live = np.flatnonzero(active if org is not None else self.alive & active)
        if not live.size:
            return
        hl, pop = h[live], self.pop[live]
        sub = self.alive[live]
        for hh in range(self.cfg.step_hours):
            b = obs.bucket[live] + hh
            if hh == 0:
                hour, dow = obs.raw[live, F["local_hour"]], obs.raw[live, F["local_dow"]]
            else:
                hour, dow, _ = self.state.local_time(live, b)
            how = (dow.astype(np.int64) * 24 + hour.astype(np.int64))
            lam = self.response.activity_rate(pop, how)
            # events come in bursts (a session and its views): Poisson bursts of
            # 1 + Poisson(mean - 1) events, so feature noise matches the log's clustering
            mu = self.response.burst_mean
            nb = R.poisson(lam / mu, R.uniform(hl, R.ACTIVITY, hh))
            if (org is not None and out.organic_converted is not None
                    and out.organic_revenue is not None and nb.any()):
                p_buy = org.p_buy(pop, org.need(b - self.last_buy[live]), nb)
                buy = R.uniform(hl, R.ORGANIC, hh) < p_buy
                if buy.any():
                    who = live[buy]
                    out.organic_converted[who] += 1.0
                    out.organic_revenue[who] += org.revenue
                    self.last_buy[who] = b[buy]
                    self.state.record_purchase(who, b[buy])
                nb = np.where(sub, nb, 0)
            if not nb.any():
                continue
            bs = np.repeat(np.arange(live.size), nb)
            jb = np.arange(bs.size) - np.repeat(np.cumsum(nb) - nb, nb)
            size = 1 + R.poisson(np.full(bs.size, mu - 1.0),
                                 R.uniform(hl[bs], R.ACTIVITY_SIZE, hh * 4096 + jb))
            k = np.bincount(bs, weights=size, minlength=live.size).astype(np.int64)
            tot = int(k.sum())
            ev = np.repeat(np.arange(live.size), k)
            j = np.arange(tot) - np.repeat(np.cumsum(k) - k, k)
            u = R.uniform(hl[ev], R.ACTIVITY_CAT, hh * 4096 + j)
            cat = R.categorical(self.response.category_cdf(pop[ev]), u) - 1
            self.state.record_activity(live[ev], b[ev], cat)

    # ------------------------------------------------------------------ oracle help
    def expected_send_value(self, w: RewardWeights, slots: np.ndarray | None = None) -> np.ndarray:
        """Expected immediate reward of delivering a push now, ``(k,)`` for ``slots``.

        Averages over the item policy's distribution when it exposes ``probabilities``
        (the default samplers), else over a uniform item; uses the engine's response, so
        with ``truth = true`` these are true expectations (for oracles). Ignores guardrails.
        The response models see every (user, item) pair as one row (``k * n_items`` rows,
        chunked), and :func:`pushrl.rules.reward.expected` turns the item-averaged open value
        into the reward.
        """
        obs = self.observe()
        s = self.slots if slots is None else np.asarray(slots, np.int64)
        n_items = self._item_cat.size
        cand = np.broadcast_to(np.arange(n_items), (s.size, n_items))
        probs = (self.item_policy.probabilities(cand, np.ones(cand.shape, bool))
                 if hasattr(self.item_policy, "probabilities")
                 else np.full(cand.shape, 1.0 / n_items))
        raw, pop = obs.raw[s], self.pop[s]
        aff = self.state.affinity(s, self._item_cat[cand])
        r = self.response
        open_value = np.empty(s.size)
        # every (user, item) pair as one row of the response models, in chunks of users
        # so that a whole population (the greedy oracle) stays within a few MB
        per = max(1, _PAIR_ROWS // n_items)
        for a in range(0, s.size, per):
            u = slice(a, min(a + per, s.size))
            k = u.stop - u.start
            row = np.repeat(np.arange(u.start, u.stop), n_items)
            items = np.tile(np.arange(n_items), k)
            p_r, x_r, a_r = pop[row], raw[row], aff[u].reshape(-1)
            po = r.p_open(p_r, x_r, a_r, items)
            per_open = reward.value_per_open(w, r.p_click(p_r, x_r, a_r, items),
                                             r.p_convert(p_r, items), r.revenue(items))
            open_value[u] = (probs[u] * (po * per_open).reshape(k, n_items)).sum(axis=1)
        return reward.expected(w, open_value, r.unsub_hazard(pop, raw))
