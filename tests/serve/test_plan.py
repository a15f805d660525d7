"""`pushrl plan`: a day's sends decided in advance equal the server's decisions for the same
hours (same state, no feedback), the shard plan fixes the random streams (local == Ray), and
bad input gets one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from pushrl.data.io import to_unix_seconds, write_dataset
from pushrl.data.synth import generate
from pushrl.data.worlds import world_config
from pushrl.errors import PushrlError
from pushrl.policies.baselines import make_baseline
from pushrl.rules.guardrails import Guardrails
from pushrl.serve.app import create_app
from pushrl.serve.history import import_history
from pushrl.serve.plan import PLAN_COLUMNS, open_state, parse_date, plan, write_plan
from tests.cli_runner import run_pushrl
from tests.serve.conftest import make_cfg

H = 3600


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A night-owls log (odd zones, several peaks) imported into a state; the plan date is
    the second local day after the log."""
    ds, *_ = generate(world_config("night-owls", users=80, days=10, seed=5))
    root = tmp_path_factory.mktemp("plan")
    write_dataset(ds, root / "data")
    import_history(root / "data", root / "state", quarantine=False)
    end = int(to_unix_seconds(ds.pushes["ts"]).max())
    day = end // 86_400 + 2
    date = str(np.datetime64(day, "D"))
    return root / "state", date


def _server_day(state: Path, tmp: Path, date: str) -> pd.DataFrame:
    """Drive a real (in-process) server on a copy of ``state`` hour by hour through local
    day ``date``: every user is decided once per hour of their own day, no feedback."""
    shutil.copytree(state, tmp / "state")
    cfg = make_cfg(tmp, catalog=None)
    day = parse_date(date)
    rows = []
    with TestClient(create_app(cfg)) as c:
        st = c.app.state.server.state  # type: ignore[attr-defined]
        ids = np.empty(len(st.users), object)
        for uid, i in st.users.items():
            ids[i] = uid
        for b in range(day * 24 - 14, (day + 1) * 24 + 13):  # zones UTC-12 .. UTC+14
            _, _, d = st.fs.local_time(np.arange(len(ids)), b)
            active = ids[d == day]
            if not active.size:
                continue
            r = c.post("/v1/decide/batch", json={"requests": [
                {"user_id": u, "ts": b * H} for u in active]})
            assert r.status_code == 200, r.text
            for u, o in zip(active, r.json()["decisions"], strict=True):
                rows.append((u, b * H, o["send"], o["item_id"], o["p_send"], o["pscore"],
                             o["reason"]))
    return pd.DataFrame(rows, columns=["user_id", "t", "send", "item_id", "p_send", "pscore",
                                       "reason"])


