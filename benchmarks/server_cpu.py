"""Server CPU per request, per thread, from /proc: robust to background load (unlike req/s).

Starts `pushrl serve` from one or more source trees (default: this checkout), creates users,
then runs wrk rounds against /v1/echo and /v1/decide at each connection count, alternating
the trees round by round so that all of them see the same background load. For each
(tree, endpoint, connections) it prints the server's CPU microseconds per request: the main
(event-loop) thread, the other threads (the durable log's writer and checkpointer), and the
total, plus the requests per group commit.

    python benchmarks/server_cpu.py [--tree DIR ...] [--connections 1 8] [--seconds 4]
        [--rounds 3] [--json]

A tree is a checkout of pushrl (e.g. `git archive COMMIT | tar -x -C DIR` for an older
commit); its server runs with `PYTHONPATH=DIR`. Needs `wrk`.

Target (issue 20): single-decide server CPU <= 200 us per request (1 connection, every
request its own pass and group commit).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from server import LUA, LUA_DONE, ZONES, free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of every thread of ``pid``, by thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            f = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        out[int(task.name)] = (int(f[11]) + int(f[12])) / TICK
    return out


def start(tree: Path, tmp: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "pushrl.cli.main", "serve", "--registry", str(tmp / "policies"),
           "--state", str(tmp / "state"), "--port", str(port), "--host", "127.0.0.1",
           "--catalog", str(ROOT / "simulator_data" / "synth"), "--seed", "0", "--sync", "full"]
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not become ready in 60 s")


def commits(base: str) -> tuple[float, float]:
    """(requests, group commits) so far, from /metrics."""
    got = {ln.split()[0]: float(ln.split()[1]) for ln in httpx.get(base + "/metrics").text
           .splitlines() if ln.startswith("serve_log_commit_requests_")}
    return got.get("serve_log_commit_requests_sum", 0.0), got.get(
        "serve_log_commit_requests_count", 0.0)


def wrk(base: str, path: str, seconds: int, conns: int, users: int, tmp: Path) -> dict:
    script = tmp / "load.lua"
    script.write_text(((LUA % {"seed": 1, "users": users}) if path == "/v1/decide" else "")
                      + LUA_DONE)
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s",
                          "-s", str(script), base + path], capture_output=True, text=True,
                         check=True, timeout=seconds + 30).stdout
    return json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:])


def measure(proc: subprocess.Popen[bytes], base: str, path: str, seconds: int, conns: int,
            users: int, tmp: Path) -> dict:
    c0, r0 = thread_cpu(proc.pid), commits(base)
    res = wrk(base, path, seconds, conns, users, tmp)
    c1, r1 = thread_cpu(proc.pid), commits(base)
    d = {t: c1[t] - c0.get(t, 0.0) for t in c1}
    main = d.pop(proc.pid, 0.0)
    return {"requests": res["requests"], "errors": res["status_errors"] + res["socket_errors"],
            "rps": res["requests"] / (res["duration_us"] / 1e6),
            "p99_ms": res["p99_us"] / 1e3, "main_s": main, "other_s": sum(d.values()),
            "commit_requests": r1[0] - r0[0], "commits": r1[1] - r0[1]}


def summarise(parts: list[dict]) -> dict:
    n = sum(p["requests"] for p in parts)
    main, other = sum(p["main_s"] for p in parts), sum(p["other_s"] for p in parts)
    nc = sum(p["commits"] for p in parts)
    return {"requests": n, "errors": sum(p["errors"] for p in parts),
            "rps": round(sum(p["rps"] for p in parts) / len(parts)),
            "p99_ms_worst": round(max(p["p99_ms"] for p in parts), 2),
            "main_us": round(1e6 * main / max(n, 1), 1),
            "other_us": round(1e6 * other / max(n, 1), 1),
            "total_us": round(1e6 * (main + other) / max(n, 1), 1),
            "requests_per_commit": round(sum(p["commit_requests"] for p in parts) / nc, 2)
            if nc else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, nargs="+", default=[ROOT])
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seconds", type=int, default=4, help="seconds per wrk round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="pushrl-cpu-"))
    servers: list[tuple[Path, subprocess.Popen[bytes], str]] = []
    load0 = os.getloadavg()
    try:
        for i, tree in enumerate(a.tree):
            port = free_port()
            (tmp / str(i)).mkdir()
            proc = start(tree.resolve(), tmp / str(i), port)
            base = f"http://127.0.0.1:{port}"
            servers.append((tree, proc, base))
            with httpx.Client(base_url=base, timeout=30) as c:
                for k in range(a.users):
                    c.put(f"/v1/users/u{k}",
                          json={"timezone": ZONES[k % len(ZONES)]}).raise_for_status()
        parts: dict[tuple[int, str, int], list[dict]] = {}
        for _ in range(a.rounds):
            for conns in a.connections:
                for path in ("/v1/echo", "/v1/decide"):
                    for i, (_, proc, base) in enumerate(servers):
                        parts.setdefault((i, path, conns), []).append(
                            measure(proc, base, path, a.seconds, conns, a.users, tmp))
    finally:
        for _, proc, _ in servers:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [{"tree": str(servers[i][0]), "path": path, "connections": conns,
             **summarise(p)} for (i, path, conns), p in sorted(parts.items())]
    res = {"load_avg_before": [round(x, 2) for x in load0],
           "load_avg_after": [round(x, 2) for x in os.getloadavg()], "rows": rows}
    if a.json:
        print(json.dumps(res, indent=2))
        return
    for r in rows:
        print(f"{r['tree'][-40:]:40s} {r['path']:11s} c{r['connections']:<3d} "
              f"{r['rps']:6d} req/s  p99 {r['p99_ms_worst']:6.2f} ms  CPU us/request: main "
              f"{r['main_us']:6.1f} other {r['other_us']:6.1f} total {r['total_us']:6.1f}  "
              f"req/commit {r['requests_per_commit']}  errors {r['errors']}")
    print(f"load average {res['load_avg_before']} -> {res['load_avg_after']}")


if __name__ == "__main__":
    main()
