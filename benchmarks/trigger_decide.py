"""In-process trigger decision latency (issue #16 target: p99 < 1 ms).

    python benchmarks/trigger_decide.py [--users 10000 --decisions 3000] [--policy DIR]

One decision = what a server does when an activity event creates a trigger: the tracker
observes the event (``TriggerTracker.observe_activity``), the delay context of the new
trigger is built from the live :class:`FeatureState` (``delay_context``: pipeline features,
hour-of-week profile, send times past quiet hours), the delay policy picks an arm with its
pscore (``decide_batch``), and the tracker records it (``decide``). Timed per decision with
``perf_counter_ns`` (wall) and ``thread_time_ns`` (CPU: what the decision costs when the
machine is loaded) after a warm-up, for the VW policy (``--policy`` artifact, else an
untrained VW model of the same layout: the same text and predict cost), the same model's
closed form (:class:`pushrl.policies.delay_fast.LinearDelayScorer`: what the server decides
with; proved equal to VW when extracted) and the next-active-hour heuristic. Prints
p50/p99/max in microseconds (wall and CPU), ``uptime`` and the load average, as JSON.

    python benchmarks/trigger_decide.py --instructions [--tree DIR ...] [--users 2000]

counts instead the instructions of ``--decisions`` decisions of the closed-form policy (what
the server decides with) under valgrind's callgrind, per decision: a load-independent figure
(each tree, e.g. ``git archive main | tar -x -C /tmp/main``, runs this script with
``PYTHONPATH=DIR``; the ratio to the first tree is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pushrl.data.features import FeatureSpec, FeatureState
from pushrl.policies.baselines import make_baseline
from pushrl.policies.delay_fast import LinearDelayScorer
from pushrl.policies.registry import load_policy
from pushrl.policies.vw import VWItemPolicy
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.triggers import TriggerConfig, TriggerTracker
from pushrl.sim.trigger_context import common_arms, delay_context
from pushrl.train.delay import DELAY_VW, delay_layout
from pushrl.units import HOUR

ROOT = Path(__file__).resolve().parents[1]
ZONES = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "Asia/Kolkata", "UTC"]


def world(users: int, seed: int) -> tuple[FeatureState, int, np.random.Generator]:
    """``(state with 14 days of history, now, rng)``."""
    rng = np.random.default_rng(seed)
    cats = tuple(f"c{i}" for i in range(8))
    spec = FeatureSpec(cats, {}, tuple([1 / 168] * 168), tuple([1 / 8] * 8))
    t0 = 1_772_409_600  # 2026-03-02
    state = FeatureState(spec, [ZONES[i % len(ZONES)] for i in range(users)], t0 // HOUR)
    # some history so the profiles and windows are not empty
    hist_u = rng.integers(0, users, 20 * users)
    hist_b = t0 // HOUR + np.sort(rng.integers(0, 24 * 14, hist_u.size))
    for b in np.unique(hist_b):
        m = hist_b == b
        state.record_activity(hist_u[m], int(b), rng.integers(0, 8, int(m.sum())))
    now = t0 + 15 * 86400
    state.advance(np.arange(users), now // HOUR)  # a live server keeps its users' clocks current
    return state, now, rng


class Decider:
    """One server-style trigger decision after another (event ``i`` at ``now + 7 i`` s)."""

    def __init__(self, policy: object, users: int, seed: int) -> None:
        self.state, self.now, self.rng = world(users, seed)
        config = TriggerConfig.default()
        self.arms = common_arms(config)
        self.tracker = TriggerTracker(config)
        self.g = Guardrails()
        self.policy, self.users, self.i = policy, users, 0

    def step(self) -> None:
        """Observe a cart event, build the new trigger's delay context, decide, record."""
        rng, arms, state = self.rng, self.arms, self.state
        u = int(rng.integers(0, self.users))
        ts = self.now + self.i * 7
        self.i += 1
        trig = self.tracker.observe_activity(u, ts, "cart", int(rng.integers(0, 500)))
        for t in trig:
            if not t.is_open:
                continue
            ctx = delay_context(state, np.array([u]), np.array([ts]), np.array([t.kind.value]),
                                np.array([int(t.item or 0) % 8]), np.array([0.1]), arms,
                                self.g)
            d = self.policy.decide_batch(ctx, rng)  # type: ignore[attr-defined]
            self.tracker.decide(t.trigger_id, arms[int(d.action[0])], float(d.pscore[0]), ts)


