"""Live holdouts: the ONE definition of which users a campaign never pushes.

A holdout keeps a sticky random share of users away from a campaign so that its incremental
effect can be measured on live traffic (``pushrl lift``): the held-out users are the control
arm, everybody else the treated arm. The rules, for the simulator and the server alike:

* **Assignment** is a seeded hash of the opaque user id (:func:`pushrl.data.split.user_uniform`,
  the same hash as the training/evaluation split, salted ``pushrl-holdout:CAMPAIGN:SALT:``):
  user ``u`` is held out when its uniform number is below ``share``. It depends on nothing
  else (not on arrival order, time, other users or the process), so it is sticky across
  restarts and machines, and it is independent of the training split (another salt).
* **Probability**: every user has the same probability ``share`` of being held out; each
  decision logs its arm (``holdout`` 1/0) and ``p_holdout = share``.
* **Never leaks**: a held-out user is never sent the campaign. It is a guardrail
  (:data:`pushrl.rules.guardrails.HELD_OUT`, checked before all others), so it masks ``SEND``
  for every policy, in the simulator and in the server.
* A state that ran under one holdout refuses another ``share``/``salt``/``campaign`` (changing
  them would move users between the arms mid-experiment and break the comparison).

``share = 0`` means no holdout (no user is held out; decisions log no arm).

**Incumbent**: held-out users get no push by default (``incumbent = "none"``), which
measures the campaign against nothing. With ``incumbent = NAME`` (a baseline timing policy,
e.g. ``most-active-hour`` or ``most-active-hour:sends_per_day=1``: what ran before) they are
decided by that policy instead, which measures the active policy against the incumbent. The
active policy's decisions are never used for them (no leak): the simulator
(``rollout(..., incumbent=)``) and the server (:mod:`pushrl.serve.engine`) replace them by
the incumbent's before sampling. The incumbent does not change who is held out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pushrl.data.split import user_uniform
from pushrl.rules.triggers import TriggerKind

#: Largest share a holdout may keep away from a campaign.
MAX_SHARE = 0.5
#: ``Holdout.incumbent`` of a holdout whose users get no push.
NO_PUSH = "none"


@dataclass(frozen=True)
class Holdout:
    """A campaign's live holdout.

    Attributes:
        share: Probability that a user is held out, in [0, 0.5] (0 = no holdout).
        salt: Salt of the user hash (another salt, another independent assignment).
        campaign: Campaign name (part of the hash key: campaigns hold out different users).
        incumbent: Policy of the held-out users: ``"none"`` (no push) or a baseline spec
            ``NAME[:k=v,...]`` (module docstring).
    """

    share: float = 0.0
    salt: str = "0"
    campaign: str = "default"
    incumbent: str = NO_PUSH

    def __post_init__(self) -> None:
        s = self.share
        if isinstance(s, bool) or not isinstance(s, int | float | np.floating) or not (
                0.0 <= float(s) <= MAX_SHARE):
            raise ValueError(f"holdout share must be a number in [0, {MAX_SHARE}], got {s!r}; "
                             "e.g. 0.05 holds out 5 % of the users")
        object.__setattr__(self, "share", float(s))
        for name in ("salt", "campaign"):
            v = getattr(self, name)
            if not isinstance(v, str | int) or isinstance(v, bool) or not str(v):
                raise ValueError(f"holdout {name} must be a non-empty string, got {v!r}")
            object.__setattr__(self, name, str(v))
        inc = self.incumbent
        if not isinstance(inc, str) or not inc.strip():
            raise ValueError(f"holdout incumbent must be 'none' or a baseline policy name "
                             f"(e.g. 'most-active-hour'), got {inc!r}")
        object.__setattr__(self, "incumbent", inc.strip())

    @property
    def has_incumbent(self) -> bool:
        """True when held-out users are decided by an incumbent policy (not "no push")."""
        return self.active and self.incumbent != NO_PUSH

    @property
    def active(self) -> bool:
        """True when some users are held out (``share > 0``)."""
        return self.share > 0.0

    @property
    def key(self) -> str:
        """The hash salt of :func:`~pushrl.data.split.user_uniform`."""
        return f"pushrl-holdout:{self.campaign}:{self.salt}:"

    def held_out(self, user_ids: np.ndarray | list[str]) -> np.ndarray:
        """bool ``(n,)``: True for the held-out users among ``user_ids``."""
        ids = np.asarray(user_ids, dtype=object)
        if not self.active or not ids.size:
            return np.zeros(ids.shape, bool)
        return user_uniform(ids, self.key) < self.share

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the server's durable config, scenario files, reports)."""
        d: dict[str, Any] = {"share": self.share, "salt": self.salt, "campaign": self.campaign}
        if self.incumbent != NO_PUSH:  # older states stored no incumbent: the same meaning
            d["incumbent"] = self.incumbent
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Holdout:
        """From :meth:`to_dict` output.

        Raises:
            ValueError: unknown keys or invalid values.
        """
        unknown = set(d) - {"share", "salt", "campaign", "incumbent"}
        if unknown:
            raise ValueError(f"unknown holdout keys {sorted(unknown)}; known: campaign, "
                             "incumbent, salt, share")
        return cls(**d)

    def describe(self) -> str:
        """One line: ``holdout 5 % of campaign 'default' (salt '0')``."""
        inc = "" if self.incumbent == NO_PUSH else f", incumbent {self.incumbent!r}"
        return (f"holdout {100 * self.share:g} % of campaign {self.campaign!r} "
                f"(salt {self.salt!r}{inc})")


def kind_of(name: str) -> TriggerKind:
    """The trigger kind named ``name``.

    Raises:
        ValueError: not a kind.
    """
    try:
        return TriggerKind(name.strip())
    except ValueError:
        known = ", ".join(k.value for k in TriggerKind)
        raise ValueError(f"unknown trigger kind {name!r}; known: {known}") from None


def parse_trigger_holdouts(specs: Iterable[str] | Mapping[str, Any], salt: str = "0"
                           ) -> dict[TriggerKind, Holdout]:
    """Per-trigger-kind holdouts, one :class:`Holdout` per kind (campaign = the kind's name,
    so kinds hold out independent users): ``KIND=SHARE`` strings (``pushrl serve
    --trigger-holdout``) or a ``{kind: share}`` table (a scenario's ``[holdout.triggers]``).

    Raises:
        ValueError: a malformed spec, an unknown kind, a kind given twice or a bad share.
    """
    pairs: list[tuple[str, Any, str]] = []
    if isinstance(specs, Mapping):
        pairs = [(str(k), v, f"{k} = {v!r}") for k, v in specs.items()]
    else:
        for spec in specs:
            name, eq, share = spec.partition("=")
            if not eq:
                raise ValueError(f"--trigger-holdout must be KIND=SHARE (e.g. cart=0.05), "
                                 f"got {spec!r}")
            pairs.append((name, share, spec))
    out: dict[TriggerKind, Holdout] = {}
    for name, share, spec in pairs:
        kind = kind_of(name)
        if kind in out:
            raise ValueError(f"trigger holdout gives kind {kind.value!r} twice")
        try:
            value = float(share)
        except (TypeError, ValueError):
            raise ValueError(f"trigger holdout {spec!r}: share must be a number in "
                             "[0, 0.5], e.g. 0.05") from None
        out[kind] = Holdout(value, str(salt), kind.value)
    return out
