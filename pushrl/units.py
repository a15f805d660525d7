"""Units of time and small clock helpers (the one place that says how long an hour is).

Time in pushrl is counted in UTC hour *buckets*: ``bucket = unix_seconds // HOUR``. A
decision in bucket ``b`` sees the events of buckets ``< b`` (:mod:`pushrl.data.features`).
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from typing import TypeVar
from zoneinfo import ZoneInfo

import numpy as np

#: Seconds per hour, day and week.
HOUR = 3600
DAY = 24 * HOUR
WEEK = 7 * DAY
#: Hour buckets per day and per week.
HOURS_PER_DAY = 24
HOURS_PER_WEEK = 168

T = TypeVar("T", int, np.ndarray)


def bucket_of(unix_seconds: T) -> T:
    """UTC hour bucket of unix seconds (floor division, also for times before 1970)."""
    return unix_seconds // HOUR


def bucket_start(bucket: T) -> T:
    """Unix seconds at the start of UTC hour ``bucket``."""
    return bucket * HOUR


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def utc_offset_seconds(unix_seconds: int, zone: str) -> int:
    """UTC offset of IANA ``zone`` at the exact time ``unix_seconds``, in seconds.

    The scalar zoneinfo fallback of the vectorised per-bucket offsets, for the few times at
    which a zone changes offset inside an hour bucket (e.g. Australia/Lord_Howe at hh:30 UTC).
    """
    off = dt.datetime.fromtimestamp(unix_seconds, _zone(zone)).utcoffset()
    return int(off.total_seconds()) if off is not None else 0
