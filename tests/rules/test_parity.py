"""Parity of the rules across layers, each called through its own entry point.

* Guardrails: the same users (odd offsets, half-hour DST, DST changes inside the stream) and
  the same send wishes go through the simulator's path (:meth:`PushSim.observe` /
  :meth:`PushSim.step`) and the server's path (:func:`pushrl.serve.guardrails.check` and
  :class:`~pushrl.serve.guardrails.SendHistory`, as the server's engine calls them): every
  verdict, reason, "sends today" and weekly count is identical, also after simulated users
  unsubscribe (the server gets them as it gets feedback `unsubscribed=true`). Caps of 0 and
  the weekly window's edge are drawn on purpose (the two places where the copies used to
  disagree).
* Reward: an outcome's reward is the same number in the simulator (``Outcome.reward``), OPE
  (``TimingSettings.slot_reward`` on the pushlog rows) and compare (``run_shard``'s
  per-user objective). A logged push's item-round reward (the same weights without the send
  cost and the unsubscribe) is the same number in the bandit rounds
  (:func:`~pushrl.policies.item_data.build_rounds`), item OPE (the logging policy's on-policy
  value), timing OPE (the slot reward minus its send and unsubscribe terms) and the item
  simulator (:class:`~pushrl.sim.bandit.ItemRounds` outcomes written as a log).
"""

from __future__ import annotations

import dataclasses

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pushrl.compare.runner import run_shard
from pushrl.data.io import Dataset
from pushrl.data.validate import load_dataset
from pushrl.envs.push_item import _rounds
from pushrl.data.features import F, FeatureState
from pushrl.envs.rollout import draw_users
from pushrl.envs.scenario import load_scenario
from pushrl.envs.world import make_world
from pushrl.ope.evaluate import evaluate_policy
from pushrl.ope.evaluate_timing import TimingSettings
from pushrl.policies.item_data import build_rounds
from pushrl.rules.guardrails import REASONS, Guardrails
from pushrl.rules import reward
from pushrl.rules.reward import RewardWeights
from pushrl.rules.holdout import Holdout
from pushrl.serve.guardrails import SendHistory, Subscriptions, check
from pushrl.serve.holdout import HeldOut
from pushrl.sim.engine import Outcome, PushSim
from pushrl.units import HOUR

ZONES = ["Asia/Kathmandu", "Australia/Lord_Howe", "America/St_Johns", "Pacific/Chatham",
         "Australia/Adelaide", "Europe/Berlin", "America/New_York"]
# starts a day or two before DST changes of 2026 (Chatham/Lord Howe/Adelaide end, Berlin
# and US start, Lord Howe/Adelaide start, US/St Johns end)
STARTS = ["2026-04-03T00:00:00Z", "2026-03-28T00:00:00Z", "2026-03-07T00:00:00Z",
          "2026-10-02T00:00:00Z", "2026-09-25T00:00:00Z", "2026-10-31T00:00:00Z"]


@st.composite
def streams(draw: st.DrawFn) -> dict:
    zones = draw(st.lists(st.sampled_from(ZONES), min_size=1, max_size=3))
    g = Guardrails(draw(st.integers(0, 23)), draw(st.integers(0, 23)),
                   draw(st.integers(0, 3)), draw(st.integers(0, 4)))  # 0 = no cap
    return {"zones": zones, "g": g, "start": draw(st.sampled_from(STARTS)),
            "days": draw(st.integers(3, 9)), "p": draw(st.sampled_from([1.0, 0.5, 0.15])),
            "seed": draw(st.integers(0, 2**16))}


def _sim(zones: list[str], g: Guardrails, start: str, days: int) -> PushSim:
    sc = load_scenario("default", start=start, horizon_days=days, warm_start="none",
                       quiet_hours=[g.quiet_start, g.quiet_end],
                       max_sends_per_day=g.max_sends_per_day,
                       max_sends_per_week=g.max_sends_per_week)
    world = make_world(sc)
    sim = PushSim(world.model, world.response, sc.sim_config(), len(zones), world.sampler)
    pop = world.model.population
    assert pop is not None
    tz = pop.timezone.astype(object).copy()
    tz[: len(zones)] = zones
    sim.population = dataclasses.replace(pop, timezone=tz)  # the model stays untouched
    _, keys = draw_users(1, len(zones), len(pop))
    sim.reset(np.arange(len(zones)), np.arange(len(zones)), keys)
    return sim


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
# the divergences this test exists for: a cap of 0 ("no cap" in the sim, "no sends" in the old
# server) and the weekly window's edge (a send exactly 168 buckets back)
@example({"zones": ["Asia/Kathmandu"], "g": Guardrails(0, 0, 0, 1),
          "start": STARTS[0], "days": 9, "p": 1.0, "seed": 0})
@example({"zones": ["Australia/Lord_Howe"], "g": Guardrails(22, 8, 0, 0),
          "start": STARTS[3], "days": 3, "p": 1.0, "seed": 1})
