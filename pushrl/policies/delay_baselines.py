"""Heuristic delay policies for behaviour triggers (issue #16).

A delay decision is an item decision over the arms of
:func:`~pushrl.sim.trigger_context.delay_context` (candidates = arm indices, ``delays_h``
then drop), so these are :class:`~pushrl.policies.base.ItemPolicy` subclasses and every
item tool (OPE, VW) applies. Registered as baselines (``policies/baselines/delay-*.toml``):

* ``delay-fixed-0h`` / ``delay-fixed-1h`` / ``delay-fixed-24h``: always the same delay (the
  commercial default is 1 h).
* ``delay-next-active-hour``: the arm whose send lands in the user's most active local
  hour-of-week (the context's ``log_rel_activity_at_send``) among the sends within
  ``within_h`` hours; ties go to the earliest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pushrl.policies.base import ItemContext, ItemPolicy, Policy
from pushrl.sim.trigger_context import ARM_STATIC, CANDIDATE_NAMES

_LOG1P, _DROP = (CANDIDATE_NAMES.index(n) for n in ARM_STATIC)
_ACT = CANDIDATE_NAMES.index("log_rel_activity_at_send")
_DAYS = CANDIDATE_NAMES.index("days_to_send")


def _arm_delays(ctx: ItemContext) -> np.ndarray:
    """``(n, k)`` delay in hours of each arm (``inf`` for drop)."""
    cf = np.asarray(ctx.candidate_features)
    return np.where(cf[:, :, _DROP] > 0, np.inf, np.round(np.expm1(cf[:, :, _LOG1P])))


@dataclass
class FixedDelay(ItemPolicy):
    """Always the arm of ``delay_h`` hours (None = drop)."""

    delay_h: int | None = 1
    name: str = "delay-fixed"

    def _action_dist(self, ctx: ItemContext) -> np.ndarray:
        d = _arm_delays(ctx)
        want = np.inf if self.delay_h is None else float(self.delay_h)
        hit = d == want
        if not hit.any(axis=1).all():
            raise ValueError(f"delay {self.delay_h} h is not an arm of these contexts")
        return hit.astype(float)


@dataclass
class NextActiveHour(ItemPolicy):
    """The arm sending in the user's most active hour within ``within_h`` hours."""

    within_h: int = 24
    name: str = "delay-next-active-hour"

    def _action_dist(self, ctx: ItemContext) -> np.ndarray:
        cf = np.asarray(ctx.candidate_features)
        d = _arm_delays(ctx)
        ok = np.isfinite(d) & (cf[:, :, _DAYS] * 24 <= self.within_h)
        ok[:, 0] |= ~ok.any(axis=1)  # nothing within the window: the first arm
        score = np.where(ok, cf[:, :, _ACT] - 1e-6 * np.where(np.isfinite(d), d, 0), -np.inf)
        out = np.zeros(d.shape)
        out[np.arange(d.shape[0]), np.argmax(score, axis=1)] = 1.0
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "within_h": self.within_h}


BASELINES: dict[str, Callable[..., Policy]] = {
    "delay-fixed-0h": lambda **kw: FixedDelay(**{"delay_h": 0, "name": "delay-fixed-0h", **kw}),
    "delay-fixed-1h": lambda **kw: FixedDelay(**{"delay_h": 1, "name": "delay-fixed-1h", **kw}),
    "delay-fixed-24h": lambda **kw: FixedDelay(**{"delay_h": 24, "name": "delay-fixed-24h",
                                                 **kw}),
    "delay-next-active-hour": lambda **kw: NextActiveHour(**kw),
}
