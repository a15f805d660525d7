"""The numpy actor exported from SB3 gives SB3's action probabilities and actions."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from pushrl.errors import ArtifactError
from pushrl.policies.ppo import NumpyActor

OBS_DIM = 12


class _Box(gym.Env):  # type: ignore[misc]
    """A stand-in env with the agent's spaces; only the shapes matter for export."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):  # type: ignore[no-untyped-def]
        super().reset(seed=seed)
        return np.zeros(OBS_DIM, np.float32), {}

    def step(self, action):  # type: ignore[no-untyped-def]
        return np.zeros(OBS_DIM, np.float32), 0.0, False, False, {}


def _model(activation: str) -> tuple[PPO, VecNormalize]:
    torch.manual_seed(0)
    venv = VecNormalize(DummyVecEnv([_Box]), norm_reward=False, clip_obs=5.0)
    rng = np.random.default_rng(0)
    venv.obs_rms.mean = rng.normal(0, 2, OBS_DIM)
    venv.obs_rms.var = rng.gamma(2.0, 1.0, OBS_DIM)
    act = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[activation]
    model = PPO("MlpPolicy", venv, seed=0, device="cpu",
                policy_kwargs={"net_arch": [32, 16], "activation_fn": act})
    with torch.no_grad():  # larger weights than the init so that probabilities spread out
        for p in model.policy.parameters():
            p.mul_(3.0)
    return model, venv


def _sb3_probs(model: PPO, venv: VecNormalize, obs: np.ndarray) -> np.ndarray:
    t, _ = model.policy.obs_to_tensor(venv.normalize_obs(obs))
    with torch.no_grad():
        return model.policy.get_distribution(t).distribution.probs.numpy()


@pytest.fixture(scope="module")
def observations() -> np.ndarray:
    rng = np.random.default_rng(1)
    obs = rng.normal(0, 3, (2000, OBS_DIM)).astype(np.float32)
    obs[:10] *= 100  # exercise the observation clip
    return obs


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_numpy_actor_matches_sb3(activation: str, observations: np.ndarray,
                                 tmp_path: Path) -> None:
    model, venv = _model(activation)
    actor = NumpyActor.load(NumpyActor.from_sb3(model, venv).save(tmp_path / "actor.npz"))
    got = actor.probs(observations)
    want = _sb3_probs(model, venv, observations)
    assert np.abs(got - want).max() < 1e-6
    sb3_actions, _ = model.predict(venv.normalize_obs(observations), deterministic=True)
    assert (got.argmax(axis=1) == sb3_actions).all()
    assert 0.05 < want[:, 1].mean() < 0.95  # the comparison is not between two constants


def test_actor_rejects_wrong_obs_shape() -> None:
    model, venv = _model("tanh")
    actor = NumpyActor.from_sb3(model, venv)
    with pytest.raises(ValueError, match=r"`obs` must have shape \(n, 12\)"):
        actor.probs(np.zeros((3, 11)))


def test_actor_file_without_format_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "bad.npz"
    np.savez(p, obs_mean=np.zeros(3))
    with pytest.raises(ArtifactError, match="actor format"):
        NumpyActor.load(p)
