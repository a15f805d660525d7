"""Behaviour-triggered pushes in the server (issue 16): durable pending triggers, the
due-sends pull, and one send budget with the scheduled pushes.

The rules (when a trigger exists, is cancelled, expires, which due trigger goes first and how
it meets the guardrails) are :mod:`pushrl.rules.triggers`; this module only feeds its
:class:`~pushrl.rules.triggers.TriggerTracker` with the server's events and journals what it
did, so a restart rebuilds the same tracker:

- activity events reach the tracker in the order of the ``activity`` table (``seq``), item
  updates in the order of ``item_updates``; an item's price / stock set by ``PUT
  /v1/items`` is op :data:`~pushrl.serve.store.OP_ITEM_UPDATE`;
- every trigger created gets its delay arm from the active :class:`DelayPolicy` at once and
  is a ``triggers`` row (arm, probability, policy) in the same commit as the event that
  created it; a replay re-creates the same trigger (deterministic ids) and re-applies the
  logged arm, never a new draw;
- the tracker's clock moves by op :data:`~pushrl.serve.store.OP_TRIGGER_ADVANCE` (win-back,
  waited carts and expiry happen there); a send is a normal ``decisions`` row with
  ``trigger_id`` plus op :data:`~pushrl.serve.store.OP_TRIGGER_SENT`; a due trigger held back
  by a guardrail or a higher priority one is op :data:`~pushrl.serve.store.OP_TRIGGER_REQUEUE`.

Everything is applied before the request's commit and answered only after it (the server's
group commit), so an acknowledged send or pending trigger survives ``kill -9``.

A triggered push counts in the same guardrail counters as a scheduled one (the send history
and the feature state's ``sends_7d``), and :meth:`ServerTriggers.preempt` lets ``decide``
answer with a due trigger whose priority is above :attr:`ServerTriggers.scheduled_priority`.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import operator
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pushrl.errors import DataError
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.triggers import (
    DueResolution,
    Trigger,
    TriggerConfig,
    TriggerDef,
    TriggerTracker,
)
from pushrl.serve.rows import Columns, Same
from pushrl.serve.store import (
    OP_ITEM_UPDATE,
    OP_SQL,
    OP_TRIGGER_ADVANCE,
    OP_TRIGGER_REQUEUE,
    OP_TRIGGER_SENT,
    TRIGGER_OPS,
    Many,
    Statement,
)
from pushrl.units import DAY, HOUR

if TYPE_CHECKING:
    from pushrl.serve.state import ServerState

log = logging.getLogger("pushrl.serve")
#: Hours after its event a closed (sent, dropped, cancelled, expired) trigger is forgotten by
#: the server's tracker (:func:`forget_closed`): 14 days, beyond every default expiry.
RETENTION_H = 14 * 24
#: Seconds between two forgetting scans (periods since the epoch: deterministic on replay).
FORGET_EVERY = 7 * DAY

_USER, _TID, _KIND = (operator.attrgetter(a) for a in ("user", "trigger_id", "kind"))
_TRIGGER_SQL = ("INSERT OR IGNORE INTO triggers(trigger_id, seq, user_id, kind, item_id, "
                "event_ts, expires_ts, priority, decided_ts, delay_h, pscore, policy, status, "
                "decision_id, holdout, p_holdout) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
_SENT_SQL = "UPDATE triggers SET status='sent', decision_id=? WHERE trigger_id=?"
_SHADOW_SQL = "INSERT OR IGNORE INTO trigger_shadow VALUES (?,?,?,?,?)"
#: ``arg`` of an :data:`OP_ITEM_UPDATE` op: stock unknown / out / in.
_STOCK = {None: -1, False: 0, True: 1}


class DelayPolicy(Protocol):
    """Chooses a new trigger's delay arm (hours after its event, or None = drop)."""

    @property
    def label(self) -> str:
        """``name@version`` (logged with every arm)."""
        ...

    def choose(self, trigger: Trigger, rule: TriggerDef, rng: np.random.Generator,
               st: ServerState) -> tuple[int | None, float]:
        """``(arm, probability of that arm)`` for ``trigger`` (``rule``: its kind's rule;
        ``st``: the server's state, the event already recorded). A policy may also have
        ``choose_many(triggers, rules, rng, st)``: the same for triggers created at one time,
        in one call (:meth:`ContextDelay.choose_many`)."""
        ...


