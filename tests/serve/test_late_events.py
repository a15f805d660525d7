"""Late and out-of-order events through the server: placed in their hour, later decisions
see them as if on time, answered decisions are not changed, beyond ``--late-bound`` a 409;
feedback without ``ts`` is not flagged late because a decision's time is not the wall
clock's."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from pushrl.serve.app import create_app
from tests.serve.conftest import T0, AlwaysSend, CoinFlip, doubles, make_cfg

H = 3600
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]
N = 4
HOURS = 60
HELD = range(10, 20)  # hours whose events arrive late
DELIVER = 30  # ... all of them just before the decisions of this hour (10-20 h late)


def _events(rng: np.random.Generator) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for h in range(HOURS):
        for i in range(N):
            for _ in range(int(rng.poisson(0.8))):
                ev: dict[str, Any] = {"user_id": f"u{i}", "event": "view",
                                      "ts": T0 + h * H + int(rng.integers(0, H))}
                if rng.random() < 0.7:
                    ev["item_id"] = f"i{rng.integers(0, 6)}"
                out.setdefault(h, []).append(ev)
    return out


def _run(tmp: Path, late: bool) -> tuple[dict[int, np.ndarray], Any]:
    """Drive a server hour by hour; returns decision features by hour ``(N, F)``."""
    cfg = make_cfg(tmp, catalog=None)
    app = create_app(cfg, overrides=doubles(timing=CoinFlip(0.3)))
    events = _events(np.random.default_rng(5))
    feats: dict[int, np.ndarray] = {}
    with TestClient(app) as c:
        for j in range(6):
            c.put(f"/v1/items/i{j}", json={"category": "abc"[j % 3], "features": {}})
        for i in range(N):
            assert c.put(f"/v1/users/u{i}", json={"timezone": ZONES[i], "ts": T0}
                         ).status_code == 200
        held: list[dict[str, Any]] = []
        for h in range(HOURS):
            if late and h == DELIVER:
                rng = np.random.default_rng(1)
                order = rng.permutation(len(held))  # out of order as well
                r = c.post("/v1/events", json={"events": [held[k] for k in order]})
                assert r.status_code == 200, r.text
            ids = []
            for i in range(N):
                d = c.post("/v1/decide", json={"user_id": f"u{i}", "ts": T0 + h * H + 1800})
                assert d.status_code == 200, d.text
                ids.append(d.json()["decision_id"])
            evs = events.get(h, [])
            if late and h in HELD:
                held += evs
            elif evs:
                assert c.post("/v1/events", json={"events": evs}).status_code == 200
            conn = sqlite3.connect(tmp / "state" / "log.sqlite3")
            marks = ",".join("?" * len(ids))
            q = f"SELECT decision_id, features FROM decisions WHERE decision_id IN ({marks})"
            got = dict(conn.execute(q, ids).fetchall())
            conn.close()
            feats[h] = np.stack([np.frombuffer(got[d], np.float32) for d in ids])
        n = app.state.server.state.fs.n
        st = app.state.server.state.fs
        final = st.copy_users(np.arange(n)).features(np.arange(n), st.clock(0) + 3)
    return feats, final


def test_late_events_equal_on_time_events(tmp_path: Path) -> None:
    """Decisions after the late delivery get exactly the in-order stream's features (float32,
    tolerance 0); decisions before it saw only what had arrived; the restart rebuilds the
    same state from the journal."""
    on_time, final_a = _run(tmp_path / "a", late=False)
    late, final_b = _run(tmp_path / "b", late=True)
    for h in range(HOURS):
        if h <= HELD.start or h >= DELIVER:
            np.testing.assert_array_equal(late[h], on_time[h], err_msg=f"hour {h}")
    # in between, the late server had not seen the held events: activity_7d is lower
    assert (late[DELIVER - 1][:, 8] < on_time[DELIVER - 1][:, 8]).any()
    np.testing.assert_array_equal(final_b, final_a)
    cfg = make_cfg(tmp_path / "b", catalog=None)
    app = create_app(cfg, overrides=doubles(timing=CoinFlip(0.3)))
    with TestClient(app):
        st = app.state.server.state.fs
        again = st.copy_users(np.arange(st.n)).features(np.arange(st.n), st.clock(0) + 3)
    np.testing.assert_array_equal(again, final_b)


def test_beyond_the_late_bound_is_409(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, catalog=None, late_bound_hours=24)
    with TestClient(create_app(cfg, overrides=doubles())) as c:
        c.put("/v1/items/i0", json={"category": "a", "features": {}})
        c.put("/v1/users/u", json={"timezone": "UTC", "ts": T0})
        assert c.post("/v1/decide", json={"user_id": "u", "ts": T0 + 48 * H}).status_code == 200
        ok = c.post("/v1/events", json={"user_id": "u", "event": "view", "ts": T0 + 25 * H})
        assert ok.status_code == 200, ok.text  # 23 h late: placed in its hour
        r = c.post("/v1/events", json={"events": [
            {"user_id": "u", "event": "view", "ts": T0 + 40 * H},
            {"user_id": "u", "event": "view", "ts": T0 + 2 * H}]})
        assert r.status_code == 409
        body = r.json()
        assert body["error"] == "event_too_late"
        assert "events[1]" in body["detail"] and "24 h" in body["detail"]
        assert "--late-bound" in body["detail"]
        # all or nothing: the first event of the refused batch was not recorded
        srv = c.app.state.server  # type: ignore[attr-defined]
        assert srv.log.query("SELECT COUNT(*) FROM activity")[0][0] == 1


def test_feedback_without_ts_is_not_late_in_simulated_time(tmp_path: Path) -> None:
    """Decisions in March (the wall clock is later): a report without ``ts`` is on time while
    the user's state is within the attribution window, late once it moved past it."""
    cfg = make_cfg(tmp_path, catalog=None)
    with TestClient(create_app(cfg, overrides=doubles(timing=AlwaysSend()))) as c:
        c.put("/v1/items/i0", json={"category": "a", "features": {}})
        c.put("/v1/users/u", json={"timezone": "UTC", "ts": T0})
        d = c.post("/v1/decide", json={"user_id": "u", "ts": T0 + 12 * H}).json()
        assert d["send"]
        r = c.post("/v1/feedback", json={"decision_id": d["decision_id"], "opened": True})
        assert r.status_code == 200 and r.json()["late"] is False, r.text
        # the user's state moves 100 h on: a report now is late (window 72 h)
        c.post("/v1/decide", json={"user_id": "u", "ts": T0 + 112 * H})
        r = c.post("/v1/feedback", json={"decision_id": d["decision_id"], "clicked": True})
        assert r.status_code == 200 and r.json()["late"] is True, r.text
