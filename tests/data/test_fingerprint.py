"""One fingerprint definition on every data path (whole, streamed, sharded, sampled), and
cards from before it (legacy format) still compared or refused with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.data.contract import TABLES
from pushrl.data.fingerprint import Fingerprint, is_legacy, same_data
from pushrl.data.sample import load_user_sample
from pushrl.data.shards import plan
from pushrl.data.split import UserSplit, may_share_rows
from pushrl.data.synth import SynthConfig, synthesize
from pushrl.data.validate import legacy_lineage, load_dataset, validate_stream
from pushrl.errors import DataError
from pushrl.policies.item_data import fit_sharded
from pushrl.train.vw_train import _rounds

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def parts_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fp_parts")
    synthesize(d, SynthConfig(users=90, days=5, seed=4, items=24), part_users=40)
    return d


def test_order_chunking_and_column_order_do_not_matter(tiny_synth: Path) -> None:
    ds, _ = load_dataset(tiny_synth, quarantine=False)
    fp = ds.fingerprint()
    assert fp.startswith("fp2-") and len(fp) == 20 and not is_legacy(fp)
    rng = np.random.default_rng(0)
    acc = Fingerprint()
    for name in TABLES:
        df = ds.table(name)
        df = df.iloc[rng.permutation(len(df))][list(df.columns)[::-1]]
        for piece in np.array_split(np.arange(len(df)), 7):
            acc.add(name, df.iloc[piece])
    assert acc.digest() == fp
    # one changed value, one dropped row, one duplicated row: another fingerprint
    p = ds.pushes
    for changed in (p.assign(pscore=p["pscore"].where(p.index != 5, 0.123)), p.iloc[1:],
                    pd.concat([p, p.iloc[:1]])):
        acc = Fingerprint()
        for name in TABLES:
            acc.add(name, changed if name == "pushes" else ds.table(name))
        assert acc.digest() != fp


@pytest.mark.parametrize("layout", ["parts", "hash"])
def test_streamed_sharded_and_whole_paths_agree(parts_log: Path, tiny_synth: Path,
                                                layout: str) -> None:
    d = parts_log if layout == "parts" else tiny_synth
    ds, rep = load_dataset(d, quarantine=False)
    assert validate_stream(d, chunk_rows=997, quarantine=False).fingerprint == rep.fingerprint
    p = plan(d, shard_users=50)
    assert p.layout == layout and p.n_shards > 1
    log = fit_sharded(p)
    assert log.fingerprint == log.of == rep.fingerprint
    # a sample of every user is the log itself
    _, srep, _ = load_user_sample(d, len(ds.users))
    assert srep.fingerprint == rep.fingerprint


@pytest.mark.parametrize("part", ["train", "heldout"])
def test_split_lineage_is_the_same_streamed_or_whole(parts_log: Path, part: str) -> None:
    """`train bandit`'s card `data` (fingerprint and split record, whose `of` is the whole
    log's) is the same whether the log is loaded whole or streamed by user shards."""
    split = UserSplit(holdout_frac=0.3, seed=1, part=part)
    _, whole = _rounds(parts_log, None, 4096, 50, False, split)
    assert whole["fingerprint"] is None  # a whole log's is computed while VW learns:
    whole.pop("_later")()
    _, streamed = _rounds(parts_log, None, 4096, 50, True, split)
    assert "shards" in streamed and "shards" not in whole
    assert streamed["fingerprint"] == whole["fingerprint"]
    assert streamed["split"] == whole["split"]
    _, rep = load_dataset(parts_log, quarantine=False)
    assert whole["split"]["of"] == rep.fingerprint != whole["fingerprint"]
    # the gate's rule: the other part of the same split is held out, the same part is not
    other = {"fingerprint": None, "split": {**whole["split"], "part": "x"}}
    assert not may_share_rows(streamed, other)
    assert may_share_rows(streamed, whole)
    assert may_share_rows(streamed, {"fingerprint": rep.fingerprint, "split": None})


def test_legacy_cards_compare_when_loaded_whole_and_are_refused_otherwise() -> None:
    card = json.loads((ROOT / "policies" / "vw-synth" / "v1" / "card.json").read_text())
    old = card["data"]["fingerprint"]
    assert is_legacy(old)
    ds, rep = load_dataset(ROOT / "simulator_data" / "synth", quarantine=False)
    seen = {"fingerprint": old, "split": None}
    evaluated = {"fingerprint": rep.fingerprint, "split": None}
    assert old != rep.fingerprint
    # the legacy definition still reproduces the card's fingerprint of these logs
    assert may_share_rows(seen, {**evaluated, "legacy": legacy_lineage(ds)})
    assert same_data(old, rep.fingerprint, ds.legacy_fingerprint)
    assert not same_data(old, rep.fingerprint, None)
    with pytest.raises(DataError, match=r"format before fp2.*retrain or re-fit"):
        may_share_rows(seen, evaluated)
    # a part of a split: the whole log's legacy fingerprint is re-read for `of`
    part, _ = load_dataset(ROOT / "simulator_data" / "synth", quarantine=False,
                           split=UserSplit(0.2, 0, "heldout"))
    lin = legacy_lineage(part)
    assert lin["of"] == old and lin["fingerprint"] != old
    assert may_share_rows(seen, {"fingerprint": part.fingerprint(), "split": part.split,
                                 "legacy": lin})
