"""The one timing observation (:mod:`pushrl.envs.observation`): columns, bounds, versions and
the profile columns."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from pushrl.envs import rollout
from pushrl.envs.observation import (
    PROFILE_OBS_NAMES,
    PROFILE_OBS_NAMES_V1,
    TIMING_OBS_NAMES,
    V0_OBS_NAMES,
    TimingObservation,
    obs_bounds,
    profile_columns,
)
from pushrl.sim.contexts import TimingContext
from pushrl.rules.guardrails import Guardrails

STRESS = {"fatigue_multiplier": 25.0, "max_sends_per_day": 0, "quiet_hours": [0, 0]}


def test_registered_versions_have_their_columns() -> None:
    v1 = gym.make("pushrl/PushTiming-v1", horizon_days=1)
    v0 = gym.make("pushrl/PushTiming-v0", horizon_days=1)
    assert v1.observation_space.shape == (21,) and v1.unwrapped.obs_names == TIMING_OBS_NAMES
    assert v0.observation_space.shape == (17,) and v0.unwrapped.obs_names == V0_OBS_NAMES
    o1, _ = v1.reset(seed=3)
    o0, _ = v0.reset(seed=3)
    np.testing.assert_array_equal(o1[:17], o0)  # v1 = v0's columns, then the profile
    for _ in range(30):
        o1, *_ = v1.step(1)
        o0, *_ = v0.step(1)
        np.testing.assert_array_equal(o1[:17], o0)


@pytest.mark.parametrize("kwargs", [{}, STRESS])
def test_every_observation_lies_in_its_bounds(kwargs: dict[str, Any]) -> None:
    """Also the final observation of an episode (which the v0 wrapper filled with zeros)."""
    env = gym.make_vec("pushrl/PushTiming-v1", num_envs=16, vectorization_mode="vector_entry_point",
                       horizon_days=2, autoreset_mode="same_step", **kwargs)
    space = env.unwrapped.single_observation_space
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    finals = 0
    for _ in range(60):
        obs, _, _, _, info = env.step(rng.integers(0, 2, 16))
        for o in obs:
            assert space.contains(o), o
        if "final_obs" in info:
            for o in info["final_obs"][info["_final_obs"]]:
                assert space.contains(o)
                finals += 1
    assert not kwargs or finals > 0


def test_engine_and_context_paths_build_the_same_observation() -> None:
    """The env's observation (from the engine) == the builder on the context a policy gets."""
    env = gym.make("pushrl/PushTiming-v1", horizon_days=2).unwrapped
    obs, _ = env.reset(seed=5)
    builder = TimingObservation(env.scenario.guardrails)
    for t in range(40):
        o = env.sim.observe()
        ctx = TimingContext(o.raw, o.allowed, env.sim.slots, o.bucket, env.sim.state,
                            o.sends_today)
        np.testing.assert_array_equal(builder.from_context(ctx)[0], obs)
        obs, *_ = env.step(t % 5 == 0)


@pytest.mark.parametrize(("names", "match"), [
    (V0_OBS_NAMES[:-1], "must start with the 17 v0 columns"),
    ((*V0_OBS_NAMES, "nope"), "distinct profile columns"),
    ((*V0_OBS_NAMES, "at_day_peak", "at_day_peak"), "distinct profile columns"),
    (("hour_cos", "hour_sin", *V0_OBS_NAMES[2:]), "must start with"),
])
def test_invalid_obs_names_are_refused(names: tuple[str, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TimingObservation(Guardrails(), names)
    with pytest.raises(ValueError, match=match):
        obs_bounds(names)


def test_profile_columns_need_the_state() -> None:
    obs = TimingObservation(Guardrails())
    with pytest.raises(ValueError, match="`state` and `users` are required"):
        obs.build(np.zeros((1, 9), np.float32), np.zeros(1), np.ones(1, bool))
    v0 = TimingObservation(Guardrails(), V0_OBS_NAMES)
    assert v0.build(np.zeros((2, 9), np.float32), np.zeros(2), np.ones(2, bool)).shape == (2, 17)


def test_older_column_sets_are_the_matching_slice() -> None:
    """An agent with the v1 profile columns gets exactly those columns of the full build."""
    env = gym.make("pushrl/PushTiming-v1", horizon_days=1).unwrapped
    env.reset(seed=1)
    o = env.sim.observe()
    g = env.scenario.guardrails
    full = TimingObservation(g).from_engine(o, env.sim.state, env.sim.slots)
    old = TimingObservation(g, (*V0_OBS_NAMES, *PROFILE_OBS_NAMES_V1)).from_engine(
        o, env.sim.state, env.sim.slots)
    np.testing.assert_array_equal(old, full[:, :19])
    assert TIMING_OBS_NAMES[17:] == PROFILE_OBS_NAMES


def test_profile_columns_state_the_most_active_hour() -> None:
    """``at_day_peak`` is 1 exactly at the most-active-hour heuristic's hour (same profile,
    window = allowed hours), ``day_hour_rank`` is 0 there; the v1 columns are a prefix."""
    from pushrl.policies.timing_baselines import MostActiveHour  # a higher layer, test only

    mah = MostActiveHour(window=(8, 22))
    allowed = np.zeros(24, bool)
    allowed[8:22] = True
    checked = []

    class Spy:
        name = "spy"

        def decide_batch(self, ctx, rng):  # type: ignore[no-untyped-def]
            cols = profile_columns(ctx.state, ctx.user_index, ctx.features, allowed)
            v1 = profile_columns(ctx.state, ctx.user_index, ctx.features, allowed,
                                 PROFILE_OBS_NAMES_V1)
            np.testing.assert_array_equal(cols[:, :2], v1)
            prof = np.where(allowed, mah.day_profile(ctx), -np.inf)
            hour = ctx.features[:, 0].astype(np.int64)
            at_peak = prof.argmax(axis=1) == hour
            j = PROFILE_OBS_NAMES.index
            np.testing.assert_array_equal(cols[:, j("at_day_peak")], at_peak)
            assert (cols[at_peak, j("day_hour_rank")] == 0).all()
            assert (cols[allowed[hour] & ~at_peak, j("day_hour_rank")] > 0).all()
            checked.append(int(at_peak.sum()))
            return mah.decide_batch(ctx, rng)

    rollout(Spy(), "default", n_users=30, days=2, seed=2)
    assert sum(checked) >= 30  # every user has a peak hour each day


def test_profile_columns_refuse_unknown_names() -> None:

    with pytest.raises(ValueError, match="unknown profile columns"):
        profile_columns(None, np.zeros(1, np.int64), np.zeros((1, 9)), np.ones(24, bool),
                        ("nope",))
