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
p50/p99/max in microseconds and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import time

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

ZONES = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "Asia/Kolkata", "UTC"]


def run(policy: object, users: int, decisions: int, seed: int) -> dict[str, float]:
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
    config = TriggerConfig.default()
    arms = common_arms(config)
    tracker = TriggerTracker(config)
    g = Guardrails()
    lat = np.zeros(decisions, np.int64)
    cpu = np.zeros(decisions, np.int64)
    warm = 200
    for i in range(decisions + warm):
        u = int(rng.integers(0, users))
        ts = now + i * 7
        s, c = time.perf_counter_ns(), time.thread_time_ns()
        trig = tracker.observe_activity(u, ts, "cart", int(rng.integers(0, 500)))
        for t in trig:
            if not t.is_open:
                continue
            ctx = delay_context(state, np.array([u]), np.array([ts]), np.array([t.kind.value]),
                                np.array([int(t.item or 0) % 8]), np.array([0.1]), arms, g)
            d = policy.decide_batch(ctx, rng)  # type: ignore[attr-defined]
            tracker.decide(t.trigger_id, arms[int(d.action[0])], float(d.pscore[0]), ts)
        if i >= warm:
            lat[i - warm] = time.perf_counter_ns() - s
            cpu[i - warm] = time.thread_time_ns() - c
    us, cu = lat / 1000, cpu / 1000
    return {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99)),
            "max_us": float(us.max()), "cpu_p50_us": float(np.percentile(cu, 50)),
            "cpu_p99_us": float(np.percentile(cu, 99)), "decisions": decisions}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--decisions", type=int, default=3000)
    ap.add_argument("--policy", default=None, help="a trained delay policy artifact")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    arms = common_arms(TriggerConfig.default())
    vw = (load_policy(args.policy) if args.policy
          else VWItemPolicy(delay_layout(arms), DELAY_VW.args(), name="delay-vw"))
    vw.model_bytes()  # a frozen model (what a server loads): the closed form applies
    fast = LinearDelayScorer.extract(vw)
    out = {"load_avg": os.getloadavg(), "closed_form_max_pmf_error_vs_vw": fast.max_error}
    for name, pol in (("vw", vw), ("vw-closed-form", fast),
                      ("next-active-hour", make_baseline("delay-next-active-hour"))):
        out[name] = run(pol, args.users, args.decisions, args.seed)
    out["load_avg_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
