"""Cold ``import pushrl.ope``: wall and CPU time in fresh interpreters (issue 20: < 0.3 s).

Each run is a new ``python -c`` process that times ``import pushrl.ope`` alone (numpy and
everything else it needs included: nothing is imported before it) with ``time.perf_counter``
(wall) and ``time.process_time`` (CPU of the process: on a shared machine the CPU figure is
closer to what a quiet machine's wall time is), and lists which heavy libraries the import
pulled in (scikit-learn, scipy, pandas, torch). The figure is the median over ``--runs``.
The file cache is warm after the first run (as for a user who imports it twice); the first
run is reported separately.

    python benchmarks/ope_import.py [--runs 9] [--json] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from statistics import median
from typing import Any

from _output import emit_json  # benchmarks/ is sys.path[0]

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 0.3
HEAVY = ("sklearn", "scipy", "pandas", "torch")

CHILD = f"""
import json, sys, time
w0, c0 = time.perf_counter(), time.process_time()
import pushrl.ope
w1, c1 = time.perf_counter(), time.process_time()
print(json.dumps({{"wall_s": w1 - w0, "cpu_s": c1 - c0, "file": pushrl.ope.__file__,
                  "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def run_child(pushrl_path: str) -> dict[str, Any]:
    """One fresh interpreter importing ``pushrl.ope`` from ``pushrl_path``."""
    env = {**os.environ, "PYTHONPATH": pushrl_path}
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          check=True, env=env, cwd="/")
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--pushrl-path", default=str(ROOT), help="checkout to import pushrl from")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    a = ap.parse_args()
    if a.runs < 1:
        raise SystemExit("--runs must be >= 1")
    load_start = os.getloadavg()
    runs = [run_child(a.pushrl_path) for _ in range(a.runs)]
    res = {
        "benchmark": "ope_import",
        "runs": runs,
        "median_wall_s": median(r["wall_s"] for r in runs),
        "median_cpu_s": median(r["cpu_s"] for r in runs),
        "first_wall_s": runs[0]["wall_s"],
        "max_wall_s": max(r["wall_s"] for r in runs),
        "heavy_modules_loaded": sorted({m for r in runs for m in r["heavy"]}),
        "target_s": TARGET_S,
        "load_avg_start": load_start,
        "load_avg_end": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "command": " ".join(["python", *sys.argv]),
    }
    emit_json(res, a.out, echo=a.json)
    if not a.json:
        print(f"import pushrl.ope ({runs[0]['file']}): median {res['median_wall_s']:.3f} s wall, "
              f"{res['median_cpu_s']:.3f} s CPU over {a.runs} fresh processes (first "
              f"{res['first_wall_s']:.3f} s, max {res['max_wall_s']:.3f} s); heavy modules "
              f"loaded: {res['heavy_modules_loaded'] or 'none'}; target < {TARGET_S} s; load "
              f"{' '.join(f'{x:.1f}' for x in load_start)} -> "
              f"{' '.join(f'{x:.1f}' for x in res['load_avg_end'])}")


if __name__ == "__main__":
    main()
