"""``GET /v1/users/{id}/profile``: the server's profile after ``pushrl state import`` equals
the batch profile (``pushrl profiles``) of the same log at the same time; it follows the
events the server records; errors are 4xx JSON."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from pushrl.data.io import Dataset, write_dataset
from pushrl.data import profiles
from pushrl.data.profiles import build_profiles
from pushrl.data.synth import SynthConfig, WorldParams, generate
from pushrl.serve.app import create_app
from pushrl.serve.history import import_history
from tests.serve.conftest import CoinFlip, doubles, make_cfg

H = 3600


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Dataset]:
    """A 120-user, 30-day low-activity log (churn happens; long enough for a churn model)."""
    ds, *_ = generate(SynthConfig(users=120, days=30, seed=5, slots_per_day=4,
                                  params=WorldParams(sessions_per_day_median=0.2)))
    d = tmp_path_factory.mktemp("prof") / "data"
    write_dataset(ds, d)
    from pushrl.data.validate import load_dataset

    loaded, rep = load_dataset(d, quarantine=False)
    assert rep.n_rejected == 0
    return d, loaded


def _same(served: object, batch: object) -> bool:
    """Equal; the server's JSON null stands for the batch table's NaN."""
    if isinstance(batch, float) and math.isnan(batch):
        return served is None
    return served == batch


@pytest.mark.parametrize("lookback", ["window", "whole"])
def test_server_profile_equals_batch_profile(world: tuple[Path, Dataset], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             lookback: str) -> None:
    """Every user's served profile at the log's end == the batch row, exactly (tolerance 0:
    one computation on the same events and the same fitted model; NaN == null). Both
    lookbacks of the churn feature (``choose_window_days`` forced to one, for import and
    batch alike): the window (what this world chooses) and the whole history."""
    def force(*args: Any, **kw: Any) -> dict[str, int]:
        w = int(args[6].window_days)  # the model being fitted
        return {"window_days": w if lookback == "window" else 0, "fit_window_days": w}

    monkeypatch.setattr(profiles, "choose_window_days", force)
    data, ds = world
    import_history(data, tmp_path / "state", quarantine=False)
    batch = build_profiles(ds)
    assert batch.model.coef is not None, batch.model.validation
    assert (batch.model.window_days > 0) == (lookback == "window")
    as_of = batch.as_of
    app = create_app(make_cfg(tmp_path, catalog=None), overrides=doubles(timing=CoinFlip(0.0)))
    with TestClient(app) as c:
        for row in batch.table.to_dict("records"):
            r = c.get(f"/v1/users/{row['user_id']}/profile", params={"as_of": as_of})
            assert r.status_code == 200, r.text
            got = r.json()
            assert got["as_of"].startswith("2026-")
            prof = got["profile"]
            assert set(prof) == set(row) - {"user_id"}
            bad = {k: (prof[k], v) for k, v in row.items()
                   if k != "user_id" and not _same(prof[k], v.item() if hasattr(v, "item")
                                                   else v)}
            assert not bad, (row["user_id"], bad)


def test_server_profile_follows_live_events_and_errors(world: tuple[Path, Dataset],
                                                       tmp_path: Path) -> None:
    """A purchase and a day of activity recorded by the server move the profile (frequency,
    monetary, recency, activity_7d); the live state's clock does not move on a read; unknown
    user 404, a time before the user's state 409, a bad time 422, all JSON."""
    data, ds = world
    import_history(data, tmp_path / "state", quarantine=False)
    batch = build_profiles(ds)
    uid = str(batch.table.sort_values("frequency")["user_id"].iloc[0])
    before = batch.table.set_index("user_id").loc[uid]
    t = batch.as_of + 2 * H
    app = create_app(make_cfg(tmp_path, catalog=None), overrides=doubles(timing=CoinFlip(0.0)))
    with TestClient(app) as c:
        srv = app.state.server
        u = srv.state.users[uid]
        clock = int(srv.state.fs.clock(u))
        r = c.post("/v1/events", json={"events": [
            {"user_id": uid, "event": "session", "ts": t},
            {"user_id": uid, "event": "purchase", "ts": t + 60, "revenue": 42.5,
             "item_id": str(ds.items["item_id"].iloc[0])}]})
        assert r.status_code == 200, r.text
        clock_after_events = int(srv.state.fs.clock(u))
        r = c.get(f"/v1/users/{uid}/profile", params={"as_of": t + 5 * H})
        assert r.status_code == 200, r.text
        p = r.json()["profile"]
        assert int(srv.state.fs.clock(u)) == clock_after_events >= clock  # a read moves nothing
        assert p["frequency"] == before["frequency"] + 1
        assert p["monetary"] == pytest.approx(before["monetary"] + 42.5)
        assert p["recency_days"] == pytest.approx(5 / 24 - 0)  # the purchase's hour -> as-of
        assert p["activity_7d"] >= 2
        assert 0.0 <= p["churn_risk"] <= 1.0
        r = c.get("/v1/users/nobody/profile")
        assert r.status_code == 404 and "unknown user_id" in r.json()["detail"]
        r = c.get(f"/v1/users/{uid}/profile", params={"as_of": batch.as_of - 100 * H})
        assert r.status_code == 409 and "before the user's state" in r.json()["detail"]
        for bad in ("yesterday", "\u00b2", "9" * 40, "1e9", "2026-03-02T09:00:00"):
            r = c.get(f"/v1/users/{uid}/profile", params={"as_of": bad})
            assert r.status_code == 422 and "as_of" in r.json()["detail"], (bad, r.text)
        r = c.get(f"/v1/users/{uid}/profile")  # default: now (or the user's clock)
        assert r.status_code == 200, r.text


