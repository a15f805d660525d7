"""The one-decision paths of the pipeline's encodings equal the batch definitions bit for
bit: :func:`encode_row` vs :func:`encode`, :func:`activity_bin_one` vs :func:`activity_bin`,
``TemplateRecency.hours_one`` / ``record_one`` / :func:`encode_template_recency_one` vs the
vectorised recency (the server's template step runs on them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pushrl.data.features as features
from pushrl.data.features import (
    ENCODE_SOURCE,
    F,
    N_ENCODED,
    N_FEATURES,
    TEMPLATE_HOURS_CAP,
    FeatureSpec,
    TemplateRecency,
    encode,
    encode_row,
    encode_template_recency,
    encode_template_recency_one,
    replay,
)
from pushrl.data import item_context
from pushrl.data.item_context import activity_bin, activity_bin_one, warm_activity_bins
from pushrl.data.validate import load_dataset


def _bits(a: np.ndarray) -> np.ndarray:
    """float32 values as their bit patterns (-0.0 and 0.0 equal, as the encoders cache them)."""
    a = np.asarray(a, np.float32) + np.float32(0.0)  # -0.0 + 0.0 = +0.0
    return a.view(np.uint32)


def _random_rows(n: int, seed: int) -> np.ndarray:
    """Raw feature rows over each column's domain and beyond: integers and fractions, the
    caps, the 1e-3 floor of ``activity_at_hour`` and values around it, zeros."""
    rng = np.random.default_rng(seed)
    raw = np.empty((n, N_FEATURES), np.float32)
    raw[:, F["local_hour"]] = rng.integers(0, 24, n)
    raw[:, F["local_dow"]] = rng.integers(0, 7, n)
    raw[:, F["hours_since_push"]] = rng.choice([0, 1, 23, 24, 167, 168, 335, 336], n)
    for c in ("sends_24h", "sends_7d", "opens_7d", "activity_7d"):
        raw[:, F[c]] = rng.integers(0, 300, n)
    act = rng.lognormal(0, 2, n)
    act[::7] = rng.choice([0.0, 1e-3, np.nextafter(np.float32(1e-3), 0), 5e-4], act[::7].size)
    raw[:, F["activity_at_hour"]] = act
    raw[:, F["engagement"]] = rng.random(n)
    frac = rng.random(n) < 0.1  # non-integer values in every column (e.g. weighted counts)
    raw[frac] += rng.random((int(frac.sum()), N_FEATURES)).astype(np.float32) * 3
    return raw


@pytest.fixture(scope="module")
def pipeline_rows(tiny_synth: Path) -> np.ndarray:
    """Raw features of every logged decision of a small synthetic log (the pipeline's own)."""
    ds, _ = load_dataset(tiny_synth, quarantine=False)
    return np.asarray(replay(ds, FeatureSpec.fit(ds), with_affinity=False).features, np.float32)


def test_encode_is_column_wise_as_encode_source_says() -> None:
    raw = _random_rows(500, 1)
    base = encode(raw)
    other = _random_rows(500, 2)
    for j in range(N_FEATURES):
        moved = raw.copy()
        moved[:, j] = other[:, j]
        changed = np.flatnonzero((encode(moved) != base).any(axis=0))
        assert set(changed.tolist()) <= {k for k, s in enumerate(ENCODE_SOURCE) if s == j}
    assert len(ENCODE_SOURCE) == N_ENCODED


@pytest.mark.parametrize("source", ["pipeline", "random"])
def test_encode_row_equals_encode_bit_for_bit(source: str, pipeline_rows: np.ndarray) -> None:
    raw = pipeline_rows if source == "pipeline" else _random_rows(5000, 3)
    assert raw.shape[0] > 500
    batch = encode(raw)  # the batch definition, over every row at once
    rows = np.array([encode_row(r) for r in raw.tolist()], np.float64)
    assert rows.shape == batch.shape
    np.testing.assert_array_equal(rows.astype(np.float32), rows)  # float32 values
    np.testing.assert_array_equal(_bits(rows), _bits(batch))
    for i in range(0, raw.shape[0], 97):  # and encode of the one row
        np.testing.assert_array_equal(_bits(encode(raw[i:i + 1])[0]), _bits(rows[i]))


def test_encode_row_equal_when_its_caches_start_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "_ROW_MEMO_MAX", 8)
    raw = _random_rows(300, 4)
    rows = np.array([encode_row(r) for r in raw.tolist()])
    np.testing.assert_array_equal(_bits(rows), _bits(encode(raw)))
    assert all(m is None or len(m) <= 8 for m in features._MEMOS)


