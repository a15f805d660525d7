"""`pushrl logs export` writes the per-trigger-kind holdout arms (#18 leftover): the exported
``triggers`` rows carry ``holdout``/``p_holdout`` exactly as the server logged them, the log
validates, and ``pushrl lift DATA --trigger-kind K`` on the export gives the same per-user
lift as ``pushrl lift --state DIR --trigger-kind K`` on the server's own log."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from pushrl.data.io import read_tables
from pushrl.data.validate import load_dataset
from pushrl.rules.triggers import TriggerKind
from tests.cli_runner import run_pushrl
from tests.serve.test_trigger_holdout import KINDS, _run, _serve

N = 120


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A server (the real app) with cart and browse holdouts of 0.3 that created a cart and a
    browse trigger for each of 120 users and pulled them for 6 h; opens fed back for cart
    pushes. Returns the tmp dir (``state`` inside)."""
    tmp = tmp_path_factory.mktemp("trighold")
    c = _serve(tmp, KINDS)
    try:
        sends = _run(c, N)
        fb = [{"decision_id": s[0]["decision_id"], "opened": True}
              for (_, kind), s in sends.items() if kind == "cart"]
        assert c.post("/v1/feedback/batch", json={"feedback": fb}).status_code == 200
    finally:
        c.__exit__(None, None, None)
    return tmp


def _server_rows(state: Path) -> pd.DataFrame:
    db = sqlite3.connect(state / "log.sqlite3")
    try:
        return pd.read_sql_query("SELECT trigger_id, kind, user_id, holdout, p_holdout "
                                 "FROM triggers", db)
    finally:
        db.close()


def test_exported_trigger_rows_carry_the_servers_holdout_arms(served: Path) -> None:
    out = served / "export"
    r = run_pushrl("logs", "export", "--state", served / "state", "--out", out)
    assert r.returncode == 0, r.stderr
    server = _server_rows(served / "state").set_index("trigger_id")
    assert server["holdout"].notna().all() and len(server) == 2 * N  # cart + browse
    ds, _ = load_dataset(out)  # the export validates under the contract
    t = ds.triggers.set_index("trigger_id")
    assert set(t.index) == set(server.index)
    got = t.loc[server.index]
    assert str(got["holdout"].dtype) == "boolean"
    assert (got["holdout"].astype(int).to_numpy() == server["holdout"].to_numpy()).all()
    assert (got["p_holdout"].to_numpy() == server["p_holdout"].to_numpy()).all()
    # the arms are the kinds' own rule (the kind's campaign salt), not one shared arm
    for kind in ("cart", "browse"):
        rows = server[server["kind"] == kind]
        want = KINDS[TriggerKind(kind)].held_out(rows["user_id"].tolist())
        assert (rows["holdout"].to_numpy().astype(bool) == want).all()
    # a held-out row was never sent; a treated one was
    assert ((t["status"] == "sent") == ~t["holdout"].astype(bool)).all()


def test_lift_on_the_export_equals_lift_on_the_state(served: Path) -> None:
    out = served / "export2"
    assert run_pushrl("logs", "export", "--state", served / "state", "--out",
                      out).returncode == 0
    a = run_pushrl("lift", "--state", served / "state", "--trigger-kind", "cart", "--json")
    b = run_pushrl("lift", str(out), "--trigger-kind", "cart", "--json")
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    da, db = json.loads(a.stdout), json.loads(b.stdout)
    assert (da["users"], da["held_out"]) == (db["users"], db["held_out"]) == (
        N, int(KINDS[TriggerKind.CART].held_out([f"u{i}" for i in range(N)]).sum()))
    ma = {m["metric"]: m for m in da["metrics"]}
    mb = {m["metric"]: m for m in db["metrics"]}
    assert ma.keys() == mb.keys()
    for k in ma:
        for f in ("treated", "held_out", "lift"):
            assert mb[k][f] == pytest.approx(ma[k][f], rel=1e-9, abs=1e-12), (k, f)
    assert mb["opens"]["lift"] == 1.0
    r = run_pushrl("lift", str(out), "--trigger-kind", "winback")
    assert r.returncode == 2 and "no 'winback' trigger carries a holdout arm" in r.stderr
    assert "Traceback" not in r.stderr


def test_an_export_without_per_kind_holdouts_has_no_columns(tmp_path: Path) -> None:
    c = _serve(tmp_path, {})
    try:
        _run(c, 30)
    finally:
        c.__exit__(None, None, None)
    out = tmp_path / "export"
    assert run_pushrl("logs", "export", "--state", tmp_path / "state", "--out",
                      out).returncode == 0
    t = read_tables(out)["triggers"]
    assert len(t) and "holdout" not in t and "p_holdout" not in t
    r = run_pushrl("lift", str(out), "--trigger-kind", "cart")
    assert r.returncode == 2 and "no `holdout` column" in r.stderr
