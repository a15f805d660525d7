"""Benchmark `pushrl compare`: the vectorised simulator at scale, and Ray scale-out.

Usage: python benchmarks/compare.py [--users 100000] [--days 28] [--ray-users 40000] [--json]

Figures (issue 8):
* 100k users x 28 days x hourly slots with a heuristic policy (most-active-hour) in one local
  process: target < 60 s;
* Ray with 2 workers vs 1 worker on the same shard plan (results identical): target >= 1.6x.
  Ray's start-up (``ray.init``) is timed separately; each timed run includes the workers'
  imports and simulator loading.

Old vs new in the same run (a loaded machine cannot measure 60 s absolutely)::

    git -C . archive OLD_COMMIT | tar -x -C /tmp/old
    python benchmarks/compare.py --vs /tmp/old --repeats 3 --skip-ray

runs the large compare in fresh processes for this checkout and for ``--vs``, interleaved,
and prints the wall and CPU speed-up and whether the per-user results are identical.
``--write`` stores ``benchmarks/results/compare.json`` (with the load average; with
``--skip-ray`` the stored Ray figures are kept and marked), with ``--vs``
``compare_speedup.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import pandas as pd

from pushrl.compare.runner import compare

from _output import emit_json  # benchmarks/ is sys.path[0]

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "compare.json"

CHILD = """
import hashlib, json, time
import pandas as pd
import pushrl
from pushrl.compare.runner import compare
t0 = time.perf_counter()
r = compare([{policy!r}], users={users}, days={days}, shard_size={users})
wall = time.perf_counter() - t0
h = hashlib.sha256(pd.util.hash_pandas_object(r.per_user).to_numpy().tobytes()).hexdigest()
print(json.dumps({{"file": pushrl.__file__, "wall_s": wall, "per_user_sha256": h}}))
"""


def _child(tree: Path, args: argparse.Namespace) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = CHILD.format(policy=args.policy, users=args.users, days=args.days)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env=env, cwd=tree)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    out["process_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out


def versus(args: argparse.Namespace) -> dict[str, object]:
    """The large run for this checkout and ``args.vs``, alternating, ``args.repeats`` times."""
    runs: dict[str, list[dict[str, object]]] = {"new": [], "old": []}
    for r in range(args.repeats):
        for name, tree in (("old", Path(args.vs)), ("new", ROOT)):
            runs[name].append(_child(tree, args))
            x = runs[name][-1]
            print(f"run {r + 1} {name}: {x['wall_s']:.1f} s wall, {x['process_cpu_s']:.1f} s "
                  f"CPU (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)

    def med(name: str, key: str) -> float:
        return float(median(float(x[key]) for x in runs[name]))  # type: ignore[arg-type]

    return {"old_tree": str(args.vs), "users": args.users, "days": args.days,
            "repeats": args.repeats, "runs": runs,
            "speedup_wall": med("old", "wall_s") / med("new", "wall_s"),
            "speedup_cpu": med("old", "process_cpu_s") / med("new", "process_cpu_s"),
            "results_identical": len({x["per_user_sha256"] for v in runs.values()
                                      for x in v}) == 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--policy", default="most-active-hour")
    ap.add_argument("--ray-users", type=int, default=50_000)
    ap.add_argument("--ray-days", type=int, default=28)
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--vs", help="another checkout: time old vs this one, interleaved")
    ap.add_argument("--repeats", type=int, default=3, help="with --vs")
    ap.add_argument("--write", action="store_true", help=f"write {RESULT.name}")
    args = ap.parse_args()
    if args.vs:
        res = versus(args)
        res.update(benchmark="compare_vs", load_avg=os.getloadavg(), target_seconds=60)
        emit_json(res, RESULT.parent / "compare_speedup.json" if args.write else None,
                  echo=args.json)
        print(f"compare {args.users} users x {args.days} d: speed-up vs {args.vs} "
              f"{res['speedup_wall']:.2f}x wall, {res['speedup_cpu']:.2f}x CPU (median of "
              f"{args.repeats}); identical results: {res['results_identical']}; target < 60 s "
              f"absolute on a quiet machine; load {os.getloadavg()[0]:.1f}")
        return

    t0, c0 = time.perf_counter(), time.process_time()
    res = compare([args.policy], users=args.users, days=args.days, shard_size=args.users)
    big, big_cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    user_steps = args.users * args.days * 24
    out: dict[str, object] = {
        "benchmark": "compare",
        "machine": f"{platform.machine()} cores={os.cpu_count()} py{platform.python_version()}",
        "load_avg": os.getloadavg(),
        "large_run": {"policy": args.policy, "users": args.users, "days": args.days,
                      "slots_per_day": 24, "seconds": round(big, 2),
                      "cpu_seconds": round(big_cpu, 2),
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
    out["load_avg_end"] = os.getloadavg()
    if args.write:
        if "ray" not in out and RESULT.is_file():  # --skip-ray keeps the stored Ray figures
            old = json.loads(RESULT.read_text()).get("ray")
            if old is not None:
                out["ray"] = {**old, "note": "not re-measured in this run (--skip-ray)"}
    emit_json(out, RESULT if args.write else None, echo=args.json)
    if not args.json:
        lr = out["large_run"]
        print(f"compare {args.users} users x {args.days} d ({args.policy}): {lr['seconds']} s "  # type: ignore[index]
              f"(target < 60 s), {lr['cpu_seconds']} s CPU, "  # type: ignore[index]
              f"{lr['user_steps_per_s']:,} user-steps/s")  # type: ignore[index]
        if "ray" in out:
            ry = out["ray"]
            print(f"ray 1 worker {ry['seconds_1_worker']} s, "  # type: ignore[index]
                  f"2 workers {ry['seconds_2_workers']} s: "  # type: ignore[index]
                  f"{ry['speedup']}x (target >= 1.6x), identical={ry['results_identical']}")  # type: ignore[index]


if __name__ == "__main__":
    main()
