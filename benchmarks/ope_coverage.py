"""Coverage experiment of the bandit estimators on a synthetic world with exact truth.

200 replicated logs of 2,000 rounds from a tabular world (8 context types, 4 actions, softmax
logger), three target policies (softmax(q / 0.1), 0.2-greedy, uniform), a fixed misspecified
reward model (true q + N(0, 0.05^2) noise), 95% bootstrap (500 resamples) and normal intervals
(``--method all`` adds the finite-sample betting intervals of pushrl/ope/_betting.py).
Prints bias, RMSE and coverage per (policy, estimator); target coverage >= 90% for the
unbiased estimators (IPW, DR) and the consistent self-normalised ones (SNIPW, SNDR). DM,
Switch-DR and DR-os trade bias for variance by design, so their coverage is reported, not
targeted.

    python benchmarks/ope_coverage.py [--json] [--replications 200] [--method normal|all]
"""

from __future__ import annotations

import argparse
import json
import time

from pushrl.ope import default_estimators
from pushrl.ope.synthetic import TabularBanditWorld, coverage_experiment

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--json", action="store_true")
parser.add_argument("--replications", type=int, default=200)
parser.add_argument("--n-rounds", type=int, default=2000)
parser.add_argument("--n-bootstrap", type=int, default=500)
parser.add_argument(
    "--method", choices=["bootstrap", "normal", "betting", "both", "all"], default="both",
    help="both = bootstrap and normal; all = bootstrap, normal and betting",
)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

TARGETED = ("ipw", "snipw", "dr", "sndr")
world = TabularBanditWorld.make(n_types=8, n_actions=4, seed=1234)
policies = {
    "softmax(q/0.1)": world.softmax_policy(0.1),
    "0.2-greedy": world.epsilon_greedy_policy(0.2),
    "uniform": world.uniform_policy(),
}
estimators = default_estimators()
methods = {"both": ["bootstrap", "normal"], "all": ["bootstrap", "normal", "betting"]}.get(
    args.method, [args.method]
)
report: dict = {
    "world": {
        "n_types": 8,
        "n_actions": 4,
        "seed": 1234,
        "logging": "softmax(N(0, 1))",
        "min_logging_prob": float(world.logging.min()),
    },
    "n_rounds": args.n_rounds,
    "n_replications": args.replications,
    "n_bootstrap_samples": args.n_bootstrap,
    "reward_model": "q + N(0, 0.05^2), clipped",
    "alpha": 0.05,
    "target_coverage": 0.90,
    "targeted_estimators": TARGETED,
    "results": {},
}
for method in methods:
    t0 = time.perf_counter()
    rows = coverage_experiment(
        world,
        policies,
        estimators,
        n_rounds=args.n_rounds,
        n_replications=args.replications,
        n_bootstrap_samples=args.n_bootstrap,
        method=method,
        reward_model=world.noisy_reward_model(0.05, seed=7),
        seed=args.seed,
    )
    seconds = time.perf_counter() - t0
    targeted = [r for r in rows if r.estimator in TARGETED]
    report["results"][method] = {
        "seconds": seconds,
        "rows": [r.to_dict() for r in rows],
        "min_targeted_coverage": min(r.coverage for r in targeted),
        "targets_met": all(r.coverage >= 0.90 for r in targeted),
    }
    if not args.json:
        print(
            f"== {method} intervals: {args.replications} logs x {args.n_rounds} rounds "
            f"({seconds:.1f}s)"
        )
        print(
            f"  {'policy':16s} {'estimator':10s} {'truth':>8s} {'bias':>9s} {'rmse':>8s} "
            f"{'coverage':>9s} {'width':>8s}"
        )
        for r in rows:
            mark = "" if r.estimator not in TARGETED else (" ok" if r.coverage >= 0.9 else " LOW")
            print(
                f"  {r.policy:16s} {r.estimator:10s} {r.true_value:8.4f} {r.bias:+9.5f} "
                f"{r.rmse:8.5f} {r.coverage:8.1%}{mark:4s} {r.mean_width:8.4f}"
            )
        print(
            f"  min coverage of {', '.join(TARGETED)}: "
            f"{report['results'][method]['min_targeted_coverage']:.1%} (target >= 90%)"
        )
if args.json:
    print(json.dumps(report, indent=2))
