"""Load test of the policy server on 127.0.0.1: /v1/decide (durable logging) vs /v1/echo.

Starts `pushrl serve` (default baselines, synthetic catalog, fresh state dir), creates users,
then runs the same bounded closed-loop load against the echo endpoint (the framework's
ceiling) and against /v1/decide, in the same run. Uses `wrk` when installed
(`apt-get install -y wrk`), else a bounded asyncio+httpx generator in a separate process.

    python benchmarks/server.py [--json] [--duration 12] [--connections 8 16 24 32] [--users 2000]

Each concurrency level gets interleaved echo/decide rounds. Closed-loop clients bound how many
decisions can share a pass and a group commit, so decide throughput grows with concurrency
until the loop saturates, while latency grows with the queue. The headline ("capacity") is
the most decisions/s at any level whose p99 stays <= 15 ms, against the echo ceiling (the most
echo requests/s at any level); every level is reported too.

/v1/echo takes the same path as /v1/decide (`pushrl.serve.hotpath.HotPath`: same auth, one
write per response) and does nothing, so it is the HTTP ceiling and the ratio is the cost of
deciding. `benchmarks/server_cpu.py` splits the server CPU per request by thread (event loop
vs log writer), robust to background load.

Targets (issue 7): capacity >= 0.5x the echo ceiling with p99 <= 15 ms, 0 errors, server RSS
<= 500 MB; issue 20: also >= 0.35x at 8 connections, and single-decide server CPU <= 200 us
(`--connections 1 8 16 24 32` measures it; `benchmarks/server_instructions.py` gives the
load-independent instruction counts). On a shared machine the figures are noisy: the load
averages are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Asia/Tokyo",
         "America/Los_Angeles", "Europe/London", "Australia/Sydney"]

LUA = """
math.randomseed(%(seed)d)
local n = %(users)d
request = function()
  local u = math.random(0, n - 1)
  return wrk.format("POST", "/v1/decide", {["Content-Type"] = "application/json"},
                    '{"user_id":"u' .. u .. '"}')
end
"""
LUA_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,' ..
    '"status_errors":%d,"socket_errors":%d}\\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(tmp: Path, port: int, sync: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "pushrl.cli.main", "serve", "--registry", str(tmp / "policies"),
           "--state", str(tmp / "state"), "--port", str(port), "--host", "127.0.0.1",
           "--catalog", str(ROOT / "simulator_data" / "synth"), "--seed", "0", "--sync", sync]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/readyz"
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not become ready in 30 s")


def create_users(base: str, n: int) -> None:
    with httpx.Client(base_url=base, timeout=30) as c:
        for i in range(n):
            r = c.put(f"/v1/users/u{i}", json={"timezone": ZONES[i % len(ZONES)]})
            r.raise_for_status()


def run_wrk(url: str, path: str, duration: int, conns: int, users: int, tmp: Path) -> dict:
    script = tmp / f"{path.strip('/').replace('/', '_')}.lua"
    body = (LUA % {"seed": 1, "users": users}) if path == "/v1/decide" else ""
    script.write_text(body + LUA_DONE)
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "5s",
                          "-s", str(script), url + path], capture_output=True, text=True,
                         check=True, timeout=duration + 30).stdout
    res = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:])
    secs = res["duration_us"] / 1e6
    return {"requests": res["requests"], "rps": res["requests"] / secs,
            "p50_ms": res["p50_us"] / 1e3, "p99_ms": res["p99_us"] / 1e3,
            "errors": res["status_errors"] + res["socket_errors"]}


HTTPX_GEN = r"""
import asyncio, json, random, sys, time
import httpx
url, path = sys.argv[1], sys.argv[2]
duration, conns, users = float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
lat, errors = [], 0
async def worker(c, stop, rng):
    global errors
    while time.perf_counter() < stop:
        t = time.perf_counter()
        try:
            if path == "/v1/decide":
                r = await c.post(path, json={"user_id": f"u{rng.randrange(users)}"})
            else:
                r = await c.get(path)
            if r.status_code >= 400: errors += 1
        except httpx.HTTPError:
            errors += 1
        lat.append(time.perf_counter() - t)
async def main():
    limits = httpx.Limits(max_connections=conns)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=5) as c:
        t0 = time.perf_counter(); stop = t0 + duration
        await asyncio.gather(*(worker(c, stop, random.Random(i)) for i in range(conns)))
        el = time.perf_counter() - t0
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3
    print(json.dumps({"requests": len(lat), "rps": len(lat) / el, "p50_ms": q(.5),
                      "p99_ms": q(.99), "errors": errors}))
