"""The CPU floor of one durable decision at one connection (issue 20's single-decide figure).

A `/v1/decide` answered alone (one connection) must make its decision row durable before it
answers: one group commit of its own through the server's real log
(:class:`pushrl.serve.store.DurableLog`: WAL, ``PRAGMA synchronous=FULL``, the writer thread's
hand-off). `/v1/echo` takes the same HTTP path and commits nothing. So a single decide costs at
least ``echo CPU + this commit's CPU`` before any deciding, and a target below that sum cannot
be met at one connection with durable logging. This script measures the commit part: the
process CPU (user + system, all threads: the fsync's kernel time included) per commit of one
decision row (plus its ``ops`` row, as a decide journals), the caller blocking until durable.

    python benchmarks/commit_floor.py [--commits 2000] [--sync full] [--json] [--out FILE]

Compare its ``cpu_us_per_commit`` with the echo CPU per request at 1 connection printed by
``benchmarks/server.py --connections 1``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _output import emit_json  # benchmarks/ is sys.path[0]

from pushrl.serve.engine import _DECISION_SQL
from pushrl.serve.store import OP_SQL, DurableLog


def measure(commits: int, sync: str) -> dict[str, float]:
    """Per-commit process CPU (us) and wall (us) of ``commits`` one-decision group commits."""
    with tempfile.TemporaryDirectory(prefix="pushrl-commit-floor-") as tmp:
        log = DurableLog(Path(tmp), sync=sync, accept_empty=True)
        try:
            feats = bytes(4 * 40)  # a decision's raw feature row (float32 x 40)

            def stmts(i: int) -> list:
                row = (f"d{i:012x}", 2 * i + 1, f"u{i % 1000}", 1_700_000_000 + 3600 * i, 0,
                       None, 0.9, 0.1, None, "most-active-hour", None, "policy", None, None,
                       feats, None, None)
                return [(_DECISION_SQL, row), (OP_SQL, (2 * i + 2, 1, i % 1000, i, 0, None))]

            for i in range(50):  # warm the writer thread, the page cache and the WAL
                log.write(stmts(i))
            c0, w0 = time.process_time(), time.perf_counter()
            for i in range(50, 50 + commits):
                log.write(stmts(i))
            c1, w1 = time.process_time(), time.perf_counter()
        finally:
            log.close()
    return {"cpu_us_per_commit": round((c1 - c0) / commits * 1e6, 1),
            "wall_us_per_commit": round((w1 - w0) / commits * 1e6, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commits", type=int, default=2000)
    ap.add_argument("--sync", choices=["full", "normal"], default="full")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    a = ap.parse_args()
    load0 = os.getloadavg()[0]
    res = {"commits": a.commits, "sync": a.sync, **measure(a.commits, a.sync),
           "load_avg_before": round(load0, 2), "load_avg_after": round(os.getloadavg()[0], 2)}
    emit_json(res, a.out, echo=a.json)
    if a.json:
        return
    print(f"one durable decision commit (sync={a.sync}): {res['cpu_us_per_commit']} us CPU "
          f"(all threads, fsync included), {res['wall_us_per_commit']} us wall; load "
          f"{res['load_avg_before']} -> {res['load_avg_after']}")


if __name__ == "__main__":
    main()
