"""Bounded-memory data path: user-part synth, streamed validation == whole validation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.data.io import read_raw, read_raw_users, table_files, write_table
from pushrl.data.synth import SynthConfig, synthesize
from pushrl.data.validate import REJECTED_DIR, SeenIds, load_dataset, validate_stream


def _spread_bad_rows(d: Path) -> None:
    """Bad rows of several kinds, spread over the whole log (hence over every chunk)."""
    p = read_raw(d, "pushes")
    assert p is not None
    n = len(p)
    rng = np.random.default_rng(3)
    sent = np.flatnonzero(p["sent"].to_numpy(bool))
    unsent = np.flatnonzero(~p["sent"].to_numpy(bool))
    p["user_id"] = p["user_id"].astype(object)
    p.loc[rng.choice(sent, 7, replace=False), "pscore"] = 1.5
    p.loc[rng.choice(unsent, 5, replace=False), "opened"] = True
    p.loc[rng.choice(n, 6, replace=False), "user_id"] = "nobody"
    # duplicates of ids far earlier in the file (other chunks) and next to each other
    src = rng.choice(n // 2, 8, replace=False)
    dst = rng.choice(np.arange(n // 2, n), 8, replace=False)
    p.loc[dst, "decision_id"] = p.loc[src, "decision_id"].to_numpy()
    p.loc[[11, 12], "decision_id"] = p.loc[10, "decision_id"]
    # two part files, as a user-part log has
    (d / "pushes.parquet").unlink()
    write_table(p.iloc[: n // 3], d / "pushes.parquet" / "part-00000.parquet")
    write_table(p.iloc[n // 3:], d / "pushes.parquet" / "part-00001.parquet")
    a = read_raw(d, "activity")
    assert a is not None
    a["event"] = a["event"].astype(object)
    a.loc[rng.choice(len(a), 9, replace=False), "event"] = "dance"
    write_table(a, d / "activity.parquet")


def _rejected(d: Path, name: str) -> pd.DataFrame:
    df = read_raw(d / REJECTED_DIR, name)
    assert df is not None
    key = ["decision_id", "reason"] if name == "pushes" else ["user_id", "ts", "reason"]
    return (df.astype({"user_id": str}).sort_values(key).reset_index(drop=True)
            [[c for c in df.columns if c not in ("item_id", "event")]])


@pytest.mark.parametrize("chunk_rows", [997, 20_000])
def test_streamed_validation_equals_whole(tiny_synth: Path, tmp_path: Path,
                                          chunk_rows: int) -> None:
    whole = tmp_path / "whole"
    shutil.copytree(tiny_synth, whole)
    _spread_bad_rows(whole)
    streamed = tmp_path / "streamed"
    shutil.copytree(whole, streamed)
    _, rep_w = load_dataset(whole)
    rep_s = validate_stream(streamed, chunk_rows=chunk_rows)
    assert rep_w.n_rejected > 30
    assert rep_s.reconciles()
    assert rep_s.fingerprint == rep_w.fingerprint  # one definition, any row order
    assert {k: vars(v) for k, v in rep_s.counts.items()} == {
        k: vars(v) for k, v in rep_w.counts.items()}
    sw, ss = dict(rep_w.summary), dict(rep_s.summary)
    ss.pop("streamed")
    rev_w = sw["outcomes"].pop("revenue_per_send")
    rev_s = ss["outcomes"].pop("revenue_per_send")
    assert rev_s == pytest.approx(rev_w, rel=1e-12)  # summation order only
    assert ss == sw
    for name in ("pushes", "activity"):
        pd.testing.assert_frame_equal(_rejected(streamed, name), _rejected(whole, name),
                                      check_dtype=False, check_categorical=False)


def test_seen_ids_runs_and_strings() -> None:
    s = SeenIds()
    assert not s.check_add(pd.Series([5, 6, 7, 9], dtype="int64")).any()
    assert s.n_runs == 2
    hit = s.check_add(pd.Series([8, 4, 7, 10, 9], dtype="int64"))
    assert hit.tolist() == [False, False, True, False, True]
    assert s.n_runs == 1 and (s.start[0], s.end[0]) == (4, 10)
    t = SeenIds()
    t.check_add(pd.Series(["a", "b"]))
    assert t.check_add(pd.Series(["b", "c"])).tolist() == [True, False]


def test_synth_user_parts(tmp_path: Path) -> None:
    d = tmp_path / "parts"
    res = synthesize(d, SynthConfig(users=120, days=4, seed=7, items=40), part_users=50)
    assert res["user_parts"] == 3
    assert len(table_files(d, "pushes")) == 3
    ds, rep = load_dataset(d)
    assert rep.n_rejected == 0
    assert ds.users["user_id"].is_unique and len(ds.users) == 120
    ids = np.sort(ds.pushes["decision_id"].to_numpy())
    assert (ids == np.arange(ids.size)).all()
    # part k holds the same users in every table
    for k in range(3):
        u = set(pd.read_parquet(table_files(d, "users")[k])["user_id"].astype(str))
        pu = set(pd.read_parquet(table_files(d, "pushes")[k])["user_id"].astype(str))
        assert pu <= u
    streamed = validate_stream(d, chunk_rows=5000)
    assert streamed.counts["pushes"].accepted == len(ds.pushes)
    assert streamed.summary["decisions"] == rep.summary["decisions"]
    # reading a user sample touches only their rows
    want = ds.users["user_id"].iloc[[3, 70, 119]].to_numpy()
    sel = read_raw_users(d, "pushes", want, chunk_rows=1000)
    assert sel is not None
    assert set(sel["user_id"].astype(str)) == set(want)
    assert len(sel) == int(ds.pushes["user_id"].isin(want).sum())


def test_cli_validate_streams_on_request(tiny_synth: Path, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    d = tmp_path / "ds"
    shutil.copytree(tiny_synth, d)
    r = subprocess.run([sys.executable, "-m", "pushrl", "data", "validate", str(d),
                        "--chunk-rows", "5000", "--json"], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["summary"]["streamed"] == {"chunk_rows": 5000}
    _, whole = load_dataset(d)
    assert out["tables"]["pushes"]["accepted"] == whole.counts["pushes"].accepted
