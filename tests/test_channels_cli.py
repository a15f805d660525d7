"""`pushrl channels train|evaluate` end to end on a small channel world (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path

from pushrl.ope.channel_price import PRICE_MULTIPLES
from pushrl.policies.channel_policy import UNSUB_PRICE_MULTIPLE

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
    # the default reads the multiple off the log (or the fixed one without unsubscribes)
    assert res["train_unsub_penalty"] in (*PRICE_MULTIPLES, UNSUB_PRICE_MULTIPLE)
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


def test_channels_train_uses_the_scenario_reward(tmp_path: Path) -> None:
    """--scenario: the channels AND the [reward] weights of the scenario (its unsubscribe
    penalty is the budget search's unit); --unsub-penalty overrides only the penalty."""
    r = run_pushrl("data", "synth", "--channels", "--users", "300", "--days", "7",
                   "--seed", "5", "--out", str(tmp_path / "ch"))
    assert r.returncode == 0, r.stderr
    text = Path("envs/default.toml").read_text()
    assert "unsubscribe_penalty = 10.0" in text
    text = text.replace("unsubscribe_penalty = 10.0", "unsubscribe_penalty = 3.0")
    text += """
[channels.push]
cost = 0.01
quiet_hours = [22, 8]
max_sends_per_day = 2
max_sends_per_week = 10

[channels.email]
cost = 0.002
quiet_hours = [0, 0]
max_sends_per_day = 1
max_sends_per_week = 5

[channels.in_app]
cost = 0.001
quiet_hours = [0, 0]
max_sends_per_day = 0
max_sends_per_week = 0
session_only = true
"""
    (tmp_path / "sc.toml").write_text(text)
    r = run_pushrl("channels", "train", str(tmp_path / "ch"), "--scenario",
                   str(tmp_path / "sc.toml"), "--out", str(tmp_path / "pol"), "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["reward"] == "1*opened+2*clicked+0.02*revenue-0.05*sent-3*unsubscribed"
    assert res["train_unsub_penalty"] in (3.0, 6.0, 12.0, 24.0, 48.0, 96.0)
    r = run_pushrl("channels", "train", str(tmp_path / "ch"), "--scenario",
                   str(tmp_path / "sc.toml"), "--unsub-penalty", "0.5", "--no-budget",
                   "--out", str(tmp_path / "pol2"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["reward"].endswith("-0.5*unsubscribed")
    r = run_pushrl("channels", "evaluate", res["artifact"], "--data", str(tmp_path / "ch"),
                   "--scenario", str(tmp_path / "sc.toml"), "--json")
    assert r.returncode == 0, r.stderr

