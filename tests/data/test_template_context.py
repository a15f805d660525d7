"""The lean template context writes exactly the columns of the one item-context builder."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.data.features import N_FEATURES, TEMPLATE_RECENCY_NAMES, F, encode_template_recency
from pushrl.data.item_context import (
    ACTIVITY_BIN_NAMES,
    CHOSEN_ITEM_PREFIX,
    activity_bins,
    build_item_context,
    build_template_context,
)


@pytest.mark.parametrize("d_t", [0, 2])
def test_template_context_equals_item_context_builder(d_t: int) -> None:
    rng = np.random.default_rng(3)
    n, n_t, d_item = 50, 4, 5
    raw = np.abs(rng.normal(1, 2, (n, N_FEATURES))).astype(np.float32)
    # activity exactly on bin edges (exp(edge) - 1) must land in the same bin
    raw[:5, F["activity_7d"]] = np.expm1(np.array([1.0, 2.0, 2.5, 3.0, 4.5]))
    item = rng.normal(size=(n, d_item)).astype(np.float32)
    names = tuple(f"f{j}" for j in range(d_item))
    tf = rng.normal(size=(n_t, d_t)).astype(np.float32)
    tnames = tuple(f"t{j}" for j in range(d_t))
    hours = rng.choice(np.array([1.0, 23.0, 24.0, 100.0, 336.0]), (n, n_t)).astype(np.float32)
    got = build_template_context(raw, item, names, tf, tnames, hours)
    rec = encode_template_recency(hours)
    ref = build_item_context(
        raw, tf, np.full(n_t, -1, np.int64), tnames,
        logged=np.concatenate([activity_bins(raw), item], axis=1),
        logged_names=(*ACTIVITY_BIN_NAMES, *(CHOSEN_ITEM_PREFIX + x for x in names)),
        cand_values={nm: rec[:, :, j] for j, nm in enumerate(TEMPLATE_RECENCY_NAMES)},
        cand_names=TEMPLATE_RECENCY_NAMES)
    np.testing.assert_array_equal(got.shared, ref.shared)
    np.testing.assert_array_equal(got.candidate_features, ref.candidate_features)
    np.testing.assert_array_equal(got.candidates, ref.candidates)
    np.testing.assert_array_equal(got.mask, ref.mask)
    assert got.shared_names == ref.shared_names
    assert got.candidate_feature_names == ref.candidate_feature_names
    assert got.shared.dtype == ref.shared.dtype == np.float32
