"""The one validator of pushlog v1 row contents, with quarantine and a reconciling summary.

:func:`load_dataset` is the entry point every stage uses: it reads the tables
(:mod:`pushrl.data.io` raises on schema problems), rejects bad rows with a reason,
writes them to ``DIR/_rejected/<table>.parquet`` and returns the accepted rows. Nothing is
dropped silently: for every table ``accepted + rejected == read``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import numpy as np
import pandas as pd

from pushrl.data.contract import BOOL_OUTCOMES, EVENTS, TABLES
from pushrl.data.io import Dataset, read_meta, read_tables, to_unix_seconds, write_table

REJECTED_DIR = "_rejected"


@dataclass
class TableCounts:
    """Row accounting of one table: ``accepted + rejected == read``."""

    read: int
    accepted: int
    rejected: int
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class ValidationReport:
    """What :func:`load_dataset` found.

    Attributes:
        counts: Per table row accounting.
        summary: Date range, users, items, send rate, outcome rates and pscore coverage.
        fingerprint: Content hash of the accepted data.
    """

    counts: dict[str, TableCounts]
    summary: dict[str, Any]
    fingerprint: str

    @property
    def n_rejected(self) -> int:
        """Total rejected rows over all tables."""
        return sum(c.rejected for c in self.counts.values())

    def reconciles(self) -> bool:
        """True when ``accepted + rejected == read`` for every table."""
        return all(c.accepted + c.rejected == c.read for c in self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "fingerprint": self.fingerprint,
            "reconciles": self.reconciles(),
            "rejected_total": self.n_rejected,
            "tables": {k: vars(v) for k, v in self.counts.items()},
            "summary": self.summary,
        }


class _Rejector:
    """Collects (row mask, reason) pairs; a row is rejected for its first failing reason."""

    def __init__(self, n: int) -> None:
        self.reason = np.full(n, None, dtype=object)

    def check(self, bad: np.ndarray | pd.Series, reason: str) -> None:
        bad_arr = np.asarray(pd.Series(bad).fillna(False), dtype=bool)
        self.reason[bad_arr & (self.reason == None)] = reason  # noqa: E711

    @property
    def mask(self) -> np.ndarray:
        return self.reason != None  # noqa: E711


_VALID_TZ: frozenset[str] | None = None


def _valid_timezones() -> frozenset[str]:
    global _VALID_TZ
    if _VALID_TZ is None:
        _VALID_TZ = frozenset(available_timezones()) | {"UTC"}
    return _VALID_TZ


def _check_users(df: pd.DataFrame) -> _Rejector:
    r = _Rejector(len(df))
    r.check(df["user_id"].duplicated(keep="first"), "duplicate user_id")
    tzs = df["timezone"].astype(str)
    valid = _valid_timezones()
    unknown = {t for t in tzs.unique() if t not in valid}
    for t in list(unknown):  # available_timezones() can miss aliases that ZoneInfo accepts
        try:
            ZoneInfo(t)
            unknown.discard(t)
        except (KeyError, ValueError):
            pass
    r.check(tzs.isin(unknown), "unknown timezone (use an IANA name such as Europe/Berlin)")
    return r


def _check_items(df: pd.DataFrame) -> _Rejector:
    r = _Rejector(len(df))
    r.check(df["item_id"].duplicated(keep="first"), "duplicate item_id")
    return r


def _check_activity(df: pd.DataFrame, users: pd.Index, items: pd.Index) -> _Rejector:
    r = _Rejector(len(df))
    r.check(~df["user_id"].isin(users), "unknown user_id")
    r.check(df["item_id"].notna() & ~df["item_id"].isin(items), "unknown item_id")
    r.check(~df["event"].isin(EVENTS), "event not in session/view/cart/purchase")
    if "revenue" in df:
        r.check(df["revenue"] < 0, "negative revenue")
    return r


def _check_pushes(df: pd.DataFrame, users: pd.Index, items: pd.Index) -> _Rejector:
    r = _Rejector(len(df))
    r.check(df["decision_id"].duplicated(keep="first"), "duplicate decision_id")
    r.check(~df["user_id"].isin(users), "unknown user_id")
    r.check(df["item_id"].notna() & ~df["item_id"].isin(items), "unknown item_id")
    sent = df["sent"].fillna(False).to_numpy(dtype=bool)
    r.check(sent & df["item_id"].isna().to_numpy(), "sent without item_id")
    if "pscore" in df:
        ps = df["pscore"]
        r.check(ps.notna() & ((ps <= 0) | (ps > 1)), "pscore outside (0, 1]")
    r.check(df["revenue"] < 0, "negative revenue")
    outcome_on_unsent = np.zeros(len(df), dtype=bool)
    for c in BOOL_OUTCOMES:
        outcome_on_unsent |= df[c].fillna(False).to_numpy(dtype=bool)
    outcome_on_unsent |= (df["revenue"].fillna(0) > 0).to_numpy()
    r.check(~sent & outcome_on_unsent, "outcomes on unsent row")
    if "candidates" in df and df["candidates"].notna().any():
        item_set = set(items)
        bad = df["candidates"].map(
            lambda c: c is not None and (len(c) == 0 or any(x not in item_set for x in c))
        )
        r.check(bad, "candidates empty or with unknown item_id")
        in_cands = [
            c is None or it is None or it in c
            for c, it in zip(df["candidates"], df["item_id"], strict=True)
        ]
        r.check(~np.asarray(in_cands, dtype=bool), "item_id not among candidates")
    return r


def summarize(ds: Dataset) -> dict[str, Any]:
    """Summary statistics of an accepted dataset (all plain Python types)."""
    p = ds.pushes
    out: dict[str, Any] = {
        "users": len(ds.users),
        "items": len(ds.items),
        "activity_events": len(ds.activity),
        "decisions": len(p),
    }
    ts = pd.concat([p["ts"], ds.activity["ts"]]) if len(ds.activity) else p["ts"]
    out["date_range"] = [str(ts.min()), str(ts.max())] if len(ts) else [None, None]
    sent = p["sent"].fillna(False).to_numpy(dtype=bool)
    out["sent"] = int(sent.sum())
    out["send_rate"] = float(sent.mean()) if len(p) else 0.0
    rates: dict[str, float | None] = {}
    for c in (*BOOL_OUTCOMES,):
        v = p.loc[sent, c]
        rates[f"{c}_rate"] = float(v.astype("Float64").mean()) if v.notna().any() else None
    rev = p.loc[sent, "revenue"].fillna(0)
    rates["revenue_per_send"] = float(rev.mean()) if sent.any() else None
    out["outcomes"] = rates
    out["pscore_coverage"] = float(p["pscore"].notna().mean()) if "pscore" in p and len(p) else 0.0
    out["timezones"] = int(ds.users["timezone"].nunique())
    return out


def validate_tables(tables: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame],
                                                              dict[str, pd.DataFrame],
                                                              dict[str, TableCounts]]:
    """Split coerced tables into accepted and rejected rows.

    Returns:
        ``(accepted, rejected, counts)``; rejected frames carry a ``reason`` column.
    """
    accepted: dict[str, pd.DataFrame] = {}
    rejected: dict[str, pd.DataFrame] = {}
    counts: dict[str, TableCounts] = {}

    def split(name: str, rej: _Rejector) -> None:
        df = tables[name]
        m = rej.mask
        accepted[name] = df.loc[~m].reset_index(drop=True)
        bad = df.loc[m].copy()
        bad["reason"] = rej.reason[m]
        rejected[name] = bad.reset_index(drop=True)
        reasons = bad["reason"].value_counts().to_dict() if len(bad) else {}
        counts[name] = TableCounts(len(df), int((~m).sum()), int(m.sum()),
                                   {str(k): int(v) for k, v in reasons.items()})

    split("users", _check_users(tables["users"]))
    split("items", _check_items(tables["items"]))
    users = pd.Index(accepted["users"]["user_id"])
    items = pd.Index(accepted["items"]["item_id"])
    split("activity", _check_activity(tables["activity"], users, items))
    split("pushes", _check_pushes(tables["pushes"], users, items))
    return accepted, rejected, counts


def load_dataset(dirpath: str | Path, *, quarantine: bool = True) -> tuple[Dataset,
                                                                           ValidationReport]:
    """Read, validate and quarantine a pushlog v1 dataset: the loader every stage uses.

    Args:
        dirpath: Dataset directory.
        quarantine: Write rejected rows to ``DIR/_rejected/<table>.parquet`` (and remove
            stale files for tables with no rejections).

    Returns:
        The accepted rows as a :class:`Dataset`, and the :class:`ValidationReport`.

    Raises:
        SchemaError: on any schema problem (one line, names table, column and fix).
    """
    d = Path(dirpath)
    tables = read_tables(d)
    accepted, rejected, counts = validate_tables(tables)
    if quarantine:
        for name in TABLES:
            target = d / REJECTED_DIR / f"{name}.parquet"
            if len(rejected[name]):
                write_table(rejected[name], target)
            elif target.exists():
                target.unlink()
    ds = Dataset(accepted["users"], accepted["items"], accepted["activity"], accepted["pushes"],
                 path=d, meta=read_meta(d))
    report = ValidationReport(counts, summarize(ds), ds.fingerprint())
    return ds, report


def dataset_span_seconds(ds: Dataset) -> tuple[int, int]:
    """First and last decision time of ``ds`` as unix seconds."""
    s = to_unix_seconds(ds.pushes["ts"])
    return int(s.min()), int(s.max())
