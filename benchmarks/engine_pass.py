"""The server engine's cost per decision pass, in process: CPU time, or instructions.

A pass is one call of `Engine.decide` (what the micro-batcher runs for the requests of one
event-loop tick; `/v1/decide` at 1 connection is a pass of 1, at 24 connections passes of
~4-8). The script starts a `Server` (no HTTP) with the default policies and the synthetic
catalog, creates 400 users in 8 zones and runs `--passes` passes of `--rows` distinct users,
each pass an hour after the previous one (the first warm the caches and are not counted).

On a shared machine CPU times move with the load; `--instructions` counts the instructions
of the measured passes under valgrind's callgrind (`apt-get install -y valgrind`), which the
load does not change, so trees measured at different times compare (slow: ~1 min a run).

    python benchmarks/engine_pass.py [--tree DIR ...] [--rows 1 6] [--passes 200]
        [--instructions] [--seed 1] [--json]

`--seed` draws the users of each pass (default 1, the figures in NOTES.md before 2026-12-05f).

A tree is a checkout of pushrl (`git archive COMMIT | tar -x -C DIR`); it runs with
`PYTHONPATH=DIR`. Each tree's figure is printed with the ratio to the first tree's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Asia/Tokyo",
         "America/Los_Angeles", "Europe/London", "Australia/Sydney"]
T0 = 1_780_000_000  # 2026-05-28T20:26:40Z
USERS = 400


def child(rows: int, passes: int, instructions: bool, seed: int = 1) -> None:
    """Run in the tree's interpreter: prints the CPU seconds of the measured passes."""
    import numpy as np

    from pushrl.serve.config import ServeConfig
    from pushrl.serve.schemas import DecideIn
    from pushrl.serve.server import Server

    tmp = Path(tempfile.mkdtemp(prefix="pushrl-pass-"))
    try:
        cfg = ServeConfig(registry=tmp / "policies", state=tmp / "state", seed=0,
                          watch_seconds=0, catalog=ROOT / "simulator_data" / "synth",
                          sync="normal")
        srv = Server(cfg)
        stmts = []
        for k in range(USERS):
            stmts += srv.state.put_user(f"u{k}", ZONES[k % len(ZONES)], {}, T0 // 3600)[1]
        srv.log.write(stmts)
        rng = np.random.default_rng(seed)
        reqs = [[DecideIn(user_id=f"u{u}", ts=T0 + 3600 * i)
                 for u in rng.choice(USERS, rows, replace=False)] for i in range(2 * passes)]
        for r in reqs[:passes]:  # warm-up: profile caches, time-zone blocks
            srv.engine.decide(srv.rows(r))
        todo = [srv.rows(r) for r in reqs[passes:]]
        time_calls([lambda r=r: srv.engine.decide(r) for r in todo], instructions)
        srv.log.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(tree: Path, rows: int, passes: int, instructions: bool, seed: int = 1) -> float:
    """Per pass: CPU microseconds, or instructions."""
    return run_child(tree, Path(__file__), [str(rows), str(passes), str(seed)], passes,
                     instructions)


def time_calls(calls: Sequence[Callable[..., object]], instructions: bool) -> None:
    """Child side: run ``calls`` once, counted by callgrind (``instructions``) or timed;
    prints ``CPU <seconds>`` for :func:`run_child`."""
    if instructions:
        subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())],
                       capture_output=True, check=True)
    c0 = time.process_time()
    for f in calls:
        f()
    cpu = time.process_time() - c0
    if instructions:
        subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())],
                       capture_output=True, check=True)
    print(f"CPU {cpu}")


def run_child(tree: Path, script: Path, args: list[str], per: int, instructions: bool
              ) -> float:
    """Run ``script --child *args`` with ``tree`` on PYTHONPATH: CPU microseconds per call
    (of ``per``), or callgrind instructions per call with ``instructions``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(script.resolve()), "--child", *args]
    if not instructions:
        out = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=True)
        return 1e6 * float(out.stdout.split("CPU ")[1]) / per
    tmp = Path(tempfile.mkdtemp(prefix="pushrl-cg-"))
    try:
        cg = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
              f"--callgrind-out-file={tmp}/cg.out"]
        out = subprocess.run([*cg, *cmd, "--instructions"], env=env, cwd=tree,
                             capture_output=True, text=True, check=True)
        line = next(x for x in out.stderr.splitlines() if "Collected :" in x)
        return int(line.split("Collected :")[1]) / per
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), int(sys.argv[3]), "--instructions" in sys.argv, int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, nargs="+", default=[ROOT])
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 6])
    ap.add_argument("--passes", type=int, default=200)
    ap.add_argument("--instructions", action="store_true")
    ap.add_argument("--seed", type=int, default=1, help="draw of the users of each pass")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.instructions and shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind (apt-get install -y valgrind)")
    load0 = os.getloadavg()
    unit = "instructions" if a.instructions else "cpu_us"
    rows = []
    for k in a.rows:
        first = None
        for tree in a.tree:
            v = measure(tree.resolve(), k, a.passes, a.instructions, a.seed)
            first = first or v
            rows.append({"tree": str(tree), "rows_per_pass": k, f"{unit}_per_pass": round(v, 1),
                         "ratio_to_first_tree": round(v / first, 3)})
    res = {"unit": unit, "passes": a.passes, "users": USERS, "seed": a.seed,
           "load_avg_before": [round(x, 2) for x in load0],
           "load_avg_after": [round(x, 2) for x in os.getloadavg()], "rows": rows}
    if a.json:
        print(json.dumps(res, indent=2))
        return
    for r in rows:
        print(f"{r['tree'][-40:]:40s} pass of {r['rows_per_pass']:2d}: "
              f"{r[f'{unit}_per_pass']:12.1f} {unit} per pass  (x{r['ratio_to_first_tree']})")
    print(f"load average {res['load_avg_before']} -> {res['load_avg_after']}")


if __name__ == "__main__":
    main()
