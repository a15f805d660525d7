"""Coverage of `pushrl uplift fit --trigger-kinds`: do the per-kind 95 % intervals cover the
true incremental conversions per trigger?

Usage: python benchmarks/trigger_uplift_coverage.py [--users 600] [--seeds 10-19]

Each seed runs the closed-loop world of ``tests/serve/trigger_uplift_world.py`` (the same
world as the round-trip test; its truth is known exactly: the mean push effect ``U`` per
kind) against the real app in process with per-kind holdouts cart 0.3 / browse 0.5, exports
the log (``pushrl logs export``'s function) and fits
(:func:`pushrl.train.trigger_uplift.from_log`). Prints each kind's estimate, interval and
whether it covers the truth, then the coverage per kind (binomial SE
``sqrt(0.95 * 0.05 / seeds)``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=600)
    ap.add_argument("--seeds", default="10-19", help="e.g. 10-19 or 3,5,7")
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    from pushrl.data.validate import load_dataset
    from pushrl.rules.guardrails import Guardrails
    from pushrl.rules.holdout import parse_trigger_holdouts
    from pushrl.rules.triggers import TriggerConfig
    from pushrl.serve.app import create_app
    from pushrl.serve.export import export
    from pushrl.train.trigger_uplift import from_log
    from tests.serve import trigger_uplift_world as world
    from tests.serve.conftest import doubles, make_cfg

    truth = world.truth(args.users)
    seeds = _seeds(args.seeds)
    covered = {k: 0 for k in truth}
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix="trigup-") as d:
            tmp = Path(d)
            t0 = time.perf_counter()
            holdouts = parse_trigger_holdouts(["cart=0.3", "browse=0.5"], str(seed))
            cfg = make_cfg(tmp, sync="normal", triggers=TriggerConfig.parse(world.RULES),
                           guardrails=Guardrails(0, 0, 0, 0), trigger_holdouts=holdouts)
            c = TestClient(create_app(cfg, overrides=doubles()))
            c.__enter__()
            try:
                world.run_world(c, args.users, seed)
            finally:
                c.__exit__(None, None, None)
            export(tmp / "state", tmp / "export")
            ds, _ = load_dataset(tmp / "export")
            res = from_log(ds, TriggerConfig.parse(world.RULES), horizon_h=world.HORIZON_H)
            for kind, k in res.kinds.items():
                hit = k.lower <= truth[kind] <= k.upper
                covered[kind] += hit
                print(f"seed {seed} {kind}: {k.incremental:+.4f} [{k.lower:+.4f}, "
                      f"{k.upper:+.4f}] truth {truth[kind]:.4f} covered {hit} "
                      f"({k.triggers} triggers, {k.held_out} held out)")
            print(f"seed {seed}: {time.perf_counter() - t0:.1f} s wall")
    for kind, n in covered.items():
        print(f"coverage {kind}: {n} of {len(seeds)}")


if __name__ == "__main__":
    main()
