"""The closed-form delay scorer equals the VW delay policy: the same PMF (VW's float32
epsilon-greedy, ties included) on every logged round of a trained model, the same draws from
the same generator, and it refuses models without the closed form."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pushrl.data.item_context import ItemContext
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import world_config
from pushrl.policies.delay_data import DelayRounds, delay_rounds
from pushrl.policies.delay_fast import TIE_RTOL, LinearDelayScorer
from pushrl.policies.template_fast import NotLinear
from pushrl.policies.vw import VWConfig, VWItemPolicy
from pushrl.rules.triggers import TriggerConfig
from pushrl.sim.trigger_world import WORLD_GUARDRAILS, WORLD_TRIGGERS, synthesize_triggers
from pushrl.train.delay import DELAY_VW, delay_layout, train_rounds

#: VW sums float32 products; the PMF only takes the values eps/K and eps/K + (1-eps)/T, so
#: any disagreement is a different greedy set, never a rounding difference.
TOL = 1e-6


@pytest.fixture(scope="module")
def rounds(tmp_path_factory: pytest.TempPathFactory) -> DelayRounds:
    d = tmp_path_factory.mktemp("delay_fast")
    synthesize_triggers(d, world_config("triggers", users=120, days=8, seed=2))
    ds, _ = load_dataset(d, quarantine=False)
    return delay_rounds(ds, TriggerConfig.parse(WORLD_TRIGGERS), WORLD_GUARDRAILS,
                        unsub_cost=1.0).with_costs(0.03, 1.0)


@pytest.fixture(scope="module")
def trained(rounds: DelayRounds) -> VWItemPolicy:
    pol = train_rounds(rounds, passes=2)
    pol.model_bytes()  # frozen: what a server loads
    return pol


def test_closed_form_equals_vw_on_every_logged_round(trained: VWItemPolicy,
                                                     rounds: DelayRounds) -> None:
    fast = LinearDelayScorer.extract(trained)
    assert fast.max_error <= TOL
    ctx = rounds.context
    vw, mine = trained.action_dist(ctx), fast.action_dist(ctx)
    assert np.abs(vw - mine).max() <= TOL
    # the trained model is not degenerate: greedy arms differ between rounds
    assert len(set(np.argmax(vw, axis=1).tolist())) > 1
    a = trained.decide_batch(ctx, np.random.default_rng(7))
    b = fast.decide_batch(ctx, np.random.default_rng(7))
    assert np.array_equal(a.action, b.action)
    np.testing.assert_allclose(a.pscore, b.pscore, atol=TOL)


def test_ties_share_the_greedy_mass_as_vw_does(rounds: DelayRounds) -> None:
    pol = VWItemPolicy(delay_layout(rounds.arms), DELAY_VW.args(), name="delay-vw")
    pol.model_bytes()  # untrained: every arm scores alike, all tied
    fast = LinearDelayScorer.extract(pol)
    ctx = rounds.take(np.arange(20)).context
    np.testing.assert_allclose(pol.action_dist(ctx), 1 / len(rounds.arms), atol=TOL)
    np.testing.assert_allclose(fast.action_dist(ctx), pol.action_dist(ctx), atol=TOL)
    mask = np.ones((2, len(rounds.arms)), bool)
    mask[1, :3] = False
    p = fast.pmf(np.zeros((2, len(rounds.arms))), mask)
    np.testing.assert_allclose(p[1], np.where(mask[1], 1 / mask[1].sum(), 0), atol=TOL)
    # two arms within VW's relative tolerance (1e-4) of the lowest share the greedy mass
    s = np.array([[-0.58822, -0.58811, -0.40, -0.30, -0.2, -0.1, 0.0]])
    p = fast.pmf(s, np.ones_like(s, bool))[0]
    eps, k = fast.epsilon, s.shape[1]
    np.testing.assert_allclose(p, [eps / k + (1 - eps) / 2] * 2 + [eps / k] * (k - 2), atol=TOL)


@pytest.mark.parametrize(("args", "match"), [
    (VWConfig(exploration="squarecb").args(), "epsilon-greedy"),
    (VWConfig(exploration="epsilon", interactions=("UC",)).args(), "not bilinear"),
])
def test_models_without_the_closed_form_are_refused(rounds: DelayRounds, args: list[str],
                                                    match: str) -> None:
    pol = VWItemPolicy(delay_layout(rounds.arms), args, name="delay-vw")
    pol.model_bytes()
    with pytest.raises(NotLinear, match=match):
        LinearDelayScorer.extract(pol)


def test_a_learning_model_is_refused(rounds: DelayRounds) -> None:
    pol = VWItemPolicy(delay_layout(rounds.arms), DELAY_VW.args(), name="delay-vw")
    with pytest.raises(NotLinear, match="learning"):
        LinearDelayScorer.extract(pol)


def test_the_benchmark_path_is_the_served_path(trained: VWItemPolicy, tmp_path: Path) -> None:
    """A saved artifact loads with the closed form in the server's delay policy."""
    from pushrl.policies.registry import load_policy
    from pushrl.serve.triggers import ContextDelay

    art = trained.save(tmp_path / "delay-vw", {"trigger_policy": {"arms": [0]}})
    cd = ContextDelay(load_policy(art), TriggerConfig.parse(WORLD_TRIGGERS),
                      lambda: WORLD_GUARDRAILS)
    assert isinstance(cd.scorer, LinearDelayScorer)