def test_activity_bin_one_equals_activity_bin(pipeline_rows: np.ndarray) -> None:
    raw = np.concatenate([pipeline_rows, _random_rows(3000, 5)])
    want = activity_bin(raw)
    got = [activity_bin_one(x) for x in raw[:, F["activity_7d"]].tolist()]
    np.testing.assert_array_equal(got, want)
    assert len(set(want.tolist())) >= 5


def test_warmed_activity_bins_equal_activity_bin(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bins :func:`warm_activity_bins` caches (one many-row call) are those of one-row
    :func:`activity_bin` calls, and :func:`activity_bin_one` reads them."""
    monkeypatch.setattr(item_context, "_BIN_MEMO", {})
    warm_activity_bins(400)
    assert len(item_context._BIN_MEMO) == 401
    for x in range(401):
        row = np.zeros((1, N_FEATURES), np.float32)
        row[0, F["activity_7d"]] = x
        assert item_context._BIN_MEMO[float(x)] == int(activity_bin(row)[0])
        assert activity_bin_one(float(x)) == int(activity_bin(row)[0])
    assert len(item_context._BIN_MEMO) == 401  # no miss
    assert len(set(item_context._BIN_MEMO.values())) >= 4


def test_one_user_recency_equals_the_vectorised_recency() -> None:
    """Random shows (repeats in a bucket, out of order, several per user) recorded one at a
    time vs batch-recorded per bucket; hours read both ways at every step."""
    rng = np.random.default_rng(6)
    n_users, k = 30, 4
    one, batch = TemplateRecency(n_users, k), TemplateRecency(n_users, k)
    seen: set[int] = set()  # which windows the hours compared fell in
    for step in range(400):
        b = 1000 + 2 * step + int(rng.integers(-2, 3))
        u = rng.choice(n_users, 2, replace=False)
        t = rng.integers(0, k, 2)
        for uu, tt in zip(u.tolist(), t.tolist(), strict=True):
            one.record_one(uu, b, tt)
        batch.record(u, b, t)
        np.testing.assert_array_equal(one.last, batch.last)
        np.testing.assert_array_equal(one.before, batch.before)
        q = 1001 + 2 * step
        vec = batch.hours(np.arange(n_users), q)  # the vectorised path (> 1 user)
        for uu in rng.choice(n_users, 4).tolist():
            h = one.hours_one(uu, q)
            assert all(isinstance(x, int) for x in h)
            np.testing.assert_array_equal(np.array(h, np.float32), vec[uu])
            np.testing.assert_array_equal(one.hours(np.array([uu]), q)[0], vec[uu])
            np.testing.assert_array_equal(np.array(encode_template_recency_one(h), np.float32),
                                          encode_template_recency(vec[uu]))
            seen |= {0 if x < 24 else 1 if x < 168 else 2 if x < TEMPLATE_HOURS_CAP else 3
                     for x in h}
    assert seen == {0, 1, 2, 3}


def test_warmed_caches_equal_encode() -> None:
    """The caches ``warm_encode_row`` fills from one many-row ``encode`` hold what one-row
    ``encode`` calls give."""
    for m in features._MEMOS:
        if m is not None:
            m.clear()
    features.warm_encode_row()
    assert all(m is None or j == features._ROW_LOG or len(m) >= 337
               for j, m in enumerate(features._MEMOS))
    raw = _random_rows(3000, 9)
    raw[:, F["activity_at_hour"]] = np.rint(raw[:, F["activity_at_hour"]])  # integers too
    rows = np.array([encode_row(r) for r in raw.tolist()])
    np.testing.assert_array_equal(_bits(rows), _bits(encode(raw)))
    for i in range(0, 3000, 101):
        np.testing.assert_array_equal(_bits(encode(raw[i:i + 1])[0]), _bits(rows[i]))
