"""The uplift gate (rules.uplift) and its T-learner (train.uplift)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pushrl.data.features import N_FEATURES, F
from pushrl.rules.uplift import BASIS, UpliftGate, UpliftModel
from pushrl.train.uplift import fit_uplift


def _raw(n: int, g: np.random.Generator) -> np.ndarray:
    raw = np.zeros((n, N_FEATURES), np.float32)
    raw[:, F["activity_7d"]] = g.poisson(20, n)
    raw[:, F["engagement"]] = g.uniform(0, 0.3, n)
    return raw


def test_t_learner_recovers_a_known_uplift() -> None:
    g = np.random.default_rng(0)
    n = 20000
    raw = _raw(n, g)
    a = np.log1p(raw[:, F["activity_7d"]].astype(float))
    t = g.random(n) < 0.5
    sends = np.where(t, 10.0, 0.0)
    # no push: 0.5 * a purchases; a push adds 0.02 per send for light users, 0 for heavy
    eff = np.where(a < np.log1p(20), 0.02, 0.0) * sends
    y = 0.5 * a + eff + g.normal(0, 0.05, n)
    m = fit_uplift(raw, t, y, sends)
    pred = m.predict(raw)
    light = a < np.log1p(15)
    heavy = a > np.log1p(26)
    assert pred[light].mean() == pytest.approx(0.02, abs=0.006)
    assert abs(pred[heavy].mean()) < 0.006
    gate = UpliftGate(m, 0.01)
    assert gate.allow(raw)[light].mean() > 0.9 and gate.allow(raw)[heavy].mean() < 0.1


def test_gate_moves_send_probability_to_wait() -> None:
    m = UpliftModel("conversions", (0.0,) * len(BASIS), (0.0,) * len(BASIS),
                    (1.0,) + (0.0,) * (len(BASIS) - 1))
    raw = np.zeros((3, N_FEATURES), np.float32)
    dist = np.array([[0.2, 0.8], [1.0, 0.0], [0.5, 0.5]])
    np.testing.assert_array_equal(UpliftGate(m, 0.0).apply(dist, raw), dist)  # 0 >= 0
    np.testing.assert_array_equal(UpliftGate(m, 0.1).apply(dist, raw),
                                  [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])


def test_save_load_and_bad_files(tmp_path: Path) -> None:
    m = UpliftModel("objective", tuple(range(len(BASIS))), (0.0,) * len(BASIS),
                    (2.0,) * len(BASIS), meta={"users": 3})
    assert UpliftModel.load(m.save(tmp_path / "m.json")) == m
    with pytest.raises(ValueError, match="does not exist"):
        UpliftModel.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not JSON"):
        UpliftModel.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"kind": "vw"}')
    with pytest.raises(ValueError, match="not an uplift model"):
        UpliftModel.load(tmp_path / "other.json")


@pytest.mark.parametrize("kw, match", [
    ({"outcome": "opens"}, "outcome"),
    ({"coef_send": (1.0,)}, "coef_send"),
    ({"coef_wait": (float("nan"),) * len(BASIS)}, "coef_wait"),
    ({"min_sends": 0.0}, "min_sends")])
def test_bad_models(kw: dict, match: str) -> None:
    base = dict(outcome="conversions", coef_send=(0.0,) * len(BASIS),
                coef_wait=(0.0,) * len(BASIS), coef_sends=(1.0,) * len(BASIS))
    with pytest.raises(ValueError, match=match):
        UpliftModel(**{**base, **kw})  # type: ignore[arg-type]


def test_fit_refuses_tiny_arms() -> None:
    raw = np.zeros((30, N_FEATURES), np.float32)
    with pytest.raises(ValueError, match="20 users per arm"):
        fit_uplift(raw, np.arange(30) < 25, np.zeros(30), np.zeros(30))


def test_simulator_pipeline_need_state_is_the_true_last_purchase() -> None:
    """The simulator records every purchase (warm start, organic, pushed) in the pipeline, so
    the gate's hours since purchase are the hidden need clock's, floored to the hour; a
    need-state gate never sends within its hours of a purchase."""
    from pushrl.envs.scenario import load_scenario
    from pushrl.envs.world import make_world
    from pushrl.sim.engine import PushSim

    sc = load_scenario("default", truth=True, organic_purchases=True, horizon_days=6)
    world = make_world(sc)
    n = 400
    sim = PushSim(world.model, world.response, sc.sim_config(), n, world.sampler,
                  item_rng=np.random.default_rng(1))
    g = np.random.default_rng(0)
    sim.reset(np.arange(n), g.integers(0, len(world.model.population), n),
              g.integers(1, 2**62, n).astype(np.uint64))
    gate = UpliftGate(None, 0.0, 24.0)
    bought = sent_after = 0
    for _ in range(sc.horizon):
        obs = sim.observe()
        hsp = sim.state.hours_since_purchase(sim.slots, obs.bucket)
        true = np.minimum(obs.bucket - np.floor(sim.last_buy), 336)
        past = np.floor(sim.last_buy) < obs.bucket
        assert np.array_equal(hsp[past], true[past])
        allow = gate.allow(obs.raw, hsp)
        assert (hsp[allow] >= 24).all()
        out = sim.step(allow)
        bought += int(out.converted.sum() + (out.organic_converted > 0).sum())
        sent_after += int(out.delivered.sum())
    assert bought > 50 and sent_after > 100  # the check saw purchases and sends
