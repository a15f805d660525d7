"""Delivery channels (push, email, in-app): the one definition of a channel's reachability,
cost, quiet hours and caps (issue 17).

A scenario (``envs/*.toml``) and the server config read the same tables::

    [channels.push]
    cost = 0.01                 # send cost in reward units (replaces reward.send_cost)
    quiet_hours = [22, 8]       # local hours, as [guardrails]
    max_sends_per_day = 2       # 0 = no cap
    max_sends_per_week = 10
    [channels.email]
    cost = 0.002
    quiet_hours = [0, 0]
    max_sends_per_day = 1
    [channels.in_app]
    cost = 0.001
    session_only = true         # reaches only users in a session (the response model's job)

Each channel's limits are a :class:`~pushrl.rules.guardrails.Guardrails` (the ONE guardrail
definition), applied to that channel's own sends (:class:`ChannelCounts`) and to the user's
opt-in of that channel (``opted_in=``, verdict ``NOT_OPTED_IN``); :meth:`ChannelSet.verdict`
calls it once per channel, so there is no second copy of a rule. The scenario's
``[guardrails]`` still bound the sends of all channels together. A channel's send cost
feeds the one reward (:func:`pushrl.rules.reward.channel_send_cost`). The response to a
channel (open, unsubscribe) is not configured here: the synthetic world has it as truth
(``WorldParams.channel_*``) and the fitted simulator learns it from the log's ``channel``
column.

Opt-in lives in the users table's ``channels`` column (pushlog, comma-separated names;
null = every channel): :func:`opt_in_matrix`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pushrl.data.contract import CHANNEL_NAME_PATTERN
from pushrl.rules.guardrails import WEEK_BUCKETS, DayCount, Guardrails

#: Keys of one ``[channels.NAME]`` table.
CHANNEL_KEYS: tuple[str, ...] = ("cost", "quiet_hours", "max_sends_per_day",
                                 "max_sends_per_week", "session_only")


@dataclass(frozen=True)
class Channel:
    """One delivery channel.

    Attributes:
        name: Channel name (lower-case identifier, the pushlog ``channel`` value).
        cost: Send cost per delivered message, in reward units (>= 0).
        guardrails: Quiet hours and caps of this channel's own sends.
        session_only: The channel reaches a user only inside a session (in-app).
    """

    name: str
    cost: float = 0.0
    guardrails: Guardrails = field(default_factory=Guardrails)
    session_only: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(CHANNEL_NAME_PATTERN, self.name):
            raise ValueError(f"channel name must be a lower-case identifier such as `in_app`, "
                             f"got {self.name!r}")
        c = self.cost
        if isinstance(c, bool) or not isinstance(c, int | float) or not np.isfinite(c) or c < 0:
            raise ValueError(f"[channels.{self.name}] `cost` must be a finite number >= 0, "
                             f"got {c!r}")
        object.__setattr__(self, "cost", float(c))

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> Channel:
        """From a ``[channels.NAME]`` table (keys :data:`CHANNEL_KEYS`; absent = defaults:
        no cost, the default quiet hours and caps).

        Raises:
            ValueError: unknown keys or invalid values (names the channel and the key).
        """
        unknown = sorted(set(d) - set(CHANNEL_KEYS))
        if unknown:
            raise ValueError(f"[channels.{name}]: unknown keys {unknown}; known: "
                             f"{list(CHANNEL_KEYS)}")
        g = Guardrails()
        quiet = d.get("quiet_hours", [g.quiet_start, g.quiet_end])
        if not (isinstance(quiet, list | tuple) and len(quiet) == 2):
            raise ValueError(f"[channels.{name}] quiet_hours must be [start, end] local hours "
                             f"0-23, got {quiet!r}")
        try:
            guard = Guardrails(quiet[0], quiet[1],
                               d.get("max_sends_per_day", g.max_sends_per_day),
                               d.get("max_sends_per_week", g.max_sends_per_week))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"[channels.{name}]: {exc}") from None
        so = d.get("session_only", False)
        if not isinstance(so, bool):
            raise ValueError(f"[channels.{name}] session_only must be true or false, got {so!r}")
        return cls(name, d.get("cost", 0.0), guard, so)

    def to_dict(self) -> dict[str, Any]:
        """The ``[channels.NAME]`` table (:meth:`from_dict` reads it back)."""
        g = self.guardrails
        return {"cost": self.cost, "quiet_hours": [g.quiet_start, g.quiet_end],
                "max_sends_per_day": g.max_sends_per_day,
                "max_sends_per_week": g.max_sends_per_week, "session_only": self.session_only}


@dataclass(frozen=True)
class ChannelSet:
    """The channels of a scenario or server, in arm order (the policy's channel index).

    Attributes:
        channels: One or more channels with distinct names.
    """

    channels: tuple[Channel, ...]

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("a channel set needs at least one channel")
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise ValueError(f"channel names must be distinct, got {names}")

    @property
    def names(self) -> tuple[str, ...]:
        """Channel names in arm order."""
        return tuple(c.name for c in self.channels)

    def __len__(self) -> int:
        return len(self.channels)

    def index(self, name: str) -> int:
        """Arm index of channel ``name`` (ValueError names the known ones)."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"unknown channel {name!r}; known: {', '.join(self.names)}") from None

    def costs(self) -> dict[str, float]:
        """Send cost per channel name (for :func:`pushrl.rules.reward.from_logs`)."""
        return {c.name: c.cost for c in self.channels}

    def cost_array(self) -> np.ndarray:
        """``(n_channels,)`` send costs in arm order."""
        return np.array([c.cost for c in self.channels], np.float64)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Mapping[str, Any]]) -> ChannelSet:
        """From the ``channels`` table of a scenario / server config (``{name: table}``)."""
        if not isinstance(doc, Mapping) or not doc:
            raise ValueError("[channels] must hold one table per channel, e.g. "
                             "[channels.push] cost = 0.01")
        out = []
        for name, table in doc.items():
            if not isinstance(table, Mapping):
                raise ValueError(f"[channels.{name}] must be a table, got {table!r}")
            out.append(Channel.from_dict(str(name), table))
        return cls(tuple(out))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON/TOML form (:meth:`from_dict` reads it back)."""
        return {c.name: c.to_dict() for c in self.channels}

    def describe(self) -> str:
        """One line per channel for logs and reports."""
        return "; ".join(f"{c.name}: cost {c.cost:g}, {c.guardrails.describe()}"
                         + (", in session only" if c.session_only else "")
                         for c in self.channels)

    def verdict(self, hour: np.ndarray, sends_today: np.ndarray, sends_week: np.ndarray,
                opted_in: np.ndarray, subscribed: np.ndarray | None = None,
                held_out: np.ndarray | None = None) -> np.ndarray:
        """The first blocking guardrail per decision and channel, int8 ``(n, n_channels)``
        (codes of :data:`pushrl.rules.guardrails.REASONS`).

        Column ``c`` is exactly ``channels[c].guardrails.verdict(...)`` on that channel's own
        send counts and opt-in.

        Args:
            hour: ``(n,)`` local hour at the decision.
            sends_today: ``(n, n_channels)`` sends per channel in the local day
                (:meth:`ChannelCounts.today`).
            sends_week: ``(n, n_channels)`` sends per channel in the weekly window
                (:meth:`ChannelCounts.week`).
            opted_in: ``(n, n_channels)`` bool opt-in (:func:`opt_in_matrix`).
            subscribed, held_out: ``(n,)`` as in :meth:`Guardrails.verdict` (all channels).
        """
        h = np.asarray(hour)
        out = np.empty((h.size, len(self)), np.int8)
        for j, ch in enumerate(self.channels):
            out[:, j] = ch.guardrails.verdict(h, sends_today[:, j], sends_week[:, j],
                                              subscribed=subscribed, held_out=held_out,
                                              opted_in=opted_in[:, j])
        return out

    def allowed(self, hour: np.ndarray, sends_today: np.ndarray, sends_week: np.ndarray,
                opted_in: np.ndarray, subscribed: np.ndarray | None = None,
                held_out: np.ndarray | None = None) -> np.ndarray:
        """bool ``(n, n_channels)``: :meth:`verdict` == ALLOWED."""
        return self.verdict(hour, sends_today, sends_week, opted_in, subscribed,
                            held_out) == 0


#: The shipped channels (``envs/default.toml``'s ``[channels]``): push as the default
#: scenario's guardrails and cost; email cheap, one a day, no quiet hours; in-app cheapest,
#: in session only, no caps.
DEFAULT_CHANNELS = ChannelSet((
    Channel("push", 0.01, Guardrails(22, 8, 2, 10)),
    Channel("email", 0.002, Guardrails(0, 0, 1, 5)),
    Channel("in_app", 0.001, Guardrails(0, 0, 0, 0), session_only=True),
))


def parse_opt_in(text: str | None, names: Sequence[str]) -> np.ndarray:
    """One user's ``channels`` value -> bool ``(n_channels,)`` (None/NaN = every channel;
    names not in ``names`` are ignored: a channel the scenario does not use)."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return np.ones(len(names), bool)
    got = {t.strip() for t in str(text).split(",")}
    return np.array([n in got for n in names], bool)


