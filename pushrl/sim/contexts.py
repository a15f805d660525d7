"""What the simulator hands to pluggable policies: duck-typed twins of the policy contexts.

Layers import downward only, so the simulator and the environments cannot import
:mod:`pushrl.policies`. These dataclasses have exactly the fields (names and order) of
:class:`pushrl.policies.base.TimingContext`, :class:`~pushrl.policies.base.ItemContext` and
:class:`~pushrl.policies.base.BatchDecision`, so every policy's ``decide_batch(ctx, rng)``
accepts them; ``tests/sim/test_contexts.py`` fails if the two ever drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class TimingContext:
    """``n`` users at one decision slot (see :class:`pushrl.policies.base.TimingContext`).

    Attributes:
        features: ``(n, N_FEATURES)`` raw pipeline features.
        allowed: ``(n,)`` bool, False where a guardrail forbids sending now.
        user_index: ``(n,)`` slot indices into ``state``.
        bucket: UTC hour bucket of each decision, ``(n,)``.
        state: The :class:`~pushrl.data.features.FeatureState` of the users.
        sends_today: ``(n,)`` pushes already sent in the user's local day.
        extra: Simulator extras (``sim``, ``population_index``, ``true_world``, ``step``).
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


@dataclass(frozen=True)
class BatchDecision:
    """Decisions for ``n`` rounds (see :class:`pushrl.policies.base.BatchDecision`).

    Attributes:
        action: ``(n,)`` chosen action indices.
        pscore: ``(n,)`` probability of each chosen action.
        action_dist: ``(n, n_actions)`` full distributions.
    """

    action: np.ndarray
    pscore: np.ndarray
    action_dist: np.ndarray

    def __len__(self) -> int:
        return int(self.action.shape[0])
