"""Serve-time guardrails, counted from the server's own decision log.

* quiet hours in the user's local time zone (checked at the decision's exact time);
* at most ``max_per_day`` sends per user per local calendar day;
* at most ``max_per_week`` sends per user in any 168 consecutive hour buckets;
* a global kill switch (handled by the server: the safe default policy never sends).

A guardrail masks ``SEND`` in the :class:`~pushrl.policies.base.TimingContext`, so no policy
can override it; the response names the guardrail that decided.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np

from pushrl.data.features import FeatureState
from pushrl.data.timezones import TimezoneTable
from pushrl.serve.config import GuardrailConfig

HOUR = 3600
DAY = 86400
WEEK_BUCKETS = 168


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_hour_day(ts: int, tz: str) -> tuple[int, int]:
    """Local hour (0-23) and local day number (days since 1970-01-01, local) of ``ts``."""
    t = dt.datetime.fromtimestamp(ts, _zone(tz))
    off = t.utcoffset()
    local = ts + int(off.total_seconds() if off is not None else 0)
    return (local % DAY) // HOUR, local // DAY


def local_hour_day_vec(tzt: TimezoneTable, tz_idx: np.ndarray,
                       ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`local_hour_day` at the exact times ``ts`` (not bucket starts).

    The pipeline's per-bucket offsets are exact unless a zone changes offset inside the
    bucket (e.g. Australia/Adelaide at hh:30 UTC); those rows use zoneinfo.

    Args:
        tzt: The feature state's time-zone table.
        tz_idx: ``(n,)`` zone indices into ``tzt.names``.
        ts: ``(n,)`` unix seconds.
    """
    b = ts // HOUR
    off, nxt = tzt.offset_seconds(tz_idx, np.stack([b, b + 1])).astype(np.int64)  # one lookup
    local = ts + off
    hour, day = (local % DAY) // HOUR, local // DAY
    for i in np.flatnonzero(off != nxt).tolist():
        hour[i], day[i] = local_hour_day(int(ts[i]), tzt.names[int(tz_idx[i])])
    return hour, day


def in_quiet_hours(hour: int, cfg: GuardrailConfig) -> bool:
    """True when local ``hour`` lies in ``[quiet_start, quiet_end)`` (wrapping midnight)."""
    s, e = cfg.quiet_start, cfg.quiet_end
    if s == e:
        return False
    return s <= hour < e if s < e else (hour >= s or hour < e)


class SendHistory:
    """Recent sends per user: ``(bucket, local date ordinal)`` of the last 8 days."""

    def __init__(self) -> None:
        self._sends: dict[int, list[tuple[int, int]]] = defaultdict(list)

    def record(self, user: int, tz: str, ts: int, day: int | None = None) -> None:
        """Count a send of ``user`` at unix time ``ts`` (``day``: its local day number)."""
        b = ts // HOUR
        lst = self._sends[user]
        lst.append((b, local_hour_day(ts, tz)[1] if day is None else day))
        if len(lst) > 64 or lst[0][0] < b - 8 * 24:
            lst[:] = [x for x in lst if x[0] > b - 8 * 24]

    def counts(self, user: int, bucket: int, day: int) -> tuple[int, int]:
        """Sends on local ``day`` and in the 168 buckets ending at ``bucket``."""
        lst = self._sends.get(user)
        if not lst:
            return 0, 0
        today = sum(1 for _, d in lst if d == day)
        week = sum(1 for b, _ in lst if bucket - WEEK_BUCKETS < b <= bucket)
        return today, week


def check(cfg: GuardrailConfig, history: SendHistory, users: np.ndarray, ts: np.ndarray,
          fs: FeatureState) -> tuple[np.ndarray, list[str | None], np.ndarray, np.ndarray]:
    """Which users may receive a push at ``ts``.

    Args:
        cfg: Guardrail settings.
        history: Sends so far (from the server's log).
        users: ``(n,)`` user indices.
        ts: ``(n,)`` unix seconds of the decisions.
        fs: The feature state (users' time zones).

    Returns:
        ``allowed`` bool ``(n,)``, the blocking guardrail per row (``None`` if allowed),
        ``sends_today`` int ``(n,)`` and the local day number of each row ``(n,)``.
    """
    n = len(users)
    tz_idx = fs.a.tz_idx[users]
    hours, days = local_hour_day_vec(fs.tzt, tz_idx, np.asarray(ts, np.int64))
    s, e = cfg.quiet_start, cfg.quiet_end
    quiet = (np.zeros(n, bool) if s == e else
             (hours >= s) & (hours < e) if s < e else (hours >= s) | (hours < e))
    today = np.zeros(n, np.int64)
    reasons: list[str | None] = [None] * n
    for i, (u, t, day) in enumerate(zip(users.tolist(), ts.tolist(), days.tolist(),
                                        strict=True)):
        d, w = history.counts(u, t // HOUR, day)
        today[i] = d
        if quiet[i]:
            reasons[i] = "quiet_hours"
        elif d >= cfg.max_per_day:
            reasons[i] = "daily_cap"
        elif w >= cfg.max_per_week:
            reasons[i] = "weekly_cap"
    allowed = np.array([r is None for r in reasons], bool)
    return allowed, reasons, today, days
