"""Live holdouts in the server: held-out users are never sent (guardrail ``held_out``), every
decision logs its arm and probability, the holdout is durable and cannot be changed, and
``pushrl lift --state`` reads the log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pushrl.rules.guardrails import Guardrails
from pushrl.rules.holdout import Holdout
from pushrl.serve.app import create_app
from pushrl.serve.holdout import check, lift_data
from pushrl.serve.store import StateError
from tests.cli_runner import run_pushrl
from tests.serve.conftest import T0, doubles, make_cfg, seed_world

OPEN = Guardrails(0, 0, 0, 0)
N = 200
HOLD = Holdout(0.25, "test")


def _decide_all(c: Any, n: int, ts: int) -> list[dict]:
    r = c.post("/v1/decide/batch", json={"requests": [{"user_id": f"u{i}", "ts": ts}
                                                      for i in range(n)]})
    assert r.status_code == 200, r.text
    return list(r.json()["decisions"])


def test_held_out_users_are_never_sent_and_arms_are_logged(make_client: Any,
                                                           tmp_path: Path) -> None:
    c = make_client(guardrails=OPEN, holdout=HOLD)
    seed_world(c, n_users=N)
    held = HOLD.held_out([f"u{i}" for i in range(N)])
    # the share is a binomial draw: within 4 standard errors of 0.25
    assert abs(held.mean() - 0.25) < 4 * np.sqrt(0.25 * 0.75 / N)
    for h in range(3):
        out = _decide_all(c, N, T0 + h * 3600)
        sent = np.array([d["send"] for d in out])
        arm = np.array([d["holdout"] for d in out])
        np.testing.assert_array_equal(arm, held)  # the shared hash, sticky
        assert sent[~held].all() and not sent[held].any()  # AlwaysSend: only the guardrail
        assert {d["reason"] for d, h_ in zip(out, held, strict=True) if h_} == \
            {"guardrail:held_out"}
        assert all(d["p_holdout"] == 0.25 for d in out)
    one = c.post("/v1/decide", json={"user_id": f"u{int(np.flatnonzero(held)[0])}",
                                     "ts": T0 + 5 * 3600}).json()
    assert one["send"] is False and one["holdout"] is True and one["p_holdout"] == 0.25
    # the log holds the arm and its probability on every decision
    import sqlite3

    db = sqlite3.connect(tmp_path / "state" / "log.sqlite3")
    rows = db.execute("SELECT user_id, sent, holdout, p_holdout FROM decisions").fetchall()
    db.close()
    assert len(rows) == 3 * N + 1
    assert all(p == 0.25 for *_, p in rows)
    assert not any(s for _, s, h, _ in rows if h == 1)


def test_holdout_survives_restart_and_refuses_changes(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    cfg = make_cfg(tmp_path, guardrails=OPEN, holdout=HOLD)
    with TestClient(create_app(cfg, overrides=doubles())) as c:
        seed_world(c, n_users=40)
        first = _decide_all(c, 40, T0)
    # a restart without --holdout runs the stored holdout (same arms)
    assert check(tmp_path / "state", None) == HOLD
    with TestClient(create_app(make_cfg(tmp_path, guardrails=OPEN),
                               overrides=doubles())) as c:
        again = _decide_all(c, 40, T0 + 3600)
    assert [d["holdout"] for d in again] == [d["holdout"] for d in first]
    for other in (Holdout(0.1, "test"), Holdout(0.25, "other"), Holdout(0.25, "test", "x"),
                  Holdout(0.0)):
        with pytest.raises(StateError, match="changing the share, salt, campaign or incumbent"):
            check(tmp_path / "state", other)
        with pytest.raises(StateError, match="changing the share, salt, campaign or incumbent"):
            with TestClient(create_app(make_cfg(tmp_path, guardrails=OPEN, holdout=other),
                                       overrides=doubles())):
                pass
    # the CLI says it in one line, before starting
    r = run_pushrl("serve", "--state", str(tmp_path / "state"), "--registry",
                   str(tmp_path / "policies"), "--holdout", "0.1")
    assert r.returncode == 2 and "changing the share" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_no_holdout_logs_no_arm(make_client: Any) -> None:
    c = make_client(guardrails=OPEN)
    seed_world(c, n_users=3)
    out = _decide_all(c, 3, T0)
    assert all(d["holdout"] is None and d["p_holdout"] is None and d["send"] for d in out)


def test_lift_from_state_and_export(make_client: Any, tmp_path: Path) -> None:
    """Treated users open every push, held-out users get none: the lift of opens equals the
    treated mean; organic events posted alike give a lift interval around 0; the exported
    log gives the same estimates as the state."""
    from pushrl.compare import lift

    c = make_client(guardrails=OPEN, holdout=HOLD)
    n = 120
    seed_world(c, n_users=n, ts=T0 - 2 * 86400)
    rng = np.random.default_rng(0)
    pre = rng.poisson(3.0, n)
    ev = [{"user_id": f"u{i}", "event": "session", "ts": T0 - 86400 + k}
          for i in range(n) for k in range(int(pre[i]))]
    assert c.post("/v1/events", json={"events": ev}).status_code == 200
    for h in range(4):
        out = _decide_all(c, n, T0 + h * 3600)
        fb = [{"decision_id": d["decision_id"], "opened": True} for d in out if d["send"]]
        assert c.post("/v1/feedback/batch", json={"feedback": fb}).status_code == 200
        # organic sessions after the start, correlated with the pre-period (CUPED has work)
        post = rng.poisson(pre / 4 + 0.1)
        ev = [{"user_id": f"u{i}", "event": "session", "ts": T0 + h * 3600 + 60 + k}
              for i in range(n) for k in range(int(post[i]))]
        if ev:
            assert c.post("/v1/events", json={"events": ev}).status_code == 200
    ld = lift_data(tmp_path / "state")
    held = HOLD.held_out([f"u{i}" for i in range(n)])
    assert len(ld.users) == n and ld.users["held_out"].sum() == held.sum()
    est = {m.metric: m for m in lift.estimate(ld)}
    assert est["opens"].treated == 4.0 and est["opens"].held_out == 0.0
    assert est["sends"].lift == 4.0
    s = est["sessions"]
    assert s.cuped_low < 0 < s.cuped_high  # no effect was simulated
    assert s.variance_reduction > 0.3  # the pre-period explains most of the spread
    exp = run_pushrl("logs", "export", "--state", str(tmp_path / "state"), "--out",
                     str(tmp_path / "exp"))
    assert exp.returncode == 0, exp.stderr
    val = run_pushrl("data", "validate", str(tmp_path / "exp"))  # the contract's columns
    assert val.returncode == 0, val.stdout + val.stderr
    ld2 = lift.from_log(tmp_path / "exp")
    est2 = {m.metric: m for m in lift.estimate(ld2)}
    for m in ("opens", "sessions", "sends"):
        assert est2[m].cuped_lift == pytest.approx(est[m].cuped_lift)
    r = run_pushrl("lift", "--state", str(tmp_path / "state"), "--mde", "0.1", "--json")
    assert r.returncode == 0, r.stderr
    import json

    got = json.loads(r.stdout)
    assert got["users"] == n and {m["metric"] for m in got["metrics"]} >= {"opens", "sessions"}
    assert all("days_to_mde" in m for m in got["metrics"])
    rep = run_pushrl("lift", str(tmp_path / "exp"), "--report", str(tmp_path / "rep"))
    assert rep.returncode == 0, rep.stderr
    assert (tmp_path / "rep" / "lift.html").read_text().count("data:image/png;base64") == 1


def test_bad_holdout_flag_is_one_line(tmp_path: Path) -> None:
    r = run_pushrl("serve", "--state", str(tmp_path / "state"), "--holdout", "0.7")
    assert r.returncode == 2 and "--holdout: holdout share must be a number in [0, 0.5]" in \
        r.stderr and "Traceback" not in r.stderr
