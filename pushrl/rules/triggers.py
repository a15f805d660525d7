"""Behaviour triggers: the one definition of when a triggered push exists, when it is
cancelled or expires, and how a due trigger meets the guardrails (issue #16).

The simulator, log processing (trigger rounds from logs) and the server all run
:class:`TriggerTracker`; none writes its own copy of these rules.

Semantics (times are UTC unix seconds, ints):

* **Activity**: ``session``, ``view``, ``cart``, ``purchase`` (the last three with an item).
  Every activity event counts as a session for win-back (a view implies a visit).
* **Kinds** (:class:`TriggerKind`), each configured by one :class:`TriggerDef`:

  - ``cart``: a cart of item ``i`` with no purchase of ``i`` for ``wait_h`` hours. With
    ``wait_h = 0`` the trigger exists at the cart (``event_ts`` = the cart's time) and a
    purchase cancels it; with ``wait_h > 0`` it is created by :meth:`TriggerTracker.advance`
    at ``cart_ts + wait_h`` h (its ``event_ts``) if ``i`` is still carted.
  - ``browse``: ``>= min_views`` views of item ``i`` within the last ``window_h`` hours
    (the current view included) while ``i`` is not carted. A later cart of ``i`` cancels an
    open browse trigger of ``i`` (its condition no longer holds; the cart trigger takes over).
  - ``price_drop``: an item update lowers ``i``'s price by ``>= min_drop_pct`` percent vs its
    previous known price; fires for every user who viewed or carted ``i`` within
    ``lookback_h`` hours before the update.
  - ``back_in_stock``: an update moves ``i`` from out of stock to in stock (the previous
    state must be known: an item's first known state creates nothing); fires for the users
    who viewed or carted ``i`` within ``lookback_h`` hours.
  - ``winback``: no activity for ``inactive_days`` days. Created by
    :meth:`~TriggerTracker.advance` with ``event_ts = last_activity + inactive_days`` days,
    once per inactivity spell (a spell ends with the next activity). No item.

  A purchase of ``i`` forgets the user's views, cart and interaction of ``i``.
* **Creation limits**: a kind that is not ``enabled`` creates nothing. No trigger of
  ``(kind, item)`` is created for a user while one of the same ``(kind, item)`` is open, nor
  within ``cooldown_h`` hours after the previous one's ``event_ts``.
* **Ids** are deterministic (:func:`trigger_id`: blake2b of user, kind, item, event_ts), so a
  retried or replayed event finds the trigger it already created and creates nothing.
* **Cancel** (:attr:`TriggerDef.cancel`): ``item_purchase`` = a purchase of the trigger's
  item (any purchase for a trigger without item); ``any_purchase`` = any purchase;
  ``session`` = any activity of the user. An event cancels open triggers before it can
  create new ones. A cancelled trigger is never sent.
* **Delay decision**: taken once, at creation, by a delay policy (outside this module) and
  recorded with :meth:`TriggerTracker.decide`: arm ``d`` (hours, one of ``delays_h``) ->
  due at ``event_ts + d`` h; arm ``None`` = drop (status ``dropped``, never sent). The
  probability of the chosen arm is stored as ``pscore``. An undecided trigger is never due.
* **Expiry**: an open trigger not sent before ``expires_ts = event_ts + expiry_h`` h expires
  (by :meth:`~TriggerTracker.advance`, or when it is found past expiry while resolving).
* **Sending** (:meth:`TriggerTracker.resolve_due`): at time ``now`` each user's open,
  decided triggers with ``due_ts <= now`` and ``now < expires_ts`` are ordered by priority
  (higher first), then ``event_ts``, then id. The ONE :class:`~pushrl.rules.guardrails.
  Guardrails` decides whether the user may get a push now (triggered and scheduled pushes
  share the caps: the caller passes its sends today / in the weekly window, which include
  scheduled pushes). If allowed, the first trigger is sent and the others are re-queued to
  the start of the next hour bucket; if blocked, all are re-queued (never silently dropped)
  and each expires when its expiry passes. At most one triggered push per user per call.
  The caller records the send in its own caps (``DayCount``, sends in the week window).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from pushrl.errors import DataError
from pushrl.rules.guardrails import ALLOWED, HELD_OUT, REASONS, Guardrails
from pushrl.units import DAY, HOUR, bucket_of, bucket_start


class TriggerKind(StrEnum):
    """The behaviour a trigger reacts to."""

    CART = "cart"
    BROWSE = "browse"
    PRICE_DROP = "price_drop"
    BACK_IN_STOCK = "back_in_stock"
    WINBACK = "winback"


class TriggerStatus(StrEnum):
    """Life cycle: ``open`` -> ``sent`` | ``dropped`` | ``cancelled`` | ``expired``."""

    OPEN = "open"
    SENT = "sent"
    DROPPED = "dropped"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


Cancel = Literal["item_purchase", "any_purchase", "session"]
CANCELS: tuple[str, ...] = ("item_purchase", "any_purchase", "session")
#: Activity events the tracker understands.
ACTIVITY_EVENTS: tuple[str, ...] = ("session", "view", "cart", "purchase")
#: Default delay arms in hours ("drop" is always an extra arm: ``None``).
DEFAULT_DELAYS_H: tuple[int, ...] = (0, 1, 2, 4, 8, 24)
KINDS: tuple[TriggerKind, ...] = tuple(TriggerKind)

#: The kind parameters each kind takes (the common fields are in every kind).
_COMMON = ("enabled", "priority", "expiry_h", "cancel", "cooldown_h", "delays_h")
_KIND_KEYS: dict[TriggerKind, tuple[str, ...]] = {
    TriggerKind.CART: ("wait_h",),
    TriggerKind.BROWSE: ("min_views", "window_h"),
    TriggerKind.PRICE_DROP: ("min_drop_pct", "lookback_h"),
    TriggerKind.BACK_IN_STOCK: ("lookback_h",),
    TriggerKind.WINBACK: ("inactive_days",),
}


@dataclass(frozen=True)
class TriggerDef:
    """One trigger kind's rule (module docstring for the semantics).

    Attributes:
        kind: The behaviour.
        enabled: False = the kind creates nothing.
        priority: Higher wins when several triggers are due for a user.
        expiry_h: Hours after ``event_ts`` after which an unsent trigger expires (>= 1).
        cancel: What cancels an open trigger.
        cooldown_h: No second ``(kind, item)`` trigger within this many hours of the last.
        delays_h: Delay arms in hours, strictly increasing, each ``< expiry_h``.
        wait_h: cart: hours without a purchase before the trigger exists.
        min_views: browse: views of one item within ``window_h`` hours.
        window_h: browse: the views' window.
        min_drop_pct: price_drop: minimum fall vs the previous price, percent in (0, 100).
        lookback_h: price_drop / back_in_stock: the user viewed or carted the item within
            this many hours before the update.
        inactive_days: winback: days without activity.
    """

    kind: TriggerKind
    enabled: bool = True
    priority: int = 0
    expiry_h: int = 48
    cancel: Cancel = "item_purchase"
    cooldown_h: int = 24
    delays_h: tuple[int, ...] = DEFAULT_DELAYS_H
    wait_h: int = 0
    min_views: int = 2
    window_h: int = 24
    min_drop_pct: float = 10.0
    lookback_h: int = 168
    inactive_days: int = 14

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", TriggerKind(self.kind))
        where = f"[triggers.{self.kind.value}]"
        if not isinstance(self.enabled, bool):
            raise DataError(f"{where} enabled must be true or false, got {self.enabled!r}")
        for name in ("priority", "expiry_h", "cooldown_h", "wait_h", "min_views", "window_h",
                     "lookback_h", "inactive_days"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer):
                raise DataError(f"{where} {name} must be an integer, got {v!r}")
            object.__setattr__(self, name, int(v))
            if name != "priority" and v < 0:
                raise DataError(f"{where} {name} must be >= 0, got {v}")
        if self.expiry_h < 1:
            raise DataError(f"{where} expiry_h must be >= 1 hour, got {self.expiry_h}")
        if self.min_views < 1 or self.window_h < 1 or self.inactive_days < 1:
            raise DataError(f"{where} min_views, window_h and inactive_days must be >= 1")
        if self.cancel not in CANCELS:
            raise DataError(f"{where} cancel must be one of {list(CANCELS)}, "
                            f"got {self.cancel!r}")
        pct = self.min_drop_pct
        if isinstance(pct, bool) or not isinstance(pct, int | float) or not 0 < pct < 100:
            raise DataError(f"{where} min_drop_pct must be a percentage in (0, 100), got {pct!r}")
        object.__setattr__(self, "min_drop_pct", float(pct))
        d = self.delays_h
        if isinstance(d, str | bytes) or not isinstance(d, Iterable):
            raise DataError(f"{where} delays_h must be a list of hours, got {d!r}")
        d = tuple(d)
        if (not d or any(isinstance(x, bool) or not isinstance(x, int | np.integer) for x in d)
                or any(b <= a for a, b in itertools.pairwise(d)) or d[0] < 0):
            raise DataError(f"{where} delays_h must be non-empty, strictly increasing "
                            f"hours >= 0 (e.g. [0, 1, 2, 4, 8, 24]), got {list(d)}")
        if d[-1] >= self.expiry_h:
            raise DataError(f"{where} delay {d[-1]} h is not before expiry_h = "
                            f"{self.expiry_h}: raise expiry_h or remove the delay")
        object.__setattr__(self, "delays_h", tuple(int(x) for x in d))

    @property
    def arms(self) -> tuple[int | None, ...]:
        """The delay arms in hours, then ``None`` (drop)."""
        return (*self.delays_h, None)

    def to_dict(self) -> dict[str, Any]:
        """The keys this kind takes (the ``[triggers.KIND]`` table; :meth:`TriggerConfig.parse`
        reads it back)."""
        keys = (*_COMMON, *_KIND_KEYS[self.kind])
        out = {k: getattr(self, k) for k in keys}
        out["delays_h"] = list(self.delays_h)
        return out


#: Default rules per kind (priorities: cart > back in stock > price drop > browse > winback).
_DEFAULTS: dict[TriggerKind, dict[str, Any]] = {
    TriggerKind.CART: dict(priority=50, expiry_h=48, cooldown_h=24),
    TriggerKind.BROWSE: dict(priority=20, expiry_h=48, cooldown_h=48),
    TriggerKind.PRICE_DROP: dict(priority=30, expiry_h=72, cooldown_h=72),
    TriggerKind.BACK_IN_STOCK: dict(priority=40, expiry_h=72, cooldown_h=168,
                                    lookback_h=336),
    TriggerKind.WINBACK: dict(priority=10, expiry_h=72, cancel="session", cooldown_h=0),
}


@dataclass(frozen=True)
class TriggerConfig:
    """The set of trigger rules, one :class:`TriggerDef` per kind.

    Attributes:
        defs: ``{kind: TriggerDef}`` for every kind (disabled kinds included).
    """

    defs: Mapping[TriggerKind, TriggerDef]

    def __post_init__(self) -> None:
        missing = [k.value for k in KINDS if k not in self.defs]
        if missing:
            raise DataError(f"trigger config lacks kinds {missing}; use TriggerConfig.default()")

    @classmethod
    def default(cls) -> TriggerConfig:
        """Every kind enabled with the default rules."""
        return cls({k: TriggerDef(kind=k, **_DEFAULTS[k]) for k in KINDS})

    @classmethod
    def parse(cls, mapping: Mapping[str, Any] | None) -> TriggerConfig:
        """Read a scenario's ``[triggers]`` table / the server's trigger config.

        ``{"cart": {"wait_h": 1, ...}, "browse": {...}, ...}``: each kind's keys override its
        defaults (:meth:`default`); kinds not named keep them. ``{"cart": {"enabled": false}}``
        turns a kind off.

        Raises:
            DataError: an unknown kind or key, or a bad value (one line naming the key).
        """
        out = {k: _DEFAULTS[k] for k in KINDS}
        for name, table in (mapping or {}).items():
            try:
                kind = TriggerKind(name)
            except ValueError:
                raise DataError(f"unknown trigger kind [triggers.{name}]; known: "
                                f"{[k.value for k in KINDS]}") from None
            if not isinstance(table, Mapping):
                raise DataError(f"[triggers.{name}] must be a table of settings, got {table!r}")
            allowed = (*_COMMON, *_KIND_KEYS[kind])
            for key in table:
                if key not in allowed:
                    raise DataError(f"[triggers.{name}] {key} is not a {name} setting; "
                                    f"{name} takes {list(allowed)}")
            out[kind] = {**out[kind], **table}
        try:
            return cls({k: TriggerDef(kind=k, **v) for k, v in out.items()})
        except TypeError as e:  # pragma: no cover - keys are checked above
            raise DataError(f"[triggers] {e}") from None

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{kind: settings}`` (:meth:`parse` reads it back to an equal config)."""
        return {k.value: self.defs[k].to_dict() for k in KINDS}

    def __getitem__(self, kind: TriggerKind | str) -> TriggerDef:
        try:  # a StrEnum hashes as its value: no enum call on the per-event path
            return self.defs[kind]  # type: ignore[index]
        except KeyError:
            return self.defs[TriggerKind(kind)]

    @property
    def enabled(self) -> tuple[TriggerKind, ...]:
        """The kinds that create triggers."""
        return tuple(k for k in KINDS if self.defs[k].enabled)


