"""Benchmarks of pushrl.ope: throughput/memory, speed vs OBP, and OBP's OBD experiment.

Sections (default: --perf --obp-timing):

--perf           1M logged decisions x 50 actions (len_list 1): every bandit estimator with a
                 1,000-resample bootstrap CI. Reports wall time and peak RSS (target <= 4 GB).
--obp-timing     On the OBD arrays of tests/fixtures/obp, times pushrl's bootstrap intervals of
                 the 11 estimator configurations against OBP 0.4.1's (10,000 resamples each,
                 one estimate_interval call per estimator, CPU seconds summed). With
                 --obp-python OBP is timed in the same run (benchmarks/ope_obp_timing.py in
                 OBP's venv), else the fixture's stored timings are used. pushrl is timed as
                 `joint` (estimate_intervals, all 11 on one set of resamples), `per_call` (11
                 estimate_interval calls with the same int seed, as OBP users write them: each
                 call draws its own 1e8 indices, nothing is kept between calls) and
                 `joint_obp_stream` (OBP's RandomState index stream). Target >= 5x, identical
                 point values.
--obd-benchmark  OBP's examples/obd experiment: Bernoulli TS's CTR estimated from the random
                 logs vs its on-policy CTR in the bts logs, relative error over 20 bootstrap
                 resamples of the logs, reward model cross-fitted with pushrl (3 folds,
                 LogisticRegression(C=100)). Compared with OBP's own run of the protocol.

    python benchmarks/ope.py [--perf] [--obp-timing [--obp-python PY]] [--obd-benchmark] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

# numpy-only (it also runs in OBP's throwaway venv): the one loader of the fixture arrays
from ope_obp_timing import load as load_obp  # benchmarks/ is sys.path[0]

from pushrl.ope import (
    DirectMethod,
    DoublyRobust,
    DoublyRobustWithShrinkage,
    InverseProbabilityWeighting,
    SelfNormalizedDoublyRobust,
    SelfNormalizedInverseProbabilityWeighting,
    SwitchDoublyRobust,
    default_estimators,
    estimate_intervals,
    fit_reward_model,
)

ROOT = Path(__file__).resolve().parents[1]
OBP_DIR = ROOT / "tests" / "fixtures" / "obp"

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--perf", action="store_true")
parser.add_argument("--obp-timing", action="store_true")
parser.add_argument("--obd-benchmark", action="store_true")
parser.add_argument("--json", action="store_true", help="print one JSON document")
parser.add_argument("--n-rounds", type=int, default=1_000_000)
parser.add_argument("--n-actions", type=int, default=50)
parser.add_argument("--n-bootstrap", type=int, default=1000)
parser.add_argument("--obd-runs", type=int, default=20)
parser.add_argument(
    "--obp-python",
    default=None,
    help="python of a venv with obp==0.4.1 (numpy<2, pandas<2): time OBP in the same run "
    "(benchmarks/ope_obp_timing.py); default: the timings stored in the OBP fixture",
)
args = parser.parse_args()
if not (args.perf or args.obp_timing or args.obd_benchmark):
    args.perf = args.obp_timing = True
results: dict[str, Any] = {}


def log(msg: str) -> None:
    if not args.json:
        print(msg, flush=True)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is in KB


def estimator_configs() -> list[Any]:
    """The 11 configurations scripts/obp_reference.py ran in OBP."""
    ests: list[Any] = [
        InverseProbabilityWeighting(),
        SelfNormalizedInverseProbabilityWeighting(),
        DirectMethod(),
        DoublyRobust(),
        SelfNormalizedDoublyRobust(),
    ]
    ests += [
        SwitchDoublyRobust(tau=t, estimator_name=f"switch-dr(tau={t:g})") for t in (1.0, 5.0, 20.0)
    ]
    ests += [
        DoublyRobustWithShrinkage(lambda_=lam, estimator_name=f"dr-os(lambda={lam:g})")
        for lam in (1.0, 10.0, 100.0)
    ]
    return ests


# --- 1M x 50 throughput and memory ------------------------------------------------------------
if args.perf:
    n, n_actions = args.n_rounds, args.n_actions
    log(f"== perf: {n:,} rounds x {n_actions} actions, {args.n_bootstrap} bootstrap resamples")
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    # A contextual evaluation policy and reward model, materialised as (n, n_actions, 1) the way
    # a caller would pass them (400 MB each); the logger is uniform.
    action_dist = rng.standard_normal((n, n_actions, 1))
    np.exp(action_dist, out=action_dist)
    action_dist /= action_dist.sum(axis=1, keepdims=True)
    q_hat = rng.random((n, n_actions, 1)) * 0.1
    action = rng.integers(0, n_actions, n)
    pscore = np.full(n, 1.0 / n_actions)
    reward = (rng.random(n) < q_hat[np.arange(n), action, 0]).astype(np.float64)
    t_data = time.perf_counter() - t0
    rss_data = peak_rss_gb()
    ests = default_estimators()
    t0, c0 = time.perf_counter(), time.process_time()
    out = estimate_intervals(
        ests,
        reward,
        action,
        pscore,
        action_dist,
        None,
        q_hat,
        n_bootstrap_samples=args.n_bootstrap,
        random_state=0,
    )
    t_ope, c_ope = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    estimate_intervals(ests, reward, action, pscore, action_dist, None, q_hat, method="normal")
    t_normal = time.perf_counter() - t0
    results["perf"] = {
        "n_rounds": n,
        "n_actions": n_actions,
        "len_list": 1,
        "n_bootstrap_samples": args.n_bootstrap,
        "estimators": [e.estimator_name for e in ests],
        "seconds_data_generation": t_data,
        "seconds_all_estimators_bootstrap": t_ope,
        "cpu_seconds_all_estimators_bootstrap": c_ope,
        "load_average_1min": os.getloadavg()[0],
        "seconds_all_estimators_normal": t_normal,
        "peak_rss_gb_after_data": rss_data,
        "peak_rss_gb": peak_rss_gb(),
        "target_peak_rss_gb": 4.0,
        "estimates": {k: v.to_dict() for k, v in out.items()},
    }
    log(f"  data generation {t_data:.1f}s (peak RSS {rss_data:.2f} GB)")
    log(
        f"  7 estimators, bootstrap CIs: {t_ope:.1f}s wall, {c_ope:.1f}s CPU "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores); "
        f"normal CIs: {t_normal:.2f}s"
    )
    log(f"  peak RSS {peak_rss_gb():.2f} GB (target <= 4 GB)")
    for k, v in out.items():
        log(f"    {k:10s} {v.value:.6f} [{v.lower:.6f}, {v.upper:.6f}]")
    del action_dist, q_hat

# --- speed and point values vs OBP on the OBD arrays -----------------------------------------
def obp_same_run(python: str, n_boot: int, seed: int) -> dict[str, Any]:
    """OBP's per-call timings, measured now by benchmarks/ope_obp_timing.py in OBP's venv."""
    cmd = [python, str(ROOT / "benchmarks" / "ope_obp_timing.py"), "--n-bootstrap", str(n_boot),
           "--seed", str(seed)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def separate(ests: list[Any], inputs: dict[str, Any], n_boot: int, seed: int) -> None:
    """One estimate_interval call per estimator, all with the same int seed."""
    for e in ests:
        e.estimate_interval(**inputs, n_bootstrap_samples=n_boot, random_state=seed)


def joint(ests: list[Any], inputs: dict[str, Any], n_boot: int, rs: Any) -> None:
    """All estimators in one estimate_intervals call."""
    estimate_intervals(ests, **inputs, n_bootstrap_samples=n_boot, random_state=rs)


def timed(fn: Any) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


if args.obp_timing:
    ref = json.loads((OBP_DIR / "obp_reference.json").read_text())
    n_boot = ref["provenance"]["n_bootstrap_timing"]
    seed = ref["provenance"]["bootstrap_random_state"]
    results["obp_timing"] = {"obp_source": "same run" if args.obp_python else "stored fixture"}
    for direction, meta in ref["directions"].items():
        log(f"== obp timing: {direction}, {n_boot} resamples x {len(meta['values'])} estimators")
        case = load_obp(direction)
        inputs = {k: case[k] for k in ("reward", "action", "pscore", "action_dist", "position")}
        inputs["estimated_rewards_by_reg_model"] = case["estimated_rewards_by_reg_model"]
        ests = estimator_configs()
        if args.obp_python:  # OBP timed now, right before pushrl, under the same machine load
            obp_run = obp_same_run(args.obp_python, n_boot, seed)["directions"][direction]
            obp_values = {k: v["value"] for k, v in obp_run.items()}
            obp_wall = sum(v["wall"] for v in obp_run.values())
            obp_cpu = sum(v["cpu"] for v in obp_run.values())
        else:
            obp_values = meta["values"]
            obp_wall = sum(meta["timing_seconds"]["estimate_interval"].values())
            obp_cpu = sum(meta["timing_seconds"]["estimate_interval_cpu"].values())
        rel = max(
            abs(e.estimate_policy_value(**inputs) / obp_values[e.estimator_name] - 1)
            for e in ests
        )
        wall, cpu = {}, {}
        for key, fn in (
            ("joint", partial(joint, ests, inputs, n_boot, seed)),
            ("per_call", partial(separate, ests, inputs, n_boot, seed)),
            ("joint_obp_stream", partial(joint, ests, inputs, n_boot, np.random.RandomState(seed))),
        ):
            wall[key], cpu[key] = timed(fn)
        res = {
            "obp_wall_seconds": obp_wall,
            "obp_cpu_seconds": obp_cpu,
            "pushrl_wall_seconds": wall,
            "pushrl_cpu_seconds": cpu,
            "speedup_cpu": {k: obp_cpu / v for k, v in cpu.items()},
            "speedup_wall": {k: obp_wall / v for k, v in wall.items()},
            "max_rel_diff_point_values": rel,
            "target_speedup": 5.0,
        }
        results["obp_timing"][direction] = res
        log(f"  OBP ({results['obp_timing']['obp_source']}), 11 calls: wall {obp_wall:.1f}s, "
            f"cpu {obp_cpu:.1f}s")
        for key in wall:
            log(f"  pushrl {key:18s} wall {wall[key]:6.2f}s ({obp_wall / wall[key]:5.1f}x)"
                f"  cpu {cpu[key]:6.2f}s ({obp_cpu / cpu[key]:5.1f}x)")
        log(f"  max relative difference of the 11 point values vs OBP: {rel:.1e}")

# --- OBP's OBD experiment: BTS from random logs vs BTS on-policy CTR ---------------------------
if args.obd_benchmark:
    ref = json.loads((OBP_DIR / "obp_reference.json").read_text())["obd_benchmark"]
    case = load_obp("random_logs_bts_policy")
    single = np.load(OBP_DIR / "bts_single_round_action_dist.npy")  # OBP BTS, n_sim=1e6
    truth = ref["ground_truth_bts_on_policy_ctr"]
    n = case["reward"].shape[0]
    log(
        f"== OBD benchmark: {args.obd_runs} bootstrap resamples of the random logs, "
        f"BTS on-policy CTR {truth}"
    )
    ests = estimator_configs()
    errors: dict[str, list[float]] = {e.estimator_name: [] for e in ests}
    t0 = time.perf_counter()
    for b in range(args.obd_runs):
        # OpenBanditDataset.sample_bootstrap_bandit_feedback(random_state=b)
        idx = np.random.RandomState(b).choice(np.arange(n), size=n, replace=True)
        boot = {k: case[k][idx] for k in ("reward", "action", "pscore", "position", "context")}
        q_b = fit_reward_model(
            boot["context"],
            boot["action"],
            boot["reward"],
            n_actions=single.shape[0],
            len_list=single.shape[1],
            position=boot["position"],
            action_context=case["action_context"],
            base_model=LogisticRegression(max_iter=10000, C=100, random_state=12345),
            n_folds=3,
            random_state=12345,
        )
        dist = np.broadcast_to(single, (n, *single.shape))
        for e in ests:
            v = e.estimate_policy_value(
                boot["reward"], boot["action"], boot["pscore"], dist, boot["position"], q_b
            )
            errors[e.estimator_name].append(abs(v - truth) / truth)
    seconds = time.perf_counter() - t0
    mean_err = {k: float(np.mean(v)) for k, v in errors.items()}
    results["obd_benchmark"] = {
        "n_runs": args.obd_runs,
        "ground_truth": truth,
        "seconds": seconds,
        "pushrl_mean_relative_error": mean_err,
        "pushrl_std_relative_error": {k: float(np.std(v, ddof=1)) for k, v in errors.items()},
        "obp_mean_relative_error": ref["mean_relative_error"],
        "published_readme_mean_relative_error": ref["published_readme_mean_relative_error"],
        "obp_seconds": ref["seconds"]["runs"],
    }
    log(f"  {'estimator':20s} {'pushrl':>8s} {'OBP run':>8s} {'README':>8s}")
    for k, v in mean_err.items():
        pub = ref["published_readme_mean_relative_error"].get(k)
        log(
            f"  {k:20s} {v:8.4f} {ref['mean_relative_error'][k]:8.4f} "
            f"{'' if pub is None else f'{pub:8.4f}'}"
        )
    log(f"  {seconds:.1f}s (OBP's run: {ref['seconds']['runs']:.1f}s)")

results["peak_rss_gb"] = peak_rss_gb()
results["command"] = " ".join(["python", *sys.argv])
results["load_average"] = os.getloadavg()  # at the end of the run; 2-core machine
if args.json:
    print(json.dumps(results, indent=2))
