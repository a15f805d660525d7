"""The due-sends resolution over many users (the server's pull) is the per-user rule: one
call for a batch of users gives the same sends, re-queues, expiries and tracker state as one
call per user, and the vectorised open-trigger filter equals ``has_open``."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.rules.guardrails import Guardrails
from pushrl.rules.triggers import (DueResolution, TriggerConfig, TriggerKind, TriggerTracker,
                                  _held_kinds)
from pushrl.units import HOUR, bucket_of, bucket_start

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


def _resolve_general(tr: TriggerTracker, now: int, users: list[int], g: Guardrails,
                     hour: np.ndarray, today: np.ndarray, week: np.ndarray,
                     sub: np.ndarray,
                     kinds: dict[TriggerKind, np.ndarray] | None = None) -> DueResolution:
    """:meth:`TriggerTracker.resolve_due` with every user through the general per-user rule
    (``_resolve_user``), none through the inlined single-trigger fast paths: the reference
    the fast paths must equal."""
    tr.advance(now)
    codes = np.asarray(g.verdict(hour, today, week, sub, None)).tolist()
    nxt = int(bucket_start(bucket_of(now) + 1))
    res = DueResolution()
    held = _held_kinds(len(users), kinds)
    for j, (user, code) in enumerate(zip(users, codes, strict=True)):
        u = tr._users.get(user)
        if u and u.open:
            tr._resolve_user(user, u.open, now, code, nxt, res, True, held.get(j, frozenset()))
    return res


def _n_open(tr: TriggerTracker, n: int) -> list[int]:
    a = np.zeros(n, np.int64)
    k = min(n, len(tr._n_open))
    a[:k] = np.frombuffer(tr._n_open, np.int32)[:k]
    return a.tolist()


@pytest.mark.parametrize("seed", range(8))
def test_fast_paths_equal_the_general_rule_over_random_states(seed: int) -> None:
    """The inlined fast paths of ``resolve_due`` (``_send_single``; the loop's own when a
    user is held out of a kind) give the same sends, re-queues, expiries, blocks, tracker
    state and open counts as the general rule, over random states and several pulls in a
    row (users with one open trigger due / not due / expired / blocked, several open)."""
    rng = np.random.default_rng(1000 + seed)
    n_users = int(rng.integers(20, 120))
    # built twice from the same events (not from_dict: a restore orders each user's open
    # triggers by id, and a user's re-queues / expiries are listed in that order)
    tr, ref = _tracker(seed, n_users), _tracker(seed, n_users)
    n = 130
    g = Guardrails(22, 8, int(rng.integers(1, 4)), int(rng.integers(4, 10)))
    now = int(tr.now or T0)
    seen = {"sent": 0, "requeued": 0, "expired": 0, "blocked": 0, "kind_held": 0, "at_due": 0}
    for step in range(6):
        users = rng.permutation(n)[:int(rng.integers(n // 2, n))].tolist()
        due = sorted({t.due_ts for u in users for t in tr.open(u)
                      if t.due_ts is not None and t.due_ts > now})
        if due and step % 3 != 2:  # exactly at an open trigger's due time (the boundary)
            now = due[int(rng.integers(0, min(len(due), 3)))]
        else:
            now += int(rng.integers(0, 30)) * HOUR + int(rng.integers(0, HOUR))
        k = len(users)
        hour = np.where(rng.random(k) < 0.8, rng.integers(9, 21, k), rng.integers(0, 24, k))
        today = np.where(rng.random(k) < 0.8, 0, rng.integers(0, 4, k))
        week = rng.integers(0, 8, k)
        sub = rng.random(k) < 0.9
        kinds = ({TriggerKind.CART: rng.random(k) < 0.2} if step % 2 else None)
        got = tr.resolve_due(now, users, g, hour, today, week, sub, held_out_kinds=kinds)
        want = _resolve_general(ref, now, users, g, hour, today, week, sub, kinds)
        seen["kind_held"] += kinds is not None
        for name in ("sent", "requeued", "expired"):
            assert [t.to_dict() for t in getattr(got, name)] == \
                [t.to_dict() for t in getattr(want, name)], (step, name)
            seen[name] += len(getattr(got, name))
        seen["at_due"] += sum(t.due_ts == now for t in got.sent)
        assert got.blocked == want.blocked
        seen["blocked"] += len(got.blocked)
        assert tr.to_dict() == ref.to_dict(), step
        assert _n_open(tr, n) == _n_open(ref, n), step
        # new triggers between pulls (both trackers see the same events)
        for _ in range(int(rng.integers(5, 60))):
            u = int(rng.integers(0, n))
            ev = str(rng.choice(["cart", "view", "view", "purchase"]))
            t_ev = now + int(rng.integers(0, 600))
            item = int(rng.integers(0, 6))
            a = tr.observe_activity(u, t_ev, ev, item)
            b = ref.observe_activity(u, t_ev, ev, item)
            assert [t.to_dict() for t in a] == [t.to_dict() for t in b]
            for t in a:
                if t.is_open:
                    arms = tr.config[t.kind].arms
                    arm, p = arms[int(rng.integers(0, len(arms)))], float(rng.uniform(0.1, 1))
                    tr.decide(t.trigger_id, arm, p, t_ev)
                    ref.decide(t.trigger_id, arm, p, t_ev)
        now = max(now, int(tr.now or now))
    assert seen["sent"] and seen["requeued"] and seen["blocked"] and seen["at_due"], \
        f"checks nothing: {seen}"
