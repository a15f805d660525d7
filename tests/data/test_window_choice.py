"""The churn model's lookback choice (issue 17): window or whole history at as-of, chosen by
an emulation on the training users (:func:`pushrl.data.profiles.choose_window_days`). A
stationary world, where more history estimates the rate better, chooses the whole history; a
lapsing world, where a long history next to a long gap misleads, keeps the window."""

from __future__ import annotations

import pandas as pd
import pytest

from pushrl.data.io import Dataset
from pushrl.data.profiles import ProfileModel, build_profiles, fit_model
from pushrl.data.synth import generate
from pushrl.data.worlds import world_config
from pushrl.units import HOUR


def _log(name: str, users: int, seed: int, **over: float) -> tuple[Dataset, int]:
    cfg = world_config(name, users=users, days=42, seed=seed, **over)
    ds, _, _ = generate(cfg)
    return ds, int(pd.Timestamp(cfg.start).timestamp()) // HOUR + 42 * 24


@pytest.fixture(scope="module")
def stationary() -> tuple[Dataset, int]:
    return _log("default", 300, 5, sessions_per_day_median=0.3)


def test_stationary_world_chooses_the_whole_history(stationary: tuple[Dataset, int]) -> None:
    ds, b = stationary
    model = fit_model(ds, b)
    c = model.validation["window_choice"]
    # fitted 28 days into the log: a 28-day window (DAY_SLOTS), emulated with 14 days
    assert (c["fit_window_days"], c["emulated_days"]) == (28, 14)
    assert c["logloss_whole"] < c["logloss_window"] - 0.003
    assert model.window_days == c["window_days"] == 0
    assert fit_model(ds, b, choose_window=False).window_days == 28


def test_lapsing_world_keeps_the_window() -> None:
    ds, b = _log("lapsing", 1500, 5)
    model = fit_model(ds, b)
    c = model.validation["window_choice"]
    assert c["logloss_window"] < c["logloss_whole"]
    assert model.window_days == c["window_days"] == 28


def test_the_choice_is_saved_and_used(stationary: tuple[Dataset, int]) -> None:
    ds, b = stationary
    res = build_profiles(ds, b * HOUR)
    back = ProfileModel.from_json(res.model.to_json())
    assert back.window_days == 0 and back.validation["window_choice"]["window_days"] == 0
    again = build_profiles(ds, b * HOUR, model=back)
    pd.testing.assert_frame_equal(again.table, res.table)
