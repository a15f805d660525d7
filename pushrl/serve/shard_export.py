"""``pushrl logs export`` over a sharded state directory: the shards' logs merged into one
pushlog v1 dataset, as one server would have written it.

Each shard's log holds its own users (with their activity, decisions, feedback, triggers
and shadow rows) and a copy of every item and item update (the router broadcasts those):
users and per-user tables are concatenated and sorted by time (stable, so each shard's own
order is kept within a second), items and item updates are taken from shard 0. Decision
ids carry their shard (``s{k}.``), so they are unique across shards; the merge checks it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from pushrl.errors import DataError
from pushrl.serve.shards import Layout


def _cat(frames: list[pd.DataFrame], sort: str | None) -> pd.DataFrame:
    frames = [f for f in frames if len(f)] or frames[:1]
    out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].copy()
    if sort is not None and sort in out:
        out = out.sort_values(sort, kind="stable").reset_index(drop=True)
    return out


def read_sharded(state: str | Path, layout: Layout) -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    """The merged ``(dataset, feedback, shadow)`` of a sharded state (module docstring).

    Raises:
        DataError: a shard has no log, or two shards logged the same decision id or user.
    """
    from pushrl.data.io import Dataset
    from pushrl.serve.export import read_log

    parts = [read_log(layout.shard_dir(Path(state), k)) for k in range(layout.shards)]
    dss = [p[0] for p in parts]
    users = _cat([d.users for d in dss], None)
    dup = users["user_id"][users["user_id"].duplicated()]
    if len(dup):
        raise DataError(f"user {dup.iloc[0]!r} is in more than one shard of {state}: the "
                        "shard layout was changed by hand; export each shard with --state "
                        f"{state}/shard-K instead")
    pushes = _cat([d.pushes for d in dss], "ts")
    dup = pushes["decision_id"][pushes["decision_id"].duplicated()]
    if len(dup):
        raise DataError(f"decision id {dup.iloc[0]!r} is in more than one shard of {state}")
    ds = Dataset(users, dss[0].items, _cat([d.activity for d in dss], "ts"), pushes,
                 meta={**dss[0].meta, "shards": layout.shards},
                 item_updates=dss[0].item_updates,
                 triggers=_cat([d.triggers for d in dss], "event_ts"))
    fb = _cat([p[1] for p in parts], "ts")
    if "seq" in fb:  # each shard numbers its own: renumbered in the merged order
        fb["seq"] = range(1, len(fb) + 1)
    sh = _cat([p[2] for p in parts], None)
    return ds, fb, sh


def export_log(state: str | Path, out: str | Path) -> dict[str, Any]:
    """``pushrl logs export``: a plain server's log (:func:`pushrl.serve.export.export`), or
    a sharded state's shards merged (:func:`read_sharded`)."""
    from pushrl.serve.export import export, write_export
    from pushrl.serve.shards import read_layout

    layout = read_layout(state)
    if layout is None:
        return export(state, out)
    from pushrl.serve.export import read_trigger_shadow, write_trigger_shadow

    counts = write_export(*read_sharded(state, layout), out)
    shadow = [read_trigger_shadow(layout.shard_dir(Path(state), k)) for k in range(layout.shards)]
    return {**counts, **write_trigger_shadow(shadow, counts["out"]), "shards": layout.shards}
