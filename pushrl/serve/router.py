"""The one entry point of a sharded server: a raw-ASGI router in front of N shard servers.

Each shard is an ordinary ``pushrl serve`` (:mod:`pushrl.serve.supervisor` starts and
restarts them) listening on a Unix socket; the router forwards over keep-alive connections
(:mod:`pushrl.serve.forward`: ``httpx`` cost 41x its CPU) and adds no logic of its own to a
request:

* a user's requests (``/v1/decide``, ``/v1/events``, ``/v1/feedback``, ``/v1/users/{id}``...)
  go to the shard that owns the user (:func:`pushrl.serve.shards.shard_of`) or made the
  decision (its id starts with ``s{k}.``); the shard's answer, errors included, is passed
  through byte for byte;
* batches (``/v1/decide/batch``, ``/v1/events``, ``/v1/feedback/batch``,
  ``/v1/triggers/due``) are validated once here (the same schemas: a malformed batch is
  refused whole, by shard 0, with the server's own 4xx), split by shard, sent concurrently
  and merged back in request order;
* catalog and admin changes (items, item updates, promote, rollback, kill switch) reach
  every shard inside a *barrier*: the router stops dispatching, waits for the requests in
  flight, applies the change on every shard, then resumes. Requests arriving meanwhile wait;
  none fails, and no request (nor any part of a batch) sees two generations.

A shard that is down answers ``503 shard_unavailable`` for its users only; changes that must
reach every shard are refused with 503 until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import unquote

from pydantic import TypeAdapter, ValidationError

from pushrl.serve.forward import ShardClient, ShardError
from pushrl.serve.hotpath import Receive, Scope, Send, read_body
from pushrl.serve.schemas import (
    DecideBatchIn,
    Event,
    EventBatch,
    FeedbackBatchIn,
    TriggersDueIn,
)
from pushrl.serve.shards import shard_of, shard_of_decision, shards_of

log = logging.getLogger("pushrl.serve.router")

#: Request headers passed to a shard (its API-key check is the one check).
FORWARD = {b"authorization", b"x-api-key", b"content-type", b"accept"}
#: Response headers passed back.
BACK = {b"content-type", b"www-authenticate", b"retry-after"}
_JSON = [(b"content-type", b"application/json")]
_EVENTS = TypeAdapter(Event | EventBatch)
#: Batch routes: (list field, its schema, how an item names its shard).
_BATCHES: dict[str, tuple[str, Any, str]] = {
    "/v1/decide/batch": ("requests", DecideBatchIn, "user_id"),
    "/v1/feedback/batch": ("feedback", FeedbackBatchIn, "decision_id"),
    "/v1/triggers/due": ("users", TriggersDueIn, "self"),
}
#: Routes a change on every shard answers (inside the barrier).
_BROADCAST = re.compile(r"^/v1/(items/[^/]+|items/updates|kill-switch|policies/reload)$")
_PROMOTE = re.compile(r"^/v1/policies/[^/]+/(promote|rollback)$")
_USER_PATH = re.compile(r"^/v1/users/([^/]+)(/.*)?$")


class ShardDown(Exception):
    """A shard is not answering."""

    def __init__(self, k: int, why: str) -> None:
        super().__init__(why)
        self.k = k
        self.why = why


class Barrier:
    """Dispatch gate: any number of passes at once, or one exclusive change with none in
    flight (a pass = one routed request, all its shard calls included)."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._lock = asyncio.Lock()
        self.inflight = 0
        #: Seconds dispatch was paused, per exclusive change (the last 100).
        self.pauses: list[float] = []

    @contextlib.asynccontextmanager
    async def passing(self) -> AsyncIterator[None]:
        while not self._open.is_set():
            await self._open.wait()
        self.inflight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.inflight -= 1
            if not self.inflight:
                self._idle.set()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._lock:
            t0 = time.perf_counter()
            self._open.clear()
            try:
                while self.inflight:
                    await self._idle.wait()
                yield
            finally:
                self._open.set()
                self.pauses = [*self.pauses[-99:], time.perf_counter() - t0]


