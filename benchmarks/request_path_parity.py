"""Do two source trees answer `/v1/decide` alike through the whole request path? A digest of
the answer bytes and the logged rows, with requests decided by the micro-batcher.

Runs a `Server` from each tree (no sockets: the hot route's own handler,
`pushrl.serve.app.decide_json`, on a uvloop loop), 300 users in 8 zones, then `--groups`
groups of 1-16 concurrent requests (distinct users, each group an hour after the previous)
with explicit `ts`, some with `candidates`/`context`, a few invalid bodies (their 4xx
status and detail go into the digest). The digest (sha256) covers every answer body and every
row of the `decisions` and `ops` tables, the per-process decision-id prefix replaced by a
counter. What `benchmarks/engine_parity.py` does not cover: the batcher, the parsing of the
body, the answer's JSON bytes and the durable log's group commit.

    python benchmarks/request_path_parity.py --tree BASE_DIR . [--groups 400] [--seed 0]

A tree is a checkout of pushrl (`git archive COMMIT | tar -x -C DIR`); it runs with
`PYTHONPATH=DIR`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu",
         "America/Los_Angeles", "Australia/Lord_Howe", "Australia/Sydney"]
T0 = 1_800_000_000
USERS = 300


def _body(rng: Any, items: list[str], u: int, ts: int) -> bytes:
    """A decide body for user ``u`` at ``ts``: mostly plain, some with candidates, context
    or an ISO time (maybe too early: 409), a few invalid (422)."""
    d: dict[str, object] = {"user_id": f"u{u}", "ts": ts}
    r = rng.random()
    if r < 0.1:
        d["candidates"] = [str(x) for x in rng.choice(items, 3, replace=False)]
    elif r < 0.15:
        d["context"] = {"screen": "home", "n": int(rng.integers(9))}
    elif r < 0.18:
        d["ts"] = f"2027-01-15T0{rng.integers(10)}:00:00Z"
    elif r < 0.2:
        return json.dumps({"user_id": f"u{u}", "ts": ts, "bad": 1}).encode()
    elif r < 0.21:
        return b'{"user_id": '
    return json.dumps(d).encode()


def child(groups: int, seed: int) -> None:
    """Run in the tree's interpreter: prints the digest."""
    import asyncio

    import numpy as np
    import uvloop
    from fastapi.exceptions import RequestValidationError

    from pushrl.serve import app as appmod
    from pushrl.serve.config import ServeConfig
    from pushrl.serve.errors import ServeError
    from pushrl.serve.server import Server

    tmp = Path(tempfile.mkdtemp(prefix="pushrl-rpp-"))
    h = hashlib.sha256()
    ids: dict[str, str] = {}

    def norm(text: str) -> str:  # decision ids -> their order of appearance
        return re.sub(r'"([0-9a-f]{28})"',
                      lambda m: '"' + ids.setdefault(m.group(1), f"D{len(ids)}") + '"', text)

    try:
        cfg = ServeConfig(registry=tmp / "policies", state=tmp / "state", seed=seed,
                          watch_seconds=0, catalog=ROOT / "simulator_data" / "synth",
                          sync="full")
        srv = Server(cfg)
        stmts = []
        for k in range(USERS):
            stmts += srv.state.put_user(f"u{k}", ZONES[k % len(ZONES)], {}, T0 // 3600 - 24)[1]
        srv.log.write(stmts)
        items = [it.item_id for it in srv.state.item_list]
        rng = np.random.default_rng(seed)

        async def one(b: bytes) -> str:
            try:
                return (await appmod.decide_json(srv, b)).decode()
            except RequestValidationError as exc:
                return "422 " + json.dumps(exc.errors(), default=str, sort_keys=True)
            except ServeError as exc:
                return f"{exc.status} {exc.code} {exc.detail}"

        async def main() -> None:
            for g in range(groups):
                k = int(rng.integers(1, 17))
                who = rng.choice(USERS, k, replace=False)
                got = await asyncio.gather(*(one(_body(rng, items, int(u), T0 + 3600 * g))
                                             for u in who))
                for t in got:
                    h.update(norm(t).encode() + b"\n")

        uvloop.run(main())
        for table, order in (("decisions", "seq"), ("ops", "seq")):
            for row in srv.log.query(f"SELECT * FROM {table} ORDER BY {order}"):
                h.update(norm(json.dumps([r.hex() if isinstance(r, bytes) else r
                                          for r in row])).encode() + b"\n")
        n = srv.log.query("SELECT count(*) FROM decisions")[0][0]
        srv.log.close()
        print(f"DIGEST {h.hexdigest()} decisions {n}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, nargs="+", default=[ROOT])
    ap.add_argument("--groups", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.groups, a.seed)
        return
    digests = []
    for tree in a.tree:
        out = subprocess.run([sys.executable, __file__, "--child", "--groups", str(a.groups),
                              "--seed", str(a.seed)], env={**os.environ, "PYTHONPATH": str(
                                  tree.resolve())}, capture_output=True, text=True, check=True)
        line = next(ln for ln in out.stdout.splitlines() if ln.startswith("DIGEST"))
        digests.append(line.split()[1])
        print(f"{str(tree)[-40:]:40s} {line}")
    print("IDENTICAL" if len(set(digests)) == 1 else "DIFFERENT")


if __name__ == "__main__":
    main()
