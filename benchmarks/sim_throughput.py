"""Simulator throughput: single env in Python vs the native vector env (10k and 100k users).

Prints user-steps per second (wall clock and process CPU time: on a shared machine the CPU
figure is what the code costs, the wall figure what you waited), the vector/single ratio, the
peak RSS of the process, and optionally a full batch rollout (``--rollout-days 28``).

    python benchmarks/sim_throughput.py [--json] [--steps 48] [--rollout-days 0]

Targets (issue 3): vector >= 20x single, >= 1M user-steps/s, peak RSS for 100k users <= 2 GB,
rollout of 100k users x 28 days hourly < 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np

import pushrl.envs  # noqa: F401  (registers the environments)
from pushrl.envs.push_timing import PushTimingEnv
from pushrl.envs.push_timing_vec import PushTimingVectorEnv
from pushrl.envs.rollout import rollout
from pushrl.sim.contexts import BatchDecision

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--json", action="store_true", help="print JSON only")
parser.add_argument("--scenario", default="default")
parser.add_argument("--steps", type=int, default=48, help="vector env steps per size")
parser.add_argument("--single-steps", type=int, default=3000)
parser.add_argument("--sizes", default="10000,100000")
parser.add_argument("--rollout-days", type=int, default=0, help="also time a 100k-user rollout")
args = parser.parse_args()


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def timed(fn):  # type: ignore[no-untyped-def]
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


res: dict = {"scenario": args.scenario, "load_avg_1m": os.getloadavg()[0],
             "cpu_count": os.cpu_count()}

# single environment stepped in Python (random actions, 30 % sends)
env = PushTimingEnv(args.scenario)
env.reset(seed=0)
rng = np.random.default_rng(0)
acts = (rng.random(args.single_steps) < 0.3).astype(int)


def run_single() -> None:
    for a in acts:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()


w, c = timed(run_single)
res["single"] = {"steps": args.single_steps, "wall_s": w, "cpu_s": c,
                 "steps_per_s_wall": args.single_steps / w,
                 "steps_per_s_cpu": args.single_steps / c}

for n in (int(x) for x in args.sizes.split(",")):
    venv = PushTimingVectorEnv(n, args.scenario)
    t0 = time.perf_counter()
    venv.reset(seed=0)
    reset_s = time.perf_counter() - t0
    actions = (rng.random((args.steps, n)) < 0.3).astype(np.int64)
    venv.step(actions[0])  # warm-up (allocations, time zone table)

    def run_vec(venv: PushTimingVectorEnv = venv, actions: np.ndarray = actions) -> None:
        for a in actions[1:]:
            venv.step(a)

    w, c = timed(run_vec)
    steps = (args.steps - 1) * n
    res[f"vector_{n}"] = {"users": n, "steps": args.steps - 1, "reset_s": reset_s, "wall_s": w,
                          "cpu_s": c, "user_steps_per_s_wall": steps / w,
                          "user_steps_per_s_cpu": steps / c, "peak_rss_gb_so_far": rss_gb()}
    del venv

big = res[f"vector_{max(int(x) for x in args.sizes.split(','))}"]
single = res["single"]
res["ratio_vector_vs_single_wall"] = big["user_steps_per_s_wall"] / single["steps_per_s_wall"]
res["ratio_vector_vs_single_cpu"] = big["user_steps_per_s_cpu"] / single["steps_per_s_cpu"]


class SendAt19:
    """Send at local 19:00 when allowed (a cheap fixed policy)."""

    name = "send_at_19"

    def decide_batch(self, ctx, rng):  # type: ignore[no-untyped-def]
        a = ((ctx.features[:, 0] == 19) & ctx.allowed).astype(np.int64)
        return BatchDecision(a, np.ones(a.size), np.zeros((a.size, 2)))


if args.rollout_days:
    out: dict = {}
    w, c = timed(lambda: out.update(r=rollout(SendAt19(), args.scenario, n_users=100_000,
                                              days=args.rollout_days, seed=0)))
    res["rollout_100k"] = {"days": args.rollout_days, "wall_s": w, "cpu_s": c,
                           "objective_per_user": float(out["r"].objective.mean())}
res["peak_rss_gb"] = rss_gb()

if args.json:
    print(json.dumps(res, indent=2))
else:
    print(f"load average {res['load_avg_1m']:.1f} on {res['cpu_count']} cores")
    s = res["single"]
    print(f"single env (Python loop): {s['steps_per_s_wall']:,.0f} steps/s wall, "
          f"{s['steps_per_s_cpu']:,.0f} per CPU-second")
    for n in args.sizes.split(","):
        v = res[f"vector_{n}"]
        print(f"vector env {int(n):>7,} users: {v['user_steps_per_s_wall']:,.0f} "
              "user-steps/s wall, "
              f"{v['user_steps_per_s_cpu']:,.0f} per CPU-second (reset {v['reset_s']:.1f} s)")
    print(f"vector/single: {res['ratio_vector_vs_single_wall']:,.0f}x wall, "
          f"{res['ratio_vector_vs_single_cpu']:,.0f}x CPU; peak RSS {res['peak_rss_gb']:.2f} GB")
    if "rollout_100k" in res:
        r = res["rollout_100k"]
        print(f"rollout 100k users x {r['days']} days: {r['wall_s']:.1f} s wall, "
              f"{r['cpu_s']:.1f} s CPU")
