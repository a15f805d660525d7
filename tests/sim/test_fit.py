"""Fitting a simulator from a log, point-in-time, and validating it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pushrl.data.validate import load_dataset
from pushrl.sim.fit import fit_sim
from pushrl.sim.model import load_sim, save_sim
from pushrl.sim.validate import validate_push

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_fit(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    ds, report = load_dataset(tiny_synth, quarantine=False)
    out = tmp_path_factory.mktemp("sim") / "tiny"
    save_sim(fit_sim(ds, report), out)
    return load_sim(out), ds, report


def test_fit_has_every_component_and_the_population(tiny_fit) -> None:  # type: ignore[no-untyped-def]
    m, ds, report = tiny_fit
    assert set(m.glms) >= {"open", "click", "unsubscribe"}
    assert m.meta["fingerprint"] == report.fingerprint
    pop = m.population
    assert pop is not None and len(pop) == len(ds.users)
    # the rhythm's expected events per hour average to the logged events per hour
    hours = (m.meta["end_bucket"] - m.meta["start_bucket"] + 1)
    logged = pop.hist_how.sum() / len(pop) / hours
    assert abs(pop.rate_how.mean() / logged - 1) < 0.1
    np.testing.assert_allclose(pop.cat_cdf[:, -1], 1.0)
    for g in m.glms.values():
        assert {"log_loss", "log_loss_baseline", "auc", "ece", "reliability"} <= set(g.metrics)


def test_validate_report_structure(tiny_fit) -> None:  # type: ignore[no-untyped-def]
    m, ds, report = tiny_fit
    rep = validate_push(m, ds, report)
    assert rep["same_data_as_fit"]
    assert len(rep["replay"]["open_rate_by_local_hour"]) == 24
    assert {g["name"] for g in rep["gates"]} == {
        "open_by_local_hour_corr_model_vs_truth", "open_by_local_hour_corr_sim_vs_truth_sim",
        "unsub_mean_per_push_hazard_rel_error"}


def test_shipped_synth_simulator_passes_the_ground_truth_gates() -> None:
    """Fidelity of the shipped artifact: open by local hour corr >= 0.95 with the truth and
    mean per-push unsubscribe hazard within 20 % (2000 users x 28 days)."""
    m = load_sim(ROOT / "simulator_data" / "fitted" / "synth")
    ds, report = load_dataset(ROOT / "simulator_data" / "synth", quarantine=False)
    rep = validate_push(m, ds, report)
    assert rep["passed"], rep["gates"]
    # replay aggregates within 3 binomial standard errors of the log
    assert all(abs(r["z"]) < 3 for r in rep["replay"]["overall"].values())