@dataclass(frozen=True)
class FixedDelay:
    """The heuristic every commercial tool uses: send ``hours`` after the event (the kind's
    arm closest to it; ties go to the shorter). Deterministic: probability 1."""

    hours: int = 1
    label: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", f"fixed-{self.hours}h@heuristic")

    def choose(self, trigger: Trigger, rule: TriggerDef, rng: np.random.Generator,
               st: ServerState) -> tuple[int | None, float]:
        arm = min(rule.delays_h, key=lambda d: (abs(d - self.hours), d))
        return arm, 1.0

    def choose_many(self, triggers: list[Trigger], rules: list[TriggerDef],
                    rng: np.random.Generator, st: ServerState) -> list[tuple[int | None, float]]:
        """:meth:`choose` of each trigger (deterministic: no draws)."""
        return [self.choose(t, r, rng, st) for t, r in zip(triggers, rules, strict=True)]


class ContextDelay:
    """A delay policy over the one delay context (``pushrl/TriggerDelay-v1``,
    :func:`pushrl.sim.trigger_context.delay_context`): a trained artifact (``pushrl train
    triggers``, VW over the arms) or a delay baseline (``delay-next-active-hour`` ...).

    The context is built from the server's live feature state at the user's clock (the
    event is recorded first; in a batch, a user's later events of the batch are recorded
    before its earlier events' triggers are decided) and the catalog's item columns
    (:func:`~pushrl.sim.trigger_context.item_columns`: category, price vs the median).

    Args:
        policy: An item-style policy over the arms (``decide_batch`` on an ItemContext).
        config: The trigger rules (every enabled kind must share one ``delays_h``).
        guardrails: The guardrails the send times skip quiet hours with (called per
            decision: the server's effective guardrails).

    A VW artifact with the epsilon-greedy closed form (:mod:`pushrl.policies.delay_fast`,
    proved against VW at load) decides without VW: the same PMF and draws.

    Raises:
        ValueError: the enabled kinds have different arms.
    """

    def __init__(self, policy: Any, config: TriggerConfig,
                 guardrails: Callable[[], Guardrails]) -> None:
        from pushrl.sim.trigger_context import common_arms

        self.policy = policy
        self.arms = common_arms(config)
        self.guardrails = guardrails
        self.label = f"{policy.name}@{getattr(policy, 'version', None) or 'baseline'}"
        self._items: tuple[Any, np.ndarray, np.ndarray] | None = None
        #: The VW model's closed form (proved equal at load), else None (VW decides).
        self.scorer = _closed_form(policy, self.label)

    def _item_columns(self, st: ServerState) -> tuple[np.ndarray, np.ndarray]:
        """The catalog's delay-context item inputs
        (:func:`~pushrl.sim.trigger_context.item_columns`), recomputed when it changes."""
        from pushrl.sim.trigger_context import item_columns

        catalog = st.catalog
        if self._items is None or self._items[0] is not catalog:
            self._items = (catalog, *item_columns(st.items_frame(), st.spec))
        return self._items[1], self._items[2]

    def choose(self, trigger: Trigger, rule: TriggerDef, rng: np.random.Generator,
               st: ServerState) -> tuple[int | None, float]:
        return self.choose_many([trigger], [rule], rng, st)[0]

    def choose_many(self, triggers: list[Trigger], rules: list[TriggerDef],
                    rng: np.random.Generator, st: ServerState) -> list[tuple[int | None, float]]:
        """The arms of ``triggers`` created at one time (an advance of the clock, an item
        update firing for every user who viewed the item): one delay context and one policy
        call for the batch. The draws are the same as :meth:`choose` one trigger at a time
        (one uniform per row from ``rng``, in order; the context reads only the feature
        state, which deciding does not change)."""
        from pushrl.sim.trigger_context import delay_context

        n = len(triggers)
        u = np.array([t.user for t in triggers], np.int64)
        cats, ratios = self._item_columns(st)
        cat = np.full(n, -1, np.int64)
        ratio = np.zeros(n)
        has = [i for i, t in enumerate(triggers) if t.item is not None]
        if has:
            items = np.array([triggers[i].item for i in has], np.int64)
            cat[has], ratio[has] = cats[items], ratios[items]
        raw = st.fs.features(u, st.fs.clock(u))  # the clock: never rewinds the state
        ctx = delay_context(st.fs, u, np.array([t.event_ts for t in triggers], np.int64),
                            np.array([t.kind.value for t in triggers]), cat, ratio, self.arms,
                            self.guardrails(), features=raw)
        d = (self.scorer or self.policy).decide_batch(ctx, rng)
        arms = self.arms
        return [(arms[a], p) for a, p in zip(d.action.tolist(), d.pscore.tolist(),
                                             strict=True)]


