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


def test_obd_world_context_is_the_logs_item_context() -> None:
    """A logged OBD row seen by a policy in the simulator == the same row featurised for
    bandit training (one builder, one vocabulary: a policy trained on the log runs in the
    simulator)."""
    from pushrl.data.features import ItemCatalog
    from pushrl.policies.item_data import ContextEncoder, build_rounds

    m = load_sim(ROOT / "simulator_data" / "fitted" / "obd")
    w = ObdWorld(m)
    ds, _ = load_dataset(ROOT / "simulator_data" / "obd" / "random", quarantine=False)
    rounds = build_rounds(ds, encoder=ContextEncoder.fit(ds, m.spec, ItemCatalog(ds.items,
                                                                                   m.spec)))
    assert rounds.n_rounds == w.n_contexts
    logged = rounds.subset(np.argsort(rounds.row)).context
    rows = np.arange(0, w.n_contexts, 7)
    sim = w.context(rows, np.broadcast_to(np.arange(w.n_items), (rows.size, w.n_items)))
    assert sim.shared_names == logged.shared_names
    assert sim.candidate_feature_names == logged.candidate_feature_names
    assert sim.candidate_feature_names[-2:] == ("affinity", "cand_affinity")
    np.testing.assert_array_equal(sim.shared, logged.shared[rows])
    np.testing.assert_array_equal(sim.candidate_features, logged.candidate_features[rows])
    np.testing.assert_array_equal(sim.position, logged.position[rows])
