"""The simulator artifact: round trip, checksum verification, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pushrl.errors import ArtifactError
from pushrl.sim.model import load_sim, save_sim

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "simulator_data" / "fitted" / "synth"


def test_shipped_artifact_loads_and_roundtrips(tmp_path: Path) -> None:
    m = load_sim(SHIPPED)
    assert m.kind == "push" and m.population is not None and len(m.population) == 2000
    assert {"open", "click", "convert", "unsubscribe"} <= set(m.glms)
    assert m.meta["fingerprint"] and m.spec.version == "features/v1"
    save_sim(m, tmp_path / "copy")
    m2 = load_sim(tmp_path / "copy")
    np.testing.assert_array_equal(m2.population.rate_how, m.population.rate_how)
    np.testing.assert_array_equal(m2.glms["open"].coef, m.glms["open"].coef)


def _copy(tmp_path: Path) -> Path:
    d = tmp_path / "sim"
    shutil.copytree(SHIPPED, d)
    return d


def test_tampered_arrays_fail_the_checksum(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    with open(d / "arrays.npz", "ab") as f:
        f.write(b"x")
    with pytest.raises(ArtifactError, match="sha256"):
        load_sim(d)


@pytest.mark.parametrize(("edit", "match"), [
    (lambda doc: doc.update(format="pushrl/sim/v0"), "format"),
    (lambda doc: doc["feature_spec"].update(version="features/v0"), "feature spec version"),
])
def test_refuses_other_versions(tmp_path: Path, edit, match: str) -> None:  # type: ignore[no-untyped-def]
    d = _copy(tmp_path)
    doc = json.loads((d / "sim.json").read_text())
    edit(doc)
    (d / "sim.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=match):
        load_sim(d)


def test_missing_artifact_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="pushrl sim fit"):
        load_sim(tmp_path / "nothing")
