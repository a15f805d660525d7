"""A real `pushrl serve --holdout` process on 127.0.0.1 under concurrent load: 0 pushes to
held-out users (responses and the durable log), also across a ``kill -9`` and restart."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from pushrl.policies.registry import save_artifact
from pushrl.rules.holdout import Holdout
from tests.serve.conftest import T0, bl
from tests.serve.live import LiveServer

pytestmark = pytest.mark.slow

DAY = 86400  # every decision at 00:00 UTC, the fixed hour: every treated user sends
N_USERS, CLIENTS, HOURS = 400, 16, 6
OPEN = ("--quiet-hours", "0-0", "--max-per-day", "0", "--max-per-week", "0")
HOLD = Holdout(0.2, "live")


def _load(base: str, users: list[str], hour: int) -> list[dict]:
    """CLIENTS threads: half single decides, half batches of 10 users."""
    def one(chunk: list[str]) -> list[dict]:
        out = []
        with httpx.Client(base_url=base, timeout=60) as c:
            if len(chunk) % 2:
                for u in chunk:
                    r = c.post("/v1/decide", json={"user_id": u, "ts": T0 + hour * DAY})
                    assert r.status_code == 200, r.text
                    out.append({**r.json(), "user_id": u})
            else:
                for a in range(0, len(chunk), 10):
                    part = chunk[a:a + 10]
                    r = c.post("/v1/decide/batch", json={"requests": [
                        {"user_id": u, "ts": T0 + hour * DAY} for u in part]})
                    assert r.status_code == 200, r.text
                    out += [{**d, "user_id": u} for d, u in zip(r.json()["decisions"], part,
                                                                  strict=True)]
        return out

    chunks = [users[i::CLIENTS] for i in range(CLIENTS)]
    with ThreadPoolExecutor(CLIENTS) as ex:
        return [d for part in ex.map(one, chunks) for d in part]


def test_no_push_to_held_out_users_under_load(tmp_path: Path) -> None:
    users = [f"user-{i}" for i in range(N_USERS)]
    held = dict(zip(users, HOLD.held_out(users).tolist(), strict=True))
    # fixed-hour at every hour of the test: every treated decision wants to send
    save_artifact(tmp_path / "policies" / "fixed", kind="timing", loader="baseline", files={},
                  card={"baseline": bl("fixed-hour"), "params": {"hour": 0, "daily_cap": 99},
                        "ope": {"gate": {"passed": True, "failed_rules": []}}})
    args = (*OPEN, "--holdout", "0.2", "--holdout-salt", "live")
    srv = LiveServer(tmp_path, *args)
    decisions: list[dict] = []
    try:
        with httpx.Client(base_url=srv.base, timeout=30) as c:
            c.post("/v1/policies/fixed/promote", json={"reason": "test"}).raise_for_status()
            for j in range(4):
                c.put(f"/v1/items/i{j}", json={"category": "ab"[j % 2]}).raise_for_status()
            for u in users:
                c.put(f"/v1/users/{u}", json={"timezone": "UTC", "ts": T0}).raise_for_status()
        for hour in range(HOURS // 2):
            decisions += _load(srv.base, users, hour)
        srv.kill()  # kill -9: the restart reads the stored holdout (no --holdout flag)
        srv = LiveServer(tmp_path, *OPEN)
        for hour in range(HOURS // 2, HOURS):
            decisions += _load(srv.base, users, hour)
    finally:
        srv.stop()
    assert len(decisions) == N_USERS * HOURS
    to_held = [d for d in decisions if held[d["user_id"]] and d["send"]]
    assert to_held == []
    assert all(d["holdout"] == held[d["user_id"]] and d["p_holdout"] == 0.2 for d in decisions)
    # every treated decision sent, every held-out one was blocked by the guardrail
    first = decisions
    assert all(d["send"] != held[d["user_id"]] for d in first)
    db = sqlite3.connect(tmp_path / "state" / "log.sqlite3")
    rows = db.execute("SELECT user_id, sent, holdout, p_holdout FROM decisions").fetchall()
    db.close()
    assert len(rows) == N_USERS * HOURS
    assert sum(s for u, s, _, _ in rows if held[u]) == 0
    assert all(h == int(held[u]) and p == 0.2 for u, _, h, p in rows)
