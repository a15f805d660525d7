"""Per-trigger-kind live holdouts (#18 item 1): a user held out of kind K is never sent a K
trigger through the real app while its other kinds' triggers (and scheduled pushes) still
reach it; assignment shares and independence across kinds; the stored holdout refuses a
changed share; ``pushrl lift --trigger-kind K`` reads the log."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from pushrl.rules.guardrails import Guardrails
from pushrl.rules.holdout import Holdout
from pushrl.rules.triggers import TriggerConfig, TriggerKind
from pushrl.serve.app import create_app
from pushrl.serve.store import StateError
from pushrl.rules.holdout import parse_trigger_holdouts as parse
from pushrl.serve.trigger_holdout import check, lift_data
from pushrl.units import HOUR
from tests.cli_runner import run_pushrl
from tests.serve.conftest import T0, doubles, make_cfg, seed_world

OPEN = Guardrails(0, 0, 0, 0)
T = T0 + 10 * HOUR
N = 200
KINDS = parse(["cart=0.3", "browse=0.3"], "t")


def _serve(tmp: Path, holdouts: dict[TriggerKind, Holdout]) -> TestClient:
    cfg = make_cfg(tmp, triggers=TriggerConfig.default(), guardrails=OPEN,
                   trigger_holdouts=holdouts)
    c = TestClient(create_app(cfg, overrides=doubles()))
    c.__enter__()
    return c


def _run(c: TestClient, n: int) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every user carts i1 and views i2 three times at T (a cart and a browse trigger, both
    due at T + 1 h); pulls every hour for 6 h. Returns the sends by (user, kind)."""
    seed_world(c, n_users=n)
    ev = [{"user_id": f"u{i}", "event": e, "item_id": it, "ts": T + k}
          for i in range(n) for k, (e, it) in enumerate(
              [("view", "i2"), ("view", "i2"), ("view", "i2"), ("cart", "i1")])]
    assert c.post("/v1/events", json={"events": ev}).status_code == 200
    sends: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    users = [f"u{i}" for i in range(n)]
    for h in range(1, 7):
        r = c.post("/v1/triggers/due", json={"users": users, "ts": T + h * HOUR})
        assert r.status_code == 200, r.text
        for s in r.json()["sends"]:
            sends[(s["user_id"], s["kind"])].append(s)
    return sends


def test_kind_held_out_users_get_no_sends_of_that_kind_but_other_kinds(tmp_path: Path) -> None:
    c = _serve(tmp_path, KINDS)
    try:
        sends = _run(c, N)
        ids = [f"u{i}" for i in range(N)]
        cart_held = KINDS[TriggerKind.CART].held_out(ids)
        browse_held = KINDS[TriggerKind.BROWSE].held_out(ids)
        assert 0 < cart_held.sum() < N and 0 < browse_held.sum() < N
        assert (cart_held & ~browse_held).any() and (browse_held & ~cart_held).any()
        for i, u in enumerate(ids):
            n_cart, n_browse = len(sends[(u, "cart")]), len(sends[(u, "browse")])
            # 0 sends of a held-out kind; exactly one of every other kind
            assert n_cart == (0 if cart_held[i] else 1), (u, n_cart)
            assert n_browse == (0 if browse_held[i] else 1), (u, n_browse)
        # a cart-held user's decide is never answered by its cart trigger, and its
        # scheduled push still goes out (AlwaysSend; the scheduled campaign has no holdout)
        u = ids[int(np.flatnonzero(cart_held)[0])]
        d = c.post("/v1/decide", json={"user_id": u, "ts": T + 7 * HOUR}).json()
        assert d["send"] is True and d.get("trigger_id") is None, d
    finally:
        c.__exit__(None, None, None)
    db = sqlite3.connect(tmp_path / "state" / "log.sqlite3")
    rows = db.execute("SELECT user_id, kind, holdout, p_holdout, status FROM triggers "
                      "WHERE kind IN ('cart', 'browse')").fetchall()
    db.close()
    assert len(rows) == 2 * N
    arm = {"cart": dict(zip(ids, cart_held.tolist(), strict=True)),
           "browse": dict(zip(ids, browse_held.tolist(), strict=True))}
    for user, kind, held, p, status in rows:
        assert held == int(arm[kind][user]) and p == 0.3
        assert (status == "sent") == (not held)


