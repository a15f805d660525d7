"""Behaviour-triggered pushes in the server (issue 16): events and item updates create
durable pending triggers, `/v1/triggers/due` sends them once (idempotent retries), `decide`
answers with an outranking due trigger, triggered and scheduled pushes share the ONE
guardrails, a cancelling purchase means 0 sends, a restart rebuilds the same tracker, and
the export carries the trigger rows."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from pushrl.cli.main import app as cli

from pushrl.data.validate import load_dataset
from pushrl.data.timezones import local_clock
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.triggers import TriggerConfig
from pushrl.serve.app import create_app
from pushrl.serve.export import export
from pushrl.serve.store import LOG_FILE
from pushrl.serve.triggers import SNAPSHOT_FILE
from pushrl.units import HOUR, utc_offset_seconds
from tests.serve.conftest import CoinFlip, T0, doubles, make_cfg, seed_world

OPEN = Guardrails(0, 0, 0, 0)
T = T0 + 10 * HOUR  # 10:00 UTC


def _client(tmp: Path, guard: Guardrails = OPEN, overrides: dict[str, Any] | None = None,
            **kw: Any) -> TestClient:
    cfg = make_cfg(tmp, triggers=kw.pop("triggers", TriggerConfig.default()), guardrails=guard,
                   **kw)
    c = TestClient(create_app(cfg, overrides=overrides or doubles()))
    c.__enter__()
    return c


def _ev(c: TestClient, *events: dict[str, Any]) -> None:
    r = c.post("/v1/events", json={"events": list(events)})
    assert r.status_code == 200, r.text


def _due(c: TestClient, users: list[str], ts: int, **kw: Any) -> dict[str, Any]:
    r = c.post("/v1/triggers/due", json={"users": users, "ts": ts, **kw})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _tracker(c: TestClient) -> Any:
    return c.app.state.server.state.triggers.tracker  # type: ignore[attr-defined]


def test_cart_trigger_is_sent_once_after_its_delay_and_logged_as_a_push(tmp_path: Path) -> None:
    c = _client(tmp_path)
    try:
        seed_world(c)
        _ev(c, {"user_id": "u0", "event": "cart", "item_id": "i1", "ts": T})
        pending = c.get("/v1/users/u0/triggers").json()["triggers"]
        assert [(t["kind"], t["item_id"], t["delay_h"], t["pscore"]) for t in pending] == [
            ("cart", "i1", 1, 1.0)]
        assert _due(c, ["u0", "u1"], T + HOUR - 1)["sends"] == []  # fixed 1 h delay
        out = _due(c, ["u0", "u1"], T + HOUR)
        (s,) = out["sends"]
        assert (s["user_id"], s["kind"], s["item_id"], s["delay_h"], s["pscore"]) == (
            "u0", "cart", "i1", 1, 1.0)
        assert s["policy"] == "fixed-1h@heuristic"
        assert _due(c, ["u0", "u1"], T + HOUR + 60)["sends"] == []  # marked sent
        assert c.get("/v1/users/u0/triggers").json()["triggers"] == []
        m = c.get("/metrics").text
        for what in ("created", "sent"):
            assert f'serve_triggers_total{{kind="cart",what="{what}"}} 1.0' in m
        # outcomes of the triggered push join like any push's
        r = c.post("/v1/feedback", json={"decision_id": s["decision_id"], "clicked": True,
                                         "ts": T + 2 * HOUR})
        assert r.status_code == 200 and r.json()["outcomes"]["opened"] is True, r.text
    finally:
        c.__exit__(None, None, None)
    db = sqlite3.connect(tmp_path / "state" / "log.sqlite3")
    assert db.execute("SELECT sent, item_id, pscore, pscore_send, reason, trigger_id, clicked "
                      "FROM decisions").fetchall() == [
        (1, "i1", 1.0, 1.0, "trigger:cart", s["trigger_id"], 1)]


def test_a_cancelling_purchase_means_zero_sends_through_pull_and_decide(tmp_path: Path) -> None:
    c = _client(tmp_path, overrides=doubles(timing=CoinFlip(0.0)))
    try:
        seed_world(c)
        _ev(c, {"user_id": "u0", "event": "cart", "item_id": "i1", "ts": T},
            {"user_id": "u1", "event": "cart", "item_id": "i2", "ts": T},
            {"user_id": "u0", "event": "purchase", "item_id": "i1", "ts": T + 600},
            {"user_id": "u1", "event": "purchase", "item_id": "i3", "ts": T + 600})
        for h in (1, 2, 5, 30):
            d = c.post("/v1/decide", json={"user_id": "u0", "ts": T + h * HOUR}).json()
            assert not d["send"] and d.get("trigger_id") is None, d
            assert _due(c, ["u0"], T + h * HOUR)["sends"] == []
        # u1 bought another item: its cart trigger (cancel = item_purchase) is still sent
        assert [s["user_id"] for s in _due(c, ["u1"], T + 2 * HOUR)["sends"]] == ["u1"]
    finally:
        c.__exit__(None, None, None)


def test_pull_retries_with_a_request_id_return_the_first_answer(tmp_path: Path) -> None:
    c = _client(tmp_path)
    try:
        seed_world(c)
        _ev(c, {"user_id": "u0", "event": "cart", "item_id": "i1", "ts": T},
            {"user_id": "u0", "event": "cart", "item_id": "i1", "ts": T})  # a retried event
        assert len(c.get("/v1/users/u0/triggers").json()["triggers"]) == 1
        first = _due(c, ["u0", "u2"], T + HOUR, request_id="poll-1")
        again = _due(c, ["u0", "u2"], T + HOUR, request_id="poll-1")
        assert len(first["sends"]) == 1 and again["replayed"] and not first["replayed"]
        assert again["sends"] == first["sends"]
        r = c.post("/v1/triggers/due", json={"users": ["u0"], "ts": T + HOUR,
                                             "request_id": "poll-1"})
        assert r.status_code == 409 and r.json()["error"] == "request_id_reused", r.text
    finally:
        c.__exit__(None, None, None)
    c = _client(tmp_path)  # the answer is durable: a retry after a restart gets it too
    try:
        assert _due(c, ["u0", "u2"], T + HOUR, request_id="poll-1")["sends"] == first["sends"]
    finally:
        c.__exit__(None, None, None)
    db = sqlite3.connect(tmp_path / "state" / "log.sqlite3")
    assert db.execute("SELECT count(*) FROM decisions").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM triggers").fetchone() == (1,)
    # the stored row is json.dumps({"key", "out"}) and the answer's text is its "out"
    # (encoded once: the row embeds the answer's text), both formats
    c = _client(tmp_path)
    try:
        _ev(c, *({"user_id": u, "event": "cart", "item_id": "i2", "ts": T + 2 * HOUR}
                 for u in ("u0", "u1", "u2")))
        for rid, fmt, users in (("poll-2", "rows", ["u0", "u1"]),
                                ("poll-3", "columns", ["u2"])):
            r = c.post("/v1/triggers/due", json={"users": users, "ts": T + 3 * HOUR,
                                                 "request_id": rid, "format": fmt})
            assert r.status_code == 200, r.text
            row = c.app.state.server.log.query(  # type: ignore[attr-defined]
                "SELECT response FROM trigger_pulls WHERE request_id=?", (rid,),
                settled=False)[0][0]
            got = json.loads(row)
            assert row == json.dumps({"key": got["key"], "out": got["out"]})
            assert r.text == json.dumps(got["out"]) and not got["out"]["replayed"]
            sends = r.json()["sends"]
            assert len(sends if fmt == "rows" else sends["user_id"]) == len(users)
            assert got["key"]["users"] == users
    finally:
        c.__exit__(None, None, None)


def test_decide_answers_with_an_outranking_due_trigger(tmp_path: Path) -> None:
    c = _client(tmp_path, overrides=doubles(timing=CoinFlip(0.0)))
    try:
        seed_world(c)
        _ev(c, {"user_id": "u0", "event": "cart", "item_id": "i1", "ts": T},
            {"user_id": "u1", "event": "cart", "item_id": "i1", "ts": T})
        early = c.post("/v1/decide", json={"user_id": "u0", "ts": T + 1800}).json()
        assert not early["send"]  # not due yet: the scheduled (never-send) policy decides
        r = c.post("/v1/decide/batch", json={"requests": [
            {"user_id": "u0", "ts": T + HOUR}, {"user_id": "u2", "ts": T + HOUR}]})
        d0, d2 = r.json()["decisions"]
        assert (d0["send"], d0["item_id"], d0["reason"]) == (True, "i1", "trigger:cart")
        assert d0["trigger_id"] and d0["pscore"] == 1.0 and not d2["send"]
        assert _due(c, ["u0"], T + HOUR)["sends"] == []  # decide marked it sent
    finally:
        c.__exit__(None, None, None)
    # a trigger whose priority is not above the scheduled push's is left to the pull
    c = _client(tmp_path, overrides=doubles(timing=CoinFlip(0.0)), scheduled_priority=100)
    try:
        d1 = c.post("/v1/decide", json={"user_id": "u1", "ts": T + HOUR}).json()
        assert not d1["send"] and d1.get("trigger_id") is None
        assert [s["user_id"] for s in _due(c, ["u1"], T + HOUR)["sends"]] == ["u1"]
    finally:
        c.__exit__(None, None, None)


def test_a_capped_trigger_is_requeued_until_expiry_never_dropped(tmp_path: Path) -> None:
    guard = Guardrails(quiet_start=22, quiet_end=8, max_sends_per_day=1, max_sends_per_week=0)
    cfg = TriggerConfig.parse({"cart": {"expiry_h": 30}})
    c = _client(tmp_path, guard, triggers=cfg)
    try:
        seed_world(c)
        d = c.post("/v1/decide", json={"user_id": "u0", "ts": T}).json()  # scheduled send
        assert d["send"] and d.get("trigger_id") is None
        _ev(c, {"user_id": "u0", "event": "cart", "item_id": "i1", "ts": T + 60},
            {"user_id": "u1", "event": "cart", "item_id": "i1", "ts": T + 23 * HOUR})
        out = _due(c, ["u0"], T + 2 * HOUR)  # daily cap reached by the scheduled push
        assert out["sends"] == [] and out["requeued"] == 1
        for h in range(3, 22):  # 13:00 .. 07:00: cap, then quiet hours
            assert _due(c, ["u0"], T + h * HOUR)["sends"] == []
        (s,) = _due(c, ["u0"], T + 22 * HOUR)["sends"]  # 08:00 next day
        assert s["user_id"] == "u0"
        assert [x["user_id"] for x in _due(c, ["u1"], T + 24 * HOUR)["sends"]] == ["u1"]
        # u2's cart at 21:00 is due at 22:00: quiet hours hold it until 08:00
        _ev(c, {"user_id": "u2", "event": "cart", "item_id": "i2", "ts": T + 11 * HOUR})
        got = {h: _due(c, ["u2"], T + h * HOUR)["sends"] for h in range(12, 24)}
        assert [h for h, x in got.items() if x] == [22]
        # u0's second cart (08:01, day 2): capped today, then never polled before expiry
        _ev(c, {"user_id": "u0", "event": "cart", "item_id": "i3", "ts": T + 22 * HOUR + 60})
        assert _due(c, ["u0"], T + 23 * HOUR + 60)["requeued"] == 1  # cap: u0 got one today
        assert _due(c, ["u0"], T + 60 * HOUR)["sends"] == []  # expired at 14:01 on day 3
    finally:
        c.__exit__(None, None, None)
    ds = export(tmp_path / "state", tmp_path / "out")
    trig = pd.read_parquet(Path(ds["out"]) / "triggers.parquet")
    assert set(trig["status"]) <= {"sent", "expired"}  # requeued, never silently dropped


def _local(ts: int, tz: str) -> tuple[int, int]:
    h, _, day = local_clock(np.int64(ts), utc_offset_seconds(ts, tz))
    return int(h), int(day)


def test_triggered_and_scheduled_pushes_never_break_the_guardrails_together(
        tmp_path: Path) -> None:
    """Random events, item updates, decisions and polls over 6 days in three zones: every
    send of both kinds respects quiet hours and both caps (brute force over the log), and no
    trigger is sent after a purchase that cancelled it."""
    guard = Guardrails(quiet_start=22, quiet_end=8, max_sends_per_day=2, max_sends_per_week=5)
    zones = ["UTC", "Asia/Kolkata", "America/New_York"]
    c = _client(tmp_path, guard, overrides=doubles(timing=CoinFlip(0.3)))
    rng = np.random.default_rng(7)
    users = [f"u{i}" for i in range(9)]
    try:
        for j in range(4):
            c.put(f"/v1/items/i{j}", json={"category": "ab"[j % 2],
                                           "features": {"price": 10.0, "in_stock": True}})
        for i, u in enumerate(users):
            c.put(f"/v1/users/{u}", json={"timezone": zones[i % 3], "ts": T0})
        for h in range(6 * 24):
            t = T0 + h * HOUR
            evs = []
            for u in users:
                if rng.random() < 0.25:
                    ev = str(rng.choice(["session", "view", "view", "cart", "purchase"]))
                    e: dict[str, Any] = {"user_id": u, "event": ev, "ts": t + 60}
                    if ev != "session":
                        e["item_id"] = f"i{rng.integers(4)}"
                    evs.append(e)
            if evs:
                _ev(c, *evs)
            if rng.random() < 0.1:
                r = c.post("/v1/items/updates", json={"item_id": f"i{rng.integers(4)}",
                                                      "ts": t + 120,
                                                      "price": float(rng.choice([6.0, 10.0])),
                                                      "in_stock": bool(rng.random() < 0.8)})
                assert r.status_code == 200, r.text
            asked = [u for u in users if rng.random() < 0.4]
            if asked:
                r = c.post("/v1/decide/batch", json={"requests": [
                    {"user_id": u, "ts": t + 1800} for u in asked]})
                assert r.status_code == 200, r.text
            _due(c, users, t + 2400)
        before = _tracker(c).to_dict()
    finally:
        c.__exit__(None, None, None)
    db = sqlite3.connect(tmp_path / "state" / "log.sqlite3")
    sends = db.execute("SELECT d.user_id, d.ts, d.trigger_id, u.timezone FROM decisions d "
                       "JOIN users u USING (user_id) WHERE sent=1 ORDER BY d.seq").fetchall()
    n_trig = sum(1 for s in sends if s[2] is not None)
    assert n_trig >= 10 and len(sends) - n_trig >= 10, (n_trig, len(sends))
    per_day: dict[tuple[str, int], int] = defaultdict(int)
    past: dict[str, list[int]] = defaultdict(list)
    for uid, ts, _, tz in sends:
        hour, day = _local(ts, tz)
        assert not guard.quiet(hour), (uid, ts, hour)
        assert per_day[uid, day] < guard.max_sends_per_day, (uid, ts)
        b = ts // HOUR
        assert sum(b - 168 <= x <= b for x in past[uid]) < guard.max_sends_per_week, (uid, ts)
        per_day[uid, day] += 1
        past[uid].append(b)
    # 0 sends after a cancelling purchase (cart/browse/price/stock: a purchase of the item)
    trig = dict((r[0], r[1:]) for r in db.execute(
        "SELECT trigger_id, user_id, item_id, event_ts FROM triggers"))
    for uid, ts, tid, _ in sends:
        if tid is None:
            continue
        _, item, ev_ts = trig[tid]
        bought = db.execute("SELECT count(*) FROM activity WHERE user_id=? AND event='purchase' "
                            "AND ts>=? AND ts<=? AND (item_id=? OR ? IS NULL)",
                            (uid, ev_ts, ts, item, item)).fetchone()[0]
        assert bought == 0, (tid, uid, ts)
    # a restart rebuilds exactly the same tracker from the whole journal (no snapshot)
    (tmp_path / "state" / SNAPSHOT_FILE).unlink()
    c = _client(tmp_path, guard, overrides=doubles(timing=CoinFlip(0.3)))
    try:
        assert _tracker(c).to_dict() == before
    finally:
        c.__exit__(None, None, None)


def test_item_updates_create_price_drop_and_back_in_stock_triggers(tmp_path: Path) -> None:
    c = _client(tmp_path)
    try:
        seed_world(c)
        r = c.put("/v1/items/i2", json={"category": "a", "features": {"price": 10.0,
                                                                      "in_stock": False}})
        assert r.status_code == 200
        _ev(c, {"user_id": "u1", "event": "view", "item_id": "i2", "ts": T})
        r = c.post("/v1/items/updates", json={"updates": [
            {"item_id": "i2", "ts": T + 60, "price": 9.5},  # -5 %: below min_drop_pct
            {"item_id": "i2", "ts": T + 120, "in_stock": True},
            {"item_id": "i2", "ts": T + 180, "price": 7.0}]})
        assert r.json() == {"accepted": 3, "triggers_created": 2}, r.text
        kinds = [t["kind"] for t in c.get("/v1/users/u1/triggers").json()["triggers"]]
        assert kinds == ["back_in_stock", "price_drop"]  # sending order: priority
        out = _due(c, ["u1"], T + 2 * HOUR)
        assert [s["kind"] for s in out["sends"]] == ["back_in_stock"] and out["requeued"] == 1
    finally:
        c.__exit__(None, None, None)


@pytest.mark.parametrize(("path", "body", "status", "code"), [
    ("/v1/triggers/due", {"users": ["nobody"]}, 404, "unknown_user"),
    ("/v1/triggers/due", {"users": ["u0", "u0"]}, 422, "duplicate_user"),
    ("/v1/triggers/due", {"users": []}, 422, "invalid_request"),
    ("/v1/items/updates", {"item_id": "i0"}, 422, "invalid_request"),
    ("/v1/items/updates", {"item_id": "nope", "price": 1.0}, 404, "unknown_item"),
    ("/v1/items/updates", {"item_id": "i0", "price": -1.0}, 422, "invalid_request"),
])
def test_bad_trigger_requests_get_one_line_4xx(tmp_path: Path, path: str, body: dict[str, Any],
                                               status: int, code: str) -> None:
    c = _client(tmp_path)
    try:
        seed_world(c)
        r = c.post(path, json=body)
        assert r.status_code == status and r.json()["error"] == code, r.text
        assert "\n" not in r.json()["detail"]
    finally:
        c.__exit__(None, None, None)


def test_a_server_without_triggers_says_how_to_turn_them_on(make_client: Any) -> None:
    c = make_client()
    seed_world(c)
    r = c.post("/v1/triggers/due", json={"users": ["u0"]})
    assert r.status_code == 409 and "--triggers" in r.json()["detail"], r.text
    # events still work, and item updates are still logged (for the export)
    _ev(c, {"user_id": "u0", "event": "cart", "item_id": "i1"})
    r = c.post("/v1/items/updates", json={"item_id": "i1", "price": 3.0})
    assert r.json() == {"accepted": 1, "triggers_created": 0}


def test_export_round_trips_through_the_loader(tmp_path: Path) -> None:
    c = _client(tmp_path)
    try:
        seed_world(c)
        _ev(c, {"user_id": "u0", "event": "cart", "item_id": "i1", "ts": T},
            {"user_id": "u1", "event": "cart", "item_id": "i2", "ts": T},
            {"user_id": "u1", "event": "purchase", "item_id": "i2", "ts": T + 60})
        c.post("/v1/items/updates", json={"item_id": "i3", "price": 4.0, "ts": T + 90})
        sent = _due(c, ["u0", "u1", "u2"], T + HOUR)["sends"]
        c.post("/v1/decide", json={"user_id": "u2", "ts": T + HOUR})
    finally:
        c.__exit__(None, None, None)
    r = CliRunner().invoke(cli, ["logs", "export", "--state", str(tmp_path / "state"), "--out",
                                 str(tmp_path / "out"), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert (res["triggers"], res["trigger_sends"], res["item_updates"]) == (2, 1, 1)
    r = CliRunner().invoke(cli, ["data", "validate", str(tmp_path / "out"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["tables"]["triggers"]["rejected"] == 0, r.stdout
    ds, rep = load_dataset(tmp_path / "out")
    assert rep.n_rejected == 0 and rep.reconciles(), rep.to_dict()["tables"]
    p = ds.pushes.set_index("decision_id")
    assert p.loc[sent[0]["decision_id"], "trigger_id"] == sent[0]["trigger_id"]
    assert p["trigger_id"].isna().sum() == 1  # the scheduled decision
    trig = pd.read_parquet(tmp_path / "out" / "triggers.parquet").set_index("user_id")
    assert trig.loc["u0", "status"] == "sent" and trig.loc["u1", "status"] == "cancelled"
    assert trig.loc["u0", "decision_id"] == sent[0]["decision_id"]
    assert trig["delay_h"].tolist() == [1, 1] and trig["pscore"].tolist() == [1.0, 1.0]


def test_a_large_event_batch_is_recorded_off_the_event_loop(tmp_path: Path) -> None:
    c = _client(tmp_path)
    try:
        seed_world(c, n_users=100)
        srv = c.app.state.server  # type: ignore[attr-defined]
        seen: list[str] = []
        events = srv.events

        def spy(evs: Any) -> Any:  # which thread records the batch
            import threading
            seen.append(threading.current_thread().name)
            return events(evs)

        srv.events = spy
        _ev(c, *[{"user_id": f"u{i}", "event": "cart", "item_id": "i1", "ts": T}
                 for i in range(100)])
        _ev(c, {"user_id": "u0", "event": "view", "item_id": "i2", "ts": T + 1})
        # the big batch ran in asyncio's worker pool, the single event on the loop's thread
        assert len(seen) == 2 and seen[0].startswith("asyncio") and seen[1] != seen[0], seen
        out = _due(c, [f"u{i}" for i in range(100)], T + HOUR)
        assert len(out["sends"]) == 100
    finally:
        c.__exit__(None, None, None)


def _phase(c: TestClient, rng: np.random.Generator, t0: int, hours: int) -> None:
    for h in range(hours):
        t = t0 + h * HOUR
        evs = [{"user_id": f"u{i}", "event": str(rng.choice(["view", "cart", "purchase"])),
                "item_id": f"i{rng.integers(4)}", "ts": t} for i in range(3)
               if rng.random() < 0.5]
        if evs:
            _ev(c, *evs)
        if h % 3 == 0:
            c.post("/v1/items/updates", json={"item_id": f"i{rng.integers(4)}", "ts": t + 5,
                                              "price": float(rng.choice([5.0, 9.0]))})
        _due(c, ["u0", "u1", "u2"], t + 1800)


def test_restart_rebuilds_the_same_tracker_from_a_snapshot_or_the_journal(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(3)
    snap = tmp_path / "state" / SNAPSHOT_FILE
    c = _client(tmp_path)
    try:
        seed_world(c)
        _phase(c, rng, T, 30)
    finally:
        c.__exit__(None, None, None)  # clean shutdown: snapshot A
    old = snap.read_text()
    c = _client(tmp_path)
    try:
        _phase(c, rng, T + 30 * HOUR, 30)
        live = _tracker(c).to_dict()
    finally:
        c.__exit__(None, None, None)  # snapshot B
    assert live["triggers"] and snap.read_text() != old
    for how in ("snapshot B", "snapshot A + journal", "journal only", "damaged snapshot"):
        if how == "snapshot A + journal":
            snap.write_text(old)
        elif how == "journal only":
            snap.unlink()
        elif how == "damaged snapshot":
            snap.write_text(old.replace('"seq": ', '"seq": 1'))
        caplog.clear()
        c = _client(tmp_path)
        try:
            assert _tracker(c).to_dict() == live, how
        finally:
            c.__exit__(None, None, None)
        fell_back = "trigger snapshot" in caplog.text
        assert fell_back == (how == "damaged snapshot"), (how, caplog.text)


@pytest.mark.parametrize(("content", "match"), [
    (None, "cannot read it"),
    ("[triggers", "not valid TOML"),
    ("[other]\nx = 1\n", "no \\[triggers\\] table"),
    ("[triggers.cart]\nwait = 1\n", "wait is not a cart setting"),
    ("[triggers.carts]\n", "unknown trigger kind"),
])
def test_serve_refuses_bad_trigger_rules_in_one_line(tmp_path: Path, content: str | None,
                                                     match: str) -> None:
    from pushrl.cli.serve import _trigger_rules
    from pushrl.errors import PushrlError

    f = tmp_path / "rules.toml"
    if content is not None:
        f.write_text(content)
    with pytest.raises(PushrlError, match=match) as exc:
        _trigger_rules(str(f))
    assert "\n" not in str(exc.value)


def test_serve_reads_trigger_rules_from_a_scenario_like_file(tmp_path: Path) -> None:
    from pushrl.cli.serve import _trigger_rules

    f = tmp_path / "scenario.toml"
    f.write_text("[guardrails]\nquiet_start = 22\n\n[triggers.cart]\nwait_h = 2\n"
                 "[triggers.winback]\nenabled = false\n")
    got = _trigger_rules(str(f))
    assert got is not None and got["cart"].wait_h == 2 and "winback" not in {
        k.value for k in got.enabled}
    assert _trigger_rules("default") == TriggerConfig.default() and _trigger_rules(None) is None


def test_a_delay_baseline_decides_the_arms(tmp_path: Path) -> None:
    c = _client(tmp_path, trigger_delay_policy="delay-fixed-0h")
    try:
        seed_world(c)
        _ev(c, {"user_id": "u0", "event": "cart", "item_id": "i1", "ts": T})
        (s,) = _due(c, ["u0"], T + 60)["sends"]  # arm 0: due at the cart itself
        assert (s["delay_h"], s["pscore"], s["policy"]) == (0, 1.0, "delay-fixed-0h@0")
    finally:
        c.__exit__(None, None, None)


def test_a_trained_delay_artifact_decides_with_its_logged_probability(tmp_path: Path) -> None:
    from pushrl.policies.vw import VWItemPolicy
    from pushrl.sim.trigger_context import common_arms
    from pushrl.train.delay import DELAY_VW, delay_layout

    arms = common_arms(TriggerConfig.default())
    pol = VWItemPolicy(delay_layout(arms), DELAY_VW.args(), name="delay-vw")  # untrained
    art = pol.save(tmp_path / "delay-vw", {"trigger_policy": {"arms": list(arms)}})
    c = _client(tmp_path, trigger_delay_policy=str(art))
    try:
        seed_world(c, n_users=20)
        _ev(c, *[{"user_id": f"u{i}", "event": "cart", "item_id": f"i{i % 4}", "ts": T}
                 for i in range(20)])
        got = [t for i in range(20) for t in
               c.get(f"/v1/users/u{i}/triggers").json()["triggers"]]
        dropped = 20 - len(got)  # the drop arm closes a trigger at once
        assert all(t["delay_h"] in arms and 0 < t["pscore"] <= 1 for t in got), got
        assert any(t["pscore"] < 1 for t in got)  # VW explores: the probability is logged
        before = _tracker(c).to_dict()
    finally:
        c.__exit__(None, None, None)
    db = sqlite3.connect(tmp_path / "state" / "log.sqlite3")
    rows = db.execute("SELECT delay_h, pscore, policy, status FROM triggers").fetchall()
    assert len(rows) == 20 and sum(r[3] == "dropped" for r in rows) == dropped
    assert {r[2] for r in rows} == {f"delay-vw@{art.name}"}
    db.close()
    (tmp_path / "state" / SNAPSHOT_FILE).unlink()
    c = _client(tmp_path, trigger_delay_policy=str(art))
    try:  # the replay re-applies the logged arms (no new draws)
        assert _tracker(c).to_dict() == before
    finally:
        c.__exit__(None, None, None)


@pytest.mark.parametrize(("ref", "match"), [
    ("most-popular", "not a delay policy"),
    ("no/such/dir", "no/such/dir"),
])
def test_a_bad_delay_policy_is_refused_at_start(tmp_path: Path, ref: str, match: str) -> None:
    from pushrl.errors import PushrlError

    with pytest.raises(PushrlError, match=match):
        _client(tmp_path, trigger_delay_policy=ref)


def test_closed_triggers_are_forgotten_after_the_retention_durably(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a 24 h retention and a daily scan, closed triggers older than it leave the
    tracker (and its snapshot) at the first clock advance of each day, a restart (snapshot or
    journal only) rebuilds the same tracker, and the export still has every trigger row."""
    from pushrl.serve import triggers as server_triggers

    monkeypatch.setattr(server_triggers, "RETENTION_H", 24)
    monkeypatch.setattr(server_triggers, "FORGET_EVERY", 86400)  # (a week by default)
    rng = np.random.default_rng(5)
    snap = tmp_path / "state" / SNAPSHOT_FILE
    c = _client(tmp_path)
    try:
        seed_world(c)
        _phase(c, rng, T, 30)
        first = {t["trigger_id"]: t["status"] for t in _tracker(c).to_dict()["triggers"]}
        _phase(c, rng, T + 30 * HOUR, 40)  # crosses two UTC days
        tr = _tracker(c)
        live = tr.to_dict()
        now = int(tr.now)
    finally:
        c.__exit__(None, None, None)
    closed_first = [k for k, s in first.items() if s != "open"]
    gone = [k for k in first if tr.get(k) is None]
    assert closed_first and gone  # (a trigger still open then may be closed and gone now)
    day_start = now // 86400 * 86400  # the last forgetting ran at this day's first advance
    for t in live["triggers"]:
        assert t["status"] == "open" or t["event_ts"] >= day_start - 24 * HOUR - 86400, t
    for how in ("snapshot", "journal only"):
        if how == "journal only":
            snap.unlink()
        c = _client(tmp_path)
        try:
            assert _tracker(c).to_dict() == live, how
        finally:
            c.__exit__(None, None, None)
    ds = export(tmp_path / "state", tmp_path / "out")
    trig = pd.read_parquet(Path(ds["out"]) / "triggers.parquet")
    with sqlite3.connect(tmp_path / "state" / LOG_FILE) as conn:
        n_rows = conn.execute("SELECT count(*) FROM triggers").fetchone()[0]
    assert len(trig) == n_rows and set(gone) <= set(trig["trigger_id"])
    assert "open" not in set(trig.loc[trig["trigger_id"].isin(gone), "status"])
