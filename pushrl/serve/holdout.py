"""The server's live holdout: the shared rule (:mod:`pushrl.rules.holdout`) on its users.

* :class:`HeldOut` answers "is user index ``u`` held out?" for the decision path: the arm of
  each user is hashed from the opaque user id once (lazily, so a start on millions of
  imported users costs nothing) and cached by index. Its mask is passed to the guardrails as
  ``held_out`` (:func:`pushrl.serve.guardrails.check`), so a held-out user is never sent.
* :func:`bind` makes the holdout durable: the first start with ``--holdout`` writes it into
  the log's ``meta`` table (key :data:`META_KEY`); later starts use the stored one (the flag
  may be omitted) and refuse a different share, salt or campaign with one line
  (:func:`check`, also run by ``pushrl serve`` before the server starts).

Every decision row logs the user's arm (``holdout`` 1 = held out, 0 = treated; NULL without a
holdout) and its probability ``p_holdout`` (= the share), and so does ``pushrl logs export``
(pushes columns ``holdout``, ``p_holdout``).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pushrl.errors import DataError
from pushrl.rules.holdout import Holdout
from pushrl.serve.store import LOG_FILE, DurableLog, StateError

if TYPE_CHECKING:
    from pushrl.compare.lift import LiftData

#: ``meta`` key of the stored holdout (JSON of :meth:`Holdout.to_dict`).
META_KEY = "holdout"


class HeldOut:
    """Holdout arm per user index (module docstring).

    Args:
        holdout: The server's holdout (None or share 0: nobody is held out).
    """

    def __init__(self, holdout: Holdout | None = None) -> None:
        self.holdout = holdout if holdout is not None and holdout.active else None
        self._arm = np.zeros(0, np.int8)  # -1 unknown, 0 treated, 1 held out
        self._users: dict[str, int] = {}
        self._ids: list[str] | None = None  # index -> id, built on the first unknown arm

    @property
    def share(self) -> float | None:
        """The holdout's share (the logged ``p_holdout``), None without a holdout."""
        return None if self.holdout is None else self.holdout.share

    def reset(self, users: dict[str, int]) -> None:
        """Forget every arm (after a rebuild); ``users`` maps ids to indices."""
        self._users = users
        self._ids = None
        self._arm = np.full(len(users), -1, np.int8)

    def add(self, idx: int, user_id: str) -> None:
        """A new user (index ``idx``): its arm is hashed now (one blake2b)."""
        if self.holdout is None:
            return
        self._grow(idx + 1)
        self._arm[idx] = int(self.holdout.held_out([user_id])[0])
        if self._ids is not None:
            self._ids.extend([""] * (idx + 1 - len(self._ids)))
            self._ids[idx] = user_id

    def _grow(self, n: int) -> None:
        k = self._arm.size
        if n > k:  # at least double: users are added one at a time
            self._arm = np.concatenate([self._arm, np.full(max(n, 2 * k) - k, -1, np.int8)])

    def mask(self, users: np.ndarray) -> np.ndarray | None:
        """bool ``(n,)``: True where user index ``users[i]`` is held out; None without a
        holdout (the guardrail then costs nothing)."""
        if self.holdout is None:
            return None
        u = np.asarray(users, np.int64)
        if u.size:
            self._grow(int(u.max()) + 1)
        arm = self._arm[u]
        unknown = arm < 0
        if unknown.any():
            if self._ids is None or len(self._ids) < len(self._users):
                ids = [""] * len(self._users)
                for uid, i in self._users.items():
                    ids[i] = uid
                self._ids = ids
            todo = np.unique(u[unknown])
            self._arm[todo] = self.holdout.held_out([self._ids[i] for i in todo.tolist()])
            arm = self._arm[u]
        return arm == 1


def _stored(conn: sqlite3.Connection, key: str = META_KEY) -> Holdout | None:
    row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return None if row is None else Holdout.from_dict(json.loads(row[0]))


def _refuse(stored: Holdout, wanted: Holdout, where: Path, flag: str = "--holdout"
            ) -> StateError:
    return StateError(
        f"the state dir {where} runs {stored.describe()}; {flag} asks for "
        f"{wanted.describe()}: changing the share, salt, campaign or incumbent of a running "
        "holdout would move users between the arms or change what they get and break the lift "
        f"measurement; omit {flag} to keep "
        "it, or start the new holdout in a new --state")


def check(state_dir: str | Path, holdout: Holdout | None, *, key: str = META_KEY,
          flag: str = "--holdout") -> Holdout | None:
    """The holdout a server on ``state_dir`` will run (read-only; before it starts).

    ``key``: its ``meta`` key (another one for each per-trigger-kind holdout,
    :mod:`pushrl.serve.trigger_holdout`); ``flag``: the option named in the refusal.

    Returns:
        The stored holdout, else ``holdout``.

    Raises:
        StateError: ``holdout`` differs from the stored one.
    """
    db = Path(state_dir) / LOG_FILE
    if not db.exists() or db.stat().st_size == 0:
        return holdout
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        stored = _stored(conn, key)
    except sqlite3.OperationalError:  # no meta table yet
        stored = None
    finally:
        conn.close()
    if stored is not None and holdout is not None and stored != holdout:
        raise _refuse(stored, holdout, Path(state_dir), flag)
    return stored if stored is not None else holdout


