"""With ``--channels``, a trigger send is a push: a user who opted out of push
(``channels: ["email"]``; a push-only unsubscribe does the same) gets no trigger push from
``/v1/triggers/due`` or ``/v1/decide`` (``ServerChannels.push_mask`` ANDed into the
subscription mask in ``ServerTriggers.resolve``); the trigger is re-queued until it expires."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from pushrl.rules.channels import DEFAULT_CHANNELS
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.triggers import TriggerConfig
from pushrl.serve.app import create_app
from pushrl.units import HOUR
from tests.serve.conftest import T0, CoinFlip, doubles, make_cfg, seed_world


def test_a_user_opted_out_of_push_gets_no_trigger_push(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, channels=DEFAULT_CHANNELS, triggers=TriggerConfig.default(),
                   guardrails=Guardrails(0, 0, 0, 0))
    c = TestClient(create_app(cfg, overrides=doubles()))
    c.__enter__()
    try:
        seed_world(c, n_users=2)
        r = c.put("/v1/users/u0", json={"timezone": "UTC", "channels": ["email"]})
        assert r.json()["channels"] == ["email"] and r.json()["subscribed"]
        t = T0 + 10 * HOUR
        ev = [{"user_id": u, "event": "cart", "item_id": "i1", "ts": t} for u in ("u0", "u1")]
        assert c.post("/v1/events", json={"events": ev}).status_code == 200
        sends = c.post("/v1/triggers/due", json={"users": ["u0", "u1"],
                                                 "ts": t + 2 * HOUR}).json()["sends"]
        assert [s["user_id"] for s in sends if s["user_id"] == "u1"] == ["u1"]  # control
        # u0 can only be reached by email: a push is not allowed (or it goes by email)
        assert all(s["user_id"] != "u0" or s.get("channel") == "email" for s in sends)
    finally:
        c.__exit__(None, None, None)


def test_decide_returns_no_trigger_push_to_a_user_opted_out_of_push(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, channels=DEFAULT_CHANNELS, triggers=TriggerConfig.default(),
                   guardrails=Guardrails(0, 0, 0, 0))
    c = TestClient(create_app(cfg, overrides=doubles(timing=CoinFlip(0.0))))
    c.__enter__()
    try:
        seed_world(c, n_users=2)
        assert c.put("/v1/users/u0", json={"timezone": "UTC",
                                           "channels": ["email"]}).status_code == 200
        t = T0 + 10 * HOUR
        ev = [{"user_id": u, "event": "cart", "item_id": "i1", "ts": t} for u in ("u0", "u1")]
        assert c.post("/v1/events", json={"events": ev}).status_code == 200
        d0, d1 = c.post("/v1/decide/batch", json={"requests": [
            {"user_id": "u0", "ts": t + 2 * HOUR},
            {"user_id": "u1", "ts": t + 2 * HOUR}]}).json()["decisions"]
        assert d1["reason"] == "trigger:cart" and d1["trigger_id"]  # control
        assert d0.get("trigger_id") is None and d0["reason"] != "trigger:cart"
        # opted back into push: the re-queued trigger is sent by the next pull
        assert c.put("/v1/users/u0", json={"timezone": "UTC",
                                           "channels": ["push", "email"]}).status_code == 200
        sends = c.post("/v1/triggers/due", json={"users": ["u0"],
                                                 "ts": t + 3 * HOUR}).json()["sends"]
        assert [s["user_id"] for s in sends] == ["u0"]
    finally:
        c.__exit__(None, None, None)