def test_profile_without_imported_history(tmp_path: Path) -> None:
    """A server without history serves profiles from what it recorded (no churn model:
    churn_risk null, said in the module docs)."""
    app = create_app(make_cfg(tmp_path), overrides=doubles())
    with TestClient(app) as c:
        t = 1_772_409_600
        assert c.put("/v1/users/a", json={"timezone": "Europe/Berlin", "ts": t}).status_code \
            in (200, 201)
        c.post("/v1/events", json={"user_id": "a", "event": "session", "ts": t + 10 * H})
        r = c.get("/v1/users/a/profile", params={"as_of": t + 12 * H})
        assert r.status_code == 200, r.text
        p = r.json()["profile"]
        assert p["churn_risk"] is None and p["lifetime_activity"] == 1.0
        assert np.isfinite(p["engagement_score"]) and p["rfm_segment"] == "no_purchase"


def test_damaged_profile_snapshot_is_refused(world: tuple[Path, Dataset],
                                             tmp_path: Path) -> None:
    """The profile files are under the history's sha256: a changed model refuses the start
    (``check_history``, as for the feature snapshot) and a read of it says what to do."""
    from pushrl.data.profiles import MODEL_FILE
    from pushrl.serve.history import HISTORY_DIR, check_history
    from pushrl.serve.store import StateError

    data, _ = world
    import_history(data, tmp_path / "state", quarantine=False)
    f = tmp_path / "state" / HISTORY_DIR / MODEL_FILE
    f.write_text(f.read_text().replace('"as_of": ', '"as_of": 1'))
    with pytest.raises(StateError, match="damaged"):
        check_history(tmp_path / "state")


