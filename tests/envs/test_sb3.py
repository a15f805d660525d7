"""The SB3 VecEnv adapter over the native vector env."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.envs.sb3 import PushTimingSB3VecEnv


def test_vec_env_api_and_terminal_observation() -> None:
    env = PushTimingSB3VecEnv(8, "default", seed=0, horizon_days=1)
    obs = env.reset()
    assert obs.shape == (8, 21) and obs.dtype == np.float32
    for _ in range(24):
        obs, rew, dones, infos = env.step(np.ones(8, np.int64))
        assert rew.dtype == np.float32 and len(infos) == 8
    assert dones.all()  # the 1-day horizon ended everywhere at once
    assert all(i["TimeLimit.truncated"] or i["unsubscribed"] for i in infos)
    assert all(i["terminal_observation"].shape == (21,) for i in infos)
    masks = env.env_method("action_masks")
    assert len(masks) == 8 and all(m[0] for m in masks)


def test_seed_reproduces() -> None:
    a, b = (PushTimingSB3VecEnv(4, "default", seed=3, horizon_days=1) for _ in range(2))
    np.testing.assert_array_equal(a.reset(), b.reset())
    for _ in range(5):
        act = np.array([1, 0, 1, 1])
        np.testing.assert_array_equal(a.step(act)[0], b.step(act)[0])


@pytest.mark.slow
def test_ppo_learns_on_the_adapter() -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    env = PushTimingSB3VecEnv(32, "default", seed=0, horizon_days=3)
    model = PPO("MlpPolicy", env, n_steps=72, batch_size=256, n_epochs=1, seed=0)
    model.set_logger(Logger(None, []))  # (SB3's default logger makes a /tmp/SB3-* dir)
    model.learn(32 * 72 * 2)
