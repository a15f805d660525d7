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
from collections.abc import Hashable, Sequence
from dataclasses import replace
from typing import Any, ClassVar, Generic, Literal, TypeVar

import numpy as np

from pushrl.sim.contexts import BatchDecision, Decision, ItemContext, TimingContext

WAIT, SEND = 0, 1
_WAIT_ALWAYS = np.array([[True, False]])  # TimingPolicy._mask: WAIT is never masked

#: The context a policy decides on: :class:`TimingContext` or :class:`ItemContext`.
CtxT = TypeVar("CtxT", TimingContext, ItemContext)


def _sample(dist: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sample one action per row of ``dist`` (rows sum to 1), vectorised."""
    if dist.shape[1] == 2:  # timing decisions: the same sums column by column (~10x faster)
        total = dist[:, 0] + dist[:, 1]
        u2 = rng.random((dist.shape[0], 1))[:, 0] * total
        return np.minimum((u2 >= dist[:, 0]).astype(np.int64) + (u2 >= total), 1)
    cdf = np.cumsum(dist, axis=1)
    u = rng.random((dist.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((u >= cdf).sum(axis=1), dist.shape[1] - 1)


#: Up to this many rows, two-action distributions are normalised and sampled with Python
#: floats (:func:`_normalise_few`, :func:`_sample_few`): the server's passes of a few users,
#: where each numpy call costs more than the arithmetic.
FEW_ROWS = 8


def _normalise_few(dist: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """:meth:`Policy._normalise` of a few float64 two-action rows through
    :func:`normalise_two` (as an array)."""
    return np.array(normalise_two(dist.tolist(), None if mask is None else mask.tolist()),
                    np.float64)


def normalise_two(rows: Sequence[Sequence[float]], mask: Sequence[Sequence[bool]] | None
                  ) -> list[tuple[float, float]]:
    """:meth:`Policy._normalise` of a few two-action rows (doubles), row by row with Python
    floats: the same IEEE-754 double additions and divisions, so the same bits (the
    server's few-rows pass, ``tests/serve/test_engine_few.py``; ``tests/policies/
    test_policy_base.py``), including the fallback of a row with nothing allowed or a degenerate
    row (the first allowed action, probability 1)."""
    if mask is not None:
        if len(rows) != len(mask):  # (zip(strict=True)'s keyword call costs ~1.5k instructions)
            raise ValueError(f"{len(rows)} rows but {len(mask)} mask rows")
        rows = [[a if ma else 0.0, c if mc else 0.0] for (a, c), (ma, mc) in zip(rows, mask)]
    out: list[tuple[float, float]] = []
    for i, (a, c) in enumerate(rows):
        t = a + c
        if t <= 0:  # nothing allowed or degenerate: the first allowed action (as _normalise)
            out.append((0.0, 1.0) if mask is not None and not mask[i][0] and mask[i][1]
                       else (1.0, 0.0))
        else:
            out.append((a / t, c / t))
    return out


def _sample_few(dist: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_sample` of a few float64 two-action rows through :func:`sample_two` (the same
    draw: one ``rng.random((n, 1))`` call); returns the actions and their probabilities, as
    :meth:`Policy.sample` does."""
    act, p = sample_two(dist.tolist(), rng.random((dist.shape[0], 1))[:, 0].tolist())
    return np.array(act, np.int64), np.array(p, np.float64)


def sample_two(rows: Sequence[Sequence[float]], uniforms: list[float]
               ) -> tuple[list[int], list[float]]:
    """:func:`_sample` of a few two-action rows with Python floats given the rows' uniforms
    (the same comparisons of the same doubles): the actions and their probabilities."""
    if len(rows) != len(uniforms):  # (zip(strict=True)'s keyword call costs ~1.5k instructions)
        raise ValueError(f"{len(rows)} rows but {len(uniforms)} uniforms")
    act, p = [], []
    for (a, c), x in zip(rows, uniforms):
        t = a + c
        x *= t
        # min((x >= a) + (x >= t), 1) as _sample sums and caps it: 1 when either holds (the
        # same two comparisons, without three builtin calls per row)
        k = 1 if x >= a or x >= t else 0
        act.append(k)
        p.append(c if k else a)
    return act, p


def _few(dist: np.ndarray) -> bool:
    """Whether ``dist`` takes the Python-float path (a few float64 two-action rows)."""
    return (dist.ndim == 2 and dist.shape[1] == 2 and 0 < dist.shape[0] <= FEW_ROWS
            and dist.dtype == np.float64)


class Policy(ABC, Generic[CtxT]):
    """Base class: implement :meth:`_action_dist`; callers use :meth:`decide_batch`.

    Generic in its context type: :class:`TimingPolicy` is ``Policy[TimingContext]``,
    :class:`ItemPolicy` is ``Policy[ItemContext]``.

    Attributes:
        name: Registry name.
        version: Artifact version (``name@version`` in the server's log).
    """

    kind: ClassVar[Literal["item", "timing"]]
    name: str = "policy"
    version: str = "0"

    @abstractmethod
    def _action_dist(self, ctx: CtxT) -> np.ndarray:
        """Return ``(n, n_actions)`` action probabilities (rows need not be normalised)."""

    def _mask(self, ctx: CtxT) -> np.ndarray | None:
        return None

    def action_dist(self, ctx: CtxT) -> np.ndarray:
        """Normalised action probabilities after guardrails, shape ``(n, n_actions)``."""
        return self._normalise(np.asarray(self._action_dist(ctx), dtype=np.float64),
                               self._mask(ctx))

    @staticmethod
    def _normalise(dist: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """Zero the masked actions and renormalise each row (all masked or degenerate rows
        fall back to the first allowed action)."""
        if _few(dist) and (mask is None or mask.shape == dist.shape):
            return _normalise_few(dist, mask)
        if mask is not None:
            dist = np.where(mask, dist, 0.0)
        # two actions (timing): the same sum, column by column (~10x faster than .sum)
        tot = ((dist[:, 0] + dist[:, 1])[:, None] if dist.ndim == 2 and dist.shape[1] == 2
               else dist.sum(axis=1, keepdims=True))
        bad = tot[:, 0] <= 0
        if np.count_nonzero(bad):  # nothing allowed or degenerate output: fall back to the first allowed
            fallback = mask[bad] if mask is not None else np.ones_like(dist[bad], bool)
            first = np.argmax(fallback, axis=1)
            dist = dist.copy() if mask is None else dist  # never write into the caller's
            dist[bad] = 0.0
            dist[np.flatnonzero(bad), first] = 1.0
            tot = dist.sum(axis=1, keepdims=True)
        return dist / tot

    def decide_batch(self, ctx: CtxT, rng: np.random.Generator) -> BatchDecision:
        """Decide for every round of ``ctx``; randomness only from ``rng``."""
        return self.sample(self.action_dist(ctx), rng)

    @staticmethod
    def sample(dist: np.ndarray, rng: np.random.Generator) -> BatchDecision:
        """Draw one action per row of a normalised ``(n, n_actions)`` ``dist`` (what
        :meth:`decide_batch` does after :meth:`action_dist`)."""
        if _few(dist):
            return BatchDecision(*_sample_few(dist, rng), dist)
        action = _sample(dist, rng)
        return BatchDecision(action, dist[np.arange(dist.shape[0]), action], dist)

    def decide(self, ctx: CtxT, rng: np.random.Generator) -> Decision:
        """Decide for a context holding exactly one round."""
        if len(ctx) != 1:
            raise ValueError(f"decide() takes a context with 1 round, got {len(ctx)}; "
                             "use decide_batch()")
        return self.decide_batch(ctx, rng)[0]

    def describe(self) -> dict[str, Any]:
        """Parameters for the model card."""
        return {"name": self.name, "version": self.version, "kind": self.kind,
                "class": type(self).__name__}


class TimingPolicy(Policy[TimingContext]):
    """A policy over ``{WAIT, SEND}``; guardrails (``ctx.allowed``) force ``WAIT``."""

    kind = "timing"

    def _mask(self, ctx: TimingContext) -> np.ndarray:
        # (n, 2): WAIT always allowed, SEND where ctx.allowed (one broadcast op)
        return np.asarray(ctx.allowed, dtype=bool)[:, None] | _WAIT_ALWAYS

    def action_dist_unguarded(self, ctx: TimingContext) -> tuple[np.ndarray, np.ndarray]:
        """``(action_dist(ctx), dist with every slot allowed)`` from one evaluation.

        The second says what the policy wanted where a guardrail decided (the server counts
        those blocks). Policies score rows independently and ``ctx.allowed`` only masks, so
        the first equals :meth:`action_dist` exactly.

        Returns:
            Two ``(n, 2)`` float64 arrays.
        """
        allowed = np.ones(len(ctx), dtype=bool)
        # (dataclasses.replace costs as much as a small policy: the server's hot path)
        free = (TimingContext(**{**vars(ctx), "allowed": allowed}) if type(ctx) is TimingContext
                else replace(ctx, allowed=allowed))
        raw = np.asarray(self._action_dist(free), dtype=np.float64)
        return self._normalise(raw, self._mask(ctx)), self._normalise(raw, None)


class ItemPolicy(Policy[ItemContext]):
    """A policy over a context's candidates; padding candidates get no probability."""

    kind = "item"

    def _mask(self, ctx: ItemContext) -> np.ndarray:
        return np.asarray(ctx.mask, dtype=bool)

    def shared_key(self) -> Hashable | None:
        """For a policy that reads no user context (only a round's candidates and mask): a
        key that changes whenever its distribution over the same candidates may change, so
        a caller may compute that distribution once and reuse it for every such round (the
        server's few-rows pass). None (the default): rounds differ by their context."""
        return None


__all__ = ["SEND", "WAIT", "BatchDecision", "Decision", "ItemContext", "ItemPolicy", "Policy",
           "TimingContext", "TimingPolicy"]
