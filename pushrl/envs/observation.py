"""The one timing observation: what the send-timing agent sees, built in one place.

The environments (:class:`~pushrl.envs.push_timing.PushTimingEnv`, the vector env and the
SB3 adapter), PPO training and the served PPO actor
(:class:`~pushrl.policies.ppo.PPOTimingPolicy`) all call :class:`TimingObservation`, so an
agent sees in serving exactly the columns it was trained on. The inputs are the pipeline's
raw features (:meth:`~pushrl.data.features.FeatureState.features`), the user's
:class:`~pushrl.data.features.FeatureState` (for the day profile), pushes sent in the local
day, the send mask and the guardrails the agent was trained under.

Columns (:data:`TIMING_OBS_NAMES`, ``pushrl/PushTiming-v1``):

| idx | name | meaning |
|-----|------|---------|
| 0-1 | hour_sin, hour_cos | local hour |
| 2 | weekend | local Saturday or Sunday |
| 3 | log_hours_since_push | log(hours since last push + 1) / log(337) |
| 4 | sends_24h | pushes in the previous 24 h |
| 5 | sends_7d | pushes in the previous 7 days / 7 |
| 6 | opens_7d | opens in the previous 7 days / 7 |
| 7 | log_activity_at_hour | log of the user's relative activity at this local hour |
| 8 | engagement | shrunk past open rate |
| 9 | log1p_activity_7d | organic events in the previous 7 days |
| 10-11 | dow_sin, dow_cos | local weekday |
| 12 | sends_today | pushes delivered in the local day (capped at 24) |
| 13 | day_cap_left | share of the daily cap left (1 without a cap) |
| 14 | week_cap_left | share of the 7-day cap left (1 without a cap) |
| 15 | quiet_hour | local quiet hours now (the agent's guardrails) |
| 16 | send_allowed | a send would be delivered now |
| 17 | log_activity_vs_day_peak | log(activity share now / today's allowed peak), in [-3, 0] |
| 18 | hours_to_day_peak | (peak hour - hour now) / 24, negative once the peak has passed |
| 19 | at_day_peak | 1 at today's allowed peak hour |
| 20 | day_hour_rank | allowed hours today more active than now / 24 |

Columns 0-16 are :data:`V0_OBS_NAMES` (``pushrl/PushTiming-v0``); 17-20 are
:data:`PROFILE_OBS_NAMES`. Older agents load with the ``obs_names`` of their card (v1 PPO
artifacts: 0-18), which :class:`TimingObservation` accepts as any subset of the profile
columns after the 17 base columns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pushrl.data.features import ENCODED_NAMES, F, FeatureState, encode
from pushrl.sim.contexts import TimingContext
from pushrl.rules.guardrails import Guardrails
from pushrl.sim.engine import Observation

#: The 17 columns of ``pushrl/PushTiming-v0``: the pipeline encoding, time and guardrails.
V0_OBS_NAMES: tuple[str, ...] = (
    *ENCODED_NAMES, "dow_sin", "dow_cos", "sends_today", "day_cap_left", "week_cap_left",
    "quiet_hour", "send_allowed")
#: Where the current hour stands in the user's day, from the pipeline's hour-of-week activity
#: profile (the input of the most-active-hour heuristic), which the per-hour features cannot
#: show. ``at_day_peak`` and ``day_hour_rank`` (added with the v2 PPO agents) state the
#: heuristic's own choice directly: a tanh network learns a 0/1 column far more easily than
#: the spike ``hours_to_day_peak == 0``.
PROFILE_OBS_NAMES: tuple[str, ...] = ("log_activity_vs_day_peak", "hours_to_day_peak",
                                      "at_day_peak", "day_hour_rank")
#: The profile columns of the v1 PPO agents (their cards list their ``obs_names``).
PROFILE_OBS_NAMES_V1: tuple[str, ...] = PROFILE_OBS_NAMES[:2]
#: The 21 columns of ``pushrl/PushTiming-v1``.
TIMING_OBS_NAMES: tuple[str, ...] = (*V0_OBS_NAMES, *PROFILE_OBS_NAMES)

_BOUNDS: dict[str, tuple[float, float]] = {
    **dict(zip(V0_OBS_NAMES, zip(
        [-1, -1, 0, 0, 0, 0, 0, float(np.log(1e-3)), 0, 0, -1, -1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 24, 24, 24, float(np.log(168.0)), 1, 30, 1, 1, 24, 1, 1, 1, 1],
        strict=True), strict=True)),
    "log_activity_vs_day_peak": (-3.0, 0.0), "hours_to_day_peak": (-1.0, 1.0),
    "at_day_peak": (0.0, 1.0), "day_hour_rank": (0.0, 1.0)}
_DOW_SIN = np.sin(np.arange(7) * 2 * np.pi / 7).astype(np.float32)
_DOW_COS = np.cos(np.arange(7) * 2 * np.pi / 7).astype(np.float32)
_N_BASE = len(V0_OBS_NAMES)


def _check_names(names: Sequence[str]) -> tuple[str, ...]:
    names = tuple(names)
    if names[:_N_BASE] != V0_OBS_NAMES:
        raise ValueError(f"`obs_names` must start with the {_N_BASE} v0 columns "
                         f"{list(V0_OBS_NAMES)}, got {list(names[:_N_BASE])}")
    extra = names[_N_BASE:]
    bad = [c for c in extra if c not in PROFILE_OBS_NAMES]
    if bad or len(set(extra)) != len(extra):
        raise ValueError(f"`obs_names` after the v0 columns must be distinct profile columns "
                         f"of {list(PROFILE_OBS_NAMES)}, got {list(extra)}")
    return names


def obs_bounds(names: Sequence[str] = TIMING_OBS_NAMES) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` float32 ``(len(names),)``: every column lies inside by construction."""
    names = _check_names(names)
    low, high = zip(*(_BOUNDS[c] for c in names), strict=True)
    return np.array(low, np.float32), np.array(high, np.float32)


