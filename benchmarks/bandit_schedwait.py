"""Who waits for a core during `pushrl train bandit`: run-queue waits of VW's threads, by tree.

On 2 cores VW's learner and parser threads bound the command's wall time, and pushrl's
featurising thread competes with them for the cores. Linux counts, per thread, the time it
was runnable but waiting for a core (``/proc/PID/task/TID/schedstat``, 2nd field). This
script runs ``pushrl train bandit`` from each tree (interleaved, order alternating per
repeat), samples the schedstat of pushrl's threads and of VW's child's threads every 20 ms
(the last value seen per thread counts; a thread's final <= 20 ms can be missed) and prints
VW's run-queue wait next to the wall time. The waits include those caused by other
processes on the machine, so compare trees within one run, with ``uptime`` printed.

    python benchmarks/bandit_schedwait.py --data DIR --repeats 6 --tree OLD NEW [--json]

Linux only. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _threads(pid: int) -> dict[str, tuple[int, int]]:
    """``{tid: (run ns, run-queue wait ns)}`` of a process's threads."""
    res: dict[str, tuple[int, int]] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            run, wait, _ = (int(x) for x in (task / "schedstat").read_text().split())
        except (OSError, ValueError):
            continue
        res[task.name] = (run, wait)
    return res


def run_once(tree: Path, data: Path, out: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "pushrl", "train", "bandit", "--data", str(data),
                          "--json", "--out", str(out)], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    vw: dict[str, tuple[int, int]] = {}
    own: dict[str, tuple[int, int]] = {}
    while p.poll() is None:
        for child in _children(p.pid):
            vw.update(_threads(child))
        own.update(_threads(p.pid))
        time.sleep(0.02)
    if p.returncode != 0:
        raise SystemExit(f"pushrl train bandit failed in {tree} (exit {p.returncode})")
    learner = max(vw.values(), key=lambda v: v[0], default=(0, 0))  # the busiest VW thread
    s = 1e-9
    return {"tree": str(tree), "wall_s": round(time.perf_counter() - t0, 3),
            "vw_run_s": round(sum(v[0] for v in vw.values()) * s, 3),
            "vw_wait_s": round(sum(v[1] for v in vw.values()) * s, 3),
            "vw_busiest_thread_wait_s": round(learner[1] * s, 3),
            "pushrl_run_s": round(sum(v[0] for v in own.values()) * s, 3),
            "pushrl_wait_s": round(sum(v[1] for v in own.values()) * s, 3),
            "load1": round(os.getloadavg()[0], 2)}


def uptime() -> str:
    r = subprocess.run(["uptime"], capture_output=True, text=True, check=False)
    return r.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "simulator_data" / "synth")
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--tree", type=Path, nargs="+", default=[ROOT])
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if sys.platform != "linux":
        raise SystemExit("needs Linux (/proc/PID/task/TID/schedstat)")
    trees = [t.resolve() for t in a.tree]
    res: dict[str, Any] = {"data": str(a.data), "uptime_before": uptime(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="pushrl-schedwait-") as tmp:
        for r in range(a.repeats):
            for i, tree in enumerate(trees if r % 2 == 0 else trees[::-1]):
                row = run_once(tree, a.data.resolve(), Path(tmp) / "policies" / f"p{r}-{i}")
                res["runs"].append(row)
                if not a.json:
                    print(json.dumps(row), flush=True)
    res["uptime_after"] = uptime()
    med = statistics.median
    res["medians"] = {}
    for tree in trees:
        rows = [x for x in res["runs"] if x["tree"] == str(tree)]
        res["medians"][str(tree)] = {k: round(med(x[k] for x in rows), 3) for k in (
            "wall_s", "vw_wait_s", "vw_busiest_thread_wait_s", "vw_run_s", "pushrl_run_s",
            "pushrl_wait_s")}
    if a.json:
        print(json.dumps(res, indent=2))
        return
    for tree, m in res["medians"].items():
        print(f"{tree}: median wall {m['wall_s']} s, VW's threads waited {m['vw_wait_s']} s for a "
              f"core (busiest thread {m['vw_busiest_thread_wait_s']} s), VW ran {m['vw_run_s']} s;"
              f" pushrl ran {m['pushrl_run_s']} s, waited {m['pushrl_wait_s']} s")
    print(f"uptime before: {res['uptime_before']}\nuptime after:  {res['uptime_after']}")


if __name__ == "__main__":
    main()
