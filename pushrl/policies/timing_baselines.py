"""Heuristic send-timing policies (the baselines PPO has to beat) and their registry.

Every policy here is a :class:`~pushrl.policies.base.TimingPolicy`: it returns ``(n, 2)``
probabilities over ``{WAIT, SEND}`` from the pipeline's raw features and
:class:`~pushrl.data.features.FeatureState`; the base class applies the scenario's guardrails
(``ctx.allowed``), samples and returns ``pscore``. None of them reads raw logs.

* ``never-send``: never pushes (the zero line of every objective).
* ``fixed-hour``: one push a day at a fixed local hour (e.g. 19:00), the "marketing
  calendar".
* ``most-active-hour``: per-user send-time optimisation as commercial tools ship it: push at
  the user's most active local hour(s) of the day, read from the pipeline's hour-of-week
  activity profile, at most ``sends_per_day`` a day and at least ``min_gap_hours`` apart.
* ``random-volume``: random slots at a matched volume (``sends_per_day`` in expectation),
  spread uniformly over the allowed local hours.
* ``timing-oracle``: ground-truth schedule for the synthetic world
  (:mod:`pushrl.policies.oracle`).
* ``timing-oracle-info``: the same planner with the true response model but only the logged
  information a deployed policy has (the information-matched yardstick).

Parameters come from ``policies/baselines/<name>.toml`` (``[params]``), overridable in
:func:`~pushrl.policies.baselines.make_baseline`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from pushrl.data.features import F, PROFILE_CACHE_USERS, FeatureState, pool_part
from pushrl.policies.base import SEND, WAIT, Policy, TimingContext, TimingPolicy

Pool = Literal["day", "weekpart", "week"]


#: ``[h, j]``: hour ``j`` is earlier than hour ``h`` (the ranks' tie-break).
_EARLIER = np.arange(24)[None, :] < np.arange(24)[:, None]


def _window_hours(window: tuple[int, int]) -> np.ndarray:
    """Bool ``(24,)`` mask of the local hours in ``[start, end)`` (wrapping past midnight)."""
    start, end = (int(h) for h in window)
    for name, h in (("start", start), ("end", end)):
        if not 0 <= h <= 24:
            raise ValueError(f"`window` {name} must be a local hour in [0, 24], got {h}")
    hours = np.arange(24)
    if start == end:
        return np.ones(24, bool)
    return (hours >= start) & (hours < end) if start < end else (hours >= start) | (hours < end)


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        raise ValueError(f"`{name}` must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _sends_today(ctx: TimingContext) -> np.ndarray:
    if ctx.sends_today is None:
        raise ValueError("`ctx.sends_today` is None; this policy applies a daily cap and needs "
                         "the pushes already sent today (the environments provide it)")
    return np.asarray(ctx.sends_today)


#: Row 0: the one-hot WAIT distribution, row 1: SEND (indexed by a send decision).
_ONE_HOT = np.eye(2)[[WAIT, SEND]]


def _deterministic(send: np.ndarray | list[bool]) -> np.ndarray:
    """``(n, 2)`` one-hot distribution from a bool ``(n,)`` send decision (float64; one
    gather: row ``send[i]`` of the WAIT/SEND one-hot rows)."""
    return _ONE_HOT.take(np.asarray(send, dtype=bool).view(np.int8), axis=0)


class NeverSend(TimingPolicy):
    """Never push."""

    name = "never-send"

    def _action_dist(self, ctx: TimingContext) -> np.ndarray:
        return _deterministic(np.zeros(len(ctx), bool))


class FixedHour(TimingPolicy):
    """One push a day at a fixed local hour.

    Args:
        hour: Local hour 0-23 at which to push.
        daily_cap: Pushes per local day at most (the policy's own cap, below the guardrail's).
    """

    name = "fixed-hour"

    def __init__(self, hour: int = 19, daily_cap: int = 1) -> None:
        if not 0 <= int(hour) <= 23:
            raise ValueError(f"`hour` must be a local hour in 0..23, got {hour}")
        _check_positive("daily_cap", daily_cap)
        self.hour, self.daily_cap = int(hour), int(daily_cap)

    def _action_dist(self, ctx: TimingContext) -> np.ndarray:
        hour = ctx.features[:, F["local_hour"]].astype(np.int64)
        return _deterministic((hour == self.hour) & (_sends_today(ctx) < self.daily_cap))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "hour": self.hour, "daily_cap": self.daily_cap}


class MostActiveHour(TimingPolicy):
    """Per-user send-time optimisation: push at the user's most active hours of the day.

    The user's rhythm is the pipeline's shrunk hour-of-week activity profile
    (:meth:`~pushrl.data.features.FeatureState.hour_of_week_profile`), pooled over the days
    selected by ``pool``. Each local day the policy pushes at the ``sends_per_day`` most
    active hours inside ``window`` (a push is due at one of those hours while fewer than
    ``sends_per_day`` were sent today).

    Args:
        sends_per_day: Pushes per local day (top-k hours), at most.
        window: Local hours ``[start, end)`` the policy may pick from; match it to the
            scenario's allowed hours so the chosen hour is never inside quiet hours.
        pool: Which days' activity describes today's rhythm: ``"day"`` the same weekday,
            ``"weekpart"`` weekdays vs weekend days, ``"week"`` all days.
        min_gap_hours: Hours between two pushes of the same day, at least.
    """

    name = "most-active-hour"

    def __init__(self, sends_per_day: int = 1, window: tuple[int, int] = (8, 22),
                 pool: Pool = "weekpart", min_gap_hours: int = 3) -> None:
        _check_positive("sends_per_day", sends_per_day)
        if pool not in ("day", "weekpart", "week"):
            raise ValueError(f"`pool` must be 'day', 'weekpart' or 'week', got {pool!r}")
        _check_positive("min_gap_hours", min_gap_hours, allow_zero=True)
        self.sends_per_day, self.pool = int(sends_per_day), pool
        self.window = (int(window[0]), int(window[1]))
        self.min_gap_hours = int(min_gap_hours)
        self._in_window = _window_hours(self.window)
        self._in_window_l: list[bool] = self._in_window.tolist()
        #: :meth:`_ranks`' key in the feature state's per-user cache (a str: its hash is kept)
        self._rank_key = f"most-active-hour:{self.pool}:{self.window[0]}-{self.window[1]}"
        if self._in_window.sum() < self.sends_per_day:
            raise ValueError(f"`window` {self.window} has fewer hours than "
                             f"`sends_per_day`={self.sends_per_day}; widen it")

    def day_profile(self, ctx: TimingContext, rows: np.ndarray | None = None) -> np.ndarray:
        """Activity share per local hour of today (pooled per ``pool``).

        Args:
            ctx: The decision context.
            rows: Rows of ``ctx`` to compute (default: all).

        Returns:
            ``(len(rows), 24)`` activity shares.
        """
        if ctx.state is None or ctx.user_index is None:
            raise ValueError("`ctx.state` and `ctx.user_index` are required by "
                             "most-active-hour (it reads the hour-of-week activity profile)")
        sel = slice(None) if rows is None else rows
        return np.asarray(ctx.state.day_profile(np.asarray(ctx.user_index)[sel],
                                                ctx.features[sel, F["local_dow"]], self.pool))

    def _action_dist(self, ctx: TimingContext) -> np.ndarray:
        hour = ctx.features[:, F["local_hour"]].astype(np.int64)
        rested = ctx.features[:, F["hours_since_push"]] >= self.min_gap_hours
        # only users who could be sent to now need their profile (the base class masks the
        # rest anyway): at 100k users this skips most of the (n, 168) profile work
        could = (rested & (_sends_today(ctx) < self.sends_per_day) & self._in_window[hour]
                 & np.asarray(ctx.allowed, dtype=bool))
        send = np.zeros(len(hour), dtype=bool)
        rows = np.flatnonzero(could)
        if rows.size and rows.size <= PROFILE_CACHE_USERS and ctx.state is not None:
            # a few users (the server's passes): each user's hour ranks, cached until their
            # activity counts change (the same ranks as below, computed once per user)
            st = ctx.state
            users = np.asarray(ctx.user_index)[rows]
            ranks = st.how_cached(self._rank_key, users, lambda us: self._ranks(st, us))
            part = pool_part(ctx.features[rows, F["local_dow"]], self.pool).tolist()
            send[rows] = [r[p][h] < self.sends_per_day
                          for r, p, h in zip(ranks, part, hour[rows].tolist(), strict=True)]
        elif rows.size:
            prof = np.where(self._in_window[None, :], self.day_profile(ctx, rows), -np.inf)
            h = hour[rows]
            ph = prof[np.arange(rows.size), h][:, None]
            # rank of this hour within the day (0 = most active), ties to the earlier hour
            ahead = (prof > ph) | ((prof == ph) & (np.arange(24)[None, :] < h[:, None]))
            send[rows] = ahead.sum(axis=1) < self.sends_per_day
        return _deterministic(send)

    def send_few(self, state: FeatureState, users: list[int], hour: list[int],
                 dow: list[int], hours_since_push: list[float], sends_today: list[int]
                 ) -> list[bool]:
        """:meth:`_action_dist`'s send decision for a few rows with every slot allowed, with
        Python numbers (the server's few-rows pass): the same tests on the same values and
        the same cached hour ranks (``tests/serve/test_engine_few.py`` compares the passes).
        """
        n = len(hour)
        if not n == len(users) == len(dow) == len(hours_since_push) == len(sends_today):
            # (zip(strict=True)'s keyword call costs ~1.5k instructions)
            raise ValueError("users, hour, dow, hours_since_push and sends_today differ in "
                             "length")
        win = self._in_window_l
        k, gap = self.sends_per_day, self.min_gap_hours
        could = [i for i, (h, g, t) in enumerate(zip(hour, hours_since_push, sends_today))
                 if g >= gap and t < k and win[h]]
        send = [False] * n
        if could:
            ranks = state.how_cached(self._rank_key, [users[i] for i in could],
                                     lambda us: self._ranks(state, us))
            pool = self.pool
            for i, r in zip(could, ranks):  # (how_cached: one entry per user asked)
                send[i] = r[pool_part(dow[i], pool)][hour[i]] < k
        return send

    def _ranks(self, state: FeatureState, users: np.ndarray) -> list[list[list[int]]]:
        """Per user, the ``[P][24]`` rank of every local hour within its day part's profile
        (0 = most active; ties to the earlier hour; hours outside ``window`` rank after
        every hour inside it): what :meth:`_action_dist` compares with ``sends_per_day``,
        for every hour at once, as Python ints (read one at a time)."""
        prof = np.where(self._in_window, state.pooled_profiles(users, self.pool), -np.inf)
        if not state.spec.shrink_how > 0 and np.isnan(prof).any():
            # (a profile 0 / 0 without shrinkage: NaN compares unequal to itself)
            ph = prof[..., :, None]  # (k, P, 24 hours h, 1)
            other = prof[..., None, :]  # (k, P, 1, 24 hours j)
            return ((other > ph) | ((other == ph) & _EARLIER)).sum(axis=-1).tolist()
        # the rank of hour h = the hours more active + the earlier hours as active = h's
        # place in the stable sort of the hours by descending activity (its inverse
        # permutation: the same ints as counting the comparisons above)
        return (np.argsort(-prof, axis=-1, kind="stable")
                .argsort(axis=-1, kind="stable").tolist())

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "sends_per_day": self.sends_per_day,
                "window": list(self.window), "pool": self.pool,
                "min_gap_hours": self.min_gap_hours}


class RandomVolume(TimingPolicy):
    """Random push slots at a matched volume.

    Each allowed local hour inside ``window`` gets a push with probability
    ``sends_per_day / hours_in_window``, so the expected volume is ``sends_per_day`` a day
    (less where guardrails block a slot). The ``pscore`` is that probability.

    Args:
        sends_per_day: Expected pushes per local day (e.g. the PPO agent's volume).
        window: Local hours ``[start, end)`` with a chance to push.
    """

    name = "random-volume"

    def __init__(self, sends_per_day: float = 1.0, window: tuple[int, int] = (8, 22)) -> None:
        _check_positive("sends_per_day", sends_per_day, allow_zero=True)
        self.window = (int(window[0]), int(window[1]))
        self._in_window = _window_hours(self.window)
        n_hours = int(self._in_window.sum())
        if sends_per_day > n_hours:
            raise ValueError(f"`sends_per_day`={sends_per_day} exceeds the {n_hours} hours of "
                             f"`window` {self.window}")
        self.sends_per_day = float(sends_per_day)
        self.p_slot = self.sends_per_day / n_hours

    def _action_dist(self, ctx: TimingContext) -> np.ndarray:
        hour = ctx.features[:, F["local_hour"]].astype(np.int64)
        p = np.where(self._in_window[hour], self.p_slot, 0.0)
        return np.stack([1.0 - p, p], axis=1)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "sends_per_day": self.sends_per_day,
                "window": list(self.window)}


def _oracle(**params: Any) -> Policy:
    from pushrl.policies.oracle import TrueOracle  # oracle.py is heavier; import on demand

    return TrueOracle(**params)


def _informed_oracle(**params: Any) -> Policy:
    from pushrl.policies.oracle import InformedOracle

    return InformedOracle(**params)


#: Timing baselines by name (merged into :func:`pushrl.policies.baselines.registry`).
BASELINES: dict[str, Callable[..., Policy]] = {
    "never-send": NeverSend,
    "fixed-hour": FixedHour,
    "most-active-hour": MostActiveHour,
    "random-volume": RandomVolume,
    "timing-oracle": _oracle,
    "timing-oracle-info": _informed_oracle,
}
#: The heuristics (no ground truth) that PPO is compared with.
HEURISTICS: tuple[str, ...] = ("never-send", "fixed-hour", "most-active-hour", "random-volume")
