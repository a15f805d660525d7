"""#15 item 9: a failed commit (full disk) rolls the in-memory state back, the server becomes
ready again by itself once the log takes writes, and the error lines are rate-limited."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pushrl.serve import server as server_mod
from pushrl.serve import store
from pushrl.rules.guardrails import Guardrails
from tests.serve.conftest import T0, FullDisk, seed_world

H = 3600
CAP1 = Guardrails(quiet_start=0, quiet_end=0, max_sends_per_day=1)


@contextlib.contextmanager
def full_disk(srv: Any) -> Iterator[None]:
    conn = srv.log._writer_conn
    srv.log._writer_conn = FullDisk(conn)  # the writer thread takes it at each commit
    try:
        yield
    finally:
        srv.log._writer_conn = conn  # space freed: commits work again


def _arrays(srv: Any) -> dict[str, np.ndarray]:
    fs = srv.state.fs
    return {k: v[..., :fs.n].copy() for k, v in vars(fs.a).items() if isinstance(v, np.ndarray)}


def _wait_ready(c: Any, seconds: float = 20.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if c.get("/readyz").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"not ready after {seconds} s: {c.get('/readyz').text}")


@pytest.fixture(autouse=True)
def _fast_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_mod, "RECOVER_SECONDS", (0.05, 0.2), raising=False)


def test_failed_commit_rolls_state_back_and_recovers(make_client: Any) -> None:
    c = make_client(guardrails=CAP1)
    seed_world(c)
    srv = c.app.state.server
    before, users = _arrays(srv), dict(srv.state.users)
    n_decisions = srv.log.query("SELECT count(*) FROM decisions")[0][0]
    with full_disk(srv):
        r = c.post("/v1/decide", json={"user_id": "u0", "ts": T0 + 12 * H})
        assert r.status_code == 503, r.text
        r = c.post("/v1/events", json={"user_id": "u1", "event": "view", "ts": T0 + 12 * H})
        assert r.status_code == 503, r.text
        assert c.get("/readyz").status_code == 503
        time.sleep(0.3)  # the recovery keeps probing the full disk meanwhile
        assert c.get("/readyz").status_code == 503
    _wait_ready(c)
    assert srv.state.users == users
    after = _arrays(srv)
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v, err_msg=k)
    assert srv.log.query("SELECT count(*) FROM decisions")[0][0] == n_decisions
    # the refused send does not count against the daily cap of 1: the same decide now sends
    d = c.post("/v1/decide", json={"user_id": "u0", "ts": T0 + 12 * H})
    assert d.status_code == 200, d.text
    assert d.json()["send"] and d.json()["reason"] == "policy"
    again = c.post("/v1/decide", json={"user_id": "u0", "ts": T0 + 13 * H}).json()
    assert again["reason"] == "guardrail:daily_cap"
    # a restart agrees with the recovered state
    now = _arrays(srv)
    c.__exit__(None, None, None)
    restarted = _arrays(make_client(guardrails=CAP1).app.state.server)
    for k, v in now.items():
        np.testing.assert_array_equal(restarted[k], v, err_msg=k)


def test_error_lines_are_rate_limited(make_client: Any, caplog: pytest.LogCaptureFixture,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    if hasattr(store, "RateLimited"):  # a fresh limiter: earlier tests logged too
        monkeypatch.setattr(store, "errors", store.RateLimited(store.log))
    c = make_client()
    seed_world(c)
    srv = c.app.state.server
    with caplog.at_level(logging.ERROR, logger="pushrl.serve"), full_disk(srv):
        for i in range(60):
            r = c.post("/v1/events", json={"user_id": "u1", "event": "view",
                                           "ts": T0 + 12 * H + i})
            assert r.status_code == 503, r.text
            time.sleep(0.01)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert 1 <= len(lines) <= 4, lines
    _wait_ready(c)
