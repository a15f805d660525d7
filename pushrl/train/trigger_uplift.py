"""Per-trigger-kind uplift from a server log's live per-kind holdouts (issue #16 / #18).

``pushrl serve --trigger-holdout KIND=SHARE`` holds a sticky, hashed share of the users out
of each kind (:mod:`pushrl.serve.trigger_holdout`); ``pushrl logs export`` writes each
trigger row's arm (``triggers.holdout``) and its probability (``triggers.p_holdout`` = the
kind's share). Because that arm is random, the treated and held-out triggers of a kind
estimate what the live policy's pushes of that kind add over what the users did anyway:

* **Rows**: one per trigger of a kind with a holdout arm, built by the one trigger-round
  definition (:func:`pushrl.policies.delay_data.delay_rounds` with ``keep_held_out``):
  ``converted`` = a purchase of the trigger's item (any item for an item-less trigger)
  within ``horizon_h`` of the event, or its push converted; ``sent``; the users' raw
  pipeline features at the event (point in time). Only rounds whose window ends inside the
  log count (``complete``).
* **Estimate** (:func:`kind_estimate`): the incremental conversions per trigger, a Hajek
  inverse-propensity difference ``sum(t y / p1) / sum(t / p1) - sum((1-t) y / p0) / sum((1-t)
  / p0)`` with ``p0 = p_holdout`` and ``p1 = 1 - p_holdout`` per row (equal to the difference
  of the arms' means while a kind's share never changed), and a normal 95 % interval from
  its linearisation summed per user (the holdout randomises users, not triggers: a user's
  triggers are one cluster).
* **Model** (per kind, when each arm has >= 20 triggers): the T-learner of
  :func:`pushrl.train.uplift.fit_uplift` (:class:`pushrl.rules.uplift.UpliftModel`) on the
  rows' features: incremental conversions per sent trigger of this kind by user features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushrl.data.io import Dataset, read_json, write_json
from pushrl.errors import DataError
from pushrl.policies.delay_data import DelayRounds, delay_rounds
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.triggers import TriggerConfig
from pushrl.rules.uplift import UpliftModel
from pushrl.train.uplift import fit_uplift

#: Format tag of the per-kind uplift file.
FORMAT = "pushrl/TriggerUplift-v1"
#: Fewest triggers per arm for a kind's T-learner (:func:`fit_uplift`'s floor).
MIN_ARM = 20


@dataclass(frozen=True)
class KindUplift:
    """One trigger kind's holdout estimate (module docstring).

    Attributes:
        kind: Trigger kind name.
        triggers, treated, held_out: Complete rounds of the kind with a holdout arm, and per
            arm.
        users: Distinct users among them (the clusters of the interval).
        censored: The kind's rounds left out because their window ends after the log.
        p_holdout: The smallest and largest logged holdout probability.
        treated_rate, held_out_rate: Hajek-weighted conversions per trigger in each arm.
        incremental: ``treated_rate - held_out_rate``: incremental conversions per trigger
            of a treated user.
        se, lower, upper: User-clustered standard error and the normal interval.
        sends_per_treated: Pushes sent per treated trigger.
        model: The kind's T-learner, or None (an arm below :data:`MIN_ARM`).
    """

    kind: str
    triggers: int
    treated: int
    held_out: int
    users: int
    censored: int
    p_holdout: tuple[float, float]
    treated_rate: float
    held_out_rate: float
    incremental: float
    se: float
    lower: float
    upper: float
    sends_per_treated: float
    model: UpliftModel | None = None

    @property
    def incremental_per_send(self) -> float:
        """Incremental conversions per sent push of this kind (NaN without sends)."""
        return (self.incremental / self.sends_per_treated if self.sends_per_treated > 0
                else float("nan"))

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in (
            "kind", "triggers", "treated", "held_out", "users", "censored", "treated_rate",
            "held_out_rate", "incremental", "se", "lower", "upper", "sends_per_treated")}
        return {**d, "p_holdout": list(self.p_holdout),
                "incremental_per_send": self.incremental_per_send,
                "model": None if self.model is None else self.model.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KindUplift:
        m = d.get("model")
        return cls(**{k: d[k] for k in (
            "kind", "triggers", "treated", "held_out", "users", "censored", "treated_rate",
            "held_out_rate", "incremental", "se", "lower", "upper", "sends_per_treated")},
            p_holdout=(float(d["p_holdout"][0]), float(d["p_holdout"][1])),
            model=None if m is None else UpliftModel.from_dict(m))


@dataclass(frozen=True)
class TriggerUplift:
    """Per-kind uplift of a log (``pushrl uplift fit --data DIR --trigger-kinds``).

    Attributes:
        kinds: ``{kind name: KindUplift}`` for every kind with a holdout arm.
        alpha: Miscoverage of the intervals.
        horizon_h: Conversion window after each trigger's event.
        meta: Provenance (the log's path and fingerprint).
    """

    kinds: dict[str, KindUplift]
    alpha: float = 0.05
    horizon_h: int = 168
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "alpha": self.alpha, "horizon_h": self.horizon_h,
                "meta": self.meta, "kinds": {k: v.to_dict() for k, v in self.kinds.items()}}

    def save(self, path: str | Path) -> Path:
        """Write the JSON (:meth:`load` reads it)."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> TriggerUplift:
        """Read :meth:`save`'s file.

        Raises:
            ValueError: missing, not JSON, or not a per-kind trigger uplift file.
        """
        d = read_json(path, "trigger uplift")
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"{path} is not a per-kind trigger uplift file ({FORMAT}); write "
                             "one with `pushrl uplift fit --data DIR --trigger-kinds`")
        return cls({k: KindUplift.from_dict(v) for k, v in d["kinds"].items()},
                   float(d["alpha"]), int(d["horizon_h"]), dict(d.get("meta") or {}))


