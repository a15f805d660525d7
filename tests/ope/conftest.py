"""Fixtures of the OPE tests: OBP reference arrays and a small synthetic bandit with known truth."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

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


@dataclass(frozen=True)
class SyntheticBandit:
    """Logged data of a context-type bandit whose policy values are known exactly.

    Attributes:
        reward, action, pscore: Logged arrays, shape ``(n,)``.
        context: Context type of each round, shape ``(n,)``.
        q: True expected reward per context type and action, shape ``(n_types, n_actions)``.
        logging: Logging policy per context type, shape ``(n_types, n_actions)``.
    """

    reward: np.ndarray
    action: np.ndarray
    pscore: np.ndarray
    context: np.ndarray
    q: np.ndarray
    logging: np.ndarray
    type_probs: np.ndarray

    def action_dist(self, policy: np.ndarray) -> np.ndarray:
        """Per-round distribution of a per-type policy, shape ``(n, n_actions, 1)``."""
        return policy[self.context][:, :, np.newaxis]

    def true_value(self, policy: np.ndarray) -> float:
        """Exact value ``sum_x p(x) sum_a pi(a|x) q(x, a)``."""
        return float(self.type_probs @ (policy * self.q).sum(axis=1))

    def estimated_rewards(self, bias: float = 0.0) -> np.ndarray:
        """Reward model ``q + bias`` (clipped to [0, 1]) per round, shape ``(n, n_actions, 1)``."""
        return np.clip(self.q + bias, 0, 1)[self.context][:, :, np.newaxis]


def make_synthetic_bandit(
    n: int, seed: int, n_types: int = 8, n_actions: int = 4
) -> SyntheticBandit:
    """Draw ``n`` logged rounds of a fixed world (the world depends only on the shapes)."""
    world = np.random.default_rng(1234)
    type_probs = world.dirichlet(np.ones(n_types))
    q = world.uniform(0.05, 0.6, size=(n_types, n_actions))
    logits = world.normal(size=(n_types, n_actions))
    logging = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    context = rng.choice(n_types, size=n, p=type_probs)
    u = rng.random(n)[:, np.newaxis]
    action = (u > np.cumsum(logging[context], axis=1)).sum(axis=1)
    action = np.minimum(action, n_actions - 1)
    reward = rng.binomial(1, q[context, action]).astype(np.float64)
    return SyntheticBandit(
        reward, action, logging[context, action], context, q, logging, type_probs
    )


@pytest.fixture(scope="session")
def synthetic_bandit() -> SyntheticBandit:
    """5,000 logged rounds of the synthetic world (seed 0)."""
    return make_synthetic_bandit(5000, seed=0)


@pytest.fixture(scope="session")
def make_bandit() -> Callable[..., SyntheticBandit]:
    """Factory of synthetic logs: ``make_bandit(n, seed, n_types=8, n_actions=4)``."""
    return make_synthetic_bandit
