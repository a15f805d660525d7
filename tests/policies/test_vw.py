"""VW item policies: config checks, learning, PMF decisions, pickling, registry round trips."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from vowpalwabbit import __version__ as VW_VERSION
from vowpalwabbit import pyvw

from pushrl.errors import ArtifactError
from pushrl.policies.base import ItemContext
from pushrl.policies.item_data import BanditRounds, ContextEncoder, take_context
from pushrl.rules.reward import RewardWeights
from pushrl.policies.registry import load_policy
from pushrl.policies.vw import EXPLORATIONS, VWConfig, VWItemPolicy
from pushrl.train.vw_train import driver_command, layout_for, train_rounds

ROOT = Path(__file__).resolve().parents[2]
N_ITEMS = 8


class _Catalog:
    """The two attributes of an ItemCatalog that training reads."""

    def __init__(self, features: np.ndarray) -> None:
        self.ids = np.array([f"i{j}" for j in range(features.shape[0])], dtype=object)
        self.features = features
        self.feature_names = ("price", "quality")


def make_rounds(n: int = 3000, seed: int = 0) -> BanditRounds:
    """Uniform logging over 8 items; clicks depend on user x item and on the affinity."""
    from pushrl.data.features import ENCODED_NAMES, FeatureSpec

    rng = np.random.default_rng(seed)
    shared = np.zeros((n, len(ENCODED_NAMES)), np.float32)
    shared[:, 0] = rng.choice([-1.0, 1.0], n)
    items = rng.normal(size=(N_ITEMS, 2)).astype(np.float32)
    items[:, 0] = np.linspace(-1.5, 1.5, N_ITEMS)
    cand = np.tile(np.arange(N_ITEMS), (n, 1))
    aff = rng.uniform(0.5, 2.0, (n, N_ITEMS, 1)).astype(np.float32)
    cf = np.concatenate([np.broadcast_to(items[None], (n, N_ITEMS, 2)), aff], axis=2)
    a = rng.integers(0, N_ITEMS, n)
    logit = 2.0 * shared[:, 0] * items[a, 0] + 1.5 * np.log(aff[np.arange(n), a, 0]) - 1.0
    reward = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    spec = FeatureSpec(("c",), {}, tuple([1 / 168] * 168), (1.0,))
    enc = ContextEncoder(spec, tuple(f"i{j}" for j in range(N_ITEMS)), ("price", "quality"))
    ctx = ItemContext(shared, cand, np.ones((n, N_ITEMS), bool), cf, enc.shared_names,
                      enc.candidate_feature_names)
    return BanditRounds(ctx, a, reward, np.full(n, 1 / N_ITEMS), np.array(a, dtype=object),
                        np.arange(n), enc, _Catalog(items), RewardWeights.parse("clicked"))  # type: ignore[arg-type]


def true_best(ctx: ItemContext) -> np.ndarray:
    """Index of the best candidate under the generating model."""
    price = ctx.candidate_features[:, :, 0]
    aff = ctx.candidate_features[:, :, 2]
    return np.argmax(2.0 * ctx.shared[:, :1] * price + 1.5 * np.log(aff), axis=1)


@pytest.fixture(scope="module")
def rounds() -> BanditRounds:
    return make_rounds()


@pytest.fixture(scope="module")
def trained(rounds: BanditRounds) -> VWItemPolicy:
    return train_rounds([rounds], VWConfig(seed=1)).policy


@pytest.mark.parametrize(("kw", "match"), [
    ({"exploration": "softmax"}, "--exploration must be one of"),
    ({"cb_type": "dm"}, "--cb-type must be one of"),
    ({"exploration": "squarecb", "cb_type": "dr"}, "only supports --cb-type mtr"),
    ({"exploration": "large_action_space", "cb_type": "ips"}, "only supports --cb-type mtr"),
    ({"passes": 0}, "--passes must be >= 1"),
    ({"epsilon": 1.5}, "epsilon must be in"),
    ({"interactions": ("UX",)}, "interaction 'UX'"),
])
def test_config_refuses_bad_values(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        VWConfig(**kw)


def test_config_args() -> None:
    a = VWConfig(exploration="cover", cb_type="dr", passes=3).args()
    assert a[:3] == ["--cb_explore_adf", "--cb_type", "dr"] and "--cover" in a
    cmd = driver_command(VWConfig(passes=3), "m.vw", cache="c")
    assert cmd[-5:] == ["--passes", "3", "--cache_file", "c", "-k"]
    with pytest.raises(ValueError, match="cache"):
        driver_command(VWConfig(passes=2), "m.vw")


def test_policy_learns_the_best_candidate(rounds: BanditRounds, trained: VWItemPolicy) -> None:
    test = make_rounds(400, seed=9).context
    dist = trained.action_dist(test)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0)
    hit = np.mean(np.argmax(dist, axis=1) == true_best(test))
    # chance is 1/8; binomial standard error at p=0.5 over 400 rounds is 0.025
    assert hit > 0.5, hit


def test_decisions_sample_the_pmf_with_the_callers_rng(trained: VWItemPolicy) -> None:
    ctx = make_rounds(200, seed=3).context
    ctx.mask[:, -2:] = False  # guardrail: two candidates forbidden
    d1 = trained.decide_batch(ctx, np.random.default_rng(5))
    d2 = trained.decide_batch(ctx, np.random.default_rng(5))
    np.testing.assert_array_equal(d1.action, d2.action)
    np.testing.assert_array_equal(d1.pscore, d1.action_dist[np.arange(200), d1.action])
    assert (d1.action_dist[:, -2:] == 0).all() and (d1.action < N_ITEMS - 2).all()
    one = trained.decide(take_context(ctx, np.arange(1)), np.random.default_rng(0))
    assert one.pscore == one.action_dist[one.action]


def test_streamed_training_equals_the_driver_on_the_same_file(rounds: BanditRounds,
                                                              tmp_path: Path) -> None:
    cfg = VWConfig(exploration="epsilon", cb_type="dr", seed=2)
    res = train_rounds([rounds.subset(np.arange(1000))], cfg, examples_path=tmp_path / "ex.vw")
    cmd = driver_command(cfg, tmp_path / "m.vw", data=tmp_path / "ex.vw")
    # same arguments (no --quiet: progress dumps reset VW's "since last" loss counters)
    subprocess.run(cmd, check=True, capture_output=True)
    assert (tmp_path / "m.vw").read_bytes() == res.policy.model_bytes()
    assert res.metrics["train/examples"] == 1000 and "train/pv_loss" in res.metrics


def test_pickle_reloads_from_verified_bytes(trained: VWItemPolicy) -> None:
    ctx = make_rounds(50, seed=4).context
    clone = pickle.loads(pickle.dumps(trained))
    assert clone._ws is not trained._ws
    np.testing.assert_array_equal(clone.action_dist(ctx), trained.action_dist(ctx))
    state = trained.__getstate__()
    state["model"] = state["model"][:-1] + b"\x00"
    with pytest.raises(ArtifactError, match="sha256"):
        VWItemPolicy.__new__(VWItemPolicy).__setstate__(state)


def test_online_learn_updates_and_saves(rounds: BanditRounds) -> None:
    pol = VWItemPolicy(layout_for(rounds), VWConfig(exploration="epsilon").args())
    ctx = take_context(rounds.context, np.arange(500))
    before = pol.action_dist(ctx)
    pol.learn(ctx, rounds.action[:500], rounds.reward[:500], rounds.pscore[:500])
    after = pol.action_dist(ctx)
    assert not np.allclose(before, after)
    clone = pickle.loads(pickle.dumps(pol))
    np.testing.assert_array_equal(clone.action_dist(ctx), after)
    with pytest.raises(ValueError, match="masked"):
        bad = take_context(ctx, np.arange(3))
        bad.mask[:, 0] = False
        pol.learn(bad, np.zeros(3, int), np.zeros(3), np.ones(3))


_LOAD = """
import json, sys, numpy as np
from pushrl.policies.registry import load_policy
ctx = np.load(sys.argv[1], allow_pickle=True).item()
from pushrl.policies.base import ItemContext
ctx = ItemContext(**ctx)
print(json.dumps({p: load_policy(p).action_dist(ctx).tolist() for p in sys.argv[2:]}))
"""


def test_save_load_in_a_fresh_process_is_identical(rounds: BanditRounds,
                                                   tmp_path: Path) -> None:
    """Each exploration: the live training workspace, the artifact loaded here and the
    artifact loaded in a new interpreter give the same PMFs (VW save/resume state,
    squarecb/cover counters, seeds)."""
    train = rounds.subset(np.arange(1500))
    test = make_rounds(40, seed=11).context
    paths, live = [], {}
    for i, exploration in enumerate(EXPLORATIONS):
        cfg = VWConfig(exploration=exploration, seed=3, max_actions=3)
        ex = tmp_path / f"{exploration}.vw"
        res = train_rounds([train], cfg, examples_path=ex)
        # the same examples in an in-process workspace, queried before it is saved
        ws = pyvw.Workspace(arg_list=[*cfg.args(), "-d", str(ex), "--quiet"])
        texts = res.policy._fmt.to_rounds(test)
        live[exploration] = np.array([ws.predict(t.split("\n")) for t in texts])
        ws.finish()
        art = res.policy.save(tmp_path / f"p{i}", {"test": True})
        paths.append(str(art))
        here = load_policy(art).action_dist(test)
        np.testing.assert_allclose(here, live[exploration], atol=1e-6, err_msg=exploration)
        assert np.abs(here - 1 / N_ITEMS).max() > 0.05, f"{exploration} learned nothing"
    np.save(tmp_path / "ctx.npy", np.array(vars(test), dtype=object))
    out = subprocess.run([sys.executable, "-c", _LOAD, str(tmp_path / "ctx.npy"), *paths],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    fresh = json.loads(out.stdout)
    for p, exploration in zip(paths, EXPLORATIONS, strict=True):
        np.testing.assert_array_equal(np.array(fresh[p]), load_policy(p).action_dist(test),
                                      err_msg=exploration)


def test_artifact_card_and_tampering(trained: VWItemPolicy, tmp_path: Path) -> None:
    art = trained.save(tmp_path / "vw-test", {"metrics": {"train/pv_loss": -0.1}})
    card = json.loads((art / "card.json").read_text())
    assert card["loader"] == "vw" and card["kind"] == "item" and card["version"] == "v1"
    assert card["vw_args"] == trained.args and card["vw_version"] == VW_VERSION
    assert set(card["files"]) == {"model.vw", "layout.json", "encoder.json"}
    assert card["feature_spec"]["version"] == "features/v1"
    assert card["namespaces"]["I"][0] == "id=<item_id>"
    model = art / "model.vw"
    model.write_bytes(model.read_bytes() + b"\x00")
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_policy(art)
