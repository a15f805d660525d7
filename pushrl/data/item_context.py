"""The one item context: what an item policy sees, built in one place.

The simulator (timing engine and item rounds, :mod:`pushrl.sim.items`, the OBD world
:mod:`pushrl.sim.obd`), bandit training and OPE on logs
(:func:`pushrl.policies.item_data.make_context`) and the server all call
:func:`build_item_context`, so a policy sees the same columns wherever it runs. It sits in the
data layer because every one of them needs it.

Column vocabulary:

* ``shared`` = :func:`~pushrl.data.features.encode` of the point-in-time pipeline features
  (:data:`~pushrl.data.features.ENCODED_NAMES`), then the logged context columns: numeric
  ``ctx_*`` as is, string ``ctx_*`` one-hot named ``ctx_<name>=<value>``.
* ``candidate_features`` = the catalog features of each candidate, then ``affinity`` (the
  pipeline's user-category affinity at decision time, 1.0 for the population average, an
  unknown category or a user without activity), then each logged ``cand_*`` column as is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pushrl.data.features import (
    ENCODED_NAMES,
    HOURS_CAP,
    N_ENCODED,
    TEMPLATE_RECENCY_NAMES,
    F,
    FeatureState,
    encode,
    encode_template_recency,
)

#: Name of the pipeline's user-category affinity among the candidate features.
AFFINITY = "affinity"


@dataclass
class ItemContext:
    """``n`` item decisions over ``k`` candidates (see :class:`pushrl.policies.base.ItemContext`).

    Attributes:
        shared: ``(n, d_shared)`` encoded user features.
        candidates: ``(n, k)`` catalog indices of the candidates.
        mask: ``(n, k)`` bool, True for real candidates.
        candidate_features: ``(n, k, d_item)`` catalog features then user-item affinity
            (``(n, k, 0)`` when the item policy declares ``uses_candidate_features = False``).
        shared_names: Names of the ``shared`` columns.
        candidate_feature_names: Names of the ``candidate_features`` columns.
        position: ``(n,)`` slot index for multi-slot logs, or None.
        extra: ``uniform`` ``(n,)`` counter-based uniforms for this decision (samplers that
            use them keep single and vector environments identical), ``population_index``,
            ``expected_reward`` ``(n, k)`` when the world can compute it.
    """

    shared: np.ndarray
    candidates: np.ndarray
    mask: np.ndarray
    candidate_features: np.ndarray
    shared_names: tuple[str, ...] = ()
    candidate_feature_names: tuple[str, ...] = ()
    position: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.shared.shape[0])


def category_affinity(state: FeatureState, users: np.ndarray) -> np.ndarray:
    """``(n, n_categories)`` affinity of ``users`` to every category, committed activity only
    (:meth:`~pushrl.data.features.FeatureState.affinity`)."""
    u = np.asarray(users, np.int64)
    ncat = state.spec.n_categories
    return state.affinity(u, np.broadcast_to(np.arange(ncat), (u.size, ncat)))


def candidates_all(candidates: np.ndarray, n_items: int) -> bool:
    """True when every round's candidates are the whole catalog in catalog order."""
    c = np.asarray(candidates)
    return c.shape[1] == n_items and bool((c == np.arange(n_items)).all())


