"""The server's channel slot (issue 17, item 4): ``decide`` chooses push / email / in-app or
none per send with the channel policy under each channel's opt-in, quiet hours and caps (the
ONE rules of :mod:`pushrl.rules.channels`), logs ``channel`` + ``pscore_channel``, survives a
restart, and exports a log the next training round (``channels`` rounds, ``sim fit``'s
per-channel response) reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from pushrl.data.features import (
    FeatureSpec,
    ItemCatalog,
    replay,
    template_recency_replay,
    user_index,
)
from pushrl.data.io import to_unix_seconds, write_dataset
from pushrl.data.synth import generate
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import world_config
from pushrl.policies.channel_policy import (
    ChannelArms,
    channel_rounds,
    logged_opt_in,
    train_channel_policy,
)
from pushrl.policies.vw import VWConfig
from pushrl.rules.channels import DEFAULT_CHANNELS, ChannelSet
from pushrl.rules.guardrails import Guardrails, in_week_window
from pushrl.serve.app import create_app
from pushrl.serve.channels import load_channel_config
from pushrl.serve.export import export
from pushrl.sim.fit import fit_sim
from pushrl.sim.response import FittedResponse
from pushrl.units import HOUR
from tests.serve.conftest import CoinFlip, UniformItem, doubles, make_cfg

NAMES = DEFAULT_CHANNELS.names  # push, email, in_app


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A synthetic channel world's logs (the server's --catalog) and a channel policy
    trained on them."""
    tmp = tmp_path_factory.mktemp("chworld")
    ds_raw, _, _ = generate(world_config("default", users=300, days=7, seed=3, channels=True))
    write_dataset(ds_raw, tmp / "logs")
    ds, _ = load_dataset(tmp / "logs", quarantine=False)
    pol = train_channel_policy(channel_rounds(ds, DEFAULT_CHANNELS), VWConfig(learning_rate=0.05))
    art = pol.save(tmp / "reg" / "chan")
    return {"logs": tmp / "logs", "policy": art, "ds": ds}


def _client(tmp: Path, world: dict[str, Any], policy: bool = True,
            channels: ChannelSet = DEFAULT_CHANNELS) -> TestClient:
    # no global quiet hours or caps: each channel's own are what binds
    cfg = make_cfg(tmp, catalog=world["logs"], channels=channels, guardrails=Guardrails(0, 0, 0, 0),
                   channel_policy=str(world["policy"]) if policy else None)
    c = TestClient(create_app(cfg, overrides=doubles(timing=CoinFlip(0.7), item=UniformItem())))
    c.__enter__()
    return c


def _t0(world: dict[str, Any]) -> int:
    return int(to_unix_seconds(world["ds"].pushes["ts"]).max()) // HOUR * HOUR + 3600


def _users(world: dict[str, Any]) -> list[str]:
    return world["ds"].users["user_id"].astype(str).tolist()[:16]


def _put_users(c: TestClient, world: dict[str, Any]) -> None:
    t0 = _t0(world)
    for j, u in enumerate(_users(world)):
        body: dict[str, Any] = {"timezone": "UTC", "ts": t0}
        if j == 0:
            body["channels"] = ["email"]
        elif j == 1:
            body["channels"] = []
        elif j == 2:
            body["channels"] = ["push", "in_app"]
        r = c.put(f"/v1/users/{u}", json=body)
        assert r.status_code == 200, r.text
        want = {0: ["email"], 1: [], 2: ["push", "in_app"]}.get(j, list(NAMES))
        assert r.json()["channels"] == want