def _row(ctx: ItemContext, i: int, mask: np.ndarray) -> ItemContext:
    return dataclasses.replace(ctx, shared=ctx.shared[i:i + 1],
                               candidates=ctx.candidates[i:i + 1], mask=mask[i:i + 1],
                               candidate_features=ctx.candidate_features[i:i + 1], extra={})


@pytest.mark.parametrize("model", ["trained", "untrained"])
def test_one_round_decides_as_the_batch(model: str, trained: VWItemPolicy,
                                        rounds: DelayRounds) -> None:
    """The server's single-round path (python over the arms) gives the batch's action,
    pscore and distribution byte for byte, with the same draws, on every logged round, with
    random masks, and with every arm tied (an untrained model)."""
    pol = trained
    if model == "untrained":
        pol = VWItemPolicy(delay_layout(rounds.arms), DELAY_VW.args(), name="delay-vw")
        pol.model_bytes()
    fast = LinearDelayScorer.extract(pol)
    ctx = rounds.context
    rng = np.random.default_rng(3)
    mask = np.ones(ctx.mask.shape, bool)
    some = rng.random(len(ctx)) < 0.3
    mask[some] = rng.random((int(some.sum()), mask.shape[1])) < 0.6
    mask[~mask.any(axis=1), -1] = True
    ctx = dataclasses.replace(ctx, mask=mask)
    batch = fast.decide_batch(ctx, np.random.default_rng(11))
    one_rng = np.random.default_rng(11)
    for i in range(len(ctx)):
        one = fast.decide_batch(_row(ctx, i, mask), one_rng)
        assert one.action.tolist() == batch.action[i:i + 1].tolist()
        assert one.pscore.tobytes() == batch.pscore[i:i + 1].tobytes()
        assert one.action_dist.tobytes() == batch.action_dist[i:i + 1].tobytes()
    assert len(ctx) > 200 and len(set(batch.action.tolist())) > 1


def test_one_row_pmf_equals_pmf_at_the_tie_boundary(rounds: DelayRounds) -> None:
    """The python float32 PMF equals the array one on 5000 random rows whose scores sit
    at VW's relative tie tolerance (just inside, on and just outside it), with masks."""
    pol = VWItemPolicy(delay_layout(rounds.arms), DELAY_VW.args(), name="delay-vw")
    pol.model_bytes()
    fast = LinearDelayScorer.extract(pol)
    rng = np.random.default_rng(4)
    k = len(rounds.arms)
    tied_here = 0
    for _ in range(5000):
        low = float(rng.normal(0, 1) * 10.0 ** rng.integers(-3, 3))
        rel = rng.choice([0.0, 1e-4, 2e-4]) * (1 + rng.normal(0, 1e-3, k))
        s = low + np.abs(low) * rel * rng.choice([-1, 1], k)
        far = rng.random(k) < 0.3  # some arms far from the lowest
        s[far] += rng.normal(0, 1, int(far.sum()))
        # arm 1 within a few float32 steps of the exact tie boundary above the lowest
        r = TIE_RTOL
        edge = np.float32(low * (1 + r) / (1 - r) if low > 0 else low * (1 - r) / (1 + r))
        step = int(rng.integers(-6, 7))
        s[0] = low
        s[1] = float(np.nextafter(edge, np.float32(np.inf if step > 0 else -np.inf),
                                  dtype=np.float32)) if step else float(edge)
        for _ in range(abs(step) - 1):
            s[1] = float(np.nextafter(np.float32(s[1]),
                                      np.float32(np.inf if step > 0 else -np.inf)))
        s[2:] = np.maximum(s[2:], low)
        mask = rng.random(k) < (0.7 if rng.random() < 0.5 else 1.01)
        tied_here += bool(fast.pmf(s[None], np.ones((1, k), bool))[0, 1]
                          == fast.pmf(s[None], np.ones((1, k), bool))[0, 0])
        want = fast.pmf(s[None], mask[None])[0] if mask.any() else np.zeros(k)
        got = np.array(fast._pmf_one(s.tolist(), mask.tolist()))
        assert got.tobytes() == want.tobytes(), (s, mask)
    assert 500 < tied_here < 4500  # arm 1 falls on both sides of the boundary