def profile_columns(state: FeatureState, users: np.ndarray, raw: np.ndarray,
                    allowed_hours: np.ndarray,
                    names: Sequence[str] = PROFILE_OBS_NAMES) -> np.ndarray:
    """Day-peak columns ``names`` (of :data:`PROFILE_OBS_NAMES`) for ``users``, ``(n, k)``.

    Today's profile is the user's shrunk hour-of-week activity share
    (:meth:`~pushrl.data.features.FeatureState.day_profile`, weekdays or weekend days pooled
    as today is). ``log_activity_vs_day_peak``: log of the share now over the largest share
    among today's allowed hours (0 at the peak, clipped at -3); ``hours_to_day_peak``: hours
    from now to that peak / 24 (negative once it has passed); ``at_day_peak``: 1 at that peak
    hour (the most-active-hour heuristic's send hour); ``day_hour_rank``: allowed hours of
    today more active than now (ties: earlier first) / 24.

    Args:
        state: The feature state the raw features came from.
        users: ``(n,)`` user indices into ``state``.
        raw: ``(n, N_FEATURES)`` raw features (local hour and weekday are read).
        allowed_hours: ``(24,)`` bool, local hours outside quiet hours.
        names: Columns to return, in this order.
    """
    unknown = [c for c in names if c not in PROFILE_OBS_NAMES]
    if unknown:
        raise ValueError(f"unknown profile columns {unknown}; known: {list(PROFILE_OBS_NAMES)}")
    hour = raw[:, F["local_hour"]].astype(np.int64)
    day = state.day_profile(users, raw[:, F["local_dow"]], "weekpart")
    allowed = np.asarray(allowed_hours, bool)
    masked = np.where(allowed[None, :], day, 0.0)
    peak = masked.argmax(axis=1)
    now = day[np.arange(hour.size), hour]
    cols: dict[str, Callable[[], Any]] = {
        "log_activity_vs_day_peak": lambda: np.clip(
            np.log(np.maximum(now, 1e-9) / np.maximum(masked.max(axis=1), 1e-9)), -3.0, 0.0),
        "hours_to_day_peak": lambda: (peak - hour) / 24.0,
        "at_day_peak": lambda: (peak == hour) & allowed[hour],
        "day_hour_rank": lambda: (
            allowed[None, :] & ((day > now[:, None]) | (
                (day == now[:, None]) & (np.arange(24)[None, :] < hour[:, None])))
        ).sum(axis=1) / 24.0}
    out = np.empty((hour.size, len(names)), np.float32)
    for j, c in enumerate(names):
        out[:, j] = cols[c]()
    return out


