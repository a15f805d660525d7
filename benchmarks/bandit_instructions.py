"""Instructions of `pushrl train bandit`'s own Python work (callgrind), tree against tree.

Wall and CPU times of `benchmarks/bandit.py` drown in the machine's load; instruction counts
do not. Counts the whole interpreter (start, imports, exit) running, with `train_vw`'s own
functions and without VW's process:

* ``first``: the CLI's imports, the log loaded and validated, the first chunk of rounds
  featurised and formatted: what VW waits for before it can learn;
* ``all``: every chunk featurised and formatted, then the log's fingerprint (all of pushrl's
  work; VW learns meanwhile in the real command).

    python benchmarks/bandit_instructions.py --tree /work/main . [--stage first all]
        [--data simulator_data/synth] [--repeats 1] [--json]

Needs valgrind; each run takes ~50x its CPU time (minutes). Every tree is byte-compiled first
(an installed package has its bytecode).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys
import pushrl.cli.main, pushrl.cli.train_bandit  # the CLI's imports
from pushrl.train import vw_train as vt
from pushrl.data.shards import SHARD_USERS
chunks, card = vt._rounds(sys.argv[1], None, vt.CHUNK_ROUNDS, SHARD_USERS, None, None)
fmt, n = None, 0
for c in chunks:
    fmt = fmt or vt.VWFormatter(vt.layout_for(c))
    n += fmt.to_array(c.context, vt.labels_of(c)).size
    if sys.argv[2] == "first":
        break
else:
    card.pop("_later")()
if "atexit.register(gc.freeze)" in open(pushrl.cli.train_bandit.__file__).read():
    # what this tree's command does before its process exits
    import atexit, gc
    atexit.register(gc.freeze)
print("BYTES", n)
"""


def uptime() -> str:
    """``uptime``'s line."""
    r = subprocess.run(["uptime"], capture_output=True, text=True, check=False)
    return r.stdout.strip() or " ".join(f"{x:.2f}" for x in os.getloadavg())


def count(tree: Path, data: Path, stage: str) -> dict[str, int]:
    r = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         "-c", CHILD, str(data), stage],
        env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree, capture_output=True, text=True,
        check=True)
    m = re.search(r"Collected : (\d+)", r.stderr)
    b = re.search(r"BYTES (\d+)", r.stdout)
    if m is None or b is None:
        raise SystemExit(f"no callgrind total for {tree}: {r.stderr[-400:]}")
    return {"instructions": int(m.group(1)), "vw_text_bytes": int(b.group(1))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, nargs="+", default=[ROOT])
    ap.add_argument("--stage", nargs="+", default=["first", "all"], choices=["first", "all"])
    ap.add_argument("--data", type=Path, default=ROOT / "simulator_data" / "synth")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    trees = [t.resolve() for t in a.tree]
    for t in trees:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(t / "pushrl")],
                       check=True, capture_output=True)
    res = {"data": str(a.data), "uptime_before": uptime(), "runs": []}
    for stage in a.stage:
        for _ in range(a.repeats):
            for t in trees:  # trees interleaved
                r = {"tree": str(t), "stage": stage, **count(t, a.data.resolve(), stage)}
                res["runs"].append(r)
                if not a.json:
                    print(f"{stage:5s} {t}: {r['instructions'] / 1e9:.3f}G instructions "
                          f"({r['vw_text_bytes']:,} bytes of VW text)", flush=True)
    res["uptime_after"] = uptime()
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"uptime before: {res['uptime_before']}\nuptime after:  {res['uptime_after']}")


if __name__ == "__main__":
    main()
