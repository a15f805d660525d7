"""``pushrl serve --volume``: the global volume target's price gate in the engine (the same
:mod:`pushrl.rules.volume` the simulator's rollout calls; see ``tests/rules/test_volume.py``)."""

from __future__ import annotations

from typing import Any

from pushrl.rules.guardrails import Guardrails
from pushrl.rules.volume import VolumeTarget
from tests.serve.conftest import T0, seed_world


def test_server_gates_sends_by_the_same_price(make_client: Any) -> None:
    """``--volume``: the engine applies the same gate before sampling, so a row whose
    ``send_value`` is below the price has ``p_send = 0``; the price then moves with the
    observed volume."""
    c = make_client(guardrails=Guardrails(0, 0, 0, 0), volume=VolumeTarget(1.0))
    seed_world(c, n_users=20)
    out = c.post("/v1/decide/batch", json={"requests": [
        {"user_id": f"u{i}", "ts": T0} for i in range(20)]}).json()["decisions"]
    # new users: engagement is the prior for everyone, sends_7d 0: one value for all rows
    p0 = VolumeTarget(1.0).initial_price
    sent = [d["send"] for d in out]
    assert len(set(sent)) == 1 and all(d["p_send"] in (0.0, 1.0) for d in out)
    engine = c.app.state.server.engine  # type: ignore[attr-defined]
    assert engine.price is not None and engine.price.price == p0
    out2 = c.post("/v1/decide/batch", json={"requests": [
        {"user_id": f"u{i}", "ts": T0 + 3600} for i in range(20)]}).json()["decisions"]
    assert engine.price.price != p0  # the first hour closed: the controller moved
    assert len(out2) == 20
