"""Item baselines: uniform random, most popular (from logs) and the ground-truth oracle.

* ``uniform-random``: every real candidate equally likely (the synthetic logging policy).
* ``most-popular``: each item's logged mean reward, smoothed toward the overall mean with
  ``prior_strength`` pseudo-sends: ``score_j = (sum_j + m * mean) / (sends_j + m)``. The
  distribution puts ``1 - epsilon`` on the best-scoring candidates (split evenly on ties)
  and ``epsilon`` uniformly on all real candidates; ``epsilon = 0`` (the default) is the
  deterministic policy, ``epsilon > 0`` keeps every candidate's probability positive.
* ``item-oracle``: the candidate with the highest true expected reward, read from
  ``ctx.extra["expected_reward"]`` (``(n, k)``, provided by the simulator where the world is
  known); for comparisons only.

Definitions with their default parameters live in ``policies/baselines/<name>.toml``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pushrl.data.features import FeatureSpec, ItemCatalog
from pushrl.data.io import Dataset
from pushrl.errors import ArtifactError
from pushrl.policies.base import ItemContext, ItemPolicy, Policy
from pushrl.policies.item_data import ContextEncoder, logged_item_rewards
from pushrl.rules.reward import RewardWeights

class UniformRandom(ItemPolicy):
    """Every real candidate equally likely."""

    name = "uniform-random"

    def _action_dist(self, ctx: ItemContext) -> np.ndarray:
        return np.asarray(ctx.mask, np.float64)


def _greedy(scores: np.ndarray, mask: np.ndarray, epsilon: float) -> np.ndarray:
    """``(1 - epsilon)`` on the row maxima of ``scores`` (ties split), ``epsilon`` uniform."""
    s = np.where(mask, scores, -np.inf)
    top = (s == s.max(axis=1, keepdims=True)) & mask
    greedy = top / np.maximum(top.sum(axis=1, keepdims=True), 1)
    uniform = mask / np.maximum(mask.sum(axis=1, keepdims=True), 1)
    return (1.0 - epsilon) * greedy + epsilon * uniform


class MostPopular(ItemPolicy):
    """The items with the highest smoothed logged mean reward (see module docstring).

    Args:
        scores: ``(n_items,)`` smoothed mean reward per catalog item.
        item_ids: Catalog item ids (candidate indices refer to this order).
        epsilon: Uniform exploration mass in ``[0, 1]``.
        encoder: Context columns of the catalog (lets the server map its items).
    """

    name = "most-popular"

    def __init__(self, scores: np.ndarray, item_ids: tuple[str, ...], *, epsilon: float = 0.0,
                 encoder: ContextEncoder | None = None) -> None:
        s = np.asarray(scores, np.float64)
        if s.ndim != 1 or s.size != len(item_ids):
            raise ValueError(f"`scores` must be (n_items,) = ({len(item_ids)},), got {s.shape}")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"`epsilon` must be in [0, 1], got {epsilon}")
        self.scores, self.item_ids, self.epsilon = s, tuple(item_ids), epsilon
        self.encoder = encoder

    @classmethod
    def fit(cls, ds: Dataset, *, reward: RewardWeights | str | None = None,
            prior_strength: float = 10.0, epsilon: float = 0.0) -> MostPopular:
        """Count logged sends and rewards per item of ``ds``."""
        if prior_strength < 0:
            raise ValueError(f"`prior_strength` must be >= 0, got {prior_strength}")
        spec = FeatureSpec.fit(ds)
        catalog = ItemCatalog(ds.items, spec)
        idx, r = logged_item_rewards(ds, catalog, reward)
        sends = np.bincount(idx, minlength=len(catalog)).astype(np.float64)
        total = np.bincount(idx, weights=r, minlength=len(catalog))
        mean = float(r.mean()) if r.size else 0.0
        scores = (total + prior_strength * mean) / np.maximum(sends + prior_strength, 1e-12)
        enc = ContextEncoder(spec, tuple(map(str, catalog.ids)), catalog.feature_names)
        return cls(scores, enc.item_ids, epsilon=epsilon, encoder=enc)

    def _action_dist(self, ctx: ItemContext) -> np.ndarray:
        cand = np.asarray(ctx.candidates, np.int64)
        mask = np.asarray(ctx.mask, bool)
        if (cand[mask] >= self.scores.size).any() or (cand[mask] < 0).any():
            raise ValueError(f"ctx.candidates has indices outside the policy's catalog of "
                             f"{self.scores.size} items; refit most-popular on this catalog")
        return _greedy(self.scores[np.clip(cand, 0, self.scores.size - 1)], mask, self.epsilon)

    def describe(self) -> dict[str, Any]:
        """Model-card parameters."""
        return {**super().describe(), "epsilon": self.epsilon,
                "top_items": [self.item_ids[i] for i in np.argsort(-self.scores)[:5]]}


class ItemOracle(ItemPolicy):
    """Greedy on the true expected reward ``ctx.extra["expected_reward"]`` (simulator only)."""

    name = "item-oracle"

    def _action_dist(self, ctx: ItemContext) -> np.ndarray:
        er = ctx.extra.get("expected_reward")
        if er is None:
            raise ValueError("item-oracle needs ctx.extra['expected_reward'] (n, k): only the "
                             "simulator of a known world provides it")
        return _greedy(np.asarray(er, np.float64), np.asarray(ctx.mask, bool), 0.0)


def most_popular(data: str | Path | None = None, *, reward: str | None = None,
                 prior_strength: float = 10.0, epsilon: float = 0.0) -> MostPopular:
    """Factory of ``most-popular``: fit on the pushlog directory ``data``.

    Relative paths are resolved against the current directory, the repository checkout, then
    the wheel's copy (the TOML definitions use ``simulator_data/...``; :mod:`pushrl.resources`).
    """
    from pushrl.data.validate import load_dataset

    if not data:
        raise ArtifactError("most-popular needs `data` (a pushlog directory to count sends and "
                            "rewards in); set it in policies/baselines/most-popular.toml")
    p = Path(data)
    if not p.is_absolute() and not p.exists():
        from pushrl.resources import find

        p = find(p) or p
    ds, _ = load_dataset(p, quarantine=False)
    return MostPopular.fit(ds, reward=reward or None, prior_strength=prior_strength,
                           epsilon=epsilon)


def _most_popular_default(**params: Any) -> Policy:
    # the underscore alias (the server's default name) reads the hyphenated definition
    from pushrl.policies.baselines import make_baseline

    return make_baseline("most-popular", **params)


BASELINES: dict[str, Callable[..., Policy]] = {
    "uniform-random": UniformRandom,
    "most-popular": most_popular,
    "most_popular": _most_popular_default,
    "item-oracle": ItemOracle,
}
