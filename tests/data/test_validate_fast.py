"""`validate.isin` answers exactly as pandas' `Series.isin`; `load_dataset(summary=False)`
accepts and rejects the same rows (it only skips the report's summary)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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
             ("u1", "u3", "nobody"), pd.Index([], dtype=object)]
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
