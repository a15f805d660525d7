"""#15 items 1 and 11: request times are bounded, zones are real, outcomes are consistent."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.serve.conftest import T0, seed_world

H = 3600


@pytest.mark.parametrize("ts", ["2000-01-01T00:00:00Z", "2099-12-31T00:00:00Z", 946_684_800])
def test_times_outside_the_window_are_422(make_client: Any, ts: Any) -> None:
    c = make_client()
    seed_world(c)
    for method, path, body in [("PUT", "/v1/users/old", {"ts": ts}),
                               ("POST", "/v1/decide", {"user_id": "u0", "ts": ts}),
                               ("POST", "/v1/events", {"user_id": "u0", "event": "view",
                                                       "ts": ts})]:
        r = c.request(method, path, json=body)
        assert r.status_code == 422, r.text
        assert "--time-window" in r.json()["detail"]


def test_time_window_is_configurable(make_client: Any) -> None:
    c = make_client(time_window_days=(1, 1))
    seed_world(c, ts=int(time.time()) - 3600)
    assert c.put("/v1/users/a", json={"ts": T0}).status_code == 422
    c.__exit__(None, None, None)
    c2 = make_client(time_window_days=(40_000, 30_000))  # old data replayed on purpose
    assert c2.put("/v1/users/a", json={"ts": "2000-01-01T00:00:00Z"}).status_code == 200


@pytest.mark.parametrize("tz", ["localtime", "Factory", "posixrules"])
def test_machine_dependent_or_placeholder_zones_are_refused(make_client: Any, tz: str) -> None:
    c = make_client()
    r = c.put("/v1/users/u", json={"timezone": tz, "ts": T0})
    assert r.status_code == 422, r.text
    assert "timezone" in r.text


def _sent(c: Any) -> str:
    seed_world(c)
    d = c.post("/v1/decide", json={"user_id": "u0", "ts": T0 + 12 * H}).json()
    assert d["send"]
    return str(d["decision_id"])


def test_click_implies_open(make_client: Any) -> None:
    c = make_client()
    did = _sent(c)
    r = c.post("/v1/feedback", json={"decision_id": did, "opened": False, "clicked": True})
    assert r.status_code == 422 and "a click implies an open" in r.json()["detail"]
    r = c.post("/v1/feedback", json={"decision_id": did, "clicked": True, "ts": T0 + 13 * H})
    assert r.status_code == 200, r.text
    assert r.json()["outcomes"]["opened"] is True and r.json()["outcomes"]["clicked"] is True
    row = c.app.state.server.log.query("SELECT opened, clicked FROM decisions "
                                       "WHERE decision_id=?", (did,))
    assert row == [(1, 1)]


@pytest.mark.parametrize("restart", [False, True])
def test_revenue_of_the_latest_ts_wins(make_client: Any, restart: bool) -> None:
    c = make_client()
    did = _sent(c)
    fb = {"decision_id": did}
    assert c.post("/v1/feedback", json={**fb, "revenue": 9.0, "ts": T0 + 15 * H}).json()[
        "outcomes"]["revenue"] == 9.0
    if restart:  # the earlier report's ts comes from the log, not from memory
        c.__exit__(None, None, None)
        c = make_client()
    late_arrival = c.post("/v1/feedback", json={**fb, "revenue": 1.0, "ts": T0 + 13 * H})
    assert late_arrival.json()["outcomes"]["revenue"] == 9.0
    newer = c.post("/v1/feedback", json={**fb, "revenue": 4.0, "ts": T0 + 16 * H})
    assert newer.json()["outcomes"]["revenue"] == 4.0
    row = c.app.state.server.log.query("SELECT revenue FROM decisions WHERE decision_id=?",
                                       (did,))
    assert row == [(4.0,)]