def _traffic(c: TestClient, world: dict[str, Any], hours: range, seed: int,
             batch: bool = False, feedback: bool = True) -> list[dict[str, Any]]:
    """Events, decisions each hour (single or batch) and feedback with channel-dependent
    open rates (push 0.6, email 0.15, in-app 0.35)."""
    rng = np.random.default_rng(seed)
    users = _users(world)
    items = world["ds"].items["item_id"].astype(str).tolist()
    t0 = _t0(world)
    rate = {"push": 0.6, "email": 0.15, "in_app": 0.35}
    out = []
    for h in hours:
        t = t0 + h * 3600
        for u in users:
            if rng.random() < 0.4:
                r = c.post("/v1/events", json={"user_id": u, "ts": t, "event": "view",
                                               "item_id": items[int(rng.integers(len(items)))]})
                assert r.status_code == 200, r.text
        reqs = [{"user_id": u, "ts": t + 60} for u in users]
        if batch:
            r = c.post("/v1/decide/batch", json={"requests": reqs})
            assert r.status_code == 200, r.text
            got = r.json()["decisions"]
        else:
            got = []
            for q in reqs:
                r = c.post("/v1/decide", json=q)
                assert r.status_code == 200, r.text
                got.append(r.json())
        out += got
        if feedback:
            for d in got:
                if d["send"]:
                    op = bool(rng.random() < rate[d["channel"]])
                    r = c.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                                     "opened": op, "clicked": op and
                                                     bool(rng.random() < 0.3),
                                                     "ts": t + 120})
                    assert r.status_code == 200, r.text
    return out


def _hour(d: dict[str, Any]) -> int:
    return int(d["ts"][11:13])


