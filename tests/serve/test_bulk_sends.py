"""A pull's sends written as one bulk record (serve/bulk_sends.py) end as the same log as
written row by row: the same tables, the same ``pushrl logs export`` files byte for byte and
the same tracker and feature state after a restart; also when the server is killed (-9)
after the record's commit and before (or halfway through) its expansion. A damaged record
refuses the start in one line; a retried pull is answered once."""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from pushrl.errors import DataError
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.triggers import TriggerConfig
from pushrl.serve import bulk_sends
from pushrl.serve.app import create_app
from pushrl.serve.export import export
from pushrl.serve.schemas import Event, FeedbackIn, TriggersDueIn
from pushrl.serve.server import Server
from pushrl.serve.store import LOG_FILE, StateError
from pushrl.serve.trigger_requests import GC_PAUSE
from pushrl.serve.triggers import SNAPSHOT_FILE
from pushrl.units import HOUR
from tests.serve.conftest import T0, doubles, make_cfg

ROOT = Path(__file__).resolve().parents[2]
N_USERS, N_ITEMS, HOURS = 120, 12, 30
ZONES = ("UTC", "America/New_York", "Asia/Tokyo", "Europe/Berlin")
TABLES = ("ops", "activity", "decisions", "feedback", "triggers", "trigger_pulls",
          "item_updates", "users", "items")


def _server(tmp: Path) -> Server:
    srv = Server(make_cfg(tmp, triggers=TriggerConfig.default(), guardrails=Guardrails()))
    srv.engine._id_prefix = "fixed"  # decision ids comparable across the two servers
    return srv


