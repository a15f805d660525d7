"""Per-trigger-kind holdouts in `pushrl compare --triggers` (#18 leftover,
:mod:`pushrl.compare.trigger_holdout`): the same users are held out as by the server for the
same salt and share (live server -> export -> compare), held-out triggers are never sent under
any policy, the lift a holdout would measure covers the true incremental effect, and the
rounds that train and evaluate delay policies leave out the server's held-out triggers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.compare.trigger_holdout import held_out_rounds
from pushrl.compare.triggers import compare_triggers
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import world_config
from pushrl.policies.delay_data import delay_rounds
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.holdout import parse_trigger_holdouts
from pushrl.rules.triggers import TriggerConfig, TriggerKind
from pushrl.sim.trigger_world import WORLD_TRIGGERS, synthesize_triggers
from tests.cli_runner import run_pushrl
from tests.serve.test_trigger_holdout import KINDS, _run

N = 120


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The export of a server (the real app) that held out 30 % of the users of cart and of
    browse (salt ``t``) while each of 120 users made one trigger of each kind."""
    from fastapi.testclient import TestClient

    from pushrl.policies.vw import VWItemPolicy
    from pushrl.serve.app import create_app
    from pushrl.sim.trigger_context import common_arms
    from pushrl.train.delay import DELAY_VW, delay_layout
    from tests.serve.conftest import doubles, make_cfg
    from tests.serve.test_trigger_holdout import OPEN

    tmp = tmp_path_factory.mktemp("cmphold")
    # an untrained VW delay policy explores every arm (the fitted source needs some drops)
    arms = common_arms(TriggerConfig.default())
    pol = VWItemPolicy(delay_layout(arms), DELAY_VW.args(), name="vw")
    art = pol.save(tmp / "vw", {"trigger_policy": {"arms": list(arms)}})
    cfg = make_cfg(tmp, triggers=TriggerConfig.default(), guardrails=OPEN,
                   trigger_holdouts=KINDS, trigger_delay_policy=str(art))
    c = TestClient(create_app(cfg, overrides=doubles()))
    c.__enter__()
    try:
        _run(c, N)
    finally:
        c.__exit__(None, None, None)
    out = tmp / "export"
    r = run_pushrl("logs", "export", "--state", tmp / "state", "--out", out)
    assert r.returncode == 0, r.stderr
    return out


def test_the_compare_holds_out_the_same_users_as_the_server(exported: Path) -> None:
    ds, _ = load_dataset(exported)
    t = ds.triggers
    assert t["holdout"].notna().all() and t["holdout"].any()
    rounds = delay_rounds(ds, TriggerConfig.default(), Guardrails(), keep_held_out=True)
    assert rounds.held_out is not None
    ours = held_out_rounds(rounds.user_id, rounds.kind, KINDS)
    server = t.set_index("trigger_id").loc[rounds.trigger_id, "holdout"].to_numpy(bool)
    assert np.array_equal(ours, server) and np.array_equal(rounds.held_out, server)
    res = compare_triggers(["delay-fixed-1h", "delay-fixed-0h"], exported, source="fitted",
                           triggers=TriggerConfig.default(), trigger_holdouts=KINDS)
    assert res.meta["held_out_triggers"] == int(server.sum())
    pu = res.per_user.set_index(["policy", "user_id"])
    for kind in ("cart", "browse"):
        held_users = set(t.loc[(t["kind"] == kind) & t["holdout"].astype(bool), "user_id"])
        for pol in ("delay-fixed-1h", "delay-fixed-0h"):
            sends = pu.loc[pol][f"trigger_sends__{kind}"]
            assert (sends[sends.index.isin(held_users)] == 0).all()
            assert (sends[~sends.index.isin(held_users)] > 0).all()
    lifts = {(h["policy"], h["kind"]): h for h in res.meta["holdout_lift"]}
    assert lifts[("delay-fixed-1h", "cart")]["held_out"] == int(
        KINDS[TriggerKind.CART].held_out([f"u{i}" for i in range(N)]).sum())


def test_training_rounds_leave_out_the_servers_held_out_triggers(exported: Path) -> None:
    ds, _ = load_dataset(exported)
    held = ds.triggers["holdout"].astype(bool)
    r = delay_rounds(ds, TriggerConfig.default(), Guardrails())
    assert r.held_out is None and r.n_rounds == int((~held).sum()) < len(held)
    assert set(r.trigger_id) == set(ds.triggers.loc[~held, "trigger_id"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("trigworld") / "w"
    synthesize_triggers(d, world_config("triggers", users=300, days=10, seed=5))
    return d


def test_holdout_lift_on_the_truth_covers_the_true_incremental_effect(world: Path) -> None:
    """Truth source, cart held out at 30 % (salt 0): under each policy the lift of the
    kind's expected conversions per user (Welch 95 %) covers the true incremental conversions
    per treated user; sends lift = the treated users' sends (held-out users get none)."""
    hold = parse_trigger_holdouts(["cart=0.3"], "0")
    cfg = TriggerConfig.parse(WORLD_TRIGGERS)
    base = compare_triggers(["delay-fixed-1h", "delay-fixed-24h"], world, source="truth",
                            triggers=cfg)
    res = compare_triggers(["delay-fixed-1h", "delay-fixed-24h"], world, source="truth",
                           triggers=cfg, trigger_holdouts=hold)
    lifts = {h["policy"]: h for h in res.meta["holdout_lift"]}
    assert set(lifts) == {"delay-fixed-1h", "delay-fixed-24h"}
    for pol, h in lifts.items():
        m = {x["metric"]: x for x in h["metrics"]}
        assert h["held_out"] > 30 and h["users"] > 200
        assert m["conversions"]["low"] <= h["true_incremental_per_treated_user"] \
            <= m["conversions"]["high"], (pol, m["conversions"], h)
        assert m["sends"]["held_out"] == 0.0 and m["sends"]["treated"] > 0
    # the holdout changes only the held-out users' cart triggers: other kinds and the
    # treated users' cart metrics are the comparison without a holdout
    a = base.per_user.set_index(["policy", "user_id"])
    b = res.per_user.set_index(["policy", "user_id"])
    other = [c for c in a.columns if c.startswith("trigger_") and "__" in c
             and not c.endswith("__cart")]
    pd.testing.assert_frame_equal(a[other], b[other])
    uid = a.index.get_level_values("user_id").to_numpy()
    treated = ~hold[TriggerKind.CART].held_out(list(uid))
    np.testing.assert_array_equal(a["trigger_sends__cart"].to_numpy()[treated],
                                  b["trigger_sends__cart"].to_numpy()[treated])
    assert (b["trigger_sends__cart"].to_numpy()[~treated] == 0).all()


def test_the_cli_reports_the_holdout_lift_and_refuses_bad_specs(world: Path,
                                                                tmp_path: Path) -> None:
    r = run_pushrl("compare", "--triggers", world, "--policy", "delay-fixed-1h",
                   "--trigger-holdout", "cart=0.3", "--out", tmp_path / "c", "--json")
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout)["meta"]
    assert meta["trigger_holdouts"]["cart"]["share"] == 0.3
    assert meta["holdout_lift"][0]["kind"] == "cart"
    md = (tmp_path / "c" / "report.md").read_text()
    assert "Per-kind holdouts" in md and "| delay-fixed-1h | cart | 30 % |" in md
    r = run_pushrl("compare", "--triggers", world, "--policy", "delay-fixed-1h",
                   "--trigger-holdout", "basket=0.1", "--out", tmp_path / "d")
    assert r.returncode == 2 and "unknown trigger kind" in r.stderr
    assert "Traceback" not in r.stderr
