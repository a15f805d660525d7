"""The delay context's single-row path (a server's one decision) equals the batch path byte
for byte: many rounds over DST changes (30- and 45-minute zones too), random quiet hours,
arm sets, items and both feature sources (computed at the event, or passed in)."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest

from pushrl.data.features import FeatureSpec, FeatureState
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.triggers import KINDS
from pushrl.sim import trigger_send
from pushrl.sim.trigger_context import delay_context
from pushrl.sim.trigger_send import clock_table, send_clock, send_clock_one, table_span
from pushrl.units import HOUR, utc_offset_seconds

ZONES = ("America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kathmandu",
         "America/St_Johns", "Pacific/Chatham", "UTC", "America/Santiago")
#: 2026 DST changes of those zones (UTC midnights of the days; rounds fall +-3 days around).
CHANGES = ("2026-03-08", "2026-03-29", "2026-04-05", "2026-04-04", "2026-09-06",
           "2026-09-27", "2026-10-04", "2026-10-25", "2026-11-01")
ARM_SETS: tuple[tuple[int | None, ...], ...] = (
    (0, 1, 2, 4, 8, 24, None), (0, 3, 48, None), (1, 2), (5, None))
T0 = 1_767_225_600  # 2026-01-01 00:00 UTC
USERS = 1200


def _state(seed: int) -> FeatureState:
    """Users in DST zones with 3 weeks of random activity, clocks at 2026-03-01 (a fresh
    copy of one of two histories)."""
    return copy.deepcopy(_history(seed % 2))


@functools.cache
def _history(seed: int) -> FeatureState:
    rng = np.random.default_rng(seed)
    spec = FeatureSpec(tuple(f"c{i}" for i in range(6)), {}, tuple([1 / 168] * 168),
                       tuple([1 / 6] * 6))
    st = FeatureState(spec, [ZONES[i % len(ZONES)] for i in range(USERS)], T0 // HOUR)
    start = T0 // HOUR + 38 * 24
    hu = rng.integers(0, USERS, 15 * USERS)
    hb = start + np.sort(rng.integers(0, 21 * 24, hu.size))
    for b in np.unique(hb):
        m = hb == b
        st.record_activity(hu[m], int(b), rng.integers(0, 6, int(m.sum())))
    st.advance(np.arange(USERS), start + 21 * 24)
    return st


@functools.cache
def _changes() -> dict[int, list[int]]:
    """Zone index -> the 2026 instants (unix s, minute precision) its UTC offset changes."""
    out: dict[int, list[int]] = {}
    for z, name in enumerate(ZONES):
        hours = T0 + HOUR * np.arange(365 * 24)
        off = np.array([utc_offset_seconds(int(t), name) for t in hours])
        out[z] = []
        for i in np.flatnonzero(off[1:] != off[:-1]).tolist():
            t = int(hours[i])
            while utc_offset_seconds(t, name) == off[i]:
                t += 60
            out[z].append(t)
    return out


def _rounds(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """``n`` rounds of distinct users: most within 3 days of a DST change, a quarter within
    2 h of their own zone's change (Lord_Howe and Chatham change at hh:30 / hh:45 UTC)."""
    days = np.array([np.datetime64(d, "s").astype(np.int64) for d in CHANGES])
    users = rng.permutation(USERS)[:n]
    ts = rng.choice(days, n) + rng.integers(-3 * 86400, 3 * 86400, n)
    ts[: n // 8] = (ts[: n // 8] // HOUR) * HOUR  # some on hour starts exactly
    for i in range(n // 8, n // 8 + n // 4):
        near = _changes()[int(users[i]) % len(ZONES)]
        if near:
            ts[i] = int(rng.choice(near)) + int(rng.integers(-2 * HOUR, 2 * HOUR))
    return {"users": users, "ts": ts,
            "kinds": rng.choice([k.value for k in KINDS], n),
            "cat": np.where(rng.random(n) < 0.3, -1, rng.integers(0, 6, n)),
            "ratio": np.where(rng.random(n) < 0.3, 0.0, rng.normal(0, 0.5, n))}


def _guardrails(rng: np.random.Generator) -> Guardrails:
    s, e = (int(x) for x in rng.integers(0, 24, 2))
    return Guardrails(quiet_start=s, quiet_end=e)


def _assert_same(one: object, batch: object, row: int) -> None:
    for name in ("shared", "candidates", "mask", "candidate_features"):
        a, b = getattr(one, name), getattr(batch, name)[row:row + 1]
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert a.tobytes() == b.tobytes(), (name, row, a, b)
    assert one.shared_names == batch.shared_names  # type: ignore[attr-defined]
    assert one.candidate_feature_names == batch.candidate_feature_names  # type: ignore[attr-defined]
    s1, s2 = one.extra["send_ts"], batch.extra["send_ts"][row:row + 1]  # type: ignore[attr-defined]
    assert s1.dtype == s2.dtype and np.array_equal(s1, s2)


@pytest.mark.parametrize("passed_features", [False, True])
def test_single_row_context_equals_the_batch_byte_for_byte(passed_features: bool) -> None:
    rng = np.random.default_rng(7)
    rounds = inside = 0
    for group in range(12):  # each group: its own quiet hours and arms, fresh users
        g = _guardrails(rng) if group else Guardrails(quiet_start=5, quiet_end=5)  # no quiet
        arms = ARM_SETS[group % len(ARM_SETS)]
        r = _rounds(rng, 100)
        order = np.argsort(r["ts"])
        r = {k: v[order] for k, v in r.items()}
        a, b = _state(group), _state(group)  # identical states: batch on a, rows on b
        feats = None
        if passed_features:
            feats = a.features(r["users"], a.clock(r["users"]))
        batch = delay_context(a, r["users"], r["ts"], r["kinds"], r["cat"], r["ratio"], arms, g,
                              features=feats)
        for i in range(len(r["users"])):
            one = delay_context(b, r["users"][i:i + 1], r["ts"][i:i + 1], r["kinds"][i:i + 1],
                                r["cat"][i:i + 1], r["ratio"][i:i + 1], arms, g,
                                features=None if feats is None else feats[i:i + 1])
            _assert_same(one, batch, i)
            rounds += 1
            inside += clock_table(b, int(r["users"][i]), int(r["ts"][i]) // HOUR,
                                  table_span((0,))).hour_at(int(r["ts"][i])) is None
        # the batch path itself is the one definition: the profile passed in changes nothing
        again = delay_context(a, r["users"][:3], r["ts"][:3], r["kinds"][:3], r["cat"][:3],
                              r["ratio"][:3], arms, g,
                              features=a.features(r["users"][:3], a.clock(r["users"][:3])),
                              how_profile=a.hour_of_week_profile(r["users"][:3]))
        assert again.candidate_features.shape == (3, len(arms), 5)
    assert rounds == 1200
    assert inside >= 5  # events inside an hour whose offset changes (zoneinfo path)


@pytest.mark.parametrize("slack", [48, 2])
def test_send_clock_one_equals_send_clock(slack: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every (user, time, quiet hours, delays) incl. nearly all-day quiet hours, a full cache
    and (a table of 2 h past the longest delay) walks that leave the table."""
    monkeypatch.setattr(trigger_send, "_TABLE_SLACK", slack)
    trigger_send._tables.clear()
    rng = np.random.default_rng(11)
    st = _state(0)
    days = np.array([np.datetime64(d, "s").astype(np.int64) for d in CHANGES])
    fallback = 0
    for i in range(2000):
        g = (_guardrails(rng) if i % 10 else
             Guardrails(quiet_start=int(rng.integers(0, 3)), quiet_end=int(rng.integers(21, 24))))
        delays = tuple(sorted({int(x) for x in rng.choice([0, 1, 2, 4, 8, 24, 48, 72], 3)}))
        u = int(rng.integers(0, USERS))
        ts = int(rng.choice(days) + rng.integers(-3 * 86400, 3 * 86400))
        want = send_clock(st, np.array([u]), np.array([ts]), np.array(delays), g)
        got = send_clock_one(st, u, ts, delays, g)
        for w, x in zip(want, got, strict=True):
            assert w[0].tolist() == x, (u, ts, g, delays)
        fallback += max(t // HOUR - ts // HOUR for t in got[0]) >= table_span(delays)
        if i == 1000:  # the cache empties when full; answers stay the same
            assert trigger_send._tables
            trigger_send._tables.clear()
    assert (fallback > 0) == (slack == 2)  # the batch fallback is exercised
