"""``GET /v1/users/{user_id}/profile``: a user's profile from the server's live state.

The same computation as ``pushrl profiles`` (:func:`pushrl.data.profiles.profile_rows`) on
the server's :class:`~pushrl.data.features.FeatureState` (a copy of the user's slot, so a
read never moves the live clock) and the user's
:class:`~pushrl.data.profiles.ProfileCounters`:

- ``pushrl state import`` writes (:func:`~pushrl.data.profiles.write_snapshot`)
  ``history/profiles.npz`` (every imported user's counters at
  the end of the log) and ``history/profile_model.json`` (the profile model fitted there:
  churn model, RFM cuts, channel rates; the same fit as ``pushrl profiles`` on that log),
  both under the history's sha256 check;
- what the server recorded since (the durable log's ``activity`` rows and sent
  ``decisions`` with their outcomes, on their logged channel, else ``push``) is added to the
  counters per request.

So right after an import, a user's profile at the log's end equals the batch profile of the
same log exactly (``tests/serve/test_profiles.py``). A server without imported history has
no churn model (``churn_risk`` null) and RFM cuts of 0. The work runs in a worker thread
(its own read-only SQLite connection; the log's tables have no ``user_id`` index, so the
live rows are a scan of what the server recorded since the import).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pushrl.data.features import FeatureState
from pushrl.data.profiles import (
    COUNTERS_FILE,
    DEFAULT_CHANNEL,
    MODEL_FILE,
    ProfileCounters,
    ProfileModel,
    profile_rows,
)
from pydantic import TypeAdapter, ValidationError

from pushrl.serve.errors import Conflict, Unprocessable
from pushrl.serve.history import HISTORY_DIR, history_meta
from pushrl.serve.schemas import Timestamp
from pushrl.serve.store import LOG_FILE, DurableLog, StateError
from pushrl.units import HOUR

if TYPE_CHECKING:
    from pushrl.serve.server import Server

class LiveProfiles:
    """The imported profile snapshot of a state dir, loaded on first use.

    Args:
        state_dir: The server's state directory.
        sums: The history's sha256 per file (None: no history was imported).
    """

    def __init__(self, state_dir: str | Path, sums: dict[str, str] | None) -> None:
        self.dir = Path(state_dir)
        self.sums = sums or {}
        self._loaded: tuple[ProfileCounters | None, ProfileModel | None] | None = None

    @classmethod
    def of(cls, log: DurableLog) -> LiveProfiles:
        """The snapshot of the state dir of ``log`` (as its history meta row names it)."""
        meta = history_meta(log)
        return cls(log.dir, None if meta is None else meta.get("sha256"))

    def load(self) -> tuple[ProfileCounters | None, ProfileModel | None]:
        """``(counters of the imported users, model)``; None for what was not imported.

        Raises:
            StateError: A snapshot file is missing or fails its checksum.
        """
        if self._loaded is None:
            from pushrl.data.io import sha256_file

            counters = model = None
            hdir = self.dir / HISTORY_DIR
            for name in (COUNTERS_FILE, MODEL_FILE):
                if name in self.sums and (not (hdir / name).exists()
                                          or sha256_file(hdir / name) != self.sums[name]):
                    raise StateError(f"{hdir / name} is missing or damaged (sha256 differs "
                                     "from the import's); re-run `pushrl state import`")
            if COUNTERS_FILE in self.sums:
                with np.load(hdir / COUNTERS_FILE, allow_pickle=False) as z:
                    counters = ProfileCounters.from_arrays({k: z[k] for k in z.files})
            if MODEL_FILE in self.sums:
                model = ProfileModel.from_json((hdir / MODEL_FILE).read_text())
            self._loaded = (counters, model)
        return self._loaded


def _default_model(fs: FeatureState) -> ProfileModel:
    return ProfileModel(0, None, [], [], "event", [1.0, 1.0], [0.0, 0.0], [DEFAULT_CHANNEL],
                        [fs.spec.prior_open_rate], [0.0],
                        {"error": "no imported history: no churn model"})


def _live_rows(db: Path, user_id: str, c: ProfileCounters) -> None:
    """Add what the server recorded for ``user_id`` (row 0 of ``c``)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        act = conn.execute("SELECT ts, event, revenue FROM activity WHERE user_id=?",
                           (user_id,)).fetchall()
        cols = {r[1] for r in conn.execute("PRAGMA table_info(decisions)")}
        ch = "channel" if "channel" in cols else "NULL"  # (--channels: serve/channels.py)
        dec = conn.execute(f"SELECT ts, opened, clicked, {ch} FROM decisions WHERE user_id=? "
                           "AND sent=1", (user_id,)).fetchall()
    finally:
        conn.close()
    if act:
        ts, ev, rev = zip(*act, strict=True)
        c.record_activity(np.zeros(len(act), np.int64), np.asarray(ts, np.int64) // HOUR,
                          np.asarray(ev, dtype=object),
                          np.array([np.nan if r is None else r for r in rev], np.float64))
    # each push on its logged channel (none logged: push); a channel the model lacks: skipped
    dec = [d for d in dec if (d[3] or DEFAULT_CHANNEL) in c.channels]
    if dec:
        ts, op, cl, chan = zip(*dec, strict=True)
        c.record_pushes(np.zeros(len(dec), np.int64), np.asarray(ts, np.int64) // HOUR,
                        np.array([c.channels.index(x or DEFAULT_CHANNEL) for x in chan],
                                 np.int64),
                        np.array([bool(x) for x in op]), np.array([bool(x) for x in cl]))


