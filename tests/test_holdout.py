"""`pushrl init` splits a new team's only log by user: training stages read the training users,
`pushrl evaluate --scenario` the held-out users, and the gate accepts that as held-out data
while still refusing a policy that has seen the evaluated users."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pushrl.data.split import UserSplit
from pushrl.data.synth import synthesize
from pushrl.data.worlds import world_config
from pushrl.envs.scenario import load_scenario
from pushrl.train.vw_train import train_vw
from tests.cli_runner import run_pushrl


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """300 users x 7 days of the default world, onboarded with the default 20 % held out."""
    root = tmp_path_factory.mktemp("holdout")
    synthesize(root / "logs", world_config("default", users=300, days=7, seed=3))
    r = run_pushrl("init", str(root / "logs"), "--out", str(root / "team"), "--json")
    assert r.returncode == 0, r.stderr
    return root, root / "team" / "scenario.toml", json.loads(r.stdout)


def evaluate(root: Path, sc: Path, policy: Path, *extra: str) -> dict[str, Any]:
    r = run_pushrl("evaluate", "--scenario", str(sc), "--policy", str(policy), "--estimators",
                   "dr,ipw", "--n-bootstrap", "100", "--no-record", "--out",
                   str(root / "reports" / policy.name), "--json", *extra)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def test_init_records_the_split(team: tuple[Path, Path, dict[str, Any]]) -> None:
    _, sc_path, res = team
    sc = load_scenario(sc_path)
    assert sc.split == UserSplit(0.2, 0, "train")
    sp = res["split"]
    assert sp["train_users"] + sp["heldout_users"] == 300 and sp["heldout_users"] >= 20
    text = sc_path.read_text()  # states which split and why
    assert "[split]" in text and "by = \"user\"" in text and "not by time" in text
    meta = json.loads((sc.sim / "sim.json").read_text())["meta"]
    assert meta["split"]["part"] == "train" and meta["split"]["of"] == res["fingerprint"]


def test_init_train_evaluate_passes_the_held_out_check(
        team: tuple[Path, Path, dict[str, Any]]) -> None:
    root, sc, _ = team
    r = run_pushrl("train", "bandit", "--scenario", str(sc), "--out",
                   str(root / "policies" / "bandit"), "--json")
    assert r.returncode == 0, r.stderr
    trained = json.loads(r.stdout)
    assert trained["split"]["part"] == "train"
    art = Path(trained["artifact"])
    d = evaluate(root, sc, art)  # only the scenario: its held-out users
    assert d["data"]["split"]["part"] == "heldout"
    assert d["data"]["split"]["of"] == trained["split"]["of"]
    assert "held_out_data" not in d["gate"]["failed_rules"]
    assert not any("in-sample" in n for n in d["notes"])
    assert "heldout users of a user split" in Path(d["report"]["markdown"]).read_text()
    # the same policy on the users it was trained on is still in-sample
    d = evaluate(root, sc, art, "--split", "train")
    assert "held_out_data" in d["gate"]["failed_rules"] and not d["passed"]
    d = evaluate(root, sc, art, "--split", "all")  # the whole log contains the training users
    assert "held_out_data" in d["gate"]["failed_rules"]


def test_policies_that_saw_the_held_out_users_are_refused(
        team: tuple[Path, Path, dict[str, Any]]) -> None:
    root, sc, _ = team
    # trained on the whole log (no scenario): it has seen every held-out user
    r = run_pushrl("train", "bandit", "--data", str(root / "logs"), "--out",
                   str(root / "policies" / "whole"), "--json")
    assert r.returncode == 0, r.stderr
    d = evaluate(root, sc, Path(json.loads(r.stdout)["artifact"]))
    assert "held_out_data" in d["gate"]["failed_rules"]
    # trained on the held-out users themselves
    res = train_vw(root / "logs", out=root / "policies" / "held",
                   split=load_scenario(sc).data_split("heldout"))
    assert res.artifact is not None
    d = evaluate(root, sc, res.artifact)
    assert "held_out_data" in d["gate"]["failed_rules"]


@pytest.mark.parametrize(("args", "match"), [
    (("--holdout-frac", "0.6"), r"--holdout-frac must be in \(0, 0.5\], got 0.6"),
    (("--holdout-frac", "0"), r"--holdout-frac must be in \(0, 0.5\], got 0.0"),
    (("--holdout-frac", "0.03"), r"leaves \d+ for training and \d+ held out; each part needs"),
])
def test_bad_split_is_one_line(team: tuple[Path, Path, dict[str, Any]], tmp_path: Path,
                               args: tuple[str, ...], match: str) -> None:
    root, _, _ = team
    r = run_pushrl("init", str(root / "logs"), "--out", str(tmp_path / "t"), *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1, r.stderr
    import re

    assert re.search(match, err[0]), err[0]


def test_split_needs_a_scenario_split(team: tuple[Path, Path, dict[str, Any]],
                                      tmp_path: Path) -> None:
    root, _, _ = team
    r = run_pushrl("evaluate", "--data", str(root / "logs"), "--scenario", "default",
                   "--policy", "most-popular", "--split", "heldout")
    assert r.returncode == 2 and "not the data of a scenario with a [split]" in r.stderr


def test_sim_fit_with_the_scenario_reads_the_training_users(
        team: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    root, sc, res = team
    r = run_pushrl("sim", "fit", "--scenario", str(sc), "--out", str(tmp_path / "sim"), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["split"]["part"] == "train" and d["split"]["of"] == res["fingerprint"]
    assert d["fingerprint"] == res["split"]["train_fingerprint"]  # what init fitted on
    r = run_pushrl("sim", "fit", str(root / "logs"), "--out", str(tmp_path / "whole"), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["split"] is None  # explicit: whole log


@pytest.mark.parametrize(("section", "match"), [
    ("holdout_frac = 0.9", r"\[split\] --holdout-frac must be in \(0, 0.5\], got 0.9"),
    ('by = "time"', r'split.by must be "user", got \'time\''),
    ("holdout_seed = 1.5", "split.holdout_seed must be an integer"),
])
def test_bad_split_section_is_one_line(tmp_path: Path, section: str, match: str) -> None:
    from pushrl.errors import ScenarioError

    p = tmp_path / "scenario.toml"
    p.write_text(f'data = "logs"\nsim = "sim"\n[split]\n{section}\n')
    with pytest.raises(ScenarioError, match=match):
        load_scenario(p)
    p.write_text('data = "logs"\nsim = "sim"\n')
    assert load_scenario(p).split is None and load_scenario(p).data_split("heldout") is None
