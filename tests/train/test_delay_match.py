"""The send cost of the learned delay policy (`match_send_cost`): the out-of-fold sends
bound, and the guarantee it gives on users the policy never saw (issue #16: "at no more
sends and no more unsubscribes")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.data.split import UserSplit
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import world_config
from pushrl.policies.baselines import make_baseline
from pushrl.policies.delay_data import DelayRounds, delay_rounds
from pushrl.rules.triggers import TriggerConfig
from pushrl.sim.trigger_metrics import ArmOutcomes, trigger_outcomes
from pushrl.sim.trigger_world import (
    TRUTH_FILE,
    WORLD_GUARDRAILS,
    WORLD_TRIGGERS,
    synthesize_triggers,
)
from pushrl.train.delay import MATCH_RATIO, match_send_cost, ratio_bound


def _logged(rng: np.random.Generator, users: int, per_user: int, p: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Uniformly logged rounds over ``len(p)`` arms, outcome ~ Bernoulli(p[arm] * u) with a
    per-user factor u (rounds of a user dependent)."""
    n, k = users * per_user, p.size
    user = np.repeat(np.arange(users), per_user)
    factor = rng.uniform(0.5, 1.5, users)[user]
    action = rng.integers(0, k, n)
    outcome = (rng.random(n) < p[action] * factor).astype(float)
    return action, np.full(n, 1 / k), outcome, user


def test_ratio_bound_of_the_baseline_itself_is_one() -> None:
    rng = np.random.default_rng(0)
    action, pscore, y, user = _logged(rng, 50, 8, np.array([0.2, 0.5, 0.8]))
    d = np.tile([0.1, 0.6, 0.3], (y.size, 1))
    b = ratio_bound(d, d, action, pscore, y, user)
    assert b.ratio == pytest.approx(1.0) and b.se_log == pytest.approx(0.0, abs=1e-12)
    assert b.upper == pytest.approx(1.0)


def test_ratio_bound_is_the_snipw_ratio_and_covers_the_truth() -> None:
    """One-sided 95 % bound: it covers the true ratio in ~95 % of replications (tolerance 3
    binomial SEs of 300 replications), and the point is SNIPW / SNIPW."""
    p = np.array([0.3, 0.6, 0.45])
    pol, base = np.eye(3)[[0] * 1], np.eye(3)[[1] * 1]
    true_ratio = p[0] / p[1]
    rng = np.random.default_rng(1)
    covered, reps = 0, 300
    for _ in range(reps):
        action, pscore, y, user = _logged(rng, 200, 5, p)
        dp, db = np.repeat(pol, y.size, 0), np.repeat(base, y.size, 0)
        b = ratio_bound(dp, db, action, pscore, y, user)
        assert b.ratio == pytest.approx(y[action == 0].mean() / y[action == 1].mean())
        covered += b.upper >= true_ratio
    se = np.sqrt(0.95 * 0.05 / reps)
    assert 0.95 - 3 * se <= covered / reps <= 0.95 + 3 * se
    with pytest.raises(ValueError, match="confidence"):
        ratio_bound(dp, db, action, pscore, y, user, confidence=1.0)
    with pytest.raises(ValueError, match="baseline's estimated outcome is 0"):
        ratio_bound(dp, db, action, pscore, np.zeros_like(y), user)


@pytest.fixture(scope="module")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("small_triggers")
    synthesize_triggers(d, world_config("triggers", users=300, days=10, seed=11))
    return d


def _parts(data: Path) -> tuple[DelayRounds, DelayRounds, pd.DataFrame]:
    cfg = TriggerConfig.parse(WORLD_TRIGGERS)
    parts = []
    for part in ("train", "heldout"):
        ds, _ = load_dataset(data, quarantine=False, split=UserSplit(0.5, 0, part))
        parts.append(delay_rounds(ds, cfg, WORLD_GUARDRAILS))
    truth = pd.read_parquet(data / TRUTH_FILE).set_index("trigger_id").loc[parts[1].trigger_id]
    return parts[0], parts[1], truth.reset_index()


@pytest.mark.parametrize("target", [MATCH_RATIO, 0.7])
def test_sends_guarantee_holds_on_held_out_users(small_world: Path, target: float) -> None:
    """The cost chosen on the training users keeps the learned policy's TRUE sends (the
    world's per-arm expectations) on held-out users no higher than fixed 1 h's (at 0.7: within
    0.7 x), and its unsubscribes too. At 0.7 the search has to raise the cost well above 0: a
    policy trained at cost 0 sends 0.965 x fixed 1 h's on these held-out users (truth), so
    a search that stops early fails; the bound's coverage is tested above."""
    train, test, truth = _parts(small_world)
    m = match_send_cost(train, target_ratio=target, steps=3, passes=1)
    chosen = next(t for t in m.trials if t["send_cost"] == m.send_cost)
    assert chosen["fits"] and chosen["sends_ratio"] <= target
    assert chosen["sends_upper"] >= chosen["sends_ratio_snipw"]
    assert chosen["due_upper"] >= chosen["due_ratio"]
    assert all(not t["fits"] for t in m.trials if t["send_cost"] < m.send_cost)
    o = ArmOutcomes.from_truth(truth, test.arms)
    mine = trigger_outcomes(m.policy.action_dist(test.context), o)
    base = trigger_outcomes(make_baseline("delay-fixed-1h").action_dist(test.context), o)
    allowed = min(target, 1.0)
    assert mine["sends"].sum() <= allowed * base["sends"].sum()
    assert mine["unsubscribes"].sum() <= allowed * base["unsubscribes"].sum()
    if target < 0.9:
        assert m.send_cost > 0 and m.trials[0]["fits"] == 0.0
    d = m.to_dict()
    assert d["confidence"] == 0.95 and d["target_ratio"] == target


def test_due_sends_count_the_pushes_an_arm_asks_for(small_world: Path) -> None:
    """``due`` >= ``sent``; never for the drop arm; a due push not sent is one a purchase
    did not cancel before its send time."""
    train, _, _ = _parts(small_world)
    assert train.due is not None
    assert (train.due >= train.sent).all()
    drop = train.arms.index(None)
    assert not train.due[train.action == drop].any()
    assert 0 < (train.due & ~train.sent).mean() < 0.2
    sub = train.take(np.arange(10))
    np.testing.assert_array_equal(sub.due, train.due[:10])
