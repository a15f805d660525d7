"""Guardrails: the one definition of delivery limits, called by the simulator, OPE and server.

A send that violates a guardrail is never delivered. The rules, for every layer:

* **Quiet hours** in the user's local time at the decision's time: local hour ``h`` is quiet
  when it lies in ``[quiet_start, quiet_end)``, wrapping midnight when
  ``quiet_start > quiet_end`` (22 -> 8 = 22:00-07:59); ``quiet_start == quiet_end`` means no
  quiet hours. The simulator and OPE decide at bucket starts, the server at the request's
  exact time; both read local time from
  :meth:`~pushrl.data.features.FeatureState.local_time_at` (DST-exact).
* **Daily cap**: sends already made in the user's local calendar day of the decision
  (:class:`DayCount`) must be ``< max_sends_per_day``.
* **Weekly cap**: sends in the 168 hour buckets before the decision's bucket ``b``, i.e.
  ``[b - 168, b)`` (the feature pipeline's ``sends_7d``), plus sends already made in ``b``,
  must be ``< max_sends_per_week`` (:func:`in_week_window`). The simulator decides once per
  bucket, so its count is ``sends_7d`` itself.
* **Subscription**: a user who unsubscribed (or opted out) receives nothing until they
  subscribe again. The simulator's users unsubscribe as a drawn outcome of a push (its
  ``alive`` slots); the server's through feedback ``unsubscribed=true`` or ``PUT /v1/users``
  with ``subscribed=false`` (:class:`pushrl.serve.guardrails.Subscriptions`). Both pass that
  status as ``subscribed`` to :meth:`Guardrails.allowed` / :meth:`Guardrails.verdict`, so it
  masks ``SEND`` like every other guardrail.
* **Holdout**: a user held out of the campaign (:class:`pushrl.rules.holdout.Holdout`, a
  sticky seeded hash of the user id) receives nothing from it, whatever the policy wants.
  Simulator and server pass that mask as ``held_out``; it is checked first, so a held-out
  user's decisions are logged ``guardrail:held_out`` and never sent.
* **Channel opt-in** (issue 17): each channel (push, email, in-app) has its own
  ``Guardrails`` (:class:`pushrl.rules.channels.Channel`); a send on a channel the user did
  not opt into is blocked (``opted_in=``, verdict ``NOT_OPTED_IN``). Without channels every
  user is opted into the one push channel.
* **0 means no cap** for both caps (as in scenario files and model cards since v0). To stop
  every send use the server's kill switch. Negative caps and hours outside 0-23 are refused.

Verdicts are vectorised over users (:meth:`Guardrails.verdict`, :meth:`Guardrails.allowed`),
and a blocked decision names the first guardrail that blocks it in the order held out,
unsubscribed, quiet hours, daily cap, weekly cap (:data:`REASONS`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from pushrl.units import HOURS_PER_WEEK

#: Verdict codes of :meth:`Guardrails.verdict` and the name of each (None = allowed).
ALLOWED, QUIET_HOURS, DAILY_CAP, WEEKLY_CAP, UNSUBSCRIBED, HELD_OUT = 0, 1, 2, 3, 4, 5
#: A channel the user did not opt into (issue 17, :mod:`pushrl.rules.channels`); checked
#: after held out and unsubscribed, before quiet hours.
NOT_OPTED_IN = 6
REASONS: tuple[str | None, ...] = (None, "quiet_hours", "daily_cap", "weekly_cap",
                                   "unsubscribed", "held_out", "not_opted_in")
#: Hour buckets of the weekly cap's window before the decision's bucket.
WEEK_BUCKETS = HOURS_PER_WEEK
_NO_DAY = np.iinfo(np.int64).min // 2  # "no day yet" (day - 1 cannot wrap)


@dataclass(frozen=True)
class Guardrails:
    """Hard limits on delivery (module docstring for the semantics).

    The defaults are the default scenario's (``envs/default.toml``).

    Attributes:
        quiet_start: First quiet local hour (0-23).
        quiet_end: First non-quiet local hour (0-23); equal to ``quiet_start`` = none.
        max_sends_per_day: Sends per user per local calendar day (0 = no cap).
        max_sends_per_week: Sends per user in the weekly window (0 = no cap).
    """

    quiet_start: int = 22
    quiet_end: int = 8
    max_sends_per_day: int = 2
    max_sends_per_week: int = 10

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer):
                raise TypeError(f"`{f.name}` must be an int, got {v!r}")
            object.__setattr__(self, f.name, int(v))  # numpy ints -> int (JSON cards)
        for name in ("quiet_start", "quiet_end"):
            v = getattr(self, name)
            if not 0 <= v <= 23:
                raise ValueError(f"`{name}` must be a local hour in 0..23, got {v}")
        for name in ("max_sends_per_day", "max_sends_per_week"):
            v = getattr(self, name)
            if v < 0:
                raise ValueError(f"`{name}` must be >= 0 (0 = no cap), got {v}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Guardrails:
        """From :meth:`to_dict` output (model cards, reports).

        Raises:
            ValueError: unknown keys or invalid values.
        """
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown guardrail keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: int(v) for k, v in d.items()})

    def to_dict(self) -> dict[str, int]:
        """JSON-serialisable form (the keys of model cards)."""
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}

    def describe(self) -> str:
        """One line for logs: ``quiet 22-8, 2/day, 10/week``."""
        cap = lambda v, per: f"{v}/{per}" if v else f"no {per}ly cap"  # noqa: E731
        return (f"quiet {self.quiet_start}-{self.quiet_end}, "
                f"{cap(self.max_sends_per_day, 'day')}, {cap(self.max_sends_per_week, 'week')}")

    def quiet(self, hour: np.ndarray | int) -> np.ndarray:
        """True where local ``hour`` (0-23, any shape) is quiet."""
        h = np.asarray(hour)
        if self.quiet_start == self.quiet_end:
            return np.zeros(h.shape, bool)
        return self._quiet_at(h)

    def _quiet_at(self, h: Any) -> Any:
        """The quiet-hours test of local hour(s) ``h`` (a numpy array, or one python int for
        :meth:`verdict_few`) when quiet hours are set: one expression for both paths."""
        s, e = self.quiet_start, self.quiet_end
        return (h >= s) & (h < e) if s < e else (h >= s) | (h < e)

    def within_caps(self, sends_today: np.ndarray, sends_week: np.ndarray) -> np.ndarray:
        """True where neither cap is reached, broadcast shape of the inputs.

        Args:
            sends_today: Sends already made in the decision's local day (:class:`DayCount`).
            sends_week: Sends in the weekly window (:func:`in_week_window`; the simulator's
                ``sends_7d`` feature).
        """
        t, w = np.asarray(sends_today), np.asarray(sends_week)
        ok = np.ones(np.broadcast_shapes(t.shape, w.shape), bool)
        if self.max_sends_per_day:
            ok &= t < self.max_sends_per_day
        if self.max_sends_per_week:
            ok &= w < self.max_sends_per_week
        return ok

    def allowed(self, hour: np.ndarray, sends_today: np.ndarray, sends_week: np.ndarray,
                subscribed: np.ndarray | None = None,
                held_out: np.ndarray | None = None,
                opted_in: np.ndarray | None = None) -> np.ndarray:
        """True where a send would be delivered: not held out, subscribed, opted into the
        channel, not quiet and within both caps.

        Args:
            hour: Local hour at the decision's time.
            sends_today: As in :meth:`within_caps`.
            sends_week: As in :meth:`within_caps`.
            subscribed: bool, shape of ``hour``: the user has not unsubscribed (None: every
                user is subscribed, e.g. OPE over logged decisions).
            held_out: bool, shape of ``hour``: the user is in the campaign's holdout
                (:meth:`pushrl.rules.holdout.Holdout.held_out`; None: nobody is).
            opted_in: bool, shape of ``hour``: the user opted into this guardrail's channel
                (None: everyone did, the push-only case).
        """
        ok = ~self.quiet(hour) & self.within_caps(sends_today, sends_week)
        if subscribed is not None:
            ok &= np.asarray(subscribed, bool)
        if opted_in is not None:
            ok &= np.asarray(opted_in, bool)
        return ok if held_out is None else ok & ~np.asarray(held_out, bool)

    def verdict(self, hour: np.ndarray, sends_today: np.ndarray, sends_week: np.ndarray,
                subscribed: np.ndarray | None = None,
                held_out: np.ndarray | None = None,
                opted_in: np.ndarray | None = None) -> np.ndarray:
        """The first blocking guardrail per decision as a code (:data:`REASONS`), int8, shape
        of ``hour``.

        Same arguments as :meth:`allowed` (same shapes); ``verdict(...) == ALLOWED`` equals
        ``allowed(...)``.
        """
        # from the last guardrail to the first: each one checked overrides those after it
        # (fewer array operations than masking the undecided rows at every step)
        h = np.asarray(hour)
        code = np.full(h.shape, ALLOWED, np.int8)
        if self.max_sends_per_week:
            code[np.asarray(sends_week) >= self.max_sends_per_week] = WEEKLY_CAP
        if self.max_sends_per_day:
            code[np.asarray(sends_today) >= self.max_sends_per_day] = DAILY_CAP
        code[self.quiet(h)] = QUIET_HOURS
        if opted_in is not None:
            code[~np.asarray(opted_in, bool)] = NOT_OPTED_IN
        if subscribed is not None:
            code[~np.asarray(subscribed, bool)] = UNSUBSCRIBED
        if held_out is not None:
            code[np.asarray(held_out, bool)] = HELD_OUT
        return code

    def verdict_few(self, hour: list[int], sends_today: list[int], sends_week: list[int],
                    subscribed: list[bool] | None = None) -> list[int]:
        """:meth:`verdict` of a few decisions as Python ints, row by row (the server's
        passes of a few users, where each numpy call costs more than the test): the same
        guardrails in the same priority, first blocking one wins
        (``tests/serve/test_engine_few.py`` compares the server's passes on random streams
        and random guardrails).

        Same arguments as :meth:`verdict` as lists (``held_out`` and ``opted_in`` are not
        taken: the few-rows pass runs without a holdout or channels)."""
        s, e = self.quiet_start, self.quiet_end
        day, week = self.max_sends_per_day, self.max_sends_per_week
        out = []
        for i, h in enumerate(hour):
            if subscribed is not None and not subscribed[i]:
                out.append(UNSUBSCRIBED)
            elif s != e and self._quiet_at(h):
                out.append(QUIET_HOURS)
            elif day and sends_today[i] >= day:
                out.append(DAILY_CAP)
            elif week and sends_week[i] >= week:
                out.append(WEEKLY_CAP)
            else:
                out.append(ALLOWED)
        return out

    def cap_left(self, sends_today: np.ndarray,
                 sends_week: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Share of the daily and weekly caps left, each in [0, 1] (1 without a cap)."""
        t, w = np.asarray(sends_today), np.asarray(sends_week)
        d_cap, w_cap = self.max_sends_per_day, self.max_sends_per_week
        day = np.clip(1 - t / d_cap, 0, 1) if d_cap else np.ones(t.shape)
        week = np.clip(1 - w / w_cap, 0, 1) if w_cap else np.ones(w.shape)
        return day, week


