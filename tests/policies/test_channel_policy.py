"""The channel slot (issue 17): rounds from logs, the VW channel bandit, OPE and the gate,
the registry artifact, decisions that never break opt-in or a channel's guardrails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pushrl.data.features import ItemCatalog
from pushrl.data.io import write_dataset
from pushrl.data.synth import generate, world_spec
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import world_config
from pushrl.ope.evaluate_channel import evaluate_channel_policy, ipw_means
from pushrl.policies.channel_policy import (
    ChannelArms,
    ChannelDecider,
    ChannelRounds,
    FixedChannel,
    UniformChannel,
    channel_rounds,
    train_channel_policy,
    with_none_rounds,
)
from pushrl.policies.registry import load_policy
from pushrl.rules import reward as rules_reward
from pushrl.rules.channels import DEFAULT_CHANNELS, opt_in_matrix
from pushrl.rules.reward import RewardWeights

W = RewardWeights(open=0.0, click=1.0, revenue=0.01, send_cost=0.0, unsubscribe_penalty=1.0)
DAYS = 14


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    d = tmp_path_factory.mktemp("ch")
    ds_raw, _, _ = generate(world_config("default", users=3000, days=DAYS, seed=21,
                                         channels=True))
    write_dataset(ds_raw, d / "train")
    ds, _ = load_dataset(d / "train", quarantine=False)
    rounds = channel_rounds(ds, DEFAULT_CHANNELS, spec=world_spec(), weights=W)
    return ds, rounds, train_channel_policy(rounds)


def test_rounds_follow_the_log(trained: tuple) -> None:
    ds, rounds, _ = trained
    p = ds.pushes.iloc[rounds.row]
    sent = p["sent"].to_numpy(bool)
    # arm 0 = a logged "none" (unsent), arms 1.. = the logged channel
    assert (rounds.action[~sent] == 0).all() and (rounds.action[sent] >= 1).all()
    names = np.array(("none", *DEFAULT_CHANNELS.names))
    assert (names[rounds.action[sent]] == p["channel"][sent].astype(str).to_numpy()).all()
    np.testing.assert_allclose(rounds.pscore, p["pscore_channel"].to_numpy(float))
    # reward = the one reward with the channel's cost; none earns 0
    expect = rules_reward.from_logs(W, p, channel_costs=DEFAULT_CHANNELS.costs())
    np.testing.assert_allclose(rounds.reward, expect)
    assert (rounds.reward[~sent] == 0).all()
    # the mask is the opt-in at the row's time; the logged channel is always allowed
    mask = np.asarray(rounds.context.mask, bool)
    assert mask[np.arange(rounds.n_rounds), rounds.action].all() and mask[:, 0].all()
    start = opt_in_matrix(ds.users["channels"], DEFAULT_CHANNELS.names)[rounds.user]
    assert not (mask[:, 1:] & ~start).any()  # never opted in later than at the start
    full = with_none_rounds(rounds)
    assert full.n_rounds == 2 * rounds.n_rounds
    assert (full.action[1::2] == 0).all() and (full.pscore[1::2] == 1).all()


def test_push_only_puts_users_without_push_on_none(trained: tuple) -> None:
    _, rounds, pol = trained
    mask = np.asarray(rounds.context.mask, bool)
    d = FixedChannel(arm=1).action_dist(rounds.context)
    np.testing.assert_array_equal(d[:, 1], mask[:, 1])
    np.testing.assert_array_equal(d[:, 0], ~mask[:, 1])
    for policy in (pol, UniformChannel()):
        dist = policy.action_dist(rounds.context)
        assert (dist[~mask] == 0).all()  # a learned policy never sends without opt-in
        np.testing.assert_allclose(dist.sum(1), 1.0)


def test_ope_and_gate_cover_the_channel_policy(trained: tuple) -> None:
    _, rounds, pol = trained
    res = evaluate_channel_policy(rounds, pol, n_bootstrap=200)
    assert res["baseline"] == "push-only"
    assert set(res["estimates"]) == {"ipw", "snipw", "dr", "sndr"}
    for e in res["estimates"].values():
        assert e["lower"] <= e["value"] <= e["upper"]
    assert "passed" in res["gate"] and res["gate"]["comparison"]["estimator_name"] == "dr"
    # IPW of the logger itself is the on-policy mean (weights 1): pscore_channel is right
    logger_like = ipw_means(rounds, _LoggerLike())
    assert logger_like["reward"] == pytest.approx(float(rounds.reward.mean()), rel=1e-9)


class _LoggerLike(UniformChannel):
    """The synthetic logger's channel rule: none 10 %, else uniform over the opted-in."""

    def _action_dist(self, ctx):  # type: ignore[no-untyped-def]
        m = np.asarray(ctx.mask, bool)[:, 1:].astype(float)
        d = np.concatenate([np.full((m.shape[0], 1), 0.1),
                            0.9 * m / m.sum(1, keepdims=True)], axis=1)
        return d


def test_artifact_round_trip(trained: tuple, tmp_path: Path) -> None:
    _, rounds, pol = trained
    out = pol.save(tmp_path / "ch")
    loaded = load_policy(out)
    np.testing.assert_allclose(loaded.action_dist(rounds.context),
                               pol.action_dist(rounds.context), atol=1e-6)
    assert loaded.channels == DEFAULT_CHANNELS


def _run(ds: object, cfg: object, policy: object, seed: int) -> tuple[np.ndarray, ChannelDecider]:
    arms = ChannelArms(DEFAULT_CHANNELS, world_spec(), ItemCatalog(ds.items, world_spec()))
    dec = ChannelDecider(policy, arms, cfg.users, seed)
    out, _, _ = generate(cfg, items=ds.items, channel_chooser=dec)
    p = out.pushes
    r = rules_reward.from_logs(W, p, channel_costs=DEFAULT_CHANNELS.costs())
    u = np.asarray(p["user_id"].cat.codes, np.int64)
    return np.bincount(u, weights=r, minlength=cfg.users), dec


def test_bandit_beats_uniform_on_held_out_users_of_a_small_world(trained: tuple) -> None:
    ds, _, pol = trained
    cfg = world_config("default", users=3000, days=DAYS, seed=1021, channels=True)
    learned, dec = _run(ds, cfg, pol, 1)
    uniform, _ = _run(ds, cfg, UniformChannel(), 2)
    d = learned - uniform  # paired by user, common random numbers
    se = d.std(ddof=1) / np.sqrt(d.size)
    # the learned policy is better by more than 2 standard errors of the paired difference
    assert d.mean() > 2 * se, (d.mean(), se, learned.mean(), uniform.mean())
    # the decider's guardrails blocked sends (quiet hours, caps, opt-in) and never allowed
    # a channel without opt-in (generate raises if a chooser sends there)
    assert dec.blocked[6] > 0 and dec.blocked[1] > 0
