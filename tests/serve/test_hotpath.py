"""Issue 20: the hot routes answered by :class:`~pushrl.serve.hotpath.HotPath` give exactly
what the declared FastAPI routes give (status, body, metrics), and a response leaves in one
write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from pushrl.serve import app as app_module
from pushrl.serve.app import create_app
from pushrl.serve.auth import new_key
from pushrl.serve.schemas import DecideOut
from pushrl.serve.timeouts import _OneWrite
from tests.serve.conftest import T0, doubles, make_cfg, seed_world

H = 3600
_DECIDE_CASES: list[tuple[dict[str, str], Any]] = [
    ({}, {"user_id": "u0"}),                          # no key: 401
    ({"X-API-Key": "wrong"}, {"user_id": "u0"}),      # bad key: 401
    ({"K": "admin-only"}, {"user_id": "u0"}),         # key without `decide`: 403
    ({"K": "decide"}, {"user_id": "nobody"}),         # 404 unknown user
    ({"K": "decide"}, b'{"user_id": '),               # 400 malformed JSON
    ({"K": "decide"}, {"user_id": "u0", "horizon_hours": -3}),  # 422
    ({"K": "decide"}, {"user_id": "u0", "ts": T0 - 2 * H}),  # before the user: 409
    ({"K": "decide"}, {"user_id": "u0", "ts": T0 + 12 * H}),  # 200
]
_BATCH_CASES: list[tuple[dict[str, str], Any]] = [
    ({}, {"requests": [{"user_id": "u0"}]}),                          # no key: 401
    ({"K": "admin-only"}, {"requests": [{"user_id": "u0"}]}),         # key without scope: 403
    ({"K": "decide"}, {"requests": [{"user_id": "u0", "ts": T0 + 13 * H},
                                    {"user_id": "nobody"}]}),         # 404 unknown user
    ({"K": "decide"}, b'{"requests": ['),                             # 400 malformed JSON
    ({"K": "decide"}, b''),                                           # 422 missing body
    ({"K": "decide"}, {"requests": []}),                              # 422 too few
    ({"K": "decide"}, {"requests": [{"user_id": "u0", "horizon_hours": 999}]}),  # 422
    ({"K": "decide"}, {"requests": [{"user_id": "u0"}], "extra": 1}),  # 422 unknown field
    ({"K": "decide"}, {"requests": [{"user_id": "u0", "ts": T0 + 14 * H},
                                    {"user_id": "u0", "ts": T0 + 13 * H}]}),  # 409 order
    ({"K": "decide"}, {"requests": [{"user_id": "u0", "ts": T0 + 14 * H},   # 200, one user
                                    {"user_id": "u0", "ts": T0 + 15 * H,    # twice, 2nd with
                                     "horizon_hours": 6}]}),                # look-ahead
    ({"K": "decide"}, {"requests": [{"user_id": "u0", "ts": T0 + 16 * H,
                                     "candidates": ["i1"], "context": {"a": 1}}]}),  # 200
]


def _client(tmp: Path, keys: Path, hot: bool) -> TestClient:
    c = TestClient(create_app(make_cfg(tmp, api_keys=keys), overrides=doubles()))
    c.__enter__()
    if not hot:  # serve every request through the declared routes
        mw = c.app.middleware_stack  # type: ignore[attr-defined]
        mw.hot = {}
    return c


def _statuses(c: TestClient) -> list[str]:
    text = generate_latest(c.app.state.server.metrics.registry).decode()  # type: ignore[attr-defined]
    return sorted(ln.split(" ")[0] for ln in text.splitlines()
                  if ln.startswith("serve_request_duration_seconds_count"))


def _run(tmp: Path, keys: Path, k: dict[str, str], hot: bool) -> list[Any]:
    c = _client(tmp, keys, hot)
    try:
        assert isinstance(c.app.middleware_stack, app_module.HotPath)  # type: ignore[attr-defined]
        hdr = {"X-API-Key": k["both"]}
        for j in range(2):
            c.put(f"/v1/items/i{j}", json={"category": "ab"[j]}, headers=hdr).raise_for_status()
        c.put("/v1/users/u0", json={"timezone": "UTC", "ts": T0}, headers=hdr).raise_for_status()
        got: list[Any] = []
        for h, body in _DECIDE_CASES:
            headers = {"X-API-Key": k[h["K"]]} if "K" in h else dict(h)
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            r = c.post("/v1/decide", content=data, headers=headers)
            out = r.json()
            out.pop("decision_id", None)
            got.append((r.status_code, out, r.headers["content-type"]))
        for h, body in _BATCH_CASES:
            headers = {"X-API-Key": k[h["K"]]} if "K" in h else dict(h)
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            r = c.post("/v1/decide/batch", content=data,
                       headers={**headers, "Content-Type": "application/json"})
            out = r.json()
            for d in out.get("decisions", []):
                d.pop("decision_id")
            got.append((r.status_code, out, r.headers["content-type"]))
        got.append(c.get("/v1/echo", headers={"Authorization": f"Bearer {k['decide']}"})
                   .status_code)
        got.append(c.get("/v1/decide", headers={"X-API-Key": k["decide"]}).status_code)
        return [got, _statuses(c)]
    finally:
        c.__exit__(None, None, None)


def test_hot_routes_answer_as_the_declared_routes(tmp_path: Path) -> None:
    """The same requests with the hot path on and off: same statuses and bodies (decision
    ids aside), same latency metric labels."""
    keys = tmp_path / "keys.json"
    k = {"decide": new_key(keys, ["decide"]), "admin-only": new_key(keys, ["admin"]),
         "both": new_key(keys, ["decide", "admin"])}
    hot = _run(tmp_path / "hot", keys, k, True)
    routes = _run(tmp_path / "routes", keys, k, False)
    n = len(_DECIDE_CASES)
    assert [g[0] for g in hot[0][:n]] == [401, 401, 403, 404, 400, 422, 409, 200]
    assert [g[0] for g in hot[0][n:-2]] == [401, 403, 404, 400, 422, 422, 422, 422, 409, 200,
                                            200]
    assert set(hot[0][-3][1]["decisions"][0]) | {"decision_id"} == set(DecideOut.model_fields)
    assert hot[0][-2:] == [200, 405]
    assert hot == routes


def test_hot_path_without_keys(make_client: Any) -> None:
    c = make_client()
    seed_world(c)
    r = c.post("/v1/decide", json={"user_id": "u0", "ts": T0 + 12 * H})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert int(r.headers["content-length"]) == len(r.content)
    assert c.get("/v1/echo").json() == {"ok": True}


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_one_write_holds_headers_until_the_body() -> None:
    t = _Transport()
    w = _OneWrite(t)
    w.hold = True
    w.write(b"HTTP/1.1 200 OK\r\n\r\n")
    w.hold = False
    assert t.writes == []
    w.write(b"{}")
    assert t.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
    w.hold = True  # a response without body bytes (HEAD): flushed on completion or close
    w.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    w.hold = False
    w.close()
    assert t.writes[-1] == b"HTTP/1.1 204 No Content\r\n\r\n" and t.closed
    assert w.is_closing()  # other attributes reach the transport


def test_json_bytes_equals_json_dumps() -> None:
    from pushrl.serve.hotpath import json_bytes

    objs: list[Any] = [
        {"decision_id": "ab\"c\\d", "send": True, "item_id": None, "pscore": 0.1 + 0.2,
         "p_send": 1e-300, "policy": "most-active-hour@1", "ts": "2027-01-15T08:00:00Z",
         "holdout": False, "p_holdout": float("nan"), "n": 3, "big": 2**70, "neg": -0.0,
         "inf": float("inf"), "u": "caf\u00e9 \u2603 \U0001f600", "nested": [1, [2.5, {}], []]},
        {"decisions": [{"a": 1}, {"b": None}]}, [], {}, "x", 1.0, None]
    for o in objs:
        assert json_bytes(o) == json.dumps(o).encode()


def test_json_bytes_flat_templates_equal_json_dumps() -> None:
    """The per-shape templates of flat dicts (hotpath._flat_encoder) give json.dumps's
    bytes: random shapes (keys with quotes, %, non-ASCII), every scalar kind and its edge
    values, and values the template must leave to the C encoder (nested, numpy, subclasses)
    at random places; each shape is encoded again after it was compiled."""
    import enum
    import random

    import numpy as np

    from pushrl.serve import hotpath

    class Kind(enum.IntEnum):
        A = 1

    class S(str):
        pass

    scalars: list[Any] = [None, True, False, 0, -7, 2**70, 0.0, -0.0, 0.1 + 0.2, 1e-300,
                          1e300, float("nan"), float("inf"), float("-inf"), 1.0, 12345.678,
                          "", "policy", 'q"uote\\back', "tab\tnew\nline\x00", "caf\u00e9 \u2603",
                          "\U0001f600", "%s %d %%", "2027-01-15T08:00:00Z"]
    others: list[Any] = [[1, 2.5], {"a": None}, (1,), np.float64(0.5), np.float64("nan"),
                         Kind.A, S("sub")]
    keys = ["decision_id", "send", "a\"b", "%s", "50%", "caf\u00e9", "", "k\\", "p_send",
            "ts", "x" * 40]
    rng = random.Random(20)
    before = dict(hotpath._FLAT)
    try:
        hotpath._FLAT.clear()
        fallbacks = 0
        for _ in range(400):
            shape = rng.sample(keys, rng.randint(1, len(keys)))
            for _ in range(3):
                o = {k: rng.choice(scalars) for k in shape}
                if rng.random() < 0.2:
                    o[rng.choice(shape)] = rng.choice(others)
                    fallbacks += 1
                assert hotpath.json_bytes(o) == json.dumps(o).encode(), o
        assert fallbacks > 50
        assert len(hotpath._FLAT) == hotpath._FLAT_SHAPES  # the cache is bounded ...
        o = {"beyond": 1.5, "the": "cap"}  # ... and a shape beyond it still encodes
        assert hotpath.json_bytes(o) == json.dumps(o).encode()
        assert hotpath._flat_encoder((1, "a")) is None and hotpath._flat_encoder(()) is None
        o2: dict[Any, Any] = {1: "a", "b": 2}
        hotpath._FLAT.clear()
        assert hotpath.json_bytes(o2) == json.dumps(o2).encode()
        assert hotpath.json_bytes({}) == b"{}"
    finally:
        hotpath._FLAT.clear()
        hotpath._FLAT.update(before)


def test_read_body_joins_chunks() -> None:
    import asyncio

    from pushrl.serve.hotpath import read_body

    def receiver(parts: list[bytes]) -> Any:
        msgs = iter([{"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
                     for i, p in enumerate(parts)])

        async def receive() -> dict[str, Any]:
            return next(msgs)
        return receive

    for parts in ([b'{"a": 1}'], [b""], [b'{"a"', b": ", b"1}"], [b"x", b""]):
        assert asyncio.run(read_body(receiver(parts))) == b"".join(parts)
