"""The one loader of pushlog v1.1 datasets: read, coerce to the contract's dtypes, write.

Schema problems (a missing table or column, an unparsable or non-UTC timestamp, a wrong
dtype) raise :class:`~pushrl.errors.SchemaError` with one line naming the table, the column
and the fix. Row problems are not handled here: see :mod:`pushrl.data.validate`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pandas.api.types import union_categoricals

from pushrl.data.contract import (
    ALL_TABLES,
    BOOL_OUTCOMES,
    OPTIONAL_TABLES,
    PUSHLOG_VERSION,
    REQUIRED_TABLES,
    SCHEMA,
    TABLES,
    Column,
)
from pushrl.data.fingerprint import fingerprint_tables, legacy_fingerprint
from pushrl.errors import SchemaError

_UTC_SUFFIX = r"(?:Z|[+-]00:?00)$"

_EMPTY_DTYPES = {"id": object, "str": object, "ts": "datetime64[s, UTC]", "bool": "boolean",
                 "float": "float64", "int": "Int64", "list": object}


def empty_table(name: str) -> pd.DataFrame:
    """An empty table ``name`` with the contract's required columns and dtypes."""
    return pd.DataFrame({c.name: pd.Series([], dtype=_EMPTY_DTYPES[c.kind])  # type: ignore[call-overload]
                         for c in SCHEMA[name] if c.required})


@dataclass
class Dataset:
    """A pushlog v1.1 dataset held in memory.

    Attributes:
        users: One row per user; ``user_id`` (str), ``timezone`` (str) and user features.
        items: One row per item; ``item_id`` (str) and item features.
        activity: Organic events sorted by ``ts``; may be empty.
        pushes: Decision opportunities sorted by ``ts``.
        path: Directory the dataset was read from, if any.
        meta: Free-form metadata (``meta.json`` beside the tables), e.g. the generator.
        split: ``None`` for a whole log; for one part of a user split
            (:mod:`pushrl.data.split`) which part, the split and the whole log's fingerprint.
        item_updates: v1.1 price / stock changes sorted by ``ts``; may be empty.
        triggers: v1.1 trigger decisions sorted by ``event_ts``; may be empty.
    """

    users: pd.DataFrame
    items: pd.DataFrame
    activity: pd.DataFrame
    pushes: pd.DataFrame
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    split: dict[str, Any] | None = None
    item_updates: pd.DataFrame = field(default_factory=lambda: empty_table("item_updates"))
    triggers: pd.DataFrame = field(default_factory=lambda: empty_table("triggers"))

    def table(self, name: str) -> pd.DataFrame:
        """Return the table called ``name``."""
        return getattr(self, name)  # type: ignore[no-any-return]

    def fingerprint(self) -> str:
        """Return the content fingerprint of the tables (:mod:`pushrl.data.fingerprint`:
        ``"fp2-"`` + 16 hex digits, independent of row order, so a log streamed, sharded or
        loaded whole has one fingerprint).

        Used to tie fitted simulators, trained policies and OPE reports to their data. The
        optional v1.1 tables count only when they have rows, so a v1 log keeps its v1
        fingerprint.
        """
        return fingerprint_tables({name: self.table(name) for name in ALL_TABLES})

    def legacy_fingerprint(self) -> str:
        """The fingerprint of the format before fp2 (for comparing old cards only)."""
        return legacy_fingerprint({name: self.table(name) for name in ALL_TABLES})

    @property
    def item_ids(self) -> np.ndarray:
        """Item ids in table order, shape ``(n_items,)``."""
        return self.items["item_id"].to_numpy(dtype=object)


def _first_valid(s: pd.Series) -> Any:
    """First non-missing value of ``s`` (None if there is none)."""
    i = s.first_valid_index()
    return None if i is None else s.loc[i]


def to_unix_seconds(ts: pd.Series) -> np.ndarray:
    """Convert a UTC timestamp column to int64 seconds since the epoch, shape ``(n,)``."""
    return ts.dt.tz_convert("UTC").dt.as_unit("s").astype("int64").to_numpy()


