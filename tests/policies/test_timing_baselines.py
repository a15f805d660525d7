"""Timing baselines: decisions, pscore, parameter errors, TOML definitions, the oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pushrl.data.features import F, N_FEATURES, FeatureSpec, FeatureState
from pushrl.envs import rollout
from pushrl.errors import ScenarioError
from pushrl.policies.base import SEND, TimingContext
from pushrl.policies.baselines import DEFINITIONS, definition, make_baseline
from pushrl.policies.oracle import TrueOracle, expected_return, truth_tables
from pushrl.policies.timing_baselines import (BASELINES, FixedHour, MostActiveHour, NeverSend,
                                              RandomVolume)

TIMING = sorted(BASELINES)


def _ctx(hours: list[int], *, sends_today: int = 0, hours_since_push: float = 336.0,
         state: Any = None, dow: int = 2) -> TimingContext:
    raw = np.zeros((len(hours), N_FEATURES), np.float32)
    raw[:, F["local_hour"]] = hours
    raw[:, F["local_dow"]] = dow
    raw[:, F["hours_since_push"]] = hours_since_push
    return TimingContext(raw, np.ones(len(hours), bool), np.zeros(len(hours), np.int64), 0,
                         state, np.full(len(hours), sends_today))


def test_every_definition_builds_and_is_registered() -> None:
    timing_tomls = {p.stem for p in Path(DEFINITIONS).glob("*.toml")
                    if definition(p.stem).get("kind") == "timing"}
    assert timing_tomls == set(TIMING)
    for name in TIMING:
        pol = make_baseline(name)
        assert pol.kind == "timing" and pol.name == name
        assert pol.describe()["name"] == name


def test_never_send() -> None:
    d = NeverSend().decide_batch(_ctx([9, 19]), np.random.default_rng(0))
    assert (d.action == 0).all() and (d.pscore == 1).all()


def test_fixed_hour_sends_once_at_its_hour() -> None:
    pol = FixedHour(hour=19, daily_cap=1)
    dist = pol.action_dist(_ctx([18, 19, 20]))
    np.testing.assert_array_equal(dist[:, SEND], [0, 1, 0])
    assert pol.action_dist(_ctx([19], sends_today=1))[0, SEND] == 0


def _state_active_at(local_hour: int, dow_weekday: bool = True) -> tuple[FeatureState, int]:
    """One UTC user whose history is all at ``local_hour`` on weekdays."""
    spec = FeatureSpec(("a",), {}, tuple([1 / 168] * 168), (1.0,))
    start = 20_000 * 24  # a Monday 00:00 UTC (epoch day 20000 is a Monday)
    st = FeatureState(spec, ["UTC"], start)
    for day in range(14):
        if (day % 7 < 5) == dow_weekday:
            st.record_activity(np.zeros(5, np.int64), start + 24 * day + local_hour)
    return st, start + 24 * 14


def test_most_active_hour_picks_the_profile_peak() -> None:
    st, _ = _state_active_at(14)
    pol = MostActiveHour(sends_per_day=1, pool="weekpart", min_gap_hours=3)
    st.advance(np.array([0]), 20_000 * 24 + 24 * 14)
    dist = pol.action_dist(_ctx([13, 14, 15], state=st))
    np.testing.assert_array_equal(dist[:, SEND], [0, 1, 0])
    assert pol.action_dist(_ctx([14], state=st, hours_since_push=2))[0, SEND] == 0
    assert pol.action_dist(_ctx([14], state=st, sends_today=1))[0, SEND] == 0


def test_most_active_hour_stays_inside_its_window() -> None:
    st, _ = _state_active_at(23)  # the peak is in quiet hours: pick the best allowed hour
    st.advance(np.array([0]), 20_000 * 24 + 24 * 14)
    dist = MostActiveHour(window=(8, 22)).action_dist(_ctx(list(range(24)), state=st))
    sends = np.flatnonzero(dist[:, SEND])
    assert sends.size == 1 and 8 <= sends[0] < 22


def test_random_volume_pscore_and_volume() -> None:
    pol = RandomVolume(sends_per_day=2.0, window=(8, 22))
    ctx = _ctx([10] * 20_000 + [3] * 10)
    d = pol.decide_batch(ctx, np.random.default_rng(0))
    p = 2.0 / 14
    assert np.allclose(d.pscore[:20_000], np.where(d.action[:20_000] == 1, p, 1 - p))
    assert (d.action[20_000:] == 0).all()
    se = np.sqrt(p * (1 - p) / 20_000)
    assert abs(d.action[:20_000].mean() - p) < 4 * se


@pytest.mark.parametrize(("factory", "kwargs", "match"), [
    (FixedHour, {"hour": 24}, "`hour` must be a local hour"),
    (FixedHour, {"daily_cap": 0}, "`daily_cap` must be > 0"),
    (MostActiveHour, {"sends_per_day": 0}, "`sends_per_day` must be > 0"),
    (MostActiveHour, {"pool": "month"}, "`pool` must be"),
    (MostActiveHour, {"window": (8, 25)}, "`window` end must be a local hour"),
    (MostActiveHour, {"window": (8, 9), "sends_per_day": 2}, "fewer hours than"),
    (RandomVolume, {"sends_per_day": -1}, "`sends_per_day` must be >= 0"),
    (RandomVolume, {"sends_per_day": 15, "window": (8, 22)}, "exceeds the 14 hours"),
    (TrueOracle, {"mode": "best"}, "`mode` must be 'plan' or 'greedy'"),
])
def test_invalid_parameters(factory: Any, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)


def test_most_active_hour_needs_the_feature_state() -> None:
    with pytest.raises(ValueError, match=r"`ctx\.state` and `ctx\.user_index` are required"):
        MostActiveHour().action_dist(_ctx([10]))


def test_oracle_refuses_the_fitted_simulator() -> None:
    with pytest.raises(ScenarioError, match="needs the ground truth"):
        rollout(TrueOracle(), "default", n_users=4, days=1, seed=0)


def test_oracle_closed_form_matches_simulation_and_beats_heuristics() -> None:
    """The planner's expected return equals the simulated mean (within 3 SE), and the plan
    beats the tuned heuristic on the same users (common random numbers, paired z > 3)."""
    n, days = 300, 14
    oracle = TrueOracle(sweeps=0)
    res = rollout(oracle, "default", n_users=n, days=days, seed=5, truth=True)
    sim, _, x = oracle._cache  # type: ignore[misc]
    slots = np.arange(n)
    planned = expected_return(x[slots], truth_tables(sim, slots, res.scenario.reward))
    se = res.objective.std(ddof=1) / np.sqrt(n)
    assert abs(planned.mean() - res.objective.mean()) < 3 * se
    r2 = rollout(make_baseline("most-active-hour"), "default", n_users=n, days=days, seed=5,
                 truth=True)
    diff = res.objective - r2.objective
    assert diff.mean() > 3 * diff.std(ddof=1) / np.sqrt(n)


@pytest.mark.parametrize("pool", ["day", "weekpart", "week"])
def test_most_active_hour_small_passes_equal_large(pool: str) -> None:
    """Passes of a few users (the server's) read each user's hour ranks from a per-user cache:
    the decisions equal those of one large pass (the vectorised profile path) while activity
    keeps changing the profiles, with ties (flat profiles) and two sends a day."""
    spec = FeatureSpec((), {}, tuple([1 / 168] * 168), ())
    rng = np.random.default_rng(11)
    n = 40
    fs = FeatureState(spec, ["UTC", "Asia/Kolkata", "America/New_York", "Asia/Tokyo"] * 10,
                      480_000)
    pol = MostActiveHour(sends_per_day=2, pool=pool, min_gap_hours=0)
    b = 480_000
    users = np.arange(n)
    for step in range(60):
        b += 1
        act = rng.choice(n, 10, replace=False)
        fs.record_activity(act, b - int(rng.integers(0, 3)))  # some late: placed in their hour
        fs.advance(users, b)
        raw = fs.features(users, b)
        today = rng.integers(0, 2, n)
        allowed = rng.random(n) < 0.9
        big = pol.action_dist(TimingContext(raw, allowed, users, b, fs, today))
        for lo in range(0, n, 5):  # passes of 5 users
            sl = slice(lo, lo + 5)
            small = pol.action_dist(TimingContext(raw[sl], allowed[sl], users[sl], b, fs,
                                                  today[sl]))
            assert np.array_equal(small, big[sl]), (step, lo)
    assert any(k[0].startswith("most-active-hour") for k in fs._profiles)


@pytest.mark.parametrize("pool", ["day", "weekpart", "week"])
def test_most_active_hour_ranks_equal_comparison_counts(pool: str) -> None:
    """The hour ranks (a stable sort's inverse permutation) equal the count of more active
    and earlier equally active hours, on random profiles full of ties (few activity counts,
    a flat prior), windows wrapping midnight or not, one or many users per call."""
    from pushrl.data.features import weekpart_means
    from pushrl.policies.timing_baselines import _EARLIER

    rng = np.random.default_rng(5)
    spec = FeatureSpec((), {}, tuple([1 / 168] * 168), ())
    for trial in range(30):
        n = int(rng.integers(1, 7))
        fs = FeatureState(spec, ["UTC"] * n, 0)
        fs.a.how[:, :n] = rng.integers(0, 3, (168, n)) * (rng.random((168, n)) < 0.3)
        lo, hi = (int(x) for x in rng.integers(0, 25, 2))
        pol = MostActiveHour(pool=pool, window=(lo, hi) if lo != hi else (0, 24))
        users = np.arange(n)
        prof = np.where(pol._in_window, fs.pooled_profiles(users, pool), -np.inf)
        want = ((prof[..., None, :] > prof[..., :, None])
                | ((prof[..., None, :] == prof[..., :, None]) & _EARLIER)).sum(axis=-1)
        assert pol._ranks(fs, users) == want.tolist(), trial
        by_day = rng.random((n, 7, 24))
        old = np.stack([np.add.reduce(by_day[:, :5], axis=1) / 5,
                        np.add.reduce(by_day[:, 5:], axis=1) / 2], axis=1)
        assert weekpart_means(by_day).tobytes() == old.tobytes()
