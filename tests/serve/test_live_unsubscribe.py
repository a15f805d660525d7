"""A real `pushrl serve` process: after feedback ``unsubscribed=true`` the user gets 0 sends
through /v1/decide and /v1/decide/batch, also after ``kill -9`` and a restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from pushrl.policies.registry import save_artifact
from tests.serve.conftest import T0, bl
from tests.serve.live import LiveServer

H, DAY = 3600, 86400
USERS = ["u0", "u1", "u2", "u3"]
OPEN = ("--quiet-hours", "0-0", "--max-per-day", "0", "--max-per-week", "0")


def _at(day: int) -> int:
    return T0 + day * DAY + 21 * H  # fixed-hour sends at 21:00 local (UTC users)


def _batch(c: httpx.Client, users: list[str], ts: int) -> list[dict]:
    r = c.post("/v1/decide/batch", json={"requests": [{"user_id": u, "ts": ts} for u in users]})
    assert r.status_code == 200, r.text
    return list(r.json()["decisions"])


def _one(c: httpx.Client, user: str, ts: int) -> dict:
    r = c.post("/v1/decide", json={"user_id": user, "ts": ts})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_unsubscribed_user_gets_no_push_across_endpoints_and_kill_9(tmp_path: Path) -> None:
    reg = tmp_path / "policies"
    save_artifact(reg / "fixed", kind="timing", loader="baseline", files={},
                  card={"baseline": bl("fixed-hour"), "params": {},
                        "ope": {"gate": {"passed": True, "failed_rules": []}}})
    srv = LiveServer(tmp_path, *OPEN)
    try:
        with httpx.Client(base_url=srv.base, timeout=30) as c:
            for j in range(3):
                c.put(f"/v1/items/i{j}", json={"category": "ab"[j % 2]}).raise_for_status()
            for u in USERS:
                c.put(f"/v1/users/{u}", json={"timezone": "UTC", "ts": T0}).raise_for_status()
            c.post("/v1/policies/fixed/promote", json={"reason": "test"}).raise_for_status()
            first = _batch(c, USERS, _at(0))
            assert all(d["send"] and d["p_send"] == 1.0 for d in first), first
            r = c.post("/v1/feedback", json={"decision_id": first[0]["decision_id"],
                                             "unsubscribed": True, "ts": _at(0) + 600})
            assert r.status_code == 200, r.text
            d = _one(c, "u0", _at(1))
            assert (d["send"], d["reason"], d["p_send"]) == (False, "guardrail:unsubscribed", 0)
            assert _one(c, "u1", _at(1))["send"]
            out = _batch(c, USERS, _at(2))
            assert [o["send"] for o in out] == [False, True, True, True]
    finally:
        srv.kill()  # no clean shutdown
    srv2 = LiveServer(tmp_path, *OPEN)
    try:
        with httpx.Client(base_url=srv2.base, timeout=30) as c:
            assert not _one(c, "u0", _at(3))["send"]
            out = _batch(c, USERS, _at(4))
            assert [o["send"] for o in out] == [False, True, True, True]
            assert out[0]["reason"] == "guardrail:unsubscribed"
    finally:
        srv2.stop()
    db = sqlite3.connect(tmp_path / "state" / "log.sqlite3")
    rows = db.execute("SELECT user_id, sum(sent), count(*) FROM decisions WHERE ts > ? "
                      "GROUP BY user_id", (_at(0),)).fetchall()
    # u0 asked on days 1-4 (never sent); u1 on days 1, 2, 4; u2, u3 on days 2 and 4
    assert {u: (s, n) for u, s, n in rows} == {"u0": (0, 4), "u1": (3, 3), "u2": (2, 2),
                                              "u3": (2, 2)}
