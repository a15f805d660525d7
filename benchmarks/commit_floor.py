"""The CPU floor of one durable decision at one connection (issue 20's single-decide figure).

A `/v1/decide` answered alone (one connection) must make its decision row durable before it
answers: one group commit of its own through the server's real log
(:class:`pushrl.serve.store.DurableLog`: WAL, ``PRAGMA synchronous=FULL``, the writer thread's
hand-off). `/v1/echo` takes the same HTTP path and commits nothing. So a single decide costs at
least ``echo CPU + this commit's CPU`` before any deciding, and a target below that sum cannot
be met at one connection with durable logging. This script measures the commit part: the
process CPU (user + system, all threads: the fsync's kernel time included) per commit of
``--rows`` decision rows (each with its ``ops`` row, as a decide pass journals), the caller
waiting until they are durable.

``--path`` picks the caller:

- ``loop`` (default): the server's path, an asyncio loop handing each commit to the writer
  with :meth:`~pushrl.serve.store.DurableLog.submit_cb` and submitting the next one from the
  callback;
- ``write``: a plain thread blocking in :meth:`~pushrl.serve.store.DurableLog.write`;
- ``direct``: the same rows inserted and committed on one thread through a connection opened
  like the writer's, no DurableLog (the floor without any hand-off).

    python benchmarks/commit_floor.py [--commits 2000] [--rows 1] [--path loop|write|direct]
        [--sync full] [--prefill 0] [--json] [--out FILE]

Compare its ``cpu_us_per_commit`` with the echo CPU per request at 1 connection printed by
``benchmarks/server.py --connections 1``; ``cpu_us_per_row`` at ``--rows 32`` models the
group commits of 32+ connections.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from _output import emit_json  # benchmarks/ is sys.path[0]

from pushrl.serve.engine import _DECISION_SQL
from pushrl.serve.rows import Many
from pushrl.serve.store import OP_SQL, DurableLog, Statement, connect

FEATS = bytes(4 * 40)  # a decision's raw feature row (float32 x 40)


def _clock() -> tuple[float, float, int]:
    """Process CPU seconds, wall seconds, and the process's context switches so far (all
    threads; a thread hand-off costs two, a count background load does not change)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return time.process_time(), time.perf_counter(), ru.ru_nvcsw + ru.ru_nivcsw


def stmts(i: int, rows: int) -> list[Statement]:
    """Commit ``i``'s statements: a pass of ``rows`` decisions (its ops rows, then one
    decision statement per row, as :meth:`pushrl.serve.engine.Engine.decide` emits)."""
    base = i * rows
    ops = Many((2 * (base + j) + 2, 1, (base + j) % 1000, base + j, 0, None)
               for j in range(rows))
    out: list[Statement] = [(OP_SQL, ops) if rows > 1 else (OP_SQL, ops[0])]
    for j in range(rows):
        k = base + j
        out.append((_DECISION_SQL, (
            f"d{k:012x}", 2 * k + 1, f"u{k % 1000}", 1_700_000_000 + 3600 * k, 0, None, 0.9,
            0.1, None, "most-active-hour", None, "policy", None, None, FEATS, None, None)))
    return out


def _loop_commits(log: DurableLog, batches: list[list[Statement]]
                  ) -> tuple[tuple[float, float, int], tuple[float, float, int]]:
    """The commits of ``batches`` from an asyncio loop, each submitted by the previous one's
    callback; returns :func:`_clock` before and after them."""
    n = len(batches)
    times: list[tuple[float, float, int]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done_fut: asyncio.Future[None] = loop.create_future()
        left = [n]

        def done(err: BaseException | None) -> None:
            if err is not None:
                done_fut.set_exception(err)
                return
            left[0] -= 1
            if left[0] == 0:
                done_fut.set_result(None)
            else:
                log.submit_cb(batches[n - left[0]], done)

        times.append(_clock())
        log.submit_cb(batches[0], done)
        await done_fut
        times.append(_clock())
    asyncio.run(main())
    return times[0], times[1]


def measure(commits: int, rows: int, sync: str, path: str, prefill: int) -> dict[str, Any]:
    """Per-commit and per-row process CPU (us) and wall (us) of ``commits`` commits of
    ``rows`` decisions each, after ``prefill`` decisions already in the log."""
    warm = 50
    with tempfile.TemporaryDirectory(prefix="pushrl-commit-floor-") as tmp:
        log = DurableLog(Path(tmp), sync=sync, accept_empty=True)
        first = (prefill + rows - 1) // rows + warm
        try:
            for i in range(0, first - warm, max(1, 4096 // rows)):
                log.write([s for k in range(i, min(i + max(1, 4096 // rows), first - warm))
                           for s in stmts(k, rows)])
            for i in range(first - warm, first):  # warm the writer, the page cache, the WAL
                log.write(stmts(i, rows))
            batches = [stmts(i, rows) for i in range(first, first + commits)]
            if path == "direct":
                log.close()
                conn = connect(Path(tmp) / "log.sqlite3", sync=sync)
                t0 = _clock()
                for b in batches:
                    conn.execute("BEGIN")
                    for sql, params in b:
                        if type(params) is Many:
                            conn.executemany(sql, params)
                        else:
                            conn.execute(sql, params)
                    conn.execute("COMMIT")
                t1 = _clock()
                conn.close()
            elif path == "loop":
                t0, t1 = _loop_commits(log, batches)
            else:
                t0 = _clock()
                for b in batches:
                    log.write(b)
                t1 = _clock()
            wal = Path(tmp) / "log.sqlite3-wal"
            wal_bytes = wal.stat().st_size if wal.exists() else 0
        finally:
            log.close()
    cpu = (t1[0] - t0[0]) / commits * 1e6
    return {"cpu_us_per_commit": round(cpu, 1), "cpu_us_per_row": round(cpu / rows, 2),
            "wall_us_per_commit": round((t1[1] - t0[1]) / commits * 1e6, 1),
            "context_switches_per_commit": round((t1[2] - t0[2]) / commits, 2),
            "wal_bytes_at_end": wal_bytes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commits", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=1, help="decisions per commit")
    ap.add_argument("--path", choices=["loop", "write", "direct"], default="loop")
    ap.add_argument("--sync", choices=["full", "normal"], default="full")
    ap.add_argument("--prefill", type=int, default=0,
                    help="decisions written before the timed commits (a bigger log)")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    a = ap.parse_args()
    if a.rows < 1 or a.commits < 1:
        ap.error(f"--rows and --commits must be >= 1, got {a.rows} and {a.commits}")
    load0 = os.getloadavg()[0]
    res = {"commits": a.commits, "rows": a.rows, "path": a.path, "sync": a.sync,
           "prefill": a.prefill, **measure(a.commits, a.rows, a.sync, a.path, a.prefill),
           "load_avg_before": round(load0, 2), "load_avg_after": round(os.getloadavg()[0], 2)}
    emit_json(res, a.out, echo=a.json)
    if a.json:
        return
    print(f"durable commit of {a.rows} decision(s) (path={a.path}, sync={a.sync}): "
          f"{res['cpu_us_per_commit']} us CPU per commit, {res['cpu_us_per_row']} us per row "
          f"(all threads, fsync included), {res['wall_us_per_commit']} us wall, "
          f"{res['context_switches_per_commit']} context switches, WAL "
          f"{res['wal_bytes_at_end'] / 2**20:.1f} MiB at the end; load "
          f"{res['load_avg_before']} -> {res['load_avg_after']}")


if __name__ == "__main__":
    main()
