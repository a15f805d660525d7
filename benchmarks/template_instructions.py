"""Instructions per template step (callgrind): a load-independent figure of what choosing and
rendering a template costs a server decision (issue 17: < 100 us p99), per source tree.

For each ``--tree`` a child process runs under valgrind's callgrind with instrumentation off,
builds a synthetic template world (``world_config(templates=True)``), trains a VW template
policy on it, starts a :class:`~pushrl.serve.server.Server` with the default catalog and that
policy (the closed form), gives 400 users some activity and warms up with ``--warmup``
template steps; then it counts the instructions of ``--n`` template steps
(:meth:`ServerTemplates.apply` of one sent push, on the live state) minus those of an empty
measured section (the toggling itself). Every tree sees the same world, users, items and
buckets, so the same decisions. Printed with the ratio to the first tree's; ``--json`` also
writes one JSON object.

    python benchmarks/template_instructions.py [--tree DIR ...] [--n 1000] [--json FILE]

A tree is a checkout of pushrl (e.g. ``git worktree`` or ``git archive COMMIT | tar -x``); it
runs with ``PYTHONPATH=DIR``. Needs valgrind; a few minutes per tree.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from _output import emit_json  # benchmarks/ is sys.path[0]

ROOT = Path(__file__).resolve().parents[1]


def _ctl(*args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(os.getpid())], capture_output=True,
                   check=True)


def _child(n: int, warmup: int, seed: int) -> None:
    """The measured process (under callgrind): build, warm up, count ``n`` steps."""
    import numpy as np

    from pushrl.units import HOUR
    from template_decide import bench_server  # benchmarks/ is sys.path[0]

    with bench_server(argparse.Namespace(users=300, days=7, seed=seed)) as (srv, rng, t0):
        st = srv.state
        items = [it.item_id for it in st.item_list]
        tpl = srv.engine.templates
        assert tpl is not None and tpl.linear is not None
        b0 = t0 // HOUR + 1
        calls = []
        for k in range(warmup + n):
            u = np.array([k % 400])
            b = np.array([b0 + k // 400], np.int64)
            calls.append((u, b, st.fs.features(u, b),
                           [{"decision_id": f"d{k}",
                             "item_id": items[int(rng.integers(len(items)))]}]))
        one = np.ones(1, bool)
        for u, b, raw, out in calls[:warmup]:
            tpl.apply(st, out, u, b, raw, one)
        _ctl("-i", "on")
        _ctl("--dump=empty")
        for u, b, raw, out in calls[warmup:]:
            tpl.apply(st, out, u, b, raw, one)
        _ctl("--dump=steps")
        _ctl("-i", "off")
        st.pending.clear()


def _collected(out_dir: Path, label: str) -> int:
    """Instructions in the dump(s) named ``label``."""
    total = 0
    for f in out_dir.glob("cg.out*"):
        text = f.read_text(errors="replace")
        if f"desc: Trigger: dump {label}\n" in text:
            m = re.search(r"^totals: (\d+)", text, re.M)
            total += int(m.group(1)) if m else 0
    return total


def measure(tree: Path, n: int, warmup: int, seed: int) -> dict[str, float]:
    """Instructions per template step of ``tree``."""
    with tempfile.TemporaryDirectory(prefix="pushrl-tin-") as tmp:
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no",
               f"--callgrind-out-file={tmp}/cg.out", sys.executable, str(Path(__file__)),
               "--child", "--n", str(n), "--warmup", str(warmup), "--seed", str(seed)]
        env = {**os.environ, "PYTHONPATH": str(tree)}
        r = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(r.stderr[-3000:])
        steps, empty = _collected(Path(tmp), "steps"), _collected(Path(tmp), "empty")
    return {"instructions_per_step": round((steps - empty) / n), "steps": n,
            "toggle_instructions": empty}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", default=None)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        _child(a.n, a.warmup, a.seed)
        return
    trees = [Path(t).resolve() for t in (a.tree or [str(ROOT)])]
    res: dict[str, dict[str, float]] = {}
    first = None
    for t in trees:
        got = measure(t, a.n, a.warmup, a.seed)
        first = first or got["instructions_per_step"]
        got["ratio_to_first"] = round(got["instructions_per_step"] / first, 3)
        res[str(t)] = got
        print(f"{t}: {got['instructions_per_step']:,} instructions per template step "
              f"(x{got['ratio_to_first']})", flush=True)
    emit_json({"benchmark": "template_instructions", "config": vars(a), "trees": res},
              a.json, indent=1, echo=False)


if __name__ == "__main__":
    main()
