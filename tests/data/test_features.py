"""The single feature pipeline: point-in-time correct, and identical on every path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.data.features import (F, FEATURE_NAMES, FeatureSpec, FeatureState, encode,
                                  iter_replay, replay)
from pushrl.data.io import Dataset, to_unix_seconds
from pushrl.data.timezones import HOUR, TimezoneTable, local_clock
from pushrl.data.validate import load_dataset


@pytest.fixture(scope="module")
def small(tiny_synth: Path) -> Dataset:
    ds, _ = load_dataset(tiny_synth, quarantine=False)
    keep = set(ds.users["user_id"].iloc[:25])
    t_end = ds.pushes["ts"].min() + pd.Timedelta(days=9)
    p = ds.pushes[ds.pushes["user_id"].isin(keep) & (ds.pushes["ts"] < t_end)]
    p = p.reset_index(drop=True)
    a = ds.activity[ds.activity["user_id"].isin(keep) & (ds.activity["ts"] < t_end)]
    u = ds.users[ds.users["user_id"].isin(keep)].reset_index(drop=True)
    return Dataset(u, ds.items, a.reset_index(drop=True), p, meta=ds.meta)


def test_online_path_equals_replay(small: Dataset) -> None:
    """Feeding events one at a time (as the server does) gives the replay's features."""
    spec = FeatureSpec.fit(small)
    rep = replay(small, spec)
    uidx = {u: i for i, u in enumerate(small.users["user_id"])}
    state = FeatureState(spec, small.users["timezone"].tolist(), int(rep.bucket.min()))
    a = small.activity
    ev = pd.DataFrame({"sec": to_unix_seconds(a["ts"]), "kind": 0, "row": np.arange(len(a))})
    p = small.pushes
    de = pd.DataFrame({"sec": to_unix_seconds(p["ts"]), "kind": 1, "row": np.arange(len(p))})
    stream = pd.concat([ev, de]).sort_values(["sec", "kind"], kind="stable")
    a_cat = spec.item_categories(a["item_id"].astype(object).to_numpy())
    got = np.zeros_like(rep.features)
    for sec, kind, row in stream.itertuples(index=False):
        b = sec // HOUR
        if kind == 0:
            state.record_activity(np.array([uidx[a["user_id"].iloc[row]]]), b,
                                  a_cat[row:row + 1])
            continue
        u = np.array([uidx[p["user_id"].iloc[row]]])
        got[row] = state.features(u, b)[0]
        if bool(p["sent"].iloc[row]):
            state.record_push(u, b, np.array([bool(p["opened"].iloc[row])]))
    np.testing.assert_array_equal(got, rep.features)


def test_windows_match_brute_force(small: Dataset) -> None:
    spec = FeatureSpec.fit(small)
    rep = replay(small, spec)
    p = small.pushes
    sec = to_unix_seconds(p["ts"])
    b = sec // HOUR
    sent = p["sent"].to_numpy(bool)
    opened = p["opened"].fillna(False).to_numpy(bool)
    users = p["user_id"].astype(str).to_numpy()
    rng = np.random.default_rng(0)
    for i in rng.choice(len(p), 300, replace=False):
        same = users == users[i]
        prev = same & sent & (b < b[i])
        assert rep.features[i, F["sends_24h"]] == (prev & (b >= b[i] - 24)).sum()
        assert rep.features[i, F["sends_7d"]] == (prev & (b >= b[i] - 168)).sum()
        assert rep.features[i, F["opens_7d"]] == (prev & opened & (b >= b[i] - 168)).sum()
        expect_h = min(b[i] - b[prev].max(), 336) if prev.any() else 336
        assert rep.features[i, F["hours_since_push"]] == expect_h
    a = small.activity
    asec = to_unix_seconds(a["ts"]) // HOUR
    au = a["user_id"].astype(str).to_numpy()
    for i in rng.choice(len(p), 100, replace=False):
        n = ((au == users[i]) & (asec < b[i]) & (asec >= b[i] - 168)).sum()
        assert rep.features[i, F["activity_7d"]] == n


