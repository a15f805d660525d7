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


def test_server_prices_by_the_targets_open_model(make_client: Any, tmp_path: Any) -> None:
    """``--volume V --volume-value FILE``: the engine ranks by ``SendPrice.value`` (the
    target's open model times the fatigue discount), the rule the rollout applies."""
    import numpy as np

    from pushrl.rules.volume import VALUE_BASIS, OpenModel, SendPrice

    coef = np.zeros(len(VALUE_BASIS))
    coef[0], coef[VALUE_BASIS.index("log1p_activity_7d")] = -5.0, 5.0
    target = VolumeTarget(1.0, value_model=OpenModel(tuple(coef)))
    c = make_client(guardrails=Guardrails(0, 0, 0, 0), volume=target)
    seed_world(c, n_users=6)
    ev = [{"user_id": f"u{i}", "event": "session", "ts": T0 - 20 * 3600 + k * 60}
          for i in (0, 2, 4) for k in range(6)]
    assert c.post("/v1/events", json={"events": ev}).status_code == 200
    out = c.post("/v1/decide/batch", json={"requests": [
        {"user_id": f"u{i}", "ts": T0 + 3600} for i in range(6)]}).json()["decisions"]
    assert [d["send"] for d in out] == [True, False] * 3  # only the active users are worth it
    raw = np.zeros((2, 9), np.float32)
    raw[0, 8] = 6.0  # activity_7d (the index of FEATURE_NAMES)
    assert SendPrice(target).allow(SendPrice(target).value(raw)).tolist() == [True, False]


def test_bad_volume_value_file_is_one_line(tmp_path: Any) -> None:
    from tests.cli_runner import run_pushrl

    (tmp_path / "v.json").write_text('{"kind": "uplift"}')
    r = run_pushrl("serve", "--state", str(tmp_path / "s"), "--volume", "3",
                   "--volume-value", str(tmp_path / "v.json"))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out
    assert "--volume-value:" in out and "not an open model" in out


def test_bad_volume_value_power_is_one_line(tmp_path: Any) -> None:
    from tests.cli_runner import run_pushrl

    r = run_pushrl("serve", "--state", str(tmp_path / "s"), "--volume", "3",
                   "--volume-value-power", "-1")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out and "value_power must be > 0" in out
