"""Contract tests over every registered environment: checkers, determinism, vector == single."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import pushrl.envs
from pushrl.envs import PushItemEnv, PushTimingEnv

# every registered env with each scenario it supports (short horizons keep the tests fast)
CASES: list[tuple[str, dict[str, Any]]] = [
    ("pushrl/PushTiming-v1", {"scenario": "default", "horizon_days": 2}),
    ("pushrl/PushTiming-v1", {"scenario": "default_truth", "horizon_days": 2}),
    ("pushrl/PushTiming-v0", {"scenario": "default", "horizon_days": 2}),
    ("pushrl/PushItem-v1", {"scenario": "default", "rounds_per_episode": 20}),
    ("pushrl/PushItem-v1", {"scenario": "obd", "rounds_per_episode": 20}),
    # v0 differs from v1 only in the OBD world (tests/envs/test_push_item.py)
    ("pushrl/PushItem-v0", {"scenario": "obd", "rounds_per_episode": 20}),
]
#: unsubscribes and guardrail-free sends happen often, so episodes end both ways
STRESS = {"fatigue_multiplier": 25.0, "max_sends_per_day": 0, "quiet_hours": [0, 0]}


def test_every_registered_env_is_covered() -> None:
    ids = {e for e in gym.registry if e.startswith("pushrl/")}
    assert ids == set(pushrl.envs.ENV_IDS) == {c[0] for c in CASES}


@pytest.mark.parametrize(("env_id", "kwargs"), CASES)
def test_checkers_pass(env_id: str, kwargs: dict[str, Any]) -> None:
    env = gym.make(env_id, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SB3 recommends 1-D observations; ours are (k, d)
        gym_check_env(env.unwrapped)
        sb3_check_env(env.unwrapped)


def _rollout(env: gym.Env, seed: int, steps: int) -> list[tuple[Any, ...]]:
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        a = int(rng.integers(env.action_space.n))  # type: ignore[attr-defined]
        obs, r, term, trunc, _ = env.step(a)
        out.append((np.concatenate([np.ravel(v) for v in obs.values()])
                    if isinstance(obs, dict) else obs, r, term, trunc))
        if term or trunc:
            env.reset()
    return out


@pytest.mark.parametrize(("env_id", "kwargs"), CASES)
def test_same_seed_same_trajectory(env_id: str, kwargs: dict[str, Any]) -> None:
    a = _rollout(gym.make(env_id, **kwargs), 7, 60)
    b = _rollout(gym.make(env_id, **kwargs), 7, 60)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1:] == y[1:]
    c = _rollout(gym.make(env_id, **kwargs), 8, 60)
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("scenario", ["default", "default_truth"])
def test_timing_vector_env_equals_single_envs(scenario: str) -> None:
    n, seed, steps = 6, 11, 130
    kw = {"scenario": scenario, "horizon_days": 2, **STRESS}
    venv = gym.make_vec("pushrl/PushTiming-v1", num_envs=n, vectorization_mode="vector_entry_point",
                        **kw)
    envs = [PushTimingEnv(**kw) for _ in range(n)]
    vo, _ = venv.reset(seed=seed)
    so = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(envs)])
    np.testing.assert_array_equal(vo, so)
    rng = np.random.default_rng(0)
    done = np.zeros(n, bool)
    ends = 0
    for _ in range(steps):
        a = (rng.random(n) < 0.5).astype(np.int64)
        vo, vr, vt, vtr, vi = venv.step(a)
        for i, e in enumerate(envs):
            if done[i]:  # next-step autoreset: the vector env reset this one, action ignored
                o, _ = e.reset()
                r, t, tr = 0.0, False, False
            else:
                o, r, t, tr, info = e.step(a[i])
                assert info["guardrail_blocked"] == vi["guardrail_blocked"][i]
                assert info["p_open"] == pytest.approx(vi["p_open"][i], rel=1e-12)
            np.testing.assert_array_equal(o, vo[i])
            assert (r, t, tr) == (vr[i], vt[i], vtr[i])
            done[i] = t or tr
            ends += int(t)
    assert ends > 0, "no unsubscribe happened: the test did not cover termination"


def test_item_vector_env_equals_single_envs() -> None:
    n, seed = 3, 5
    kw = {"scenario": "default", "rounds_per_episode": 4, "candidates": 10}
    venv = gym.make_vec("pushrl/PushItem-v1", num_envs=n, vectorization_mode="vector_entry_point",
                        **kw)
    envs = [PushItemEnv(**kw) for _ in range(n)]
    vo, _ = venv.reset(seed=seed)
    so = [e.reset(seed=seed + i)[0] for i, e in enumerate(envs)]
    for i in range(n):
        np.testing.assert_array_equal(vo["candidates"][i], so[i]["candidates"])
    np.testing.assert_allclose(venv.unwrapped.expected_rewards()[1], envs[1].expected_rewards())
    for step in range(4):
        a = np.array([step % 10, (step + 3) % 10, 9])
        vo, vr, _, vtr, _ = venv.step(a)
        for i, e in enumerate(envs):
            o, r, _, tr, _ = e.step(a[i])
            assert (r, tr) == (vr[i], vtr[i])
            if not tr:
                np.testing.assert_array_equal(vo["shared"][i], o["shared"])


def test_make_with_a_scenario_path_and_overrides() -> None:
    path = str(pushrl.envs.scenario.SCENARIO_DIR / "default_fatigue2.toml")
    env = gym.make("pushrl/PushTiming-v0", scenario=path, horizon_days=1)
    assert env.unwrapped.scenario.fatigue_multiplier == 2.0
    assert env.unwrapped.scenario.horizon == 24
