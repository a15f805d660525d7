"""The one delay-decision context (``pushrl/TriggerDelay-v1``): what a delay policy sees when
a trigger is created.

A delay decision is an item-style decision over the kind's arms (``delays_h`` then drop),
so it reuses :class:`~pushrl.data.item_context.ItemContext` and every item policy machinery
(VW ``cb_explore_adf`` via :class:`~pushrl.policies.vw.VWItemPolicy`, OPE over candidates):

* ``shared`` = :func:`~pushrl.data.features.encode` of the user's pipeline features at the
  event's bucket (``FeatureState.features(user, bucket_of(event_ts))``: events before the
  bucket only), then the trigger columns :data:`TRIGGER_NAMES`: the kind one-hot, the log
  price ratio of the item (vs the catalog median; 0 without item), the user's pipeline
  affinity to the item's category (:meth:`FeatureState.affinity`, the item context's
  ``affinity``; 1 without item) as a log, and the local hour of the event (sin/cos).
* ``candidates`` = arm indices ``0 .. k-1`` (the arms are the "catalog", ids
  :func:`arm_ids`); ``candidate_features`` = the static arm columns :data:`ARM_STATIC`
  (log1p of the delay, drop flag) then the per-round columns :data:`ARM_DYNAMIC`: the log
  relative activity of the user at the local hour-of-week the arm would send at
  (:func:`~pushrl.sim.trigger_send.send_times`, quiet hours skipped; from
  :meth:`FeatureState.hour_of_week_profile`), the days until that send, and whether quiet
  hours pushed it back (0 for drop).

The simulator, the log's trigger rounds (:mod:`pushrl.policies.delay_data`) and a server
call :func:`delay_context`, so a policy sees the same columns wherever it runs.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from pushrl.data.features import ENCODED_NAMES, FeatureSpec, FeatureState, ItemCatalog, encode
from pushrl.data.item_context import ItemContext
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.triggers import KINDS, TriggerConfig
from pushrl.sim.trigger_send import clock_table, send_clock, send_clock_one, table_span
from pushrl.units import HOUR, bucket_of

CONTEXT_ID = "pushrl/TriggerDelay-v1"
TRIGGER_NAMES: tuple[str, ...] = (
    *(f"kind={k.value}" for k in KINDS), "log_price_ratio", "log_item_affinity",
    "event_hour_sin", "event_hour_cos")
ARM_STATIC: tuple[str, ...] = ("log1p_delay", "drop")
ARM_DYNAMIC: tuple[str, ...] = ("log_rel_activity_at_send", "days_to_send", "quiet_shift")
SHARED_NAMES: tuple[str, ...] = (*ENCODED_NAMES, *TRIGGER_NAMES)
CANDIDATE_NAMES: tuple[str, ...] = (*ARM_STATIC, *ARM_DYNAMIC)


#: Kind values in the order of the one-hot columns.
_KIND_VALUES = np.array([kd.value for kd in KINDS])


@lru_cache(maxsize=32)
def _arm_table(arms: tuple[int | None, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(delays (k_live,) int64, live (k,) bool, arm_static(arms))`` (read-only, cached:
    every decision over the same arms reuses them)."""
    out = (np.array([a for a in arms if a is not None], np.int64),
           np.array([a is not None for a in arms]), arm_static(arms))
    for x in out:
        x.flags.writeable = False
    return out


def common_arms(config: TriggerConfig) -> tuple[int | None, ...]:
    """The arms every enabled kind shares (a delay policy decides over one arm set).

    Raises:
        ValueError: enabled kinds have different ``delays_h``.
    """
    arms = {config[k].arms for k in config.enabled}
    if len(arms) != 1:
        raise ValueError("delay policies need the same delays_h for every enabled trigger "
                         f"kind, got {sorted(map(str, arms))}; set one list in [triggers.*]")
    return arms.pop()


def arm_ids(arms: tuple[int | None, ...]) -> tuple[str, ...]:
    """``("d0", "d1", ..., "drop")``."""
    return tuple("drop" if a is None else f"d{a}" for a in arms)


