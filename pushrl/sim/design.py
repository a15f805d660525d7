"""Design matrices of the simulator's response models, built only from the feature pipeline.

The same functions build the rows at fitting time (from :func:`~pushrl.data.features.replay`)
and at simulation time (from the simulator's :class:`~pushrl.data.features.FeatureState`), so
a fitted coefficient always meets the feature it was fitted on.

================  ===================================================================
component         design
================  ===================================================================
open              ``encode(raw)`` (local hour sin/cos, weekend, hours since push, sends
                  24 h / 7 d, opens 7 d, log activity at hour, engagement, log1p
                  activity 7 d), ``log_affinity`` of the pushed item and
                  ``log_pop_activity_at_hour``: the log of the population's relative
                  activity at the user's local hour of week (``168 * spec.prior_how``; the
                  user's own ``activity_at_hour`` is a noisy estimate from few events);
                  since the 2nd refit also ``log_user_rel_activity``: the simulated user's
                  own latent rhythm (:func:`log_user_relative_activity`)
click             ``log_affinity``, ``engagement``, item catalog features
convert           item catalog features
unsubscribe       ``sends_24h``, ``sends_7d`` (/7), ``engagement``, log hours since push;
                  since the hinge refit also ``sends_7d_above_K`` = ``max(sends_7d - K,
                  0) / 7`` at knots ``K`` from the logged volume (:func:`volume_knots`):
                  a piecewise-linear dose-response that can bend up (thresholds) or
                  flatten (saturation), shrunk by the fit's cross-validated L2
channel           open and unsubscribe, when the log has several channels (issue 17):
                  one indicator ``channel=NAME`` per channel but the reference (``push``
                  when logged, else the most frequent), appended last; a send without a
                  channel is the reference (:func:`channel_levels`, :func:`channel_design`)
================  ===================================================================
"""

from __future__ import annotations

import numpy as np

from pushrl.data.features import ENCODED_NAMES, F, encode, weekpart_means

OPEN_NAMES: tuple[str, ...] = (*ENCODED_NAMES, "log_affinity", "log_pop_activity_at_hour")
#: Open-model column of the user's latent relative activity (optional: older simulators lack it).
USER_REL_NAME = "log_user_rel_activity"
UNSUB_NAMES: tuple[str, ...] = ("sends_24h", "sends_7d", "engagement", "log_hours_since_push")
#: Prefix of the unsubscribe model's hinge columns ``max(sends_7d - K, 0) / 7``.
HINGE_PREFIX = "sends_7d_above_"
#: Quantiles of the logged ``sends_7d`` (over sends) that place the hinge knots.
KNOT_QUANTILES: tuple[float, ...] = (0.5, 0.75, 0.9)
#: Design columns scaled by the ``fatigue_multiplier`` what-if knob (and every hinge column).
FATIGUE_COLUMNS: tuple[str, ...] = ("sends_24h", "sends_7d")
_ENC = {n: i for i, n in enumerate(ENCODED_NAMES)}


def volume_knots(sends_7d: np.ndarray) -> tuple[float, ...]:
    """Hinge knots of the unsubscribe dose-response: the distinct positive integers nearest
    the :data:`KNOT_QUANTILES` of ``sends_7d`` ``(n,)`` (the logged sends' 7-day volume), so
    every hinge has data on both sides; placed by the data, not tuned on any world."""
    s = np.asarray(sends_7d, np.float64)
    if not s.size:
        return ()
    q = np.rint(np.quantile(s, KNOT_QUANTILES))
    return tuple(float(k) for k in np.unique(q[(q > 0) & (q < s.max())]))


def unsub_names(knots: tuple[float, ...] = ()) -> tuple[str, ...]:
    """Unsubscribe-model column names with hinge ``knots``."""
    return (*UNSUB_NAMES, *(f"{HINGE_PREFIX}{k:g}" for k in knots))


def _log_aff(aff: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(aff, dtype=np.float64), 1e-3))


