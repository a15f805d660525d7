"""What `delay_rounds(due=False)` saves: CPU of the delay rounds of a trigger log with and
without :func:`pushrl.policies.delay_data.due_sends` (its one extra purchase join).

Usage: python benchmarks/delay_rounds_due.py DATA [--repeats 3]

DATA: a trigger world (``pushrl data synth --world triggers``). Runs alternate (True, False
/ False, True) so load drifts hit both; prints the CPU of each run, the medians and
``due_sends`` alone (checked equal to the rounds' ``due``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from pushrl.data.validate import load_dataset
    from pushrl.policies.delay_data import delay_rounds, due_sends
    from pushrl.rules.triggers import TriggerConfig
    from pushrl.sim.trigger_world import WORLD_GUARDRAILS, WORLD_TRIGGERS

    ds, _ = load_dataset(args.data)
    cfg = TriggerConfig.parse(WORLD_TRIGGERS)
    cpu: dict[bool, list[float]] = {True: [], False: []}
    keep = None
    for rep in range(args.repeats):
        for due in ((True, False) if rep % 2 == 0 else (False, True)):
            t0 = time.process_time()
            r = delay_rounds(ds, cfg, WORLD_GUARDRAILS, unsub_cost=1.0, due=due)
            cpu[due].append(time.process_time() - t0)
            if due:
                keep = r
    assert keep is not None and keep.due is not None
    t0 = time.process_time()
    d = due_sends(ds, cfg, keep.action, keep.arms, keep.context.extra["send_ts"])
    alone = time.process_time() - t0
    assert (d == keep.due).all()
    for due, v in cpu.items():
        print(f"due={due}: CPU s {[round(x, 3) for x in v]}, median {np.median(v):.3f}")
    print(f"due_sends alone: {alone:.3f} s CPU over {keep.n_rounds:,} rounds")


if __name__ == "__main__":
    main()