def from_unix_seconds(sec: np.ndarray) -> pd.Series:
    """Inverse of :func:`to_unix_seconds`: int64 seconds to a UTC timestamp series."""
    return pd.Series(pd.to_datetime(np.asarray(sec, dtype="int64"), unit="s", utc=True))


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and arrays (anything else as ``str``)."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` (parents created); the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj, indent=1))
    return p


def read_json(path: str | Path, what: str) -> Any:
    """The JSON document at ``path``.

    Raises:
        ValueError: missing file or not JSON, naming it as ``what`` (e.g. ``uplift model``).
    """
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise ValueError(f"{what} {str(p)!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {str(p)!r} is not JSON ({exc})") from None


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, streamed in 1 MB blocks (artifact and model checksums)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _find(dirpath: Path, name: str) -> Path | None:
    for cand in (dirpath / f"{name}.parquet", dirpath / name, dirpath / f"{name}.csv"):
        if cand.exists():
            return cand
    return None


def read_raw(dirpath: str | Path, name: str) -> pd.DataFrame | None:
    """Read table ``name`` from ``dirpath`` as stored (Parquet file, Parquet directory or CSV).

    Returns ``None`` when the table does not exist.
    """
    p = _find(Path(dirpath), name)
    if p is None:
        return None
    try:
        if p.suffix == ".csv":
            return pd.read_csv(p)
        return pd.read_parquet(p)
    except Exception as exc:  # pyarrow/pandas raise many types for corrupt files
        raise _cannot_read(name, p, exc) from None


def table_files(dirpath: str | Path, name: str) -> list[Path]:
    """The files of table ``name``: one file, or the part files of a ``NAME.parquet/`` or
    ``NAME/`` directory in name order (empty when the table does not exist)."""
    p = _find(Path(dirpath), name)
    if p is None:
        return []
    return sorted(p.glob("*.parquet")) if p.is_dir() else [p]


def table_rows(dirpath: str | Path, name: str) -> int | None:
    """Rows of a Parquet table from its footers (no data read); None for CSV or absent."""
    files = table_files(dirpath, name)
    if not files or any(f.suffix == ".csv" for f in files):
        return None
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def _cannot_read(name: str, p: Path, exc: Exception) -> SchemaError:
    return SchemaError(f"table `{name}`: cannot read {p.name} ({type(exc).__name__}: {exc}); "
                       "write it as Parquet or CSV")


