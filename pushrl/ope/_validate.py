"""The one place where OPE inputs and hyperparameters are checked.

Every estimator, interval, diagnostic and gate calls :func:`validate_bandit_inputs` (bandit
arrays), :func:`validate_interval_args` (``alpha`` / bootstrap arguments) or
:func:`check_scalar` (hyperparameters) and never repeats a check of its own. Messages name
the argument, the offending value and where it is: "`pscore` must be in (0, 1], got
min=-0.1 in 3 rows (first at row 17)".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from pushrl.errors import DataError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
RandomState = int | np.random.Generator | np.random.RandomState | None


class RewardModel(Protocol):
    """An unfitted scikit-learn style reward (response) model of OPE's reward regressions.

    ``fit(x, y)`` returns the fitted model; regressors are read with ``predict(x)`` and
    classifiers (``sklearn.base.is_classifier``) with ``predict_proba(x)[:, 1]``. The model is
    ``sklearn.base.clone``-d before every fit, so it must support ``get_params``.
    """

    def fit(self, x: Any, y: Any, /) -> Any:
        """Fit on features ``x`` ``(n, d)`` and targets ``y`` ``(n,)``; returns the model."""

    def predict(self, x: Any, /) -> Any:
        """Predictions for ``x``, shape ``(n,)``."""

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters (what ``clone`` copies)."""


class ClassifierRewardModel(RewardModel, Protocol):
    """A :class:`RewardModel` for 0/1 rewards, read through ``predict_proba``."""

    def predict_proba(self, x: Any, /) -> Any:
        """Class probabilities for ``x``, shape ``(n, 2)``; column 1 is the reward's."""

# Tolerance on sum_a pi(a | x, k) == 1; OBP uses np.allclose's defaults (rtol=1e-5, atol=1e-8).
SUM_TO_ONE_ATOL = 1e-6


@dataclass(frozen=True)
class BanditInputs:
    """Validated bandit arrays, in the shapes every estimator works with.

    Attributes:
        reward: Observed rewards, shape ``(n_rounds,)``.
        action: Logged action indices, shape ``(n_rounds,)``.
        pscore: Logging propensity of the logged action, shape ``(n_rounds,)``.
        action_dist: Evaluation-policy probabilities, shape ``(n_rounds, n_actions, len_list)``.
        position: Logged position (slot) of each round, shape ``(n_rounds,)``; zeros when the
            caller passed ``None`` and ``len_list == 1``.
        estimated_rewards: Reward-model predictions, shape ``(n_rounds, n_actions, len_list)``,
            or ``None``.
    """

    reward: FloatArray
    action: IntArray
    pscore: FloatArray
    action_dist: FloatArray
    position: IntArray
    estimated_rewards: FloatArray | None

    @property
    def n_rounds(self) -> int:
        """Number of logged rounds."""
        return int(self.reward.shape[0])

    @property
    def n_actions(self) -> int:
        """Number of actions."""
        return int(self.action_dist.shape[1])

    @property
    def len_list(self) -> int:
        """Number of positions (slots) per round."""
        return int(self.action_dist.shape[2])


def _rows_message(
    name: str, requirement: str, values: np.ndarray, too_low: np.ndarray, too_high: np.ndarray
) -> str:
    """Format "`name` must be REQ, got min=.. in K rows (first at row I)" from 1-d masks.

    ``too_low`` / ``too_high`` flag rows below / above the valid range; NaN rows are in neither
    and are reported as non-finite.
    """
    with np.errstate(invalid="ignore"):
        nonfinite = ~np.isfinite(values) if np.issubdtype(values.dtype, np.floating) else None
    bad = too_low | too_high if nonfinite is None else too_low | too_high | nonfinite
    bad_idx = np.flatnonzero(bad)
    if nonfinite is not None and nonfinite.any():
        got = f"non-finite value {float(values[nonfinite][0]):g}"
    elif too_low.any():
        got = f"min={values[too_low].min():g}"
    else:
        got = f"max={values[too_high].max():g}"
    rows = "row" if bad_idx.size == 1 else "rows"
    return (
        f"`{name}` must be {requirement}, got {got} in {bad_idx.size} {rows} "
        f"(first at row {int(bad_idx[0])})"
    )