def kind_estimate(y: np.ndarray, treated: np.ndarray, p_holdout: np.ndarray,
                  user_id: np.ndarray, alpha: float = 0.05
                  ) -> tuple[float, float, float, float, float]:
    """Hajek IPW difference of one kind's arms and its user-clustered interval.

    Args:
        y: ``(n,)`` outcome per trigger.
        treated: ``(n,)`` bool, False = the user was held out of the kind.
        p_holdout: ``(n,)`` the logged probability of being held out, in (0, 1).
        user_id: ``(n,)`` the cluster (randomisation unit) of each row.
        alpha: Miscoverage of the normal interval.

    Returns:
        ``(treated_rate, held_out_rate, difference, se, z)`` where the interval is
        ``difference -+ z * se``.
    """
    from statistics import NormalDist

    t = np.asarray(treated, bool)
    yy = np.asarray(y, np.float64)
    p0 = np.asarray(p_holdout, np.float64)
    w1 = np.where(t, 1.0 / (1.0 - p0), 0.0)
    w0 = np.where(~t, 1.0 / p0, 0.0)
    m1 = float(w1 @ yy / w1.sum())
    m0 = float(w0 @ yy / w0.sum())
    # linearisation of each Hajek mean, summed per user (the holdout's unit)
    e = w1 * (yy - m1) / w1.sum() - w0 * (yy - m0) / w0.sum()
    per_user = pd.Series(e).groupby(pd.Series(np.asarray(user_id).astype(str))).sum()
    g = len(per_user)
    se = float(math.sqrt(g / max(g - 1, 1) * float((per_user.to_numpy() ** 2).sum())))
    return m1, m0, m1 - m0, se, NormalDist().inv_cdf(1 - alpha / 2)


