"""Native vector implementation of ``pushrl/PushTiming-v1`` (its ``vector_entry_point``).

All sub-environments are slots of one :class:`~pushrl.sim.engine.PushSim`, so a step is a
handful of numpy operations over users. Sub-environment ``i`` reset with ``seed=s`` behaves
exactly like ``PushTimingEnv`` reset with ``seed=s + i`` (the Gymnasium convention): each slot
owns a generator used only at resets, and every in-episode draw is counter-based.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from pushrl.envs.push_timing import step_info
from pushrl.envs.scenario import Scenario, load_scenario
from pushrl.envs.observation import TIMING_OBS_NAMES, V0_OBS_NAMES, TimingObservation
from pushrl.envs.world import make_world
from pushrl.sim.contexts import ItemDecider
from pushrl.sim.engine import PushSim
from pushrl.sim.rng import new_key


_MODES = {"next_step": AutoresetMode.NEXT_STEP, "same_step": AutoresetMode.SAME_STEP}


def _mode(m: str | AutoresetMode) -> AutoresetMode:
    if isinstance(m, AutoresetMode) and m in _MODES.values():
        return m
    if isinstance(m, str) and m.lower() in _MODES:
        return _MODES[m.lower()]
    raise ValueError(f"autoreset_mode must be 'next_step' or 'same_step', got {m!r}")


class PushTimingVectorEnv(VectorEnv):
    """``num_envs`` simulated users stepped together (see ``PushTimingEnv`` for the spec).

    Args:
        num_envs: Number of sub-environments (users simulated at once).
        scenario: Scenario name or path.
        item_policy: Object with ``decide_batch(ItemContext, rng)``; default the scenario's
            sampler. A stochastic external policy gets one generator for the whole batch,
            so only the default samplers keep single/vector trajectories identical.
        autoreset_mode: ``"next_step"`` (Gymnasium's default: the step after an episode
            ends resets that sub-environment, ignores its action and returns reward 0) or
            ``"same_step"`` (reset at once; the last observation is in
            ``info["final_obs"]``, masked by ``info["_final_obs"]``).
        obs_names: Observation columns (default all of ``PushTiming-v1``; see
            :class:`~pushrl.envs.observation.TimingObservation`).
        **overrides: Scenario keys to replace.

    Info (every step): ``sent``, ``guardrail_blocked``, ``opened``, ``clicked``, ``converted``,
    ``revenue``, ``unsubscribed``, ``item``, ``item_pscore``, ``p_open``, ``user``, each
    ``(num_envs,)``.
    """

    def __init__(self, num_envs: int, scenario: str | Scenario = "default",
                 item_policy: ItemDecider | None = None,
                 autoreset_mode: str | AutoresetMode = "next_step",
                 render_mode: str | None = None, obs_names: Sequence[str] | None = None,
                 **overrides: Any) -> None:
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        overrides.pop("max_episode_steps", None)
        self.num_envs = int(num_envs)
        self.scenario = load_scenario(scenario, **overrides)
        self.autoreset_mode = _mode(autoreset_mode)
        self.metadata = {"autoreset_mode": self.autoreset_mode, "render_modes": []}
        self.render_mode = render_mode
        world = make_world(self.scenario)
        self.world = world
        self.n_pop = len(world.model.population)  # type: ignore[arg-type]
        self.sim = PushSim(world.model, world.response, self.scenario.sim_config(),
                           self.num_envs, item_policy if item_policy is not None else world.sampler)
        self.observation = TimingObservation(self.scenario.guardrails,
                                             tuple(obs_names or TIMING_OBS_NAMES))
        low, high = self.observation.bounds()
        self.single_observation_space = spaces.Box(low, high, dtype=np.float32)
        self.single_action_space = spaces.Discrete(2)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.obs_names = self.observation.names
        self._rngs: list[np.random.Generator] = []
        self._done = np.zeros(self.num_envs, bool)

    def _obs(self) -> np.ndarray:
        return self.observation.from_engine(self.sim.observe(), self.sim.state, self.sim.slots)

    def _start(self, slots: np.ndarray, options: dict[str, Any] | None = None) -> None:
        pops = np.empty(slots.size, np.int64)
        keys = np.empty(slots.size, np.uint64)
        for j, i in enumerate(slots):
            pops[j] = self._rngs[i].integers(self.n_pop)
            keys[j] = new_key(self._rngs[i])
        if options and "user" in options:
            users = np.broadcast_to(np.asarray(options["user"], np.int64), (self.num_envs,))
            pops[:] = users[slots]
        self.sim.reset(slots, pops, keys)
        self._done[slots] = False

    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-environment; ``seed=s`` seeds sub-environment ``i`` with ``s + i``."""
        if seed is None or isinstance(seed, int | np.integer):
            seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        else:
            if len(seed) != self.num_envs:
                raise ValueError(f"seed list has {len(seed)} entries for {self.num_envs} envs")
            seeds = list(seed)
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seeds[0])
        self._rngs = [seeding.np_random(s)[0] for s in seeds]
        self._start(np.arange(self.num_envs), options)
        obs = self._obs()
        return obs, {"user": self.sim.pop.copy(), "bucket": self.sim.bucket().copy()}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                          dict[str, Any]]:
        if not self._rngs:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(actions).reshape(self.num_envs)
        if ((a != 0) & (a != 1)).any():
            raise ValueError(f"actions must be 0 (wait) or 1 (send), got {np.unique(a)}")
        restart = np.flatnonzero(self._done) if self.autoreset_mode == AutoresetMode.NEXT_STEP \
            else np.zeros(0, np.int64)
        active = np.ones(self.num_envs, bool)
        if restart.size:
            self._start(restart)
            active[restart] = False
        out = self.sim.step(a == 1, active)
        rew = out.reward(self.scenario.reward)
        term = out.unsubscribed.copy()
        trunc = (self.sim.t >= self.scenario.horizon) & ~term & active
        rew[~active] = 0.0
        info = step_info(out, self.sim, slice(None))
        done = term | trunc
        self._done = done
        if self.autoreset_mode == AutoresetMode.SAME_STEP and done.any():
            final = self._obs()
            info["final_obs"] = final
            info["_final_obs"] = done.copy()
            self._start(np.flatnonzero(done))
            self._done[:] = False
        obs = self._obs()
        return obs, rew, term, trunc, info

    def action_masks(self) -> np.ndarray:
        """``(num_envs, 2)`` bool: wait always allowed, send where no guardrail blocks it."""
        allowed = self.sim.observe().allowed.copy()
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            allowed &= ~self._done
        return np.stack([np.ones(self.num_envs, bool), allowed], axis=1)


def make_vec_v0(**kwargs: Any) -> PushTimingVectorEnv:
    """Vector entry point of ``pushrl/PushTiming-v0`` (the 17-column observation)."""
    return PushTimingVectorEnv(obs_names=V0_OBS_NAMES, **kwargs)