def build_item_context(features: np.ndarray, item_features: np.ndarray,
                       item_category: np.ndarray, item_feature_names: Sequence[str], *,
                       category_affinity: np.ndarray | None = None,
                       candidates: np.ndarray | None = None, mask: np.ndarray | None = None,
                       logged: np.ndarray | None = None, logged_names: Sequence[str] = (),
                       cand_values: Mapping[str, np.ndarray] | None = None,
                       cand_names: Sequence[str] = (), position: np.ndarray | None = None,
                       with_candidate_features: bool = True,
                       extra: dict[str, Any] | None = None) -> ItemContext:
    """The item context of ``n`` decisions (see the module docstring for the columns).

    Args:
        features: ``(n, N_FEATURES)`` raw pipeline features at decision time.
        item_features: ``(n_items, d_item)`` catalog features.
        item_category: ``(n_items,)`` category id of each item (-1 = none).
        item_feature_names: Names of the catalog features.
        category_affinity: ``(n, n_categories)`` user-category affinity at decision time
            (:func:`category_affinity`); None = 1.0 everywhere.
        candidates: ``(n, k)`` catalog indices; None = every catalog item.
        mask: ``(n, k)`` True for real candidates; None = all.
        logged: ``(n, len(logged_names))`` encoded logged context columns, or None.
        logged_names: Their names (``ctx_<name>`` or ``ctx_<name>=<value>``).
        cand_values: Logged ``cand_*`` values by column, each ``(n, k)`` aligned with
            ``candidates``; a missing column is 0.
        cand_names: The ``cand_*`` columns, in order.
        position: ``(n,)`` slot index, or None.
        with_candidate_features: False gives an empty ``(n, k, 0)`` ``candidate_features``
            (for policies that declare ``uses_candidate_features = False``).
        extra: Passed through as ``ctx.extra``.
    """
    raw = np.asarray(features, np.float32)
    n = raw.shape[0]
    n_items = item_features.shape[0]
    if logged is None:
        logged = np.zeros((n, len(logged_names)), np.float32)
    if logged.shape != (n, len(logged_names)):
        raise ValueError(f"`logged` must have shape ({n}, {len(logged_names)}) for "
                         f"`logged_names`, got {logged.shape}")
    shared = np.concatenate([encode(raw), np.asarray(logged, np.float32)], axis=1)
    if candidates is None:
        candidates = np.broadcast_to(np.arange(n_items), (n, n_items))
    cand = np.asarray(candidates, np.int64)
    k = cand.shape[1]
    m = np.ones((n, k), bool) if mask is None else np.asarray(mask, bool)
    names = (*item_feature_names, AFFINITY, *cand_names)
    if not with_candidate_features:
        cf = np.zeros((n, k, 0), np.float32)
    else:
        safe = np.where(m, cand, 0)
        d_cat = item_features.shape[1]
        cf = np.empty((n, k, len(names)), np.float32)
        every = candidates_all(cand, n_items)
        cf[:, :, :d_cat] = item_features[None] if every else item_features[safe]
        if category_affinity is None:
            cf[:, :, d_cat] = 1.0
        else:
            ca = np.concatenate([np.asarray(category_affinity, np.float32),
                                 np.ones((n, 1), np.float32)], axis=1)  # category -1 -> 1.0
            cats = np.asarray(item_category, np.int64)
            cf[:, :, d_cat] = (ca[:, cats] if every
                               else ca[np.arange(n)[:, None], cats[safe]])
        for j, c in enumerate(cand_names):
            v = None if cand_values is None else cand_values.get(c)
            cf[:, :, d_cat + 1 + j] = 0.0 if v is None else np.asarray(v, np.float32)
    return ItemContext(shared, cand, m, cf, (*ENCODED_NAMES, *logged_names), names,
                       None if position is None else np.asarray(position, np.int64),
                       {} if extra is None else extra)


#: Prefix of the chosen item's catalog features in a template decision's ``shared`` columns.
CHOSEN_ITEM_PREFIX = "item_"
#: Fixed edges of ``log1p(activity_7d)`` whose one-hot bins (``act7d_bin=<k>``) a template
#: decision adds to its shared columns: copy that works for light users and not for heavy ones
#: is a step in activity, which a linear learner fits from indicators far faster than from
#: the raw, uncentred ``log1p_activity_7d`` (intercept and slope nearly collinear).
ACTIVITY_BIN_EDGES: tuple[float, ...] = (1.0, 2.0, 2.5, 3.0, 3.25, 3.5, 3.75, 4.0, 4.5)
ACTIVITY_BIN_NAMES: tuple[str, ...] = tuple(f"act7d_bin={k}"
                                            for k in range(len(ACTIVITY_BIN_EDGES) + 1))


