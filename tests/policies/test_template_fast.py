"""The closed-form template scorer equals the VW template policy: same PMF (within VW's
float32 arithmetic), same draws from the same generator, and it refuses models without the
closed form."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.data.features import N_FEATURES, FeatureSpec, ItemCatalog
from pushrl.data.synth import generate
from pushrl.data.worlds import TEMPLATE_KNOBS, world_config
from pushrl.policies.template_fast import (
    BoundTemplateScorer,
    LinearTemplateScorer,
    NotLinear,
)
from pushrl.policies.template_policy import (
    TemplateArms,
    TemplatePolicy,
    new_template_policy,
    template_rounds,
    train_template_policy,
)
from pushrl.policies.vw import VWConfig

IDS = tuple(TEMPLATE_KNOBS["template_ids"])
#: VW sums float32 weights x values; the PMF of a 1e-6 score error is ~1e-5 at gamma ~1e3.
TOL = 2e-5


@pytest.fixture(scope="module")
def trained() -> tuple[TemplatePolicy, TemplateArms]:
    ds, _, _ = generate(world_config("default", users=250, days=7, seed=5, templates=True))
    from pushrl.data.io import write_dataset
    from pushrl.data.validate import load_dataset
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(ds, tmp)
        ds, _ = load_dataset(tmp, quarantine=False)
    spec = FeatureSpec.fit(ds)
    rounds = template_rounds(ds, IDS, spec=spec, reward="clicked+0.01*revenue")
    # one arm counts as new: the exploration floor is part of the decision
    pol = train_template_policy(rounds, VWConfig(learning_rate=0.05), new_min_shows=10)
    pol.shows[2] = 3
    pol.vw.model_bytes()
    return pol, rounds.arms


def _inputs(arms: TemplateArms, n: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    raw = np.abs(rng.normal(1, 2, (n, N_FEATURES))).astype(np.float32)
    items = rng.integers(0, len(arms.catalog), n)
    hours = rng.choice(np.array([1.0, 23.0, 30.0, 167.0, 336.0]), (n, len(IDS)))
    return raw, items, hours.astype(np.float32)


@pytest.mark.parametrize("new_arm", [False, True])
def test_closed_form_equals_vw(trained: tuple[TemplatePolicy, TemplateArms],
                               new_arm: bool) -> None:
    pol, arms = trained
    shows = pol.shows.copy()
    if not new_arm:
        pol.shows = np.full_like(shows, 10_000)
    try:
        lin = LinearTemplateScorer.extract(pol)
        assert lin.max_error < 1e-5 and lin.gamma > 0
        bound = BoundTemplateScorer.bind(lin, arms.catalog.features,
                                         arms.catalog.feature_names)
        raw, items, hours = _inputs(arms, 400, 1)
        ctx = arms.context(raw, items, hours)
        want = pol.action_dist(ctx)
        np.testing.assert_allclose(lin.action_dist_ctx(ctx), want, atol=TOL)
        np.testing.assert_allclose(bound.action_dist(raw, items, hours), want, atol=TOL)
        # the same draws: batch and one row at a time (the request path) vs decide_batch
        a_vw = pol.decide_batch(ctx, np.random.default_rng(9))
        a_batch, p_batch = bound.decide(raw, items, hours, np.random.default_rng(9))
        np.testing.assert_array_equal(a_batch, a_vw.action)
        np.testing.assert_allclose(p_batch, a_vw.pscore, atol=TOL)
        r1, r2 = np.random.default_rng(4), np.random.default_rng(4)
        for i in range(100):
            a1, p1 = bound.decide(raw[i:i + 1], items[i:i + 1], hours[i:i + 1], r1)
            d = pol.decide_batch(arms.context(raw[i:i + 1], items[i:i + 1], hours[i:i + 1]), r2)
            assert int(a1[0]) == int(d.action[0])
            assert float(p1[0]) == pytest.approx(float(d.pscore[0]), abs=TOL)
    finally:
        pol.shows = shows


def test_untrained_policy_ties_break_as_vw(trained: tuple[TemplatePolicy, TemplateArms]) -> None:
    """An untrained model scores every arm alike: VW's SquareCB keeps the first arm greedy."""
    _, arms = trained
    raw, items, hours = _inputs(arms, 20, 2)
    ctx = arms.context(raw, items, hours)
    pol = new_template_policy(arms, ctx, VWConfig())
    pol.vw.model_bytes()
    lin = LinearTemplateScorer.extract(pol)
    np.testing.assert_allclose(lin.action_dist_ctx(ctx), pol.action_dist(ctx), atol=TOL)


