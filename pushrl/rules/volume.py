"""A global volume target met by a price on each send: the ONE definition for every layer.

"On average at most ``V`` pushes per user per week" is a constraint on the sum of all sends,
not on each user. Its Lagrangian relaxation puts a price ``lambda >= 0`` on each send: a
timing policy's send goes out only where its value exceeds the price, so the sends go to the
(user, hour) pairs where they are worth most, and a controller moves the price until the
observed send rate meets the target. Per-user caps stay hard guardrails
(:mod:`pushrl.rules.guardrails`); the price works inside them.

* **Value of a send** (:func:`send_value`): the user's shrunk open rate of past pushes
  discounted by their recent volume, ``engagement / (1 + sends_7d)^2`` (pipeline features,
  :mod:`pushrl.data.features`): an expected-open proxy with fatigue that every layer has at
  decision time, whatever the policy (the policy itself picks the hour). Chosen among eight
  feature proxies on simulator seed 3 (``benchmarks/volume_target.py`` reports seed 11):
  without the fatigue discount (``activity_at_hour * engagement``) the price concentrated
  sends on engaged users and lost to a per-user cap through unsubscribes.
* **Gate** (:meth:`SendPrice.apply`): the policy's send probability is kept where
  ``value >= price`` and moved to "wait" elsewhere, before sampling, so the logged ``pscore``
  stays the probability of the logged action.
* **Controller** (:meth:`SendPrice.observe`): once per hour bucket, from the sends and the
  reachable users of the last ``window_hours`` (a whole day, so the daily rhythm of a policy's
  sends does not move the price), ``log price += gain * (rate / target - 1)``; the window
  starts filled with on-target hours, so the first hours do not swing it; an integral term
  ``+ integral_gain * (run rate / target - 1)`` on the whole run's rate so far makes the
  long-run average meet the target. The realised rate is the sends per reachable
  (subscribed) user per week.

The simulator's batch rollout (``rollout(..., volume=VolumeTarget(V))``) and the server
(``pushrl serve --volume V``) both call :func:`send_value`, :meth:`SendPrice.apply` and
:meth:`SendPrice.observe`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pushrl.data.features import F
from pushrl.data.io import read_json, write_json
from pushrl.units import HOURS_PER_WEEK


def send_value(raw: np.ndarray, power: float = 1.0) -> np.ndarray:
    """Value of sending now, ``(n,)`` float64, from raw pipeline features ``(n, N_FEATURES)``:
    ``engagement ** power / (1 + sends_7d)^2`` (module docstring; ``power`` > 1 ranks the
    engaged users' sends further ahead)."""
    x = np.asarray(raw)
    e = x[:, F["engagement"]].astype(np.float64)
    return ((e if power == 1.0 else e ** power)
            / (1.0 + x[:, F["sends_7d"]].astype(np.float64)) ** 2)


#: Columns of :func:`value_basis` (the open model's design).
VALUE_BASIS: tuple[str, ...] = ("1", "engagement", "log_activity_at_hour", "log1p_activity_7d",
                                "sends_24h", "sends_7d", "log1p_hours_since_push")


def value_basis(raw: np.ndarray) -> np.ndarray:
    """Design ``(n, len(VALUE_BASIS))`` float64 of the open model from raw features."""
    x = np.asarray(raw)
    col = lambda name: x[:, F[name]].astype(np.float64)  # noqa: E731
    return np.column_stack([np.ones(x.shape[0]), col("engagement"),
                            np.log(np.maximum(col("activity_at_hour"), 1e-3)),
                            np.log1p(col("activity_7d")), col("sends_24h"), col("sends_7d"),
                            np.log1p(col("hours_since_push"))])


@dataclass(frozen=True)
class OpenModel:
    """A response model of the value of a send: ``P(open | raw features)``, a logistic
    regression on :func:`value_basis` fitted on a log's sent pushes
    (:func:`pushrl.train.send_value.fit_open_model`). The price then ranks sends by
    ``P(open) / (1 + sends_7d)^2`` (:meth:`value`: the same fatigue discount as
    :func:`send_value`) instead of the engagement proxy.

    Attributes:
        coef: ``(len(VALUE_BASIS),)`` logistic coefficients.
        meta: Where it was fitted.
    """

    coef: tuple[float, ...]
    meta: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if len(self.coef) != len(VALUE_BASIS) or not all(math.isfinite(float(c))
                                                         for c in self.coef):
            raise ValueError(f"open model needs {len(VALUE_BASIS)} finite coefficients "
                             f"({', '.join(VALUE_BASIS)}), got {self.coef!r}")
        object.__setattr__(self, "coef", tuple(float(c) for c in self.coef))

    def p_open(self, raw: np.ndarray) -> np.ndarray:
        """``(n,)`` predicted open probability of a push now."""
        z = value_basis(raw) @ np.asarray(self.coef)
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -30, 30))))

    def value(self, raw: np.ndarray) -> np.ndarray:
        """``(n,)`` value of sending now: ``P(open) / (1 + sends_7d)^2``."""
        return np.asarray(self.p_open(raw)
                          / (1.0 + np.asarray(raw)[:, F["sends_7d"]].astype(np.float64)) ** 2)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (:meth:`save`)."""
        return {"kind": "open_model", "basis": list(VALUE_BASIS), "coef": list(self.coef),
                "meta": self.meta or {}}

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON to ``path``."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> OpenModel:
        """Read a model written by :meth:`save`.

        Raises:
            ValueError: missing file, not JSON, or not an open model of this basis.
        """
        p = Path(path)
        d = read_json(p, "open model")
        if d.get("kind") != "open_model" or list(d.get("basis", [])) != list(VALUE_BASIS):
            raise ValueError(f"{str(p)!r} is not an open model of this pushrl (kind "
                             f"'open_model', basis {list(VALUE_BASIS)}); refit it with "
                             "pushrl.train.send_value.fit_open_model")
        return cls(tuple(d["coef"]), d.get("meta"))


@dataclass(frozen=True)
class VolumeTarget:
    """A global volume target and its controller's settings.

    Attributes:
        per_user_week: ``V``, average pushes per reachable user per week (> 0).
        gain: Step of ``log price`` per unit of relative rate error of the window, per hour.
        integral_gain: Step of ``log price`` per unit of relative error of the whole run's
            rate so far, per hour (drives the long-run average to the target).
        window_hours: Hours of sends the rate is measured over.
        initial_price: Price before any observation.
        value_model: What a send is worth (:meth:`SendPrice.value`): None = the feature
            proxy :func:`send_value`, else an :class:`OpenModel`.
        value_power: The proxy's ``power`` on engagement (:func:`send_value`).
    """

    per_user_week: float
    gain: float = 0.1
    integral_gain: float = 0.05
    window_hours: int = 24
    initial_price: float = 0.05
    value_model: OpenModel | None = None
    value_power: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.per_user_week, int | float) and self.per_user_week > 0):
            raise ValueError(f"volume target must be > 0 pushes per user per week, got "
                             f"{self.per_user_week!r}")
        if not (math.isfinite(self.value_power) and self.value_power > 0):
            raise ValueError(f"volume value_power must be > 0, got {self.value_power!r}")
        if not self.gain > 0 or self.window_hours < 1 or not self.initial_price > 0:
            raise ValueError("volume controller: gain and initial_price must be > 0 and "
                             f"window_hours >= 1, got {self}")

    @property
    def per_user_hour(self) -> float:
        """The target as sends per reachable user per hour."""
        return self.per_user_week / HOURS_PER_WEEK


class SendPrice:
    """The price on a send and its controller (module docstring).

    Args:
        target: The volume target.
    """

    def __init__(self, target: VolumeTarget) -> None:
        self.target = target
        self.price = float(target.initial_price)
        on = target.per_user_hour
        #: sends per reachable user of each observed hour; starts on target
        self._window: deque[float] = deque([on] * target.window_hours,
                                           maxlen=target.window_hours)
        self._bucket: int | None = None
        self._sends = 0.0
        self._users = 0.0
        self.total_sends = 0.0
        self.total_user_hours = 0.0

    def value(self, raw: np.ndarray) -> np.ndarray:
        """The value of sending now ``(n,)`` from raw features ``(n, N_FEATURES)``: the
        target's ``value_model`` if it has one, else :func:`send_value` (the one rule of the
        simulator and the server)."""
        m = self.target.value_model
        return send_value(raw, self.target.value_power) if m is None else m.value(raw)

    def allow(self, value: np.ndarray) -> np.ndarray:
        """bool ``(n,)``: a send of ``value`` ``(n,)`` is worth its price."""
        return np.asarray(value, np.float64) >= self.price

    def apply(self, action_dist: np.ndarray, value: np.ndarray) -> np.ndarray:
        """The timing distribution ``(n, 2)`` (wait, send) with the send probability moved to
        wait where ``value < price``."""
        d = np.array(action_dist, np.float64, copy=True)
        no = ~self.allow(value)
        if no.any():
            d[no, 0] += d[no, 1]
            d[no, 1] = 0.0
        return d

    def observe(self, bucket: int, sends: float, users: float) -> None:
        """Count ``sends`` delivered in hour ``bucket`` to a base of ``users`` reachable
        (subscribed) users; when a later bucket starts, the finished hour enters the window
        and the price moves. Sends of one bucket add up over calls (the server decides in
        many passes); its user base is the largest reported."""
        b = int(bucket)
        if self._bucket is not None and b > self._bucket:
            self._close()
        if self._bucket is None or b > self._bucket:
            self._bucket = b
        self._sends += float(sends)
        self._users = max(self._users, float(users))

    def _close(self) -> None:
        if self._users > 0:
            self._window.append(self._sends / self._users)
            self.total_sends += self._sends
            self.total_user_hours += self._users
            t = self.target
            err = self.rate() / t.per_user_hour - 1.0
            run = self.total_sends / self.total_user_hours / t.per_user_hour - 1.0
            step = t.gain * max(min(err, 5.0), -5.0) + t.integral_gain * max(min(run, 5.0), -5.0)
            self.price = float(self.price * math.exp(step))
        self._sends = 0.0
        self._users = 0.0

    def close(self) -> None:
        """Close the current hour (end of a run): it counts in :meth:`realised_per_user_week`."""
        if self._bucket is not None:
            self._close()
            self._bucket = None

    def rate(self) -> float:
        """Sends per reachable user per hour over the window."""
        return sum(self._window) / len(self._window)

    def realised_per_user_week(self) -> float:
        """Sends per reachable user per week over every closed hour so far."""
        return (self.total_sends / self.total_user_hours * HOURS_PER_WEEK
                if self.total_user_hours else float("nan"))
