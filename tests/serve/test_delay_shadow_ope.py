"""`pushrl evaluate --shadow`: the server's delay shadow evaluated on its live log by the one
delay OPE equals `pushrl evaluate --policy SHADOW_ARTIFACT --data EXPORT` (same rounds, same
IPW/DR, same gate), checks the shadow's logged probabilities against the artifact's on the
replayed contexts, evaluates only the triggers the shadow decided, defaults its baseline to
the live policy, and says in one line what is missing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from pushrl.rules.triggers import TriggerConfig
from pushrl.serve import registry_ops as ops
from pushrl.units import HOUR
from tests.cli_runner import run_pushrl
from tests.serve.conftest import seed_world
from tests.serve.test_delay_promote import T, _client, delay_artifact

N = 60


def _world(c: TestClient, users: range, t: int, seed: int) -> None:
    """Each user carts i1 at ``t`` (+ 1 min per user); the sender pulls every hour for 30 h;
    a third of the users buy i1 20 h later (a conversion of their trigger)."""
    rng = np.random.default_rng(seed)
    ev = [{"user_id": f"u{i}", "event": "cart", "item_id": "i1", "ts": t + 60 * k}
          for k, i in enumerate(users)]
    assert c.post("/v1/events", json={"events": ev}).status_code == 200
    ids = [f"u{i}" for i in users]
    for h in range(1, 31):
        r = c.post("/v1/triggers/due", json={"users": ids, "ts": t + h * HOUR})
        assert r.status_code == 200, r.text
    buy = [{"user_id": f"u{i}", "event": "purchase", "item_id": "i1",
            "ts": t + 30 * HOUR + 60 * k} for k, i in enumerate(users) if rng.random() < 0.33]
    assert c.post("/v1/events", json={"events": buy}).status_code == 200


def _close(c: TestClient, t: int) -> None:
    """A session per user 8 days later: every 168 h conversion window ends inside the log."""
    ev = [{"user_id": f"u{i}", "event": "session", "ts": t + 8 * 24 * HOUR + i}
          for i in range(N)]
    assert c.post("/v1/events", json={"events": ev}).status_code == 200


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A server whose live delay policy is an untrained VW (it explores, so the live log has
    support for other arms) and whose delay shadow, promoted before any trigger, is a
    delay-fixed-24h artifact; N users cart once. Returns the tmp dir."""
    from pushrl.policies.vw import VWItemPolicy
    from pushrl.sim.trigger_context import common_arms
    from pushrl.train.delay import DELAY_VW, delay_layout

    tmp = tmp_path_factory.mktemp("shadowope")
    arms = common_arms(TriggerConfig.default())
    art = VWItemPolicy(delay_layout(arms), DELAY_VW.args(), name="vw").save(
        tmp / "vw", {"trigger_policy": {"arms": list(arms)}})
    reg = tmp / "policies"
    delay_artifact(reg, "d24", "delay-fixed-24h", gate=None)
    ops.promote(reg, "d24", shadow=True)
    c = _client(tmp, trigger_delay_policy=str(art), seed=3)
    try:
        seed_world(c, n_users=N)
        _world(c, range(N), T, 0)
        _close(c, T)
    finally:
        c.__exit__(None, None, None)
    return tmp


def _json(r: Any) -> dict[str, Any]:
    assert r.returncode in (0, 1), r.stdout + r.stderr  # the gate's verdict, not an error
    return json.loads(r.stdout)


