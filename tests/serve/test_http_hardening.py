"""HTTP-level hardening (issue #15 items 7, 10, 11; #12 readiness; #13 item 3): client
disconnects are client errors, half-sent requests are closed, the audit log names the key,
docs/metrics auth is a flag, /readyz means decide can answer, and the server's defaults come
from its own data."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import generate_latest

from pushrl.serve import registry_ops as ops
from pushrl.serve.auth import new_key
from tests.serve.conftest import T0, AlwaysSend, UniformItem, bl, doubles, make_cfg, seed_world
from tests.serve.test_registry_ops import PASS, artifact

H = 3600


def _statuses(c: Any) -> set[str]:
    text = generate_latest(c.app.state.server.metrics.registry).decode()
    return {line.split('status="')[1].split('"')[0] for line in text.splitlines()
            if line.startswith("serve_request_duration_seconds_count")}


# ---------------------------------------------------------------- item 7: client disconnects
@pytest.mark.parametrize("path", ["/v1/decide", "/v1/events", "/v1/feedback"])
def test_client_disconnect_mid_body_is_a_client_error(
        make_client: Any, path: str, caplog: pytest.LogCaptureFixture) -> None:
    c = make_client()
    seed_world(c)
    msgs = iter([{"type": "http.request", "body": b'{"user_id": "u0", "ev', "more_body": True}])

    async def receive() -> dict[str, Any]:
        return next(msgs, {"type": "http.disconnect"})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "scheme": "http", "client": ("127.0.0.1", 5000),
             "server": ("127.0.0.1", 8000),
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"200")]}
    with caplog.at_level(logging.INFO):
        c.portal.call(c.app, scope, receive, send)
    assert sent[0]["status"] == 499
    assert "499" in _statuses(c) and "500" not in _statuses(c)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if r.exc_info]
    assert any("client disconnected" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- item 11: audit key id, auth
def _keys(tmp_path: Path) -> tuple[Path, str, str]:
    f = tmp_path / "keys.json"
    return f, new_key(f, ["decide", "admin"], "ops"), new_key(f, ["decide"], "svc")


def test_audit_log_records_the_api_key_id(make_client: Any, tmp_path: Path) -> None:
    reg = tmp_path / "policies"
    artifact(reg, "good", bl("fixed-hour"), PASS)
    f, admin, _ = _keys(tmp_path)
    c = make_client(api_keys=f)
    hdr = {"X-API-Key": admin}
    assert c.post("/v1/policies/good/promote", json={}, headers=hdr).status_code == 200
    assert c.post("/v1/policies/good/rollback", json={"reason": "r"},
                  headers={"Authorization": f"Bearer {admin}"}).status_code == 200
    r = c.put("/v1/kill-switch", json={"enabled": True, "reason": "incident"}, headers=hdr)
    assert r.status_code == 200, r.text
    audit = [json.loads(x) for x in (reg / ops.AUDIT).read_text().splitlines()]
    assert [(a["action"], a["user"]) for a in audit] == [
        ("promote", "api-key:ops"), ("rollback_active", "api-key:ops"),
        ("kill_switch", "api-key:ops")]


@pytest.mark.parametrize("public", [False, True])
def test_docs_and_metrics_auth_is_a_flag(make_client: Any, tmp_path: Path,
                                         public: bool) -> None:
    f, _, svc = _keys(tmp_path)
    c = make_client(api_keys=f, public_docs=public, public_metrics=public)
    for path in ("/metrics", "/openapi.json", "/docs"):
        r = c.get(path)
        assert r.status_code == (200 if public else 401), (path, r.text)
        assert c.get(path, headers={"X-API-Key": svc}).status_code == 200
        assert c.get(path, headers={"X-API-Key": "wrong"}).status_code == (200 if public
                                                                            else 401)
    paths = c.get("/openapi.json", headers={"X-API-Key": svc}).json()["paths"]
    assert "/v1/decide" in paths and "/docs" not in paths
    assert c.get("/healthz").status_code == 200  # liveness stays open


def test_without_keys_everything_is_open(make_client: Any) -> None:
    c = make_client()
    for path in ("/metrics", "/openapi.json", "/docs"):
        assert c.get(path).status_code == 200


# ---------------------------------------------------------------- #12: readiness
def test_readyz_is_not_ready_while_decide_cannot_answer(make_client: Any) -> None:
    c = make_client()
    r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["error"] == "no_items", r.text
    assert "PUT /v1/items" in r.json()["detail"]
    assert c.get("/healthz").status_code == 200
    seed_world(c)
    assert c.get("/readyz").status_code == 200


# ---------------------------------------------------------------- #13 item 3: own data
def test_default_item_policy_comes_from_what_the_server_has_seen(make_client: Any,
                                                                 tmp_path: Path) -> None:
    c = make_client(overrides={"timing": AlwaysSend()})
    srv = c.app.state.server
    assert srv.state.item_list == []  # nothing seeded from the embedded synthetic data
    for j in range(3):
        assert c.put(f"/v1/items/x{j}", json={"category": "ab"[j % 2]}).status_code == 200
    for u in ("a", "b", "c"):
        assert c.put(f"/v1/users/{u}", json={"timezone": "UTC", "ts": T0}).status_code == 200
    evs = [{"user_id": "a", "event": "view", "item_id": i, "ts": T0 + 60 * k}
           for k, i in enumerate(["x2", "x2", "x1", "x2"])]
    assert c.post("/v1/events", json={"events": evs}).status_code == 200, evs
    d = c.post("/v1/decide", json={"user_id": "b", "ts": T0 + 12 * H}).json()
    assert d["send"] and d["item_id"] == "x2" and d["item_policy"] == "most-popular@server"
    assert d["pscore"] == 1.0
    # the counts come back from the durable log after a restart
    c.__exit__(None, None, None)
    c2 = make_client(overrides={"timing": AlwaysSend()})
    d = c2.post("/v1/decide", json={"user_id": "c", "ts": T0 + 12 * H}).json()
    assert d["item_id"] == "x2"


def test_default_item_policy_is_fit_on_the_given_catalog(
        make_client: Any, tmp_path: Path, tiny_synth: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    from pushrl.data.validate import load_dataset
    from pushrl.policies.item_baselines import MostPopular

    c = make_client(overrides={"timing": AlwaysSend()}, catalog=tiny_synth)
    saved = json.loads((tmp_path / "state" / "item_popularity.json").read_text())
    assert saved["source"] == str(tiny_synth)
    mp = MostPopular.fit(load_dataset(tiny_synth, quarantine=False)[0])
    best = {mp.item_ids[i] for i in np.flatnonzero(mp.scores == mp.scores.max())}
    assert c.put("/v1/users/u", json={"timezone": "UTC", "ts": T0}).status_code == 200
    assert c.get("/readyz").status_code == 200
    d = c.post("/v1/decide", json={"user_id": "u", "ts": T0 + 12 * H}).json()
    assert d["item_policy"] == "most-popular@server" and d["item_id"] in best

    # a restart with the same --catalog is quiet; another one is ignored, and says so
    c.__exit__(None, None, None)
    with caplog.at_level(logging.WARNING, logger="pushrl.serve"):
        make_client(overrides={"timing": AlwaysSend()}, catalog=tiny_synth).__exit__(
            None, None, None)
        assert not [r for r in caplog.records if "ignored" in r.getMessage()]
        make_client(overrides={"timing": AlwaysSend()}, catalog=tmp_path / "other")
    assert any("--catalog" in r.getMessage() and "ignored" in r.getMessage()
               for r in caplog.records)


# ---------------------------------------------------------------- item 10: read timeouts
@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[int, Any]]:
    """The real app under uvicorn (``pushrl serve``'s config) on 127.0.0.1, in a thread,
    with 0.5 s header and body timeouts."""
    import uvicorn

    from pushrl.serve.app import create_app
    from pushrl.serve.timeouts import HttpLimits, uvicorn_config

    app = create_app(make_cfg(tmp_path), overrides=doubles(item=UniformItem()))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=port, loop="asyncio",
                                           limits=HttpLimits(0.5, 0.5, 5, 100)))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield port, app
    server.should_exit = True
    t.join(10)


@pytest.mark.parametrize(("payload", "answer"), [
    (b"", b"408"),
    (b"POST /v1/decide HT", b"408"),
    (b"POST /v1/decide HTTP/1.1\r\nhost: x\r\ncontent-type: applic", b"408"),
    (b"POST /v1/decide HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
     b"content-length: 100\r\n\r\n{\"user_id\": ", b""),
])
def test_half_sent_requests_are_closed_within_the_timeout(live: tuple[int, Any],
                                                          payload: bytes, answer: bytes) -> None:
    port, app = live
    conns = []
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(5)
        s.sendall(payload)
        conns.append(s)
    t0 = time.monotonic()
    for s in conns:
        data = b""
        while chunk := s.recv(4096):  # until the server closes (recv raises on a timeout)
            data += chunk
        assert data.split(b" ")[1:2] == ([answer] if answer else []), data
        s.close()
    assert time.monotonic() - t0 < 2.5
    # a whole request on a kept-alive connection still works, slow or not
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(5)
        for _ in range(2):
            s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            time.sleep(0.2)
            s.sendall(b"\r\n")
            got = b""
            while b'"status":"ok"' not in got:
                got += s.recv(4096)
            assert got.startswith(b"HTTP/1.1 200"), got
    srv = app.state.server
    text = generate_latest(srv.metrics.registry).decode()
    assert 'status="500"' not in text
    if not answer:  # the body timed out: the request saw a disconnect, a client error
        assert 'status="499"' in text
