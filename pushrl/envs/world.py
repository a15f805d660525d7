"""Build a scenario's simulated world once (fitted or ground truth) and share it.

Loading a simulator verifies its checksums and the ground truth reads Parquet tables, so
worlds are cached per process by (scenario files, knobs); environments and rollouts only
keep references to the shared, read-only arrays.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pushrl.data.features import ENCODED_NAMES, encode
from pushrl.envs.scenario import Scenario
from pushrl.errors import ScenarioError
from pushrl.sim.engine import Guardrails, Observation
from pushrl.sim.items import CatalogSampler, make_sampler
from pushrl.sim.model import SimModel, load_sim
from pushrl.sim.response import FittedResponse, TruthResponse

#: Observation of the timing environments: the pipeline encoding, then time and guardrails.
TIMING_OBS_NAMES: tuple[str, ...] = (
    *ENCODED_NAMES, "dow_sin", "dow_cos", "sends_today", "day_cap_left", "week_cap_left",
    "quiet_hour", "send_allowed")
_LOW = np.array([-1, -1, 0, 0, 0, 0, 0, np.log(1e-3), 0, 0, -1, -1, 0, 0, 0, 0, 0], np.float32)
_HIGH = np.array([1, 1, 1, 1, 24, 24, 24, np.log(168.0), 1, 30, 1, 1, 24, 1, 1, 1, 1],
                 np.float32)


def timing_obs_bounds() -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` of one timing observation, each ``(len(TIMING_OBS_NAMES),)``."""
    return _LOW.copy(), _HIGH.copy()


_DOW_SIN = np.sin(np.arange(7) * 2 * np.pi / 7).astype(np.float32)
_DOW_COS = np.cos(np.arange(7) * 2 * np.pi / 7).astype(np.float32)


def timing_obs(obs: Observation, g: Guardrails) -> np.ndarray:
    """Timing observations from an engine observation, float32 ``(n, 17)``.

    Columns (:data:`TIMING_OBS_NAMES`): ``encode(raw)``; local weekday as sin/cos; pushes sent
    today; share of the daily and 7-day caps left (1 without a cap); quiet hour now; a send
    would be delivered now. Every column is within :func:`timing_obs_bounds` by construction.
    """
    return _timing_obs(obs.raw, obs.sends_today, obs.quiet, obs.allowed, g)


def timing_obs_from_context(ctx: Any, g: Guardrails) -> np.ndarray:
    """The same observation from a ``TimingContext`` (e.g. for a policy trained on the env)."""
    quiet = g.quiet(np.asarray(ctx.features)[:, 0].astype(np.int64))
    sends = ctx.sends_today if ctx.sends_today is not None else np.zeros(len(ctx))
    return _timing_obs(np.asarray(ctx.features), np.asarray(sends), quiet,
                       np.asarray(ctx.allowed), g)


def _timing_obs(raw: np.ndarray, sends_today: np.ndarray, quiet: np.ndarray,
                allowed: np.ndarray, g: Guardrails) -> np.ndarray:
    n = raw.shape[0]
    out = np.empty((n, len(TIMING_OBS_NAMES)), np.float32)
    out[:, :10] = encode(raw)
    dow = raw[:, 1].astype(np.int64)
    out[:, 10], out[:, 11] = _DOW_SIN[dow], _DOW_COS[dow]
    out[:, 12] = np.minimum(sends_today, 24)
    out[:, 13], out[:, 14] = g.cap_left(sends_today, raw[:, 4])
    out[:, 15] = quiet
    out[:, 16] = allowed
    return out


@dataclass(frozen=True)
class World:
    """A scenario's simulator: model, response (fitted or truth) and default item policy."""

    model: SimModel
    response: Any
    sampler: CatalogSampler


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> SimModel:
    return load_sim(path)


def load_model(path: Path) -> SimModel:
    """Load (cached, checksum-verified) the simulator at ``path``."""
    f = Path(path) / "sim.json"
    if not f.is_file():
        raise ScenarioError(f"scenario simulator {str(path)!r} does not exist; fit it with "
                            f"`pushrl sim fit DATA --out {path}`")
    return _load(str(Path(path).resolve()), f.stat().st_mtime)


@functools.lru_cache(maxsize=8)
def _world(sim: str, mtime: float, data: str, truth: bool, fatigue: float, shift: int,
           item_policy: str) -> World:
    model = _load(sim, mtime)
    if truth:
        resp: Any = TruthResponse(model, data, fatigue, shift)
    else:
        resp = FittedResponse(model, fatigue, shift)
    sampler = make_sampler(item_policy, model.n_items, model.arrays.get("item_popularity"))
    return World(model, resp, sampler)


def make_world(sc: Scenario) -> World:
    """The (cached) push world of scenario ``sc``."""
    load_model(sc.sim)
    f = Path(sc.sim).resolve() / "sim.json"
    return _world(str(f.parent), f.stat().st_mtime, str(sc.data), sc.truth,
                  sc.fatigue_multiplier, sc.activity_shift_hours, sc.item_policy)
