"""The due-sends resolution over many users (the server's pull) is the per-user rule: one
call for a batch of users gives the same sends, re-queues, expiries and tracker state as one
call per user, and the vectorised open-trigger filter equals ``has_open``."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.rules.guardrails import Guardrails
from pushrl.rules.triggers import TriggerConfig, TriggerTracker
from pushrl.units import HOUR

T0 = 1_772_409_600 + 10 * HOUR


def _tracker(seed: int, n_users: int = 80) -> TriggerTracker:
    """Random carts / views / purchases / sessions, every new trigger decided with a random
    arm (drop included), some users with several open triggers."""
    rng = np.random.default_rng(seed)
    tr = TriggerTracker(TriggerConfig.default())
    ts = T0
    for _ in range(600):
        ts += int(rng.integers(0, 400))
        u = int(rng.integers(0, n_users))
        ev = str(rng.choice(["cart", "cart", "view", "view", "purchase", "session"]))
        item = None if ev == "session" else int(rng.integers(0, 6))
        for t in tr.observe_activity(u, ts, ev, item):
            if t.is_open:
                arms = tr.config[t.kind].arms
                tr.decide(t.trigger_id, arms[int(rng.integers(0, len(arms)))],
                          float(rng.uniform(0.1, 1.0)), ts)
    return tr


def _state(tr: TriggerTracker) -> dict:
    return tr.to_dict()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_call_for_many_users_equals_one_call_per_user(seed: int) -> None:
    tr = _tracker(seed)
    now = int(tr.now or T0) + 5 * HOUR
    rng = np.random.default_rng(seed + 100)
    users = rng.permutation(90)  # some users never seen
    g = Guardrails(22, 8, 2, 5)
    hour = rng.integers(0, 24, users.size)
    today = rng.integers(0, 3, users.size)
    week = rng.integers(0, 6, users.size)
    sub = rng.random(users.size) < 0.9
    one = TriggerTracker.from_dict(tr.to_dict())
    assert np.array_equal(tr.open_mask(users), [tr.has_open(int(u)) for u in users])
    assert np.array_equal(one.open_mask(users), tr.open_mask(users))
    batch = tr.resolve_due(now, users.tolist(), g, hour, today, week, sub)
    sent, req, exp, blocked = [], [], [], {}
    one.advance(now)
    for j, u in enumerate(users.tolist()):
        r = one.resolve_due(now, [u], g, hour[j:j + 1], today[j:j + 1], week[j:j + 1],
                            sub[j:j + 1])
        sent += r.sent
        req += r.requeued
        exp += r.expired
        blocked.update(r.blocked)
    assert batch.sent and batch.requeued and batch.blocked, "the test checks nothing"
    assert [t.to_dict() for t in batch.sent] == [t.to_dict() for t in sent]
    assert [t.to_dict() for t in batch.requeued] == [t.to_dict() for t in req]
    assert [t.to_dict() for t in batch.expired] == [t.to_dict() for t in exp]
    assert batch.blocked == blocked
    assert _state(tr) == _state(one)
    assert np.array_equal(tr.open_mask(users), [tr.has_open(int(u)) for u in users])
    assert np.array_equal(one.open_mask(users), tr.open_mask(users))
