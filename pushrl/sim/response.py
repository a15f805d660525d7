"""How simulated users respond: the fitted models, or the synthetic world's ground truth.

Both classes answer the same questions for arrays of simulated users (``pop`` = population
row of each user) so the engine never knows which one it runs:

* organic activity: expected events in an hour at a local hour of week, and the category
  distribution of an event;
* P(open) of a push of an item given the user's pipeline features at the send (and, in the
  fitted model, the user's latent rhythm, as the truth uses the true one); P(click |
  open), P(convert | click), revenue of a conversion; the unsubscribe hazard of a push.

What-if knobs: ``fatigue_multiplier`` scales the fatigue terms (open: sends in the last 24 h
and 7 days; unsubscribe: the same volume terms); ``activity_shift_hours`` moves every user's
rhythm later by that many hours (organic activity and, in the truth, the relative activity
that drives opens; the engine also rolls the warm-start history so the pipeline's features
see the shifted rhythm).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol

import numpy as np

from pushrl.data.features import F
from pushrl.data.synth import CATEGORIES, TrueWorld
from pushrl.errors import ScenarioError
from pushrl.sim import design
from pushrl.sim.glm import sigmoid
from pushrl.sim.model import SimModel


class ResponseModel(Protocol):
    """What the simulator asks about users (module docstring); arrays of ``n`` users.

    Implemented by :class:`FittedResponse` and :class:`TruthResponse`.

    Attributes:
        truth: True when the answers are the synthetic world's ground truth.
        shift: ``activity_shift_hours`` (rhythms move later by this many hours).
        burst_mean: Mean organic events per burst (session).
    """

    truth: bool
    shift: int
    burst_mean: float

    def activity_rate(self, pop: np.ndarray, how: np.ndarray) -> np.ndarray:
        """Expected organic events in one hour at local hour of week ``how``, ``(n,)``."""
        ...

    def category_cdf(self, pop: np.ndarray) -> np.ndarray:
        """``(n, n_categories + 1)`` CDF of an event's category (column 0 = no item)."""
        ...

    def p_open(self, pop: np.ndarray, raw: np.ndarray, affinity: np.ndarray,
               items: np.ndarray) -> np.ndarray:
        """P(open) of pushing ``items`` ``(n,)`` given pipeline features ``raw``."""
        ...

    def p_click(self, pop: np.ndarray, raw: np.ndarray, affinity: np.ndarray,
                items: np.ndarray) -> np.ndarray:
        """P(click | open), ``(n,)``."""
        ...

    def p_convert(self, pop: np.ndarray, items: np.ndarray) -> np.ndarray:
        """P(convert | click), ``(n,)``."""
        ...

    def revenue(self, items: np.ndarray) -> np.ndarray:
        """Revenue of a conversion, ``(n,)``."""
        ...

    def unsub_hazard(self, pop: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """P(unsubscribe | a push is delivered now), ``(n,)``."""
        ...


class FittedResponse:
    """Responses from a fitted :class:`~pushrl.sim.model.SimModel` (the default).

    Args:
        model: A fitted push simulator.
        fatigue_multiplier: Scales the fatigue coefficients.
        activity_shift_hours: Moves rhythms later by this many hours.
    """

    truth = False

    def __init__(self, model: SimModel, fatigue_multiplier: float = 1.0,
                 activity_shift_hours: int = 0) -> None:
        if model.kind != "push" or model.population is None:
            raise ScenarioError(f"simulator {model.meta.get('path')!r} is a {model.kind!r} "
                                "model without a user population; timing environments need "
                                "a simulator fitted on a push log (e.g. simulator_data/synth)")
        self.model = model
        self.pop = model.population
        self.n_items = model.n_items
        self.item_category = model.item_category.astype(np.int64)
        self.shift = int(activity_shift_hours)
        self._rate = np.roll(self.pop.rate_how, self.shift, axis=1) if self.shift \
            else self.pop.rate_how
        self._open = model.glm("open")
        self._click = model.glm("click")
        self._convert = model.glms.get("convert")
        self._unsub = model.glm("unsubscribe")
        fm = float(fatigue_multiplier)
        self._open_scale = {j: fm for j in design.fatigue_columns(self._open.names)}
        self._unsub_scale = {j: fm for j in design.fatigue_columns(self._unsub.names)}
        #: channel indicators of a simulator fitted on a log with channels (issue 17)
        self._open_ch = design.channel_columns(self._open.names)
        self._unsub_ch = design.channel_columns(self._unsub.names)
        self._item_x = model.item_features.astype(np.float64)
        self._log_pop = np.roll(design.log_population_activity(model.spec.prior_how), self.shift)
        # simulators fitted since the user-rhythm covariate have it in the open model
        self._log_rel = (np.roll(design.log_user_relative_activity(self.pop.rate_how),
                                 self.shift, axis=1)
                         if design.USER_REL_NAME in self._open.names else None)
        rate = self._convert.predict(design.convert_design(self._item_x)) \
            if self._convert is not None else np.zeros(self.n_items)
        self._p_convert = rate
        self._revenue = model.item_revenue.astype(np.float64)
        #: Mean organic events per burst (session); bursts are Poisson.
        self.burst_mean = float(model.arrays.get("activity_burst_mean", np.array(1.0)))

    def activity_rate(self, pop: np.ndarray, how: np.ndarray) -> np.ndarray:
        """Expected organic events in one hour at local hour of week ``how``, shape ``(n,)``."""
        return self._rate[pop, how].astype(np.float64)

    def category_cdf(self, pop: np.ndarray) -> np.ndarray:
        """``(n, n_categories + 1)`` CDF of an event's category (column 0 = no item)."""
        return self.pop.cat_cdf[pop]

    @property
    def channels(self) -> tuple[str, ...]:
        """Channels with their own response (reference first); ``()`` = push only."""
        return tuple(self.model.meta.get("channels", ()))

    def p_open(self, pop: np.ndarray, raw: np.ndarray, affinity: np.ndarray,
               items: np.ndarray, channel: np.ndarray | None = None) -> np.ndarray:
        """P(open), shape ``(n,)``; ``affinity`` is the pipeline affinity of ``items``;
        ``channel`` ``(n,)`` names (None = the reference channel, push)."""
        rel = self._log_rel[pop] if self._log_rel is not None else None
        x = design.open_design(raw, affinity, self._log_pop, rel)
        if self._open_ch:
            x = np.concatenate([x, design.channel_design(channel, self._open_ch, len(x))], 1)
        return self._open.predict(x, self._open_scale)

    def p_click(self, pop: np.ndarray, raw: np.ndarray, affinity: np.ndarray,
                items: np.ndarray) -> np.ndarray:
        """P(click | open), shape ``(n,)``."""
        return self._click.predict(design.click_design(raw, affinity, self._item_x[items]))

    def p_convert(self, pop: np.ndarray, items: np.ndarray) -> np.ndarray:
        """P(convert | click), shape ``(n,)``."""
        return self._p_convert[items]

    def revenue(self, items: np.ndarray) -> np.ndarray:
        """Revenue of a conversion, shape ``(n,)``."""
        return self._revenue[items]

    def unsub_hazard(self, pop: np.ndarray, raw: np.ndarray,
                     channel: np.ndarray | None = None) -> np.ndarray:
        """P(unsubscribe | a push is delivered now), shape ``(n,)`` (``channel`` as in
        :meth:`p_open`)."""
        x = design.unsub_design(raw, self._unsub.names)
        if self._unsub_ch:
            x = np.concatenate([x, design.channel_design(channel, self._unsub_ch, len(x))], 1)
        return self._unsub.predict(x, self._unsub_scale)


class TruthResponse(FittedResponse):
    """Responses from the synthetic world's ground truth (``truth = true`` scenarios).

    Simulated users are the same bootstrapped logged users, with their true latents (rhythm,
    category preferences, engagement) from ``ground_truth_users.parquet``; features are still
    computed by the pipeline from the warm-started state. Organic events are Poisson with the
    true mean (sessions times events per session), so feature noise differs slightly from
    the generator's clustered sessions; the outcome probabilities are exactly the truth's.

    Args:
        model: The fitted simulator (population and item catalog).
        data: Directory of the synthetic dataset with its ground truth.
        fatigue_multiplier: Scales ``fatigue_24h``, ``fatigue_7d`` and ``unsub_volume_7d``.
        activity_shift_hours: Moves rhythms later by this many hours.
    """

    truth = True

    def __init__(self, model: SimModel, data: str | Path, fatigue_multiplier: float = 1.0,
                 activity_shift_hours: int = 0) -> None:
        super().__init__(model, 1.0, activity_shift_hours)
        d = Path(data)
        if not (d / "ground_truth.json").is_file():
            raise ScenarioError(f"truth=true needs ground truth beside the data, but "
                                f"{d / 'ground_truth.json'} does not exist; use a synthetic "
                                "dataset (`pushrl data synth`) or truth=false")
        world = TrueWorld.load(d)
        p = world.params
        fm = float(fatigue_multiplier)
        world.params = dataclasses.replace(p, fatigue_24h=p.fatigue_24h * fm,
                                           fatigue_7d=p.fatigue_7d * fm,
                                           unsub_volume_7d=p.unsub_volume_7d * fm)
        self.world = world
        gt_index = {u: i for i, u in enumerate(world.users["user_id"].astype(str))}
        missing = [u for u in self.pop.user_id if u not in gt_index]
        if missing:
            raise ScenarioError(f"simulator users are not in the ground truth of {d} (e.g. "
                                f"{missing[0]!r}); fit the simulator on this dataset")
        self.gt = np.array([gt_index[u] for u in self.pop.user_id], np.int64)
        item_ids = world.items["item_id"].astype(str).tolist()
        if item_ids != [str(i) for i in model.item_ids]:
            raise ScenarioError(f"item catalog of {d} differs from the simulator's; refit it")
        per_session = 1 + p.views_per_session * (1 + p.cart_per_view * (1 + p.purchase_per_cart))
        item_share = (per_session - 1) / per_session
        self.burst_mean = float(per_session)
        # true events per hour at local hour of week (dow*24 + hour), rhythm shifted
        we = (np.arange(168) // 24 >= 5).astype(np.int64)
        rate = world.rate[:, we, np.arange(168) % 24] * per_session
        self._rate_gt = np.roll(rate, self.shift, axis=1)
        order = [list(CATEGORIES).index(c) for c in model.spec.categories]
        pref = world.pref[:, order]
        self._cdf_gt = np.cumsum(np.concatenate(
            [np.full((len(pref), 1), 1 - item_share), item_share * pref], axis=1), axis=1)
        self._p_convert = world.p_convert(np.arange(self.n_items))
        self._revenue = world.price.astype(np.float64)

    def activity_rate(self, pop: np.ndarray, how: np.ndarray) -> np.ndarray:
        """True expected events in one hour at local hour of week ``how``."""
        return self._rate_gt[self.gt[pop], how]

    def category_cdf(self, pop: np.ndarray) -> np.ndarray:
        """True category distribution of an event (column 0 = no item)."""
        return self._cdf_gt[self.gt[pop]]

    def p_open(self, pop: np.ndarray, raw: np.ndarray, affinity: np.ndarray,
               items: np.ndarray, channel: np.ndarray | None = None) -> np.ndarray:
        """True P(open) (relative activity looked up ``activity_shift_hours`` earlier) of a
        push; the truth's channel effects need in-session state the simulator does not
        draw, so ``channel`` must be None."""
        _push_only(channel)
        hour = (raw[:, F["local_hour"]].astype(np.int64) - self.shift) % 24
        weekend = (raw[:, F["local_dow"]] >= 5).astype(np.int64)
        return sigmoid(self.world.open_logit(self.gt[pop], weekend, hour, items,
                                             raw[:, F["sends_24h"]], raw[:, F["sends_7d"]]))

    def p_click(self, pop: np.ndarray, raw: np.ndarray, affinity: np.ndarray,
                items: np.ndarray) -> np.ndarray:
        """True P(click | open)."""
        return self.world.p_click(self.gt[pop], items)

    def unsub_hazard(self, pop: np.ndarray, raw: np.ndarray,
                     channel: np.ndarray | None = None) -> np.ndarray:
        """True unsubscribe hazard per delivered push (``channel`` must be None)."""
        _push_only(channel)
        return self.world.unsub_hazard(self.gt[pop], raw[:, F["sends_7d"]])


def _push_only(channel: np.ndarray | None) -> None:
    if channel is not None:
        raise ScenarioError("the truth response simulates push only (the world's channel "
                            "effects need its in-session draws); use the fitted simulator "
                            "(truth = false) for per-channel responses")
