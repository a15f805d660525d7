"""Local time of users from UTC hour buckets, DST-correct, vectorised.

Time in pushrl is counted in UTC hour *buckets*: ``bucket = unix_seconds // 3600``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any
from zoneinfo import available_timezones

import numpy as np
import pandas as pd

from pushrl.units import DAY, HOUR

#: Weekday of the unix epoch (1970-01-01 was a Thursday; Monday == 0).
_EPOCH_DOW = 3
_BLOCK_BITS = 13
#: Hours per lazily computed block of offsets (8192 h, about 341 days).
BLOCK_HOURS = 1 << _BLOCK_BITS
_SMALL = 16  # up to this many pairs, python lookups beat numpy's per-call overhead


#: Names in the tz database directory that are not zones: ``localtime`` is whatever this
#: machine is set to, ``Factory`` is the "-00" placeholder, ``posixrules`` a template.
NOT_ZONES = frozenset({"localtime", "Factory", "posixrules"})


@functools.cache
def zone_names() -> frozenset[str]:
    """IANA zone names (with the backward-compatible links such as ``US/Eastern``) that
    mean the same place on every machine."""
    return frozenset(available_timezones() - NOT_ZONES) | {"UTC"}


@functools.cache
def _tzdata_zones() -> frozenset[str]:
    """The zone list of the ``tzdata`` package (one file; empty without the package)."""
    try:
        with resources.files("tzdata").joinpath("zones").open("r") as f:
            return frozenset(z.strip() for z in f if z.strip())
    except (ImportError, FileNotFoundError):
        return frozenset()


def known_zones(names: Iterable[str]) -> set[str]:
    """The ``names`` that are in :func:`zone_names`, without listing the tz database
    directories when ``tzdata``'s zone list has them all (``available_timezones`` starts from
    that list, then opens every file under the tz database directories: ~15 ms).

    Exactly ``set(names) & zone_names()``: a ``tzdata`` zone (or ``UTC``) that is not in
    :data:`NOT_ZONES` is in :func:`zone_names`; any other name is answered by it."""
    asked = set(names)
    quick = {n for n in asked if n == "UTC" or (n in _tzdata_zones() and n not in NOT_ZONES)}
    return quick if quick == asked else asked & zone_names()


class TimezoneTable:
    """UTC offsets of a list of IANA time zones, per UTC hour bucket.

    Offsets are computed with pandas/zoneinfo lazily, per zone and per block of
    :data:`BLOCK_HOURS` buckets, only for the ``(zone, block)`` pairs a lookup touches; blocks
    with equal offsets are stored once (most zones share their rules or have no DST). So the
    cost and memory of a lookup depend on the zones and times asked for, not on the span
    between the earliest and latest time ever seen (users decades apart once made every zone
    recompute over the whole span). A lookup is two gathers.

    Args:
        names: IANA zone names; index ``i`` in this list is the zone's ``tz_idx``.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names: list[str] = []
        self._index: dict[str, int] = {}
        self._b0 = 0  # first block number covered by the directory
        #: ``(zone, block - _b0)`` -> row of ``_blocks``; -1: not computed yet.
        self._dir = np.full((0, 0), -1, np.int32)
        self._blocks = np.zeros((0, BLOCK_HOURS), np.int32)
        self.n_blocks = 0  # rows of ``_blocks`` in use
        self._dedup: dict[bytes, int] = {}
        self._rows: dict[tuple[int, int], int] = {}  # (zone, block number) -> row
        for n in names:
            self.index(n)

    def index(self, name: str) -> int:
        """Return the ``tz_idx`` of ``name``, adding the zone if new (nothing is computed)."""
        i = self._index.get(name)
        if i is None:
            i = len(self.names)
            self.names.append(name)
            self._index[name] = i
            self._dir = np.vstack([self._dir, np.full((1, self._dir.shape[1]), -1, np.int32)])
        return i

    @staticmethod
    def _compute(name: str, lo: int, hi: int) -> np.ndarray:
        idx = pd.DatetimeIndex(pd.to_datetime(np.arange(lo, hi, dtype=np.int64) * HOUR,
                                              unit="s", utc=True))
        local = idx.tz_convert(name).tz_localize(None)
        off = (local - idx.tz_localize(None)).total_seconds()
        return np.asarray(off, dtype=np.int32)

    def _cover(self, lo: int, hi: int) -> None:
        """Widen the directory to blocks ``lo..hi`` (cheap: no offsets are computed)."""
        width = self._dir.shape[1]
        if width and lo >= self._b0 and hi < self._b0 + width:
            return
        new_lo = min(lo, self._b0) if width else lo
        new_hi = max(hi, self._b0 + width - 1) if width else hi
        grown = np.full((len(self.names), new_hi - new_lo + 1), -1, np.int32)
        grown[:, self._b0 - new_lo:self._b0 - new_lo + width] = self._dir
        self._dir, self._b0 = grown, new_lo

    def _fill(self, zones: np.ndarray, cols: np.ndarray) -> None:
        """Compute the missing ``(zone, directory column)`` blocks."""
        width = self._dir.shape[1]
        keys = zones.astype(np.int64) * width + cols  # in [0, zones x width): a few distinct
        # (sorted distinct keys, as np.unique gives them, from a count: no hash of every row)
        for key in np.flatnonzero(np.bincount(keys.ravel())).tolist():
            z, col = divmod(key, width)
            lo = (self._b0 + col) * BLOCK_HOURS
            block = self._compute(self.names[z], lo, lo + BLOCK_HOURS)
            row = self._dedup.get(block.tobytes())
            if row is None:
                if self.n_blocks == self._blocks.shape[0]:
                    grown = np.zeros((max(8, 2 * self.n_blocks), BLOCK_HOURS), np.int32)
                    grown[:self.n_blocks] = self._blocks[:self.n_blocks]
                    self._blocks = grown
                row = self.n_blocks
                self._blocks[row] = block
                self.n_blocks += 1
                self._dedup[block.tobytes()] = row
            self._dir[z, col] = row
            self._rows[(z, self._b0 + col)] = row

    def offset_seconds(self, tz_idx: np.ndarray, bucket: np.ndarray | int) -> np.ndarray:
        """UTC offset in seconds for each ``(tz_idx, bucket)`` pair (broadcast), int32."""
        b = np.asarray(bucket, dtype=np.int64)
        z = np.asarray(tz_idx)
        if b.size <= _SMALL and z.ndim == 1 and b.ndim and b.shape[-1] == z.size:
            got = self._small(z.tolist(), b)  # a decision pass: a few python lookups
            if got is not None:
                return got
        if b.size == 0:
            return np.zeros(np.broadcast(z, b).shape, np.int32)
        lo, hi = int(b.min()) >> _BLOCK_BITS, int(b.max()) >> _BLOCK_BITS
        if lo < self._b0 or hi >= self._b0 + self._dir.shape[1]:
            self._cover(lo, hi)
        rel = b - (self._b0 << _BLOCK_BITS)  # hours since the directory's first block
        col = rel >> _BLOCK_BITS
        width = self._dir.shape[1]
        flat = z.astype(np.int64) * width + col  # 1-d takes: cheaper than 2-d gathers
        row = self._dir.ravel().take(flat)
        if row.min() < 0:
            missing = row < 0
            self._fill(np.broadcast_to(z, row.shape)[missing],
                       np.broadcast_to(col, row.shape)[missing])
            row = self._dir.ravel().take(flat)
        return self._blocks.ravel().take(row.astype(np.int64) * BLOCK_HOURS
                                         + (rel & (BLOCK_HOURS - 1)))

    def _small(self, zones: list[int], b: np.ndarray) -> np.ndarray | None:
        """:meth:`offset_seconds` of a few pairs (``b``'s last axis runs over ``zones``) from
        the computed blocks; None when one is missing."""
        got = self.offsets_few([zones[i % len(zones)] for i in range(b.size)],
                               b.ravel().tolist())
        return None if got is None else np.array(got, np.int32).reshape(b.shape)

    def offsets_few(self, zones: list[int], buckets: list[int]) -> list[int] | None:
        """:meth:`offset_seconds` of a few ``(zone, bucket)`` pairs as Python ints, from the
        blocks already computed; None when one is missing (:meth:`offset_seconds` computes
        it)."""
        rows, blocks, out = self._rows, self._blocks, []
        for z, bi in zip(zones, buckets, strict=True):
            r = rows.get((z, bi >> _BLOCK_BITS))
            if r is None:
                return None
            out.append(blocks.item(r, bi & (BLOCK_HOURS - 1)))  # (a python int)
        return out


def local_clock(unix_sec: np.ndarray | int, offset_sec: np.ndarray | int) -> tuple[np.ndarray,
                                                                                  np.ndarray,
                                                                                  np.ndarray]:
    """Local hour (0-23), weekday (Mon=0) and local day number for UTC times and offsets.

    Returns:
        ``(hour, dow, day)``, int arrays broadcast from the inputs.
    """
    return _clock(np.asarray(unix_sec, dtype=np.int64) + np.asarray(offset_sec, dtype=np.int64))


def local_clock_int(unix_sec: int, offset_sec: int) -> tuple[int, int, int]:
    """:func:`local_clock` of one time as Python ints (the same floor divisions: a decision
    pass of a few users, where each numpy call costs more than the arithmetic)."""
    return _clock(unix_sec + offset_sec)


def _clock(local: Any) -> Any:
    """``(hour, dow, day)`` of local unix seconds: an int64 array or one python int (one
    expression for :func:`local_clock` and :func:`local_clock_int`)."""
    day, rem = divmod(local, DAY)  # np.divmod on arrays: floor division and modulo in one pass
    return rem // HOUR, (day + _EPOCH_DOW) % 7, day
