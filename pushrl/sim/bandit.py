"""Item-choice rounds for contextual bandits: contexts, candidates, expected and drawn rewards.

Two worlds behind one interface (:class:`ItemRounds`):

* push world (synthetic / any push log): a round is a population user at a random local
  hour of week, its pipeline state warm-started from its history; candidates are the whole
  catalog or a random subset; reward = the item-round reward
  (:meth:`~pushrl.rules.reward.RewardWeights.item_round`) of pushing the item now (a push
  is sent in every round: the timing decision is another environment's job);
* item-choice log (OBD): a round is a logged context (user features, position); candidates
  are all items; reward = ``click * clicked`` from the fitted click model.

Every draw is counter-based on the slot's episode key and the round number, so ``n`` slots
stepped together give the same rounds as ``n`` single environments.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pushrl.data.features import FeatureState
from pushrl.sim import rng as R
from pushrl.sim.contexts import ItemContext
from pushrl.sim.response import ResponseModel
from pushrl.rules import reward
from pushrl.rules.reward import RewardWeights
from pushrl.sim.items import build_item_context
from pushrl.sim.model import SimModel
from pushrl.sim.obd import ObdWorld


class ItemRounds:
    """Rounds of ``n`` bandit slots.

    Args:
        model: Fitted simulator (``push`` or ``obd`` kind).
        response: Push response (fitted or truth); ignored for OBD.
        n: Number of slots.
        weights: Reward weights; a round's reward is their item-round part
            (:meth:`~pushrl.rules.reward.RewardWeights.item_round`: the push is given, so no
            send cost and no unsubscribe). OBD uses ``click`` only.
        start_bucket: Bucket of the week the push world's rounds fall in.
        candidates: Candidates per round (0 = every item).
        warm_start: History seeded into a push-world user (``week``, ``full``, ``none``).
    """

    def __init__(self, model: SimModel, response: ResponseModel | None, n: int,
                 weights: RewardWeights,
                 start_bucket: int, candidates: int = 0, warm_start: str = "week") -> None:
        self.model, self.response, self.n = model, response, n
        self.w = weights.item_round()
        self.n_items = model.n_items
        self.k = self.n_items if candidates <= 0 else min(int(candidates), self.n_items)
        self.start_bucket = start_bucket
        self.warm_start = warm_start
        self.obd = ObdWorld(model) if model.kind == "obd" else None
        if self.obd is None:
            self.state = FeatureState(model.spec, ["UTC"] * n, start_bucket)
            self.n_contexts = len(model.population)  # type: ignore[arg-type]
        else:
            self.n_contexts = self.obd.n_contexts
        self._item_x = model.item_features.astype(np.float32)
        self._item_cat = model.item_category.astype(np.int64)
        self.ctx: ItemContext | None = None
        self.expected: np.ndarray | None = None
        self._probs: dict[str, np.ndarray] = {}
        self._h = np.zeros(n, np.uint64)

    def new_round(self, keys: np.ndarray, t: np.ndarray) -> ItemContext:
        """Draw the contexts of round ``t`` ``(n,)`` for episode ``keys`` ``(n,)``."""
        h = R.step_hash(keys, t)
        self._h = h
        rows = np.minimum((R.uniform(h, R.CONTEXT, 0) * self.n_contexts).astype(np.int64),
                          self.n_contexts - 1)
        if self.k < self.n_items:
            u = np.stack([R.uniform(h, R.CONTEXT, 2 + j) for j in range(self.n_items)],
                         axis=1)
            cand = np.sort(np.argsort(u, axis=1)[:, : self.k], axis=1)
        else:
            cand = np.broadcast_to(np.arange(self.n_items), (self.n, self.n_items)).copy()
        extra: dict[str, Any] = {"uniform": R.uniform(h, R.ITEM), "context_row": rows}
        if self.obd is not None:
            o = self.obd
            ctx = o.context(rows, cand, extra)
            pc = o.p_click(rows)[np.arange(self.n)[:, None], cand]
            self._probs = {"click": pc}
            self.expected = reward.realised(self.w, delivered=0, opened=0, clicked=pc,
                                            revenue=0, unsubscribed=0)  # linear: E = f(p)
        else:
            self._push_round(h, rows, cand, extra)
            ctx = self.ctx  # type: ignore[assignment]
        ctx.extra["expected_reward"] = self.expected
        self.ctx = ctx
        return ctx

    def _push_round(self, h: np.ndarray, rows: np.ndarray, cand: np.ndarray,
                    extra: dict[str, Any]) -> None:
        pop = self.model.population
        assert pop is not None
        slots = np.arange(self.n)
        offset = np.minimum((R.uniform(h, R.CONTEXT, 1) * 168).astype(np.int64), 167)
        b = self.start_bucket + offset
        shift = getattr(self.response, "shift", 0)
        self.state.reset_users(slots, b, pop.timezone[rows].tolist(),
                               pop.history(rows, shift, self.warm_start))
        raw = self.state.features(slots, b)
        extra["population_index"] = rows
        ctx = build_item_context(self.state, slots, raw, self._item_x, self._item_cat,
                                 self.model.item_feature_names, candidates=cand,
                                 with_features=True, extra=extra)
        aff = ctx.candidate_features[:, :, -1].astype(np.float64)
        r, k = self.response, cand.shape[1]
        if r is None:
            raise ValueError("item rounds of a push simulator need its response model")
        rr = np.repeat(raw, k, axis=0)
        pp, ii, aa = np.repeat(rows, k), cand.reshape(-1), aff.reshape(-1)
        po = r.p_open(pp, rr, aa, ii).reshape(self.n, k)
        pc = r.p_click(pp, rr, aa, ii).reshape(self.n, k)
        pv = r.p_convert(pp, ii).reshape(self.n, k)
        rev = r.revenue(ii).reshape(self.n, k)
        w = self.w
        self._probs = {"open": po, "click": pc, "convert": pv, "revenue": rev}
        # the round's push is given (the timing decision is another environment's): no
        # send cost and no unsubscribe in an item round
        self.expected = reward.expected(w, po * reward.value_per_open(w, pc, pv, rev), 0.0, 0.0)
        self.ctx = ctx

    def outcome(self, action: np.ndarray) -> dict[str, np.ndarray]:
        """Draw the outcome of choosing candidate ``action`` ``(n,)`` in every slot."""
        a = np.asarray(action, np.int64)
        if a.shape != (self.n,) or (a < 0).any() or (a >= self.k).any():
            raise ValueError(f"action must be {self.n} candidate indices in [0, {self.k}), "
                             f"got {a!r}")
        i = np.arange(self.n)
        p = {k: v[i, a] for k, v in self._probs.items()}
        h = self._h
        if self.obd is not None:
            clicked = R.uniform(h, R.CLICK) < p["click"]
            opened = clicked
            converted = np.zeros(self.n, bool)
            revenue = np.zeros(self.n)
            r = reward.realised(self.w, delivered=0, opened=0, clicked=clicked, revenue=0,
                                unsubscribed=0)
        else:
            opened = R.uniform(h, R.OPEN) < p["open"]
            clicked = opened & (R.uniform(h, R.CLICK) < p["click"])
            converted = clicked & (R.uniform(h, R.CONVERT) < p["convert"])
            revenue = np.where(converted, p["revenue"], 0.0)
            r = reward.realised(self.w, delivered=0, opened=opened, clicked=clicked,
                                revenue=revenue, unsubscribed=0, converted=converted)
        assert self.expected is not None and self.ctx is not None
        best = self.expected.max(axis=1)
        return {"reward": r, "opened": opened, "clicked": clicked,
                "converted": converted, "revenue": revenue,
                "item": np.asarray(self.ctx.candidates)[i, a],
                "expected_reward": self.expected[i, a], "regret": best - self.expected[i, a],
                "optimal_action": self.expected.argmax(axis=1)}
