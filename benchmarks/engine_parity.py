"""Do two source trees make the same decisions? A digest of everything the server's engine
returns and journals over a random event stream, compared across trees.

Runs a `Server` (no HTTP) from each tree on the synthetic catalog: 300 users in 8 zones
(some with a non-whole-hour offset), then `--steps` steps, each one of: a decide pass of
1-24 distinct users, a batch of organic events (sessions, views, purchases with items), or
feedback on a recent decision (opens, clicks, now and then an unsubscribe), every step an
hour or less after the previous one. The digest (sha256) covers every response body (send,
item, pscore, p_send, policy, reason, ...) and every journal row (decision rows with their
raw feature bytes, ops, feedback), with the per-process decision-id prefix replaced by a
counter; a decision row counts as its non-NULL columns (an INSERT that leaves NULL columns
out stores the same row). Equal digests: the trees are indistinguishable on this stream.

    python benchmarks/engine_parity.py --tree BASE_DIR . [--steps 3000] [--seed 0]
        [--holdout] [--kill-switch] [--t0 UNIX_SECONDS]

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

ROOT = Path(__file__).resolve().parents[1]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu",
         "America/Los_Angeles", "Australia/Lord_Howe", "Australia/Sydney"]
T0 = 1_780_000_000  # 2026-05-28T20:26:40Z
_DECISION_INSERT = re.compile(r"INSERT INTO decisions\(([^)]*)\) VALUES \(([^)]*)\)$")


class _Digest:
    """sha256 over responses and journal rows, decision ids replaced by a counter."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.ids: dict[str, str] = {}

    def norm(self, x: object) -> object:
        if isinstance(x, str) and x in self.ids:
            return self.ids[x]
        if isinstance(x, bytes):
            return x.hex()
        if isinstance(x, (list, tuple)):
            return [self.norm(y) for y in x]
        if hasattr(x, "rows"):  # column-wise journal rows (serve/rows.py Columns): row by row
            return [self.norm(list(r)) for r in x.rows()]
        if isinstance(x, dict):
            return {k: self.norm(v) for k, v in x.items()}
        return x

    def stmt(self, s: tuple) -> object:
        """A journal statement; a decision row as its stored columns without the NULLs (an
        INSERT naming fewer columns stores the same row: they default to NULL)."""
        m = _DECISION_INSERT.match(s[0]) if isinstance(s[0], str) else None
        if m is None:
            return self.norm(list(s))
        cols = [c.strip() for c in m.group(1).split(",")]
        marks = [v.strip() for v in m.group(2).split(",")]
        rows = [list(r) for r in s[1].rows()] if hasattr(s[1], "rows") else [list(s[1])]
        out = []
        for r in rows:
            it = iter(r)
            vals = [next(it) if v == "?" else json.loads(v) for v in marks]
            out.append({c: v for c, v in zip(cols, vals, strict=True) if v is not None})
        return ["decisions", self.norm(out)]

    def feed(self, outs: list[dict], stmts: list) -> None:
        for o in outs:
            self.ids.setdefault(o["decision_id"], f"d{len(self.ids)}")
        self.h.update(json.dumps([self.norm(outs), [self.stmt(s) for s in stmts]],
                                 sort_keys=True, default=str).encode())


def _decide_step(srv, rng, t: int, n_users: int, items: list[str], dg: _Digest) -> list[str]:
    from pushrl.serve.schemas import DecideIn

    reqs = []
    for u in rng.choice(n_users, int(rng.integers(1, 25)), replace=False).tolist():
        cands = (None if rng.random() < 0.8 else
                 [items[int(i)] for i in rng.choice(len(items), 5, replace=False)])
        reqs.append(DecideIn(user_id=f"u{u}", ts=t, candidates=cands))
    outs, s = srv.decide(reqs)
    dg.feed(outs, s)
    srv.log.write(s)
    return [o["decision_id"] for o in outs if o["send"]]


