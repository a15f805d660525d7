"""Trigger state from `pushrl state import` (issue #16): a server started on an imported log
has the pending triggers of a server that saw the same events live (same ids, kinds, items,
times, logged arms), sends the same triggers at the next pull, and decides (and journals)
the open triggers of a log without trigger rows once."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from pushrl.rules.guardrails import Guardrails
from pushrl.rules.triggers import TriggerConfig
from pushrl.serve.app import create_app
from pushrl.serve.export import export
from pushrl.serve.history import import_history
from pushrl.serve.triggers import SNAPSHOT_FILE
from tests.serve.conftest import T0, doubles, make_cfg

H = 3600
OPEN = Guardrails(0, 0, 0, 0)
#: winback after one quiet day and carts that wait an hour: the clock creates triggers too
RULES = TriggerConfig.parse({"winback": {"inactive_days": 1}, "cart": {"wait_h": 1}})
USERS = [f"u{i}" for i in range(8)]
HOURS = 60


def _client(state: Path, reg: Path, **kw: Any) -> TestClient:
    cfg = make_cfg(state.parent, state=state, registry=reg, triggers=RULES, guardrails=OPEN,
                   **kw)
    c = TestClient(create_app(cfg, overrides=doubles()))
    c.__enter__()
    return c


def _ok(r: Any) -> Any:
    assert r.status_code == 200, r.text
    return r.json()


def _live(c: TestClient, rng: np.random.Generator) -> int:
    """Items with prices, users, then ``HOURS`` hours of events and item updates (in time
    order) with a pull of every user at each hour start; returns the last pull's time."""
    for j in range(5):
        _ok(c.put(f"/v1/items/i{j}", json={"category": "ab"[j % 2],
                                            "features": {"price": 10.0 + j, "in_stock": True}}))
    for u in USERS:
        _ok(c.put(f"/v1/users/{u}", json={"timezone": "UTC", "ts": T0}))
    price = {f"i{j}": 10.0 + j for j in range(5)}
    t = T0
    for h in range(HOURS):
        t = T0 + h * H
        _ok(c.post("/v1/triggers/due", json={"users": USERS, "ts": t}))
        todo: list[tuple[int, str, dict[str, Any]]] = []
        for u in USERS:
            if rng.random() < (0.1 if h % 24 > 12 else 0.35):  # quiet spells: win-backs
                ev = str(rng.choice(["session", "view", "view", "cart", "purchase"]))
                item = None if ev == "session" else f"i{rng.integers(5)}"
                todo.append((t + int(rng.integers(60, 3500)), "ev",
                             {"user_id": u, "event": ev, "item_id": item}))
        if rng.random() < 0.3:
            it = f"i{rng.integers(5)}"
            upd: dict[str, Any] = {"item_id": it}
            if rng.random() < 0.5:
                price[it] = round(price[it] * float(rng.choice([0.8, 1.2])), 2)
                upd["price"] = price[it]
            else:
                upd["in_stock"] = bool(rng.random() < 0.5)
            todo.append((t + int(rng.integers(60, 3500)), "upd", upd))
        for ts, what, body in sorted(todo, key=lambda x: x[0]):
            if what == "ev":
                _ok(c.post("/v1/events", json={"events": [{**body, "ts": ts}]}))
            else:
                _ok(c.post("/v1/items/updates", json={**body, "ts": ts}))
    return t


def _pending(c: TestClient) -> dict[str, tuple[Any, ...]]:
    """Open triggers by id: (user id, kind, item id, event_ts, expires_ts, decided, delay_h,
    pscore) (a re-queue's new due time is a live pull's bookkeeping, not compared)."""
    st = c.app.state.server.state  # type: ignore[attr-defined]
    uid = {i: u for u, i in st.users.items()}
    out = {}
    for t in st.triggers.tracker.to_dict()["triggers"]:
        if t["status"] != "open":
            continue
        item = None if t["item"] is None else st.item_list[t["item"]].item_id
        out[t["trigger_id"]] = (uid[t["user"]], t["kind"], item, t["event_ts"],
                                t["expires_ts"], t["decided"], t["delay_h"], t["pscore"])
    return out


def _sends(c: TestClient, ts: int) -> list[tuple[Any, ...]]:
    out = _ok(c.post("/v1/triggers/due", json={"users": USERS, "ts": ts}))["sends"]
    return sorted((s["trigger_id"], s["user_id"], s["kind"], s["item_id"], s["delay_h"])
                  for s in out)


