"""Seeded user samples: stable, nested, read only the sampled rows, featurised by the one
pipeline exactly as in the whole log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pushrl.data.features import FeatureSpec, replay
from pushrl.data.sample import load_user_sample, sample_user_ids
from pushrl.data.validate import load_dataset


def test_sample_is_seeded_nested_and_order_free() -> None:
    ids = np.array([f"u{j:05d}" for j in range(1000)])
    a = sample_user_ids(ids, 100, seed=1)
    assert len(set(a)) == 100
    assert (sample_user_ids(ids[::-1], 100, seed=1) == a).all()  # not row order
    assert set(sample_user_ids(ids, 40, seed=1)) <= set(a)        # nested
    assert len(set(sample_user_ids(ids, 100, seed=2)) & set(a)) < 40  # seed matters
    # roughly uniform over the id range (a hash, not a prefix): each half has 50 +- 4 sd
    first_half = int((a < "u00500").sum())
    assert abs(first_half - 50) <= 20


def test_full_sample_equals_whole_load(tiny_synth: Path) -> None:
    ds, rep = load_dataset(tiny_synth, quarantine=False)
    sds, srep, info = load_user_sample(tiny_synth, 10**6)
    assert info["users"] == len(ds.users) == info["of_users"]
    assert sds.fingerprint() == ds.fingerprint()
    assert srep.counts["pushes"].accepted == rep.counts["pushes"].accepted


def test_sample_features_equal_whole_log_features(tiny_synth: Path) -> None:
    ds, _ = load_dataset(tiny_synth, quarantine=False)
    sds, srep, info = load_user_sample(tiny_synth, 30, seed=5)
    assert info["users"] == 30 and srep.summary["sample"]["of_users"] == len(ds.users)
    ids = set(sds.users["user_id"].astype(str))
    keep = ds.pushes["user_id"].astype(str).isin(ids).to_numpy()
    assert int(keep.sum()) == len(sds.pushes)
    act_keep = ds.activity["user_id"].astype(str).isin(ids).to_numpy()
    assert int(act_keep.sum()) == len(sds.activity)
    spec = FeatureSpec.fit(ds)
    whole = replay(ds, spec)
    part = replay(sds, spec)
    # the same rows in the same (time, file) order: a user's features are their own
    np.testing.assert_array_equal(part.features, whole.features[keep])
    np.testing.assert_array_equal(part.affinity, whole.affinity[keep])
    pd.testing.assert_series_equal(
        sds.pushes["decision_id"].reset_index(drop=True),
        ds.pushes.loc[keep, "decision_id"].reset_index(drop=True))
