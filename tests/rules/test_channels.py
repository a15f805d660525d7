"""Channels (issue 17): the one channel schema, per-channel guardrails (parity with the one
``Guardrails``), per-channel counters and send costs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pushrl.rules import reward as rules_reward
from pushrl.rules.channels import (
    DEFAULT_CHANNELS,
    Channel,
    ChannelCounts,
    ChannelSet,
    format_opt_in,
    opt_in_matrix,
)
from pushrl.rules.guardrails import (
    ALLOWED,
    DAILY_CAP,
    HELD_OUT,
    NOT_OPTED_IN,
    QUIET_HOURS,
    REASONS,
    UNSUBSCRIBED,
    WEEKLY_CAP,
    Guardrails,
)
from pushrl.rules.reward import RewardWeights


def _brute(g: Guardrails, hour: int, today: int, week: int, opted: bool, sub: bool,
           held: bool) -> int:
    """The guardrail rules written out for one decision, in the documented order."""
    if held:
        return HELD_OUT
    if not sub:
        return UNSUBSCRIBED
    if not opted:
        return NOT_OPTED_IN
    s, e = g.quiet_start, g.quiet_end
    quiet = s != e and ((s <= hour < e) if s < e else (hour >= s or hour < e))
    if quiet:
        return QUIET_HOURS
    if g.max_sends_per_day and today >= g.max_sends_per_day:
        return DAILY_CAP
    if g.max_sends_per_week and week >= g.max_sends_per_week:
        return WEEKLY_CAP
    return ALLOWED


def test_channel_verdict_is_each_channels_guardrails_and_matches_brute_force() -> None:
    rng = np.random.default_rng(7)
    n = 4000
    cs = DEFAULT_CHANNELS
    hour = rng.integers(0, 24, n)
    today = rng.integers(0, 4, (n, len(cs)))
    week = rng.integers(0, 12, (n, len(cs)))
    opted = rng.random((n, len(cs))) < 0.7
    sub = rng.random(n) < 0.9
    held = rng.random(n) < 0.05
    code = cs.verdict(hour, today, week, opted, sub, held)
    assert code.shape == (n, len(cs)) and code.dtype == np.int8
    for j, ch in enumerate(cs.channels):
        # parity: the column is the one Guardrails definition, nothing re-implemented
        one = ch.guardrails.verdict(hour, today[:, j], week[:, j], subscribed=sub,
                                    held_out=held, opted_in=opted[:, j])
        np.testing.assert_array_equal(code[:, j], one)
        np.testing.assert_array_equal(
            ch.guardrails.allowed(hour, today[:, j], week[:, j], sub, held, opted[:, j]),
            one == ALLOWED)
        ref = [_brute(ch.guardrails, int(hour[i]), int(today[i, j]), int(week[i, j]),
                      bool(opted[i, j]), bool(sub[i]), bool(held[i])) for i in range(n)]
        np.testing.assert_array_equal(code[:, j], ref)
    np.testing.assert_array_equal(cs.allowed(hour, today, week, opted, sub, held),
                                  code == ALLOWED)
    # every verdict occurs, so the test covers each rule
    assert set(np.unique(code).tolist()) == set(range(len(REASONS)))


def test_not_opted_in_never_allowed_whatever_the_caps() -> None:
    g = Guardrails(0, 0, 0, 0)  # no quiet hours, no caps: only the opt-in blocks
    hour = np.arange(24)
    z = np.zeros(24, np.int64)
    assert not g.allowed(hour, z, z, opted_in=np.zeros(24, bool)).any()
    assert g.allowed(hour, z, z, opted_in=np.ones(24, bool)).all()
    assert REASONS[NOT_OPTED_IN] == "not_opted_in"


def test_channel_set_round_trips_and_parses_a_scenario_table() -> None:
    doc = {"push": {"cost": 0.01, "quiet_hours": [22, 8], "max_sends_per_day": 2,
                    "max_sends_per_week": 10},
           "in_app": {"cost": 0.001, "quiet_hours": [0, 0], "max_sends_per_day": 0,
                      "max_sends_per_week": 0, "session_only": True}}
    cs = ChannelSet.from_dict(doc)
    assert cs.names == ("push", "in_app")
    assert cs.costs() == {"push": 0.01, "in_app": 0.001}
    assert cs.channels[1].session_only and cs.channels[1].guardrails.quiet_start == 0
    assert ChannelSet.from_dict(cs.to_dict()) == cs
    assert ChannelSet.from_dict(DEFAULT_CHANNELS.to_dict()) == DEFAULT_CHANNELS
    assert "in session only" in cs.describe()


@pytest.mark.parametrize(("doc", "match"), [
    ({}, "one table per channel"),
    ({"Push!": {}}, "lower-case identifier"),
    ({"push": {"cost": -1}}, "cost"),
    ({"push": {"cost": "cheap"}}, "cost"),
    ({"push": {"colour": 1}}, "unknown keys"),
    ({"push": {"quiet_hours": [25, 8]}}, r"\[channels.push\].*quiet_start"),
    ({"push": {"quiet_hours": 22}}, "quiet_hours must be"),
    ({"push": {"max_sends_per_day": -1}}, "max_sends_per_day"),
    ({"push": {"session_only": "yes"}}, "session_only"),
    ({"push": 3}, "must be a table"),
])
def test_bad_channel_tables_are_refused_with_the_fix(doc: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ChannelSet.from_dict(doc)


def test_duplicate_channel_names_are_refused() -> None:
    with pytest.raises(ValueError, match="distinct"):
        ChannelSet((Channel("push"), Channel("push")))


def test_opt_in_matrix_reads_the_users_column() -> None:
    names = ("push", "email", "in_app")
    m = opt_in_matrix(["push,email", None, "", "in_app, sms", float("nan")], names)
    np.testing.assert_array_equal(m, [[1, 1, 0], [1, 1, 1], [0, 0, 0], [0, 0, 1], [1, 1, 1]])
    assert format_opt_in(m, names)[0] == "push,email"
    np.testing.assert_array_equal(opt_in_matrix(format_opt_in(m, names), names), m)


def test_channel_counts_match_brute_force_windows() -> None:
    rng = np.random.default_rng(3)
    n, c = 30, 3
    counts = ChannelCounts(n, c)
    log: list[tuple[int, int, int, int]] = []  # (user, channel, bucket, day)
    b0 = 500_000
    for step in range(400):
        b = b0 + step
        # a few buckets are skipped (the simulator's slots every k hours)
        if rng.random() < 0.2:
            continue
        users = rng.integers(0, n, 6)
        day = (b + users * 5) // 24  # per-user local day
        q = rng.integers(0, n, 5)
        qd = (b + q * 5) // 24
        today, week = counts.today(q, qd), counts.week(q, b)
        for i, u in enumerate(q.tolist()):
            for j in range(c):
                assert week[i, j] == sum(1 for (uu, cc, bb, _) in log
                                         if uu == u and cc == j and b - 168 <= bb <= b)
                assert today[i, j] == sum(1 for (uu, cc, _, dd) in log
                                          if uu == u and cc == j and dd == qd[i])
        ch = rng.integers(0, c, users.size)
        counts.record(users, b, day, ch)
        log += [(int(u), int(k), b, int(d)) for u, k, d in zip(users, ch, day, strict=True)]


def test_channel_send_cost_feeds_the_one_reward() -> None:
    w = RewardWeights(open=1, click=2, revenue=0.02, send_cost=0.05, unsubscribe_penalty=10)
    p = pd.DataFrame({
        "sent": [True, True, True, False, True],
        "channel": pd.Categorical(["push", "email", None, None, "in_app"]),
        "opened": pd.array([True, False, True, pd.NA, False], dtype="boolean"),
        "clicked": pd.array([True, False, False, pd.NA, False], dtype="boolean"),
        "revenue": [10.0, 0.0, 0.0, np.nan, 0.0],
        "unsubscribed": pd.array([False, True, False, pd.NA, False], dtype="boolean"),
    })
    costs = DEFAULT_CHANNELS.costs()
    r = rules_reward.from_logs(w, p, channel_costs=costs)
    expect = [1 + 2 + 0.2 - costs["push"], -costs["email"] - 10, 1 - w.send_cost, 0.0,
              -costs["in_app"]]
    np.testing.assert_allclose(r, expect)
    # without channel costs: the one send cost, as before
    np.testing.assert_allclose(rules_reward.from_logs(w, p),
                               [3.2 - 0.05, -10.05, 0.95, 0.0, -0.05])
    np.testing.assert_allclose(
        rules_reward.expected(w, 0.5, 0.01, send_cost=np.array([0.01, 0.002])),
        [0.5 - 0.01 - 0.1, 0.5 - 0.002 - 0.1])


def test_scenario_reads_and_writes_the_one_channel_schema(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pushrl.envs.scenario import SCENARIO_DIR, load_scenario, write_scenario
    from pushrl.errors import ScenarioError

    text = (SCENARIO_DIR / "default.toml").read_text()
    extra = ("\n[channels.push]\ncost = 0.01\nquiet_hours = [22, 8]\nmax_sends_per_day = 2\n"
             "[channels.in_app]\ncost = 0.001\nquiet_hours = [0, 0]\nsession_only = true\n")
    f = tmp_path / "ch.toml"
    f.write_text(text.replace('data = "', f'data = "{SCENARIO_DIR}/').replace(
        'sim = "', f'sim = "{SCENARIO_DIR}/') + extra)
    sc = load_scenario(f)
    assert sc.channels is not None and sc.channels.names == ("push", "in_app")
    assert sc.channels.channels[1].session_only
    assert load_scenario(SCENARIO_DIR / "default.toml").channels is None
    back = write_scenario(tmp_path / "out.toml", sc)
    assert back.channels == sc.channels
    f.write_text(f.read_text() + "[channels.email]\ncost = -1\n")
    with pytest.raises(ScenarioError, match=r"channels.*cost"):
        load_scenario(f)


def test_channel_unsub_price_is_the_objective_penalty_times_the_channel_multiple() -> None:
    """The one training price of an unsubscribe (issue 17): the objective's penalty (1 when
    it is 0) times the channel's multiple; unknown / missing channels take ``default``."""
    w = RewardWeights(open=0, click=1, revenue=0.01, send_cost=0, unsubscribe_penalty=2.5)
    ch = np.array(["push", "email", None, "in_app", "sms"], dtype=object)
    got = rules_reward.channel_unsub_price(w, ch, {"push": 4.0, "email": 1.5}, default=2.0)
    np.testing.assert_allclose(got, [10.0, 3.75, 5.0, 5.0, 5.0], rtol=0, atol=1e-12)
    free = RewardWeights(unsubscribe_penalty=0.0)
    np.testing.assert_allclose(rules_reward.channel_unsub_price(free, ch[:2], {"push": 3.0}),
                               [3.0, 1.0], rtol=0, atol=1e-12)
    for bad in ({"push": 0.5}, {"push": float("nan")}, {"email": float("inf")}):
        with pytest.raises(ValueError, match="must be a finite number >= 1"):
            rules_reward.channel_unsub_price(w, ch, bad)
    with pytest.raises(ValueError, match="'default'"):
        rules_reward.channel_unsub_price(w, ch, {}, default=0.0)
