"""Trigger state from imported history (issue #16): what ``pushrl state import`` keeps for
the trigger tracker, and its replay into a server's tracker at start-up.

The import (:mod:`pushrl.serve.history`) stores, beside the feature state's events in
``history/events.npz`` (:func:`trigger_arrays`):

- ``a_kind``: each activity row's event (index into
  :data:`~pushrl.rules.triggers.ACTIVITY_EVENTS`), aligned with ``a_user/a_ts/a_item``;
- ``iu_*``: the log's ``item_updates`` (item index, ts, price or NaN, stock -1/0/1) and
  ``it_*``: each item's initial ``price`` / ``in_stock`` from the items table;
- ``tr_*``: the log's ``triggers`` rows (id, delay arm or -1 = drop, pscore, decided ts):
  the logged arm of every trigger the tracker re-creates;
- ``ts_*``: the trigger pushes the log sent (``pushes.trigger_id``, ts).

A start without a trigger snapshot (:meth:`pushrl.serve.triggers.ServerTriggers.rebuild`)
replays them through the ONE :class:`~pushrl.rules.triggers.TriggerTracker` before the
server's own journal (:func:`replay_history`): events in time order, the tracker's clock
moved to each hour start before that hour's events (as a sender polling hourly moves a live
server's clock), a logged send marks its trigger sent at its time (before the events of
that second). A re-created trigger takes its logged arm (the log's ``triggers`` rows, or
the server's own rows for one it decided at an earlier start); one without (a pushlog v1
log, other trigger rules) stays undecided and, if still open at the end, is decided by the
server's delay policy at start-up and journaled like any new trigger.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pushrl.data.io import Dataset, to_unix_seconds
from pushrl.errors import DataError
from pushrl.rules.triggers import ACTIVITY_EVENTS, Trigger, TriggerConfig, TriggerTracker
from pushrl.units import HOUR

#: Keys of ``history/events.npz`` the trigger replay reads (an older import has none).
KEYS = ("a_kind", "iu_item", "iu_ts", "iu_price", "iu_stock", "it_price", "it_stock",
        "tr_id", "tr_delay", "tr_pscore", "tr_decided", "ts_id", "ts_ts")
#: ``iu_stock`` / ``it_stock`` codes: unknown / out of stock / in stock.
STOCK_UNKNOWN, STOCK_OUT, STOCK_IN = -1, 0, 1

Arm = tuple[int | None, float, int]


def _stock(col: pd.Series | None, n: int) -> np.ndarray:
    if col is None:
        return np.full(n, STOCK_UNKNOWN, np.int8)
    try:
        s = col.astype("boolean")
    except (TypeError, ValueError):  # not a stock flag (an item attribute of another kind)
        return np.full(n, STOCK_UNKNOWN, np.int8)
    return np.where(s.isna(), STOCK_UNKNOWN, np.where(s.fillna(False), STOCK_IN, STOCK_OUT)
                    ).astype(np.int8)


def trigger_arrays(ds: Dataset, item_idx: Mapping[str, int]) -> dict[str, np.ndarray]:
    """What the trigger tracker needs of ``ds`` beyond the feature state's events (module
    docstring), as compact arrays (item indices into ``ds.items``)."""
    act = ds.activity
    codes = {e: i for i, e in enumerate(ACTIVITY_EVENTS)}
    a_kind = (act["event"].astype(str).map(codes).fillna(-1).to_numpy(np.int8)
              if len(act) else np.zeros(0, np.int8))
    upd = ds.item_updates
    items = ds.items
    price = (pd.to_numeric(items["price"], errors="coerce").to_numpy(float)
             if "price" in items.columns else np.full(len(items), np.nan))
    if not len(upd):
        upd = pd.DataFrame({"item_id": pd.Series([], dtype=object),
                            "ts": pd.Series([], dtype="datetime64[ns, UTC]"),
                            "price": pd.Series([], dtype=float),
                            "in_stock": pd.Series([], dtype="boolean")})
    out: dict[str, np.ndarray] = {
        "a_kind": a_kind,
        "iu_item": upd["item_id"].astype(str).map(item_idx).fillna(-1).to_numpy(np.int64),
        "iu_ts": to_unix_seconds(upd["ts"]) if len(upd) else np.zeros(0, np.int64),
        "iu_price": pd.to_numeric(upd["price"], errors="coerce").to_numpy(float),
        "iu_stock": _stock(upd["in_stock"], len(upd)),
        "it_price": price,
        "it_stock": _stock(items["in_stock"] if "in_stock" in items.columns else None,
                           len(items)),
    }
    tr = ds.triggers
    if len(tr):
        out |= {
            "tr_id": tr["trigger_id"].astype(str).to_numpy(dtype=str),
            "tr_delay": tr["delay_h"].astype("Int64").fillna(-1).to_numpy(np.int64),
            "tr_pscore": pd.to_numeric(tr["pscore"], errors="coerce").fillna(1.0)
            .to_numpy(float),
            "tr_decided": to_unix_seconds(tr["decided_ts"])}
    else:
        out |= {"tr_id": np.zeros(0, "U16"), "tr_delay": np.zeros(0, np.int64),
                "tr_pscore": np.zeros(0), "tr_decided": np.zeros(0, np.int64)}
    p = ds.pushes
    if "trigger_id" in p.columns:
        s = p[p["trigger_id"].notna() & p["sent"].fillna(False).astype(bool)]
    else:
        s = p.iloc[:0]
    out |= {"ts_id": s["trigger_id"].astype(str).to_numpy(dtype=str) if len(s)
            else np.zeros(0, "U16"),
            "ts_ts": to_unix_seconds(s["ts"]) if len(s) else np.zeros(0, np.int64)}
    out["iu_item"] = out["iu_item"].astype(np.int64)
    return out


def logged_arms(ev: Mapping[str, np.ndarray]) -> dict[str, Arm]:
    """``{trigger_id: (delay_h or None, pscore, decided_ts)}`` of the log's trigger rows."""
    return {str(t): (None if d < 0 else int(d), float(p), int(ts)) for t, d, p, ts in zip(
        ev["tr_id"].tolist(), ev["tr_delay"].tolist(), ev["tr_pscore"].tolist(),
        ev["tr_decided"].tolist(), strict=True)}


