"""Logging policies of the synthetic worlds (who gets a push at a slot, and which item).

Every logger returns, for the users considered at a slot, the send decision, the item, the
joint propensity ``pscore`` of the logged action and the send propensity ``pscore_send``, so
that the logs support off-policy evaluation whatever the logger's shape:

* ``uniform`` (the default world's): send ~ Bernoulli(``p_send[user]``), item uniform.
* ``eps-greedy``: around a heuristic. The send probability is ``logger_send_high`` at the
  user's most active local hour seen so far in the activity log (19:00 before any session)
  and ``p_send[user]`` elsewhere; the item is the best clicked-per-send item so far with
  probability ``1 - logger_epsilon``, else uniform.
* ``thompson``: send ~ Bernoulli(``p_send[user]``); the item by Thompson sampling over a
  Beta(clicks + 1, non-clicks + 1) posterior per item, pooled over users. The item
  distribution of a slot is estimated once with ``_TS_DRAWS`` posterior draws and mixed with
  ``logger_epsilon`` uniform, and items are sampled from that distribution, so ``pscore`` is
  exactly the probability the item was drawn with.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

#: Posterior draws per slot that estimate the Thompson item distribution.
_TS_DRAWS = 200
#: Local hour the eps-greedy heuristic sends at before the user's first session.
_FALLBACK_HOUR = 19


class Logger:
    """A logging policy; subclasses implement :meth:`_items` and may override :meth:`_p_send`.

    Args:
        p_send: ``(n_users,)`` user-level send probability.
        n_items: Catalog size.
        epsilon: Uniform exploration share of the item choice (unused by ``uniform``).
        send_high: Send probability at the heuristic hour (``eps-greedy`` only).
    """

    name: ClassVar[str] = ""
    #: Whether :meth:`observe_sessions` needs calling (it costs a scatter per hour).
    needs_sessions: ClassVar[bool] = False

    def __init__(self, p_send: np.ndarray, n_items: int, epsilon: float = 0.1,
                 send_high: float = 0.5) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"logger epsilon must be in [0, 1], got {epsilon}")
        if not 0.0 < send_high <= 1.0:
            raise ValueError(f"logger send_high must be in (0, 1], got {send_high}")
        self.p_send = p_send
        self.n_items = n_items
        self.epsilon = float(epsilon)
        self.send_high = float(send_high)
        self.sends = np.zeros(n_items)
        self.clicks = np.zeros(n_items)

    def decide(self, users: np.ndarray, hour: np.ndarray, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Decide for ``users`` (shape ``(n,)``) at their local ``hour``.

        Returns:
            ``(send, item, pscore, pscore_send)``, each ``(n,)``: ``item`` is drawn for every
            row (callers blank it where not sent); ``pscore`` is the joint probability of the
            logged action (``1 - pscore_send`` when not sent).
        """
        ps = self._p_send(users, hour)
        send = rng.random(users.size) < ps
        item, q = self._items(users.size, rng)
        return send, item, np.where(send, ps * q, 1.0 - ps), ps

    def observe(self, items: np.ndarray, clicked: np.ndarray) -> None:
        """Feed back the outcomes of the pushes sent at a slot."""
        np.add.at(self.sends, items, 1.0)
        np.add.at(self.clicks, items, clicked.astype(float))

    def observe_sessions(self, users: np.ndarray, hour: np.ndarray) -> None:
        """Feed back organic sessions (user, local hour); only if :attr:`needs_sessions`."""

    def _p_send(self, users: np.ndarray, hour: np.ndarray) -> np.ndarray:
        return self.p_send[users]

    def _items(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class UniformLogger(Logger):
    """The default world's randomised logger (its random stream is the reference output)."""

    name = "uniform"

    def decide(self, users: np.ndarray, hour: np.ndarray, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        # the order of the draws and the arithmetic are those of the original generator:
        # the default world's output is bit-identical (tests/data/test_worlds.py)
        ps = self.p_send[users]
        send = rng.random(users.size) < ps
        item = rng.integers(0, self.n_items, users.size)
        pscore = np.where(send, ps / self.n_items, 1.0 - ps)
        return send, item, pscore, ps


class EpsGreedyLogger(Logger):
    """Epsilon-greedy around the most-active-hour + best-item heuristic."""

    name = "eps-greedy"
    needs_sessions = True

    def __init__(self, p_send: np.ndarray, n_items: int, epsilon: float = 0.1,
                 send_high: float = 0.5) -> None:
        super().__init__(p_send, n_items, epsilon, send_high)
        self.hour_counts = np.zeros((p_send.size, 24))

    def observe_sessions(self, users: np.ndarray, hour: np.ndarray) -> None:
        np.add.at(self.hour_counts, (users, hour), 1.0)

    def _p_send(self, users: np.ndarray, hour: np.ndarray) -> np.ndarray:
        counts = self.hour_counts[users]
        best = np.where(counts.max(axis=1) > 0, counts.argmax(axis=1), _FALLBACK_HOUR)
        return np.where(hour == best, self.send_high, self.p_send[users])

    def _items(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        greedy = int(np.argmax((self.clicks + 1.0) / (self.sends + 2.0)))
        explore = rng.random(n) < self.epsilon
        item = np.where(explore, rng.integers(0, self.n_items, n), greedy)
        q = self.epsilon / self.n_items + (1.0 - self.epsilon) * (item == greedy)
        return item, q


class ThompsonLogger(Logger):
    """Thompson sampling over items (pooled Beta posteriors), uniform-mixed."""

    name = "thompson"

    def _items(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        draws = rng.beta(self.clicks + 1.0, self.sends - self.clicks + 1.0,
                         size=(_TS_DRAWS, self.n_items))
        ts = np.bincount(draws.argmax(axis=1), minlength=self.n_items) / _TS_DRAWS
        dist = (1.0 - self.epsilon) * ts + self.epsilon / self.n_items
        cdf = np.cumsum(dist)
        item = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"),
                          self.n_items - 1)
        return item, dist[item]


LOGGERS: dict[str, type[Logger]] = {c.name: c for c in (UniformLogger, EpsGreedyLogger,
                                                         ThompsonLogger)}


def make_logger(name: str, p_send: np.ndarray, n_items: int, **kw: Any) -> Logger:
    """Build the logging policy ``name`` (one of :data:`LOGGERS`)."""
    if name not in LOGGERS:
        raise ValueError(f"unknown logger {name!r}; known: {', '.join(LOGGERS)}")
    return LOGGERS[name](p_send, n_items, **kw)
