"""Stable-Baselines3 ``VecEnv`` over the native vector timing environment.

SB3's PPO consumes a ``VecEnv`` (reset -> obs, step -> obs, rewards, dones, infos with
``terminal_observation`` and ``TimeLimit.truncated``). :class:`PushTimingSB3VecEnv` exposes
:class:`~pushrl.envs.push_timing_vec.PushTimingVectorEnv` (same-step autoreset) that way,
so training runs at vector speed instead of stepping ``num_envs`` Python environments::

    from pushrl.envs.sb3 import PushTimingSB3VecEnv
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor
    env = VecMonitor(PushTimingSB3VecEnv(256, scenario="default", seed=0))
    PPO("MlpPolicy", env, n_steps=168).learn(1_000_000)

Sub-environment ``i`` after ``seed(s)`` is ``PushTimingEnv`` reset with ``s + i``. Maskable
algorithms (sb3-contrib) get the masks from ``env_method("action_masks")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from pushrl.envs.push_timing_vec import PushTimingVectorEnv
from pushrl.envs.scenario import Scenario
from pushrl.sim.contexts import ItemDecider

_INFO = ("sent", "guardrail_blocked", "opened", "clicked", "unsubscribed")


class PushTimingSB3VecEnv(VecEnv):
    """``num_envs`` simulated users as one SB3 ``VecEnv``.

    Args:
        num_envs: Number of sub-environments.
        scenario: Scenario name, path or object.
        seed: Seed of the first reset (sub-environment ``i`` gets ``seed + i``).
        item_policy: Item policy of the timing environment.
        obs_names: Observation columns (default all of ``PushTiming-v1``).
        **overrides: Scenario keys to replace.
    """

    def __init__(self, num_envs: int, scenario: str | Scenario = "default",
                 seed: int | None = None, item_policy: ItemDecider | None = None,
                 obs_names: Sequence[str] | None = None, **overrides: Any) -> None:
        self.venv = PushTimingVectorEnv(num_envs, scenario, item_policy=item_policy,
                                        autoreset_mode="same_step", obs_names=obs_names,
                                        **overrides)
        super().__init__(num_envs, self.venv.single_observation_space,
                         self.venv.single_action_space)
        self.scenario = self.venv.scenario
        if seed is not None:
            self.seed(seed)
        self._actions = np.zeros(num_envs, np.int64)

    def reset(self) -> np.ndarray:
        seeds = self._seeds
        seed_arg = None if all(s is None for s in seeds) else [
            s if s is not None else None for s in seeds]
        obs, _ = self.venv.reset(seed=seed_arg)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs).astype(np.int64)

    def step_wait(self) -> VecEnvStepReturn:
        obs, rew, term, trunc, info = self.venv.step(self._actions)
        dones = term | trunc
        infos: list[dict[str, Any]] = [
            {"TimeLimit.truncated": bool(trunc[i] and not term[i]),
             **{k: bool(info[k][i]) for k in _INFO}} for i in range(self.num_envs)]
        if dones.any():
            final = info["final_obs"]
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = final[i]
        return obs, rew.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        idx = self._indices(indices)
        if method_name == "action_masks":
            masks = self.venv.action_masks()
            return [masks[i] for i in idx]
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in idx]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]

    def action_masks(self) -> np.ndarray:
        """``(num_envs, 2)`` allowed actions (wait, send)."""
        return self.venv.action_masks()
