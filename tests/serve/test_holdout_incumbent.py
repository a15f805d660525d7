"""A holdout's incumbent in the server: held-out users get the incumbent's decisions (never
the active policy's), logged with the incumbent's label and probability."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pushrl.rules.guardrails import Guardrails
from pushrl.rules.holdout import Holdout
from pushrl.serve.holdout import check
from pushrl.serve.store import StateError
from tests.serve.conftest import T0, seed_world

OPEN = Guardrails(0, 0, 0, 0)
N = 120
#: One push a day at local hour 0; T0 is midnight UTC and the users live in UTC.
HOLD = Holdout(0.3, "inc", incumbent="fixed-hour:hour=0")


def _decide(c: Any, ts: int) -> list[dict]:
    r = c.post("/v1/decide/batch", json={"requests": [{"user_id": f"u{i}", "ts": ts}
                                                      for i in range(N)]})
    assert r.status_code == 200, r.text
    return list(r.json()["decisions"])


def test_held_out_users_get_the_incumbent_never_the_active_policy(make_client: Any) -> None:
    c = make_client(guardrails=OPEN, holdout=HOLD)
    seed_world(c, n_users=N)
    held = HOLD.held_out([f"u{i}" for i in range(N)])
    assert 0 < held.sum() < N
    at0 = _decide(c, T0)  # the incumbent's hour: held-out users are sent by it
    sent = np.array([d["send"] for d in at0])
    assert sent.all()
    assert {d["policy"] for d, h in zip(at0, held, strict=True) if h} == \
        {"incumbent:fixed-hour:hour=0"}
    assert all(d["holdout"] == bool(h) for d, h in zip(at0, held, strict=True))
    assert all(d["p_send"] == pytest.approx(1.0) for d, h in zip(at0, held, strict=True) if h)
    at1 = _decide(c, T0 + 3600)  # another hour: the active AlwaysSend sends only the treated
    sent = np.array([d["send"] for d in at1])
    assert sent[~held].all() and not sent[held].any()
    assert {d["reason"] for d, h in zip(at1, held, strict=True) if h} != {"guardrail:held_out"}


def test_incumbent_is_part_of_the_stored_holdout(make_client: Any, tmp_path: Path) -> None:
    c = make_client(guardrails=OPEN, holdout=HOLD)
    seed_world(c, n_users=3)
    _ = c.post("/v1/decide", json={"user_id": "u0", "ts": T0})
    with pytest.raises(StateError, match="incumbent"):
        check(tmp_path / "state", Holdout(0.3, "inc"))
    assert check(tmp_path / "state", None) == HOLD


def test_unknown_incumbent_is_one_line(tmp_path: Path) -> None:
    from tests.cli_runner import run_pushrl

    r = run_pushrl("serve", "--state", str(tmp_path / "s"), "--holdout", "0.1",
                   "--holdout-incumbent", "no-such-policy")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out
    assert "--holdout-incumbent 'no-such-policy'" in out and "unknown baseline" in out
