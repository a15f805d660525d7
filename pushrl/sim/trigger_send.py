"""When a delay arm actually sends: the one definition shared by the delay context, the
trigger world's truth and the fitted trigger simulator.

A trigger created at ``event_ts`` with arm ``d`` is due at ``event_ts + d`` h; senders poll
at hour starts (:meth:`pushrl.rules.triggers.TriggerTracker.resolve_due`), so the first
possible send is the next hour start at or after the due time; quiet hours (the ONE
:class:`~pushrl.rules.guardrails.Guardrails`) re-queue it hour by hour to the first
non-quiet local hour. Caps are not modelled here (they depend on other pushes); the
resolution in the tracker applies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pushrl.data.features import FeatureState
from pushrl.data.timezones import local_clock
from pushrl.rules.guardrails import Guardrails
from pushrl.units import HOUR

#: Longest quiet spell the re-queue walks over (hours).
_MAX_QUIET = 24


def send_times(state: FeatureState, users: np.ndarray, event_ts: np.ndarray,
               delays_h: np.ndarray, guardrails: Guardrails) -> np.ndarray:
    """Expected send time of each (trigger, arm) ignoring caps and cancellations.

    Args:
        state: Any :class:`FeatureState` holding the users' time zones.
        users: ``(n,)`` user indices in ``state``.
        event_ts: ``(n,)`` unix seconds of the trigger events.
        delays_h: ``(k,)`` delay arms in hours (no drop arm).
        guardrails: Quiet hours to skip.

    Returns:
        ``(n, k)`` int64 unix seconds (hour starts).
    """
    return send_clock(state, users, event_ts, delays_h, guardrails)[0]


def send_clock(state: FeatureState, users: np.ndarray, event_ts: np.ndarray,
               delays_h: np.ndarray, guardrails: Guardrails
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`send_times` and the local ``(hour, dow)`` at each send time, each ``(n, k)``
    (one clock lookup fewer for callers that need both)."""
    u = np.asarray(users, np.int64)[:, None]
    due = np.asarray(event_ts, np.int64)[:, None] + np.asarray(delays_h, np.int64)[None, :] * HOUR
    t = -(-due // HOUR) * HOUR  # next hour start at or after the due time
    # flat (user, time) pairs: a decision's few pairs take the clock's python fast path
    uu = np.broadcast_to(u, t.shape).ravel()
    t = t.ravel()
    hour, dow, _ = state.local_time_at(uu, t)
    for _ in range(_MAX_QUIET):
        quiet = guardrails.quiet(hour)
        if not quiet.any():
            break
        # jump to the quiet spell's end in one step (a DST change inside it is caught by the
        # next check, which then walks on hour by hour)
        t = np.where(quiet, t + ((guardrails.quiet_end - hour) % 24) * HOUR, t)
        hour, dow, _ = state.local_time_at(uu, t)
    shape = due.shape
    return t.reshape(shape), hour.reshape(shape), dow.reshape(shape)



#: Hours of local clock one cached table covers past the event's bucket and the longest
#: delay; a walk that leaves it falls back to :func:`send_clock`.
_TABLE_SLACK = 48
#: Most cached (zone, bucket, span) tables before the cache is emptied (a server's tables
#: turn over every hour; a few hundred zones).
_TABLE_CACHE = 4096


@dataclass(frozen=True)
class ClockTable:
    """A user's zone's local clock at the starts of ``span`` hour buckets from ``bucket``:
    ``offset`` (UTC offset, s), ``hour`` and ``dow`` (:func:`~pushrl.data.timezones.
    local_clock` at the bucket starts: what :meth:`FeatureState.local_time_at` gives for
    hour starts), each a list of ``span`` ints."""

    bucket: int
    offset: list[int]
    hour: list[int]
    dow: list[int]

    def hour_at(self, ts: int) -> int | None:
        """Local hour at ``ts`` in the table's first bucket (``local_clock``: ``(ts + offset)
        mod day // hour``), or None when the zone changes offset inside that bucket (the
        caller asks :meth:`FeatureState.local_time_at`, which reads zoneinfo for those)."""
        off = self.offset[0]
        if off != self.offset[1] and ts != self.bucket * HOUR:
            return None
        return (ts + off) // HOUR % 24


_tables: dict[tuple[str, int, int], ClockTable] = {}


def clock_table(state: FeatureState, user: int, bucket: int, span: int) -> ClockTable:
    """:class:`ClockTable` of ``user``'s zone from ``bucket`` (cached per zone: the offsets are
    a function of the zone name and the hour)."""
    key = (state.timezone(user), bucket, span)
    got = _tables.get(key)
    if got is None:
        if len(_tables) >= _TABLE_CACHE:
            _tables.clear()
        b = bucket + np.arange(span, dtype=np.int64)
        off = state.tzt.offset_seconds(np.full(span, state.a.tz_idx[user]), b)
        hour, dow, _ = local_clock(b * HOUR, off)
        got = _tables[key] = ClockTable(bucket, off.tolist(), hour.tolist(), dow.tolist())
    return got


@lru_cache(maxsize=64)
def _quiet_table(guardrails: Guardrails) -> tuple[bool, ...]:
    """``guardrails.quiet`` of each local hour 0-23 (the one rule, read once)."""
    return tuple(guardrails.quiet(np.arange(24)).tolist())


def table_span(delays_h: tuple[int, ...]) -> int:
    """Buckets a :class:`ClockTable` for :func:`send_clock_one` over ``delays_h`` covers."""
    return (max(delays_h) if delays_h else 0) + _TABLE_SLACK + 1


def send_clock_one(state: FeatureState, user: int, event_ts: int, delays_h: tuple[int, ...],
                   guardrails: Guardrails, table: ClockTable | None = None
                   ) -> tuple[list[int], list[int], list[int]]:
    """:func:`send_clock` of one trigger in plain python: ``(send ts, local hour, local dow)``,
    each a list over ``delays_h`` (the server's single decisions: a cached per-zone
    :class:`ClockTable` from the event's bucket, ``table`` when the caller has it, instead of
    ~20 array operations). The same walk: jump to the end of a quiet spell, re-check, at most
    ``_MAX_QUIET`` jumps; equal to :func:`send_clock` element for element
    (tests/sim/test_trigger_context.py)."""
    user, event_ts = int(user), int(event_ts)
    span = table_span(delays_h)
    if table is None:
        table = clock_table(state, user, event_ts // HOUR, span)
    first = -(-event_ts // HOUR) - table.bucket  # next hour start at or after the event
    hours, quiet, end = table.hour, _quiet_table(guardrails), guardrails.quiet_end
    idx = []
    for d in delays_h:
        i = first + int(d)
        for _ in range(_MAX_QUIET):
            if i >= span:
                break
            h = hours[i]
            if not quiet[h]:
                break
            i += (end - h) % 24
        if i >= span:  # a walk past the table (long quiet hours over a DST change)
            t, hr, dw = send_clock(state, np.array([user]), np.array([event_ts]),
                                   np.asarray(delays_h, np.int64), guardrails)
            return t[0].tolist(), hr[0].tolist(), dw[0].tolist()
        idx.append(i)
    b0 = table.bucket
    return [(b0 + i) * HOUR for i in idx], [hours[i] for i in idx], [table.dow[i] for i in idx]
