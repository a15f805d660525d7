"""Serve-time guardrails: the shared rules (:mod:`pushrl.rules.guardrails`) on the server's
own decision log.

The verdict, the quiet-hours formula, the "sends today" counter and the weekly window are
the ones the simulator and OPE use; the server evaluates them at each request's exact time
(local time from :meth:`~pushrl.data.features.FeatureState.local_time_at`). A global kill
switch is handled by the server (the safe default policy never sends).

Which guardrails apply (:func:`effective`): those configured by the operator
(``pushrl serve --quiet-hours/--max-per-day/--max-per-week``), else the active timing
policy's own (a PPO agent's card records the scenario it was trained under, and its
observation is built from them), else the default scenario's (:class:`Guardrails` defaults).
A configured set that differs from the active policy's is logged as a warning: the agent then
sees guardrail inputs it was not trained with.

A guardrail masks ``SEND`` in the :class:`~pushrl.policies.base.TimingContext`, so no policy
can override it; the response names the guardrail that decided.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from itertools import chain

import numpy as np

from pushrl.data.features import FeatureState
from pushrl.data.timezones import local_clock
from pushrl.rules.guardrails import REASONS, WEEK_BUCKETS, DayCount, Guardrails, in_week_window
from pushrl.units import HOURS_PER_DAY, bucket_of, utc_offset_seconds

log = logging.getLogger("pushrl.serve")
_KEEP = WEEK_BUCKETS + HOURS_PER_DAY  # buckets of send history kept per user


def effective(configured: Guardrails | None, policy: object, label: str = "") -> Guardrails:
    """The guardrails the server applies with timing ``policy`` (module docstring).

    Args:
        configured: The operator's guardrails, or None to follow the policy.
        policy: The active timing policy (its ``guardrails`` attribute, if any, is the
            scenario it was trained under).
        label: The policy's ``name@version`` for the warning.
    """
    own = getattr(policy, "guardrails", None)
    own = own if isinstance(own, Guardrails) else None
    if configured is None:
        return own or Guardrails()
    if own is not None and own != configured:
        log.warning("serve guardrails (%s) differ from those timing policy %s was trained "
                    "under (%s): its observation uses its own; omit --quiet-hours/--max-per-day"
                    "/--max-per-week to serve with the policy's", configured.describe(),
                    label or getattr(policy, "name", "?"), own.describe())
    return configured


class SendHistory:
    """The server's send counts: per user, sends today (:class:`DayCount`) and the buckets
    of the sends of the last 8 days (for the weekly window)."""

    def __init__(self) -> None:
        self.today = DayCount()
        self._buckets: dict[int, list[int]] = defaultdict(list)

    def record(self, user: int, tz: str, ts: int, day: int | None = None) -> None:
        """Count a send of ``user`` at unix time ``ts`` (``day``: its local day number; None
        derives it from the zone ``tz``)."""
        if day is None:
            day = int(local_clock(ts, utc_offset_seconds(ts, tz))[2])
        b = bucket_of(ts)
        lst = self._buckets[user]
        lst.append(b)
        if len(lst) > 64 or lst[0] < b - _KEEP:
            lst[:] = [x for x in lst if x >= b - _KEEP]
        self.today.resize(user + 1)
        self.today.add_one(user, day)

    def record_many(self, users: list[int], ts: int, days: list[int]) -> None:
        """:meth:`record` of one send per user of ``users`` (distinct) at ``ts`` on their
        local ``days`` (a due-sends pull): one vectorised day count."""
        if not users:
            return
        b = bucket_of(ts)
        buckets = self._buckets
        for user in users:
            lst = buckets[user]
            lst.append(b)
            if len(lst) > 64 or lst[0] < b - _KEEP:
                lst[:] = [x for x in lst if x >= b - _KEEP]
        self.today.resize(max(users) + 1)
        self.today.add(np.array(users, np.int64), np.array(days, np.int64))

    def counts_few(self, users: list[int], buckets: list[int],
                   days: list[int]) -> tuple[list[int], list[int]]:
        """:meth:`counts` of a few users as Python ints (the engine's few-rows pass;
        ``tests/serve/test_engine_few.py``)."""
        if len(users) != len(buckets):  # (zip(strict=True)'s keyword call costs ~1.5k instructions)
            raise ValueError(f"{len(users)} users but {len(buckets)} buckets")
        if users:
            self.today.resize(max(users) + 1)
        get = self._buckets.get
        week = []
        for user, b in zip(users, buckets):  # noqa: B905 (lengths checked)
            n = 0  # (the sends in the window counted in a loop: no generator per user)
            for x in get(user, ()):
                if in_week_window(x, b):
                    n += 1
            week.append(n)
        return self.today.get_few(users, days), week

    def counts(self, users: np.ndarray, buckets: np.ndarray,
               days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sends of ``users`` ``(n,)`` on local ``days`` and in the weekly window of a
        decision in ``buckets`` (:func:`~pushrl.rules.guardrails.in_week_window`)."""
        u = np.asarray(users, np.int64)
        ul = u.tolist()
        if ul:
            self.today.resize(max(ul) + 1)
        today = self.today.get(u, days)
        get = self._buckets.get
        if len(ul) <= 32:  # a decision: plain ints (a numpy call costs ~1 us)
            small = [sum(in_week_window(x, b) for x in get(user, ()))
                     for user, b in zip(ul, np.asarray(buckets).tolist(), strict=True)]
            return today, np.array(small, np.int64)
        lists = [get(user, ()) for user in ul]  # (one flat array: the window test vectorised)
        lens = np.fromiter(map(len, lists), np.int64, len(lists))
        flat = np.fromiter(chain.from_iterable(lists), np.int64, int(lens.sum()))
        hit = in_week_window(flat, np.repeat(np.asarray(buckets, np.int64), lens))
        week = np.bincount(np.repeat(np.arange(len(lists)), lens), weights=hit,
                           minlength=len(lists))
        return today, week.astype(np.int64)


