"""System calls per request of the policy server (strace -c): what a lone `/v1/decide` costs the
kernel beside its instructions (`benchmarks/server_instructions.py` counts user space only).

Starts `pushrl serve` from each source tree (as `benchmarks/server_cpu.py` does), creates
`--users` users, warms up with `--warmup` sequential decide requests, then attaches
`strace -f -c` to the server (every thread: event loop, log writer, checkpointer) for
`--requests` sequential `POST /v1/decide` requests (one connection, explicit `ts` one hour
apart, users drawn with `--seed`: each its own pass and group commit, `--sync full`), then
again for as many `GET /v1/echo` requests. Prints the calls per request of each system call
(decide and echo) and the total; under strace the server runs several times slower, so the
counts, not the times, are the figures.

    python benchmarks/server_syscalls.py [--tree DIR ...] [--requests 500] [--json] [--out F]

Read the decide counts as: per group commit `fdatasync` 1 (+ a checkpoint's now and then),
`pwrite64` 2 per WAL frame (header + page: 4 pages for one decision and its ops row),
`fcntl` 6 (the WAL's shm locks: read mark, write lock), `futex` the thread hand-offs and GIL
handovers, `write`/`read` the response, the request and the writer's wake-up of the loop
(eventfd), `epoll_pwait` one per loop iteration, `getpid` one per
`asyncio.get_running_loop()`. Needs `strace` (`apt-get install -y strace`) and ptrace rights.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _output import emit_json  # noqa: E402
from server import ZONES, free_port  # noqa: E402
from server_cpu import start  # noqa: E402

T0 = 1_800_000_000  # 2027-01-15T08:00:00Z: after the users are created (now)
_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


def parse_strace_c(text: str) -> dict[str, int]:
    """Calls per system call from a ``strace -c`` summary table."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = _ROW.match(line)
        if m and m.group(2) != "total":
            out[m.group(2)] = int(m.group(1))
    return out


def _traced(pid: int, out: Path, send: list[tuple[str, str, str | None]],
            c: httpx.Client) -> dict[str, int]:
    """System calls of ``pid`` (all threads) while the requests ``send`` are made in turn."""
    st = subprocess.Popen(["strace", "-f", "-c", "-o", str(out), "-p", str(pid)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached to every thread
    try:
        for method, path, body in send:
            c.request(method, path, content=body,
                      headers={"content-type": "application/json"}).raise_for_status()
        time.sleep(0.2)
    finally:
        st.send_signal(signal.SIGINT)
        st.wait(timeout=60)
    return parse_strace_c(out.read_text())


def measure(tree: Path, n_req: int, warmup: int, users: int, seed: int) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="pushrl-sys-"))
    port = free_port()
    proc = start(tree, tmp, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            for k in range(users):
                c.put(f"/v1/users/u{k}", json={"timezone": ZONES[k % len(ZONES)]}
                      ).raise_for_status()
            who = np.random.default_rng(seed).integers(0, users, warmup + n_req)
            bodies = [json.dumps({"user_id": f"u{int(u)}", "ts": T0 + 3600 * i})
                      for i, u in enumerate(who)]
            for b in bodies[:warmup]:
                c.post("/v1/decide", content=b, headers={"content-type": "application/json"}
                       ).raise_for_status()
            dec = _traced(proc.pid, tmp / "decide.txt",
                          [("POST", "/v1/decide", b) for b in bodies[warmup:]], c)
            echo = _traced(proc.pid, tmp / "echo.txt", [("GET", "/v1/echo", None)] * n_req, c)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    names = sorted(set(dec) | set(echo), key=lambda s: -dec.get(s, 0))
    per = {s: {"decide": round(dec.get(s, 0) / n_req, 2), "echo": round(echo.get(s, 0) / n_req, 2)}
           for s in names}
    return {"tree": str(tree), "per_request": per,
            "decide_total": round(sum(dec.values()) / n_req, 2),
            "echo_total": round(sum(echo.values()) / n_req, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, nargs="+", default=[ROOT])
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--users", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1, help="seed of the users drawn")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    a = ap.parse_args()
    if shutil.which("strace") is None:
        sys.exit("strace is not installed (apt-get install -y strace)")
    load0 = os.getloadavg()
    rows = [measure(t.resolve(), a.requests, a.warmup, a.users, a.seed) for t in a.tree]
    res = {"unit": "system calls per request (server process, all threads; strace -f -c)",
           "requests": a.requests, "seed": a.seed, "sync": "full", "connections": 1,
           "load_avg_before": [round(x, 2) for x in load0],
           "load_avg_after": [round(x, 2) for x in os.getloadavg()], "rows": rows}
    emit_json(res, a.out, echo=a.json)
    if a.json:
        return
    for r in rows:
        print(f"{r['tree']}: {r['decide_total']} system calls per decide, "
              f"{r['echo_total']} per echo")
        for s, v in r["per_request"].items():  # type: ignore[attr-defined]
            print(f"  {s:16s} decide {v['decide']:6.2f}  echo {v['echo']:6.2f}")


if __name__ == "__main__":
    main()