def _closed_form(policy: Any, label: str) -> Any:
    """:class:`~pushrl.policies.delay_fast.LinearDelayScorer` of a VW delay policy (None for
    other policies, or when the model has no proved closed form: logged)."""
    from pushrl.policies.delay_fast import LinearDelayScorer
    from pushrl.policies.template_fast import NotLinear
    from pushrl.policies.vw import VWItemPolicy

    if not isinstance(policy, VWItemPolicy):
        return None
    try:
        return LinearDelayScorer.extract(policy)
    except NotLinear as exc:
        log.info("delay policy %s decides through VW: %s", label, exc)
        return None


@dataclass
class PendingSend:
    """A trigger that is being sent now (its decision row is written by the caller)."""

    trigger: Trigger
    user_id: str
    item_id: str | None


class ServerTriggers:
    """The server's trigger tracker, its delay policy and their journal.

    Args:
        config: The trigger rules (``pushrl serve --triggers``).
        policy: The delay policy (default: :class:`FixedDelay` 1 h).
        scheduled_priority: ``decide`` answers with a due trigger only when its priority is
            above this (the scheduled push's priority; 0: every default kind outranks it).
        seed: Seed of the delay policy's random draws.
    """

    def __init__(self, config: TriggerConfig, policy: DelayPolicy | None = None, *,
                 scheduled_priority: int = 0, seed: int | None = None,
                 count: Callable[[str, str, int], None] | None = None,
                 retention_h: int | None = None) -> None:
        self.config = config
        #: Closed triggers are forgotten this many hours after their event
        #: (:func:`forget_closed`; None = :data:`RETENTION_H`, 0 = kept for ever).
        self.retention_h = RETENTION_H if retention_h is None else int(retention_h)
        if self.retention_h < 0:
            raise ValueError(f"`retention_h` must be >= 0 (0 = keep), got {retention_h}")
        #: Unix s of the last journaled clock advance (:func:`forget_closed` runs at the first
        #: of each :data:`FORGET_EVERY` period), None before the first.
        self.advanced: int | None = None
        #: ``count(kind, what, n)``: metrics hook (created / sent / requeued).
        self.count = count or (lambda kind, what, n: None)
        self.policy: DelayPolicy = policy or FixedDelay()
        #: A candidate delay policy (the ``delay`` slot's shadow): decides every new trigger
        #: beside ``policy`` with its own draws; logged in ``trigger_shadow``, never acted on.
        self.shadow: DelayPolicy | None = None
        self.scheduled_priority = scheduled_priority
        self.rng = np.random.default_rng(seed)
        self.shadow_rng = np.random.default_rng(None if seed is None else [seed, 1])
        self.tracker = TriggerTracker(config)
        #: user index -> user id (for rows), filled from the users table and new users.
        self.user_ids: dict[int, str] = {}
        #: request_id -> answer of a due pull not yet known to be durable (retries).
        self.pulls: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ live
    def _decide_new(self, st: ServerState, created: list[Trigger], ts: int
                    ) -> list[Statement]:
        """Choose and record the arm of each new open trigger; its ``triggers`` row."""
        out: list[Statement] = []
        live = [t for t in created if t.is_open]
        many = getattr(self.policy, "choose_many", None) if len(live) > 1 else None
        if many is not None:  # one batched score for the triggers created together
            chosen = iter(many(live, [self.config[t.kind] for t in live], self.rng, st))
        for t in created:
            if not t.is_open:  # e.g. a win-back already ended by the event that created it
                out.append(self._row(st, t, ts, None, 1.0, "cancelled"))
                continue
            arm, p = (next(chosen) if many is not None
                      else self.policy.choose(t, self.config[t.kind], self.rng, st))
            new = self.tracker.decide(t.trigger_id, arm, p, ts)
            self.count(t.kind.value, "created", 1)
            out.append(self._row(st, new, ts, arm, p, new.status.value))
        if self.shadow is not None and live:
            out += self._shadow_rows(st, live, ts)
        return out

    def _shadow_rows(self, st: ServerState, live: list[Trigger], ts: int
                     ) -> list[Statement]:
        """The shadow delay policy's arm and probability for each new open trigger
        (``trigger_shadow`` rows); a failing shadow never breaks the live decision."""
        shadow = self.shadow
        assert shadow is not None
        try:
            many = getattr(shadow, "choose_many", None)
            rules = [self.config[t.kind] for t in live]
            arms = (list(many(live, rules, self.shadow_rng, st)) if many is not None else
                    [shadow.choose(t, r, self.shadow_rng, st) for t, r in zip(live, rules,
                                                                            strict=True)])
        except Exception as exc:  # the shadow is a candidate: log and go on without it
            log.warning("shadow delay decision failed: %s: %s", type(exc).__name__, exc)
            return []
        return [(_SHADOW_SQL, (t.trigger_id, shadow.label, ts, arm, float(p)))
                for t, (arm, p) in zip(live, arms, strict=True)]

    def _row(self, st: ServerState, t: Trigger, ts: int, arm: int | None, p: float,
             status: str) -> Statement:
        item = None if t.item is None else st.item_list[t.item].item_id
        held, p_held = st.held_out_kinds.arm(t.kind, t.user)  # the kind's holdout arm
        return (_TRIGGER_SQL, (t.trigger_id, st.next_seq(), self.user_ids.get(t.user, ""),
                               t.kind.value, item, t.event_ts, t.expires_ts, t.priority, ts,
                               arm, p, self.policy.label, status, None, held, p_held))

    def on_activity(self, st: ServerState, user: int, user_id: str, ts: int, event: str,
                    item: int | None) -> list[Statement]:
        """Feed one activity event (call right after its ``activity`` row got its seq)."""
        self.user_ids[user] = user_id
        created = self.tracker.observe_activity(user, ts, event, item)
        return self._decide_new(st, created, ts) if created else []

    def on_item_update(self, st: ServerState, item: int, ts: int, price: float | None,
                       in_stock: bool | None) -> list[Statement]:
        """Feed one item update (call right after its ``item_updates`` row got its seq)."""
        created = self.tracker.observe_item_update(item, ts, price, in_stock)
        return self._decide_new(st, created, ts) if created else []

    def on_item_put(self, st: ServerState, item: int, features: dict[str, Any],
                    ts: int) -> list[Statement]:
        """``PUT /v1/items`` with ``price`` / ``in_stock`` features: the item's known state
        (creates no trigger)."""
        price, stock = _item_state(features)
        if price is None and stock is None:
            return []
        self.tracker.set_item(item, price, stock)
        return [(OP_SQL, (st.next_seq(), OP_ITEM_UPDATE, item, ts // HOUR, _STOCK[stock],
                          None if price is None else repr(price)))]

    def advance(self, st: ServerState, ts: int) -> list[Statement]:
        """Move the tracker's clock to ``ts`` (win-back, waited carts, expiry)."""
        if self.tracker.now is not None and ts <= self.tracker.now:
            return []
        created = self.tracker.advance(ts)
        stmts: list[Statement] = [(OP_SQL, (st.next_seq(), OP_TRIGGER_ADVANCE, -1,
                                            ts // HOUR, ts, None))]
        stmts += self._decide_new(st, created, ts)
        forget_closed(self.tracker, self.advanced, ts, self.retention_h)
        self.advanced = ts
        return stmts

    def due_users(self, users: np.ndarray, ts: np.ndarray | int, *,
                  outranking: bool = False) -> np.ndarray:
        """``(k,)`` bool: user ``users[i]`` has a trigger due at ``ts`` (scalar or ``(k,)``;
        ``outranking``: one whose priority is above :attr:`scheduled_priority`)."""
        tr = self.tracker
        out = np.zeros(len(users), bool)
        ul = users.tolist()
        has = [i for i, u in enumerate(ul) if tr.has_open(u)]
        if not has:
            return out
        t = np.broadcast_to(np.asarray(ts, np.int64), users.shape).tolist()
        for i in has:
            due = tr.due(ul[i], t[i])
            out[i] = bool(due) and (not outranking or due[0].priority > self.scheduled_priority)
        return out

    def resolve(self, st: ServerState, users: np.ndarray, ts: int, guardrails: Guardrails,
                push_opt_in: np.ndarray | None = None
                ) -> tuple[DueResolution, list[Statement]]:
        """Send or re-queue the triggers of ``users`` due at ``ts`` against the ONE
        guardrails with the server's counters (every push counts); journals it. The caller
        writes a decision row per sent trigger
        (:meth:`~pushrl.serve.engine.Engine.trigger_rows`). ``push_opt_in``: ``(k,)`` bool,
        the users' push opt-in with ``--channels``
        (:meth:`~pushrl.serve.channels.ServerChannels.push_mask`; a trigger send is a push,
        so a user opted out of push is treated as unsubscribed: re-queued until expiry), or
        None (no channels)."""
        hours, _, days = st.fs.local_time_at(users, np.full(len(users), ts, np.int64))
        today, week = st.sends.counts(users, np.full(len(users), ts // HOUR), days)
        subscribed = st.subscriptions.mask(users)
        if push_opt_in is not None:
            subscribed = push_opt_in if subscribed is None else subscribed & push_opt_in
        res = self.tracker.resolve_due(ts, users.tolist(), guardrails, hours, today, week,
                                       subscribed,
                                       held_out=st.held_out.mask(users),
                                       held_out_kinds=st.held_out_kinds.masks(users))
        ns, nr = len(res.sent), len(res.requeued)
        seq, b = st.take_seqs(ns + nr), ts // HOUR  # one block, one statement per op kind
        stmts: list[Statement] = []
        if ns + nr <= 4:  # a decision's few rows: plain statements
            stmts += [(OP_SQL, (seq + j, OP_TRIGGER_SENT, t.user, b, ts, t.trigger_id))
                     for j, t in enumerate(res.sent, 1)]
            stmts += [(OP_SQL, (seq + ns + j, OP_TRIGGER_REQUEUE, t.user, b,
                                int(t.due_ts or 0), t.trigger_id))
                      for j, t in enumerate(res.requeued, 1)]
            self._count(res)
            return res, stmts
        if ns:
            stmts.append((OP_SQL, Columns(
                ns, range(seq + 1, seq + ns + 1), Same(OP_TRIGGER_SENT),
                list(map(_USER, res.sent)), Same(b), Same(ts), list(map(_TID, res.sent)))))
        seq += ns
        if nr:
            stmts.append((OP_SQL, Many(zip(
                range(seq + 1, seq + nr + 1), repeat(OP_TRIGGER_REQUEUE, nr),
                [t.user for t in res.requeued], repeat(b, nr),
                [int(t.due_ts or 0) for t in res.requeued],
                [t.trigger_id for t in res.requeued], strict=True))))
        self._count(res)
        return res, stmts

    def _count(self, res: DueResolution) -> None:
        """The metrics of a resolution (sent / re-queued per kind)."""
        for what, ts_ in (("sent", res.sent), ("requeued", res.requeued)):
            if ts_:
                for kind, n in Counter(map(_KIND, ts_)).items():
                    self.count(kind.value, what, n)

    # ------------------------------------------------------------------ restart
    def rebuild(self, st: ServerState,
                history: Mapping[str, np.ndarray] | None = None) -> None:
        """Rebuild the tracker from the durable log (after the feature state: items and
        users are known): from the snapshot of the last clean shutdown
        (:meth:`save_snapshot`) when it matches the log, replaying only the journal after
        it, else from the start: the imported history first (``history``: the trigger
        arrays of ``pushrl state import``, :mod:`pushrl.serve.trigger_history`), then the
        journal."""
        self.user_ids = {int(i): str(u) for i, u in
                         st.log.iter_rows("SELECT idx, user_id FROM users")}
        start, after, advanced = self._load_snapshot(st)
        undecided: list[str] = []
        if start is None and history is not None:
            start, undecided = self._from_history(st, history)
        rep = replay_journal(st.log.iter_rows, self.config, st.users, st.items, start=start,
                             after=after, retention_h=self.retention_h, advanced=advanced)
        self.tracker, self.advanced = rep.tr, rep.advanced
        self.pulls.clear()
        if undecided:
            self._decide_history(st, undecided)
        if history is not None and start is not None and after == 0:
            # the imported history was replayed: snapshot it now, so a later start (even
            # after a crash) replays only the journal after this point
            self.save_snapshot(st)

    def _from_history(self, st: ServerState, history: Mapping[str, np.ndarray]
                      ) -> tuple[TriggerTracker, list[str]]:
        """The tracker after the imported log, with the log's arms (and the server's own
        rows for history triggers it decided at an earlier start)."""
        from pushrl.serve.trigger_history import logged_arms, replay_history

        arms = logged_arms(history)
        arms.update({r[0]: (r[1], r[2], r[3]) for r in st.log.iter_rows(
            "SELECT trigger_id, delay_h, pscore, decided_ts FROM triggers")})
        return replay_history(self.config, history, arms)

    def _decide_history(self, st: ServerState, undecided: list[str]) -> None:
        """Give the open history triggers without a logged arm one from the delay policy
        and journal them (a later start re-applies these rows, never a new draw)."""
        tr = self.tracker
        todo = [t for t in map(tr.get, undecided)
                if t is not None and t.is_open and not t.decided]
        stmts: list[Statement] = []
        for t in todo:
            stmts += self._decide_new(st, [t], t.event_ts)
        if stmts:
            st.log.write(stmts)
            log.info("decided %d open triggers of the imported history with %s", len(todo),
                     self.policy.label)

    def save_snapshot(self, st: ServerState) -> None:
        """Write the tracker as of the log's last seq (clean shutdown; atomic)."""
        body = json.dumps(self.tracker.to_dict(), sort_keys=True)
        snap = {"format": SNAPSHOT_FORMAT, "seq": st.seq, "n_activity": _count(st, st.seq),
                "sha256": hashlib.sha256(body.encode()).hexdigest(), "tracker": body,
                "advanced": self.advanced}
        path = st.log.dir / SNAPSHOT_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(snap))
        tmp.replace(path)

    def _load_snapshot(self, st: ServerState) -> tuple[TriggerTracker | None, int, int | None]:
        """``(tracker, seq, last clock advance)`` of a snapshot that matches the log and the
        rules, else ``(None, 0, None)`` (then the whole journal is replayed; the reason is
        logged)."""
        path = st.log.dir / SNAPSHOT_FILE
        if not path.exists():
            return None, 0, None
        why = None
        try:
            snap = json.loads(path.read_text())
            body, seq = snap["tracker"], int(snap["seq"])
            if snap.get("format") != SNAPSHOT_FORMAT:
                why = f"format {snap.get('format')!r}"
            elif hashlib.sha256(body.encode()).hexdigest() != snap["sha256"]:
                why = "checksum mismatch"
            elif seq > st.log.max_seq() or _count(st, seq) != snap["n_activity"]:
                why = "it does not match the log (restored from a backup?)"
            else:
                tr = TriggerTracker.from_dict(json.loads(body))
                adv = snap.get("advanced")  # (absent in older snapshots)
                if tr.config != self.config:
                    why = "other trigger rules (--triggers changed)"
                else:
                    return tr, seq, None if adv is None else int(adv)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            why = f"unreadable ({type(exc).__name__}: {exc})"
        log.warning("trigger snapshot %s not used (%s): replaying the whole journal", path, why)
        return None, 0, None


Rows = Callable[[str], Iterable[tuple[Any, ...]]]


def forget_closed(tracker: TriggerTracker, prev: int | None, ts: int, retention_h: int) -> int:
    """At the first journaled clock advance (op ``OP_TRIGGER_ADVANCE``) of each
    :data:`FORGET_EVERY` period since the epoch (``prev``: the previous advance's time;
    none before the first, which a restart continues from), forget the closed triggers
    whose event is more than ``retention_h`` hours before ``ts`` (0: never), so the tracker
    and its snapshot stay bounded. The server and its replay call it at the same ops with
    the same clocks, so a restart rebuilds the same tracker; the export replays without it
    (every trigger's final status). The scan covers every trigger the tracker holds (~0.2 us
    each), hence once a week, not on every pull. Returns how many were forgotten."""
    if not retention_h or prev is None or ts // FORGET_EVERY <= prev // FORGET_EVERY:
        return 0
    return tracker.forget_closed(ts - retention_h * HOUR)


def replay(rows: Rows, config: TriggerConfig, users: Mapping[str, int],
           items: Mapping[str, int], *, start: TriggerTracker | None = None,
           after: int = 0) -> TriggerTracker:
    """The tracker a server built, from its durable log (:func:`journal` order). Arms come
    from the ``triggers`` rows, never from a new draw; a re-created trigger without a
    logged arm (the log was written under another trigger config) is dropped, never sent.

    Args:
        rows: Runs a read query, returns its rows (``DurableLog.iter_rows``).
        config: The trigger rules the server runs with.
        users: ``{user_id: user index}``.
        items: ``{item_id: catalog index}``.
        start: The tracker as of seq ``after`` (a snapshot), else a new one.
        after: Replay only the journal after this seq.

    Every trigger is kept (the export's final statuses); a server's rebuild forgets as it
    did live (:func:`replay_journal`).
    """
    return replay_journal(rows, config, users, items, start=start, after=after).tr


def replay_journal(rows: Rows, config: TriggerConfig, users: Mapping[str, int],
                   items: Mapping[str, int], *, start: TriggerTracker | None = None,
                   after: int = 0, retention_h: int = 0,
                   advanced: int | None = None) -> _Replay:
    """:func:`replay` with the server's :attr:`ServerTriggers.retention_h`
    (:func:`forget_closed` at the journaled clock advances, the last of them before seq
    ``after`` at ``advanced``); the replay holds the tracker and the last advance."""
    arms = {r[0]: (r[1], r[2], r[3]) for r in rows(
        f"SELECT trigger_id, delay_h, pscore, decided_ts FROM triggers WHERE seq > {int(after)}")}
    rep = _Replay(start or TriggerTracker(config), arms, users, items, retention_h, advanced)
    for row in journal(rows, after):
        rep.apply(row)
    if rep.n_missing:
        log.warning("%d triggers re-created from the log have no logged delay arm (the "
                    "trigger config changed): dropped, never sent", rep.n_missing)
    return rep


@dataclass
class _Replay:
    """Applies journal rows (:func:`journal`) to a tracker."""

    tr: TriggerTracker
    arms: dict[str, tuple[int | None, float, int]]
    users: Mapping[str, int]
    items: Mapping[str, int]
    retention_h: int = 0
    advanced: int | None = None
    n_missing: int = 0

    def decide(self, created: list[Trigger]) -> None:
        """Re-apply the logged arms of re-created triggers."""
        for t in created:
            if not t.is_open:
                continue
            got = self.arms.get(t.trigger_id)
            try:
                if got is None:
                    raise DataError("not logged")
                self.tr.decide(t.trigger_id, got[0], float(got[1]), int(got[2]))
            except DataError:
                self.n_missing += 1
                self.tr.decide(t.trigger_id, None, 1.0, t.event_ts)

    def apply(self, row: tuple[Any, ...]) -> None:
        """One journal row."""
        tr, kind = self.tr, row[1]
        if kind == _ACTIVITY:
            _, _, uid, ts, event, item_id = row
            u = self.users.get(uid)
            item = None if item_id is None else self.items.get(item_id)
            if u is not None and (event == "session" or item is not None):
                self.decide(tr.observe_activity(u, int(ts), event, item))
        elif kind == _UPDATE:
            _, _, item_id, ts, price, stock = row
            item = self.items.get(item_id)
            if item is not None:
                self.decide(tr.observe_item_update(item, int(ts), price,
                                                   None if stock is None else bool(stock)))
        elif kind == OP_TRIGGER_ADVANCE:
            ts = int(row[4])
            self.decide(tr.advance(ts))
            forget_closed(tr, self.advanced, ts, self.retention_h)
            self.advanced = ts
        elif kind in (OP_TRIGGER_SENT, OP_TRIGGER_REQUEUE):
            t = tr.get(str(row[5]))
            if t is not None and t.is_open:
                if kind == OP_TRIGGER_SENT:
                    tr.mark_sent(t.trigger_id, int(row[4]))
                else:
                    tr.requeue(t.trigger_id, int(row[4]))
        elif kind == OP_ITEM_UPDATE:
            tr.set_item(int(row[2]), None if row[5] is None else float(row[5]),
                        None if row[4] < 0 else bool(row[4]))


_ACTIVITY, _UPDATE = -1, -2  # journal row kinds of the activity and item_updates tables
SNAPSHOT_FILE = "triggers_snapshot.json"
SNAPSHOT_FORMAT = "pushrl/trigger-snapshot/v1"


def _count(st: ServerState, seq: int) -> int:
    """Activity rows up to ``seq`` (a snapshot's fingerprint of the log it was taken on)."""
    return int(st.log.query("SELECT count(*) FROM activity WHERE seq <= ?", (seq,))[0][0])


def _item_state(features: dict[str, Any]) -> tuple[float | None, bool | None]:
    """``price`` / ``in_stock`` of an item's features (None: not given or not a value)."""
    p, s = features.get("price"), features.get("in_stock")
    price = float(p) if isinstance(p, int | float) and not isinstance(p, bool) else None
    stock = s if isinstance(s, bool) else None
    return price, stock


def journal(rows: Rows, after: int = 0) -> Iterator[tuple[Any, ...]]:
    """The tracker's inputs in the order they were applied: activity rows (kind
    ``_ACTIVITY``), item updates (``_UPDATE``) and trigger ops, merged by ``seq``, those
    after seq ``after``. Rows: ``(seq, kind, a, b, c, d)``."""
    a = int(after)
    act = ((s, _ACTIVITY, u, t, e, i) for s, u, t, e, i in rows(
        f"SELECT seq, user_id, ts, event, item_id FROM activity WHERE seq > {a} ORDER BY seq"))
    upd = ((s, _UPDATE, i, t, p, k) for s, i, t, p, k in rows(
        f"SELECT seq, item_id, ts, price, in_stock FROM item_updates WHERE seq > {a} "
        "ORDER BY seq"))
    kinds = ",".join(str(k) for k in sorted(TRIGGER_OPS))
    ops = ((s, k, u, b, a, tz) for s, k, u, b, a, tz in rows(
        f"SELECT seq, kind, user_idx, bucket, arg, tz FROM ops WHERE kind IN ({kinds}) "
        f"AND seq > {a} ORDER BY seq"))
    return heapq.merge(act, upd, ops, key=lambda r: r[0])