def as_float_array(value: Any, name: str, ndim: int) -> FloatArray:
    """Return ``value`` as a float64 ndarray of ``ndim`` dimensions (no copy when possible).

    Raises:
        TypeError: If ``value`` is not numeric array-like.
        DataError: If it has the wrong number of dimensions or non-finite entries.
    """
    arr = _as_numeric(value, name)
    if arr.ndim != ndim:
        raise DataError(f"`{name}` must be {ndim}-dimensional, got shape {arr.shape}")
    arr = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        flat = np.isfinite(arr).reshape(arr.shape[0], -1).all(axis=1) if arr.ndim else arr
        first = int(np.flatnonzero(~flat)[0])
        raise DataError(
            f"`{name}` must be finite, got NaN or inf in {int((~flat).sum())} rows "
            f"(first at row {first})"
        )
    return arr


def as_int_array(value: Any, name: str, upper: int, upper_name: str) -> IntArray:
    """Return a 1-d integer array with entries in ``[0, upper)``.

    Raises:
        TypeError: If ``value`` is not an integer array.
        DataError: If it is not 1-d or has out-of-range entries.
    """
    arr = _as_numeric(value, name)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"`{name}` must have an integer dtype, got {arr.dtype}; cast with .astype(int)"
        )
    if arr.ndim != 1:
        raise DataError(f"`{name}` must be 1-dimensional, got shape {arr.shape}")
    too_low, too_high = arr < 0, arr >= upper
    if too_low.any() or too_high.any():
        requirement = f"integers in [0, {upper_name}={upper})"
        raise DataError(_rows_message(name, requirement, arr, too_low, too_high))
    return arr.astype(np.intp, copy=False)


def _as_numeric(value: Any, name: str) -> np.ndarray:
    if value is None:
        raise TypeError(f"`{name}` is required, got None")
    arr = np.asarray(value)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"`{name}` must be a numeric array, got dtype {arr.dtype}")
    return arr


def _check_length(arr: np.ndarray, name: str, n_rounds: int) -> None:
    if arr.shape[0] != n_rounds:
        raise DataError(
            f"`{name}` must have n_rounds={n_rounds} rows (the length of `reward`), "
            f"got shape {arr.shape}"
        )


def _as_action_dist(value: Any, name: str, n_rounds: int) -> FloatArray:
    arr = _as_numeric(value, name)
    if arr.ndim == 2:  # (n_rounds, n_actions) is the len_list == 1 case
        arr = arr[:, :, np.newaxis]
    if arr.ndim != 3:
        raise DataError(
            f"`{name}` must have shape (n_rounds, n_actions, len_list) or "
            f"(n_rounds, n_actions), got {arr.shape}"
        )
    arr = as_float_array(arr, name, 3)
    _check_length(arr, name, n_rounds)
    return arr


def _check_probabilities(action_dist: FloatArray, name: str) -> None:
    row_min, row_max = action_dist.min(axis=(1, 2)), action_dist.max(axis=(1, 2))
    too_low, too_high = row_min < 0, row_max > 1
    if too_low.any() or too_high.any():
        extreme = np.where(too_low, row_min, row_max)
        raise DataError(_rows_message(name, "probabilities in [0, 1]", extreme, too_low, too_high))
    sums = action_dist.sum(axis=1)  # (n_rounds, len_list)
    off = np.abs(sums - 1.0) > SUM_TO_ONE_ATOL
    if off.any():
        rows, pos = np.nonzero(off)
        raise DataError(
            f"`{name}` must sum to 1 over actions for every (round, position), got sums in "
            f"[{sums[off].min():g}, {sums[off].max():g}] for {rows.size} (round, position) "
            f"pairs (first at row {int(rows[0])}, position {int(pos[0])})"
        )


