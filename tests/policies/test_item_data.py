"""Logged pushes -> bandit rounds: the pipeline features, pscores, candidates and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.data.features import ENCODED_NAMES, FeatureSpec, encode, replay
from pushrl.data.io import Dataset
from pushrl.data.validate import load_dataset
from pushrl.errors import DataError
from pushrl.rules.reward import RewardWeights
from pushrl.policies.item_data import (
    ContextEncoder,
    build_rounds,
    iter_rounds,
    take_context,
)

ROOT = Path(__file__).resolve().parents[2]
OBD = ROOT / "simulator_data" / "obd" / "random"


@pytest.fixture(scope="module")
def synth(tiny_synth: Path) -> Dataset:
    return load_dataset(tiny_synth, quarantine=False)[0]


@pytest.fixture(scope="module")
def rounds(synth: Dataset):  # type: ignore[no-untyped-def]
    return build_rounds(synth)


def test_rounds_are_the_sent_pushes_with_item_level_pscore(synth: Dataset, rounds) -> None:
    p = synth.pushes
    sent = p["sent"].to_numpy(bool)
    assert rounds.n_rounds == sent.sum()
    np.testing.assert_array_equal(rounds.row, np.flatnonzero(sent))
    # synthetic pscore is the joint send x item probability: item level = 1 / n_items
    np.testing.assert_allclose(rounds.pscore, 1.0 / len(synth.items))
    cand = rounds.context.candidates[np.arange(rounds.n_rounds), rounds.action]
    np.testing.assert_array_equal(rounds.catalog.ids[cand], p.loc[sent, "item_id"].astype(str))
    clicked = p.loc[sent, "clicked"].astype(float).to_numpy()
    revenue = p.loc[sent, "revenue"].to_numpy(float)
    np.testing.assert_allclose(rounds.reward, clicked + 0.01 * revenue)
    assert rounds.weights.item_formula() == "clicked+0.01*revenue"
    assert rounds.missing_outcomes == {}


def test_context_comes_from_the_feature_pipeline(synth: Dataset, rounds) -> None:
    spec = FeatureSpec.fit(synth)
    rep = replay(synth, spec)
    ctx = rounds.context
    assert ctx.shared_names[:len(ENCODED_NAMES)] == ENCODED_NAMES
    np.testing.assert_array_equal(ctx.shared[:, :len(ENCODED_NAMES)],
                                  encode(rep.features[rounds.row]))
    # the logged item's candidate affinity is the pipeline's affinity of the logged item
    j = ctx.candidate_feature_names.index("affinity")
    logged_aff = ctx.candidate_features[np.arange(rounds.n_rounds), rounds.action, j]
    np.testing.assert_allclose(logged_aff, rep.affinity[rounds.row], rtol=1e-6)
    cat = rounds.catalog
    np.testing.assert_array_equal(ctx.candidate_features[0, :, :cat.features.shape[1]],
                                  cat.features)


def test_chunked_rounds_equal_all_at_once(synth: Dataset, rounds) -> None:
    chunks = list(iter_rounds(synth, chunk_rounds=100))
    assert len(chunks) > 2
    np.testing.assert_array_equal(np.concatenate([c.row for c in chunks]), rounds.row)
    np.testing.assert_array_equal(np.concatenate([c.context.shared for c in chunks]),
                                  rounds.context.shared)
    np.testing.assert_array_equal(
        np.concatenate([c.context.candidate_features for c in chunks]),
        rounds.context.candidate_features)


def test_subset_and_fixed_encoder(synth: Dataset, rounds) -> None:
    sub = rounds.subset(np.arange(10))
    assert sub.n_rounds == 10 and len(sub.context) == 10
    enc = ContextEncoder.from_dict(rounds.encoder.to_dict())
    again = build_rounds(synth, encoder=enc)
    np.testing.assert_array_equal(again.context.shared, rounds.context.shared)


def _with(ds: Dataset, **cols: object) -> Dataset:
    p = ds.pushes.copy()
    for k, v in cols.items():
        if v is None:
            p = p.drop(columns=[k])
        else:
            p[k] = v(p) if callable(v) else v
    return Dataset(ds.users, ds.items, ds.activity, p)


def _first_sent(p: pd.DataFrame) -> int:
    return int(np.flatnonzero(p["sent"].to_numpy(bool))[0])


def _nan_first(p: pd.DataFrame) -> pd.Series:
    s = p["pscore"].copy()
    s.iloc[_first_sent(p)] = np.nan
    return s


def _big_first(p: pd.DataFrame) -> pd.Series:
    s = p["pscore"].copy()
    s.iloc[_first_sent(p)] = 5.0  # / pscore_send > 1
    return s


@pytest.mark.parametrize(("change", "match"), [
    ({"pscore": None, "pscore_send": None}, r"no `pscore`"),
    ({"pscore": np.nan}, r"no `pscore`"),
    ({"pscore": _nan_first}, r"`pscore` is missing in 1 of"),
    ({"pscore": _big_first}, r"must be in \(0, 1\]"),
    ({"sent": False}, r"no sent pushes"),
])
def test_unusable_logs_are_refused(synth: Dataset, change: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        build_rounds(_with(synth, **change))


@pytest.mark.parametrize(("reward", "match"), [
    ("likes", r"`likes` is not an item-round outcome; use opened, clicked"),
    ("clicked+2**revenue", r"'\+2\*\*revenue' is not a `\[weight\*\]column` term"),
    ("", r"'' is not a `\[weight\*\]column` term"),
    ("sent", r"`sent` is not an item-round outcome"),
])
def test_bad_reward_formulas_are_refused(reward: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RewardWeights.parse(reward)


@pytest.mark.parametrize("text", ["clicked", "opened + 0.5*clicked", "clicked-0.5*opened",
                                  "1e-3*revenue+clicked+clicked", "0.1234567891*converted"])
def test_reward_formula_round_trips(text: str) -> None:
    w = RewardWeights.parse(text)
    assert RewardWeights.parse(w.item_formula()) == w
    assert w.send_cost == 0.0 and w.unsubscribe_penalty == 0.0
    assert RewardWeights.parse("opened + 0.5*clicked") == RewardWeights(1.0, 0.5, 0.0, 0.0, 0.0)


def test_item_rounds_drop_the_send_cost_and_unsubscribe(synth: Dataset) -> None:
    """Scenario weights given to the rounds become their item-round part (send given)."""
    full = build_rounds(synth, reward=RewardWeights())
    item = build_rounds(synth, reward="opened+2*clicked+0.02*revenue")
    assert full.weights == item.weights
    np.testing.assert_array_equal(full.reward, item.reward)


def test_missing_outcomes_count_zero_and_are_counted(synth: Dataset) -> None:
    p = synth.pushes.copy()
    sent = np.flatnonzero(p["sent"].to_numpy(bool))
    p["clicked"] = p["clicked"].astype("boolean")
    p.loc[p.index[sent[:7]], "clicked"] = pd.NA
    p["opened"] = pd.array([pd.NA] * len(p), dtype="boolean")  # never logged, not weighted
    ds = Dataset(synth.users, synth.items, synth.activity, p)
    r = build_rounds(ds, reward="clicked+0.01*revenue")
    assert r.n_rounds == sent.size  # no row left out
    assert r.missing_outcomes == {"clicked": 7}
    np.testing.assert_allclose(r.reward[:7], 0.01 * p["revenue"].to_numpy(float)[sent[:7]])
    with pytest.raises(DataError, match="weighs opened, which no sent row logs"):
        build_rounds(ds, reward="opened+clicked")


def test_explicit_candidates_give_mask_and_action(synth: Dataset) -> None:
    ids = synth.items["item_id"].astype(str).tolist()

    def cands(p: pd.DataFrame) -> list:
        out = []
        for i, it in enumerate(p["item_id"].astype(object)):
            k = 3 + i % 4
            lst = [x for x in ids[:k] if x != it] + ([str(it)] if isinstance(it, str) else [])
            out.append(lst[::-1])
        return out

    r = build_rounds(_with(synth, candidates=cands))
    ctx = r.context
    lens = ctx.mask.sum(axis=1)
    assert lens.min() >= 3 and ctx.mask.shape[1] == lens.max()
    chosen = ctx.candidates[np.arange(r.n_rounds), r.action]
    np.testing.assert_array_equal(r.catalog.ids[chosen], r.item_id)
    assert ctx.mask[np.arange(r.n_rounds), r.action].all()

    def wrong(p: pd.DataFrame) -> list:
        return [[x for x in ids[:3] if x != it] for it in p["item_id"].astype(object)]

    with pytest.raises(DataError, match="not among `candidates`"):
        build_rounds(_with(synth, candidates=wrong))


@pytest.mark.skipif(not OBD.exists(), reason="shipped OBD sample missing")
def test_obd_logged_context_position_and_candidate_lists() -> None:
    ds, _ = load_dataset(OBD, quarantine=False)
    r = build_rounds(ds)
    p = ds.pushes
    assert r.n_rounds == len(p) and r.weights.item_formula() == "clicked"
    np.testing.assert_allclose(r.pscore, p["pscore"].to_numpy(float))
    np.testing.assert_array_equal(r.position, p["position"].to_numpy(int))
    ctx = take_context(r.context, np.arange(50))
    names = ctx.shared_names
    for i in range(50):  # one-hot of each logged user feature
        for j in range(4):
            col = f"ctx_user_feature_{j}={p[f'ctx_user_feature_{j}'].iloc[i]}"
            assert ctx.shared[i, names.index(col)] == 1.0
    onehot = [k for k, n in enumerate(names) if "=" in n]
    np.testing.assert_array_equal(ctx.shared[:, onehot].sum(axis=1), 4.0)
    j = ctx.candidate_feature_names.index("cand_affinity")
    np.testing.assert_allclose(ctx.candidate_features[:, :, j],
                               np.stack(p["cand_affinity"].iloc[:50].to_list()))
