"""Delay policies: the context (pushrl/TriggerDelay-v1), heuristic baselines, delay rounds
from a log, VW training + artifact round trip, and `pushrl train triggers`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.data.features import FeatureSpec, FeatureState
from pushrl.data.split import UserSplit
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import world_config
from pushrl.errors import DataError
from pushrl.policies.baselines import make_baseline
from pushrl.policies.delay_data import delay_rounds
from pushrl.policies.registry import load_policy
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.triggers import TriggerConfig
from pushrl.sim.trigger_context import (
    CANDIDATE_NAMES,
    SHARED_NAMES,
    common_arms,
    delay_context,
    item_columns,
)
from pushrl.sim.trigger_world import WORLD_GUARDRAILS, WORLD_TRIGGERS, synthesize_triggers
from pushrl.train.delay import train_delay
from pushrl.units import HOUR
from tests.cli_runner import run_pushrl

T0 = 1_772_409_600  # Monday 2026-03-02 00:00 UTC
ARMS = common_arms(TriggerConfig.default())


def _state(profile_hour: int = 19) -> FeatureState:
    spec = FeatureSpec(("a", "b"), {}, tuple([1 / 168] * 168), (0.5, 0.5))
    st = FeatureState(spec, ["UTC", "UTC"], T0 // HOUR)
    for day in range(7):  # user 0 is active at 19:00 UTC every day
        st.record_activity(np.array([0, 0, 0]), T0 // HOUR + day * 24 + profile_hour,
                           np.array([0, 0, 1]))
    st.advance(np.array([0, 1]), T0 // HOUR + 8 * 24)
    return st


def _ctx(st: FeatureState, hour: int = 10) -> object:
    ts = T0 + 8 * 86400 + hour * HOUR + 120
    return delay_context(st, np.array([0, 1]), np.array([ts, ts]), np.array(["cart", "browse"]),
                         np.array([0, -1]), np.array([0.2, 0.0]), ARMS, Guardrails())


def test_context_columns_and_arms() -> None:
    ctx = _ctx(_state())
    assert ctx.shared.shape == (2, len(SHARED_NAMES))
    assert ctx.candidate_features.shape == (2, len(ARMS), len(CANDIDATE_NAMES))
    assert ARMS == (0, 1, 2, 4, 8, 24, None)
    cf = ctx.candidate_features
    drop = CANDIDATE_NAMES.index("drop")
    assert cf[:, -1, drop].tolist() == [1, 1] and (cf[:, :-1, drop] == 0).all()
    days = cf[0, :-1, CANDIDATE_NAMES.index("days_to_send")] * 24
    # event at 10:02 UTC: sends at 11, 12, 13, 15, 19 and 11 (next day) hour starts
    np.testing.assert_allclose(days, np.array([1, 2, 3, 5, 9, 25]) - 2 / 60)
    kind = SHARED_NAMES.index("kind=cart")
    assert ctx.shared[:, kind].tolist() == [1, 0]


def test_item_columns() -> None:
    spec = FeatureSpec(("a", "b"), {"x": 0, "y": 1}, tuple([1 / 168] * 168), (0.5, 0.5))
    items = pd.DataFrame({"item_id": ["x", "y", "z"], "category": ["a", "b", "q"],
                          "price": [10.0, 20.0, 40.0]})
    cat, lpr = item_columns(items, spec)
    assert cat.tolist() == [0, 1, -1]
    np.testing.assert_allclose(lpr, np.log([0.5, 1.0, 2.0]))
    assert item_columns(items.drop(columns="price"), spec)[1].tolist() == [0, 0, 0]


def test_delay_policies_pick_their_arms() -> None:
    ctx = _ctx(_state(profile_hour=19))
    rng = np.random.default_rng(0)
    for name, arm in (("delay-fixed-0h", 0), ("delay-fixed-1h", 1), ("delay-fixed-24h", 24)):
        d = make_baseline(name).decide_batch(ctx, rng)
        assert [ARMS[a] for a in d.action] == [arm, arm] and (d.pscore == 1).all()
    # user 0 is active at 19:00 UTC: the 8 h arm sends at 19:00 (event 10:02 + 8 h -> 19:00)
    d = make_baseline("delay-next-active-hour").decide_batch(ctx, rng)
    assert ARMS[d.action[0]] == 8


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tiny_triggers")
    synthesize_triggers(d, world_config("triggers", users=120, days=8, seed=2))
    return d


def test_delay_rounds_mirror_the_triggers_table(tiny: Path) -> None:
    ds, _ = load_dataset(tiny, quarantine=False)
    r = delay_rounds(ds, TriggerConfig.parse(WORLD_TRIGGERS), WORLD_GUARDRAILS,
                     send_cost=0.1, unsub_cost=1.0)
    t = ds.triggers
    assert r.n_rounds == len(t)
    assert r.trigger_id.tolist() == t["trigger_id"].astype(str).tolist()
    np.testing.assert_allclose(r.pscore, t["pscore"].to_numpy())
    delay = [None if pd.isna(x) else int(x) for x in t["delay_h"]]
    assert [r.arms[a] for a in r.action] == delay
    assert r.sent.tolist() == (t["status"] == "sent").tolist()
    np.testing.assert_allclose(r.reward, r.converted - 0.1 * r.sent - 1.0 * r.unsubscribed)
    assert 0.05 < r.converted.mean() < 0.95
    # the last 7 days' triggers have a censored conversion window
    ev = t["event_ts"]
    last = max(ds.activity["ts"].max(), ds.pushes["ts"].max())
    np.testing.assert_array_equal(r.complete, (ev + pd.Timedelta(days=7) <= last).to_numpy())
    assert 0 < r.complete.sum() < r.n_rounds


def test_delay_rounds_refuse_logs_without_triggers(tiny_synth: Path) -> None:
    ds, _ = load_dataset(tiny_synth, quarantine=False)
    with pytest.raises(DataError, match="no `triggers` rows"):
        delay_rounds(ds, TriggerConfig.default(), Guardrails())


def test_train_save_load_round_trip(tiny: Path, tmp_path: Path) -> None:
    res = train_delay(tiny, out=tmp_path / "policies" / "delay", passes=1,
                      triggers=TriggerConfig.parse(WORLD_TRIGGERS), guardrails=WORLD_GUARDRAILS,
                      split=UserSplit(0.3, 0, "train"))
    assert res.artifact is not None and res.metrics["train/rounds"] > 100
    card = json.loads((res.artifact / "card.json").read_text())
    assert card["trigger_policy"]["arms"] == list(ARMS)
    assert card["data"]["split"]["part"] == "train"
    loaded = load_policy(res.artifact)
    ds, _ = load_dataset(tiny, quarantine=False, split=UserSplit(0.3, 0, "heldout"))
    r = delay_rounds(ds, TriggerConfig.parse(WORLD_TRIGGERS), WORLD_GUARDRAILS)
    a = res.policy.action_dist(r.context)
    np.testing.assert_allclose(loaded.action_dist(r.context), a)
    np.testing.assert_allclose(a.sum(1), 1.0)


def test_cli_train_triggers(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "policies" / "delay"
    res = run_pushrl("train", "triggers", "--data", str(tiny), "--out", str(out),
                     "--passes", "1", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["train/rounds"] > 100 and Path(doc["artifact"]).is_dir()
    # --send-cost match (default): the card records the search and its bound
    m = json.loads((Path(doc["artifact"]) / "card.json").read_text())["send_cost_match"]
    assert m["confidence"] == 0.95 and m["target_ratio"] == 0.985 and "due_upper" in m["trials"][0]
    assert m["send_cost"] == min(t["send_cost"] for t in m["trials"] if t["fits"])
    bad = run_pushrl("train", "triggers", "--data", str(tmp_path / "nope"), "--out", str(out))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "does not exist" in bad.stderr


def test_delay_vw_args_are_the_item_learners() -> None:
    from pushrl.policies.vw import VWConfig
    from pushrl.train.delay import DelayVW

    cfg = DelayVW(cb_type="dr", epsilon=0.1, learning_rate=None, seed=3)
    assert cfg.args() == VWConfig(exploration="epsilon", cb_type="dr", seed=3,
                                  interactions=("CI", "CA", "IA"), epsilon=0.1).args()
    assert "--epsilon" in cfg.args() and "-l" not in cfg.args()
    with pytest.raises(ValueError, match="cb-type"):
        DelayVW(cb_type="dm")


def test_match_send_cost_keeps_the_sends_of_the_baseline(tiny: Path) -> None:
    from pushrl.policies.baselines import make_baseline
    from pushrl.sim.trigger_fit import TriggerSim
    from pushrl.train.delay import match_send_cost

    ds, _ = load_dataset(tiny, quarantine=False)
    r = delay_rounds(ds, TriggerConfig.parse(WORLD_TRIGGERS), WORLD_GUARDRAILS)
    # a tight budget forces the bisection: cost 0 sends too much on this log
    m = match_send_cost(r, target_ratio=0.3, steps=3, passes=1)
    sim = TriggerSim.fit(r.kind, r.action, r.pscore, r.converted, r.sent, r.arms)
    base = sim.evaluate(make_baseline("delay-fixed-1h").action_dist(r.context), r.kind)
    assert m.baseline_sends == pytest.approx(base["sends"])
    tried = {t["send_cost"]: t["sends_ratio"] for t in m.trials}
    assert tried[0.0] > 0.3 and m.send_cost > 0 and tried[m.send_cost] <= 0.3
    # the criterion: the largest of the sent and due bounds and the simulator's ratio
    assert all(t["sends_ratio"] == max(t["sends_upper"], t["due_upper"], t["sends_ratio_sim"])
               for t in m.trials)
    # every cheaper cost tried sent too much: the smallest fitting cost was kept
    assert all(ratio > 0.3 for c, ratio in tried.items() if c < m.send_cost)
    # the returned policy is the one trained at the chosen cost
    mine = sim.evaluate(m.policy.action_dist(r.context), r.kind)
    chosen = next(t for t in m.trials if t["send_cost"] == m.send_cost)
    assert mine["sends"] / base["sends"] == pytest.approx(chosen["sends_ratio_sim"])
    assert len(m.trials) >= 4 and m.to_dict()["baseline"] == "delay-fixed-1h"
    with pytest.raises(ValueError, match="target_ratio"):
        match_send_cost(r, target_ratio=0.0)
