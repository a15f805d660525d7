"""What the channel slot (push, email, in-app, or none) adds to a server decision, in-process.
Prints one JSON object. No issue target; a cost figure for ``pushrl serve --channels``.

Usage: python benchmarks/channel_decide.py [--users 1500] [--days 14] [--n 3000] [--out FILE]

1. A synthetic channel world (``world_config(channels=True)``) is the server's ``--catalog``
   and the training log of a VW channel policy (``train_channel_policy``, VW text path).
2. A :class:`~pushrl.serve.server.Server` starts with ``--channels default --channel-policy``
   that artifact; 400 users get some activity.
3. ``Engine.decide`` of one request that sends (always-send timing, uniform item, no global
   guardrails), with and without the channel slot (``engine.channels`` set / None),
   interleaved in blocks of 50 (same run, same load). Figures: wall time per call (p50 / p99,
   microseconds) and the mean process CPU time per call; the load average beside them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pushrl.data.io import to_unix_seconds, write_dataset
from pushrl.data.synth import generate
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import world_config
from pushrl.policies.base import ItemContext, ItemPolicy, TimingContext, TimingPolicy
from pushrl.policies.channel_policy import channel_rounds, train_channel_policy
from pushrl.rules.channels import DEFAULT_CHANNELS
from pushrl.rules.guardrails import Guardrails
from pushrl.serve.config import ServeConfig
from pushrl.serve.engine import DecideRow
from pushrl.serve.schemas import Event
from pushrl.serve.server import Server
from pushrl.units import HOUR


class _Always(TimingPolicy):
    name, version = "always", "bench"

    def _action_dist(self, ctx: TimingContext) -> np.ndarray:
        return np.tile([0.0, 1.0], (len(ctx), 1))


class _Uniform(ItemPolicy):
    name, version = "uniform", "bench"

    def _action_dist(self, ctx: ItemContext) -> np.ndarray:
        return np.asarray(ctx.mask, float)


def _q(x: list[int]) -> dict[str, float]:
    a = np.asarray(x, np.float64) / 1e3
    return {"p50": round(float(np.percentile(a, 50)), 1),
            "p99": round(float(np.percentile(a, 99)), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1500)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ds_raw, _, _ = generate(world_config("default", users=a.users, days=a.days,
                                             seed=a.seed, channels=True))
        write_dataset(ds_raw, f"{tmp}/logs")
        ds, _ = load_dataset(f"{tmp}/logs", quarantine=False)
        art = train_channel_policy(channel_rounds(ds, DEFAULT_CHANNELS)).save(f"{tmp}/reg/ch")
        cfg = ServeConfig(registry=Path(tmp) / "policies", state=Path(tmp) / "state", seed=0,
                          watch_seconds=0, guardrails=Guardrails(0, 0, 0, 0),
                          catalog=Path(f"{tmp}/logs"), channels=DEFAULT_CHANNELS,
                          channel_policy=str(art), sync="normal")
        srv = Server(cfg, overrides={"timing": _Always(), "item": _Uniform()})
        try:
            st = srv.state
            t0 = int(to_unix_seconds(ds.pushes["ts"]).max()) + HOUR
            rng = np.random.default_rng(0)
            for i in range(400):
                srv.put_user(f"b{i}", "UTC", {}, dt.datetime.fromtimestamp(t0, dt.UTC))
            item_ids = [it.item_id for it in st.item_list]
            for i in range(400):
                for _ in range(int(rng.integers(0, 6))):
                    srv.events([Event(user_id=f"b{i}", ts=t0 + 10, event="view",
                                      item_id=item_ids[int(rng.integers(len(item_ids)))])])
            eng = srv.engine
            ch = eng.channels
            assert ch is not None
            walls: dict[bool, list[int]] = {True: [], False: []}
            cpu = {True: 0.0, False: 0.0}
            b1 = t0 // HOUR + 1
            chosen: dict[str | None, int] = {}
            for k in range(a.n):
                on = (k // 50) % 2 == 0  # blocks of 50, alternating
                eng.channels = ch if on else None
                ts = (b1 + k // 400) * HOUR + 60
                row = [DecideRow(f"b{k % 400}", st.users[f"b{k % 400}"], ts)]
                c0 = time.process_time()
                w0 = time.perf_counter_ns()
                out, _ = eng.decide(row)
                w1 = time.perf_counter_ns()
                cpu[on] += time.process_time() - c0
                walls[on].append(w1 - w0)
                if on:
                    c = out[0].get("channel")
                    chosen[c] = chosen.get(c, 0) + 1
            eng.channels = ch
            st.pending.clear()
        finally:
            srv.log.close()
    res = {
        "benchmark": "channel_decide", "load_avg": os.getloadavg(), "config": vars(a),
        "decide_with_channels": {"wall_us": _q(walls[True]),
                                 "cpu_us_mean": round(cpu[True] / len(walls[True]) * 1e6, 1)},
        "decide_without_channels": {"wall_us": _q(walls[False]),
                                    "cpu_us_mean": round(cpu[False] / len(walls[False]) * 1e6,
                                                         1)},
        "channels_chosen": {str(k): v for k, v in chosen.items()},
    }
    res["cpu_us_added_mean"] = round(res["decide_with_channels"]["cpu_us_mean"]
                                     - res["decide_without_channels"]["cpu_us_mean"], 1)
    text = json.dumps(res, indent=1)
    if a.out:
        Path(a.out).write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
