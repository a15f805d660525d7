"""The information-matched yardstick (``timing-oracle-info``): it plans with the true response
model but never reads a user's hidden parameters, and replans with the pushes it sent."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.envs import rollout
from pushrl.envs.push_timing_vec import PushTimingVectorEnv
from pushrl.errors import ScenarioError
from pushrl.policies.oracle import InformedOracle, calibrate


def test_refuses_the_fitted_simulator() -> None:
    with pytest.raises(ScenarioError, match="ground truth"):
        rollout(InformedOracle(), "default", n_users=4, days=1, seed=0)


@pytest.mark.parametrize("kwargs", [{"mode": "greedy"}, {"window_days": 0}, {"replan_hours": 0}])
def test_invalid_parameters(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be"):
        InformedOracle(**kwargs)  # type: ignore[arg-type]


def test_calibration_slopes_are_attenuated_but_informative() -> None:
    env = PushTimingVectorEnv(2, "default", truth=True)
    env.reset(seed=0)
    early, late = calibrate(env.sim), calibrate(env.sim, "full")
    # estimates carry information (slope > 0) but are noisy (slope < 1), less so with more data
    assert 0.1 < early.rel[1] < late.rel[1] < 1.0
    assert early.rel_sd > late.rel_sd


def test_plans_do_not_depend_on_the_users_hidden_parameters() -> None:
    env = PushTimingVectorEnv(64, "default", truth=True)
    env.reset(seed=3)
    sim, w = env.sim, env.scenario.reward
    oracle = InformedOracle()
    oracle._calibration(sim, 0)  # the population-level prior, fitted once
    slots = np.arange(64)
    sent = np.zeros((64, sim.cfg.horizon), bool)
    before = oracle._window_tables(sim, slots, 0, sent, w)
    world = sim.response.world
    gt = sim.response.gt[sim.pop[slots]]
    saved = world.z, world.rel_activity, world.pref
    rng = np.random.default_rng(0)
    z, rel, pref = (a.copy() for a in saved)
    z[gt] = rng.normal(0, 3, gt.size)  # scramble these users' true engagement, rhythm, tastes
    rel[gt] = rng.permutation(rel[gt], axis=2)
    pref[gt] = rng.permutation(pref[gt], axis=1)
    try:
        world.z, world.rel_activity, world.pref = z, rel, pref
        after = oracle._window_tables(sim, slots, 0, sent, w)
    finally:
        world.z, world.rel_activity, world.pref = saved
    for name in ("act", "g", "unsub_base", "allowed", "day"):
        np.testing.assert_array_equal(getattr(before, name), getattr(after, name), err_msg=name)


def test_replanning_counts_the_pushes_already_sent() -> None:
    env = PushTimingVectorEnv(4, "default", truth=True)
    env.reset(seed=4)
    for _ in range(48):  # two days in, nothing sent
        env.step(np.zeros(4, np.int64))
    sim = env.sim
    oracle = InformedOracle(window_days=7)
    sent = np.zeros((4, sim.cfg.horizon), bool)
    sent[0, 48 - 1] = sent[0, 48 - 30] = True  # 1 h and 30 h before the replan
    tb = oracle._window_tables(sim, np.arange(4), 48, sent, env.scenario.reward)
    assert tb.s24_pre is not None and tb.s7_pre is not None
    # the push 1 h ago is in the 24-h window of the next 24 steps (this one included); the
    # one 30 h ago leaves the 7-day window after 139 steps
    np.testing.assert_array_equal(tb.s24_pre[0, :24], 1)
    np.testing.assert_array_equal(tb.s24_pre[0, 24:], 0)
    np.testing.assert_array_equal(tb.s7_pre[0, :139], 2)
    np.testing.assert_array_equal(tb.s7_pre[0, 139:], 1)
    assert not tb.s24_pre[1:].any() and not tb.s7_pre[1:].any()