def validate_bandit_inputs(
    reward: npt.ArrayLike,
    action: npt.ArrayLike,
    pscore: npt.ArrayLike,
    action_dist: npt.ArrayLike,
    position: npt.ArrayLike | None = None,
    estimated_rewards: npt.ArrayLike | None = None,
    *,
    require_estimated_rewards: bool = False,
    caller: str = "estimator",
) -> BanditInputs:
    """Check the OBP-style bandit arrays once and return them in canonical form.

    Args:
        reward: Observed rewards, shape ``(n_rounds,)``.
        action: Logged action indices in ``[0, n_actions)``, shape ``(n_rounds,)``.
        pscore: Logging propensity of the logged action in ``(0, 1]``, shape ``(n_rounds,)``.
        action_dist: Evaluation-policy probabilities, shape ``(n_rounds, n_actions, len_list)``
            (or ``(n_rounds, n_actions)`` for ``len_list == 1``); each ``[i, :, k]`` sums to 1.
        position: Logged positions in ``[0, len_list)``, shape ``(n_rounds,)``; required when
            ``len_list > 1``.
        estimated_rewards: Reward-model predictions with the shape of ``action_dist``.
        require_estimated_rewards: Raise if ``estimated_rewards`` is missing.
        caller: Name used in the "required by" message.

    Returns:
        The validated arrays (float64 / intp views when no conversion was needed).

    Raises:
        TypeError: For a missing array or a wrong dtype.
        DataError: For a wrong shape or an out-of-range value (a ``ValueError``).
    """
    reward_arr = as_float_array(reward, "reward", 1)
    n_rounds = reward_arr.shape[0]
    if n_rounds == 0:
        raise DataError("`reward` must have at least one round, got 0")
    dist = _as_action_dist(action_dist, "action_dist", n_rounds)
    n_actions, len_list = dist.shape[1], dist.shape[2]
    action_arr = as_int_array(action, "action", n_actions, "n_actions")
    _check_length(action_arr, "action", n_rounds)
    pscore_arr = as_float_array(pscore, "pscore", 1)
    _check_length(pscore_arr, "pscore", n_rounds)
    too_low, too_high = pscore_arr <= 0, pscore_arr > 1
    if too_low.any() or too_high.any():
        raise DataError(_rows_message("pscore", "in (0, 1]", pscore_arr, too_low, too_high))
    if position is None:
        if len_list > 1:
            raise DataError(
                f"`position` is required when `action_dist` has len_list={len_list} > 1"
            )
        position_arr = np.zeros(n_rounds, dtype=np.intp)
    else:
        position_arr = as_int_array(position, "position", len_list, "len_list")
        _check_length(position_arr, "position", n_rounds)
    _check_probabilities(dist, "action_dist")
    q_hat = None
    if estimated_rewards is not None:
        q_hat = _as_action_dist(estimated_rewards, "estimated_rewards_by_reg_model", n_rounds)
        if q_hat.shape != dist.shape:
            raise DataError(
                f"`estimated_rewards_by_reg_model` must have the shape of `action_dist` "
                f"{dist.shape}, got {q_hat.shape}"
            )
    elif require_estimated_rewards:
        raise DataError(
            f"`estimated_rewards_by_reg_model` is required by {caller}; fit a reward model "
            "(e.g. pushrl.ope.fit_reward_model) or use an estimator that does not need one"
        )
    return BanditInputs(reward_arr, action_arr, pscore_arr, dist, position_arr, q_hat)


def resolve_estimated_rewards(by_reg_model: Any, alias: Any) -> Any:
    """Merge OBP's ``estimated_rewards_by_reg_model`` and the ``estimated_rewards`` alias.

    Raises:
        TypeError: If both are given.
    """
    if by_reg_model is not None and alias is not None:
        raise TypeError(
            "pass either `estimated_rewards_by_reg_model` or its alias `estimated_rewards`, "
            "not both"
        )
    return by_reg_model if by_reg_model is not None else alias


def check_scalar(
    value: Any,
    name: str,
    *,
    kind: Literal["int", "float"] = "float",
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    allow_inf: bool = False,
) -> None:
    """Raise unless ``value`` is a number of the given kind inside the given bounds.

    Raises:
        TypeError: If ``value`` is not an int (``kind="int"``) or a real number.
        ValueError: If it is NaN, infinite (unless allowed) or out of bounds.
    """
    is_int = isinstance(value, Integral) and not isinstance(value, bool)
    if kind == "int" and not is_int:
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__} {value!r}")
    if not is_int and not (isinstance(value, Real) and not isinstance(value, bool)):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if v != v:
        raise ValueError(f"`{name}` must not be NaN")
    if not allow_inf and np.isinf(v):
        raise ValueError(f"`{name}` must be finite, got {value!r}")
    below: Callable[[float, float], bool] = (
        (lambda a, b: a < b) if low_inclusive else (lambda a, b: a <= b)
    )
    above: Callable[[float, float], bool] = (
        (lambda a, b: a > b) if high_inclusive else (lambda a, b: a >= b)
    )
    if (low is not None and below(v, low)) or (high is not None and above(v, high)):
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = f"{'[' if low_inclusive else '('}{lo}, {hi}{']' if high_inclusive else ')'}"
        raise ValueError(f"`{name}` must be in {interval}, got {value!r}")


