"""User shards of a log: the unit of bounded-memory stages (featurisation, bandit rounds).

A user's features depend only on that user's rows (:class:`~pushrl.data.features.FeatureState`
is per user), so a log can be replayed one group of users at a time with memory bounded by
the group. Two layouts:

* **user parts** (``pushrl data synth`` above ``--part-users``): ``users``, ``activity`` and
  ``pushes`` are directories of part files where part ``k`` of every table holds the same
  users (``meta.json`` ``user_parts``); a shard is a part, read file by file.
* anything else: shard ``j`` of ``K`` is the users whose seeded hash
  (:func:`~pushrl.data.sample.user_hash`, seed 0) is ``j`` modulo ``K``, read by filtering
  each table chunk by chunk (one scan of the log per shard).

Each shard is coerced and validated by the loader's rules
(:func:`~pushrl.data.validate.validate_tables`) against its own users and the whole items
table; cross-shard checks (a ``decision_id`` repeated in two shards) are
`pushrl data validate`'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pushrl.data.io import (
    Dataset,
    coerce_table,
    empty_activity,
    read_meta,
    read_raw,
    read_raw_users,
    table_files,
    table_rows,
)
from pushrl.data.sample import user_hash
from pushrl.data.validate import TableCounts, TsBound, ts_range, validate_tables
from pushrl.errors import SchemaError

#: Users per hash shard of a log without user parts.
SHARD_USERS = 10_000


@dataclass(frozen=True)
class ShardPlan:
    """How a log splits into user shards.

    Attributes:
        path: Dataset directory.
        n_shards: Number of shards (1 = the whole log).
        layout: ``parts`` (aligned part files) or ``hash`` (seeded hash of ``user_id``).
    """

    path: Path
    n_shards: int
    layout: str


def user_parts(dirpath: str | Path) -> int:
    """Number of aligned user parts (``meta.json`` ``user_parts`` whose files exist), else 0."""
    d = Path(dirpath)
    k = int(read_meta(d).get("user_parts") or 0)
    if k > 1 and all(len(table_files(d, t)) == k for t in ("users", "pushes")) and (
            len(table_files(d, "activity")) in (0, k)):
        return k
    return 0


def plan(dirpath: str | Path, shard_users: int = SHARD_USERS) -> ShardPlan:
    """The shard plan of a log: its user parts, else ``ceil(users / shard_users)`` hash
    shards (1 when the users fit in one shard or the users table is not Parquet)."""
    d = Path(dirpath)
    k = user_parts(d)
    if k:
        return ShardPlan(d, k, "parts")
    n = table_rows(d, "users") or 0
    return ShardPlan(d, max(1, -(-n // shard_users)), "hash")


def _missing(d: Path, name: str) -> SchemaError:
    return SchemaError(f"table `{name}` is missing in {d}; add {name}.parquet or {name}.csv "
                       "(see simulator_data/README.md)")


def iter_shards(p: ShardPlan, *, min_ts: TsBound = None, max_ts: TsBound = None,
                ) -> Iterator[tuple[Dataset, dict[str, TableCounts]]]:
    """Each shard of ``p`` as a validated :class:`Dataset` (accepted rows) with its counts.

    Raises:
        SchemaError: a missing table or a schema problem.
    """
    d = p.path
    meta = read_meta(d)
    window = ts_range(min_ts, max_ts, meta)
    items_raw = read_raw(d, "items")
    if items_raw is None:
        raise _missing(d, "items")
    items = coerce_table(items_raw, "items")
    if p.layout == "parts":
        acts = table_files(d, "activity")
        for k, (uf, pf) in enumerate(zip(table_files(d, "users"), table_files(d, "pushes"),
                                         strict=True)):
            tables = {"users": coerce_table(pd.read_parquet(uf), "users"), "items": items,
                      "activity": (coerce_table(pd.read_parquet(acts[k]), "activity")
                                   if acts else empty_activity()),
                      "pushes": coerce_table(pd.read_parquet(pf), "pushes")}
            yield _validated(tables, window, d, meta)
        return
    users_raw = read_raw(d, "users")
    if users_raw is None:
        raise _missing(d, "users")
    users = coerce_table(users_raw, "users")
    ids = users["user_id"].astype(str).to_numpy()
    shard = (user_hash(ids, 0) % np.uint64(p.n_shards)).astype(np.int64)
    for j in range(p.n_shards):
        want = ids[shard == j]
        act = read_raw_users(d, "activity", want) if p.n_shards > 1 else read_raw(d, "activity")
        push = read_raw_users(d, "pushes", want) if p.n_shards > 1 else read_raw(d, "pushes")
        if push is None:
            raise _missing(d, "pushes")
        tables = {"users": users.loc[shard == j].reset_index(drop=True), "items": items,
                  "activity": (empty_activity() if act is None
                               else coerce_table(act, "activity")),
                  "pushes": coerce_table(push, "pushes")}
        yield _validated(tables, window, d, meta)


def _validated(tables: dict[str, pd.DataFrame], window: tuple[pd.Timestamp, pd.Timestamp],
               d: Path, meta: dict[str, object]) -> tuple[Dataset, dict[str, TableCounts]]:
    accepted, _, counts = validate_tables(tables, window)
    return Dataset(accepted["users"], accepted["items"], accepted["activity"],
                   accepted["pushes"], path=d, meta=dict(meta)), counts
