"""Organic purchases (pushrl.sim.organic): off by default, common random numbers, pushes change
them only through the need, and the objective counts them (rules.reward)."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.compare.runner import PolicySpec
from pushrl.envs.rollout import rollout
from pushrl.envs.scenario import load_scenario
from pushrl.envs.world import make_world
from pushrl.rules.holdout import Holdout
from pushrl.rules.reward import RewardWeights, realised
from pushrl.sim.organic import OrganicParams

KW = dict(n_users=400, days=7, seed=3, truth=True)


def test_off_by_default_and_the_default_world_is_unchanged() -> None:
    pol = PolicySpec.parse("most-active-hour").load()
    a = rollout(pol, "default", **KW)
    assert not load_scenario("default").organic
    assert a.extra["organic_conversions"].sum() == 0
    b = rollout(pol, "default", organic_purchases=False, **KW)
    np.testing.assert_array_equal(a.objective, b.objective)


def test_organic_purchases_and_segments() -> None:
    never = PolicySpec.parse("never-send").load()
    r = rollout(never, "default", organic_purchases=True, **KW)
    org = r.extra["organic_conversions"]
    assert org.sum() > 0 and r.sends.sum() == 0
    model = make_world(load_scenario("default", truth=True, organic_purchases=True)).response
    loyal = model.organic.loyal[r.user]  # type: ignore[attr-defined]
    assert 0.2 < loyal.mean() < 0.4  # the top 30 % by session rate (a bootstrap of them)
    assert org[loyal].mean() > 5 * org[~loyal].mean()
    # the objective counts organic revenue with the revenue weight (no push: nothing else)
    w = load_scenario("default").reward
    np.testing.assert_allclose(r.objective, w.organic * w.revenue * r.extra["organic_revenue"])


def test_unpushed_users_have_the_same_organic_purchases_as_under_no_push() -> None:
    pol = PolicySpec.parse("most-active-hour").load()
    never = PolicySpec.parse("never-send").load()
    hold = Holdout(0.5, "org")
    r = rollout(pol, "default", organic_purchases=True, holdout=hold, **KW)
    n = rollout(never, "default", organic_purchases=True, **KW)
    held = r.extra["held_out"]
    assert held.any() and r.sends[~held].sum() > 0
    np.testing.assert_array_equal(r.extra["organic_conversions"][held],
                                  n.extra["organic_conversions"][held])


def test_reward_counts_organic_outcomes_with_their_weight() -> None:
    w = RewardWeights(convert=0.5)
    kw = dict(delivered=0, opened=0, clicked=0, revenue=0.0, unsubscribed=0)
    r = realised(w, organic_converted=2.0, organic_revenue=100.0, **kw)
    assert r == pytest.approx(w.revenue * 100 + 0.5 * 2)
    w0 = RewardWeights(convert=0.5, organic=0.0)
    assert realised(w0, organic_converted=2.0, organic_revenue=100.0, **kw) == 0.0


@pytest.mark.parametrize("kw, match", [({"loyal_share": 1.5}, "loyal_share"),
                                       ({"buy_loyal": -0.1}, "buy_loyal"),
                                       ({"need_ramp_h": 0}, "need_ramp_h")])
def test_bad_params(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OrganicParams(**kw)
