"""Send only if it helps in the server (``--uplift``): the gate moves the send probability to
wait before sampling, so the logged ``p_send`` is the probability of the logged action."""

from __future__ import annotations

from typing import Any

import pytest

from pushrl.rules.guardrails import Guardrails
from pushrl.rules.uplift import BASIS, UpliftGate, UpliftModel
from tests.cli_runner import run_pushrl
from tests.serve.conftest import T0, seed_world

OPEN = Guardrails(0, 0, 0, 0)
ZERO = (0.0,) * (len(BASIS) - 1)
#: Predicts an incremental 0.01 per send for everybody (intercepts only).
MODEL = UpliftModel("conversions", (0.01, *ZERO), (0.0, *ZERO), (1.0, *ZERO))


@pytest.mark.parametrize("threshold, sent", [(0.005, True), (0.02, False)])
def test_gate_in_the_server(make_client: Any, threshold: float, sent: bool) -> None:
    c = make_client(guardrails=OPEN, uplift=UpliftGate(MODEL, threshold))
    seed_world(c, n_users=5)
    r = c.post("/v1/decide/batch", json={"requests": [{"user_id": f"u{i}", "ts": T0}
                                                      for i in range(5)]})
    assert r.status_code == 200, r.text
    out = r.json()["decisions"]
    assert all(d["send"] is sent for d in out)
    assert all(d["p_send"] == (1.0 if sent else 0.0) for d in out)  # AlwaysSend, gated
    assert all(d["pscore"] == pytest.approx(1.0) for d in out if not d["send"])


def test_bad_uplift_file_is_one_line(tmp_path: Any) -> None:
    (tmp_path / "m.json").write_text('{"kind": "other"}')
    r = run_pushrl("serve", "--state", str(tmp_path / "s"), "--uplift",
                   str(tmp_path / "m.json"))
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "--uplift: not an uplift model" in out and "Traceback" not in out


def _sends(c: Any, ts: int, n: int = 4) -> list[bool]:
    r = c.post("/v1/decide/batch", json={"requests": [{"user_id": f"u{i}", "ts": ts}
                                                      for i in range(n)]})
    assert r.status_code == 200, r.text
    return [d["send"] for d in r.json()["decisions"]]


def test_need_state_gate_in_the_server_survives_restart(make_client: Any) -> None:
    """``--uplift-min-hours 24``: no push within 24 h of the user's last purchase (a purchase
    event, or a converted push's feedback); the purchases are journaled (restart)."""
    H = 3600
    gate = UpliftGate(None, 0.0, 24.0)
    c = make_client(guardrails=OPEN, uplift=gate)
    seed_world(c, n_users=4)
    r = c.post("/v1/events", json={"events": [
        {"user_id": "u0", "event": "purchase", "item_id": "i1", "ts": T0 + 60},
        {"user_id": "u1", "event": "view", "item_id": "i1", "ts": T0 + 60},
        {"user_id": "u2", "event": "purchase", "ts": T0 - 30 * H}]})
    assert r.status_code == 200, r.text
    # the purchase's own hour is not seen (point in time); 1 h later it is
    assert _sends(c, T0 + 1) == [True, True, True, True]
    assert _sends(c, T0 + 2 * H) == [False, True, True, True]
    d = c.post("/v1/decide", json={"user_id": "u3", "ts": T0 + 3 * H}).json()
    assert d["send"]
    fb = c.post("/v1/feedback", json={"decision_id": d["decision_id"], "opened": True,
                                      "clicked": True, "converted": True, "ts": T0 + 4 * H})
    assert fb.status_code == 200, fb.text
    assert _sends(c, T0 + 6 * H) == [False, True, True, False]
    c.__exit__(None, None, None)
    c2 = make_client(guardrails=OPEN, uplift=gate)  # rebuilt from the journal
    assert _sends(c2, T0 + 7 * H) == [False, True, True, False]
    assert _sends(c2, T0 + 26 * H) == [True, True, True, False]  # u0: 26 h >= 24
    assert _sends(c2, T0 + 28 * H) == [True, True, True, True]


def test_min_hours_flag_alone_and_bad_value(tmp_path: Any) -> None:
    r = run_pushrl("serve", "--state", str(tmp_path / "s"), "--uplift-min-hours", "-1")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "min_hours_since_purchase must be >= 0" in out and "Traceback" not in out
