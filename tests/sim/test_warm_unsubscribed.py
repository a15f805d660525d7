"""The simulator's warm start keeps the log's unsubscribed users unsubscribed, by the same
rule as the server's history import (which blocks them): served/batch parity (issue 13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pushrl.data.subscription import unsubscribed_users
from pushrl.data.validate import load_dataset
from pushrl.serve.history import _events
from pushrl.sim.engine import PushSim, SimConfig
from pushrl.sim.fit import fit_sim
from pushrl.sim.population import Population
from pushrl.sim.response import FittedResponse
from pushrl.rules.guardrails import Guardrails


class _FirstItem:
    """Pushes item 0."""

    uses_candidate_features = False

    def decide_batch(self, ctx, rng):  # type: ignore[no-untyped-def]
        from pushrl.sim.contexts import BatchDecision

        n = len(np.asarray(ctx.extra["user_index"]))
        dist = np.zeros((n, len(ctx.candidates[0]) if len(ctx.candidates) else 1))
        dist[:, 0] = 1.0
        return BatchDecision(np.zeros(n, np.int64), np.ones(n), dist)


@pytest.fixture(scope="module")
def fitted(tiny_synth: Path):  # type: ignore[no-untyped-def]
    ds, report = load_dataset(tiny_synth, quarantine=False)
    return fit_sim(ds, report), ds


def test_population_flags_exactly_the_users_the_import_blocks(fitted) -> None:  # type: ignore[no-untyped-def]
    model, ds = fitted
    pop = model.population
    p = ds.pushes
    gone = set(p.loc[p["unsubscribed"].fillna(False).to_numpy(bool), "user_id"].astype(str))
    assert gone, "the fixture needs users who unsubscribed in the log"
    assert set(pop.user_id[pop.unsubscribed]) == gone
    np.testing.assert_array_equal(np.flatnonzero(pop.unsubscribed), _events(ds)["u_user"])
    np.testing.assert_array_equal(_events(ds)["u_user"], unsubscribed_users(ds))


@pytest.mark.parametrize("warm", ["week", "full", "none"])
def test_reset_starts_them_unsubscribed_unless_the_start_is_empty(fitted, warm: str) -> None:  # type: ignore[no-untyped-def]
    model, _ = fitted
    pop = model.population
    n = len(pop)
    cfg = SimConfig(int(model.meta["end_bucket"]) + 1, 48, 1, Guardrails(), 0, warm)
    sim = PushSim(model, FittedResponse(model), cfg, n, _FirstItem())
    slots = np.arange(n)
    sim.reset(slots, slots, slots.astype(np.uint64))
    want = np.ones(n, bool) if warm == "none" else ~pop.unsubscribed
    np.testing.assert_array_equal(sim.alive, want)
    # the guardrail refuses every push to them, as the server's does
    for _ in range(24):
        obs = sim.observe()
        assert not obs.allowed[~want].any()
        out = sim.step(obs.allowed.copy())
        assert not out.unsubscribed[~want].any()


def test_populations_saved_before_the_field_load_all_subscribed(fitted) -> None:  # type: ignore[no-untyped-def]
    model, _ = fitted
    arrs = {k: v for k, v in model.population.to_arrays().items() if k != "pop_unsubscribed"}
    old = Population.from_arrays(arrs)
    assert old.unsubscribed.shape == (len(old),) and not old.unsubscribed.any()
