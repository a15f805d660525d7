"""Gymnasium environments over the fitted simulator (layer: data -> sim -> **envs**).

Importing this package registers:

* ``pushrl/PushTiming-v1``: when to push one user (:class:`PushTimingEnv`), with the native
  vector implementation :class:`PushTimingVectorEnv` as ``vector_entry_point``; its
  21-column observation is built by :class:`~pushrl.envs.observation.TimingObservation`;
* ``pushrl/PushTiming-v0``: the same environment with the 17-column observation of the
  first agents (:data:`~pushrl.envs.observation.V0_OBS_NAMES`), kept for compatibility;
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
from pushrl.envs.observation import (
    PROFILE_OBS_NAMES,
    TIMING_OBS_NAMES,
    V0_OBS_NAMES,
    TimingObservation,
)
from pushrl.envs.world import make_world

ENV_IDS = ("pushrl/PushTiming-v1", "pushrl/PushTiming-v0", "pushrl/PushItem-v0")

for _version, _names in (("v1", TIMING_OBS_NAMES), ("v0", V0_OBS_NAMES)):
    if f"pushrl/PushTiming-{_version}" not in registry:
        register(id=f"pushrl/PushTiming-{_version}",
                 entry_point="pushrl.envs.push_timing:PushTimingEnv",
                 vector_entry_point="pushrl.envs.push_timing_vec:PushTimingVectorEnv",
                 kwargs={"scenario": "default", "obs_names": _names})
if "pushrl/PushItem-v0" not in registry:
    register(id="pushrl/PushItem-v0", entry_point="pushrl.envs.push_item:PushItemEnv",
             vector_entry_point="pushrl.envs.push_item:PushItemVectorEnv",
             kwargs={"scenario": "default"})

__all__ = ["ENV_IDS", "PROFILE_OBS_NAMES", "TIMING_OBS_NAMES", "V0_OBS_NAMES", "PushItemEnv",
           "PushItemVectorEnv", "PushTimingEnv", "PushTimingVectorEnv", "RolloutResult",
           "Scenario", "TimingObservation", "load_scenario", "make_world", "rollout"]