def trigger_id(user: int, kind: TriggerKind | str, item: int | None, event_ts: int) -> str:
    """Deterministic id: 16 hex digits of blake2b over ``user|kind|item|event_ts``."""
    kind_s = TriggerKind(kind).value
    key = f"{int(user)}|{kind_s}|{'' if item is None else int(item)}|{int(event_ts)}"
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class Trigger:
    """One trigger (a pending or finished triggered push).

    Attributes:
        trigger_id: :func:`trigger_id` of the fields below.
        user: User index.
        kind: Its kind.
        item: Catalog item index (None for winback).
        event_ts: When the trigger came to exist (the behaviour, or the end of a wait).
        expires_ts: ``event_ts + expiry_h`` h.
        priority: From its :class:`TriggerDef`.
        status: :class:`TriggerStatus`.
        decided: True once a delay arm was recorded (:meth:`TriggerTracker.decide`).
        delay_h: The chosen arm in hours (None = undecided or drop).
        pscore: Probability of the chosen arm under the deciding policy.
        decided_ts: When the arm was chosen.
        due_ts: When it may be sent (``event_ts + delay_h`` h, later after re-queues).
        requeues: How many times a guardrail or a higher priority trigger pushed it back.
        closed_ts: When it was sent, dropped, cancelled or expired.
    """

    trigger_id: str
    user: int
    kind: TriggerKind
    item: int | None
    event_ts: int
    expires_ts: int
    priority: int
    status: TriggerStatus = TriggerStatus.OPEN
    decided: bool = False
    delay_h: int | None = None
    pscore: float | None = None
    decided_ts: int | None = None
    due_ts: int | None = None
    requeues: int = 0
    closed_ts: int | None = None

    @property
    def is_open(self) -> bool:
        return self.status is TriggerStatus.OPEN

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (snapshots, journals)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["kind"], d["status"] = self.kind.value, self.status.value
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Trigger:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**d, "kind": TriggerKind(d["kind"]), "status": TriggerStatus(d["status"])})