def opt_in_matrix(values: Iterable[str | None], names: Sequence[str]) -> np.ndarray:
    """bool ``(n_users, n_channels)`` from the users table's ``channels`` column."""
    rows = [parse_opt_in(v, names) for v in values]
    return np.stack(rows) if rows else np.zeros((0, len(names)), bool)


def format_opt_in(mask: np.ndarray, names: Sequence[str]) -> list[str]:
    """Inverse of :func:`opt_in_matrix`: ``(n, n_channels)`` -> ``"push,email"`` strings."""
    return [",".join(n for n, m in zip(names, row, strict=True) if m)
            for row in np.asarray(mask, bool)]


class ChannelCounts:
    """Sends per user and channel: today (local day, :class:`DayCount` per channel) and in
    the weekly window ``[b - 168, b]`` (:func:`~pushrl.rules.guardrails.in_week_window`),
    for a simulator whose users share one hour clock (buckets never go backwards).

    Args:
        n_users: Users (indices ``0..n_users-1``).
        n_channels: Channels (arm indices).
    """

    def __init__(self, n_users: int, n_channels: int) -> None:
        self.days = [DayCount(n_users) for _ in range(n_channels)]
        self._ring = np.zeros((WEEK_BUCKETS + 1, n_users, n_channels), np.int16)
        self._stamp = np.full(WEEK_BUCKETS + 1, np.iinfo(np.int64).min, np.int64)
        self._week = np.zeros((n_users, n_channels), np.int32)

    def _slot(self, bucket: int) -> int:
        k = int(bucket) % (WEEK_BUCKETS + 1)
        if self._stamp[k] != bucket:  # the slot holds bucket - 169 (or older): leaves the window
            if self._stamp[k] > bucket:
                raise ValueError(f"ChannelCounts: bucket {bucket} is older than the window")
            self._week -= self._ring[k]
            self._ring[k] = 0
            self._stamp[k] = bucket
        return k

    def record(self, users: np.ndarray, bucket: int, day: np.ndarray,
               channels: np.ndarray) -> None:
        """Count one send of ``users[i]`` ``(k,)`` on channel ``channels[i]`` in ``bucket``
        on local ``day[i]``."""
        u = np.asarray(users, np.int64)
        c = np.asarray(channels, np.int64)
        k = self._slot(bucket)
        np.add.at(self._ring[k], (u, c), 1)
        np.add.at(self._week, (u, c), 1)
        d = np.broadcast_to(np.asarray(day, np.int64), u.shape)
        for j, dc in enumerate(self.days):
            m = c == j
            dc.add(u[m], d[m])

    def today(self, users: np.ndarray, day: np.ndarray) -> np.ndarray:
        """``(k, n_channels)`` sends on each channel in each user's local ``day``."""
        return np.stack([dc.get(users, day) for dc in self.days], axis=1)

    def week(self, users: np.ndarray, bucket: int) -> np.ndarray:
        """``(k, n_channels)`` sends on each channel in ``[bucket - 168, bucket]``."""
        self._slot(bucket)
        # buckets older than bucket - 168 still in the ring were subtracted when overwritten;
        # a ring slot not yet overwritten can be older than the window only after a gap
        old = (self._stamp < bucket - WEEK_BUCKETS) & (self._stamp > np.iinfo(np.int64).min)
        if old.any():
            for k in np.flatnonzero(old):
                self._week -= self._ring[k]
                self._ring[k] = 0
                self._stamp[k] = np.iinfo(np.int64).min
        return self._week[np.asarray(users, np.int64)].astype(np.int32)
