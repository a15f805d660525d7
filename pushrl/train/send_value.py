"""Fit the response model the volume price ranks sends by (:class:`pushrl.rules.volume.OpenModel`).

A logistic regression of ``opened`` on :func:`pushrl.rules.volume.value_basis` of the
pipeline features of every sent push of a log (:func:`pushrl.data.features.replay`, the one
pipeline), by iteratively reweighted least squares with a small ridge penalty. The server and
the simulator then rank sends by ``P(open) / (1 + sends_7d)^2``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pushrl.data.features import FeatureSpec, iter_replay
from pushrl.data.io import Dataset
from pushrl.rules.volume import VALUE_BASIS, OpenModel, value_basis


def fit_open_model(raw: np.ndarray, opened: np.ndarray, *, l2: float = 1e-4,
                   iters: int = 50, meta: dict[str, Any] | None = None) -> OpenModel:
    """Logistic regression of ``opened`` ``(n,)`` on the value basis of ``raw``
    ``(n, N_FEATURES)`` (IRLS; ``l2`` per row on the non-intercept coefficients).

    Raises:
        ValueError: shapes differ, fewer than 50 rows, or only one outcome.
    """
    x = value_basis(raw)
    y = np.asarray(opened, np.float64)
    n = x.shape[0]
    if y.shape != (n,):
        raise ValueError(f"open model: raw has {n} rows but opened has shape {y.shape}")
    if n < 50 or y.min() == y.max():
        raise ValueError(f"open model needs >= 50 sent pushes with both outcomes, got {n} "
                         f"({int(y.sum())} opened)")
    pen = np.full(len(VALUE_BASIS), l2 * n)
    pen[0] = 0.0
    beta = np.zeros(len(VALUE_BASIS))
    beta[0] = np.log(y.mean() / (1 - y.mean()))
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ beta, -30, 30)))
        w = np.maximum(p * (1 - p), 1e-9)
        grad = x.T @ (y - p) - pen * beta
        step = np.linalg.solve((x * w[:, None]).T @ x + np.diag(pen) + 1e-9 * np.eye(len(pen)),
                               grad)
        beta = beta + step
        if np.abs(step).max() < 1e-8:
            break
    return OpenModel(tuple(beta), meta={"pushes": int(n), "opened": int(y.sum()), "l2": l2,
                                        **(meta or {})})


def from_log(ds: Dataset, spec: FeatureSpec | None = None, **kw: Any) -> OpenModel:
    """Fit from a pushlog's sent pushes (features by the one pipeline's replay)."""
    sp = spec if spec is not None else FeatureSpec.fit(ds)
    sent = ds.pushes["sent"].fillna(False).to_numpy(bool)
    feats = None
    for _, res in iter_replay(ds, sp, with_affinity=False, need=sent):
        feats = res.features
    assert feats is not None  # iter_replay yields at least once
    opened = ds.pushes["opened"].fillna(False).to_numpy(bool)
    return fit_open_model(feats[sent], opened[sent], **kw)