class Reply:
    """A shard's (or the router's) answer."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status, self.body, self.headers = status, body, headers

    @classmethod
    def json(cls, status: int, obj: Any) -> Reply:
        return cls(status, json.dumps(obj).encode(), list(_JSON))

    @classmethod
    def error(cls, status: int, code: str, detail: str, **extra: Any) -> Reply:
        return cls.json(status, {"error": code, "detail": detail, **extra})

    def data(self) -> Any:
        return json.loads(self.body)


class Router:
    """The ASGI app of ``pushrl serve --shards N`` (module docstring).

    Args:
        n: Number of shards.
        client: ``k ->`` the :class:`~pushrl.serve.forward.ShardClient` of shard ``k``
            (None while it is down).
        down: ``k -> reason`` of a shard whose process is down (None: up).
        lifespan: Started on ASGI start-up (the supervisor), exited on shutdown.
        status: Extra fields of ``GET /v1/shards`` (the supervisor's view).
        on_stale: Called with ``k`` when shard ``k`` could not load a promoted generation
            (the supervisor restarts it: a starting server loads the pointer).
        keyed: The shards check API keys: the router's own ``/v1/shards`` and ``/metrics``
            then need a key the shards accept (checked with shard 0's ``/v1/echo``).
    """

    def __init__(self, n: int, client: Callable[[int], ShardClient | None],
                 down: Callable[[int], str | None],
                 lifespan: Callable[[], contextlib.AbstractAsyncContextManager[None]] | None
                 = None, status: Callable[[], dict[str, Any]] | None = None,
                 on_stale: Callable[[int], None] | None = None, keyed: bool = False) -> None:
        self.n = n
        self.keyed = keyed
        self.client = client
        self.down = down
        self.lifespan = lifespan
        self.status = status
        self.on_stale = on_stale
        #: Shards that could not load the current generation (k -> why): down for routing
        #: until the supervisor restarted them on it.
        self.stale: dict[int, str] = {}
        self.barrier = Barrier()
        self.generation: int | None = None
        self._rr = 0
        #: Answers per (shard or "router", status) since start.
        self.counts: dict[tuple[str, int], int] = {}

    # ------------------------------------------------------------------ ASGI
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            body = await read_body(receive) if scope["method"] in ("POST", "PUT") else b""
        except Exception:  # client went away
            return
        headers = [(k, v) for k, v in scope["headers"] if k in FORWARD]
        path = scope["path"]
        qs = scope.get("query_string", b"")
        url = path + ("?" + qs.decode("latin-1") if qs else "")
        try:
            reply = await self.handle(scope["method"], path, url, headers, body)
        except ShardDown as exc:
            reply = self._down(exc.k, exc.why)
        except Exception as exc:  # a router fault: never a traceback to the client
            log.error("router error on %s %s: %s: %s", scope["method"], path,
                      type(exc).__name__, exc)
            reply = Reply.error(500, "internal", "internal router error (logged; the request "
                                "may be retried)")
        await send({"type": "http.response.start", "status": reply.status,
                    "headers": [*reply.headers,
                                (b"content-length", str(len(reply.body)).encode())]})
        await send({"type": "http.response.body", "body": reply.body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        cm = self.lifespan() if self.lifespan is not None else None
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    if cm is not None:
                        await cm.__aenter__()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if cm is not None:
                    await cm.__aexit__(None, None, None)
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ------------------------------------------------------------------ routing
    async def handle(self, method: str, path: str, url: str,
                     headers: list[tuple[bytes, bytes]], body: bytes) -> Reply:
        """The answer to one request (see the module docstring for the routes)."""
        if method == "GET" and path == "/healthz":
            return Reply.json(200, {"status": "ok"})
        if method == "GET" and path == "/readyz":
            return await self._ready(headers)
        if method == "GET" and path in ("/v1/shards", "/metrics"):
            if self.keyed:
                got = await self._pass(0, "GET", "/v1/echo", headers, b"")
                if got.status != 200:
                    return got
            if path == "/metrics":
                return Reply(200, self._metrics().encode(), [(b"content-type", b"text/plain")])
            return Reply.json(200, self._status())
        m = re.match(r"^/shards/(\d+)(/.*)$", path)
        if m and int(m.group(1)) < self.n:  # one shard's own endpoints (metrics, readyz)
            return await self._pass(int(m.group(1)), method, m.group(2) + url[len(path):],
                                    headers, body)
        if method in ("POST", "PUT") and (_PROMOTE.match(path) or _BROADCAST.match(path)):
            return await self._change(method, path, url, headers, body)
        async with self.barrier.passing():
            if method == "POST" and path == "/v1/decide":
                return await self._pass(self._owner(body, "user_id"), method, url, headers,
                                        body)
            if method == "POST" and path == "/v1/feedback":
                return await self._pass(self._owner(body, "decision_id"), method, url,
                                        headers, body)
            if method == "POST" and path == "/v1/events":
                return await self._events(url, headers, body)
            if method == "POST" and path in _BATCHES:
                return await self._batch(path, url, headers, body)
            um = _USER_PATH.match(path)
            if um:
                return await self._pass(shard_of(unquote(um.group(1)), self.n), method, url,
                                        headers, body)
            if method == "GET" and path == "/v1/echo":  # the forwarding ceiling
                self._rr = (self._rr + 1) % self.n
                return await self._pass(self._rr, method, url, headers, body)
            return await self._pass(0, method, url, headers, body)

    def why_down(self, k: int) -> str | None:
        """Why shard ``k`` takes no requests (None: it does)."""
        return self.down(k) or self.stale.get(k)

    def _owner(self, body: bytes, key: str) -> int:
        """The shard of a single request (0 when the body names none: shard 0 then answers
        with the server's own 4xx for it)."""
        try:
            v = json.loads(body).get(key)
        except (ValueError, AttributeError):
            return 0
        if not isinstance(v, str):
            return 0
        if key == "user_id":
            return shard_of(v, self.n)
        k = shard_of_decision(v, self.n)
        return 0 if k is None else k

    async def _call(self, k: int, method: str, url: str, headers: list[tuple[bytes, bytes]],
                    body: bytes) -> Reply:
        why = self.why_down(k)
        client = self.client(k)
        if why is not None or client is None:
            raise ShardDown(k, why or "starting")
        try:
            status, hdr, content = await client.request(method, url, body, headers)
        except ShardError as exc:
            raise ShardDown(k, str(exc)) from None
        key = (str(k), status)
        self.counts[key] = self.counts.get(key, 0) + 1
        return Reply(status, content, [h for h in hdr if h[0] in BACK])

    async def _pass(self, k: int, method: str, url: str, headers: list[tuple[bytes, bytes]],
                    body: bytes) -> Reply:
        try:
            return await self._call(k, method, url, headers, body)
        except ShardDown as exc:
            return self._down(exc.k, exc.why)

    def _down(self, k: int, why: str) -> Reply:
        key = ("router", 503)
        self.counts[key] = self.counts.get(key, 0) + 1
        return Reply.error(503, "shard_unavailable", f"shard {k} of {self.n} (the shard of "
                           f"this user or decision) is not answering ({why}); nothing was "
                           "acknowledged; the supervisor restarts it, retry in a few seconds",
                           shard=k)

    # ------------------------------------------------------------------ batches
    async def _split(self, parts: dict[int, list[int]], items: list[Any], field: str,
                     extra: dict[str, Any], url: str, headers: list[tuple[bytes, bytes]]
                     ) -> dict[int, Reply | ShardDown]:
        """Send each shard its items (``parts``: shard -> item indices) concurrently."""
        hdr = [h for h in headers if h[0] != b"content-type"] + _JSON
        async def one(k: int, idx: list[int]) -> Reply | ShardDown:
            body = json.dumps({field: [items[i] for i in idx], **extra}).encode()
            try:
                return await self._call(k, "POST", url, hdr, body)
            except ShardDown as exc:
                return exc
        keys = sorted(parts)
        got = await asyncio.gather(*(one(k, parts[k]) for k in keys))
        return dict(zip(keys, got, strict=True))

    def _failed(self, parts: dict[int, list[int]], res: dict[int, Reply | ShardDown],
                field: str) -> Reply | None:
        """The first failing shard's answer with its item indices mapped back to the
        request's (None when every shard answered 200); what other shards applied is listed
        as ``partial``."""
        bad = [k for k, r in sorted(res.items())
               if not (isinstance(r, Reply) and r.status == 200)]
        if not bad:
            return None
        k = bad[0]
        got = res[k]
        ok = {j: r.data() for j, r in res.items() if isinstance(r, Reply) and r.status == 200}
        partial = {"shards": sorted(ok), "indices": sorted(i for j in ok for i in parts[j])}
        if isinstance(got, ShardDown):
            reply = self._down(got.k, got.why)
            body = reply.data()
        else:
            try:
                body = got.data()
            except ValueError:
                return got
            body["detail"] = _remap(str(body.get("detail", "")), field, parts[k])
        if ok:
            body["partial"] = partial
            body["detail"] = (f"{body['detail']} (shard {k}'s part of the batch was refused; "
                              f"the other shards' parts were applied and logged: `partial`)")
        return Reply.json(503 if isinstance(got, ShardDown) else got.status, body)

    async def _batch(self, path: str, url: str, headers: list[tuple[bytes, bytes]],
                     body: bytes) -> Reply:
        field, schema, key = _BATCHES[path]
        try:
            schema.model_validate_json(body)
        except ValidationError:
            return await self._pass(0, "POST", url, headers, body)  # its own 4xx
        data = json.loads(body)
        items = data.pop(field)
        if key == "user_id":
            owner = shards_of([str(x["user_id"]) for x in items], self.n).tolist()
        elif key == "self":
            owner = shards_of([str(x) for x in items], self.n).tolist()
        else:
            owner = [shard_of_decision(str(x["decision_id"]), self.n) for x in items]
            if None in owner:
                i = owner.index(None)
                return Reply.error(404, "unknown_decision", f"feedback[{i}]: unknown "
                                   f"decision_id {items[i]['decision_id']!r}: it was never "
                                   "returned by this sharded server (its ids start with "
                                   "`s<shard>.`)")
        parts: dict[int, list[int]] = {}
        for i, k in enumerate(owner):
            parts.setdefault(int(k), []).append(i)  # type: ignore[arg-type]
        res = await self._split(parts, items, field, data, url, headers)
        if path == "/v1/triggers/due":
            return self._merge_due(parts, res, field, items)
        out_key = "decisions" if path == "/v1/decide/batch" else "results"
        bad = self._failed(parts, res, field)
        if bad is not None:
            return bad
        merged: list[Any] = [None] * len(items)
        for k, idx in parts.items():
            r = res[k]
            assert isinstance(r, Reply)
            for i, d in zip(idx, r.data()[out_key], strict=True):
                merged[i] = d
        return Reply.json(200, {out_key: merged})

    def _merge_due(self, parts: dict[int, list[int]], res: dict[int, Reply | ShardDown],
                   field: str, users: list[Any]) -> Reply:
        bad = self._failed(parts, res, field)
        if bad is not None:
            return bad
        pos = {u: i for i, u in enumerate(users)}
        sends: list[Any] = []
        requeued, replayed, columns = 0, True, None
        for r in res.values():
            assert isinstance(r, Reply)
            d = r.data()
            got = d["sends"]
            if isinstance(got, dict):  # `format: columns`: merged as rows, answered as columns
                columns = list(got)
                got = [dict(zip(columns, v, strict=True))
                       for v in zip(*got.values(), strict=True)]
            sends += got
            requeued += int(d["requeued"])
            replayed = replayed and bool(d.get("replayed", False))
        sends.sort(key=lambda s: pos.get(s["user_id"], 0))
        out: Any = sends if columns is None else {c: [s[c] for s in sends] for c in columns}
        return Reply.json(200, {"sends": out, "requeued": requeued, "replayed": replayed})

    async def _events(self, url: str, headers: list[tuple[bytes, bytes]],
                      body: bytes) -> Reply:
        try:
            got = _EVENTS.validate_json(body)
        except ValidationError:
            return await self._pass(0, "POST", url, headers, body)
        if not isinstance(got, EventBatch):
            return await self._pass(shard_of(got.user_id, self.n), "POST", url, headers, body)
        data = json.loads(body)
        items = data.pop("events")
        parts: dict[int, list[int]] = {}
        for i, k in enumerate(shards_of([str(e["user_id"]) for e in items], self.n).tolist()):
            parts.setdefault(int(k), []).append(i)
        if len(parts) == 1:
            return await self._pass(next(iter(parts)), "POST", url, headers, body)
        res = await self._split(parts, items, "events", data, url, headers)
        bad = self._failed(parts, res, "events")
        if bad is not None:
            return bad
        return Reply.json(200, {"accepted": sum(int(r.data()["accepted"]) for r in res.values()
                                                if isinstance(r, Reply))})

    # ------------------------------------------------------------------ changes
    async def _change(self, method: str, path: str, url: str,
                      headers: list[tuple[bytes, bytes]], body: bytes) -> Reply:
        """A change every shard must make (module docstring): all shards or none."""
        async with self.barrier.exclusive():
            down = [k for k in range(self.n) if self.why_down(k) is not None]
            if down:
                return Reply.error(503, "shard_unavailable", f"shard(s) {down} of {self.n} "
                                   "down; a catalog or policy change reaches every shard or "
                                   "none: retry when GET /readyz answers 200", shards=down)
            if _PROMOTE.match(path):
                first = await self._call(0, method, url, headers, body)
                if first.status != 200:
                    return first
                gen = int(first.data()["generation"])
                await self._reload_all(gen, headers)
                return first
            first = await self._call(0, method, url, headers, body)
            if first.status != 200:
                return first
            rest = await asyncio.gather(*(self._call(k, method, url, headers, body)
                                          for k in range(1, self.n)), return_exceptions=True)
            for k, r in enumerate(rest, 1):
                if not isinstance(r, Reply) or r.status != 200:
                    why = r.data() if isinstance(r, Reply) else str(r)
                    log.error("shard %d refused %s %s that shard 0 applied: %s", k, method,
                              path, why)
                    return Reply.error(500, "shards_diverged", f"shard 0 applied {method} "
                                       f"{path} but shard {k} refused it ({why}); retry the "
                                       "request (it is idempotent) or restart the server",
                                       shard=k)
            if path == "/v1/policies/reload":
                self.generation = int(first.data()["generation"])
            return first

    async def _reload_all(self, gen: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Shards 1..N-1 load the pointer shard 0 wrote (generation ``gen``); a shard that
        cannot is marked down (its users get 503, nothing sees an old generation) and
        reported."""
        async def one(k: int) -> None:
            for attempt in range(3):
                try:
                    r = await self._call(k, "POST", "/v1/policies/reload", headers, b"")
                    if r.status == 200 and int(r.data()["generation"]) == gen:
                        return
                    why = f"answered {r.status}: {r.body[:300]!r}"
                except ShardDown as exc:
                    why = exc.why
                await asyncio.sleep(0.1 * (attempt + 1))
            log.error("shard %d could not load generation %d (%s): taken out until it is "
                      "restarted", k, gen, why)
            self.stale[k] = f"could not load policy generation {gen}: {why}"
            if self.on_stale is not None:
                self.on_stale(k)
        await asyncio.gather(*(one(k) for k in range(1, self.n)))
        self.generation = gen

    # ------------------------------------------------------------------ ops
    async def _ready(self, headers: list[tuple[bytes, bytes]]) -> Reply:
        async def one(k: int) -> str | None:
            try:
                r = await self._call(k, "GET", "/readyz", headers, b"")
            except ShardDown as exc:
                return f"shard {k}: down ({exc.why})"
            if r.status != 200:
                return f"shard {k}: {r.body.decode(errors='replace')[:300]}"
            return None
        bad = [x for x in await asyncio.gather(*(one(k) for k in range(self.n))) if x]
        if bad:
            return Reply.error(503, "shards_not_ready", "; ".join(bad))
        return Reply.json(200, {"status": "ready", "detail": f"{self.n} shards, policy "
                                f"generation {self.generation}"})

    def _status(self) -> dict[str, Any]:
        out = self.status() if self.status is not None else {}
        return {"shards": self.n, "generation": self.generation,
                "inflight": self.barrier.inflight,
                "pauses_ms": [round(p * 1000, 2) for p in self.barrier.pauses[-10:]], **out}

    def _metrics(self) -> str:
        lines = ["# TYPE serve_router_answers_total counter"]
        for (who, st), v in sorted(self.counts.items()):
            lines.append(f'serve_router_answers_total{{shard="{who}",status="{st}"}} {v}')
        lines.append("# TYPE serve_router_shard_up gauge")
        for k in range(self.n):
            lines.append(f'serve_router_shard_up{{shard="{k}"}} '
                         f"{int(self.why_down(k) is None)}")
        lines.append(f"serve_router_inflight {self.barrier.inflight}")
        return "\n".join(lines) + "\n"


def _remap(detail: str, field: str, idx: list[int]) -> str:
    """A shard's error message with its sub-batch indices (``requests[3]``, ``request 3``,
    ``requests.3.``) replaced by the request's."""
    def sub(m: re.Match[str]) -> str:
        j = int(m.group(2))
        return f"{m.group(1)}{idx[j] if j < len(idx) else j}"
    return re.sub(rf"((?:{field}|{field.rstrip('s')})(?:\[|\.| ))(\d+)", sub, detail)

