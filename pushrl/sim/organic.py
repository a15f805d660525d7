"""Organic conversions: purchases that happen without a push, and pushes that only move them.

A simulated user buys on their own during organic sessions; a push can add a purchase
(incremental) or take the place of one that would have happened anyway (moved). The model,
the same for the fitted and the ground-truth simulator (it needs only each user's session
rate and id):

* **Segments**: the users whose organic session rate is in the top ``loyal_share`` of the
  population are *loyal*: each session buys with probability ``buy_loyal`` (at full need);
  the others buy with ``buy_other`` per session. Loyal users come back and buy anyway; the
  others mostly buy only when a push brings them. A per-user factor ``exp(sigma * z)``
  (``z`` a standard normal from a hash of the user id) adds heterogeneity that no feature
  shows.
* **Need**: a purchase (organic or pushed) satisfies the need for a while (replenishment):
  ``need = clip((hours since the last purchase - need_delay_h) / need_ramp_h, 0, 1)``. An
  organic purchase in an hour with ``k`` sessions has probability ``1 - (1 - q * need)^k``;
  a push's conversion probability (open, click, convert) is multiplied by ``need``. A loyal
  user buys within about a day of the need's return, so a push conversion mostly takes the
  place of that purchase (it moves it by hours); a push conversion of another user mostly
  adds one. Moving a purchase earlier still adds a little over a finite horizon (the next
  cycle starts earlier): the measured incremental effect, not an assumed one, says how much.
* **Start**: every episode starts ``U(0, 2) * (need_delay_h + need_ramp_h)`` hours after the
  user's last purchase (a counter-based draw of the episode key).
* **Revenue** of an organic purchase: the catalog's mean revenue of a conversion.

Incremental outcomes are measured, not assumed: a policy's conversions (pushed + organic)
minus those of the same users under no push with the same random numbers
(:func:`pushrl.envs.rollout.rollout` ``counterfactual=True``). Organic draws use their own
streams (:data:`pushrl.sim.rng.ORGANIC`), so pushes change them only through the need.

Scenario key ``whatif.organic_purchases = true`` (or ``rollout(..., organic_purchases=True)``)
switches it on with the default :class:`OrganicParams`; it is off by default (the shipped
worlds have no organic conversions and their figures are unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from pushrl.data.split import user_uniform
from pushrl.sim import rng as R


@dataclass(frozen=True)
class OrganicParams:
    """Parameters of the organic purchase model (module docstring).

    Attributes:
        loyal_share: Share of users (highest organic session rate) that are loyal.
        buy_loyal: P(purchase | session, need 1) of a loyal user.
        buy_other: P(purchase | session, need 1) of the other users.
        need_delay_h: Hours after a purchase without any need.
        need_ramp_h: Hours over which the need then returns to 1.
        sigma: Log-scale spread of the hidden per-user purchase factor.
    """

    loyal_share: float = 0.3
    buy_loyal: float = 0.25
    buy_other: float = 0.004
    need_delay_h: float = 96.0
    need_ramp_h: float = 48.0
    sigma: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 <= self.loyal_share <= 1.0:
            raise ValueError(f"organic loyal_share must be in [0, 1], got {self.loyal_share}")
        for name in ("buy_loyal", "buy_other"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"organic {name} must be a probability, got {v}")
        if self.need_delay_h < 0 or not self.need_ramp_h > 0 or self.sigma < 0:
            raise ValueError(f"organic need_delay_h must be >= 0, need_ramp_h > 0 and sigma "
                             f">= 0, got {self}")


class OrganicModel:
    """Per population user purchase propensities and the need dynamics.

    Args:
        params: Model parameters.
        user_id: ``(n_pop,)`` population user ids (the hidden factor's hash key).
        session_rate: ``(n_pop,)`` organic sessions (or events) per hour of each user; only
            its ranking matters (the loyal segment).
        revenue: Revenue of an organic purchase.
    """

    def __init__(self, params: OrganicParams, user_id: np.ndarray, session_rate: np.ndarray,
                 revenue: float) -> None:
        self.params = params
        rate = np.asarray(session_rate, np.float64)
        cut = np.quantile(rate, 1.0 - params.loyal_share) if params.loyal_share > 0 else np.inf
        #: ``(n_pop,)`` True for the loyal users
        self.loyal = rate >= cut if params.loyal_share > 0 else np.zeros(rate.size, bool)
        u = np.clip(user_uniform(np.asarray(user_id, dtype=object), "pushrl-organic:"),
                    1e-9, 1 - 1e-9)
        z = ndtri(u)
        base = np.where(self.loyal, params.buy_loyal, params.buy_other)
        #: ``(n_pop,)`` P(purchase | session, need 1)
        self.buy = np.clip(base * np.exp(params.sigma * z - 0.5 * params.sigma ** 2), 0, 1)
        self.revenue = float(revenue)

    def start_hours(self, keys: np.ndarray) -> np.ndarray:
        """Hours since the last purchase at the start of episodes with ``keys`` ``(k,)``."""
        h = R.step_hash(np.asarray(keys, np.uint64), 0)
        p = self.params
        return 2.0 * (p.need_delay_h + p.need_ramp_h) * R.uniform(h, R.ORGANIC_START)

    def need(self, hours_since: np.ndarray) -> np.ndarray:
        """Need ``(k,)`` in [0, 1] given hours since the last purchase ``(k,)``."""
        p = self.params
        return np.clip((np.asarray(hours_since, np.float64) - p.need_delay_h) / p.need_ramp_h,
                       0.0, 1.0)

    def p_buy(self, pop: np.ndarray, need: np.ndarray, sessions: np.ndarray) -> np.ndarray:
        """P(an organic purchase) in an hour with ``sessions`` sessions, ``(k,)``."""
        q = self.buy[pop] * need
        return 1.0 - (1.0 - q) ** np.asarray(sessions, np.float64)
