"""Shared pieces of the in-process slot benchmarks (``channel_decide.py``,
``template_decide.py``): the always-send timing and uniform item doubles, the per-call
quantiles, and the interleaved with/without-slot ``Engine.decide`` timing loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pushrl.policies.base import ItemContext, ItemPolicy, TimingContext, TimingPolicy
from pushrl.serve.engine import DecideRow, Engine
from pushrl.serve.state import ServerState
from pushrl.units import HOUR

#: Users ``b0..b{USERS-1}`` the benchmarks create; the loop cycles through them.
USERS = 400
#: Decisions per block of the interleaved loop (with the slot, then without, ...).
BLOCK = 50


class Always(TimingPolicy):
    """Sends every decision."""

    name, version = "always", "bench"

    def _action_dist(self, ctx: TimingContext) -> np.ndarray:
        return np.tile([0.0, 1.0], (len(ctx), 1))


class Uniform(ItemPolicy):
    """Uniform over the allowed items."""

    name, version = "uniform", "bench"

    def _action_dist(self, ctx: ItemContext) -> np.ndarray:
        return np.asarray(ctx.mask, float)


def quantiles(ns: list[int], *, with_max: bool = False) -> dict[str, float]:
    """p50 / p99 (and max) in microseconds of per-call times in nanoseconds."""
    a = np.asarray(ns, np.float64) / 1e3
    out = {"p50": round(float(np.percentile(a, 50)), 1),
           "p99": round(float(np.percentile(a, 99)), 1)}
    if with_max:
        out["max"] = round(float(a.max()), 1)
    return out


def decide_on_off(eng: Engine, slot_attr: str, slot: Any, st: ServerState, b1: int, n: int,
                  check: Callable[[list[dict[str, Any]], bool], None] | None = None,
                  ) -> tuple[dict[bool, list[int]], dict[bool, float]]:
    """``n`` one-request ``eng.decide`` calls (user ``b{k % USERS}`` at bucket
    ``b1 + k // USERS``), with ``eng.<slot_attr> = slot`` and None alternately in blocks of
    :data:`BLOCK` (same run, same load); ``check(answers, on)`` sees every answer.

    Returns:
        Wall times (ns) per call and the summed process CPU seconds, keyed by slot on/off.
    """
    walls: dict[bool, list[int]] = {True: [], False: []}
    cpu = {True: 0.0, False: 0.0}
    for k in range(n):
        on = (k // BLOCK) % 2 == 0
        setattr(eng, slot_attr, slot if on else None)
        ts = (b1 + k // USERS) * HOUR + 60
        uid = f"b{k % USERS}"
        row = [DecideRow(uid, st.users[uid], ts)]
        c0 = time.process_time()
        w0 = time.perf_counter_ns()
        out, _ = eng.decide(row)
        w1 = time.perf_counter_ns()
        cpu[on] += time.process_time() - c0
        walls[on].append(w1 - w0)
        if check is not None:
            check(out, on)
    setattr(eng, slot_attr, slot)
    return walls, cpu


def summary(walls: dict[bool, list[int]], cpu: dict[bool, float], on: bool, *,
            with_max: bool = False) -> dict[str, Any]:
    """``{"wall_us": quantiles, "cpu_us_mean": ...}`` of one side of :func:`decide_on_off`."""
    return {"wall_us": quantiles(walls[on], with_max=with_max),
            "cpu_us_mean": round(cpu[on] / len(walls[on]) * 1e6, 1)}
