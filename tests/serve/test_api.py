"""HTTP API: happy paths, every client mistake is a clear 4xx, auth, ops endpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pushrl.errors import PushrlError
from pushrl.serve.auth import new_key
from tests.serve.conftest import T0, doubles, seed_world

H = 3600


def test_decide_feedback_roundtrip(make_client: Any) -> None:
    c = make_client()
    seed_world(c)
    r = c.post("/v1/events", json={"events": [
        {"user_id": "u0", "event": "view", "item_id": "i1", "ts": T0 + 60},
        {"user_id": "u0", "event": "session", "ts": T0 + 120}]})
    assert r.json() == {"accepted": 2}
    d = c.post("/v1/decide", json={"user_id": "u0", "ts": T0 + 12 * H}).json()
    assert d["send"] and d["reason"] == "policy" and d["policy"] == "always@test"
    assert d["item_id"] in {"i0", "i1", "i2", "i3"} and d["pscore"] == pytest.approx(0.25)
    fb = {"decision_id": d["decision_id"], "opened": True, "ts": T0 + 13 * H}
    r1 = c.post("/v1/feedback", json=fb)
    r2 = c.post("/v1/feedback", json=fb)  # idempotent
    assert r1.status_code == r2.status_code == 200
    assert r1.json() == r2.json()
    assert r2.json()["outcomes"]["opened"] is True and not r2.json()["late"]
    r3 = c.post("/v1/feedback", json={"decision_id": d["decision_id"], "clicked": True,
                                      "revenue": 3.5, "ts": T0 + 14 * H})
    assert r3.json()["outcomes"] == {"opened": True, "clicked": True, "converted": None,
                                     "revenue": 3.5, "unsubscribed": None}
    late = c.post("/v1/feedback", json={"decision_id": d["decision_id"], "converted": True,
                                        "ts": T0 + 12 * H + 73 * H}).json()
    assert late["late"] and late["outcomes"]["converted"] is None


def test_candidates_and_batch(make_client: Any) -> None:
    c = make_client()
    seed_world(c)
    r = c.post("/v1/decide/batch", json={"requests": [
        {"user_id": "u0", "ts": T0 + 12 * H, "candidates": ["i2"]},
        {"user_id": "u1", "ts": T0 + 12 * H, "candidates": ["i1", "i3"], "context": {"a": 1}}]})
    assert r.status_code == 200, r.text
    d0, d1 = r.json()["decisions"]
    assert d0["item_id"] == "i2" and d0["pscore"] == pytest.approx(1.0)
    assert d1["item_id"] in {"i1", "i3"} and d1["pscore"] == pytest.approx(0.5)


def test_batch_decides_a_users_requests_in_order(make_client: Any) -> None:
    c = make_client()  # AlwaysSend; daily cap 2
    seed_world(c)
    r = c.post("/v1/decide/batch", json={"requests": [
        {"user_id": "u0", "ts": T0 + 12 * H}, {"user_id": "u1", "ts": T0 + 12 * H},
        {"user_id": "u0", "ts": T0 + 12 * H}, {"user_id": "u0", "ts": T0 + 13 * H}]})
    assert r.status_code == 200, r.text
    d = r.json()["decisions"]
    assert [x["send"] for x in d] == [True, True, True, False]
    assert d[3]["reason"] == "guardrail:daily_cap"


def test_horizon_reports_next_send_slot(make_client: Any) -> None:
    c = make_client()
    seed_world(c)
    d = c.post("/v1/decide", json={"user_id": "u0", "ts": T0 + 23 * H + 10,
                                   "horizon_hours": 24}).json()
    assert not d["send"] and d["reason"] == "guardrail:quiet_hours"
    assert d["send_at"] == "2026-03-03T08:00:00Z"  # first hour after the quiet hours
    d = c.post("/v1/decide", json={"user_id": "u1", "ts": T0 + 23 * H, "horizon_hours": 3}).json()
    assert d["send_at"] is None


def test_kill_switch_never_sends(make_client: Any) -> None:
    c = make_client()
    seed_world(c)
    assert c.put("/v1/kill-switch", json={"enabled": True, "reason": "incident"}).status_code == 200
    d = c.post("/v1/decide", json={"user_id": "u0", "ts": T0 + 12 * H}).json()
    assert not d["send"] and d["reason"] == "guardrail:kill_switch"
    assert d["policy"].startswith("safe-default@")
    c.put("/v1/kill-switch", json={"enabled": False, "reason": "resolved"})
    assert c.post("/v1/decide", json={"user_id": "u1", "ts": T0 + 12 * H}).json()["send"]


BAD: list[tuple[str, str, Any, int, str]] = [
    ("post", "/v1/decide", {"user_id": "nobody"}, 404, "unknown_user"),
    ("post", "/v1/decide", {"user_id": "u0", "candidates": []}, 422, "candidates"),
    ("post", "/v1/decide", {"user_id": "u0", "candidates": ["zz"]}, 404, "unknown_item"),
    ("post", "/v1/decide", {"user_id": "u0", "candidates": ["i1", "i1"]}, 422, "twice"),
    ("post", "/v1/decide", {"user_id": 5}, 422, "user_id"),
    ("post", "/v1/decide", {"user_id": "u0", "horizon_hours": -1}, 422, "horizon_hours"),
    ("post", "/v1/decide", {"user_id": "u0", "horizon_hours": 1000}, 422, "horizon_hours"),
    ("post", "/v1/decide", {"user_id": "u0", "ts": "2026-03-02T10:00:00"}, 422, "timezone"),
    ("post", "/v1/decide", {"user_id": "u0", "ts": "3000-01-01T00:00:00Z"}, 422, "2000..2099"),
    ("post", "/v1/decide", {"user_id": "u0", "extra": 1}, 422, "extra"),
    ("post", "/v1/decide", {"user_id": "u0", "ts": T0 - 10 * H}, 409, "before"),
    ("post", "/v1/decide", [], 422, "body"),
    ("post", "/v1/decide/batch", {"requests": []}, 422, "requests"),
    ("post", "/v1/decide/batch", {"requests": [{"user_id": "u0", "ts": T0 + 5 * H},
                                                {"user_id": "u0", "ts": T0 + 4 * H}]}, 409,
     "order"),
    ("post", "/v1/events", {"user_id": "u0", "event": "dance"}, 422, "event"),
    ("post", "/v1/events", {"user_id": "u0", "event": "view", "revenue": -1}, 422, "revenue"),
    ("post", "/v1/events", {"user_id": "x", "event": "view"}, 404, "unknown_user"),
    ("post", "/v1/events", {"user_id": "u0", "event": "view", "item_id": "nope"}, 404,
     "unknown_item"),
    ("post", "/v1/events", {"events": []}, 422, "events"),
    ("post", "/v1/feedback", {"decision_id": "nope", "opened": True}, 404, "unknown_decision"),
    ("post", "/v1/feedback", {"decision_id": "d", "revenue": "lots"}, 422, "revenue"),
    ("put", "/v1/users/u9", {"timezone": "Mars/Olympus"}, 422, "timezone"),
    ("put", "/v1/users/u0", {"timezone": "Europe/Berlin"}, 409, "timezone"),
    ("put", "/v1/users/u9", {"features": {"a": {"nested": 1}}}, 422, "features"),
    ("put", "/v1/users/" + "x" * 200, {}, 422, "user_id"),
    ("post", "/v1/policies/nope/promote", {}, 404, "no policy"),
    ("post", "/v1/policies/nope/rollback", {}, 409, "neither"),
    ("get", "/v1/nothing", None, 404, "not_found"),
    ("delete", "/v1/decide", None, 405, "method"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "match"), BAD,
                         ids=[f"{m} {p[:24]} {s}" for m, p, _, s, _ in BAD])
def test_bad_input_is_a_clear_4xx(make_client: Any, method: str, path: str, body: Any,
                                  status: int, match: str) -> None:
    c = make_client()
    seed_world(c, ts=T0)
    r = c.request(method.upper(), path, json=body)
    assert r.status_code == status, r.text
    data = r.json()
    assert set(data) == {"error", "detail"}
    assert match.lower() in (data["error"] + " " + data["detail"]).lower()


def test_malformed_json_is_400(make_client: Any) -> None:
    c = make_client()
    r = c.post("/v1/decide", content=b'{"user_id": ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "malformed_json"
    r = c.post("/v1/decide", content=b'{"user_id": "u0", "horizon_hours": NaN}',
               headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500


def test_feedback_on_unsent_decision_is_409(make_client: Any) -> None:
    c = make_client()
    seed_world(c)
    d = c.post("/v1/decide", json={"user_id": "u0", "ts": T0 + 23 * H}).json()
    assert not d["send"]
    r = c.post("/v1/feedback", json={"decision_id": d["decision_id"], "opened": True})
    assert r.status_code == 409 and r.json()["error"] == "not_sent"


def test_auth_scopes(make_client: Any, tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    decide = new_key(keys, ["decide"])
    admin = new_key(keys, ["decide", "admin"])
    assert decide not in keys.read_text()  # stored hashed
    c = make_client(api_keys=keys)
    assert c.post("/v1/decide", json={"user_id": "u0"}).status_code == 401
    assert c.get("/v1/echo", headers={"X-API-Key": "wrong"}).status_code == 401
    assert c.get("/v1/echo", headers={"Authorization": f"Bearer {decide}"}).status_code == 200
    r = c.put("/v1/items/i0", json={}, headers={"X-API-Key": decide})
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    assert c.put("/v1/items/i0", json={}, headers={"X-API-Key": admin}).status_code == 200
    assert c.get("/healthz").status_code == 200  # probes need no key


def test_ops_endpoints_and_openapi(make_client: Any) -> None:
    c = make_client()
    seed_world(c)
    c.post("/v1/decide", json={"user_id": "u0", "ts": T0 + 23 * H})
    assert c.get("/healthz").json()["status"] == "ok"
    assert c.get("/readyz").json()["status"] == "ready"
    assert c.get("/v1/echo").json() == {"ok": True}
    m = c.get("/metrics").text
    for name in ("serve_request_duration_seconds_bucket", "serve_decisions_total",
                 "serve_sends_total", "serve_guardrail_blocks_total", "serve_log_commit_seconds"):
        assert name in m
    assert 'serve_guardrail_blocks_total{guardrail="quiet_hours"} 1.0' in m
    spec = c.get("/openapi.json").json()
    paths = set(spec["paths"])
    assert {"/v1/decide", "/v1/decide/batch", "/v1/feedback", "/v1/events", "/v1/users/{user_id}",
            "/v1/policies", "/v1/policies/{name}/promote", "/v1/policies/{name}/rollback",
            "/healthz", "/readyz", "/metrics", "/v1/echo"} <= paths
    assert "404" in spec["paths"]["/v1/decide"]["post"]["responses"]
    json.dumps(spec)


def test_shadow_decisions_are_logged_not_acted_on(make_client: Any, tmp_path: Path) -> None:
    from tests.serve.conftest import CoinFlip

    c = make_client(overrides=doubles(shadow_timing=CoinFlip(0.5)))
    seed_world(c)
    for i in range(3):
        d = c.post("/v1/decide", json={"user_id": f"u{i}", "ts": T0 + 12 * H}).json()
        assert d["policy"] == "always@test" and d["send"]
    import sqlite3

    rows = sqlite3.connect(tmp_path / "state" / "log.sqlite3").execute(
        "SELECT policy, send, pscore FROM shadow").fetchall()
    assert len(rows) == 3 and all(r[0] == "coin@test" and 0 < r[2] <= 1 for r in rows)


def test_kill_switch_survives_restart(make_client: Any) -> None:
    c = make_client()
    seed_world(c)
    c.put("/v1/kill-switch", json={"enabled": True, "reason": "incident"})
    with pytest.raises(PushrlError, match="in use by another pushrl server"):
        make_client()  # one server per state dir
    c.__exit__(None, None, None)
    c2 = make_client()  # same state dir, after a restart
    d = c2.post("/v1/decide", json={"user_id": "u0", "ts": T0 + 12 * H}).json()
    assert d["reason"] == "guardrail:kill_switch" and not d["send"]
