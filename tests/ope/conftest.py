"""Fixtures of the OPE tests: OBP reference arrays and a small synthetic bandit with known truth."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pushrl.ope.synthetic import LoggedBandit, TabularBanditWorld

OBP_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "obp"
DIRECTIONS = ("random_logs_bts_policy", "bts_logs_random_policy")


@cache
def load_obp_case(direction: str) -> dict[str, np.ndarray]:
    """Arrays of one OBP reference file (a direction, or ``crossfit_random_logs``), with the
    row-deduplicated 3-d arrays expanded."""
    with np.load(OBP_DIR / f"{direction}.npz") as z:
        raw = {k: z[k] for k in z.files}
    out = {k: v for k, v in raw.items() if "__" not in k}
    for key in [k for k in raw if k.endswith("__rows")]:
        name = key[: -len("__rows")]
        out[name] = raw[key][raw[f"{name}__index"]]
    return out


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