def test_shadow_ope_equals_evaluating_the_shadow_artifact_on_the_export(served: Path) -> None:
    reg, state = served / "policies", served / "state"
    a = _json(run_pushrl("evaluate", "--shadow", "--state", state, "--registry", reg,
                         "--baseline", "delay-fixed-1h", "--no-record", "--out",
                         served / "ope_a", "--json"))
    out = served / "export"
    assert run_pushrl("logs", "export", "--state", state, "--out", out).returncode == 0
    b = _json(run_pushrl("evaluate", "--policy", reg / "d24" / "v1", "--data", out,
                         "--baseline", "delay-fixed-1h", "--no-record", "--out",
                         served / "ope_b", "--json"))
    c = _json(run_pushrl("evaluate", "--shadow", "--data", out, "--registry", reg,
                         "--baseline", "delay-fixed-1h", "--no-record", "--out",
                         served / "ope_c", "--json"))
    # the live arms explored: some logged arms are the shadow's 24 h, most are not
    live = pd.read_parquet(out / "triggers.parquet")
    assert len(live) == N and 0 < (live["delay_h"] == 24).sum() < N
    assert a["rounds"] == b["rounds"] == N and a["censored"] == 0
    for res in (a, c):
        assert res["estimates"] == b["estimates"]
        assert res["gate"] == b["gate"]
        assert res["data"]["fingerprint"] == b["data"]["fingerprint"]
        assert res["shadow"] == {"label": "d24@v1", "artifact": str(reg / "d24" / "v1"),
                                 "decisions": N}
        # the artifact's probabilities on the replayed contexts are the logged shadow's
        assert res["logged_check"] == {"rows": N, "evaluated": N, "compared": N,
                                       "max_abs_diff": 0.0, "agree": 1.0}
    assert "shadow" not in b and "logged_check" not in b
    assert a["estimates"]["ipw"]["candidate"] != a["estimates"]["ipw"]["baseline"]
    r = run_pushrl("evaluate", "--shadow", "--data", out, "--registry", reg, "--baseline",
                   "delay-fixed-1h", "--no-record", "--out", served / "ope_d")
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr
    assert f"shadow d24@v1: {N:,} logged decisions" in r.stdout and "100.0% agree" in r.stdout


def test_only_the_shadows_triggers_and_the_live_policy_as_baseline(tmp_path: Path) -> None:
    """A shadow promoted after half the users' triggers is evaluated on the other half; the
    default baseline is the live policy (the server's own fixed 1 h = delay-fixed-1h); the
    evidence goes into the shadow's card (promote reads it)."""
    reg = tmp_path / "policies"
    delay_artifact(reg, "d0", "delay-fixed-0h", gate=None)
    c = _client(tmp_path)
    try:
        seed_world(c, n_users=N)
        _world(c, range(N // 2), T, 1)
        ops.promote(reg, "d0", shadow=True)
        c.post("/v1/policies/reload")
        assert c.get("/v1/policies").json()["delay"]["shadow"] == "d0@v1"
        _world(c, range(N // 2, N), T + 40 * HOUR, 2)
        _close(c, T + 40 * HOUR)
    finally:
        c.__exit__(None, None, None)
    r = run_pushrl("evaluate", "--shadow", "--state", tmp_path / "state", "--registry", reg,
                   "--json")
    res = _json(r)
    assert res["baseline"] == "delay-fixed-1h"
    assert res["rounds"] == N // 2 and res["shadow"]["decisions"] == N // 2
    assert res["logged_check"]["agree"] == 1.0
    card = json.loads((reg / "d0" / "v1" / "card.json").read_text())
    assert card["ope"]["baseline"] == {"label": "delay-fixed-1h"}
    assert card["ope"]["rounds"] == N // 2
    # a deterministic live policy has no support for the shadow's 0 h arm: IPW says 0
    assert res["estimates"]["ipw"]["candidate"] == 0.0


def test_shadow_errors_are_one_line(tmp_path: Path, served: Path) -> None:
    out = served / "export_err"
    assert run_pushrl("logs", "export", "--state", served / "state", "--out",
                      out).returncode == 0
    cases = [
        (("--shadow", "--data", out, "--registry", tmp_path / "nothing"),
         "is not a delay artifact in"),
        (("--shadow", "--data", out, "--state", served / "state"), "one log"),
        (("--shadow", "--data", out, "--registry", served / "policies", "--policy", "x@v9"),
         "never ran as the delay shadow"),
        (("--state", served / "state", "--policy", "delay-fixed-1h"), "goes with --shadow"),
        (("--data", out), "pass --policy"),
        (("--shadow", "--data", out, "--sample-users", "5"), "does not apply to --shadow"),
    ]
    (tmp_path / "plain").mkdir()
    (out / "trigger_shadow.parquet").rename(tmp_path / "plain" / "moved.parquet")
    try:
        r = run_pushrl("evaluate", "--shadow", "--data", out, "--registry",
                       served / "policies")
        assert r.returncode == 2 and "no trigger_shadow.parquet" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    finally:
        (tmp_path / "plain" / "moved.parquet").rename(out / "trigger_shadow.parquet")
    for args, msg in cases:
        r = run_pushrl("evaluate", *args)
        assert r.returncode == 2 and msg in r.stderr, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