def _stream(srv: Server, seed: int, stop_before_last_pull: bool = False) -> None:
    """A fixed-seed world: users in 4 zones, carts / views / purchases each hour, a pull of
    every user every 3 hours (request ids, both answer formats), feedback on some sends."""
    rng = np.random.default_rng(seed)
    for j in range(N_ITEMS):
        srv.log.write(srv.state.put_item(f"i{j}", "ab"[j % 2], {"price": 10.0 + j})[1])
    start = dt.datetime.fromtimestamp(T0, dt.UTC)
    stmts = []
    for i in range(N_USERS):
        stmts += srv.put_user(f"u{i}", ZONES[i % len(ZONES)], {}, start)[1]
    srv.log.write(stmts)
    users = [f"u{i}" for i in range(N_USERS)]
    pulls = list(range(2, HOURS, 3))
    for h in range(HOURS):
        t = T0 + h * HOUR
        who = rng.choice(N_USERS, size=N_USERS // 3, replace=False)
        kinds = rng.choice(["cart", "view", "view", "purchase"], size=who.size)
        items = rng.integers(0, N_ITEMS, who.size)
        evs = [Event(user_id=f"u{u}", event=k, item_id=f"i{it}", ts=t,
                     revenue=5.0 if k == "purchase" else None)
               for u, k, it in zip(who.tolist(), kinds.tolist(), items.tolist(), strict=True)]
        srv.log.write(srv.events(evs))
        if h not in pulls:
            continue
        if stop_before_last_pull and h == pulls[-1]:
            return
        fmt = "columns" if h % 2 else "rows"
        out, stmts = srv.triggers_due(TriggersDueIn(users=users, ts=t + 1800, format=fmt,
                                                    request_id=f"pull-{h}"))
        srv.log.write(stmts)
        srv.pull_done(f"pull-{h}")
        sends = out["sends"]
        dids = sends["decision_id"] if fmt == "columns" else [s["decision_id"] for s in sends]
        for did in dids[::4]:  # right after the answer: an UPDATE of a row in a record
            _, fb_stmts, token = srv.feedback(FeedbackIn(decision_id=did, opened=True,
                                                         ts=t + 2000))
            srv.log.write(fb_stmts)
            srv.feedback_done(did, token)


def _last_pull(srv: Server, seed: int) -> None:
    """The stream's last pull (after :func:`_stream` with ``stop_before_last_pull``)."""
    h = list(range(2, HOURS, 3))[-1]
    t = T0 + h * HOUR
    out, stmts = srv.triggers_due(TriggersDueIn(users=[f"u{i}" for i in range(N_USERS)],
                                                ts=t + 1800, format="rows",
                                                request_id=f"pull-{h}"))
    assert out["sends"], "the last pull must send (the test needs a record)"
    srv.log.write(stmts)


def _tables(state: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(state / LOG_FILE)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in TABLES}
    finally:
        conn.close()


def _restarted(tmp: Path) -> dict[str, Any]:
    """Tracker and feature state after a start that replays the whole journal."""
    (tmp / "state" / SNAPSHOT_FILE).unlink(missing_ok=True)
    srv = _server(tmp)
    try:
        st = srv.state
        assert st.triggers is not None
        u = np.arange(len(st.users), dtype=np.int64)
        return {"tracker": json.dumps(st.triggers.tracker.to_dict(), sort_keys=True),
                "features": st.fs.features(u, st.fs.clock(u)).tobytes(), "seq": st.seq}
    finally:
        srv.close()


def _export(tmp: Path) -> dict[str, bytes]:
    out = tmp / "export"
    export(tmp / "state", out)
    got = {p.name: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    meta = json.loads(got.pop("meta.json"))
    meta.pop("exported_at")  # the clock of the export
    return {**got, "meta.json": json.dumps(meta).encode()}


def _run(tmp: Path, seed: int, bulk: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        m.setattr(bulk_sends, "BULK_MIN_SENDS", 1 if bulk else 10**9)
        m.setattr(bulk_sends, "CHUNK_ROWS", 37)  # several chunks per record
        srv = _server(tmp)
        try:
            _stream(srv, seed)
        finally:
            srv.close()


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stream written row by row (the path before bulk records)."""
    tmp = tmp_path_factory.mktemp("direct")
    with pytest.MonkeyPatch.context() as m:
        _run(tmp, 11, False, m)
    return tmp


def test_bulk_records_give_the_same_log_export_and_state(direct: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    _run(tmp_path, 11, True, monkeypatch)
    got, want = _tables(tmp_path / "state"), _tables(direct / "state")
    assert sum(r[4] for r in got["decisions"]) > 50  # sends happened (column `sent`)
    for t in TABLES:
        assert got[t] == want[t], t
    conn = sqlite3.connect(tmp_path / "state" / LOG_FILE)
    assert conn.execute("SELECT count(*) FROM bulk_sends").fetchone()[0] == 0
    conn.close()
    assert _export(tmp_path) == _export(direct)
    assert _restarted(tmp_path) == _restarted(direct)


@pytest.fixture(scope="module")
def direct_cut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the killed server acknowledged, written row by row: the stream up to and
    including its last pull, nothing after."""
    tmp = tmp_path_factory.mktemp("direct_cut")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(bulk_sends, "BULK_MIN_SENDS", 10**9)
        srv = _server(tmp)
        try:
            _stream(srv, 11, stop_before_last_pull=True)
            _last_pull(srv, 11)
        finally:
            srv.close()
    return tmp


_CHILD = """
import os, signal, sys, threading
sys.path.insert(0, {root!r})
import runpy
from pushrl.serve import bulk_sends
m = runpy.run_path({path!r})
from pathlib import Path
bulk_sends.BULK_MIN_SENDS = 1
bulk_sends.CHUNK_ROWS = {chunk}
srv = m["_server"](Path({tmp!r}))
m["_stream"](srv, {seed}, stop_before_last_pull=True)
srv.log._bulk.wait_settled()
real, calls, stalled = bulk_sends.Expander.step, [0], threading.Event()
def step(self, conn):  # the last record: {steps} chunk(s), then the writer stalls
    if calls[0] >= {steps}:
        stalled.set()
        threading.Event().wait()
    calls[0] += 1
    real(self, conn)
bulk_sends.Expander.step = step
m["_last_pull"](srv, {seed})
assert stalled.wait(120)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed(tmp: Path, seed: int, steps: int) -> None:
    code = _CHILD.format(root=str(ROOT), path=__file__, chunk=40, tmp=str(tmp), seed=seed,
                         steps=steps)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert r.returncode == -9, r.stderr[-2000:]


@pytest.mark.parametrize("steps", [0, 2])
def test_kill_9_before_expansion_recovers_the_same_log(direct_cut: Path, tmp_path: Path,
                                                       steps: int) -> None:
    _killed(tmp_path, 11, steps)
    conn = sqlite3.connect(f"file:{tmp_path / 'state' / LOG_FILE}?mode=ro", uri=True)
    left = conn.execute("SELECT done, n_rows FROM bulk_sends").fetchall()
    conn.close()
    assert len(left) == 1 and left[0][0] == 40 * steps < left[0][1]  # acknowledged, unexpanded
    if steps == 0:  # an export of the stopped server's log would miss them: refused
        with pytest.raises(DataError, match="not yet written into the log's tables"):
            export(tmp_path / "state", tmp_path / "early")
    srv = _server(tmp_path)  # the start expands it
    srv.close()
    got, want = _tables(tmp_path / "state"), _tables(direct_cut / "state")
    for t in TABLES:
        assert got[t] == want[t], t
    assert _export(tmp_path) == _export(direct_cut)
    assert _restarted(tmp_path) == _restarted(direct_cut)


def test_a_damaged_record_refuses_the_start_in_one_line(tmp_path: Path) -> None:
    _killed(tmp_path, 5, 0)
    db = tmp_path / "state" / LOG_FILE
    keep = sqlite3.connect(db)  # open meanwhile: closing the last connection drops the WAL
    keep.execute("SELECT 1 FROM meta").fetchall()
    conn = sqlite3.connect(db)
    blob = bytearray(conn.execute("SELECT blob FROM bulk_sends").fetchone()[0])
    blob[len(blob) // 2] ^= 0xFF
    conn.execute("UPDATE bulk_sends SET blob=?", (bytes(blob),))
    conn.commit()
    conn.close()
    try:
        with pytest.raises(StateError, match=r"bulk_sends record \d+ is damaged") as got:
            _server(tmp_path)
    finally:
        keep.close()
    assert "\n" not in str(got.value) and "logs restore" in str(got.value)


def test_a_retried_bulk_pull_is_answered_once(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk_sends, "BULK_MIN_SENDS", 2)
    cfg = make_cfg(tmp_path, triggers=TriggerConfig.default(), guardrails=Guardrails(0, 0, 0, 0))
    users = [f"u{i}" for i in range(20)]
    body = {"users": users, "ts": T0 + 3 * HOUR, "request_id": "p1", "format": "columns"}
    with TestClient(create_app(cfg, overrides=doubles())) as c:
        c.put("/v1/items/i0", json={"category": "a", "features": {"price": 1}})
        for u in users:
            c.put(f"/v1/users/{u}", json={"timezone": "UTC", "ts": T0})
        r = c.post("/v1/events", json={"events": [
            {"user_id": u, "event": "cart", "item_id": "i0", "ts": T0} for u in users]})
        assert r.status_code == 200, r.text
        first = c.post("/v1/triggers/due", json=body).json()
        assert len(first["sends"]["trigger_id"]) == 20 and not first["replayed"]
        again = c.post("/v1/triggers/due", json=body).json()
        assert again == {**first, "replayed": True}
        other = c.post("/v1/triggers/due", json={**body, "format": "rows"})
        assert other.status_code == 409 and "format" in other.json()["detail"]
        fresh = c.post("/v1/triggers/due", json={**body, "request_id": "p2"}).json()
        assert fresh["sends"]["trigger_id"] == []  # sent once
        missing = c.post("/v1/triggers/due", json={**body, "users": ["nobody"],
                                                   "request_id": "p3"})
        assert missing.status_code == 404
        # every pull's GC pause ended with its answer (sends, a replay, errors)
        assert gc.isenabled() and GC_PAUSE._depth == 0
    with TestClient(create_app(cfg, overrides=doubles())) as c:  # after a restart too
        assert c.post("/v1/triggers/due", json=body).json() == {**first, "replayed": True}
    rows = _tables(tmp_path / "state")["decisions"]
    assert len(rows) == 20 and len({r[0] for r in rows}) == 20


def test_columns_answer_holds_the_rows_answer(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, triggers=TriggerConfig.default(), guardrails=Guardrails(0, 0, 0, 0))
    users = [f"u{i}" for i in range(6)]
    with TestClient(create_app(cfg, overrides=doubles())) as c:
        c.put("/v1/items/i0", json={"category": "a", "features": {"price": 1}})
        for u in users:
            c.put(f"/v1/users/{u}", json={"timezone": "UTC", "ts": T0})
        got = {}
        for k, fmt in enumerate(("rows", "columns")):
            t = T0 + k * 30 * HOUR
            c.post("/v1/events", json={"events": [
                {"user_id": u, "event": "cart", "item_id": "i0", "ts": t} for u in users]})
            got[fmt] = c.post("/v1/triggers/due", json={"users": users, "ts": t + 3 * HOUR,
                                                        "format": fmt}).json()
    rows, cols = got["rows"]["sends"], got["columns"]["sends"]
    assert len(rows) == len(cols["trigger_id"]) == 6
    assert list(cols) == list(rows[0])  # the same fields, in the same order
    as_rows = [dict(zip(cols, v, strict=True)) for v in zip(*cols.values(), strict=True)]
    for a, b in zip(rows, as_rows, strict=True):
        assert {k: v for k, v in a.items() if k not in ("trigger_id", "decision_id",
                                                        "event_ts")} == {
            k: v for k, v in b.items() if k not in ("trigger_id", "decision_id", "event_ts")}


@pytest.mark.parametrize(("prefix", "start", "n"), [
    ("0123456789abcdef", 1, 5000), ("s3-0123456789abcdef", 16 ** 12 - 100, 300),
    ("p", 7, 63), ("", 0, 64), ("é", 5, 100)])
def test_hex_ids_are_the_formatted_ids(prefix: str, start: int, n: int) -> None:
    from pushrl.serve.engine import hex_ids

    assert hex_ids(prefix, start, n) == [f"{prefix}{i:012x}" for i in range(start, start + n)]


def test_the_router_merges_columns_answers_of_shards_in_request_order() -> None:
    from pushrl.serve.router import Reply, Router

    def cols(uids: list[str]) -> dict[str, Any]:
        return {"trigger_id": [f"t-{u}" for u in uids], "user_id": uids,
                "pscore": [0.5] * len(uids)}

    router = Router(2, lambda k: None, lambda k: None)
    users = ["a", "b", "c", "d"]
    parts = {0: [1, 3], 1: [0, 2]}
    res: dict[int, Any] = {0: Reply.json(200, {"sends": cols(["d", "b"]), "requeued": 1}),
                           1: Reply.json(200, {"sends": cols(["a"]), "requeued": 0})}
    got = router._merge_due(parts, res, "users", users).data()
    assert got["sends"] == cols(["a", "b", "d"]) and got["requeued"] == 1


@pytest.mark.parametrize("zlib_min", [0, bulk_sends.ZLIB_MIN_BYTES])
def test_both_record_formats_unpack_to_the_packed_rows(zlib_min: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A record is stored compressed (version 1, from :data:`bulk_sends.ZLIB_MIN_BYTES`) or
    raw (version 2, below it); either unpacks to the rows it packed, and damage to either is
    refused."""
    from pushrl.serve.rows import Chunks, Columns, Many, Same

    monkeypatch.setattr(bulk_sends, "ZLIB_MIN_BYTES", zlib_min)
    cols = Columns(3, ["a", "b", "c"], range(5, 8), Same(None), [0.25, 1.0, None],
                   Chunks(b"\x00\x01" * 3, 2))
    stmts: list[Any] = [("INSERT INTO t VALUES (?,?)", (1, "x")),
                        ("INSERT INTO t VALUES (?,?)", Many([(2, "y"), (3, None)])),
                        ("INSERT INTO c VALUES (?,?,?,?,?)", cols)]
    _, rec = bulk_sends.pack(stmts, 42)
    rid, blob, digest, n_rows = rec
    assert (rid, n_rows) == (42, 6)
    assert blob.startswith(bulk_sends.MAGIC if zlib_min == 0 else bulk_sends.MAGIC_RAW)
    got = bulk_sends.unpack(rid, blob, digest)
    assert got[0] == ("INSERT INTO t VALUES (?,?)", [(1, "x"), (2, "y"), (3, None)])
    assert got[1][0] == "INSERT INTO c VALUES (?,?,?,?,?)"
    assert list(got[1][1].rows()) == list(cols.rows())
    bad = bytearray(blob)
    bad[-3] ^= 0xFF
    with pytest.raises(bulk_sends.BulkRecordError, match="is damaged"):
        bulk_sends.unpack(rid, bytes(bad), digest)
