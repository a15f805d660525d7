"""The global volume target: the price gate, its controller, and the same gate in the
simulator's rollout and the server's engine."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pushrl.compare.runner import PolicySpec
from pushrl.data.features import F, N_FEATURES
from pushrl.envs.rollout import rollout
from pushrl.rules.volume import SendPrice, VolumeTarget, send_value


def test_apply_moves_send_probability_to_wait_below_the_price() -> None:
    p = SendPrice(VolumeTarget(3.0, initial_price=0.5))
    d = np.array([[0.2, 0.8], [0.5, 0.5], [1.0, 0.0]])
    out = p.apply(d, np.array([0.4, 0.5, 0.9]))
    np.testing.assert_allclose(out, [[1.0, 0.0], [0.5, 0.5], [1.0, 0.0]])
    np.testing.assert_allclose(out.sum(axis=1), 1.0)


@pytest.mark.parametrize("bad", [{"per_user_week": 0}, {"per_user_week": -1},
                                 {"per_user_week": 3, "gain": 0},
                                 {"per_user_week": 3, "window_hours": 0}])
def test_bad_targets_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        VolumeTarget(**bad)


def test_controller_meets_the_target_on_a_stream() -> None:
    """Users whose send values are uniform and who all want a push every hour with a daily
    rhythm (sends only in 4 hours a day): the realised volume over 8 weeks is within 2 % of
    the target (the integral term), although the hourly rates swing."""
    rng = np.random.default_rng(0)
    n, target = 2000, 3.0
    p = SendPrice(VolumeTarget(target))
    for b in range(8 * 168):
        wants = (b % 24) in (8, 12, 18, 20)
        v = rng.random(n)
        sends = float(p.allow(v).sum()) if wants else 0.0
        p.observe(b, sends, n)
    p.close()
    assert p.realised_per_user_week() == pytest.approx(target, rel=0.02)


def test_send_value_is_engagement_discounted_by_recent_sends_squared() -> None:
    raw = np.zeros((3, N_FEATURES), np.float32)
    raw[:, F["engagement"]] = [0.2, 0.2, 0.4]
    raw[:, F["sends_7d"]] = [0, 1, 3]
    np.testing.assert_allclose(send_value(raw), [0.2, 0.05, 0.025], rtol=1e-6)


def test_rollout_meets_the_volume_target() -> None:
    """The simulator's rollout with a target: realised sends per subscribed user per week
    within 3 % of it at 800 users x 21 days (fixed seed), and fewer than without it."""
    pol = PolicySpec.parse("most-active-hour:sends_per_day=2").load()
    kw: dict[str, Any] = {"n_users": 800, "days": 21, "seed": 1, "truth": True}
    free = rollout(pol, "default", **kw)
    r = rollout(pol, "default", volume=VolumeTarget(2.0), **kw)
    # users who unsubscribed in the log start unsubscribed (never reachable): the free
    # policy (2 sends/day to every reachable user) sends them nothing
    reachable = free.sends.reshape(len(free.sends), -1).sum(axis=1) > 0
    assert 0.8 < reachable.mean() < 1.0
    alive_h = np.where(r.unsubscribed, r.unsubscribe_step + 1, r.days * 24)[reachable].sum()
    assert r.sends.sum() / alive_h * 168 == pytest.approx(2.0, rel=0.03)
    assert r.extra["volume_per_user_week"] == pytest.approx(2.0, rel=0.03)
    assert r.sends.sum() < 0.8 * free.sends.sum()


def test_open_model_fit_recovers_a_logistic_and_round_trips(tmp_path: Any) -> None:
    from pushrl.data.features import N_FEATURES, F
    from pushrl.rules.volume import OpenModel, SendPrice, VolumeTarget, value_basis
    from pushrl.train.send_value import fit_open_model

    g = np.random.default_rng(0)
    n = 40000
    raw = np.zeros((n, N_FEATURES), np.float32)
    raw[:, F["engagement"]] = g.uniform(0, 0.4, n)
    raw[:, F["activity_at_hour"]] = g.uniform(0.2, 3, n)
    raw[:, F["activity_7d"]] = g.poisson(10, n)
    raw[:, F["sends_24h"]] = g.integers(0, 3, n)
    raw[:, F["sends_7d"]] = raw[:, F["sends_24h"]] + g.integers(0, 5, n)
    raw[:, F["hours_since_push"]] = g.integers(1, 336, n)
    true = np.array([-2.0, 4.0, 0.5, 0.1, -0.3, -0.05, 0.0])
    y = g.random(n) < 1 / (1 + np.exp(-(value_basis(raw) @ true)))
    m = fit_open_model(raw, y, l2=0.0)
    assert np.allclose(m.coef, true, atol=0.15)
    back = OpenModel.load(m.save(tmp_path / "m.json"))
    assert back.coef == m.coef
    v = SendPrice(VolumeTarget(2.0, value_model=back)).value(raw)
    assert np.allclose(v, back.p_open(raw) / (1 + raw[:, F["sends_7d"]]) ** 2)
    with pytest.raises(ValueError, match="both outcomes"):
        fit_open_model(raw[:100], np.zeros(100, bool))


def test_value_power_is_the_one_rule_and_validated() -> None:
    g = np.random.default_rng(1)
    raw = np.zeros((50, N_FEATURES), np.float32)
    raw[:, F["engagement"]] = g.uniform(0, 0.5, 50)
    raw[:, F["sends_7d"]] = g.integers(0, 5, 50)
    want = raw[:, F["engagement"]].astype(float) ** 2 / (1 + raw[:, F["sends_7d"]]) ** 2
    assert np.allclose(SendPrice(VolumeTarget(2.0, value_power=2.0)).value(raw), want)
    assert np.array_equal(SendPrice(VolumeTarget(2.0)).value(raw), send_value(raw))
    with pytest.raises(ValueError, match="value_power must be > 0"):
        VolumeTarget(2.0, value_power=0.0)
