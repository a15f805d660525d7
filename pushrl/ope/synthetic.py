"""An array-level synthetic bandit with exactly known policy values, and a coverage experiment.

The world has a finite set of context types with known probabilities and a known expected
reward ``q[x, a]`` per type and action, so the value of any per-type policy is the exact sum
``sum_x p(x) sum_a pi(a|x) q(x, a)``. Logged data are sampled from a softmax logging policy with
full support. :func:`coverage_experiment` replicates logs and reports, per target policy and
estimator, the bias, RMSE, mean interval width and empirical coverage of the intervals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Self

import numpy as np

from pushrl.ope._validate import FloatArray, IntArray, check_scalar
from pushrl.ope.estimators import BaseOffPolicyEstimator, IntervalMethod
from pushrl.ope.intervals import estimate_intervals


def _softmax(z: FloatArray) -> FloatArray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class LoggedBandit:
    """Logged rounds of a :class:`TabularBanditWorld`.

    Attributes:
        world: The world the rounds were drawn from.
        context: Context type of each round, shape ``(n_rounds,)``.
        action: Logged action, shape ``(n_rounds,)``.
        reward: Bernoulli reward, shape ``(n_rounds,)``.
        pscore: Logging propensity of the logged action, shape ``(n_rounds,)``.
    """

    world: TabularBanditWorld
    context: IntArray
    action: IntArray
    reward: FloatArray
    pscore: FloatArray

    @property
    def q(self) -> FloatArray:
        """True expected rewards, shape ``(n_types, n_actions)``."""
        return self.world.q

    @property
    def logging(self) -> FloatArray:
        """Logging policy, shape ``(n_types, n_actions)``."""
        return self.world.logging

    @property
    def type_probs(self) -> FloatArray:
        """Context-type probabilities, shape ``(n_types,)``."""
        return self.world.type_probs

    def action_dist(self, policy: FloatArray) -> FloatArray:
        """Per-round probabilities of a per-type policy, shape ``(n_rounds, n_actions, 1)``."""
        return policy[self.context][:, :, np.newaxis]

    def true_value(self, policy: FloatArray) -> float:
        """Exact value of a per-type policy."""
        return self.world.true_value(policy)

    def estimated_rewards(self, bias: float = 0.0, q_hat: FloatArray | None = None) -> FloatArray:
        """Per-round reward model, shape ``(n_rounds, n_actions, 1)``.

        Args:
            bias: Added to the true ``q`` (then clipped to [0, 1]) when ``q_hat`` is None.
            q_hat: A per-type reward model, shape ``(n_types, n_actions)``.
        """
        table = np.clip(self.q + bias, 0, 1) if q_hat is None else q_hat
        return table[self.context][:, :, np.newaxis]


@dataclass(frozen=True)
class TabularBanditWorld:
    """Context types, true rewards and a logging policy.

    Attributes:
        type_probs: Probability of each context type, shape ``(n_types,)``.
        q: Expected reward per type and action, shape ``(n_types, n_actions)``.
        logging: Logging policy per type, shape ``(n_types, n_actions)``, full support.
    """

    type_probs: FloatArray
    q: FloatArray
    logging: FloatArray

    @classmethod
    def make(cls, n_types: int = 8, n_actions: int = 4, seed: int = 1234) -> Self:
        """Draw a world: Dirichlet type probabilities, ``q ~ U(0.05, 0.6)``, softmax logger."""
        check_scalar(n_types, "n_types", kind="int", low=1)
        check_scalar(n_actions, "n_actions", kind="int", low=2)
        rng = np.random.default_rng(seed)
        type_probs = rng.dirichlet(np.ones(n_types))
        q = rng.uniform(0.05, 0.6, size=(n_types, n_actions))
        logging = _softmax(rng.normal(size=(n_types, n_actions)))
        return cls(type_probs, q, logging)

    def true_value(self, policy: FloatArray) -> float:
        """Exact value ``sum_x p(x) sum_a pi(a|x) q(x, a)`` of a per-type policy."""
        return float(self.type_probs @ (policy * self.q).sum(axis=1))

    def softmax_policy(self, temperature: float) -> FloatArray:
        """``softmax(q / temperature)`` per type (negative temperature prefers bad actions)."""
        return _softmax(self.q / temperature)

    def epsilon_greedy_policy(self, epsilon: float) -> FloatArray:
        """Best action with probability ``1 - epsilon``, uniform otherwise."""
        n_types, n_actions = self.q.shape
        pol = np.full((n_types, n_actions), epsilon / n_actions)
        pol[np.arange(n_types), self.q.argmax(axis=1)] += 1 - epsilon
        return pol

    def uniform_policy(self) -> FloatArray:
        """Uniform over actions."""
        return np.full(self.q.shape, 1.0 / self.q.shape[1])

    def noisy_reward_model(self, scale: float, seed: int = 0) -> FloatArray:
        """A fixed misspecified model ``clip(q + N(0, scale^2), 0, 1)``, shape of ``q``."""
        rng = np.random.default_rng(seed)
        return np.clip(self.q + rng.normal(scale=scale, size=self.q.shape), 0.0, 1.0)

    def sample(self, n_rounds: int, seed: int) -> LoggedBandit:
        """Draw ``n_rounds`` logged rounds."""
        check_scalar(n_rounds, "n_rounds", kind="int", low=1)
        rng = np.random.default_rng(seed)
        context = rng.choice(self.type_probs.shape[0], size=n_rounds, p=self.type_probs)
        cum = np.cumsum(self.logging[context], axis=1)
        action = np.minimum(
            (rng.random(n_rounds)[:, np.newaxis] > cum).sum(axis=1), self.q.shape[1] - 1
        )
        reward = rng.binomial(1, self.q[context, action]).astype(np.float64)
        return LoggedBandit(self, context, action, reward, self.logging[context, action])


@dataclass(frozen=True)
class CoverageRow:
    """Accuracy and interval coverage of one estimator on one target policy.

    Attributes:
        policy: Target policy name.
        estimator: Estimator name.
        true_value: Exact policy value.
        bias: Mean of ``estimate - true_value`` over replications.
        rmse: Root mean squared error.
        coverage: Share of replications whose interval contains ``true_value``.
        coverage_se: Binomial standard error of ``coverage``.
        mean_width: Mean interval width.
        n_replications: Number of replicated logs.
    """

    policy: str
    estimator: str
    true_value: float
    bias: float
    rmse: float
    coverage: float
    coverage_se: float
    mean_width: float
    n_replications: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def coverage_experiment(
    world: TabularBanditWorld,
    policies: Mapping[str, FloatArray],
    estimators: Sequence[BaseOffPolicyEstimator],
    *,
    n_rounds: int = 2000,
    n_replications: int = 100,
    n_bootstrap_samples: int = 500,
    alpha: float = 0.05,
    method: IntervalMethod = "bootstrap",
    reward_model: FloatArray | None = None,
    seed: int = 0,
) -> list[CoverageRow]:
    """Replicate logs from ``world`` and measure bias, RMSE and interval coverage.

    Args:
        world: The synthetic world.
        policies: Target policies by name, each of shape ``(n_types, n_actions)``.
        estimators: Estimators with distinct names (reward-model ones use ``reward_model``).
        n_rounds: Logged rounds per replication.
        n_replications: Number of independent logs.
        n_bootstrap_samples: Bootstrap resamples per interval.
        alpha: Miscoverage level; nominal coverage is ``1 - alpha``.
        method: ``"bootstrap"``, ``"normal"`` or ``"betting"``.
        reward_model: Per-type reward model, shape of ``world.q``; the true ``q`` if None.
        seed: Seed of the replications (replication ``r`` uses ``seed + r``).

    Returns:
        One row per (policy, estimator).
    """
    check_scalar(n_replications, "n_replications", kind="int", low=2)
    q_hat = world.q if reward_model is None else reward_model
    names = [e.estimator_name for e in estimators]
    est = {p: np.empty((n_replications, len(names))) for p in policies}
    lower = {p: np.empty_like(est[p]) for p in policies}
    upper = {p: np.empty_like(est[p]) for p in policies}
    for r in range(n_replications):
        logs = world.sample(n_rounds, seed=seed + r)
        q_rounds = logs.estimated_rewards(q_hat=q_hat)
        for p, policy in policies.items():
            out = estimate_intervals(
                estimators,
                logs.reward,
                logs.action,
                logs.pscore,
                logs.action_dist(policy),
                None,
                q_rounds,
                alpha=alpha,
                n_bootstrap_samples=n_bootstrap_samples,
                random_state=seed + r,
                method=method,
            )
            for j, name in enumerate(names):
                est[p][r, j], lower[p][r, j], upper[p][r, j] = (
                    out[name].value,
                    out[name].lower,
                    out[name].upper,
                )
    rows = []
    for p, policy in policies.items():
        truth = world.true_value(policy)
        covered = (lower[p] <= truth) & (truth <= upper[p])
        for j, name in enumerate(names):
            cov = float(covered[:, j].mean())
            err = est[p][:, j] - truth
            rows.append(
                CoverageRow(
                    policy=p,
                    estimator=name,
                    true_value=truth,
                    bias=float(err.mean()),
                    rmse=float(np.sqrt(np.mean(err**2))),
                    coverage=cov,
                    coverage_se=float(np.sqrt(cov * (1 - cov) / n_replications)),
                    mean_width=float(np.mean(upper[p][:, j] - lower[p][:, j])),
                    n_replications=n_replications,
                )
            )
    return rows
