"""The item-choice (OBD) simulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pushrl.data.validate import load_dataset
from pushrl.sim.model import load_sim
from pushrl.sim.obd import ObdWorld, validate_obd

ROOT = Path(__file__).resolve().parents[2]


def test_obd_world_probabilities_and_replay() -> None:
    m = load_sim(ROOT / "simulator_data" / "fitted" / "obd")
    w = ObdWorld(m)
    rows = np.arange(5)
    p = w.p_click(rows)
    assert p.shape == (5, 80) and (p > 0).all() and (p < 0.05).all()
    np.testing.assert_allclose(w.p_click(rows, np.full(5, 3)), p[:, 3])
    ds, report = load_dataset(ROOT / "simulator_data" / "obd" / "bts", quarantine=False)
    rep = validate_obd(m, ds, report)
    assert not rep["same_data_as_fit"]
    assert [r["key"] for r in rep["replay"]["ctr_by_position"]] == [0, 1, 2]
    # 42 clicks in 10k rows: the simulated overall CTR is within 3 standard errors
    o = rep["replay"]["overall"]
    assert abs(o["ctr_sim"] - o["ctr_log"]) < 3 * np.sqrt(o["ctr_log"] / 10_000)
