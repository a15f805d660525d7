"""What the pieces of one engine pass cost, in instructions (callgrind) or CPU: the offset
lookup (`decision_clock`), `features`, `guardrails.check`, the timing policy's distribution
(`action_dist_unguarded`), sampling with the keyed draws, and the draws alone.

The set-up is `engine_pass.py`'s (a `Server` without HTTP, the default policies, 400 users in
8 zones, `--passes` warm-up passes); then each component runs on the inputs of `--passes`
passes of `--rows` users (its own inputs computed first, so a figure is that component
alone). Components that do not move the state repeat on the same state.

    python benchmarks/engine_components.py [--tree DIR ...] [--rows 1 8]
        [--components clock features guard dist sample draws] [--instructions] [--json]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine_pass  # (the same server set-up)

COMPONENTS = ("clock", "features", "guard", "dist", "sample", "draws")


def child(rows: int, passes: int, comp: str, instructions: bool, seed: int) -> None:
    """In the tree's interpreter: prints the CPU seconds of the measured calls."""
    import numpy as np

    from pushrl.policies.base import TimingContext
    from pushrl.serve import guardrails
    from pushrl.serve.config import ServeConfig
    from pushrl.serve.schemas import DecideIn
    from pushrl.serve.server import Server

    tmp = Path(tempfile.mkdtemp(prefix="pushrl-comp-"))
    try:
        cfg = ServeConfig(registry=tmp / "policies", state=tmp / "state", seed=0,
                          watch_seconds=0, catalog=engine_pass.ROOT / "simulator_data" / "synth",
                          sync="normal")
        srv = Server(cfg)
        stmts = []
        for k in range(engine_pass.USERS):
            stmts += srv.state.put_user(f"u{k}", engine_pass.ZONES[k % len(engine_pass.ZONES)],
                                        {}, engine_pass.T0 // 3600)[1]
        srv.log.write(stmts)
        rng = np.random.default_rng(seed)
        reqs = [[DecideIn(user_id=f"u{u}", ts=engine_pass.T0 + 3600 * i)
                 for u in rng.choice(engine_pass.USERS, rows, replace=False)]
                for i in range(2 * passes)]
        for r in reqs[:passes]:
            srv.engine.decide(srv.rows(r))
        eng, st = srv.engine, srv.state
        policy = eng.policies.timing.policy
        calls: list[Callable[[], object]] = []
        for req in reqs[passes:]:
            r = srv.rows(req)
            u = np.array([x.u for x in r], np.int64)
            ts = np.array([x.ts for x in r], np.int64)
            b = ts // 3600
            st.fs.advance(u, b)  # (features read users advanced to the decision's bucket)
            at, start = st.fs.decision_clock(u, ts)
            allowed, _, today, _ = guardrails.check(eng.guardrails, st.sends, u, ts, st.fs,
                                                    st.subscriptions, None, local=at)
            raw = st.fs.features(u, b, clock=(start[0], start[1]), advanced=True)
            ctx = TimingContext(raw, allowed, u, b, st.fs, today)
            dist = policy.action_dist_unguarded(ctx)[0]
            run = {
                "clock": lambda u=u, ts=ts: st.fs.decision_clock(u, ts),
                "features": lambda u=u, b=b, s=start: st.fs.features(u, b, clock=(s[0], s[1]),
                                                                     advanced=True),
                "guard": lambda u=u, ts=ts, at=at: guardrails.check(
                    eng.guardrails, st.sends, u, ts, st.fs, st.subscriptions, None, local=at),
                "dist": lambda ctx=ctx: policy.action_dist_unguarded(ctx),
                "sample": lambda d=dist, r=r: policy.sample(d, eng.draws("timing", r)),
                "draws": lambda r=r: eng.draws("timing", r).random((len(r), 1)),
            }[comp]
            calls.append(run)
        for f in calls:  # warm
            f()
        engine_pass.time_calls(calls, instructions)
        srv.log.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(tree: Path, rows: int, passes: int, comp: str, instructions: bool,
            seed: int) -> float:
    """Per call: CPU microseconds, or instructions."""
    return engine_pass.run_child(tree, Path(__file__), [str(rows), str(passes), comp, str(seed)],
                                 passes, instructions)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], "--instructions" in sys.argv,
              int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, nargs="+", default=[engine_pass.ROOT])
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--components", nargs="+", default=list(COMPONENTS), choices=COMPONENTS)
    ap.add_argument("--passes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--instructions", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.instructions and shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind (apt-get install -y valgrind)")
    unit = "instructions" if a.instructions else "cpu_us"
    load0 = os.getloadavg()
    rows = [{"tree": str(t), "rows_per_pass": k, "component": c,
             f"{unit}_per_call": round(measure(t.resolve(), k, a.passes, c, a.instructions,
                                               a.seed), 1)}
            for k in a.rows for c in a.components for t in a.tree]
    res = {"unit": unit, "passes": a.passes, "seed": a.seed,
           "load_avg_before": [round(x, 2) for x in load0],
           "load_avg_after": [round(x, 2) for x in os.getloadavg()], "rows": rows}
    if a.json:
        print(json.dumps(res, indent=2))
        return
    for r in rows:
        print(f"{r['tree'][-30:]:30s} rows {r['rows_per_pass']:2d} {r['component']:9s} "
              f"{r[f'{unit}_per_call']:12.1f} {unit} per call")
    print(f"load average {res['load_avg_before']} -> {res['load_avg_after']}")


if __name__ == "__main__":
    main()
