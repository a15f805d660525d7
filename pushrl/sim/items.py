"""Item decisions inside the simulator: the item context and the default catalog samplers.

The engine asks an item policy (any object with ``decide_batch(ctx, rng)``, e.g. a VW bandit)
which item to push whenever a push is delivered. The default is a :class:`CatalogSampler`
(uniform, like the synthetic logging policy, or by organic popularity). Samplers draw with
the counter-based ``ctx.extra["uniform"]`` so that single and vector environments stay
identical; external policies may use ``rng`` instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pushrl.data.features import FeatureState
from pushrl.data.item_context import build_item_context as item_context
from pushrl.data.item_context import category_affinity
from pushrl.errors import ScenarioError
from pushrl.sim.contexts import BatchDecision, ItemContext
from pushrl.sim.rng import categorical

ITEM_POLICIES = ("uniform", "popular")


class CatalogSampler:
    """Draw items in proportion to fixed weights (uniform or popularity).

    Args:
        weights: ``(n_items,)`` non-negative weights.
        name: Label used in reports.
    """

    #: The sampler ignores candidate features, so the engine skips building them.
    uses_candidate_features = False

    def __init__(self, weights: np.ndarray, name: str = "uniform") -> None:
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"`weights` must be a non-negative (n_items,) vector with a "
                             f"positive sum, got shape {w.shape}")
        self.weights = w
        self.name = name

    def probabilities(self, candidates: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``(n, k)`` choice probabilities over each row's candidates."""
        w = self.weights[candidates] * mask
        return w / w.sum(axis=1, keepdims=True)

    def decide_batch(self, ctx: ItemContext, rng: np.random.Generator) -> BatchDecision:
        """Sample one candidate per row; uses ``ctx.extra["uniform"]`` when present."""
        dist = self.probabilities(ctx.candidates, ctx.mask)
        u = ctx.extra.get("uniform")
        if u is None:
            u = rng.random(dist.shape[0])
        a = categorical(np.cumsum(dist, axis=1), np.asarray(u))
        return BatchDecision(a, dist[np.arange(a.size), a], dist)


def make_sampler(kind: str, n_items: int, popularity: np.ndarray | None = None) -> CatalogSampler:
    """The scenario's default item policy: ``uniform`` or ``popular``."""
    if kind == "uniform":
        return CatalogSampler(np.ones(n_items), "uniform")
    if kind == "popular":
        if popularity is None:
            raise ScenarioError("items.policy = 'popular' needs item popularity in the "
                                "simulator artifact; refit it or use 'uniform'")
        return CatalogSampler(np.asarray(popularity, np.float64) + 1.0, "popular")
    raise ScenarioError(f"items.policy must be one of {ITEM_POLICIES}, got {kind!r}")


def build_item_context(state: FeatureState, slots: np.ndarray, raw: np.ndarray,
                       item_features: np.ndarray, item_category: np.ndarray,
                       item_feature_names: tuple[str, ...], *, candidates: np.ndarray | None,
                       with_features: bool, extra: dict[str, Any]) -> ItemContext:
    """Item context for users ``slots`` deciding now, by the one builder
    (:func:`pushrl.data.item_context.build_item_context`) with their pipeline affinity.

    Args:
        state: Pipeline state of the users.
        slots: ``(n,)`` user indices in ``state``.
        raw: ``(n, N_FEATURES)`` their raw features now.
        item_features: ``(n_items, d_item)`` catalog features.
        item_category: ``(n_items,)`` category ids.
        item_feature_names: Names of the catalog features.
        candidates: ``(n, k)`` catalog indices, or None for the whole catalog.
        with_features: Build ``candidate_features`` (catalog features, then pipeline affinity);
            otherwise an empty ``(n, k, 0)`` array.
        extra: Passed through as ``ctx.extra``.
    """
    aff = category_affinity(state, slots) if with_features else None
    return item_context(raw, item_features, item_category, item_feature_names,
                        category_affinity=aff, candidates=candidates,
                        with_candidate_features=with_features, extra=extra)
