"""`pushrl profiles`: writes one row per user and the model, prints a summary, takes a
scenario's split; bad input is one line and exit 2, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pushrl.data.io import write_dataset
from pushrl.data.profiles import ProfileModel
from pushrl.data.synth import SynthConfig, WorldParams, generate
from tests.cli_runner import run_pushrl


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ds, *_ = generate(SynthConfig(users=120, days=30, seed=4, slots_per_day=4,
                                  params=WorldParams(sessions_per_day_median=0.2)))
    d = tmp_path_factory.mktemp("pcli") / "data"
    write_dataset(ds, d)
    return d


def test_profiles_writes_rows_model_and_summary(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run_pushrl("profiles", str(data), "--out", str(out), "--report",
                   str(tmp_path / "r" / "profiles.html"))
    assert r.returncode == 0, r.stderr
    assert "user profiles as of" in r.stdout and "Brier" in r.stdout
    t = pd.read_parquet(out / "profiles.parquet")
    assert len(t) == 120 and t["churn_risk"].between(0, 1).all()
    m = ProfileModel.from_json((out / "profile_model.json").read_text())
    assert m.coef is not None
    assert (tmp_path / "r" / "profiles.html").stat().st_size > 20_000
    r = run_pushrl("profiles", str(data), "--out", str(out), "--json", "--as-of",
                   "2026-03-25T12:30:00Z")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["as_of"].startswith("2026-03-25 12:00") and s["users"] == 120
    assert sum(s["segments"].values()) == 120


def test_profiles_with_a_scenario_split_validates_on_held_out_users(data: Path,
                                                                    tmp_path: Path) -> None:
    r = run_pushrl("init", str(data), "--out", str(tmp_path / "sc"))
    assert r.returncode == 0, r.stderr
    r = run_pushrl("profiles", "--scenario", str(tmp_path / "sc" / "scenario.toml"),
                   "--out", str(tmp_path / "o"), "--json")
    assert r.returncode == 0, r.stderr
    churn = json.loads(r.stdout)["churn"]
    assert churn["method"].startswith("held-out users")
    assert 5 <= churn["n"] <= 45  # ~20 % of 120 users


@pytest.mark.parametrize(("args", "match"), [
    (["/nonexistent/logs"], "is not a directory"),
    (["{data}", "--as-of", "soon"], "is not a time"),
    (["{data}", "--as-of", "1999-01-01T00:00:00Z"], "not after the log's first event"),
    (["{data}", "--report", "{tmp}/page.png"], "must end in .html"),
    (["{data}", "--out", "{tmp}/afile"], "is a file"),
    ([], "pass the pushlog directory"),
])
def test_bad_input_is_one_line(data: Path, tmp_path: Path, args: list[str],
                               match: str) -> None:
    (tmp_path / "afile").write_text("x")
    argv = [a.format(data=data, tmp=tmp_path) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "o")]
    r = run_pushrl("profiles", *argv)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert match in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