@dataclass(frozen=True)
class TimingObservation:
    """Builds the timing observation ``names`` under the agent's ``guardrails``.

    Attributes:
        guardrails: The guardrails the agent is trained (or was trained) under: they define
            ``quiet_hour``, ``day_cap_left``, ``week_cap_left`` and the allowed hours of the
            profile columns. ``send_allowed`` is the caller's mask (the engine's or the
            server's).
        names: Columns, :data:`V0_OBS_NAMES` then any of :data:`PROFILE_OBS_NAMES`
            (default: all 21 of ``pushrl/PushTiming-v1``).
    """

    guardrails: Guardrails = field(default_factory=Guardrails)
    names: tuple[str, ...] = TIMING_OBS_NAMES

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", _check_names(self.names))
        object.__setattr__(self, "_profile", self.names[_N_BASE:])
        object.__setattr__(self, "_allowed_hours", ~self.guardrails.quiet(np.arange(24)))

    @property
    def profile_names(self) -> tuple[str, ...]:
        """The profile columns among :attr:`names`."""
        return self._profile  # type: ignore[attr-defined,no-any-return]

    @property
    def dim(self) -> int:
        """Number of columns."""
        return len(self.names)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` of one observation (see :func:`obs_bounds`)."""
        return obs_bounds(self.names)

    def build(self, raw: np.ndarray, sends_today: np.ndarray, allowed: np.ndarray,
              state: FeatureState | None = None,
              users: np.ndarray | None = None) -> np.ndarray:
        """Observations of ``n`` decisions, float32 ``(n, dim)``.

        Args:
            raw: ``(n, N_FEATURES)`` raw pipeline features.
            sends_today: ``(n,)`` pushes delivered in the user's local day.
            allowed: ``(n,)`` bool, a send would be delivered now.
            state: Feature state of the users (needed for profile columns).
            users: ``(n,)`` indices into ``state`` (needed for profile columns).
        """
        raw = np.asarray(raw)
        sends = np.asarray(sends_today)
        g = self.guardrails
        out = np.empty((raw.shape[0], self.dim), np.float32)
        out[:, :10] = encode(raw)
        dow = raw[:, F["local_dow"]].astype(np.int64)
        out[:, 10], out[:, 11] = _DOW_SIN[dow], _DOW_COS[dow]
        out[:, 12] = np.minimum(sends, 24)
        out[:, 13], out[:, 14] = g.cap_left(sends, raw[:, F["sends_7d"]])
        out[:, 15] = g.quiet(raw[:, F["local_hour"]].astype(np.int64))
        out[:, 16] = np.asarray(allowed)
        if self.profile_names:
            if state is None or users is None:
                raise ValueError("`state` and `users` are required for the profile columns "
                                 f"{list(self.profile_names)}: they read the user's activity "
                                 "profile")
            out[:, _N_BASE:] = profile_columns(state, np.asarray(users), raw,
                                               self._allowed_hours,  # type: ignore[attr-defined]
                                               self.profile_names)
        return out

    def from_engine(self, obs: Observation, state: FeatureState,
                    users: np.ndarray) -> np.ndarray:
        """Observations from a simulator engine's :class:`~pushrl.sim.engine.Observation`."""
        return self.build(obs.raw, obs.sends_today, obs.allowed, state, users)

    def from_context(self, ctx: TimingContext) -> np.ndarray:
        """Observations from a :class:`~pushrl.sim.contexts.TimingContext` (rollout, compare,
        server); ``sends_today`` defaults to 0 when the context has none."""
        sends = ctx.sends_today if ctx.sends_today is not None else np.zeros(len(ctx))
        return self.build(ctx.features, sends, ctx.allowed, ctx.state, ctx.user_index)
