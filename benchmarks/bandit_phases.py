"""Where `pushrl train bandit`'s whole process spends its time, phase by phase (issue 20).

Runs `train_vw` (what `pushrl train bandit --data DIR --out DIR` runs) in a fresh interpreter
and marks the end of each phase: the CLI's imports, loading and validating the log, the first
chunk of rounds handed to VW's driver (VW waits for data until then), the last chunk, the
log's fingerprint (computed while VW still learns), VW's driver finishing, and the artifact
written. Each mark has the wall time and this process's CPU time (all its threads); VW's
driver is a child process (its CPU is printed at the end). The CPU figures, unlike the wall,
are usable on a loaded machine.

    python benchmarks/bandit_phases.py [--data simulator_data/synth] [--repeats 1] [--json]

Run it from a checkout with `PYTHONPATH=TREE` (or against another tree: `--tree DIR`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, tempfile, time
T = [("start", time.perf_counter(), time.process_time())]
def mark(n): T.append((n, time.perf_counter(), time.process_time()))
import pushrl.cli.main  # the CLI's imports
mark("imports")
from pushrl.train import vw_train as vt
orig_iter = vt.iter_rounds
def rounds(*a, **k):
    mark("log loaded")
    first = True
    for c in orig_iter(*a, **k):
        if first:
            mark("first chunk"); first = False
        yield c
    mark("last chunk")
vt.iter_rounds = rounds
orig_finish = vt._Driver.finish
def finish(self):
    mark("fingerprint (VW learning)"); r = orig_finish(self); mark("VW finished"); return r
vt._Driver.finish = finish
from pushrl.policies.vw import VWConfig
res = vt.train_vw(sys.argv[1], VWConfig(), out=tempfile.mkdtemp() + "/p")
mark("artifact written")
t = os.times()
print("RESULT " + json.dumps({"marks": [(n, round(w - T[0][1], 3), round(c - T[0][2], 3))
                                         for n, w, c in T],
                              "vw_child_cpu_s": round(t.children_user + t.children_system, 2),
                              "rounds": res.metrics["train/rounds"]}))
"""


def uptime() -> str:
    """``uptime``'s line (print the load next to every figure)."""
    r = subprocess.run(["uptime"], capture_output=True, text=True, check=False)
    return r.stdout.strip() or " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(tree: Path, data: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    # an installed package has its bytecode; a checkout run without it recompiles on start
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "pushrl")],
                   check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-c", CHILD, str(data)], env=env, cwd=tree,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, nargs="+", default=[ROOT])
    ap.add_argument("--data", type=Path, default=ROOT / "simulator_data" / "synth")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    load0, up0 = os.getloadavg(), uptime()
    runs = [{"tree": str(t.resolve()), **run(t.resolve(), a.data.resolve())}
            for _ in range(a.repeats) for t in a.tree]  # trees interleaved
    res = {"data": str(a.data), "load_avg_before": [round(x, 2) for x in load0],
           "load_avg_after": [round(x, 2) for x in os.getloadavg()], "uptime_before": up0,
           "uptime_after": uptime(), "runs": runs}
    if a.json:
        print(json.dumps(res, indent=2))
        return
    for r in runs:
        print(f"{r['tree']}: {int(r['rounds'])} rounds, VW child CPU {r['vw_child_cpu_s']} s")
        for name, wall, cpu in r["marks"]:
            print(f"  {name:28s} wall {wall:7.2f} s   CPU (pushrl process) {cpu:6.2f} s")
    print(f"uptime before: {res['uptime_before']}\nuptime after:  {res['uptime_after']}")


if __name__ == "__main__":
    main()
