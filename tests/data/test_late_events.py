"""Late and out-of-order events: placed in their own hour, point-in-time correct.

A random stream (activity with categories, sends with opens, separate opens) is delivered
with random delays and shuffled. At every decision, the features of the late-delivered state
must equal those of a state fed *in time order* with exactly the events delivered so far (the
brute-force reference: what the decision would have seen had those events arrived on time).
Every window and lifetime feature and the affinities are compared exactly (tolerance 0: the
same float32 arithmetic on the same integer counts).
"""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.data.features import FeatureSpec, FeatureState

ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
T0B = 1_772_409_600 // 3600  # 2026-03-02 00:00 UTC, in hour buckets


def _spec() -> FeatureSpec:
    cats = ("a", "b", "c")
    rng = np.random.default_rng(0)
    how = rng.random(168) + 0.5
    return FeatureSpec(cats, {f"i{j}": j % 3 for j in range(6)},
                       tuple((how / how.sum()).tolist()), (0.2, 0.3, 0.5), 0.15)


def _stream(rng: np.random.Generator, n_users: int, hours: int) -> list[tuple[int, int, str, int]]:
    """``(bucket, user, kind, arg)`` events: kind activity (arg = category or -1), push
    (arg = opened), open (arg unused)."""
    ev = []
    for b in range(hours):
        for u in range(n_users):
            for _ in range(rng.poisson(0.6)):
                ev.append((T0B + b, u, "activity", int(rng.integers(-1, 3))))
            if rng.random() < 0.15:
                ev.append((T0B + b, u, "push", int(rng.random() < 0.4)))
            if rng.random() < 0.05:
                ev.append((T0B + b, u, "open", 0))
    return ev


def _apply(fs: FeatureState, e: tuple[int, int, str, int]) -> None:
    b, u, kind, arg = e
    users = np.array([u])
    if kind == "activity":
        fs.record_activity(users, b, np.array([arg]))
    elif kind == "push":
        fs.record_push(users, b, np.array([bool(arg)]))
    else:
        fs.record_open(users, b)


def _read(fs: FeatureState, n: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    u = np.arange(n)
    return (fs.features(u, b),
            fs.affinity(u, np.broadcast_to(np.arange(3), (n, 3))))


@pytest.mark.parametrize("seed,max_delay", [(0, 6), (1, 30), (2, 200)])
def test_late_delivery_equals_on_time_delivery(seed: int, max_delay: int) -> None:
    rng = np.random.default_rng(seed)
    n, hours, spec = 3, 230, _spec()
    events = _stream(rng, n, hours)
    delay = rng.integers(0, max_delay + 1, len(events))
    delay[rng.random(len(events)) < 0.5] = 0  # half arrive on time
    arrival = np.array([e[0] for e in events]) + delay
    # within one arrival bucket the order is random: out of order as well as late
    order = np.lexsort((rng.random(len(events)), arrival))
    late = FeatureState(spec, ZONES[:n], T0B)
    delivered: list[int] = []
    k = 0
    n_late = 0
    for b in range(T0B, int(arrival.max()) + 8, 7):  # a decision for every user every 7 h
        while k < len(order) and arrival[order[k]] <= b:
            i = int(order[k])
            n_late += int(events[i][0] < int(late.clock(events[i][1])))
            _apply(late, events[i])
            delivered.append(i)
            k += 1
        # decisions happen in bucket b, after the events that arrived by then (the events
        # of bucket b itself are pending, invisible to it, as on time)
        got = _read(late, n, b)
        ref = FeatureState(spec, ZONES[:n], T0B)
        for i in sorted(delivered, key=lambda j: (events[j][0], j)):
            _apply(ref, events[i])
        want = _read(ref, n, b)
        np.testing.assert_array_equal(got[0], want[0], err_msg=f"features at bucket {b}")
        np.testing.assert_array_equal(got[1], want[1], err_msg=f"affinity at bucket {b}")
    assert k == len(events)
    assert n_late > (20 if max_delay > 6 else 5)  # the test did deliver events late


def test_decision_features_already_returned_are_not_changed() -> None:
    """A late event changes nothing a decision already got: the features array handed out
    is the caller's (a copy), and a decision at the same bucket again would see the event
    only if it lies in an earlier bucket (point-in-time)."""
    spec = _spec()
    fs = FeatureState(spec, ["UTC"], T0B)
    b = T0B + 10
    first = fs.features(np.array([0]), b)
    kept = first.copy()
    fs.record_activity(np.array([0]), b - 3, np.array([1]))  # 3 h late
    np.testing.assert_array_equal(first, kept)
    again = fs.features(np.array([0]), b)
    assert again[0, 8] == kept[0, 8] + 1  # activity_7d of a later decision in b sees it
    fs.record_activity(np.array([0]), b, np.array([1]))  # on time, in b: pending
    np.testing.assert_array_equal(fs.features(np.array([0]), b), again)
