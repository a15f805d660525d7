"""Batch evaluation of a timing policy on many simulated users (the compare/PPO workhorse).

``rollout(policy, scenario, n_users, days, seed)`` simulates ``n_users`` users in one
vectorised engine and asks ``policy.decide_batch(TimingContext, rng)`` at every slot. The
users (population rows) and their episode keys are drawn from ``seed`` alone and every
in-episode draw is counter-based, so two policies rolled out with the same seed face the same
users and the same random numbers (common random numbers: their difference has a small
variance). Pass ``users=(rows, keys)`` to simulate given users, e.g. the ones a vector
environment drew.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pushrl.data.features import F, FeatureState
from pushrl.envs.scenario import Scenario, load_scenario
from pushrl.envs.observation import TimingObservation
from pushrl.envs.world import make_world
from pushrl.rules.holdout import Holdout
from pushrl.rules.uplift import UpliftGate
from pushrl.rules.volume import SendPrice, VolumeTarget
from pushrl.sim.contexts import ItemDecider, TimingContext, TimingDecider
from pushrl.rules.channels import ChannelSet
from pushrl.sim.channels import SimChannels
from pushrl.sim.engine import Outcome, PushSim
from pushrl.sim.response import TruthResponse

_KEY_MAX = np.iinfo(np.int64).max
METRICS = ("objective", "sends", "opens", "clicks", "conversions", "revenue",
           "guardrail_blocks")


@dataclass
class RolloutResult:
    """Per-user results of a rollout (arrays of length ``n_users``).

    Attributes:
        scenario: The scenario simulated.
        policy: Policy name.
        seed: Seed of the users and of the policy's generator.
        days: Days simulated.
        user: Population row of each simulated user.
        objective: Sum of rewards (the scenario's weights).
        sends, opens, clicks, conversions, revenue, guardrail_blocks: Totals per user.
        unsubscribed: Whether the user unsubscribed; ``unsubscribe_step`` when (-1 = never).
        sends_by_local_hour: ``(n_users, 24)`` delivered pushes per local hour.
        seconds: Wall time.
    """

    scenario: Scenario
    policy: str
    seed: int
    days: int
    user: np.ndarray
    objective: np.ndarray
    sends: np.ndarray
    opens: np.ndarray
    clicks: np.ndarray
    conversions: np.ndarray
    revenue: np.ndarray
    guardrail_blocks: np.ndarray
    unsubscribed: np.ndarray
    unsubscribe_step: np.ndarray
    sends_by_local_hour: np.ndarray
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        """Number of simulated users."""
        return int(self.user.size)

    def summary(self) -> dict[str, Any]:
        """Means per user (with standard errors), rates and the sends-by-hour profile."""
        n = self.n_users
        out: dict[str, Any] = {"policy": self.policy, "scenario": self.scenario.name,
                               "truth": self.scenario.truth, "users": n, "days": self.days,
                               "seed": self.seed, "seconds": round(self.seconds, 2)}
        for m in (*METRICS, "unsubscribed"):
            v = getattr(self, m).astype(np.float64)
            out[f"sim/{m}_per_user"] = float(v.mean())
            out[f"sim/{m}_per_user_se"] = float(v.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
        s = float(self.sends.sum())
        out["sim/open_rate"] = float(self.opens.sum() / s) if s else 0.0
        out["sim/click_rate"] = float(self.clicks.sum() / s) if s else 0.0
        out["sim/unsubscribe_rate"] = float(self.unsubscribed.sum() / s) if s else 0.0
        out["sim/sends_per_user_day"] = s / max(n * self.days, 1)
        out["sim/sends_by_local_hour"] = self.sends_by_local_hour.sum(axis=0).tolist()
        return out

    def to_frame(self) -> pd.DataFrame:
        """One row per simulated user."""
        cols = {m: getattr(self, m) for m in ("user", *METRICS, "unsubscribed",
                                              "unsubscribe_step")}
        for m in ("organic_conversions", "organic_revenue"):  # purchases without a push
            cols[m] = np.asarray(self.extra.get(m, np.zeros(self.n_users)), np.float64)
        return pd.DataFrame(cols)


class LazyExtra(dict):  # type: ignore[type-arg]
    """A dict whose listed keys are computed on first access (the observation costs time)."""

    def __init__(self, factories: dict[str, Callable[[], Any]], **items: Any) -> None:
        super().__init__(**items)
        self._factories = factories

    def __missing__(self, key: str) -> Any:
        if key not in self._factories:
            raise KeyError(key)
        value = self[key] = self._factories[key]()
        return value

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or key in self._factories

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[key] if key in self else default


def tally(acc: dict[str, np.ndarray], out: Outcome, reward: np.ndarray) -> None:
    """Add one step's outcomes to the per-user totals of :data:`METRICS` (in place).

    The one accounting of a step, shared by :func:`rollout` and the served driver
    (:mod:`pushrl.compare.served`), so batch and served results count the same things.

    Args:
        acc: ``{metric: (n_users,) float64}`` running totals.
        out: The simulator's step outcome (``(n_users,)`` arrays).
        reward: ``(n_users,)`` the step's reward (``out.reward(weights)``).
    """
    acc["objective"] += reward
    acc["sends"] += out.delivered
    acc["opens"] += out.opened
    acc["clicks"] += out.clicked
    acc["conversions"] += out.converted
    acc["revenue"] += out.revenue
    acc["guardrail_blocks"] += out.blocked
    if out.organic_converted is not None and "organic_conversions" in acc:
        acc["organic_conversions"] += out.organic_converted
        acc["organic_revenue"] += out.organic_revenue
    if out.send_cost is not None and "channel_cost" in acc:  # channels: each push's cost
        acc["channel_cost"] += out.send_cost


def draw_users(seed: int, n: int, n_pop: int) -> tuple[np.ndarray, np.ndarray]:
    """Population rows ``(n,)`` and episode keys ``(n,)`` of a rollout's users."""
    g = np.random.default_rng([seed, 0])
    return g.integers(n_pop, size=n), g.integers(0, _KEY_MAX, size=n, dtype=np.int64).astype(
        np.uint64)


def user_ids(population_ids: np.ndarray, rows: np.ndarray) -> list[str]:
    """Ids of a rollout's users, ``(n,)``: ``LOGGED_ID.i`` for the ``i``-th user drawn from
    population row ``rows[i]`` (a logged user may be drawn twice). The served driver
    (:mod:`pushrl.compare.served`) gives the server the same ids, so a holdout assigns the
    same users in both."""
    logged = np.asarray(population_ids)[np.asarray(rows, np.int64)]
    return [f"{u}.{i}" for i, u in enumerate(logged.tolist())]


def sim_channels(response: Any, channels: ChannelSet, policy: ItemDecider | None,
                 n: int, opt_in: Sequence[float] | None = None) -> SimChannels:
    """The channel slot of a rollout; refuses a response without per-channel terms (a
    simulator fitted on a push-only log, or the synthetic truth) and a missing policy."""
    if policy is None:
        raise ValueError("channels need a channel policy (push-only: FixedChannel(arm=1))")
    got = tuple(getattr(response, "channels", ()) or ())
    if isinstance(response, TruthResponse) or len(got) < 2:
        raise ValueError("simulating channels needs a simulator fitted on a log with several "
                         "channels (pushrl data synth --channels; pushrl sim fit); this one "
                         f"has {list(got) or 'push only'}")
    missing = [c for c in channels.names if c not in got]
    if missing:
        raise ValueError(f"the simulator has no response for channel(s) {missing} (fitted on "
                         f"{list(got)}); fit it on a log with them or drop them")
    return SimChannels(channels, policy, n, opt_in)


def rollout(policy: TimingDecider, scenario: str | Scenario = "default", n_users: int = 10_000,
            days: int | None = None, seed: int = 0, *, item_policy: ItemDecider | None = None,
            policy_name: str | None = None, progress: Callable[[int, int], None] | None = None,
            users: tuple[np.ndarray, np.ndarray] | None = None,
            holdout: Holdout | None = None, volume: VolumeTarget | None = None,
            uplift: UpliftGate | None = None, incumbent: TimingDecider | None = None,
            value: Callable[[np.ndarray], np.ndarray] | None = None, features_at: int = 0,
            channels: ChannelSet | None = None, channel_policy: ItemDecider | None = None,
            channel_opt_in: Sequence[float] | None = None,
            **overrides: Any) -> RolloutResult:
    """Evaluate a timing policy on ``n_users`` simulated users for ``days`` days.

    Args:
        policy: Object with ``decide_batch(TimingContext, rng)`` returning ``.action``
            (0 wait / 1 send); sends where ``ctx.allowed`` is False are not delivered.
        scenario: Scenario name, path or object.
        n_users: Users simulated together.
        days: Days to simulate (default: the scenario's horizon).
        seed: Seed of the users, their random numbers and the policy's generator.
        item_policy: Item policy (default: the scenario's sampler).
        policy_name: Label in the result (default: ``policy.name`` or the class name).
        progress: Optional ``progress(step, total_steps)``.
        users: Optional ``(population rows, episode keys)``, each ``(n_users,)``.
        holdout: A live holdout (:class:`~pushrl.rules.holdout.Holdout`; explicit only: a
            scenario's ``[holdout]`` is the server's, so comparisons stay whole) over the
            users' ids
            (:func:`user_ids`): held-out users are never delivered a push (the guardrail);
            ``extra`` holds, for ``pushrl lift``, ``held_out`` ``(n_users,)`` bool,
            ``pre_activity`` (organic activity events before the start: the warm start)
            and ``activity`` (organic activity events during the rollout);
            ``subscribed_at_start`` ``(n_users,)`` bool (always, holdout or not).
        volume: A global volume target (:mod:`pushrl.rules.volume`): every send of the
            policy must be worth the controller's price; ``extra["price"]`` ``(horizon,)``
            is the price at each step and ``extra["volume_per_user_week"]`` the realised
            volume (sends per subscribed user per week).
        uplift: Send only if it helps (:mod:`pushrl.rules.uplift`): a send goes out only
            where the gate's predicted incremental value is at least its threshold (applied
            before the volume price).
        incumbent: The policy that decides for the held-out users (the holdout's incumbent,
            e.g. a heuristic); None = held-out users get no push. The active policy's
            decisions for them are dropped, never delivered.
        value: The send value the volume price ranks by, ``raw (n, N_FEATURES) -> (n,)``
            (default :meth:`pushrl.rules.volume.SendPrice.value`: the target's
            ``value_model``, else :func:`pushrl.rules.volume.send_value`).
        features_at: Step whose pipeline features ``extra["start_features"]``
            ``(n_users, N_FEATURES)`` records (an experiment's covariates).
        channels: Delivery channels (:mod:`pushrl.sim.channels`): every delivered push goes
            out on the channel ``channel_policy`` chooses (or none), with the simulator's
            per-channel response (a simulator fitted on a log with several channels), each
            channel's cost, quiet hours and caps, and per-channel unsubscribes; ``extra``
            holds ``channel_sends`` ``(n_users, C)``, ``channel_cost`` ``(n_users,)``,
            ``channel_names`` and ``channel_verdicts``. None (default): push only.
        channel_policy: Channel policy over ``none`` + ``channels`` (needed with channels).
        channel_opt_in: Per channel, the share of users opted in at the start (None: all).
        **overrides: Scenario keys to replace (``truth=True``, ``max_sends_per_day=1``, ...).

    The context's ``extra`` holds ``obs`` (the ``PushTiming-v1`` observation, ``(n, 21)``),
    ``sim`` (the engine: ``sim.expected_send_value(weights)`` gives expected immediate
    rewards, true ones with ``truth=True``), ``population_index``, ``step``, ``scenario``,
    and for truth scenarios ``true_world`` (the :class:`~pushrl.data.synth.TrueWorld`) with
    ``true_user_index`` (each user's row in it; None otherwise).
    """
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    if days is not None:
        overrides["horizon_days"] = int(days)
    sc = load_scenario(scenario, **overrides)
    t0 = time.perf_counter()
    world = make_world(sc)
    sim = PushSim(world.model, world.response, sc.sim_config(), n_users,
                  item_policy if item_policy is not None else world.sampler,
                  item_rng=np.random.default_rng([seed, 1]))
    sim.channels = None if channels is None else sim_channels(
        world.response, channels, channel_policy, n_users, channel_opt_in)
    if users is None:
        users = draw_users(seed, n_users, len(world.model.population))  # type: ignore[arg-type]
    pops, keys = (np.asarray(users[0], np.int64), np.asarray(users[1], np.uint64))
    if pops.shape != (n_users,) or keys.shape != (n_users,):
        raise ValueError(f"users must be two arrays of shape ({n_users},), got {pops.shape} "
                         f"and {keys.shape}")
    sim.reset(np.arange(n_users), pops, keys)
    held = np.zeros(n_users, bool)
    if holdout is not None and holdout.active:
        assert world.model.population is not None  # a simulator always has its population
        held = holdout.held_out(user_ids(np.asarray(world.model.population.user_id), pops))
        if incumbent is None:  # no push: the HELD_OUT guardrail
            sim.set_held_out(np.arange(n_users), held)
    inc_rng = np.random.default_rng([seed, 3])
    # organic activity events per slot so far: the warm start's, i.e. the pre-period (CUPED)
    pre_activity = sim.state.a.cum[FeatureState.ACTS].astype(np.float64)
    subscribed_at_start = sim.alive.copy()  # (the log's unsubscribed start unsubscribed)
    start_raw = sim.observe().raw.copy()  # each user's features at `features_at`
    price = None if volume is None else SendPrice(volume)
    prices = np.zeros(sc.horizon)
    agent_obs = TimingObservation(sc.guardrails)  # the PushTiming-v1 observation, on demand
    rng = np.random.default_rng([seed, 2])
    acc = {m: np.zeros(n_users) for m in (*METRICS, "organic_conversions", "organic_revenue",
                                          "channel_cost")}
    by_hour = np.zeros((n_users, 24), np.int32)
    by_day = np.zeros((n_users, sc.horizon_days), np.float32)  # for cumulative-objective plots
    unsub_step = np.full(n_users, -1, np.int64)
    truth = world.response if isinstance(world.response, TruthResponse) else None
    true_world = None if truth is None else truth.world
    true_index = None if truth is None else truth.gt[sim.pop]
    for step in range(sc.horizon):
        obs = sim.observe()
        if step == features_at and step:
            start_raw = obs.raw.copy()
        ctx = TimingContext(
            features=obs.raw, allowed=obs.allowed, user_index=sim.slots, bucket=obs.bucket,
            state=sim.state, sends_today=obs.sends_today,
            extra=LazyExtra({"obs": functools.partial(agent_obs.from_engine, obs, sim.state,
                                                      sim.slots)},
                            sim=sim, population_index=sim.pop, step=step, scenario=sc,
                            true_world=true_world, true_user_index=true_index))
        action = np.asarray(policy.decide_batch(ctx, rng).action)
        if uplift is not None:  # send only if it helps
            hsp = (sim.state.hours_since_purchase(sim.slots, obs.bucket)
                   if uplift.needs_purchases else None)
            action = np.where(uplift.allow(obs.raw, hsp), action, 0)
        if price is not None:  # the one gate of the global volume target
            prices[step] = price.price
            v = price.value(obs.raw) if value is None else value(obs.raw)
            action = np.where(price.allow(v), action, 0)
            reachable = int(sim.alive.sum())
        if incumbent is not None and held.any():  # held-out users: the incumbent's decisions
            action = np.where(held, np.asarray(incumbent.decide_batch(ctx, inc_rng).action),
                              action)
        hour = obs.raw[:, F["local_hour"]].astype(np.int64)
        out = sim.step(action == 1)
        if price is not None:
            price.observe(int(obs.bucket[0]), float(out.delivered.sum()), reachable)
        r = out.reward(sc.reward)
        tally(acc, out, r)
        by_day[:, min(step // sc.slots_per_day, sc.horizon_days - 1)] += r
        d = np.flatnonzero(out.delivered)
        by_hour[d, hour[d]] += 1  # d has no repeats: no np.add.at needed
        unsub_step[out.unsubscribed] = step
        if progress is not None:
            progress(step + 1, sc.horizon)
    if price is not None:
        price.close()
    name = policy_name or getattr(policy, "name", None) or type(policy).__name__
    return RolloutResult(sc, str(name), seed, sc.horizon_days, pops, acc["objective"],
                         acc["sends"].astype(np.int64), acc["opens"].astype(np.int64),
                         acc["clicks"].astype(np.int64), acc["conversions"].astype(np.int64),
                         acc["revenue"], acc["guardrail_blocks"].astype(np.int64),
                         unsub_step >= 0, unsub_step, by_hour, time.perf_counter() - t0,
                         extra={"objective_by_day": by_day, "held_out": held,
                                "price": prices, "volume_per_user_week": (
                                    None if price is None
                                    else price.realised_per_user_week()),
                                "pre_activity": pre_activity,
                                "subscribed_at_start": subscribed_at_start,
                                "activity": sim.state.a.cum[FeatureState.ACTS].astype(
                                    np.float64) - pre_activity,
                                "organic_conversions": acc["organic_conversions"],
                                "organic_revenue": acc["organic_revenue"],
                                "start_features": start_raw, **_channel_extra(sim, acc)})


def _channel_extra(sim: PushSim, acc: dict[str, np.ndarray]) -> dict[str, Any]:
    """A rollout's channel results (none without channels)."""
    ch = sim.channels
    if ch is None:
        return {}
    return {"channel_sends": ch.sends.copy(), "channel_cost": acc["channel_cost"],
            "channel_names": tuple(ch.names), "channel_verdicts": ch.blocked.copy()}
