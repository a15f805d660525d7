"""How much of the oracle's lead over most-active-hour can logged information buy?

Runs, in the ground-truth world of a scenario, on development users (not the test seed of
`benchmarks/timing_results.py`):

* most-active-hour with its daily cap (the best heuristic, the reference);
* `timing-oracle`: the fatigue-aware planner with the true model *and* each user's hidden
  parameters (true activity rhythm, engagement, tastes);
* `timing-oracle-info`: the same planner and true model, but only the information a deployed
  policy has (parameters estimated from the logged history by the feature pipeline).

Each planner plans with the scenario's reward and, optionally, a heavier unsubscribe weight
(``--unsub-weights``), which trades objective for fewer unsubscribes; every result is scored
with the scenario's own reward. Issue #5 asks for +10 % over the heuristic with an unsubscribe
rate no higher, and 80 % of the oracle gap: what the information-matched planner reaches is
evidence of what any policy restricted to logged information can reach.

    python benchmarks/timing_yardstick.py [--users 2000] [--seed 9100001] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from pushrl.envs import rollout
from pushrl.envs.scenario import load_scenario
from pushrl.policies.baselines import make_baseline


def _paired(d: np.ndarray) -> tuple[float, float]:
    """Mean and 95% half-width of paired per-user differences."""
    return float(d.mean()), float(1.96 * d.std(ddof=1) / np.sqrt(d.size))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=9100001, help="development users")
    ap.add_argument("--unsub-weights", type=float, nargs="+", default=[10.0, 30.0],
                    help="unsubscribe weights the planners plan with")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    reward = dataclasses.asdict(load_scenario(a.scenario).reward)
    base = rollout(make_baseline("most-active-hour"), a.scenario, n_users=a.users, seed=a.seed,
                   truth=True)
    rows = []
    oracle_gain: dict[float, float] = {}
    for w in a.unsub_weights:
        for name in ("timing-oracle", "timing-oracle-info"):
            t0 = time.perf_counter()
            pol = make_baseline(name, reward={**reward, "unsubscribe_penalty": w})
            r = rollout(pol, a.scenario, n_users=a.users, seed=a.seed, truth=True)
            d, hw = _paired(r.objective - base.objective)
            du, hu = _paired(r.unsubscribed.astype(float) - base.unsubscribed.astype(float))
            if name == "timing-oracle":
                oracle_gain[w] = d
            rows.append({
                "policy": name, "planned_unsub_weight": w,
                "objective": float(r.objective.mean()),
                "delta": d, "delta_ci": [d - hw, d + hw],
                "delta_pct": 100 * d / base.objective.mean(),
                "unsub_rate": float(r.unsubscribed.mean()),
                "delta_unsub": du, "delta_unsub_ci": [du - hu, du + hu],
                "sends_per_user_day": float(r.sends.sum() / a.users / r.days),
                "share_of_oracle_gain_pct": (100 * d / oracle_gain[w]
                                             if name != "timing-oracle" else 100.0),
                "seconds": round(time.perf_counter() - t0, 1)})
    res = {"scenario": a.scenario, "users": a.users, "seed": a.seed,
           "reference": {"policy": "most-active-hour",
                         "objective": float(base.objective.mean()),
                         "unsub_rate": float(base.unsubscribed.mean())},
           "rows": rows}
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{a.scenario}, truth world, {a.users} users, seed {a.seed}; most-active-hour "
          f"objective {res['reference']['objective']:.3f}, unsubscribe rate "
          f"{res['reference']['unsub_rate']:.3f}")
    for r in rows:
        print(f"{r['policy']:20s} unsub weight {r['planned_unsub_weight']:4g}: objective "
              f"{r['objective']:.3f}, {r['delta_pct']:+.1f}% [{r['delta_ci'][0]:+.3f}, "
              f"{r['delta_ci'][1]:+.3f}], unsubscribe {r['unsub_rate']:.3f} "
              f"({r['delta_unsub']:+.3f} [{r['delta_unsub_ci'][0]:+.3f}, "
              f"{r['delta_unsub_ci'][1]:+.3f}]), {r['sends_per_user_day']:.2f} sends/day, "
              f"{r['share_of_oracle_gain_pct']:.0f}% of the oracle's gain ({r['seconds']} s)")


if __name__ == "__main__":
    main()
