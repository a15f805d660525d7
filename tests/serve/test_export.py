"""`pushrl logs export` writes pushlog v1 that the loader accepts as is, and the closed loop
decide -> feedback -> export -> train bandit -> evaluate -> promote -> serve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pushrl.cli.main import app as cli
from pushrl.data.validate import load_dataset
from tests.serve.conftest import T0, CoinFlip, UniformItem, doubles

H = 3600
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]


def _run_world(c: Any, n_users: int, hours: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for j in range(8):
        c.put(f"/v1/items/i{j}", json={"category": "abcd"[j % 4],
                                       "features": {"price": float(10 + j)}})
    for i in range(n_users):
        c.put(f"/v1/users/u{i}", json={"timezone": ZONES[i % 4], "ts": T0,
                                       "features": {"platform": "ios" if i % 2 else "android"}})
    for h in range(hours):
        for i in range(n_users):
            t = T0 + h * H + int(rng.integers(0, 600))
            if rng.random() < 0.3:
                c.post("/v1/events", json={"user_id": f"u{i}", "ts": t, "event": "view",
                                           "item_id": f"i{rng.integers(0, 8)}"})
            cands = None if rng.random() < 0.5 else [f"i{k}" for k in rng.choice(8, 4, False)]
            d = c.post("/v1/decide", json={"user_id": f"u{i}", "ts": t + 60,
                                           "candidates": cands,
                                           "context": {"surface": "home", "n": h % 3}}).json()
            if d["send"]:
                clicked = bool(rng.random() < 0.3 + 0.1 * int(d["item_id"][1:]) % 4)
                c.post("/v1/feedback", json={"decision_id": d["decision_id"], "opened": clicked
                                             or bool(rng.random() < 0.2), "clicked": clicked,
                                             "revenue": 5.0 if clicked else 0.0,
                                             "ts": t + 1200})


def test_export_validates_with_zero_rejects(make_client: Any, tmp_path: Path) -> None:
    c = make_client(overrides=doubles(timing=CoinFlip(0.5), shadow_item=UniformItem()))
    _run_world(c, 6, 30, 0)
    d = c.post("/v1/decide", json={"user_id": "u0", "ts": T0 + 31 * H}).json()
    if d["send"]:
        late = c.post("/v1/feedback", json={"decision_id": d["decision_id"], "opened": True,
                                            "ts": T0 + 31 * H + 100 * H}).json()
        assert late["late"]
    r = CliRunner().invoke(cli, ["logs", "export", "--state", str(tmp_path / "state"), "--out",
                                 str(tmp_path / "out"), "--json"])
    assert r.exit_code == 0, r.output
    counts = json.loads(r.stdout)
    ds, rep = load_dataset(tmp_path / "out")
    assert rep.n_rejected == 0 and rep.reconciles(), rep.to_dict()["tables"]
    p = ds.pushes
    assert len(p) == counts["pushes"] == 6 * 30 + 1
    assert (~p["sent"]).sum() > 0 and p["sent"].sum() > 0  # not-sent decisions are logged
    assert p["pscore"].between(0, 1, inclusive="right").all()
    sent = p["sent"].to_numpy(bool)
    np.testing.assert_allclose(p.loc[sent, "pscore"], p.loc[sent, "pscore_send"] *
                               p.loc[sent, "pscore_item"])
    assert {"ctx_surface", "ctx_n"} <= set(p.columns)
    assert "platform" in ds.users.columns and "category" in ds.items.columns
    fb = pd.read_parquet(tmp_path / "out" / "feedback.parquet")
    assert fb["late"].sum() == (1 if d["send"] else 0)
    assert len(pd.read_parquet(tmp_path / "out" / "shadow.parquet")) == len(p)


@pytest.mark.slow
def test_closed_loop_train_evaluate_promote_serve(make_client: Any, tmp_path: Path) -> None:
    c = make_client(overrides={"timing": CoinFlip(0.6), "item": UniformItem()})
    srv = c.app.state.server
    _run_world(c, 20, 48, 1)
    run = CliRunner()
    out, reg = tmp_path / "out", tmp_path / "policies"
    r = run.invoke(cli, ["logs", "export", "--state", str(tmp_path / "state"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    r = run.invoke(cli, ["train", "bandit", "--data", str(out), "--out", str(reg / "vwtest"),
                         "--json"])
    assert r.exit_code == 0, r.output
    r = run.invoke(cli, ["evaluate", "--data", str(out), "--policy", str(reg / "vwtest"),
                         "--json", "--n-bootstrap", "50", "--allow-in-sample"])
    assert r.exit_code in (0, 1), r.output  # 0 = gate passes, 1 = blocked: both are verdicts
    card = json.loads((reg / "vwtest" / "v1" / "card.json").read_text())
    assert "passed" in card["ope"]["gate"]
    args = ["policies", "promote", "vwtest", "--registry", str(reg), "--json"]
    if not card["ope"]["gate"]["passed"]:
        args += ["--force", "--reason", "closed-loop test"]
    r = run.invoke(cli, args)
    assert r.exit_code == 0, r.output
    srv.overrides = {"timing": CoinFlip(0.6)}  # from now on the item policy is the registry's
    assert c.portal.call(srv.reload) is True
    d = c.post("/v1/decide/batch", json={"requests": [
        {"user_id": f"u{i}", "ts": T0 + 60 * H} for i in range(20)]}).json()["decisions"]
    assert any(x["send"] for x in d)
    assert all(x["item_policy"] == "vwtest@v1" for x in d if x["send"])
