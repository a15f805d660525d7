"""When a delay arm actually sends: the one definition shared by the delay context, the
trigger world's truth and the fitted trigger simulator.

A trigger created at ``event_ts`` with arm ``d`` is due at ``event_ts + d`` h; senders poll
at hour starts (:meth:`pushrl.rules.triggers.TriggerTracker.resolve_due`), so the first
possible send is the next hour start at or after the due time; quiet hours (the ONE
:class:`~pushrl.rules.guardrails.Guardrails`) re-queue it hour by hour to the first
non-quiet local hour. Caps are not modelled here (they depend on other pushes); the
resolution in the tracker applies them.
"""

from __future__ import annotations

import numpy as np

from pushrl.data.features import FeatureState
from pushrl.rules.guardrails import Guardrails
from pushrl.units import HOUR

#: Longest quiet spell the re-queue walks over (hours).
_MAX_QUIET = 24


def send_times(state: FeatureState, users: np.ndarray, event_ts: np.ndarray,
               delays_h: np.ndarray, guardrails: Guardrails) -> np.ndarray:
    """Expected send time of each (trigger, arm) ignoring caps and cancellations.

    Args:
        state: Any :class:`FeatureState` holding the users' time zones.
        users: ``(n,)`` user indices in ``state``.
        event_ts: ``(n,)`` unix seconds of the trigger events.
        delays_h: ``(k,)`` delay arms in hours (no drop arm).
        guardrails: Quiet hours to skip.

    Returns:
        ``(n, k)`` int64 unix seconds (hour starts).
    """
    return send_clock(state, users, event_ts, delays_h, guardrails)[0]


def send_clock(state: FeatureState, users: np.ndarray, event_ts: np.ndarray,
               delays_h: np.ndarray, guardrails: Guardrails
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`send_times` and the local ``(hour, dow)`` at each send time, each ``(n, k)``
    (one clock lookup fewer for callers that need both)."""
    u = np.asarray(users, np.int64)[:, None]
    due = np.asarray(event_ts, np.int64)[:, None] + np.asarray(delays_h, np.int64)[None, :] * HOUR
    t = -(-due // HOUR) * HOUR  # next hour start at or after the due time
    # flat (user, time) pairs: a decision's few pairs take the clock's python fast path
    uu = np.broadcast_to(u, t.shape).ravel()
    t = t.ravel()
    hour, dow, _ = state.local_time_at(uu, t)
    for _ in range(_MAX_QUIET):
        quiet = guardrails.quiet(hour)
        if not quiet.any():
            break
        # jump to the quiet spell's end in one step (a DST change inside it is caught by the
        # next check, which then walks on hour by hour)
        t = np.where(quiet, t + ((guardrails.quiet_end - hour) % 24) * HOUR, t)
        hour, dow, _ = state.local_time_at(uu, t)
    shape = due.shape
    return t.reshape(shape), hour.reshape(shape), dow.reshape(shape)
