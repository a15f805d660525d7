"""The replay's set-up shortcuts equal what they replace: the item categories of a
categorical id column, the sorted set of hour buckets, the purchase mask."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pushrl.data.features import FeatureSpec, _bucket_set, _column_categories, _id_array


def _spec() -> FeatureSpec:
    return FeatureSpec(("bags", "shoes"), {"i1": 0, "i2": 1, "i3": 0}, (1 / 168,) * 168,
                       (0.5, 0.5))


@pytest.mark.parametrize("n", [7, 3000])  # both item_categories paths (<= 1024 and above)
@pytest.mark.parametrize("kind", ["category", "object", "str", "int-category"])
def test_column_categories_equal_the_object_path(n: int, kind: str) -> None:
    rng = np.random.default_rng(n)
    ids = np.array(["i1", "i2", "i3", "unknown", None], dtype=object)[rng.integers(0, 5, n)]
    if kind == "int-category":
        s = pd.Series(pd.Categorical(rng.integers(0, 4, n)))
        spec = FeatureSpec(("a",), {"1": 0, "3": 0}, (1 / 168,) * 168, (1.0,))
    else:
        s = pd.Series(ids, dtype="category" if kind == "category" else kind)
        spec = _spec()
    got = _column_categories(spec, s)
    np.testing.assert_array_equal(got, spec.item_categories(_id_array(s)))
    assert got.dtype == np.int64


def test_column_categories_of_an_empty_categorical() -> None:
    s = pd.Series(pd.Categorical([], categories=[]))
    assert _column_categories(_spec(), s).shape == (0,)


@pytest.mark.parametrize("seed", [0, 1])
def test_bucket_set_is_np_unique(seed: int) -> None:
    rng = np.random.default_rng(seed)
    b = rng.integers(497_000, 497_700, 5000).astype(np.int64)
    for x in (b, b[:1], b[:0], np.sort(b)):
        got = _bucket_set(x)
        np.testing.assert_array_equal(got, np.unique(x))
        assert got.dtype == np.unique(x).dtype
