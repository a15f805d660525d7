"""Behaviour-triggered pushes in the server (issue 16 targets):

1. the due-sends pull ``POST /v1/triggers/due`` for 10k users (target < 100 ms), measured
   (a) in-process (:meth:`pushrl.serve.server.Server.triggers_due`: validation, tracker,
   guardrails, decision rows; no commit) and (b) end to end over HTTP against a real
   ``pushrl serve --triggers default`` process (JSON both ways, worker thread, group commit
   with fsync), each when every user has a due cart trigger (10k sends) and when 10 % have
   one (1k sends among 10k users);
2. the in-process trigger decision p99 (target < 1 ms): the decision alone (tracker +
   delay policy + its journal row, ``ServerTriggers.on_activity``), the whole activity event
   that creates it (``Server.events``: feature pipeline too), and a ``decide`` that answers
   with a due trigger (``Engine.decide``: a whole engine pass), per call, no commit.

    python benchmarks/trigger_pull.py [--users 10000] [--reps 5] [--seed 0] [--json]
        [--out FILE]

Over HTTP the pull is measured for both answer formats (``format: rows``, the list of send
objects; ``format: columns``, one list per field) and for ``columns`` with a ``request_id``
(the answer is also stored for retries). ``--seed`` picks the world: the start time (a day
of 2026), the users' ids and the carted items (held-out figures: declare it before).

The state is built in-process (10k users, 100 items), then served by a real process on the
same state dir (its start-up replays the journal: also reported). ``uptime`` is recorded
next to the figures: the machine is shared, absolute times under load are upper bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _output import emit_json  # noqa: E402  (benchmarks/ is sys.path[0])
from pushrl.rules.guardrails import Guardrails  # noqa: E402
from pushrl.rules.triggers import TriggerConfig  # noqa: E402
from pushrl.serve.config import ServeConfig  # noqa: E402
from pushrl.serve.engine import DecideRow  # noqa: E402
from pushrl.serve.schemas import Event, TriggersDueIn  # noqa: E402
from pushrl.serve.server import Server  # noqa: E402

H = 3600
T0_DEFAULT = 1_772_409_600 + 10 * H  # 2026-03-02T10:00:00Z
T0 = T0_DEFAULT
PREFIX = "u"
OPEN = Guardrails(0, 0, 0, 0)
N_ITEMS = 100


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def world(seed: int) -> None:
    """Seed 0: the world of earlier sessions; else a start day of 2026 and user ids of the
    seed (sets :data:`T0` and :data:`PREFIX`)."""
    global T0, PREFIX
    if seed:
        rng = np.random.default_rng(seed)
        T0 = T0_DEFAULT + int(rng.integers(0, 300)) * 24 * H + int(rng.integers(0, 24)) * H
        PREFIX = f"s{seed}-u"


def _item(r: int, seed: int) -> int:
    return (r * 7 + seed * 13) % N_ITEMS


def _carts(srv: Server, users: list[str], ts: int, item: int) -> None:
    """Every user carts item ``item`` at ``ts`` (one events call, committed)."""
    for k in range(0, len(users), 10_000):
        evs = [Event(user_id=u, event="cart", item_id=f"i{item}", ts=ts)
               for u in users[k:k + 10_000]]
        srv.log.write(srv.events(evs))


def build(state: Path, n: int, reps: int, seed: int = 0) -> dict[str, Any]:
    """State with ``n`` users and the carts of every repetition; in-process figures."""
    cfg = ServeConfig(registry=state.parent / "policies", state=state, seed=0, watch_seconds=0,
                      guardrails=OPEN, triggers=TriggerConfig.default())
    srv = Server(cfg)
    for j in range(N_ITEMS):
        _, stmts = srv.state.put_item(f"i{j}", "ab"[j % 2], {"price": 10.0})
        srv.log.write(stmts)
    users = [f"{PREFIX}{i}" for i in range(n)]
    stmts = []
    for u in users:
        stmts += srv.put_user(u, "UTC", {}, dt.datetime.fromtimestamp(T0 - 24 * H, dt.UTC))[1]
    srv.log.write(stmts)
    out: dict[str, Any] = {"pull_in_process_ms": {}, "decision_us": {}}
    # 1a. the pull in-process: all due / 10 % due; round r at T0 + r * 25 h (cart cooldown)
    for label, frac in (("all_due", 1.0), ("tenth_due", 0.1)):
        times, cpu, sends = [], [], []
        for r in range(reps):
            t = T0 + (r + reps * (label == "tenth_due")) * 25 * H
            _carts(srv, users[:int(n * frac)], t, _item(r, seed))
            req = TriggersDueIn(users=users, ts=t + H)
            t1, c1 = time.perf_counter(), time.thread_time()
            got, stmts = srv.triggers_due(req)
            cpu.append((time.thread_time() - c1) * 1e3)
            times.append((time.perf_counter() - t1) * 1e3)
            srv.log.write(stmts)
            sends.append(len(got["sends"]))
        out["pull_in_process_ms"][label] = {"median": median(times), "max": max(times),
                                            "cpu_median": median(cpu), "cpu_max": max(cpu),
                                            "times": times, "cpu": cpu, "sends": sends,
                                            "users": n}
    # 2. per-call decision latency: an event creating a trigger; decide answering with one
    base = T0 + (2 * reps + 1) * 25 * H
    lat_ev, lat_dec, cpu_ev, cpu_dec = [], [], [], []
    m = min(n, 2000)
    trig = srv.state.triggers
    assert trig is not None
    on_activity, lat_tr, cpu_tr = trig.on_activity, [], []

    def timed(*a: Any) -> Any:  # the trigger decision alone: tracker, delay arm, its row
        t1, c1 = time.perf_counter(), time.thread_time()
        got = on_activity(*a)
        cpu_tr.append((time.thread_time() - c1) * 1e6)
        lat_tr.append((time.perf_counter() - t1) * 1e6)
        return got

    trig.on_activity = timed  # type: ignore[method-assign]
    for i in range(m):
        ev = [Event(user_id=users[i], event="cart", item_id=f"i{(i % 50) + 50}", ts=base)]
        t1, c1 = time.perf_counter(), time.thread_time()
        stmts = srv.events(ev)
        cpu_ev.append((time.thread_time() - c1) * 1e6)
        lat_ev.append((time.perf_counter() - t1) * 1e6)
        srv.state.pending.extend(stmts)
    srv.log.write(srv.state.pending)
    srv.state.pending = []
    trig.on_activity = on_activity  # type: ignore[method-assign]
    for i in range(m):
        row = DecideRow(users[i], srv.state.users[users[i]], base + H)
        t1, c1 = time.perf_counter(), time.thread_time()
        outs, stmts = srv.engine.decide([row])
        cpu_dec.append((time.thread_time() - c1) * 1e6)
        lat_dec.append((time.perf_counter() - t1) * 1e6)
        assert outs[0].get("trigger_id"), outs[0]
        srv.state.pending.extend(stmts)
    srv.log.write(srv.state.pending)
    srv.state.pending = []
    for name, xs, cs in (("trigger_decision", lat_tr, cpu_tr),
                         ("event_creates_trigger", lat_ev, cpu_ev),
                         ("decide_sends_due_trigger", lat_dec, cpu_dec)):
        out["decision_us"][name] = {"p50": _pct(xs, 50), "p99": _pct(xs, 99),
                                    "max": max(xs), "cpu_p50": _pct(cs, 50),
                                    "cpu_p99": _pct(cs, 99), "calls": len(xs)}
    out["next_round"] = 2 * reps + 3
    srv.close()
    return out


def _cpu_ms(pid: int) -> float:
    """CPU time of every thread of process ``pid`` so far (ms; schedstat: ns precision)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that just ended
            pass
    return total / 1e6


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: HTTP variants: (name, answer format, with a request_id).
VARIANTS = (("rows", "rows", False), ("columns", "columns", False),
            ("columns_request_id", "columns", True))


