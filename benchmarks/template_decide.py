"""What choosing and rendering a message template adds to a server decision, in-process
(issue 17 target: < 100 us p99). Prints one JSON object.

Usage: python benchmarks/template_decide.py [--users 1500] [--days 14] [--n 4000] [--out FILE]

1. A synthetic template world (``world_config(templates=True)``) is the server's ``--catalog``
   and the training logs of a VW template policy (``train_template_policy``, as
   ``benchmarks/templates.py`` trains it).
2. A :class:`~pushrl.serve.server.Server` starts with ``--templates templates/default
   --template-policy`` that artifact (the closed form of
   :mod:`pushrl.policies.template_fast` is proved at load), 400 users get some activity.
3. ``template_step``: the engine's template step (:meth:`ServerTemplates.apply`: recency,
   closed-form choice, draw, render cache, log statement) for ONE sent push at a time, on the
   live state, ``--n`` times; ``template_step_vw_text``: the same step deciding through VW text
   (the path of a model without the closed form, and of the previous session's benchmark).
   ``decide_with`` / ``decide_without``: a whole ``Engine.decide`` of one request that sends
   (always-send timing, uniform item), with and without the template slot, interleaved.
   Figures: wall time per call (``perf_counter_ns``: p50 / p99 / max in microseconds) and the mean
   process CPU time per call (``process_time`` summed over the calls: on a loaded machine a
   wall p99 is mostly the scheduler; per-call CPU clocks cost a syscall each, too much to
   time a 30 us step). The load average is printed with them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pushrl.data.io import to_unix_seconds, write_dataset
from pushrl.data.synth import generate
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import TEMPLATE_KNOBS, world_config
from pushrl.policies.template_policy import template_rounds, train_template_policy
from pushrl.policies.vw import VWConfig
from pushrl.rules.guardrails import Guardrails
from pushrl.serve.config import ServeConfig
from pushrl.serve.schemas import Event
from pushrl.serve.server import Server
from pushrl.serve.templates import ServerTemplates
from pushrl.units import HOUR

from _timing import Always, Uniform, decide_on_off, quantiles, summary  # benchmarks/: sys.path[0]
from _output import emit_json

ROOT = Path(__file__).resolve().parents[1]


def _step(tpl: ServerTemplates, srv: Server, rng: np.random.Generator, n: int,
          b0: int) -> dict[str, Any]:
    st = srv.state
    users = np.arange(len(st.users))
    items = [it.item_id for it in st.item_list]
    wall = []
    cpu = 0.0
    for k in range(n):
        u = users[k % users.size:k % users.size + 1]
        b = np.array([b0 + k // users.size], np.int64)
        raw = st.fs.features(u, b)
        out = [{"decision_id": f"d{k}", "item_id": items[int(rng.integers(len(items)))]}]
        c0 = time.process_time()
        w0 = time.perf_counter_ns()
        tpl.apply(st, out, u, b, raw, np.ones(1, bool))
        w1 = time.perf_counter_ns()
        cpu += time.process_time() - c0
        wall.append(w1 - w0)
    return {"wall_us": quantiles(wall, with_max=True), "cpu_us_mean": round(cpu / n * 1e6, 1)}


@contextmanager
def bench_server(a: argparse.Namespace, *, bench_users: int = 400, max_views: int = 5,
                 rng_seed: int = 0) -> Iterator[tuple[Server, np.random.Generator, int]]:
    """The benchmark's server (steps 1-2 of the module docstring: world ``a.seed`` with
    ``a.users`` users over ``a.days`` days; ``bench_users`` users ``b0..`` with 0 to
    ``max_views`` views each, drawn by ``default_rng(rng_seed)``), that random generator and
    the first hour after the training logs (unix seconds); the server's log is closed on exit.
    Also the set-up of ``template_instructions.py`` and ``template_parity.py``."""
    ids = tuple(TEMPLATE_KNOBS["template_ids"])
    with tempfile.TemporaryDirectory() as tmp:
        ds_raw, _, _ = generate(world_config("default", users=a.users, days=a.days,
                                             seed=a.seed, templates=True))
        write_dataset(ds_raw, f"{tmp}/logs")
        ds, _ = load_dataset(f"{tmp}/logs", quarantine=False)
        rounds = template_rounds(ds, ids, reward="clicked+0.01*revenue")
        pol = train_template_policy(rounds, VWConfig(learning_rate=0.02))
        art = pol.save(f"{tmp}/reg/tpl")
        cfg = ServeConfig(registry=Path(tmp) / "policies", state=Path(tmp) / "state", seed=0,
                          watch_seconds=0, guardrails=Guardrails(0, 0, 0, 0),
                          catalog=Path(f"{tmp}/logs"), templates=ROOT / "templates" / "default",
                          template_policy=str(art), sync="normal")
        srv = Server(cfg, overrides={"timing": Always(), "item": Uniform()})
        try:
            st = srv.state
            t0 = int(to_unix_seconds(ds.pushes["ts"]).max()) + HOUR
            rng = np.random.default_rng(rng_seed)
            for i in range(bench_users):
                srv.put_user(f"b{i}", "UTC", {}, dt.datetime.fromtimestamp(t0, dt.UTC))
            srv.state.check_writable()
            item_ids = [it.item_id for it in st.item_list]
            for i in range(bench_users):  # some activity: affinities, activity bins
                for _ in range(int(rng.integers(0, max_views + 1))):
                    srv.events([Event(user_id=f"b{i}", ts=t0 + 10, event="view",
                                      item_id=item_ids[int(rng.integers(len(item_ids)))])])
            yield srv, rng, t0
        finally:
            srv.log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1500)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    with bench_server(a) as (srv, rng, t0):
        st = srv.state
        tpl = srv.engine.templates
        assert tpl is not None and tpl.linear is not None
        b0 = t0 // HOUR + 1
        fast = _step(tpl, srv, rng, a.n, b0)
        vw_tpl = ServerTemplates(tpl.catalog, tpl.policy, tpl.label, st, seed=0)
        vw_tpl.linear = None
        vw_tpl.bind(st)
        vw = _step(vw_tpl, srv, rng, a.n // 4, b0 + a.n // 400 + 2)
        b1 = b0 + a.n // 400 + a.n // 1600 + 4

        def sent(out: list[dict[str, Any]], on: bool) -> None:
            assert out[0]["send"] and (out[0].get("template_id") is not None) == on

        walls, cpu = decide_on_off(srv.engine, "templates", tpl, st, b1, a.n, sent)
        st.pending.clear()
    d_with = summary(walls, cpu, True, with_max=True)
    d_without = summary(walls, cpu, False, with_max=True)
    res = {
        "benchmark": "template_decide", "load_avg": os.getloadavg(), "config": vars(a),
        "closed_form_max_pmf_error_vs_vw": tpl.linear.max_error,
        "template_step": fast, "template_step_vw_text": vw,
        "decide_with_templates": d_with, "decide_without_templates": d_without,
        "decide_wall_p50_added_us": round(d_with["wall_us"]["p50"] - d_without["wall_us"]["p50"],
                                          1),
        "target": "template choice + render adds < 100 us p99 to a decision (issue 17)",
    }
    emit_json(res, a.out, indent=1)


if __name__ == "__main__":
    main()
