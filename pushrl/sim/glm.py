"""Calibrated logistic GLMs: fitting with grouped cross-validation, held-out metrics, storage.

A fitted component is stored as plain numbers (coefficients on the raw design, intercept),
never as a pickle: a simulator artifact is JSON plus ``npz`` and can be loaded from an
untrusted place without executing code.

Fitting: standardise, choose the L2 strength ``C`` by grouped K-fold log-loss (groups =
users, so no user is in both a training and a held-out fold), refit on all rows and fold the
scaler into the coefficients. A logistic GLM with an unpenalised intercept is calibrated in
the large by construction (its mean prediction equals the observed rate); calibration is
checked, not forced, on held-out data: reliability bins, ECE and the calibration intercept
and slope (``a + b * logit`` fitted to the out-of-fold logits; ``a = 0, b = 1`` is perfect;
``b < 1`` means overconfident). Reported metrics are out-of-fold (held out by user).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

C_GRID: tuple[float, ...] = (0.003, 0.03, 0.3, 3.0)
_EPS = 1e-12


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, float64."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


@dataclass
class Glm:
    """A logistic model on a named design: ``P(y=1) = sigmoid(X @ coef + intercept)``.

    Attributes:
        names: Design column names, length ``d``.
        coef: ``(d,)`` coefficients on the raw (unscaled) design.
        intercept: Intercept.
        metrics: Held-out metrics from :func:`fit_glm`.
    """

    names: tuple[str, ...]
    coef: np.ndarray
    intercept: float
    metrics: dict[str, Any] = field(default_factory=dict)

    def logit(self, x: np.ndarray, scale: dict[int, float] | None = None) -> np.ndarray:
        """Linear predictor for design rows ``x`` ``(n, d)``; ``scale`` multiplies columns."""
        coef = self.coef
        if scale:
            coef = coef.copy()
            for j, s in scale.items():
                coef[j] *= s
        return np.asarray(x, dtype=np.float64) @ coef + self.intercept

    def predict(self, x: np.ndarray, scale: dict[int, float] | None = None) -> np.ndarray:
        """Probabilities, shape ``(n,)``."""
        return sigmoid(self.logit(x, scale))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"names": list(self.names), "coef": [float(c) for c in self.coef],
                "intercept": float(self.intercept), "metrics": self.metrics}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Glm:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(d["names"]), np.asarray(d["coef"], np.float64), float(d["intercept"]),
                   d.get("metrics", {}))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary log-loss."""
    p = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Reliability table over equal-count bins of ``p`` and the expected calibration error.

    Returns:
        ``{"ece": float, "bins": [{"p_mean", "y_mean", "n"}...]}``.
    """
    order = np.argsort(p, kind="stable")
    out, ece = [], 0.0
    for chunk in np.array_split(order, min(bins, max(len(p), 1))):
        if not chunk.size:
            continue
        pm, ym = float(p[chunk].mean()), float(y[chunk].mean())
        ece += chunk.size * abs(pm - ym)
        out.append({"p_mean": pm, "y_mean": ym, "n": int(chunk.size)})
    return {"ece": ece / max(len(p), 1), "bins": out}


def binary_metrics(y: np.ndarray, p: np.ndarray, base_rate: np.ndarray) -> dict[str, Any]:
    """Held-out log-loss, AUC, Brier and calibration vs a naive global-rate baseline.

    Args:
        y: ``(n,)`` 0/1 outcomes.
        p: ``(n,)`` model probabilities.
        base_rate: ``(n,)`` baseline probability per row (training-fold global rate).
    """
    from sklearn.metrics import roc_auc_score  # scikit-learn only when fitting (~1 s import)

    y = np.asarray(y, dtype=np.float64)
    both = 0 < y.sum() < y.size
    rel = reliability(y, p)
    return {
        "n": int(y.size), "positives": int(y.sum()), "rate": float(y.mean()) if y.size else 0.0,
        "log_loss": log_loss(y, p), "log_loss_baseline": log_loss(y, base_rate),
        "auc": float(roc_auc_score(y, p)) if both else None,
        "brier": float(np.mean((p - y) ** 2)), "ece": rel["ece"], "reliability": rel["bins"],
    }


def _fit_once(x: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    mu, sd = x.mean(axis=0), x.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    lr = LogisticRegression(C=c, max_iter=2000)
    lr.fit((x - mu) / sd, y)
    coef = lr.coef_[0] / sd
    return coef, float(lr.intercept_[0] - coef @ mu)


def fit_glm(x: np.ndarray, y: np.ndarray, groups: np.ndarray, names: tuple[str, ...], *,
            folds: int = 5, c_grid: tuple[float, ...] = C_GRID) -> Glm:
    """Fit a calibrated logistic GLM with grouped cross-validation (see module docstring).

    Args:
        x: ``(n, d)`` design.
        y: ``(n,)`` 0/1 outcomes.
        groups: ``(n,)`` group labels (users) for the folds.
        names: Design column names.
        folds: Number of grouped folds.
        c_grid: Candidate inverse L2 strengths.

    Raises:
        DataError: fewer than ``folds`` positives or negatives, or fewer groups than folds.
    """
    from sklearn.linear_model import LogisticRegression  # only when fitting (~1 s import)
    from sklearn.model_selection import GroupKFold

    from pushrl.errors import DataError

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    pos = int(y.sum())
    if pos < folds or y.size - pos < folds or np.unique(groups).size < folds:
        raise DataError(f"cannot fit {names[:3]}...: {pos} positives of {y.size} rows in "
                        f"{np.unique(groups).size} groups; need >= {folds} of each, "
                        "log more data or drop the component")
    splits = list(GroupKFold(n_splits=folds).split(x, y, groups))
    best: tuple[float, float, np.ndarray, np.ndarray] | None = None
    for c in c_grid:
        oof = np.empty(y.size)
        base = np.empty(y.size)
        for tr, te in splits:
            coef, b0 = _fit_once(x[tr], y[tr], c)
            oof[te] = x[te] @ coef + b0
            base[te] = y[tr].mean()
        loss = log_loss(y, sigmoid(oof))
        if best is None or loss < best[0] - 1e-9:
            best = (loss, c, oof, base)
    assert best is not None
    _, c, oof, base = best
    coef, b0 = _fit_once(x, y, c)
    cal = LogisticRegression(C=1e6, max_iter=1000).fit(oof[:, None], y)
    metrics = binary_metrics(y, sigmoid(oof), base)
    metrics.update({"C": c, "folds": folds, "calibration_intercept": float(cal.intercept_[0]),
                    "calibration_slope": float(cal.coef_[0, 0]),
                    "held_out": "grouped K-fold by user"})
    return Glm(names, coef, b0, metrics)
