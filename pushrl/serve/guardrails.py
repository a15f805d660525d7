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

from pushrl.serve.config import GuardrailConfig

HOUR = 3600
WEEK_BUCKETS = 168


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_hour_day(ts: int, tz: str) -> tuple[int, int]:
    """Local hour (0-23) and local date ordinal of unix time ``ts`` in ``tz``."""
    t = dt.datetime.fromtimestamp(ts, _zone(tz))
    return t.hour, t.toordinal()


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

    def record(self, user: int, tz: str, ts: int) -> None:
        """Count a send of ``user`` at unix time ``ts``."""
        b = ts // HOUR
        lst = self._sends[user]
        lst.append((b, local_hour_day(ts, tz)[1]))
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
          tzs: list[str]) -> tuple[np.ndarray, list[str | None], np.ndarray]:
    """Which users may receive a push at ``ts``.

    Args:
        cfg: Guardrail settings.
        history: Sends so far (from the server's log).
        users: ``(n,)`` user indices.
        ts: ``(n,)`` unix seconds of the decisions.
        tzs: Time zone of each user.

    Returns:
        ``allowed`` bool ``(n,)``, the blocking guardrail per row (``None`` if allowed) and
        ``sends_today`` int ``(n,)``.
    """
    n = len(users)
    allowed = np.ones(n, bool)
    reasons: list[str | None] = [None] * n
    today = np.zeros(n, np.int64)
    for i, (u, t, tz) in enumerate(zip(users.tolist(), ts.tolist(), tzs, strict=True)):
        hour, day = local_hour_day(t, tz)
        d, w = history.counts(u, t // HOUR, day)
        today[i] = d
        if in_quiet_hours(hour, cfg):
            reasons[i] = "quiet_hours"
        elif d >= cfg.max_per_day:
            reasons[i] = "daily_cap"
        elif w >= cfg.max_per_week:
            reasons[i] = "weekly_cap"
        allowed[i] = reasons[i] is None
    return allowed, reasons, today