def iter_raw(dirpath: str | Path, name: str, chunk_rows: int,
             columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """Table ``name`` as stored, in file order, about ``chunk_rows`` rows at a time.

    Parquet is read by record batches (one row group or less in memory), CSV by
    ``chunksize``; ``columns`` restricts the read to those columns (those that exist).
    Nothing is yielded for an absent table.
    """
    for f in table_files(dirpath, name):
        try:
            if f.suffix == ".csv":
                yield from pd.read_csv(f, chunksize=chunk_rows, usecols=(
                    None if columns is None else lambda c: c in columns))
                continue
            pf = pq.ParquetFile(f)
            cols = None if columns is None else [c for c in pf.schema_arrow.names
                                                 if c in columns]
            for batch in pf.iter_batches(batch_size=chunk_rows, columns=cols):
                yield batch.to_pandas()
        except SchemaError:
            raise
        except Exception as exc:  # pyarrow/pandas raise many types for corrupt files
            raise _cannot_read(name, f, exc) from None


def read_raw_users(dirpath: str | Path, name: str, user_ids: pd.Index | np.ndarray,
                   columns: list[str] | None = None,
                   chunk_rows: int = 1 << 20) -> pd.DataFrame | None:
    """The rows of table ``name`` whose ``user_id`` is in ``user_ids``, as stored.

    Streams the table chunk by chunk and filters each chunk before converting it (memory:
    one Arrow record batch plus the selected rows), so a user sample of a log larger than
    memory can be read. ``user_id`` comes back categorical over ``user_ids``. None when the
    table does not exist.
    """
    files = table_files(dirpath, name)
    if not files:
        return None
    want = pd.Index(np.asarray(user_ids).astype(str))
    value_set = pa.array(want.to_numpy(dtype=object), type=pa.string())
    parts = []
    for f in files:
        chunks = (pd.read_csv(f, chunksize=chunk_rows) if f.suffix == ".csv"
                  else _filtered_batches(f, name, value_set, chunk_rows, columns))
        for chunk in chunks:
            if f.suffix == ".csv":
                chunk = chunk.loc[chunk["user_id"].astype(str).isin(want)
                                  & chunk["user_id"].notna()]
            if len(chunk):
                sel = chunk.reset_index(drop=True)
                sel["user_id"] = pd.Categorical(sel["user_id"].astype(str), categories=want)
                parts.append(sel)
    if not parts:
        return next(iter_raw(dirpath, name, 1, columns)).iloc[:0]
    return concat_frames(parts)


def _filtered_batches(f: Path, name: str, value_set: pa.Array, chunk_rows: int,
                      columns: list[str] | None) -> Iterator[pd.DataFrame]:
    """Record batches of one Parquet file reduced, in Arrow, to rows whose ``user_id`` is
    in ``value_set``."""
    try:
        pf = pq.ParquetFile(f)
        cols = None if columns is None else [c for c in pf.schema_arrow.names if c in columns]
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=cols):
            uid = batch.column("user_id")
            if pa.types.is_dictionary(uid.type):  # test the dictionary, not every row
                hit = pc.is_in(uid.dictionary.cast(pa.string()), value_set=value_set)
                mask = pc.fill_null(pc.take(hit, uid.indices), False)
            else:
                mask = pc.fill_null(pc.is_in(uid.cast(pa.string()), value_set=value_set),
                                    False)
            if pc.any(mask).as_py():
                yield batch.filter(mask).to_pandas()
    except Exception as exc:  # pyarrow/pandas raise many types for corrupt files
        raise _cannot_read(name, f, exc) from None


