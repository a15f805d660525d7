"""Local time of users from UTC hour buckets, DST-correct, vectorised.

Time in pushrl is counted in UTC hour *buckets*: ``bucket = unix_seconds // 3600``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pushrl.units import DAY, HOUR

#: Weekday of the unix epoch (1970-01-01 was a Thursday; Monday == 0).
_EPOCH_DOW = 3


class TimezoneTable:
    """UTC offsets of a fixed list of IANA time zones, per UTC hour bucket.

    Offsets are computed with pandas/zoneinfo over a span of buckets that grows on demand,
    so a lookup is one gather.

    Args:
        names: IANA zone names; index ``i`` in this list is the zone's ``tz_idx``.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names: list[str] = list(names)
        self._index = {n: i for i, n in enumerate(self.names)}
        self._lo = 0
        self._table = np.zeros((len(self.names), 0), dtype=np.int32)

    def index(self, name: str) -> int:
        """Return the ``tz_idx`` of ``name``, adding the zone if new."""
        i = self._index.get(name)
        if i is None:
            i = len(self.names)
            self.names.append(name)
            self._index[name] = i
            hi = self._lo + self._table.shape[1]
            row = self._compute(name, self._lo, hi) if hi > self._lo else np.zeros(0, np.int32)
            self._table = np.vstack([self._table, row[None, :]])
        return i

    @staticmethod
    def _compute(name: str, lo: int, hi: int) -> np.ndarray:
        idx = pd.DatetimeIndex(pd.to_datetime(np.arange(lo, hi, dtype=np.int64) * HOUR,
                                              unit="s", utc=True))
        local = idx.tz_convert(name).tz_localize(None)
        off = (local - idx.tz_localize(None)).total_seconds()
        return np.asarray(off, dtype=np.int32)

    def _ensure(self, lo: int, hi: int) -> None:
        cur_hi = self._lo + self._table.shape[1]
        if self._table.shape[1] and lo >= self._lo and hi <= cur_hi:
            return
        new_lo = min(lo, self._lo) if self._table.shape[1] else lo
        new_hi = max(hi, cur_hi) if self._table.shape[1] else hi
        new_lo -= 24 * 14  # margin so small moves do not recompute
        new_hi += 24 * 60
        self._table = np.stack([self._compute(n, new_lo, new_hi) for n in self.names]) \
            if self.names else np.zeros((0, new_hi - new_lo), np.int32)
        self._lo = new_lo

    def offset_seconds(self, tz_idx: np.ndarray, bucket: np.ndarray | int) -> np.ndarray:
        """UTC offset in seconds for each ``(tz_idx, bucket)`` pair (broadcast), int32."""
        b = np.asarray(bucket, dtype=np.int64)
        if b.size == 0:
            return np.zeros(np.broadcast(np.asarray(tz_idx), b).shape, np.int32)
        lo, hi = int(b.min()), int(b.max()) + 1
        self._ensure(lo, hi)
        return self._table[np.asarray(tz_idx), b - self._lo]


def local_clock(unix_sec: np.ndarray | int, offset_sec: np.ndarray | int) -> tuple[np.ndarray,
                                                                                  np.ndarray,
                                                                                  np.ndarray]:
    """Local hour (0-23), weekday (Mon=0) and local day number for UTC times and offsets.

    Returns:
        ``(hour, dow, day)``, int arrays broadcast from the inputs.
    """
    local = np.asarray(unix_sec, dtype=np.int64) + np.asarray(offset_sec, dtype=np.int64)
    day = local // DAY
    hour = (local % DAY) // HOUR
    dow = (day + _EPOCH_DOW) % 7
    return hour, dow, day
