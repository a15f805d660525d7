"""Gymnasium environments over the fitted simulator (layer: data -> sim -> **envs**).

Importing this package registers:

* ``pushrl/PushTiming-v0``: when to push one user (:class:`PushTimingEnv`), with the native
  vector implementation :class:`PushTimingVectorEnv` as ``vector_entry_point``;
* ``pushrl/PushItem-v0``: which item to push, a contextual bandit (:class:`PushItemEnv`),
  vector entry point :class:`PushItemVectorEnv`.

Batch evaluation: :func:`rollout`; SB3: :class:`~pushrl.envs.sb3.PushTimingSB3VecEnv`;
scenarios: :func:`load_scenario`.
"""

from gymnasium.envs.registration import register, registry

from pushrl.envs.push_item import PushItemEnv, PushItemVectorEnv
from pushrl.envs.push_timing import PushTimingEnv
from pushrl.envs.push_timing_vec import PushTimingVectorEnv
from pushrl.envs.rollout import RolloutResult, rollout
from pushrl.envs.scenario import Scenario, load_scenario
from pushrl.envs.world import TIMING_OBS_NAMES, make_world, timing_obs_from_context

ENV_IDS = ("pushrl/PushTiming-v0", "pushrl/PushItem-v0")

if "pushrl/PushTiming-v0" not in registry:
    register(id="pushrl/PushTiming-v0", entry_point="pushrl.envs.push_timing:PushTimingEnv",
             vector_entry_point="pushrl.envs.push_timing_vec:PushTimingVectorEnv",
             kwargs={"scenario": "default"})
if "pushrl/PushItem-v0" not in registry:
    register(id="pushrl/PushItem-v0", entry_point="pushrl.envs.push_item:PushItemEnv",
             vector_entry_point="pushrl.envs.push_item:PushItemVectorEnv",
             kwargs={"scenario": "default"})

__all__ = ["ENV_IDS", "TIMING_OBS_NAMES", "PushItemEnv", "PushItemVectorEnv", "PushTimingEnv",
           "PushTimingVectorEnv", "RolloutResult", "Scenario", "load_scenario", "make_world",
           "rollout", "timing_obs_from_context"]
