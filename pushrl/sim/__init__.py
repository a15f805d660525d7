"""The user-response simulator fitted from logged data (layer: data -> **sim** -> envs).

* :mod:`pushrl.sim.fit` fits the components point-in-time through the feature pipeline;
  :mod:`pushrl.sim.model` stores them as a checksummed JSON + npz artifact;
* :mod:`pushrl.sim.response` answers "what does this user do?" from the fitted models or,
  for the synthetic world, from the ground truth;
* :mod:`pushrl.sim.engine` steps many users together (the environments drive it);
* :mod:`pushrl.sim.validate` and :mod:`pushrl.sim.obd` check fidelity against the log.

The names below load on first use: importing a light submodule (``pushrl.sim.contexts``,
which the policy server needs) must not pull in the engine's model stack (scikit-learn,
seconds of a server's start-up).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pushrl.rules.guardrails import Guardrails
    from pushrl.rules.reward import RewardWeights
    from pushrl.sim.engine import Outcome, PushSim, SimConfig
    from pushrl.sim.model import SimModel, load_sim, save_sim

_WHERE = {"Guardrails": "pushrl.rules.guardrails", "RewardWeights": "pushrl.rules.reward",
          "Outcome": "pushrl.sim.engine", "PushSim": "pushrl.sim.engine",
          "SimConfig": "pushrl.sim.engine", "SimModel": "pushrl.sim.model",
          "load_sim": "pushrl.sim.model", "save_sim": "pushrl.sim.model"}

__all__ = ["Guardrails", "Outcome", "PushSim", "RewardWeights", "SimConfig", "SimModel",
           "load_sim", "save_sim"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'pushrl.sim' has no attribute {name!r}")