asyncio.run(main())
"""


def run_httpx(url: str, path: str, duration: int, conns: int, users: int) -> dict:
    out = subprocess.run([sys.executable, "-c", HTTPX_GEN, url, path, str(duration), str(conns),
                          str(users)], capture_output=True, text=True, check=True,
                         timeout=duration + 60).stdout
    return json.loads(out.strip().splitlines()[-1])


def _combine(parts: list[dict], slice_s: int) -> dict:
    """Totals over rounds; p50 = median of the rounds' p50, p99 = worst round's p99."""
    n = sum(p["requests"] for p in parts)
    p50 = sorted(p["p50_ms"] for p in parts)[len(parts) // 2]
    return {"requests": n, "rps": n / (slice_s * len(parts)), "p50_ms": p50,
            "p99_ms": max(p["p99_ms"] for p in parts),
            "errors": sum(p["errors"] for p in parts),
            "rps_per_round": [round(p["rps"]) for p in parts],
            "p99_ms_per_round": [round(p["p99_ms"], 2) for p in parts]}


def _load(proc: subprocess.Popen[bytes], base: str, tool: str, conns: int, slice_s: int,
          rounds: int, users: int, tmp: Path) -> dict:
    """Interleaved echo/decide rounds at one concurrency (both see the same background load)."""
    parts: dict[str, list[dict]] = {"/v1/echo": [], "/v1/decide": []}
    cpu = dict.fromkeys(parts, 0.0)
    for _ in range(rounds):
        for path in parts:
            c0 = cpu_seconds(proc.pid)
            parts[path].append(run_wrk(base, path, slice_s, conns, users, tmp)
                               if tool == "wrk" else
                               run_httpx(base, path, slice_s, conns, users))
            cpu[path] += cpu_seconds(proc.pid) - c0
    runs = {p: _combine(r, slice_s) for p, r in parts.items()}
    for p, r in runs.items():  # robust to background load: server CPU per request
        r["server_cpu_us_per_request"] = round(1e6 * cpu[p] / max(r["requests"], 1), 1)
    echo, dec = runs["/v1/echo"], runs["/v1/decide"]
    ratio = dec["rps"] / echo["rps"] if echo["rps"] else float("nan")
    return {"connections": conns, "echo": echo, "decide": dec, "decide_vs_echo": ratio,
            "targets": {"decide_vs_echo>=0.5": ratio >= 0.5, "p99<=15ms": dec["p99_ms"] <= 15.0,
                        "errors==0": echo["errors"] == 0 and dec["errors"] == 0}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--duration", type=int, default=12,
                    help="seconds of load per endpoint and concurrency, split over --rounds "
                    "(<= 60)")
    ap.add_argument("--connections", type=int, nargs="+", default=[8, 16, 24, 32],
                    help="concurrent connections (one load run per value, same server)")
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved echo/decide rounds")
    ap.add_argument("--sync", default="full", choices=["full", "normal"])
    ap.add_argument("--tool", default="auto", choices=["auto", "wrk", "httpx"])
    a = ap.parse_args()
    duration = min(a.duration, 60)
    tool = ("wrk" if shutil.which("wrk") else "httpx") if a.tool == "auto" else a.tool
    tmp = Path(tempfile.mkdtemp(prefix="pushrl-bench-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    load0 = os.getloadavg()[0]
    proc = start_server(tmp, port, a.sync)
    try:
        t = time.perf_counter()
        create_users(base, a.users)
        setup_s = time.perf_counter() - t
        slice_s = max(1, duration // a.rounds)
        before = httpx.get(base + "/metrics").text
        levels = [_load(proc, base, tool, c, slice_s, a.rounds, a.users, tmp)
                  for c in a.connections]
        rss = rss_mb(proc.pid)
        metrics = httpx.get(base + "/metrics").text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    def commits(text: str) -> dict[str, float]:
        return {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines()
                if ln.startswith(("serve_log_commit_requests_sum",
                                  "serve_log_commit_requests_count"))}

    c0, c1 = commits(before), commits(metrics)  # the load phase only (not the user set-up)
    n_req, n_commit = (c1.get(k, 0.0) - c0.get(k, 0.0) for k in
                       ("serve_log_commit_requests_sum", "serve_log_commit_requests_count"))
    per_commit = n_req / max(n_commit, 1.0)
    for lv in levels:
        lv["targets"]["rss<=500MB"] = rss <= 500
        lv["all_targets_met"] = all(lv["targets"].values())
    # capacity: the most decisions/s at any concurrency whose p99 stays within 15 ms without
    # errors, against the echo ceiling (the most echo requests/s at any concurrency)
    ok = [lv for lv in levels if lv["decide"]["p99_ms"] <= 15.0 and lv["decide"]["errors"] == 0]
    best = max(ok, key=lambda lv: lv["decide"]["rps"], default=None)
    ceiling = max(lv["echo"]["rps"] for lv in levels)
    capacity = {
        "echo_ceiling_rps": round(ceiling),
        "decide_rps_within_p99_15ms": round(best["decide"]["rps"]) if best else 0,
        "at_connections": best["connections"] if best else None,
        "decide_p99_ms": best["decide"]["p99_ms"] if best else None,
        "ratio": (best["decide"]["rps"] / ceiling) if best else 0.0,
    }
    # issue 20's other two figures: the ratio at 8 connections (that level's decide vs its
    # echo) and the decide server CPU per request at the fewest connections (1 = single)
    c8 = next((lv for lv in levels if lv["connections"] == 8), None)
    low = min(levels, key=lambda lv: lv["connections"])
    capacity["ratio_at_8_connections"] = None if c8 is None else round(c8["decide_vs_echo"], 3)
    capacity["decide_server_cpu_us"] = low["decide"]["server_cpu_us_per_request"]
    capacity["decide_server_cpu_at_connections"] = low["connections"]
    capacity["targets"] = {
        "ratio>=0.5": capacity["ratio"] >= 0.5, "p99<=15ms": best is not None,
        **({} if c8 is None else {"ratio_at_8_connections>=0.35": c8["decide_vs_echo"] >= 0.35}),
        **({"single_decide_cpu<=200us": capacity["decide_server_cpu_us"] <= 200}
           if low["connections"] == 1 else {}),
        "errors==0": all(lv["echo"]["errors"] == 0 and lv["decide"]["errors"] == 0
                         for lv in levels),
        "rss<=500MB": rss <= 500}
    res = {
        "tool": tool, "duration_s": duration, "users": a.users, "sync": a.sync,
        "cpus": os.cpu_count(), "load_avg_before": round(load0, 2),
        "load_avg_after": round(os.getloadavg()[0], 2), "user_setup_s": round(setup_s, 2),
        "server_rss_mb": round(rss, 1), "requests_per_group_commit": round(per_commit, 2),
        "capacity": capacity, "levels": levels,
        "note": "127.0.0.1; wrk runs on the same 2 cores as the server. Load averages show "
                "whether other jobs shared the machine.",
    }
    shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        print(json.dumps(res, indent=2))
        return
    for lv in levels:
        print(f"-- {lv['connections']} connections")
        for name in ("echo", "decide"):
            r = lv[name]
            print(f"{name:7s} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 "
                  f"{r['p99_ms']:6.2f} ms  errors {r['errors']}  ({r['requests']} requests, "
                  f"server CPU {r['server_cpu_us_per_request']} us/request)")
        print(f"decide/echo {lv['decide_vs_echo']:.2f}; targets: " + ", ".join(
            f"{k} {'ok' if v else 'MISSED'}" for k, v in lv["targets"].items()))
    print(f"capacity within p99 <= 15 ms: {capacity['decide_rps_within_p99_15ms']} decisions/s "
          f"at {capacity['at_connections']} connections = {capacity['ratio']:.2f}x the echo "
          f"ceiling ({capacity['echo_ceiling_rps']} req/s); targets: " + ", ".join(
              f"{k} {'ok' if v else 'MISSED'}" for k, v in capacity["targets"].items()))
    print(f"decide/echo at 8 connections: {capacity['ratio_at_8_connections']} (target >= "
          f"0.35); decide server CPU {capacity['decide_server_cpu_us']} us/request at "
          f"{capacity['decide_server_cpu_at_connections']} connection(s) (target <= 200 us at "
          "1: add 1 to --connections, or benchmarks/server_cpu.py --connections 1)")
    print(f"server RSS {rss:.0f} MB, {per_commit:.1f} requests per group commit, tool {tool}, "
          f"{duration}s per endpoint and level, sync={a.sync}, load average "
          f"{res['load_avg_before']} -> {res['load_avg_after']}")
    print(res["note"])


if __name__ == "__main__":
    main()
