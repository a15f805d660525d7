"""Fit the uplift model of send-only-if-it-helps from a randomised holdout.

The data is one row per user of a holdout experiment (:mod:`pushrl.rules.holdout`): the
user's pipeline features at the experiment's first decision, the arm (treated = served by
the policy, held out = never pushed), the outcome over the experiment and the sends. Because
the arm is random, ridge regressions of the outcome on :func:`pushrl.rules.uplift.basis` in
each arm (a T-learner) estimate ``E[outcome | x, send policy]`` and ``E[outcome | x, no push]``;
their difference over the predicted sends is the incremental outcome per send
(:class:`pushrl.rules.uplift.UpliftModel`).

Sources: a simulated experiment (:func:`from_rollout`, a rollout with a holdout) or any
arrays of the same meaning (:func:`fit_uplift`), e.g. a server's holdout log with the
features of each user's first decision.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pushrl.envs.rollout import RolloutResult
from pushrl.rules.uplift import OUTCOMES, UpliftModel, basis
from pushrl.sim.contexts import BatchDecision, TimingContext, TimingDecider


class PrePeriod:
    """A timing policy that waits for everybody during the first ``steps`` decision steps,
    then follows ``policy``: the pre-period of a holdout experiment, so the features at the
    experiment's start (``rollout(..., features_at=steps)``) are the same for both arms
    (nobody has been pushed yet) and cover a week of activity.

    Args:
        policy: The policy of the experiment.
        steps: Decision steps of the pre-period.
    """

    def __init__(self, policy: TimingDecider, steps: int) -> None:
        self.policy, self.steps = policy, int(steps)
        self.name = f"{getattr(policy, 'name', type(policy).__name__)}+pre{self.steps}"

    def decide_batch(self, ctx: TimingContext, rng: np.random.Generator) -> BatchDecision:
        """Wait for all before ``steps``, else ``policy``'s decisions."""
        if int(ctx.extra.get("step", self.steps)) >= self.steps:
            return self.policy.decide_batch(ctx, rng)  # type: ignore[return-value]
        n = len(ctx.features)
        dist = np.zeros((n, 2))
        dist[:, 0] = 1.0
        return BatchDecision(np.zeros(n, np.int64), np.ones(n), dist)


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge coefficients with an unpenalised intercept (column 0), features standardised."""
    mu = x[:, 1:].mean(axis=0)
    sd = x[:, 1:].std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    z = (x[:, 1:] - mu) / sd
    zc = z - z.mean(axis=0)
    yc = y - y.mean()
    k = z.shape[1]
    beta = np.linalg.solve(zc.T @ zc + alpha * len(y) * np.eye(k), zc.T @ yc)
    coef = beta / sd  # back to raw columns; the intercept fits the mean exactly
    b0 = float(y.mean() - mu @ coef)
    return np.concatenate([[b0], coef])


def fit_uplift(raw: np.ndarray, treated: np.ndarray, outcome: np.ndarray, sends: np.ndarray,
               *, kind: str = "conversions", alpha: float = 1e-3,
               meta: dict[str, Any] | None = None) -> UpliftModel:
    """Fit a T-learner from one row per user of a randomised holdout.

    Args:
        raw: ``(n, N_FEATURES)`` each user's pipeline features at the first decision.
        treated: ``(n,)`` bool, True = served by the policy, False = held out.
        outcome: ``(n,)`` the outcome over the experiment (pushed + organic conversions, or
            the objective).
        sends: ``(n,)`` pushes delivered (0 for held-out users).
        kind: What ``outcome`` is: ``conversions`` or ``objective``.
        alpha: Ridge penalty per row on standardised features.
        meta: Provenance written in the model.

    Raises:
        ValueError: shapes differ, or an arm has fewer than 20 users.
    """
    x = basis(raw)
    t = np.asarray(treated, bool)
    y = np.asarray(outcome, np.float64)
    s = np.asarray(sends, np.float64)
    n = x.shape[0]
    if t.shape != (n,) or y.shape != (n,) or s.shape != (n,):
        raise ValueError(f"uplift data: raw has {n} rows but treated/outcome/sends have "
                         f"shapes {t.shape}, {y.shape}, {s.shape}")
    if kind not in OUTCOMES:
        raise ValueError(f"uplift outcome must be one of {OUTCOMES}, got {kind!r}")
    if t.sum() < 20 or (~t).sum() < 20:
        raise ValueError(f"uplift needs >= 20 users per arm, got {int(t.sum())} treated and "
                         f"{int((~t).sum())} held out")
    return UpliftModel(kind, tuple(_ridge(x[t], y[t], alpha)), tuple(_ridge(x[~t], y[~t], alpha)),
                       tuple(_ridge(x[t], s[t], alpha)),
                       meta={"users": int(n), "treated": int(t.sum()), "alpha": alpha,
                             **(meta or {})})


def outcome_of(res: RolloutResult, kind: str = "conversions") -> np.ndarray:
    """Per-user outcome ``(n_users,)`` of a rollout: pushed + organic conversions, or the
    objective."""
    if kind == "conversions":
        return (res.conversions.astype(np.float64)
                + np.asarray(res.extra.get("organic_conversions", 0.0), np.float64))
    if kind == "objective":
        return res.objective.astype(np.float64)
    raise ValueError(f"uplift outcome must be one of {OUTCOMES}, got {kind!r}")


def from_rollout(res: RolloutResult, kind: str = "conversions",
                 alpha: float = 1e-3) -> UpliftModel:
    """Fit from a rollout that ran with a holdout (``rollout(..., holdout=...)``)."""
    held = np.asarray(res.extra.get("held_out"), bool)
    return fit_uplift(res.extra["start_features"], ~held, outcome_of(res, kind), res.sends,
                      kind=kind, alpha=alpha,
                      meta={"source": "rollout", "policy": res.policy, "seed": res.seed,
                            "days": res.days, "scenario": res.scenario.name})
