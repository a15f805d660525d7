"""`pushrl channels train|evaluate` end to end on a small channel world (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli_runner import run_pushrl


def test_channels_train_and_evaluate(tmp_path: Path) -> None:
    for seed, name in ((3, "ch"), (4, "ch-heldout")):
        r = run_pushrl("data", "synth", "--channels", "--users", "300", "--days", "7",
                       "--seed", str(seed), "--out", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
    r = run_pushrl("channels", "train", str(tmp_path / "ch"), "--out",
                   str(tmp_path / "pol"), "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["arms"] == ["none", "push", "email", "in_app"] and res["n_rounds"] > 100
    assert res["train_unsub_penalty"] in (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
    r = run_pushrl("channels", "evaluate", res["artifact"], "--data",
                   str(tmp_path / "ch-heldout"), "--json")
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    assert ev["baseline"] == "push-only" and set(ev["estimates"]) >= {"ipw", "dr"}
    assert ev["arms"] == ["none", "push", "email", "in_app"]


def test_channels_train_refuses_a_log_without_channels(tmp_path: Path) -> None:
    r = run_pushrl("data", "synth", "--users", "100", "--days", "3", "--out",
                   str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr
    r = run_pushrl("channels", "train", str(tmp_path / "d"), "--out", str(tmp_path / "p"))
    assert r.returncode == 2
    assert "no `channel` column" in r.stderr and "Traceback" not in r.stderr