def test_sim_and_server_guardrails_agree(sc: dict) -> None:
    _guardrail_parity(sc)


def test_unsubscribed_users_are_blocked_alike_in_sim_and_server() -> None:
    """A stream with no quiet hours or caps, in which simulated users unsubscribe: from then
    on both paths block them with the same verdict (``unsubscribed``), the server's through
    :class:`~pushrl.serve.guardrails.Subscriptions`, as its feedback path sets it."""
    n_unsub = _guardrail_parity({"zones": ZONES[:3], "g": Guardrails(0, 0, 0, 0),
                                 "start": STARTS[0], "days": 9, "p": 1.0, "seed": 3})
    assert n_unsub >= 1


def test_held_out_users_are_blocked_alike_in_sim_and_server() -> None:
    """A live holdout (same ids, same hash) blocks the same users with the same verdict
    (``held_out``) in the simulator (:meth:`PushSim.set_held_out`) and the server
    (:class:`~pushrl.serve.holdout.HeldOut`); nobody held out is ever delivered a push."""
    ids = [f"u{i}" for i in range(len(ZONES))]
    hold = Holdout(0.5, "parity")
    held = hold.held_out(ids)
    assert 0 < held.sum() < len(ids)  # both arms present (a fixed salt: not a flaky draw)
    _guardrail_parity({"zones": ZONES, "g": Guardrails(0, 0, 0, 0), "start": STARTS[0],
                       "days": 3, "p": 1.0, "seed": 5, "holdout": hold})


def _guardrail_parity(sc: dict) -> int:
    """Run one stream through both paths (module docstring); returns the unsubscribes."""
    zones, g = sc["zones"], sc["g"]
    sim = _sim(zones, g, sc["start"], sc["days"])
    n = len(zones)
    users = np.arange(n)
    fs = FeatureState(sim.model.spec, zones, int(sim.cfg.start_bucket))  # the server's zones
    hist = SendHistory()
    subs = Subscriptions()
    rng = np.random.default_rng(sc["seed"])
    n_unsub = 0
    ids = [f"u{i}" for i in range(n)]
    server_held = HeldOut(sc.get("holdout"))
    server_held.reset({u: i for i, u in enumerate(ids)})
    sim_held = None
    if sc.get("holdout") is not None:
        sim.set_held_out(users, sc["holdout"].held_out(ids))
        sim_held = sim.held_out
    for _ in range(sim.cfg.horizon):
        obs = sim.observe()
        ts = obs.bucket * HOUR
        allowed, reasons, today, days = check(g, hist, users, ts, fs, subs,
                                              server_held.mask(users))
        _, week = hist.counts(users, obs.bucket, days)
        np.testing.assert_array_equal(obs.allowed, allowed)
        np.testing.assert_array_equal(obs.sends_today, today)
        np.testing.assert_array_equal(obs.raw[:, F["sends_7d"]], week)
        hour = obs.raw[:, F["local_hour"]].astype(np.int64)
        sim_reasons = [REASONS[c] for c in g.verdict(hour, obs.sends_today,
                                                     obs.raw[:, F["sends_7d"]],
                                                     sim.alive, sim_held).tolist()]
        assert sim_reasons == reasons
        want = rng.random(n) < sc["p"]
        out = sim.step(want)
        np.testing.assert_array_equal(out.delivered, want & allowed)
        if sim_held is not None:
            assert not out.delivered[sim_held].any()
            assert all(reasons[i] == "held_out" for i in np.flatnonzero(sim_held))
        for i in np.flatnonzero(out.delivered).tolist():
            hist.record(i, zones[i], int(ts[i]), int(days[i]))
        subs.set(np.flatnonzero(out.unsubscribed), False)  # the server's feedback path
        n_unsub += int(out.unsubscribed.sum())
    return n_unsub


# ---------------------------------------------------------------------- reward
@st.composite
def outcomes(draw: st.DrawFn) -> dict:
    n = draw(st.integers(1, 30))
    b = st.lists(st.booleans(), min_size=n, max_size=n)
    delivered, opened, clicked, conv, unsub = (np.array(draw(b)) for _ in range(5))
    opened &= delivered
    clicked &= opened
    conv &= clicked
    unsub &= delivered
    rev = np.where(conv, np.array(draw(st.lists(st.floats(0, 500), min_size=n, max_size=n))),
                   0.0)
    w = RewardWeights(*(draw(st.floats(-5, 5)) for _ in range(3)),
                      *(draw(st.floats(0, 50)) for _ in range(2)))
    return {"d": delivered, "o": opened, "c": clicked, "v": conv, "r": rev, "u": unsub, "w": w}