def _evolve(t: Trigger, **changes: Any) -> Trigger:
    """``dataclasses.replace(t, **changes)`` without re-running ``__init__`` (the tracker's
    own updates of already valid triggers; ~10x faster, which a pull of 10k sends needs).
    The result is a new frozen :class:`Trigger`; ``t`` is unchanged."""
    new = object.__new__(Trigger)
    d = new.__dict__
    d.update(t.__dict__)
    d.update(changes)
    return new


def _held_kinds(k: int, held_out_kinds: Mapping[TriggerKind, npt.ArrayLike] | None
                ) -> dict[int, frozenset[TriggerKind]]:
    """``{j: kinds}`` for the rows ``j`` of ``k`` users held out of at least one kind."""
    if not held_out_kinds:
        return {}
    out: dict[int, set[TriggerKind]] = {}
    for kind, mask in held_out_kinds.items():
        m = np.asarray(mask, bool)
        if m.shape != (k,):
            raise ValueError(f"held_out_kinds[{kind.value!r}] must have shape ({k},), "
                             f"got {m.shape}")
        for j in np.flatnonzero(m).tolist():
            out.setdefault(j, set()).add(kind)
    return {j: frozenset(v) for j, v in out.items()}


@dataclass
class DueResolution:
    """What :meth:`TriggerTracker.resolve_due` did at one time.

    Attributes:
        sent: The triggers to send now (at most one per user; status ``sent`` when committed).
        requeued: Due triggers pushed to the next hour (a blocked user's, or lower priority).
        expired: Due triggers found past their expiry.
        blocked: ``{user: reason}`` for users whose due triggers a guardrail blocked
            (:data:`~pushrl.rules.guardrails.REASONS`).
    """

    sent: list[Trigger] = field(default_factory=list)
    requeued: list[Trigger] = field(default_factory=list)
    expired: list[Trigger] = field(default_factory=list)
    blocked: dict[int, str] = field(default_factory=dict)


