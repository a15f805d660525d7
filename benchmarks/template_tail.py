"""Where the template step's tail comes from (issue 17: < 100 us p99). Prints one JSON object.

Usage: python benchmarks/template_tail.py [--seed 5] [--n 4000] [--runs 1] [--out FILE]

The server, users and loop of ``benchmarks/template_decide.py`` (``bench_server``, the
``template_step`` loop: one sent push per :meth:`ServerTemplates.apply`, the same users and
buckets), and for every step what it did besides the common path, read outside the timed
window: cache misses of ``encode_row`` (per raw column, counted by wrapping
``features._encode_column``), of the scorer's rounding table (``_scaled``), of
``activity_bin_one``, of the render cache and of the top-category memo, and the cyclic
garbage collections that ran inside it (``gc.callbacks``, per generation). A step is slow
when its wall time is over twice the run's p50; the report attributes each slow step to its
flags (``none``: it did nothing extra: the scheduler, a cache line, an interrupt).
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from collections import Counter
from typing import Any

import numpy as np

from pushrl.data import features, item_context
from pushrl.serve.templates import ServerTemplates
from pushrl.units import HOUR

from template_decide import bench_server  # benchmarks/: sys.path[0]
from _output import emit_json


def _attributed(tpl: ServerTemplates, srv: Any, rng: np.random.Generator, n: int,
                b0: int) -> dict[str, Any]:
    st = srv.state
    users = np.arange(len(st.users))
    items = [it.item_id for it in st.item_list]
    enc_miss: list[int] = []
    orig = features._encode_column

    def counting(j: int, x: float) -> tuple[float, ...]:
        enc_miss.append(j)
        return orig(j, x)

    gcs: list[int] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gcs.append(int(info["generation"]))

    features._encode_column = counting  # type: ignore[assignment]
    gc.callbacks.append(on_gc)
    walls: list[float] = []  # (floats and the flags of the few flagged steps only: the
    flagged: dict[int, list[str]] = {}  # record keeps no GC-tracked object per step)
    try:
        for k in range(n):
            u = users[k % users.size:k % users.size + 1]
            b = np.array([b0 + k // users.size], np.int64)
            raw = st.fs.features(u, b)
            out = [{"decision_id": f"d{k}", "item_id": items[int(rng.integers(len(items)))]}]
            bound = tpl._bound[2] if tpl._bound is not None else None
            sizes = (len(bound._scaled) if bound is not None else 0,
                     len(item_context._BIN_MEMO), len(tpl._cache), len(tpl._top_memo))
            ne, ng = len(enc_miss), len(gcs)
            w0 = time.perf_counter_ns()
            tpl.apply(st, out, u, b, raw, np.ones(1, bool))
            w1 = time.perf_counter_ns()
            bound = tpl._bound[2] if tpl._bound is not None else None
            after = (len(bound._scaled) if bound is not None else 0,
                     len(item_context._BIN_MEMO), len(tpl._cache), len(tpl._top_memo))
            walls.append((w1 - w0) / 1e3)
            if sizes != after or len(enc_miss) > ne or len(gcs) > ng:
                flagged[k] = ([f"encode_col{j}" for j in enc_miss[ne:]]
                              + [name for name, x, y in zip(("scaled", "bin", "render", "top"),
                                                            sizes, after, strict=True) if x != y]
                              + [f"gc{g}" for g in gcs[ng:]])
    finally:
        features._encode_column = orig  # type: ignore[assignment]
        gc.callbacks.remove(on_gc)
    rows = [{"k": k, "us": w, "flags": flagged.get(k, [])} for k, w in enumerate(walls)]
    us = np.array(walls)
    p50 = float(np.percentile(us, 50))
    slow = [r for r in rows if r["us"] > 2 * p50]
    by_flag: Counter[str] = Counter()
    all_flag: Counter[str] = Counter()
    for r in rows:
        for f in set(r["flags"]) or {"none"}:
            all_flag[f] += 1
    for r in slow:
        for f in set(r["flags"]) or {"none"}:
            by_flag[f] += 1
    clean = us[[not r["flags"] for r in rows]]
    mean_by: dict[str, float] = {}
    for f in all_flag:
        sel = [r["us"] for r in rows if (set(r["flags"]) or {"none"}) >= {f}]
        mean_by[f] = round(float(np.median(sel)), 1)
    first = min(n, len(users))  # each user's first step (its cold rows) vs later ones
    return {
        "first_pass_median_us": {
            "no_flag": round(float(np.median([r["us"] for r in rows[:first] if not r["flags"]]
                                             or [0.0])), 1),
            "later_no_flag": round(float(np.median([r["us"] for r in rows[first:]
                                                    if not r["flags"]] or [0.0])), 1)},
        "wall_us": {"p50": round(p50, 1), "p99": round(float(np.percentile(us, 99)), 1),
                    "max": round(float(us.max()), 1)},
        "no_flag_wall_us": {"n": int(clean.size),
                            "p99": round(float(np.percentile(clean, 99)), 1)},
        "slow_threshold_us": round(2 * p50, 1), "slow_steps": len(slow),
        "slow_steps_by_flag": dict(by_flag.most_common()),
        "all_steps_by_flag": dict(all_flag.most_common()),
        "median_us_by_flag": mean_by,
        "slowest": sorted(({"k": r["k"], "us": round(r["us"], 1), "flags": r["flags"]}
                           for r in slow), key=lambda r: -r["us"])[:15],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1500)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    runs = []
    with bench_server(a) as (srv, rng, t0):
        tpl = srv.engine.templates
        assert tpl is not None and tpl.linear is not None
        b0 = t0 // HOUR + 1
        for r in range(a.runs):
            runs.append(_attributed(tpl, srv, rng, a.n, b0 + r * (a.n // 400 + 2)))
        srv.state.pending.clear()
    res = {"benchmark": "template_tail", "load_avg": os.getloadavg(), "config": vars(a),
           "gc_threshold": gc.get_threshold(), "gc_frozen": gc.get_freeze_count(),
           "runs": runs}
    emit_json(res, a.out, indent=1)


if __name__ == "__main__":
    main()