@settings(max_examples=50, deadline=None)
@given(outcomes())
def test_reward_of_an_outcome_is_the_same_in_sim_and_ope(x: dict) -> None:
    n = x["d"].size
    out = Outcome(x["d"], np.zeros(n, bool), np.zeros(n, np.int64), np.zeros(n), np.zeros(n),
                  x["o"], x["c"], x["v"], x["r"], x["u"])
    # the log of the same slots: outcomes are unknown (NA) where nothing was sent
    na = lambda v: pd.array(np.where(x["d"], v, None), dtype="boolean")  # noqa: E731
    pushes = pd.DataFrame({"sent": x["d"], "opened": na(x["o"]), "clicked": na(x["c"]),
                           "converted": na(x["v"]),
                           "revenue": pd.array(np.where(x["d"], x["r"], np.nan), "Float64"),
                           "unsubscribed": na(x["u"])})
    log = type("Log", (), {"pushes": pushes})()
    np.testing.assert_array_equal(out.reward(x["w"]), TimingSettings(reward=x["w"]).slot_reward(
        log))  # type: ignore[arg-type]


def test_compare_objective_is_the_ope_reward_of_its_outcomes() -> None:
    sc = load_scenario("default")
    n = 60
    rows, keys = draw_users(5, n, len(make_world(sc).model.population))  # type: ignore[arg-type]
    out = run_shard("default", ["random-volume"], ["random-volume"], rows, keys, 0, 5, 3)
    f = out.per_user
    # reward is linear in the outcomes: one log row per user holding the user's totals
    totals = pd.DataFrame({"sent": f["sends"], "opened": f["opens"], "clicked": f["clicks"],
                           "revenue": f["revenue"], "unsubscribed": f["unsubscribed"]})
    log = type("Log", (), {"pushes": totals})()
    ope = TimingSettings(reward=sc.reward).slot_reward(log)  # type: ignore[arg-type]
    assert (f["sends"] > 0).any() and (f["opens"] > 0).any()
    np.testing.assert_allclose(f["objective"].to_numpy(), ope, rtol=1e-9, atol=1e-9)


# scenario weights, a converting reward and negative weights (a penalty for opens)
WEIGHTS = [RewardWeights(), RewardWeights(0.5, 3.0, 0.01, 0.2, 4.0, 1.5),
           RewardWeights(-0.25, 1.0, 0.0, 0.0, 0.0, 0.0)]


@pytest.fixture(scope="module")
def synth(tiny_synth: Path) -> Dataset:
    return load_dataset(tiny_synth, quarantine=False)[0]


@pytest.mark.parametrize("w", WEIGHTS)
def test_item_reward_of_a_logged_push_is_the_same_in_rounds_and_both_opes(
        synth: Dataset, w: RewardWeights) -> None:
    p = synth.pushes
    sent = p["sent"].to_numpy(bool)
    f = {c: p[c].astype("Float64").to_numpy(np.float64, na_value=0.0)[sent]
         for c in ("opened", "clicked", "converted", "revenue", "unsubscribed")}
    by_hand = (w.open * f["opened"] + w.click * f["clicked"] + w.convert * f["converted"]
               + w.revenue * f["revenue"])
    assert np.ptp(by_hand) > 0  # the log has outcomes that the weights tell apart
    rounds = build_rounds(synth, reward=w)
    np.testing.assert_array_equal(rounds.row, np.flatnonzero(sent))
    np.testing.assert_allclose(rounds.reward, by_hand, rtol=0, atol=1e-12)
    # timing OPE's slot reward of the same rows = the item-round reward - send - unsubscribe
    slot = TimingSettings(reward=w).slot_reward(synth)[sent]
    np.testing.assert_allclose(slot, rounds.reward - w.send_cost
                               - w.unsubscribe_penalty * f["unsubscribed"], rtol=0, atol=1e-12)
    # item OPE values the logging policy on-policy: the mean of the same rewards
    res = evaluate_policy(synth, "uniform-random", estimators=["ipw"], n_bootstrap=20,
                          reward=w)
    assert res.reward == w.item_formula()
    np.testing.assert_allclose(res.baseline_estimates["on-policy"].value,
                               by_hand.mean(), rtol=1e-12)


@pytest.mark.parametrize("w", WEIGHTS)
def test_item_simulator_reward_is_the_log_reward_of_its_outcomes(w: RewardWeights) -> None:
    sc = dataclasses.replace(load_scenario("default"), reward=w)
    n = 400
    r = _rounds(sc, n)
    r.new_round(np.arange(1, n + 1, dtype=np.uint64) * 7919, np.zeros(n, np.int64))
    out = r.outcome(np.random.default_rng(0).integers(0, r.k, n))
    log = pd.DataFrame({"sent": np.ones(n, bool), "opened": out["opened"],
                        "clicked": out["clicked"], "converted": out["converted"],
                        "revenue": out["revenue"], "unsubscribed": np.zeros(n, bool)})
    assert out["clicked"].any() and out["opened"].any()
    np.testing.assert_allclose(out["reward"], reward.from_logs(w.item_round(), log),
                               rtol=0, atol=1e-12)
