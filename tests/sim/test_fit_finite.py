"""`sim fit` refuses degenerate inputs whose statistics come out NaN or infinite (issue #15
item 5: a log with one row dated decades away fitted "successfully" with a NaN by-hour
correlation), instead of saving a simulator that runs and returns nonsense."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import pushrl.sim.fit as fit_mod
from pushrl.data.io import read_raw, write_table
from pushrl.data.validate import TS_REASON, load_dataset
from pushrl.errors import DataError
from pushrl.sim.fit import check_finite, fit_sim
from pushrl.sim.model import SimModel, load_sim

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shipped() -> SimModel:
    return load_sim(ROOT / "simulator_data" / "fitted" / "synth")


def _nan_rhythm(m: SimModel) -> None:
    m.meta["rhythm"]["corr_by_local_hour"] = float("nan")


def _inf_rhythm(m: SimModel) -> None:
    m.meta["rhythm"]["loglik_per_event"] = float("-inf")


def _nan_coef(m: SimModel) -> None:
    m.glms["open"].coef = np.where(np.arange(m.glms["open"].coef.size) == 0, np.nan,
                                   m.glms["open"].coef)


def _nan_intercept(m: SimModel) -> None:
    m.glms["click"].intercept = float("nan")


def _inf_revenue(m: SimModel) -> None:
    m.item_revenue = np.full_like(m.item_revenue, np.inf)


@pytest.mark.parametrize(("spoil", "pattern"), [
    (_nan_rhythm, "rhythm corr_by_local_hour"),
    (_inf_rhythm, "rhythm loglik_per_event"),
    (_nan_coef, "open coefficients"),
    (_nan_intercept, "click coefficients"),
    (_inf_revenue, "item revenue"),
])
def test_non_finite_statistics_are_refused(shipped: SimModel, spoil: Any, pattern: str) -> None:
    assert check_finite(shipped) is shipped
    m = copy.deepcopy(shipped)
    spoil(m)
    with pytest.raises(DataError, match=f"non-finite statistics \\({pattern}") as ei:
        check_finite(m)
    assert "pushrl data validate" in str(ei.value) and "\n" not in str(ei.value)


def test_fit_sim_refuses_a_nan_rhythm(tiny_synth: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wiring: fit_sim itself checks (the NaN the adversarial run saw came from here)."""
    real = fit_mod.select_rhythm

    def nan_corr(*a: Any, **k: Any) -> Any:
        best, rhythm = real(*a, **k)
        return best, {**rhythm, "corr_by_local_hour": float("nan")}

    monkeypatch.setattr(fit_mod, "select_rhythm", nan_corr)
    ds, report = load_dataset(tiny_synth, quarantine=False)
    with pytest.raises(DataError, match=r"non-finite statistics \(rhythm corr_by_local_hour"):
        fit_sim(ds, report)


def test_sim_fit_quarantines_rows_dated_decades_away(tiny_synth: Path, tmp_path: Path) -> None:
    d = tmp_path / "far"
    shutil.copytree(tiny_synth, d)
    act = read_raw(d, "activity")
    assert act is not None
    act = act.copy()
    act.loc[[0], "ts"] = pd.Timestamp("1970-01-01", tz="UTC")
    act.loc[[len(act) - 1], "ts"] = pd.Timestamp("2200-01-01", tz="UTC")
    write_table(act, d / "activity.parquet")
    r = subprocess.run([sys.executable, "-m", "pushrl.cli.main", "sim", "fit", str(d), "--out",
                        str(tmp_path / "sim"), "--json"], capture_output=True, text=True,
                       cwd=ROOT, timeout=600, check=False)
    assert r.returncode == 0, r.stderr
    assert pd.read_parquet(d / "_rejected" / "activity.parquet")["reason"].tolist() == \
        [TS_REASON, TS_REASON]
    rhythm = json.loads(r.stdout)["rhythm"]
    assert np.isfinite(rhythm["corr_by_local_hour"]) and rhythm["corr_by_local_hour"] > 0.5
    # a per-event log-likelihood of a few nats, not the -1.6e6 of a 230-year span
    assert rhythm["loglik_per_event"] > -20
