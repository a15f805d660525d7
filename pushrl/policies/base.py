"""The one policy interface of pushrl.

Every policy (VW item bandits, PPO timing, heuristics, oracles) implements a single hook,
``_action_dist(ctx) -> (n, n_actions)`` probabilities. The public methods do the bookkeeping:
they apply the guardrail mask, renormalise, sample with an explicit
``np.random.Generator`` and return the chosen action *with its probability* (``pscore``) and
the whole distribution (``action_dist``), which OPE and the server's log need.

Timing actions are ``WAIT = 0`` and ``SEND = 1``. Item actions index the context's candidates.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

WAIT, SEND = 0, 1


@dataclass(frozen=True)
class Decision:
    """One decision.

    Attributes:
        action: Chosen action index (timing: 0 wait / 1 send; item: index into candidates).
        pscore: Probability the policy gave ``action``.
        action_dist: Probabilities of all actions, shape ``(n_actions,)``.
        item_id: Chosen item id for item policies.
        reason: Short machine-readable reason (e.g. ``"policy"``, ``"guardrail:quiet_hours"``).
    """

    action: int
    pscore: float
    action_dist: np.ndarray
    item_id: str | None = None
    reason: str = "policy"


@dataclass(frozen=True)
class BatchDecision:
    """Decisions for ``n`` rounds.

    Attributes:
        action: ``(n,)`` chosen action indices.
        pscore: ``(n,)`` probability of each chosen action.
        action_dist: ``(n, n_actions)`` full distributions (zero on masked actions).
    """

    action: np.ndarray
    pscore: np.ndarray
    action_dist: np.ndarray

    def __len__(self) -> int:
        return int(self.action.shape[0])

    def __getitem__(self, i: int) -> Decision:
        return Decision(int(self.action[i]), float(self.pscore[i]), self.action_dist[i])


@dataclass
class TimingContext:
    """What a timing policy sees for ``n`` users at one decision slot.

    Attributes:
        features: ``(n, N_FEATURES)`` raw pipeline features (:data:`FEATURE_NAMES`).
        allowed: ``(n,)`` bool, False where a guardrail forbids sending now.
        user_index: ``(n,)`` user indices into ``state``.
        bucket: UTC hour bucket of the decision (scalar or ``(n,)``).
        state: The :class:`~pushrl.data.features.FeatureState` the features came from
            (heuristics read e.g. the hour-of-week activity profile from it).
        sends_today: ``(n,)`` pushes already sent today (local day), for daily caps.
        extra: Anything an environment wants to pass along (e.g. ground truth for oracles).
    """

    features: np.ndarray
    allowed: np.ndarray
    user_index: np.ndarray | None = None
    bucket: int | np.ndarray = 0
    state: Any = None
    sends_today: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.features.shape[0])


@dataclass
class ItemContext:
    """What an item policy sees for ``n`` rounds, each with up to ``k`` candidates.

    Attributes:
        shared: ``(n, d_shared)`` encoded user features (:func:`~pushrl.data.features.encode`),
            possibly followed by logged context features.
        candidates: ``(n, k)`` catalog indices of the candidates (padding where ``mask`` is
            False).
        mask: ``(n, k)`` bool, True for real candidates.
        candidate_features: ``(n, k, d_item)`` per-candidate features (catalog features and
            user-item affinity).
        shared_names: Names of the ``shared`` columns.
        candidate_feature_names: Names of the ``candidate_features`` columns.
        position: ``(n,)`` slot index for multi-slot logs, or None.
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


def _sample(dist: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sample one action per row of ``dist`` (rows sum to 1), vectorised."""
    cdf = np.cumsum(dist, axis=1)
    u = rng.random((dist.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((u >= cdf).sum(axis=1), dist.shape[1] - 1)


class Policy(ABC):
    """Base class: implement :meth:`_action_dist`; callers use :meth:`decide_batch`.

    Attributes:
        name: Registry name.
        version: Artifact version (``name@version`` in the server's log).
    """

    kind: ClassVar[Literal["item", "timing"]]
    name: str = "policy"
    version: str = "0"

    @abstractmethod
    def _action_dist(self, ctx: Any) -> np.ndarray:
        """Return ``(n, n_actions)`` action probabilities (rows need not be normalised)."""

    def _mask(self, ctx: Any) -> np.ndarray | None:
        return None

    def action_dist(self, ctx: Any) -> np.ndarray:
        """Normalised action probabilities after guardrails, shape ``(n, n_actions)``."""
        dist = np.asarray(self._action_dist(ctx), dtype=np.float64)
        mask = self._mask(ctx)
        if mask is not None:
            dist = np.where(mask, dist, 0.0)
        tot = dist.sum(axis=1, keepdims=True)
        bad = tot[:, 0] <= 0
        if bad.any():  # nothing allowed or degenerate output: fall back to the first allowed
            fallback = mask[bad] if mask is not None else np.ones_like(dist[bad], bool)
            first = np.argmax(fallback, axis=1)
            dist[bad] = 0.0
            dist[np.flatnonzero(bad), first] = 1.0
            tot = dist.sum(axis=1, keepdims=True)
        return dist / tot

    def decide_batch(self, ctx: Any, rng: np.random.Generator) -> BatchDecision:
        """Decide for every round of ``ctx``; randomness only from ``rng``."""
        dist = self.action_dist(ctx)
        action = _sample(dist, rng)
        return BatchDecision(action, dist[np.arange(dist.shape[0]), action], dist)

    def decide(self, ctx: Any, rng: np.random.Generator) -> Decision:
        """Decide for a context holding exactly one round."""
        if len(ctx) != 1:
            raise ValueError(f"decide() takes a context with 1 round, got {len(ctx)}; "
                             "use decide_batch()")
        return self.decide_batch(ctx, rng)[0]

    def describe(self) -> dict[str, Any]:
        """Parameters for the model card."""
        return {"name": self.name, "version": self.version, "kind": self.kind,
                "class": type(self).__name__}


class TimingPolicy(Policy):
    """A policy over ``{WAIT, SEND}``; guardrails (``ctx.allowed``) force ``WAIT``."""

    kind = "timing"

    def _mask(self, ctx: TimingContext) -> np.ndarray:
        m = np.ones((len(ctx), 2), dtype=bool)
        m[:, SEND] = np.asarray(ctx.allowed, dtype=bool)
        return m


class ItemPolicy(Policy):
    """A policy over a context's candidates; padding candidates get no probability."""

    kind = "item"

    def _mask(self, ctx: ItemContext) -> np.ndarray:
        return np.asarray(ctx.mask, dtype=bool)
