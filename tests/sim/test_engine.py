"""The engine's expected send value: the vectorised (users x items) computation equals the
per-item reference through the same response models and the one reward definition."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.envs import PushTimingVectorEnv
from pushrl.rules import reward
from pushrl.rules.reward import RewardWeights
from pushrl.sim import engine


def reference_send_value(sim: engine.PushSim, w: RewardWeights, s: np.ndarray,
                         uniform: bool = False) -> np.ndarray:
    """The former per-item loop of ``expected_send_value`` (one response call per item)."""
    obs = sim.observe()
    n_items = sim._item_cat.size
    cand = np.broadcast_to(np.arange(n_items), (s.size, n_items))
    probs = (np.full(cand.shape, 1.0 / n_items) if uniform
             else sim.item_policy.probabilities(cand, np.ones(cand.shape, bool)))
    raw, pop, r = obs.raw[s], sim.pop[s], sim.response
    aff = sim.state.affinity(s, sim._item_cat[cand])
    open_value = np.zeros(s.size)
    for j in range(n_items):
        items = np.full(s.size, j)
        po = r.p_open(pop, raw, aff[:, j], items)
        per_open = reward.value_per_open(w, r.p_click(pop, raw, aff[:, j], items),
                                         r.p_convert(pop, items), r.revenue(items))
        open_value += probs[:, j] * po * per_open
    return reward.expected(w, open_value, r.unsub_hazard(pop, raw))


def _stepped_env(truth: bool, n: int = 60, hours: int = 30) -> PushTimingVectorEnv:
    """An env after ``hours`` of random sends (varied fatigue, affinity and clocks)."""
    venv = PushTimingVectorEnv(n, "default", truth=truth)
    venv.reset(seed=11)
    rng = np.random.default_rng(5)
    for _ in range(hours):
        venv.step((rng.random(n) < 0.3).astype(np.int64))
    return venv


@pytest.mark.parametrize("truth", [False, True])
def test_vectorised_send_value_equals_the_per_item_loop(truth: bool,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    sim = _stepped_env(truth).sim
    w = RewardWeights(open=1.0, click=2.5, revenue=0.03, send_cost=0.07,
                      unsubscribe_penalty=40.0, convert=0.5)
    assert hasattr(sim.item_policy, "probabilities")
    all_slots = np.arange(sim.n)
    want = reference_send_value(sim, w, all_slots)
    got = sim.expected_send_value(w)
    assert got.shape == (sim.n,) and np.ptp(want) > 0
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    sub = np.array([7, 3, 59, 3])  # any order, repeats allowed
    np.testing.assert_allclose(sim.expected_send_value(w, sub), want[sub], rtol=1e-12,
                               atol=1e-12)
    # chunks of a few users (the greedy oracle passes a whole population)
    monkeypatch.setattr(engine, "_PAIR_ROWS", 3 * sim._item_cat.size + 1)
    np.testing.assert_allclose(sim.expected_send_value(w), want, rtol=1e-12, atol=1e-12)


def test_item_policy_without_probabilities_averages_a_uniform_item() -> None:
    sim = _stepped_env(False, n=20, hours=10).sim
    w = RewardWeights()

    class NoProbs:
        def __init__(self, inner: object) -> None:
            self.inner = inner

        def decide_batch(self, ctx, rng):  # type: ignore[no-untyped-def]
            return self.inner.decide_batch(ctx, rng)  # type: ignore[attr-defined]

    sim.item_policy = NoProbs(sim.item_policy)
    s = np.arange(sim.n)
    np.testing.assert_allclose(sim.expected_send_value(w), reference_send_value(sim, w, s, True),
                               rtol=1e-12, atol=1e-12)
    assert sim.expected_send_value(w, np.array([], np.int64)).shape == (0,)
