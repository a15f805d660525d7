"""The one validator of pushlog v1.1 row contents, with quarantine and a reconciling summary.

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

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from pushrl.data.contract import (
    CHANNEL_NAME_PATTERN,
    ALL_TABLES,
    BOOL_OUTCOMES,
    EVENTS,
    OPTIONAL_TABLES,
    PROPENSITY_NEEDS,
    TABLES,
    TRIGGER_KINDS,
    TRIGGER_STATUSES,
    declared_send_pscore,
)
from pushrl.data.fingerprint import Fingerprint
from pushrl.data.io import (
    Dataset,
    coerce_table,
    concat_frames,
    dataset_dir,
    empty_activity,
    iter_raw,
    read_meta,
    read_raw,
    read_tables,
    table_files,
    table_rows,
    write_table,
)
from pushrl.data.timezones import known_zones
from pushrl.data.split import UserSplit
from pushrl.errors import DataError, SchemaError

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
        self._mask = np.zeros(n, dtype=bool)

    def check(self, bad: np.ndarray | pd.Series, reason: str) -> None:
        if isinstance(bad, np.ndarray) and bad.dtype == bool:
            bad_arr = bad
        else:
            bad_arr = np.asarray(pd.Series(bad).fillna(False), dtype=bool)
        new = bad_arr & ~self._mask
        if new.any():
            self.reason[new] = reason
            self._mask |= new

    @property
    def mask(self) -> np.ndarray:
        return self._mask.copy()


class SeenIds:
    """The ``decision_id`` values of earlier chunks, for the duplicate rule of a streamed
    validation (a row repeating an id of an earlier row, in file order, is a duplicate).

    Integer ids are kept as sorted disjoint runs ``[start, end]``: a log whose ids ascend
    (as pushrl writes them) costs a few runs whatever its length. Other ids are kept as a
    set of strings, whose memory grows with the log (log int64 ids at scale).
    """

    def __init__(self) -> None:
        self.start = np.zeros(0, np.int64)
        self.end = np.zeros(0, np.int64)
        self.other: set[str] = set()

    @property
    def n_runs(self) -> int:
        """Integer runs held (the memory of the integer path)."""
        return int(self.start.size)

    def check_add(self, ids: pd.Series) -> np.ndarray:
        """Which of ``ids`` (shape ``(n,)``) appeared in an earlier call; then remember all."""
        if pd.api.types.is_integer_dtype(ids.dtype):
            v = ids.to_numpy(np.int64)
            j = np.searchsorted(self.start, v, side="right") - 1
            hit = ((j >= 0) & (v <= self.end[np.maximum(j, 0)]) if self.start.size
                   else np.zeros(v.size, bool))
            u = v if v.size < 2 or bool((v[1:] > v[:-1]).all()) else np.sort(v)
            self._add_runs(u[np.r_[True, u[1:] != u[:-1]]] if u.size else u)
            return hit
        vals = ids.astype(str).to_numpy()
        hit = np.fromiter((x in self.other for x in vals), bool, len(vals))
        self.other.update(vals.tolist())
        return hit

    def _add_runs(self, u: np.ndarray) -> None:
        if not u.size:
            return
        brk = np.flatnonzero(np.diff(u) != 1)
        starts = np.concatenate([self.start, u[np.r_[0, brk + 1]]])
        ends = np.concatenate([self.end, u[np.r_[brk, u.size - 1]]])
        o = np.argsort(starts, kind="stable")
        starts, ends = starts[o], ends[o]
        # merge overlapping or adjacent runs: a run starts where no earlier run reaches
        reach = np.maximum.accumulate(ends)
        first = np.flatnonzero(np.r_[True, starts[1:] > reach[:-1] + 1])
        self.start = starts[first]
        self.end = reach[np.r_[first[1:] - 1, starts.size - 1]]


def isin(s: pd.Series, values: Any) -> np.ndarray:
    """``s.isin(values)`` as a bool array, shape ``(len(s),)``. A categorical column (how
    :func:`~pushrl.data.io.read_tables` gives ids) is answered from its codes: each category
    is looked up once, then one gather over the rows (pandas hashes every row's code)."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = s.cat.categories
        hit = np.append(_categories_in(cats, values),
                        pd.Index(values).hasnans if len(values) else False)
        return hit[s.cat.codes.to_numpy()]  # code -1 (missing) -> the appended last slot
    return np.asarray(s.isin(values), bool)


def _categories_in(cats: pd.Index, values: Any) -> np.ndarray:
    """``cats.isin(values)`` as a bool array. Categories of pandas' string dtype (ids read
    from Parquet) are looked up in a set of ``values``' strings: pandas' own ``isin`` of that
    dtype makes an Arrow scalar of every value first (~3 us each: ~9 ms for 3,000 user ids).
    Only strings can equal a string category, as in pandas (which drops other values).

    ``values`` a unique :class:`pandas.Index` (the accepted users or items): its hash table is
    built once and kept by the index, so each chunk's categories cost a lookup each, not a pass
    over every value (the streamed validation calls this once per chunk: with 1M users and
    hundreds of chunks, ``isin`` or a new set per chunk made it O(users x chunks))."""
    if isinstance(values, pd.Index) and values.is_unique:
        return np.asarray(values.get_indexer(cats) >= 0, bool)
    if isinstance(cats.dtype, pd.StringDtype) and not cats.hasnans:
        keep = {v for v in values if isinstance(v, str)}
        return np.fromiter((c in keep for c in cats.tolist()), bool, len(cats))
    return np.asarray(cats.isin(values), bool)


def _check_users(df: pd.DataFrame) -> _Rejector:
    r = _Rejector(len(df))
    r.check(df["user_id"].duplicated(keep="first"), "duplicate user_id")
    tzs = df["timezone"].astype(str)
    # the server's rule (serve.state.valid_timezone): data it would refuse never trains a policy
    r.check(~tzs.isin(known_zones(tzs.unique())),
            "unknown timezone (use an IANA name such as Europe/Berlin)")
    if "channels" in df and df["channels"].notna().any():
        r.check(~df["channels"].map(_channel_list_ok, na_action="ignore").fillna(True)
                .to_numpy(bool), "channels is not a comma-separated list of channel names "
                "(lower-case, e.g. push,email,in_app)")
    return r


def _channel_list_ok(text: object) -> bool:
    """``users.channels``: empty (opted into nothing) or names matching the contract's
    :data:`~pushrl.data.contract.CHANNEL_NAME_PATTERN`, comma-separated."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    return all(re.fullmatch(CHANNEL_NAME_PATTERN, t) for t in names)


def _check_items(df: pd.DataFrame) -> _Rejector:
    r = _Rejector(len(df))
    r.check(df["item_id"].duplicated(keep="first"), "duplicate item_id")
    if "price" in df:
        _check_price(r, df)
    return r


def _check_price(r: _Rejector, df: pd.DataFrame) -> None:
    v = df["price"].to_numpy(np.float64, na_value=np.nan)
    r.check(np.isinf(v) | (v < 0), "price negative or not finite")


def _check_item_updates(df: pd.DataFrame, items: pd.Index,
                        window: tuple[pd.Timestamp, pd.Timestamp]) -> _Rejector:
    r = _Rejector(len(df))
    r.check(~df["item_id"].isin(items), "unknown item_id")
    _check_ts(r, df, window)
    price = df["price"] if "price" in df else pd.Series(np.nan, index=df.index)
    stock = df["in_stock"] if "in_stock" in df else pd.Series(pd.NA, index=df.index)
    r.check(price.isna().to_numpy() & stock.isna().to_numpy(),
            "update with neither price nor in_stock")
    if "price" in df:
        _check_price(r, df)
    return r


def _as_str(s: pd.Series) -> pd.Series:
    """Ids compared across tables as strings (an int ``decision_id`` may come back as
    float or string from a nullable column)."""
    return s.map(lambda v: None if v is None or pd.isna(v) else
                 str(int(v)) if isinstance(v, float) and float(v).is_integer() else str(v))


def _check_triggers(df: pd.DataFrame, users: pd.Index, items: pd.Index, pushes: pd.DataFrame,
                    window: tuple[pd.Timestamp, pd.Timestamp]) -> _Rejector:
    """Trigger rows vs the contract (simulator_data/README.md, ``triggers``)."""
    r = _Rejector(len(df))
    r.check(df["trigger_id"].duplicated(keep="first"), "duplicate trigger_id")
    r.check(~df["user_id"].isin(users), "unknown user_id")
    item = df["item_id"] if "item_id" in df else pd.Series(None, index=df.index, dtype=object)
    r.check(item.notna() & ~item.isin(items), "unknown item_id")
    r.check(~df["kind"].isin(TRIGGER_KINDS), "kind not in " + "/".join(TRIGGER_KINDS))
    r.check(item.isna() & (df["kind"] != "winback"), "item_id missing (only winback has none)")
    r.check(~df["status"].isin(TRIGGER_STATUSES), "status not in " + "/".join(TRIGGER_STATUSES))
    r.check((df["event_ts"] < window[0]) | (df["event_ts"] > window[1]), TS_REASON)
    r.check(df["decided_ts"] < df["event_ts"], "decided_ts before event_ts")
    ps = df["pscore"].to_numpy(np.float64, na_value=np.nan)
    r.check(~((ps > 0) & (ps <= 1)), "pscore outside (0, 1]")
    delay = (df["delay_h"] if "delay_h" in df
             else pd.Series(pd.NA, index=df.index, dtype="Int64"))
    r.check((delay < 0).fillna(False), "negative delay_h")
    dropped = (df["status"] == "dropped").to_numpy()
    r.check(dropped & delay.notna().to_numpy(), "dropped with a delay_h (drop = null delay_h)")
    r.check(~dropped & delay.isna().to_numpy(), "delay_h missing (null = drop)")
    dec = _as_str(df["decision_id"] if "decision_id" in df
                  else pd.Series(None, index=df.index, dtype=object))
    sent = (df["status"] == "sent").to_numpy()
    r.check(sent & dec.isna().to_numpy(), "sent without decision_id")
    r.check(~sent & dec.notna().to_numpy(), "decision_id on a trigger that was not sent")
    known = _as_str(pushes["decision_id"])
    r.check(dec.notna() & ~dec.isin(set(known)), "decision_id not in pushes")
    if "trigger_id" in pushes:
        own = dict(zip(known, _as_str(pushes["trigger_id"]), strict=True))
        tid = df["trigger_id"].astype(str)
        r.check([d is not None and d in own and own[d] != t for d, t in zip(dec, tid,
                                                                          strict=True)],
                "decision_id's push has another trigger_id")
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
    r.check(~isin(df["user_id"], users), "unknown user_id")
    r.check(df["item_id"].notna().to_numpy() & ~isin(df["item_id"], items), "unknown item_id")
    r.check(~isin(df["event"], EVENTS), "event not in session/view/cart/purchase")
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
    if "pscore_template" in df and df["pscore_template"].notna().any():
        v = df["pscore_template"].to_numpy(np.float64, na_value=np.nan)
        r.check(~np.isnan(v) & ((v <= 0) | (v > 1)), "pscore_template outside (0, 1]")
        shown = (df["template_id"].notna().to_numpy() if "template_id" in df
                 else np.zeros(len(v), bool))
        r.check(sent & shown & np.isnan(v), "pscore_template missing on a sent row with a "
                "template_id")
    if "pscore_channel" in df and df["pscore_channel"].notna().any():
        v = df["pscore_channel"].to_numpy(np.float64, na_value=np.nan)
        r.check(~np.isnan(v) & ((v <= 0) | (v > 1)), "pscore_channel outside (0, 1]")
        has = df["channel"].notna().to_numpy() if "channel" in df else np.zeros(len(v), bool)
        r.check(sent & has & np.isnan(v), "pscore_channel missing on a sent row with a channel")


def _check_pushes(df: pd.DataFrame, users: pd.Index, items: pd.Index,
                  window: tuple[pd.Timestamp, pd.Timestamp],
                  seen: SeenIds | None = None) -> _Rejector:
    r = _Rejector(len(df))
    dup = df["decision_id"].duplicated(keep="first").to_numpy()
    if seen is not None:  # streamed: ids of earlier chunks count too
        dup = dup | seen.check_add(df["decision_id"])
    r.check(dup, "duplicate decision_id")
    r.check(~isin(df["user_id"], users), "unknown user_id")
    r.check(df["item_id"].notna().to_numpy() & ~isin(df["item_id"], items), "unknown item_id")
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


class SummaryStats:
    """Summary statistics accumulated over chunks of accepted rows (:func:`summarize`).

    ``add_pushes`` / ``add_activity`` take accepted rows in any chunking; :meth:`result`
    gives the same summary as one pass over the whole tables (sums of counts are exact;
    ``revenue_per_send`` may differ in the last bits from the whole-table mean).
    """

    def __init__(self) -> None:
        self.n_act = self.n_dec = self.sent = self.n_pscore = 0
        self.ts_lo: pd.Timestamp | None = None
        self.ts_hi: pd.Timestamp | None = None
        self.known = dict.fromkeys(BOOL_OUTCOMES, 0)
        self.true = dict.fromkeys(BOOL_OUTCOMES, 0)
        self.revenue = 0.0
        self.joint = self.send = False
        self.unsent_ok = True

    def _ts(self, ts: pd.Series) -> None:
        if len(ts):
            lo, hi = ts.min(), ts.max()
            self.ts_lo = lo if self.ts_lo is None else min(self.ts_lo, lo)
            self.ts_hi = hi if self.ts_hi is None else max(self.ts_hi, hi)

    def add_activity(self, act: pd.DataFrame) -> None:
        """Count a chunk of accepted ``activity`` rows."""
        self.n_act += len(act)
        self._ts(act["ts"])

    def add_pushes(self, p: pd.DataFrame) -> None:
        """Count a chunk of accepted ``pushes`` rows."""
        self.n_dec += len(p)
        self._ts(p["ts"])
        sent = p["sent"].fillna(False).to_numpy(dtype=bool)
        self.sent += int(sent.sum())
        for c in BOOL_OUTCOMES:
            v = p.loc[sent, c]
            self.known[c] += int(v.notna().sum())
            self.true[c] += int(v.fillna(False).astype(bool).sum())
        self.revenue += float(p.loc[sent, "revenue"].fillna(0).sum())

        def logged(c: str) -> np.ndarray:
            return (p[c].notna().to_numpy() if c in p else np.zeros(len(p), bool))

        joint, send = logged("pscore"), logged("pscore_send")
        self.n_pscore += int(joint.sum())
        self.joint |= bool(joint.any())
        self.send |= bool(send.any())
        self.unsent_ok &= bool((joint | send | sent).all())

    def result(self, users: pd.DataFrame, items: pd.DataFrame,
               meta: dict[str, Any] | None) -> dict[str, Any]:
        """The summary (plain Python types) given the accepted users and items."""
        out: dict[str, Any] = {"users": len(users), "items": len(items),
                               "activity_events": self.n_act, "decisions": self.n_dec}
        out["date_range"] = ([str(self.ts_lo), str(self.ts_hi)] if self.ts_lo is not None
                             else [None, None])
        out["sent"] = self.sent
        out["send_rate"] = self.sent / self.n_dec if self.n_dec else 0.0
        rates: dict[str, float | None] = {
            f"{c}_rate": self.true[c] / self.known[c] if self.known[c] else None
            for c in BOOL_OUTCOMES}
        rates["revenue_per_send"] = self.revenue / self.sent if self.sent else None
        out["outcomes"] = rates
        out["pscore_coverage"] = self.n_pscore / self.n_dec if self.n_dec else 0.0
        out["timezones"] = int(users["timezone"].nunique())
        out["propensities"] = support(self.joint, self.send, self.unsent_ok,
                                      declared_send_pscore(meta))
        return out


def summarize(ds: Dataset) -> dict[str, Any]:
    """Summary statistics of an accepted dataset (all plain Python types)."""
    acc = SummaryStats()
    acc.add_pushes(ds.pushes)
    acc.add_activity(ds.activity)
    return acc.result(ds.users, ds.items, ds.meta)


def trigger_summary(ds: Dataset) -> dict[str, Any]:
    """Counts of the v1.1 tables: item updates, trigger decisions by kind and status, and
    the pushes that delivered a trigger."""
    t = ds.triggers
    tid = ds.pushes["trigger_id"] if "trigger_id" in ds.pushes else pd.Series([], dtype=object)
    return {"item_updates": len(ds.item_updates), "decisions": len(t),
            "by_kind": {str(k): int(v) for k, v in t["kind"].value_counts().items()},
            "by_status": {str(k): int(v) for k, v in t["status"].value_counts().items()},
            "pushes_with_trigger": int(tid.notna().sum())}


def propensity_support(ds: Dataset) -> dict[str, Any]:
    """Which propensities an accepted dataset has, and which stages they support
    (see :func:`support`)."""
    return summarize(ds)["propensities"]  # type: ignore[no-any-return]


def support(joint: bool, send: bool, unsent_ok: bool, declared: float | None) -> dict[str, Any]:
    """Which propensities a log has, and which stages they support.

    Args:
        joint: ``pscore`` is logged on some row.
        send: ``pscore_send`` is logged on some row.
        unsent_ok: Every unsent row logs ``pscore`` or ``pscore_send``.
        declared: The send probability ``meta.json`` declares, or None.

    Returns:
        ``pscore`` / ``pscore_send`` (``logged``, ``declared P`` or ``missing``),
        ``item_pscore`` (how the item level is obtained, or None), ``needs``
        (:data:`~pushrl.data.contract.PROPENSITY_NEEDS`), ``supports`` (stage -> bool) and
        ``missing`` (one sentence per unsupported stage, with the fix).
    """
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
        tables: Coerced tables (:func:`~pushrl.data.io.read_tables`); the optional v1.1
            tables are checked (and counted) when present.
        window: Accepted ``[first, last]`` of ``ts``; None = :func:`ts_range` defaults.

    Returns:
        ``(accepted, rejected, counts)``; rejected frames carry a ``reason`` column.
    """
    window = window or ts_range()
    accepted: dict[str, pd.DataFrame] = {}
    rejected: dict[str, pd.DataFrame] = {}
    counts: dict[str, TableCounts] = {}

    def split(name: str, rej: _Rejector) -> None:
        accepted[name], rejected[name], counts[name] = _split(tables[name], rej)

    split("users", _check_users(tables["users"]))
    split("items", _check_items(tables["items"]))
    users = pd.Index(accepted["users"]["user_id"])
    items = pd.Index(accepted["items"]["item_id"])
    split("activity", _check_activity(tables["activity"], users, items, window))
    split("pushes", _check_pushes(tables["pushes"], users, items, window))
    opt: dict[str, pd.DataFrame] = {n: tables[n] for n in OPTIONAL_TABLES if n in tables}
    a, r, c = _validate_optional(opt, accepted, accepted["pushes"], window)
    accepted.update(a)
    rejected.update(r)
    counts.update(c)
    return accepted, rejected, counts


def _split(df: pd.DataFrame, rej: _Rejector) -> tuple[pd.DataFrame, pd.DataFrame, TableCounts]:
    m = rej.mask
    bad = df.loc[m].copy()
    bad["reason"] = rej.reason[m]
    reasons = bad["reason"].value_counts().to_dict() if len(bad) else {}
    return (df.loc[~m].reset_index(drop=True), bad.reset_index(drop=True),
            TableCounts(len(df), int((~m).sum()), int(m.sum()),
                        {str(k): int(v) for k, v in reasons.items()}))


def _validate_optional(tables: Mapping[str, pd.DataFrame], accepted: dict[str, pd.DataFrame],
                       pushes: pd.DataFrame, window: tuple[pd.Timestamp, pd.Timestamp],
                       ) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame],
                                  dict[str, TableCounts]]:
    """The optional v1.1 tables present in ``tables`` against the accepted users/items and
    ``pushes`` (accepted rows; at least those the triggers name)."""
    acc: dict[str, pd.DataFrame] = {}
    rej: dict[str, pd.DataFrame] = {}
    counts: dict[str, TableCounts] = {}
    users = pd.Index(accepted["users"]["user_id"])
    items = pd.Index(accepted["items"]["item_id"])
    if "item_updates" in tables:
        df = tables["item_updates"]
        acc["item_updates"], rej["item_updates"], counts["item_updates"] = _split(
            df, _check_item_updates(df, items, window))
    if "triggers" in tables:
        df = tables["triggers"]
        acc["triggers"], rej["triggers"], counts["triggers"] = _split(
            df, _check_triggers(df, users, items, pushes, window))
    return acc, rej, counts


