"""The due-sends pull's results in this tree as one digest (issue 16): run it in two trees
(e.g. a change and its base) on the same world; equal digests mean the same answers (both
formats, a ``request_id`` retry), the same journal rows (every log table, after the bulk
records are expanded) and the same tracker.

    python benchmarks/trigger_pull_parity.py [--seed 0] [--users 1500] [--rounds 30]
        [--json] [--out FILE]

The world (:func:`trigger_pull.world` of ``--seed``): users in three zones with the default
guardrails (quiet hours, caps: some sends re-queued), each round (25 h) carts, views and
purchases of a random share of them, then three pulls (1, 3 and 12 h after). Rounds past
14 days make the tracker forget closed triggers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import trigger_pull as tp  # noqa: E402

from pushrl.rules.guardrails import Guardrails  # noqa: E402
from pushrl.rules.triggers import TriggerConfig  # noqa: E402
from pushrl.serve.config import ServeConfig  # noqa: E402
from pushrl.serve.schemas import Event, TriggersDueIn  # noqa: E402
from pushrl.serve.server import Server  # noqa: E402
from pushrl.serve.store import LOG_FILE  # noqa: E402

TABLES = ("ops", "activity", "decisions", "triggers", "trigger_pulls", "users", "items",
          "bulk_sends")
ZONES = ("UTC", "America/New_York", "Asia/Tokyo")
EVENTS = ("cart", "cart", "view", "purchase")


def run(seed: int, n: int, rounds: int) -> dict[str, Any]:
    """The digest of the pulls' answers, the log tables and the tracker."""
    tp.world(seed)
    rng = np.random.default_rng(seed)
    h = hashlib.sha256()
    out: dict[str, Any] = {"seed": seed, "users": n, "rounds": rounds, "sends": 0}
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        cfg = ServeConfig(registry=state.parent / "policies", state=state, seed=0,
                          watch_seconds=0, guardrails=Guardrails(),
                          triggers=TriggerConfig.default())
        srv = Server(cfg)
        srv.engine._id_prefix = "fixed"  # decision ids comparable across trees
        for j in range(tp.N_ITEMS):
            srv.log.write(srv.state.put_item(f"i{j}", "ab"[j % 2], {"price": 10.0})[1])
        users = [f"{tp.PREFIX}{i}" for i in range(n)]
        start = dt.datetime.fromtimestamp(tp.T0 - 24 * tp.H, dt.UTC)
        stmts = []
        for i, u in enumerate(users):
            stmts += srv.put_user(u, ZONES[i % len(ZONES)], {}, start)[1]
        srv.log.write(stmts)
        for r in range(rounds):
            t = tp.T0 + r * 25 * tp.H
            who = rng.choice(n, size=int(n * rng.choice([1.0, 0.5, 0.1])), replace=False)
            srv.log.write(srv.events([
                Event(user_id=users[u], event=str(rng.choice(EVENTS)),
                      item_id=f"i{int(rng.integers(0, tp.N_ITEMS))}", ts=t)
                for u in who.tolist()]))
            for k, lag in enumerate((tp.H, 3 * tp.H, 12 * tp.H)):
                rid = f"p{r}-{k}" if k == 1 else None
                req = TriggersDueIn(users=users, ts=t + lag, request_id=rid,
                                    format="columns" if (r + k) % 2 else "rows")
                got, stmts = srv.triggers_due(req)
                srv.log.write(stmts)
                if rid is not None:
                    srv.pull_done(rid)
                    again, more = srv.triggers_due(req)  # a retry: the stored answer
                    assert again == {**got, "replayed": True} and not more
                s = got["sends"]
                out["sends"] += len(s["trigger_id"] if isinstance(s, dict) else s)
                h.update(json.dumps(got, sort_keys=True).encode())
        trig = srv.state.triggers
        assert trig is not None
        h.update(json.dumps(trig.tracker.to_dict(), sort_keys=True).encode())
        srv.close()
        conn = sqlite3.connect(state / LOG_FILE)
        try:
            for t in TABLES:
                rows = conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
                out[f"rows_{t}"] = len(rows)
                h.update(repr(rows).encode())
        finally:
            conn.close()
    out["digest"] = h.hexdigest()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--users", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--json", action="store_true", help="Print the result as JSON.")
    ap.add_argument("--out", type=Path, help="Also write the JSON here.")
    a = ap.parse_args()
    res = run(a.seed, a.users, a.rounds)
    text = json.dumps(res, indent=2)
    if a.out:
        a.out.write_text(text + "\n")
    print(text if a.json else f"seed {a.seed}: {res['sends']} sends, digest {res['digest']}")


if __name__ == "__main__":
    main()