def run(policy: object, users: int, decisions: int, seed: int) -> dict[str, float]:
    dec = Decider(policy, users, seed)
    lat = np.zeros(decisions, np.int64)
    cpu = np.zeros(decisions, np.int64)
    warm = 200
    for i in range(decisions + warm):
        s, c = time.perf_counter_ns(), time.thread_time_ns()
        dec.step()
        if i >= warm:
            lat[i - warm] = time.perf_counter_ns() - s
            cpu[i - warm] = time.thread_time_ns() - c
    us, cu = lat / 1000, cpu / 1000
    return {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99)),
            "max_us": float(us.max()), "cpu_p50_us": float(np.percentile(cu, 50)),
            "cpu_p99_us": float(np.percentile(cu, 99)), "cpu_max_us": float(cu.max()),
            "decisions": decisions}


def _policies(path: str | None) -> tuple[VWItemPolicy, LinearDelayScorer]:
    arms = common_arms(TriggerConfig.default())
    vw = (load_policy(path) if path
          else VWItemPolicy(delay_layout(arms), DELAY_VW.args(), name="delay-vw"))
    vw.model_bytes()  # a frozen model (what a server loads): the closed form applies
    return vw, LinearDelayScorer.extract(vw)


def worker(args: argparse.Namespace) -> None:
    """Under callgrind: warm up, then run ``--decisions`` decisions between two lines of stdin
    (the driver switches instrumentation on and off around them)."""
    _, fast = _policies(args.policy)
    dec = Decider(fast, args.users, args.seed)
    for _ in range(200):
        dec.step()
    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(args.decisions):
        dec.step()
    print("done", flush=True)
    sys.stdin.readline()


def instructions(tree: Path, args: argparse.Namespace) -> float:
    """Instructions per decision of ``tree`` (callgrind, user space, this process)."""
    tmp = Path(tempfile.mkdtemp(prefix="pushrl-tdi-"))
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no",
           f"--callgrind-out-file={tmp}/cg.out", sys.executable, str(Path(__file__).resolve()),
           "--worker", "--users", str(args.users), "--decisions", str(args.decisions),
           "--seed", str(args.seed), *(["--policy", args.policy] if args.policy else [])]
    proc = subprocess.Popen(cmd, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    ctl = lambda *a: subprocess.run(["callgrind_control", *a, str(proc.pid)],  # noqa: E731
                                    capture_output=True, check=True)
    try:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the worker of {tree} did not start")
        ctl("-z")
        ctl("-i", "on")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        proc.stdout.readline()
        ctl("-i", "off")
        ctl("-d", "decisions")
        proc.stdin.write("end\n")
        proc.stdin.flush()
        proc.wait(timeout=600)
        total = 0
        for f in tmp.glob("cg.out*"):
            text = f.read_text(errors="replace")
            if "desc: Trigger: dump decisions\n" in text:
                m = re.search(r"^totals: (\d+)", text, re.M)
                total += int(m.group(1)) if m else 0
        return total / args.decisions
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--decisions", type=int, default=3000)
    ap.add_argument("--policy", default=None, help="a trained delay policy artifact")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--instructions", action="store_true",
                    help="callgrind instructions per decision (closed form) instead of time")
    ap.add_argument("--tree", type=Path, nargs="+", default=[ROOT],
                    help="source trees to count (--instructions)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    out: dict[str, object] = {"uptime_before": _uptime(), "load_avg": os.getloadavg()}
    if args.instructions:
        if shutil.which("valgrind") is None:
            sys.exit("--instructions needs valgrind (apt-get install -y valgrind)")
        rows, first = [], None
        for tree in args.tree:
            n = instructions(tree.resolve(), args)
            first = first or n
            rows.append({"tree": str(tree), "instructions_per_decision": round(n),
                         "ratio_to_first": round(n / first, 3)})
        out.update({"unit": "instructions per trigger decision (closed form, callgrind)",
                    "users": args.users, "decisions": args.decisions, "rows": rows})
    else:
        vw, fast = _policies(args.policy)
        out["closed_form_max_pmf_error_vs_vw"] = fast.max_error
        for name, pol in (("vw", vw), ("vw-closed-form", fast),
                          ("next-active-hour", make_baseline("delay-next-active-hour"))):
            out[name] = run(pol, args.users, args.decisions, args.seed)
    out["load_avg_after"] = os.getloadavg()
    out["uptime_after"] = _uptime()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