def concat_frames(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """``pd.concat`` that keeps categorical columns categorical when the parts' categories
    differ (dictionary-encoded ids stay compact instead of becoming Python strings)."""
    out = pd.concat(parts, ignore_index=True)
    for c in parts[0].columns:
        if (all(isinstance(p[c].dtype, pd.CategoricalDtype) for p in parts)
                and not isinstance(out[c].dtype, pd.CategoricalDtype)):
            out[c] = union_categoricals([p[c] for p in parts])
    return out


def _coerce_ts(df: pd.DataFrame, table: str, col: str) -> pd.Series:
    s = df[col]
    where = f"table `{table}`, column `{col}`"
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        if str(s.dtype.tz) not in ("UTC", "utc", "UTC+00:00"):
            raise SchemaError(f"{where}: timestamps are in {s.dtype.tz}, not UTC; "
                              "convert them to UTC before writing")
        return s.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(s.dtype):
        raise SchemaError(f"{where}: timestamps are naive; store them timezone-aware in UTC "
                          "(e.g. 2024-01-01T09:00:00Z)")
    if pd.api.types.is_numeric_dtype(s.dtype):
        raise SchemaError(f"{where}: expected UTC timestamps, got {s.dtype}; "
                          "store ISO 8601 strings ending in Z or a timestamp type")
    txt = s.astype("string")
    bad_utc = ~txt.str.contains(_UTC_SUFFIX, regex=True).fillna(False)
    if bad_utc.any():
        i = int(np.flatnonzero(bad_utc.to_numpy())[0])
        raise SchemaError(f"{where}: value {txt.iloc[i]!r} (row {i}) is not UTC; "
                          "write timestamps in UTC ending in Z or +00:00")
    parsed = pd.to_datetime(txt, format="ISO8601", utc=True, errors="coerce")
    bad = parsed.isna() & txt.notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise SchemaError(f"{where}: unparsable timestamp {txt.iloc[i]!r} (row {i}); use "
                          "ISO 8601 in UTC, e.g. 2024-01-01T09:00:00Z")
    return parsed


def _coerce_bool(s: pd.Series, where: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.astype("boolean")
    if pd.api.types.is_numeric_dtype(s.dtype):
        vals = s.dropna().unique()
        if set(np.asarray(vals, dtype=float).tolist()) <= {0.0, 1.0}:
            return s.astype("Float64").astype("boolean")
    else:
        low = s.astype("string").str.strip().str.lower()
        mapped = low.map({"true": True, "false": False, "1": True, "0": False})
        if (mapped.isna() == low.isna()).all():
            return mapped.astype("boolean")
    bad = s.dropna().iloc[:1].tolist()
    raise SchemaError(f"{where}: expected booleans, got dtype {s.dtype} (e.g. {bad!r}); "
                      "use true/false")


def _coerce_float(s: pd.Series, where: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(s.dtype) or not (
        pd.api.types.is_numeric_dtype(s.dtype) or s.isna().all()
    ):
        conv = pd.to_numeric(s, errors="coerce")
        if (conv.isna() & s.notna()).any():
            bad = s[conv.isna() & s.notna()].iloc[0]
            raise SchemaError(f"{where}: expected numbers, got {bad!r}; write numeric values")
        s = conv
    return s.astype("float64")


def _coerce_list(s: pd.Series, where: str) -> pd.Series:
    def conv(v: Any) -> Any:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return None
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                raise SchemaError(f"{where}: {v[:40]!r} is not a list; write a JSON list "
                                  'such as ["a","b"]') from None
        if not isinstance(v, list | tuple | np.ndarray):
            raise SchemaError(f"{where}: expected a list of item ids, got {type(v).__name__}")
        return [str(x) for x in v]

    return s.map(conv).astype(object)


def _coerce_column(df: pd.DataFrame, table: str, col: Column) -> pd.Series:
    where = f"table `{table}`, column `{col.name}`"
    s = df[col.name]
    if col.kind == "ts":
        out = _coerce_ts(df, table, col.name)
    elif col.kind == "bool":
        out = _coerce_bool(s, where)
    elif col.kind == "float":
        out = _coerce_float(s, where)
    elif col.kind == "int":
        f = _coerce_float(s, where)
        if ((f.dropna() % 1) != 0).any():
            raise SchemaError(f"{where}: expected integers; write whole numbers")
        out = f.astype("Int64")
    elif col.kind == "list":
        out = _coerce_list(s, where)
    elif col.kind in ("id", "str") and isinstance(s.dtype, pd.CategoricalDtype):
        # keep dictionary encoding (millions of repeated ids), with string categories
        out = s.cat.rename_categories([str(c) for c in s.cat.categories])
    elif col.kind == "id":
        if col.name == "decision_id" and pd.api.types.is_integer_dtype(s.dtype):
            # a nullable one (triggers.decision_id of unsent triggers) stays Int64
            out = s.astype("Int64" if s.isna().any() else "int64")
        else:
            out = s.astype("string").astype(object).where(s.notna(), None)
            if pd.api.types.is_float_dtype(s.dtype):  # CSV turned integer ids into floats
                out = s.map(lambda v: None if pd.isna(v) else str(int(v))).astype(object)
    else:  # str
        out = s.astype("string").astype(object).where(s.notna(), None)
    if not col.nullable and out.isna().any():
        i = int(np.flatnonzero(out.isna().to_numpy())[0])
        raise SchemaError(f"{where}: missing value at row {i}; the column may not be empty")
    return out


def coerce_table(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """Check ``df`` against the contract for ``table`` and coerce it to the contract's dtypes.

    Raises:
        SchemaError: a required column is missing, or a column has the wrong dtype.
    """
    for col in SCHEMA[table]:
        if col.required and col.name not in df.columns:
            have = ", ".join(map(str, df.columns[:8]))
            raise SchemaError(f"table `{table}`: missing required column `{col.name}` "
                              f"(has: {have}); add it, see simulator_data/README.md")
    df = df.copy(deep=False)  # (copy-on-write, pandas >= 3: the caller's frame never changes)
    if "Unnamed: 0" in df.columns:
        df = df.drop(columns=["Unnamed: 0"])
    for col in SCHEMA[table]:
        if col.name in df.columns:
            df[col.name] = _coerce_column(df, table, col)
    if table == "users":
        if "timezone" not in df.columns:
            df["timezone"] = "UTC"
        df["timezone"] = df["timezone"].fillna("UTC")
    if table == "pushes":
        for c in BOOL_OUTCOMES:
            if c not in df.columns:
                df[c] = pd.array([pd.NA] * len(df), dtype="boolean")
        if "revenue" not in df.columns:
            df["revenue"] = np.nan
    if table in ("activity", "pushes", "item_updates"):
        df = _stable_sorted(df, "ts")
    elif table == "triggers":
        df = _stable_sorted(df, "event_ts")
    return df


def _stable_sorted(df: pd.DataFrame, col: str) -> pd.DataFrame:
    """``df`` stably sorted by ``col``, with a fresh index (a log written in time order,
    as pushrl writes them, is already sorted: then no rows move)."""
    if df[col].is_monotonic_increasing:  # the stable sort is the identity
        return df.reset_index(drop=True)
    return df.sort_values(col, kind="stable").reset_index(drop=True)


def empty_activity() -> pd.DataFrame:
    """An empty ``activity`` table with the contract's columns and dtypes."""
    return pd.DataFrame({
        "user_id": pd.Series([], dtype=object),
        "ts": pd.Series([], dtype="datetime64[s, UTC]"),
        "event": pd.Series([], dtype=object),
        "item_id": pd.Series([], dtype=object),
        "revenue": pd.Series([], dtype="float64"),
    })


def dataset_dir(dirpath: str | Path) -> Path:
    """``dirpath`` as a Path, checked to be a directory (the dataset readers' first step).

    Raises:
        SchemaError: it is not a directory.
    """
    d = Path(dirpath)
    if not d.is_dir():
        raise SchemaError(f"dataset directory {str(d)!r} does not exist; pass a directory "
                          "with users/items/pushes tables (e.g. `pushrl data synth --out DIR`)")
    return d


def read_tables(dirpath: str | Path) -> dict[str, pd.DataFrame]:
    """Read and coerce the tables of a dataset directory (no row validation): the four core
    tables, plus the optional v1.1 tables that exist (absent ones are not in the result).

    Raises:
        SchemaError: the directory or a required table is missing, or a schema check fails.
    """
    d = dataset_dir(dirpath)
    out: dict[str, pd.DataFrame] = {}
    for name in TABLES:
        raw = read_raw(d, name)
        if raw is None:
            if name in REQUIRED_TABLES:
                raise SchemaError(f"table `{name}` is missing in {d}; add {name}.parquet or "
                                  f"{name}.csv (see simulator_data/README.md)")
            out[name] = empty_activity()
            continue
        out[name] = coerce_table(raw, name)
    for name in OPTIONAL_TABLES:
        raw = read_raw(d, name)
        if raw is not None:
            out[name] = coerce_table(raw, name)
    return out


def read_meta(dirpath: str | Path) -> dict[str, Any]:
    """Return ``meta.json`` of a dataset directory, or an empty dict."""
    p = Path(dirpath) / "meta.json"
    return json.loads(p.read_text()) if p.exists() else {}


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write one table as Parquet (zstd), atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)


def write_dataset(ds: Dataset, dirpath: str | Path) -> Path:
    """Write ``ds`` as a pushlog v1.1 directory of Parquet tables plus ``meta.json`` (the
    optional tables only when they have rows)."""
    d = Path(dirpath)
    d.mkdir(parents=True, exist_ok=True)
    for name in ALL_TABLES:
        if name in OPTIONAL_TABLES and not len(ds.table(name)):
            continue
        write_table(ds.table(name), d / f"{name}.parquet")
    meta = {"format": PUSHLOG_VERSION, **ds.meta}
    (d / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    return d