def validate_interval_args(
    alpha: Any, n_bootstrap_samples: Any, random_state: Any, method: Any = "bootstrap"
) -> None:
    """Check the arguments shared by every ``estimate_interval``.

    Raises:
        TypeError: For a wrong type.
        ValueError: For ``alpha`` outside (0, 1), a non-positive sample count or an unknown
            method.
    """
    check_scalar(alpha, "alpha", low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    check_scalar(n_bootstrap_samples, "n_bootstrap_samples", kind="int", low=1)
    if method not in ("bootstrap", "normal", "betting"):
        raise ValueError(
            f"`method` must be 'bootstrap', 'normal' or 'betting', got {method!r}"
        )
    if random_state is not None and not isinstance(
        random_state, Integral | np.random.Generator | np.random.RandomState
    ):
        raise TypeError(
            "`random_state` must be None, an int, a numpy Generator or a RandomState, "
            f"got {type(random_state).__name__}"
        )
    if isinstance(random_state, Integral) and random_state < 0:
        raise ValueError(f"`random_state` must be a non-negative int, got {random_state}")


@dataclass(frozen=True)
class TrajectoryInputs:
    """Validated trajectory arrays, all of shape ``(n_traj, horizon)``.

    Attributes:
        reward: Per-step rewards, 0 on masked steps.
        log_ratio: ``log pi_e(a_t|s_t) - log pi_b(a_t|s_t)`` on valid steps, 0 on masked
            steps (``-inf`` where ``pi_e`` is 0).
        mask: True on steps that happened (before the episode ended).
    """

    reward: FloatArray
    log_ratio: FloatArray
    mask: npt.NDArray[np.bool_]

    @property
    def n_traj(self) -> int:
        """Number of trajectories."""
        return int(self.reward.shape[0])

    @property
    def horizon(self) -> int:
        """Number of steps per trajectory (padded)."""
        return int(self.reward.shape[1])


def _step_message(name: str, requirement: str, bad: np.ndarray, got: str) -> str:
    rows, steps = np.nonzero(bad)
    return (
        f"`{name}` must be {requirement}, got {got} at {rows.size} "
        f"step{'' if rows.size == 1 else 's'} "
        f"(first at trajectory {int(rows[0])}, step {int(steps[0])})"
    )


def _as_mask(mask: Any, shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    if mask is None:
        return np.ones(shape, dtype=bool)
    valid = np.asarray(mask)
    if valid.dtype != np.bool_:
        raise TypeError(f"`mask` must be a boolean array, got dtype {valid.dtype}")
    if valid.shape != shape:
        raise DataError(f"`mask` must have the shape of `reward` {shape}, got {valid.shape}")
    restarted = valid[:, 1:] & ~valid[:, :-1]
    if restarted.any():
        raise DataError(
            _step_message(
                "mask",
                "False for every step after the episode ended",
                np.pad(restarted, ((0, 0), (1, 0))),
                "True after False",
            )
        )
    return valid


def validate_trajectory_inputs(
    reward: Any, pscore: Any, evaluation_pscore: Any, mask: Any = None
) -> TrajectoryInputs:
    """Check per-step trajectory arrays once; see :mod:`pushrl.ope.sequential`.

    Args:
        reward: Per-step rewards, shape ``(n_traj, horizon)``.
        pscore: Logging probability of the logged action, ``(n_traj, horizon)``, in (0, 1]
            on valid steps (ignored on masked steps).
        evaluation_pscore: Evaluation-policy probability of the logged action, same shape, in
            [0, 1] on valid steps.
        mask: True on steps that happened, same shape; once False it stays False along a
            trajectory. ``None`` means every step happened.

    Returns:
        Rewards zeroed on masked steps, per-step log importance ratios and the mask.

    Raises:
        TypeError: For non-numeric arrays or a non-boolean mask.
        DataError: For shape mismatches and out-of-range values.
    """
    rew = np.asarray(_as_numeric(reward, "reward"), dtype=np.float64)
    if rew.ndim != 2 or rew.shape[0] == 0 or rew.shape[1] == 0:
        raise DataError(
            f"`reward` must have shape (n_traj, horizon) with both > 0, got {rew.shape}"
        )
    shape = rew.shape
    arrays = {}
    for name, value in (("pscore", pscore), ("evaluation_pscore", evaluation_pscore)):
        arr = _as_numeric(value, name)
        if arr.shape != shape:
            raise DataError(f"`{name}` must have the shape of `reward` {shape}, got {arr.shape}")
        arrays[name] = np.asarray(arr, dtype=np.float64)
    valid = _as_mask(mask, shape)
    bad_r = valid & ~np.isfinite(rew)
    if bad_r.any():
        raise DataError(
            _step_message("reward", "finite on valid steps", bad_r, f"{float(rew[bad_r][0]):g}")
        )
    ps, pe = arrays["pscore"], arrays["evaluation_pscore"]
    with np.errstate(invalid="ignore"):
        bad_ps = valid & ~((ps > 0) & (ps <= 1))
        bad_pe = valid & ~((pe >= 0) & (pe <= 1))
    if bad_ps.any():
        raise DataError(
            _step_message("pscore", "in (0, 1] on valid steps", bad_ps, f"{float(ps[bad_ps][0]):g}")
        )
    if bad_pe.any():
        raise DataError(
            _step_message(
                "evaluation_pscore", "in [0, 1] on valid steps", bad_pe, f"{float(pe[bad_pe][0]):g}"
            )
        )
    with np.errstate(divide="ignore"):
        log_ratio = np.where(
            valid, np.log(np.where(valid, pe, 1.0)) - np.log(np.where(valid, ps, 1.0)), 0.0
        )
    return TrajectoryInputs(np.where(valid, rew, 0.0), log_ratio, valid)


def validate_fqe_inputs(
    state: Any, action: Any, reward: Any, action_dist: Any, mask: Any = None
) -> tuple[FloatArray, IntArray, FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """Check the arrays of fitted Q evaluation; see :func:`pushrl.ope.fqe.fit_fqe`.

    Args:
        state: Per-step state features, shape ``(n_traj, horizon, dim_state)``.
        action: Logged actions, shape ``(n_traj, horizon)``.
        reward: Per-step rewards, shape ``(n_traj, horizon)``.
        action_dist: Evaluation-policy probabilities of every action per step, shape
            ``(n_traj, horizon, n_actions)``; each valid step sums to 1.
        mask: True on steps that happened; ``None`` for all.

    Returns:
        ``(state, action, reward, action_dist, mask)``; masked entries of ``state``,
        ``reward`` and ``action_dist`` are zeroed and masked actions set to 0.

    Raises:
        TypeError: For wrong dtypes.
        DataError: For shape mismatches and out-of-range values on valid steps.
    """
    rew = np.asarray(_as_numeric(reward, "reward"), dtype=np.float64)
    if rew.ndim != 2 or 0 in rew.shape:
        raise DataError(
            f"`reward` must have shape (n_traj, horizon) with both > 0, got {rew.shape}"
        )
    shape = rew.shape
    valid = _as_mask(mask, shape)
    st = np.asarray(_as_numeric(state, "state"), dtype=np.float64)
    if st.ndim != 3 or st.shape[:2] != shape:
        raise DataError(
            f"`state` must have shape (n_traj, horizon, dim_state)=({shape[0]}, {shape[1]}, d), "
            f"got {st.shape}"
        )
    dist = np.asarray(_as_numeric(action_dist, "action_dist"), dtype=np.float64)
    if dist.ndim != 3 or dist.shape[:2] != shape:
        raise DataError(
            f"`action_dist` must have shape (n_traj, horizon, n_actions), got {dist.shape}"
        )
    act = _as_numeric(action, "action")
    if not np.issubdtype(act.dtype, np.integer):
        raise TypeError(f"`action` must have an integer dtype, got {act.dtype}")
    if act.shape != shape:
        raise DataError(f"`action` must have the shape of `reward` {shape}, got {act.shape}")
    checks = (
        ("reward", valid & ~np.isfinite(rew), "finite"),
        ("state", valid & ~np.isfinite(st).all(axis=2), "finite"),
        (
            "action",
            valid & ((act < 0) | (act >= dist.shape[2])),
            f"in [0, n_actions={dist.shape[2]})",
        ),
        (
            "action_dist",
            valid & ~((dist >= 0) & (dist <= 1)).all(axis=2),
            "probabilities in [0, 1]",
        ),
        (
            "action_dist",
            valid & (np.abs(dist.sum(axis=2) - 1) > SUM_TO_ONE_ATOL),
            "summing to 1 over actions",
        ),
    )
    for name, bad, requirement in checks:
        if bad.any():
            raise DataError(_step_message(name, f"{requirement} on valid steps", bad, "violations"))
    m3 = valid[:, :, np.newaxis]
    return (
        np.where(m3, st, 0.0),
        np.where(valid, act, 0).astype(np.intp),
        np.where(valid, rew, 0.0),
        np.where(m3, dist, 0.0),
        valid,
    )