def order_due(triggers: Iterable[Trigger]) -> list[Trigger]:
    """Sending order: priority (high first), then ``event_ts``, then id."""
    return sorted(triggers, key=lambda t: (-t.priority, t.event_ts, t.trigger_id))


@dataclass
class _User:
    """What the rules need of one user."""

    views: dict[int, list[int]] = field(default_factory=dict)  # item -> view times in window
    carted: dict[int, int] = field(default_factory=dict)  # item -> last cart ts
    touched: dict[int, int] = field(default_factory=dict)  # item -> last view/cart ts
    last_activity: int | None = None
    winback_spell: int | None = None  # last_activity whose spell already fired
    stamps: dict[tuple[str, int], int] = field(default_factory=dict)  # (kind, item) -> ts
    open: dict[str, Trigger] = field(default_factory=dict)


_NO_ITEM = -1  # item key of item-less triggers in stamps / heaps
_SENT = TriggerStatus.SENT
_OPEN = TriggerStatus.OPEN


class TriggerTracker:
    """The trigger state machine over users (module docstring for the rules).

    Feed events in time order per user; :meth:`advance` moves the clock (time-based creation
    and expiry). Every ``observe_*`` first advances to its time, so the rules do not depend on
    how often the caller advances.

    Args:
        config: The rules (default: :meth:`TriggerConfig.default`).
    """

    def __init__(self, config: TriggerConfig | None = None) -> None:
        self.config = config or TriggerConfig.default()
        self.now: int | None = None
        self._users: dict[int, _User] = {}
        self._price: dict[int, float] = {}
        self._stock: dict[int, bool] = {}
        self._item_users: dict[int, set[int]] = {}  # item -> users who touched it
        self._triggers: dict[str, Trigger] = {}  # every trigger not yet forgotten
        #: ids of every trigger in ``_triggers`` by the hour of its ``event_ts``
        #: (:meth:`forget_closed` visits the old hours instead of scanning every trigger)
        self._born: dict[int, list[str]] = {}
        self._expiry: list[tuple[int, str]] = []  # heap of (expires_ts, id)
        self._waits: list[tuple[int, int, int, int]] = []  # (due, user, item, cart_ts)
        self._winback: list[tuple[int, int, int]] = []  # (deadline, user, last_activity)
        self._winback_queued: set[int] = set()
        #: Open triggers per user index (:meth:`open_mask`); a C int array: a decision's
        #: +-1 is a plain-int update, a pull reads it as one numpy view.
        self._n_open = array("i")
        self._max_touch_h = max(self.config[k].lookback_h for k in
                                (TriggerKind.PRICE_DROP, TriggerKind.BACK_IN_STOCK))

    # ----------------------------------------------------------------- queries
    def get(self, tid: str) -> Trigger | None:
        """The trigger with id ``tid`` (open or closed, until :meth:`forget_closed`)."""
        return self._triggers.get(tid)

    def open(self, user: int) -> list[Trigger]:
        """``user``'s open triggers in sending order."""
        u = self._users.get(int(user))
        return order_due(u.open.values()) if u else []

    def open_count(self) -> int:
        """Open triggers over all users."""
        return sum(len(u.open) for u in self._users.values())

    def due(self, user: int, now: int) -> list[Trigger]:
        """``user``'s open, decided triggers due at ``now`` and not expired, in sending order."""
        u = self._users.get(int(user))
        if not u:
            return []
        return order_due(t for t in u.open.values()
                         if t.due_ts is not None and t.due_ts <= now < t.expires_ts)

    def has_open(self, user: int) -> bool:
        """True when ``user`` has an open trigger (a cheap filter before :meth:`due` /
        :meth:`resolve_due` over many users)."""
        u = self._users.get(user)
        return bool(u and u.open)

    def open_mask(self, users: np.ndarray) -> np.ndarray:
        """``(k,)`` bool: :meth:`has_open` of each of ``users`` (user indices), vectorised
        (the filter of a due-sends pull over many users)."""
        u = np.asarray(users, np.int64)
        n = np.frombuffer(self._n_open, np.int32) if self._n_open else np.zeros(0, np.int32)
        inside = u < n.size
        if inside.all():
            return n[u] > 0
        out = np.zeros(u.shape, bool)
        out[inside] = n[u[inside]] > 0
        return out

    def users_with_open(self) -> list[int]:
        """Users with at least one open trigger, ascending."""
        return sorted(k for k, u in self._users.items() if u.open)

    def price(self, item: int) -> float | None:
        """Last known price of ``item``."""
        return self._price.get(int(item))

    def in_stock(self, item: int) -> bool | None:
        """Last known stock state of ``item``."""
        return self._stock.get(int(item))

    # ------------------------------------------------------------------ events
    def observe_activity(self, user: int, ts: int, event: str,
                         item: int | None = None) -> list[Trigger]:
        """Apply one activity event; returns the triggers created at ``ts`` (by this event and
        by the time passing before it), each as of after the event (a win-back created by the
        passing time is already cancelled by the activity that ends the spell).

        Raises:
            DataError: an unknown event, or a view/cart/purchase without item.
        """
        if event not in ACTIVITY_EVENTS:
            raise DataError(f"unknown activity event {event!r}; known: {list(ACTIVITY_EVENTS)}")
        if event != "session" and item is None:
            raise DataError(f"a {event} event needs an item")
        ts, user = int(ts), int(user)
        created = self.advance(ts)
        u = self._users.setdefault(user, _User())
        it = None if item is None else int(item)
        self._cancel_for(u, ts, event, it)
        u.last_activity = ts
        self._queue_winback(user, u)
        if event == "view" and it is not None:
            self._touch(user, u, it, ts)
            created += self._on_view(user, u, it, ts)
        elif event == "cart" and it is not None:
            self._touch(user, u, it, ts)
            created += self._on_cart(user, u, it, ts)
        elif event == "purchase" and it is not None:
            u.carted.pop(it, None)
            u.views.pop(it, None)
            if u.touched.pop(it, None) is not None:
                self._item_users.get(it, set()).discard(user)
        return [self._triggers[t.trigger_id] for t in created]

    def observe_item_update(self, item: int, ts: int, price: float | None = None,
                            in_stock: bool | None = None) -> list[Trigger]:
        """Apply an item update (None = unchanged); returns the triggers created at ``ts``."""
        ts, item = int(ts), int(item)
        created = self.advance(ts)
        if price is not None:
            price = float(price)
            prev = self._price.get(item)
            d = self.config[TriggerKind.PRICE_DROP]
            if prev is not None and prev > 0 and price <= prev * (1 - d.min_drop_pct / 100):
                created += self._fire_item(TriggerKind.PRICE_DROP, item, ts)
            self._price[item] = price
        if in_stock is not None:
            prev_s = self._stock.get(item)
            if prev_s is False and in_stock:
                created += self._fire_item(TriggerKind.BACK_IN_STOCK, item, ts)
            self._stock[item] = bool(in_stock)
        return [self._triggers[t.trigger_id] for t in created]

    def set_item(self, item: int, price: float | None = None,
                 in_stock: bool | None = None) -> None:
        """Set an item's initial price / stock (the items table) without creating triggers."""
        if price is not None:
            self._price[int(item)] = float(price)
        if in_stock is not None:
            self._stock[int(item)] = bool(in_stock)

    def advance(self, ts: int) -> list[Trigger]:
        """Move the clock to ``ts``: create due cart-wait and win-back triggers, expire open
        triggers with ``expires_ts <= ts``. Returns the triggers created (time order)."""
        ts = int(ts)
        if self.now is not None and ts <= self.now:
            return []
        self.now = ts
        created: list[Trigger] = []
        cart = self.config[TriggerKind.CART]
        while self._waits and self._waits[0][0] <= ts:
            due, user, item, cart_ts = heapq.heappop(self._waits)
            u = self._users[user]
            if u.carted.get(item) == cart_ts:
                created += self._create(user, u, TriggerKind.CART, item, due, cart)
        wb = self.config[TriggerKind.WINBACK]
        while self._winback and self._winback[0][0] <= ts:
            deadline, user, last = heapq.heappop(self._winback)
            self._winback_queued.discard(user)
            u = self._users[user]
            if u.last_activity != last:
                self._queue_winback(user, u)  # active since: wait for the new spell
            elif u.winback_spell != last:
                u.winback_spell = last
                created += self._create(user, u, TriggerKind.WINBACK, None, deadline, wb)
        while self._expiry and self._expiry[0][0] <= ts:
            _, tid = heapq.heappop(self._expiry)
            t = self._triggers.get(tid)
            if t is not None and t.is_open:
                self._close(t, TriggerStatus.EXPIRED, t.expires_ts)
        return [self._triggers[t.trigger_id] for t in created]

    # --------------------------------------------------------------- decisions
    def decide(self, tid: str, delay_h: int | None, pscore: float,
               decided_ts: int | None = None) -> Trigger:
        """Record the delay arm of open trigger ``tid`` (None = drop) with its probability.

        Raises:
            DataError: unknown or closed trigger, already decided, or an arm not in the
                kind's ``delays_h``, or ``pscore`` outside (0, 1].
        """
        t = self._triggers.get(tid)
        if t is None or not t.is_open:
            raise DataError(f"trigger {tid} is not open; decide it when it is created")
        if t.decided:
            raise DataError(f"trigger {tid} already has a delay arm ({t.delay_h})")
        arms = self.config[t.kind].arms
        if delay_h not in arms:
            raise DataError(f"delay {delay_h!r} is not an arm of {t.kind.value}: {list(arms)}")
        if not 0 < pscore <= 1:
            raise DataError(f"pscore must be in (0, 1], got {pscore}")
        at = t.event_ts if decided_ts is None else int(decided_ts)
        new = _evolve(t, decided=True, delay_h=delay_h, pscore=float(pscore), decided_ts=at,
                      due_ts=None if delay_h is None else t.event_ts + delay_h * HOUR)
        self._put(new)
        if delay_h is None:
            return self._close(new, TriggerStatus.DROPPED, at)
        return new

    def resolve_due(self, now: int, users: Sequence[int], guardrails: Guardrails,
                    local_hour: npt.ArrayLike, sends_today: npt.ArrayLike,
                    sends_week: npt.ArrayLike, subscribed: npt.ArrayLike | None = None, *,
                    held_out: npt.ArrayLike | None = None,
                    held_out_kinds: Mapping[TriggerKind, npt.ArrayLike] | None = None,
                    commit: bool = True) -> DueResolution:
        """Send or re-queue the triggers due at ``now`` for ``users`` (module docstring).

        Args:
            now: Unix seconds of the send opportunity.
            users: ``(k,)`` user indices (each once).
            guardrails: The ONE guardrail definition.
            local_hour: ``(k,)`` each user's local hour at ``now``.
            sends_today: ``(k,)`` sends already made in the user's local day (every push).
            sends_week: ``(k,)`` sends in the weekly window (every push).
            subscribed: ``(k,)`` bool, or None (all subscribed).
            held_out: ``(k,)`` bool: users in a live holdout (never sent; their triggers are
                re-queued until they expire), or None (nobody).
            held_out_kinds: ``{kind: (k,) bool}``: users in a per-kind live holdout
                (:mod:`pushrl.serve.trigger_holdout`): their due triggers of that kind are
                never sent (re-queued until they expire, like ``held_out``); their other
                kinds' triggers are resolved as usual. None or ``{}``: nobody.
            commit: False = report without changing any trigger (a dry run).
        """
        now = int(now)
        res = DueResolution()
        users = [int(x) for x in users]
        if not users:
            return res
        if commit:
            self.advance(now)
        verdict = guardrails.verdict(np.asarray(local_hour), np.asarray(sends_today),
                                     np.asarray(sends_week),
                                     None if subscribed is None else np.asarray(subscribed, bool),
                                     None if held_out is None else np.asarray(held_out, bool))
        nxt = int(bucket_start(bucket_of(now) + 1))
        codes = np.asarray(verdict).tolist()
        skip = _held_kinds(len(users), held_out_kinds)
        get = self._users.get
        triggers, sent = self._triggers, res.sent
        closed: list[int] = []
        if commit and not skip:
            self._send_single(users, codes, now, nxt, res, closed)
            users = []  # done: the open counts below
        for j, user in enumerate(users):
            u = get(user)
            if not u:
                continue
            op = u.open
            if not op:
                continue
            if j in skip:
                self._resolve_user(user, op, now, codes[j], nxt, res, commit, skip[j])
                continue
            if len(op) == 1 and commit and codes[j] == ALLOWED:  # the common case, inlined
                t = next(iter(op.values()))
                if t.due_ts is None or t.due_ts > now:
                    continue
                if now < t.expires_ts:  # the only due trigger: sent (as _close does)
                    new = _evolve(t, status=_SENT, closed_ts=now)
                    triggers[t.trigger_id] = new
                    del op[t.trigger_id]
                    closed.append(user)
                    sent.append(new)
                    continue
            self._resolve_user(user, op, now, codes[j], nxt, res, commit)
        if len(closed) > 16:  # their open counts, in one step (users are distinct)
            np.frombuffer(self._n_open, np.int32)[np.array(closed, np.int64)] -= 1
        else:
            n_open = self._n_open
            for user in closed:
                n_open[user] -= 1
        return res

    def _send_single(self, users: list[int], codes: list[int], now: int, nxt: int,
                     res: DueResolution, closed: list[int]) -> None:
        """:meth:`resolve_due` (committing, nobody held out of a kind) with its common case
        inlined: a user whose one open trigger is due, not expired and allowed is sent it
        (as :meth:`_close` does, without a call per trigger); every other user goes through
        :meth:`_resolve_user`. ``closed`` gets the users whose open count fell by one."""
        get, triggers, sent = self._users.get, self._triggers, res.sent
        new_trigger, setattr_ = object.__new__, object.__setattr__
        for user, code in zip(users, codes, strict=True):
            u = get(user)
            if u is None:
                continue
            op = u.open
            if not op:
                continue
            if len(op) == 1 and code == ALLOWED:
                (t,) = op.values()
                due = t.due_ts
                if due is None or due > now:
                    continue
                if now < t.expires_ts:  # the only due trigger: sent (as _close does)
                    d = t.__dict__.copy()
                    d["status"] = _SENT
                    d["closed_ts"] = now
                    new = new_trigger(Trigger)
                    setattr_(new, "__dict__", d)
                    triggers[t.trigger_id] = new
                    op.clear()
                    closed.append(user)
                    sent.append(new)
                    continue
            self._resolve_user(user, op, now, code, nxt, res, True)

    def _resolve_user(self, user: int, op: dict[str, Trigger], now: int, code: int, nxt: int,
                      res: DueResolution, commit: bool,
                      held_kinds: frozenset[TriggerKind] = frozenset()) -> None:
        """:meth:`resolve_due` for one user with open triggers ``op`` and guardrail verdict
        ``code`` (``nxt``: the next hour start, where re-queued triggers go; ``held_kinds``:
        the kinds this user is held out of, never sent)."""
        due: list[Trigger] = []
        late: list[Trigger] = []
        held: list[Trigger] = []
        for t in op.values():
            if t.due_ts is not None and t.due_ts <= now:
                (late if now >= t.expires_ts else held if t.kind in held_kinds
                 else due).append(t)
        for t in late:
            res.expired.append(self._close(t, TriggerStatus.EXPIRED, t.expires_ts)
                               if commit else t)
        for t in held:
            res.requeued.append(self._requeue(t, nxt) if commit else t)
        if not due:
            if held:
                res.blocked[user] = cast(str, REASONS[HELD_OUT])
            return
        if len(due) > 1:
            due = order_due(due)
        if code == ALLOWED:
            first, rest = due[0], due[1:]
            res.sent.append(self._close(first, TriggerStatus.SENT, now) if commit else first)
        else:
            res.blocked[user] = cast(str, REASONS[code])
            rest = due
        for t in rest:
            res.requeued.append(self._requeue(t, nxt) if commit else t)

    def mark_sent(self, tid: str, ts: int) -> Trigger:
        """Record that open trigger ``tid`` was sent at ``ts`` by a path other than
        :meth:`resolve_due` (e.g. ``decide`` answering with a due trigger)."""
        t = self._triggers.get(tid)
        if t is None or not t.is_open:
            raise DataError(f"trigger {tid} is not open")
        return self._close(t, TriggerStatus.SENT, int(ts))

    def requeue(self, tid: str, due_ts: int) -> Trigger:
        """Re-apply a re-queue :meth:`resolve_due` made (``due_ts``: the trigger's new due
        time), e.g. when a server replays its journal after a restart."""
        t = self._triggers.get(tid)
        if t is None or not t.is_open:
            raise DataError(f"trigger {tid} is not open")
        return self._requeue(t, int(due_ts))

    def forget_closed(self, before_ts: int) -> int:
        """Drop closed triggers with ``event_ts < before_ts`` (bounded memory; their ids are
        no longer recognised on replay). Returns how many were dropped."""
        born, triggers, n = self._born, self._triggers, 0
        last = (int(before_ts) - 1) // HOUR  # the hour of before_ts - 1: no later hour has one
        for h in [h for h in born if h <= last]:  # only the old hours: no full scan
            keep = []
            for tid in born.pop(h):
                t = triggers.get(tid)
                if t is None:
                    continue
                if t.status is _OPEN or t.event_ts >= before_ts:
                    keep.append(tid)  # open (forgotten once closed, later) or not old enough
                else:
                    del triggers[tid]
                    n += 1
            if keep:
                born[h] = keep
        return n

    # --------------------------------------------------------------- snapshots
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state; :meth:`from_dict` continues exactly where this stopped."""
        users = {}
        for k, u in self._users.items():
            users[str(k)] = {
                "views": {str(i): v for i, v in u.views.items()},
                "carted": {str(i): v for i, v in u.carted.items()},
                "touched": {str(i): v for i, v in u.touched.items()},
                "last_activity": u.last_activity, "winback_spell": u.winback_spell,
                "stamps": [[kd, i, v] for (kd, i), v in u.stamps.items()],
                "open": sorted(u.open),
            }
        return {
            "config": self.config.to_dict(), "now": self.now, "users": users,
            "price": {str(i): v for i, v in self._price.items()},
            "stock": {str(i): v for i, v in self._stock.items()},
            "triggers": [t.to_dict() for t in self._triggers.values()],
            "expiry": [list(x) for x in self._expiry], "waits": [list(x) for x in self._waits],
            "winback": [list(x) for x in self._winback],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TriggerTracker:
        """Inverse of :meth:`to_dict`."""
        tr = cls(TriggerConfig.parse(d["config"]))
        tr.now = d["now"]
        tr._triggers = {t["trigger_id"]: Trigger.from_dict(t) for t in d["triggers"]}
        for k, t in tr._triggers.items():
            tr._born.setdefault(t.event_ts // HOUR, []).append(k)
        for k, v in d["users"].items():
            u = _User(views={int(i): list(x) for i, x in v["views"].items()},
                      carted={int(i): x for i, x in v["carted"].items()},
                      touched={int(i): x for i, x in v["touched"].items()},
                      last_activity=v["last_activity"], winback_spell=v["winback_spell"],
                      stamps={(kd, int(i)): x for kd, i, x in v["stamps"]},
                      open={tid: tr._triggers[tid] for tid in v["open"]})
            tr._users[int(k)] = u
            if u.open:
                tr._count_open(int(k), len(u.open))
            for i in u.touched:
                tr._item_users.setdefault(i, set()).add(int(k))
        tr._price = {int(i): float(v) for i, v in d["price"].items()}
        tr._stock = {int(i): bool(v) for i, v in d["stock"].items()}
        tr._expiry = [(int(a), str(b)) for a, b in d["expiry"]]
        tr._waits = [cast(tuple[int, int, int, int], tuple(x)) for x in d["waits"]]
        tr._winback = [cast(tuple[int, int, int], tuple(x)) for x in d["winback"]]
        heapq.heapify(tr._expiry)
        heapq.heapify(tr._waits)
        heapq.heapify(tr._winback)
        tr._winback_queued = {x[1] for x in tr._winback}
        return tr

    # ----------------------------------------------------------------- helpers
    def _put(self, t: Trigger) -> None:
        self._triggers[t.trigger_id] = t
        u = self._users[t.user]
        if t.is_open:
            if t.trigger_id not in u.open:
                self._count_open(t.user, 1)
            u.open[t.trigger_id] = t
        elif u.open.pop(t.trigger_id, None) is not None:
            self._n_open[t.user] -= 1

    def _count_open(self, user: int, d: int) -> None:
        """Add ``d`` to ``user``'s open-trigger count (the array grows by doubling)."""
        n = len(self._n_open)
        if user >= n:
            self._n_open.frombytes(bytes(self._n_open.itemsize * (max(user + 1, 2 * n) - n)))
        self._n_open[user] += d

    def _close(self, t: Trigger, status: TriggerStatus, ts: int) -> Trigger:
        new = _evolve(t, status=status, closed_ts=ts)
        self._put(new)
        return new

    def _requeue(self, t: Trigger, nxt: int) -> Trigger:
        new = _evolve(t, due_ts=nxt, requeues=t.requeues + 1)
        self._put(new)
        return new

    def _create(self, user: int, u: _User, kind: TriggerKind, item: int | None,
                event_ts: int, d: TriggerDef) -> list[Trigger]:
        if not d.enabled:
            return []
        tid = trigger_id(user, kind, item, event_ts)
        if tid in self._triggers:
            return []  # a retried / replayed event
        key = (kind.value, _NO_ITEM if item is None else item)
        if any(t.kind is kind and t.item == item for t in u.open.values()):
            return []
        last = u.stamps.get(key)
        if last is not None and event_ts < last + d.cooldown_h * HOUR:
            return []
        u.stamps[key] = event_ts
        t = Trigger(trigger_id=tid, user=user, kind=kind, item=item, event_ts=event_ts,
                    expires_ts=event_ts + d.expiry_h * HOUR, priority=d.priority)
        self._put(t)
        self._born.setdefault(event_ts // HOUR, []).append(tid)
        heapq.heappush(self._expiry, (t.expires_ts, tid))
        return [t]

    def _cancel_for(self, u: _User, ts: int, event: str, item: int | None) -> None:
        for t in list(u.open.values()):
            c = self.config[t.kind].cancel
            hit = (c == "session"
                   or (event == "purchase" and (c == "any_purchase" or t.item is None
                                                or t.item == item))
                   or (event == "cart" and t.kind is TriggerKind.BROWSE and t.item == item))
            if hit:
                self._close(t, TriggerStatus.CANCELLED, ts)

    def _touch(self, user: int, u: _User, item: int, ts: int) -> None:
        u.touched[item] = ts
        self._item_users.setdefault(item, set()).add(user)

    def _on_view(self, user: int, u: _User, item: int, ts: int) -> list[Trigger]:
        d = self.config[TriggerKind.BROWSE]
        lo = ts - d.window_h * HOUR
        v = [x for x in u.views.get(item, ()) if x > lo]
        v.append(ts)
        u.views[item] = v[-d.min_views:]  # only the last min_views matter
        if len(v) >= d.min_views and item not in u.carted:
            return self._create(user, u, TriggerKind.BROWSE, item, ts, d)
        return []

    def _on_cart(self, user: int, u: _User, item: int, ts: int) -> list[Trigger]:
        d = self.config[TriggerKind.CART]
        u.carted[item] = ts
        if d.wait_h == 0:
            return self._create(user, u, TriggerKind.CART, item, ts, d)
        if d.enabled:
            heapq.heappush(self._waits, (ts + d.wait_h * HOUR, user, item, ts))
        return []

    def _fire_item(self, kind: TriggerKind, item: int, ts: int) -> list[Trigger]:
        d = self.config[kind]
        lo = ts - d.lookback_h * HOUR
        out: list[Trigger] = []
        holders = self._item_users.get(item, set())
        for user in sorted(holders):
            u = self._users[user]
            last = u.touched.get(item)
            if last is None or last < ts - self._max_touch_h * HOUR:
                u.touched.pop(item, None)
                holders.discard(user)  # too old for every kind: forget
            elif last >= lo:
                out += self._create(user, u, kind, item, ts, d)
        return out

    def _queue_winback(self, user: int, u: _User) -> None:
        d = self.config[TriggerKind.WINBACK]
        if d.enabled and user not in self._winback_queued and u.last_activity is not None:
            self._winback_queued.add(user)
            heapq.heappush(self._winback,
                           (u.last_activity + d.inactive_days * DAY, user, u.last_activity))