@pytest.fixture
def live_log(tmp_path: Path) -> tuple[Path, dict[str, tuple[Any, ...]], list[Any], int]:
    """A live server (stochastic VW delay arms) driven through ``HOURS`` hours, exported:
    ``(log dir, its pending triggers, its next pull's sends, the last pull's time)``."""
    from pushrl.policies.vw import VWItemPolicy
    from pushrl.sim.trigger_context import common_arms
    from pushrl.train.delay import DELAY_VW, delay_layout

    arms = common_arms(RULES)
    pol = VWItemPolicy(delay_layout(arms), DELAY_VW.args(), name="vw")  # untrained: explores
    art = pol.save(tmp_path / "vw", {"trigger_policy": {"arms": list(arms)}})
    c = _client(tmp_path / "live", tmp_path / "reg", trigger_delay_policy=str(art))
    try:
        last = _live(c, np.random.default_rng(7))
        pending = _pending(c)
    finally:
        c.__exit__(None, None, None)
    out = tmp_path / "log"
    export(tmp_path / "live", out)
    c = _client(tmp_path / "live", tmp_path / "reg", trigger_delay_policy=str(art))
    try:  # the live server's next pull (after the export)
        sends = _sends(c, last + H)
    finally:
        c.__exit__(None, None, None)
    return out, pending, sends, last


def test_an_imported_log_has_the_live_servers_pending_triggers(
        tmp_path: Path, live_log: tuple[Path, dict[str, Any], list[Any], int]) -> None:
    data, pending, sends, last = live_log
    kinds = {v[1] for v in pending.values()}
    assert len(pending) >= 5 and {"cart", "browse"} <= kinds, pending  # a real test
    assert any(v[7] < 1 for v in pending.values())  # stochastic arms: they must be the log's
    assert sends  # the next pull sends some of them
    rep = import_history(data, tmp_path / "imported", quarantine=False)
    assert rep["n_triggers"] > len(pending) and rep["n_item_updates"] > 0
    # the imported server runs another delay policy: every pending arm comes from the log
    c = _client(tmp_path / "imported", tmp_path / "reg2")
    try:
        assert _pending(c) == pending
        # the replayed history is snapshotted at once: a start after a crash skips it
        snap = json.loads((tmp_path / "imported" / SNAPSHOT_FILE).read_text())
        assert len(json.loads(snap["tracker"])["triggers"]) > len(pending)
        assert _sends(c, last + H) == sends
    finally:
        c.__exit__(None, None, None)
    db = sqlite3.connect(tmp_path / "imported" / "log.sqlite3")
    assert db.execute("SELECT count(*) FROM triggers").fetchone()[0] == 0  # nothing re-decided
    db.close()


def test_open_triggers_of_a_log_without_trigger_rows_are_decided_once(
        tmp_path: Path, live_log: tuple[Path, dict[str, Any], list[Any], int]) -> None:
    data, pending, _, last = live_log
    (data / "triggers.parquet").unlink()  # a log without trigger decisions (e.g. pushlog v1)
    p = pd.read_parquet(data / "pushes.parquet")
    p[p["trigger_id"].isna()].to_parquet(data / "pushes.parquet", index=False)
    import_history(data, tmp_path / "imported", quarantine=False)
    state = tmp_path / "imported"
    c = _client(state, tmp_path / "reg2")  # fixed 1 h
    try:
        first = _pending(c)
    finally:
        c.__exit__(None, None, None)
    # the live server's open triggers are still there (ids, kinds, items, times), now with
    # the importing server's arm, and journaled
    assert set(pending) <= set(first)
    assert {k: v[:5] for k, v in first.items() if k in pending} == \
        {k: v[:5] for k, v in pending.items()}
    assert {(v[5], v[6], v[7]) for v in first.values()} == {(True, 1, 1.0)}
    db = sqlite3.connect(state / "log.sqlite3")
    n_rows = db.execute("SELECT count(*) FROM triggers").fetchone()[0]
    db.close()
    assert n_rows >= len(first)
    (state / SNAPSHOT_FILE).unlink()  # a start without the snapshot replays history again
    c = _client(state, tmp_path / "reg2", trigger_delay_hours=4)
    try:
        assert _pending(c) == first  # the journaled arms, not the new default's
        db = sqlite3.connect(state / "log.sqlite3")
        assert db.execute("SELECT count(*) FROM triggers").fetchone()[0] == n_rows
        db.close()
        sent = _sends(c, last + 49 * H)  # sends some, the clock expires others
        tr = c.app.state.server.state.triggers.tracker  # type: ignore[attr-defined]
        final = {k: tr.get(k).status.value for k in first}
    finally:
        c.__exit__(None, None, None)
    # the export replays the imported history too: final statuses, not the rows' "open"
    export(state, tmp_path / "out")
    got = pd.read_parquet(tmp_path / "out" / "triggers.parquet").set_index("trigger_id")
    assert {k: got.loc[k, "status"] for k in first} == final
    assert sent and {"sent", "expired"} <= set(final.values()), final


def test_stock_codes_of_items_and_updates() -> None:
    from pushrl.serve.trigger_history import _stock

    np.testing.assert_array_equal(_stock(pd.Series([True, False, None], dtype=object), 3),
                                  [1, 0, -1])
    np.testing.assert_array_equal(_stock(pd.Series(["many", "few"]), 2), [-1, -1])
    np.testing.assert_array_equal(_stock(None, 2), [-1, -1])
