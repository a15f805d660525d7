"""The churn model's lookback window (issue 17, drift between the fit and as-of): per-day
session counts in :class:`ProfileCounters` are order-free and exact, the model's window is
the history it was fitted on, and the Poisson-gamma feature at as-of counts only that window."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from pushrl.data.features import FeatureSpec, replay
from pushrl.data.io import Dataset, to_unix_seconds
from pushrl.data.profiles import (
    CHURN_FEATURES,
    DAY_SLOTS,
    ProfileCounters,
    ProfileModel,
    build_profiles,
    churn_features,
    counters_from_dataset,
    cut,
    fit_model,
)
from pushrl.data.synth import generate
from pushrl.data.worlds import world_config
from pushrl.units import HOUR


@pytest.fixture(scope="module")
def world() -> tuple[Dataset, int]:
    cfg = world_config("default", users=300, days=40, seed=5, sessions_per_day_median=0.3)
    ds, _, _ = generate(cfg)
    start = int(ds.pushes["ts"].min().timestamp()) // HOUR
    return ds, start


def _sessions_in_days(ds: Dataset, bucket: int, days: int) -> np.ndarray:
    """Brute force: sessions per user in the ``days`` UTC days up to the one of ``bucket - 1``."""
    act = ds.activity
    h = to_unix_seconds(act["ts"]) // HOUR
    d = h // 24
    last = (bucket - 1) // 24
    keep = (act["event"].astype(str).to_numpy() == "session") & (h < bucket) & (
        d > last - days) & (d <= last)
    ids = ds.users["user_id"].astype(str).to_numpy()
    counts = act.loc[keep, "user_id"].astype(str).value_counts()
    return counts.reindex(ids, fill_value=0).to_numpy()


@pytest.mark.parametrize("days", [1, 7, 13, DAY_SLOTS])
def test_day_counts_equal_a_brute_force_count(world: tuple[Dataset, int], days: int) -> None:
    ds, start = world
    b = start + 33 * 24 + 7  # mid-day: the window's first day is whole, the last partial
    c = counters_from_dataset(cut(ds, b))
    np.testing.assert_array_equal(c.visits_since(b, days), _sessions_in_days(ds, b, days))
    # a later time with nothing new: the window slides past the counters' last day
    np.testing.assert_array_equal(c.visits_since(b + 5 * 24, days),
                                  _sessions_in_days(cut(ds, b), b + 5 * 24, days))


def test_day_counts_are_order_free_across_shifts() -> None:
    one = ProfileCounters.empty(2)
    ev = np.array(["session"] * 4)
    # day 100 (user 0), day 140 (user 1) then days 120 and 99 arrive late
    one.record_activity(np.array([0]), np.array([100 * 24 + 3]), ev[:1], np.full(1, np.nan))
    one.record_activity(np.array([1]), np.array([140 * 24]), ev[:1], np.full(1, np.nan))
    one.record_activity(np.array([0, 1]), np.array([120 * 24, 99 * 24]), ev[:2],
                        np.full(2, np.nan))
    other = ProfileCounters.empty(2)
    other.record_activity(np.array([0, 1, 0, 1]),
                          np.array([120 * 24, 140 * 24, 100 * 24 + 3, 99 * 24]), ev,
                          np.full(4, np.nan))
    for k, v in one.to_arrays().items():
        np.testing.assert_array_equal(v, other.to_arrays()[k])
    assert one.day0 == 140 - DAY_SLOTS + 1
    assert one.visits_since(141 * 24, DAY_SLOTS).tolist() == [1, 1]  # day 120, day 140
    assert one.visits_since(141 * 24, 2).tolist() == [0, 1]
    back = ProfileCounters.from_arrays(one.to_arrays())
    assert back.day0 == one.day0 and back.visits_since(141 * 24, 30).tolist() == [1, 1]
    assert one.take(np.array([1])).visits_since(141 * 24, 5).tolist() == [1]


def test_window_is_the_fit_history_and_only_it_counts(world: tuple[Dataset, int]) -> None:
    ds, start = world
    b = start + 40 * 24
    model = fit_model(ds, b, choose_window=False)  # this world chooses the whole history
    # fitted at b - 14 d on 26 days of log (first event in hour 0-2 of day 0): 26 UTC days
    assert model.window_days == 26
    now = cut(ds, b)
    c = counters_from_dataset(now)
    fs = replay(now, FeatureSpec.fit(now), with_affinity=False).state
    users = np.arange(len(ds.users))
    x = churn_features(fs, users, c, b, model)
    # a user's sessions before the window do not move the feature: make them views (same
    # first event, so the same observed days) and compare
    act = now.activity.copy()
    old = (to_unix_seconds(act["ts"]) // HOUR // 24 <= (b - 1) // 24 - 26) & (
        act["event"].astype(str).to_numpy() == "session")
    assert old.any()
    act["event"] = np.where(old, "view", act["event"].astype(str).to_numpy())
    c2 = counters_from_dataset(Dataset(now.users, now.items, act, now.pushes))
    assert (c2.visits < c.visits).any()
    x2 = churn_features(fs, users, c2, b, model)
    k = CHURN_FEATURES.index("log_p0_poisson_gamma")
    np.testing.assert_array_equal(x[:, k], x2[:, k])


def test_models_saved_before_the_window_use_the_whole_history(
        world: tuple[Dataset, int]) -> None:
    ds, start = world
    b = start + 40 * 24
    res = build_profiles(ds, b * HOUR, model=fit_model(ds, b, choose_window=False))
    assert res.model.window_days == 26
    body = json.loads(res.model.to_json())["model"]
    del body["window_days"]
    text = json.dumps(body, sort_keys=True)
    old = ProfileModel.from_json(json.dumps(
        {"model": body, "sha256": hashlib.sha256(text.encode()).hexdigest()}))
    assert old.window_days == 0
    again = build_profiles(ds, b * HOUR, model=old)
    assert not np.array_equal(again.table["churn_risk"].to_numpy(),
                              res.table["churn_risk"].to_numpy())
