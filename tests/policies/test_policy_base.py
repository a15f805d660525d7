"""The shared policy interface: masking, sampling, and the one-evaluation unguarded split."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.data.features import FeatureSpec, FeatureState
from pushrl.policies.base import SEND, TimingContext, TimingPolicy
from pushrl.policies.timing_baselines import FixedHour, MostActiveHour, NeverSend, RandomVolume

START = 20_000 * 24  # a Monday 00:00 UTC


def _context(n: int = 200, seed: int = 0) -> TimingContext:
    """``n`` users with random activity histories and a random guardrail mask."""
    rng = np.random.default_rng(seed)
    spec = FeatureSpec(("a",), {}, tuple([1 / 168] * 168), (1.0,))
    st = FeatureState(spec, ["UTC", "Asia/Tokyo", "America/New_York"] * (n // 3 + 1), START)
    users = np.arange(n, dtype=np.int64)
    for day in range(14):
        act = users[rng.random(n) < 0.6]
        st.record_activity(act, START + 24 * day + rng.integers(0, 24, act.size))
    b = START + 24 * 14 + int(rng.integers(0, 24))
    raw = st.features(users, b)
    allowed = rng.random(n) < 0.6
    return TimingContext(raw, allowed, users, np.full(n, b), st, rng.integers(0, 3, n))


POLICIES: list[TimingPolicy] = [MostActiveHour(), MostActiveHour(sends_per_day=2, pool="day"),
                                FixedHour(hour=9), RandomVolume(sends_per_day=2.0), NeverSend()]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_unguarded_split_equals_two_evaluations(policy: TimingPolicy) -> None:
    for seed in range(5):
        ctx = _context(seed=seed)
        dist, free = policy.action_dist_unguarded(ctx)
        np.testing.assert_array_equal(dist, policy.action_dist(ctx))  # bit-identical
        everything = TimingContext(ctx.features, np.ones(len(ctx), bool), ctx.user_index,
                                   ctx.bucket, ctx.state, ctx.sends_today)
        np.testing.assert_array_equal(free, policy.action_dist(everything))
        assert (dist[~np.asarray(ctx.allowed), SEND] == 0).all()


@pytest.mark.parametrize("policy", [MostActiveHour(), RandomVolume(sends_per_day=2.0)],
                         ids=lambda p: p.name)
def test_unguarded_split_sees_blocked_wishes(policy: TimingPolicy) -> None:
    """The contexts above do exercise the split: some blocked rows would have sent."""
    blocked_wishes = 0
    for seed in range(5):
        ctx = _context(seed=seed)
        dist, free = policy.action_dist_unguarded(ctx)
        blocked_wishes += int(((free[:, SEND] > 0) & ~np.asarray(ctx.allowed)).sum())
    assert blocked_wishes > 0


def test_sample_matches_decide_batch() -> None:
    ctx = _context(seed=3)
    pol = RandomVolume(sends_per_day=3.0)
    a = pol.decide_batch(ctx, np.random.default_rng(7))
    b = TimingPolicy.sample(pol.action_dist(ctx), np.random.default_rng(7))
    np.testing.assert_array_equal(a.action, b.action)
    np.testing.assert_array_equal(a.pscore, b.pscore)


def test_normalise_never_writes_into_its_input() -> None:
    raw = np.array([[0.0, 0.0], [1.0, 3.0]])
    out = TimingPolicy._normalise(raw, None)
    np.testing.assert_array_equal(raw, [[0.0, 0.0], [1.0, 3.0]])
    np.testing.assert_array_equal(out, [[1.0, 0.0], [0.25, 0.75]])


def _sample_by_cdf(dist: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The general sampler (cumulative sums over the row) that two actions shortcut."""
    cdf = np.cumsum(dist, axis=1)
    u = rng.random((dist.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((u >= cdf).sum(axis=1), dist.shape[1] - 1)


def test_two_action_sampling_and_normalising_equal_the_general_path() -> None:
    from pushrl.policies.base import Policy, _sample

    rng = np.random.default_rng(8)
    raw = rng.random((5000, 2)) * rng.integers(0, 3, (5000, 2))  # zeros, ties, any scale
    raw[:3] = [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]
    mask = rng.random((5000, 2)) < 0.9
    for m in (None, mask):
        got = Policy._normalise(raw, m)
        d = np.where(m, raw, 0.0) if m is not None else raw
        tot = d.sum(axis=1, keepdims=True)
        bad = tot[:, 0] <= 0
        assert bad.any()
        np.testing.assert_array_equal(got[~bad], (d / tot)[~bad])
        np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)
        a = _sample(got, np.random.default_rng(3))
        assert a.dtype == np.int64
        np.testing.assert_array_equal(a, _sample_by_cdf(got, np.random.default_rng(3)))


def test_few_row_normalising_and_sampling_equal_the_vectorised_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Passes of <= FEW_ROWS two-action rows use Python floats: the same bits as numpy."""
    from pushrl.policies import base

    rng = np.random.default_rng(11)
    cases = []
    for _ in range(3000):
        n = int(rng.integers(1, base.FEW_ROWS + 1))
        raw = rng.random((n, 2)) * rng.integers(0, 3, (n, 2))  # zeros, ties, any scale
        if rng.random() < 0.1:
            raw[0] = rng.choice([0.0, 1e-300, 1e300, np.nan, -0.0], 2)
        mask = [None, rng.random((n, 2)) < 0.8][int(rng.integers(0, 2))]
        cases.append((raw, mask, int(rng.integers(0, 2**31))))

    def run() -> list[tuple[np.ndarray, ...]]:
        out = []
        with np.errstate(invalid="ignore", over="ignore"):
            for raw, mask, seed in cases:
                dist = base.Policy._normalise(raw, mask)
                d = base.Policy.sample(dist, np.random.default_rng(seed))
                out.append((dist, d.action, d.pscore))
        return out

    few = run()
    monkeypatch.setattr(base, "FEW_ROWS", 0)  # every call vectorised
    vec = run()
    for (fd, fa, fp), (vd, va, vp) in zip(few, vec, strict=True):
        for x, y in ((fd, vd), (fa, va), (fp, vp)):
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(x, y)  # bit-identical (NaN == NaN here)


def test_sample_two_equals_the_array_draw_on_ties() -> None:
    """``sample_two`` given the uniforms is ``_sample``'s comparisons, on the edges random
    draws rarely hit: a scaled uniform equal to the first probability or to the total,
    uniforms 0 and 1, zeros, NaN and huge or tiny rows."""
    import itertools

    from pushrl.policies.base import sample_two

    vals = [0.0, 0.25, 0.5, 0.75, 1.0, 2.0, 1e-300, 1e300, float("nan")]
    us = [0.0, 0.25, 0.5, 1 / 3, 0.75, 1.0 - 2.0**-53, 1.0]
    rows, uni = [], []
    for (a, c), x in itertools.product(itertools.product(vals, vals), us):
        rows.append((a, c))
        uni.append(x)
    d = np.array(rows, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        total = d[:, 0] + d[:, 1]
        u2 = np.array(uni) * total  # (_sample's draw, the uniforms given)
        want = np.minimum((u2 >= d[:, 0]).astype(np.int64) + (u2 >= total), 1)
    act, p = sample_two(rows, uni)
    np.testing.assert_array_equal(np.array(act), want)
    np.testing.assert_array_equal(np.array(p), np.where(want == 1, d[:, 1], d[:, 0]))
