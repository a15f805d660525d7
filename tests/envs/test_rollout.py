"""The batch rollout API: common random numbers, guardrails, agreement with the vector env."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.envs import PushTimingVectorEnv, rollout
from pushrl.sim.contexts import BatchDecision


class SendIfAllowed:
    """Sends whenever a send would be delivered; ``p`` < 1 sends at random."""

    def __init__(self, p: float = 1.0, ignore_mask: bool = False) -> None:
        self.p, self.ignore_mask, self.name = p, ignore_mask, f"send_{p}"

    def decide_batch(self, ctx, rng):  # type: ignore[no-untyped-def]
        send = rng.random(len(ctx)) < self.p
        if not self.ignore_mask:
            send &= ctx.allowed
        a = send.astype(np.int64)
        return BatchDecision(a, np.ones(a.size), np.column_stack([1 - a, a]).astype(float))


def test_same_seed_same_result_and_common_random_numbers() -> None:
    a = rollout(SendIfAllowed(0.1), "default", n_users=300, days=3, seed=4)
    b = rollout(SendIfAllowed(0.1), "default", n_users=300, days=3, seed=4)
    np.testing.assert_array_equal(a.objective, b.objective)
    c = rollout(SendIfAllowed(0.05), "default", n_users=300, days=3, seed=4)
    np.testing.assert_array_equal(a.user, c.user)  # same users for another policy
    s = a.summary()
    assert s["users"] == 300 and s["sim/sends_per_user"] == pytest.approx(a.sends.mean())
    assert len(a.to_frame()) == 300


def test_guardrails_are_never_violated() -> None:
    r = rollout(SendIfAllowed(1.0, ignore_mask=True), "default", n_users=200, days=4, seed=1,
                max_sends_per_day=2, max_sends_per_week=5)
    quiet = list(range(22, 24)) + list(range(0, 8))
    assert r.sends_by_local_hour[:, quiet].sum() == 0
    assert (r.sends <= 5).all() and r.guardrail_blocks.sum() > 0
    assert (r.sends_by_local_hour.sum(axis=1) == r.sends).all()


def test_rollout_equals_the_vector_env_for_the_same_users() -> None:
    n, days = 40, 2
    venv = PushTimingVectorEnv(n, "default", horizon_days=days)
    venv.reset(seed=3)
    users = (venv.sim.pop.copy(), venv.sim.key.copy())
    total = np.zeros(n)
    done = np.zeros(n, bool)
    for _ in range(days * 24):
        allowed = venv.sim.observe().allowed
        _, r, t, tr, _ = venv.step(allowed.astype(np.int64))
        total += np.where(done, 0.0, r)
        done |= t | tr
    res = rollout(SendIfAllowed(1.0), "default", n_users=n, days=days, seed=0, users=users)
    np.testing.assert_allclose(res.objective, total)


def test_truth_mode_exposes_the_true_world() -> None:
    seen = {}

    class Peek(SendIfAllowed):
        def decide_batch(self, ctx, rng):  # type: ignore[no-untyped-def]
            seen["world"] = ctx.extra["true_world"]
            seen["obs"] = ctx.extra["obs"].shape
            seen["value"] = ctx.extra["sim"].expected_send_value(ctx.extra["scenario"].reward)
            return super().decide_batch(ctx, rng)

    rollout(Peek(0.0), "default", n_users=5, days=1, seed=0, truth=True)
    assert seen["world"] is not None and seen["obs"] == (5, 21) and seen["value"].shape == (5,)
