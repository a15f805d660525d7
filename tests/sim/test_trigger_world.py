"""The trigger world (:mod:`pushrl.sim.trigger_world`): a valid v1.1 log, the tracker's
rules hold in it (no push after a cancelling purchase, arms and pscores as logged), the
truth is consistent with the generated outcomes, and existing worlds are unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.data.io import to_unix_seconds
from pushrl.data.synth import generate
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import world_config
from pushrl.policies.delay_data import delay_rounds
from pushrl.rules.triggers import TriggerConfig
from pushrl.sim.trigger_send import send_times
from pushrl.sim.trigger_world import (
    TRUTH_FILE,
    WORLD_GUARDRAILS,
    WORLD_TRIGGERS,
    TriggerWorldParams,
    arm_probs,
    synthesize_triggers,
)
from pushrl.units import DAY, HOUR
from tests.cli_runner import run_pushrl


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    d = tmp_path_factory.mktemp("trigger_world")
    summary = synthesize_triggers(d, world_config("triggers", users=250, days=12, seed=3))
    ds, rep = load_dataset(d, quarantine=False)
    return d, summary, ds, rep, pd.read_parquet(d / TRUTH_FILE)


def test_log_is_valid_and_counts_reconcile(world: tuple) -> None:
    _, summary, ds, rep, truth = world
    assert rep.n_rejected == 0 and rep.reconciles()
    assert summary["triggers"] == len(ds.triggers) == len(truth) > 500
    assert summary["trigger_pushes"] == int((ds.triggers["status"] == "sent").sum())
    assert set(ds.triggers["kind"]) >= {"cart", "browse", "price_drop", "back_in_stock"}
    assert len(ds.item_updates) > 0


def test_no_push_after_a_cancelling_purchase(world: tuple) -> None:
    _, _, ds, _, _ = world
    t = ds.triggers[ds.triggers["status"] == "sent"]
    p = ds.pushes.set_index(ds.pushes["decision_id"].astype(str))
    push_ts = to_unix_seconds(p.loc[t["decision_id"].astype(str), "ts"].reset_index(drop=True))
    buys = ds.activity[ds.activity["event"].astype(str) == "purchase"]
    b = {}
    for u, i, ts in zip(buys["user_id"].astype(str), buys["item_id"].astype(str),
                        to_unix_seconds(buys["ts"]), strict=True):
        b.setdefault((u, i), []).append(ts)
    ev = to_unix_seconds(t["event_ts"])
    bad = 0
    for (u, i), e, s in zip(zip(t["user_id"], t["item_id"].astype(str), strict=True), ev,
                            push_ts, strict=True):
        bad += any(e <= x < s for x in b.get((u, i), []))
    assert bad == 0


def test_logged_arms_follow_the_logging_policy(world: tuple) -> None:
    _, _, ds, _, _ = world
    arms = TriggerConfig.parse(WORLD_TRIGGERS)["cart"].arms
    probs = arm_probs(arms, TriggerWorldParams().log_1h_share)
    t = ds.triggers
    delay = t["delay_h"].astype("Int64")
    idx = np.array([arms.index(None if pd.isna(d) else int(d)) for d in delay])
    np.testing.assert_allclose(t["pscore"].to_numpy(), probs[idx])
    share = np.bincount(idx, minlength=len(arms)) / len(idx)
    se = np.sqrt(probs * (1 - probs) / len(idx))
    assert (np.abs(share - probs) < 4 * se).all(), (share, probs)
    # dropped triggers are never sent; decided_ts >= event_ts
    assert not ((t["status"] == "dropped") & delay.notna()).any()
    assert (t["decided_ts"] >= t["event_ts"]).all()


def test_truth_matches_the_generated_outcomes(world: tuple) -> None:
    """Conversions within the horizon and sends of the logged arms equal the truth's
    expectation within 4 standard errors (triggers without an overlapping trigger of the
    same user and item, whose horizon ends inside the log)."""
    _, _, ds, _, truth = world
    r = delay_rounds(ds, TriggerConfig.parse(WORLD_TRIGGERS), WORLD_GUARDRAILS)
    t = truth.set_index("trigger_id").loc[r.trigger_id]
    cols = ["drop" if a is None else str(a) for a in r.arms]
    rows = np.arange(r.n_rounds)
    incr = t[[f"incr_{c}" for c in cols]].to_numpy()[rows, r.action]
    send = t[[f"send_{c}" for c in cols]].to_numpy()[rows, r.action]
    p = t["p_organic"].to_numpy() + incr
    ev = to_unix_seconds(ds.triggers.set_index("trigger_id").loc[r.trigger_id, "event_ts"])
    m = (ev < ev.max() - 7 * DAY) & ~t["overlap"].to_numpy()
    assert m.sum() > 300
    for obs, exp in ((r.converted, p), (r.sent, send)):
        sd = np.sqrt((exp * (1 - exp))[m].sum())
        assert abs(obs[m].sum() - exp[m].sum()) < 4 * sd, (obs[m].sum(), exp[m].sum(), sd)
    # incremental conversions are bounded by the no-organic probability; drop adds none
    assert (t["incr_drop"] == 0).all()
    assert (t[[f"incr_{c}" for c in cols]].to_numpy() <= 1 - t[["p_organic"]].to_numpy()
            + 1e-12).all()


def test_send_times_skip_quiet_hours(world: tuple) -> None:
    from pushrl.data.features import FeatureSpec, FeatureState

    spec = FeatureSpec(("a",), {}, tuple([1 / 168] * 168), (1.0,))
    st = FeatureState(spec, ["UTC", "Asia/Kolkata"], 0)
    t0 = 1_772_409_600 + 21 * HOUR + 600  # 21:10 UTC
    out = send_times(st, np.array([0, 1]), np.array([t0, t0]), np.array([0, 1, 24]),
                     WORLD_GUARDRAILS)
    hour, _, _ = st.local_time_at(np.array([[0], [1]]), out)
    assert not WORLD_GUARDRAILS.quiet(hour).any()
    # UTC: 21:10 + 0 h -> 22:00 (quiet) -> 08:00; + 1 h likewise; + 24 h -> 08:00 a day later
    base = t0 - 600
    assert out[0].tolist() == [base + 11 * HOUR, base + 11 * HOUR, base + 35 * HOUR]
    # Kolkata (+5:30): 22:10 UTC -> 03:40 local: the first non-quiet hour start is 08:00 local
    h, _, _ = st.local_time_at(np.array([1]), out[1, :1])
    assert h[0] == 8


def test_existing_worlds_are_unchanged() -> None:
    """The triggers family only adds knobs; the default world's draws are untouched."""
    a, _, _ = generate(world_config("default", users=30, days=2, seed=5))
    b, _, _ = generate(world_config("default", users=30, days=2, seed=5))
    pd.testing.assert_frame_equal(a.pushes, b.pushes)
    assert a.meta.get("world") is None and len(a.triggers) == 0


def test_cli_synth_triggers_world(tmp_path: Path) -> None:
    out = tmp_path / "tw"
    res = run_pushrl("data", "synth", "--world", "triggers", "--users", "40", "--days", "3",
                     "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["triggers"] > 0 and (out / TRUTH_FILE).exists()
    bad = run_pushrl("data", "synth", "--world", "triggers", "--users", "50",
                     "--part-users", "20", "--out", str(tmp_path / "x"))
    assert bad.returncode != 0 and "generated in one part" in bad.stderr
