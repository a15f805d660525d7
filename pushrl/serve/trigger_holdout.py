"""Per-trigger-kind live holdouts: a sticky share of users never sent one kind of trigger.

``pushrl serve --triggers ... --trigger-holdout cart=0.05 --trigger-holdout winback=0.1``
holds out, for each named kind, its own share of the users. Every rule is the ONE live
holdout's (:mod:`pushrl.rules.holdout`); this module only applies it per kind:

* **Assignment**: kind ``K`` is a :class:`~pushrl.rules.holdout.Holdout` whose campaign is
  the kind's name (hash salt ``pushrl-holdout:K:SALT:``), so kinds hold out independent users,
  independent of the scheduled campaign's holdout (``--holdout``, campaign ``default``).
* **Never leaks**: a user held out of ``K`` is never sent a ``K`` trigger: the tracker
  (:meth:`pushrl.rules.triggers.TriggerTracker.resolve_due`, ``held_out_kinds``) re-queues it
  until it expires, like the scheduled holdout's users; their other kinds' triggers and the
  scheduled pushes still reach them.
* **Logged**: every ``triggers`` row carries the user's arm for its kind (``holdout`` 1/0,
  ``p_holdout`` = the kind's share; NULL when the kind has no holdout).
* **Durable**: stored in the log's ``meta`` (key ``holdout:trigger:K``); a later start
  refuses another share or salt for a kind (:func:`check`), as the scheduled holdout does.

``pushrl lift --state DIR --trigger-kind K`` (:func:`lift_data`) compares the users with at
least one ``K`` trigger, split by their ``K`` arm.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pushrl.errors import DataError
from pushrl.rules.holdout import Holdout, kind_of
from pushrl.rules.triggers import TriggerKind
from pushrl.serve import holdout as _holdout
from pushrl.serve.holdout import HeldOut

if TYPE_CHECKING:
    from pushrl.compare.lift import LiftData
    from pushrl.serve.store import DurableLog

#: ``meta`` key prefix of a kind's stored holdout (``holdout:trigger:cart``).
META_PREFIX = "holdout:trigger:"


def _flag(kind: TriggerKind) -> str:
    return f"--trigger-holdout {kind.value}=..."


def check(state_dir: str | Path, holdouts: Mapping[TriggerKind, Holdout]
          ) -> dict[TriggerKind, Holdout]:
    """The per-kind holdouts a server on ``state_dir`` will run (stored ones, else
    ``holdouts``; read-only, before it starts).

    Raises:
        StateError: a kind's holdout differs from the stored one.
    """
    return _per_kind(lambda h, key, flag: _holdout.check(state_dir, h, key=key, flag=flag),
                     holdouts)


def bind(log: DurableLog, holdouts: Mapping[TriggerKind, Holdout]
         ) -> dict[TriggerKind, Holdout]:
    """Store new per-kind holdouts in the log; the ones to run (:func:`check`).

    Raises:
        StateError: a kind's holdout differs from the stored one.
    """
    return _per_kind(lambda h, key, flag: _holdout.bind(log, h, key=key, flag=flag), holdouts)


def _per_kind(one: Callable[[Holdout | None, str, str], Holdout | None],
              holdouts: Mapping[TriggerKind, Holdout]) -> dict[TriggerKind, Holdout]:
    """``one(holdout, meta key, flag)`` (the scheduled holdout's check or bind) for every
    kind; the active results."""
    out = {}
    for kind in TriggerKind:
        h = one(holdouts.get(kind), META_PREFIX + kind.value, _flag(kind))
        if h is not None and h.active:
            out[kind] = h
    return out


class KindHeldOut:
    """Holdout arm per user index for each kind with a holdout (:class:`HeldOut` each).

    Args:
        holdouts: ``{kind: holdout}`` (inactive ones are ignored).
    """

    def __init__(self, holdouts: Mapping[TriggerKind, Holdout] | None = None) -> None:
        self.kinds: dict[TriggerKind, HeldOut] = {
            k: HeldOut(h) for k, h in (holdouts or {}).items() if h.active}

    def reset(self, users: dict[str, int]) -> None:
        """Forget every arm (after a rebuild); ``users`` maps ids to indices."""
        for h in self.kinds.values():
            h.reset(users)

    def add(self, idx: int, user_id: str) -> None:
        """A new user (index ``idx``)."""
        for h in self.kinds.values():
            h.add(idx, user_id)

    def masks(self, users: np.ndarray) -> dict[TriggerKind, np.ndarray] | None:
        """``{kind: (k,) bool}``: user index ``users[i]`` is held out of the kind; None
        without per-kind holdouts (the tracker's fast path)."""
        if not self.kinds:
            return None
        return {k: h.mask(users) for k, h in self.kinds.items()}  # type: ignore[misc]

    def arm(self, kind: TriggerKind, user: int) -> tuple[int | None, float | None]:
        """``(holdout, p_holdout)`` of user index ``user`` for ``kind`` (None, None: the
        kind has no holdout)."""
        h = self.kinds.get(kind)
        if h is None:
            return None, None
        m = h.mask(np.array([user], np.int64))
        assert m is not None
        return int(m[0]), h.share


def lift_data(state: str | Path, kind: str, *, pre_days: float | None = None) -> LiftData:
    """The per-user table of ``pushrl lift --state DIR --trigger-kind K`` (read-only): the
    users with at least one ``K`` trigger, split by their ``K`` arm; their ``K`` trigger
    pushes' attributed outcomes and their activity (:func:`pushrl.compare.lift.from_decisions`:
    one row per ``K`` trigger, ``sent`` when it was).

    Raises:
        DataError: no log, an unknown kind, or no ``K`` trigger with a holdout arm.
    """
    from pushrl.compare.lift import from_decisions

    try:
        k = kind_of(kind)
    except ValueError as exc:
        raise DataError(f"--trigger-kind: {exc}") from None
    p, act, path = _holdout.read_lift_rows(
        state, "triggers",
        "SELECT t.user_id, t.event_ts AS sec, t.status = 'sent' AS sent, t.holdout, "
        "t.p_holdout, d.opened, d.clicked, d.converted, d.revenue FROM triggers t "
        "LEFT JOIN decisions d ON d.decision_id = t.decision_id "
        "WHERE t.kind = ? AND t.holdout IS NOT NULL", (k.value,),
        f"the log has no per-kind trigger holdouts; start the server with --trigger-holdout "
        f"{k.value}=SHARE")
    if not len(p):
        raise DataError(f"{path}: no {k.value!r} trigger carries a holdout arm; start the "
                        f"server with --trigger-holdout {k.value}=SHARE")
    return from_decisions(p, act, f"{state} (trigger kind {k.value})", pre_days)


def describe(holdouts: Mapping[TriggerKind, Holdout]) -> Sequence[str]:
    """One line per kind (the server's start-up log)."""
    return [f"trigger kind {k.value}: {h.describe()}" for k, h in holdouts.items()]
