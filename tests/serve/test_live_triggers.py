"""A real `pushrl serve --triggers default` process, ``kill -9`` under load (carts and due
pulls from 16 connections): no acknowledged pending trigger and no acknowledged send is lost,
none is sent twice, and the restarted server still sends every pending one."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from tests.serve.conftest import T0
from tests.serve.live import LiveServer, schemathesis_bin

pytestmark = pytest.mark.slow
H = 3600
ARGS = ("--triggers", "default", "--quiet-hours", "0-0", "--max-per-day", "0",
        "--max-per-week", "0")
N_USERS, CONNS, N_ITEMS = 64, 16, 100
#: Simulated seconds per real second: one clock for every connection (the tracker's clock is
#: global, as the wall clock is for a real sender), 20 h per second.
SPEED = 20 * H


async def _load(base: str, seconds: float, carts: dict, sends: dict, failures: list) -> None:
    """Each connection owns N_USERS / CONNS users: round k carts item k % N_ITEMS for each
    at the simulated now and, every other round, polls their due sends an hour later."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    stop = start + seconds

    async def worker(w: int, c: httpx.AsyncClient) -> None:
        users = [f"u{i}" for i in range(w, N_USERS, CONNS)]
        k = 0
        while loop.time() < stop:
            t = T0 + 10 * H + int((loop.time() - start) * SPEED)
            item = f"i{k % N_ITEMS}"
            try:
                evs = [{"user_id": u, "event": "cart", "item_id": item, "ts": t} for u in users]
                r = await c.post("/v1/events", json={"events": evs})
                if r.status_code != 200:
                    failures.append((r.status_code, r.text))
                    return
                for u in users:
                    carts[u].append((item, t))
                if k % 2 == 0:
                    r = await c.post("/v1/triggers/due", json={"users": users, "ts": t + H})
                    if r.status_code != 200:
                        failures.append((r.status_code, r.text))
                        return
                    for x in r.json()["sends"]:
                        sends[x["trigger_id"]] = x["decision_id"]
            except httpx.HTTPError as exc:
                failures.append(("transport", repr(exc)))
                return
            k += 1

    async with httpx.AsyncClient(base_url=base, timeout=10,
                                 limits=httpx.Limits(max_connections=CONNS)) as c:
        await asyncio.gather(*(worker(w, c) for w in range(CONNS)))


def test_kill_9_under_load_loses_no_pending_trigger_and_no_acknowledged_send(
        tmp_path: Path) -> None:
    srv = LiveServer(tmp_path, *ARGS)
    with httpx.Client(base_url=srv.base, timeout=30) as c:
        for j in range(N_ITEMS):
            c.put(f"/v1/items/i{j}", json={"category": "ab"[j % 2]}).raise_for_status()
        for i in range(N_USERS):
            c.put(f"/v1/users/u{i}", json={"timezone": "UTC", "ts": T0}).raise_for_status()
        c.post("/v1/events", json={"events": [  # pending at the clean restart below
            {"user_id": f"u{i}", "event": "view", "item_id": "i0", "ts": T0 + 9 * H}
            for i in range(N_USERS)] * 2}).raise_for_status()
    srv.stop()  # clean: the tracker snapshot; the crash below replays the journal after it
    assert (tmp_path / "state" / "triggers_snapshot.json").exists()
    srv = LiveServer(tmp_path, *ARGS)
    carts: dict[str, list[tuple[str, int]]] = defaultdict(list)
    sends: dict[str, str] = {}
    failures: list = []

    async def run() -> None:
        task = asyncio.create_task(_load(srv.base, 8.0, carts, sends, failures))
        await asyncio.sleep(4.0)
        srv.kill()  # mid-load, no clean shutdown
        await task

    asyncio.run(run())
    n_carts = sum(map(len, carts.values()))
    assert n_carts > 100 and len(sends) > 20, (n_carts, len(sends), failures[:3])
    # read-only: closing a writable connection would checkpoint and remove the WAL
    db = sqlite3.connect(f"file:{tmp_path / 'state' / 'log.sqlite3'}?mode=ro", uri=True)
    logged = {(u, i, t): (tid, st, did) for tid, u, i, t, st, did in db.execute(
        "SELECT trigger_id, user_id, item_id, event_ts, status, decision_id FROM triggers "
        "WHERE kind='cart'")}
    # every acknowledged cart's trigger is durable, with its delay arm
    missing = [(u, i, t) for u, cs in carts.items() for i, t in cs if (u, i, t) not in logged]
    assert not missing, missing[:5]
    # every acknowledged send is durable, once, as a push row
    pushed = dict(db.execute("SELECT trigger_id, decision_id FROM decisions "
                             "WHERE trigger_id IS NOT NULL"))
    assert all(pushed.get(tid) == did for tid, did in sends.items())
    assert db.execute("SELECT count(*) FROM decisions WHERE trigger_id IS NOT NULL").fetchone()[0] \
        == len(pushed)
    clock = db.execute("SELECT max(m) FROM (SELECT max(ts) m FROM activity UNION ALL "
                       "SELECT max(arg) FROM ops WHERE kind=6)").fetchone()[0]
    expires = dict(db.execute("SELECT trigger_id, expires_ts FROM triggers"))
    db.close()

    srv2 = LiveServer(tmp_path, *ARGS)  # restart: the tracker is rebuilt from the journal
    try:
        with httpx.Client(base_url=srv2.base, timeout=30) as c:
            pending = {t["trigger_id"] for u in carts for t in
                       c.get(f"/v1/users/{u}/triggers").json()["triggers"]}
            # every acknowledged trigger is sent (once), still pending, or expired by the
            # log's clock: none is lost
            for key in {(u, i, t) for u, cs in carts.items() for i, t in cs}:
                tid = logged[key][0]
                assert (tid in pushed) + (tid in pending) == 1 or expires[tid] <= clock, key
            assert pending, "nothing pending at the crash: the test checks nothing"
            r = c.post("/v1/triggers/due", json={"users": sorted(carts), "ts": clock + H})
            assert r.status_code == 200, r.text
            after = {x["trigger_id"] for x in r.json()["sends"]}
            assert after and after <= pending and not after & set(pushed)
    finally:
        srv2.stop()


@pytest.mark.skipif(schemathesis_bin() is None, reason="pip install schemathesis")
def test_schemathesis_finds_no_server_error_on_the_trigger_endpoints(tmp_path: Path) -> None:
    srv = LiveServer(tmp_path, *ARGS)
    try:
        with httpx.Client(base_url=srv.base, timeout=30) as c:
            for j in range(3):
                c.put(f"/v1/items/i{j}", json={"category": "ab"[j % 2],
                                               "features": {"price": 5.0}}).raise_for_status()
            for i in range(3):
                c.put(f"/v1/users/u{i}", json={"timezone": "UTC"}).raise_for_status()
                c.post("/v1/events", json={"user_id": f"u{i}", "event": "cart",
                                           "item_id": "i0"}).raise_for_status()
        res = subprocess.run(
            [str(schemathesis_bin()), "run", srv.base + "/openapi.json", "--checks",
             "not_a_server_error,status_code_conformance,content_type_conformance,"
             "response_schema_conformance", "--max-examples", "60", "--seed", "1",
             "--workers", "1", "--phases", "examples,coverage,fuzzing",
             "--include-path-regex", "triggers|items/updates|/v1/events"],
            capture_output=True, text=True, timeout=900)
        out = res.stdout + res.stderr
        assert res.returncode == 0, out[-4000:]
        assert "internal error" not in srv.output()
    finally:
        srv.stop()