def test_decide_chooses_channels_under_opt_in_quiet_hours_and_caps(
        tmp_path: Path, world: dict[str, Any]) -> None:
    c = _client(tmp_path, world)
    try:
        _put_users(c, world)
        got = _traffic(c, world, range(0, 40), 0)
        got += _traffic(c, world, range(40, 52), 1, batch=True)
    finally:
        c.__exit__(None, None, None)
    users = _users(world)
    by_user: dict[str, list[dict[str, Any]]] = {u: [] for u in users}
    for u, d in zip(users * (len(got) // len(users)), got, strict=True):
        by_user[u].append(d)
    decided = [d for d in got if d.get("pscore_channel") is not None]
    sent = [d for d in got if d["send"]]
    assert len(sent) > 100
    for d in sent:
        assert d["channel"] in NAMES and 0 < d["pscore_channel"] <= 1
        assert d["channel_policy"] == f"chan@{world['policy'].name}"
        assert d["pscore_channel_item"] == pytest.approx(d["pscore_channel"] * (
            d["pscore"] / d["p_send"]), rel=1e-9)
    none = [d for d in decided if not d["send"]]
    for d in none:
        assert d["reason"] == "channel:none" and d.get("channel") is None
        assert d.get("item_id") is None
    assert {d["channel"] for d in sent} == set(NAMES)
    # opt-in: email only; nothing (always none, with probability 1); push + in-app
    assert {d["channel"] for d in by_user[users[0]] if d["send"]} == {"email"}
    assert not any(d["send"] for d in by_user[users[1]])
    assert all(d["pscore_channel"] == 1.0 for d in by_user[users[1]]
               if d.get("pscore_channel") is not None)
    assert {d["channel"] for d in by_user[users[2]] if d["send"]} <= {"push", "in_app"}
    # each channel's own quiet hours and caps (UTC users: local = UTC)
    for u in users:
        days: dict[tuple[str, str], int] = {}
        for d in by_user[u]:
            if d["send"]:
                k = (d["channel"], d["ts"][:10])
                days[k] = days.get(k, 0) + 1
                if d["channel"] == "push":
                    assert 8 <= _hour(d) < 22
        for (ch, _), k in days.items():
            cap = DEFAULT_CHANNELS.channels[NAMES.index(ch)].guardrails.max_sends_per_day
            assert cap == 0 or k <= cap


def test_channel_log_round_trips_to_training_and_matches_offline_policy(
        tmp_path: Path, world: dict[str, Any]) -> None:
    """serve -> export -> validate -> channel rounds + the offline policy's probability of
    every logged channel (features, recency, opt-in and the channel guardrails replayed
    from the exported log) -> sim fit's per-channel response."""
    c = _client(tmp_path, world)
    try:
        _put_users(c, world)
        got = _traffic(c, world, range(0, 60), 3)
        got += _traffic(c, world, range(60, 72), 4, batch=True)
    finally:
        c.__exit__(None, None, None)
    export(tmp_path / "state", tmp_path / "out")
    ds, report = load_dataset(tmp_path / "out", quarantine=False)
    p = ds.pushes
    assert {"channel", "pscore_channel"} <= set(p.columns)
    assert ds.users["channels"].tolist()[:3] == ["email", "", "push,in_app"]
    decided = {d["decision_id"]: d for d in got if d.get("pscore_channel") is not None}
    logged = p[p["pscore_channel"].notna()]
    assert set(logged["decision_id"]) == set(decided)
    for did, ch, pc, sent in zip(logged["decision_id"], logged["channel"],
                                 logged["pscore_channel"], logged["sent"], strict=True):
        assert decided[did].get("channel") == (ch if isinstance(ch, str) else None)
        assert decided[did]["pscore_channel"] == pytest.approx(pc, rel=1e-12)
        assert bool(sent) == decided[did]["send"]
    assert p.loc[p["pscore_channel"].notna() & ~p["sent"], "item_id"].notna().all()

    spec = FeatureSpec.from_dict(json.loads((tmp_path / "state" / "feature_spec.json")
                                            .read_text()))
    rounds = channel_rounds(ds, DEFAULT_CHANNELS, spec=spec)
    assert rounds.n_rounds == len(decided)

    # parity: the offline policy on the replayed state gives the logged pscore_channel
    from pushrl.policies.registry import load_policy

    pol = load_policy(world["policy"])
    names = list(NAMES)
    arm = np.array([names.index(x) if isinstance(x, str) else -1 for x in p["channel"]])
    arm[~p["sent"].to_numpy(bool)] = -1
    users = user_index(ds, p["user_id"])
    buckets = to_unix_seconds(p["ts"]) // HOUR
    hours = template_recency_replay(users, buckets, arm, len(ds.users), len(names))
    rows = np.flatnonzero(p["pscore_channel"].notna().to_numpy())
    # each channel's sends today (UTC day) and in the weekly window before the row (brute force)
    today = np.zeros((rows.size, len(names)), np.int64)
    week = np.zeros((rows.size, len(names)), np.int64)
    sent_rows = np.flatnonzero(arm >= 0)
    for j, r in enumerate(rows.tolist()):
        prev = sent_rows[(sent_rows < r) & (users[sent_rows] == users[r])]
        for s in prev.tolist():
            if buckets[s] // 24 == buckets[r] // 24:
                today[j, arm[s]] += 1
            week[j, arm[s]] += in_week_window(int(buckets[s]), int(buckets[r]))
    opted = logged_opt_in(ds, DEFAULT_CHANNELS, users, buckets, arm)[rows]
    allowed = DEFAULT_CHANNELS.allowed(buckets[rows] % 24, today, week, opted)
    # parity: the OPE/training mask of channel_rounds is the server's channel guardrails
    np.testing.assert_array_equal(rounds.row, rows)
    np.testing.assert_array_equal(np.asarray(rounds.context.mask, bool)[:, 1:], allowed)
    assert not allowed.all()  # quiet hours / caps / opt-in blocked some channel
    cat = ItemCatalog(ds.items, spec)
    order = [cat.feature_names.index(n[5:]) for n in pol.vw.layout.shared_names
             if n.startswith("item_")]
    cat.features = cat.features[:, order]
    cat.feature_names = tuple(cat.feature_names[j] for j in order)
    arms = ChannelArms(DEFAULT_CHANNELS, spec, cat)
    rep = replay(ds, spec, with_affinity=False)
    items = cat.indices(p["item_id"].astype(str).to_numpy()[rows])
    dist = pol.action_dist(arms.context(rep.features[rows], items, hours[rows], allowed))
    chosen = np.where(arm[rows] >= 0, arm[rows] + 1, 0)
    np.testing.assert_allclose(dist[np.arange(rows.size), chosen],
                               p["pscore_channel"].to_numpy(float)[rows], rtol=1e-4)

    # the fitted simulator learns a per-channel response from the served log
    fitted = FittedResponse(fit_sim(ds, report))
    assert fitted.channels == ("push", "email", "in_app")
    op = fitted.model.glm("open")
    assert float(op.coef[op.names.index("channel=email")]) < -0.5  # 0.15 vs push's 0.6


def test_unsubscribe_leaves_one_channel_and_survives_restart(
        tmp_path: Path, world: dict[str, Any]) -> None:
    c = _client(tmp_path, world, policy=False)  # the uniform logger
    users = _users(world)
    try:
        _put_users(c, world)
        got = _traffic(c, world, range(0, 24), 5, feedback=False)
        who = dict(zip([d["decision_id"] for d in got], users * 24, strict=True))
        push = next(d for d in got if d["send"] and d["channel"] == "push"
                    and who[d["decision_id"]] not in users[:3])
        u = who[push["decision_id"]]
        r = c.post("/v1/feedback", json={"decision_id": push["decision_id"],
                                         "unsubscribed": True})
        assert r.status_code == 200, r.text
        r = c.put(f"/v1/users/{u}", json={"timezone": "UTC"})
        assert r.json()["channels"] == ["email", "in_app"] and r.json()["subscribed"]
        bad = c.put(f"/v1/users/{users[4]}", json={"timezone": "UTC", "channels": ["fax"]})
        assert bad.status_code == 422 and bad.json()["error"] == "unknown_channel"
    finally:
        c.__exit__(None, None, None)
    c = _client(tmp_path, world, policy=False)  # restart: opt-in and counts from the log
    try:
        assert c.put(f"/v1/users/{u}", json={"timezone": "UTC"}).json()["channels"] \
            == ["email", "in_app"]
        assert c.put(f"/v1/users/{users[0]}", json={"timezone": "UTC"}).json()["channels"] \
            == ["email"]
        later = _traffic(c, world, range(24, 54), 6, feedback=False)
    finally:
        c.__exit__(None, None, None)
    mine = [d for v, d in zip(users * 30, later, strict=True) if v == u]
    assert any(d["send"] for d in mine)  # still reachable on email / in-app
    assert all(d["channel"] != "push" for d in mine if d["send"])
    assert any(d["send"] and d["channel"] == "push" for d in later)  # others still get push
    # uniform over the allowed channels: pscore_channel = 1 / #allowed
    for d in later:
        if d["send"]:
            assert 1 / d["pscore_channel"] == pytest.approx(round(1 / d["pscore_channel"]))


def test_keyed_channel_draws_do_not_depend_on_the_batch(tmp_path: Path,
                                                        world: dict[str, Any]) -> None:
    """The same decisions one by one and in one batch: the same channels (keyed draws, what
    a sharded server's parity needs)."""
    outs = []
    for k, batch in enumerate((False, True)):
        c = _client(tmp_path / str(k), world)
        try:
            _put_users(c, world)
            outs.append(_traffic(c, world, range(0, 12), 7, batch=batch, feedback=False))
        finally:
            c.__exit__(None, None, None)
    a, b = outs
    assert [(d.get("channel"), d.get("pscore_channel"), d["send"]) for d in a] == \
        [(d.get("channel"), d.get("pscore_channel"), d["send"]) for d in b]


def test_channels_off_and_config_errors(tmp_path: Path, world: dict[str, Any]) -> None:
    cfg = make_cfg(tmp_path, catalog=world["logs"])
    c = TestClient(create_app(cfg, overrides=doubles(timing=CoinFlip(0.7), item=UniformItem())))
    with c:
        r = c.put("/v1/users/a", json={"timezone": "UTC", "ts": _t0(world)})
        assert r.json().get("channels") is None
        r = c.put("/v1/users/a", json={"timezone": "UTC", "channels": ["push"]})
        assert r.status_code == 422 and r.json()["error"] == "no_channels"
        d = c.post("/v1/decide", json={"user_id": "a", "ts": _t0(world) + 60}).json()
        assert d.get("channel") is None and d.get("pscore_channel") is None
    f = tmp_path / "ch.toml"
    f.write_text("[channels.push]\ncost = 0.01\n[channels.email]\ncost = -1\n")
    with pytest.raises(Exception, match=r"channels.email\] `cost`"):
        load_channel_config(f)
    f.write_text("[guardrails]\nquiet_hours = [22, 8]\n")
    with pytest.raises(Exception, match=r"no \[channels.NAME\] tables"):
        load_channel_config(f)
    assert load_channel_config("default") is DEFAULT_CHANNELS
    f.write_text("[channels.email]\ncost = 0.002\n[channels.push]\ncost = 0.01\n")
    with pytest.raises(Exception, match="trained for channels"):
        _client(tmp_path / "x", world, channels=load_channel_config(f))


def test_serve_cli_refuses_bad_channel_options(tmp_path: Path) -> None:
    from tests.cli_runner import run_pushrl

    r = run_pushrl("serve", "--state", str(tmp_path / "s"), "--channel-policy", "x")
    assert r.returncode != 0 and "--channel-policy needs --channels" in r.stderr
    (tmp_path / "c.toml").write_text("[channels.push]\nquiet_hours = [22]\n")
    r = run_pushrl("serve", "--state", str(tmp_path / "s"), "--channels",
                   str(tmp_path / "c.toml"))
    assert r.returncode != 0 and "quiet_hours must be [start, end]" in r.stderr
    assert "Traceback" not in r.stderr


def test_imported_history_brings_the_logs_opt_in(tmp_path: Path, world: dict[str, Any]) -> None:
    from pushrl.serve.history import import_history

    import_history(world["logs"], tmp_path / "state", quarantine=False)
    users = world["ds"].users
    want = {str(u): (c.split(",") if isinstance(c, str) else list(NAMES))
            for u, c in zip(users["user_id"], users["channels"], strict=True)}
    assert any(len(v) < len(NAMES) for v in want.values())
    cfg = make_cfg(tmp_path, channels=DEFAULT_CHANNELS)
    c = TestClient(create_app(cfg, overrides=doubles(timing=CoinFlip(0.7), item=UniformItem())))
    tz = dict(zip(users["user_id"].astype(str), users["timezone"].astype(str), strict=True))
    with c:
        for u in list(want)[:20]:
            r = c.put(f"/v1/users/{u}", json={"timezone": tz[u]})
            assert r.status_code == 200, r.text
            got = r.json()["channels"]
            assert got == [n for n in NAMES if n in want[u]], (u, got, want[u])
    export(tmp_path / "state", tmp_path / "out")
    ds, _ = load_dataset(tmp_path / "out", quarantine=False)
    a = ds.users.set_index("user_id")["channels"]
    for u in list(want)[:20]:
        v = a[u]
        assert (v.split(",") if isinstance(v, str) else list(NAMES)) == \
            [n for n in NAMES if n in want[u]]


def test_two_shards_choose_channels_exactly_as_one_process(tmp_path: Path) -> None:
    """Keyed channel draws: a sharded server (router + 2 shards) answers and logs the same
    channels as one process for the same requests."""
    import asyncio
    import contextlib

    import httpx

    from pushrl.serve.shard_export import read_sharded
    from pushrl.serve.shards import read_layout
    from tests.serve.test_sharded import _sharded, _stochastic, _stream, _world

    n_users = 16

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        app = create_app(make_cfg(tmp_path, state=tmp_path / "plain",
                                  channels=DEFAULT_CHANNELS), overrides=_stochastic())
        async with contextlib.AsyncExitStack() as st:
            await st.enter_async_context(app.router.lifespan_context(app))
            c = await st.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://plain"))
            await _world(c, n_users)
            one = await _stream(c, n_users)
        async with _sharded(tmp_path, 2, _stochastic, channels=DEFAULT_CHANNELS) as (c, _):
            await _world(c, n_users)
            two = await _stream(c, n_users)
        return one, two

    one, two = asyncio.run(run())
    keys = ("send", "item_id", "pscore", "reason", "channel", "pscore_channel")
    assert [{k: d.get(k) for k in keys} for d in one] == [{k: d.get(k) for k in keys}
                                                          for d in two]
    assert len({d.get("channel") for d in one if d["send"]}) == 3
    from pushrl.serve.export import read_log

    lay = read_layout(tmp_path / "sharded")
    assert lay is not None
    merged = read_sharded(tmp_path / "sharded", lay)[0].pushes
    plain = read_log(tmp_path / "plain")[0].pushes
    cols, key = ["user_id", "ts", "sent", "channel", "pscore_channel"], ["user_id", "ts"]
    assert plain[cols].sort_values(key).reset_index(drop=True).equals(
        merged[cols].sort_values(key).reset_index(drop=True))
