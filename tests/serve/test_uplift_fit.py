"""`pushrl uplift fit --state DIR`: the uplift model from a server's own holdout log (the
rows of `pushrl lift --state`, each user's first logged features)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pushrl.rules.guardrails import Guardrails
from pushrl.rules.holdout import Holdout
from pushrl.rules.uplift import UpliftModel
from pushrl.serve.holdout import uplift_data
from tests.cli_runner import run_pushrl
from tests.serve.conftest import T0, seed_world

OPEN = Guardrails(0, 0, 0, 0)
H = 3600
N = 120


def test_fit_from_the_servers_holdout(make_client: Any, tmp_path: Path) -> None:
    c = make_client(guardrails=OPEN, holdout=Holdout(0.5, "fit"))
    seed_world(c, n_users=N)
    # a week of activity, heavier for even users (features differ between users)
    ev = [{"user_id": f"u{i}", "event": "session", "ts": T0 + 60 + k * 3 * H}
          for i in range(N) for k in range(2 + 4 * (i % 2 == 0))]
    assert c.post("/v1/events", json={"events": ev}).status_code == 200
    t1 = T0 + 24 * H
    r = c.post("/v1/decide/batch", json={"requests": [{"user_id": f"u{i}", "ts": t1}
                                                      for i in range(N)]})
    dec = r.json()["decisions"]
    held = np.array([d["holdout"] for d in dec])
    assert 20 <= held.sum() <= N - 20
    # every treated push converts; everybody also buys once on their own afterwards
    for d in dec:
        if d["send"]:
            fb = c.post("/v1/feedback", json={"decision_id": d["decision_id"], "opened": True,
                                              "clicked": True, "converted": True,
                                              "ts": t1 + H})
            assert fb.status_code == 200, fb.text
    buy = [{"user_id": f"u{i}", "event": "purchase", "ts": t1 + 2 * H} for i in range(N)]
    assert c.post("/v1/events", json={"events": buy}).status_code == 200
    # a second decision: only the first one's features are the user's covariates
    c.post("/v1/decide/batch", json={"requests": [{"user_id": f"u{i}", "ts": t1 + 30 * H}
                                                  for i in range(N)]})
    d = uplift_data(tmp_path / "state")
    assert d.raw.shape[0] == N and int((~d.treated).sum()) == int(held.sum())
    assert set(d.outcome[~d.treated].tolist()) == {1.0}  # the purchase event only
    assert set(d.outcome[d.treated].tolist()) == {2.0}  # + the pushed conversion
    assert len({tuple(r) for r in d.raw.tolist()}) >= 2  # per-user features were read
    out = tmp_path / "m.json"
    res = run_pushrl("uplift", "fit", "--state", str(tmp_path / "state"), "--out", str(out),
                     "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    m = UpliftModel.load(out)
    assert json.loads(res.stdout)["meta"]["treated"] == N - int(held.sum())
    # two pushes per treated user add one conversion: 0.5 per send for everybody
    assert set(d.sends[d.treated].tolist()) == {2.0}
    assert m.predict(d.raw) == pytest.approx(np.full(N, 0.5), abs=1e-6)


def test_fit_without_a_holdout_is_one_line(make_client: Any, tmp_path: Path) -> None:
    c = make_client(guardrails=OPEN)
    seed_world(c, n_users=3)
    c.post("/v1/decide", json={"user_id": "u0", "ts": T0 + H})
    c.__exit__(None, None, None)
    r = run_pushrl("uplift", "fit", "--state", str(tmp_path / "state"), "--out",
                   str(tmp_path / "m.json"))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out
    assert "holdout" in out and not (tmp_path / "m.json").exists()
