"""Item baselines, the registry contract for item policies, and `pushrl train bandit`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pushrl.data.io import write_dataset
from pushrl.data.validate import load_dataset
from pushrl.errors import ArtifactError
from pushrl.policies.base import ItemContext
from pushrl.policies.baselines import make_baseline, registry
from pushrl.policies.item_baselines import BASELINES, ItemOracle, MostPopular, UniformRandom
from pushrl.policies.item_data import build_rounds, take_context
from pushrl.policies.registry import load_policy
from pushrl.policies.vw import VWConfig
from pushrl.train.vw_train import train_vw
from tests.cli_runner import run_pushrl

ROOT = Path(__file__).resolve().parents[2]


def _ctx(n: int = 4, k: int = 5) -> ItemContext:
    cand = np.tile(np.arange(k), (n, 1))
    mask = np.ones((n, k), bool)
    mask[0, 3:] = False
    return ItemContext(np.zeros((n, 1)), cand, mask, np.zeros((n, k, 0)),
                       extra={"expected_reward": np.tile(np.arange(k, 0, -1.0), (n, 1))})


def test_registered() -> None:
    reg = registry()
    for name in ("uniform-random", "most-popular", "most_popular", "item-oracle"):
        assert name in reg and name in BASELINES


def test_uniform_random() -> None:
    d = UniformRandom().action_dist(_ctx())
    np.testing.assert_allclose(d[0], [1 / 3] * 3 + [0, 0])
    np.testing.assert_allclose(d[1], 0.2)


def test_most_popular_greedy_ties_and_epsilon() -> None:
    ids = tuple(f"i{j}" for j in range(5))
    mp = MostPopular(np.array([0.1, 0.5, 0.5, 0.9, 0.2]), ids)
    d = mp.action_dist(_ctx())
    np.testing.assert_allclose(d[0], [0, 0.5, 0.5, 0, 0])  # best two tie; 0.9 is masked
    np.testing.assert_allclose(d[1], [0, 0, 0, 1, 0])
    d = MostPopular(mp.scores, ids, epsilon=0.1).action_dist(_ctx())
    np.testing.assert_allclose(d[1], [0.02, 0.02, 0.02, 0.92, 0.02])
    with pytest.raises(ValueError, match="epsilon"):
        MostPopular(mp.scores, ids, epsilon=2)
    big = _ctx()
    big.candidates = big.candidates + 10
    with pytest.raises(ValueError, match="outside the policy's catalog"):
        mp.action_dist(big)


def test_most_popular_counts_logged_rewards(tiny_synth: Path) -> None:
    ds, _ = load_dataset(tiny_synth, quarantine=False)
    mp = make_baseline("most-popular", data=str(tiny_synth), prior_strength=5.0)
    assert isinstance(mp, MostPopular) and mp.encoder is not None
    p = ds.pushes[ds.pushes["sent"].to_numpy(bool)]
    r = p["clicked"].astype(float) + 0.01 * p["revenue"]
    g = r.groupby(p["item_id"].astype(str)).agg(["sum", "count"])
    g = g.reindex(ds.items["item_id"].astype(str)).fillna(0.0)
    expect = (g["sum"] + 5.0 * r.mean()) / (g["count"] + 5.0)
    np.testing.assert_allclose(mp.scores, expect.to_numpy())
    alias = make_baseline("most_popular", data=str(tiny_synth), prior_strength=5.0)
    np.testing.assert_array_equal(alias.scores, mp.scores)
    with pytest.raises(ArtifactError, match="needs `data`"):
        make_baseline("most-popular", data="")


def test_item_oracle() -> None:
    d = ItemOracle().action_dist(_ctx())
    np.testing.assert_array_equal(d[:, 0], 1.0)
    ctx = _ctx()
    ctx.extra = {}
    with pytest.raises(ValueError, match="expected_reward"):
        ItemOracle().action_dist(ctx)


@pytest.fixture(scope="module")
def vw_artifact(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reg") / "vw-tiny"
    res = train_vw(tiny_synth, VWConfig(seed=0), out=out)
    assert res.artifact is not None
    return res.artifact


def test_train_vw_artifact_card(vw_artifact: Path, tiny_synth: Path) -> None:
    card = json.loads((vw_artifact / "card.json").read_text())
    _, report = load_dataset(tiny_synth, quarantine=False)
    assert card["data"]["fingerprint"] == report.fingerprint
    assert card["reward"] == "clicked+0.01*revenue" and card["cost"] == "-reward"
    assert card["vw_version"] and "--squarecb" in card["vw_args"]
    assert all(k.startswith("train/") for k in card["metrics"])
    for k in ("train/pv_loss", "train/examples", "train/seconds", "train/rounds"):
        assert k in card["metrics"], k
    assert card["feature_spec"]["categories"]
    assert set(card["namespaces"]) == {"U", "C", "I", "A"}


@pytest.mark.parametrize("name", ["uniform-random", "most-popular", "vw"])
def test_item_policy_contract(name: str, tiny_synth: Path, vw_artifact: Path) -> None:
    """Every item policy: rows sum to 1, masks respected, pscore = action_dist[action]."""
    ds, _ = load_dataset(tiny_synth, quarantine=False)
    pol = (load_policy(vw_artifact) if name == "vw"
           else make_baseline(name, **({"data": str(tiny_synth)} if name != "uniform-random"
                                       else {})))
    enc = getattr(pol, "encoder", None)
    ctx = take_context(build_rounds(ds, encoder=enc).context, np.arange(30))
    ctx.mask[:, ::3] = False
    d = pol.decide_batch(ctx, np.random.default_rng(0))
    np.testing.assert_allclose(d.action_dist.sum(axis=1), 1.0)
    assert (d.action_dist[~ctx.mask] == 0).all()
    assert ctx.mask[np.arange(30), d.action].all()
    np.testing.assert_array_equal(d.pscore, d.action_dist[np.arange(30), d.action])


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_pushrl("train", "bandit", *args)


def test_cli_trains_and_prints_json(tiny_synth: Path, tmp_path: Path) -> None:
    r = _run_cli("--data", str(tiny_synth), "--out", str(tmp_path / "pol"), "--exploration",
                 "epsilon", "--cb-type", "ips", "--passes", "2", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["artifact"].endswith("pol/v1")
    assert "--passes" not in out["vw_args"] and out["metrics"]["train/passes"] == 2
    assert "train/holdout_loss" in out["metrics"]
    assert load_policy(tmp_path / "pol").version == "v1"


def test_cli_refuses_logs_without_pscore(tiny_synth: Path, tmp_path: Path) -> None:
    ds, _ = load_dataset(tiny_synth, quarantine=False)
    ds.pushes = ds.pushes.drop(columns=["pscore", "pscore_send"])
    write_dataset(ds, tmp_path / "nops")
    r = _run_cli("--data", str(tmp_path / "nops"), "--out", str(tmp_path / "pol"))
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and "no `pscore`" in lines[0] and "Traceback" not in r.stderr
    bad = _run_cli("--data", str(tiny_synth), "--out", str(tmp_path / "p"), "--cb-type", "dr")
    assert bad.returncode == 2 and "only supports --cb-type mtr" in bad.stderr

