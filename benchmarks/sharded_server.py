"""Decisions/s of one plain `pushrl serve` vs the sharded router (`--shards 1` and `--shards
2`), single and batch decide, and the router's overhead, in one run on 127.0.0.1.

Starts the three set-ups side by side (default baselines, synthetic catalog, durable
logging with fsync, fresh state dirs), creates the same users on each, then runs `wrk`
closed-loop rounds that interleave set-ups and routes, so every figure sees the same
background load:

* ``GET /v1/echo``: the HTTP ceiling (the plain server answers it; the router forwards it to
  a shard, so through the router it is the forwarding ceiling);
* ``POST /v1/decide``: one random user per request;
* ``POST /v1/decide/batch``: ``--batch`` random distinct users per request (decisions/s =
  requests/s x batch).

CPU seconds of every process (router, each shard) are read from /proc before and after each
round, so the cost per decision is split into router and shard CPU; that is robust to
background load and gives the projection of a cluster's throughput:

    per-shard capacity  = 1e6 / shard CPU us per decision   (one core per shard)
    per-router capacity = 1e6 / router CPU us per decision  (one core per router)
    cluster             = min(S x per-shard, R x per-router) for S shard cores and R router
                          cores (routers are stateless: run several behind a load balancer).

    python benchmarks/sharded_server.py [--json] [--duration 8] [--rounds 2]
        [--connections 16] [--batch 100] [--users 2000] [--out FILE]

Needs `wrk` (`apt-get install -y wrk`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server import LUA as LUA_SINGLE  # one user's single decide, the plain benchmark's
from server import LUA_DONE, ZONES, cpu_seconds, free_port, rss_mb
from _output import emit_json

ROOT = Path(__file__).resolve().parents[1]

LUA_BATCH = """
math.randomseed(%(seed)d)
local n, k = %(users)d, %(batch)d
request = function()
  local start = math.random(0, n - 1)
  local parts = {}
  for j = 0, k - 1 do
    parts[#parts + 1] = '{"user_id":"u' .. ((start + j * 7) %% n) .. '"}'
  end
  return wrk.format("POST", "/v1/decide/batch", {["Content-Type"] = "application/json"},
                    '{"requests":[' .. table.concat(parts, ",") .. ']}')
end
"""


def start(tmp: Path, name: str, shards: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "pushrl.cli.main", "serve", "--registry", str(tmp / "policies"),
           "--state", str(tmp / name), "--port", str(port), "--catalog",
           str(ROOT / "simulator_data" / "synth"), "--seed", "0"]
    if shards:
        cmd += ["--shards", str(shards)]
    log = open(tmp / f"{name}.log", "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {(tmp / f'{name}.log').read_text()[-2000:]}")
        try:
            if httpx.get(base + "/readyz", timeout=5).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{name} not ready in 600 s")


def pids(proc: subprocess.Popen[bytes], base: str, shards: int) -> dict[str, int]:
    """``{"router": pid, "shard-0": pid, ...}`` (a plain server is its own "shard-0")."""
    if not shards:
        return {"shard-0": proc.pid}
    st = httpx.get(base + "/v1/shards", timeout=10).json()["detail"]
    return {"router": proc.pid, **{f"shard-{s['shard']}": s["pid"] for s in st}}


def wrk(base: str, kind: str, duration: int, conns: int, users: int, batch: int,
        tmp: Path, seed: int) -> dict:
    script = tmp / f"{kind}.lua"
    body = {"echo": "", "single": LUA_SINGLE, "batch": LUA_BATCH}[kind] % {
        "seed": seed, "users": users, "batch": batch}
    script.write_text(body + LUA_DONE)
    path = "/v1/echo" if kind == "echo" else ""
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s",
                          "-s", str(script), base + path], capture_output=True, text=True,
                         check=True, timeout=duration + 60).stdout
    res = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:])
    secs = res["duration_us"] / 1e6
    per = batch if kind == "batch" else 1
    return {"requests": res["requests"], "decisions_per_s": res["requests"] * per / secs,
            "p50_ms": res["p50_us"] / 1e3, "p99_ms": res["p99_us"] / 1e3,
            "errors": res["status_errors"] + res["socket_errors"]}


RAY_PROBE = r"""
import json, os, sys, time
t = time.perf_counter()
import ray
ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
up = time.perf_counter() - t
time.sleep(3)
def tree(root):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = open(f"/proc/{d}/status").read()
            except OSError:
                continue
            ppid = int(st.split("PPid:")[1].split()[0])
            rss = int(st.split("VmRSS:")[1].split()[0]) if "VmRSS:" in st else 0
            kids.setdefault(ppid, []).append((int(d), rss))
    out, todo = 0, [root]
    while todo:
        for pid, rss in kids.get(todo.pop(), []):
            out += rss
            todo.append(pid)
    return out
own = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
try:
    import ray.serve  # noqa: F401
    serve = True
except Exception as exc:
    serve = f"{type(exc).__name__}: {exc}"[:200]
print(json.dumps({"ray_init_s": round(up, 2), "rss_mb": round((own + tree(os.getpid())) / 1024),
                  "ray_serve_importable": serve}))
ray.shutdown()
"""


def ray_footprint() -> dict:
    """What Ray costs before serving anything: ``ray.init`` wall time and the RSS of the
    driver and the processes it starts (GCS, raylet, workers); whether Ray Serve imports."""
    try:
        out = subprocess.run([sys.executable, "-c", RAY_PROBE], capture_output=True, text=True,
                             timeout=300).stdout
        return json.loads(out.strip().splitlines()[-1])
    except Exception as exc:  # not fatal for the rest of the benchmark
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


FORWARD_PROBE = r"""
import asyncio, json, resource, sys, time
import httpx, uvloop
from pushrl.serve.forward import StreamShard
sock, n, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
async def measure(one):
    for _ in range(50):
        await one()
    c0, t0 = cpu(), time.perf_counter()
    for _ in range(n // conc):
        await asyncio.gather(*(one() for _ in range(conc)))
    return round((cpu() - c0) / n * 1e6, 1)
async def main():
    hx = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=sock), base_url="http://s")
    st = StreamShard(uds=sock)
    async def a():
        (await hx.get("/v1/echo")).content
    async def b():
        await st.request("GET", "/v1/echo", b"", [])
    out = {"httpx_cpu_us": [], "stream_cpu_us": []}
    for _ in range(2):  # interleaved
        out["httpx_cpu_us"].append(await measure(a))
        out["stream_cpu_us"].append(await measure(b))
    print(json.dumps(out))