def arm_static(arms: tuple[int | None, ...]) -> np.ndarray:
    """``(k, len(ARM_STATIC))`` static arm features."""
    return np.array([[0.0, 1.0] if a is None else [np.log1p(a), 0.0] for a in arms])


def item_columns(items: pd.DataFrame, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Per catalog item: the category index (-1 unknown) and ``log(price / median price)``
    (0 without a ``price`` column), each ``(n_items,)``: the item inputs of
    :func:`delay_context` (index them by the trigger's catalog item; -1 / 0 for none)."""
    cat = ItemCatalog(items, spec).category.astype(np.int64)
    if "price" not in items:
        return cat, np.zeros(len(items))
    price = np.maximum(items["price"].to_numpy(float), 1e-6)
    return cat, np.log(price / np.median(price))


def delay_context(state: FeatureState, users: np.ndarray, event_ts: np.ndarray,
                  kinds: np.ndarray, item_category: np.ndarray, log_price_ratio: np.ndarray,
                  arms: tuple[int | None, ...], guardrails: Guardrails, *,
                  features: np.ndarray | None = None,
                  how_profile: np.ndarray | None = None) -> ItemContext:
    """Contexts of ``n`` trigger decisions.

    Args:
        state: The users' feature state at (or replayed to) the events' buckets.
        users: ``(n,)`` user indices in ``state``.
        event_ts: ``(n,)`` unix seconds of the trigger events.
        kinds: ``(n,)`` kind names (``TriggerKind`` values).
        item_category: ``(n,)`` category index of the item (-1 = no item / unknown).
        log_price_ratio: ``(n,)`` ``log(price / median catalog price)`` (0 = no item).
        arms: The arms (:func:`common_arms`).
        guardrails: Quiet hours for the send times.
        features: ``(n, N_FEATURES)`` raw features already computed point-in-time (log
            replay); None = ``state.features(users, bucket_of(event_ts))``.
        how_profile: ``(n, 168)`` hour-of-week profiles at decision time (log replay);
            None = ``state.hour_of_week_profile(users)``.
    """
    u = np.asarray(users, np.int64)
    ts = np.asarray(event_ts, np.int64)
    n, k = u.size, len(arms)
    if n == 1 and how_profile is None:  # a server's single decision: python over the arms
        return _delay_context_one(state, int(u[0]), int(ts[0]), str(np.asarray(kinds)[0]),
                                  int(np.asarray(item_category)[0]),
                                  float(np.asarray(log_price_ratio)[0]), arms, guardrails,
                                  features)
    if features is None:  # one offset lookup for the event's hour and the features' clock
        (hour, _, _), (b_hour, b_dow, _) = state.decision_clock(u, ts)
        raw = state.features(u, bucket_of(ts), clock=(b_hour, b_dow))
    else:
        raw = features
        hour = state.local_time_at(u, ts)[0]
    enc = encode(raw)
    e, nk = enc.shape[1], len(KINDS)
    shared = np.empty((n, len(SHARED_NAMES)))
    shared[:, :e] = enc
    shared[:, e:e + nk] = np.asarray(kinds).astype(str)[:, None] == _KIND_VALUES
    shared[:, e + nk] = log_price_ratio
    cat = np.asarray(item_category, np.int64)
    aff = (np.where(cat >= 0, state.affinity(u, np.maximum(cat, 0)), 1.0) if (cat >= 0).any()
           else np.ones(n))
    shared[:, e + nk + 1] = np.log(np.maximum(aff, 1e-3))
    ang = 2 * np.pi * hour / 24
    shared[:, e + nk + 2] = np.sin(ang)
    shared[:, e + nk + 3] = np.cos(ang)
    delays, live, static = _arm_table(arms)
    tsend, hr, dow = send_clock(state, u, ts, delays, guardrails)
    prof = state.hour_of_week_profile(u) if how_profile is None else how_profile
    share = prof[np.arange(n)[:, None], dow * 24 + hr]
    due = -(-(ts[:, None] + delays[None, :] * HOUR) // HOUR) * HOUR
    cand = np.zeros((n, k, len(CANDIDATE_NAMES)))
    cand[:, :, :len(ARM_STATIC)] = static
    s0 = len(ARM_STATIC)
    cand[:, live, s0] = np.log(np.maximum(share * 168.0, 1e-3))
    cand[:, live, s0 + 1] = (tsend - ts[:, None]) / (24 * HOUR)
    cand[:, live, s0 + 2] = tsend > due
    return ItemContext(shared=shared, candidates=np.tile(np.arange(k), (n, 1)),
                       mask=np.ones((n, k), bool), candidate_features=cand,
                       shared_names=SHARED_NAMES, candidate_feature_names=CANDIDATE_NAMES,
                       extra={"send_ts": tsend})


#: ``sin`` / ``cos`` of ``2 pi h / 24`` for local hours ``h`` 0-23, computed as the batch
#: path computes them (the single-row path reads them; equal: tests/sim/test_trigger_context).
_HOUR_SIN: list[float] = np.sin(2 * np.pi * np.arange(24, dtype=np.int64) / 24).tolist()
_HOUR_COS: list[float] = np.cos(2 * np.pi * np.arange(24, dtype=np.int64) / 24).tolist()
_KIND_LIST: tuple[str, ...] = tuple(_KIND_VALUES.tolist())


@lru_cache(maxsize=32)
def _arm_rows(arms: tuple[int | None, ...]) -> tuple[tuple[tuple[float, ...], ...],
                                                     tuple[int, ...]]:
    """``(arm_static(arms) rows, the live arms' delays)`` as python values."""
    return (tuple(map(tuple, arm_static(arms).tolist())),
            tuple(a for a in arms if a is not None))


def _delay_context_one(state: FeatureState, user: int, ts: int, kind: str, category: int,
                       log_price_ratio: float, arms: tuple[int | None, ...],
                       guardrails: Guardrails, features: np.ndarray | None) -> ItemContext:
    """:func:`delay_context` of one trigger (``how_profile`` None): the same values (byte for
    byte: tests/sim/test_trigger_context.py) with the trigger and arm columns computed in
    python (the pipeline's features, affinity and profile are read through the one
    definition, :class:`FeatureState`; the local clock from a cached
    :class:`~pushrl.sim.trigger_send.ClockTable` of the user's zone)."""
    u = np.array([user], np.int64)
    static, delays = _arm_rows(arms)
    clock = clock_table(state, user, ts // HOUR, table_span(delays))
    h = clock.hour_at(ts)
    if h is None:  # the zone changes offset inside this hour: the exact clock
        h = int(state.local_time_at(u, np.array([ts], np.int64))[0][0])
    if features is None:
        features = state.features(u, np.array([ts // HOUR], np.int64),
                                  clock=(np.array(clock.hour[:1], np.int64),
                                         np.array(clock.dow[:1], np.int64)))
    row = encode(features)[0].tolist()
    row += [float(kind == k) for k in _KIND_LIST]
    aff = 0.0  # log of the affinity 1 of "no item"
    if category >= 0:
        aff = float(np.log(np.maximum(state.affinity(u, np.array([category], np.int64)),
                                      1e-3))[0])
    row += [log_price_ratio, aff, _HOUR_SIN[h], _HOUR_COS[h]]
    tsend, hr, dow = send_clock_one(state, user, ts, delays, guardrails, clock)
    prof = state.hour_of_week_profile(u)[0]
    act = np.log(np.maximum(prof[[d * 24 + x for d, x in zip(dow, hr, strict=True)]] * 168.0,
                            1e-3)).tolist()
    due0 = -(-ts // HOUR)
    cand, j = [], 0
    for a, st in zip(arms, static, strict=True):
        if a is None:  # the drop arm: no send
            cand.append([*st, 0.0, 0.0, 0.0])
            continue
        x = tsend[j]
        cand.append([*st, act[j], (x - ts) / (24 * HOUR), float(x > (due0 + a) * HOUR)])
        j += 1
    k = len(arms)
    return ItemContext(shared=np.array([row]), candidates=np.arange(k)[None],
                       mask=np.ones((1, k), bool), candidate_features=np.array([cand]),
                       shared_names=SHARED_NAMES, candidate_feature_names=CANDIDATE_NAMES,
                       extra={"send_ts": np.array([tsend], np.int64)})
