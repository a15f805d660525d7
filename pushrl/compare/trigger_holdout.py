"""Per-trigger-kind live holdouts in `pushrl compare --triggers` (issue #18 leftover).

The server holds a sticky share of users out of each trigger kind
(``pushrl serve --trigger-holdout KIND=SHARE``, :mod:`pushrl.serve.trigger_holdout`). The
comparison applies the same rule to the logged triggers it replays: the one
:class:`~pushrl.rules.holdout.Holdout` per kind (campaign = the kind's name, the same salt),
on the same user ids, so the same users are held out here and by the server.

* **Applied**: a held-out user's triggers of kind ``K`` take the drop arm under every policy
  (nothing sent, nothing recovered or caused; their organic conversions stay).
* **Measured**: for each policy and kind with a holdout, what a live holdout would report:
  the per-user lift of the kind's expected conversions (organic + incremental) and sends,
  treated vs held-out users with at least one ``K`` trigger (Welch 95 % intervals, the one
  estimator :func:`pushrl.compare.lift.estimate`), next to the true incremental conversions
  per treated user (known here: the outcome model's own ``incremental``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pushrl.compare.lift import LiftData, estimate
from pushrl.errors import PushrlError
from pushrl.rules.holdout import Holdout
from pushrl.rules.triggers import TriggerKind

#: Per-user metrics of a kind's holdout lift.
LIFT_METRICS = ("conversions", "sends")


def held_out_rounds(user_id: np.ndarray, kind: np.ndarray,
                    holdouts: Mapping[TriggerKind, Holdout]) -> np.ndarray:
    """``(n,)`` True where round ``i``'s user is held out of its kind ``kind[i]``.

    Args:
        user_id: ``(n,)`` user ids (strings, as logged and as the server hashes them).
        kind: ``(n,)`` trigger kind names.
        holdouts: ``{kind: Holdout}`` (inactive ones hold out nobody).
    """
    uid = np.asarray(user_id, dtype=object)
    k = np.asarray(kind).astype(str)
    out = np.zeros(uid.size, bool)
    for tk, h in holdouts.items():
        sel = k == tk.value
        if h.active and sel.any():
            out[sel] = h.held_out([str(u) for u in uid[sel]])
    return out


def apply_holdouts(dist: np.ndarray, held: np.ndarray, arms: tuple[int | None, ...]
                   ) -> np.ndarray:
    """``dist`` (``(n, k)`` arm probabilities) with held-out rounds on the drop arm.

    Raises:
        PushrlError: the arms have no drop arm (None).
    """
    if not held.any():
        return dist
    if None not in arms:
        raise PushrlError(f"a per-kind holdout needs the drop arm; the trigger arms are "
                          f"{list(arms)}")
    out = np.array(dist, float, copy=True)
    out[held] = 0.0
    out[held, arms.index(None)] = 1.0
    return out


def kind_lift(user_id: np.ndarray, kind: np.ndarray, held: np.ndarray,
              values: Mapping[str, np.ndarray], tk: TriggerKind, holdout: Holdout
              ) -> dict[str, Any]:
    """The lift a live holdout of kind ``tk`` would measure under one policy.

    Args:
        user_id, kind, held: ``(n,)`` per round (``held`` from :func:`held_out_rounds`).
        values: Per-round expected outcomes of the policy with the holdout applied
            (:func:`pushrl.sim.trigger_metrics.trigger_outcomes`: ``organic``,
            ``incremental``, ``sends``).
        tk, holdout: The kind and its holdout.

    Returns:
        ``{"kind", "share", "users", "held_out", "true_incremental_per_treated_user",
        "metrics": [MetricLift.to_dict() per LIFT_METRICS]}`` (no ``metrics`` when an arm
        has fewer than 2 users).
    """
    sel = np.asarray(kind).astype(str) == tk.value
    df = pd.DataFrame({"user_id": np.asarray(user_id, dtype=object)[sel],
                       "held_out": held[sel],
                       "conversions": (values["organic"] + values["incremental"])[sel],
                       "sends": values["sends"][sel],
                       "incremental": values["incremental"][sel]})
    g = df.groupby("user_id", sort=True)
    users = pd.DataFrame({"user_id": g.size().index, "held_out": g["held_out"].max().to_numpy(),
                          "p_holdout": holdout.share, "pre": 0.0,
                          **{m: g[m].sum().to_numpy() for m in (*LIFT_METRICS, "incremental")}})
    treated = ~users["held_out"].to_numpy(bool)
    out: dict[str, Any] = {
        "kind": tk.value, "share": holdout.share, "users": len(users),
        "held_out": int((~treated).sum()),
        "true_incremental_per_treated_user":
            float(users["incremental"][treated].mean()) if treated.any() else float("nan")}
    if treated.sum() >= 2 and (~treated).sum() >= 2:
        ld = LiftData(users, 1.0, f"compare --triggers (kind {tk.value})")
        out["metrics"] = [m.to_dict() for m in estimate(ld, LIFT_METRICS, cuped=False)]
    return out
