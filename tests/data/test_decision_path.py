"""The server's decision-path shortcuts give the general path's values bit for bit (#20):
``decision_clock`` (both clocks from one lookup), ``features(advanced=True)`` (no second
advance), the one-hot timing distributions and the timing mask."""

from __future__ import annotations

from typing import Any

import numpy as np

from pushrl.data.features import FeatureSpec, FeatureState
from pushrl.data.timezones import HOUR
from pushrl.policies.base import SEND, WAIT, TimingContext
from pushrl.policies.timing_baselines import MostActiveHour, _deterministic

ZONES = ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe", "America/New_York",
         "Europe/Berlin", "Australia/Sydney", "America/St_Johns"]
# 2026-10-02: two days before Lord_Howe's and Sydney's DST start; New York's ends a month on
T0 = 1_790_900_000


def _spec() -> FeatureSpec:
    return FeatureSpec(("a", "b"), {"i0": 0, "i1": 1}, tuple([1 / 168] * 168), (0.5, 0.5))


def _pair(n: int) -> tuple[FeatureState, FeatureState]:
    tz = [ZONES[i % len(ZONES)] for i in range(n)]
    return FeatureState(_spec(), tz, T0 // HOUR), FeatureState(_spec(), tz, T0 // HOUR)


def test_decision_clock_equals_both_local_times_across_dst() -> None:
    fs, _ = _pair(40)
    rng = np.random.default_rng(0)
    for _ in range(400):  # 33 days in random steps: every zone's DST change, inside buckets
        u = rng.choice(40, int(rng.integers(1, 12)), replace=False).astype(np.int64)
        t = T0 + rng.integers(0, 33 * 24 * HOUR, u.size).astype(np.int64)
        first = rng.random(u.size) < 0.3  # some at a bucket's first second
        t[first] = t[first] // HOUR * HOUR
        at, start = fs.decision_clock(u, t)
        want_at = fs.local_time_at(u, t)
        want_start = fs.local_time(u, t // HOUR)
        for got, want in ((at, want_at), (start, want_start)):
            for g, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, w)
                assert g.shape == w.shape


def test_features_after_advance_equal_the_general_call_on_a_random_stream() -> None:
    """Two states fed the same events: one asked as the server asks (advance, then
    ``features(clock=..., advanced=True)``), the other with the plain call."""
    fast, plain = _pair(30)
    rng = np.random.default_rng(1)
    t = T0
    for _ in range(1500):
        t += int(rng.integers(0, 2 * HOUR))
        b = t // HOUR
        u = np.sort(rng.choice(30, int(rng.integers(1, 9)), replace=False)).astype(np.int64)
        r = rng.random()
        if r < 0.4:
            cats = rng.integers(-1, 2, u.size)
            for s in (fast, plain):
                s.record_activity(u, b, cats)
        elif r < 0.5:
            opened = rng.random(u.size) < 0.3
            for s in (fast, plain):
                s.record_push(u, b, opened)
        else:
            ts = np.full(u.size, t, np.int64)
            fast.advance(u, b)
            _, start = fast.decision_clock(u, ts)
            got = fast.features(u, np.full(u.size, b, np.int64), clock=(start[0], start[1]),
                                advanced=True)
            want = plain.features(u, b)
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


def test_one_hot_distribution_and_timing_mask() -> None:
    send = np.array([True, False, False, True, True])
    want = np.zeros((5, 2))
    want[:, SEND], want[:, WAIT] = send, ~send
    got = _deterministic(send)
    assert got.dtype == np.float64 and got.flags.writeable
    np.testing.assert_array_equal(got, want)
    assert _deterministic(np.zeros(0, bool)).shape == (0, 2)
    pol = MostActiveHour()
    allowed = np.array([True, False, True])
    ctx = TimingContext(np.zeros((3, 9), np.float32), allowed)
    m = pol._mask(ctx)
    assert m.dtype == bool and m.shape == (3, 2)
    np.testing.assert_array_equal(m[:, WAIT], True)
    np.testing.assert_array_equal(m[:, SEND], allowed)


def test_advance_of_a_few_users_equals_the_vectorised_advance(monkeypatch: Any) -> None:
    """``advance`` of <= 8 distinct users runs user by user (``advance_few``): on a random
    stream of events (late ones too), pushes, opens and advances (gaps of 0, 1, many and
    more than the ring's hours; repeated users, which take the vectorised form), every
    state array equals a state that only ever advances vectorised, and a too-early advance
    fails with the same message."""
    from pushrl.data import features as fmod

    few, vec = _pair(24)
    real = fmod._ADVANCE_FEW
    rng = np.random.default_rng(7)
    t = T0

    def both(name: str, *args: Any) -> None:
        errs = []
        for s, k in ((few, real), (vec, 0)):
            monkeypatch.setattr(fmod, "_ADVANCE_FEW", k)
            try:
                getattr(s, name)(*args)
                errs.append(None)
            except ValueError as exc:
                errs.append(str(exc))
        assert errs[0] == errs[1]

    n_few = 0
    for _ in range(2500):
        t += int(rng.choice([0, HOUR // 2, HOUR, 3 * HOUR, 250 * HOUR], p=[.2, .3, .3, .15, .05]))
        b = t // HOUR
        k = int(rng.integers(1, 11))
        u = rng.choice(24, k, replace=rng.random() < 0.15).astype(np.int64)
        r = rng.random()
        if r < 0.35:
            late = rng.integers(0, 3, k)  # some events an hour or two late
            both("record_activity", u, b - late, rng.integers(-1, 2, k),
                 rng.integers(1, 4, k).astype(np.float32))
        elif r < 0.45:
            both("record_push", u, np.full(k, b), rng.random(k) < 0.3)
        elif r < 0.5:
            both("record_open", u, b)
        else:
            bb = b - (rng.random(k) < 0.05) * rng.integers(1, 400, k)  # some too early
            n_few += k <= real and len(set(u.tolist())) == k
            both("advance", u, bb)
        for name in vars(few.a):
            np.testing.assert_array_equal(getattr(few.a, name), getattr(vec.a, name),
                                          err_msg=name)
    assert n_few > 500


def test_decision_clock_of_a_few_users_equals_the_vectorised_clock(monkeypatch: Any) -> None:
    """Passes of <= 8 decisions take Python ints (unless a zone changes offset inside the
    bucket): the same values and dtypes as the vectorised path, across DST changes."""
    from pushrl.data import features

    fs, _ = _pair(40)
    rng = np.random.default_rng(5)
    cases = []
    for _ in range(1500):  # 33 days: every zone's DST change, some inside buckets
        u = rng.choice(40, int(rng.integers(1, 9)), replace=False).astype(np.int64)
        t = T0 + rng.integers(0, 33 * 24 * HOUR, u.size).astype(np.int64)
        first = rng.random(u.size) < 0.3
        t[first] = t[first] // HOUR * HOUR
        cases.append((u, t))
    fs.decision_clock(np.arange(40), np.full(40, T0 + 40 * 24 * HOUR))  # offsets computed
    fast = [fs._decision_clock_few(u, t) for u, t in cases]
    assert sum(f is not None for f in fast) > 1000  # the few path is the common one
    few = [fs.decision_clock(u, t) for u, t in cases]
    monkeypatch.setattr(features, "_CLOCK_FEW", 0)
    vec = [fs.decision_clock(u, t) for u, t in cases]
    for a, b in zip(few, vec, strict=True):
        for g, w in zip(a[0] + a[1], b[0] + b[1], strict=True):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(g, w)
