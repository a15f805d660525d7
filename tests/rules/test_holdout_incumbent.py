"""``Holdout.incumbent``: parsing, JSON round trip (older dicts without it mean no push) and the
simulator's incumbent (held-out users get its decisions, never the active policy's)."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.compare.runner import PolicySpec
from pushrl.envs.rollout import rollout
from pushrl.rules.holdout import NO_PUSH, Holdout


def test_incumbent_round_trip_and_defaults() -> None:
    h = Holdout(0.1, "s", "c", incumbent="most-active-hour")
    assert h.has_incumbent and Holdout.from_dict(h.to_dict()) == h
    old = Holdout.from_dict({"share": 0.1, "salt": "s", "campaign": "c"})
    assert old.incumbent == NO_PUSH and not old.has_incumbent
    assert "incumbent" not in old.to_dict()  # an old state's stored holdout is unchanged
    assert not Holdout(0.0, incumbent="most-active-hour").has_incumbent
    # the incumbent does not move users between the arms
    ids = [f"u{i}" for i in range(500)]
    np.testing.assert_array_equal(h.held_out(ids), Holdout(0.1, "s", "c").held_out(ids))


@pytest.mark.parametrize("bad", ["", "   ", 3])
def test_bad_incumbent_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="incumbent"):
        Holdout(0.1, incumbent=bad)  # type: ignore[arg-type]


def test_rollout_incumbent_decides_for_held_out_users() -> None:
    active = PolicySpec.parse("never-send").load()
    inc = PolicySpec.parse("most-active-hour").load()
    hold = Holdout(0.5, "t", incumbent="most-active-hour")
    kw = dict(n_users=300, days=3, seed=4)
    r = rollout(active, "default", holdout=hold, incumbent=inc, **kw)
    ref = rollout(inc, "default", **kw)  # the incumbent alone, same users and numbers
    held = r.extra["held_out"]
    assert 0 < held.sum() < held.size
    assert r.sends[~held].sum() == 0  # the active policy never sends
    # held-out users are exactly the incumbent's users (common random numbers)
    np.testing.assert_array_equal(r.sends[held], ref.sends[held])
    assert r.sends[held].sum() > 0
    # and without an incumbent they get nothing
    r0 = rollout(inc, "default", holdout=Holdout(0.5, "t"), **kw)
    assert r0.sends[r0.extra["held_out"]].sum() == 0
