"""`pushrl state import`: a log's history in the server's state, with day-1 features equal to
the batch replay's; restarts load the snapshot; a damaged snapshot is refused; the catalog and
the default most-popular come from the imported data (a world whose ids are not synth's)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from pushrl.data.features import FeatureSpec, replay
from pushrl.data.io import Dataset, from_unix_seconds, to_unix_seconds, write_dataset
from pushrl.data.synth import generate
from pushrl.data.worlds import world_config
from pushrl.errors import PushrlError
from pushrl.serve.app import create_app
from pushrl.serve.history import (
    HISTORY_DIR,
    STATE_FILE,
    check_history,
    history_meta,
    import_history,
    restore,
)
from pushrl.serve.store import DurableLog, StateError
from tests.serve.conftest import CoinFlip, doubles, make_cfg

H = 3600


def _renamed(ds: Dataset) -> Dataset:
    """The dataset with item ids unlike the synthetic world's (``sku-<n>-x``)."""
    new = {i: f"sku-{j * 7 + 3}-x" for j, i in enumerate(ds.items["item_id"].astype(str))}

    def ren(s: pd.Series) -> pd.Series:
        return s.astype(object).map(lambda v: new.get(str(v), v) if isinstance(v, str) else v)

    items = ds.items.assign(item_id=ren(ds.items["item_id"]))
    act = ds.activity.assign(item_id=ren(ds.activity["item_id"]))
    pushes = ds.pushes.assign(item_id=ren(ds.pushes["item_id"]))
    return Dataset(ds.users, items, act, pushes, meta=ds.meta)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Dataset]:
    """A small night-owls log (an epsilon-greedy logger, odd zones) with renamed items."""
    ds, *_ = generate(world_config("night-owls", users=60, days=10, seed=3))
    d = tmp_path_factory.mktemp("hist") / "data"
    write_dataset(_renamed(ds), d)
    from pushrl.data.validate import load_dataset

    loaded, rep = load_dataset(d, quarantine=False)
    assert rep.n_rejected == 0
    return d, loaded


def _day1_decisions(ds: Dataset, t1: np.ndarray) -> Dataset:
    """``ds`` plus one unsent decision per user at each time of ``t1`` (after the log)."""
    rows = pd.DataFrame({
        "user_id": np.repeat(ds.users["user_id"].to_numpy(object), t1.size),
        "ts": from_unix_seconds(np.tile(t1, len(ds.users))).to_numpy(),
        "sent": False, "opened": pd.NA, "item_id": None})
    pushes = pd.concat([ds.pushes, rows.astype({"opened": "boolean"})], ignore_index=True)
    pushes["ts"] = pd.to_datetime(pushes["ts"], utc=True)
    return Dataset(ds.users, ds.items, ds.activity, pushes)