uvloop.run(main())
"""
ECHO_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"11")]})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})
"""


def forward_cost(tmp: Path, n: int = 2000, conc: int = 8) -> dict:
    """Client CPU per forwarded request over a Unix socket to a do-nothing uvicorn app:
    ``httpx.AsyncClient`` vs the router's :class:`pushrl.serve.forward.StreamShard`
    (interleaved twice; the choice of the router's forwarding client)."""
    (tmp / "echo_app.py").write_text(ECHO_APP)
    sock = str(tmp / "echo.sock")
    srv = subprocess.Popen([sys.executable, "-m", "uvicorn", "echo_app:app", "--uds", sock,
                            "--log-level", "warning", "--loop", "uvloop"], cwd=tmp)
    try:
        for _ in range(100):
            if Path(sock).exists():
                break
            time.sleep(0.1)
        out = subprocess.run([sys.executable, "-c", FORWARD_PROBE, sock, str(n), str(conc)],
                             capture_output=True, text=True, timeout=600, cwd=ROOT)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        res.update(requests=n, concurrency=conc, load=uptime())
        return res
    finally:
        srv.terminate()
        srv.wait(10)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--duration", type=int, default=8, help="seconds per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--batch-connections", type=int, default=4)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("needs wrk: apt-get install -y wrk")
    setups = {"plain": 0, "router+1": 1, "router+2": 2}
    tmp = Path(tempfile.mkdtemp(prefix="pushrl-sharded-bench-"))
    procs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    res: dict = {"load_before": uptime(), "args": {k: str(v) for k, v in vars(args).items()},
                 "setups": {}}
    try:
        for name, n in setups.items():
            t0 = time.perf_counter()
            procs[name] = start(tmp, name, n)
            res["setups"][name] = {"shards": n, "start_s": round(time.perf_counter() - t0, 1)}
            with httpx.Client(base_url=procs[name][1], timeout=60) as c:
                for i in range(args.users):
                    c.put(f"/v1/users/u{i}", json={"timezone": ZONES[i % len(ZONES)]}
                          ).raise_for_status()
        runs: dict[tuple[str, str], list[dict]] = {}
        cpu: dict[tuple[str, str], dict[str, float]] = {}
        for r in range(args.rounds):
            for kind in ("echo", "single", "batch"):
                for name, n in setups.items():
                    proc, base = procs[name]
                    ps = pids(proc, base, n)
                    c0 = {k: cpu_seconds(p) for k, p in ps.items()}
                    conns = args.batch_connections if kind == "batch" else args.connections
                    got = wrk(base, kind, args.duration, conns, args.users, args.batch, tmp,
                              seed=r)
                    got["load"] = uptime().split("load average:")[1].strip()
                    runs.setdefault((name, kind), []).append(got)
                    acc = cpu.setdefault((name, kind), {})
                    for k, p in ps.items():
                        acc[k] = acc.get(k, 0.0) + cpu_seconds(p) - c0[k]
        for (name, kind), parts in runs.items():
            n_req = sum(p["requests"] for p in parts)
            n_dec = n_req * (args.batch if kind == "batch" else 1)
            secs = args.duration * len(parts)
            c = cpu[(name, kind)]
            out = {"decisions_per_s" if kind != "echo" else "requests_per_s":
                   round(sum(p["decisions_per_s"] for p in parts) / len(parts), 1),
                   "per_round": [round(p["decisions_per_s"]) for p in parts],
                   "p50_ms": sorted(p["p50_ms"] for p in parts)[len(parts) // 2],
                   "p99_ms": max(p["p99_ms"] for p in parts),
                   "errors": sum(p["errors"] for p in parts),
                   "load_per_round": [p["load"] for p in parts],
                   "cpu_us_per_decision": {k: round(1e6 * v / max(n_dec, 1), 1)
                                           for k, v in c.items()},
                   "cpu_share_of_2_cores": round(sum(c.values()) / secs / 2, 2)}
            res["setups"][name][kind] = out
        for name, pr in procs.items():
            res["setups"][name]["rss_mb"] = {k: round(rss_mb(p))
                                             for k, p in pids(*pr, setups[name]).items()}
        res["load_after"] = uptime()
        res["engine_choice"] = {"ray": ray_footprint(), "load": uptime(),
                                "forwarding_client": forward_cost(tmp),
                                "router": {"start_s": res["setups"]["router+2"]["start_s"],
                                           "rss_mb": res["setups"]["router+2"]["rss_mb"]}}
        res["ratios"] = _ratios(res["setups"])
        res["projection"] = _projection(res["setups"])
    finally:
        for proc, _ in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _ in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    emit_json(res, args.out, indent=1, echo=args.json)
    if not args.json:
        print(_summary(res))


def _rate(s: dict, kind: str) -> float:
    return float(s[kind]["requests_per_s" if kind == "echo" else "decisions_per_s"])


def _ratios(s: dict) -> dict:
    out = {}
    for kind in ("echo", "single", "batch"):
        p = _rate(s["plain"], kind)
        out[kind] = {f"{n}_vs_plain": round(_rate(s[n], kind) / p, 3)
                     for n in ("router+1", "router+2")}
        out[kind]["router+2_vs_router+1"] = round(_rate(s["router+2"], kind)
                                                  / _rate(s["router+1"], kind), 3)
    return out


def _projection(s: dict) -> dict:
    """Cluster decisions/s from the measured CPU per decision (module docstring)."""
    out = {}
    for kind in ("single", "batch"):
        shard_us = s["plain"][kind]["cpu_us_per_decision"]["shard-0"]
        router_us = s["router+1"][kind]["cpu_us_per_decision"]["router"]
        routed_shard_us = s["router+1"][kind]["cpu_us_per_decision"]["shard-0"]
        per_shard = 1e6 / routed_shard_us
        per_router = 1e6 / router_us
        out[kind] = {"plain_shard_cpu_us": shard_us, "routed_shard_cpu_us": routed_shard_us,
                     "router_cpu_us": router_us,
                     "per_shard_core_decisions_per_s": round(per_shard),
                     "per_router_core_decisions_per_s": round(per_router),
                     "routers_per_shard": round(per_shard / per_router, 2),
                     "cluster_8_shards_4_routers": round(min(8 * per_shard, 4 * per_router)),
                     "cluster_16_shards_8_routers": round(min(16 * per_shard,
                                                              8 * per_router))}
    return out


def _summary(res: dict) -> str:
    lines = [f"load before: {res['load_before']}", f"load after:  {res['load_after']}"]
    for name, s in res["setups"].items():
        for kind in ("echo", "single", "batch"):
            r = s[kind]
            lines.append(f"{name:9s} {kind:6s} {_rate(s, kind):9.0f}/s  p99 {r['p99_ms']:.1f} ms"
                         f"  errors {r['errors']}  cpu/decision {r['cpu_us_per_decision']}")
    lines.append(json.dumps(res["ratios"]))
    lines.append(json.dumps(res["projection"]))
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
