"""Build a scenario's simulated world once (fitted or ground truth) and share it.

Loading a simulator verifies its checksums and the ground truth reads Parquet tables, so
worlds are cached per process by (scenario files, knobs); environments and rollouts only
keep references to the shared, read-only arrays.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from pushrl.envs.scenario import Scenario
from pushrl.errors import ScenarioError
from pushrl.sim.items import CatalogSampler, make_sampler
from pushrl.sim.model import SimModel, load_sim
from pushrl.sim.response import FittedResponse, ResponseModel, TruthResponse


@dataclass(frozen=True)
class World:
    """A scenario's simulator: model, response (fitted or truth) and default item policy."""

    model: SimModel
    response: ResponseModel
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
    resp: ResponseModel = (TruthResponse(model, data, fatigue, shift) if truth
                           else FittedResponse(model, fatigue, shift))
    sampler = make_sampler(item_policy, model.n_items, model.arrays.get("item_popularity"))
    return World(model, resp, sampler)


def make_world(sc: Scenario) -> World:
    """The (cached) push world of scenario ``sc``."""
    load_model(sc.sim)
    f = Path(sc.sim).resolve() / "sim.json"
    return _world(str(f.parent), f.stat().st_mtime, str(sc.data), sc.truth,
                  sc.fatigue_multiplier, sc.activity_shift_hours, sc.item_policy)
