"""Design matrices of the simulator's response models (the unsubscribe hinges)."""

from __future__ import annotations

import numpy as np

from pushrl.data.features import N_FEATURES, F
from pushrl.sim import design
from pushrl.sim.glm import fit_glm, sigmoid


def _raw(s7: np.ndarray) -> np.ndarray:
    raw = np.zeros((s7.size, N_FEATURES), np.float32)
    raw[:, F["sends_7d"]] = s7
    raw[:, F["hours_since_push"]] = 24
    raw[:, F["engagement"]] = 0.1
    return raw


def test_unsub_design_without_hinges_is_the_older_design() -> None:
    raw = _raw(np.arange(12, dtype=np.float32))
    x = design.unsub_design(raw)
    assert x.shape == (12, len(design.UNSUB_NAMES))
    np.testing.assert_allclose(x[:, 1], np.arange(12) / 7.0)


def test_hinge_columns_and_fatigue_scaling() -> None:
    names = design.unsub_names((3.0, 6.0))
    assert names[-2:] == ("sends_7d_above_3", "sends_7d_above_6")
    x = design.unsub_design(_raw(np.array([0, 3, 5, 9], np.float32)), names)
    np.testing.assert_allclose(x[:, -2], np.array([0, 0, 2, 6]) / 7.0)
    np.testing.assert_allclose(x[:, -1], np.array([0, 0, 0, 3]) / 7.0)
    # the what-if fatigue knob scales every volume column, not engagement or recency
    assert [names[j] for j in design.fatigue_columns(names)] == [
        "sends_24h", "sends_7d", "sends_7d_above_3", "sends_7d_above_6"]


def test_volume_knots_sit_inside_the_data() -> None:
    s7 = np.random.default_rng(0).poisson(5, 10_000).astype(float)
    knots = design.volume_knots(s7)
    assert knots == tuple(sorted(set(knots))) and len(knots) >= 2
    assert all(0 < k < s7.max() for k in knots)
    assert design.volume_knots(np.zeros(50)) == ()


def test_hinges_recover_a_thresholded_hazard() -> None:
    """A hazard that rises only above 5 pushes a week: with the data-placed hinges the fitted
    hazard above the threshold is within 25 % of the truth (the linear-only design spreads
    the rise over every volume); out-of-fold log-loss is lower than the linear design's."""
    rng = np.random.default_rng(1)
    n = 60_000
    s7 = rng.poisson(5, n).astype(np.float32)
    truth = sigmoid(-5.0 + 0.6 * np.maximum(s7 - 5, 0))
    y = (rng.random(n) < truth).astype(int)
    raw = _raw(s7)
    groups = np.arange(n) % 500
    names = design.unsub_names(design.volume_knots(s7))
    hinge = fit_glm(design.unsub_design(raw, names), y, groups, names)
    linear = fit_glm(design.unsub_design(raw), y, groups, design.UNSUB_NAMES)
    assert hinge.metrics["log_loss"] < linear.metrics["log_loss"]
    hi = s7 >= 8
    fitted = hinge.predict(design.unsub_design(raw[hi], names)).mean()
    assert abs(fitted / truth[hi].mean() - 1) < 0.25
    low = s7 <= 3
    assert hinge.predict(design.unsub_design(raw[low], names)).mean() < 2 * truth[low].mean()