def activity_bins(features: np.ndarray) -> np.ndarray:
    """``(n, len(ACTIVITY_BIN_NAMES))`` one-hot of ``log1p(activity_7d)`` in
    :data:`ACTIVITY_BIN_EDGES` (raw pipeline ``features``, ``(n, N_FEATURES)``)."""
    return np.eye(len(ACTIVITY_BIN_NAMES), dtype=np.float32)[activity_bin(features)]


_BIN_EDGES = np.asarray(ACTIVITY_BIN_EDGES)


def activity_bin(features: np.ndarray) -> np.ndarray:
    """``(n,)`` index of the :data:`ACTIVITY_BIN_NAMES` bin of each row of raw pipeline
    ``features`` (the hot bin of :func:`activity_bins`)."""
    act = np.log1p(np.asarray(features)[:, F["activity_7d"]].astype(np.float64))
    return np.searchsorted(_BIN_EDGES, act, side="right")


_BIN_MEMO: dict[float, int] = {}


def activity_bin_one(activity_7d: float) -> int:
    """:func:`activity_bin` of one decision from its raw ``activity_7d`` (a plain float),
    cached by value (a count: few distinct values), computed by :func:`activity_bin`."""
    b = _BIN_MEMO.get(activity_7d)
    if b is None:
        if len(_BIN_MEMO) >= 4096:
            _BIN_MEMO.clear()
        row = np.zeros((1, len(F)), np.float32)
        row[0, F["activity_7d"]] = activity_7d
        b = _BIN_MEMO[activity_7d] = int(activity_bin(row)[0])
    return b


def warm_activity_bins(top: int = 1023) -> None:
    """Fill :func:`activity_bin_one`'s cache for the counts ``0..top`` with ONE
    :func:`activity_bin` call (a server binds its template scorer with it: a decision does
    not pay a miss, ~100 us, for a count seen first)."""
    rows = np.zeros((top + 1, len(F)), np.float32)
    rows[:, F["activity_7d"]] = np.arange(top + 1)
    for x, b in zip(rows[:, F["activity_7d"]].tolist(), activity_bin(rows).tolist(),
                    strict=True):
        _BIN_MEMO.setdefault(x, b)


def build_template_context(features: np.ndarray, chosen_item_features: np.ndarray,
                           item_feature_names: Sequence[str], template_features: np.ndarray,
                           template_feature_names: Sequence[str], template_hours: np.ndarray,
                           *, mask: np.ndarray | None = None,
                           extra: dict[str, Any] | None = None) -> ItemContext:
    """The context of ``n`` template decisions (the template slot after the item slot).

    The columns an item decision (:func:`build_item_context`) has, with the approved
    templates as the candidates (written by :func:`template_context_arrays`): ``shared`` =
    the encoded pipeline features, then the user's activity bin (:func:`activity_bins`) and
    the chosen item's catalog features (``item_<name>``) as logged context; ``candidate_features`` =
    the templates' static features, ``affinity`` (1.0: templates have no category), then the
    user's recency of each template (:data:`~pushrl.data.features.TEMPLATE_RECENCY_NAMES`,
    from :class:`~pushrl.data.features.TemplateRecency`).

    Args:
        features: ``(n, N_FEATURES)`` raw pipeline features at decision time.
        chosen_item_features: ``(n, d_item)`` catalog features of each decision's item.
        item_feature_names: Their names (:attr:`~pushrl.data.features.ItemCatalog.feature_names`).
        template_features: ``(n_templates, d_t)`` static template features (may be ``d_t=0``).
        template_feature_names: Their names.
        template_hours: ``(n, n_templates)`` hours since each template was last shown.
        mask: ``(n, n_templates)`` True for templates allowed in this decision; None = all.
        extra: Passed through as ``ctx.extra``.
    """
    shared, cf = template_context_arrays(features, chosen_item_features, template_features,
                                         template_hours)
    n, n_t = cf.shape[:2]
    cand = np.tile(np.arange(n_t, dtype=np.int64), (n, 1))
    m = np.ones((n, n_t), bool) if mask is None else np.asarray(mask, bool)
    return ItemContext(shared, cand, m, cf,
                       (*ENCODED_NAMES, *ACTIVITY_BIN_NAMES,
                        *(CHOSEN_ITEM_PREFIX + nm for nm in item_feature_names)),
                       (*template_feature_names, AFFINITY, *TEMPLATE_RECENCY_NAMES), None,
                       {} if extra is None else extra)



