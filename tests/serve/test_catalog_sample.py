"""`--catalog` on a large log reads the items table and a part of the users, never the whole log:
user-part files (evenly spaced) or a seeded user sample; exact over the rows it reads."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pushrl.data.features import FeatureSpec
from pushrl.data.io import Dataset, table_files
from pushrl.data.sample import sample_user_ids
from pushrl.data.synth import SynthConfig, synthesize
from pushrl.data.validate import load_dataset
from pushrl.serve.history import catalog_dataset, popularity


@pytest.fixture(scope="module")
def parts_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cat_parts")
    synthesize(d, SynthConfig(users=90, days=5, seed=4, items=24), part_users=30)
    return d


def _users_only(ds: Dataset, users: set[str]) -> Dataset:
    def keep(df: pd.DataFrame) -> pd.DataFrame:
        return df[df["user_id"].astype(str).isin(users).to_numpy()].reset_index(drop=True)
    return Dataset(keep(ds.users), ds.items, keep(ds.activity), keep(ds.pushes), path=ds.path)


def test_parts_layout_read_by_columns_equals_the_whole_log(parts_log: Path) -> None:
    lean = catalog_dataset(parts_log)
    full, _ = load_dataset(parts_log, quarantine=False)
    assert "catalog_sample" not in lean.meta
    assert FeatureSpec.fit(lean) == FeatureSpec.fit(full)
    assert popularity(lean) == popularity(full)


def test_large_parts_log_reads_evenly_spaced_parts(parts_log: Path) -> None:
    lean = catalog_dataset(parts_log, max_users=40)  # 90 users in 3 parts: parts 0 and 2
    sm = lean.meta["catalog_sample"]
    assert sm == {"method": "user parts [0, 2] of 3", "of_users": 90, "users": 60}
    files = table_files(parts_log, "users")
    want = set(pd.concat([pd.read_parquet(files[0]), pd.read_parquet(files[2])])["user_id"]
               .astype(str))
    assert set(lean.users["user_id"].astype(str)) == want
    full, _ = load_dataset(parts_log, quarantine=False)
    sub = _users_only(full, want)
    assert FeatureSpec.fit(lean) == FeatureSpec.fit(sub)
    assert popularity(lean) == popularity(sub)
    assert list(lean.items["item_id"]) == list(full.items["item_id"])  # every item


def test_large_single_file_log_reads_a_seeded_user_sample(tiny_synth: Path) -> None:
    lean = catalog_dataset(tiny_synth, max_users=50)
    full, _ = load_dataset(tiny_synth, quarantine=False)
    want = set(sample_user_ids(full.users["user_id"].astype(str).to_numpy(), 50, 0))
    assert set(lean.users["user_id"].astype(str)) == want
    assert lean.meta["catalog_sample"]["users"] == 50
    sub = _users_only(full, want)
    assert FeatureSpec.fit(lean) == FeatureSpec.fit(sub)
    assert popularity(lean) == popularity(sub)
