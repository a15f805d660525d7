"""The vectorised bootstrap equals a naive per-resample loop; paired and normal intervals."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pushrl.ope import (
    DR,
    ESTIMATORS,
    IPW,
    SNDR,
    SNIPW,
    estimate_intervals,
    paired_difference_interval,
)
from pushrl.ope._bootstrap import bootstrap_means

B = 300


def args_for(bandit: Any, policy: np.ndarray, bias: float = 0.05) -> dict[str, Any]:
    return {
        "reward": bandit.reward,
        "action": bandit.action,
        "pscore": bandit.pscore,
        "action_dist": bandit.action_dist(policy),
        "estimated_rewards_by_reg_model": bandit.estimated_rewards(bias),
    }


def greedy(bandit: Any, eps: float = 0.1) -> np.ndarray:
    n_actions = bandit.q.shape[1]
    pol = np.full(bandit.q.shape, eps / n_actions)
    pol[np.arange(bandit.q.shape[0]), bandit.q.argmax(axis=1)] += 1 - eps
    return pol


def naive_replicates(bandit: Any, policy: np.ndarray, name: str, seed: int) -> np.ndarray:
    """Textbook bootstrap: resample rows, recompute the estimator from scratch."""
    rs = np.random.RandomState(seed)
    args = args_for(bandit, policy)
    n = bandit.reward.shape[0]
    est = ESTIMATORS[name]()
    out = []
    for _ in range(B):
        idx = rs.randint(0, n, size=n)
        sub = {k: v[idx] for k, v in args.items()}
        out.append(est.estimate_policy_value(**sub))
    return np.array(out)


@pytest.mark.parametrize("name", ["ipw", "snipw", "dr", "sndr", "dm"])
def test_vectorised_bootstrap_equals_a_naive_loop(name: str, synthetic_bandit: Any) -> None:
    """Including SNIPW/SNDR: their normaliser is recomputed inside every resample."""
    policy = greedy(synthetic_bandit)
    reps = naive_replicates(synthetic_bandit, policy, name, seed=5)
    expected = {
        "mean": reps.mean(),
        "95.0% CI (lower)": np.percentile(reps, 2.5),
        "95.0% CI (upper)": np.percentile(reps, 97.5),
    }
    got = ESTIMATORS[name]().estimate_interval(
        **args_for(synthetic_bandit, policy),
        n_bootstrap_samples=B,
        random_state=np.random.RandomState(5),
    )
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-10)


def test_chunking_does_not_change_the_resamples() -> None:
    cols = np.random.default_rng(0).random((997, 3))
    a = bootstrap_means(cols, 50, np.random.RandomState(3), max_chunk_elements=997 * 7)
    b = bootstrap_means(cols, 50, np.random.RandomState(3), max_chunk_elements=10**9)
    c = bootstrap_means(cols, 50, 3, max_chunk_elements=997 * 7)
    d = bootstrap_means(cols, 50, 3, max_chunk_elements=997)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(c, d, rtol=1e-12)


def test_joint_intervals_equal_separate_calls(synthetic_bandit: Any) -> None:
    policy = greedy(synthetic_bandit)
    args = args_for(synthetic_bandit, policy)
    ests = [ESTIMATORS[n]() for n in ("dm", "ipw", "snipw", "dr", "sndr", "switch-dr", "dr-os")]
    joint = estimate_intervals(ests, **args, n_bootstrap_samples=B, random_state=9)
    for est in ests:
        alone = est.estimate_interval(**args, n_bootstrap_samples=B, random_state=9)
        assert joint[est.estimator_name].as_obp_dict() == pytest.approx(alone, rel=1e-12)
        assert joint[est.estimator_name].value == est.estimate_policy_value(**args)


def test_joint_intervals_reject_duplicates_and_context_estimators(synthetic_bandit: Any) -> None:
    args = args_for(synthetic_bandit, greedy(synthetic_bandit))
    with pytest.raises(ValueError, match="distinct"):
        estimate_intervals([IPW(), IPW()], **args)
    with pytest.raises(TypeError, match="needs `context`"):
        estimate_intervals([ESTIMATORS["dr-cf"]()], **args)


@pytest.mark.parametrize("est", [IPW(), SNIPW(), DR(), SNDR()])
def test_normal_interval_matches_bootstrap_width(est: Any, make_bandit: Any) -> None:
    """On 20k rounds the delta-method and percentile intervals agree to ~10% in width."""
    b = make_bandit(20_000, seed=3)
    args = args_for(b, greedy(b))
    boot = est.estimate_interval(**args, n_bootstrap_samples=1000, random_state=1)
    norm = est.estimate_interval(**args, method="normal")
    width_b = boot["95.0% CI (upper)"] - boot["95.0% CI (lower)"]
    width_n = norm["95.0% CI (upper)"] - norm["95.0% CI (lower)"]
    assert width_n == pytest.approx(width_b, rel=0.1)


def test_alpha_changes_level_and_keys(synthetic_bandit: Any) -> None:
    args = args_for(synthetic_bandit, greedy(synthetic_bandit))
    ci90 = IPW().estimate_interval(**args, alpha=0.1, n_bootstrap_samples=400, random_state=0)
    ci99 = IPW().estimate_interval(**args, alpha=0.01, n_bootstrap_samples=400, random_state=0)
    assert set(ci90) == {"mean", "90.0% CI (lower)", "90.0% CI (upper)"}
    assert ci99["99.0% CI (lower)"] < ci90["90.0% CI (lower)"]


def test_paired_difference_uses_the_same_resamples(synthetic_bandit: Any) -> None:
    """The paired interval equals the naive loop that resamples both policies together."""
    b = synthetic_bandit
    cand, base = greedy(b, 0.1), greedy(b, 0.9)
    got = paired_difference_interval(
        DR(),
        b.reward,
        b.action,
        b.pscore,
        b.action_dist(cand),
        b.action_dist(base),
        None,
        b.estimated_rewards(0.05),
        n_bootstrap_samples=B,
        random_state=np.random.RandomState(2),
    )
    diffs = naive_replicates(b, cand, "dr", 2) - naive_replicates(b, base, "dr", 2)
    assert got.lower == pytest.approx(np.percentile(diffs, 2.5), rel=1e-10)
    assert got.upper == pytest.approx(np.percentile(diffs, 97.5), rel=1e-10)
    assert got.difference == pytest.approx(got.candidate_value - got.baseline_value)
    # pairing removes the shared noise: narrower than combining two independent intervals
    cand_ci = DR().estimate_interval(**args_for(b, cand), method="normal")
    base_ci = DR().estimate_interval(**args_for(b, base), method="normal")
    half = [(c["95.0% CI (upper)"] - c["95.0% CI (lower)"]) / 2 for c in (cand_ci, base_ci)]
    assert (got.upper - got.lower) / 2 < np.hypot(*half)


def test_paired_difference_against_the_logger(synthetic_bandit: Any) -> None:
    b = synthetic_bandit
    res = paired_difference_interval(
        IPW(), b.reward, b.action, b.pscore, b.action_dist(greedy(b)), method="normal"
    )
    assert res.baseline_value == pytest.approx(b.reward.mean())
    assert res.lower < res.difference < res.upper