def load_dataset(dirpath: str | Path, *, quarantine: bool = True, min_ts: TsBound = None,
                 max_ts: TsBound = None, split: UserSplit | None = None,
                 fingerprint: bool = True, summary: bool = True,
                 ) -> tuple[Dataset, ValidationReport]:
    """Read, validate and quarantine a pushlog v1.1 dataset: the loader every stage uses.

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
        fingerprint: False leaves the report's fingerprint empty (``""``): a caller that
            needs it later computes ``ds.fingerprint()`` itself (``train bandit`` does while
            VW learns), so the rows reach their consumer sooner.
        summary: False leaves the report's summary empty (``{}``; ``train bandit`` needs only
            the row counts), for the same reason.

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
        for name in ALL_TABLES:
            target = d / REJECTED_DIR / f"{name}.parquet"
            if name in rejected and len(rejected[name]):
                write_table(rejected[name], target)
            elif target.exists():
                target.unlink()
    ds = Dataset(accepted["users"], accepted["items"], accepted["activity"], accepted["pushes"],
                 path=d, meta=meta,
                 **{n: accepted[n] for n in OPTIONAL_TABLES if n in accepted})
    if split is not None:
        ds = split.apply(ds)
    stats: dict[str, Any] = {}
    if summary:
        stats = {**summarize(ds), "ts_range": [str(window[0]), str(window[1])],
                 **({"split": ds.split} if ds.split else {})}
        if len(ds.triggers) or len(ds.item_updates):
            stats["triggers"] = trigger_summary(ds)
    report = ValidationReport(counts, stats, ds.fingerprint() if fingerprint else "")
    return ds, report



def legacy_lineage(ds: Dataset) -> dict[str, str | None]:
    """The legacy-format fingerprints of a log loaded whole by :func:`load_dataset`
    (``fingerprint``; for a split part also ``of``, the whole log's, re-read from
    ``ds.path``), for comparing cards written before fp2
    (:func:`pushrl.data.split.may_share_rows`). Costs one more hash of the log (and one
    more load for a part): called only when such a card is evaluated.

    Raises:
        DataError: ``ds`` is a part of a split but has no ``path`` to re-read the log from.
    """
    of = None
    if ds.split is not None:
        if ds.path is None:
            raise DataError("a split part without a path: cannot re-read its whole log to "
                            "compare a card of the legacy fingerprint format")
        whole, _ = load_dataset(ds.path, quarantine=False)
        of = whole.legacy_fingerprint()
    return {"fingerprint": ds.legacy_fingerprint(), "of": of}


#: Rows of ``pushes`` above which `pushrl data validate` streams (:func:`validate_stream`).
STREAM_ROWS = 8_000_000
#: Rows per chunk of a streamed validation.
CHUNK_ROWS = 1 << 20


def should_stream(dirpath: str | Path) -> bool:
    """True when the ``pushes`` table is a Parquet table of more than :data:`STREAM_ROWS`
    rows (read from the file footers): too large to load whole within a few GiB. Smaller
    logs are loaded whole (both paths give the same fingerprint)."""
    n = table_rows(dirpath, "pushes")
    return n is not None and n > STREAM_ROWS


def _quarantine(d: Path, name: str, rejected: list[pd.DataFrame]) -> None:
    target = d / REJECTED_DIR / f"{name}.parquet"
    if rejected:
        write_table(concat_frames(rejected), target)
    elif target.is_file():
        target.unlink()


def _whole(d: Path, name: str) -> pd.DataFrame:
    raw = read_raw(d, name)
    if raw is None:
        raise SchemaError(f"table `{name}` is missing in {d}; add {name}.parquet or "
                          f"{name}.csv (see simulator_data/README.md)")
    return coerce_table(raw, name)


def validate_stream(dirpath: str | Path, *, chunk_rows: int = CHUNK_ROWS,
                    quarantine: bool = True, min_ts: TsBound = None,
                    max_ts: TsBound = None) -> ValidationReport:
    """:func:`load_dataset`'s validation in bounded memory: the report without the data.

    ``users`` and ``items`` are read whole (one row per user / item); ``activity`` and
    ``pushes`` are read ``chunk_rows`` rows at a time in file order, coerced and checked
    by the same rules. A repeated ``decision_id`` is a duplicate of its first occurrence in
    file order (the whole-table loader sorts by ``ts`` first: the same rows for a log
    written in time order, as pushrl writes it); see :class:`SeenIds` for its memory.
    Rejected rows are held until the end (a quarantine is small by nature) and written as
    one file per table. The fingerprint is :meth:`Dataset.fingerprint`'s (a multiset hash
    of the accepted rows, :mod:`pushrl.data.fingerprint`): the same as the whole-table
    loader's for the same accepted rows.

    Raises:
        SchemaError: on any schema problem (one line, names table, column and fix).
        DataError: a bad ``ts`` window or ``meta.json`` declaration.
    """
    d = dataset_dir(dirpath)
    meta = read_meta(d)
    window = ts_range(min_ts, max_ts, meta)
    if not table_files(d, "pushes"):
        _whole(d, "pushes")  # raises the loader's "table is missing" error
    small = {n: _whole(d, n) for n in ("users", "items")}
    accepted, rejected, counts = validate_tables(
        {**small, "activity": empty_activity(), "pushes": _empty_pushes()}, window)
    users = pd.Index(accepted["users"]["user_id"])
    items = pd.Index(accepted["items"]["item_id"])
    fp, acc = Fingerprint(), SummaryStats()
    for name in ("users", "items"):
        fp.add(name, accepted[name])
    optional: dict[str, pd.DataFrame] = {n: coerce_table(raw, n) for n in OPTIONAL_TABLES
                                         if (raw := read_raw(d, n)) is not None}
    # the pushes rows the triggers table names (bounded by the triggers table's size)
    refs = (set(_as_str(optional["triggers"]["decision_id"]).dropna())
            if "triggers" in optional and "decision_id" in optional["triggers"] else set())
    named: list[pd.DataFrame] = []
    for name in ("activity", "pushes"):
        seen = SeenIds() if name == "pushes" else None
        bad: list[pd.DataFrame] = []
        c = TableCounts(0, 0, 0)
        for raw in iter_raw(d, name, chunk_rows):
            df = coerce_table(raw, name)
            rej = (_check_pushes(df, users, items, window, seen) if name == "pushes"
                   else _check_activity(df, users, items, window))
            m = rej.mask
            ok = df.loc[~m].reset_index(drop=True)
            (acc.add_pushes if name == "pushes" else acc.add_activity)(ok)
            fp.add(name, ok)
            if name == "pushes" and refs:
                cols = [c for c in ("decision_id", "trigger_id") if c in ok]
                named.append(ok.loc[_as_str(ok["decision_id"]).isin(refs).to_numpy(), cols])
            c.read += len(df)
            c.accepted += len(ok)
            c.rejected += int(m.sum())
            if m.any():
                b = df.loc[m].copy()
                b["reason"] = rej.reason[m]
                bad.append(b.reset_index(drop=True))
                for k, v in b["reason"].value_counts().items():
                    c.reasons[str(k)] = c.reasons.get(str(k), 0) + int(v)
        c.reasons = dict(sorted(c.reasons.items(), key=lambda kv: (-kv[1], kv[0])))
        counts[name] = c
        if quarantine:
            _quarantine(d, name, bad)
    if optional:
        pushes_named = (concat_frames(named) if named
                        else pd.DataFrame({"decision_id": pd.Series([], dtype=object)}))
        opt_acc, opt_rej, opt_counts = _validate_optional(optional, accepted, pushes_named,
                                                          window)
        counts.update(opt_counts)
        rejected.update(opt_rej)
        for name, df in opt_acc.items():
            fp.add(name, df)
    if quarantine:
        for name in ("users", "items", *OPTIONAL_TABLES):
            bad_rows = rejected.get(name)
            _quarantine(d, name, [bad_rows] if bad_rows is not None and len(bad_rows) else [])
    summary = {**acc.result(accepted["users"], accepted["items"], meta),
               "ts_range": [str(window[0]), str(window[1])],
               "streamed": {"chunk_rows": chunk_rows}}
    digest = fp.digest()
    if min_ts is None and max_ts is None:
        _write_fingerprint_cache(d, digest)
    return ValidationReport(counts, summary, digest)


#: File beside the tables where a streamed validation leaves the log's fingerprint.
FINGERPRINT_CACHE = "_fingerprint.json"


def _table_stamp(d: Path) -> dict[str, list[int]]:
    """Size and modification time of every table file and ``meta.json`` (the cache key)."""
    files = [f for name in TABLES for f in table_files(d, name)] + [d / "meta.json"]
    return {str(f.relative_to(d)): [f.stat().st_size, f.stat().st_mtime_ns]
            for f in files if f.is_file()}


def _write_fingerprint_cache(d: Path, fingerprint: str) -> None:
    try:
        (d / FINGERPRINT_CACHE).write_text(json.dumps(
            {"fingerprint": fingerprint, "files": _table_stamp(d)}, indent=1) + "\n")
    except OSError:
        pass  # a read-only log: the fingerprint is recomputed next time


def log_fingerprint(dirpath: str | Path) -> str:
    """The fingerprint of a whole log (default ``ts`` window) without holding it: from the
    cache a streamed validation left beside the tables when no table file changed since,
    else by :func:`validate_stream` (one bounded-memory pass, no quarantine written).
    Samples record it as their ``of`` (:func:`pushrl.data.sample.load_user_sample`)."""
    d = Path(dirpath)
    try:
        cached = json.loads((d / FINGERPRINT_CACHE).read_text())
        if cached.get("files") == _table_stamp(d):
            return str(cached["fingerprint"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    return validate_stream(d, quarantine=False).fingerprint


def _empty_pushes() -> pd.DataFrame:
    """A pushes table with no rows (for validating users and items alone)."""
    return coerce_table(pd.DataFrame({
        "decision_id": pd.Series([], dtype="int64"), "user_id": pd.Series([], dtype=object),
        "ts": pd.Series([], dtype="datetime64[s, UTC]"), "sent": pd.Series([], dtype=bool),
        "item_id": pd.Series([], dtype=object)}), "pushes")