def test_plan_equals_the_servers_decisions(imported: tuple[Path, str], tmp_path: Path) -> None:
    """Default policies (most-active-hour + the server's most-popular): the plan's every
    user-hour equals what the server decides for that hour on the same state: send, item,
    p_send, pscore and the blocking guardrail (exact)."""
    state, date = imported
    res = plan(state, date, registry=tmp_path / "policies", guardrails=Guardrails(),
               all_hours=True, shard_size=30)
    got = res.frame.assign(t=to_unix_seconds(res.frame["ts"]))
    want = _server_day(state, tmp_path, date)
    assert len(got) == len(want) > 0 and got["send"].sum() > 20
    key = ["user_id", "t"]
    m = got.merge(want, on=key, suffixes=("", "_srv"), validate="one_to_one")
    assert len(m) == len(want)
    assert (m["send"] == m["send_srv"]).all()
    sent = m["send"]
    # the item too, ties included (most-popular splits equal scores evenly and draws the
    # tie with the server's own keyed draw)
    assert (m.loc[sent, "item_id"] == m.loc[sent, "item_id_srv"]).all()
    assert (m.loc[sent, "pscore_item"] < 1.0).any()
    np.testing.assert_allclose(m["p_send"], m["p_send_srv"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(m["pscore"], m["pscore_srv"], rtol=0, atol=1e-12)
    assert (m["reason"] == m["reason_srv"]).all()
    # every user got exactly their own local day: 23-25 hours each (DST), caps held
    per_user = got.groupby("user_id").size()
    assert per_user.between(23, 25).all()
    assert got.groupby("user_id")["send"].sum().max() <= Guardrails().max_sends_per_day
    assert not got.loc[got["send"], "reason"].str.startswith("guardrail").any()
    quiet = got["local_hour"].isin([22, 23, 0, 1, 2, 3, 4, 5, 6, 7])
    assert not (got["send"] & quiet).any()
    assert res.meta["sends"] == int(got["send"].sum())


def test_shard_plan_fixes_the_streams_and_ray_matches_local(imported: tuple[Path, str],
                                                            tmp_path: Path) -> None:
    """A stochastic timing policy: the same seed gives the same plan locally twice, with
    another shard size, and on Ray with 2 workers; another seed gives another plan."""
    state, date = imported
    coin = make_baseline("random-volume", sends_per_day=2.0)

    def run(**kw: object) -> pd.DataFrame:
        return plan(state, date, registry=tmp_path / "policies", guardrails=Guardrails(),
                    overrides={"timing": coin}, shard_size=25, **kw).frame  # type: ignore[arg-type]

    a, b = run(seed=1), run(seed=1)
    pd.testing.assert_frame_equal(a, b)
    other = plan(state, date, registry=tmp_path / "policies", guardrails=Guardrails(),
                 overrides={"timing": coin}, shard_size=7, seed=1).frame
    key = ["user_id", "ts"]
    pd.testing.assert_frame_equal(a.sort_values(key, ignore_index=True),
                                  other.sort_values(key, ignore_index=True))
    assert len(a) > 20 and a["policy"].str.startswith("random-volume").all()
    assert 0 < a["p_send"].min() < 1
    assert not a.equals(run(seed=2))
    remote = run(seed=1, ray=True, workers=2)
    pd.testing.assert_frame_equal(a, remote)


def test_write_and_cli(imported: tuple[Path, str], tmp_path: Path) -> None:
    state, date = imported
    res = plan(state, date, registry=tmp_path / "policies")
    p = write_plan(res, tmp_path / "plan.parquet")
    back = pd.read_parquet(p)
    assert list(back.columns) == list(PLAN_COLUMNS) and len(back) == res.meta["sends"]
    out = run_pushrl("plan", "--state", state, "--date", date, "--out",
                     tmp_path / "cli.parquet", "--registry", tmp_path / "policies", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["sends"] == res.meta["sends"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cli.parquet"), back)


def test_a_running_servers_state_can_be_planned(imported: tuple[Path, str],
                                                tmp_path: Path) -> None:
    """The plan reads the state without its lock: a server may hold it meanwhile."""
    state, _ = imported
    shutil.copytree(state, tmp_path / "state")
    with TestClient(create_app(make_cfg(tmp_path, catalog=None))):
        st, pol = open_state(tmp_path / "state", tmp_path / "policies")
        assert len(st.users) == 80 and pol.item_label == "most-popular@server"
        st.log.close()


@pytest.mark.parametrize(("args", "pattern"), [
    (["--date", "2026-13-01"], "is not a date; give YYYY-MM-DD"),
    (["--date", "2020-01-01"], "has already started for user"),
    (["--date", "2099-01-01", "--out", "x.csv"], "must end in .parquet"),
])
def test_bad_input_one_line(imported: tuple[Path, str], tmp_path: Path, args: list[str],
                            pattern: str) -> None:
    state, _ = imported
    base = ["plan", "--state", str(state), "--registry", str(tmp_path / "p")]
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "x.parquet")]
    out = run_pushrl(*base, *args)
    assert out.returncode != 0
    assert pattern in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_missing_state_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PushrlError, match="pushrl state import"):
        plan(tmp_path / "none", "2026-04-01", registry=tmp_path / "p")


def test_held_out_users_are_never_planned_a_send(imported: tuple[Path, str],
                                                 tmp_path: Path) -> None:
    """A state that runs a live holdout: its held-out users get no planned send (the one
    HELD_OUT guardrail), the others are planned as usual."""
    from pushrl.rules.holdout import Holdout

    state, date = imported
    shutil.copytree(state, tmp_path / "state")
    hold = Holdout(0.3, "s1")
    with TestClient(create_app(make_cfg(tmp_path, catalog=None, holdout=hold))):
        pass  # the first start stores the holdout in the state's log
    res = plan(tmp_path / "state", date, registry=tmp_path / "policies", all_hours=True)
    df = res.frame
    held = hold.held_out(df["user_id"].to_numpy(object))
    assert 0 < held.mean() < 0.6
    assert not df.loc[held, "send"].any()
    assert (df.loc[held, "reason"] == "guardrail:held_out").all()
    assert df.loc[~held, "send"].sum() > 10


def test_the_server_serves_loaded_plans(imported: tuple[Path, str], tmp_path: Path) -> None:
    """`serve --plan FILE`: GET /v1/users/{id}/plan returns exactly the file's rows of that
    user in time order with the live status; an unknown user gets no hours; without a plan
    404 no_plan; the same user-hour in two files and a non-plan file are refused."""
    from dataclasses import replace

    from pushrl.serve.served_plans import ServedPlans

    state, date = imported
    res = plan(state, date, registry=tmp_path / "policies", guardrails=Guardrails(),
               all_hours=True, shard_size=30)
    f = write_plan(res, tmp_path / "p.parquet")
    shutil.copytree(state, tmp_path / "state")
    cfg = make_cfg(tmp_path, catalog=None)
    df = res.frame.sort_values(["user_id", "ts"])
    uid = str(df.loc[df["send"], "user_id"].iloc[0])
    mine = df[df["user_id"] == uid]
    with TestClient(create_app(replace(cfg, plans=(f,)))) as c:
        r = c.get(f"/v1/users/{uid}/plan")
        assert r.status_code == 200, r.text
        body = r.json()
        assert [h["send"] for h in body["hours"]] == mine["send"].tolist()
        want_items = [None if pd.isna(i) else i for i in mine["item_id"]]
        assert [h["item_id"] for h in body["hours"]] == want_items
        np.testing.assert_allclose([h["pscore"] for h in body["hours"]], mine["pscore"])
        ts = pd.to_datetime([h["ts"] for h in body["hours"]], utc=True)
        assert (ts == pd.to_datetime(mine["ts"], utc=True).to_numpy()).all()
        assert ts.is_monotonic_increasing and len(ts) == len(mine)
        assert body["live"] == {"known": True, "subscribed": True, "held_out": None}
        assert body["plans"][0]["date"] == date and len(body["plans"][0]["sha256"]) == 64
        r = c.get("/v1/users/nobody/plan")
        assert r.status_code == 200 and r.json()["hours"] == []
        assert r.json()["live"]["known"] is False
    with TestClient(create_app(cfg)) as c:
        r = c.get(f"/v1/users/{uid}/plan")
        assert r.status_code == 404 and r.json()["error"] == "no_plan"
    with pytest.raises(PushrlError, match="planned twice"):
        ServedPlans([f, f])
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"x": [1]}).to_parquet(bad)
    with pytest.raises(PushrlError, match="not a `pushrl plan` file"):
        ServedPlans([bad])
    out = run_pushrl("serve", "--state", tmp_path / "s2", "--plan", bad)
    assert out.returncode != 0 and "not a `pushrl plan` file" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
