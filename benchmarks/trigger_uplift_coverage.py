"""Coverage of `pushrl uplift fit --trigger-kinds`: do the per-kind 95 % intervals cover the
true incremental conversions per trigger?

Usage: python benchmarks/trigger_uplift_coverage.py [--users 600] [--seeds 10-19] [--out J]

Each seed runs the closed-loop world of :mod:`pushrl.compare.trigger_uplift_world` (the same
world as the round-trip test ``tests/serve/test_trigger_uplift_fit.py``; its truth is known
exactly: the mean push effect ``U`` per kind) against the real app in process with per-kind
holdouts cart 0.3 / browse 0.5 (salt = the seed), exports the log (``pushrl logs export``'s
function) and fits (:func:`pushrl.train.trigger_uplift.from_log`).

**Estimand** (the same on both sides): the incremental conversions per trigger of a kind,
all of its triggers pushed vs none, where a conversion is a purchase of the trigger's item
within ``HORIZON_H`` h of the event or the push's ``converted`` feedback: the fit's
``incremental`` (a Hajek difference of the kind's holdout arms) and the world's
:func:`~pushrl.compare.trigger_uplift_world.truth` (the mean ``U`` over the kind's
triggers; the world's docstring says why the two are one quantity there).

Prints each kind's estimate, interval and whether it covers the truth, then per kind the
coverage (binomial SE ``sqrt(0.95 * 0.05 / seeds)``) and the mean error over seeds in units of
its standard error (``(mean estimate - truth) / (SD over seeds / sqrt(seeds))``). ``--out``
writes the per-seed rows and the summary as JSON. ``benchmarks/trigger_uplift_diag.py``
splits each seed's error into its parts.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Per-kind holdout shares of the server.
SHARES = {"cart": 0.3, "browse": 0.5}


def seeds_of(text: str) -> list[int]:
    """``10-19`` or ``3,5,7`` (ranges allowed inside the list: ``10-19,50-59``)."""
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += range(int(a), int(b) + 1)
        else:
            out.append(int(part))
    return out


@dataclass
class SeedRun:
    """One seed: the fit, the world's record and the exported log."""

    fit: Any  # pushrl.train.trigger_uplift.TriggerUplift
    world: Any  # pushrl.compare.trigger_uplift_world.WorldRun
    ds: Any  # pushrl.data.io.Dataset
    holdouts: Any  # {TriggerKind: Holdout}
    wall_s: float


def run_seed(users: int, seed: int) -> SeedRun:
    """The world of ``seed`` through the real app, its export and the per-kind fit."""
    from fastapi.testclient import TestClient

    from pushrl.compare import trigger_uplift_world as world
    from pushrl.data.validate import load_dataset
    from pushrl.rules.guardrails import Guardrails
    from pushrl.rules.holdout import parse_trigger_holdouts
    from pushrl.rules.triggers import TriggerConfig
    from pushrl.serve.app import create_app
    from pushrl.serve.config import ServeConfig
    from pushrl.serve.export import export
    from pushrl.train.trigger_uplift import from_log

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _timing import Always, Uniform

    with tempfile.TemporaryDirectory(prefix="trigup-") as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        holdouts = parse_trigger_holdouts([f"{k}={v}" for k, v in SHARES.items()], str(seed))
        cfg = ServeConfig(registry=tmp / "policies", state=tmp / "state", seed=0,
                          watch_seconds=0, sync="normal",
                          triggers=TriggerConfig.parse(world.RULES),
                          guardrails=Guardrails(0, 0, 0, 0), trigger_holdouts=holdouts)
        c = TestClient(create_app(cfg, overrides={"timing": Always(), "item": Uniform()}))
        c.__enter__()
        try:
            run = world.run_world(c, users, seed)
        finally:
            c.__exit__(None, None, None)
        export(tmp / "state", tmp / "export")
        ds, _ = load_dataset(tmp / "export")
        res = from_log(ds, TriggerConfig.parse(world.RULES), horizon_h=world.HORIZON_H)
        return SeedRun(res, run, ds, holdouts, time.perf_counter() - t0)


def bias_se(errors: list[float]) -> float:
    """Mean of ``errors`` over its standard error (SD / sqrt(n)); NaN below 2 values."""
    e = np.asarray(errors, float)
    if e.size < 2 or e.std(ddof=1) < 1e-12:  # none, or float noise (E - O)
        return float("nan")
    return float(e.mean() / (e.std(ddof=1) / math.sqrt(e.size)))


def main() -> None:
    from pushrl.compare import trigger_uplift_world as world

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=600)
    ap.add_argument("--seeds", default="10-19", help="e.g. 10-19 or 3,5,7")
    ap.add_argument("--out", default=None, help="JSON of the per-seed rows and the summary")
    args = ap.parse_args()

    truth = world.truth(args.users)
    seeds = seeds_of(args.seeds)
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        r = run_seed(args.users, seed)
        for kind, k in r.fit.kinds.items():
            hit = k.lower <= truth[kind] <= k.upper
            rows.append({"seed": seed, "kind": kind, "estimate": k.incremental, "se": k.se,
                         "lower": k.lower, "upper": k.upper, "truth": truth[kind],
                         "covered": bool(hit), "triggers": k.triggers,
                         "held_out": k.held_out})
            print(f"seed {seed} {kind}: {k.incremental:+.4f} [{k.lower:+.4f}, "
                  f"{k.upper:+.4f}] truth {truth[kind]:.4f} covered {hit} "
                  f"({k.triggers} triggers, {k.held_out} held out)")
        print(f"seed {seed}: {r.wall_s:.1f} s wall")
    summary: dict[str, Any] = {}
    for kind in truth:
        mine = [x for x in rows if x["kind"] == kind]
        n = len(mine)
        est = [x["estimate"] for x in mine]
        summary[kind] = {
            "seeds": n, "covered": sum(x["covered"] for x in mine),
            "coverage": sum(x["covered"] for x in mine) / n, "binomial_se":
            math.sqrt(0.95 * 0.05 / n), "truth": truth[kind], "mean_estimate": float(np.mean(est)),
            "sd_estimate": float(np.std(est, ddof=1)) if n > 1 else float("nan"),
            "mean_se": float(np.mean([x["se"] for x in mine])),
            "bias_in_se_of_mean": bias_se([e - truth[kind] for e in est])}
        s = summary[kind]
        print(f"coverage {kind}: {s['covered']} of {n} ({s['coverage']:.3f}, binomial SE "
              f"{s['binomial_se']:.3f}); mean estimate {s['mean_estimate']:.4f} vs truth "
              f"{s['truth']:.4f} (SD {s['sd_estimate']:.4f}, mean SE {s['mean_se']:.4f}): "
              f"{s['bias_in_se_of_mean']:+.2f} SE of the mean")
    if args.out:
        Path(args.out).write_text(json.dumps({"users": args.users, "seeds": seeds,
                                              "rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