def fit_trigger_uplift(rounds: DelayRounds, p_holdout: np.ndarray, *, alpha: float = 0.05,
                       ridge: float = 1e-3, horizon_h: int = 168,
                       meta: dict[str, Any] | None = None) -> TriggerUplift:
    """Per-kind estimates and T-learners from rounds that kept the held-out triggers.

    Args:
        rounds: ``delay_rounds(..., keep_held_out=True)`` (``held_out`` and ``raw`` set).
        p_holdout: ``(rounds.n_rounds,)`` the logged holdout probability of each round (NaN:
            the kind had no holdout then; such rounds are skipped).
        alpha: Miscoverage of the intervals.
        ridge: Ridge penalty of the T-learners.
        horizon_h: The rounds' conversion window (for the record).
        meta: Provenance.

    Raises:
        DataError: no round carries a holdout arm, or a kind has an empty arm.
    """
    if rounds.held_out is None or rounds.raw is None:
        raise DataError("the trigger rounds carry no holdout arms (build them with "
                        "delay_rounds(..., keep_held_out=True) from a log whose triggers have "
                        "the `holdout` column)")
    p = np.asarray(p_holdout, np.float64)
    arm = np.isfinite(p)
    done = np.ones(rounds.n_rounds, bool) if rounds.complete is None else rounds.complete
    if not arm.any():
        raise DataError("no trigger carries a holdout arm; start the server with "
                        "--trigger-holdout KIND=SHARE and export its log")
    bad = arm & ~((p > 0) & (p < 1))
    if bad.any():
        raise DataError(f"p_holdout {p[bad][0]} is not in (0, 1); a holdout probability is "
                        "the kind's share")
    out: dict[str, KindUplift] = {}
    for kind in sorted(set(rounds.kind[arm].tolist())):
        of_kind = arm & (rounds.kind == kind)
        sel = of_kind & done
        held = rounds.held_out[sel]
        t = ~held
        if t.sum() == 0 or held.sum() == 0:
            raise DataError(f"trigger kind {kind!r}: {int(t.sum())} treated and "
                            f"{int(held.sum())} held-out complete triggers; both arms are "
                            "needed (a longer log, or a larger --trigger-holdout share)")
        y = rounds.converted[sel].astype(np.float64)
        users = rounds.user_id[sel]
        m1, m0, d, se, z = kind_estimate(y, t, p[sel], users, alpha)
        sent = rounds.sent[sel].astype(np.float64)
        model = None
        if t.sum() >= MIN_ARM and held.sum() >= MIN_ARM:
            model = fit_uplift(rounds.raw[sel], t, y, sent, kind="conversions", alpha=ridge,
                               meta={"source": "trigger holdout", "trigger_kind": kind,
                                     "unit": "trigger", **(meta or {})})
        out[kind] = KindUplift(
            kind, int(sel.sum()), int(t.sum()), int(held.sum()), int(np.unique(users).size),
            int((of_kind & ~done).sum()), (float(p[sel].min()), float(p[sel].max())), m1, m0,
            d, se, d - z * se, d + z * se, float(sent[t].mean()), model)
    return TriggerUplift(out, alpha, horizon_h, dict(meta or {}))


def from_log(ds: Dataset, config: TriggerConfig, guardrails: Guardrails | None = None, *,
             horizon_h: int = 168, alpha: float = 0.05, ridge: float = 1e-3,
             meta: dict[str, Any] | None = None) -> TriggerUplift:
    """:func:`fit_trigger_uplift` of a loaded pushlog v1.1 log (an export of a server that
    ran ``--trigger-holdout``).

    Args:
        ds: The log.
        config: The trigger rules the log was made with (its arms; ``pushrl serve
            --triggers``).
        guardrails: Quiet hours of the contexts (only the rounds' send times use them).

    Raises:
        DataError: no ``triggers`` rows, no ``holdout`` column, or an arm is empty.
    """
    t = ds.triggers
    if not len(t):
        raise DataError("the log has no `triggers` rows (pushlog v1.1); export the log of a "
                        "server that ran --triggers and --trigger-holdout KIND=SHARE")
    if "holdout" not in t or "p_holdout" not in t:
        raise DataError("the log's triggers have no `holdout`/`p_holdout` columns (each row's "
                        "per-kind arm); export the log of a server that ran "
                        "--trigger-holdout KIND=SHARE (`pushrl logs export`)")
    rounds = delay_rounds(ds, config, guardrails or Guardrails(), horizon_h=horizon_h,
                          keep_held_out=True, due=False)
    # keep_held_out keeps every row in the log's order: the columns line up
    p = t["p_holdout"].astype("Float64").astype(float).to_numpy()
    p = np.where(t["holdout"].isna().to_numpy(), np.nan, p)
    return fit_trigger_uplift(rounds, p, alpha=alpha, ridge=ridge, horizon_h=horizon_h,
                              meta=meta)
