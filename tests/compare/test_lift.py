"""`pushrl.compare.lift`: difference of means with CUPED, the power calculator, and the
simulator path (a batch rollout with a live holdout)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pushrl.compare import lift
from pushrl.compare.runner import PolicySpec
from pushrl.envs.rollout import rollout
from pushrl.errors import DataError
from pushrl.rules.holdout import Holdout


def _data(n: int = 20_000, effect: float = 0.5, rho: float = 0.8, seed: int = 0,
          share: float = 0.2) -> lift.LiftData:
    """Outcomes ``y = effect * treated + rho * x + sqrt(1 - rho^2) * e`` (x, e standard
    normal): CUPED on ``x`` should remove a share ``rho^2`` of the variance."""
    g = np.random.default_rng(seed)
    held = g.random(n) < share
    x = g.standard_normal(n)
    y = effect * ~held + rho * x + np.sqrt(1 - rho**2) * g.standard_normal(n)
    cols = {m: np.zeros(n) for m in lift.METRICS}
    cols["activity"] = y
    u = pd.DataFrame({"user_id": np.arange(n).astype(str), "held_out": held,
                      "p_holdout": share, "pre": x, **cols})
    return lift.LiftData(u, 7.0, "synthetic")


def test_cuped_is_unbiased_and_removes_rho_squared_of_the_variance() -> None:
    est = lift.estimate(_data(), ("activity",))[0]
    # within 4 standard errors of the truth, raw and adjusted
    assert abs(est.lift - 0.5) < 4 * est.se
    assert abs(est.cuped_lift - 0.5) < 4 * est.cuped_se
    assert est.variance_reduction == pytest.approx(0.64, abs=0.03)
    assert est.theta == pytest.approx(0.8, abs=0.03)


def test_interval_covers_the_effect_at_the_nominal_rate() -> None:
    """200 replications: coverage within 3 binomial SEs of 0.95 (raw and CUPED)."""
    hits = np.array([[(e.low <= 0.5 <= e.high), (e.cuped_low <= 0.5 <= e.cuped_high)]
                     for e in (lift.estimate(_data(2000, seed=s), ("activity",))[0]
                               for s in range(200))])
    se = np.sqrt(0.95 * 0.05 / 200)
    assert np.all(np.abs(hits.mean(axis=0) - 0.95) < 3 * se)


def test_days_to_mde_scales_with_the_inverse_square_of_the_effect() -> None:
    d = _data()
    e = lift.estimate(d, ("activity",))[0]
    e.held_out = 1.0  # a base to be relative to
    t1, t2 = lift.days_to_mde(e, 0.1, d.days), lift.days_to_mde(e, 0.05, d.days)
    assert t2 == pytest.approx(4 * t1)
    assert lift.days_to_mde(e, 0.1, d.days, cuped=False) > t1  # CUPED needs fewer days
    with pytest.raises(DataError, match="--mde"):
        lift.days_to_mde(e, 0.0, d.days)


def test_an_arm_with_too_few_users_is_refused() -> None:
    d = _data(50, share=0.01, seed=3)
    d.users["held_out"] = False
    with pytest.raises(DataError, match="2 users in each arm"):
        lift.estimate(d)


def test_rollout_with_a_holdout_never_sends_to_held_out_users() -> None:
    pol = PolicySpec.parse("most-active-hour").load()
    r = rollout(pol, "default", n_users=600, days=5, seed=2, truth=True,
                holdout=Holdout(0.3, "t"))
    held = r.extra["held_out"]
    assert 0.2 < held.mean() < 0.4 and r.sends[held].sum() == 0 and r.sends[~held].sum() > 0
    ld = lift.from_rollout(r, 0.3)
    est = {e.metric: e for e in lift.estimate(ld)}
    assert est["sends"].held_out == 0 and est["sends"].lift == pytest.approx(
        r.sends[~held].mean())
    # the arms are the hash of the same ids the served driver gives the server
    again = rollout(pol, "default", n_users=600, days=1, seed=2, truth=True,
                    holdout=Holdout(0.3, "t"))
    np.testing.assert_array_equal(again.extra["held_out"], held)