def replay_history(config: TriggerConfig, ev: Mapping[str, np.ndarray],
                   arms: Mapping[str, Arm]) -> tuple[TriggerTracker, list[str]]:
    """The tracker after the imported log (module docstring).

    Args:
        config: The server's trigger rules.
        ev: The arrays of ``history/events.npz`` (``a_user``, ``a_ts``, ``a_item`` and
            :data:`KEYS`).
        arms: Logged arms by trigger id (the log's rows, then the server's own).

    Returns:
        ``(tracker, undecided)``: ids of re-created triggers without a logged arm.
    """
    tr = TriggerTracker(config)
    for j, (p, s) in enumerate(zip(ev["it_price"].tolist(), ev["it_stock"].tolist(),
                                   strict=True)):
        tr.set_item(j, None if p != p else float(p), None if s < 0 else bool(s))
    undecided: list[str] = []

    def decide(created: list[Trigger]) -> None:
        for t in created:
            if not t.is_open:
                continue
            got = arms.get(t.trigger_id)
            if got is None:
                undecided.append(t.trigger_id)
                continue
            try:
                tr.decide(t.trigger_id, got[0], got[1], got[2])
            except DataError:  # an arm of other rules: never sent (as the journal's replay)
                tr.decide(t.trigger_id, None, 1.0, t.event_ts)

    a_ts, iu_ts, ts_ts = ev["a_ts"], ev["iu_ts"], ev["ts_ts"]
    ts = np.concatenate([ts_ts, a_ts, iu_ts]).astype(np.int64)
    order = np.concatenate([np.zeros(ts_ts.size, np.int8), np.ones(a_ts.size, np.int8),
                            np.full(iu_ts.size, 2, np.int8)])
    # sends first in their second, then activity, then item updates (stable within each)
    seq = np.lexsort((np.arange(ts.size), order, ts))
    n_s, n_a = ts_ts.size, a_ts.size
    a_user, a_item, a_kind = (ev[k].tolist() for k in ("a_user", "a_item", "a_kind"))
    iu_item, iu_price, iu_stock = (ev[k].tolist() for k in ("iu_item", "iu_price", "iu_stock"))
    ts_id = ev["ts_id"].tolist()
    events = ACTIVITY_EVENTS
    hour = None if tr.now is None else tr.now
    for k, t in zip(seq.tolist(), ts[seq].tolist(), strict=True):
        h = t - t % HOUR
        if hour is None or h > hour:
            hour = h
            decide(tr.advance(h))
        if k < n_s:
            got = tr.get(str(ts_id[k]))
            if got is not None and got.is_open:
                tr.mark_sent(got.trigger_id, t)
        elif k < n_s + n_a:
            i = k - n_s
            kind, item = a_kind[i], a_item[i]
            if kind < 0 or (kind > 0 and item < 0):
                continue  # an event the tracker does not know, or an unknown item
            decide(tr.observe_activity(a_user[i], t, events[kind],
                                       None if item < 0 else item))
        else:
            i = k - n_s - n_a
            item = iu_item[i]
            if item >= 0:
                p, s = iu_price[i], iu_stock[i]
                decide(tr.observe_item_update(item, t, None if p != p else p,
                                              None if s < 0 else bool(s)))
    return tr, undecided


def has_trigger_history(ev: Mapping[str, Any] | None) -> bool:
    """The import stored the trigger arrays (imports before #16's item 3 did not)."""
    return ev is not None and all(k in ev for k in KEYS)