def test_day1_features_equal_replay(world: tuple[Path, Dataset], tmp_path: Path) -> None:
    """Every user's features at two decisions after the log (the first hour after it and
    day 1, 09:00 UTC) equal replay()'s on the log plus those decisions: exact (float32,
    tolerance 0: one pipeline on the same events)."""
    data, ds = world
    rep = import_history(data, tmp_path / "state", quarantine=False)
    assert rep["n_users"] == len(ds.users) and rep["n_rejected"] == 0
    end = int(to_unix_seconds(ds.pushes["ts"]).max())
    t1 = np.array([(end // H + 1) * H + 60, (end // 86400 + 1) * 86400 + 9 * H + 5], np.int64)
    spec = FeatureSpec.fit(ds)
    ds2 = _day1_decisions(ds, t1)
    want = replay(ds2, spec).features[len(ds.pushes):]  # rows: user-major, then time
    cfg = make_cfg(tmp_path, catalog=None)
    app = create_app(cfg, overrides=doubles(timing=CoinFlip(0.0)))
    with TestClient(app) as c:
        assert app.state.server.state.spec.to_dict() == spec.to_dict()
        for uid in ds.users["user_id"]:
            for t in t1.tolist():
                r = c.post("/v1/decide", json={"user_id": uid, "ts": t})
                assert r.status_code == 200, r.text
    conn = sqlite3.connect(tmp_path / "state" / "log.sqlite3")
    blobs = conn.execute("SELECT features FROM decisions ORDER BY seq").fetchall()
    served = np.stack([np.frombuffer(b[0], np.float32) for b in blobs])
    np.testing.assert_array_equal(served, want)
    # the restart loads the snapshot and re-applies the journal: same state
    app2 = create_app(cfg, overrides=doubles(timing=CoinFlip(0.0)))
    with TestClient(app2):
        st = app2.state.server.state
        n = len(ds.users)
        far = int(t1.max() // H + 30)
        again = st.fs.copy_users(np.arange(n)).features(np.arange(n), far)
    with TestClient(create_app(cfg, overrides=doubles(timing=CoinFlip(0.0)))) as c3:
        st3 = c3.app.state.server.state  # type: ignore[attr-defined]
        np.testing.assert_array_equal(st3.fs.copy_users(np.arange(n)).features(
            np.arange(n), far), again)


def test_catalog_and_popularity_from_imported_data(world: tuple[Path, Dataset],
                                                   tmp_path: Path) -> None:
    """Out of the box (no policy promoted) the server recommends only the imported world's
    items (``sku-...``), ranked by most-popular fitted on the imported pushes."""
    data, ds = world
    import_history(data, tmp_path / "state", quarantine=False)
    cfg = make_cfg(tmp_path, catalog=None)
    app = create_app(cfg, overrides={"timing": doubles()["timing"]})  # default item policy
    end = int(to_unix_seconds(ds.pushes["ts"]).max())
    with TestClient(app) as c:
        srv = app.state.server
        assert srv.engine.policies.item.label == "most-popular@server"
        assert "--catalog data" in srv._popular.source
        items = set(ds.items["item_id"].astype(str))
        got = {c.post("/v1/decide", json={"user_id": u, "ts": end + h * H}).json()["item_id"]
               for u in ds.users["user_id"][:10] for h in (2, 8, 14, 20)} - {None}
        assert got and got <= items and all(i.startswith("sku-") for i in got)
        scores = srv._popularity()
        best = srv.state.item_list[int(np.argmax(scores))].item_id
        assert got == {best}


def test_damaged_or_missing_snapshot_is_refused(world: tuple[Path, Dataset],
                                                tmp_path: Path) -> None:
    data, _ = world
    import_history(data, tmp_path / "state", quarantine=False)
    snap = tmp_path / "state" / HISTORY_DIR / STATE_FILE
    raw = bytearray(snap.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    snap.write_bytes(bytes(raw))
    cfg = make_cfg(tmp_path, catalog=None)
    with pytest.raises(StateError, match=r"damaged.*sha256"), \
            TestClient(create_app(cfg, overrides=doubles())):
        pass
    with pytest.raises(StateError, match=r"damaged.*sha256"):
        check_history(tmp_path / "state")  # what `pushrl serve` checks before starting
    snap.unlink()
    with pytest.raises(StateError, match="missing"):
        check_history(tmp_path / "state")


def test_import_refuses_a_used_state_dir(world: tuple[Path, Dataset], tmp_path: Path) -> None:
    data, _ = world
    import_history(data, tmp_path / "state", quarantine=False)
    with pytest.raises(PushrlError, match="new --state"):
        import_history(data, tmp_path / "state", quarantine=False)


def test_other_categories_replay_the_events(world: tuple[Path, Dataset],
                                            tmp_path: Path) -> None:
    """A promoted policy's spec with other categories: the snapshot cannot serve, the
    imported events are replayed under that spec (== replay of the log under it)."""
    data, ds = world
    import_history(data, tmp_path / "state", quarantine=False)
    other = ds.items.assign(category=[f"c{j % 3}" for j in range(len(ds.items))])
    spec2 = FeatureSpec.fit(Dataset(ds.users, other, ds.activity, ds.pushes))
    log = DurableLog(tmp_path / "state")
    try:
        meta = history_meta(log)
        assert meta is not None and tuple(meta["categories"]) != spec2.categories
        fs = restore(log.dir, meta, spec2).fs
    finally:
        log.close()
    want = replay(ds, spec2).state
    n = len(ds.users)
    b = int(to_unix_seconds(ds.pushes["ts"]).max()) // H + 5
    cats = np.broadcast_to(np.arange(spec2.n_categories), (n, spec2.n_categories))
    np.testing.assert_array_equal(fs.features(np.arange(n), b), want.features(np.arange(n), b))
    np.testing.assert_array_equal(fs.affinity(np.arange(n), cats),
                                  want.affinity(np.arange(n), cats))


def test_catalog_start_reads_only_what_it_needs(world: tuple[Path, Dataset],
                                                tmp_path: Path) -> None:
    """``--catalog`` on the non-synthetic world: the column-pruned read fits the same spec and
    most-popular as the whole validated log, and the server serves only that world's items."""
    from pushrl.data.validate import load_dataset
    from pushrl.serve.history import catalog_dataset, popularity

    data, ds = world
    lean = catalog_dataset(data)
    full, _ = load_dataset(data, quarantine=False)
    assert FeatureSpec.fit(lean) == FeatureSpec.fit(full)
    assert popularity(lean) == popularity(full)
    cfg = make_cfg(tmp_path, catalog=data)
    app = create_app(cfg, overrides={"timing": doubles()["timing"]})
    end = int(to_unix_seconds(ds.pushes["ts"]).max())
    with TestClient(app) as c:
        srv = app.state.server
        assert srv.state.spec == FeatureSpec.fit(full)
        assert [it.item_id for it in srv.state.item_list] == list(ds.items["item_id"])
        c.put("/v1/users/new", json={"timezone": "UTC", "ts": end})
        got = {c.post("/v1/decide", json={"user_id": "new", "ts": end + h * H}).json()["item_id"]
               for h in (10, 14, 18)} - {None}
        assert got and all(i.startswith("sku-") for i in got)


def test_cli_state_import_and_serve_history(world: tuple[Path, Dataset], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`pushrl state import` (JSON report) and `pushrl serve --history` (imports once, then
    starts on the state; `--late-bound` reaches the server's config)."""
    import json

    import uvicorn
    from typer.testing import CliRunner

    from pushrl.cli.main import app as cli
    from pushrl.cli.serve import command
    from tests.serve.test_cli_serve import serve_args

    data, ds = world
    res = CliRunner().invoke(cli, ["state", "import", str(data), "--state",
                                   str(tmp_path / "a"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["n_users"] == len(ds.users)
    got: list[uvicorn.Config] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: got.append(self.config))
    for _ in range(2):  # the second start finds the history and does not import again
        command(**serve_args(state=tmp_path / "b", history=data, late_bound=12,
                             registry=tmp_path / "policies"))  # type: ignore[arg-type]
    assert got[0].app.state.cfg.late_bound_hours == 12  # type: ignore[union-attr]
    log = DurableLog(tmp_path / "b")
    try:
        meta = history_meta(log)
        assert meta is not None and meta["n_users"] == len(ds.users)
        assert log.query("SELECT COUNT(*) FROM users")[0][0] == len(ds.users)
    finally:
        log.close()


def test_guardrail_counters_carry_the_logs_last_sends(world: tuple[Path, Dataset],
                                                      tmp_path: Path) -> None:
    """After the import, the guardrails count the log's sends: per user, sends on the local
    day and in the weekly window of a decision right after the log equal a brute-force
    count over the log (exact integers)."""
    from pushrl.data.timezones import local_clock
    from pushrl.rules.guardrails import in_week_window
    from pushrl.units import utc_offset_seconds

    data, ds = world
    import_history(data, tmp_path / "state", quarantine=False)
    end = int(to_unix_seconds(ds.pushes["ts"]).max())
    t = end + 60
    b = t // H
    sent = ds.pushes[ds.pushes["sent"].fillna(False).to_numpy(bool)]
    s_ts = to_unix_seconds(sent["ts"])
    with TestClient(create_app(make_cfg(tmp_path, catalog=None), overrides=doubles())) as c:
        st = c.app.state.server.state  # type: ignore[attr-defined]
        uids = list(ds.users["user_id"])
        tz = dict(zip(ds.users["user_id"], ds.users["timezone"], strict=True))
        u = np.array([st.users[x] for x in uids])
        days = np.array([int(local_clock(t, utc_offset_seconds(t, tz[x]))[2]) for x in uids])
        today, week = st.sends.counts(u, np.full(u.size, b), days)
    want_today, want_week = [], []
    for x in uids:
        mine = s_ts[(sent["user_id"] == x).to_numpy()]
        d = [int(local_clock(s, utc_offset_seconds(int(s), tz[x]))[2]) for s in mine]
        want_today.append(sum(v == days[len(want_today)] for v in d))
        want_week.append(int(sum(in_week_window(int(s) // H, b) for s in mine)))
    assert sum(want_week) > 10 and sum(want_today) > 0
    np.testing.assert_array_equal(today, want_today)
    np.testing.assert_array_equal(week, want_week)


def test_backup_and_restore_carry_the_history(world: tuple[Path, Dataset],
                                              tmp_path: Path) -> None:
    """`pushrl logs backup` keeps the snapshot files (and popularity); a restore into a new
    state dir starts with the same features."""
    from pushrl.serve.backup import backup
    from pushrl.serve.backup import restore as restore_backup

    data, ds = world
    import_history(data, tmp_path / "a" / "state", quarantine=False)
    n = len(ds.users)
    b = int(to_unix_seconds(ds.pushes["ts"]).max()) // H + 3

    def features(tmp: Path) -> np.ndarray:
        with TestClient(create_app(make_cfg(tmp, catalog=None), overrides=doubles())) as c:
            srv = c.app.state.server  # type: ignore[attr-defined]
            assert srv._item_scores  # most-popular's scores came along
            return np.asarray(srv.state.fs.copy_users(np.arange(n)).features(np.arange(n), b))

    want = features(tmp_path / "a")
    backup(tmp_path / "a" / "state", tmp_path / "b.sqlite3")
    restore_backup(tmp_path / "b.sqlite3", tmp_path / "r" / "state")
    np.testing.assert_array_equal(features(tmp_path / "r"), want)


def test_import_carries_the_logs_unsubscribes(world: tuple[Path, Dataset],
                                              tmp_path: Path) -> None:
    """Users who unsubscribed in the imported log (outcome ``unsubscribed``) get no push from
    the server, before and after a restart, until `PUT /v1/users` ``subscribed=true``; the
    others are served as usual."""
    from pushrl.rules.guardrails import Guardrails

    data, ds = world
    rep = import_history(data, tmp_path / "state", quarantine=False)
    p = ds.pushes
    gone = set(p.loc[p["unsubscribed"].fillna(False).to_numpy(bool), "user_id"].astype(str))
    assert gone and rep["n_unsubscribed"] == len(gone)
    uids = [str(x) for x in ds.users["user_id"]]
    t = (int(to_unix_seconds(p["ts"]).max()) // H + 1) * H
    cfg = make_cfg(tmp_path, catalog=None, guardrails=Guardrails(0, 0, 0, 0))
    for k in range(2):  # the second start rebuilds from the snapshot and the journal
        with TestClient(create_app(cfg, overrides=doubles())) as c:
            r = c.post("/v1/decide/batch", json={"requests": [
                {"user_id": u, "ts": t + k * H} for u in uids]})
            assert r.status_code == 200, r.text
            got = {u: (o["send"], o["reason"]) for u, o in zip(uids, r.json()["decisions"],
                                                             strict=True)}
            assert got == {u: (False, "guardrail:unsubscribed") if u in gone else (True, "policy")
                           for u in uids}
    back = sorted(gone)[0]
    with TestClient(create_app(cfg, overrides=doubles())) as c:
        tz = str(ds.users.set_index("user_id").loc[back, "timezone"])
        r = c.put(f"/v1/users/{back}", json={"timezone": tz, "subscribed": True})
        assert r.json()["subscribed"] is True, r.text
        assert c.post("/v1/decide", json={"user_id": back, "ts": t + 2 * H}).json()["send"]


def test_import_carries_the_need_state(world: tuple[Path, Dataset], tmp_path: Path) -> None:
    """`state import`: the log's purchases (events, converted pushes) are in the served need
    state, from the snapshot and from a replay under another spec alike (== replay)."""
    data, ds = world
    import_history(data, tmp_path / "state", quarantine=False)
    n = len(ds.users)
    b = int(to_unix_seconds(ds.pushes["ts"]).max()) // H + 5
    want = replay(ds, FeatureSpec.fit(ds)).state.hours_since_purchase(np.arange(n), b)
    assert (want < 336).sum() >= 5  # the log has purchases
    cfg = make_cfg(tmp_path, catalog=None)
    with TestClient(create_app(cfg, overrides=doubles(timing=CoinFlip(0.0)))) as c:
        st = c.app.state.server.state  # type: ignore[attr-defined]
        np.testing.assert_array_equal(st.fs.hours_since_purchase(np.arange(n), b), want)
    other = ds.items.assign(category=[f"c{j % 3}" for j in range(len(ds.items))])
    spec2 = FeatureSpec.fit(Dataset(ds.users, other, ds.activity, ds.pushes))
    log = DurableLog(tmp_path / "state")
    try:
        fs = restore(log.dir, history_meta(log), spec2).fs  # type: ignore[arg-type]
    finally:
        log.close()
    np.testing.assert_array_equal(fs.hours_since_purchase(np.arange(n), b), want)
