"""What pluggable policies see and return: the one definition of the decision contexts.

The simulator and the environments hand these to policies, and :mod:`pushrl.policies.base`
re-exports them, so there is exactly one ``TimingContext``, ``ItemContext``,
``BatchDecision`` and ``Decision`` in pushrl. They live here, in the lowest layer that needs
them, because layers import downward only (the environments cannot import policies);
``ItemContext`` is defined with its one builder in :mod:`pushrl.data.item_context` and
re-exported here.

The structural types of what the simulator and the environments call are here too:
:class:`ItemDecider` (an item policy: every :class:`pushrl.policies.base.ItemPolicy`, the
simulator's catalog samplers, a VW bandit) and :class:`TimingDecider` (a timing policy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from pushrl.data.features import FeatureState
# defined in the data layer with its one builder (:mod:`pushrl.data.item_context`)
from pushrl.data.item_context import ItemContext as ItemContext


@dataclass(frozen=True)
class Decision:
    """One decision.

    Attributes:
        action: Chosen action index (timing: 0 wait / 1 send; item: index into candidates).
        pscore: Probability the policy gave ``action``.
        action_dist: Probabilities of all actions, shape ``(n_actions,)``.
    """

    action: int
    pscore: float
    action_dist: np.ndarray


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
    state: FeatureState | None = None
    sends_today: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.features.shape[0])


class ItemDecider(Protocol):
    """Anything that chooses the item of ``n`` pushes (an item policy).

    The simulator also reads two optional attributes when present:
    ``uses_candidate_features`` (False: it skips building ``candidate_features``) and
    ``probabilities(candidates, mask) -> (n, k)`` (the choice distribution without a
    context, for expected values).
    """

    def decide_batch(self, ctx: ItemContext, rng: np.random.Generator) -> BatchDecision:
        """One decision per row of ``ctx``; ``action`` indexes ``ctx.candidates``."""
        ...


class TimingDecider(Protocol):
    """Anything that decides whether to push ``n`` users now (a timing policy)."""

    def decide_batch(self, ctx: TimingContext, rng: np.random.Generator) -> BatchDecision:
        """One decision per user of ``ctx``: ``action`` 0 = wait, 1 = send."""
        ...
