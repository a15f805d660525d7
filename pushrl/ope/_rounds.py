"""Per-round vectors that every bandit estimator is a function of.

An estimator never needs the full ``(n_rounds, n_actions, len_list)`` arrays: it needs the
importance weight of the logged action, the reward-model prediction at the logged action and
the reward model's expectation under the evaluation policy, all at the logged position. They
are computed once (:func:`reduce_rounds`), so intervals and comparisons resample ``O(n_rounds)``
vectors, never the 3-d arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from pushrl.ope._validate import BanditInputs, FloatArray, IntArray

# Rounds per block when gathering (n_rounds, n_actions) slices at a per-round position, so the
# temporary stays near 64 MB whatever n_actions is.
_GATHER_BLOCK_ELEMENTS = 8_000_000


def expected_under_policy(
    action_dist: FloatArray, values: FloatArray, position: IntArray
) -> FloatArray:
    """Return ``sum_a action_dist[i, a, k_i] * values[i, a, k_i]`` for every round ``i``.

    Args:
        action_dist: Policy probabilities, shape ``(n_rounds, n_actions, len_list)``.
        values: Per-action values (e.g. estimated rewards), same shape.
        position: Position ``k_i`` of each round, shape ``(n_rounds,)``.

    Returns:
        The expectation per round, shape ``(n_rounds,)``.
    """
    n_rounds, n_actions, len_list = action_dist.shape
    if len_list == 1:  # strided views, no copy
        return np.einsum("ij,ij->i", action_dist[:, :, 0], values[:, :, 0])
    out = np.empty(n_rounds)
    block = max(1, _GATHER_BLOCK_ELEMENTS // max(n_actions, 1))
    for start in range(0, n_rounds, block):
        rows = np.arange(start, min(start + block, n_rounds))
        pos = position[rows]
        out[rows] = np.einsum("ij,ij->i", action_dist[rows, :, pos], values[rows, :, pos])
    return out


@dataclass(frozen=True)
class RoundData:
    """Per-round vectors of one (logged data, evaluation policy, reward model) triple.

    Attributes:
        reward: Observed reward ``r_i``, shape ``(n_rounds,)``.
        iw: Importance weight ``w_i = pi_e(a_i | x_i, k_i) / pscore_i``, shape ``(n_rounds,)``.
        q_pi: ``sum_a pi_e(a | x_i, k_i) q_hat(x_i, a, k_i)``, shape ``(n_rounds,)``, or ``None``
            without a reward model.
        q_logged: ``q_hat(x_i, a_i, k_i)``, shape ``(n_rounds,)``, or ``None``.
        iw_max: Largest importance weight any round could have had: the largest evaluation
            probability over the smallest logged propensity (exact for a logger with a
            constant propensity floor), or ``None`` if unknown. Used by betting intervals.
        q_range: ``(min, max)`` of the reward model over every action, or ``None``.
    """

    reward: FloatArray
    iw: FloatArray
    q_pi: FloatArray | None = None
    q_logged: FloatArray | None = None
    iw_max: float | None = None
    q_range: tuple[float, float] | None = None

    @property
    def n_rounds(self) -> int:
        """Number of rounds."""
        return int(self.reward.shape[0])

    @cached_property
    def weighted_reward(self) -> FloatArray:
        """``w_i r_i`` (the IPW term), shape ``(n_rounds,)``."""
        return self.reward * self.iw

    @cached_property
    def residual(self) -> FloatArray:
        """``r_i - q_hat(x_i, a_i)``, shape ``(n_rounds,)``."""
        return self.reward - self._need(self.q_logged)

    @cached_property
    def weighted_residual(self) -> FloatArray:
        """``w_i (r_i - q_hat(x_i, a_i))`` (the DR correction), shape ``(n_rounds,)``."""
        return self.iw * self.residual

    @cached_property
    def direct(self) -> FloatArray:
        """``q_hat(x_i, pi_e)`` (the DM term), shape ``(n_rounds,)``."""
        return self._need(self.q_pi)

    @staticmethod
    def _need(arr: FloatArray | None) -> FloatArray:
        if arr is None:
            raise ValueError("this estimator needs a reward model but RoundData has none")
        return arr


def reduce_rounds(inputs: BanditInputs) -> RoundData:
    """Reduce validated bandit arrays to the per-round vectors of :class:`RoundData`.

    Args:
        inputs: Output of :func:`pushrl.ope._validate.validate_bandit_inputs`.

    Returns:
        The per-round vectors; reward-model terms are ``None`` when no estimated rewards were
        given.
    """
    rows = np.arange(inputs.n_rounds)
    iw = inputs.action_dist[rows, inputs.action, inputs.position] / inputs.pscore
    iw_max = float(inputs.action_dist.max()) / float(inputs.pscore.min())
    q_hat = inputs.estimated_rewards
    if q_hat is None:
        return RoundData(reward=inputs.reward, iw=iw, iw_max=iw_max)
    return RoundData(
        reward=inputs.reward,
        iw=iw,
        q_pi=expected_under_policy(inputs.action_dist, q_hat, inputs.position),
        q_logged=q_hat[rows, inputs.action, inputs.position],
        iw_max=iw_max,
        q_range=(float(q_hat.min()), float(q_hat.max())),
    )


@dataclass(frozen=True)
class RoundTerms:
    """An estimate written as ``mean(direct) + mean(weighted) / mean(normaliser)``.

    Every bandit estimator here has this form (a missing term counts as 0, a missing
    normaliser as 1). Keeping the three per-round vectors apart, instead of one vector of
    per-round rewards, is what lets a bootstrap re-normalise self-normalised estimators inside
    each resample.

    Attributes:
        direct: Per-round model term, shape ``(n_rounds,)``, or ``None``.
        weighted: Per-round importance-weighted term, shape ``(n_rounds,)``, or ``None``.
        normaliser: Per-round self-normalisation weights, shape ``(n_rounds,)``, or ``None``.
    """

    direct: FloatArray | None
    weighted: FloatArray | None
    normaliser: FloatArray | None = None

    @property
    def n_rounds(self) -> int:
        """Number of rounds."""
        for arr in (self.direct, self.weighted, self.normaliser):
            if arr is not None:
                return int(arr.shape[0])
        raise ValueError("RoundTerms has no term")

    def columns(self) -> tuple[FloatArray | None, FloatArray | None, FloatArray | None]:
        """The three per-round vectors, in (direct, weighted, normaliser) order."""
        return self.direct, self.weighted, self.normaliser

    def value(self) -> float:
        """The point estimate."""
        if self.normaliser is None:
            return float(self.round_rewards().mean())
        direct = 0.0 if self.direct is None else float(self.direct.mean())
        weighted = 0.0 if self.weighted is None else float(self.weighted.mean())
        return direct + weighted / float(self.normaliser.mean())

    def round_rewards(self) -> FloatArray:
        """Per-round values whose mean is :meth:`value` (OBP's ``_estimate_round_rewards``).

        For self-normalised estimators the normaliser is the full-sample mean, exactly as in
        OBP; resampling these values would *not* re-normalise, which is why intervals use the
        three terms instead.

        Returns:
            Shape ``(n_rounds,)``.
        """
        n = self.n_rounds
        weighted = np.zeros(n) if self.weighted is None else self.weighted
        if self.normaliser is not None:
            weighted = weighted / self.normaliser.mean()
        return weighted if self.direct is None else self.direct + weighted

    def influence(self) -> FloatArray:
        """Per-round influence values: their mean is the estimate, their spread its variance.

        For ``A + B / C`` (means) the linearisation is ``a_i + (b_i - (B / C) c_i) / C``, the
        delta-method term of the ratio; without a normaliser it is ``a_i + b_i``.

        Returns:
            Shape ``(n_rounds,)``.
        """
        if self.normaliser is None:
            return self.round_rewards()
        c_mean = float(self.normaliser.mean())
        weighted = np.zeros(self.n_rounds) if self.weighted is None else self.weighted
        ratio = float(weighted.mean()) / c_mean
        lin = (weighted - ratio * self.normaliser) / c_mean + ratio
        return lin if self.direct is None else self.direct + lin

    @staticmethod
    def combine(
        direct: np.ndarray | float, weighted: np.ndarray | float, normaliser: np.ndarray | float
    ) -> np.ndarray:
        """Apply ``direct + weighted / normaliser`` to (resampled) means, elementwise.

        A resample without any positive normaliser (no round where the evaluation policy
        agrees with the logged action) has no weighted evidence: its weighted part counts as 0
        instead of ``0 / 0``.
        """
        w = np.asarray(weighted, np.float64)
        c = np.asarray(normaliser, np.float64)
        ratio = np.divide(w, c, out=np.zeros(np.broadcast(w, c).shape), where=c != 0)
        return np.asarray(direct + ratio)