class Subscriptions:
    """Whether each user (by index) is subscribed: the server's input to the
    ``subscribed`` guardrail (:meth:`~pushrl.rules.guardrails.Guardrails.verdict`).

    A user is subscribed from creation until feedback ``unsubscribed=true`` or ``PUT
    /v1/users`` with ``subscribed=false``, and again after ``subscribed=true``. Every change
    is an op of the durable journal (``OP_SUBSCRIPTION``), and an imported history brings the
    log's unsubscribes, so a restart rebuilds the same status.
    """

    def __init__(self) -> None:
        self._on = np.ones(0, bool)
        self._off = 0  # users unsubscribed now (0: the check is skipped on the hot path)

    def _resize(self, n: int) -> None:
        k = self._on.size
        if n > k:  # at least double: users are added one at a time
            self._on = np.concatenate([self._on, np.ones(max(n, 2 * k) - k, bool)])

    def set(self, users: np.ndarray | int, subscribed: bool) -> None:
        """Set the status of ``users`` (indices)."""
        u = np.unique(np.atleast_1d(np.asarray(users, np.int64)))
        if u.size:
            self._resize(int(u[-1]) + 1)
            self._off += int(self._on[u].sum()) if not subscribed else -int((~self._on[u]).sum())
            self._on[u] = subscribed

    def get(self, users: np.ndarray) -> np.ndarray:
        """``(n,)`` bool: True where user ``users[i]`` is subscribed (unknown: True)."""
        u = np.asarray(users, np.int64)
        try:
            return self._on[u]
        except IndexError:  # a user index beyond the array: grow (amortised)
            self._resize(int(u.max()) + 1)
            return self._on[u]

    def get_few(self, users: list[int]) -> list[bool]:
        """:meth:`get` of a few users as Python bools (the engine's few-rows pass)."""
        if users:
            self._resize(max(users) + 1)
        on = self._on
        return [on.item(u) for u in users]

    def mask(self, users: np.ndarray) -> np.ndarray | None:
        """:meth:`get`, or None while nobody is unsubscribed (the guardrail's "all
        subscribed", which costs nothing on the decision path)."""
        return None if self._off == 0 else self.get(users)

    @property
    def n_unsubscribed(self) -> int:
        """Users unsubscribed now."""
        return self._off

    def is_subscribed(self, user: int) -> bool:
        """The status of one user."""
        return bool(self.get(np.array([user]))[0])


def check(cfg: Guardrails, history: SendHistory, users: np.ndarray, ts: np.ndarray,
          fs: FeatureState, subscriptions: Subscriptions | None = None,
          held_out: np.ndarray | None = None, *,
          local: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
          ) -> tuple[np.ndarray, list[str | None], np.ndarray, np.ndarray]:
    """Which users may receive a push at ``ts``.

    Args:
        cfg: Guardrails (:func:`effective`).
        history: Sends so far (from the server's log).
        users: ``(n,)`` user indices.
        ts: ``(n,)`` unix seconds of the decisions.
        fs: The feature state (users' time zones).
        subscriptions: Users' subscription status (None: all subscribed).
        held_out: ``(n,)`` bool, users in the live holdout (None: nobody;
            :meth:`pushrl.serve.holdout.HeldOut.mask`).
        local: The users' local ``(hour, dow, day)`` at ``ts`` when the caller has them
            (:meth:`~pushrl.data.features.FeatureState.decision_clock`); None looks them up.

    Returns:
        ``allowed`` bool ``(n,)``, the blocking guardrail per row (``None`` if allowed),
        ``sends_today`` int ``(n,)`` and the local day number of each row ``(n,)``.
    """
    t = np.asarray(ts, np.int64)
    hours, _, days = fs.local_time_at(users, t) if local is None else local
    sub = None if subscriptions is None else subscriptions.mask(users)
    today, week = history.counts(users, bucket_of(t), days)
    code = cfg.verdict(hours, today, week, sub, held_out)
    reasons = [REASONS[c] for c in code.tolist()]
    return code == 0, reasons, today, days
