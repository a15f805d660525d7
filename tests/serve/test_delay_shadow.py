"""A shadow for the ``delay`` slot: a candidate delay policy decides every new trigger beside
the active one (its arm and probability in ``trigger_shadow``), is never acted on, leaves the
live arms and draws unchanged, survives a restart through the pointer, stops on rollback, is
refused over other arms, and a failing shadow never breaks the live decision."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi.testclient import TestClient

from pushrl.data.validate import load_dataset

from pushrl.rules.triggers import TriggerConfig
from pushrl.serve import registry_ops as ops
from tests.cli_runner import run_pushrl
from tests.serve.conftest import seed_world
from tests.serve.test_delay_promote import T, _cart, _client, delay_artifact


def _shadow_rows(state: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(state / "log.sqlite3")
    try:
        return db.execute("SELECT s.trigger_id, t.user_id, s.policy, s.delay_h, s.pscore, "
                          "s.decided_ts = t.decided_ts FROM trigger_shadow s JOIN triggers t "
                          "USING (trigger_id) ORDER BY t.seq").fetchall()
    finally:
        db.close()


def test_a_shadow_delay_policy_is_logged_beside_the_active_one(tmp_path: Path) -> None:
    reg = tmp_path / "policies"
    delay_artifact(reg, "d24", "delay-fixed-24h", gate=None)  # a shadow needs no gate
    c = _client(tmp_path)
    try:
        seed_world(c)
        r = c.post("/v1/policies/d24/promote", json={"shadow": True})
        assert r.status_code == 200, r.text
        assert (r.json()["kind"], r.json()["shadow"]) == ("delay", "d24@v1")
        assert c.get("/v1/policies").json()["delay"]["shadow"] == "d24@v1"
        # the live arm is the server's own (1 h); the shadow's 24 h is only logged
        assert _cart(c, "u0", T) == (1, 1.0, "fixed-1h@heuristic")
        assert _cart(c, "u1", T + 60) == (1, 1.0, "fixed-1h@heuristic")
        due = c.post("/v1/triggers/due", json={"users": ["u0", "u1"],
                                               "ts": T + 3600 + 60}).json()["sends"]
        assert sorted(s["user_id"] for s in due) == ["u0", "u1"]  # sent after 1 h, not 24
        r = c.post("/v1/policies/d24/rollback", json={"reason": "done"})
        assert r.status_code == 200, r.text
        assert c.get("/v1/policies").json()["delay"]["shadow"] is None
        assert _cart(c, "u2", T + 120)[0] == 1
    finally:
        c.__exit__(None, None, None)
    rows = _shadow_rows(tmp_path / "state")
    assert [r[1:] for r in rows] == [("u0", "d24@v1", 24, 1.0, 1), ("u1", "d24@v1", 24, 1.0, 1)]
    # `pushrl logs export` writes them beside the log (the log itself validates)
    out = tmp_path / "export"
    r = run_pushrl("logs", "export", "--state", tmp_path / "state", "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["trigger_shadow"] == 2
    sh = pd.read_parquet(out / "trigger_shadow.parquet")
    ds, _ = load_dataset(out)
    live = ds.triggers.set_index("trigger_id")
    assert list(sh["trigger_id"]) == [rows[0][0], rows[1][0]]
    assert list(sh["delay_h"]) == [24, 24] and list(live.loc[sh["trigger_id"], "delay_h"]) \
        == [1, 1]
    assert (sh["decided_ts"].to_numpy() == live.loc[sh["trigger_id"], "decided_ts"]
            .to_numpy()).all()


def test_the_shadow_survives_a_restart_and_other_arms_are_refused(tmp_path: Path) -> None:
    reg = tmp_path / "policies"
    delay_artifact(reg, "d0", "delay-fixed-0h", gate=None)
    delay_artifact(reg, "odd", "delay-fixed-1h", arms=[1, 2, None], gate=None)
    ops.promote(reg, "d0", shadow=True)  # the CLI, before the server starts
    c = _client(tmp_path)
    try:
        seed_world(c)
        assert c.get("/v1/policies").json()["delay"]["shadow"] == "d0@v1"
        assert _cart(c, "u0", T)[0] == 1
        r = c.post("/v1/policies/odd/promote", json={"shadow": True})
        assert r.status_code == 409 and r.json()["error"] == "delay_arms", r.text
        assert c.get("/v1/policies").json()["delay"]["shadow"] == "d0@v1"
    finally:
        c.__exit__(None, None, None)
    assert [r[2:5] for r in _shadow_rows(tmp_path / "state")] == [("d0@v1", 0, 1.0)]


def test_the_shadow_leaves_the_live_arms_and_draws_unchanged(tmp_path: Path) -> None:
    """A stochastic live policy (an untrained VW: it explores) decides 40 triggers with and
    without a shadow: the same arms and probabilities (the shadow has its own draws)."""
    from pushrl.policies.vw import VWItemPolicy
    from pushrl.sim.trigger_context import common_arms
    from pushrl.train.delay import DELAY_VW, delay_layout

    arms = common_arms(TriggerConfig.default())
    art = VWItemPolicy(delay_layout(arms), DELAY_VW.args(), name="vw").save(
        tmp_path / "vw", {"trigger_policy": {"arms": list(arms)}})
    got = []
    for run, shadow in (("a", False), ("b", True)):
        reg = tmp_path / run / "policies"
        delay_artifact(reg, "d24", "delay-fixed-24h", gate=None)
        if shadow:
            ops.promote(reg, "d24", shadow=True)
        c = _client(tmp_path / run, trigger_delay_policy=str(art), seed=5)
        try:
            seed_world(c, n_users=40)
            ev = [{"user_id": f"u{i}", "event": "cart", "item_id": "i1", "ts": T + i}
                  for i in range(40)]
            assert c.post("/v1/events", json={"events": ev}).status_code == 200
        finally:
            c.__exit__(None, None, None)
        db = sqlite3.connect(tmp_path / run / "state" / "log.sqlite3")
        got.append(db.execute("SELECT trigger_id, delay_h, pscore FROM triggers "
                              "ORDER BY seq").fetchall())
        n_shadow = db.execute("SELECT count(*) FROM trigger_shadow").fetchone()[0]
        db.close()
        assert n_shadow == (40 if shadow else 0)
    assert got[0] == got[1] and len(got[0]) == 40
    assert len({a for _, a, _ in got[0]}) > 1  # it did explore


class _Broken:
    label = "broken@v1"

    def choose(self, *a: Any) -> Any:
        raise RuntimeError("boom")


def test_a_failing_shadow_never_breaks_the_live_decision(tmp_path: Path) -> None:
    c: TestClient = _client(tmp_path)
    try:
        seed_world(c)
        c.app.state.server.state.triggers.shadow = _Broken()  # type: ignore[attr-defined]
        assert _cart(c, "u0", T) == (1, 1.0, "fixed-1h@heuristic")
    finally:
        c.__exit__(None, None, None)
    assert _shadow_rows(tmp_path / "state") == []


def test_sharded_servers_run_the_shadow_on_every_shard_and_export_merges_it(
        tmp_path: Path) -> None:
    import asyncio

    from pushrl.serve.shard_export import export_log
    from tests.serve.conftest import T0, doubles
    from tests.serve.test_delay_promote import OPEN
    from tests.serve.test_sharded import _sharded

    reg = tmp_path / "policies"
    delay_artifact(reg, "d24", "delay-fixed-24h", gate=None)

    async def run() -> list[Any]:
        async with _sharded(tmp_path, 2, doubles, triggers=TriggerConfig.default(),
                            guardrails=OPEN) as (c, router):
            assert (await c.put("/v1/items/i1", json={"category": "a"})).status_code == 200
            for i in range(8):
                assert (await c.put(f"/v1/users/u{i}", json={"timezone": "UTC", "ts": T0})
                        ).status_code == 200
            r = await c.post("/v1/policies/d24/promote", json={"shadow": True})
            assert r.status_code == 200, r.text
            ev = [{"user_id": f"u{i}", "event": "cart", "item_id": "i1", "ts": T}
                  for i in range(8)]
            assert (await c.post("/v1/events", json={"events": ev})).status_code == 200
            labels = []
            for k in range(2):
                shard = router.client(k)
                assert shard is not None
                _, _, body = await shard.request("GET", "/v1/policies", b"", [])
                labels.append(json.loads(body)["delay"]["shadow"])
            trig = []
            for i in range(8):
                trig += (await c.get(f"/v1/users/u{i}/triggers")).json()["triggers"]
            return [labels, trig]

    labels, trig = asyncio.run(run())
    assert labels == ["d24@v1", "d24@v1"]
    assert {t["delay_h"] for t in trig} == {1}  # live: the servers' own 1 h
    res = export_log(tmp_path / "sharded", tmp_path / "exported")
    assert res["trigger_shadow"] == 8 and res["shards"] == 2
    sh = pd.read_parquet(tmp_path / "exported" / "trigger_shadow.parquet")
    assert sorted(sh["trigger_id"]) == sorted(t["trigger_id"] for t in trig)
    assert set(sh["delay_h"]) == {24} and set(sh["policy"]) == {"d24@v1"}
