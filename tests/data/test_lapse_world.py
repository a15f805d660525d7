"""The lapsing world (issue 17): every other world unchanged, lifecycles that lapse and come
back, and an exact churn truth that the world's own outcomes confirm."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from pushrl.data import lapse_world
from pushrl.data.io import to_unix_seconds
from pushrl.data.synth import SynthConfig, TrueWorld, generate
from pushrl.data.worlds import CHURN_WORLDS, DEV_WORLDS, HELDOUT_WORLDS, WORLDS, world_config
from pushrl.units import HOUR

#: Content hashes of every synthetic-generator world (60 users, 4 days, seed 5) before the
#: lapsing world existed (branch ``content`` at 134e9ef): adding lifecycles changes none.
WORLD_HASHES = {
    "default": "d4a6018dedd6277c19ff47cc9e63a7e73fb50b6de31342f61d0214e84b0e1124",
    "commuter": "bec06f069b929a9c0616caf8fc920aaac88db9ec7d7199c43c2903c6eaea5303",
    "night-owls": "d0692c0fc07ca228f5e05c29873dc6bca35e08fb3bd68192fd5c89d6a67d6195",
    "taste-clicks": "ab23177485083110ac1899f5bf006db2284fbf8724532df4049a12d2cc69ef79",
    "fatigue-heavy": "b3e21feb5dcd88308aef24417eff0d9d157991cfe54a3a05e4be0d1dd3c7c240",
    "default+templates+channels":
        "597b89506d46035595c4fb787f747568979f234843908da5e2d330858e7ee6cc",
}


def _content_hash(cfg: SynthConfig) -> str:
    ds, gt, gt_users = generate(cfg)
    h = hashlib.sha256()
    for df in (ds.users, ds.items, ds.activity, ds.pushes, gt_users):
        h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
        h.update(",".join(map(str, df.columns)).encode())
    h.update(json.dumps(gt, sort_keys=True).encode())
    return h.hexdigest()


@pytest.mark.parametrize("name", sorted(WORLD_HASHES))
def test_other_worlds_are_unchanged(name: str) -> None:
    extra = ({"templates": True, "channels": True} if "+" in name else {})
    cfg = world_config(name.split("+")[0] if extra else name, users=60, days=4, seed=5,
                       **extra)
    assert _content_hash(cfg) == WORLD_HASHES[name]


def test_lapsing_is_held_out_for_churn_only() -> None:
    assert CHURN_WORLDS == ("lapsing",) and "lapsing" in WORLDS
    assert "lapsing" not in DEV_WORLDS and "lapsing" not in HELDOUT_WORLDS


def test_lomax_median_and_gap_hazard() -> None:
    x = lapse_world.lomax_hours(np.random.default_rng(0), 200_000, 45.0, 1.2)
    assert abs(np.median(x) / 24 - 45.0) < 1.0
    assert np.quantile(x, 0.99) / np.median(x) > 20  # heavy tail
    h = lapse_world.gap_hazard(np.array([0.0, 240.0, 480.0, 1e6]), 0.25, 10.0)
    np.testing.assert_allclose(h, [0.0, 0.25 / 24, 1.0 / 24, 1.0])


@pytest.fixture(scope="module")
def lapsing() -> tuple:
    """3000 users, 28 days of the lapsing world (seed 99: a world check, not a churn seed)."""
    cfg = world_config("lapsing", users=3000, days=28, seed=99)
    ds, gt, gtu = generate(cfg)
    return cfg, ds, gt, gtu


def test_users_lapse_and_come_back(lapsing: tuple) -> None:
    _, ds, gt, _ = lapsing
    lc = pd.DataFrame({k: gt["lifecycle"][k] for k in ("bucket", "user", "active")})
    b0 = int(pd.Timestamp(ds.meta.get("start", "2026-03-02T00:00:00Z")).timestamp()) // HOUR
    moves = lc.loc[lc["bucket"] >= b0]
    assert (~moves["active"]).sum() > 100 and moves["active"].sum() > 20
    assert 0.25 < (~lc.loc[lc["bucket"] < b0, "active"]).mean() < 0.35


def test_truth_matches_the_world_outcomes(lapsing: tuple) -> None:
    """The exact P(no session in days 14-28) given the state at day 14 agrees with what the
    generator then did: overall and in five equal-count bins (binomial tolerances)."""
    cfg, ds, gt, gtu = lapsing
    tw = TrueWorld(cfg.params, gtu, ds.items)
    start = int(ds.pushes["ts"].min().timestamp()) // HOUR
    b = start + 14 * 24
    bucket = to_unix_seconds(ds.activity["ts"]) // HOUR
    uid = ds.users["user_id"].astype(str).to_numpy()
    last = lapse_world.last_sessions(ds.activity, uid, gt["lifecycle"]["last0"], b)
    truth = lapse_world.p_no_session(cfg.params, tw.rate, gtu["timezone"].astype(str).to_numpy(),
                                     gt["lifecycle"], last, b, 14 * 24)
    fut = set(ds.activity.loc[bucket >= b, "user_id"].astype(str))
    y = ~np.isin(uid, list(fut))
    assert 0.2 < y.mean() < 0.8
    assert abs(truth.mean() - y.mean()) < 3 * np.sqrt(truth.mean() * (1 - truth.mean()) / y.size)
    for part in np.array_split(np.argsort(truth), 5):
        pt, yt = truth[part].mean(), y[part].mean()
        assert abs(pt - yt) < 3.5 * np.sqrt(max(pt * (1 - pt), 0.01) / part.size) + 0.01
    # the lifecycle makes churn far more predictable than a steady Poisson world's 0.77-0.80
    from pushrl.data.profiles import calibration
    assert calibration(truth, y.astype(float))["auc"] > 0.85