def channel_context(features: np.ndarray, chosen_item_features: np.ndarray,
                    item_feature_names: Sequence[str], hours: np.ndarray,
                    allowed: np.ndarray | None = None) -> ItemContext:
    """The context of ``n`` channel decisions (issue 17): :func:`build_template_context`
    with the arms ``none`` (arm 0: always allowed, never shown, recency capped) and the
    channels (arms ``1..C``) as the candidates, used by the policy
    (:class:`~pushrl.policies.channel_policy.ChannelArms`), the simulator
    (:mod:`pushrl.sim.channels`) and the server alike.

    Args:
        features: ``(n, N_FEATURES)`` raw pipeline features.
        chosen_item_features: ``(n, d_item)`` catalog features of each decision's item.
        item_feature_names: Their names.
        hours: ``(n, C)`` hours since the user last got a message on each channel.
        allowed: ``(n, C)`` channels allowed (opt-in and channel guardrails); None = all.
    """
    n = np.asarray(hours).shape[0]
    h = np.concatenate([np.full((n, 1), float(HOURS_CAP)), np.asarray(hours, float)], 1)
    mask = None if allowed is None else np.concatenate(
        [np.ones((n, 1), bool), np.asarray(allowed, bool)], axis=1)
    return build_template_context(features, chosen_item_features, item_feature_names,
                                  np.zeros((h.shape[1], 0), np.float32), (), h, mask=mask)

def template_context_arrays(features: np.ndarray, chosen_item_features: np.ndarray,
                            template_features: np.ndarray,
                            template_hours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The arrays of :func:`build_template_context`, with as few numpy calls as possible (the
    server decides templates per request: a fixed cost per call matters more than its size).

    It writes the columns :func:`build_item_context` writes for templates as candidates
    (proved equal in ``tests/data/test_item_context.py``): ``shared`` = ``encode`` of the
    pipeline features, the activity bins, the chosen item's features; ``candidate_features`` =
    the templates' static features, ``affinity`` 1.0, then the recency encoding.

    Returns:
        ``shared`` ``(n, N_ENCODED + n_bins + d_item)`` and ``candidate_features``
        ``(n, n_templates, d_t + 1 + len(TEMPLATE_RECENCY_NAMES))``, float32.
    """
    raw = np.asarray(features)
    item = np.asarray(chosen_item_features, np.float32)
    n = raw.shape[0]
    nb = len(ACTIVITY_BIN_NAMES)
    shared = np.zeros((n, N_ENCODED + nb + item.shape[1]), np.float32)
    shared[:, :N_ENCODED] = encode(raw)
    shared[np.arange(n), N_ENCODED + activity_bin(raw)] = 1.0
    shared[:, N_ENCODED + nb:] = item
    tf = np.asarray(template_features, np.float32)
    n_t, d_t = tf.shape
    cf = np.empty((n, n_t, d_t + 1 + len(TEMPLATE_RECENCY_NAMES)), np.float32)
    cf[:, :, :d_t] = tf
    cf[:, :, d_t] = 1.0
    cf[:, :, d_t + 1:] = encode_template_recency(template_hours)
    return shared, cf
