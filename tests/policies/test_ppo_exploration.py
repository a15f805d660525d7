"""The stochastic export of the PPO timing agent (:class:`~pushrl.policies.ppo.Exploration`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pushrl.data.features import FeatureSpec, FeatureState
from pushrl.errors import ArtifactError
from pushrl.policies.base import SEND, TimingContext
from pushrl.policies.ppo import Exploration, PPOTimingPolicy, save_with_exploration
from pushrl.policies.registry import load_policy, save_artifact
from pushrl.rules.guardrails import Guardrails

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "policies" / "ppo-timing" / "v2"
START = 489_984  # UTC midnight of 2025-11-24, as an hour bucket


def contexts() -> TimingContext:
    """3 users x 24 hours after a week of activity around their own peak hours."""
    rng = np.random.default_rng(5)
    spec = FeatureSpec(("a", "b"), {}, tuple([1 / 168] * 168), (0.5, 0.5))
    fs = FeatureState(spec, ["UTC", "Europe/Berlin", "Asia/Kolkata"], START)
    peaks = np.array([9, 13, 19])
    users = np.arange(3)
    for h in range(7 * 24):
        fs.advance(users, START + h)
        hour, _, _ = fs.local_time(users, START + h)
        act = users[rng.random(3) < np.where(hour == peaks, 0.9, 0.05)]
        if act.size:
            fs.record_activity(act, START + h, rng.integers(0, 2, act.size))
    u = np.repeat(users, 24)
    b = START + 7 * 24 + np.tile(np.arange(24), 3)
    raw = fs.features(u, b)
    allowed = ~Guardrails(22, 8, 2, 10).quiet(raw[:, 0].astype(np.int64))
    return TimingContext(raw, allowed, u, b, fs, np.zeros(u.size))


@pytest.fixture(scope="module")
def agent() -> PPOTimingPolicy:
    pol = load_policy(SHIPPED)
    assert isinstance(pol, PPOTimingPolicy) and pol.deterministic
    return pol


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"epsilon": -0.1}, "epsilon"), ({"epsilon": 1.5}, "epsilon"), ({"send": 2.0}, "send"),
    ({"temperature": 0.0}, "temperature"), ({"temperature": -1.0}, "temperature")])
def test_invalid_exploration_is_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Exploration(**kwargs)


def test_mix_is_the_stated_formula_and_pscore_is_its_probability(agent) -> None:
    ctx = contexts()
    base = agent.action_dist(ctx)  # argmax one-hot, guardrails masked
    agent.exploration = Exploration(None, 0.3, 0.02)
    try:
        dist = agent.action_dist(ctx)
        dec = agent.decide_batch(ctx, np.random.default_rng(0))
    finally:
        agent.exploration = Exploration()
    allowed = ctx.allowed
    want = 0.7 * base[allowed, SEND] + 0.3 * 0.02
    np.testing.assert_allclose(dist[allowed, SEND], want, rtol=1e-12)
    assert (dist[~allowed, SEND] == 0).all()  # guardrails still mask the mix
    np.testing.assert_allclose(dec.pscore, dist[np.arange(len(ctx)), dec.action], rtol=1e-12)
    assert base[allowed, SEND].max() == 1.0  # the trained agent does send somewhere


def test_temperature_softens_the_logits(agent) -> None:
    ctx = contexts()
    z = agent.actor.logits(agent.observation(ctx))
    for t in (1.0, 3.0):
        agent.exploration = Exploration(temperature=t)
        try:
            dist = agent.action_dist(ctx)
        finally:
            agent.exploration = Exploration()
        p = 1 / (1 + np.exp(-(z[:, 1] - z[:, 0]) / t))
        np.testing.assert_allclose(dist[ctx.allowed, SEND], p[ctx.allowed], rtol=1e-9)


def test_export_is_a_new_version_that_serves_the_exploration(tmp_path: Path) -> None:
    import shutil

    reg = tmp_path / "ppo-timing"
    shutil.copytree(SHIPPED, reg / "v2")
    path = save_with_exploration(reg / "v2", {"temperature": 2.0, "epsilon": 0.5,
                                              "send": 0.02, "selection": {"reason": "test"}})
    assert path == reg / "v3"
    card = json.loads((path / "card.json").read_text())
    src = json.loads((reg / "v2" / "card.json").read_text())
    assert card["files"] == src["files"] and card["exported_from"] == "ppo-timing@v2"
    assert "ope" not in card
    pol = load_policy(path)
    assert pol.exploration == Exploration(2.0, 0.5, 0.02)
    assert pol.describe()["exploration"]["epsilon"] == 0.5


def test_export_refuses_non_ppo_artifacts_and_bad_values(tmp_path: Path) -> None:
    art = save_artifact(tmp_path / "h", kind="timing", loader="baseline",
                        files={"x.txt": b"x"}, card={"baseline": "never-send"})
    with pytest.raises(ArtifactError, match="loader 'ppo'"):
        save_with_exploration(art, {"epsilon": 0.1, "send": 0.1})
    with pytest.raises(ValueError, match="epsilon"):
        save_with_exploration(SHIPPED, {"epsilon": 3.0}, out=tmp_path / "x")