@pytest.mark.parametrize("cfg, match", [
    (VWConfig(exploration="epsilon", cb_type="dr"), "SquareCB"),
    (VWConfig(interactions=("UC",)), "not shared x candidate"),
    (VWConfig(interactions=("UIA",)), "not shared x candidate"),
])
def test_models_without_closed_form_are_refused(trained: tuple[TemplatePolicy, TemplateArms],
                                                cfg: VWConfig, match: str) -> None:
    _, arms = trained
    raw, items, hours = _inputs(arms, 5, 3)
    pol = new_template_policy(arms, arms.context(raw, items, hours), cfg)
    pol.vw.model_bytes()
    with pytest.raises(NotLinear, match=match):
        LinearTemplateScorer.extract(pol)


def test_bind_refuses_another_catalog(trained: tuple[TemplatePolicy, TemplateArms]) -> None:
    pol, arms = trained
    lin = LinearTemplateScorer.extract(pol)
    with pytest.raises(NotLinear, match="not this catalog"):
        BoundTemplateScorer.bind(lin, arms.catalog.features[:, 1:],
                                 arms.catalog.feature_names[1:])
    assert isinstance(arms.catalog, ItemCatalog)


def test_one_row_path_equals_the_vectorised_path_bit_for_bit(
        trained: tuple[TemplatePolicy, TemplateArms]) -> None:
    """``decide_one`` (the request path, plain floats) vs ``action_dist`` + ``sample`` (the
    vectorised path) of the same one row on the same generator: the same arm, the same
    probability (==), the same generator state after; it declines (drawing nothing) for a new
    arm or a NaN feature. (Over many rows at once the matmul is another BLAS kernel: the
    scores may differ in the last bit, so the comparison is row by row.)"""
    pol, arms = trained
    shows = pol.shows.copy()
    pol.shows = np.full_like(shows, 10_000)
    try:
        bound = BoundTemplateScorer.bind(LinearTemplateScorer.extract(pol), arms.catalog.features,
                                         arms.catalog.feature_names)
        raw, items, hours = _inputs(arms, 3000, 7)
        raw[:, 2] = np.rint(raw[:, 2] * 20)  # hours since push: integers, as the pipeline's
        hours[::3] = np.random.default_rng(8).integers(0, 337, (1000, len(IDS)))
        r1, r2 = np.random.default_rng(11), np.random.default_rng(11)
        arms_seen = set()
        for i in range(raw.shape[0]):
            got = bound.decide_one(raw[i].tolist(), int(items[i]), hours[i].tolist(), r1)
            d = pol.sample(bound.action_dist(raw[i:i + 1], items[i:i + 1], hours[i:i + 1]), r2)
            assert got is not None
            assert got[0] == int(d.action[0]) and got[1] == float(d.pscore[0])
            arms_seen.add(got[0])
        assert r1.random() == r2.random()
        assert arms_seen == set(range(len(IDS)))
        bad = raw[:1].copy()
        bad[0, 6] = np.nan
        before = r1.bit_generator.state
        assert bound.decide_one(bad[0].tolist(), 0, hours[0].tolist(), r1) is None
        assert r1.bit_generator.state == before
    finally:
        pol.shows = shows
    bound_new = BoundTemplateScorer.bind(LinearTemplateScorer.extract(pol), arms.catalog.features,
                                         arms.catalog.feature_names)
    assert bound_new.has_new
    assert bound_new.decide_one(raw[0].tolist(), 0, hours[0].tolist(), r1) is None