def bind(log: DurableLog, holdout: Holdout | None, *, key: str = META_KEY,
         flag: str = "--holdout") -> Holdout | None:
    """Store ``holdout`` in the log on its first start; the holdout to run (:func:`check`;
    ``key``, ``flag`` as there).

    Raises:
        StateError: ``holdout`` differs from the stored one.
    """
    stored = _stored(log.reader, key)
    if stored is not None:
        if holdout is not None and stored != holdout:
            raise _refuse(stored, holdout, log.dir, flag)
        return stored
    if holdout is not None and holdout.active:
        log.write([("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    (key, json.dumps(holdout.to_dict(), sort_keys=True)))])
    return holdout


def lift_data(state: str | Path, *, pre_days: float | None = None) -> LiftData:
    """The per-user table of ``pushrl lift --state DIR`` (read-only; the log's decisions
    with a holdout arm and its activity events; :mod:`pushrl.compare.lift`)."""
    from pushrl.compare.lift import from_decisions

    p, act, _ = read_lift_rows(
        state, "decisions",
        "SELECT user_id, ts AS sec, sent, holdout, p_holdout, opened, clicked, converted, "
        "revenue FROM decisions WHERE holdout IS NOT NULL", (),
        "the log predates live holdouts (no `holdout` column); start the server with "
        "--holdout SHARE")
    return from_decisions(p, act, str(state), pre_days)


def read_lift_rows(state: str | Path, table: str, query: str, params: tuple[Any, ...],
                   no_arms: str) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """What a lift reads from a server's log (read-only): ``query``'s rows (one per
    decision with a holdout arm) and the activity events (``revenue`` 0 where missing),
    and the log's path.

    Raises:
        DataError: no log, or ``table`` has no ``holdout`` column (``no_arms`` says why).
    """
    from pushrl.serve.store import connect

    path = Path(state) / LOG_FILE
    if not path.exists():
        raise DataError(f"no server log at {path}; pass the --state DIR the server used")
    conn = connect(path, readonly=True)
    try:
        cols = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if "holdout" not in cols:
            raise DataError(f"{path}: {no_arms}")
        p = pd.read_sql_query(query, conn, params=params)
        act = pd.read_sql_query("SELECT user_id, ts AS sec, event, revenue FROM activity", conn)
    finally:
        conn.close()
    act["revenue"] = act["revenue"].astype(float).fillna(0.0)
    return p, act, path


@dataclass(frozen=True)
class UpliftData:
    """One row per user of a server's holdout experiment, for
    :func:`pushrl.train.uplift.fit_uplift`.

    Attributes:
        raw: ``(n, N_FEATURES)`` float32 pipeline features of each user's first decision in
            the experiment (as logged by the server).
        treated: ``(n,)`` bool, False = held out.
        outcome: ``(n,)`` conversions per user: pushed (``converted`` feedback) plus
            ``purchase`` events (organic), the simulator's ``conversions`` outcome.
        sends: ``(n,)`` pushes sent per user.
        days: Length of the experiment in days.
        source: The state directory.
    """

    raw: np.ndarray
    treated: np.ndarray
    outcome: np.ndarray
    sends: np.ndarray
    days: float
    source: str


def uplift_data(state: str | Path, *, pre_days: float | None = None) -> UpliftData:
    """The holdout experiment of a server's log as uplift training rows (read-only): the
    per-user table of :func:`lift_data` joined with each user's first logged decision's
    features (the ``features`` column of ``decisions``).

    Raises:
        DataError: no log, no holdout, or decisions without features.
    """
    from pushrl.data.features import N_FEATURES
    from pushrl.serve.store import connect

    ld = lift_data(state, pre_days=pre_days)
    path = Path(state) / LOG_FILE
    conn = connect(path, readonly=True)
    try:
        first = pd.read_sql_query(
            "SELECT user_id, features FROM decisions WHERE holdout IS NOT NULL AND seq IN "
            "(SELECT MIN(seq) FROM decisions WHERE holdout IS NOT NULL GROUP BY user_id)", conn)
    finally:
        conn.close()
    width = N_FEATURES * 4
    bad = first["features"].map(lambda b: b is None or len(b) != width)
    if bad.any():
        raise DataError(f"{path}: {int(bad.sum())} users' first decisions have no "
                        f"{N_FEATURES}-feature row (e.g. {first['user_id'][bad].iloc[0]!r}); "
                        "the log was written by another pushrl version")
    raw = np.frombuffer(b"".join(first["features"]), np.float32).reshape(-1, N_FEATURES)
    row = pd.Series(np.arange(len(first)), index=first["user_id"].astype(str))
    u = ld.users
    ix = row.reindex(u["user_id"].astype(str)).to_numpy()
    outcome = (u["conversions"] + u["purchases"]).to_numpy(np.float64)
    return UpliftData(raw[ix.astype(np.int64)].copy(), ~u["held_out"].to_numpy(bool), outcome,
                      u["sends"].to_numpy(np.float64), ld.days, str(state))
