"""The channel slot's unsubscribe price read off the log (issue 17,
:mod:`pushrl.ope.channel_price`): the unsubscribe model, the policy's expected unsubscribes
with its own 7-day volume, the selection rule."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.data.synth import generate, world_spec
from pushrl.data.worlds import world_config
from pushrl.ope.channel_price import (
    UnsubModel,
    expected_unsubscribes,
    fit_unsub_model,
    select_unsub_multiple,
)
from pushrl.ope.channel_volume import window_sums
from pushrl.policies.channel_policy import FixedChannel, channel_rounds
from pushrl.rules.channels import DEFAULT_CHANNELS
from pushrl.rules.reward import RewardWeights

W = RewardWeights(open=0.0, click=1.0, revenue=0.01, send_cost=0.0, unsubscribe_penalty=1.0)


@pytest.fixture(scope="module")
def rounds():  # type: ignore[no-untyped-def]
    ds, _, _ = generate(world_config("default", users=2000, days=14, seed=31, channels=True))
    return channel_rounds(ds, DEFAULT_CHANNELS, spec=world_spec(), weights=W)


def test_unsub_model_orders_the_channels_like_the_world(rounds) -> None:  # type: ignore[no-untyped-def]
    """The world's unsubscribe logit shifts are push 0, email -1.5, in-app -3 and the volume
    slope is positive: the fitted model has push's logit above email's, email's above
    in-app's, and a positive slope (seed 31, 2,000 users x 14 days)."""
    m = fit_unsub_model(rounds)
    assert rounds.unsubscribed.sum() >= 20
    push, email, in_app = m.logit[1:]
    assert push > email > in_app and m.beta > 0 and m.logit[0] == -np.inf


def test_expected_unsubscribes_is_the_model_at_the_policys_own_volume(rounds) -> None:  # type: ignore[no-untyped-def]
    """Hand formula on the rounds: sum over arms of dist x sigmoid(beta x V + logit), V = the
    policy's send probabilities at the user's rounds of the previous 168 h (1e-12)."""
    model = UnsubModel(0.2, np.array([-np.inf, -5.0, -6.0, -8.0]))
    n = rounds.n_rounds
    rng = np.random.default_rng(0)
    d = rng.dirichlet(np.ones(4), n)
    got = expected_unsubscribes(rounds, d, model)
    v = window_sums(rounds.user, rounds.bucket, 1.0 - d[:, 0])
    want = sum(d[:, a] / (1 + np.exp(-(0.2 * v + model.logit[a]))) for a in (1, 2, 3))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # a policy that never sends expects no unsubscribe
    none = np.zeros((n, 4))
    none[:, 0] = 1.0
    assert expected_unsubscribes(rounds, none, model).sum() == 0.0


def test_selection_stops_at_the_first_multiple_within_the_ratio(rounds) -> None:  # type: ignore[no-untyped-def]
    push_only = FixedChannel(arm=1, name="push-only")
    pol, rep = select_unsub_multiple(rounds, push_only, multiples=(8.0, 1.0), max_ratio=1.0)
    mults = [c["multiple"] for c in rep["candidates"]]
    assert mults == sorted(mults) and mults[0] == 1.0  # ascending
    acc = [c["accepted"] for c in rep["candidates"]]
    assert acc.count(True) <= 1 and (not any(acc[:-1]))  # stops at the first accepted one
    if rep["met"]:
        last = rep["candidates"][-1]
        assert last["ratio_vs_baseline"] <= 1.0 and rep["multiple"] == last["multiple"]
        assert last["expected_cost_per_round"] <= rep["baseline_expected_cost_per_round"]
    # the returned policy is the one of the chosen multiple: its expected unsubscribes
    d = pol.action_dist(rounds.context)
    model = fit_unsub_model(rounds)
    np.testing.assert_allclose(expected_unsubscribes(rounds, d, model).mean(),
                               rep["candidates"][-1]["expected_unsub_per_round"], rtol=1e-9)


@pytest.mark.parametrize(("kw", "msg"), [({"max_ratio": 0.0}, "max_ratio"),
                                         ({"max_ratio": 1.5}, "max_ratio"),
                                         ({"multiples": ()}, "multiples")])
def test_selection_refuses_bad_settings(rounds, kw: dict, msg: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=msg):
        select_unsub_multiple(rounds, FixedChannel(arm=1), **kw)
