"""Fast version of benchmarks/ope_coverage_push.py: IPW and DR intervals cover the true value
of a policy on logs replicated from pushrl's own synthetic world (truth from TrueWorld).

Wald intervals cover for stochastic targets; for the deterministic most-popular target (~1% of
rounds match under the 100-item uniform logger, well under one click per log) only the betting
intervals do (see pushrl/ope/_betting.py)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

N_REPLICATIONS = 30
NOMINAL = 0.95
# Binomial Monte Carlo SE of an empirical coverage at the nominal 95% over 30 replications is
# sqrt(0.95 * 0.05 / 30) = 4.0 points; a correct 95% interval falls below 0.95 - 3 SE = 0.83
# with probability ~0.1% (the seeds are fixed, so the test is deterministic anyway).
FLOOR = NOMINAL - 3 * math.sqrt(NOMINAL * (1 - NOMINAL) / N_REPLICATIONS)

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "ope_coverage_push.py"


@pytest.fixture(scope="module")
def study():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("ope_coverage_push", _PATH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    policies = mod.make_policies(False, 10_000, 100, 5)
    reps = [mod.replicate(s, policies, users=100, days=5, estimators=("ipw", "dr"),
                          methods=("normal", "betting"))
            for s in range(1, 1 + N_REPLICATIONS)]
    return {(r["policy"], r["method"], r["estimator"]): r for r in mod.summarise(reps)}


@pytest.mark.parametrize("policy", ["uniform-random", "top-affinity"])
@pytest.mark.parametrize("estimator", ["ipw", "dr"])
def test_ipw_and_dr_cover_the_true_value(study, policy: str, estimator: str) -> None:  # type: ignore[no-untyped-def]
    for method in ("normal", "betting"):
        row = study[(policy, method, estimator)]
        assert row["coverage"] >= FLOOR, row
    row = study[(policy, "normal", estimator)]
    # unbiased for the per-log truth within 4 Monte Carlo SEs of the mean error
    assert abs(row["bias"]) < 4 * row["bias_mc_se"], row


@pytest.mark.parametrize("estimator", ["ipw", "dr"])
def test_betting_covers_the_deterministic_target(study, estimator: str) -> None:  # type: ignore[no-untyped-def]
    row = study[("most-popular", "betting", estimator)]
    assert row["coverage"] >= FLOOR, row
    assert abs(row["bias"]) < 4 * row["bias_mc_se"], row
