"""The one content fingerprint of a pushlog v1 log, computed alike whole or in pieces.

A fingerprint ties fitted simulators, trained policies, OPE reports and user splits to the
rows they saw; the deployment gate's held-out rule (:func:`pushrl.data.split.may_share_rows`)
compares them. Large logs are validated chunk by chunk, trained on shard by shard or sampled,
so the definition must not depend on how the rows arrive:

* each row of a table is hashed by :func:`pandas.util.hash_pandas_object` over its columns
  in sorted name order (list-valued columns, e.g. ``candidate_items``, are named in the hash
  but their values are not hashed);
* a table's rows are combined as a **multiset**: their count and two sums modulo 2**64 (of
  the row hashes and of a bijective mix of them, 128 bits together), so any row order,
  chunking or sharding of the same accepted rows gives the same value;
* the fingerprint is ``"fp2-"`` + 16 hex digits of sha256 over every table's
  ``name|rows|columns|sum1|sum2``.

Fingerprints written before this definition (16 hex digits, no prefix, the tables hashed
in row order) are *legacy*: :func:`legacy_fingerprint` still computes them for a log held
whole, so an old card's lineage can be compared when the evaluated log is loaded whole
(:func:`same_data`); elsewhere the comparison is refused with a message to retrain.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from pushrl.data.contract import FINGERPRINT_VERSION, OPTIONAL_TABLES, TABLES

#: Prefix of the current fingerprint format.
PREFIX = "fp2-"
_LEGACY = re.compile(r"^[0-9a-f]{16}$")
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def is_legacy(fp: object) -> bool:
    """True for a fingerprint of the format before ``fp2`` (16 hex digits, row-order hash)."""
    return isinstance(fp, str) and bool(_LEGACY.match(fp))


def _nested(df: pd.DataFrame) -> list[str]:
    """Columns whose values are lists or arrays (not hashable by pandas)."""
    out = []
    for c in df.columns:
        if df[c].dtype == object:
            i = df[c].first_valid_index()
            if i is not None and isinstance(df[c].loc[i], list | np.ndarray):
                out.append(c)
    return out


def row_hashes(df: pd.DataFrame) -> np.ndarray:
    """One uint64 per row, shape ``(len(df),)``: the row's values over its non-list columns
    in sorted name order (independent of the row's position and of column order)."""
    flat = sorted(set(map(str, df.columns)) - set(_nested(df)))
    if not len(df) or not flat:
        return np.zeros(len(df), dtype=np.uint64)
    return pd.util.hash_pandas_object(df[flat], index=False).to_numpy(dtype=np.uint64)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (a bijection of uint64), for the second independent sum."""
    with np.errstate(over="ignore"):
        z = (h ^ (h >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


class Fingerprint:
    """Accumulates the fingerprint of a log fed table piece by table piece, in any order.

    ``fp.add("pushes", chunk)`` for every chunk (or shard) of every table, then
    :meth:`digest`. Feeding the same accepted rows in any split and order gives the same
    digest as :meth:`pushrl.data.io.Dataset.fingerprint` of the whole log.
    """

    def __init__(self) -> None:
        self._tables: dict[str, tuple[int, str, int, int]] = {}

    def add(self, name: str, df: pd.DataFrame, mask: np.ndarray | None = None) -> np.ndarray:
        """Add the rows of ``df`` (those where ``mask``, shape ``(len(df),)``, is True when
        given) to table ``name``; returns the rows' hashes (all rows of ``df``)."""
        h = row_hashes(df)
        self.add_hashes(name, df, h if mask is None else h[mask])
        return h

    def add_hashes(self, name: str, df: pd.DataFrame, h: np.ndarray) -> None:
        """Add rows already hashed by :func:`row_hashes` (``df`` gives the columns)."""
        cols = ",".join(sorted(map(str, df.columns)))
        n, c, s1, s2 = self._tables.get(name, (0, cols, 0, 0))
        if c != cols:
            raise ValueError(f"table {name}: columns {cols} differ from an earlier piece's {c}")
        h = np.asarray(h, dtype=np.uint64)
        with np.errstate(over="ignore"):
            a = int(h.sum(dtype=np.uint64)) if h.size else 0
            b = int(_mix(h).sum(dtype=np.uint64)) if h.size else 0
        self._tables[name] = (n + h.size, c, (s1 + a) % 2**64, (s2 + b) % 2**64)

    def digest(self) -> str:
        """The fingerprint: ``"fp2-"`` + 16 hex digits (tables never fed count as empty)."""
        h = hashlib.sha256(f"pushlog-fp2|{FINGERPRINT_VERSION}".encode())
        for name in (*TABLES, *OPTIONAL_TABLES):
            n, cols, s1, s2 = self._tables.get(name, (0, "", 0, 0))
            if name in OPTIONAL_TABLES and not n:
                continue  # a log without the v1.1 tables keeps its v1 fingerprint
            h.update(f"|{name}|{n}|{cols}|{s1:016x}|{s2:016x}".encode())
        return PREFIX + h.hexdigest()[:16]


def fingerprint_tables(tables: Mapping[str, pd.DataFrame]) -> str:
    """The fingerprint of whole tables (``{name: frame}`` for every name in TABLES, and the
    optional v1.1 tables when present)."""
    fp = Fingerprint()
    for name in (*TABLES, *OPTIONAL_TABLES):
        if name in tables:
            fp.add(name, tables[name])
    return fp.digest()


def legacy_fingerprint(tables: Mapping[str, pd.DataFrame]) -> str:
    """The fingerprint before ``fp2`` (16 hex digits; rows hashed in table order, so only a
    log held whole in the loader's order reproduces it). For comparing old cards only."""
    h = hashlib.sha256(FINGERPRINT_VERSION.encode())
    for name in TABLES:
        df = tables[name]
        h.update(name.encode())
        h.update(str(len(df)).encode())
        h.update(",".join(map(str, df.columns)).encode())
        hashable = df.drop(columns=_nested(df))
        if len(hashable):
            h.update(pd.util.hash_pandas_object(hashable, index=False).values.tobytes())
    return h.hexdigest()[:16]


def same_data(stored: object, current: str,
              legacy: Callable[[], str] | None = None) -> bool:
    """Whether a stored fingerprint (a card's, a fitted simulator's) is the current log's.

    Args:
        stored: The stored fingerprint (current or legacy format, or None).
        current: The log's fingerprint (:class:`Fingerprint` definition).
        legacy: Computes the log's :func:`legacy_fingerprint` (e.g.
            ``ds.legacy_fingerprint`` of a log loaded whole); None when the log was
            streamed, sharded or sampled, so a legacy ``stored`` cannot match.
    """
    if not isinstance(stored, str):
        return False
    if is_legacy(stored):
        return legacy is not None and stored == legacy()
    return stored == current
