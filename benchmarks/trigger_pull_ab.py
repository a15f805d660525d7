"""A/B of the due-sends pull (issue 16) between two source trees.

CPU ms (thread time) of ``reps`` all-due pulls of 10k users (the scenario of
``benchmarks/trigger_pull.py``), then 9 pulls with 10 % due (some with a ``request_id``;
the weekly forget of closed triggers runs among them), and one digest of every answer, every
journal statement and the final tracker snapshot (the decision-id prefix is fixed), so two
trees must give the same digest:

    PYTHONPATH=TREE python benchmarks/trigger_pull_ab.py [reps]
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] or
            Path(__file__).resolve().parents[1])
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import trigger_pull as tp  # noqa: E402

from pushrl.rules.triggers import TriggerConfig  # noqa: E402
from pushrl.serve.config import ServeConfig  # noqa: E402
from pushrl.serve.schemas import TriggersDueIn  # noqa: E402
from pushrl.serve.server import Server  # noqa: E402


def _norm(x: Any) -> Any:
    if isinstance(x, bytes | bytearray | memoryview):
        return bytes(x).hex()
    return repr(x) if isinstance(x, float) else x


def _flat(stmts: list[Any]) -> list[tuple[str, Any]]:
    """The statements as rows (a bulk record's pieces, a ``Columns``' rows; a tree without
    them has neither), so trees with and without bulk records digest alike."""
    out: list[tuple[str, Any]] = []
    for sql, params in stmts:
        if getattr(params, "pieces", None) is not None:  # a bulk record (serve/bulk_sends.py)
            out += _flat(params.pieces)
        elif hasattr(params, "rows") and not isinstance(params, (tuple, list)):  # Columns
            out.append((sql, list(params.rows())))
        else:
            out.append((sql, [params] if isinstance(params, tuple) else list(params)))
    return out


def _digest(h: Any, got: dict[str, Any], stmts: list[Any]) -> None:
    h.update(json.dumps(got, sort_keys=True, default=str).encode())
    for sql, rows in _flat(stmts):
        for row in rows:  # (per row: one Many or several plain statements digest alike)
            h.update(sql.encode())
            h.update(repr(tuple(_norm(v) for v in row)).encode())


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    d = Path(tempfile.mkdtemp())
    cfg = ServeConfig(registry=d / "policies", state=d / "state", seed=0, watch_seconds=0,
                      guardrails=tp.OPEN, triggers=TriggerConfig.default())
    srv = Server(cfg)
    srv.engine._id_prefix = "p2fixed0000000000"
    for j in range(tp.N_ITEMS):
        srv.log.write(srv.state.put_item(f"i{j}", "ab"[j % 2], {"price": 10.0})[1])
    users = [f"u{i}" for i in range(10000)]
    stmts: list[Any] = []
    for u in users:
        stmts += srv.put_user(u, "UTC", {}, dt.datetime.fromtimestamp(tp.T0 - 24 * tp.H,
                                                                         dt.UTC))[1]
    srv.log.write(stmts)
    h = hashlib.sha256()
    cpu = []
    for r in range(reps):
        t = tp.T0 + r * 25 * tp.H
        tp._carts(srv, users, t, r % tp.N_ITEMS)
        c1 = time.thread_time()
        got, stmts = srv.triggers_due(TriggersDueIn(users=users, ts=t + tp.H))
        cpu.append((time.thread_time() - c1) * 1e3)
        _digest(h, got, stmts)
        srv.log.write(stmts)
    for r in range(reps, reps + 9):
        t = tp.T0 + r * 25 * tp.H
        tp._carts(srv, users[:1000], t, r % tp.N_ITEMS)
        got, stmts = srv.triggers_due(TriggersDueIn(
            users=users, ts=t + 3 * tp.H, request_id=f"q{r}" if r % 2 else None))
        _digest(h, got, stmts)
        srv.log.write(stmts)
    trig = srv.state.triggers
    assert trig is not None
    snap = trig.tracker.to_dict()
    h.update(json.dumps(snap, sort_keys=True, default=str).encode())
    print(json.dumps({"root": str(ROOT), "cpu_ms": [round(x, 1) for x in cpu],
                      "digest": h.hexdigest()[:16], "n_trig": len(snap["triggers"])}))
    srv.close()


if __name__ == "__main__":
    main()
