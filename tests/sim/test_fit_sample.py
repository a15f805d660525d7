"""`sim fit` on a user sample states the sample in the model's meta (its card)."""

from __future__ import annotations

from pathlib import Path

from pushrl.data.sample import load_user_sample
from pushrl.sim.fit import fit_sim


def test_fit_on_sample_records_it(tiny_synth: Path) -> None:
    ds, report, info = load_user_sample(tiny_synth, 90, seed=3)
    model = fit_sim(ds, report)
    assert model.meta["sample"] == info
    assert model.meta["users"] == 90 and info["of_users"] == 120
