"""Gymnasium environments over the fitted simulator (layer: data -> sim -> **envs**).

Importing ``pushrl`` registers (:func:`pushrl._register_envs`, the one registration):

* ``pushrl/PushTiming-v1``: when to push one user (:class:`PushTimingEnv`), with the native
  vector implementation :class:`PushTimingVectorEnv` as ``vector_entry_point``; its
  21-column observation is built by :class:`~pushrl.envs.observation.TimingObservation`;
* ``pushrl/PushTiming-v0``: the same environment with the 17-column observation of the
  first agents (:data:`~pushrl.envs.observation.V0_OBS_NAMES`), kept for compatibility;
* ``pushrl/PushItem-v1``: which item to push, a contextual bandit (:class:`PushItemEnv`),
  vector entry point :class:`PushItemVectorEnv`; its observation is the one item context;
* ``pushrl/PushItem-v0``: the same environment with the first OBD observation (position
  one-hot, ``log1p(cand_affinity)``), kept for compatibility.

Batch evaluation: :func:`rollout`; SB3: :class:`~pushrl.envs.sb3.PushTimingSB3VecEnv`;
scenarios: :func:`load_scenario`.
"""

from pushrl.envs.push_item import PushItemEnv, PushItemVectorEnv
from pushrl.envs.push_timing import PushTimingEnv
from pushrl.envs.push_timing_vec import PushTimingVectorEnv
from pushrl.envs.rollout import RolloutResult, rollout
from pushrl.envs.scenario import Scenario, load_scenario
from pushrl.envs.observation import (
    PROFILE_OBS_NAMES,
    TIMING_OBS_NAMES,
    V0_OBS_NAMES,
    TimingObservation,
)
from pushrl.envs.world import make_world

ENV_IDS = ("pushrl/PushTiming-v1", "pushrl/PushTiming-v0", "pushrl/PushItem-v1",
           "pushrl/PushItem-v0")

__all__ = ["ENV_IDS", "PROFILE_OBS_NAMES", "TIMING_OBS_NAMES", "V0_OBS_NAMES", "PushItemEnv",
           "PushItemVectorEnv", "PushTimingEnv", "PushTimingVectorEnv", "RolloutResult",
           "Scenario", "TimingObservation", "load_scenario", "make_world", "rollout"]
