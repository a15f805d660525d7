"""Compute Open Bandit Pipeline reference values for pushrl's OPE agreement tests.

Runs ONLY in a throwaway venv with obp 0.4.1 (never in the project's environment)::

    python -m venv /tmp/obpenv
    /tmp/obpenv/bin/pip install /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
    /tmp/obpenv/bin/pip install "obp==0.4.1" "numpy<2" "pandas<2"
    /tmp/obpenv/bin/python scripts/obp_reference.py \
        --obd-path /path/to/obp/dataset/obd --out tests/fixtures/obp

The OBD sample (random and bts logs, campaign "all": 10k rounds, 80 items, 3 positions) ships
inside the obp wheel under ``obp/dataset/obd``. For both directions (random logs evaluated
with the Bernoulli TS action distribution; bts logs evaluated with the uniform random
policy) it stores every input array in ``<direction>.npz`` and OBP's point estimates, bootstrap
intervals and wall-clock timings in ``obp_reference.json``. It also reruns OBP's
``examples/obd/evaluate_off_policy_estimators.py`` protocol (BTS value from random logs vs
BTS on-policy CTR, 20 bootstrap resamples, logistic reward model with 3-fold cross-fitting)
so ``benchmarks/ope.py --obd-benchmark`` can compare pushrl's run of the same protocol.

3-d arrays are stored row-deduplicated (``<name>__rows`` + ``<name>__index``, exact): the BTS
action distribution is one row tiled 10k times and the reward model takes few distinct values
(240 distinct contexts x 3 folds), which keeps the fixtures small.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import obp
import pandas as pd
import scipy
import sklearn
import torch
from obp.dataset import OpenBanditDataset
from obp.ope import (
    DirectMethod,
    DoublyRobust,
    DoublyRobustWithShrinkage,
    InverseProbabilityWeighting,
    RegressionModel,
    SelfNormalizedDoublyRobust,
    SelfNormalizedInverseProbabilityWeighting,
    SwitchDoublyRobust,
)
from obp.policy import BernoulliTS, Random
from sklearn.linear_model import LogisticRegression, Ridge

warnings.filterwarnings("ignore")

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--obd-path", type=Path, required=True)
parser.add_argument("--out", type=Path, default=Path("tests/fixtures/obp"))
parser.add_argument("--seed", type=int, default=12345)
parser.add_argument("--n-sim", type=int, default=100_000, help="BTS Monte Carlo draws")
parser.add_argument("--n-folds", type=int, default=3)
parser.add_argument("--n-bootstrap-fixture", type=int, default=1000)
parser.add_argument("--n-bootstrap-timing", type=int, default=10_000)
parser.add_argument("--benchmark-runs", type=int, default=20)
parser.add_argument("--benchmark-n-sim", type=int, default=1_000_000)
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)
if obp.__version__ != "0.4.1":
    raise SystemExit(f"needs obp 0.4.1, found {obp.__version__}")
np.random.seed(args.seed)

TAUS = (1.0, 5.0, 20.0)
LAMBDAS = (1.0, 10.0, 100.0)
# Logistic-regression settings of OBP's examples/obd conf/hyperparams.yaml.
BASE_MODEL = dict(max_iter=10000, C=100, random_state=args.seed)


def estimators() -> dict:
    ests = {
        "ipw": InverseProbabilityWeighting(),
        "snipw": SelfNormalizedInverseProbabilityWeighting(),
        "dm": DirectMethod(),
        "dr": DoublyRobust(),
        "sndr": SelfNormalizedDoublyRobust(),
    }
    for tau in TAUS:
        ests[f"switch-dr(tau={tau:g})"] = SwitchDoublyRobust(tau=tau)
    for lam in LAMBDAS:
        ests[f"dr-os(lambda={lam:g})"] = DoublyRobustWithShrinkage(lambda_=lam)
    return ests


def pack_rows(arrays: dict, name: str, arr: np.ndarray) -> None:
    rows, index = np.unique(arr.reshape(arr.shape[0], -1), axis=0, return_inverse=True)
    arrays[f"{name}__rows"] = rows.reshape((-1, *arr.shape[1:]))
    arrays[f"{name}__index"] = index.ravel().astype(np.int32)


def load(behavior_policy: str) -> OpenBanditDataset:
    return OpenBanditDataset(
        behavior_policy=behavior_policy, campaign="all", data_path=args.obd_path
    )


def eval_action_dist(name: str, obd: OpenBanditDataset, n_rounds: int, n_sim: int) -> np.ndarray:
    if name == "bts":
        policy = BernoulliTS(
            n_actions=obd.n_actions,
            len_list=obd.len_list,
            is_zozotown_prior=True,
            campaign="all",
            random_state=args.seed,
        )
        return policy.compute_batch_action_dist(n_sim=n_sim, n_rounds=n_rounds)
    policy = Random(n_actions=obd.n_actions, len_list=obd.len_list, random_state=args.seed)
    return policy.compute_batch_action_dist(n_rounds=n_rounds)


def reward_model(obd: OpenBanditDataset, bf: dict) -> np.ndarray:
    model = RegressionModel(
        n_actions=obd.n_actions,
        len_list=obd.len_list,
        action_context=obd.action_context,
        base_model=LogisticRegression(**BASE_MODEL),
    )
    return model.fit_predict(
        context=bf["context"],
        action=bf["action"],
        reward=bf["reward"],
        position=bf["position"],
        pscore=bf["pscore"],
        n_folds=args.n_folds,
        random_state=args.seed,
    )


reference: dict = {
    "provenance": {
        "obp": obp.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seed": args.seed,
        "n_sim": args.n_sim,
        "n_folds": args.n_folds,
        "reward_model": f"obp.ope.RegressionModel(LogisticRegression({BASE_MODEL}))",
        "n_bootstrap_fixture": args.n_bootstrap_fixture,
        "bootstrap_random_state": args.seed,
        "n_bootstrap_timing": args.n_bootstrap_timing,
        "taus": TAUS,
        "lambdas": LAMBDAS,
    },
    "directions": {},
}

DIRECTIONS = {
    "random_logs_bts_policy": ("random", "bts"),
    "bts_logs_random_policy": ("bts", "random"),
}
for direction, (logger, target) in DIRECTIONS.items():
    print(f"== {direction}", flush=True)
    obd = load(logger)
    bf = obd.obtain_batch_bandit_feedback()
    n = bf["n_rounds"]
    t0 = time.perf_counter()
    action_dist = eval_action_dist(target, obd, n, args.n_sim)
    t_dist = time.perf_counter() - t0
    q_hat = reward_model(obd, bf)
    inputs = dict(
        reward=bf["reward"],
        action=bf["action"],
        position=bf["position"],
        pscore=bf["pscore"],
        action_dist=action_dist,
        estimated_rewards_by_reg_model=q_hat,
    )
    values, intervals, timings, cpu = {}, {}, {}, {}
    for name, est in estimators().items():
        values[name] = float(est.estimate_policy_value(**inputs))
        ci = est.estimate_interval(
            **inputs, n_bootstrap_samples=args.n_bootstrap_fixture, random_state=args.seed
        )
        intervals[name] = {k: float(v) for k, v in ci.items()}
        t0, c0 = time.perf_counter(), time.process_time()
        est.estimate_interval(
            **inputs, n_bootstrap_samples=args.n_bootstrap_timing, random_state=args.seed
        )
        timings[name], cpu[name] = time.perf_counter() - t0, time.process_time() - c0
        print(
            f"  {name:22s} {values[name]:.10f} {intervals[name]} {timings[name]:.2f}s", flush=True
        )
    arrays = {k: np.asarray(bf[k]) for k in ("reward", "action", "position", "pscore")}
    arrays["context"] = bf["context"]
    arrays["action_context"] = obd.action_context
    pack_rows(arrays, "action_dist", action_dist)
    pack_rows(arrays, "estimated_rewards_by_reg_model", q_hat)
    np.savez_compressed(args.out / f"{direction}.npz", **arrays)
    reference["directions"][direction] = {
        "behavior_policy": logger,
        "evaluation_policy": target,
        "n_rounds": int(n),
        "n_actions": int(obd.n_actions),
        "len_list": int(obd.len_list),
        "on_policy_value_of_logger": float(bf["reward"].mean()),
        "values": values,
        "intervals": intervals,
        "timing_seconds": {
            "estimate_interval": timings,
            "estimate_interval_cpu": cpu,
            "action_dist": t_dist,
        },
    }

# --- Cross-fitting references: OBP's RegressionModel with well-conditioned base models -------
# OBP's example model (C=100) is nearly separable on 0.4% CTR, so its lbfgs optimum is flat
# and differs across numpy builds by up to 0.1 in predicted CTR. Two references pin the
# cross-fitting mechanics down instead: a closed-form Ridge regressor (exact to rounding, and
# fast enough for the default test run) and a strongly convex logistic regression (C=1, tight
# tol; agreement ~1e-6, slow, marked as such in the tests).
print("== cross-fitting references", flush=True)
obd = load("random")
bf = obd.obtain_batch_bandit_feedback()
bts_dist = eval_action_dist("bts", obd, bf["n_rounds"], args.n_sim)
CF_MODELS = {
    "ridge": ("Ridge", dict(alpha=1.0)),
    "logistic": (
        "LogisticRegression",
        dict(C=1.0, tol=1e-10, max_iter=100000, random_state=args.seed),
    ),
}
reference["crossfit"] = {}
cf_arrays: dict = {}
for key, (cls_name, params) in CF_MODELS.items():
    base = Ridge(**params) if cls_name == "Ridge" else LogisticRegression(**params)
    cf_model = RegressionModel(
        n_actions=obd.n_actions,
        len_list=obd.len_list,
        action_context=obd.action_context,
        base_model=base,
    )
    q_cf = cf_model.fit_predict(
        context=bf["context"],
        action=bf["action"],
        reward=bf["reward"],
        position=bf["position"],
        pscore=bf["pscore"],
        n_folds=args.n_folds,
        random_state=args.seed,
    )
    pack_rows(cf_arrays, f"estimated_rewards_{key}", q_cf)
    reference["crossfit"][key] = {
        "logs": "random",
        "evaluation_policy": "bts",
        "n_folds": args.n_folds,
        "base_model": f"{cls_name}({params})",
        "kfold_random_state": args.seed,
        "dr_value": float(
            DoublyRobust().estimate_policy_value(
                reward=bf["reward"],
                action=bf["action"],
                position=bf["position"],
                pscore=bf["pscore"],
                action_dist=bts_dist,
                estimated_rewards_by_reg_model=q_cf,
            )
        ),
    }
    print(f"  dr with cross-fitted {key}", reference["crossfit"][key]["dr_value"], flush=True)
np.savez_compressed(args.out / "crossfit_random_logs.npz", **cf_arrays)

# --- OBP's examples/obd benchmark: BTS value from random logs vs BTS on-policy CTR ----------
print("== obd benchmark", flush=True)
obd = load("random")
ground_truth = float(
    OpenBanditDataset.calc_on_policy_policy_value_estimate(
        behavior_policy="bts", campaign="all", data_path=args.obd_path
    )
)
t0 = time.perf_counter()
single = eval_action_dist("bts", obd, 1, args.benchmark_n_sim)[0]
t_single = time.perf_counter() - t0
bench_ests = estimators()
errors: dict[str, list[float]] = {name: [] for name in bench_ests}
t0 = time.perf_counter()
for b in range(args.benchmark_runs):
    boot = obd.sample_bootstrap_bandit_feedback(random_state=b)
    q_b = reward_model(obd, boot)
    dist_b = np.tile(single, (boot["n_rounds"], 1, 1))
    for name, est in bench_ests.items():
        v = est.estimate_policy_value(
            reward=boot["reward"],
            action=boot["action"],
            position=boot["position"],
            pscore=boot["pscore"],
            action_dist=dist_b,
            estimated_rewards_by_reg_model=q_b,
        )
        errors[name].append(abs(float(v) - ground_truth) / ground_truth)
t_bench = time.perf_counter() - t0
reference["obd_benchmark"] = {
    "protocol": (
        "obp examples/obd/evaluate_off_policy_estimators.py: evaluation_policy=bts, "
        "behavior_policy=random, campaign=all, base_model=logistic_regression, "
        "bootstrap resample b uses sample_bootstrap_bandit_feedback(random_state=b)"
    ),
    "n_runs": args.benchmark_runs,
    "n_sim": args.benchmark_n_sim,
    "ground_truth_bts_on_policy_ctr": ground_truth,
    "relative_error": errors,
    "mean_relative_error": {k: float(np.mean(v)) for k, v in errors.items()},
    "std_relative_error": {k: float(np.std(v, ddof=1)) for k, v in errors.items()},
    "published_readme_mean_relative_error": {"dm": 0.180288, "ipw": 0.333113, "dr": 0.304401},
    "seconds": {"bts_action_dist": t_single, "runs": t_bench},
}
np.save(args.out / "bts_single_round_action_dist.npy", single)
for k, v in reference["obd_benchmark"]["mean_relative_error"].items():
    print(f"  {k:22s} mean relative error {v:.6f}", flush=True)

(args.out / "obp_reference.json").write_text(json.dumps(reference, indent=2) + "\n")
print("wrote", args.out)
