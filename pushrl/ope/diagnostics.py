"""Importance-weight diagnostics: is there enough overlap to trust an off-policy estimate?

* Kish's effective sample size ``ESS = (sum w)^2 / sum w^2`` of the importance weights: the
  number of on-policy rounds the weighted sample is worth. ``ESS / n_rounds`` near 1 means the
  evaluation policy is close to the logger; a few percent means a handful of rounds dominate.
* The maximum and the 50/90/99% quantiles of the weights.
* Support deficiency: the share of the evaluation policy's probability mass (at each round's
  logged position) on (action, position) pairs the logger never took in these logs. IPW-type
  estimators cannot see rewards there; only a reward model extrapolates into that mass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pushrl.ope._rounds import reduce_rounds
from pushrl.ope._validate import BanditInputs, FloatArray, validate_bandit_inputs


def kish_ess(weights: FloatArray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` of non-negative weights.

    Args:
        weights: Importance weights, any shape (flattened).

    Returns:
        The effective sample size in ``[0, weights.size]``; 0 when all weights are 0.
    """
    w = np.asarray(weights, dtype=np.float64).ravel()
    sq = float(np.dot(w, w))
    return 0.0 if sq == 0 else float(w.sum()) ** 2 / sq


@dataclass(frozen=True)
class WeightDiagnostics:
    """Overlap diagnostics of one evaluation policy on one logged dataset.

    Attributes:
        n_rounds: Number of logged rounds.
        ess: Kish effective sample size of the importance weights.
        ess_ratio: ``ess / n_rounds``.
        weight_mean: Mean importance weight (about 1 under full support).
        weight_max: Largest importance weight.
        weight_q50: Median importance weight.
        weight_q90: 90% quantile of the importance weights.
        weight_q99: 99% quantile of the importance weights.
        support_deficiency: Mean over rounds of the evaluation-policy mass on (action,
            position) pairs never logged, in ``[0, 1]``.
        n_unsupported_pairs: Number of (action, position) pairs never logged that the
            evaluation policy gives positive probability somewhere.
    """

    n_rounds: int
    ess: float
    ess_ratio: float
    weight_mean: float
    weight_max: float
    weight_q50: float
    weight_q90: float
    weight_q99: float
    support_deficiency: float
    n_unsupported_pairs: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def diagnostics_from_inputs(inputs: BanditInputs) -> tuple[WeightDiagnostics, FloatArray]:
    """Diagnostics from already validated inputs; also returns the weights, shape ``(n,)``."""
    iw = reduce_rounds(
        BanditInputs(
            inputs.reward, inputs.action, inputs.pscore, inputs.action_dist, inputs.position, None
        )
    ).iw
    logged = np.zeros((inputs.n_actions, inputs.len_list), dtype=bool)
    logged[inputs.action, inputs.position] = True
    unlogged_mass = np.zeros(inputs.n_rounds)
    unsupported_pairs = 0
    for k in range(inputs.len_list):
        missing = ~logged[:, k]
        if not missing.any():
            continue
        dist_k = inputs.action_dist[:, :, k]  # a strided view, (n_rounds, n_actions)
        at_k = inputs.position == k
        unlogged_mass[at_k] = (dist_k @ missing.astype(np.float64))[at_k]
        unsupported_pairs += int((dist_k.max(axis=0)[missing] > 0).sum())
    q50, q90, q99 = np.quantile(iw, [0.5, 0.9, 0.99])
    ess = kish_ess(iw)
    diag = WeightDiagnostics(
        n_rounds=inputs.n_rounds,
        ess=ess,
        ess_ratio=ess / inputs.n_rounds,
        weight_mean=float(iw.mean()),
        weight_max=float(iw.max()),
        weight_q50=float(q50),
        weight_q90=float(q90),
        weight_q99=float(q99),
        support_deficiency=float(unlogged_mass.mean()),
        n_unsupported_pairs=unsupported_pairs,
    )
    return diag, iw


def weight_diagnostics(
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    position: np.ndarray | None = None,
) -> WeightDiagnostics:
    """Importance-weight and support diagnostics of an evaluation policy on logged data.

    Args:
        action: Logged actions, shape ``(n_rounds,)``.
        pscore: Logging propensity of the logged action, shape ``(n_rounds,)``.
        action_dist: Evaluation-policy probabilities, ``(n_rounds, n_actions, len_list)`` or
            ``(n_rounds, n_actions)``.
        position: Logged positions, shape ``(n_rounds,)``; required if ``len_list > 1``.

    Returns:
        The diagnostics.
    """
    action_arr = np.asarray(action)
    dummy_reward = np.zeros(action_arr.shape[0] if action_arr.ndim == 1 else 0)
    inputs = validate_bandit_inputs(dummy_reward, action_arr, pscore, action_dist, position)
    return diagnostics_from_inputs(inputs)[0]
