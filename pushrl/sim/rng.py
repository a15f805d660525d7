"""Counter-based random numbers: a draw is a pure function of (episode key, step, stream, j).

The simulator never draws from a shared sequential generator while stepping. Every uniform is
a hash of the episode's 64-bit key, the step, a stream id (activity, open, click, ...) and an
index ``j`` inside the stream, so a user's trajectory does not depend on how many other users
are simulated beside it, in which order, or which policy decided for them: the single
environment, the native vector environment and the batch rollout produce the same numbers for
the same seed, and two policies evaluated with the same seed see common random numbers.

Episode keys come from a per-slot :class:`numpy.random.Generator` (Gymnasium's
``np_random``), used only at reset.
"""

from __future__ import annotations

import numpy as np

_C1 = np.uint64(0x9E3779B97F4A7C15)
_C2 = np.uint64(0xBF58476D1CE4E5B9)
_C3 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TO_UNIT = 1.0 / float(1 << 53)

#: Stream ids; one per kind of draw so that streams never share numbers.
ACTIVITY, ACTIVITY_CAT, ITEM, OPEN, CLICK, CONVERT, UNSUB, CONTEXT, ACTIVITY_SIZE = range(1, 10)
#: Organic purchases (:mod:`pushrl.sim.organic`): one per hour, and the episode's start.
ORGANIC, ORGANIC_START = 10, 11
#: Channels (:mod:`pushrl.sim.channels`): the channel policy's draw per step, and the
#: episode's opt-in draws (``j`` = channel).
CHANNEL, CHANNEL_OPTIN = 12, 13


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (bijective on uint64)."""
    x = (x ^ (x >> _S30)) * _C2
    x = (x ^ (x >> _S27)) * _C3
    return x ^ (x >> _S31)


def step_hash(keys: np.ndarray, step: int | np.ndarray) -> np.ndarray:
    """Hash of ``(key, step)`` per slot, shape like ``keys`` (uint64).

    Args:
        keys: ``(n,)`` uint64 episode keys.
        step: Step index within the episode, scalar or ``(n,)``.
    """
    with np.errstate(over="ignore"):
        s = np.asarray(step).astype(np.uint64)
        return _mix(keys.astype(np.uint64) + (s + np.uint64(1)) * _C1)


def uniform(h: np.ndarray, stream: int, j: np.ndarray | int = 0) -> np.ndarray:
    """Uniform draws in ``[0, 1)`` from step hashes ``h`` for ``stream`` and index ``j``.

    Args:
        h: ``(n,)`` uint64 from :func:`step_hash`.
        stream: One of the stream ids of this module.
        j: Index inside the stream (e.g. the event number), scalar or ``(n,)``.

    Returns:
        float64 array of shape ``(n,)``.
    """
    with np.errstate(over="ignore"):
        jj = np.asarray(j).astype(np.uint64)
        x = _mix(h ^ (np.uint64(stream) * _C2 + jj * _C3 + _C1))
    return (x >> _S11).astype(np.float64) * _TO_UNIT


def poisson(lam: np.ndarray, u: np.ndarray, cap: int = 64) -> np.ndarray:
    """Poisson draws by inversion of uniforms ``u`` (vectorised; fast for small rates).

    Args:
        lam: ``(n,)`` non-negative rates.
        u: ``(n,)`` uniforms in ``[0, 1)``.
        cap: Largest count returned.

    Returns:
        int64 ``(n,)`` counts.
    """
    lam = np.asarray(lam, dtype=np.float64)
    k = np.zeros(lam.shape, np.int64)
    p = np.exp(-lam)
    cdf = p.copy()
    idx = np.flatnonzero(u >= cdf)
    step = 0
    while idx.size and step < cap:
        step += 1
        k[idx] = step
        p[idx] *= lam[idx] / step
        cdf[idx] += p[idx]
        idx = idx[u[idx] >= cdf[idx]]
    return k


def categorical(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index drawn from each row's cumulative distribution, shape ``(n,)``.

    Args:
        cdf: ``(n, k)`` non-decreasing rows ending at (about) 1.
        u: ``(n,)`` uniforms.
    """
    out = (u[:, None] * cdf[:, -1:] >= cdf).sum(axis=1)
    return np.minimum(out, cdf.shape[1] - 1)


_KEY_MAX = int(np.iinfo(np.int64).max)


def new_key(rng: np.random.Generator) -> np.uint64:
    """A fresh 64-bit episode key from a slot's generator."""
    return np.uint64(rng.integers(0, _KEY_MAX, dtype=np.int64))
