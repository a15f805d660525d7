"""Trigger outcome metrics (issue #16): the one definition of what a delay policy's arm
choices are worth, used by `pushrl compare --triggers` and ``benchmarks/triggers.py``.

A delay policy is valued on logged trigger contexts by its arm distribution ``dist``
(``(n, k)`` over the arms, delays then drop) against each (trigger, arm)'s expected outcomes
(:class:`ArmOutcomes`), from the trigger world's truth (:meth:`ArmOutcomes.from_truth`:
exact per trigger) or the fitted trigger simulator (:meth:`ArmOutcomes.from_sim`: per
kind x arm). Per trigger (:func:`trigger_outcomes`):

* ``incremental``: expected conversions caused by the push, over what the user would have
  done anyway (organic): ``sum_a dist_a * incremental_a`` (drop: 0);
* ``recovered``: expected push-attributed conversions (the push was sent and the user
  converted after it; counts users who would have bought later anyway);
* ``sends``: expected pushes sent (a purchase before the due time cancels the push);
* ``organic``: the probability of a conversion without any push (the same for every
  policy: the baseline the incremental conversions are over);
* ``unsubscribes``: expected unsubscribes caused by the sends;
* ``incremental_revenue``: ``incremental`` x the item's price (truth only).

Ratios (sends per recovered conversion, incremental over organic) are ratios of sums over
triggers, never means of per-trigger ratios (``pushrl.compare.stats`` takes them by the
delta method over users).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pushrl.errors import DataError
from pushrl.sim.trigger_fit import TriggerSim

#: The per-trigger metrics of :func:`trigger_outcomes`, in report order.
METRICS: tuple[str, ...] = ("recovered", "incremental", "organic", "sends", "unsubscribes",
                            "incremental_revenue")


def arm_columns(arms: tuple[int | None, ...]) -> list[str]:
    """Column suffixes of the arms (``"1"``, ..., ``"drop"``), as in the truth file."""
    return ["drop" if a is None else str(a) for a in arms]


@dataclass(frozen=True)
class ArmOutcomes:
    """Expected outcomes of every (trigger, arm).

    Attributes:
        arms: The arms (delay hours, None = drop), ``k`` of them.
        incremental: ``(n, k)`` incremental conversions over organic.
        recovered: ``(n, k)`` push-attributed conversions.
        sends: ``(n, k)`` sends.
        unsubscribes: ``(n, k)`` unsubscribes caused by the send.
        organic: ``(n,)`` probability of an organic conversion (no push).
        price: ``(n,)`` revenue of a conversion, or None (unknown).
        source: ``"truth"`` or ``"fitted"``.
    """

    arms: tuple[int | None, ...]
    incremental: np.ndarray
    recovered: np.ndarray
    sends: np.ndarray
    unsubscribes: np.ndarray
    organic: np.ndarray
    price: np.ndarray | None
    source: str

    @classmethod
    def from_truth(cls, truth: pd.DataFrame, arms: tuple[int | None, ...]) -> ArmOutcomes:
        """From the trigger world's truth rows (``ground_truth_triggers.parquet``, aligned
        with the rounds): ``incr_ARM``, ``send_ARM``, ``p_organic``, ``unsub_hazard``,
        ``price``. A push converts the user only if sent, so the push-attributed conversions
        of an arm are its incremental ones scaled by ``P(no organic purchase before the
        send) / P(no organic purchase in the horizon)``."""
        cols = arm_columns(arms)
        missing = [c for c in (*(f"incr_{x}" for x in cols), *(f"send_{x}" for x in cols),
                               "p_organic", "unsub_hazard") if c not in truth.columns]
        if missing:
            raise DataError(f"trigger truth lacks columns {missing}; it must come from "
                            "`pushrl data synth --world triggers` with these arms")
        incr = truth[[f"incr_{c}" for c in cols]].to_numpy(float)
        send = truth[[f"send_{c}" for c in cols]].to_numpy(float)
        organic = truth["p_organic"].to_numpy(float)
        s_h = (1 - organic)[:, None]
        rec = np.where(s_h > 0, incr * send / np.where(s_h > 0, s_h, 1.0), 0.0)
        unsub = send * truth["unsub_hazard"].to_numpy(float)[:, None]
        price = truth["price"].to_numpy(float) if "price" in truth.columns else None
        return cls(tuple(arms), incr, rec, send, unsub, organic, price, "truth")

    @classmethod
    def from_sim(cls, sim: TriggerSim, kind: np.ndarray) -> ArmOutcomes:
        """From a fitted :class:`~pushrl.sim.trigger_fit.TriggerSim` for triggers of
        ``kind`` (``(n,)``); kinds the simulator could not fit get zeros (listed in
        ``sim.unfitted``)."""
        n, k = len(kind), len(sim.arms)
        out = {name: np.zeros((n, k)) for name in ("incr", "rec", "send", "unsub")}
        organic = np.zeros(n)
        kind = np.asarray(kind).astype(str)
        for kd in sim.p_convert:
            m = kind == kd
            out["incr"][m] = sim.incremental(kd)
            out["send"][m] = sim.p_send[kd]
            out["rec"][m] = sim.p_recovered.get(kd, np.zeros(k))
            out["unsub"][m] = sim.p_unsub.get(kd, np.zeros(k))
            organic[m] = sim.p_organic[kd]
        return cls(tuple(sim.arms), out["incr"], out["rec"], out["send"], out["unsub"],
                   organic, None, "fitted")

    @property
    def n(self) -> int:
        return int(self.organic.size)


def trigger_outcomes(dist: np.ndarray, o: ArmOutcomes) -> dict[str, np.ndarray]:
    """Per-trigger expected outcomes (:data:`METRICS`, each ``(n,)``) of a policy whose arm
    distribution over the triggers is ``dist`` (``(n, k)``, rows sum to 1)."""
    d = np.asarray(dist, float)
    if d.shape != o.incremental.shape:
        raise ValueError(f"dist has shape {d.shape}, the outcomes {o.incremental.shape}: "
                         "evaluate the policy on the same triggers and arms")
    incr = (d * o.incremental).sum(1)
    out = {"recovered": (d * o.recovered).sum(1), "incremental": incr,
           "organic": o.organic.copy(), "sends": (d * o.sends).sum(1),
           "unsubscribes": (d * o.unsubscribes).sum(1)}
    if o.price is not None:
        out["incremental_revenue"] = incr * o.price
    return out
