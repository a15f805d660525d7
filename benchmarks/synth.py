"""Benchmark: generate the synthetic world at issue scale and report time and peak memory.

Usage: python benchmarks/synth.py [--users 20000] [--days 28] [--json]

Target (issue 2): 20,000 users x 28 days (13.4M hourly opportunities) in < 60 s within 4 GB RSS.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import tempfile
import time

from pushrl.data.synth import SynthConfig, generate, synthesize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true", help="also time writing Parquet")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cfg = SynthConfig(users=args.users, days=args.days, seed=args.seed)
    t0 = time.perf_counter()
    if args.write:
        tmp = tempfile.mkdtemp(prefix="pushrl-synth-")
        res = synthesize(tmp, cfg)
        shutil.rmtree(tmp, ignore_errors=True)
        n = res["decisions"]
    else:
        ds, _, _ = generate(cfg)
        n = len(ds.pushes)
    secs = time.perf_counter() - t0
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    out = {
        "benchmark": "synth",
        "users": args.users, "days": args.days, "opportunities": args.users * args.days * 24,
        "decisions_logged": n, "seconds": round(secs, 2), "peak_rss_gb": round(rss_gb, 3),
        "target_seconds": 60, "target_rss_gb": 4.0,
        "meets_target": secs < 60 and rss_gb <= 4.0,
        "machine": f"{platform.machine()} {platform.python_version()}",
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"synth {args.users} users x {args.days} d: {n:,} decisions in {secs:.1f} s, "
              f"peak RSS {rss_gb:.2f} GB (target < 60 s, <= 4 GB)")


if __name__ == "__main__":
    main()
