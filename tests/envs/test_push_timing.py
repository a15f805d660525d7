"""PushTiming-v1 behaviour: guardrails, masks, organic activity, what-if knobs."""

from __future__ import annotations

import numpy as np

from pushrl.envs import PushTimingEnv, rollout
from pushrl.envs.observation import TIMING_OBS_NAMES
from pushrl.sim.contexts import BatchDecision

Q = TIMING_OBS_NAMES.index("quiet_hour")


def test_send_in_quiet_hours_is_blocked_and_flagged() -> None:
    env = PushTimingEnv("default", horizon_days=2)
    obs, _ = env.reset(seed=0)
    blocked = 0
    for _ in range(48):
        quiet = bool(obs[Q])
        assert env.action_masks()[1] == (obs[TIMING_OBS_NAMES.index("send_allowed")] == 1)
        obs, r, term, trunc, info = env.step(1)
        if quiet:
            assert info["guardrail_blocked"] and not info["sent"] and r == 0.0
            blocked += 1
        if term or trunc:
            break
    assert blocked > 0


def test_organic_activity_keeps_features_moving() -> None:
    env = PushTimingEnv("default", horizon_days=7)
    obs, _ = env.reset(seed=1)
    a7 = TIMING_OBS_NAMES.index("log1p_activity_7d")
    first = obs[a7]
    for _ in range(24 * 7 - 1):
        obs, *_ = env.step(0)
    assert obs[a7] > first  # the warm start has an empty 7-day window


class Every3h:
    name = "every3h"

    def decide_batch(self, ctx, rng):  # type: ignore[no-untyped-def]
        a = ((ctx.features[:, 0] % 3 == 0) & ctx.allowed).astype(np.int64)
        return BatchDecision(a, np.ones(a.size), np.zeros((a.size, 2)))


def test_fatigue_what_if_lowers_opens_and_raises_unsubscribes() -> None:
    kw = {"n_users": 400, "days": 7, "seed": 2, "max_sends_per_week": 0}
    base = rollout(Every3h(), "default", **kw)
    tired = rollout(Every3h(), "default_fatigue2", **kw)
    assert tired.opens.sum() < base.opens.sum()
    assert tired.unsubscribed.sum() > base.unsubscribed.sum()


def test_activity_shift_moves_the_rhythm_later() -> None:
    def peak_hour(scenario: str) -> float:
        env = PushTimingEnv(scenario, horizon_days=1)
        env.reset(seed=0)
        prof = env.sim.state.hour_of_week_profile(np.array([0]))[0].reshape(7, 24).sum(axis=0)
        ang = np.angle((prof * np.exp(2j * np.pi * np.arange(24) / 24)).sum())
        return float(ang * 24 / (2 * np.pi))

    d = (peak_hour("default_shift2h") - peak_hour("default")) % 24
    assert abs(d - 2) < 0.5
