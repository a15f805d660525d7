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
import os
import tempfile
from pathlib import Path

import numpy as np

from pushrl.data.io import to_unix_seconds, write_dataset
from pushrl.data.synth import generate
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import world_config
from pushrl.policies.channel_policy import channel_rounds, train_channel_policy
from pushrl.rules.channels import DEFAULT_CHANNELS
from pushrl.rules.guardrails import Guardrails
from pushrl.serve.config import ServeConfig
from pushrl.serve.schemas import Event
from pushrl.serve.server import Server
from pushrl.units import HOUR

from _timing import Always, Uniform, decide_on_off, summary  # benchmarks/ is sys.path[0]
from _output import emit_json


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
        srv = Server(cfg, overrides={"timing": Always(), "item": Uniform()})
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
            b1 = t0 // HOUR + 1
            chosen: dict[str | None, int] = {}

            def count(out: list[dict], on: bool) -> None:
                if on:
                    c = out[0].get("channel")
                    chosen[c] = chosen.get(c, 0) + 1

            walls, cpu = decide_on_off(eng, "channels", ch, st, b1, a.n, count)
            st.pending.clear()
        finally:
            srv.log.close()
    res = {
        "benchmark": "channel_decide", "load_avg": os.getloadavg(), "config": vars(a),
        "decide_with_channels": summary(walls, cpu, True),
        "decide_without_channels": summary(walls, cpu, False),
        "channels_chosen": {str(k): v for k, v in chosen.items()},
    }
    res["cpu_us_added_mean"] = round(res["decide_with_channels"]["cpu_us_mean"]
                                     - res["decide_without_channels"]["cpu_us_mean"], 1)
    emit_json(res, a.out, indent=1)


if __name__ == "__main__":
    main()