def log_population_activity(prior_how: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """``(168,)`` log relative activity of the population per local hour of week."""
    return np.log(np.maximum(168.0 * np.asarray(prior_how, dtype=np.float64), 1e-6))


def log_user_relative_activity(rate_how: np.ndarray) -> np.ndarray:
    """Day-pooled log relative activity of each user, ``(n, 168)``.

    ``rate_how`` ``(n, 168)`` is the fitted rhythm (events per hour at each local hour of
    week, :class:`~pushrl.sim.population.Population`, from the pipeline's lifetime
    hour-of-week counts). Each hour of week gets the log of the user's mean rate at that
    local hour over weekdays (Mon-Fri) or weekend days, over the user's weekly mean rate.

    Why a latent and not a point-in-time feature: the open model's timing covariate should be
    the user's *rhythm*, as in the synthetic truth (``open_activity * log rel_activity``). The
    pipeline's ``activity_at_hour`` measures it from a few events (correlation ~0.35 with the
    truth on the logged sends), so its fitted coefficient is attenuated (0.195 vs the truth's
    0.7) and a simulator built on it under-represents timing. The full-log rhythm correlates
    ~0.84 with the truth and its coefficient fits at ~0.65. Organic activity does not include
    opens, so the covariate does not leak the outcome.
    """
    r = np.maximum(np.asarray(rate_how, np.float64), 1e-9).reshape(-1, 7, 24)
    rel = weekpart_means(r) / r.mean(axis=(1, 2))[:, None, None]  # (n, 2, 24)
    return np.log(rel[:, [0, 0, 0, 0, 0, 1, 1]].reshape(-1, 168))


def open_design(raw: np.ndarray, affinity: np.ndarray, log_pop_how: np.ndarray,
                log_user_rel: np.ndarray | None = None) -> np.ndarray:
    """Open-model rows, shape ``(n, len(OPEN_NAMES))`` (+1 with ``log_user_rel``).

    Args:
        raw: ``(n, N_FEATURES)`` raw pipeline features at the send.
        affinity: ``(n,)`` pipeline affinity of the pushed item.
        log_pop_how: ``(168,)`` from :func:`log_population_activity`.
        log_user_rel: ``(n, 168)`` rows of :func:`log_user_relative_activity` for the users
            of ``raw`` (column :data:`USER_REL_NAME`); None for the older design.
    """
    how = raw[:, F["local_dow"]].astype(np.int64) * 24 + raw[:, F["local_hour"]].astype(np.int64)
    cols = [encode(raw).astype(np.float64), _log_aff(affinity)[:, None], log_pop_how[how][:, None]]
    if log_user_rel is not None:
        cols.append(np.asarray(log_user_rel)[np.arange(how.size), how][:, None])
    return np.concatenate(cols, axis=1)


def unsub_design(raw: np.ndarray, names: tuple[str, ...] = UNSUB_NAMES) -> np.ndarray:
    """Unsubscribe-hazard rows, shape ``(n, len(names))`` (:func:`unsub_names`)."""
    enc = encode(raw).astype(np.float64)
    base = enc[:, [_ENC["sends_24h"], _ENC["sends_7d"], _ENC["engagement"],
                   _ENC["log_hours_since_push"]]]
    hinges = [float(n[len(HINGE_PREFIX):]) for n in names[len(UNSUB_NAMES):]
              if n.startswith(HINGE_PREFIX)]
    if not hinges:
        return base
    s7 = np.asarray(raw[:, F["sends_7d"]], np.float64)[:, None]
    return np.concatenate([base, np.maximum(s7 - np.asarray(hinges)[None, :], 0.0) / 7.0],
                          axis=1)


def click_names(item_names: tuple[str, ...]) -> tuple[str, ...]:
    """Click-model column names for an item catalog's feature names."""
    return ("log_affinity", "engagement", *item_names)


def click_design(raw: np.ndarray, affinity: np.ndarray, item_features: np.ndarray) -> np.ndarray:
    """Click-given-open rows, shape ``(n, 2 + d_item)``.

    Args:
        raw: ``(n, N_FEATURES)`` raw features at the send.
        affinity: ``(n,)`` affinity of the pushed item.
        item_features: ``(n, d_item)`` catalog features of the pushed item.
    """
    return np.concatenate([_log_aff(affinity)[:, None],
                           np.asarray(raw[:, 7], np.float64)[:, None],
                           np.asarray(item_features, np.float64)], axis=1)


def convert_design(item_features: np.ndarray) -> np.ndarray:
    """Convert-given-click rows, shape ``(n, d_item)``."""
    return np.asarray(item_features, dtype=np.float64)


def columns(names: tuple[str, ...], wanted: tuple[str, ...]) -> list[int]:
    """Indices of ``wanted`` columns present in ``names``."""
    return [i for i, n in enumerate(names) if n in wanted]


def fatigue_columns(names: tuple[str, ...]) -> list[int]:
    """Indices of the volume columns the ``fatigue_multiplier`` scales: :data:`FATIGUE_COLUMNS`
    and every hinge of ``sends_7d``."""
    return [i for i, n in enumerate(names)
            if n in FATIGUE_COLUMNS or n.startswith(HINGE_PREFIX)]


#: Prefix of the channel indicator columns of the open and unsubscribe models.
CHANNEL_PREFIX = "channel="


def channel_levels(channel: np.ndarray) -> tuple[str, ...]:
    """Channels of the sent rows ``(n,)`` (None/NaN/"" = none), reference first (``push``
    when present, else the most frequent; the rest sorted); ``()`` for fewer than two."""
    c = np.asarray([x for x in np.asarray(channel, dtype=object).tolist()
                    if isinstance(x, str) and x], dtype=object)
    if c.size == 0:
        return ()
    names, counts = np.unique(c.astype(str), return_counts=True)
    if names.size < 2:
        return ()
    ref = "push" if "push" in names else str(names[np.argmax(counts)])
    return (ref, *sorted(str(n) for n in names if n != ref))


def channel_names(levels: tuple[str, ...]) -> tuple[str, ...]:
    """Indicator column names of :func:`channel_levels` (the reference has none)."""
    return tuple(CHANNEL_PREFIX + c for c in levels[1:])


def channel_columns(names: tuple[str, ...]) -> tuple[str, ...]:
    """The channel indicator names of a fitted model's ``names`` (in order)."""
    return tuple(n for n in names if n.startswith(CHANNEL_PREFIX))


def channel_design(channel: np.ndarray | None, names: tuple[str, ...], n: int) -> np.ndarray:
    """``(n, len(names))`` one-hot rows of ``channel`` ``(n,)`` names for the indicator
    ``names``; None (or the reference / an unknown channel) = all zeros."""
    out = np.zeros((n, len(names)))
    if channel is None or not names:
        return out
    c = np.asarray(channel, dtype=object)
    for j, nm in enumerate(names):
        out[:, j] = c == nm[len(CHANNEL_PREFIX):]
    return out