def parse_time(v: str) -> datetime:
    """``as_of`` (unix seconds or ISO 8601 with offset, within the server's time window) as
    the request schemas parse a ``ts``.

    Raises:
        Unprocessable: Not such a time (422).
    """
    try:
        t: datetime = TypeAdapter(Timestamp).validate_python(
            int(v) if re.fullmatch(r"[0-9]{1,12}", v) else v)
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise Unprocessable("invalid_as_of", f"as_of {v!r}: {msg}") from None
    return t


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def compute(fs_copy: FeatureState, counters: ProfileCounters, model: ProfileModel,
            bucket: int, db: Path, user_id: str) -> dict[str, Any]:
    """The profile of the single user of ``fs_copy`` / ``counters`` at ``bucket`` (worker
    thread)."""
    _live_rows(db, user_id, counters)
    cols = profile_rows(fs_copy, np.zeros(1, np.int64), counters, bucket, model)
    return {k: _jsonable(v[0]) for k, v in cols.items()}


async def user_profile(srv: Server, user_id: str, as_of: str | None) -> dict[str, Any]:
    """``GET /v1/users/{user_id}/profile``: 404 for an unknown user, 409 for a time before
    the user's state; ``as_of`` default: now, or the user's clock when that is later."""
    await srv.idle()
    st = srv.state
    u = st.user_index(user_id)  # NotFound -> 404
    clock = int(st.fs.clock(u))
    if as_of is None:
        bucket = max(srv.now() // HOUR, clock)
    else:
        bucket = int(parse_time(as_of).timestamp()) // HOUR
        if bucket < clock:
            raise Conflict("time_before_state", f"as_of is {clock - bucket} h before the "
                           "user's state (later events or decisions were recorded); profiles "
                           "cannot be computed for the past: omit as_of or pass a later time")
    counters_all, model = await asyncio.to_thread(srv.live_profiles.load)
    if model is None:
        model = _default_model(st.fs)
    if counters_all is not None and u < counters_all.n:
        counters = counters_all.take(np.array([u]))
    else:
        counters = ProfileCounters.empty(1, model.channels)
    sub = st.fs.copy_users(np.array([u]))  # on the loop: a consistent copy of one slot
    prof = await asyncio.to_thread(compute, sub, counters, model, bucket,
                                   Path(srv.log.dir) / LOG_FILE, user_id)
    return {"user_id": user_id,
            "as_of": str(pd.Timestamp(bucket * HOUR, unit="s", tz="UTC").isoformat()),
            "profile": prof}
