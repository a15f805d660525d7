"""Online learning by interaction: a stub contextual world, the synthetic ground truth, and
the simulator's environments (PushItem-v0 rounds, PushTiming-v0's pluggable item policy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pushrl.data.features import ENCODED_NAMES, FeatureSpec
from pushrl.policies.base import ItemContext
from pushrl.policies.item_baselines import ItemOracle, UniformRandom
from pushrl.policies.item_data import ContextEncoder
from pushrl.policies.vw import VWConfig, VWItemPolicy
from pushrl.policies.vw_format import VWLayout
from pushrl.train.vw_online import GymItemSource, TrueWorldSource, run_online

ROOT = Path(__file__).resolve().parents[2]
K = 6


class StubWorld:
    """One user feature x in {-1, 1}; click probability 0.1 + 0.6 * [item matches x]."""

    def __init__(self) -> None:
        self.items = np.linspace(-1, 1, K).astype(np.float32)[:, None]
        self.names = ENCODED_NAMES

    def context(self, rng: np.random.Generator) -> ItemContext:
        shared = np.zeros((1, len(ENCODED_NAMES)), np.float32)
        shared[0, 0] = rng.choice([-1.0, 1.0])
        cf = np.concatenate([self.items[None], np.ones((1, K, 1), np.float32)], axis=2)
        p = 0.1 + 0.6 * (np.sign(self.items[:, 0]) == shared[0, 0])
        self.p = p
        return ItemContext(shared, np.arange(K)[None], np.ones((1, K), bool), cf,
                           ENCODED_NAMES, ("quality", "affinity"),
                           extra={"expected_reward": p[None]})

    def feedback(self, action: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return (rng.random(1) < self.p[int(action[0])]).astype(float)

    def layout(self) -> VWLayout:
        return VWLayout.from_catalog(ENCODED_NAMES, ("quality", "affinity"),
                                     np.array([f"i{j}" for j in range(K)]), self.items,
                                     ("quality",))


def test_vw_learns_online_in_a_stub_world() -> None:
    world = StubWorld()
    vw = VWItemPolicy(world.layout(), VWConfig(exploration="epsilon", epsilon=0.1).args())
    learned = run_online(world, vw, 1500, seed=0).summary()
    uniform = run_online(StubWorld(), UniformRandom(), 1000, seed=0).summary()
    oracle = run_online(StubWorld(), ItemOracle(), 200, seed=0).summary()
    exp = "sim/expected_reward"
    assert uniform[exp]["mean"] == pytest.approx(0.1 + 0.6 * 0.5, abs=0.02)
    assert oracle[exp]["mean"] == pytest.approx(0.7)
    # after learning, epsilon-greedy should be near 0.9 * 0.7 + 0.1 * 0.4 = 0.67; the mean
    # expected reward of the last 10% (150 rounds) has a standard error of about 0.02
    last = learned["sim/expected_reward_last_10pct"]["mean"]
    assert last > 0.6, last
    assert learned["sim/regret_vs_oracle"]["mean"] < uniform["sim/regret_vs_oracle"]["mean"]
    ci = learned["sim/reward"]
    assert ci["ci95_low"] < ci["mean"] < ci["ci95_high"]


def test_run_online_is_deterministic_for_a_seed() -> None:
    a = run_online(StubWorld(), UniformRandom(), 200, seed=3)
    b = run_online(StubWorld(), UniformRandom(), 200, seed=3)
    np.testing.assert_array_equal(a.reward, b.reward)
    np.testing.assert_array_equal(a.expected, b.expected)


@pytest.fixture(scope="module")
def truth_source(tiny_synth: Path) -> TrueWorldSource:
    return TrueWorldSource(tiny_synth)


def test_trueworld_expected_rewards_match_the_ground_truth(truth_source: TrueWorldSource) -> None:
    rng = np.random.default_rng(0)
    ctx = truth_source.context(rng)
    er = ctx.extra["expected_reward"]
    assert er.shape == (1, ctx.candidates.shape[1]) and (er > 0).all()
    # Monte Carlo check of the reward draw for one candidate (5000 draws: se < 0.01)
    a = int(np.argmax(er[0]))
    draws = np.array([truth_source.feedback(np.array([a]), rng)[0] for _ in range(5000)])
    se = draws.std() / np.sqrt(draws.size)
    assert abs(draws.mean() - er[0, a]) < 4 * se + 1e-3


def test_trueworld_oracle_beats_uniform(truth_source: TrueWorldSource) -> None:
    u = run_online(truth_source, UniformRandom(), 300, seed=1).summary()
    o = run_online(truth_source, ItemOracle(), 300, seed=1).summary()
    assert o["sim/expected_reward"]["mean"] > u["sim/expected_reward"]["mean"]
    assert o["sim/regret_vs_oracle"]["mean"] == 0.0


_FITTED = ROOT / "simulator_data" / "fitted" / "synth"


def _encoder_layout() -> tuple[ContextEncoder, VWLayout]:
    from pushrl.data.features import ItemCatalog
    from pushrl.data.validate import load_dataset

    ds, _ = load_dataset(ROOT / "simulator_data" / "synth", quarantine=False)
    spec = FeatureSpec.fit(ds)
    cat = ItemCatalog(ds.items, spec)
    enc = ContextEncoder(spec, tuple(map(str, cat.ids)), cat.feature_names)
    lay = VWLayout.from_catalog(enc.shared_names, enc.candidate_feature_names, cat.ids,
                                cat.features, cat.feature_names)
    return enc, lay


@pytest.mark.slow
@pytest.mark.skipif(not _FITTED.exists(), reason="fitted synth simulator not present")
def test_vw_learns_from_push_item_env_and_plugs_into_push_timing() -> None:
    gym = pytest.importorskip("gymnasium")
    envs = pytest.importorskip("pushrl.envs")
    enc, lay = _encoder_layout()
    vw = VWItemPolicy(lay, VWConfig(seed=0).args(), encoder=enc)
    src = GymItemSource(gym.make_vec("pushrl/PushItem-v0", num_envs=8,
                                     vectorization_mode="vector_entry_point", truth=True), 0)
    stats = run_online(src, vw, 64, seed=0)
    assert stats.reward.size == 64 and np.isfinite(stats.expected).all()
    assert vw.model is None  # it learned (model bytes are stale until saved)
    env = envs.PushTimingEnv(item_policy=vw, truth=True)
    env.reset(seed=0)
    items = []
    for _ in range(100):
        _, _, term, trunc, info = env.step(1)
        if info["sent"]:
            items.append((info["item"], info["item_pscore"]))
        if term or trunc:
            env.reset()
    assert items and all(0 < p <= 1 for _, p in items)
