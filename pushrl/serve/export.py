"""Export the server's durable log as a pushlog v1 dataset (the next round's training data).

Tables: ``users`` (timezone + user features), ``items`` (category + item features),
``activity`` and ``pushes`` with one row per decision, *including* decisions not to send,
each with ``pscore`` (probability of the logged action), ``pscore_send`` and the policy that
decided. Outcomes come from feedback inside the attribution window; a sent push without
feedback has ``opened``/``clicked``/``converted``/``unsubscribed`` false and ``revenue`` 0
(no report means it did not happen). Extra tables beside them: ``feedback`` (every report,
late ones flagged) and ``shadow`` (shadow decisions).

Behaviour triggers (pushlog v1.1, issue 16): ``pushes.trigger_id`` names the trigger a push
was sent for (null for scheduled pushes); ``triggers`` has one row per trigger decision (its
delay arm ``delay_h``, null = drop, with ``pscore``, the arm's probability, and its final
``status``); ``item_updates`` the price and stock changes the server received.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushrl.data.contract import BOOL_OUTCOMES, CTX_PREFIX
from pushrl.data.io import Dataset, from_unix_seconds, write_dataset, write_table
from pushrl.serve.store import LOG_FILE, OP_CHANNELS, OP_TRIGGER_ADVANCE, connect


def _attributes(rows: list[tuple[str, str]], key: str) -> pd.DataFrame:
    """Expand JSON attribute dicts into columns (mixed-type columns become strings)."""
    recs = [{key: k, **json.loads(v)} for k, v in rows]
    df = pd.DataFrame(recs) if recs else pd.DataFrame({key: pd.Series([], dtype=object)})
    for c in df.columns:
        if c == key:
            continue
        kinds = {type(v) for v in df[c].dropna()}
        if len(kinds) > 1 and not kinds <= {int, float}:
            df[c] = df[c].map(lambda v: None if v is None else str(v)).astype(object)
    return df


def _bool(s: pd.Series) -> pd.Series:
    return s.map(lambda v: None if v is None or pd.isna(v) else bool(v)).astype("boolean")


def _expanded(conn: Any, state: Path, wait_s: float = 5.0) -> None:
    """Refuse a log whose bulk send records (serve/bulk_sends.py) are not in its tables yet:
    a running server expands them within a second; a stopped one at its next start."""
    import time

    from pushrl.serve.bulk_sends import unexpanded

    end = time.monotonic() + wait_s
    while (n := unexpanded(conn)) and time.monotonic() < end:
        time.sleep(0.1)
    if n:
        from pushrl.errors import DataError

        raise DataError(f"{state}: {n} pull(s) of due sends are acknowledged but not yet "
                        "written into the log's tables (the server stopped before); start "
                        f"`pushrl serve --state {state}` once (it writes them at start), then "
                        "export")


def read_log(state: str | Path) -> tuple[Dataset, pd.DataFrame, pd.DataFrame]:
    """Read a state directory's log as ``(dataset, feedback, shadow)`` (the dataset's
    ``triggers`` and ``item_updates`` tables are empty when the server logged none)."""
    path = Path(state) / LOG_FILE
    if not path.exists():
        from pushrl.errors import DataError

        raise DataError(f"no server log at {path}; pass the --state DIR the server used "
                        "(default $PUSHRL_HOME or ./.pushrl)")
    conn = connect(path, readonly=True)
    try:
        _expanded(conn, path.parent)
        q = conn.execute
        users = q("SELECT user_id, timezone, features FROM users ORDER BY idx").fetchall()
        u = _attributes([(r[0], r[2]) for r in users], "user_id")
        u.insert(1, "timezone", [r[1] for r in users])
        items_rows = q("SELECT item_id, category, features FROM items ORDER BY seq").fetchall()
        items = _attributes([(r[0], r[2]) for r in items_rows], "item_id")
        if any(r[1] is not None for r in items_rows):
            items.insert(1, "category", [r[1] for r in items_rows])
        act = pd.read_sql_query("SELECT user_id, ts, event, item_id, revenue FROM activity "
                                "ORDER BY seq", conn)
        act["ts"] = from_unix_seconds(act["ts"].to_numpy()).to_numpy()
        act["ts"] = pd.to_datetime(act["ts"], utc=True)
        tables = {r[0] for r in q("SELECT name FROM sqlite_master WHERE type='table'")}
        cols = {r[1] for r in q("PRAGMA table_info(decisions)")}  # older logs lack the newer
        p = pd.read_sql_query(
            "SELECT decision_id, user_id, ts, sent, item_id, pscore, pscore_send, pscore_item, "
            "candidates, context, policy, item_policy, reason, opened, clicked, converted, "
            "revenue, unsubscribed, "
            + ", ".join(c if c in cols else f"NULL AS {c}"
                        for c in ("holdout", "p_holdout", "trigger_id", "template_id",
                                  "pscore_template", "channel", "pscore_channel")) + " "
            "FROM decisions ORDER BY seq", conn)
        tcols = {r[1] for r in q("PRAGMA table_info(triggers)")}  # holdout: since #18
        trig = pd.read_sql_query(
            "SELECT trigger_id, user_id, kind, item_id, event_ts, decided_ts, delay_h, pscore, "
            "status, decision_id, expires_ts, priority, policy, "
            + ", ".join(c if c in tcols else f"NULL AS {c}" for c in ("holdout", "p_holdout"))
            + " FROM triggers ORDER BY seq", conn) if "triggers" in tables else None
        upd = pd.read_sql_query("SELECT item_id, ts, price, in_stock FROM item_updates ORDER BY "
                                "seq", conn) if "item_updates" in tables else None
        if trig is not None and len(trig):
            trig["status"] = _final_status(conn, trig, Path(state))
        fb = pd.read_sql_query("SELECT seq, decision_id, ts, late, payload FROM feedback "
                               "ORDER BY seq", conn)
        sh = pd.read_sql_query("SELECT * FROM shadow", conn)
        # channel opt-in (#17): each user's first set by PUT /v1/users (serve/channels.py)
        opt: dict[int, str] = {}
        for idx, text in q(f"SELECT user_idx, tz FROM ops WHERE kind={OP_CHANNELS} AND arg=1 "
                           "ORDER BY seq"):
            opt.setdefault(int(idx), text or "")
        if opt:
            u["channels"] = [opt.get(i) for i in range(len(u))]
    finally:
        conn.close()
    pushes = _pushes(p)
    fb["ts"] = pd.to_datetime(fb["ts"], unit="s", utc=True)
    fb["late"] = fb["late"].astype(bool)
    extra = {k: v for k, v in (("triggers", _triggers(trig)),
                               ("item_updates", _item_updates(upd))) if v is not None}
    ds = Dataset(u, items, act.astype({"item_id": object}), pushes,
                 meta={"generator": "pushrl.serve",
                       "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
                 **extra)
    return ds, fb, sh


def _final_status(conn: Any, trig: pd.DataFrame, state: Path | None = None) -> list[str]:
    """Each trigger's status as of the log's last event: the server's tracker replayed from
    the log under the rules it ran with (meta ``triggers``), so cancels and expiries, which
    the server does not write back to the ``triggers`` rows, are exported too (after the
    imported history's trigger inputs, when ``state`` has them)."""
    from pushrl.rules.triggers import TriggerConfig
    from pushrl.serve.triggers import replay

    row = conn.execute("SELECT value FROM meta WHERE key='triggers'").fetchone()
    if row is None:
        return list(trig["status"])
    users = {str(u): int(i) for i, u in conn.execute("SELECT idx, user_id FROM users")}
    items = {str(r[0]): j for j, r in enumerate(conn.execute(
        "SELECT item_id FROM items ORDER BY seq"))}
    config = TriggerConfig.parse(json.loads(row[0]))
    start = None if state is None else _history_tracker(conn, config, state)
    tr = replay(lambda sql: conn.execute(sql), config, users, items, start=start)
    last = conn.execute(
        "SELECT max(m) FROM (SELECT max(ts) m FROM activity UNION ALL SELECT max(ts) FROM "
        "decisions UNION ALL SELECT max(ts) FROM item_updates UNION ALL SELECT max(arg) FROM "
        "ops WHERE kind=?)", (OP_TRIGGER_ADVANCE,)).fetchone()[0]
    if last is not None:
        tr.advance(int(last))  # expiries up to the log's last event
    out = []
    for tid, logged in zip(trig["trigger_id"], trig["status"], strict=True):
        t = tr.get(str(tid))
        out.append(logged if t is None else t.status.value)
    return out


def _history_tracker(conn: Any, config: Any, state: Path) -> Any:
    """The tracker after an imported history's trigger inputs (None without them)."""
    from pushrl.serve.history import EVENTS_FILE, HISTORY_DIR, META_KEY, _load_npz
    from pushrl.serve.trigger_history import has_trigger_history, logged_arms, replay_history

    row = conn.execute("SELECT value FROM meta WHERE key=?", (META_KEY,)).fetchone()
    if row is None:
        return None
    meta = json.loads(row[0])
    ev = _load_npz(state / HISTORY_DIR / EVENTS_FILE, meta["sha256"][EVENTS_FILE])
    if not has_trigger_history(ev):
        return None
    arms = logged_arms(ev)
    arms.update({r[0]: (r[1], r[2], r[3]) for r in conn.execute(
        "SELECT trigger_id, delay_h, pscore, decided_ts FROM triggers")})
    return replay_history(config, ev, arms)[0]


def _triggers(t: pd.DataFrame | None) -> pd.DataFrame | None:
    """The ``triggers`` table (pushlog v1.1), or None when the server logged none."""
    if t is None or not len(t):
        return None
    out = pd.DataFrame({
        "trigger_id": t["trigger_id"].astype(object),
        "user_id": t["user_id"].astype(object),
        "kind": t["kind"].astype(object),
        "item_id": t["item_id"].astype(object).where(t["item_id"].notna(), None),
        "event_ts": pd.to_datetime(t["event_ts"], unit="s", utc=True),
        "decided_ts": pd.to_datetime(t["decided_ts"], unit="s", utc=True),
        "delay_h": t["delay_h"].astype("Int64"),
        "pscore": t["pscore"].astype(float),
        "status": t["status"].astype(object),
        "decision_id": t["decision_id"].astype(object).where(t["decision_id"].notna(), None),
        "expires_ts": pd.to_datetime(t["expires_ts"], unit="s", utc=True),
        "priority": t["priority"].astype("int64"),
        "policy": t["policy"].astype(object),
    })
    if t["holdout"].notna().any():  # per-kind holdouts ran (#18): each row's arm for its kind
        out["holdout"] = _bool(t["holdout"])
        out["p_holdout"] = t["p_holdout"].astype(float)
    return out.sort_values("event_ts", kind="stable").reset_index(drop=True)


def _item_updates(t: pd.DataFrame | None) -> pd.DataFrame | None:
    """The ``item_updates`` table (pushlog v1.1), or None when there were none."""
    if t is None or not len(t):
        return None
    return pd.DataFrame({
        "item_id": t["item_id"].astype(object),
        "ts": pd.to_datetime(t["ts"], unit="s", utc=True),
        "price": t["price"].astype(float),
        "in_stock": _bool(t["in_stock"]),
    })


def _pushes(p: pd.DataFrame) -> pd.DataFrame:
    sent = p["sent"].astype(bool)
    out = pd.DataFrame({
        "decision_id": p["decision_id"].astype(object),
        "user_id": p["user_id"].astype(object),
        "ts": pd.to_datetime(p["ts"], unit="s", utc=True),
        "sent": sent,
        "item_id": p["item_id"].astype(object).where(p["item_id"].notna(), None),
        "pscore": p["pscore"].astype(float),
        "pscore_send": p["pscore_send"].astype(float),
        "candidates": p["candidates"].map(lambda c: json.loads(c) if isinstance(c, str) else None
                                          ).astype(object),
    })
    for c in BOOL_OUTCOMES:
        v = _bool(p[c])
        out[c] = v.where(~sent, v.fillna(False)).where(sent, pd.NA).astype("boolean")
    rev = p["revenue"].astype(float)
    out["revenue"] = np.where(sent, rev.fillna(0.0), np.nan)
    ctx = [json.loads(c) if isinstance(c, str) else {} for c in p["context"]]
    for k in sorted({k for d in ctx for k in d}):
        vals = [d.get(k) for d in ctx]
        col = pd.Series(vals, dtype=object)
        kinds = {type(v) for v in vals if v is not None}
        if kinds <= {int, float, bool}:
            col = pd.to_numeric(col.map(lambda v: None if v is None else float(v)))
        else:
            col = col.map(lambda v: None if v is None else str(v)).astype(object)
        out[f"{CTX_PREFIX}{k}"] = col
    out["pscore_item"] = p["pscore_item"].astype(float)
    if p["trigger_id"].notna().any():  # (v1 logs without triggers keep their columns)
        out["trigger_id"] = p["trigger_id"].astype(object).where(p["trigger_id"].notna(),
                                                                 None)
    if p["template_id"].notna().any():  # the server chose templates (#17): train on them
        out["template_id"] = p["template_id"].astype(object).where(p["template_id"].notna(),
                                                                   None)
        out["pscore_template"] = p["pscore_template"].astype(float)
    if p["pscore_channel"].notna().any():  # the server chose channels (#17)
        out["channel"] = p["channel"].astype(object).where(p["channel"].notna(), None)
        out["pscore_channel"] = p["pscore_channel"].astype(float)
    for c in ("policy", "item_policy", "reason"):
        out[c] = p[c].astype(object)
    if p["holdout"].notna().any():  # a live holdout ran (#18): its arm and probability
        out["holdout"] = _bool(p["holdout"])
        out["p_holdout"] = p["p_holdout"].astype(float)
    return out


def export(state: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the log of ``state`` to ``out`` as pushlog v1 (+ ``feedback``, ``shadow``,
    ``trigger_shadow``).

    Returns:
        Row counts per table.
    """
    counts = write_export(*read_log(state), out)
    return {**counts, **write_trigger_shadow([read_trigger_shadow(state)], counts["out"])}


def read_trigger_shadow(state: str | Path) -> pd.DataFrame:
    """The shadow delay policy's decisions of a state's log (``trigger_shadow``: trigger id,
    policy, decision time (UTC), arm ``delay_h`` (null = drop), ``pscore``); empty when it
    ran none."""
    conn = connect(Path(state) / LOG_FILE, readonly=True)
    try:
        has = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                           "name='trigger_shadow'").fetchone()
        df = pd.read_sql_query("SELECT trigger_id, policy, decided_ts, delay_h, pscore FROM "
                               "trigger_shadow", conn) if has else pd.DataFrame()
    finally:
        conn.close()
    if len(df):
        df["decided_ts"] = pd.to_datetime(df["decided_ts"], unit="s", utc=True)
        df["delay_h"] = df["delay_h"].astype("Int64")
    return df


def write_trigger_shadow(frames: list[pd.DataFrame], out: str | Path) -> dict[str, int]:
    """Write the shadow delay decisions (of every shard) to ``out/trigger_shadow.parquet``
    when there are any; ``{"trigger_shadow": rows}``."""
    rows = [f for f in frames if len(f)]
    if not rows:
        return {}
    df = pd.concat(rows, ignore_index=True).sort_values("decided_ts", kind="stable")
    write_table(df.reset_index(drop=True), Path(out) / "trigger_shadow.parquet")
    return {"trigger_shadow": len(df)}


def write_export(ds: Dataset, fb: pd.DataFrame, sh: pd.DataFrame,
                 out: str | Path) -> dict[str, Any]:
    """Write what :func:`read_log` returns to ``out`` (pushlog v1 + ``feedback``,
    ``shadow``); returns row counts per table."""
    d = write_dataset(ds, out)
    write_table(fb, d / "feedback.parquet")
    if len(sh):
        write_table(sh, d / "shadow.parquet")
    return {"out": str(d), "users": len(ds.users), "items": len(ds.items),
            "activity": len(ds.activity), "pushes": len(ds.pushes),
            "sent": int(ds.pushes["sent"].sum()), "feedback": len(fb),
            "late_feedback": int(fb["late"].sum()) if len(fb) else 0, "shadow": len(sh),
            "triggers": len(ds.triggers), "item_updates": len(ds.item_updates),
            "trigger_sends": int(ds.pushes["trigger_id"].notna().sum())
            if "trigger_id" in ds.pushes else 0}
