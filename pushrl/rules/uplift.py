"""Send only if it helps: the ONE definition of the uplift gate for every layer.

A push to a user who would buy anyway only moves the purchase (:mod:`pushrl.sim.organic`); it
costs attention and adds nothing. The gate keeps a timing policy's send only where the
*incremental* value of sending is at least a threshold:

* **Uplift model** (:class:`UpliftModel`): a two-model (T-learner) estimate of the
  incremental outcome per send from pipeline features. Fitted from a randomised holdout
  (:func:`pushrl.train.uplift.fit_uplift`): one ridge regression of the outcome per user
  (pushed + organic conversions, or the objective) on the user's features at the
  experiment's start for the treated arm, one for the held-out arm, and one of the treated
  arm's sends; ``uplift(x) = (mu_send(x) - mu_wait(x)) / sends(x)``.
* **Basis** (:func:`basis`): ``1, log1p(activity_7d), its square, engagement, its square,
  their product``: user-level features every layer has at decision time.
* **Gate** (:meth:`UpliftGate.apply`): the policy's send probability is kept where
  ``uplift >= threshold`` and moved to "wait" elsewhere, before sampling, so the logged
  ``pscore`` stays the probability of the logged action (the same shape as the volume
  price, :mod:`pushrl.rules.volume`).

* **Need state** (:attr:`UpliftGate.min_hours_since_purchase`): no send within so many hours
  of the user's last purchase (the pipeline's
  :meth:`~pushrl.data.features.FeatureState.hours_since_purchase`): the incremental value of
  sending *now* rather than per user.

The simulator (``rollout(..., uplift=)``) and the server (``pushrl serve --uplift FILE``,
``--uplift-min-hours H``) call :meth:`UpliftGate.apply`/:meth:`UpliftGate.allow` on the same
raw features and the same hours since purchase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pushrl.data.features import F
from pushrl.data.io import read_json, write_json

#: Names of the columns of :func:`basis`.
BASIS: tuple[str, ...] = ("1", "log_activity_7d", "log_activity_7d^2", "engagement",
                          "engagement^2", "log_activity_7d*engagement")
#: Outcomes an uplift model can predict.
OUTCOMES = ("conversions", "objective")


def basis(raw: np.ndarray) -> np.ndarray:
    """Design ``(n, len(BASIS))`` float64 from raw pipeline features ``(n, N_FEATURES)``."""
    x = np.asarray(raw)
    a = np.log1p(x[:, F["activity_7d"]].astype(np.float64))
    e = x[:, F["engagement"]].astype(np.float64)
    return np.column_stack([np.ones_like(a), a, a * a, e, e * e, a * e])


@dataclass(frozen=True)
class UpliftModel:
    """A fitted T-learner (module docstring).

    Attributes:
        outcome: What it predicts per send: ``conversions`` or ``objective``.
        coef_send: ``(len(BASIS),)`` outcome per user of the treated arm.
        coef_wait: ``(len(BASIS),)`` outcome per user of the held-out arm.
        coef_sends: ``(len(BASIS),)`` sends per treated user.
        min_sends: Floor of the predicted sends (avoids dividing by ~0).
        meta: Where it was fitted (users, days, policy, ...).
    """

    outcome: str
    coef_send: tuple[float, ...]
    coef_wait: tuple[float, ...]
    coef_sends: tuple[float, ...]
    min_sends: float = 0.5
    meta: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"uplift outcome must be one of {OUTCOMES}, got {self.outcome!r}")
        k = len(BASIS)
        for name in ("coef_send", "coef_wait", "coef_sends"):
            v = getattr(self, name)
            if len(v) != k or not all(math.isfinite(float(c)) for c in v):
                raise ValueError(f"uplift model `{name}` must have {k} finite coefficients "
                                 f"({', '.join(BASIS)}), got {v!r}")
            object.__setattr__(self, name, tuple(float(c) for c in v))
        if not self.min_sends > 0:
            raise ValueError(f"uplift min_sends must be > 0, got {self.min_sends}")

    def predict(self, raw: np.ndarray) -> np.ndarray:
        """Incremental outcome per send ``(n,)`` of sending to users with features ``raw``."""
        b = basis(raw)
        d = b @ np.asarray(self.coef_send) - b @ np.asarray(self.coef_wait)
        s = np.maximum(b @ np.asarray(self.coef_sends), self.min_sends)
        return np.asarray(d / s)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (:meth:`save`)."""
        return {"kind": "uplift", "basis": list(BASIS), "outcome": self.outcome,
                "coef_send": list(self.coef_send), "coef_wait": list(self.coef_wait),
                "coef_sends": list(self.coef_sends), "min_sends": self.min_sends,
                "meta": self.meta or {}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UpliftModel:
        """From :meth:`to_dict` output.

        Raises:
            ValueError: another kind or basis, or bad coefficients.
        """
        if d.get("kind") != "uplift" or list(d.get("basis", [])) != list(BASIS):
            raise ValueError(f"not an uplift model of this pushrl (kind 'uplift', basis "
                             f"{list(BASIS)}); refit it with pushrl.train.uplift.fit_uplift")
        return cls(d["outcome"], tuple(d["coef_send"]), tuple(d["coef_wait"]),
                   tuple(d["coef_sends"]), float(d.get("min_sends", 0.5)), d.get("meta"))

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON to ``path``."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> UpliftModel:
        """Read a model written by :meth:`save`.

        Raises:
            ValueError: missing file, not JSON, or not an uplift model.
        """
        return cls.from_dict(read_json(path, "uplift model"))


@dataclass(frozen=True)
class UpliftGate:
    """Keep a send only where sending *now* is expected to help.

    Two parts, each optional, both must pass:

    * **Need state** (``min_hours_since_purchase`` > 0): no send while the user's last
      purchase (organic or pushed, :meth:`pushrl.data.features.FeatureState.record_purchase`)
      is more recent than this many hours: a push cannot sell to a user who has just
      bought, and a push to a user who buys on their own mostly moves that purchase. The
      hours come from the one pipeline (:meth:`~pushrl.data.features.FeatureState.
      hours_since_purchase`, point in time), so the simulator and the server see the same.
    * **Uplift model** (``model``): the per-user incremental outcome per send is at least
      ``threshold``.

    Attributes:
        model: The uplift model, or None (need state only).
        threshold: Least incremental outcome per send (the model's ``outcome`` units).
        min_hours_since_purchase: Least hours since the user's last purchase (0 = off).
    """

    model: UpliftModel | None
    threshold: float = 0.0
    min_hours_since_purchase: float = 0.0

    def __post_init__(self) -> None:
        if not math.isfinite(float(self.threshold)):
            raise ValueError(f"uplift threshold must be finite, got {self.threshold!r}")
        h = float(self.min_hours_since_purchase)
        if not (math.isfinite(h) and h >= 0):
            raise ValueError(f"uplift min_hours_since_purchase must be >= 0 hours, got "
                             f"{self.min_hours_since_purchase!r}")
        if self.model is None and h == 0:
            raise ValueError("an uplift gate needs a model or min_hours_since_purchase > 0")

    @property
    def needs_purchases(self) -> bool:
        """The gate reads the hours since each user's last purchase."""
        return self.min_hours_since_purchase > 0

    def allow(self, raw: np.ndarray, hours_since_purchase: np.ndarray | None = None
              ) -> np.ndarray:
        """bool ``(n,)``: sending now helps enough.

        Args:
            raw: ``(n, N_FEATURES)`` raw pipeline features of the decisions.
            hours_since_purchase: ``(n,)`` from
                :meth:`~pushrl.data.features.FeatureState.hours_since_purchase` (needed when
                :attr:`needs_purchases`).

        Raises:
            ValueError: the need state is on and ``hours_since_purchase`` is missing.
        """
        n = np.asarray(raw).shape[0]
        ok = np.ones(n, bool)
        if self.model is not None:
            ok &= self.model.predict(raw) >= self.threshold
        if self.needs_purchases:
            if hours_since_purchase is None:
                raise ValueError("this uplift gate has min_hours_since_purchase: pass each "
                                 "decision's hours_since_purchase (FeatureState)")
            ok &= np.asarray(hours_since_purchase, np.float64) >= self.min_hours_since_purchase
        return ok

    def apply(self, action_dist: np.ndarray, raw: np.ndarray,
              hours_since_purchase: np.ndarray | None = None) -> np.ndarray:
        """The timing distribution ``(n, 2)`` (wait, send) with the send probability moved to
        wait where :meth:`allow` is False."""
        d = np.array(action_dist, np.float64, copy=True)
        no = ~self.allow(raw, hours_since_purchase)
        if no.any():
            d[no, 0] += d[no, 1]
            d[no, 1] = 0.0
        return d
