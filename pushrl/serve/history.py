"""Bring a push log's history into a server's state once (``pushrl state import``), so that
every later start is fast and every user's first served decision has the batch replay's
features.

Import (:func:`import_history`) reads a pushlog v1 directory, fits the feature spec on it
(:meth:`~pushrl.data.features.FeatureSpec.fit`, as every training stage does), replays its
activity and sent pushes through the one feature pipeline
(:func:`~pushrl.data.features.replay`) and writes into a fresh state dir:

- the durable log's ``users`` and ``items`` rows (the catalog is the log's items table);
- ``feature_spec.json`` and ``item_popularity.json`` (the default most-popular, fitted on
  the imported pushes: the server's defaults come from its own data);
- ``history/state.npz``: the :class:`~pushrl.data.features.FeatureState` after the last
  event of the log (the snapshot a start loads instead of re-reading the log);
- ``history/events.npz``: the log's activity and sent pushes in compact form, replayed only
  when a promoted policy brings a feature spec with other categories (the snapshot's
  category counts are indexed by the import's categories), and the users who unsubscribed
  in the log (outcome ``unsubscribed``: the server never pushes to them until a ``PUT
  /v1/users`` with ``subscribed=true``);
- ``history/profiles.npz`` and ``history/profile_model.json``: the users' profile counters
  and the fitted profile model at the end of the log (:mod:`pushrl.serve.profiles`);
- the meta row ``history``: sha256 of every file, the log's high-water mark (last event time)
  and counts. A start refuses a snapshot whose checksum does not match
  (:class:`~pushrl.serve.store.StateError`), as it refuses a damaged log.

The journal (``ops``) holds only what the server does after the import (and the log's channel
opt-in, ``OP_CHANNELS`` rows: :func:`opt_in_ops`); a restart loads the
snapshot, then re-applies the journal (:meth:`pushrl.serve.state.ServerState.rebuild`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushrl.data.features import FeatureSpec, FeatureState, replay, user_index
from pushrl.data.profiles import write_snapshot
from pushrl.data.subscription import unsubscribed_users
from pushrl.data.io import Dataset, from_unix_seconds, json_default, sha256_file, to_unix_seconds
from pushrl.errors import PushrlError
from pushrl.serve.store import OP_CHANNELS, OP_SQL, DurableLog, Statement, StateError
from pushrl.serve.trigger_history import KEYS as TRIGGER_KEYS
from pushrl.serve.trigger_history import trigger_arrays
from pushrl.units import DAY, HOUR

logger = logging.getLogger("pushrl.serve")
HISTORY_DIR = "history"
STATE_FILE = "state.npz"
EVENTS_FILE = "events.npz"
META_KEY = "history"
FORMAT = "pushrl/history/v1"
SPEC_FILE = "feature_spec.json"
POPULAR_FILE = "item_popularity.json"
#: Sends kept for the guardrails' day and week counts (8 days, as ``SendHistory``).
SEND_DAYS = 8


@dataclass
class Restored:
    """A history snapshot loaded for a rebuild.

    Attributes:
        fs: Feature state of the imported users (indices ``0..n-1``).
        user_ids: ``(n,)`` user ids in index order.
        sends: ``(k, 2)`` int64 ``(user index, unix seconds)`` of the log's sends in its last
            :data:`SEND_DAYS` days (the guardrails' counters), in time order.
        high_water: Unix seconds of the log's last event or decision.
        unsubscribed: ``(m,)`` int64 indices of the users who unsubscribed in the log.
        trigger_events: The trigger tracker's inputs
            (:mod:`pushrl.serve.trigger_history`), None for an import made before they
            were kept.
    """

    fs: FeatureState
    user_ids: list[str]
    sends: np.ndarray
    high_water: int
    unsubscribed: np.ndarray
    trigger_events: dict[str, np.ndarray] | None = None


def item_rows(items: pd.DataFrame, category_column: str) -> list[Statement]:
    """``INSERT`` rows of the durable log's ``items`` table for a pushlog ``items`` table."""
    stmts: list[Statement] = []
    for i, row in enumerate(items.to_dict("records")):
        feats = {k: (None if v is None or (isinstance(v, float) and np.isnan(v)) else
                     v.item() if hasattr(v, "item") else v)
                 for k, v in row.items() if k not in ("item_id", category_column)}
        cat = row.get(category_column)
        cat = None if cat is None or (isinstance(cat, float) and np.isnan(cat)) else str(cat)
        stmts.append(("INSERT OR IGNORE INTO items VALUES (?,?,?,?)",
                      (str(row["item_id"]), cat,
                       json.dumps(feats, sort_keys=True, default=str), i + 1)))
    return stmts


def opt_in_ops(users: pd.DataFrame, seq0: int, bucket: int) -> list[Statement]:
    """The log's channel opt-in (users ``channels``, #17) as ``OP_CHANNELS`` journal rows (seq
    after ``seq0``), what ``PUT /v1/users`` ``channels`` writes: a server with ``--channels``
    starts from it (:meth:`~pushrl.serve.channels.ServerChannels.rebuild`) and ``pushrl logs
    export`` writes it back; null (every channel) writes none."""
    if "channels" not in users:
        return []
    vals = users["channels"].tolist()
    rows = [(i, v) for i, v in enumerate(vals) if isinstance(v, str)]
    return [(OP_SQL, (seq0 + j + 1, OP_CHANNELS, i, bucket, 1, v))
            for j, (i, v) in enumerate(rows)]


def popularity(ds: Dataset) -> dict[str, float] | None:
    """Scores of the default ``most-popular`` fitted on ``ds`` (its definition's ``reward``
    and ``prior_strength``), or None when the pushes carry no usable reward."""
    from pushrl.policies.baselines import definition
    from pushrl.policies.item_baselines import MostPopular

    params = {k: v for k, v in definition("most-popular").get("params", {}).items()
              if k in ("reward", "prior_strength")}
    try:
        mp = MostPopular.fit(ds, reward=params.get("reward") or None,
                             prior_strength=float(params.get("prior_strength", 10.0)))
    except (PushrlError, ValueError, KeyError):
        return None
    return dict(zip(mp.item_ids, mp.scores.tolist(), strict=True))


def server_popularity(state_dir: str | Path) -> dict[str, float]:
    """The default most-popular's scores kept in a state dir (:data:`POPULAR_FILE`, fitted on
    the ``--catalog``/imported data), or ``{}`` when it has none."""
    p = Path(state_dir) / POPULAR_FILE
    if not p.exists():
        return {}
    return {str(k): float(v) for k, v in json.loads(p.read_text())["scores"].items()}


def popularity_scores(scores: Mapping[str, float], item_ids: Sequence[str]) -> np.ndarray:
    """``(n_items,)`` scores of the server's default item policy in ``item_ids`` order: the
    kept score of each item, the mean score for an item added since (the one rule for the
    server and ``pushrl plan``)."""
    prior = float(np.mean(list(scores.values())))
    return np.array([scores.get(i, prior) for i in item_ids], np.float64)


ITEM_EVENTS_SQL = ("SELECT item_id, COUNT(*) FROM activity WHERE item_id IS NOT NULL "
                   "GROUP BY item_id")


def _fresh(log: DurableLog) -> None:
    """Refuse to import into a state dir that already holds a server's data."""
    for table in ("users", "items", "ops", "decisions"):
        if log.query(f"SELECT 1 FROM {table} LIMIT 1"):
            raise PushrlError(f"{log.dir} already holds {table} (a server ran or history was "
                              "imported there); import into a new --state directory")
    if log.get_meta(META_KEY) is not None:
        raise PushrlError(f"{log.dir} already holds imported history; import into a new "
                          "--state directory")


def _events(ds: Dataset) -> dict[str, np.ndarray]:
    """The activity and sent pushes of ``ds`` as compact arrays (user and item indices)."""
    item_idx = {str(i): j for j, i in enumerate(ds.items["item_id"].astype(str))}
    act = ds.activity
    a_item = (act["item_id"].astype(object).map(item_idx).fillna(-1).to_numpy(np.int64)
              if len(act) else np.zeros(0, np.int64))
    p = ds.pushes
    sent = p["sent"].fillna(False).to_numpy(bool)
    ps = p.loc[sent]
    return {
        "u_user": unsubscribed_users(ds),
        "a_user": user_index(ds, act["user_id"]) if len(act) else np.zeros(0, np.int64),
        "a_ts": to_unix_seconds(act["ts"]) if len(act) else np.zeros(0, np.int64),
        "a_item": a_item,
        "p_user": user_index(ds, ps["user_id"]),
        "p_ts": to_unix_seconds(ps["ts"]),
        "p_opened": ps["opened"].fillna(False).to_numpy(bool),
        "p_item": ps["item_id"].astype(object).map(item_idx).fillna(-1).to_numpy(np.int64),
        "item_ids": ds.items["item_id"].astype(str).to_numpy(dtype=str),
        # purchases (the uplift gate's need state; older imports have neither: none known)
        "a_purchase": (act["event"].astype(str).to_numpy() == "purchase" if len(act)
                       else np.zeros(0, bool)),
        "p_converted": (ps["converted"].fillna(False).to_numpy(bool) if "converted" in ps
                        else np.zeros(len(ps), bool)),
        # the trigger tracker's inputs (event kinds, item updates, logged trigger arms)
        **trigger_arrays(ds, item_idx),
    }


def import_history(data: str | Path, state: str | Path, *, sync: str = "full",
                   quarantine: bool = True) -> dict[str, Any]:
    """Import the pushlog v1 directory ``data`` into the fresh state dir ``state``.

    Args:
        data: Pushlog directory (validated; rejected rows are quarantined and left out).
        state: State directory of the server (created; must hold no server data yet).
        sync: SQLite ``synchronous`` level of the writes.
        quarantine: Write rejected rows beside the data (as ``pushrl data validate``).

    Returns:
        A report: counts, the high-water mark, seconds per stage.

    Raises:
        PushrlError: ``state`` already holds data, or the log is unusable.
    """
    from pushrl.data.validate import load_dataset

    if not Path(data).is_dir():
        raise PushrlError(f"{str(data)!r} is not a directory; pass a pushlog v1 directory "
                          "(users/items/pushes tables, e.g. `pushrl data synth --out DIR`)")
    t0 = time.perf_counter()
    secs: dict[str, float] = {}
    log = DurableLog(state, sync=sync, accept_empty=True)
    try:
        _fresh(log)
        ds, report = load_dataset(data, quarantine=quarantine)
        if not len(ds.users) or not len(ds.items):
            raise PushrlError(f"{data} has no valid users or items; nothing to import "
                              "(see `pushrl data validate`)")
        secs["load"] = time.perf_counter() - t0
        spec = FeatureSpec.fit(ds)
        ev = _events(ds)
        # the state after every event of the log: the same FeatureState as the batch replay
        # (decisions that did not send change nothing, so only sent pushes are replayed)
        res = replay(_events_dataset(ds.users, ds.items, spec.category_column, ev), spec,
                     with_affinity=False)
        secs["replay"] = time.perf_counter() - t0 - secs["load"]
        scores = popularity(ds)
        d = Path(state)
        hdir = d / HISTORY_DIR
        hdir.mkdir(exist_ok=True)
        snap = {**res.state.to_arrays(),
                "user_ids": ds.users["user_id"].astype(str).to_numpy(dtype=str)}
        np.savez(hdir / STATE_FILE, **snap)  # type: ignore[arg-type]  # (numpy stub)
        np.savez(hdir / EVENTS_FILE, **ev)  # type: ignore[arg-type]
        t1 = time.perf_counter()
        profile_files = write_snapshot(ds, hdir)  # GET /v1/users/{id}/profile
        secs["profiles"] = time.perf_counter() - t1
        all_ts = np.concatenate([ev["a_ts"], to_unix_seconds(ds.pushes["ts"])])
        high = int(all_ts.max())
        users = ds.users
        extra = [c for c in users.columns if c not in ("user_id", "timezone")]
        feats = (users[extra].to_dict("records") if extra else [{}] * len(users))
        start = int(all_ts.min()) // HOUR
        stmts: list[Statement] = item_rows(ds.items, spec.category_column)
        stmts += [("INSERT INTO users VALUES (?,?,?,?,?)",
                   (str(uid), i, str(tz), json.dumps(f, sort_keys=True, default=json_default),
                    start))
                  for i, (uid, tz, f) in enumerate(zip(users["user_id"], users["timezone"],
                                                       feats, strict=True))]
        stmts += opt_in_ops(users, len(ds.items), start)
        meta = {"format": FORMAT, "source": str(Path(data).resolve()),
                "fingerprint": report.fingerprint, "n_users": len(users),
                "n_items": len(ds.items), "n_activity": int(ev["a_ts"].size),
                "n_decisions": len(ds.pushes), "n_sent": int(ev["p_ts"].size),
                "n_unsubscribed": int(ev["u_user"].size),
                "n_item_updates": int(ev["iu_ts"].size), "n_triggers": int(ev["tr_id"].size),
                "n_rejected": int(report.n_rejected), "high_water": high,
                "categories": list(spec.categories),
                "sha256": {f: sha256_file(hdir / f)
                           for f in (STATE_FILE, EVENTS_FILE, *profile_files)}}
        stmts.append(("INSERT INTO meta VALUES (?,?)", (META_KEY, json.dumps(meta))))
        (d / SPEC_FILE).write_text(json.dumps(spec.to_dict()))
        if scores is not None:
            (d / POPULAR_FILE).write_text(json.dumps(
                {"source": str(Path(data)), "scores": scores}, sort_keys=True))
        log.write(stmts)  # last: the meta row makes the import visible
    finally:
        log.close()
    secs["total"] = time.perf_counter() - t0
    return {**{k: v for k, v in meta.items() if k != "sha256"},
            "high_water_utc": str(from_unix_seconds(np.array([high]))[0]),
            "seconds": {k: round(v, 2) for k, v in secs.items()}}


def _events_dataset(users: pd.DataFrame, items: pd.DataFrame, category_column: str,
                    ev: dict[str, np.ndarray]) -> Dataset:
    """A :class:`Dataset` holding only what moves the feature state: activity and sent
    pushes (the replay input of the import and of a rebuild under another spec)."""
    item_ids = np.asarray(ev["item_ids"]).astype(object)
    uids = users["user_id"].astype(str).to_numpy(dtype=object)

    def ids(table: np.ndarray, idx: np.ndarray) -> np.ndarray:
        out = np.full(idx.size, None, dtype=object)
        ok = idx >= 0
        out[ok] = table[idx[ok]]
        return out

    activity = pd.DataFrame({"user_id": uids[ev["a_user"]],
                             "ts": from_unix_seconds(ev["a_ts"]),
                             "item_id": ids(item_ids, ev["a_item"])})
    pushes = pd.DataFrame({"user_id": uids[ev["p_user"]], "ts": from_unix_seconds(ev["p_ts"]),
                           "sent": np.ones(ev["p_ts"].size, bool),
                           "opened": np.asarray(ev["p_opened"], bool),
                           "item_id": ids(item_ids, ev["p_item"])})
    if "a_purchase" in ev:  # purchases: the need state (imports before it have none)
        activity["event"] = np.where(np.asarray(ev["a_purchase"], bool), "purchase", "other")
        pushes["converted"] = np.asarray(ev["p_converted"], bool)
    cols = ["item_id"] + ([category_column] if category_column in items.columns
                          and category_column != "item_id" else [])
    return Dataset(users[["user_id", "timezone"]].reset_index(drop=True),
                   items[cols].reset_index(drop=True), activity, pushes)


def _load_npz(path: Path, want: str, *, verify_only: bool = False) -> dict[str, np.ndarray]:
    if not path.exists():
        raise StateError(f"{path} is missing but the log says history was imported; "
                         "re-run `pushrl state import DATA --state DIR` into a new state dir")
    got = sha256_file(path)
    if got != want:
        raise StateError(f"{path} is damaged (sha256 {got[:12]}... != {want[:12]}... recorded "
                         "at import); re-run `pushrl state import DATA --state DIR` into a new "
                         "state dir")
    if verify_only:
        return {}
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def history_meta(log: DurableLog) -> dict[str, Any] | None:
    """The import's meta row, or None when no history was imported."""
    raw = log.get_meta(META_KEY)
    return None if raw is None else dict(json.loads(raw))


def check_history(state_dir: str | Path) -> None:
    """Refuse a state dir whose imported history is missing or damaged (read-only; the CLI
    calls it before start-up for one clear line).

    Raises:
        StateError: A snapshot file is missing or fails its checksum.
    """
    import sqlite3

    from pushrl.serve.store import LOG_FILE

    db = Path(state_dir) / LOG_FILE
    if not db.exists():
        return
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key=?", (META_KEY,)).fetchone()
    except sqlite3.Error:  # no meta table yet: check_log speaks for the log itself
        return
    finally:
        conn.close()
    if row is None:
        return
    sums = json.loads(row[0])["sha256"]
    for name, want in sums.items():
        _load_npz(Path(state_dir) / HISTORY_DIR / name, want, verify_only=True)


def restore(state_dir: str | Path, meta: dict[str, Any], spec: FeatureSpec) -> Restored:
    """Load the imported history for a state with feature spec ``spec``.

    The snapshot is used as it is when ``spec`` has the import's categories (its priors may
    differ: they are read at decision time, not stored); otherwise the compact events are
    replayed under ``spec`` (the one pipeline; slower, logged by the caller).

    Raises:
        StateError: A file is missing or fails its checksum.
    """
    hdir = Path(state_dir) / HISTORY_DIR
    sums = meta["sha256"]
    snap = _load_npz(hdir / STATE_FILE, sums[STATE_FILE])
    ev = _load_npz(hdir / EVENTS_FILE, sums[EVENTS_FILE])
    user_ids = [str(u) for u in snap.pop("user_ids")]
    if tuple(meta["categories"]) == spec.categories:
        fs = FeatureState.from_arrays(spec, snap)
    else:
        logger.warning("the feature spec has other categories than the imported history's: "
                    "replaying its %d events under it", int(ev["a_ts"].size + ev["p_ts"].size))
        users = pd.DataFrame({"user_id": user_ids,
                              "timezone": [str(snap["tz_names"][i]) for i in snap["tz_idx"]]})
        fs = _replay_under(spec, users, ev)
    keep = ev["p_ts"] >= int(meta["high_water"]) - SEND_DAYS * DAY
    sends = np.stack([ev["p_user"][keep], ev["p_ts"][keep]], axis=1).astype(np.int64)
    unsub = np.asarray(ev.get("u_user", np.zeros(0, np.int64)), np.int64)  # older imports
    trig = ({k: ev[k] for k in ("a_user", "a_ts", "a_item", *TRIGGER_KEYS)}
            if all(k in ev for k in TRIGGER_KEYS) else None)
    return Restored(fs, user_ids, sends[np.argsort(sends[:, 1], kind="stable")],
                    int(meta["high_water"]), unsub, trig)


def _replay_under(spec: FeatureSpec, users: pd.DataFrame,
                  ev: dict[str, np.ndarray]) -> FeatureState:
    """The imported history's feature state under another spec (other categories: the
    events' items map to categories through ``spec.item_category``)."""
    items = pd.DataFrame({"item_id": pd.Series([], dtype=object)})
    return replay(_events_dataset(users, items, spec.category_column, ev), spec,
                  with_affinity=False).state


#: Columns of each table that the catalog, the feature spec and the default most-popular read
#: (``--catalog``): a server start reads these, never the whole log.
CATALOG_COLUMNS = {
    "users": ("user_id", "timezone"),
    "items": None,  # all: item features
    "activity": ("user_id", "ts", "event", "item_id"),
    "pushes": ("decision_id", "user_id", "ts", "sent", "item_id", "opened", "clicked",
               "converted", "revenue"),
}


#: Users whose rows a server start reads from a larger ``--catalog`` log (spec priors and the
#: default most-popular): a seeded part of the users, never the whole log.
CATALOG_USERS = 10_000


def catalog_dataset(data: str | Path, max_users: int = CATALOG_USERS) -> Dataset:
    """The columns of ``data`` that a server's catalog, feature spec and default
    most-popular need (:data:`CATALOG_COLUMNS`), read (Parquet: only those columns, and of
    ``pushes`` only the sent rows), coerced and validated like
    :func:`~pushrl.data.validate.load_dataset` over the rows read (rejected rows are left
    out, not quarantined; checks across unsent rows, such as a duplicate ``decision_id``,
    are not made: ``pushrl data validate`` or ``pushrl state import`` make them).

    The items table is read whole. A log of more than ``max_users`` users contributes only
    some of its users' rows (the spec's priors and the popularity scores are population
    rates, so a sample estimates them): with user parts (:mod:`pushrl.data.shards`) whole
    part files evenly spaced over the parts, else the ``max_users`` users of the seeded
    sample (:func:`~pushrl.data.sample.sample_user_ids`, seed 0; a filtered scan). The
    result's ``meta["catalog_sample"]`` states which (absent when every user was read).
    """
    import pyarrow as pa
    import pyarrow.dataset as pads

    from pushrl.data.contract import TABLES
    from pushrl.data.io import (
        coerce_table,
        empty_activity,
        read_meta,
        read_raw,
        table_files,
        table_rows,
    )
    from pushrl.data.sample import sample_user_ids
    from pushrl.data.shards import user_parts
    from pushrl.data.validate import ts_range, validate_tables
    from pushrl.errors import SchemaError

    d = Path(data)
    if not d.is_dir():
        raise SchemaError(f"--catalog {str(d)!r} is not a directory; pass a pushlog "
                          "directory (users/items/pushes tables)")
    files = {name: table_files(d, name) for name in TABLES}
    parquet = {name: bool(f) and all(x.suffix != ".csv" for x in f) for name, f in files.items()}
    n_users = table_rows(d, "users") or 0
    sample: dict[str, Any] | None = None
    ids: pa.Array | None = None
    k = user_parts(d)
    if n_users > max_users and k:
        take = max(1, -(-max_users * k // n_users))
        pick = sorted(set(np.linspace(0, k - 1, take).round().astype(int).tolist()))
        for name in ("users", "activity", "pushes"):
            if files[name]:
                files[name] = [files[name][i] for i in pick]
        sample = {"method": f"user parts {pick} of {k}", "of_users": n_users}
    elif n_users > max_users and parquet["users"]:
        uid = pads.dataset(files["users"], format="parquet").to_table(columns=["user_id"])
        vals = uid.column(0).to_numpy(zero_copy_only=False)
        chosen = sample_user_ids(vals, max_users, 0)
        ids = pa.array(vals[pd.Index(vals.astype(str)).isin(chosen)], type=uid.column(0).type)
        sample = {"method": "the users with the smallest seeded hash of user_id (seed 0)",
                  "of_users": n_users}
    tables: dict[str, pd.DataFrame] = {}
    for name in TABLES:
        want = CATALOG_COLUMNS.get(name)
        raw: pd.DataFrame | None
        if parquet[name]:
            src = pads.dataset(files[name], format="parquet")
            have = set(src.schema.names)
            cond = None
            if name != "items" and ids is not None:
                cond = pads.field("user_id").isin(ids)
            if name == "pushes" and "sent" in have:
                # the spec's open rate and most-popular count sent pushes only: the other
                # decisions (97 % of a randomised log) are never read
                sent = pads.field("sent") == True  # noqa: E712 (an Arrow expression)
                cond = sent if cond is None else cond & sent
            cols = None if want is None else [c for c in want if c in have]
            raw = src.to_table(columns=cols, filter=cond).to_pandas()
        else:
            raw = read_raw(d, name)
        if raw is None:
            if name != "activity":
                raise SchemaError(f"table `{name}` is missing in {d}; add {name}.parquet or "
                                  f"{name}.csv (see simulator_data/README.md)")
            tables[name] = empty_activity()
            continue
        tables[name] = coerce_table(raw, name)
    meta = read_meta(d)
    accepted, _, _ = validate_tables(tables, ts_range(None, None, meta))
    if sample is not None:
        meta = {**meta, "catalog_sample": {**sample, "users": len(accepted["users"])}}
    return Dataset(accepted["users"], accepted["items"], accepted["activity"],
                   accepted["pushes"], path=d, meta=meta)
