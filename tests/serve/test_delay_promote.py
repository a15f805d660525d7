"""Hot promote of a trigger delay policy (issue #16): the registry's ``delay`` slot is proved
(checksums, one delay decision) before the pointer switches, the server decides new triggers
with it without a restart (promote endpoint, pointer watch, restart), rollback returns to the
server's own delay policy, and a sharded server switches every shard atomically."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pushrl.errors import ArtifactError
from pushrl.policies.registry import save_artifact
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.triggers import DEFAULT_DELAYS_H, TriggerConfig
from pushrl.serve import registry_ops as ops
from pushrl.serve.app import create_app
from tests.serve.conftest import T0, doubles, make_cfg, seed_world

OPEN = Guardrails(0, 0, 0, 0)
T = T0 + 10 * 3600
PASS = {"passed": True, "failed_rules": [], "messages": []}
ARMS: list[int | None] = [*DEFAULT_DELAYS_H, None]


def delay_artifact(reg: Path, name: str, baseline: str, arms: list[int | None] | None = None,
                   gate: dict[str, Any] | None = PASS) -> Path:
    """A registry artifact of a delay baseline (card ``trigger_policy``: a delay policy)."""
    card: dict[str, Any] = {"baseline": baseline, "params": {},
                            "trigger_policy": {"arms": ARMS if arms is None else arms}}
    if gate is not None:
        card["ope"] = {"gate": gate}
    return save_artifact(reg / name, kind="item", loader="baseline",
                         files={"notes.txt": b"x"}, card=card)


def _client(tmp: Path, **kw: Any) -> TestClient:
    cfg = make_cfg(tmp, triggers=TriggerConfig.default(), guardrails=OPEN, **kw)
    c = TestClient(create_app(cfg, overrides=doubles()))
    c.__enter__()
    return c


def _cart(c: TestClient, user: str, ts: int) -> tuple[int | None, float, str]:
    r = c.post("/v1/events", json={"events": [{"user_id": user, "event": "cart",
                                               "item_id": "i1", "ts": ts}]})
    assert r.status_code == 200, r.text
    (t,) = c.get(f"/v1/users/{user}/triggers").json()["triggers"]
    srv = c.app.state.server  # type: ignore[attr-defined]
    return t["delay_h"], t["pscore"], srv.state.triggers.policy.label


def test_promote_switches_new_triggers_and_rollback_restores_the_server_default(
        tmp_path: Path) -> None:
    reg = tmp_path / "policies"
    delay_artifact(reg, "d24", "delay-fixed-24h")
    c = _client(tmp_path)
    try:
        seed_world(c)
        assert _cart(c, "u0", T) == (1, 1.0, "fixed-1h@heuristic")
        r = c.post("/v1/policies/d24/promote", json={"reason": "delay test"})
        assert r.status_code == 200, r.text
        assert (r.json()["kind"], r.json()["active"]) == ("delay", "d24@v1")
        assert _cart(c, "u1", T + 60) == (24, 1.0, "d24@v1")
        # the trigger created before the promote keeps its arm
        (t0,) = c.get("/v1/users/u0/triggers").json()["triggers"]
        assert t0["delay_h"] == 1
        got = c.get("/v1/policies").json()
        assert got["delay"]["active"] == "d24@v1" and got["timing"]["active"] != "d24@v1"
        r = c.post("/v1/policies/d24/rollback", json={"reason": "back"})
        assert r.status_code == 200, r.text
        assert (r.json()["kind"], r.json()["active"]) == ("delay", "fixed-1h@heuristic")
        assert _cart(c, "u2", T + 120) == (1, 1.0, "fixed-1h@heuristic")
    finally:
        c.__exit__(None, None, None)
    db = sqlite3.connect(tmp_path / "state" / "log.sqlite3")
    assert db.execute("SELECT user_id, delay_h, policy FROM triggers ORDER BY seq").fetchall() \
        == [("u0", 1, "fixed-1h@heuristic"), ("u1", 24, "d24@v1"),
            ("u2", 1, "fixed-1h@heuristic")]
    db.close()
    actions = [a["action"] for a in map(json.loads, (reg / ops.AUDIT).read_text().splitlines())]
    assert actions == ["promote", "rollback_active"]


def test_the_pointer_watch_and_a_restart_pick_up_a_promoted_delay_policy(
        tmp_path: Path) -> None:
    reg = tmp_path / "policies"
    delay_artifact(reg, "d0", "delay-fixed-0h")
    c = _client(tmp_path, watch_seconds=0.05)
    try:
        seed_world(c)
        ops.promote(reg, "d0")  # another process (the CLI) moves the pointer
        deadline = time.monotonic() + 10
        srv = c.app.state.server  # type: ignore[attr-defined]
        while srv.state.triggers.policy.label != "d0@v1" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _cart(c, "u0", T) == (0, 1.0, "d0@v1")
    finally:
        c.__exit__(None, None, None)
    c = _client(tmp_path)  # a restart reads the pointer
    try:
        assert _cart(c, "u1", T + 60) == (0, 1.0, "d0@v1")
        assert c.get("/v1/policies").json()["delay"]["active"] == "d0@v1"
    finally:
        c.__exit__(None, None, None)


def test_a_trained_delay_artifact_is_verified_and_proved_before_the_switch(
        tmp_path: Path) -> None:
    from pushrl.policies.vw import VWItemPolicy
    from pushrl.sim.trigger_context import common_arms
    from pushrl.train.delay import DELAY_VW, delay_layout

    reg = tmp_path / "policies"
    arms = common_arms(TriggerConfig.default())
    pol = VWItemPolicy(delay_layout(arms), DELAY_VW.args(), name="vw")  # untrained
    art = pol.save(reg / "vw", {"trigger_policy": {"arms": list(arms)}, "ope": {"gate": PASS}})
    before = ops.read_active(reg)
    # a modified file: refused before anything changes (checksums)
    model = next(p for p in art.iterdir() if p.name != "card.json")
    good = model.read_bytes()
    model.write_bytes(good + b"\0")
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        ops.promote(reg, "vw")
    assert ops.read_active(reg) == before
    model.write_bytes(good)
    c = _client(tmp_path)
    try:
        seed_world(c, n_users=20)
        r = c.post("/v1/policies/vw/promote", json={})
        assert r.status_code == 200 and r.json()["active"] == f"vw@{art.name}", r.text
        ev = [{"user_id": f"u{i}", "event": "cart", "item_id": "i1", "ts": T} for i in range(20)]
        assert c.post("/v1/events", json={"events": ev}).status_code == 200
    finally:
        c.__exit__(None, None, None)
    db = sqlite3.connect(tmp_path / "state" / "log.sqlite3")
    rows = db.execute("SELECT delay_h, pscore, policy FROM triggers").fetchall()
    db.close()
    assert len(rows) == 20 and {r[2] for r in rows} == {f"vw@{art.name}"}
    assert any(r[1] < 1 for r in rows)  # VW explores: its probabilities are logged


@pytest.mark.parametrize(("arms", "status", "match"), [
    ([1, 24, None], 409, "decides over the arms"),
])
def test_a_delay_policy_over_other_arms_is_refused(tmp_path: Path, arms: list[int | None],
                                                   status: int, match: str) -> None:
    reg = tmp_path / "policies"
    delay_artifact(reg, "odd", "delay-fixed-24h", arms=arms)
    c = _client(tmp_path)
    try:
        seed_world(c)
        r = c.post("/v1/policies/odd/promote", json={})
        assert r.status_code == status and match in r.json()["detail"], r.text
        assert ops.read_active(reg)["delay"]["active"] is None
        assert _cart(c, "u0", T)[2] == "fixed-1h@heuristic"
    finally:
        c.__exit__(None, None, None)


def test_a_timing_artifact_is_not_a_delay(tmp_path: Path) -> None:
    reg = tmp_path / "policies"
    delay_artifact(reg, "d24", "delay-fixed-24h")
    from pushrl.serve.policyset import load_ref

    save_artifact(reg / "t", kind="timing", loader="baseline", files={"n.txt": b"x"},
                  card={"baseline": "never-send", "params": {}})
    with pytest.raises(ArtifactError, match="not a trigger delay policy"):
        load_ref(reg, "t@v1", "delay")
    # a delay artifact fills the delay slot, never the item slot
    out = ops.promote(reg, "d24")
    assert out["kind"] == "delay" and ops.read_active(reg)["item"]["active"] is None


def test_sharded_servers_promote_a_delay_policy_on_every_shard(tmp_path: Path) -> None:
    from tests.serve.test_sharded import _sharded

    reg = tmp_path / "policies"
    delay_artifact(reg, "d24", "delay-fixed-24h")

    async def run() -> tuple[list[Any], int, list[str]]:
        async with _sharded(tmp_path, 2, doubles, triggers=TriggerConfig.default(),
                            guardrails=OPEN) as (c, router):
            for j in range(3):
                assert (await c.put(f"/v1/items/i{j}", json={"category": "a"})).status_code \
                    == 200
            for i in range(8):
                assert (await c.put(f"/v1/users/u{i}", json={"timezone": "UTC", "ts": T0})
                        ).status_code == 200
            r = await c.post("/v1/policies/d24/promote", json={"reason": "t"})
            assert r.status_code == 200, r.text
            ev = [{"user_id": f"u{i}", "event": "cart", "item_id": "i1", "ts": T}
                  for i in range(8)]
            assert (await c.post("/v1/events", json={"events": ev})).status_code == 200
            trig = []
            for i in range(8):
                r = await c.get(f"/v1/users/u{i}/triggers")
                trig += r.json()["triggers"]
            labels = []
            for k in range(2):
                shard = router.client(k)
                assert shard is not None
                _, _, body = await shard.request("GET", "/v1/policies", b"", [])
                labels.append(json.loads(body)["delay"]["active"])
            return trig, router.generation or 0, labels

    trig, gen, labels = asyncio.run(run())
    assert labels == ["d24@v1", "d24@v1"] and gen >= 1
    assert len(trig) == 8 and {t["delay_h"] for t in trig} == {24}
