"""`pushrl plan` at scale: 1M users' next-day plans locally, and on Ray with 1 and 2 workers.

The users are the embedded synthetic log's 2,000 imported users (``pushrl state import``),
tiled to ``--users`` in shards of ``--shard-size`` (each copy of a user gets its own id; the
shards and random streams are what a real state of that size would get). Reported: the plan's
wall and CPU time and users/s for each mode, the Ray speed-up (2 workers vs 1, measured in the
same run), whether the three plans are identical (they must be), the state load time of the
2k-user state (per user), and the peak RSS.

    python benchmarks/plan.py [--users 1000000] [--timing ppo-timing@v2] [--json] [--write]

Targets (issue 19): 1M users' plans in < 5 min locally; Ray 2 workers >= 1.6x one; plans
identical across modes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pushrl.rules.guardrails import Guardrails
from pushrl.serve.history import import_history
from pushrl.serve.plan import Shard, make_shards, open_state, parse_date, plan_shard

ROOT = Path(__file__).resolve().parents[1]
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--users", type=int, default=1_000_000)
parser.add_argument("--shard-size", type=int, default=50_000)
parser.add_argument("--date", default="2026-03-31")
parser.add_argument("--timing", default="ppo-timing@v2",
                    help="timing policy NAME@vN of policies/ ('' = most-active-hour)")
parser.add_argument("--modes", default="local,ray1,ray2")
parser.add_argument("--json", action="store_true", help="print JSON only")
parser.add_argument("--write", action="store_true",
                    help="write benchmarks/results/plan.json")
args = parser.parse_args()


def tile(base: Shard, index: int, k: int, offset: int) -> Shard:
    """Shard ``index`` of ``k`` users: copies ``offset .. offset+k-1`` of the base users."""
    n = len(base.user_ids)
    src = (offset + np.arange(k)) % n
    copy = (offset + np.arange(k)) // n
    ids = np.array([f"{u}-{c}" for u, c in zip(base.user_ids[src], copy, strict=True)],
                   dtype=object)
    feats = {name: (v if name == "tz_names" else np.ascontiguousarray(v[..., src]))
             for name, v in base.features.items()}
    return Shard(index, ids, feats, None if base.affinity is None else base.affinity[src],
                 tuple(x[src] for x in base.today), base.subscribed[src])  # type: ignore[arg-type]


def main() -> None:
    out: dict = {"users": args.users, "shard_size": args.shard_size, "date": args.date,
                 "load_avg_1m_start": os.getloadavg()[0], "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        import_history(ROOT / "simulator_data" / "synth", state, quarantine=False)
        t0 = time.perf_counter()
        st, pol = open_state(state, ROOT / "policies", timing=args.timing or None,
                             guardrails=Guardrails() if not args.timing else None)
        base = make_shards(st, len(st.users))[0]
        out["state_load_seconds_2k"] = round(time.perf_counter() - t0, 3)
        st.log.close()
    out["timing_policy"], out["item_policy"] = pol.timing_label, pol.item_label
    sizes = [(a, min(a + args.shard_size, args.users))
             for a in range(0, args.users, args.shard_size)]
    shards = [tile(base, i, b - a, a) for i, (a, b) in enumerate(sizes)]
    day = parse_date(args.date)
    plans: dict[str, pd.DataFrame] = {}
    for mode in args.modes.split(","):
        w, c = time.perf_counter(), time.process_time()
        if mode == "local":
            df = pd.concat([plan_shard(s, pol, day, 0) for s in shards], ignore_index=True)
        else:
            import ray

            ray.init(num_cpus=int(mode[3:]), include_dashboard=False, log_to_driver=False,
                     logging_level=40)
            try:
                pref = ray.put(pol)
                remote = ray.remote(num_cpus=1)(plan_shard)
                w = time.perf_counter()  # Ray start-up excluded: a cluster is already up
                df = pd.concat(ray.get([remote.remote(s, pref, day, 0) for s in shards]),
                               ignore_index=True)
            finally:
                ray.shutdown()
        wall = time.perf_counter() - w
        plans[mode] = df
        out[mode] = {"seconds": round(wall, 2), "driver_cpu_seconds":
                     round(time.process_time() - c, 2), "users_per_s": round(args.users / wall),
                     "sends": int(df["send"].sum())}
        if not args.json:
            print(mode, out[mode], flush=True)
    first = next(iter(plans.values()))
    out["identical_across_modes"] = all(first.equals(p) for p in plans.values())
    if "ray1" in out and "ray2" in out:
        out["ray2_vs_ray1"] = round(out["ray1"]["seconds"] / out["ray2"]["seconds"], 3)
    if "local" in out and "ray2" in out:
        out["ray2_vs_local"] = round(out["local"]["seconds"] / out["ray2"]["seconds"], 3)
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    out["load_avg_1m_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))
    if args.write:
        (ROOT / "benchmarks" / "results" / "plan.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
