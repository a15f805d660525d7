"""The lazy, blocked time-zone offset table: exact, and cheap for times decades apart."""

from __future__ import annotations

from zoneinfo import available_timezones

import numpy as np
import pandas as pd
import pytest

from pushrl.data.timezones import HOUR, TimezoneTable

B2000, B2100 = 946_684_800 // HOUR, 4_102_444_800 // HOUR
ODD = ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kathmandu",
       "Pacific/Chatham", "America/St_Johns", "Africa/Casablanca", "Antarctica/Troll", "UTC"]


def _dense(name: str, buckets: np.ndarray) -> np.ndarray:
    ts = pd.DatetimeIndex(pd.to_datetime(buckets * HOUR, unit="s", utc=True))
    return np.asarray((ts.tz_convert(name).tz_localize(None) - ts.tz_localize(None))
                      .total_seconds(), np.int32)


def test_offsets_equal_pandas_per_hour_across_a_century() -> None:
    tzt = TimezoneTable(ODD)
    rng = np.random.default_rng(3)
    b = rng.integers(B2000, B2100, 4000)
    z = rng.integers(0, len(ODD), b.size)
    got = tzt.offset_seconds(z, b)
    assert got.dtype == np.int32
    for i, name in enumerate(ODD):
        np.testing.assert_array_equal(got[z == i], _dense(name, b[z == i]))


def test_offsets_broadcast_and_block_edges() -> None:
    tzt = TimezoneTable(["Europe/Berlin"])
    b = np.arange(8192 * 250 - 30, 8192 * 250 + 30, dtype=np.int64)  # a block boundary
    two = tzt.offset_seconds(np.zeros((3, 1), np.int64), b[None, :])
    assert two.shape == (3, b.size)
    np.testing.assert_array_equal(two[1], _dense("Europe/Berlin", b))
    assert tzt.offset_seconds(np.array([0]), np.array([], np.int64)).shape == (0,)


def test_zone_added_later_and_earlier_span() -> None:
    tzt = TimezoneTable(["UTC"])
    tzt.offset_seconds(np.array([0]), np.array([B2000 + 500_000]))
    z = tzt.index("Asia/Kolkata")
    b = np.array([B2000, B2000 + 600_000])
    np.testing.assert_array_equal(tzt.offset_seconds(np.array([z, z]), b),
                                  _dense("Asia/Kolkata", b))


def test_times_decades_apart_compute_only_the_blocks_asked_for(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """#15 item 1: every zone known, one user's times a century apart. The old table built
    offsets for every zone over the whole span (36.8 s, 2.35 GB in the server)."""
    hours = [0]
    real = TimezoneTable._compute

    def counted(name: str, lo: int, hi: int) -> np.ndarray:
        hours[0] += hi - lo
        return real(name, lo, hi)

    monkeypatch.setattr(TimezoneTable, "_compute", staticmethod(counted))
    zones = sorted(available_timezones() - {"localtime", "Factory"})
    tzt = TimezoneTable(zones)
    berlin = tzt.index("Europe/Berlin")
    for b in (B2000 + 1, B2100 - 1, B2000 + 2, B2100 - 2):
        tzt.offset_seconds(np.array([berlin]), np.array([b]))
    assert hours[0] <= 2 * 8192
    tzt.offset_seconds(np.arange(len(zones)), np.full(len(zones), B2100 - 1))
    # every zone at one time: one block each, stored once per distinct block of offsets
    assert hours[0] <= (len(zones) + 2) * 8192
    assert tzt.n_blocks < len(zones) // 2


def test_small_lookups_equal_the_vector_path() -> None:
    tzt = TimezoneTable(ODD)
    rng = np.random.default_rng(5)
    for _ in range(50):
        z = rng.integers(0, len(ODD), 4)
        b = rng.integers(B2000, B2100, (2, 4))
        small = tzt.offset_seconds(z, b)  # <= 16 pairs: python lookups once computed
        big = tzt.offset_seconds(np.tile(z, 5), np.tile(b, 5))
        np.testing.assert_array_equal(small, big[:, :4])
        np.testing.assert_array_equal(small[0], [_dense(ODD[zi], np.array([bi]))[0]
                                                 for zi, bi in zip(z, b[0], strict=True)])
