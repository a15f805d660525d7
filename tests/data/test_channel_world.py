"""The synthetic world's channels (issue 17): contract columns and their validation, opt-in
never violated, common random numbers across channel choosers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.data.features import FeatureState
from pushrl.data.io import write_dataset
from pushrl.data.synth import generate
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import CHANNEL_KNOBS, world_config
from pushrl.rules.channels import opt_in_matrix

IDS = CHANNEL_KNOBS["channel_ids"]


@pytest.fixture(scope="module")
def world() -> tuple:
    cfg = world_config("default", users=300, days=10, seed=11, channels=True)
    return cfg, generate(cfg)


def _replay_opt_in(ds: pd.DataFrame, users: pd.DataFrame) -> np.ndarray:
    """bool per sent row: its channel was opted in at its time (start opt-in minus earlier
    unsubscribes on that channel), by a plain loop."""
    opt = {u: set(m for m, ok in zip(IDS, row, strict=True) if ok)
           for u, row in zip(users["user_id"], opt_in_matrix(users["channels"], IDS),
                             strict=True)}
    out = []
    p = ds.sort_values(["ts", "decision_id"], kind="stable")
    for u, ch, sent, uns in zip(p["user_id"], p["channel"], p["sent"], p["unsubscribed"],
                                strict=True):
        if not sent:
            continue
        out.append(ch in opt[u])
        if uns is True or (not pd.isna(uns) and bool(uns)):
            opt[u].discard(ch)
    return np.array(out, bool)


def test_channel_world_logs_the_contract_columns(world: tuple, tmp_path: Path) -> None:
    _, (ds, gt, gt_users) = world
    p = ds.pushes
    sent = p["sent"].to_numpy(bool)
    assert set(p["channel"][sent].astype(str)) == set(IDS)
    assert p["channel"][~sent].isna().all()
    ps = p["pscore_channel"].to_numpy(float)
    assert np.isfinite(ps[sent]).all() and ((ps[sent] > 0) & (ps[sent] <= 1)).all()
    # logged "none": unsent, no channel, pscore_channel = the logger's none share, item kept
    none = ~sent & np.isfinite(ps)
    assert none.any()
    np.testing.assert_allclose(ps[none], CHANNEL_KNOBS["channel_none"])
    assert p["item_id"][none].notna().all()
    # a channel's probability is (1 - none) / number of opted-in channels at the time
    k = np.round((1 - CHANNEL_KNOBS["channel_none"]) / ps[sent]).astype(int)
    assert set(np.unique(k).tolist()) <= {1, 2, 3}
    assert "channels" in ds.users and "channels" in gt_users
    write_dataset(ds, tmp_path / "d")
    loaded, _report = load_dataset(tmp_path / "d", quarantine=False)
    assert len(loaded.pushes) == len(p) and len(loaded.users) == len(ds.users)
    assert "else ~ Uniform(opted-in channels)" in gt["logging_policy"]


def test_logger_never_sends_on_a_channel_without_opt_in(world: tuple) -> None:
    _, (ds, _, _) = world
    ok = _replay_opt_in(ds.pushes, ds.users)
    assert ok.size > 500 and ok.all()


def _always(arm_pref: tuple[int, ...]):
    """A chooser that tries the channels in ``arm_pref`` order among the opted-in ones."""
    def choose(state: FeatureState, users: np.ndarray, bucket: int, items: np.ndarray,
               hours: np.ndarray, opted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        arm = np.full(users.size, -1, np.int64)
        for a in reversed(arm_pref):
            arm = np.where(opted[:, a], a, arm)
        return arm, np.ones(users.size)
    return choose


@pytest.mark.parametrize("pref", [(0,), (0, 1, 2), (2, 1)])
def test_chooser_runs_respect_opt_in_and_share_the_worlds_draws(world: tuple,
                                                                 pref: tuple) -> None:
    cfg, (ds_items, _, _) = world
    # runs given the same catalog draw the same users (the catalog is drawn first otherwise)
    ds0, _, _ = generate(cfg, items=ds_items.items)
    ds, _, _ = generate(cfg, items=ds_items.items, channel_chooser=_always(pref))
    assert _replay_opt_in(ds.pushes, ds.users).all()
    # the same users with the same opt-in at the start
    pd.testing.assert_frame_equal(ds.users, ds0.users)
    # common random numbers: organic activity is identical whatever the chooser
    pd.testing.assert_frame_equal(ds.activity, ds0.activity)
    # ... and so are the send logger's decisions (the item of every decision both runs
    # logged: a user reachable on no channel any more drops out of one run only)
    key = ["user_id", "ts"]
    both = ds.pushes[[*key, "item_id"]].merge(ds0.pushes[[*key, "item_id"]], on=key)
    assert len(both) >= 0.9 * len(ds0.pushes)
    items = [both[c].astype(object).fillna("").to_numpy() for c in ("item_id_x", "item_id_y")]
    np.testing.assert_array_equal(items[0], items[1])
    sent = ds.pushes["sent"].to_numpy(bool)
    used = set(ds.pushes["channel"][sent].astype(str))
    assert used <= {IDS[a] for a in pref}


def test_a_chooser_that_breaks_opt_in_is_refused(world: tuple) -> None:
    cfg, (ds0, _, _) = world

    def rogue(state, users, bucket, items, hours, opted):  # type: ignore[no-untyped-def]
        return np.zeros(users.size, np.int64), np.ones(users.size)  # push for everyone

    with pytest.raises(ValueError, match="did not opt into"):
        generate(cfg, items=ds0.items, channel_chooser=rogue)


def test_push_only_world_is_untouched_by_the_channel_code() -> None:
    cfg = world_config("default", users=120, days=3, seed=5)
    a, _, _ = generate(cfg)
    assert "channel" not in a.pushes and "channels" not in a.users
    b, _, _ = generate(cfg)
    pd.testing.assert_frame_equal(a.pushes, b.pushes)


@pytest.mark.parametrize(("column", "value", "reason"), [
    ("pscore_channel", 0.0, "pscore_channel outside (0, 1]"),
    ("pscore_channel", 1.5, "pscore_channel outside (0, 1]"),
    ("pscore_channel", np.nan, "pscore_channel missing on a sent row with a channel"),
])
def test_validation_rejects_bad_channel_propensities(world: tuple, tmp_path: Path,
                                                      column: str, value: float,
                                                      reason: str) -> None:
    _, (ds, _, _) = world
    p = ds.pushes.copy()
    row = int(np.flatnonzero(p["sent"].to_numpy(bool))[0])
    p.loc[row, column] = value
    ds.pushes, orig = p, ds.pushes
    try:
        write_dataset(ds, tmp_path / "d")
    finally:
        ds.pushes = orig
    loaded, report = load_dataset(tmp_path / "d", quarantine=False)
    assert len(loaded.pushes) == len(p) - 1
    assert reason in str(report.to_dict())


def test_validation_rejects_a_bad_opt_in_list(world: tuple, tmp_path: Path) -> None:
    _, (ds, _, _) = world
    users = ds.users.copy()
    users.loc[0, "channels"] = "push;Email"
    ds.users, orig = users, ds.users
    try:
        write_dataset(ds, tmp_path / "d")
    finally:
        ds.users = orig
    loaded, report = load_dataset(tmp_path / "d", quarantine=False)
    assert len(loaded.users) == len(users) - 1
    assert "channels is not a comma-separated list" in str(report.to_dict())
