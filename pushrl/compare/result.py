"""The result of a policy comparison, as pandas DataFrames (the notebook API)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass
class CompareResult:
    """Everything `pushrl compare` measured.

    Attributes:
        per_user: One row per (policy, seed, user): ``objective, sends, opens, clicks,
            conversions, revenue, unsubscribed, guardrail_blocks`` plus segment columns
            ``timezone`` and ``engagement``.
        summary: Per (policy, metric): ``value, lower, upper, se, n`` (95% CI).
        paired: Per (policy, metric): difference vs ``reference`` with its 95% CI.
        segments: ``{"timezone": df, "engagement": df}`` per-segment metrics.
        daily: Per (policy, day): ``objective`` (mean cumulative per unit) and ``subscribed``
            (share of units still subscribed at the end of the day).
        hourly: Per (policy, local_hour): ``sends`` per unit.
        activity_by_hour: Population organic activity share per local hour, shape ``(24,)``.
        meta: Scenario, users, days, seeds, reference, timings (``mode == "triggers"``:
            a delay-policy comparison, :mod:`pushrl.compare.triggers`).
        delays: Delay policies only: per (policy, kind, arm) the ``share`` of triggers
            given that arm (kind ``all`` = every trigger); None otherwise.
    """

    per_user: pd.DataFrame
    summary: pd.DataFrame
    paired: pd.DataFrame
    segments: dict[str, pd.DataFrame]
    daily: pd.DataFrame
    hourly: pd.DataFrame
    activity_by_hour: list[float]
    meta: dict[str, Any] = field(default_factory=dict)
    delays: pd.DataFrame | None = None

    @property
    def policies(self) -> list[str]:
        """Policy names in run order."""
        return list(dict.fromkeys(self.summary["policy"]))

    def table(self) -> pd.DataFrame:
        """Wide table: one row per policy, one column per metric (point values)."""
        return self.summary.pivot(index="policy", columns="metric", values="value").loc[
            self.policies]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (without per-user rows)."""
        return {
            "meta": self.meta,
            "summary": self.summary.to_dict(orient="records"),
            "paired": self.paired.to_dict(orient="records"),
            "segments": {k: v.to_dict(orient="records") for k, v in self.segments.items()},
            **({} if self.delays is None else
               {"delays": self.delays.to_dict(orient="records")}),
        }

    def save(self, out: str | Path) -> None:
        """Write ``result.json`` and Parquet copies of the frames into ``out``."""
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        (d / "result.json").write_text(json.dumps(self.to_dict(), indent=2, default=float))
        self.per_user.to_parquet(d / "per_user.parquet", index=False)
        self.daily.to_parquet(d / "daily.parquet", index=False)
        self.hourly.to_parquet(d / "hourly.parquet", index=False)
        if self.delays is not None:
            self.delays.to_parquet(d / "delays.parquet", index=False)
