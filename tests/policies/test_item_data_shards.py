"""Bandit rounds by user shards == the whole log's rounds (memory bounded by a shard)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pushrl.data.features import FeatureSpec, ItemCatalog
from pushrl.data.shards import plan
from pushrl.data.synth import SynthConfig, synthesize
from pushrl.data.validate import load_dataset
from pushrl.policies.item_data import (
    BanditRounds,
    ContextEncoder,
    build_rounds,
    fit_sharded,
    iter_sharded_rounds,
)


@pytest.fixture(scope="module")
def parts_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("parts")
    synthesize(d, SynthConfig(users=90, days=5, seed=4, items=24), part_users=40)
    return d


@pytest.mark.parametrize("layout", ["parts", "hash"])
def test_sharded_rounds_equal_whole(parts_log: Path, tiny_synth: Path, layout: str) -> None:
    d = parts_log if layout == "parts" else tiny_synth
    p = plan(d, shard_users=50)
    assert p.layout == layout and p.n_shards == 3
    ds, _ = load_dataset(d, quarantine=False)
    whole = build_rounds(ds)
    log = fit_sharded(p)
    spec = FeatureSpec.fit(ds)
    assert log.encoder == ContextEncoder.fit(ds, spec, ItemCatalog(ds.items, spec))
    assert log.weights == whole.weights
    chunks = list(iter_sharded_rounds(log, chunk_rounds=64))
    assert len(chunks) > 3  # streamed: several chunks per shard
    got = _sorted(np.concatenate([_table(r) for r in chunks]))
    np.testing.assert_array_equal(got, _sorted(_table(whole)))


def _table(r: BanditRounds) -> np.ndarray:
    """Each round as one row: shared context, candidate features, action, reward, pscore."""
    n = r.n_rounds
    return np.column_stack([r.context.shared.astype(np.float64),
                            r.context.candidate_features.reshape(n, -1).astype(np.float64),
                            r.action, r.reward, r.pscore])


def _sorted(t: np.ndarray) -> np.ndarray:
    """Rows in lexicographic order: the same multiset of rounds whatever their order."""
    return t[np.lexsort(t.T[::-1])]


def test_train_vw_by_shards(tiny_synth: Path) -> None:
    from pushrl.policies.vw import VWConfig
    from pushrl.train.vw_train import train_vw

    whole = train_vw(tiny_synth, VWConfig(seed=0))
    sharded = train_vw(tiny_synth, VWConfig(seed=0), shard_users=50, stream=True)
    assert sharded.card["data"]["shards"]["n"] == 3
    assert "shards" not in whole.card["data"]
    assert sharded.metrics["train/rounds"] == whole.metrics["train/rounds"]
    # the whole-log path fingerprints while VW learns: the card still has the log's own
    from pushrl.data.validate import load_dataset

    fp = load_dataset(tiny_synth, quarantine=False)[1].fingerprint
    assert fp.startswith("fp2-") and whole.card["data"]["fingerprint"] == fp
    assert sharded.card["data"]["fingerprint"] == fp
    for res in (whole, sharded):  # CPU of pushrl's process and of VW's driver child, apart
        m = res.metrics
        assert 0 < m["train/cpu_seconds_pushrl"] and 0 < m["train/cpu_seconds_vw"]


def test_sharded_rounds_of_a_split_equal_the_whole_part(parts_log: Path) -> None:
    """Training on a scenario's ``train`` part by shards sees exactly the rounds of that part
    loaded whole (each shard is cut to the part; no held-out user leaks into training)."""
    from pushrl.data.split import UserSplit

    part = UserSplit(holdout_frac=0.2, seed=0, part="train")
    ds, _ = load_dataset(parts_log, quarantine=False, split=part)
    whole = build_rounds(ds)
    log = fit_sharded(plan(parts_log, shard_users=50), split=part)
    assert log.n_users == len(ds.users) < 90
    got = _sorted(np.concatenate([_table(r) for r in iter_sharded_rounds(log)]))
    np.testing.assert_array_equal(got, _sorted(_table(whole)))
