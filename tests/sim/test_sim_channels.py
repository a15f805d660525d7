"""Channels in the simulator (issue 17): rollouts and ``compare`` choose push / email / in-app
or none per delivered push with a channel policy, under each channel's opt-in, quiet hours and
caps, with the fitted per-channel response, cost and per-channel unsubscribes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pushrl.compare.runner import compare
from pushrl.data.io import write_dataset
from pushrl.data.synth import generate
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import world_config
from pushrl.envs.rollout import rollout
from pushrl.envs.scenario import load_scenario
from pushrl.errors import PushrlError
from pushrl.policies.baselines import make_baseline
from pushrl.policies.channel_policy import (
    FixedChannel,
    UniformChannel,
    channel_policy_from_spec,
)
from pushrl.rules.channels import DEFAULT_CHANNELS, ChannelSet
from pushrl.sim.channels import SimChannels
from pushrl.sim.fit import fit_sim
from pushrl.sim.model import save_sim

COST = dict(zip(DEFAULT_CHANNELS.names, DEFAULT_CHANNELS.cost_array().tolist(), strict=True))


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scenario whose simulator was fitted on a synthetic channel world's log."""
    tmp = tmp_path_factory.mktemp("simch")
    ds, _, _ = generate(world_config("default", users=1200, days=14, seed=8, channels=True))
    write_dataset(ds, tmp / "logs")
    loaded, report = load_dataset(tmp / "logs", quarantine=False)
    save_sim(fit_sim(loaded, report), tmp / "sim")
    text = Path("envs/default.toml").read_text()
    text = (text.replace('data = "../simulator_data/synth"', f'data = "{tmp / "logs"}"')
            .replace('sim = "../simulator_data/fitted/synth"', f'sim = "{tmp / "sim"}"'))
    for name, table in DEFAULT_CHANNELS.to_dict().items():
        text += f"\n[channels.{name}]\n" + "".join(
            f"{k} = {str(v).lower() if isinstance(v, bool) else v}\n" for k, v in table.items())
    (tmp / "sc.toml").write_text(text)
    return tmp / "sc.toml"


def _run(scenario: Path, channel: Any = None, **kw: Any) -> Any:
    ch = {} if channel is None else {"channels": DEFAULT_CHANNELS, "channel_policy": channel}
    return rollout(make_baseline("most-active-hour"), str(scenario), n_users=300, days=7,
                   seed=4, **ch, **kw)


def test_push_only_channel_equals_push_rollout_but_for_the_channel_cost(scenario: Path) -> None:
    """Push-only through the channel slot (push's own guardrails = the scenario's, push is
    the response's reference) delivers exactly what the push-only simulator delivers; the
    objective differs only by the send cost (scenario 0.05, push 0.01)."""
    sc = load_scenario(str(scenario))
    assert sc.channels is not None and sc.channels.names == DEFAULT_CHANNELS.names
    base = _run(scenario)
    push = _run(scenario, FixedChannel(arm=1, name="push-only"))
    for m in ("sends", "opens", "clicks", "conversions", "unsubscribed"):
        np.testing.assert_array_equal(getattr(base, m), getattr(push, m), err_msg=m)
    assert push.sends.sum() > 100
    np.testing.assert_array_equal(push.extra["channel_sends"][:, 0], push.sends)
    assert not push.extra["channel_sends"][:, 1:].any()
    np.testing.assert_allclose(push.extra["channel_cost"], COST["push"] * push.sends)
    np.testing.assert_allclose(push.objective - base.objective,
                               (sc.reward.send_cost - COST["push"]) * push.sends, atol=1e-9)


def test_channel_choice_costs_caps_and_common_random_numbers(scenario: Path) -> None:
    uni = _run(scenario, UniformChannel())
    again = _run(scenario, UniformChannel())
    np.testing.assert_array_equal(uni.objective, again.objective)  # counter-based draws
    cs = uni.extra["channel_sends"]
    assert uni.extra["channel_names"] == DEFAULT_CHANNELS.names
    assert (cs.sum(axis=0) > 20).all()  # every channel used
    np.testing.assert_array_equal(cs.sum(axis=1), uni.sends)
    np.testing.assert_allclose(uni.extra["channel_cost"], cs @ DEFAULT_CHANNELS.cost_array())
    assert (cs[:, 1] <= 7).all()  # email: 1 a day
    email = _run(scenario, FixedChannel(arm=2, name="fixed:email"))
    assert (email.extra["channel_sends"][:, 1] <= 7).all()
    assert email.extra["channel_sends"][:, [0, 2]].sum() == 0
    # the fitted per-channel response: email opens less than push (the synthetic truth)
    push = _run(scenario, FixedChannel(arm=1, name="push-only"))
    assert email.opens.sum() / email.sends.sum() < push.opens.sum() / push.sends.sum()


