"""A seeded user sample of a log, read without loading the rest (bounded memory).

Stages that learn population-level models (the simulator) can fit on a sample of users
when the log is larger than memory. The sample is the ``n`` accepted users with the
smallest seeded hash of their ``user_id``: it depends only on the ids and the seed (not on
row order or file layout), and a smaller sample is a subset of a larger one. Only the
sampled users' rows of ``activity`` and ``pushes`` are converted (filtered in Arrow, chunk
by chunk), then validated by the same rules as :func:`~pushrl.data.validate.load_dataset`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushrl.data.io import (
    Dataset,
    coerce_table,
    dataset_dir,
    empty_activity,
    read_meta,
    read_raw,
    read_raw_users,
)
from pushrl.data.split import UserSplit
from pushrl.data.validate import (
    TsBound,
    ValidationReport,
    _check_users,
    load_dataset,
    log_fingerprint,
    should_stream,
    summarize,
    ts_range,
    validate_tables,
)
from pushrl.errors import SchemaError

#: Users above which `pushrl sim fit` samples by default.
SAMPLE_ABOVE = 20_000
#: Default sample size when sampling.
SAMPLE_USERS = 20_000


def user_hash(user_ids: np.ndarray | pd.Series, seed: int) -> np.ndarray:
    """Seeded 64-bit hash of each user id, shape ``(n,)`` uint64 (stable across runs)."""
    key = f"pushrl{int(seed) % 10**10:010d}"
    return pd.util.hash_array(np.asarray(user_ids).astype(str).astype(object), hash_key=key)


def sample_user_ids(user_ids: np.ndarray | pd.Series, n: int, seed: int) -> np.ndarray:
    """The ``n`` ids with the smallest :func:`user_hash` (ties by id), in that order."""
    ids = np.asarray(user_ids).astype(str)
    h = user_hash(ids, seed)
    order = np.lexsort((ids, h))
    return ids[order[:n]]


def load_user_sample(dirpath: str | Path, n: int, *, seed: int = 0, min_ts: TsBound = None,
                     max_ts: TsBound = None, split: UserSplit | None = None,
                     lineage: bool = True) -> tuple[Dataset, ValidationReport, dict[str, Any]]:
    """Read and validate the rows of a seeded sample of ``n`` users.

    ``users`` and ``items`` are read whole; ``activity`` and ``pushes`` only for the sampled
    users. Rows are checked by the loader's rules; rejected rows are counted in the report
    but not quarantined (run `pushrl data validate` on the whole log for that), and a
    ``decision_id`` is checked for duplicates within the sample only.

    Lineage (what the deployment gate's held-out rule compares,
    :func:`pushrl.data.split.may_share_rows`): ``ds.split`` records the sample as a part of
    the whole log, ``{"by": "sample", ..., "of": <the whole log's fingerprint>}`` (from
    :func:`~pushrl.data.validate.log_fingerprint`: a cache left by `pushrl data validate`,
    else one streamed pass), or with ``split`` that part's record (``of`` the whole log) plus
    ``sample``. The report's fingerprint is the returned data's.

    Args:
        split: Keep only this part of a user split of the sampled users.
        lineage: False skips the whole log's fingerprint (``of`` None: the gate then cannot
            tell this data from the log it came from; for tests and benchmarks).

    Returns:
        The sampled :class:`Dataset`, its :class:`ValidationReport` (``summary["sample"]``)
        and the sample description (``users``, ``of_users``, ``seed``, ``method``, ``of``).

    Raises:
        SchemaError: a missing table or a schema problem.
    """
    d = dataset_dir(dirpath)
    raw = {name: read_raw(d, name) for name in ("users", "items")}
    for name, df in raw.items():
        if df is None:
            raise SchemaError(f"table `{name}` is missing in {d}; add {name}.parquet or "
                              f"{name}.csv (see simulator_data/README.md)")
    users = coerce_table(raw["users"], "users")  # type: ignore[arg-type]
    ok_users = users.loc[~_check_users(users).mask, "user_id"].astype(str).to_numpy()
    ids = sample_user_ids(ok_users, n, seed)
    act = read_raw_users(d, "activity", ids)
    push = read_raw_users(d, "pushes", ids)
    if push is None:
        raise SchemaError(f"table `pushes` is missing in {d}; add pushes.parquet or "
                          "pushes.csv (see simulator_data/README.md)")
    keep = users["user_id"].astype(str).isin(ids).to_numpy()
    tables = {"users": users.loc[keep].reset_index(drop=True),
              "items": coerce_table(raw["items"], "items"),  # type: ignore[arg-type]
              "activity": (empty_activity() if act is None else coerce_table(act, "activity")),
              "pushes": coerce_table(push, "pushes")}
    del act, push
    meta = read_meta(d)
    window = ts_range(min_ts, max_ts, meta)
    accepted, _, counts = validate_tables(tables, window)
    ds = Dataset(accepted["users"], accepted["items"], accepted["activity"],
                 accepted["pushes"], path=d, meta=meta)
    info: dict[str, Any] = {
        "users": len(ids), "of_users": int(ok_users.size), "seed": int(seed),
        "method": "the users with the smallest seeded hash of user_id "
                  "(pushrl.data.sample.user_hash)",
        "rows_validated": "sampled users only (no quarantine written)",
        "of": log_fingerprint(d) if lineage else None}
    if split is not None:
        ds = split.apply(ds, of=info["of"])
        assert ds.split is not None
        ds.split["of"] = info["of"]
        ds.split["sample"] = {k: info[k] for k in ("users", "of_users", "seed")}
    else:
        ds.split = {"by": "sample", "users": info["users"], "of_users": info["of_users"],
                    "seed": info["seed"], "of": info["of"], "n_users": len(ds.users)}
    summary = {**summarize(ds), "ts_range": [str(window[0]), str(window[1])], "sample": info,
               "split": ds.split}
    return ds, ValidationReport(counts, summary, ds.fingerprint()), info


def load_bounded(dirpath: str | Path, *, sample_users: int | None = None, seed: int = 0,
                 split: UserSplit | None = None
                 ) -> tuple[Dataset, ValidationReport, dict[str, Any] | None]:
    """Load a log for a stage that needs its rows in memory (`pushrl evaluate`, `pushrl sim
    validate`): whole, or a seeded user sample when it is too large.

    Args:
        sample_users: Users to sample; None = :data:`SAMPLE_USERS` when the log has more
            than :data:`~pushrl.data.validate.STREAM_ROWS` decisions
            (:func:`~pushrl.data.validate.should_stream`), else the whole log; 0 = whole.
        seed: Seed of the sample.
        split: Load only this part of a user split.

    Returns:
        The data, its report and the sample description (None when loaded whole).
    """
    if sample_users is None:
        sample_users = SAMPLE_USERS if should_stream(dirpath) else 0
    if sample_users:
        return load_user_sample(dirpath, sample_users, seed=seed, split=split)
    ds, report = load_dataset(dirpath, split=split)
    return ds, report, None


def sample_of(ds: Dataset) -> dict[str, Any] | None:
    """The sample a dataset is (``users``, ``of_users``, ``seed``), or None for a whole log
    or a whole part of a split."""
    sp = ds.split or {}
    if sp.get("by") == "sample":
        return {k: sp[k] for k in ("users", "of_users", "seed")}
    got = sp.get("sample")
    return dict(got) if isinstance(got, dict) else None
