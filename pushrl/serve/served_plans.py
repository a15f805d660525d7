"""Plans the server serves: ``pushrl serve --plan FILE`` and ``GET /v1/users/{id}/plan``.

A plan file (:func:`pushrl.serve.plan.write_plan`, ``pushrl plan --out FILE``) is computed
before its day from the state at that time. A sender can read the Parquet directly; a
service that wants one user's planned sends asks the server, which holds every loaded plan in
memory, indexed by user (one ``searchsorted`` over the user-sorted rows per lookup).

The answer carries the rows as planned (hours, items, probabilities, reasons, policies) and
the user's *live* status from the server's state (unsubscribed since, held out), because a
plan's guardrails were applied at plan time: a sender drops a planned send for a user who
has unsubscribed since (``live.subscribed`` false).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushrl.data.io import to_unix_seconds
from pushrl.errors import PushrlError
from pushrl.serve.plan import PLAN_COLUMNS

_FLOATS = ("pscore", "p_send", "pscore_item")


@dataclass(frozen=True)
class PlanFile:
    """One loaded plan file: its path, sha256 and the meta ``pushrl plan`` wrote."""

    path: str
    sha256: str
    meta: dict[str, Any]


def check_plan_files(paths: list[Path] | tuple[Path, ...]) -> None:
    """Refuse (one line) a missing file or one that is not a ``pushrl plan`` file, reading
    only the Parquet schemas (the CLI checks this before the server starts)."""
    import pyarrow.parquet as pq

    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise PushrlError(f"--plan {path}: no such file; write one with `pushrl plan "
                              f"--state DIR --date YYYY-MM-DD --out {path}`")
        try:
            schema = pq.read_schema(path)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise PushrlError(f"--plan {path}: not a readable Parquet file ({exc}); "
                              f"re-run `pushrl plan`") from None
        missing = [c for c in PLAN_COLUMNS if c not in schema.names]
        if b"pushrl_plan" not in (schema.metadata or {}) or missing:
            what = f"columns {missing} missing" if missing else "no pushrl_plan metadata"
            raise PushrlError(f"--plan {path}: not a `pushrl plan` file ({what}); write it "
                              f"with `pushrl plan --out`")


class ServedPlans:
    """Every loaded plan's rows, sorted by ``(user_id, ts)``.

    Args:
        paths: Plan Parquet files (``pushrl plan --out``), e.g. one per day. The same
            user-hour in two files is refused (two plans for one hour).

    Raises:
        PushrlError: a file is missing, not a plan, or two files plan the same user-hour.
    """

    def __init__(self, paths: list[Path] | tuple[Path, ...]) -> None:
        import pyarrow.parquet as pq

        check_plan_files(paths)
        frames, files = [], []
        for p in paths:
            path = Path(p)
            table = pq.read_table(path)
            raw = (table.schema.metadata or {})[b"pushrl_plan"]
            frames.append(table.select(list(PLAN_COLUMNS)).to_pandas())
            files.append(PlanFile(str(path), hashlib.sha256(path.read_bytes()).hexdigest(),
                                  json.loads(raw)))
        df = (pd.concat(frames, ignore_index=True) if frames
              else pd.DataFrame({c: [] for c in PLAN_COLUMNS}))
        df["user_id"] = df["user_id"].astype(str)
        df["ts"] = to_unix_seconds(df["ts"]) if len(df) else df["ts"].astype(np.int64)
        df = df.sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)
        dup = df.duplicated(["user_id", "ts"])
        if dup.any():
            r = df[dup].iloc[0]
            raise PushrlError(f"--plan: user {r['user_id']} hour {int(r['ts'])} is planned "
                              f"twice (overlapping plan files); load each day once")
        self.files = tuple(files)
        self._users = df["user_id"].to_numpy(dtype=object).astype(str)
        self._frame = df

    def __len__(self) -> int:
        return len(self._frame)

    def rows(self, user_id: str) -> list[dict[str, Any]]:
        """The user's planned hours in time order (empty if no plan has the user); ``ts`` as
        ISO 8601 UTC, probabilities as floats, missing values as None."""
        lo = int(np.searchsorted(self._users, user_id, side="left"))
        hi = int(np.searchsorted(self._users, user_id, side="right"))
        out = []
        for rec in self._frame.iloc[lo:hi].to_dict("records"):
            row: dict[str, Any] = {}
            for k, v in rec.items():
                if k == "user_id":
                    continue
                if k == "ts":
                    row[k] = dt.datetime.fromtimestamp(int(v), dt.UTC).isoformat().replace(
                        "+00:00", "Z")
                elif v is None or (isinstance(v, float) and np.isnan(v)):
                    row[k] = None
                elif k in _FLOATS:
                    row[k] = float(v)
                elif k == "send":
                    row[k] = bool(v)
                elif k == "local_hour":
                    row[k] = int(v)
                else:
                    row[k] = v
            out.append(row)
        return out

    def describe(self) -> list[dict[str, Any]]:
        """One entry per loaded file: path, sha256 and its plan's date, users and policies."""
        keys = ("date", "users", "sends", "timing_policy", "item_policy", "all_hours")
        return [{"path": f.path, "sha256": f.sha256,
                 **{k: f.meta[k] for k in keys if k in f.meta}} for f in self.files]


def user_plan(plans: ServedPlans | None, state: Any, user_id: str) -> dict[str, Any]:
    """``GET /v1/users/{user_id}/plan``: the user's planned hours and live status.

    Raises:
        NotFound: no plan is loaded (``no_plan``).
    """
    from pushrl.serve.errors import NotFound

    if plans is None:
        raise NotFound("no_plan", "this server serves no plan; start it with --plan FILE "
                                  "(written by `pushrl plan --out FILE`)")
    live: dict[str, Any] = {"known": False, "subscribed": None, "held_out": None}
    idx = state.users.get(user_id)
    if idx is not None:
        held = state.held_out.mask(np.array([idx], np.int64))
        live = {"known": True, "subscribed": bool(state.subscriptions.is_subscribed(idx)),
                "held_out": None if held is None else bool(held[0])}
    return {"user_id": user_id, "hours": plans.rows(user_id), "live": live,
            "plans": plans.describe()}
