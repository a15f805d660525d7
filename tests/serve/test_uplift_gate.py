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
