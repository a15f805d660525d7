"""``pushrl/PushItem-v1`` and the v0 observation it replaced (see the env's Version History)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from pushrl.data.features import ENCODED_NAMES, encode
from pushrl.envs.push_item import PushItemEnv, PushItemVectorEnv

OBD = {"scenario": "obd", "rounds_per_episode": 5}


def _run(env: gym.Env, seed: int, steps: int) -> list[tuple]:
    obs, _ = env.reset(seed=seed)
    out = [(obs, None)]
    for a in range(steps):
        obs, r, _, trunc, info = env.step(a % env.action_space.n)  # type: ignore[attr-defined]
        out.append((obs, (r, trunc, info["item"], info["expected_reward"])))
        if trunc:
            obs, _ = env.reset()
    return out


def test_v1_observes_the_one_item_context_in_the_obd_world() -> None:
    env = gym.make("pushrl/PushItem-v1", **OBD)
    obs, _ = env.reset(seed=3)
    ctx = env.unwrapped.item_context()
    np.testing.assert_array_equal(obs["shared"], ctx.shared[0])
    np.testing.assert_array_equal(obs["candidates"], ctx.candidate_features[0])
    assert ctx.candidate_feature_names[-2:] == ("affinity", "cand_affinity")
    assert not any(n.startswith("position=") for n in ctx.shared_names)
    assert env.observation_space["shared"].shape == (len(ctx.shared_names),)


def test_v0_keeps_the_first_obd_observation() -> None:
    v0 = gym.make("pushrl/PushItem-v0", **OBD)
    v1 = gym.make("pushrl/PushItem-v1", **OBD)
    o0, _ = v0.reset(seed=3)
    o1, _ = v1.reset(seed=3)
    world = v0.unwrapped.rounds.obd
    ctx = v0.unwrapped.item_context()
    row = int(ctx.extra["context_row"][0])
    n_ctx = len(ctx.shared_names) - len(ENCODED_NAMES)  # the logged one-hots
    # shared: encoded features, logged one-hots (v1's columns), then the position one-hot
    assert o0["shared"].shape == (o1["shared"].shape[0] + world.n_positions,)
    np.testing.assert_array_equal(o0["shared"][:o1["shared"].shape[0]], o1["shared"])
    np.testing.assert_array_equal(o0["shared"][:len(ENCODED_NAMES)],
                                  encode(world.raw[[row]])[0])
    pos = o0["shared"][len(ENCODED_NAMES) + n_ctx:]
    assert pos.sum() == 1.0 and pos[world.position[row]] == 1.0
    # candidates: catalog features, then log1p of the logged affinity (v1: 1.0, raw)
    d_cat = len(world.model.item_feature_names)
    assert o0["candidates"].shape == (o1["candidates"].shape[0], d_cat + 1)
    np.testing.assert_array_equal(o0["candidates"][:, :d_cat], o1["candidates"][:, :d_cat])
    np.testing.assert_allclose(o0["candidates"][:, d_cat],
                               np.log1p(o1["candidates"][:, d_cat + 1]), rtol=1e-6)
    assert v0.observation_space["candidates"].shape == o0["candidates"].shape


def test_v0_and_v1_differ_only_in_the_obd_observation() -> None:
    """Same seed: the same rounds, rewards and infos; the push world's observations too."""
    for kw, same_obs in ((OBD, False), ({"scenario": "default", "rounds_per_episode": 5,
                                        "candidates": 8}, True)):
        a = _run(gym.make("pushrl/PushItem-v0", **kw), 11, 7)
        b = _run(gym.make("pushrl/PushItem-v1", **kw), 11, 7)
        for (oa, ra), (ob, rb) in zip(a, b, strict=True):
            assert ra == rb
            eq = all(np.array_equal(oa[k], ob[k]) for k in ("shared", "candidates"))
            assert eq == same_obs


def test_v0_vector_env_equals_single_envs() -> None:
    venv = PushItemVectorEnv(2, obs_version=0, **OBD)
    envs = [PushItemEnv(obs_version=0, **OBD) for _ in range(2)]
    vo, _ = venv.reset(seed=4)
    for i, e in enumerate(envs):
        so, _ = e.reset(seed=4 + i)
        for k in ("shared", "candidates"):
            np.testing.assert_array_equal(vo[k][i], so[k])
    assert venv.single_observation_space == envs[0].observation_space


@pytest.mark.parametrize("version", [2, -1, "1"])
def test_unknown_observation_version_is_refused(version: object) -> None:
    with pytest.raises(ValueError, match="obs_version must be one of"):
        PushItemEnv(obs_version=version, **OBD)  # type: ignore[arg-type]