def test_assignment_shares_and_independence_across_kinds() -> None:
    """20k ids: each kind's share within 4 binomial standard errors; the overlap of two
    kinds (and of a kind with the scheduled holdout) within 4 standard errors of the
    product of the shares (independent hashes)."""
    n = 20_000
    ids = [f"user-{i}" for i in range(n)]
    kinds = parse(["cart=0.05", "winback=0.1"], "0")
    a = kinds[TriggerKind.CART].held_out(ids)
    b = kinds[TriggerKind.WINBACK].held_out(ids)
    sched = Holdout(0.05, "0").held_out(ids)  # the scheduled campaign, same salt

    def within(x: np.ndarray, p: float) -> bool:
        return bool(abs(x.mean() - p) < 4 * np.sqrt(p * (1 - p) / n))

    assert within(a, 0.05) and within(b, 0.1) and within(sched, 0.05)
    assert within(a & b, 0.05 * 0.1)
    assert within(a & sched, 0.05 * 0.05)
    assert kinds[TriggerKind.CART].campaign == "cart"  # the kind is the campaign


@pytest.mark.parametrize("spec, match", [
    ("cart", "KIND=SHARE"), ("basket=0.1", "unknown trigger kind"),
    ("cart=x", "share must be a number"), ("cart=0.7", "share must be a number in"),
])
def test_bad_specs_are_refused(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse([spec])


def test_restart_with_another_share_is_refused_in_one_line(tmp_path: Path) -> None:
    c = _serve(tmp_path, KINDS)
    c.__exit__(None, None, None)
    # a restart without the flag runs the stored holdouts
    assert check(tmp_path / "state", {}) == KINDS
    other = parse(["cart=0.1"], "t")
    with pytest.raises(StateError, match=r"--trigger-holdout cart=.*changing the share"):
        check(tmp_path / "state", other)
    with pytest.raises(StateError, match="changing the share"):
        _serve(tmp_path, other)
    r = run_pushrl("serve", "--state", str(tmp_path / "state"), "--registry",
                   str(tmp_path / "policies"), "--triggers", "default",
                   "--trigger-holdout", "cart=0.1")
    assert r.returncode == 2 and "changing the share" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_pushrl("serve", "--state", str(tmp_path / "s2"), "--trigger-holdout", "cart=0.1")
    assert r.returncode == 2 and "needs --triggers" in r.stderr


def test_lift_for_a_kind_reports_both_arms(tmp_path: Path) -> None:
    n = 120
    c = _serve(tmp_path, KINDS)
    try:
        sends = _run(c, n)
        fb = [{"decision_id": s[0]["decision_id"], "opened": True}
              for (_, kind), s in sends.items() if kind == "cart"]
        assert c.post("/v1/feedback/batch", json={"feedback": fb}).status_code == 200
    finally:
        c.__exit__(None, None, None)
    held = KINDS[TriggerKind.CART].held_out([f"u{i}" for i in range(n)])
    ld = lift_data(tmp_path / "state", "cart")
    assert len(ld.users) == n and int(ld.users["held_out"].sum()) == int(held.sum())
    r = run_pushrl("lift", "--state", str(tmp_path / "state"), "--trigger-kind", "cart",
                   "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["users"] == n and out["held_out"] == int(held.sum())
    m = {x["metric"]: x for x in out["metrics"]}
    # treated users were sent one cart push each and opened it; held-out users none
    assert m["sends"]["treated"] == 1.0 and m["sends"]["held_out"] == 0.0
    assert m["opens"]["lift"] == 1.0
    r = run_pushrl("lift", "--state", str(tmp_path / "state"), "--trigger-kind", "winback")
    assert r.returncode == 2 and "no 'winback' trigger carries a holdout arm" in r.stderr
    r = run_pushrl("lift", "--state", str(tmp_path / "state"), "--trigger-kind", "basket")
    assert r.returncode == 2 and "unknown trigger kind" in r.stderr


def test_a_restart_without_the_flag_keeps_holding_out(tmp_path: Path) -> None:
    """The stored per-kind holdouts run after a restart without ``trigger_holdouts``: the
    held-out users' re-queued cart triggers are still never sent, until they expire."""
    n = 60
    c = _serve(tmp_path, KINDS)
    try:
        first = _run(c, n)
    finally:
        c.__exit__(None, None, None)
    users = [f"u{i}" for i in range(n)]
    held = KINDS[TriggerKind.CART].held_out(users)
    assert {u for (u, k) in first if k == "cart"} == {
        u for u, h in zip(users, held, strict=True) if not h}
    c = _serve(tmp_path, {})
    try:
        def pending(u: str) -> list[str]:
            return [t["kind"] for t in c.get(f"/v1/users/{u}/triggers").json()["triggers"]]

        for h in (8, 30, 47):
            r = c.post("/v1/triggers/due", json={"users": users, "ts": T + h * HOUR})
            assert r.status_code == 200 and r.json()["sends"] == [], r.text
            assert all(("cart" in pending(u)) == bool(x) for u, x in zip(users, held,
                                                                          strict=True))
        r = c.post("/v1/triggers/due", json={"users": users, "ts": T + 49 * HOUR})
        assert r.json()["sends"] == [] and not any(pending(u) for u in users)  # expired
    finally:
        c.__exit__(None, None, None)
    db = sqlite3.connect(tmp_path / "state" / "log.sqlite3")
    st = dict(db.execute("SELECT user_id, status FROM triggers WHERE kind = 'cart'").fetchall())
    db.close()
    assert all((st[u] == "sent") != h for u, h in zip(users, held, strict=True))


def test_a_scenario_declares_per_kind_holdouts(tmp_path: Path) -> None:
    """`[holdout.triggers]` in a scenario gives the same holdouts as the flags (one parser,
    salted with `[holdout] salt`); `pushrl serve --scenario` runs them unless
    `--trigger-holdout` is given, and only with `--triggers`."""
    from pushrl.cli.serve import _trigger_holdouts
    from pushrl.envs.scenario import ScenarioError, load_scenario
    from pushrl.errors import PushrlError

    from pushrl.envs.scenario import SCENARIO_DIR

    head = (f'data = "{SCENARIO_DIR.parent}/simulator_data/synth"\n'
            f'sim = "{SCENARIO_DIR.parent}/simulator_data/fitted/synth"\n')
    sc = tmp_path / "sc.toml"
    sc.write_text(head + '[holdout]\nsalt = "t"\n[holdout.triggers]\ncart = 0.3\n'
                  'winback = 0.1\n')
    got = load_scenario(sc)
    assert got.trigger_holdouts == parse(["cart=0.3", "winback=0.1"], "t")
    assert got.holdout is not None and got.holdout.share == 0.0  # no scheduled holdout
    assert _trigger_holdouts(None, "0", "default", str(sc)) == got.trigger_holdouts
    flag = _trigger_holdouts(["browse=0.2"], "0", "default", str(sc))
    assert list(flag) == [TriggerKind.BROWSE]  # the flag wins over the scenario
    with pytest.raises(PushrlError, match=r"\[holdout.triggers\].*needs --triggers"):
        _trigger_holdouts(None, "0", None, str(sc))
    bad = tmp_path / "bad.toml"
    bad.write_text(head + "[holdout.triggers]\nbasket = 0.1\n")
    with pytest.raises(ScenarioError, match=r"\[holdout.triggers\] unknown trigger kind"):
        load_scenario(bad)
    bad.write_text(head + "[holdout]\ntriggers = 0.1\n")
    with pytest.raises(ScenarioError, match="must be a table"):
        load_scenario(bad)
