"""Promotion state: OPE gate, --force --reason (audited), rollback, shadow, checksums,
the `pushrl policies` CLI and hot swaps in a running server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pushrl.errors import ArtifactError
from pushrl.policies.registry import save_artifact
from pushrl.serve import registry_ops as ops
from tests.serve.conftest import T0, UniformItem, bl, seed_world

H = 3600


def artifact(reg: Path, name: str, baseline: str, gate: dict[str, Any] | None) -> Path:
    params = {"hour": 19} if "fixed" in baseline else {}
    card: dict[str, Any] = {"baseline": baseline, "params": params,
                            "data_fingerprint": "abc123"}
    if gate is not None:
        card["ope"] = {"gate": gate}
    return save_artifact(reg / name, kind="timing", loader="baseline",
                         files={"notes.txt": b"x"}, card=card)


PASS = {"passed": True, "failed_rules": [], "messages": []}
FAIL = {"passed": False, "failed_rules": ["ess_floor"], "messages": ["candidate ESS 3 < 100"]}


def test_gate_force_reason_audit_and_rollback(tmp_path: Path) -> None:
    reg = tmp_path / "policies"
    artifact(reg, "nogate", bl("never-send"), None)
    artifact(reg, "bad", bl("never-send"), FAIL)
    artifact(reg, "good", bl("fixed-hour"), PASS)
    with pytest.raises(ops.GateRefused, match="OPE gate unavailable"):
        ops.promote(reg, "nogate")
    with pytest.raises(ops.GateRefused, match="ESS 3 < 100"):
        ops.promote(reg, "bad")
    with pytest.raises(ops.GateRefused, match="--reason"):
        ops.promote(reg, "bad", force=True)
    assert ops.read_active(reg)["timing"]["active"] is None
    res = ops.promote(reg, "good")
    assert res["active"] == "good@v1" and res["gate"]["passed"]
    res = ops.promote(reg, "bad", force=True, reason="incident 42: need quiet")
    assert res["active"] == "bad@v1"
    audit = [json.loads(x) for x in (reg / ops.AUDIT).read_text().splitlines()]
    forced = [a for a in audit if a["action"] == "promote_forced"]
    assert forced and forced[0]["reason"] == "incident 42: need quiet"
    assert any(a["action"] == "promote_refused" for a in audit)
    assert ops.rollback(reg, "bad", reason="done")["active"] == "good@v1"
    assert ops.rollback(reg, "good")["active"] is None  # back to the default baseline
    with pytest.raises(ArtifactError, match="nothing to roll back"):
        ops.rollback(reg, "most-active-hour")
    sh = ops.promote(reg, "nogate", shadow=True)  # shadow needs no gate: never acted on
    assert sh["shadow"] == "nogate@v1"
    assert ops.rollback(reg, "nogate")["shadow"] is None


def test_checksum_mismatch_refused(tmp_path: Path) -> None:
    reg = tmp_path / "policies"
    d = artifact(reg, "good", bl("fixed-hour"), PASS)
    (d / "notes.txt").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        ops.promote(reg, "good")


def test_cli(tmp_path: Path) -> None:
    from pushrl.cli.main import app

    reg = tmp_path / "policies"
    artifact(reg, "good", bl("fixed-hour"), PASS)
    artifact(reg, "nogate", bl("never-send"), None)
    r = CliRunner()
    res = r.invoke(app, ["policies", "list", "--registry", str(reg), "--json"])
    assert res.exit_code == 0, res.output
    assert {a["name"] for a in json.loads(res.stdout)["artifacts"]} == {"good", "nogate"}
    res = r.invoke(app, ["policies", "show", "good", "--registry", str(reg)])
    assert res.exit_code == 0 and "abc123" in res.stdout
    res = r.invoke(app, ["policies", "promote", "nogate", "--registry", str(reg)])
    assert res.exit_code != 0 and "OPE gate unavailable" in str(res.exception)
    res = r.invoke(app, ["policies", "promote", "nogate", "--registry", str(reg), "--force",
                         "--reason", "testing", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["active"] == "nogate@v1"
    res = r.invoke(app, ["policies", "rollback", "nogate", "--registry", str(reg), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["active"] is None


def test_hot_swap_via_api_and_pointer(make_client: Any, tmp_path: Path) -> None:
    reg = tmp_path / "policies"
    artifact(reg, "good", bl("fixed-hour"), PASS)
    artifact(reg, "never", bl("never-send"), PASS)
    c = make_client(overrides={"item": UniformItem()})
    seed_world(c)
    d = c.post("/v1/decide", json={"user_id": "u0", "ts": T0 + 12 * H}).json()
    assert d["policy"] == "most-active-hour@builtin"
    r = c.post("/v1/policies/never/promote", json={"reason": "api"})
    assert r.status_code == 200 and r.json()["active"] == "never@v1", r.text
    d = c.post("/v1/decide", json={"user_id": "u1", "ts": T0 + 12 * H}).json()
    assert d["policy"] == "never@v1" and not d["send"]
    # a promotion by another process (the CLI) is picked up from the pointer
    ops.promote(reg, "good")
    srv = c.app.state.server
    assert c.portal.call(srv.reload) is True
    d = c.post("/v1/decide", json={"user_id": "u2", "ts": T0 + 19 * H}).json()
    assert d["policy"] == "good@v1" and d["send"]  # fixed_hour pushes at 19:00
    r = c.post("/v1/policies/good/rollback", json={"reason": "back"})
    assert r.json()["active"] == "never@v1"
    pol = c.get("/v1/policies").json()
    assert pol["timing"]["active"] == "never@v1" and pol["generation"] >= 3
    assert asyncio.iscoroutinefunction(srv.reload)