def test_live_profile_equals_batch_of_the_log_plus_what_the_server_recorded(
        world: tuple[Path, Dataset], tmp_path: Path) -> None:
    """After events, a sent decision and its feedback through the server, the served profile
    equals the batch profile of the imported log plus those rows, under the server's model
    and feature spec (exact; a changed revenue or click in the batch rows fails it)."""
    import pandas as pd

    from pushrl.data.features import FeatureSpec
    from pushrl.data.io import from_unix_seconds
    from pushrl.data.profiles import ProfileModel

    data, ds = world
    import_history(data, tmp_path / "state", quarantine=False)
    state = tmp_path / "state"
    model = ProfileModel.from_json((state / "history" / "profile_model.json").read_text())
    t0 = build_profiles(ds).as_of + 3 * H
    uid = str(ds.users["user_id"].iloc[7])
    item = str(ds.items["item_id"].iloc[3])
    app = create_app(make_cfg(tmp_path, catalog=None), overrides=doubles(timing=CoinFlip(1.0)))
    with TestClient(app) as c:
        spec = app.state.server.state.spec
        evs = [{"user_id": uid, "event": "session", "ts": t0},
               {"user_id": uid, "event": "view", "ts": t0 + 60, "item_id": item},
               {"user_id": uid, "event": "purchase", "ts": t0 + 120, "item_id": item,
                "revenue": 19.0}]
        assert c.post("/v1/events", json={"events": evs}).status_code == 200
        d = c.post("/v1/decide", json={"user_id": uid, "ts": t0 + 2 * H}).json()
        assert d["send"], d
        r = c.post("/v1/feedback", json={"decision_id": d["decision_id"], "clicked": True,
                                         "ts": t0 + 2 * H + 300})
        assert r.status_code == 200, r.text
        as_of = t0 + 30 * H
        served = c.get(f"/v1/users/{uid}/profile", params={"as_of": as_of}).json()["profile"]
    act = pd.DataFrame({"user_id": uid, "ts": from_unix_seconds(np.array([e["ts"] for e in evs])),
                        "event": [e["event"] for e in evs],
                        "item_id": [None, item, item], "revenue": [np.nan, np.nan, 19.0]})
    push = pd.DataFrame({"decision_id": "live-1", "user_id": [uid],
                         "ts": from_unix_seconds(np.array([t0 + 2 * H])), "sent": [True],
                         "item_id": [d["item_id"]], "opened": [True], "clicked": [True]})
    ds2 = Dataset(ds.users, ds.items,
                  pd.concat([ds.activity.astype({"event": str, "item_id": object,
                                                 "user_id": object}), act], ignore_index=True),
                  pd.concat([ds.pushes.astype({"item_id": object, "user_id": object}), push],
                            ignore_index=True))
    assert isinstance(spec, FeatureSpec)
    batch = build_profiles(ds2, as_of, model=model, spec=spec).table
    row = batch.set_index("user_id").loc[uid].to_dict()
    bad = {k: (served[k], v) for k, v in row.items()
           if not _same(served[k], v.item() if hasattr(v, "item") else v)}
    assert not bad, bad
    assert row["frequency"] >= 1 and row["sends_push"] >= 1


def test_no_as_of_makes_a_server_error(tmp_path: Path) -> None:
    """300 random ``as_of`` strings (digits, signs, ISO pieces, unicode) for a known user:
    every answer is 200, 409 or 422 JSON, never 5xx (seeded)."""
    rng = np.random.default_rng(0)
    alphabet = [*"0123456789-+:TZ .eE", "\u00b2", "\u0663", "\x00", "%", "/", "\u2212"]
    app = create_app(make_cfg(tmp_path), overrides=doubles())
    with TestClient(app) as c:
        t = 1_772_409_600
        c.put("/v1/users/a", json={"timezone": "Asia/Kolkata", "ts": t})
        seen = set()
        for i in range(300):
            n = int(rng.integers(0, 26))
            s = "".join(rng.choice(alphabet, n)) if i % 3 else str(int(rng.integers(0, 2**62)))
            r = c.get("/v1/users/a/profile", params={"as_of": s})
            assert r.status_code in (200, 409, 422), (s, r.status_code, r.text)
            assert "detail" in r.json() or "profile" in r.json()
            seen.add(r.status_code)
        assert 422 in seen
