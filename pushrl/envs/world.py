"""Build a scenario's simulated world once (fitted or ground truth) and share it.

Loading a simulator verifies its checksums and the ground truth reads Parquet tables, so
worlds are cached per process by (scenario files, knobs); environments and rollouts only
keep references to the shared, read-only arrays.
"""

from __future__ import annotations

import functools

import numpy as np
from dataclasses import dataclass
from pathlib import Path

from pushrl.envs.scenario import Scenario
from pushrl.errors import ScenarioError
from pushrl.sim.items import CatalogSampler, make_sampler
from pushrl.sim.model import SimModel, load_sim
from pushrl.sim.organic import OrganicModel, OrganicParams
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
           item_policy: str, organic: bool = False) -> World:
    model = _load(sim, mtime)
    resp: ResponseModel = (TruthResponse(model, data, fatigue, shift) if truth
                           else FittedResponse(model, fatigue, shift))
    if organic:  # the engine reads `response.organic` (pushrl.sim.organic)
        resp.organic = organic_model(model, resp)  # type: ignore[attr-defined]
    sampler = make_sampler(item_policy, model.n_items, model.arrays.get("item_popularity"))
    return World(model, resp, sampler)


def make_world(sc: Scenario) -> World:
    """The (cached) push world of scenario ``sc``."""
    load_model(sc.sim)
    f = Path(sc.sim).resolve() / "sim.json"
    return _world(str(f.parent), f.stat().st_mtime, str(sc.data), sc.truth,
                  sc.fatigue_multiplier, sc.activity_shift_hours, sc.item_policy,
                  sc.organic)


def organic_model(model: SimModel, response: ResponseModel,
                  params: OrganicParams | None = None) -> OrganicModel:
    """The organic purchase model of a world (:mod:`pushrl.sim.organic`): segments by the
    response's session rate (true with a truth response), revenue = the catalog's mean."""
    assert model.population is not None
    n_pop = len(model.population)
    how = np.arange(168)
    rate = response.activity_rate(np.repeat(np.arange(n_pop), 168),
                                  np.tile(how, n_pop)).reshape(n_pop, 168).mean(axis=1)
    rev = float(np.mean(response.revenue(np.arange(model.n_items))))
    return OrganicModel(params or OrganicParams(), np.asarray(model.population.user_id),
                        rate, rev)
