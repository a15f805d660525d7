"""pushlog v1.1: the optional ``item_updates`` and ``triggers`` tables and
``pushes.trigger_id``: v1 logs keep their fingerprint, good rows load, bad rows are
quarantined with a reason, counts reconcile, streamed == whole, splits keep users' rows."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.data.contract import OPTIONAL_TABLES, PUSHLOG_VERSION
from pushrl.data.io import read_raw, write_table
from pushrl.data.split import UserSplit
from pushrl.data.fingerprint import fingerprint_tables
from pushrl.data.validate import REJECTED_DIR, TS_REASON, load_dataset, validate_stream

ROOT = Path(__file__).resolve().parents[2]


def _with_triggers(src: Path, dst: Path) -> Path:
    """``src`` plus 6 trigger rows (3 sent, each a pushes row with its trigger_id), 4 item
    updates and initial item prices."""
    shutil.copytree(src, dst)
    p = read_raw(dst, "pushes")
    items = read_raw(dst, "items")
    sent = np.flatnonzero(p["sent"].to_numpy(bool))[:3]
    p["trigger_id"] = pd.Series([None] * len(p), dtype=object)
    tids = [f"t{k}" for k in range(6)]
    for k, r in enumerate(sent):
        p.loc[r, "trigger_id"] = tids[k]
    write_table(p, dst / "pushes.parquet")
    items["price"] = np.linspace(5, 50, len(items))
    items["in_stock"] = True
    write_table(items, dst / "items.parquet")
    ts = pd.to_datetime(p["ts"], utc=True)
    ev = [ts.iloc[r] - pd.Timedelta(hours=1) for r in sent]
    base = ts.iloc[0]
    u = p["user_id"].astype(str)
    it = p["item_id"].astype(object)
    rows = [dict(trigger_id=tids[k], user_id=u.iloc[r], kind="cart", item_id=it.iloc[r],
                 event_ts=ev[k], decided_ts=ev[k], delay_h=1, pscore=0.25, status="sent",
                 decision_id=p["decision_id"].iloc[r]) for k, r in enumerate(sent)]
    first_item = str(items["item_id"].iloc[0])
    rows += [
        dict(trigger_id="t3", user_id=u.iloc[0], kind="browse", item_id=first_item,
             event_ts=base, decided_ts=base, delay_h=None, pscore=0.1, status="dropped",
             decision_id=None),
        dict(trigger_id="t4", user_id=u.iloc[1], kind="price_drop", item_id=first_item,
             event_ts=base, decided_ts=base, delay_h=4, pscore=0.2, status="cancelled",
             decision_id=None),
        dict(trigger_id="t5", user_id=u.iloc[2], kind="winback", item_id=None,
             event_ts=base, decided_ts=base, delay_h=24, pscore=0.5, status="expired",
             decision_id=None),
    ]
    t = pd.DataFrame(rows)
    t["delay_h"] = t["delay_h"].astype("Int64")
    t["decision_id"] = t["decision_id"].astype("Int64")
    write_table(t, dst / "triggers.parquet")
    upd = pd.DataFrame({"item_id": [first_item] * 3 + [str(items["item_id"].iloc[1])],
                        "ts": [base + pd.Timedelta(hours=h) for h in (1, 2, 3, 4)],
                        "price": [4.0, None, 3.0, None],
                        "in_stock": pd.array([None, False, True, True], dtype="boolean")})
    write_table(upd, dst / "item_updates.parquet")
    return dst


def test_version_and_v1_fingerprint_unchanged(tiny_synth: Path, tmp_path: Path) -> None:
    assert PUSHLOG_VERSION == "pushlog/v1.1"
    # the shipped v1 log still has the fingerprint its fitted simulator recorded
    d = tmp_path / "synth"
    shutil.copytree(ROOT / "simulator_data/synth", d)
    ds, rep = load_dataset(d)
    sim = json.loads((ROOT / "simulator_data/fitted/synth/sim.json").read_text())
    assert rep.fingerprint == sim["meta"]["fingerprint"]  # refit with the fp2 format
    assert ds.legacy_fingerprint() == "fcf279ac70d2711e"  # what its pre-fp2 card recorded
    # fp2 of a v1 log: the (empty) v1.1 tables do not enter it
    assert rep.fingerprint == fingerprint_tables(
        {n: ds.table(n) for n in ("users", "items", "activity", "pushes")})
    assert len(ds.triggers) == 0 and len(ds.item_updates) == 0
    assert set(rep.counts) == {"users", "items", "activity", "pushes"}
    assert "triggers" not in rep.summary


def test_trigger_tables_load_and_count(tiny_synth: Path, tmp_path: Path) -> None:
    d = _with_triggers(tiny_synth, tmp_path / "ds")
    ds, rep = load_dataset(d)
    assert rep.n_rejected == 0 and rep.reconciles()
    assert rep.counts["triggers"].accepted == 6 and rep.counts["item_updates"].accepted == 4
    assert rep.summary["triggers"] == {
        "item_updates": 4, "decisions": 6,
        "by_kind": {"cart": 3, "browse": 1, "price_drop": 1, "winback": 1},
        "by_status": {"sent": 3, "dropped": 1, "cancelled": 1, "expired": 1},
        "pushes_with_trigger": 3}
    assert ds.items["price"].dtype == np.float64 and str(ds.items["in_stock"].dtype) == "boolean"
    assert str(ds.triggers["delay_h"].dtype) == "Int64"
    _, base = load_dataset(tiny_synth, quarantine=False)
    assert rep.fingerprint != base.fingerprint


Mut = Callable[[pd.DataFrame], pd.DataFrame]


def _row(i: int, **kv: object) -> Mut:
    def f(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        for k, v in kv.items():
            if k in ("item_id", "user_id", "trigger_id", "kind", "status"):
                df[k] = df[k].astype(object)
            if k == "decision_id":
                df[k] = df[k].astype(object)
            df.loc[i, k] = v
        return df
    return f


@pytest.mark.parametrize(("table", "mutate", "reason"), [
    ("triggers", _row(3, trigger_id="t0"), "duplicate trigger_id"),
    ("triggers", _row(3, user_id="nobody"), "unknown user_id"),
    ("triggers", _row(3, item_id="nothing"), "unknown item_id"),
    ("triggers", _row(3, kind="wishlist"), "kind not in cart/browse"),
    ("triggers", _row(3, item_id=None), "item_id missing (only winback has none)"),
    ("triggers", _row(4, status="pending"), "status not in open/sent"),
    ("triggers", _row(4, event_ts=pd.Timestamp("1990-01-01", tz="UTC")), TS_REASON),
    ("triggers", _row(4, decided_ts=pd.Timestamp("2001-01-01", tz="UTC")),
     "decided_ts before event_ts"),
    ("triggers", _row(4, pscore=0.0), r"pscore outside (0, 1]"),
    ("triggers", _row(4, delay_h=-1), "negative delay_h"),
    ("triggers", _row(3, delay_h=2), "dropped with a delay_h"),
    ("triggers", _row(4, delay_h=None), "delay_h missing (null = drop)"),
    ("triggers", _row(0, decision_id=None), "sent without decision_id"),
    ("triggers", _row(4, decision_id=123456789), "decision_id on a trigger that was not sent"),
    ("triggers", _row(0, decision_id=-5), "decision_id not in pushes"),
    ("item_updates", _row(0, item_id="nothing"), "unknown item_id"),
    ("item_updates", _row(1, in_stock=None), "update with neither price nor in_stock"),
    ("item_updates", _row(0, price=-1.0), "price negative or not finite"),
    ("item_updates", _row(0, ts=pd.Timestamp("1990-01-01", tz="UTC")), TS_REASON),
    ("items", _row(0, price=float("inf")), "price negative or not finite"),
])
def test_bad_rows_are_quarantined_with_a_reason(tiny_synth: Path, tmp_path: Path, table: str,
                                                 mutate: Mut, reason: str) -> None:
    d = _with_triggers(tiny_synth, tmp_path / "ds")
    raw = read_raw(d, table)
    write_table(mutate(raw), d / f"{table}.parquet")
    _, rep = load_dataset(d)
    assert rep.reconciles()
    c = rep.counts[table]
    assert c.rejected == 1 and len(c.reasons) == 1, c.reasons
    assert next(iter(c.reasons)).startswith(reason), c.reasons
    rej = pd.read_parquet(d / REJECTED_DIR / f"{table}.parquet")
    assert list(rej["reason"]) == list(c.reasons)


def test_push_trigger_mismatch_is_rejected(tiny_synth: Path, tmp_path: Path) -> None:
    d = _with_triggers(tiny_synth, tmp_path / "ds")
    p = read_raw(d, "pushes")
    i = int(np.flatnonzero(p["trigger_id"].to_numpy() == "t0")[0])
    p.loc[i, "trigger_id"] = "t1"
    write_table(p, d / "pushes.parquet")
    _, rep = load_dataset(d)
    assert rep.counts["triggers"].reasons == {"decision_id's push has another trigger_id": 1}


def test_streamed_validation_matches_whole(tiny_synth: Path, tmp_path: Path) -> None:
    d = _with_triggers(tiny_synth, tmp_path / "ds")
    for table, mutate in (("triggers", _row(0, decision_id=-5)),
                          ("triggers", _row(3, kind="wishlist")),
                          ("item_updates", _row(1, in_stock=None))):
        write_table(mutate(read_raw(d, table)), d / f"{table}.parquet")
    _, whole = load_dataset(d, quarantine=False)
    s = validate_stream(d, chunk_rows=300, quarantine=False)
    assert {k: vars(v) for k, v in s.counts.items()} == {
        k: vars(v) for k, v in whole.counts.items()}
    assert set(OPTIONAL_TABLES) <= set(s.counts)
    assert s.counts["triggers"].rejected == 2 and s.counts["item_updates"].rejected == 1
    # one fingerprint on both paths, and the v1.1 tables are part of it
    assert s.fingerprint == whole.fingerprint
    ds_whole, _ = load_dataset(d, quarantine=False)
    assert whole.fingerprint != fingerprint_tables(
        {n: ds_whole.table(n) for n in ("users", "items", "activity", "pushes")})


def test_split_keeps_each_users_triggers(tiny_synth: Path, tmp_path: Path) -> None:
    d = _with_triggers(tiny_synth, tmp_path / "ds")
    ds, _ = load_dataset(d, quarantine=False)
    parts = [UserSplit(0.5, 1, part).apply(ds) for part in ("train", "heldout")]
    assert sum(len(p.triggers) for p in parts) == len(ds.triggers)
    for p in parts:
        assert p.triggers["user_id"].isin(set(p.users["user_id"])).all()
        assert len(p.item_updates) == len(ds.item_updates)