def test_unsubscribe_leaves_one_channel(scenario: Path) -> None:
    ch = SimChannels(DEFAULT_CHANNELS, UniformChannel(), 3, opt_in_share=(1.0, 1.0, 0.0))
    ch.reset(np.arange(3), np.arange(3, dtype=np.uint64))
    np.testing.assert_array_equal(ch.opt_in, [[1, 1, 0]] * 3)
    ch.unsubscribe(np.array([0, 1]), np.array([0, 1]))
    np.testing.assert_array_equal(ch.opt_in, [[0, 1, 0], [1, 0, 0], [1, 1, 0]])
    ch.unsubscribe(np.array([0]), np.array([1]))
    np.testing.assert_array_equal(ch.reachable, [False, True, True])
    with pytest.raises(ValueError, match="one share per channel"):
        SimChannels(DEFAULT_CHANNELS, UniformChannel(), 3, opt_in_share=(1.0,))
    # in a rollout: users who unsubscribed from a channel keep getting the others
    res = _run(scenario, UniformChannel(), channel_opt_in=(0.8, 0.9, 0.7))
    assert res.unsubscribed.any()
    assert res.extra["channel_verdicts"][6] > 0  # not opted in, blocked per channel


def test_compare_channel_policies_and_refusals(scenario: Path) -> None:
    res = compare(["most-active-hour"], scenario=str(scenario), users=120, days=3,
                  channel_policies=["push-only", "uniform"])
    assert res.policies == ["most-active-hour|push-only", "most-active-hour|uniform"]
    s = res.summary.set_index(["policy", "metric"])["value"]
    assert s[("most-active-hour|push-only", "sends_ch_email_per_user")] == 0
    assert s[("most-active-hour|uniform", "sends_ch_email_per_user")] > 0
    assert s[("most-active-hour|uniform", "channel_cost_per_user")] > 0
    assert ("most-active-hour|uniform", "channel_cost_per_user") in \
        set(zip(res.paired["policy"], res.paired["metric"], strict=True))
    with pytest.raises(PushrlError, match="fitted on a log with several channels"):
        compare(["most-active-hour"], users=10, days=1, channel_policies=["push-only"],
                channels=DEFAULT_CHANNELS)
    with pytest.raises(PushrlError, match="not push-only, uniform"):
        compare(["most-active-hour"], scenario=str(scenario), users=10, days=1,
                channel_policies=["nonsense"])
    two = ChannelSet.from_dict({"push": {"cost": 0.01}, "fax": {"cost": 0.1}})
    with pytest.raises(PushrlError, match="no response for channel"):
        compare(["most-active-hour"], scenario=str(scenario), users=10, days=1,
                channel_policies=["uniform"], channels=two)
    assert isinstance(channel_policy_from_spec("fixed:in_app", DEFAULT_CHANNELS), FixedChannel)


def test_compare_cli_shows_per_channel_sends_and_cost(scenario: Path, tmp_path: Path) -> None:
    from tests.cli_runner import run_pushrl

    r = run_pushrl("compare", "--scenario", str(scenario), "-p", "most-active-hour",
                   "--channel-policy", "push-only", "--channel-policy", "uniform",
                   "--users", "60", "--days", "2", "--out", str(tmp_path / "cmp"))
    assert r.returncode == 0, r.stderr
    assert "channels: sends per user and send cost per user" in r.stdout
    assert "most-active-hour|uniform" in r.stdout and "in_app" in r.stdout
    r = run_pushrl("compare", "-p", "most-active-hour", "--channel-policy", "uniform",
                   "--users", "10", "--days", "1", "--out", str(tmp_path / "c2"))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "[channels.NAME]" in r.stderr
