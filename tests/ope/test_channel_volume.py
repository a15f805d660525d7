"""The 7-day message-volume correction of the channel slot's off-policy unsubscribes."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.data.synth import generate, world_spec
from pushrl.data.worlds import world_config
from pushrl.ope.channel_volume import fit_volume_hazard, volume_ratio, window_sums
from pushrl.policies.channel_policy import FixedChannel, channel_rounds
from pushrl.rules.channels import DEFAULT_CHANNELS
from pushrl.rules.reward import RewardWeights

W = RewardWeights(open=0.0, click=1.0, revenue=0.01, send_cost=0.0, unsubscribe_penalty=1.0)


def test_window_sums_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    user = rng.integers(0, 7, 400)
    bucket = rng.integers(1000, 1600, 400)
    x = rng.random(400)
    got = window_sums(user, bucket, x)
    for i in range(400):
        m = (user == user[i]) & (bucket >= bucket[i] - 168) & (bucket < bucket[i])
        assert got[i] == pytest.approx(x[m].sum(), abs=1e-9)


def test_volume_slope_and_ratio_on_a_channel_world(tmp_path_factory: pytest.TempPathFactory
                                                   ) -> None:
    from pushrl.data.io import write_dataset
    from pushrl.data.validate import load_dataset

    d = tmp_path_factory.mktemp("vol")
    raw, _, _ = generate(world_config("default", users=3000, days=21, seed=31, channels=True))
    write_dataset(raw, d / "log")
    ds, _ = load_dataset(d / "log", quarantine=False)
    rounds = channel_rounds(ds, DEFAULT_CHANNELS, spec=world_spec(), weights=W)
    beta = fit_volume_hazard(rounds)
    # the world's truth: +0.16 unsubscribe logit per push of the previous 7 days
    assert 0.05 < beta < 0.35, beta
    push_only = FixedChannel(arm=1).action_dist(rounds.context)
    r = volume_ratio(rounds, push_only, beta)
    # push-only sends less than the logger (no push opt-in, quiet hours, caps): its
    # unsubscribes per message are lower than the logged history implies
    assert r.shape == (rounds.n_rounds,) and np.median(r) < 1.0
    logger_like = np.zeros_like(push_only)
    logger_like[np.arange(rounds.n_rounds), rounds.action] = 1.0  # the logged choice
    np.testing.assert_allclose(volume_ratio(rounds, logger_like, beta), 1.0)
    assert (volume_ratio(rounds, push_only, 0.0) == 1.0).all()
