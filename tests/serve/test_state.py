"""The server's user state is the one feature pipeline: same numbers as the training replay,
and the same state after a restart (rebuilt from the durable log)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from pushrl.data.features import N_FEATURES, replay
from pushrl.data.validate import load_dataset
from pushrl.serve.app import create_app
from pushrl.serve.export import export
from tests.serve.conftest import T0, CoinFlip, doubles, make_cfg

H = 3600
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]


def _drive(c: TestClient, rng: np.random.Generator, hours: range, n_users: int, *,
           feedback: bool) -> None:
    """Random activity, decisions and (optionally) opens, in time order."""
    for h in hours:
        for i in range(n_users):
            t = T0 + h * H + int(rng.integers(0, 1200))
            if rng.random() < 0.5:
                c.post("/v1/events", json={"user_id": f"u{i}", "ts": t, "event": "view",
                                           "item_id": f"i{rng.integers(0, 6)}"})
            if rng.random() < 0.6:
                d = c.post("/v1/decide", json={"user_id": f"u{i}", "ts": t + 60}).json()
                if feedback and d["send"] and rng.random() < 0.5:
                    c.post("/v1/feedback", json={"decision_id": d["decision_id"], "opened": True,
                                                 "ts": t + 1800})
            if rng.random() < 0.3:
                c.post("/v1/events", json={"user_id": f"u{i}", "ts": t + 120,
                                           "event": "session"})


def _world(c: TestClient, n_users: int) -> None:
    for j in range(6):
        c.put(f"/v1/items/i{j}", json={"category": "abc"[j % 3], "features": {"price": j}})
    for i in range(n_users):
        c.put(f"/v1/users/u{i}", json={"timezone": ZONES[i % 4], "ts": T0})


def test_server_features_equal_training_replay(tmp_path: Path) -> None:
    """Decision features logged by the server == replay() of the exported log."""
    cfg = make_cfg(tmp_path, catalog=None)
    app = create_app(cfg, overrides=doubles(timing=CoinFlip(0.3)))
    with TestClient(app) as c:
        _world(c, 6)
        _drive(c, np.random.default_rng(1), range(0, 80), 6, feedback=False)
        spec = app.state.server.state.spec
    export(tmp_path / "state", tmp_path / "out")
    ds, rep = load_dataset(tmp_path / "out")
    assert rep.n_rejected == 0
    res = replay(ds, spec)
    blobs = dict(sqlite3.connect(tmp_path / "state" / "log.sqlite3").execute(
        "SELECT decision_id, features FROM decisions").fetchall())
    served = np.stack([np.frombuffer(blobs[d], np.float32) for d in ds.pushes["decision_id"]])
    assert served.shape == (len(ds.pushes), N_FEATURES) and ds.pushes["sent"].sum() > 10
    np.testing.assert_array_equal(served, res.features)


def _snapshot(srv: Any) -> dict[str, Any]:
    st = srv.state
    n = st.fs.n
    copy = st.fs.copy_users(np.arange(n))
    far = int(copy.a.clock[:n].max()) + 5
    return {"users": dict(st.users), "items": [it.item_id for it in st.item_list],
            "features": copy.features(np.arange(n), far),
            "profile": st.fs.hour_of_week_profile(np.arange(n)),
            "clock": st.fs.a.clock[:n].copy(),
            "sends": [c.tolist() for c in st.sends.counts(np.arange(n), np.full(n, far),
                                                          np.zeros(n, np.int64))],
            "affinity": st.fs.affinity(np.arange(n), np.broadcast_to(np.arange(3), (n, 3)))}


def test_restart_rebuilds_identical_state(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    app = create_app(cfg, overrides=doubles(timing=CoinFlip(0.4)))
    with TestClient(app) as c:
        _world(c, 5)
        _drive(c, np.random.default_rng(2), range(0, 60), 5, feedback=True)
        # a late event (before the user's clock) lands in the current bucket, as journaled
        c.post("/v1/events", json={"user_id": "u0", "ts": T0 + 3 * H, "event": "purchase",
                                   "item_id": "i1", "revenue": 9.5})
        before = _snapshot(app.state.server)
        n_dec = len(app.state.server.log.query("SELECT 1 FROM decisions"))
    app2 = create_app(cfg, overrides=doubles(timing=CoinFlip(0.4)))
    with TestClient(app2) as c2:
        after = _snapshot(app2.state.server)
        assert len(app2.state.server.log.query("SELECT 1 FROM decisions")) == n_dec
        d = c2.post("/v1/decide", json={"user_id": "u1", "ts": T0 + 61 * H}).json()
        assert "decision_id" in d
    assert before["users"] == after["users"] and before["items"] == after["items"]
    assert before["sends"] == after["sends"]
    for k in ("features", "profile", "clock", "affinity"):
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)
