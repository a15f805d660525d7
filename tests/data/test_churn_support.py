"""The churn model does not extrapolate: features are clipped to the training range and the
recency feature is capped at the log's length at fit time (issue 17, lapsing world)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from pushrl.data.profiles import CHURN_FEATURES, ProfileModel, fit_model
from pushrl.data.synth import generate
from pushrl.data.worlds import world_config
from pushrl.units import HOUR


@pytest.fixture(scope="module")
def model() -> ProfileModel:
    cfg = world_config("default", users=400, days=28, seed=3, sessions_per_day_median=0.3)
    ds, _, _ = generate(cfg)
    start = int(ds.pushes["ts"].min().timestamp()) // HOUR
    return fit_model(ds, start + 28 * 24)


def test_recency_cap_is_the_fit_time_history(model: ProfileModel) -> None:
    # fitted at as-of - 14 d on a 28-day log: 14 days of history (first event in hour 0-2)
    assert 14 * 24 - 3 <= model.recency_cap_h <= 14 * 24
    k = CHURN_FEATURES.index("log1p_hours_since_activity")
    assert model.x_max[k] <= np.log1p(model.recency_cap_h) + 1e-12


def test_churn_is_flat_outside_the_training_range(model: ProfileModel) -> None:
    x = np.tile((np.asarray(model.x_min) + np.asarray(model.x_max)) / 2, (3, 1))
    k = CHURN_FEATURES.index("log_p0_poisson_gamma")
    x[0, k] = model.x_min[k]
    x[1, k] = model.x_min[k] - 5.0
    x[2, k] = model.x_min[k] - 50.0
    p = model.churn(x)
    assert p[0] == p[1] == p[2]


def test_models_saved_before_the_range_load_and_do_not_clip(model: ProfileModel) -> None:
    body = json.loads(model.to_json())["model"]
    for key in ("x_min", "x_max", "recency_cap_h"):
        del body[key]
    text = json.dumps(body, sort_keys=True)
    old = ProfileModel.from_json(json.dumps(
        {"model": body, "sha256": hashlib.sha256(text.encode()).hexdigest()}))
    assert old.x_min == [] and old.recency_cap_h == 90 * 24
    x = np.asarray([model.x_min]) - 3.0
    assert old.churn(x)[0] != model.churn(x)[0]
