"""Sharded serving in one process: the router (`pushrl.serve.router`) in front of N shard
apps over ASGI, against one plain server fed the same requests."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from pushrl.errors import PushrlError
from pushrl.policies.registry import save_artifact
from pushrl.serve.app import create_app
from pushrl.serve.engine import KeyedDraws
from pushrl.serve.export import read_log
from pushrl.serve.forward import HttpxShard
from pushrl.serve.router import Router, _remap
from pushrl.serve.shard_export import export_log, read_sharded
from pushrl.serve.shards import (
    Layout,
    init_layout,
    read_layout,
    shard_of,
    shard_of_decision,
    shards_of,
)
from tests.serve.conftest import T0, CoinFlip, UniformItem, bl, make_cfg

H = 3600
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]


def test_shard_of_is_stable_balanced_and_vectorised() -> None:
    ids = [f"user-{i}" for i in range(20_000)]
    got = shards_of(ids, 4)
    assert got.tolist()[:50] == [shard_of(u, 4) for u in ids[:50]]
    share = np.bincount(got, minlength=4) / len(ids)
    assert np.all(np.abs(share - 0.25) < 0.015), share  # binomial sd 0.003
    assert shards_of(ids[:5], 1).tolist() == [0] * 5
    # independent of the split and holdout salts: not the same partition as another salt
    from pushrl.data.split import key_uniform

    other = (key_uniform(ids, "pushrl-split:0:") * 4).astype(int)
    assert (other == got).mean() < 0.3


@pytest.mark.parametrize("did, n, want", [
    ("s0.abc", 2, 0), ("s1.abc", 2, 1), ("s2.abc", 2, None), ("s12.x", 16, 12),
    ("abc", 2, None), ("sx.abc", 2, None), ("s1abc", 2, None), ("", 2, None)])
def test_decision_ids_name_their_shard(did: str, n: int, want: int | None) -> None:
    assert shard_of_decision(did, n) == want


def test_layout_refuses_another_shard_count_seed_or_a_plain_state(tmp_path: Path) -> None:
    lay = init_layout(tmp_path / "s", 2, None)
    assert read_layout(tmp_path / "s") == lay
    assert init_layout(tmp_path / "s", 2, None) == lay  # the stored seed is kept
    with pytest.raises(PushrlError, match="holds 2 shards, not 3"):
        init_layout(tmp_path / "s", 3, None)
    with pytest.raises(PushrlError, match=f"pass --seed {lay.seed}"):
        init_layout(tmp_path / "s", 2, lay.seed + 1)
    with pytest.raises(PushrlError, match="at least 1"):
        init_layout(tmp_path / "t", 0, 0)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "log.sqlite3").write_bytes(b"")
    with pytest.raises(PushrlError, match="plain server's log"):
        init_layout(tmp_path / "plain", 2, 0)


def test_keyed_draws_depend_on_the_row_not_on_its_neighbours() -> None:
    bg = np.random.PCG64(0)
    a = KeyedDraws(bg, 7, "timing", ["u1", "u2", "u3"], [T0, T0, T0 + H]).random((3, 1))
    b = KeyedDraws(bg, 7, "timing", ["u3", "u1"], [T0 + H, T0]).random((2, 1))
    assert a[0, 0] == b[1, 0] and a[2, 0] == b[0, 0]
    assert len({float(x) for x in a.ravel()}) == 3
    other = KeyedDraws(bg, 8, "timing", ["u1"], [T0]).random(1)
    assert other[0] != a[0, 0]  # another seed, another draw
    k = KeyedDraws(bg, 7, "timing", ["u1"], [T0])
    assert k.random(1)[0] != k.random(1)[0]  # a second call: another keyed stream
    with pytest.raises(ValueError, match="one number per row"):
        KeyedDraws(bg, 7, "item", ["u1", "u2"], [T0, T0]).random((3, 1))


def test_remap_puts_the_requests_own_indices_back() -> None:
    assert _remap("requests[1]: bad; request 0: x", "requests", [4, 9]) == \
        "requests[9]: bad; request 4: x"
    assert _remap("feedback[0]: unknown", "feedback", [3]) == "feedback[3]: unknown"


# ---------------------------------------------------------------------- in-process router
Overrides = Callable[[], dict[str, Any] | None]


@contextlib.asynccontextmanager
async def _plain(tmp: Path, overrides: Overrides) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_cfg(tmp, state=tmp / "plain"), overrides=overrides())
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://plain") as c:
        yield c


@contextlib.asynccontextmanager
async def _sharded(tmp: Path, n: int, overrides: Overrides, down: set[int] | None = None,
                   **cfg: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Router]]:
    """A router over ``n`` shard apps (states ``tmp/sharded/shard-k``, as the supervisor
    lays them out); ``down``: shards reported down."""
    lay = init_layout(tmp / "sharded", n, 0)
    apps = [create_app(make_cfg(tmp, state=lay.shard_dir(tmp / "sharded", k), shard=(k, n),
                                seed=lay.seed, **cfg), overrides=overrides())
            for k in range(n)]
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for a in apps:
            await stack.enter_async_context(a.router.lifespan_context(a))
            clients.append(HttpxShard(await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app=a), base_url="http://shard"))))
        off = down or set()
        router = Router(n, lambda k: clients[k], lambda k: "killed" if k in off else None)
        c = await stack.enter_async_context(httpx.AsyncClient(
            transport=httpx.ASGITransport(app=router), base_url="http://router"))
        yield c, router


def _stochastic() -> dict[str, Any]:
    return {"timing": CoinFlip(0.5), "item": UniformItem()}


async def _world(c: httpx.AsyncClient, n_users: int) -> None:
    for j in range(5):
        r = await c.put(f"/v1/items/i{j}", json={"category": "ab"[j % 2]})
        assert r.status_code == 200, r.text
    for i in range(n_users):
        r = await c.put(f"/v1/users/u{i}", json={"timezone": ZONES[i % 4], "ts": T0})
        assert r.status_code == 200, r.text


async def _stream(c: httpx.AsyncClient, n_users: int) -> list[dict[str, Any]]:
    """The same event stream: hourly batches, single decisions, events and feedback."""
    out: list[dict[str, Any]] = []
    for h in range(1, 9):
        ts = T0 + h * H
        ev = [{"user_id": f"u{i}", "event": "session", "ts": ts - 60}
              for i in range(n_users) if (i + h) % 3 == 0]
        r = await c.post("/v1/events", json={"events": ev})
        assert r.status_code == 200, r.text
        reqs = [{"user_id": f"u{i}", "ts": ts} for i in range(0, n_users, 2)]
        r = await c.post("/v1/decide/batch", json={"requests": reqs})
        assert r.status_code == 200, r.text
        out += r.json()["decisions"]
        for i in range(1, n_users, 2):
            r = await c.post("/v1/decide", json={"user_id": f"u{i}", "ts": ts + 5})
            assert r.status_code == 200, r.text
            out.append(r.json())
        sent = [d for d in out[-n_users:] if d["send"]]
        fb = [{"decision_id": d["decision_id"], "opened": True, "ts": ts + 600}
              for d in sent[::2]]
        if fb:
            r = await c.post("/v1/feedback/batch", json={"feedback": fb})
            assert r.status_code == 200, r.text
            assert [x["decision_id"] for x in r.json()["results"]] == \
                [x["decision_id"] for x in fb]
    return out


KEYS = ("send", "item_id", "pscore", "p_send", "reason", "ts", "policy", "item_policy")


def test_two_shards_decide_exactly_as_one_process(tmp_path: Path) -> None:
    n_users = 24

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with _plain(tmp_path, _stochastic) as c:
            await _world(c, n_users)
            one = await _stream(c, n_users)
        async with _sharded(tmp_path, 2, _stochastic) as (c, _):
            await _world(c, n_users)
            two = await _stream(c, n_users)
        return one, two

    one, two = asyncio.run(run())
    assert len(one) == len(two) == 8 * n_users
    assert [{k: d[k] for k in KEYS} for d in one] == [{k: d[k] for k in KEYS} for d in two]
    coin = [d["send"] for d in one if 0 < d["p_send"] < 1]  # (the rest: guardrails)
    assert len(coin) > 40 and 0.25 < np.mean(coin) < 0.75  # stochastic: both outcomes drawn
    assert len({d["item_id"] for d in one if d["send"]}) > 1
    # each decision was made by the user's shard, and its id says so
    for d, r in zip(two, [d for d in one], strict=True):
        assert d["decision_id"].startswith("s")
        assert not r["decision_id"].startswith("s0.")
    # the merged export is the plain server's log, decision ids aside
    lay = read_layout(tmp_path / "sharded")
    assert lay is not None
    merged, fb2, _ = read_sharded(tmp_path / "sharded", lay)
    plain, fb1, _ = read_log(tmp_path / "plain")
    assert merged.pushes["decision_id"].is_unique
    cols = ["user_id", "ts", "sent", "item_id", "pscore", "pscore_send", "opened"]
    key = ["user_id", "ts"]
    a = plain.pushes[cols].sort_values(key).reset_index(drop=True)
    b = merged.pushes[cols].sort_values(key).reset_index(drop=True)
    assert a.equals(b)
    assert sorted(merged.users["user_id"]) == sorted(plain.users["user_id"])
    assert len(merged.items) == len(plain.items) == 5
    assert len(merged.activity) == len(plain.activity)
    assert len(fb1) == len(fb2) > 0
    res = export_log(tmp_path / "sharded", tmp_path / "exported")  # `pushrl logs export`
    assert (res["shards"], res["pushes"], res["users"]) == (2, len(two), n_users)
    from pushrl.data.validate import load_dataset

    back, _ = load_dataset(tmp_path / "exported")
    assert back.pushes["decision_id"].is_unique and len(back.pushes) == len(two)


def test_single_process_draws_are_reproducible_from_the_seed(tmp_path: Path) -> None:
    async def run(state: str) -> list[dict[str, Any]]:
        app = create_app(make_cfg(tmp_path, state=tmp_path / state), overrides=_stochastic())
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://x") as c:
            await _world(c, 10)
            return await _stream(c, 10)

    a, b = asyncio.run(run("a")), asyncio.run(run("b"))
    assert [{k: d[k] for k in KEYS} for d in a] == [{k: d[k] for k in KEYS} for d in b]


def test_errors_pass_through_and_a_dead_shard_fails_only_its_users(tmp_path: Path) -> None:
    users = [f"u{i}" for i in range(12)]
    dead = 1
    mine = [u for u in users if shard_of(u, 2) == dead]
    others = [u for u in users if shard_of(u, 2) != dead]
    assert mine and others

    async def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with _plain(tmp_path, _stochastic) as c:
            await _world(c, 12)
            out["plain"] = [await c.post("/v1/decide", json={"user_id": "nobody"}),
                            await c.post("/v1/decide", content=b"{nope"),
                            await c.post("/v1/decide/batch", json={"requests": []}),
                            await c.post("/v1/feedback", json={"decision_id": "x"})]
        async with _sharded(tmp_path, 2, _stochastic) as (c, _):
            await _world(c, 12)
            out["router"] = [await c.post("/v1/decide", json={"user_id": "nobody"}),
                             await c.post("/v1/decide", content=b"{nope"),
                             await c.post("/v1/decide/batch", json={"requests": []}),
                             await c.post("/v1/feedback", json={"decision_id": "x"})]
        # the same state dirs, shard 1 reported dead
        async with _sharded(tmp_path, 2, _stochastic, down={dead}) as (c, _):
            out["dead"] = {u: await c.post("/v1/decide", json={"user_id": u, "ts": T0 + H})
                           for u in users}
            out["batch"] = await c.post("/v1/decide/batch", json={"requests": [
                {"user_id": u, "ts": T0 + 2 * H} for u in users]})
            out["item"] = await c.put("/v1/items/new", json={"category": "a"})
        return out

    out = asyncio.run(run())
    for p, r in zip(out["plain"], out["router"], strict=True):
        assert (r.status_code, r.json()) == (p.status_code, p.json())
        assert 400 <= r.status_code < 500
    for u, r in out["dead"].items():
        if u in mine:
            assert r.status_code == 503 and r.json()["error"] == "shard_unavailable", r.text
            assert r.json()["shard"] == dead
        else:
            assert r.status_code == 200, r.text
    b = out["batch"]
    assert b.status_code == 503 and b.json()["error"] == "shard_unavailable"
    assert b.json()["partial"]["indices"] == [i for i, u in enumerate(users) if u in others]
    assert out["item"].status_code == 503  # a catalog change reaches every shard or none


def test_a_shard_refuses_users_of_another_shard(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    app = create_app(make_cfg(tmp_path, shard=(0, 2)), overrides=_stochastic())
    uid = next(f"u{i}" for i in range(50) if shard_of(f"u{i}", 2) == 1)
    with TestClient(app) as c:
        r = c.put(f"/v1/users/{uid}", json={"timezone": "UTC"})
    assert r.status_code == 409 and r.json()["error"] == "wrong_shard", r.text
    assert "belongs to shard 1 of 2" in r.json()["detail"]


def _artifact(reg: Path, name: str, baseline: str) -> None:
    save_artifact(reg / name, kind="timing", loader="baseline", files={},
                  card={"baseline": baseline, "params": {},
                        "ope": {"gate": {"passed": True, "failed_rules": []}}})


def test_promote_and_rollback_reach_every_shard_between_passes(tmp_path: Path) -> None:
    reg = tmp_path / "policies"
    _artifact(reg, "never", bl("never-send"))
    _artifact(reg, "fixed", bl("fixed-hour"))
    n_users = 30

    async def run() -> tuple[list[Any], list[list[str]], list[int], Router]:
        failures: list[Any] = []
        batches: list[list[str]] = []
        gens: list[int] = []
        async with _sharded(tmp_path, 2, lambda: None) as (c, router):
            await _world(c, n_users)
            stop = asyncio.Event()

            async def load(k: int) -> None:
                h = 1
                while not stop.is_set():
                    h += 1
                    reqs = [{"user_id": f"u{i}", "ts": T0 + (h * 4 + k) * H}
                            for i in range(k, n_users, 3)]
                    r = await c.post("/v1/decide/batch", json={"requests": reqs})
                    if r.status_code != 200:
                        failures.append(r.text)
                        continue
                    batches.append([d["policy"] for d in r.json()["decisions"]])

            async def flip() -> None:
                for name in ("never", "fixed", "never"):
                    await asyncio.sleep(0.05)
                    r = await c.post(f"/v1/policies/{name}/promote", json={"reason": "t"})
                    assert r.status_code == 200, r.text
                    gens.append(r.json()["generation"])
                await asyncio.sleep(0.05)
                r = await c.post("/v1/policies/never/rollback", json={"reason": "t"})
                assert r.status_code == 200, r.text
                gens.append(r.json()["generation"])
                await asyncio.sleep(0.05)
                stop.set()

            await asyncio.gather(flip(), *(load(k) for k in range(3)))
            for k in range(2):  # every shard on the router's generation
                shard = router.client(k)
                assert shard is not None
                _, _, body = await shard.request("GET", "/v1/policies", b"", [])
                assert json.loads(body)["generation"] == router.generation
        return failures, batches, gens, router

    failures, batches, gens, router = asyncio.run(run())
    assert failures == []
    assert gens == sorted(gens) and len(set(gens)) == 4
    assert router.generation == gens[-1]
    assert all(len(set(b)) == 1 for b in batches)  # no batch saw two generations
    assert {b[0] for b in batches} >= {"never@v1", "fixed@v1"}
    assert len(router.barrier.pauses) == 5 + 4  # 5 item puts, 4 policy changes


def test_layout_dataclass_names_shard_dirs(tmp_path: Path) -> None:
    assert Layout(3, 1).shard_dir(tmp_path, 2) == tmp_path / "shard-2"


def test_stream_shard_reads_length_and_chunked_answers_and_reports_a_dead_socket(
        tmp_path: Path) -> None:
    from pushrl.serve.forward import ShardError, StreamShard

    sock = str(tmp_path / "s.sock")
    seen: list[bytes] = []

    async def handle(rd: asyncio.StreamReader, wr: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await rd.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            n = int(next(x for x in head.split(b"\r\n") if x.startswith(b"content-length"))
                    .split(b":")[1])
            body = await rd.readexactly(n)
            seen.append(head.split(b"\r\n")[0] + b" " + body)
            if body == b"chunked":
                wr.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                         b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            else:
                wr.write(b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n"
                         b"content-length: 2\r\n\r\n{}")
            await wr.drain()

    async def run() -> list[Any]:
        server = await asyncio.start_unix_server(handle, sock)
        c = StreamShard(uds=sock)
        out = [await c.request("POST", "/a?x=1", b"chunked", [(b"x-api-key", b"k")]),
               await c.request("GET", "/b", b"", [])]
        out.append(len(c._pool))  # one keep-alive connection, reused
        server.close()
        await server.wait_closed()
        await c.aclose()
        with pytest.raises(ShardError, match=r"FileNotFoundError|ConnectionRefused"):
            Path(sock).unlink(missing_ok=True)
            await StreamShard(uds=sock).request("GET", "/", b"", [])
        return out

    a, b, pooled = asyncio.run(run())
    assert a[0] == 200 and a[2] == b"abcde"
    assert b[0] == 404 and b[2] == b"{}" and (b"content-type", b"application/json") in b[1]
    assert pooled == 1
    assert seen == [b"POST /a?x=1 HTTP/1.1 chunked", b"GET /b HTTP/1.1 "]


@pytest.mark.parametrize(("kw", "match"), [
    ({"shards": 2, "history": Path("data")}, "--history cannot be imported into a sharded"),
    ({"shard": "2/2"}, r"K must be in 0\.\.N-1"),
    ({"shard": "one"}, "--shard must be K/N"),
    ({"shard_url": ["ftp://10.0.0.1"]}, "give an http"),
])
def test_serve_refuses_bad_shard_options(tmp_path: Path, kw: dict[str, Any],
                                         match: str) -> None:
    from tests.serve.test_cli_serve import _serve

    with pytest.raises(PushrlError, match=match):
        _serve(state=tmp_path / "st", **kw)


def test_router_status_needs_a_key_the_shards_accept(tmp_path: Path) -> None:
    from pushrl.serve.auth import new_key

    keys = tmp_path / "keys.json"
    secret = new_key(keys, ["decide"], "ops")

    async def run() -> list[int]:
        async with _sharded(tmp_path, 2, _stochastic, api_keys=keys) as (c, router):
            router.keyed = True
            return [(await c.get("/v1/shards")).status_code,
                    (await c.get("/metrics", headers={"X-API-Key": secret})).status_code,
                    (await c.get("/v1/shards", headers={"X-API-Key": secret})).status_code]

    assert asyncio.run(run()) == [401, 200, 200]