def http(state: Path, n: int, reps: int, first_round: int, seed: int = 0) -> dict[str, Any]:
    """The pull end to end against a real server process on ``state``."""
    port = _port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "pushrl.cli.main", "serve", "--state", str(state),
           "--registry", str(state.parent / "policies"), "--port", str(port), "--seed", "0",
           "--triggers", "default", "--quiet-hours", "0-0", "--max-per-day", "0",
           "--max-per-week", "0"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    users = [f"{PREFIX}{i}" for i in range(n)]
    out: dict[str, Any] = {}
    rnd = first_round
    try:
        with httpx.Client(base_url=base, timeout=120) as c:
            while True:
                try:
                    if c.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError("server exited")
                time.sleep(0.05)
            out["start_s"] = time.perf_counter() - t0
            for label, frac in (("all_due", 1.0), ("tenth_due", 0.1)):
                out[label] = {}
                for name, fmt, with_id in VARIANTS:
                    if with_id and label != "all_due":
                        continue
                    times, sends, cpu = [], [], []
                    for _r in range(reps):
                        t = T0 + rnd * 25 * H
                        rnd += 1
                        evs = [{"user_id": u, "event": "cart",
                                "item_id": f"i{_item(rnd, seed)}", "ts": t}
                               for u in users[:int(n * frac)]]
                        for k in range(0, len(evs), 10_000):
                            c.post("/v1/events", json={"events": evs[k:k + 10_000]}
                                   ).raise_for_status()
                        req: dict[str, Any] = {"users": users, "ts": t + H}
                        if fmt != "rows":
                            req["format"] = fmt
                        if with_id:
                            req["request_id"] = f"pull-{rnd}"
                        body = json.dumps(req).encode()
                        # the previous pull's bulk record expanded (not measured): feedback
                        # on an unknown decision reads the log after the expansion (404)
                        c.post("/v1/feedback", json={"decision_id": "settle"})
                        time.sleep(0.6)  # and the WAL checkpoint of it
                        c0 = _cpu_ms(proc.pid)
                        t1 = time.perf_counter()
                        r_ = c.post("/v1/triggers/due", content=body,
                                    headers={"content-type": "application/json"})
                        times.append((time.perf_counter() - t1) * 1e3)
                        cpu.append(_cpu_ms(proc.pid) - c0)
                        r_.raise_for_status()
                        got = r_.json()["sends"]
                        sends.append(len(got["trigger_id"] if fmt == "columns" else got))
                    out[label][name] = {"median_ms": median(times), "max_ms": max(times),
                                        "times_ms": times, "server_cpu_median_ms": median(cpu),
                                        "server_cpu_ms": cpu, "sends": sends, "users": n}
    finally:
        proc.terminate()
        proc.wait(30)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="World (0: the earlier sessions').")
    ap.add_argument("--json", action="store_true", help="Print the results as JSON.")
    ap.add_argument("--out", type=Path, help="Also write the JSON here.")
    a = ap.parse_args()
    world(a.seed)
    res: dict[str, Any] = {"users": a.users, "reps": a.reps, "seed": a.seed, "t0": T0,
                           "load_avg_before": _load(),
                           "uptime_before": _uptime(),
                           "targets": {"pull_10k_ms": 100, "decision_p99_us": 1000}}
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        res["in_process"] = build(state, a.users, a.reps, a.seed)
        res["http"] = asyncio.run(asyncio.to_thread(
            http, state, a.users, a.reps, res["in_process"].pop("next_round"), a.seed))
    res["load_avg_after"] = _load()
    res["uptime_after"] = _uptime()
    emit_json(res, a.out, echo=a.json)
    if a.json:
        return
    ip, ht = res["in_process"], res["http"]
    print(f"{res['uptime_before']} -> {res['uptime_after']}")
    for k in ("all_due", "tenth_due"):
        v = ip["pull_in_process_ms"][k]
        print(f"pull {a.users:,} users ({k}): in-process {v['median']:.1f} ms (CPU "
              f"{v['cpu_median']:.1f} ms; median of {a.reps}), slowest {v['max']:.1f} ms (CPU "
              f"{v['cpu_max']:.1f} ms); every pull {[round(x, 1) for x in v['times']]} ms")
        for name, h in ht[k].items():
            print(f"  HTTP {name}: median {h['median_ms']:.1f} ms, slowest {h['max_ms']:.1f} "
                  f"ms; every pull {[round(x, 1) for x in h['times_ms']]} ms; server CPU "
                  f"median {h['server_cpu_median_ms']:.1f} ms")
    for k, v in ip["decision_us"].items():
        print(f"{k}: p50 {v['p50']:.0f} us, p99 {v['p99']:.0f} us (CPU p50 "
              f"{v['cpu_p50']:.0f} us, p99 {v['cpu_p99']:.0f} us)")
    print(f"server start on this state (journal replay): {ht['start_s']:.2f} s")


if __name__ == "__main__":
    main()
