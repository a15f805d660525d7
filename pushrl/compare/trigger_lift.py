"""The per-kind holdout lift of an exported log: ``pushrl lift DATA --trigger-kind K``.

The server's reader (:func:`pushrl.serve.trigger_holdout.lift_data`, ``--state``) and this
one build the same rows: one per ``K`` trigger that carries a holdout arm (the ``triggers``
table's ``holdout``/``p_holdout``, pushlog v1.1 optional columns written by ``pushrl logs
export``), ``sent`` when its status is ``sent``, left-joined to the push it became for the
attributed outcomes, plus the users' activity; :func:`pushrl.compare.lift.from_decisions`
turns them into the per-user table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pushrl.compare.lift import LiftData, activity_frame, from_decisions
from pushrl.errors import DataError
from pushrl.rules.holdout import kind_of

OUTCOMES = ("opened", "clicked", "converted", "revenue")


def kind_rows(triggers: pd.DataFrame, pushes: pd.DataFrame, kind: str) -> pd.DataFrame:
    """One row per ``kind`` trigger with a holdout arm: ``user_id, sec, sent, holdout,
    p_holdout, opened, clicked, converted, revenue`` (outcomes of the push it became, NaN when
    it became none).

    Raises:
        DataError: an unknown kind, no ``holdout`` column, or no such trigger with an arm.
    """
    from pushrl.data.io import to_unix_seconds

    try:
        k = kind_of(kind).value
    except ValueError as exc:
        raise DataError(f"--trigger-kind: {exc}") from None
    if "holdout" not in triggers:
        raise DataError("the log's triggers have no `holdout` column (each row's per-kind "
                        "arm); export the log of a server that ran --trigger-holdout "
                        f"{k}=SHARE (`pushrl logs export`)")
    t = triggers[(triggers["kind"].astype(str) == k) & triggers["holdout"].notna()]
    if not len(t):
        raise DataError(f"no {k!r} trigger carries a holdout arm; start the server with "
                        f"--trigger-holdout {k}=SHARE")
    cols = [c for c in OUTCOMES if c in pushes]
    out = pd.DataFrame({"user_id": t["user_id"].astype(str).to_numpy(),
                        "sec": to_unix_seconds(t["event_ts"]),
                        "sent": (t["status"].astype(str) == "sent").to_numpy(),
                        "holdout": t["holdout"].astype("Float64").astype(float).to_numpy(),
                        "p_holdout": t["p_holdout"].astype(float).to_numpy()
                        if "p_holdout" in t else np.nan,
                        "decision_id": t["decision_id"].astype(str).to_numpy()})
    p = pd.DataFrame({"decision_id": pushes["decision_id"].astype(str),
                      **{c: pushes[c].astype("Float64").astype(float) for c in cols}})
    out = out.merge(p, on="decision_id", how="left").drop(columns="decision_id")
    for c in OUTCOMES:
        if c not in out:
            out[c] = np.nan
    return out


def from_log(data: str | Path, kind: str, *, pre_days: float | None = None) -> LiftData:
    """The per-user table of ``pushrl lift DATA --trigger-kind K`` (module docstring)."""
    from pushrl.data.io import read_tables

    t = read_tables(data)
    if "triggers" not in t or not len(t["triggers"]):
        raise DataError(f"{data}: the log has no `triggers` rows (pushlog v1.1)")
    rows = kind_rows(t["triggers"], t["pushes"], kind)
    act = activity_frame(t["activity"])
    return from_decisions(rows, act, f"{data} (trigger kind {kind_of(kind).value})", pre_days)
