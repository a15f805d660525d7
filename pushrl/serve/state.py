"""The server's in-memory state: users, items and their :class:`FeatureState`.

The feature state is *the* pipeline of :mod:`pushrl.data.features`, fed by the server's
events. Every change is applied through :func:`apply_op` and journaled as an op of the
durable log in the same order, so :meth:`ServerState.rebuild` re-applies the journal through
the same code after a restart and gets the same state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from itertools import repeat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pushrl.data.features import FeatureSpec, FeatureState, ItemCatalog
from pushrl.data.timezones import zone_names
from pushrl.serve.errors import Conflict, NotFound, ServeError, Unprocessable
from pushrl.serve.guardrails import SendHistory, Subscriptions
from pushrl.serve.holdout import HeldOut
from pushrl.serve.trigger_holdout import KindHeldOut
from pushrl.serve.history import Restored, history_meta, restore
from pushrl.serve.rows import Columns, Same
from pushrl.serve.store import (
    OP_ACTIVITY,
    OP_ADD_USER,
    OP_ADVANCE,
    OP_CHANNELS,
    OP_OPEN,
    OP_PURCHASE,
    OP_PUSH,
    OP_SQL,
    OP_SUBSCRIPTION,
    TRIGGER_OPS,
    DurableLog,
    Many,
    Statement,
)

if TYPE_CHECKING:
    from pushrl.serve.triggers import ServerTriggers

#: Up to this many rows, :meth:`ServerState.op` writes one plain statement per row (else one
#: :class:`~pushrl.serve.store.Many` for all).
_FEW = 8


def valid_timezone(tz: str) -> bool:
    """True for IANA zone names pandas and zoneinfo both know (not ``localtime`` or
    ``Factory``: :func:`~pushrl.data.timezones.zone_names`)."""
    return tz in zone_names()


class Unavailable(ServeError):
    """503: the durable log failed; the state refuses changes until it is rebuilt."""

    status = 503


def default_spec(items: Iterable[tuple[str, str | None]] = ()) -> FeatureSpec:
    """A spec with flat priors over the categories of ``(item_id, category)`` pairs, for a
    server started without data or a trained artifact."""
    pairs = [(str(i), c) for i, c in items if c is not None]
    cats = tuple(sorted({c for _, c in pairs}))
    idx = {c: j for j, c in enumerate(cats)}
    return FeatureSpec(cats, {i: idx[c] for i, c in pairs}, tuple([1 / 168] * 168),
                       tuple([1 / len(cats)] * len(cats)) if cats else ())


def apply_op(fs: FeatureState, kind: int, users: np.ndarray, buckets: np.ndarray,
             args: np.ndarray) -> None:
    """Apply one vectorised op to the feature state (users must be distinct).

    ``args`` are category ids for :data:`OP_ACTIVITY` and unused otherwise.
    """
    if kind == OP_ADVANCE:
        fs.advance(users, buckets)
    elif kind == OP_ACTIVITY:
        fs.record_activity(users, buckets, args)
    elif kind == OP_PUSH:
        fs.record_push(users, buckets)
    elif kind == OP_OPEN:
        fs.record_open(users, buckets)
    elif kind == OP_PURCHASE:
        fs.record_purchase(users, buckets)
    else:
        raise ValueError(f"unknown op kind {kind}")


@dataclass
class Item:
    """A catalog item."""

    item_id: str
    category: str | None
    features: dict[str, Any]


class ServerState:
    """Users, items, feature state and send history of a running server.

    Args:
        log: The durable log (its ``ops`` journal is replayed by :meth:`rebuild`).
        spec: Feature pipeline parameters.
        triggers: The behaviour-trigger tracker (None: triggers off), rebuilt with the state.
    """

    def __init__(self, log: DurableLog, spec: FeatureSpec,
                 triggers: ServerTriggers | None = None) -> None:
        self.log = log
        self.triggers = triggers
        self.spec = spec
        self.fs = FeatureState(spec, [], 0)
        self.users: dict[str, int] = {}
        self.items: dict[str, int] = {}
        self.item_list: list[Item] = []
        self.sends = SendHistory()
        self.subscriptions = Subscriptions()
        #: Live holdout arms (:mod:`pushrl.serve.holdout`); the server sets its holdout.
        self.held_out = HeldOut()
        #: Per-trigger-kind holdout arms (:mod:`pushrl.serve.trigger_holdout`).
        self.held_out_kinds = KindHeldOut()
        self.seq = 0
        self._catalog: ItemCatalog | None = None
        self._item_cat: np.ndarray | None = None
        self._cat_index = {c: i for i, c in enumerate(spec.categories)}
        #: Journal rows of changes whose request failed later; written with the next commit.
        self.pending: list[Statement] = []
        #: Why changes are refused (a commit failed; the state waits for its rebuild), or None.
        self.frozen: str | None = None

    def check_writable(self) -> None:
        """Refuse changes while :attr:`frozen` (before anything is applied)."""
        if self.frozen is not None:
            raise Unavailable("log_unavailable", f"the durable log failed ({self.frozen}); the "
                              "server retries it and rebuilds its state by itself; nothing was "
                              "acknowledged, retry later")

    def set_spec(self, spec: FeatureSpec) -> None:
        """Switch the feature pipeline parameters and rebuild the state from the log."""
        self.spec = spec
        self._cat_index = {c: i for i, c in enumerate(spec.categories)}
        self.rebuild()

    # ------------------------------------------------------------------ helpers
    def next_seq(self) -> int:
        """Next journal sequence number (refused while :attr:`frozen`)."""
        return self.take_seqs(1) + 1

    def take_seqs(self, n: int) -> int:
        """Reserve one block of ``n`` journal sequence numbers, ``seq0 + 1 .. seq0 + n``,
        and return ``seq0`` (refused while :attr:`frozen`, before anything is taken)."""
        self.check_writable()
        seq0, self.seq = self.seq, self.seq + n
        return seq0

    def op(self, kind: int, users: np.ndarray, buckets: np.ndarray,
           args: np.ndarray | None = None) -> list[Statement]:
        """Apply an op and return its journal rows."""
        self.check_writable()
        if args is None and kind != OP_ACTIVITY:  # (the decision path: no arrays to build)
            apply_op(self.fs, kind, users, buckets, args)  # type: ignore[arg-type]
            return self._op_rows(kind, users.tolist(), buckets.tolist())
        a = np.zeros(len(users), np.int64) if args is None else np.asarray(args, np.int64)
        apply_op(self.fs, kind, users, buckets, self._categories(a) if kind == OP_ACTIVITY else a)
        n = len(a)
        seq0 = self.take_seqs(n)
        return [(OP_SQL, Many(zip(range(seq0 + 1, seq0 + n + 1), repeat(kind, n),
                                  users.tolist(), buckets.tolist(), a.tolist(),
                                  repeat(None, n), strict=True)))]

    def advance_few(self, users: list[int], buckets: list[int]) -> list[Statement]:
        """:meth:`op` ``OP_ADVANCE`` of a few distinct users given as Python ints (the
        engine's few-rows pass: :meth:`FeatureState.advance_few`, the same journal rows)."""
        self.check_writable()
        self.fs.advance_few(users, buckets)
        return self._op_rows(OP_ADVANCE, users, buckets)

    def _op_rows(self, kind: int, users: list[int], buckets: list[int]) -> list[Statement]:
        """The journal rows of an op without arguments (one block of seq numbers)."""
        n = len(users)
        seq0 = self.take_seqs(n)
        if n <= _FEW:  # a decision's few rows: plain tuples are cheaper than a Many
            return [(OP_SQL, (seq0 + j, kind, u, b, 0, None)) for j, (u, b) in
                    enumerate(zip(users, buckets, strict=True), 1)]
        # column-wise: the row tuples are made by the writer (or never: a bulk record)
        return [(OP_SQL, Columns(n, range(seq0 + 1, seq0 + n + 1), Same(kind), users,
                                 buckets, Same(0), Same(None)))]

    def user_index(self, user_id: str) -> int:
        """Index of a known user."""
        idx = self.users.get(user_id)
        if idx is None:
            raise NotFound("unknown_user", f"unknown user_id {user_id!r}; create it with "
                                           f"PUT /v1/users/{{user_id}} first")
        return idx

    def item_index(self, item_id: str) -> int:
        """Catalog index of a known item."""
        idx = self.items.get(item_id)
        if idx is None:
            raise NotFound("unknown_item", f"unknown item_id {item_id!r}; add it with "
                                           f"PUT /v1/items/{{item_id}} or --catalog")
        return idx

    def _categories(self, item_idx: np.ndarray) -> np.ndarray:
        """Category ids (spec vocabulary, -1 for none/unknown) of server item indices (-1:
        no item). Activity ops journal the item, so a new spec re-maps them on rebuild."""
        if self._item_cat is None or len(self._item_cat) != len(self.item_list) + 1:
            self._item_cat = np.array(
                [-1 if it.category is None else self._cat_index.get(it.category, -1)
                 for it in self.item_list] + [-1], np.int64)
        return self._item_cat[np.asarray(item_idx, np.int64)]  # -1 indexes the trailing -1

    @property
    def catalog(self) -> ItemCatalog:
        """Item features (:class:`ItemCatalog`), rebuilt after the catalog changes."""
        if self._catalog is None:
            self._catalog = ItemCatalog(self.items_frame(), self.spec)
        return self._catalog

    def items_frame(self) -> pd.DataFrame:
        """The catalog as a pushlog ``items`` table."""
        rows = [{"item_id": it.item_id, "category": it.category, **it.features}
                for it in self.item_list]
        df = pd.DataFrame(rows) if rows else pd.DataFrame({"item_id": pd.Series([], object)})
        if "category" in df and df["category"].isna().all():
            df = df.drop(columns="category")
        return df

    # ------------------------------------------------------------------ changes
    def put_user(self, user_id: str, timezone: str, features: dict[str, Any],
                 bucket: int, subscribed: bool | None = None) -> tuple[bool, list[Statement]]:
        """Create or update a user; returns ``(created, statements)``.

        ``subscribed``: False opts the user out of every push, True (re-)subscribes, None
        keeps the status (new users start subscribed).
        """
        self.check_writable()
        if not valid_timezone(timezone):
            raise Unprocessable("invalid_timezone", f"unknown timezone {timezone!r}; use an "
                                "IANA name such as Europe/Berlin")
        feats = json.dumps(features, sort_keys=True)
        idx = self.users.get(user_id)
        if idx is not None:
            tz = self.fs.timezone(idx)
            if tz != timezone:
                raise Conflict("timezone_change", f"user {user_id!r} has timezone {tz!r}; "
                               "a user's timezone cannot change (features are point-in-time): "
                               "create a new user_id")
            stmts: list[Statement] = [("UPDATE users SET features=? WHERE user_id=?",
                                       (feats, user_id))]
            if subscribed is not None:
                stmts += self.set_subscribed(idx, subscribed, bucket)
            return False, stmts
        idx = int(self.fs.add_users([timezone], bucket)[0])
        self.users[user_id] = idx
        self.held_out.add(idx, user_id)
        self.held_out_kinds.add(idx, user_id)
        stmts = [
            ("INSERT INTO users VALUES (?,?,?,?,?)", (user_id, idx, timezone, feats, bucket)),
            (OP_SQL, (self.next_seq(), OP_ADD_USER, idx, bucket, 0, timezone)),
        ]
        if subscribed is False:
            stmts += self.set_subscribed(idx, False, bucket)
        return True, stmts

    def set_subscribed(self, user: int, subscribed: bool, bucket: int) -> list[Statement]:
        """Subscribe or unsubscribe user index ``user`` (every later decision obeys it) and
        return its journal row (none when the status does not change)."""
        self.check_writable()
        if self.subscriptions.is_subscribed(user) == subscribed:
            return []
        self.subscriptions.set(user, subscribed)
        return [(OP_SQL, (self.next_seq(), OP_SUBSCRIPTION, int(user), int(bucket),
                          int(subscribed), None))]

    def put_item(self, item_id: str, category: str | None,
                 features: dict[str, Any]) -> tuple[bool, list[Statement]]:
        """Create or update an item; returns ``(created, statements)``."""
        self.check_writable()
        it = Item(item_id, category, dict(features))
        idx = self.items.get(item_id)
        feats = json.dumps(features, sort_keys=True)
        self._catalog = None
        self._item_cat = None
        if idx is not None:
            self.item_list[idx] = it
            # keeps its seq: a rebuild orders items by seq, so the item keeps its index
            return False, [("UPDATE items SET category=?, features=? WHERE item_id=?",
                            (category, feats, item_id))]
        self.items[item_id] = len(self.item_list)
        self.item_list.append(it)
        return True, [("INSERT OR REPLACE INTO items VALUES (?,?,?,?)",
                       (item_id, category, feats, self.next_seq()))]

    def check_clock(self, users: np.ndarray, buckets: np.ndarray, *, first: int = 0) -> None:
        """Refuse decisions earlier than a user's state (it cannot rewind)."""
        late = buckets < self.fs.clock(users)
        if np.count_nonzero(late):
            i = int(np.flatnonzero(late)[0])
            h = int(self.fs.clock(users[i]) - buckets[i])
            raise Conflict("time_before_state", f"requests[{first + i}]: decision time is {h} h "
                           "before "
                           "the user's state (a later event or decision was recorded, or the "
                           "user was created later); send decisions in time order")

    def check_late(self, users: np.ndarray, buckets: np.ndarray, bound: int) -> None:
        """Refuse events more than ``bound`` hours before their user's state (a decision or a
        later event was recorded). Events within it are placed in their own hour by the
        feature state (:meth:`~pushrl.data.features.FeatureState.record_activity`)."""
        lag = self.fs.clock(users) - buckets
        bad = lag > bound
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise Conflict("event_too_late", f"events[{i}]: event time is {int(lag[i])} h "
                           f"before the user's state; the server places events up to "
                           f"{bound} h late (--late-bound) in their hour; bring older history "
                           "in with `pushrl state import`")

    # ------------------------------------------------------------------ restart
    def rebuild(self) -> None:
        """Rebuild users, items, feature state, send history and subscriptions from the
        durable log (what was acknowledged: changes still waiting in :attr:`pending` are
        dropped)."""
        log = self.log
        self.pending = []
        self.items.clear()
        self.item_list.clear()
        for item_id, cat, feats, _ in log.iter_rows("SELECT * FROM items ORDER BY seq"):
            self.items[item_id] = len(self.item_list)
            self.item_list.append(Item(item_id, cat, json.loads(feats)))
        self._catalog = None
        self._item_cat = None
        idx_to_user = dict(log.iter_rows("SELECT idx, user_id FROM users"))
        restored = self._restore_history()
        run_kind = -1
        run_u: list[int] = []
        run_b: list[int] = []
        run_a: list[int] = []
        seen: set[int] = set()

        def flush() -> None:  # one vectorised call per run of distinct users of one kind
            if run_u:
                a = np.array(run_a, np.int64)
                apply_op(self.fs, run_kind, np.array(run_u, np.int64), np.array(run_b, np.int64),
                         self._categories(a) if run_kind == OP_ACTIVITY else a)
            for x in (run_u, run_b, run_a):
                x.clear()
            seen.clear()

        subs = self.subscriptions = Subscriptions()
        if restored is not None:
            subs.set(restored.unsubscribed, False)
        # (the trigger tracker's ops are its own journal: ServerTriggers.rebuild, below; the
        # channel opt-in's: ServerChannels.rebuild)
        not_trig = ",".join(map(str, sorted(TRIGGER_OPS | {OP_CHANNELS})))
        for _, kind, u, b, a, tz in log.iter_rows(
                f"SELECT * FROM ops WHERE kind NOT IN ({not_trig}) ORDER BY seq"):
            if kind == OP_SUBSCRIPTION:  # no feature changes: no flush needed
                subs.set(u, bool(a))
                continue
            if kind == OP_ADD_USER:
                flush()
                got = int(self.fs.add_users([tz], b)[0])
                if got != u:
                    raise RuntimeError(f"log journal is inconsistent: user index {u} != {got}")
                self.users[idx_to_user[u]] = u
                continue
            if kind != run_kind or u in seen:
                flush()
                run_kind = kind
            run_u.append(u)
            run_b.append(b)
            run_a.append(a)
            seen.add(u)
        flush()
        self.held_out.reset(self.users)
        self.held_out_kinds.reset(self.users)
        self.sends = SendHistory()
        if restored is not None and restored.sends.size:  # the log's last sends (guardrails)
            hu, hts = restored.sends[:, 0], restored.sends[:, 1]
            days = self.fs.local_time_at(hu, hts)[2]  # vectorised, DST-exact
            for u, ts, day in zip(hu.tolist(), hts.tolist(), days.tolist(), strict=True):
                self.sends.record(u, "", ts, day)
        for uid, ts in log.iter_rows("SELECT user_id, ts FROM decisions WHERE sent=1 "
                                     "ORDER BY seq"):
            idx = self.users[uid]
            self.sends.record(idx, self.timezone(idx), ts)  # same local day as when decided
        self.seq = log.max_seq()
        if self.triggers is not None:
            self.triggers.rebuild(self, None if restored is None else restored.trigger_events)

    def _restore_history(self) -> Restored | None:
        """Start :attr:`fs` and :attr:`users` from the imported history's snapshot
        (:mod:`pushrl.serve.history`), else empty; the journal is re-applied on top."""
        meta = history_meta(self.log)
        if meta is None:
            self.fs = FeatureState(self.spec, [], 0)
            self.users = {}
            return None
        restored = restore(self.log.dir, meta, self.spec)
        self.fs = restored.fs
        self.users = {u: i for i, u in enumerate(restored.user_ids)}
        return restored

    def timezone(self, idx: int) -> str:
        """IANA time zone of user ``idx``."""
        return self.fs.timezone(idx)
