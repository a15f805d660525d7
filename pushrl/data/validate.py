"""The one validator of pushlog v1 row contents, with quarantine and a reconciling summary.

:func:`load_dataset` is the entry point every stage uses: it reads the tables
(:mod:`pushrl.data.io` raises on schema problems), rejects bad rows with a reason,
writes them to ``DIR/_rejected/<table>.parquet`` and returns the accepted rows. Nothing is
dropped silently: for every table ``accepted + rejected == read``.

Event and decision times must fall in a plausible window (:func:`ts_range`: by default
2000-01-01 to one year after today; ``meta.json`` ``ts_range`` or the ``min_ts``/``max_ts``
arguments of :func:`load_dataset` override it): one row dated 1970 or 2200 would otherwise
stretch every per-hour statistic over centuries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from pushrl.data.contract import (
    BOOL_OUTCOMES,
    EVENTS,
    PROPENSITY_NEEDS,
    TABLES,
    declared_send_pscore,
)
from pushrl.data.io import Dataset, read_meta, read_tables, write_table
from pushrl.data.timezones import zone_names
from pushrl.data.split import UserSplit
from pushrl.errors import DataError

REJECTED_DIR = "_rejected"
#: Earliest accepted timestamp by default (the latest is one year after now).
DEFAULT_MIN_TS = "2000-01-01T00:00:00Z"
#: ``meta.json`` key overriding the accepted window: ``["2000-01-01T00:00:00Z", "..."]``.
TS_RANGE_KEY = "ts_range"
TS_REASON = "ts outside the accepted range (see --min-ts/--max-ts)"

TsBound: TypeAlias = str | pd.Timestamp | None


def ts_range(lo: TsBound = None, hi: TsBound = None,
             meta: dict[str, Any] | None = None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The accepted ``[lo, hi]`` window of ``ts`` (UTC).

    Each bound is, in order of precedence: the argument, ``meta.json`` ``ts_range``, the
    default (:data:`DEFAULT_MIN_TS`, and one year after now).

    Raises:
        DataError: a bound is not a timestamp, or ``lo >= hi``.
    """
    declared = (meta or {}).get(TS_RANGE_KEY) or [None, None]
    if not isinstance(declared, list | tuple) or len(declared) != 2:
        raise DataError(f"meta.json `{TS_RANGE_KEY}` must be [first, last] timestamps, "
                        f"got {declared!r}")
    now = pd.Timestamp.now(tz="UTC").normalize()
    bounds = []
    for name, arg, dec, default in (("--min-ts", lo, declared[0], pd.Timestamp(DEFAULT_MIN_TS)),
                                    ("--max-ts", hi, declared[1],
                                     now + pd.Timedelta(days=365))):
        v = arg if arg is not None else dec
        if v is None:
            bounds.append(default)
            continue
        try:
            t = pd.Timestamp(v)
        except (ValueError, TypeError):
            raise DataError(f"{name}: {v!r} is not a timestamp; write e.g. "
                            "2000-01-01T00:00:00Z") from None
        bounds.append(t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC"))
    if not bounds[0] < bounds[1]:
        raise DataError(f"--min-ts {bounds[0]} must be before --max-ts {bounds[1]}")
    return bounds[0], bounds[1]


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


def _check_users(df: pd.DataFrame) -> _Rejector:
    r = _Rejector(len(df))
    r.check(df["user_id"].duplicated(keep="first"), "duplicate user_id")
    tzs = df["timezone"].astype(str)
    # the server's rule (serve.state.valid_timezone): data it would refuse never trains a policy
    r.check(~tzs.isin(zone_names()), "unknown timezone (use an IANA name such as Europe/Berlin)")
    return r


def _check_items(df: pd.DataFrame) -> _Rejector:
    r = _Rejector(len(df))
    r.check(df["item_id"].duplicated(keep="first"), "duplicate item_id")
    return r


def _check_ts(r: _Rejector, df: pd.DataFrame,
              window: tuple[pd.Timestamp, pd.Timestamp]) -> None:
    r.check((df["ts"] < window[0]) | (df["ts"] > window[1]), TS_REASON)


def _check_revenue(r: _Rejector, df: pd.DataFrame) -> None:
    rev = df["revenue"].to_numpy(np.float64, na_value=np.nan)
    r.check(np.isinf(rev), "revenue not finite")
    r.check(rev < 0, "negative revenue")


def _check_activity(df: pd.DataFrame, users: pd.Index, items: pd.Index,
                    window: tuple[pd.Timestamp, pd.Timestamp]) -> _Rejector:
    r = _Rejector(len(df))
    r.check(~df["user_id"].isin(users), "unknown user_id")
    r.check(df["item_id"].notna() & ~df["item_id"].isin(items), "unknown item_id")
    r.check(~df["event"].isin(EVENTS), "event not in session/view/cart/purchase")
    _check_ts(r, df, window)
    if "revenue" in df:
        _check_revenue(r, df)
    return r


def _check_propensities(r: _Rejector, df: pd.DataFrame, sent: np.ndarray) -> None:
    """Propensities in (0, 1] (``pscore_send`` in [0, 1] on unsent rows: a send that was
    never possible); logged on every sent row once logged at all; item level <= 1."""
    cols = {}
    for c in ("pscore", "pscore_send"):
        if c in df and df[c].notna().any():
            v = df[c].to_numpy(np.float64, na_value=np.nan)
            lo_ok = (v >= 0) & ~sent if c == "pscore_send" else np.zeros(len(v), bool)
            r.check(~np.isnan(v) & (((v <= 0) & ~lo_ok) | (v > 1)), f"{c} outside (0, 1]")
            # a propensity logged on some rows but not on a sent one would make a stage
            # guess it (the joint pscore as item pscore, or a send probability of 1)
            r.check(sent & np.isnan(v), f"{c} missing on a sent row")
            cols[c] = v
    if len(cols) == 2:
        r.check(sent & (cols["pscore"] > cols["pscore_send"] * (1 + 1e-9)),
                "pscore above pscore_send (item-level propensity > 1)")


def _check_pushes(df: pd.DataFrame, users: pd.Index, items: pd.Index,
                  window: tuple[pd.Timestamp, pd.Timestamp]) -> _Rejector:
    r = _Rejector(len(df))
    r.check(df["decision_id"].duplicated(keep="first"), "duplicate decision_id")
    r.check(~df["user_id"].isin(users), "unknown user_id")
    r.check(df["item_id"].notna() & ~df["item_id"].isin(items), "unknown item_id")
    sent = df["sent"].fillna(False).to_numpy(dtype=bool)
    r.check(sent & df["item_id"].isna().to_numpy(), "sent without item_id")
    _check_ts(r, df, window)
    _check_propensities(r, df, sent)
    _check_revenue(r, df)
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
    out["propensities"] = propensity_support(ds)
    return out


def propensity_support(ds: Dataset) -> dict[str, Any]:
    """Which propensities an accepted dataset has, and which stages they support.

    Returns:
        ``pscore`` / ``pscore_send`` (``logged``, ``declared P`` or ``missing``),
        ``item_pscore`` (how the item level is obtained, or None), ``needs``
        (:data:`~pushrl.data.contract.PROPENSITY_NEEDS`), ``supports`` (stage -> bool) and
        ``missing`` (one sentence per unsupported stage, with the fix).
    """
    p = ds.pushes
    sent = p["sent"].fillna(False).to_numpy(bool)

    def logged(c: str) -> np.ndarray:
        return (p[c].notna().to_numpy() if c in p else np.zeros(len(p), bool))

    joint, send = bool(logged("pscore").any()), bool(logged("pscore_send").any())
    declared = declared_send_pscore(ds.meta)
    unsent_ok = bool((logged("pscore") | logged("pscore_send") | sent).all())
    item_ok = joint and (send or declared is not None)
    missing = []
    if not joint:
        missing.append("no `pscore`: OPE and bandit training need the logging probability of "
                       "each logged action; log it")
    if joint and not item_ok:
        missing.append("no `pscore_send`: item-level OPE and bandit training need it (item "
                       "propensity = pscore / pscore_send); log it, or declare a logger that "
                       "sent with a known constant probability P (1 = every logged "
                       "opportunity was sent): `pushrl data validate DIR "
                       "--declare-send-pscore P`")
    if not send:
        missing.append("no `pscore_send`: timing OPE needs the probability of sending on "
                       "every sent row; log it")
    elif not unsent_ok:
        missing.append("unsent rows without `pscore` or `pscore_send`: timing OPE needs one "
                       "of them on every unsent row")
    send_src = "logged" if send else ("missing" if declared is None else f"declared {declared:g}")
    return {
        "pscore": "logged" if joint else "missing",
        "pscore_send": send_src,
        "item_pscore": (None if not item_ok else "pscore / pscore_send" if send
                        else f"pscore / {declared:g} (declared send probability)"),
        "needs": dict(PROPENSITY_NEEDS),
        "supports": {"sim fit": True, "timing OPE": joint and send and unsent_ok,
                     "item OPE": item_ok, "bandit training": item_ok},
        "missing": missing,
    }


def validate_tables(tables: dict[str, pd.DataFrame],
                    window: tuple[pd.Timestamp, pd.Timestamp] | None = None,
                    ) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame],
                               dict[str, TableCounts]]:
    """Split coerced tables into accepted and rejected rows.

    Args:
        tables: Coerced tables (:func:`~pushrl.data.io.read_tables`).
        window: Accepted ``[first, last]`` of ``ts``; None = :func:`ts_range` defaults.

    Returns:
        ``(accepted, rejected, counts)``; rejected frames carry a ``reason`` column.
    """
    window = window or ts_range()
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
    split("activity", _check_activity(tables["activity"], users, items, window))
    split("pushes", _check_pushes(tables["pushes"], users, items, window))
    return accepted, rejected, counts


