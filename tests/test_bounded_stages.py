"""`pushrl evaluate` and `pushrl sim validate` on a log too large to load: a seeded user sample,
stated in their output, with the sample's lineage (the whole log's fingerprint) for the gate.
A small log is forced onto that path by lowering the size threshold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pushrl.data.io import read_raw, write_table
from pushrl.data.validate import FINGERPRINT_CACHE, load_dataset, log_fingerprint
from tests.cli_runner import run_pushrl


@pytest.fixture()
def big(tiny_synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the 120-user log that every stage treats as larger than memory."""
    import pushrl.data.sample as sample
    import pushrl.data.validate as validate

    d = tmp_path / "log"
    shutil.copytree(tiny_synth, d)
    monkeypatch.setattr(validate, "STREAM_ROWS", 100)
    monkeypatch.setattr(sample, "SAMPLE_USERS", 70)
    return d


def test_log_fingerprint_is_cached_until_a_table_changes(big: Path) -> None:
    _, rep = load_dataset(big, quarantine=False)
    assert log_fingerprint(big) == rep.fingerprint
    cache = json.loads((big / FINGERPRINT_CACHE).read_text())
    assert cache["fingerprint"] == rep.fingerprint
    p = read_raw(big, "pushes")
    assert p is not None
    write_table(p.iloc[1:], big / "pushes.parquet")
    _, rep2 = load_dataset(big, quarantine=False)
    assert log_fingerprint(big) == rep2.fingerprint != rep.fingerprint


def test_evaluate_samples_a_large_log_and_keeps_the_held_out_rule(big: Path,
                                                                  tmp_path: Path) -> None:
    from pushrl.policies.vw import VWConfig
    from pushrl.train.vw_train import train_vw

    train_vw(big, VWConfig(seed=0), out=tmp_path / "policies" / "vw", stream=False)
    _, whole = load_dataset(big, quarantine=False)
    r = run_pushrl("evaluate", "--data", str(big), "--policy", str(tmp_path / "policies/vw"),
                   "--estimators", "dr", "--n-bootstrap", "50", "--no-record",
                   "--out", str(tmp_path / "rep"), "--json")
    assert r.stdout, r.stderr
    d = json.loads(r.stdout)
    sp = d["data"]["split"]
    assert sp["by"] == "sample" and sp["users"] == 70 and sp["of_users"] == 120
    assert sp["of"] == whole.fingerprint  # lineage: a part of the log the policy saw
    assert any("seeded sample of 70 of 120 users" in n for n in d["notes"])
    # trained on the whole log, evaluated on a sample of it: in-sample, blocked
    assert r.returncode == 1 and "held_out_data" in d["gate"]["failed_rules"]
    # --sample-users 0 loads every user
    r0 = run_pushrl("evaluate", "--data", str(big), "--policy", str(tmp_path / "policies/vw"),
                    "--estimators", "dr", "--n-bootstrap", "50", "--no-record",
                    "--sample-users", "0", "--out", str(tmp_path / "rep0"), "--json")
    d0 = json.loads(r0.stdout)
    assert d0["data"]["split"] is None and d0["data"]["fingerprint"] == whole.fingerprint


def test_sim_validate_uses_the_fit_sample_on_a_large_log(big: Path, tmp_path: Path) -> None:
    fit = run_pushrl("sim", "fit", str(big), "--out", str(tmp_path / "sim"),
                     "--sample-users", "80", "--sample-seed", "2", "--json")
    assert fit.returncode == 0, fit.stderr
    meta = json.loads(fit.stdout)
    assert meta["sample"]["users"] == 80 and meta["split"]["of"] == log_fingerprint(big)
    r = run_pushrl("sim", "validate", str(tmp_path / "sim"), str(big), "--json")
    rep = json.loads(r.stdout)
    assert rep["sample"]["users"] == 80 and rep["sample"]["seed"] == 2
    assert rep["same_data_as_fit"] is True and rep["replay"]["reps"] > 0
    text = run_pushrl("sim", "validate", str(tmp_path / "sim"), str(big),
                      "--sample-users", "50")
    said = " ".join(text.stdout.split())  # rich wraps long lines
    assert "on a seeded sample of 50 of 120 users (seed 2" in said
    assert "same data as the fit: False" in said


def test_sample_of_a_split_part_records_the_whole_log(big: Path) -> None:
    from pushrl.data.sample import load_user_sample
    from pushrl.data.split import UserSplit, may_share_rows

    part = UserSplit(0.3, 1, "heldout")
    ds, rep, _ = load_user_sample(big, 90, split=part)
    train, whole = load_dataset(big, quarantine=False, split=part.with_part("train"))
    assert ds.split is not None and ds.split["of"] == log_fingerprint(big)
    assert ds.split["part"] == "heldout" and ds.split["sample"]["users"] == 90
    assert rep.fingerprint == ds.fingerprint()
    assert set(ds.users["user_id"]).isdisjoint(set(train.users["user_id"]))
    trained = {"fingerprint": whole.fingerprint, "split": whole.summary["split"]}
    assert not may_share_rows(trained, {"fingerprint": rep.fingerprint, "split": ds.split})
    same_part = {"fingerprint": None, "split": {**whole.summary["split"], "part": "heldout"}}
    assert may_share_rows(same_part, {"fingerprint": rep.fingerprint, "split": ds.split})