def _events_step(srv, rng, t: int, n_users: int, items: list[str], dg: _Digest) -> None:
    from pushrl.serve.schemas import Event

    evs = []
    for u in rng.choice(n_users, int(rng.integers(1, 20)), replace=False).tolist():
        e = ["session", "view", "cart", "purchase"][int(rng.integers(0, 4))]
        it = None if e == "session" else items[int(rng.integers(0, len(items)))]
        evs.append(Event(user_id=f"u{u}", event=e, ts=t - int(rng.integers(0, 7200)),
                         item_id=it, revenue=10.0 if e == "purchase" else None))
    try:
        s = srv.events(evs)
    except Exception as exc:  # an event before a user's state: refused alike in every tree
        dg.h.update(f"events refused: {type(exc).__name__}".encode())
        return
    dg.feed([], s)
    srv.log.write(s)


def _feedback_step(srv, rng, t: int, recent: list[str], dg: _Digest) -> None:
    from pushrl.serve.schemas import FeedbackIn

    did = recent[int(rng.integers(0, len(recent)))]
    r = rng.random()
    fb = FeedbackIn(decision_id=did, opened=True, clicked=bool(r < 0.3) or None,
                    unsubscribed=True if r > 0.97 else None, ts=t)
    body, s, token = srv.feedback(fb)
    dg.feed([], s)
    dg.h.update(json.dumps(dg.norm(body), sort_keys=True, default=str).encode())
    srv.log.write(s)
    srv.feedback_done(did, token)


def child(steps: int, seed: int, holdout: bool, kill: bool, t0: int) -> None:
    """Run in the tree's interpreter: prints the digest and a few counts."""
    import numpy as np

    from pushrl.serve.config import ServeConfig
    from pushrl.serve.server import Server

    tmp = Path(tempfile.mkdtemp(prefix="pushrl-parity-"))
    dg = _Digest()
    try:
        kw = {}
        if holdout:
            from pushrl.rules.holdout import Holdout
            kw["holdout"] = Holdout(share=0.2, salt="parity")
        cfg = ServeConfig(registry=tmp / "policies", state=tmp / "state", seed=seed,
                          watch_seconds=0, catalog=ROOT / "simulator_data" / "synth",
                          sync="normal", **kw)
        srv = Server(cfg)
        srv.engine.kill_switch = kill
        n_users = 300
        stmts = []
        for k in range(n_users):
            stmts += srv.state.put_user(f"u{k}", ZONES[k % len(ZONES)], {}, t0 // 3600)[1]
        srv.log.write(stmts)
        items = [it.item_id for it in srv.state.item_list]
        rng = np.random.default_rng(seed)
        t = t0
        recent: list[str] = []
        n_send = 0
        for _ in range(steps):
            t += int(rng.integers(0, 3600))
            kind = rng.random()
            if kind < 0.6:
                sent = _decide_step(srv, rng, t, n_users, items, dg)
                n_send += len(sent)
                recent = (recent + sent)[-200:]
            elif kind < 0.85:
                _events_step(srv, rng, t, n_users, items, dg)
            elif recent:
                _feedback_step(srv, rng, t, recent, dg)
        print(f"DIGEST {dg.h.hexdigest()} decisions {len(dg.ids)} sends {n_send}")
        srv.log.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5] == "1",
              int(sys.argv[6]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, nargs="+", default=[ROOT])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout", action="store_true")
    ap.add_argument("--kill-switch", action="store_true")
    ap.add_argument("--t0", type=int, default=T0, help="unix seconds of the first step "
                    "(e.g. 1790900000: days before Lord_Howe's and Sydney's 2026 DST change)")
    a = ap.parse_args()
    got = []
    for tree in a.tree:
        env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child",
                              str(a.steps), str(a.seed), str(int(a.holdout)),
                              str(int(a.kill_switch)), str(a.t0)],
                             env=env, cwd=tree, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{tree}: {out.stderr[-3000:]}")
        line = next(x for x in out.stdout.splitlines() if x.startswith("DIGEST "))
        got.append(line.split()[1])
        print(f"{str(tree)[-40:]:40s} {line}")
    print("IDENTICAL" if len(set(got)) == 1 else "DIFFERENT")
    sys.exit(0 if len(set(got)) == 1 else 1)


if __name__ == "__main__":
    main()
