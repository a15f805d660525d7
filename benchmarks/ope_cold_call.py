"""Cold single call, whole process: pushrl vs OBP 0.4.1, one DR bootstrap interval (OBD arrays).

Each run is a fresh interpreter that imports the library, loads the fixture arrays of
tests/fixtures/obp and makes one ``DoublyRobust().estimate_interval`` call with 10,000
resamples, as a user's script would. Runs alternate between the two libraries so both see the
same machine load; the figure is the CPU time of the whole child process (user + system, from
``RUSAGE_CHILDREN``), with the import and the call also reported from inside the child.

    python benchmarks/ope_cold_call.py --obp-python /work/obpvenv/bin/python [--runs 3] [--json]

``--pushrl-path DIR`` puts DIR first on the child's ``PYTHONPATH`` (to time another checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from statistics import median
from typing import Any

from _output import emit_json  # benchmarks/ is sys.path[0]

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
c0 = time.process_time()
sys.path.insert(0, {bench!r})
from ope_obp_timing import load
if {obp}:
    from obp.ope import DoublyRobust
else:
    from pushrl.ope import DoublyRobust
c1 = time.process_time()
case = load("random_logs_bts_policy")
inputs = {{k: case[k] for k in ("reward", "action", "pscore", "action_dist", "position",
                                "estimated_rewards_by_reg_model")}}
c2 = time.process_time()
ci = DoublyRobust().estimate_interval(**inputs, n_bootstrap_samples={n_boot}, random_state=12345)
c3 = time.process_time()
print(json.dumps({{"import": c1 - c0, "call": c3 - c2, "ci": ci}}))
"""


def run_child(python: str, obp: bool, n_boot: int, pushrl_path: str | None) -> dict[str, Any]:
    env = dict(os.environ)
    path = pushrl_path or str(ROOT)
    env["PYTHONPATH"] = path if obp else os.pathsep.join([path, env.get("PYTHONPATH", "")])
    code = CHILD.format(bench=str(ROOT / "benchmarks"), obp=obp, n_boot=n_boot)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True,
                          env=env, cwd="/")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    out["process_cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--obp-python", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n-bootstrap", type=int, default=10_000)
    parser.add_argument("--pushrl-path", default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write", action="store_true",
                        help="write benchmarks/results/ope_cold_call.json")
    a = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {"pushrl": [], "obp": []}
    for _ in range(a.runs):
        runs["obp"].append(run_child(a.obp_python, True, a.n_bootstrap, None))
        runs["pushrl"].append(run_child(sys.executable, False, a.n_bootstrap, a.pushrl_path))
    summary = {
        lib: {key: median(r[key] for r in rs) for key in ("process_cpu", "import", "call")}
        for lib, rs in runs.items()
    }
    result = {
        "median_cpu_seconds": summary,
        "speedup_cpu_process": summary["obp"]["process_cpu"] / summary["pushrl"]["process_cpu"],
        "speedup_cpu_call": summary["obp"]["call"] / summary["pushrl"]["call"],
        "target_speedup": 5.0,
        "target_import_pushrl_ope_s": 0.3,
        "runs": a.runs,
        "n_bootstrap": a.n_bootstrap,
        "load_average": os.getloadavg(),
        "load_avg": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "intervals": {lib: rs[0]["ci"] for lib, rs in runs.items()},
        "command": " ".join(["python", *sys.argv]),
    }
    emit_json(result, ROOT / "benchmarks" / "results" / "ope_cold_call.json" if a.write else None,
              echo=a.json)
    if a.json:
        return
    for lib, s in summary.items():
        print(f"{lib:7s} process {s['process_cpu']:.2f}s CPU (import {s['import']:.2f}s, "
              f"call {s['call']:.2f}s), median of {a.runs}")
    print(f"speedup (CPU): whole process {result['speedup_cpu_process']:.2f}x, "
          f"call {result['speedup_cpu_call']:.2f}x (target >= 5x); import pushrl.ope "
          f"{summary['pushrl']['import']:.2f}s (target < 0.3s); load {os.getloadavg()}")


if __name__ == "__main__":
    main()
