"""Fixtures of the OPE tests: OBP reference arrays and a small synthetic bandit with known truth."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pushrl.ope.synthetic import LoggedBandit, TabularBanditWorld

ROOT = Path(__file__).resolve().parents[2]
OBP_DIR = ROOT / "tests" / "fixtures" / "obp"
DIRECTIONS = ("random_logs_bts_policy", "bts_logs_random_policy")

# The one loader of the fixture arrays lives in the numpy-only benchmark script (it also runs
# in OBP's own venv); benchmarks/ is not a package, so load the file itself.
_spec = importlib.util.spec_from_file_location(
    "ope_obp_timing", ROOT / "benchmarks" / "ope_obp_timing.py")
assert _spec is not None and _spec.loader is not None
_obp_timing = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_obp_timing)


@cache
def load_obp_case(direction: str) -> dict[str, np.ndarray]:
    """Arrays of one OBP reference file (a direction, or ``crossfit_random_logs``), with the
    row-deduplicated 3-d arrays expanded."""
    return _obp_timing.load(direction)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def obp_reference() -> dict[str, Any]:
    """OBP 0.4.1 values, intervals and timings written by scripts/obp_reference.py."""
    return json.loads((OBP_DIR / "obp_reference.json").read_text())


@pytest.fixture(scope="session")
def obp_case() -> Callable[[str], dict[str, np.ndarray]]:
    """Loader of one direction's input arrays."""
    return load_obp_case


def make_synthetic_bandit(n: int, seed: int, n_types: int = 8, n_actions: int = 4) -> LoggedBandit:
    """Draw ``n`` logged rounds of a fixed world (the world depends only on the shapes)."""
    return TabularBanditWorld.make(n_types, n_actions, seed=1234).sample(n, seed=seed)


@pytest.fixture(scope="session")
def synthetic_bandit() -> LoggedBandit:
    """5,000 logged rounds of the synthetic world (seed 0)."""
    return make_synthetic_bandit(5000, seed=0)


@pytest.fixture(scope="session")
def make_bandit() -> Callable[..., LoggedBandit]:
    """Factory of synthetic logs: ``make_bandit(n, seed, n_types=8, n_actions=4)``."""
    return make_synthetic_bandit
