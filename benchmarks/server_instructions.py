"""Server instructions per request (callgrind): a load-independent figure of what a request
costs the server process, every thread included (event loop, durable-log writer).

Starts `pushrl serve` from each source tree under valgrind's callgrind with instrumentation
off, creates `--users` users, warms up with `--warmup` decide requests, then counts the
instructions of `--requests` sequential `POST /v1/decide` requests (one connection, each
request its own engine pass and group commit) and of as many `GET /v1/echo` requests (the
framework floor). Decide requests carry an explicit `ts` (one hour apart, distinct users
drawn with a fixed seed), so every tree makes the same decisions. Kernel time (fsync, socket
writes) is not counted: instructions are user-space work only.

`--concurrency K` sends the decide requests in groups of K at once (K connections, distinct
users, one hour per group), so the micro-batcher decides them in passes of up to K rows (the
mean pass size is printed): the per-request cost at 16-32 connections, where the capacity
figure is measured, without the load of the machine in it. With `--closed`, the K connections
are closed-loop clients instead (each sends its next request when answered, as wrk's do), so the
pass sizes are the micro-batcher's own (its wait for answered clients, serve/batcher.py; the
server gets `PUSHRL_HOLD_SCALE=--hold-scale`, default 50, as callgrind runs it ~50x slower than
the wall-clock deadlines assume). `--batch K` sends them instead as
`POST /v1/decide/batch` requests of K decisions each (one connection); the figure is then per
decision.

    python benchmarks/server_instructions.py [--tree DIR ...] [--requests 200]
        [--concurrency 1 [--closed] | --batch K] [--now] [--json]

A tree is a checkout of pushrl (`git archive COMMIT | tar -x -C DIR`); it runs with
`PYTHONPATH=DIR`. Each figure is printed with its ratio to the first tree's. Needs valgrind
(`apt-get install -y valgrind`); slow (a few minutes per tree).
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
from server import ZONES, free_port  # noqa: E402

T0 = 1_800_000_000  # 2027-01-15T08:00:00Z: after the users are created (now), in the window


def _ctl(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], capture_output=True, check=True)


def _collected(out_dir: Path, label: str) -> int:
    """Instructions in the dump(s) named ``label`` (one file per dump)."""
    total = 0
    for f in out_dir.glob("cg.out*"):
        text = f.read_text(errors="replace")
        if f"desc: Trigger: dump {label}\n" not in text:
            continue
        m = re.search(r"^totals: (\d+)", text, re.M)
        total += int(m.group(1)) if m else 0
    return total


def _pass_rows(c: httpx.Client) -> tuple[float, float]:
    """(rows, passes) the micro-batcher decided so far, from /metrics."""
    got = {ln.split()[0]: float(ln.split()[1]) for ln in c.get("/metrics").text.splitlines()
           if ln.startswith("serve_decide_pass_rows_")}
    return got.get("serve_decide_pass_rows_sum", 0.0), got.get(
        "serve_decide_pass_rows_count", 0.0)


def _post_groups(base: str, bodies: list[str], k: int) -> None:
    """POST the bodies in groups of ``k`` at once (one connection each)."""
    import asyncio

    async def run() -> None:
        hdr = {"content-type": "application/json"}
        async with httpx.AsyncClient(base_url=base, timeout=600,
                                     limits=httpx.Limits(max_connections=k)) as ac:
            for i in range(0, len(bodies), k):
                rs = await asyncio.gather(*(ac.post("/v1/decide", content=b, headers=hdr)
                                            for b in bodies[i:i + k]))
                for r in rs:
                    r.raise_for_status()

    asyncio.run(run())


def _post_closed(base: str, bodies: list[str], k: int) -> None:
    """POST the bodies from ``k`` closed-loop clients (each sends its next body when its
    answer came, as wrk does): client ``j`` sends bodies ``j, j + k, ...`` in order."""
    import asyncio

    async def run() -> None:
        hdr = {"content-type": "application/json"}
        async with httpx.AsyncClient(base_url=base, timeout=600,
                                     limits=httpx.Limits(max_connections=k)) as ac:
            async def client(mine: list[str]) -> None:
                for b in mine:
                    (await ac.post("/v1/decide", content=b, headers=hdr)).raise_for_status()
            await asyncio.gather(*(client(bodies[j::k]) for j in range(k)))

    asyncio.run(run())


def _bodies(rng: np.random.Generator, users: int, k: int, n: int, closed: bool,
            now: bool = False) -> list[str]:
    """``n`` decide bodies: one hour per request (closed loop: client ``j`` of ``k`` has the
    users ``u`` with ``u % k == j``) or per group of ``k`` distinct users; with ``now``, no
    ``ts`` (the server's clock, as `benchmarks/server.py`'s wrk requests: the decisions of a
    run share their hour)."""
    def body(u: int, ts: int) -> str:
        return json.dumps({"user_id": f"u{u}"} if now else {"user_id": f"u{u}", "ts": ts})

    if k == 1 or closed:
        who = rng.integers(0, users // k, n) * k + np.arange(n) % k
        return [body(int(u), T0 + 3600 * i) for i, u in enumerate(who)]
    return [body(int(u), T0 + 3600 * g)
            for g in range(n // k) for u in rng.choice(users, k, replace=False)]


def _send(c: httpx.Client, base: str, path: str, bodies: list[str], k: int,
          closed: bool) -> None:
    """POST the bodies: one at a time, ``k`` closed-loop clients or groups of ``k``."""
    if k == 1:
        for b in bodies:
            c.post(path, content=b, headers={"content-type": "application/json"}
                   ).raise_for_status()
    elif closed:
        _post_closed(base, bodies, k)
    else:
        _post_groups(base, bodies, k)


def _keep(tmp: Path, keep: Path | None, tree: Path) -> None:
    """Copy the callgrind dumps to ``keep`` (``TREE-cg.out*``, for callgrind_annotate)."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        for f in tmp.glob("cg.out*"):
            shutil.copy(f, keep / f"{tree.name}-{f.name}")