def test_no_future_leakage(small: Dataset) -> None:
    """Changing anything at or after a decision's bucket leaves its features unchanged."""
    spec = FeatureSpec.fit(small)
    base = replay(small, spec)
    cut = pd.Timestamp(small.pushes["ts"].iloc[len(small.pushes) // 2]).floor("h")
    p = small.pushes.copy()
    late = p["ts"] >= cut
    p.loc[late, "sent"] = True
    p.loc[late, "item_id"] = small.items["item_id"].iloc[0]
    p.loc[late, "opened"] = True
    a = small.activity
    extra = a[a["ts"] >= cut].copy()
    a2 = pd.concat([a, extra, extra]).sort_values("ts", kind="stable").reset_index(drop=True)
    changed = replay(Dataset(small.users, small.items, a2, p), spec)
    early = ~late.to_numpy()
    np.testing.assert_array_equal(changed.features[early], base.features[early])


def test_local_time_is_dst_correct() -> None:
    zones = ["America/New_York", "Europe/Berlin", "Australia/Sydney", "Asia/Kolkata", "UTC"]
    tzt = TimezoneTable(zones)
    rng = np.random.default_rng(1)
    sec = rng.integers(1_767_225_600, 1_798_761_600, 2000)  # 2026, covering every DST change
    sec = sec - sec % HOUR
    tz = rng.integers(0, len(zones), sec.size)
    hour, dow, _ = local_clock(sec, tzt.offset_seconds(tz, sec // HOUR))
    ts = pd.to_datetime(sec, unit="s", utc=True)
    for z, name in enumerate(zones):
        m = tz == z
        loc = ts[m].tz_convert(name)
        np.testing.assert_array_equal(hour[m], loc.hour)
        np.testing.assert_array_equal(dow[m], loc.dayofweek)


def test_encode_shape_and_finite(small: Dataset) -> None:
    rep = replay(small, FeatureSpec.fit(small))
    enc = encode(rep.features)
    assert enc.shape == (len(small.pushes), 10)
    assert np.isfinite(enc).all()
    assert rep.features.shape[1] == len(FEATURE_NAMES)


def test_state_refuses_to_rewind(small: Dataset) -> None:
    spec = FeatureSpec.fit(small)
    st = FeatureState(spec, ["UTC"], 1000)
    st.features(np.array([0]), 1010)
    with pytest.raises(ValueError, match="before the user's state"):
        st.features(np.array([0]), 1005)
    # late events are accepted and land in the current bucket (never earlier)
    st.record_push(np.array([0]), 1003)
    assert st.features(np.array([0]), 1011)[0, F["sends_24h"]] == 1


@pytest.mark.parametrize("pool", ["day", "weekpart", "week"])
def test_day_profile_is_the_pooled_hour_of_week_profile(small: Dataset, pool: str) -> None:
    """``day_profile`` equals pooling ``hour_of_week_profile`` over days, to the bit: on
    integer counts (what the state holds) and on arbitrary floats (same summation order)."""
    spec = FeatureSpec.fit(small)
    state = FeatureState(spec, ["UTC"] * 40, 0)
    rng = np.random.default_rng(3)
    for how in (rng.poisson(0.7, (168, 40)), rng.random((168, 40)) * 3):
        state.a.how[:, :40] = how.astype(np.float32)
        state.a.how_ver[:40] += 1  # counts written directly: invalidate the profile cache
        users = np.concatenate([rng.permutation(40), [7, 7]])
        dow = rng.integers(0, 7, users.size)
        prof = state.hour_of_week_profile(users).reshape(-1, 7, 24)
        want = {"day": prof[np.arange(users.size), dow],
                "week": np.add.reduce(prof, axis=1) / 7,
                "weekpart": np.stack([np.add.reduce(prof[:, :5], axis=1) / 5,
                                      np.add.reduce(prof[:, 5:], axis=1) / 2],
                                     axis=1)[np.arange(users.size), (dow >= 5).astype(int)]}
        got = state.day_profile(users, dow, pool)
        assert got.shape == (users.size, 24) and got.dtype == np.float64
        np.testing.assert_array_equal(got, want[pool])
        for i in (0, 5):  # a single user (the server's one decision)
            one = state.day_profile(users[i:i + 1], dow[i:i + 1], pool)
            np.testing.assert_allclose(one[0], want[pool][i], rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match="`pool` must be"):
        state.day_profile(np.array([0]), np.array([0]), "month")


@pytest.mark.parametrize("pool", ["day", "weekpart", "week"])
def test_cached_day_profile_equals_direct(pool: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small calls (the server's passes) read a per-user cache of pooled profiles: equal
    bit for bit to the direct computation while activity is committed, and after slots are
    reset with or without history (the cache must notice every change of the counts)."""
    import pushrl.data.features as features

    spec = FeatureSpec((), {}, tuple([1 / 168] * 168), ())
    rng = np.random.default_rng(7)
    fs = FeatureState(spec, ["UTC", "Asia/Kolkata", "America/New_York"] * 10, 480_000)
    b = 480_000
    for step in range(150):
        b += int(rng.integers(0, 3))
        u = rng.choice(30, 6, replace=False)
        fs.record_activity(u[:3], b)
        fs.advance(u, b)
        if step % 50 == 49:  # reuse slots: once empty, once with another user's history
            hist = fs.export_history(u[3:]) if step == 99 else None
            fs.reset_users(u[:3], b, history=hist)
        d = rng.integers(0, 7, u.size)
        cached = fs.day_profile(u, d, pool)
        assert len(fs._profiles) > 0
        monkeypatch.setattr(features, "PROFILE_CACHE_USERS", -1)
        direct = fs.day_profile(u, d, pool)
        monkeypatch.setattr(features, "PROFILE_CACHE_USERS", 16)
        assert np.array_equal(cached, direct), (step, np.abs(cached - direct).max())
    assert fs.day_profile(np.zeros(0, np.int64), np.zeros(0, np.int64), pool).shape == (0, 24)


def test_cached_day_profile_sees_late_activity(monkeypatch: pytest.MonkeyPatch) -> None:
    """A late activity event goes straight into the hour-of-week counts (it is placed in its
    own hour): the per-user profile cache must drop the user's old profile (it served a stale
    one before issue 20's fix)."""
    import pushrl.data.features as features

    spec = FeatureSpec((), {}, tuple([1 / 168] * 168), ())
    fs = FeatureState(spec, ["UTC", "Asia/Kathmandu"], 1000)
    users = np.array([0, 1])
    fs.record_activity(users, 1000)
    fs.advance(users, 1010)
    before = fs.day_profile(users, np.zeros(2, np.int64))  # cached
    fs.record_activity(users, np.array([1003, 1005]))  # late: committed at once
    after = fs.day_profile(users, np.zeros(2, np.int64))
    monkeypatch.setattr(features, "PROFILE_CACHE_USERS", -1)
    direct = fs.day_profile(users, np.zeros(2, np.int64))
    assert not np.array_equal(before, direct)
    assert np.array_equal(after, direct)


def test_decision_clock_is_local_time_at_and_local_time() -> None:
    """The server's one offset lookup (:meth:`FeatureState.decision_clock`) gives what
    ``local_time_at`` (exact times) and ``local_time`` (bucket starts) give, also across DST
    changes at a half hour (Lord Howe) and in half-hour zones."""
    zones = ["UTC", "Asia/Kolkata", "Australia/Lord_Howe", "America/New_York",
             "Asia/Kathmandu", "Europe/Berlin"]
    spec = FeatureSpec((), {}, tuple([1 / 168] * 168), ())
    fs = FeatureState(spec, zones, 0)
    rng = np.random.default_rng(3)
    # around Lord Howe's and New York's 2026 changes, plus random times
    t = np.concatenate([np.arange(1775313000 - 7200, 1775313000 + 7200, 900),
                        np.arange(1772953200 - 7200, 1772953200 + 7200, 900),
                        rng.integers(1.7e9, 1.9e9, 200)])
    u = rng.integers(0, len(zones), t.size)
    at, start = fs.decision_clock(u, t)
    for got, want in zip(at, fs.local_time_at(u, t), strict=True):
        assert np.array_equal(got, want)
    for got, want in zip(start, fs.local_time(u, t // 3600), strict=True):
        assert np.array_equal(got, want)


def test_iter_replay_featurises_only_the_needed_rows_alike(small: Dataset) -> None:
    """``need`` (bandit training: the sent pushes only) gives the needed decisions the same
    features and category affinities as featurising every decision, in the same chunks."""
    spec = FeatureSpec.fit(small)
    need = small.pushes["sent"].fillna(False).to_numpy(bool)
    need[::7] = True  # some unsent decisions too
    kw = {"with_affinity": True, "category_affinity": True, "chunk_rows": 500}
    full = list(iter_replay(small, spec, **kw))
    part = list(iter_replay(small, spec, need=need, **kw))
    assert [r.tolist() for r, _ in full] == [r.tolist() for r, _ in part]
    a, b = full[-1][1], part[-1][1]
    assert np.array_equal(a.features[need], b.features[need])
    assert np.array_equal(a.affinity[need], b.affinity[need])
    assert a.category_affinity is not None and b.category_affinity is not None
    assert np.array_equal(a.category_affinity[need], b.category_affinity[need])
    assert not b.features[~need].any()  # the others were skipped


def test_iter_replay_compact_holds_the_needed_rows_alike(small: Dataset) -> None:
    """``compact=True`` (bandit training) holds only the needed rows, ``result.rows`` =
    ``flatnonzero(need)``, with the features and affinities of the full replay, in the same
    chunks; without ``need`` it is refused."""
    spec = FeatureSpec.fit(small)
    need = small.pushes["sent"].fillna(False).to_numpy(bool)
    need[::5] = True
    kw = {"with_affinity": True, "category_affinity": True, "chunk_rows": 300}
    full = list(iter_replay(small, spec, **kw))
    part = list(iter_replay(small, spec, need=need, compact=True, **kw))
    assert [r.tolist() for r, _ in full] == [r.tolist() for r, _ in part]
    a, b = full[-1][1], part[-1][1]
    assert b.rows is not None and a.rows is None
    assert b.rows.tolist() == np.flatnonzero(need).tolist()
    assert b.features.shape == (need.sum(), a.features.shape[1])
    assert np.array_equal(a.features[need], b.features)
    assert np.array_equal(a.affinity[need], b.affinity)
    assert a.category_affinity is not None and b.category_affinity is not None
    assert np.array_equal(a.category_affinity[need], b.category_affinity)
    assert np.array_equal(a.user_index, b.user_index)
    with pytest.raises(ValueError, match="compact=True needs need="):
        next(iter_replay(small, spec, compact=True))


def test_item_categories_of_a_long_column_equal_the_lookup() -> None:
    """Long string columns are looked up once per distinct id (factorised): the same ids as
    one lookup per row, unknown and missing ("") items -1; other types take the plain path."""
    spec = FeatureSpec(("a", "b"), {"i1": 0, "i2": 1, "3": 1}, tuple([1 / 168] * 168),
                       (0.5, 0.5))
    rng = np.random.default_rng(0)
    ids = rng.choice(np.array(["i1", "i2", "i9", "", "3"], dtype=object), 5000)
    want = np.array([spec.item_category.get(str(i), -1) for i in ids], np.int64)
    assert np.array_equal(spec.item_categories(ids), want)
    mixed = np.array([3, "3", "i1"] * 600, dtype=object)  # not all strings
    assert spec.item_categories(mixed).tolist() == [1, 1, 0] * 600