def in_week_window(send_bucket: npt.ArrayLike, bucket: npt.ArrayLike) -> np.ndarray | bool:
    """True where a send in ``send_bucket`` counts toward the weekly cap of a decision in
    ``bucket``: ``bucket - 168 <= send_bucket <= bucket`` (numpy arrays broadcast; plain
    ints give a bool, for the server's short per-user lists).

    The part before ``bucket`` is the feature pipeline's ``sends_7d`` window ``[b-168, b)``;
    a send in ``bucket`` itself happened before the decision (the server can decide twice in
    one bucket; the simulator cannot).
    """
    s, b = send_bucket, bucket
    return (s >= b - WEEK_BUCKETS) & (s <= b)  # type: ignore[operator, no-any-return]


class DayCount:
    """Sends per user in the user's current local day, vectorised over user indices.

    The one "sends today" counter: the simulator, OPE's log replay and the server keep one
    each. It holds each user's latest local day of a send and the day before it, so a
    decision that arrives out of order inside one hour bucket across a local midnight (zones
    with a non-whole-hour offset, e.g. Asia/Kathmandu) is still counted on its own day;
    queries for any other day read 0 (e.g. look-ahead into later days).

    Args:
        n: Initial number of users (grows with :meth:`resize`).
    """

    def __init__(self, n: int = 0) -> None:
        self.day = np.full(n, _NO_DAY, np.int64)
        self.count = np.zeros(n, np.int32)
        self.prev = np.zeros(n, np.int32)  # sends on day - 1

    def resize(self, n: int) -> None:
        """Make room for users ``0 .. n-1`` (new users start with no sends); a no-op when
        there is room. Growth at least doubles the capacity, so growing one user at a time
        (the server) costs amortised O(1)."""
        k = self.day.size
        if n > k:
            n = max(n, 2 * k)
            self.day = np.concatenate([self.day, np.full(n - k, _NO_DAY, np.int64)])
            self.count = np.concatenate([self.count, np.zeros(n - k, np.int32)])
            self.prev = np.concatenate([self.prev, np.zeros(n - k, np.int32)])

    def reset(self, users: np.ndarray) -> None:
        """Forget the sends of ``users`` (a new episode in a simulator slot)."""
        self.day[users], self.count[users], self.prev[users] = _NO_DAY, 0, 0

    def get(self, users: np.ndarray | slice, day: np.ndarray) -> np.ndarray:
        """Sends of ``users`` ``(k,)`` (indices, or a slice: the simulator's all-slots view)
        on local ``day`` ``(k,)`` (day numbers), int32."""
        cur = self.day[users]
        return np.where(cur == day, self.count[users],
                        np.where(cur - 1 == day, self.prev[users], 0)).astype(np.int32)

    def get_few(self, users: list[int], day: list[int]) -> list[int]:
        """:meth:`get` of a few users as Python ints (the same rule: the count of the user's
        latest day with a send, the day before's, else 0; a server pass of a few users)."""
        if len(users) != len(day):  # (zip(strict=True)'s keyword call costs ~1.5k instructions)
            raise ValueError(f"{len(users)} users but {len(day)} days")
        out = []
        days, count, prev = self.day, self.count, self.prev
        for u, d in zip(users, day):  # noqa: B905 (lengths checked)
            cur = days.item(u)  # (.item: a python int, no numpy scalar)
            out.append(count.item(u) if cur == d else prev.item(u) if cur - 1 == d else 0)
        return out

    def add(self, users: np.ndarray, day: np.ndarray) -> None:
        """Count one send per row of ``users`` ``(k,)`` (repeats allowed) on local ``day``."""
        u = np.asarray(users, np.int64)
        if not u.size:
            return
        d = np.broadcast_to(np.asarray(day, np.int64), u.shape)
        later = d > self.day[u]
        if later.any():
            ul, dl = u[later], d[later]
            self.prev[ul] = np.where(dl == self.day[ul] + 1, self.count[ul], 0)
            self.count[ul], self.day[ul] = 0, dl
        cur = self.day[u]
        np.add.at(self.count, u[d == cur], 1)
        np.add.at(self.prev, u[d == cur - 1], 1)

    def add_one(self, user: int, day: int) -> None:
        """:meth:`add` for one send (the server records sends one at a time; numpy's
        per-call overhead would dominate)."""
        cur = int(self.day[user])
        if day > cur:
            self.prev[user] = self.count[user] if day == cur + 1 else 0
            self.count[user], self.day[user] = 0, day
            cur = day
        if day == cur:
            self.count[user] += 1
        elif day == cur - 1:
            self.prev[user] += 1
