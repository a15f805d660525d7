"""The training recipe's safe choice among candidates and its derived unsubscribe weight."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.envs.rollout import rollout
from pushrl.envs.scenario import load_scenario
from pushrl.policies.baselines import make_baseline
from pushrl.train.select import (
    UNSUBSCRIBE_MARGIN,
    Paired,
    explain,
    qualifies,
    select_timing,
    user_value_penalty,
    with_sampling,
)


@pytest.fixture(scope="module")
def short() -> object:
    return load_scenario("default", horizon_days=4)


def test_paired_interval_is_mean_and_normal_se() -> None:
    a, b = np.array([1.0, 2.0, 4.0, 5.0]), np.array([0.0, 1.0, 1.0, 2.0])
    d = a - b
    p = Paired.of(a, b)
    half = 1.959963984540054 * d.std(ddof=1) / 2
    assert p.diff == pytest.approx(2.0)
    assert (p.lower, p.upper) == pytest.approx((2.0 - half, 2.0 + half))


def test_the_heuristic_ships_unless_a_candidate_beats_it(short) -> None:
    cands = {"never": make_baseline("never-send"), "same": make_baseline("most-active-hour"),
             "fixed": make_baseline("fixed-hour", hour=3)}
    sel = select_timing(cands, short, n_users=150, seed=1)
    # never-send and a 03:00 push (quiet hours: never delivered) lose; an identical policy
    # has a zero paired difference, so no candidate qualifies
    assert sel.name == "most-active-hour" and sel.qualified == ()
    assert sel.objective["same"].diff == 0.0 and sel.objective["never"].upper < 0
    assert sel.policy.name == "most-active-hour"


def test_a_better_candidate_ships(short) -> None:
    # two pushes a day at the most active hours beat one in the default fitted world
    two = make_baseline("most-active-hour", sends_per_day=2)
    sel = select_timing({"two": two}, short, n_users=300, seed=2)
    ref = rollout(make_baseline("most-active-hour"), short, n_users=300, seed=2)
    alt = rollout(two, short, n_users=300, seed=2)
    assert sel.objective["two"].diff == pytest.approx(float((alt.objective
                                                             - ref.objective).mean()))
    assert (sel.name == "two") == ("two" in sel.qualified)
    assert sel.qualified == (("two",) if sel.objective["two"].lower > 0
                             and sel.unsubscribed["two"].upper < UNSUBSCRIBE_MARGIN else ())
    assert sel.to_dict()["unsubscribe_margin"] == UNSUBSCRIBE_MARGIN


def test_non_inferiority_refuses_an_unproven_unsubscribe_increase() -> None:
    better = Paired(0.5, 0.2, 0.8)
    # the default world's shipped agent: lower bound just under 0, i.e. "not significantly
    # higher", but the increase may be +1.2 pp: the old rule shipped it, the margin refuses it
    served = Paired(0.006, -0.00003, 0.012)
    assert not qualifies(better, served, 0.005)
    assert qualifies(better, served, 0.015)
    assert qualifies(better, Paired(0.001, -0.002, 0.004), 0.005)
    assert not qualifies(better, Paired(0.0, 0.0, 0.0), 0.0)  # margin 0: prove a decrease
    assert qualifies(better, Paired(-0.01, -0.02, -0.001), 0.0)
    assert not qualifies(Paired(0.5, -0.1, 1.1), Paired(0.0, -0.01, -0.005), 0.005)


def test_the_margin_decides_and_is_recorded(short) -> None:
    # two pushes a day unsubscribe more users than one: a wide margin ships it (when its
    # objective gain is shown), margin 0 never does
    two = make_baseline("most-active-hour", sends_per_day=2)
    loose = select_timing({"two": two}, short, n_users=300, seed=2, unsubscribe_margin=0.5)
    strict = select_timing({"two": two}, short, n_users=300, seed=2, unsubscribe_margin=0.0)
    u = strict.unsubscribed["two"]
    assert u.diff == loose.unsubscribed["two"].diff and u.upper >= 0
    assert strict.qualified == () and strict.name == "most-active-hour"
    assert loose.qualified == (("two",) if loose.objective["two"].lower > 0 else ())
    assert (strict.unsubscribe_margin, loose.to_dict()["unsubscribe_margin"]) == (0.0, 0.5)
    if strict.objective["two"].lower > 0:
        assert "margin" in explain(strict, 300)


@pytest.mark.parametrize("margin", [-0.01, 1.0, float("nan")])
def test_bad_margins_are_refused(short, margin: float) -> None:
    with pytest.raises(ValueError, match="unsubscribe_margin"):
        select_timing({"x": make_baseline("never-send")}, short, n_users=10,
                      unsubscribe_margin=margin)


def test_truth_scenarios_are_refused(short) -> None:
    truth = load_scenario("default", horizon_days=2, truth=True)
    with pytest.raises(ValueError, match="fitted simulator"):
        select_timing({"x": make_baseline("never-send")}, truth, n_users=10)
    with pytest.raises(ValueError, match="fitted simulator"):
        user_value_penalty(truth, n_users=10)
    with pytest.raises(ValueError, match="at least one"):
        select_timing({}, short, n_users=10)


def test_user_value_penalty_adds_the_reference_value(short) -> None:
    pen, value = user_value_penalty(short, n_users=100, seed=3)
    ref = rollout(make_baseline("most-active-hour"), short, n_users=100, seed=3)
    assert value == pytest.approx(float(ref.objective.mean()))
    assert pen == pytest.approx(short.reward.unsubscribe_penalty + max(value, 0.0))


def test_with_sampling_doubles_ppo_policies_only() -> None:
    class Fake:
        deterministic = True

    out = with_sampling({"a": Fake(), "h": make_baseline("never-send")})
    assert set(out) == {"a/argmax", "a/sample", "h"}
    assert out["a/argmax"].deterministic and not out["a/sample"].deterministic