def load_dataset(dirpath: str | Path, *, quarantine: bool = True, min_ts: TsBound = None,
                 max_ts: TsBound = None, split: UserSplit | None = None
                 ) -> tuple[Dataset, ValidationReport]:
    """Read, validate and quarantine a pushlog v1 dataset: the loader every stage uses.

    Args:
        dirpath: Dataset directory.
        quarantine: Write rejected rows to ``DIR/_rejected/<table>.parquet`` (and remove
            stale files for tables with no rejections).
        min_ts: Earliest accepted ``ts`` (None = ``meta.json`` ``ts_range``, else
            :data:`DEFAULT_MIN_TS`).
        max_ts: Latest accepted ``ts`` (None = ``meta.json`` ``ts_range``, else one year
            after now).
        split: Load only this part of a user split (:mod:`pushrl.data.split`), applied
            after validation; the report's fingerprint is then the part's, and its summary
            has ``split`` (``ds.split``).

    Returns:
        The accepted rows as a :class:`Dataset`, and the :class:`ValidationReport`.

    Raises:
        SchemaError: on any schema problem (one line, names table, column and fix).
        DataError: a bad ``ts`` window or ``meta.json`` declaration.
    """
    d = Path(dirpath)
    tables = read_tables(d)
    meta = read_meta(d)
    window = ts_range(min_ts, max_ts, meta)
    accepted, rejected, counts = validate_tables(tables, window)
    if quarantine:
        for name in TABLES:
            target = d / REJECTED_DIR / f"{name}.parquet"
            if len(rejected[name]):
                write_table(rejected[name], target)
            elif target.exists():
                target.unlink()
    ds = Dataset(accepted["users"], accepted["items"], accepted["activity"], accepted["pushes"],
                 path=d, meta=meta)
    if split is not None:
        ds = split.apply(ds)
    summary = {**summarize(ds), "ts_range": [str(window[0]), str(window[1])],
               **({"split": ds.split} if ds.split else {})}
    report = ValidationReport(counts, summary, ds.fingerprint())
    return ds, report

