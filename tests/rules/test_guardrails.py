"""The one guardrail definition: validation, 0 = no cap, the weekly window's edges, the day
counter, and DST-exact local time (odd offsets, half-hour DST)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushrl.data.features import FeatureSpec, FeatureState
from pushrl.rules.guardrails import (
    DAILY_CAP,
    QUIET_HOURS,
    REASONS,
    WEEKLY_CAP,
    DayCount,
    Guardrails,
    in_week_window,
)
from pushrl.serve.guardrails import SendHistory
from pushrl.units import HOUR

_SPEC = FeatureSpec((), {}, tuple(np.full(168, 1 / 168)), ())
ODD_ZONES = ["Asia/Kathmandu", "Australia/Lord_Howe", "America/St_Johns", "Pacific/Chatham",
             "Australia/Adelaide", "Europe/Berlin", "America/New_York", "UTC"]


@pytest.mark.parametrize(("kw", "exc", "match"), [
    ({"quiet_start": 24}, ValueError, "`quiet_start` must be a local hour in 0..23, got 24"),
    ({"quiet_end": -1}, ValueError, "`quiet_end` must be a local hour"),
    ({"max_sends_per_day": -1}, ValueError, r"`max_sends_per_day` must be >= 0 \(0 = no cap\)"),
    ({"max_sends_per_week": -3}, ValueError, "`max_sends_per_week` must be >= 0"),
    ({"max_sends_per_day": 1.5}, TypeError, "`max_sends_per_day` must be an int, got 1.5"),
    ({"max_sends_per_week": True}, TypeError, "must be an int, got True"),
])
def test_invalid_guardrails_are_refused(kw: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        Guardrails(**kw)


def test_defaults_are_the_default_scenario_and_round_trip() -> None:
    from pushrl.envs.scenario import load_scenario

    g = load_scenario("default").guardrails
    assert g == Guardrails() and Guardrails.from_dict(g.to_dict()) == g
    assert Guardrails(max_sends_per_day=np.int64(3)).to_dict()["max_sends_per_day"] == 3
    with pytest.raises(ValueError, match="unknown guardrail keys"):
        Guardrails.from_dict({"max_per_day": 2})


def test_zero_means_no_cap_and_verdict_matches_allowed() -> None:
    g0 = Guardrails(0, 0, 0, 0)
    many = np.array([0, 5, 500])
    assert g0.allowed(np.array([3, 12, 23]), many, many).all()
    assert (g0.verdict(np.array([3, 12, 23]), many, many) == 0).all()
    g = Guardrails(22, 8, 2, 3)
    hour = np.array([22, 7, 8, 12, 12, 12, 23])
    today = np.array([0, 0, 2, 1, 0, 2, 5])
    week = np.array([0, 0, 0, 3, 2, 3, 9])
    code = g.verdict(hour, today, week)
    assert code.tolist() == [QUIET_HOURS, QUIET_HOURS, DAILY_CAP, WEEKLY_CAP, 0, DAILY_CAP,
                             QUIET_HOURS]
    np.testing.assert_array_equal(code == 0, g.allowed(hour, today, week))
    assert [REASONS[c] for c in code[:4]] == ["quiet_hours", "quiet_hours", "daily_cap",
                                              "weekly_cap"]
    day_left, _ = g.cap_left(today, week)
    np.testing.assert_allclose(day_left, np.clip(1 - today / 2, 0, 1))
    assert (g0.cap_left(today, week)[1] == 1).all()


@pytest.mark.parametrize(("s", "e", "quiet"), [
    (22, 8, [22, 23, 0, 7]), (8, 22, [8, 21]), (5, 5, []), (0, 1, [0]), (23, 0, [23])])
def test_quiet_hours_wrap_midnight(s: int, e: int, quiet: list[int]) -> None:
    got = set(np.flatnonzero(Guardrails(s, e).quiet(np.arange(24))).tolist())
    want = set() if s == e else {h for h in range(24) if (s <= h < e if s < e else
                                                           h >= s or h < e)}
    assert got == want and set(quiet) <= got


def test_week_window_is_the_feature_window_plus_the_current_bucket() -> None:
    b = 1000
    assert in_week_window(np.array([b - 169, b - 168, b - 1, b, b + 1]), b).tolist() == [
        False, True, True, True, False]
    # the pipeline's sends_7d at bucket b counts exactly the sends in [b - 168, b)
    fs = FeatureState(_SPEC, ["UTC"], b - 400)
    sends = np.array([b - 169, b - 168, b - 100, b - 1])
    for x in sends:
        fs.record_push(np.array([0]), int(x))
    assert fs.features(np.array([0]), b)[0, 4] == in_week_window(sends, b).sum() == 3


def test_day_count_keeps_the_day_before_for_out_of_order_decisions() -> None:
    c = DayCount(2)
    c.add(np.array([0, 0, 1]), np.array([10, 10, 10]))
    assert c.get(np.array([0, 1]), np.array([10, 10])).tolist() == [2, 1]
    c.add(np.array([0]), np.array([11]))          # local midnight passed
    assert c.get(np.array([0, 0, 0]), np.array([9, 10, 11])).tolist() == [0, 2, 1]
    c.add(np.array([0]), np.array([10]))          # a late decision of the day before
    assert c.get(np.array([0, 0]), np.array([10, 11])).tolist() == [3, 1]
    c.add(np.array([0]), np.array([13]))          # a gap: nothing carried over
    assert c.get(np.array([0, 0]), np.array([12, 13])).tolist() == [0, 1]
    c.resize(4)
    c.reset(np.array([1]))
    assert c.get(np.arange(4), np.full(4, 10)).tolist() == [0, 0, 0, 0]


# DST changes of 2026 in the odd zones (UTC), +- a few hours
_CHANGES = [dt.datetime(2026, 4, 4, 15, tzinfo=dt.UTC),    # Lord Howe, Chatham, Adelaide end
            dt.datetime(2026, 10, 3, 15, tzinfo=dt.UTC),   # Lord Howe / Adelaide start
            dt.datetime(2026, 9, 26, 14, tzinfo=dt.UTC),   # Chatham start
            dt.datetime(2026, 3, 8, 5, tzinfo=dt.UTC),     # St Johns / New York start
            dt.datetime(2026, 11, 1, 4, tzinfo=dt.UTC),    # St Johns / New York end
            dt.datetime(2026, 3, 29, 1, tzinfo=dt.UTC)]    # Berlin start


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(ODD_ZONES), st.sampled_from(_CHANGES),
       st.lists(st.integers(-6 * HOUR, 6 * HOUR), min_size=1, max_size=20))
def test_local_time_at_is_exact_inside_buckets(zone: str, change: dt.datetime,
                                               deltas: list[int]) -> None:
    ts = int(change.timestamp()) + np.array(deltas, np.int64)
    fs = FeatureState(_SPEC, [zone], int(ts.min()) // HOUR)
    hour, dow, day = fs.local_time_at(np.zeros(ts.size, np.int64), ts)
    for i, t in enumerate(ts.tolist()):
        loc = dt.datetime.fromtimestamp(t, ZoneInfo(zone))
        assert (hour[i], dow[i]) == (loc.hour, loc.weekday()), (zone, loc)
        assert day[i] == (loc.date() - dt.date(1970, 1, 1)).days
    # at bucket starts it equals the pipeline's per-bucket local time
    b = ts // HOUR
    for a, c in zip(fs.local_time_at(np.zeros(b.size, np.int64), b * HOUR),
                    fs.local_time(np.zeros(b.size, np.int64), b), strict=True):
        np.testing.assert_array_equal(a, c)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3)), max_size=40))
def test_day_count_one_at_a_time_equals_vectorised(sends: list[tuple[int, int]]) -> None:
    vec, one = DayCount(3), DayCount(3)
    day = 100
    for user, step in sends:  # days move forward per user, at most one day back
        d = day + step - 1
        vec.add(np.array([user]), np.array([d]))
        one.add_one(user, d)
        day += step // 3
        q = np.full(3, d)
        for k in (-1, 0, 1):
            np.testing.assert_array_equal(vec.get(np.arange(3), q + k),
                                          one.get(np.arange(3), q + k))


def test_day_count_grows_by_doubling_and_keeps_the_counts() -> None:
    c = DayCount(1)
    c.add_one(0, 5)
    c.resize(2)
    assert c.day.size == 2
    c.resize(3)                                   # at least doubles: amortised O(1) growth
    assert c.day.size == 4
    c.resize(2)                                   # room already: no-op
    assert c.day.size == 4
    assert c.get(np.arange(4), np.full(4, 5)).tolist() == [1, 0, 0, 0]


def test_send_history_grows_for_new_users_on_record_and_on_query() -> None:
    h = SendHistory()
    h.record(5, "UTC", 3600 * 100, day=4)
    today, week = h.counts(np.array([9, 5]), np.array([100, 100]), np.array([4, 4]))
    assert today.tolist() == [0, 1] and week.tolist() == [0, 1]
    assert h.today.day.size >= 10
