"""The world zoo: the default world unchanged, every family valid and structurally distinct."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pushrl.cli.main import app
from pushrl.data.loggers import LOGGERS, make_logger
from pushrl.data.synth import SynthConfig, TrueWorld, generate, synthesize
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import (
    CHURN_WORLDS,
    DEV_WORLDS,
    HELDOUT_WORLDS,
    TRIGGER_WORLDS,
    WORLDS,
    world_config,
)
from pushrl.errors import DataError

#: Content hashes of the default world before the families existed (commit ea4efcc's
#: generator): the quickstart and shipped artifacts depend on these exact logs.
DEFAULT_HASHES = {
    (120, 10, 7, 40, 24): "607067ee785af20078fa26a34c2d7c7e6072aff17d8f4579bb13a8e661ce0725",
    (200, 8, 3, 100, 6): "1734e42f42047446e39cfb8c5954f251ca2bf67b99fcf8ad993a3db6a86450f7",
}


def _content_hash(cfg: SynthConfig) -> str:
    ds, gt, gt_users = generate(cfg)
    h = hashlib.sha256()
    for df in (ds.users, ds.items, ds.activity, ds.pushes, gt_users):
        h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
        h.update(",".join(map(str, df.columns)).encode())
    h.update(json.dumps(gt, sort_keys=True).encode())
    return h.hexdigest()


@pytest.mark.parametrize("key", sorted(DEFAULT_HASHES))
def test_default_world_is_bit_identical(key: tuple[int, int, int, int, int]) -> None:
    users, days, seed, items, spd = key
    cfg = SynthConfig(users=users, days=days, seed=seed, items=items, slots_per_day=spd)
    assert _content_hash(cfg) == DEFAULT_HASHES[key]
    # the registry's default is the same world
    assert _content_hash(world_config("default", users=users, days=days, seed=seed,
                                      items=items, slots_per_day=spd)) == DEFAULT_HASHES[key]


def test_split_covers_the_registry() -> None:
    assert set(DEV_WORLDS).isdisjoint(HELDOUT_WORLDS)
    # trigger worlds (issue #16) have their own generator and benchmark; churn worlds (issue
    # #17) are held out for the profiles' churn risk
    assert set(DEV_WORLDS) | set(HELDOUT_WORLDS) | set(TRIGGER_WORLDS) | set(CHURN_WORLDS) \
        == set(WORLDS)
    assert len(WORLDS) >= 5 and "default" in DEV_WORLDS


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for name in WORLDS:
        d = tmp_path_factory.mktemp(name)
        synthesize(d, world_config(name, users=150, days=8, seed=11))
        out[name] = d
    return out


@pytest.mark.parametrize("name", sorted(WORLDS))
def test_every_world_is_valid_pushlog_with_ground_truth(zoo: dict[str, Path], name: str) -> None:
    ds, report = load_dataset(zoo[name])
    assert report.n_rejected == 0
    p = ds.pushes
    sent = p["sent"].to_numpy(bool)
    ps, pss = p["pscore"].to_numpy(float), p["pscore_send"].to_numpy(float)
    assert np.all((ps > 0) & (ps <= 1)) and np.all(ps[sent] <= pss[sent] + 1e-12)
    np.testing.assert_allclose(ps[~sent], 1 - pss[~sent])
    world = TrueWorld.load(zoo[name])
    assert world.params == WORLDS[name].params()
    assert len(world.items) == WORLDS[name].items
    u = np.arange(len(world.users))
    lo = world.open_logit(u, np.zeros_like(u), np.full_like(u, 12), u % len(world.items),
                          np.zeros(u.size), np.zeros(u.size))
    assert np.isfinite(lo).all()
    np.testing.assert_allclose(world.rate.sum(axis=2)[:, 0],
                               world.users["sessions_per_day"].to_numpy(), rtol=1e-9)


def _peak(world: TrueWorld, weekend: int) -> np.ndarray:
    return world.rate[:, weekend, :].argmax(axis=1)


def test_families_differ_in_structure(zoo: dict[str, Path]) -> None:
    w = {n: TrueWorld.load(d) for n, d in zoo.items()}
    # night segment: a share of users peaks between 23:00 and 04:00, none in the default
    night = lambda x: np.isin(_peak(x, 0), [23, 0, 1, 2, 3, 4]).mean()  # noqa: E731
    assert night(w["night-owls"]) > 0.2 > night(w["default"]) + 0.1
    # weekend rhythm: commuter users have their own weekend peak, fatigue-heavy none
    assert (_peak(w["commuter"], 0) != _peak(w["commuter"], 1)).mean() > 0.5
    assert (_peak(w["fatigue-heavy"], 0) == _peak(w["fatigue-heavy"], 1)).all()
    # unsubscribe: a threshold (flat up to 5 pushes), saturation (shrinking increments)
    u = np.zeros(4, np.int64)
    h = w["night-owls"].unsub_hazard(u, np.array([0.0, 3.0, 5.0, 9.0]))
    assert h[0] == h[1] == h[2] < h[3]
    h = w["taste-clicks"].unsub_hazard(u, np.array([0.0, 2.0, 4.0, 6.0]))
    assert np.all(np.diff(np.diff(np.log(h / (1 - h)))) < 0)
    h = w["default"].unsub_hazard(u, np.array([0.0, 2.0, 4.0, 6.0]))
    np.testing.assert_allclose(np.diff(np.log(h / (1 - h))), 0.32)
    # clicks driven by taste: the spread of P(click) across users for one item is larger
    spread = {n: w[n].p_click(np.arange(150), np.zeros(150, np.int64)).std() for n in w}
    assert spread["taste-clicks"] > 2 * spread["default"]
    # loggers
    logged = {n: json.loads((d / "ground_truth.json").read_text())["params"].get("logger")
              for n, d in zoo.items()}
    assert logged["default"] is None  # default knobs are not written
    assert {logged["night-owls"], logged["taste-clicks"]} == {"eps-greedy", "thompson"}


@pytest.mark.parametrize("name", sorted(LOGGERS))
def test_logger_pscore_is_the_sampling_probability(name: str) -> None:
    """Empirical item frequencies of one slot's decisions match the logged propensities
    (tolerance: 5 binomial standard errors)."""
    n_items, n = 12, 40_000
    rng = np.random.default_rng(3)
    lg = make_logger(name, np.full(n, 0.5), n_items, epsilon=0.2)
    lg.observe(np.arange(n_items).repeat(20), rng.random(20 * n_items) < np.linspace(0.1, 0.6,
                                                                                   n_items
                                                                                   ).repeat(20))
    send, item, pscore, ps = lg.decide(np.arange(n), np.full(n, 19), rng)
    q = pscore[send] / ps[send]
    for j in range(n_items):
        m = item[send] == j
        if not m.any():
            continue
        expected = q[m][0]
        assert np.allclose(q[m], expected)
        se = np.sqrt(expected * (1 - expected) / send.sum())
        assert abs(m.mean() - expected) < 5 * se + 1e-12
    assert abs(send.mean() - 0.5) < 5 * np.sqrt(0.25 / n)


def test_params_and_unknown_names() -> None:
    cfg = world_config("commuter", users=10, fatigue_24h=0.2)
    assert cfg.params.fatigue_24h == 0.2 and cfg.items == 40 and cfg.params.world == "commuter"
    with pytest.raises(DataError, match="unknown world 'mars'"):
        world_config("mars")
    with pytest.raises(DataError, match="unknown world parameter"):
        world_config("default", gravity=1.0)


def test_cli_synth_world_and_param(tmp_path: Path) -> None:
    out = tmp_path / "w"
    res = CliRunner().invoke(app, ["data", "synth", "--world", "night-owls", "--users", "30",
                                   "--days", "2", "--param", "unsub_threshold_7d=3",
                                   "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    gt = json.loads((out / "ground_truth.json").read_text())
    assert gt["params"]["world"] == "night-owls" and gt["params"]["unsub_threshold_7d"] == 3.0
    assert json.loads((out / "meta.json").read_text())["world"] == "night-owls"
