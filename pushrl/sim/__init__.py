"""The user-response simulator fitted from logged data (layer: data -> **sim** -> envs).

* :mod:`pushrl.sim.fit` fits the components point-in-time through the feature pipeline;
  :mod:`pushrl.sim.model` stores them as a checksummed JSON + npz artifact;
* :mod:`pushrl.sim.response` answers "what does this user do?" from the fitted models or,
  for the synthetic world, from the ground truth;
* :mod:`pushrl.sim.engine` steps many users together (the environments drive it);
* :mod:`pushrl.sim.validate` and :mod:`pushrl.sim.obd` check fidelity against the log.
"""

from pushrl.rules.guardrails import Guardrails
from pushrl.rules.reward import RewardWeights
from pushrl.sim.engine import Outcome, PushSim, SimConfig
from pushrl.sim.model import SimModel, load_sim, save_sim

__all__ = ["Guardrails", "Outcome", "PushSim", "RewardWeights", "SimConfig", "SimModel",
           "load_sim", "save_sim"]
