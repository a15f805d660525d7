"""The per-chunk known-id check of streamed validation, timed on the installed pandas.

``pushrl.data.validate.isin`` answers a categorical id column from its categories:
``cats.isin(users)`` once per chunk, with ``users`` every known user id. On pandas 3 (string
columns are ``ArrowStringArray``) ``Index.isin`` builds a ``pyarrow`` scalar per *value* in a
Python loop, so each chunk costs O(known users), and a streamed log costs O(users x chunks).
At 1M users x 28 days (645M pushes rows in 1M-row chunks) py-spy put 97-98 % of `pushrl data
validate` and of `pushrl sim fit` (which validates for its fingerprint) in that loop.

This script times one such call (``--users`` known ids, ``--cats`` categories of a chunk)
against a hashed lookup (``users.get_indexer(cats) >= 0``), and checks they agree.

    python benchmarks/validate_isin.py [--users 1000000] [--cats 20000] [--json] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _output import emit_json  # benchmarks/ is sys.path[0]

from pushrl.data.validate import isin


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--cats", type=int, default=20_000)
    ap.add_argument("--json", action="store_true", help="print JSON only")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    a = ap.parse_args()
    users = pd.Index([f"u{i:07d}" for i in range(a.users)])
    ids = [f"u{i:07d}" for i in range(0, 2 * a.cats, 2)]  # half known, half not
    col = pd.Series(pd.Categorical(ids))
    t = time.perf_counter()
    got = isin(col, users)
    t_pushrl = time.perf_counter() - t
    t = time.perf_counter()
    fast = users.get_indexer(col.cat.categories)[col.cat.codes.to_numpy()] >= 0
    t_hash = time.perf_counter() - t
    out = {"benchmark": "validate_isin", "pandas": pd.__version__,
           "users_dtype": str(users.dtype), "known_users": a.users, "chunk_categories": a.cats,
           "pushrl_isin_s": round(t_pushrl, 4), "get_indexer_s": round(t_hash, 4),
           "ratio": round(t_pushrl / max(t_hash, 1e-9), 1),
           "identical": bool(np.array_equal(got, fast)),
           "load_avg": os.getloadavg(), "command": " ".join(["python", *sys.argv])}
    emit_json(out, a.out, echo=a.json)
    if not a.json:
        print(f"pandas {pd.__version__} ({users.dtype}): pushrl.data.validate.isin of "
              f"{a.cats:,} categories against {a.users:,} known ids {t_pushrl:.3f} s, "
              f"get_indexer {t_hash:.3f} s ({out['ratio']}x), identical: {out['identical']}; "
              f"load {' '.join(f'{x:.1f}' for x in out['load_avg'])}")


if __name__ == "__main__":
    main()
