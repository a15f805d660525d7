"""Do two source trees choose the same templates? The template step's answers (template id,
``pscore_template`` to the last bit, rendered copy, log update) of two pushrl checkouts on the
same world, users, items and buckets, compared byte for byte (issue 17: the one-push fast path
must decide exactly as the path before it).

For each ``--tree`` a child process builds a synthetic template world (``--seed``), trains a
VW template policy, starts a :class:`~pushrl.serve.server.Server` with the default catalog and
that policy, gives 300 users 0-11 views each, then records ``--n`` one-push template steps
(:meth:`ServerTemplates.apply`, a random user and item, the bucket moving every 40 steps) and
``--n / 4`` whole one-request ``Engine.decide`` passes. Prints one JSON line: the decisions
compared, how many differ (must be 0) and the first difference.

    python benchmarks/template_parity.py --tree OLD --tree NEW [--seed 23] [--n 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path



def _child(seed: int, n: int, out_path: str) -> None:
    import numpy as np

    from pushrl.serve.engine import DecideRow
    from pushrl.units import HOUR
    from template_decide import bench_server  # benchmarks/ is sys.path[0]

    res: list[list[str | None]] = []
    with bench_server(argparse.Namespace(users=600, days=7, seed=seed), bench_users=300,
                      max_views=11, rng_seed=seed) as (srv, rng, t0):
        st = srv.state
        items = [it.item_id for it in st.item_list]
        tpl = srv.engine.templates
        assert tpl is not None
        b0 = t0 // HOUR + 1
        for k in range(n):
            u = np.array([int(rng.integers(len(st.users)))])
            b = np.array([b0 + k // 40], np.int64)
            out = [{"decision_id": f"d{k}", "item_id": items[int(rng.integers(len(items)))]}]
            stm = tpl.apply(st, out, u, b, st.fs.features(u, b), np.ones(1, bool))
            o = out[0]
            res.append([o["template_id"], repr(o["pscore_template"]), o["template_text"],
                        repr(stm)])
        for k in range(n // 4):
            uid = f"b{int(rng.integers(300))}"
            ts = (b0 + n // 40 + 2 + k // 40) * HOUR + 60
            o = srv.engine.decide([DecideRow(uid, st.users[uid], ts)])[0][0]
            res.append([o.get("template_id"), repr(o.get("pscore_template")),
                        o.get("template_text"), None])
        st.pending.clear()
    Path(out_path).write_text(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", required=True)
    ap.add_argument("--seed", type=int, default=23)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        _child(a.seed, a.n, a.child)
        return
    if len(a.tree) != 2:
        ap.error("give exactly two --tree checkouts to compare")
    got = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, t in enumerate(a.tree):
            out = f"{tmp}/{i}.json"
            tree = Path(t).resolve()
            subprocess.run([sys.executable, str(Path(__file__)), "--tree", str(tree),
                            "--seed", str(a.seed), "--n", str(a.n), "--child", out],
                           cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, check=True)
            got.append(json.loads(Path(out).read_text()))
    diff = [i for i, (x, y) in enumerate(zip(got[0], got[1], strict=True)) if x != y]
    print(json.dumps({"benchmark": "template_parity", "seed": a.seed, "trees": a.tree,
                      "decisions": len(got[0]), "differ": len(diff),
                      "arms": len({r[0] for r in got[0]}),
                      "texts": len({r[2] for r in got[0]}),
                      "first_difference": ([got[0][diff[0]], got[1][diff[0]]] if diff
                                           else None)}))


if __name__ == "__main__":
    main()
