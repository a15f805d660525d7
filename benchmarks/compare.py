"""Benchmark `pushrl compare`: the vectorised simulator at scale, and Ray scale-out.

Usage: python benchmarks/compare.py [--users 100000] [--days 28] [--ray-users 40000] [--json]

Figures (issue 8):
* 100k users x 28 days x hourly slots with a heuristic policy (most-active-hour) in one local
  process: target < 60 s;
* Ray with 2 workers vs 1 worker on the same shard plan (results identical): target >= 1.6x.
  Ray's start-up (``ray.init``) is timed separately; each timed run includes the workers'
  imports and simulator loading.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import pandas as pd

from pushrl.compare.runner import compare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--policy", default="most-active-hour")
    ap.add_argument("--ray-users", type=int, default=50_000)
    ap.add_argument("--ray-days", type=int, default=28)
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    res = compare([args.policy], users=args.users, days=args.days, shard_size=args.users)
    big = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    user_steps = args.users * args.days * 24
    out: dict[str, object] = {
        "benchmark": "compare",
        "machine": f"{platform.machine()} cores=2 py{platform.python_version()}",
        "large_run": {"policy": args.policy, "users": args.users, "days": args.days,
                      "slots_per_day": 24, "seconds": round(big, 2),
                      "user_steps_per_s": round(user_steps / big),
                      "peak_rss_gb": round(rss, 2), "target_seconds": 60,
                      "meets_target": big < 60,
                      "objective_per_user": float(res.summary.query(
                          "metric == 'objective'")["value"].iloc[0])},
    }
    if not args.skip_ray:
        half = args.ray_users // 2
        times, frames = {}, {}
        import ray

        for w in (1, 2):
            # start-up is a fixed serial cost, timed apart from the scaling it would dilute
            t0 = time.perf_counter()
            ray.init(num_cpus=w, include_dashboard=False, log_to_driver=False,
                     logging_level=40)
            startup = time.perf_counter() - t0
            t0 = time.perf_counter()
            r = compare([args.policy], users=args.ray_users, days=args.ray_days,
                        shard_size=half, ray=True)
            times[w] = time.perf_counter() - t0
            ray.shutdown()
            frames[w] = r.per_user
            times[-w] = startup
        identical = True
        try:
            pd.testing.assert_frame_equal(frames[1], frames[2])
        except AssertionError:
            identical = False
        out["ray"] = {"users": args.ray_users, "days": args.ray_days, "shards": 2,
                      "ray_init_seconds": [round(times[-1], 2), round(times[-2], 2)],
                      "seconds_1_worker": round(times[1], 2),
                      "seconds_2_workers": round(times[2], 2),
                      "speedup": round(times[1] / times[2], 2), "target_speedup": 1.6,
                      "results_identical": identical}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        lr = out["large_run"]
        print(f"compare {args.users} users x {args.days} d ({args.policy}): {lr['seconds']} s "  # type: ignore[index]
              f"(target < 60 s), {lr['user_steps_per_s']:,} user-steps/s")  # type: ignore[index]
        if "ray" in out:
            ry = out["ray"]
            print(f"ray 1 worker {ry['seconds_1_worker']} s, "  # type: ignore[index]
                  f"2 workers {ry['seconds_2_workers']} s: "  # type: ignore[index]
                  f"{ry['speedup']}x (target >= 1.6x), identical={ry['results_identical']}")  # type: ignore[index]


if __name__ == "__main__":
    main()
