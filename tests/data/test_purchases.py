"""The pipeline's purchase state (``FeatureState.record_purchase``/``hours_since_purchase``):
point in time, order-free, reset, snapshot round trip, replay of purchase events."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.data.features import HOURS_CAP, FeatureSpec, FeatureState

SPEC = FeatureSpec((), {}, tuple([1 / 168] * 168), ())


def _state(n: int = 3, start: int = 1000) -> FeatureState:
    return FeatureState(SPEC, ["UTC"] * n, start)


def test_point_in_time_and_cap() -> None:
    fs = _state()
    assert (fs.hours_since_purchase(np.arange(3), 1000) == HOURS_CAP).all()
    fs.record_purchase(np.array([0, 1]), np.array([1000, 990]))
    # a purchase of the decision's own bucket is invisible; the one before it counts
    assert fs.hours_since_purchase(np.arange(3), 1000).tolist() == [HOURS_CAP, 10, HOURS_CAP]
    assert fs.hours_since_purchase(np.arange(3), 1001).tolist() == [1, 11, HOURS_CAP]
    fs.record_purchase(np.array([0]), 1005)
    # at 1005 the purchase of 1005 is pending: the one of 1000 is seen
    assert fs.hours_since_purchase(np.array([0]), 1005).tolist() == [5]
    assert fs.hours_since_purchase(np.array([0]), 1006).tolist() == [1]
    assert fs.hours_since_purchase(np.array([1]), 990 + 400).tolist() == [HOURS_CAP]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_order_free_with_repeats_matches_brute_force(seed: int) -> None:
    g = np.random.default_rng(seed)
    users = g.integers(0, 4, 30)
    buckets = g.integers(900, 1000, 30)
    fs = _state(4)
    perm = g.permutation(30)
    fs.record_purchase(users[perm[:15]], buckets[perm[:15]])  # repeats in one call
    for i in perm[15:]:  # and late ones, one at a time
        fs.record_purchase(users[i:i + 1], buckets[i])
    for b in range(960, 1010, 3):
        for u in range(4):
            mine = buckets[users == u]
            if (mine >= b).sum() > 1:
                continue  # (two latest kept: decisions come after all but the last purchase)
            want = min(b - max((x for x in mine if x < b), default=-10**9), HOURS_CAP)
            assert fs.hours_since_purchase(np.array([u]), b).tolist() == [want], (u, b)


@pytest.mark.parametrize("seed", range(6))
def test_repeats_in_one_call_equal_one_row_at_a_time(seed: int) -> None:
    """A call with repeated users (the replay's purchase events of one hour) leaves the same
    arrays as recording its rows one at a time in bucket order (what the call did before it
    applied each user's latest and next-latest bucket only), from random starting states
    (never seen, ordered, equal or swapped last/before buckets)."""
    g = np.random.default_rng(seed)
    n = 12
    fs, ref = _state(n), _state(n)
    last, before = g.integers(995, 1005, n), g.integers(990, 1003, n)
    last[:3] = before[:3] = fs.a.last_buy[0]  # the first three: none seen yet
    for x in (fs, ref):
        x.a.last_buy[:n], x.a.last_buy_before[:n] = last, before
    for _ in range(20):
        k = int(g.integers(1, 40))
        users = g.integers(0, n, k)
        buckets = g.integers(990, 1010, k)
        fs.record_purchase(users, buckets)
        for i in np.argsort(buckets, kind="stable"):
            ref.record_purchase(users[i:i + 1], buckets[i:i + 1])
        assert np.array_equal(fs.a.last_buy, ref.a.last_buy)
        assert np.array_equal(fs.a.last_buy_before, ref.a.last_buy_before)
    fs.record_purchase(np.array([1, 1, 1]), 1020)  # one scalar bucket for every row
    ref.record_purchase(np.array([1]), 1020)
    assert np.array_equal(fs.a.last_buy, ref.a.last_buy)
    assert np.array_equal(fs.a.last_buy_before, ref.a.last_buy_before)


def test_reset_and_snapshot_round_trip() -> None:
    fs = _state()
    fs.record_purchase(np.array([0, 2]), np.array([990, 995]))
    back = FeatureState.from_arrays(SPEC, fs.to_arrays())
    assert (back.hours_since_purchase(np.arange(3), 1000)
            == fs.hours_since_purchase(np.arange(3), 1000)).all()
    old = {k: v for k, v in fs.to_arrays().items() if not k.startswith("last_buy")}
    assert (FeatureState.from_arrays(SPEC, old).hours_since_purchase(np.arange(3), 1000)
            == HOURS_CAP).all()  # a snapshot from before purchases: none known
    fs.reset_users(np.array([0]), 1000)
    assert fs.hours_since_purchase(np.arange(3), 1000).tolist() == [HOURS_CAP, HOURS_CAP, 5]


def test_replay_records_purchase_events_and_converted_pushes(tiny_synth: Path) -> None:
    from pushrl.data.features import iter_replay
    from pushrl.data.io import to_unix_seconds
    from pushrl.data.validate import load_dataset

    ds, _ = load_dataset(tiny_synth, quarantine=False)
    spec = FeatureSpec.fit(ds)
    *_, (_, res) = iter_replay(ds, spec, with_affinity=False)
    a, p = ds.activity, ds.pushes
    buys = pd.concat([
        pd.DataFrame({"u": a["user_id"][a["event"] == "purchase"],
                      "b": to_unix_seconds(a["ts"][a["event"] == "purchase"]) // 3600}),
        pd.DataFrame({"u": p["user_id"][p["converted"].fillna(False).astype(bool)],
                      "b": to_unix_seconds(p["ts"][p["converted"].fillna(False).astype(bool)])
                      // 3600})])
    assert len(buys) > 10
    end = int(max(buys["b"].max(), to_unix_seconds(p["ts"]).max() // 3600)) + 1
    last = buys.groupby("u")["b"].max()
    ix = {u: i for i, u in enumerate(ds.users["user_id"])}
    users = np.array([ix[u] for u in last.index])
    want = np.minimum(end - last.to_numpy(), HOURS_CAP)
    assert res.state.hours_since_purchase(users, end).tolist() == want.tolist()