def measure(tree: Path, n_req: int, warmup: int, users: int,
            concurrency: int = 1, batch: int = 0, keep: Path | None = None,
            seed: int = 1, closed: bool = False, hold_scale: float = 50.0, now: bool = False
            ) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="pushrl-sin-"))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(tree), "PUSHRL_HOLD_SCALE": str(hold_scale)}
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no",
           f"--callgrind-out-file={tmp}/cg.out", sys.executable, "-m", "pushrl.cli.main",
           "serve", "--registry", str(tmp / "policies"), "--state", str(tmp / "state"),
           "--port", str(port), "--host", "127.0.0.1", "--catalog",
           str(ROOT / "simulator_data" / "synth"), "--seed", "0", "--sync", "full"]
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=120) as c:
            for _ in range(3000):
                if proc.poll() is not None:
                    raise RuntimeError(proc.stderr.read().decode()[-2000:])  # type: ignore[union-attr]
                try:
                    if c.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            for k in range(users):
                c.put(f"/v1/users/u{k}", json={"timezone": ZONES[k % len(ZONES)]}
                      ).raise_for_status()
            rng = np.random.default_rng(seed)  # the users and groups drawn
            k = batch or concurrency
            warmup -= warmup % k  # the measured requests start a group
            bodies = _bodies(rng, users, k, warmup + n_req, closed, now)
            path = "/v1/decide"
            if batch:  # one /v1/decide/batch request per group
                path = "/v1/decide/batch"
                bodies = [json.dumps({"requests": [json.loads(b) for b in bodies[i:i + k]]})
                          for i in range(0, len(bodies), k)]
                warmup //= k
            _send(c, base, path, bodies[:warmup], 1 if batch else k, closed)
            for _ in range(20):
                c.get("/v1/echo").raise_for_status()
            pid = str(proc.pid)
            rows0 = _pass_rows(c)
            _ctl("-z", pid)
            _ctl("-i", "on", pid)
            _send(c, base, path, bodies[warmup:], 1 if batch else k, closed)
            _ctl("-i", "off", pid)
            rows1 = _pass_rows(c)  # (after the count: /metrics is not counted)
            _ctl("-d", "decide", pid)
            _ctl("-i", "on", pid)
            for _ in range(n_req):
                c.get("/v1/echo").raise_for_status()
            _ctl("-i", "off", pid)
            _ctl("-d", "echo", pid)
        dec, echo = _collected(tmp, "decide"), _collected(tmp, "echo")
        n_dec = (len(bodies) - warmup) * (batch or 1)
        return {"decide_instructions_per_request": dec / n_dec,
                "echo_instructions_per_request": echo / n_req,
                "mean_pass_rows": (float(batch) if batch else
                                   (rows1[0] - rows0[0]) / max(rows1[1] - rows0[1], 1))}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
        _keep(tmp, keep, tree)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, nargs="+", default=[ROOT])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--users", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=1,
                    help="decide requests sent at once (passes of up to this many rows)")
    ap.add_argument("--batch", type=int, default=0,
                    help="send /v1/decide/batch requests of this many decisions instead")
    ap.add_argument("--closed", action="store_true",
                    help="with --concurrency K: K closed-loop clients (as wrk) instead of "
                    "groups of K sent at once (the pass sizes then follow the batcher's policy)")
    ap.add_argument("--hold-scale", type=float, default=50.0,
                    help="PUSHRL_HOLD_SCALE of the server: the micro-batcher's wait deadlines "
                    "times this (callgrind runs the server ~50x slower; 1 = unscaled)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the users drawn")
    ap.add_argument("--now", action="store_true",
                    help="decide requests without `ts` (the server's clock, as server.py's wrk "
                    "requests): the run's decisions share their hour, so a user's clock rarely "
                    "moves (the default gives each request its own hour)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="copy the callgrind dumps here (TREE-cg.out*; callgrind_annotate)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("needs valgrind (apt-get install -y valgrind)")
    load0 = os.getloadavg()
    rows, first = [], None
    for tree in a.tree:
        r = measure(tree.resolve(), a.requests, a.warmup, a.users, a.concurrency, a.batch,
                    a.keep, a.seed, a.closed, a.hold_scale, a.now)
        first = first or r
        rows.append({"tree": str(tree), **{k: round(v, 2) for k, v in r.items()},
                     **{k.replace("_per_request", "_ratio_to_first"): round(v / first[k], 3)
                        for k, v in r.items() if k.endswith("_per_request")}})
    res = {"unit": "instructions per request (server process, all threads)",
           "requests": a.requests, "users": a.users, "seed": a.seed, "closed": a.closed,
           "now": a.now,
           "hold_scale": a.hold_scale,
           "concurrency": a.concurrency, "batch": a.batch,
           "load_avg_before": [round(x, 2) for x in load0],
           "load_avg_after": [round(x, 2) for x in os.getloadavg()], "rows": rows}
    if a.json:
        print(json.dumps(res, indent=2))
        return
    for r in rows:
        dec, echo = r["decide_instructions_per_request"], r["echo_instructions_per_request"]
        print(f"{r['tree'][-40:]:40s} decide {dec:>12,.0f} "
              f"(x{r['decide_instructions_ratio_to_first']}, passes of "
              f"{r['mean_pass_rows']:.2f} rows)  echo {echo:>10,.0f} "
              f"(x{r['echo_instructions_ratio_to_first']})")
    print(f"load average {res['load_avg_before']} -> {res['load_avg_after']}")


if __name__ == "__main__":
    main()
