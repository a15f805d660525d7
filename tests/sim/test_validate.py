"""The replay test of ``sim validate``: the logged actions replayed in the simulator."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.data.features import F, replay
from pushrl.data.synth import synthesize
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import world_config
from pushrl.sim.fit import fit_sim
from pushrl.sim.model import load_sim, save_sim
from pushrl.sim.response import FittedResponse, TruthResponse
from pushrl.sim.validate import (
    _paired_row,
    _sent_rows,
    external_model,
    replay_logging_policy,
    replay_report,
)


@pytest.fixture(scope="module")
def eps_world(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A 300-user, 10-day night-owls log (epsilon-greedy logger) and its fitted simulator."""
    d = tmp_path_factory.mktemp("night_owls")
    synthesize(d, world_config("night-owls", users=300, days=10, seed=3))
    ds, report = load_dataset(d, quarantine=False)
    save_sim(fit_sim(ds, report), d / "sim")
    return load_sim(d / "sim"), ds, d


def test_replay_pushes_the_logged_items_at_the_logged_hours(eps_world) -> None:  # type: ignore[no-untyped-def]
    model, ds, _ = eps_world
    rr = replay(ds, model.spec)
    rows = _sent_rows(ds, rr, model)
    sim = replay_logging_policy(model, FittedResponse(model), ds, seed=1, reps=2)
    row = sim["row"]
    assert sim["skipped"] == 0 and row.size > 0
    # each logged push is matched at most once per replicate, most of them in both
    assert np.unique(sim["rep"] * rows["item"].size + row).size == row.size
    assert row.size >= 0.8 * 2 * rows["item"].size
    # same local hour and, as the sends are the logged ones, the same 7-day volume
    np.testing.assert_array_equal(sim["hour"], rows["raw"][row, F["local_hour"]])
    np.testing.assert_array_equal(sim["s7"], rows["raw"][row, F["sends_7d"]])
    # the simulated users are the logged users
    np.testing.assert_array_equal(sim["pop"], rows["user"][row])


def test_replay_with_the_true_response_reproduces_the_log(eps_world) -> None:  # type: ignore[no-untyped-def]
    """The world itself as the simulator is the null hypothesis: every overall rate of the
    replay is within 3 standard errors of the log (the epsilon-greedy logger's sends, which
    the old per-user p_send replay got wrong by z = -3 to -6)."""
    model, ds, d = eps_world
    rr = replay(ds, model.spec)
    rows = _sent_rows(ds, rr, model)
    sim = replay_logging_policy(model, TruthResponse(model, d), ds, seed=0)
    events = rr.state.export_history(np.arange(len(ds.users)))["how"].sum(axis=1)
    rep = replay_report(rows, sim, events)
    for k, r in rep["overall"].items():
        assert abs(r["z"]) < 3, (k, r)
    assert abs(rep["overall"]["open_rate"]["rel_error"]) < 0.1


def test_replay_refuses_other_users(eps_world, tiny_synth: Path) -> None:  # type: ignore[no-untyped-def]
    model, _, _ = eps_world
    other, _ = load_dataset(tiny_synth, quarantine=False)
    with pytest.raises(ValueError, match="fitted on"):
        replay_logging_policy(model, FittedResponse(model), other)


def test_external_model_gives_held_out_users_their_own_rhythm(eps_world, tiny_synth: Path
                                                              ) -> None:  # type: ignore[no-untyped-def]
    model, _, _ = eps_world
    other, _ = load_dataset(tiny_synth, quarantine=False)
    ext = external_model(model, other, replay(other, model.spec))
    assert ext.population is not None and model.population is not None
    np.testing.assert_array_equal(ext.population.user_id, other.users["user_id"].astype(str))
    assert len(model.population) == 300  # the fitted model is untouched


def test_paired_z_is_standard_normal_under_the_null() -> None:
    """400 replays of a null world: |z| > 1.96 in 5 % of them (binomial SE of that share over
    400 trials is 1.1 %; tolerance 3 SE), for realised draws and for expected rates."""
    rng = np.random.default_rng(0)
    n, reps, trials = 3000, 4, 400
    hits = {"draws": 0, "expected": 0}
    for _ in range(trials):
        p = rng.uniform(0.01, 0.1, n)
        y_log = (rng.random(n) < p).astype(float)
        m = rng.binomial(reps, 0.9, n).astype(float)  # replicates each push was matched in
        p_sim = np.repeat(p, m.astype(int))
        rep_of = rng.integers(0, reps, p_sim.size)
        y_sim = rng.random(p_sim.size) < p_sim
        z = _paired_row("x", m, y_log, float(y_sim.sum()))["z"]
        hits["draws"] += abs(z) > 1.96
        by_rep = np.bincount(rep_of, weights=p_sim, minlength=reps) / np.maximum(
            np.bincount(rep_of, minlength=reps), 1)
        z = _paired_row("x", m, y_log, float(p_sim.sum()), by_rep)["z"]
        hits["expected"] += abs(z) > 1.96
    for k, h in hits.items():
        assert abs(h / trials - 0.05) < 3 * 0.011, (k, h)


def test_replay_skips_a_second_push_in_the_same_user_hour(eps_world) -> None:  # type: ignore[no-untyped-def]
    """The engine takes one decision per user-hour: a second logged push in that hour is
    counted in ``skipped`` and never matched, the first one still is."""
    model, ds, _ = eps_world
    p = ds.pushes
    first = int(np.flatnonzero(p["sent"].fillna(False).to_numpy(bool))[0])
    dup = p.iloc[[first]].copy()
    dup["decision_id"] = p["decision_id"].max() + 1
    twice = dataclasses.replace(ds, pushes=pd.concat([p, dup], ignore_index=True))
    sim = replay_logging_policy(model, FittedResponse(model), twice, seed=0, reps=1)
    assert sim["skipped"] == 1
    n_sent = int(twice.pushes["sent"].fillna(False).sum())
    assert n_sent - 1 not in set(sim["row"].tolist())  # the duplicate is the last sent row
    assert 0 in set(sim["row"].tolist())
