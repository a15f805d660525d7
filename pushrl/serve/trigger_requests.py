"""The server's behaviour-trigger requests (issue 16): item updates, the due-sends pull and
a user's pending triggers. The state changes go through
:class:`~pushrl.serve.triggers.ServerTriggers` and the engine's push rows
(:meth:`~pushrl.serve.engine.Engine.trigger_rows`); :class:`~pushrl.serve.server.Server`
mixes this class in.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import operator
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from pushrl.serve import bulk_sends
from pushrl.serve.engine import Engine, iso
from pushrl.serve.errors import Conflict, Unprocessable
from pushrl.serve.schemas import ItemUpdate, TriggersDueIn
from pushrl.serve.state import ServerState
from pushrl.serve.store import DurableLog, Statement
from pushrl.units import HOUR


def _sec(ts: Any, now: int) -> int:
    return now if ts is None else int(ts.timestamp())


def _iso_many(secs: Sequence[int]) -> list[str]:
    """:func:`~pushrl.serve.engine.iso` of each of ``secs`` (formatted once per distinct
    value: the triggers of one pull share few event times)."""
    fmt = {x: iso(x) for x in set(secs)}
    return [fmt[x] for x in secs]


class _GcPause:
    """The cyclic GC paused while a pull's burst of acyclic objects lives (``with``; nests;
    threads may enter and leave it): a 10k-send pull makes ~100k rows (tuples, dicts, frozen
    triggers) that live until its commit, which the collector would otherwise traverse and
    promote over and over (~40 % of the pull's CPU). Nothing a pull makes is a reference
    cycle; the collection deferred to the end of the pause then visits only what outlives
    the answer (the tracker's new triggers)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if not self._depth:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if not self._depth and self._was_enabled:
                gc.enable()


#: The one pause of the server's pulls (:meth:`TriggerRequests.triggers_due`; over HTTP to
#: the answer's sending, :meth:`TriggerRequests.triggers_due_json`).
GC_PAUSE = _GcPause()


#: A sent trigger's fields in a pull's answer, one getter each (a C-level ``map`` per field).
_ANSWER_FIELDS = tuple(map(operator.attrgetter, ("user", "event_ts", "kind", "delay_h",
                                                 "priority")))


@functools.lru_cache(maxsize=64)
def _kind_value(kind: Any) -> str:
    return str(kind.value)


#: The fields of a sent trigger in a pull's answer, in order (the columns of ``format
#: "columns"``; the keys of each send otherwise).
COLUMNS = ("trigger_id", "decision_id", "user_id", "kind", "item_id", "event_ts", "delay_h",
           "pscore", "policy", "priority")


def _columns(cols: list[list[Any]]) -> dict[str, list[Any]]:
    return dict(zip(COLUMNS, cols or [[] for _ in COLUMNS], strict=True))


def _encode(texts: list[tuple[dict[str, Any], str]], out: dict[str, Any]) -> str:
    """``json.dumps(out)``, or the text already made of this very answer (``texts``)."""
    for o, text in texts:
        if o is out:
            return text
    return json.dumps(out)


def _key(users: list[str], ts: int, columns: bool) -> dict[str, Any]:
    """What a retried ``request_id`` must repeat (the row format's key as before)."""
    return {"users": users, "ts": ts, "format": "columns"} if columns else {
        "users": users, "ts": ts}


class TriggerRequests:
    """Trigger requests of a :class:`~pushrl.serve.server.Server` (which provides the
    attributes below)."""

    state: ServerState
    engine: Engine
    log: DurableLog
    in_worker: Callable[..., Awaitable[Any]]

    def now(self) -> int:
        """Unix seconds (the server's clock)."""
        raise NotImplementedError

    def item_updates(self, updates: list[ItemUpdate]) -> tuple[dict[str, Any], list[Statement]]:
        """Record price / stock changes (all validated before any is applied); with
        ``--triggers`` they create price-drop and back-in-stock triggers."""
        st, now = self.state, self.now()
        idx = [st.item_index(x.item_id) for x in updates]
        st.check_writable()
        trig = st.triggers
        stmts: list[Statement] = []
        created = 0
        for x, i in zip(updates, idx, strict=True):
            t = _sec(x.ts, now)
            stmts.append(("INSERT INTO item_updates VALUES (?,?,?,?,?)", (
                st.next_seq(), x.item_id, t, x.price,
                None if x.in_stock is None else int(x.in_stock))))
            if trig is not None:
                got = trig.on_item_update(st, i, t, x.price, x.in_stock)
                created += len(got)
                stmts += got
        return {"accepted": len(updates), "triggers_created": created}, stmts

    def triggers_off(self) -> Conflict:
        """The error of a trigger request on a server without ``--triggers``."""
        return Conflict("triggers_off", "this server runs without behaviour triggers; start "
                        "it with `pushrl serve --triggers FILE` (a TOML with [triggers.cart] "
                        "etc., or `default`)")

    def triggers_due(self, req: TriggersDueIn,
                     texts: list[tuple[dict[str, Any], str]] | None = None
                     ) -> tuple[dict[str, Any], list[Statement]]:
        """The due triggered sends of ``req.users`` at ``req.ts`` (what a sender polls):
        each logged as a push and marked sent before the answer (a second poll does not
        return it again; a retry with the same ``request_id`` gets the first answer).
        ``texts``: gets ``(answer, json.dumps(answer))`` when the answer is stored for
        retries (a ``request_id``; the stored row embeds that text: encoded once)."""
        st = self.state
        trig = st.triggers
        if trig is None:
            raise self.triggers_off()
        ts = _sec(req.ts, self.now())
        columns = req.format == "columns"
        if req.request_id is not None:
            got = self._pulled(req.request_id, req.users, ts, columns)
            if got is not None:
                return {**got, "replayed": True}, []
        got_idx = list(map(st.users.get, req.users))  # one C-level pass; unknown: None
        if None in got_idx:
            st.user_index(req.users[got_idx.index(None)])  # the first unknown user's 404
        users = np.array(got_idx, np.int64)
        if np.unique(users).size != users.size:
            raise Unprocessable("duplicate_user", "`users` lists a user twice; list each once")
        lag = st.fs.clock(users) - ts // HOUR
        if (lag > 0).any():
            i = int(np.flatnonzero(lag > 0)[0])
            raise Conflict("time_before_state", f"users[{i}] ({req.users[i]!r}): the poll's "
                           f"ts is {int(lag[i])} h before the user's state (a later event or "
                           "decision was recorded); poll with the current time")
        st.check_writable()
        out: dict[str, Any] = {"sends": _columns([]) if columns else [], "requeued": 0,
                               "replayed": False}
        stmts: list[Statement] = []
        with GC_PAUSE:  # (to the end: the record's packing allocates too)
            if not self.engine.kill_switch:
                try:
                    self._resolve_due(users, ts, out, stmts, columns)
                except BaseException:
                    st.pending.extend(stmts)  # applied to the state: journal it anyway
                    raise
            if self._sent(out) >= bulk_sends.BULK_MIN_SENDS:
                # one durable row for the pull's ~5 rows per send, expanded by the writer
                try:
                    stmts = [bulk_sends.pack(stmts, st.seq)]
                except ValueError:  # a value marshal cannot store: the rows as they are
                    pass
            if req.request_id is not None:
                key = _key(req.users, ts, columns)
                trig.pulls[req.request_id] = {"key": key, "out": out}
                text = json.dumps(out)  # the row: json.dumps({"key": key, "out": out})
                stmts.append(("INSERT INTO trigger_pulls VALUES (?,?,?,?)", (
                    req.request_id, st.next_seq(), ts,
                    f'{{"key": {json.dumps(key)}, "out": {text}}}')))
                if texts is not None:
                    texts.append((out, text))
        return out, stmts

    @staticmethod
    def _sent(out: dict[str, Any]) -> int:
        sends = out["sends"]
        return len(sends["trigger_id"] if isinstance(sends, dict) else sends)

    def _resolve_due(self, users: np.ndarray, ts: int, out: dict[str, Any],
                     stmts: list[Statement], columns: bool = False) -> None:
        st = self.state
        trig = st.triggers
        assert trig is not None
        stmts += trig.advance(st, ts)
        cand = users[trig.tracker.open_mask(users)]  # resolve_due skips the not due
        if not cand.size:
            return
        ch = self.engine.channels
        res, s = trig.resolve(st, cand, ts, self.engine.guardrails,
                              None if ch is None else ch.push_mask(cand))
        stmts += s
        out["requeued"] = len(res.requeued)
        if not res.sent:
            return
        uid_of = trig.user_ids.get
        users_, events, kinds, delays, prios = (list(map(g, res.sent)) for g in _ANSWER_FIELDS)
        ids = [uid_of(x, "") for x in users_]
        sends = self.engine.trigger_sends(res.sent, ids, ts, stmts, advance=True)
        label = sends.policy
        when = _iso_many(events)
        if columns:  # one list per field: ~5x cheaper to encode than 10k objects
            out["sends"] = _columns([
                sends.trigger_ids, sends.decision_ids, ids, list(map(_kind_value, kinds)),
                sends.items, when, delays, sends.pscore, [label] * len(ids),
                prios])
            return
        out["sends"] = [
            {"trigger_id": tid, "decision_id": did, "user_id": uid, "kind": kv,
             "item_id": it, "event_ts": ev, "delay_h": dh, "pscore": p,
             "policy": label, "priority": pr}
            for tid, did, uid, kv, it, ev, dh, p, pr in zip(
                sends.trigger_ids, sends.decision_ids, ids, map(_kind_value, kinds),
                sends.items, when, delays, sends.pscore, prios, strict=True)]

    def _pulled(self, request_id: str, users: list[str], ts: int,
                columns: bool = False) -> dict[str, Any] | None:
        """The stored answer of a pull with this ``request_id`` (None: a new one)."""
        trig = self.state.triggers
        assert trig is not None
        got = trig.pulls.get(request_id)
        if got is None:
            row = self.log.query("SELECT response FROM trigger_pulls WHERE request_id=?",
                                 (request_id,), settled=False)  # (never in a bulk record)
            got = json.loads(row[0][0]) if row else None
        if got is None:
            return None
        if got["key"] != _key(users, ts, columns):
            raise Conflict("request_id_reused", f"request_id {request_id!r} was used for "
                           "another poll (other users, ts or format); use a new id per poll "
                           "and the same id only for its retries")
        return dict(got["out"])

    def pull_done(self, request_id: str | None) -> None:
        """Forget the in-memory answer of a pull once it is durable."""
        trig = self.state.triggers
        if request_id is not None and trig is not None:
            trig.pulls.pop(request_id, None)

    async def triggers_due_async(self, req: TriggersDueIn) -> dict[str, Any]:
        """:meth:`triggers_due` in a worker thread (10k users: tens of ms), then commit."""
        out: dict[str, Any] = await self.in_worker(lambda: self.triggers_due(req),
                                                   lambda: self.pull_done(req.request_id))
        return out

    async def triggers_due_json(self, req: TriggersDueIn) -> tuple[str, Callable[[], None]]:
        """:meth:`triggers_due_async`, the answer as JSON text, encoded while the commit's
        fsync runs (the writer then holds no GIL), and a callable to call once it is sent:
        the writer expands the pull's bulk record after it, and the cyclic GC, paused from
        the pull to then (:data:`GC_PAUSE`), resumes, so its collection of what the pull
        left runs after the answer. It runs by itself :data:`~pushrl.serve.bulk_sends.
        HOLD_MAX` s after the answer's text (a client gone away)."""
        sent: list[threading.Event] = []
        once = threading.Lock()

        def after() -> None:  # (the response's background task: a worker thread)
            if once.acquire(blocking=False):
                GC_PAUSE.__exit__()
                if sent:
                    sent[0].set()

        texts: list[tuple[dict[str, Any], str]] = []  # (answer, its text) when stored

        def run() -> tuple[dict[str, Any], list[Statement]]:
            out, stmts = self.triggers_due(req, texts)
            for sql, rec in stmts:
                if sql is bulk_sends.BULK_SQL:
                    rec.sent = threading.Event()  # type: ignore[union-attr]
                    sent.append(rec.sent)  # type: ignore[union-attr]
            return out, stmts

        GC_PAUSE.__enter__()
        try:
            text: str = await self.in_worker(run, lambda: self.pull_done(req.request_id),
                                             encode=functools.partial(_encode, texts))
        except BaseException:
            after()
            raise
        asyncio.get_running_loop().call_later(bulk_sends.HOLD_MAX, after)
        return text, after

    def user_triggers(self, user_id: str) -> dict[str, Any]:
        """A user's open (pending) triggers, in sending order."""
        st = self.state
        trig = st.triggers
        if trig is None:
            raise self.triggers_off()
        u = st.user_index(user_id)
        out = []
        for t in trig.tracker.open(u):
            out.append({"trigger_id": t.trigger_id, "kind": t.kind.value,
                        "item_id": None if t.item is None else st.item_list[t.item].item_id,
                        "event_ts": iso(t.event_ts), "expires_ts": iso(t.expires_ts),
                        "priority": t.priority, "status": t.status.value,
                        "delay_h": t.delay_h, "pscore": t.pscore or 1.0,
                        "due_ts": None if t.due_ts is None else iso(t.due_ts)})
        return {"user_id": user_id, "triggers": out}
