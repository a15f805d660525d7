"""The subscription guardrail in the server: feedback ``unsubscribed=true`` and ``PUT
/v1/users`` ``subscribed=false`` make every later decision a no-send, durably (rebuild from
the log, restart); ``subscribed=true`` re-enables sends; decisions return ``p_send``."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pushrl.rules.guardrails import Guardrails
from pushrl.serve.guardrails import Subscriptions
from tests.serve.conftest import T0, CoinFlip, doubles, seed_world

OPEN = Guardrails(0, 0, 0, 0)  # no quiet hours, no caps: only the subscription blocks
H = 3600


def _decide(c: Any, user: str, ts: int) -> dict:
    r = c.post("/v1/decide", json={"user_id": user, "ts": ts})
    assert r.status_code == 200, r.text
    return r.json()


def _batch(c: Any, users: list[str], ts: int) -> list[dict]:
    r = c.post("/v1/decide/batch", json={"requests": [{"user_id": u, "ts": ts} for u in users]})
    assert r.status_code == 200, r.text
    return r.json()["decisions"]


def test_subscriptions_grow_and_default_to_subscribed() -> None:
    s = Subscriptions()
    assert s.get(np.array([0, 5])).tolist() == [True, True]
    assert s.mask(np.array([0, 5])) is None  # nobody unsubscribed: no mask at all
    s.set(np.array([3, 3, 7]), False)
    s.set(np.array([7]), False)  # again: counted once
    assert s.get(np.array([2, 3, 4, 40, 7])).tolist() == [True, False, True, True, False]
    assert s.mask(np.array([3, 1])).tolist() == [False, True]
    s.set(3, True)
    assert s.is_subscribed(3) and s.mask(np.array([3])) is not None  # 7 still is
    s.set(np.array([7, 8]), True)
    assert s.mask(np.array([7])) is None


def test_unsubscribe_feedback_stops_sends_single_and_batch(make_client: Any) -> None:
    c = make_client(guardrails=OPEN)
    seed_world(c, n_users=3)
    d = _decide(c, "u0", T0)
    assert d["send"] and d["reason"] == "policy" and d["p_send"] == 1.0
    r = c.post("/v1/feedback", json={"decision_id": d["decision_id"], "unsubscribed": True,
                                     "ts": T0 + 60})
    assert r.status_code == 200 and r.json()["outcomes"]["unsubscribed"] is True, r.text
    for k in range(1, 4):
        d = _decide(c, "u0", T0 + k * H)
        assert (d["send"], d["reason"], d["p_send"], d["pscore"]) == (
            False, "guardrail:unsubscribed", 0.0, 1.0), d
    out = _batch(c, ["u0", "u1", "u2", "u0"], T0 + 5 * H)
    assert [o["send"] for o in out] == [False, True, True, False]
    assert out[0]["reason"] == out[3]["reason"] == "guardrail:unsubscribed"
    assert [o["p_send"] for o in out] == [0.0, 1.0, 1.0, 0.0]
    # the look-ahead obeys it too
    r = c.post("/v1/decide", json={"user_id": "u0", "ts": T0 + 6 * H, "horizon_hours": 24})
    assert r.json()["send_at"] is None
    # a repeated report changes nothing more (no second journal op)
    r = c.post("/v1/feedback", json={"decision_id": _first_sent(c, "u0"), "unsubscribed": True,
                                     "ts": T0 + 60})
    assert r.status_code == 200, r.text
    srv = c.app.state.server
    ops = srv.log.query("SELECT user_idx, arg FROM ops WHERE kind=5")
    assert ops == [(srv.state.users["u0"], 0)]


def _first_sent(c: Any, user: str) -> str:
    row = c.app.state.server.log.query(
        "SELECT decision_id FROM decisions WHERE user_id=? AND sent=1 ORDER BY seq LIMIT 1",
        (user,))
    return str(row[0][0])


def test_late_unsubscribe_is_honoured(make_client: Any) -> None:
    c = make_client(guardrails=OPEN, attribution_hours=1)
    seed_world(c, n_users=1)
    d = _decide(c, "u0", T0)
    r = c.post("/v1/feedback", json={"decision_id": d["decision_id"], "unsubscribed": True,
                                     "ts": T0 + 5 * H})
    assert r.status_code == 200 and r.json()["late"] is True, r.text
    assert _decide(c, "u0", T0 + 6 * H)["reason"] == "guardrail:unsubscribed"


def test_put_users_subscribed_opts_out_and_back_in(make_client: Any) -> None:
    c = make_client(guardrails=OPEN)
    seed_world(c, n_users=2)
    r = c.put("/v1/users/u1", json={"subscribed": False})
    assert r.json() == {"user_id": "u1", "created": False, "subscribed": False}
    r = c.put("/v1/users/new", json={"subscribed": False, "ts": T0})
    assert r.json() == {"user_id": "new", "created": True, "subscribed": False}
    out = _batch(c, ["u0", "u1", "new"], T0 + H)
    assert [o["send"] for o in out] == [True, False, False]
    # features-only update keeps the status; subscribed=true re-enables sends
    assert c.put("/v1/users/u1", json={"features": {"x": 1}}).json()["subscribed"] is False
    assert c.put("/v1/users/u1", json={"subscribed": True}).json()["subscribed"] is True
    assert _decide(c, "u1", T0 + 2 * H)["send"] is True
    r = c.put("/v1/users/u1", json={"subscribed": "no"})
    assert r.status_code in (400, 422) and "subscribed" in r.text


def test_subscriptions_survive_rebuild_and_restart(make_client: Any, tmp_path: Path) -> None:
    c = make_client(guardrails=OPEN)
    seed_world(c, n_users=3)
    out = _batch(c, ["u0", "u1", "u2"], T0)
    c.post("/v1/feedback", json={"decision_id": out[0]["decision_id"], "unsubscribed": True,
                                 "ts": T0 + 60}).raise_for_status()
    c.put("/v1/users/u1", json={"subscribed": False}).raise_for_status()
    c.put("/v1/users/u1", json={"subscribed": True}).raise_for_status()
    c.put("/v1/users/u2", json={"subscribed": False}).raise_for_status()
    srv = c.app.state.server
    before = srv.state.subscriptions.get(np.arange(3)).tolist()
    assert before == [False, True, False]
    srv.state.rebuild()
    assert srv.state.subscriptions.get(np.arange(3)).tolist() == before
    c.__exit__(None, None, None)
    c2 = make_client(guardrails=OPEN)
    assert [o["send"] for o in _batch(c2, ["u0", "u1", "u2"], T0 + H)] == [False, True, False]
    db = sqlite3.connect(tmp_path / "state" / "log.sqlite3")
    sent = db.execute("SELECT count(*) FROM decisions WHERE user_id IN ('u0','u2') AND sent=1 "
                      "AND ts > ?", (T0,)).fetchone()[0]
    assert sent == 0


@pytest.mark.parametrize("p", [0.3, 0.8])
def test_p_send_is_the_logged_pscore_send(make_client: Any, p: float) -> None:
    c = make_client(overrides=doubles(timing=CoinFlip(p)), guardrails=OPEN)
    seed_world(c, n_users=4)
    out = [*_batch(c, ["u0", "u1", "u2", "u3"], T0), _decide(c, "u0", T0 + H)]
    db = dict(c.app.state.server.log.query("SELECT decision_id, pscore_send FROM decisions"))
    for o in out:
        assert o["p_send"] == pytest.approx(p) == db[o["decision_id"]]
        assert o["pscore"] == pytest.approx(1 - p if not o["send"] else o["pscore"])


def test_feedback_batch_equals_single_reports_in_one_commit(make_client: Any,
                                                            tmp_path: Path) -> None:
    """`POST /v1/feedback/batch` answers and logs what the same reports sent one by one do
    (a decision listed twice merges), in one group commit, and applies unsubscribes."""
    reports = [{"opened": True, "ts": T0 + 60}, {"clicked": True, "ts": T0 + 120},
               {"revenue": 3.5, "converted": True, "ts": T0 + 180},
               {"unsubscribed": True, "ts": T0 + 240}, {}]
    got: list[tuple[list, list, list]] = []
    for mode in ("single", "batch"):
        c = make_client(guardrails=OPEN, state=tmp_path / mode)
        seed_world(c, n_users=4)
        ids = [d["decision_id"] for d in _batch(c, ["u0", "u1", "u2", "u3"], T0)]
        rows = [{"decision_id": ids[k % 4], **r} for k, r in enumerate(reports)]
        srv = c.app.state.server
        if mode == "single":
            outs = [c.post("/v1/feedback", json=r).json() for r in rows]
        else:
            commits = srv.log._commits
            r = c.post("/v1/feedback/batch", json={"feedback": rows})
            assert r.status_code == 200, r.text
            assert srv.log._commits == commits + 1
            outs = r.json()["results"]
        # the second report on u0's decision (row 4, no outcome) shows the merged outcomes
        got.append((
            [{k: v for k, v in o.items() if k != "decision_id"} for o in outs],
            srv.log.query("SELECT user_id, opened, clicked, converted, revenue, unsubscribed "
                          "FROM decisions ORDER BY user_id"),
            [o["send"] for o in _batch(c, ["u0", "u1", "u2", "u3"], T0 + H)]))
    assert got[0] == got[1]
    assert got[1][0][4]["outcomes"]["opened"] is True
    assert got[1][2] == [True, True, True, False]


def test_feedback_batch_refuses_a_bad_row_and_applies_nothing(make_client: Any) -> None:
    c = make_client(guardrails=OPEN)
    seed_world(c, n_users=2)
    ids = [d["decision_id"] for d in _batch(c, ["u0", "u1"], T0)]
    srv = c.app.state.server
    before = srv.log.query("SELECT count(*) FROM feedback")[0][0]
    r = c.post("/v1/feedback/batch", json={"feedback": [
        {"decision_id": ids[0], "unsubscribed": True}, {"decision_id": ids[1], "opened": True},
        {"decision_id": "nope", "opened": True}]})
    assert r.status_code == 404 and r.json()["error"] == "unknown_decision"
    assert r.json()["detail"].startswith("feedback[2]: unknown decision_id 'nope'")
    r = c.post("/v1/feedback/batch", json={"feedback": [
        {"decision_id": ids[0]}, {"decision_id": ids[1], "opened": True, "ts": T0 - 60}]})
    assert r.status_code == 409 and r.json()["detail"].startswith("feedback[1]: feedback ts")
    r = c.post("/v1/feedback/batch", json={"feedback": [
        {"decision_id": ids[0]}, {"decision_id": ids[1], "clicked": True, "opened": False}]})
    assert r.status_code == 422 and r.json()["detail"].startswith("feedback.1")
    assert c.post("/v1/feedback/batch", json={"feedback": []}).status_code == 422
    assert srv.log.query("SELECT count(*) FROM feedback")[0][0] == before
    assert srv.log.query("SELECT count(*) FROM ops WHERE kind IN (4, 5)")[0][0] == 0
    assert _decide(c, "u0", T0 + H)["send"] is True  # row 0's unsubscribe was not applied
