"""The sim warm start with and without the log's unsubscribed users (issue 13).

Batch truth rollout of the server's default heuristic (most-active-hour + the scenario's item
policy) for the same users and random numbers (seed 0, as ``compare.served.drive``), once with
a simulator fitted before ``Population.unsubscribed`` existed (everyone starts subscribed: the
old warm start) and once with one fitted after (the log's unsubscribed users start
unsubscribed, as the server's ``pushrl state import`` blocks them). Both from ``pushrl init``
of the same logs (the fit is deterministic; only the new field differs).

    python benchmarks/warm_unsubscribed.py OLD_INIT_DIR NEW_INIT_DIR USERS DAYS
"""
import os
import sys

import numpy as np

from pushrl.envs.rollout import rollout
from pushrl.envs.scenario import load_scenario
from pushrl.policies.baselines import make_baseline
from pushrl.sim.model import load_sim

old, new, users, days = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for tag in (old, new):
    sc = load_scenario(f"{tag}/scenario.toml", truth=True, horizon_days=days)
    pop = load_sim(sc.sim).population
    res = rollout(make_baseline("most-active-hour"), sc, n_users=users, seed=0)
    s = res.summary()
    assert pop is not None
    print(tag, f"pop unsubscribed share {pop.unsubscribed.mean():.3f}",
          f"objective/user {res.objective.mean():.3f} "
          f"(se {res.objective.std(ddof=1) / np.sqrt(users):.3f})",
          f"sends/user/day {s.get('sim/sends_per_user_day'):.3f}", "load", os.getloadavg()[0])
