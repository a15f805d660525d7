"""The server's batched trigger paths decide and log what the one-at-a-time paths do: a price
drop that creates triggers for many users gets its delay arms from one batched score (the VW
model's closed form) with the same arms, probabilities and rows as deciding one trigger at a
time through VW; the pull's vectorised weekly-cap count equals the per-user count; a pull's
rows (one statement per table) rebuild the same tracker after a restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from pushrl.data.features import TemplateRecency
from pushrl.rules.guardrails import Guardrails, in_week_window
from pushrl.rules.triggers import TriggerConfig
from pushrl.serve.app import create_app
from pushrl.serve.guardrails import SendHistory
from pushrl.serve.triggers import SNAPSHOT_FILE
from pushrl.units import HOUR
from tests.serve.conftest import T0, doubles, make_cfg, seed_world

T = T0 + 10 * HOUR
N = 40


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VW delay policy trained on a small trigger world (non-uniform arms)."""
    from pushrl.data.validate import load_dataset
    from pushrl.data.worlds import world_config
    from pushrl.policies.delay_data import delay_rounds
    from pushrl.sim.trigger_world import WORLD_GUARDRAILS, WORLD_TRIGGERS, synthesize_triggers
    from pushrl.train.delay import train_rounds

    d = tmp_path_factory.mktemp("delay_world")
    synthesize_triggers(d, world_config("triggers", users=120, days=8, seed=2))
    ds, _ = load_dataset(d, quarantine=False)
    r = delay_rounds(ds, TriggerConfig.parse(WORLD_TRIGGERS), WORLD_GUARDRAILS, unsub_cost=1.0)
    pol = train_rounds(r.with_costs(0.03, 1.0), passes=2)
    return pol.save(d / "delay-vw", {"trigger_policy": {"arms": list(r.arms)}})


class _OneByOne:
    """A delay policy without ``choose_many``: the server decides trigger by trigger."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.label = inner, inner.label

    def choose(self, *a: Any) -> Any:
        return self.inner.choose(*a)


def _price_drop_rows(tmp: Path, art: Path, mode: str) -> list[tuple[Any, ...]]:
    c = TestClient(create_app(make_cfg(tmp, triggers=TriggerConfig.default(),
                                       guardrails=Guardrails(0, 0, 0, 0),
                                       trigger_delay_policy=str(art)), overrides=doubles()))
    with c:
        trig = c.app.state.server.state.triggers  # type: ignore[attr-defined]
        assert trig.policy.scorer is not None  # the closed form was proved at load
        if mode != "batch":
            if mode == "vw":
                trig.policy.scorer = None
            trig.policy = _OneByOne(trig.policy)
        seed_world(c, n_users=N)
        assert c.put("/v1/items/i2", json={"category": "a",
                                           "features": {"price": 10.0}}).status_code == 200
        r = c.post("/v1/events", json={"events": [
            {"user_id": f"u{i}", "event": "view", "item_id": "i2", "ts": T + i}
            for i in range(N)]})
        assert r.status_code == 200, r.text
        r = c.post("/v1/items/updates", json={"item_id": "i2", "ts": T + HOUR, "price": 7.0})
        assert r.json()["triggers_created"] == N, r.text
    db = sqlite3.connect(tmp / "state" / "log.sqlite3")
    try:
        return db.execute("SELECT trigger_id, seq, user_id, delay_h, pscore, status "
                          "FROM triggers ORDER BY seq").fetchall()
    finally:
        db.close()


def test_a_fan_out_is_decided_in_one_batch_like_one_at_a_time(tmp_path: Path,
                                                              artifact: Path) -> None:
    batch = _price_drop_rows(tmp_path / "batch", artifact, "batch")
    one = _price_drop_rows(tmp_path / "one", artifact, "one")
    vw = _price_drop_rows(tmp_path / "vw", artifact, "vw")
    assert len(batch) == N and batch == one == vw
    assert len({r[3] for r in batch}) > 1 and any(r[4] < 1 for r in batch)


def test_the_vectorised_weekly_count_is_the_per_user_count() -> None:
    rng = np.random.default_rng(3)
    h = SendHistory()
    for k in range(1500):
        us = np.unique(rng.integers(0, 300, 30))
        h.record_many(us.tolist(), T0 + k * 1200, [0] * us.size)
    for n in (1, 32, 33, 250):
        users = rng.permutation(320)[:n]
        b = (T0 + 1500 * 1200) // HOUR - rng.integers(0, 300, n)
        _, week = h.counts(users, b, np.zeros(n, np.int64))
        want = [sum(bool(in_week_window(x, bb)) for x in h._buckets.get(u, ()))
                for u, bb in zip(users.tolist(), b.tolist(), strict=True)]
        assert week.tolist() == want and week.dtype == np.int64


def test_one_user_template_recency_is_the_batch_rule() -> None:
    rng = np.random.default_rng(4)
    rec = TemplateRecency(50, 5)
    for k in range(400):
        u = rng.integers(0, 50, 3)
        rec.record(u, 1000 + k // 4, rng.integers(0, 5, 3))
    users = np.arange(50)
    for b in (1000, 1050, 1101, 1200, 1500):
        every = rec.hours(users, b)
        one = np.concatenate([rec.hours(users[i:i + 1], np.array([b])) for i in range(50)])
        assert np.array_equal(every, one) and one.dtype == np.float32


def test_a_large_pull_rebuilds_the_same_tracker_after_a_restart(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, triggers=TriggerConfig.default(), guardrails=Guardrails(0, 0, 1, 0))
    with TestClient(create_app(cfg, overrides=doubles())) as c:
        seed_world(c, n_users=120)
        r = c.post("/v1/events", json={"events": [
            {"user_id": f"u{i}", "event": "cart", "item_id": f"i{j}", "ts": T + i}
            for i in range(120) for j in range(1 + i % 3)]})
        assert r.status_code == 200
        users = [f"u{i}" for i in range(120)]
        first = c.post("/v1/triggers/due", json={"users": users, "ts": T + 2 * HOUR}).json()
        again = c.post("/v1/triggers/due", json={"users": users, "ts": T + 3 * HOUR}).json()
        tr = c.app.state.server.state.triggers.tracker  # type: ignore[attr-defined]
        before = tr.to_dict()
    assert len(first["sends"]) == 120 and first["requeued"] == 120  # 1 a day: rest waits
    assert not again["sends"] and again["requeued"] == 120
    db = sqlite3.connect(tmp_path / "state" / "log.sqlite3")
    try:
        sent = db.execute("SELECT count(*) FROM decisions WHERE trigger_id IS NOT NULL "
                          "AND sent=1").fetchone()[0]
        status = db.execute("SELECT count(*) FROM triggers WHERE status='sent' AND "
                            "decision_id IS NOT NULL").fetchone()[0]
    finally:
        db.close()
    assert sent == status == 120
    (tmp_path / "state" / SNAPSHOT_FILE).unlink()  # replay the whole journal
    with TestClient(create_app(cfg, overrides=doubles())) as c:
        tr = c.app.state.server.state.triggers.tracker  # type: ignore[attr-defined]
        assert tr.to_dict() == before
