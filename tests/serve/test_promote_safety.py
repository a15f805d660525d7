"""Promotion never leaves the pointer on an artifact that cannot serve (issue #15 items 2, 3,
6, 8): load + smoke decision + catalog check before the atomic switch; start-up falls back to
the last good generation; a broken card is listed, not fatal."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from pushrl.errors import ArtifactError
from pushrl.policies.registry import sha256_file
from pushrl.serve import registry_ops as ops
from pushrl.serve.policyset import load_set
from tests.serve.conftest import T0, AlwaysSend, UniformItem, bl, seed_world
from tests.serve.test_registry_ops import PASS, artifact

ROOT = Path(__file__).resolve().parents[2]
H = 3600


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _wrong_obs_dim(p: Path) -> None:
    """A well-formed actor that takes one more observation column than the env builds."""
    z = dict(np.load(p))
    z["w0"] = np.vstack([z["w0"], np.zeros((1, z["w0"].shape[1]), z["w0"].dtype)])
    z["obs_mean"] = np.append(z["obs_mean"], 0.0)
    z["obs_var"] = np.append(z["obs_var"], 1.0)
    buf = io.BytesIO()
    np.savez(buf, **z)
    p.write_bytes(buf.getvalue())


def shipped(reg: Path, name: str, mutate: Callable[[Path], None] | None = None,
            file: str = "actor.npz") -> Path:
    """Copy a shipped artifact into ``reg``; ``mutate`` one file and re-sign it in the card
    (checksum-valid but broken, as in the issue)."""
    dst = reg / name / "v1"
    shutil.copytree(ROOT / "policies" / name / "v1", dst)
    if mutate is not None:
        mutate(dst / file)
        card = json.loads((dst / "card.json").read_text())
        card["files"][file] = sha256_file(dst / file)
        (dst / "card.json").write_text(json.dumps(card))
    return dst


def _audit(reg: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (reg / ops.AUDIT).read_text().splitlines()]


@pytest.mark.parametrize(("mutate", "match"), [
    (_truncate, "does not load"),
    (_wrong_obs_dim, "observation .* has 19 columns but the actor takes 20"),
])
def test_unloadable_artifact_promote_changes_nothing(tmp_path: Path, mutate: Any,
                                                     match: str) -> None:
    reg = tmp_path / "policies"
    artifact(reg, "good", bl("fixed-hour"), PASS)
    ops.promote(reg, "good")
    before = (reg / ops.ACTIVE).read_bytes()
    shipped(reg, "ppo-timing", mutate)
    for shadow in (False, True):
        with pytest.raises(ArtifactError, match=match):
            ops.promote(reg, "ppo-timing", shadow=shadow, force=True, reason="try it")
    assert (reg / ops.ACTIVE).read_bytes() == before
    failed = [a for a in _audit(reg) if a["action"] == "promote_failed"]
    assert len(failed) == 2 and failed[0]["policy"] == "ppo-timing@v1"
    assert load_set(reg).timing.label == "good@v1"  # the next start is unaffected


def test_unloadable_artifact_via_api_changes_nothing(make_client: Any, tmp_path: Path) -> None:
    reg = tmp_path / "policies"
    artifact(reg, "good", bl("fixed-hour"), PASS)
    shipped(reg, "ppo-timing", _truncate)
    c = make_client(overrides={"item": UniformItem()})
    seed_world(c)
    assert c.post("/v1/policies/good/promote", json={}).status_code == 200
    r = c.post("/v1/policies/ppo-timing/promote", json={"force": True, "reason": "try"})
    assert r.status_code == 409 and r.json()["error"] == "artifact_error", r.text
    assert ops.read_active(reg)["timing"]["active"] == "good@v1"
    assert c.get("/v1/policies").json()["timing"]["active"] == "good@v1"
    d = c.post("/v1/decide", json={"user_id": "u0", "ts": T0 + 19 * H})
    assert d.status_code == 200 and d.json()["policy"] == "good@v1"
    # and the next promote works (the pointer was never left on the broken artifact)
    artifact(reg, "never", bl("never-send"), PASS)
    assert c.post("/v1/policies/never/promote", json={}).status_code == 200


def test_startup_with_broken_active_falls_back_to_last_good(
        make_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reg = tmp_path / "policies"
    artifact(reg, "good", bl("fixed-hour"), PASS)
    ops.promote(reg, "good")
    shipped(reg, "ppo-timing", _truncate)
    # the pointer as an older version left it: moved before the artifact was proven
    ptr = ops.read_active(reg)
    ptr["timing"].update(active="ppo-timing@v1", history=[None, "good@v1"])
    ptr["item"]["shadow"] = "ppo-timing@v1"
    (reg / ops.ACTIVE).write_text(json.dumps(ptr))
    with caplog.at_level(logging.ERROR, logger="pushrl.serve"):
        c = make_client(overrides={"item": UniformItem()})
    pol = c.get("/v1/policies").json()
    assert pol["timing"]["active"] == "good@v1"
    assert "ppo-timing@v1 is broken" in pol["timing"]["fallback"]
    assert "shadow ppo-timing@v1 is broken" in pol["item"]["fallback"]
    assert pol["item"]["shadow"] is None
    assert any("ppo-timing@v1 is broken" in r.getMessage() for r in caplog.records)
    seed_world(c)
    assert c.get("/readyz").status_code == 200
    d = c.post("/v1/decide", json={"user_id": "u0", "ts": T0 + 19 * H}).json()
    assert d["policy"] == "good@v1"


def test_pointer_is_written_atomically_and_durably(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    reg = tmp_path / "policies"
    artifact(reg, "good", bl("fixed-hour"), PASS)
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        synced.append("dir" if stat.S_ISDIR(mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    ops.promote(reg, "good")
    assert "dir" in synced  # the rename itself is made durable
    assert not list(reg.glob(f"{ops.ACTIVE}.*.tmp"))
    assert ops.read_active(reg)["timing"]["active"] == "good@v1"


def test_copied_artifact_is_refused_by_identity(tmp_path: Path) -> None:
    reg = tmp_path / "policies"
    src = artifact(reg, "good", bl("fixed-hour"), PASS)
    shutil.copytree(src, reg / "my-experiment" / "v1")
    with pytest.raises(ArtifactError, match="identity is its registry path"):
        ops.promote(reg, "my-experiment")
    assert ops.read_active(reg)["timing"]["active"] is None


def test_forced_promote_of_item_policy_for_another_catalog_is_refused(
        make_client: Any, tmp_path: Path) -> None:
    reg = tmp_path / "policies"
    shipped(reg, "vw-obd")
    c = make_client(overrides={"timing": AlwaysSend()})
    seed_world(c)
    for body in ({"force": True, "reason": "try"}, {"shadow": True}):
        r = c.post("/v1/policies/vw-obd/promote", json=body)
        assert r.status_code == 409, r.text
        err = r.json()
        assert err["error"] == "catalog_mismatch" and "\n" not in err["detail"]
        assert "vw-obd@v1" in err["detail"] and "PUT /v1/items" in err["detail"]
    ptr = ops.read_active(reg)
    assert ptr["item"]["active"] is None and ptr["item"]["shadow"] is None
    assert [a["action"] for a in _audit(reg)] == ["promote_failed", "promote_failed"]
    d = c.post("/v1/decide", json={"user_id": "u0", "ts": T0 + 12 * H})
    assert d.status_code == 200 and d.json()["item_policy"] == "most-popular@server", d.text


def test_one_broken_card_does_not_break_listing_or_promote(make_client: Any,
                                                           tmp_path: Path) -> None:
    from pushrl.cli.main import app

    reg = tmp_path / "policies"
    artifact(reg, "good", bl("fixed-hour"), PASS)
    for name, text in (("empty", "[]"), ("garbled", "{not json")):
        d = artifact(reg, name, bl("never-send"), PASS)
        (d / "card.json").write_text(text)
    c = make_client(overrides={"item": UniformItem()})
    r = c.get("/v1/policies")
    assert r.status_code == 200, r.text
    avail = {a["name"]: a for a in r.json()["available"]}
    assert set(avail) == {"good", "empty", "garbled"}
    assert avail["good"]["broken"] is None and avail["good"]["kind"] == "timing"
    assert "must be a JSON object" in avail["empty"]["broken"]
    assert "not valid JSON" in avail["garbled"]["broken"]
    assert c.post("/v1/policies/good/promote", json={}).status_code == 200
    r2 = c.post("/v1/policies/empty/promote", json={})
    assert r2.status_code == 409 and "must be a JSON object" in r2.json()["detail"]
    res = CliRunner().invoke(app, ["policies", "list", "--registry", str(reg), "--json"])
    assert res.exit_code == 0, res.output
    broken = {a["name"] for a in json.loads(res.stdout)["artifacts"] if a["broken"]}
    assert broken == {"empty", "garbled"}
    res = CliRunner().invoke(app, ["policies", "list", "--registry", str(reg)])
    assert res.exit_code == 0, res.output
    assert "empty@v1 is broken:" in res.stdout and "garbled@v1 is broken:" in res.stdout
