"""`validate.isin` answers exactly as pandas' `Series.isin`; `load_dataset(summary=False)`
accepts and rejects the same rows (it only skips the report's summary)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.data.timezones import known_zones, zone_names
from pushrl.data.validate import isin, load_dataset


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", ["category", "arrow-category", "object", "str"])
def test_isin_equals_pandas(seed: int, kind: str) -> None:
    rng = np.random.default_rng(seed)
    pool = np.array([f"u{i}" for i in range(40)], dtype=object)
    vals = pool[rng.integers(0, 40, 500)].astype(object)
    vals[rng.random(500) < 0.1] = None  # missing ids
    if kind == "category":
        s = pd.Series(vals, dtype="category")
    elif kind == "arrow-category":  # categories with pandas' str dtype, as read from Parquet
        s = pd.Series(pd.Categorical(vals, categories=pd.Index(pool[:35], dtype="str")))
    else:
        s = pd.Series(vals, dtype=kind)
    known = [pd.Index(pool[rng.integers(0, 40, 25)]),           # some ids unknown
             pd.Index([*pool[:10], None], dtype=object),         # a missing value among them
             ("u1", "u3", "nobody"), pd.Index([], dtype=object),
             [np.str_("u2"), b"u4", 5, float("nan"), "u5"],         # not all strings
             {"u6", "u7"}, pd.Index(pool[5:30], dtype="str"),
             # unique indexes (the accepted users/items): looked up through their hash table
             pd.Index(np.unique(pool[rng.integers(0, 40, 25)].astype(str))),
             pd.Index(["u1", 5, "u9", None], dtype=object), pd.Index([3, 4])]
    for values in known:
        got = isin(s, values)
        assert got.dtype == bool and got.shape == (len(s),)
        np.testing.assert_array_equal(got, s.isin(values).to_numpy(bool))


def test_summary_false_keeps_the_rows(tiny_synth: Path) -> None:
    ds, rep = load_dataset(tiny_synth, quarantine=False)
    ds2, rep2 = load_dataset(tiny_synth, quarantine=False, summary=False)
    assert rep2.summary == {} and rep.summary
    assert rep2.counts == rep.counts
    for name in ("users", "items", "activity", "pushes"):
        pd.testing.assert_frame_equal(ds.table(name), ds2.table(name))
    assert ds.fingerprint() == ds2.fingerprint() == rep.fingerprint


def test_known_zones_equal_zone_names() -> None:
    rng = np.random.default_rng(0)
    every = sorted(zone_names())
    sample = [every[i] for i in rng.integers(0, len(every), 40)]
    odd = ["UTC", "localtime", "Factory", "posixrules", "Europe/Nowhere", "", "utc",
           "right/UTC", "posix/Europe/Berlin", "Europe/../UTC", "/UTC", "Etc/UTC", "GMT"]
    for names in (sample, odd, sample + odd, [], ["UTC"], ["Europe/Berlin", "Mars/Base"]):
        assert known_zones(names) == set(names) & zone_names()


def test_known_zones_without_tzdata(monkeypatch: pytest.MonkeyPatch) -> None:
    # no tzdata package: every name is answered by the directory listing (zone_names)
    from pushrl.data import timezones

    monkeypatch.setattr(timezones, "_tzdata_zones", lambda: frozenset())
    names = ["UTC", "Europe/Berlin", "localtime", "Mars/Base"]
    assert timezones.known_zones(names) == set(names) & zone_names()
    monkeypatch.setattr(timezones, "_tzdata_zones", lambda: frozenset({"Mars/Base"}))
    assert "Mars/Base" in timezones.known_zones(["Mars/Base"])  # the quick answer is used
