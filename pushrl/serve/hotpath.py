"""The server's outermost pushrl layer: request timing, and the hot routes without the
framework's per-request machinery.

:class:`HotPath` is a pure ASGI middleware. For every HTTP request it records one latency
observation (route template, method, status). ``POST /v1/decide`` and ``GET /v1/echo`` (the
load benchmark's ceiling: same path, same auth, no work) it answers itself: the API-key check
is a direct call (no dependency solving), the body goes straight to pydantic-core, and the
JSON answer is sent with pre-built headers. A decide request thus skips FastAPI's routing,
exception, exit-stack and dependency layers, about a third of its cost. Everything else goes
to the FastAPI app unchanged.

Nothing is defined twice: the routes stay declared in :mod:`pushrl.serve.app` (OpenAPI, and
the same handlers serve a request that reaches them), the request logic is the handlers'
(:func:`pushrl.serve.app.decide_json`), the key check is :func:`pushrl.serve.app.authorize`,
and an exception becomes the response the app's own exception handlers give it.
"""

from __future__ import annotations

import inspect
import json
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request

if TYPE_CHECKING:
    from fastapi import FastAPI

    from pushrl.serve.server import Server

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: A hot route: ``(server, scope, body) -> JSON bytes`` (raises on any error).
Handler = Callable[["Server", Scope, bytes], Awaitable[bytes]]
_JSON = (b"content-type", b"application/json")
#: ``json.dumps``'s own C encoder, built once (``json.dumps`` builds it on every call: about
#: a quarter of the instructions of serialising a decision); None without the C module.
_MAKE = getattr(json.encoder, "c_make_encoder", None)
_ENCODE = (None if _MAKE is None else _MAKE(
    None, json.JSONEncoder().default, json.encoder.encode_basestring_ascii, None, ": ", ", ",
    False, False, True))


def json_bytes(obj: Any) -> bytes:
    """``json.dumps(obj).encode()``, the same bytes (ASCII, default separators, NaN as
    ``NaN``) from the prebuilt encoder; ``obj`` must not contain itself (no circular check,
    as for every answer built by the server). A flat dict (a decision) goes through its
    shape's template (:func:`_flat_encoder`) when every value is a plain scalar."""
    if type(obj) is dict:
        keys = tuple(obj)
        enc = _FLAT.get(keys)
        if enc is None and keys not in _FLAT and len(_FLAT) < _FLAT_SHAPES:  # a new shape
            enc = _FLAT[keys] = _flat_encoder(keys)
        if enc is not None:
            got = enc(obj)
            if got is not None:
                return got
    if _ENCODE is None:
        return json.dumps(obj).encode()
    return "".join(_ENCODE(obj, 0)).encode()


#: The templates of the flat dict shapes seen (key tuple -> encoder, or None when a key is
#: not a str or there is none), at most :data:`_FLAT_SHAPES` of them (then the C encoder alone).
_FLAT: dict[tuple[Any, ...], Callable[[dict[str, Any]], bytes | None] | None] = {}
_FLAT_SHAPES = 64


def _nonfinite(v: float) -> str:
    return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")


def _flat_encoder(keys: tuple[Any, ...]) -> Callable[[dict[str, Any]], bytes | None] | None:
    """An encoder of dicts with exactly these keys in this order whose values are all plain
    ``str``, ``None``, ``bool``, ``float`` or ``int``: the C encoder's bytes (each value as it
    writes it: ``encode_basestring_ascii``, ``null``/``true``/``false``, ``float.__repr__`` or
    NaN/Infinity, ``int.__repr__``) put into one ``%`` template of the keys, without its ~50
    small string pieces (~6.5k of its ~32k instructions for a decision, issue 20); None (the
    caller uses the C encoder) for any other value. Generated as straight-line code, as
    dataclasses generate ``__init__`` (a loop over the values cost more than it saved)."""
    if not keys or not all(type(k) is str for k in keys):
        return None
    esc = json.encoder.encode_basestring_ascii
    names = [f"v{i}" for i in range(len(keys))]
    lines = [f"def encode(o):\n    {', '.join(names)}, = o.values()"]
    for v in names:
        # (None first: no type() call for the decision's usual null fields)
        lines.append(f"""    if {v} is None:
        {v} = "null"
    elif (t := type({v})) is str:
        {v} = esc({v})
    elif {v} is True:
        {v} = "true"
    elif {v} is False:
        {v} = "false"
    elif t is float:
        {v} = frepr({v}) if isfinite({v}) else nonfinite({v})
    elif t is int:
        {v} = irepr({v})
    else:
        return None""")
    template = "{" + ", ".join(esc(k).replace("%", "%%") + ": %s" for k in keys) + "}"
    lines.append(f"    return ({template!r} % ({', '.join(names)},)).encode()")
    # (``repr`` of an exact float or int is its type's ``__repr__``; the builtin is a direct
    # call, the unbound slot wrapper a descriptor call: ~1.2k instructions more per value)
    scope: dict[str, Any] = {"esc": esc, "frepr": repr, "irepr": repr,
                             "isfinite": math.isfinite, "nonfinite": _nonfinite}
    exec("\n".join(lines), scope)  # (code built from escaped keys only)
    return scope["encode"]  # type: ignore[no-any-return]


async def read_body(receive: Receive) -> bytes:
    """The whole request body.

    Raises:
        ClientDisconnect: the client went away before sending all of it.
    """
    chunks: list[bytes] | None = None  # (a small body comes in one message: no list)
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientDisconnect()
        body = msg.get("body", b"")
        if not msg.get("more_body", False):
            return body if chunks is None else b"".join([*chunks, body])
        if chunks is None:
            chunks = []
        chunks.append(body)


class HotPath:
    """Times every request; answers the hot routes itself (module docstring). It wraps the
    app's whole middleware stack (:func:`pushrl.serve.app.create_app`).

    Args:
        app: The inner ASGI app (FastAPI's routing).
        root: The FastAPI app (its ``state.server`` once the lifespan started it, its routes
            and exception handlers).
        hot: ``{(method, path): (needs_body, handler)}``.
    """

    def __init__(self, app: ASGIApp, root: FastAPI,
                 hot: dict[tuple[str, str], tuple[bool, Handler]]) -> None:
        self.app = app
        self.root = root
        self.hot = hot
        self._routes: dict[str, Any] = {}
        self._children: dict[tuple[str, str, int], Any] = {}

    def _route(self, path: str) -> Any:
        """The declared route of a hot path (error handlers log its template)."""
        got = self._routes.get(path)
        if got is None:
            got = next((r for r in self.root.routes if getattr(r, "path", None) == path), None)
            self._routes[path] = got
        return got

    def _observe(self, srv: Server, route: str, method: str, status: int,
                 seconds: float) -> None:
        key = (route, method, status)
        child = self._children.get(key)
        if child is None or child[0] is not srv:  # a new server (tests restart the app)
            child = (srv, srv.metrics.latency.labels(route, method, str(status)))
            self._children[key] = child
        child[1].observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        srv: Server | None = getattr(self.root.state, "server", None)
        if srv is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        method = scope["method"]
        hot = self.hot.get((method, scope["path"]))
        if hot is None:
            status = 500

            async def timed_send(message: Any) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await self.app(scope, receive, timed_send)
            finally:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                self._observe(srv, route, method, status, time.perf_counter() - t0)
            return
        path = scope["path"]
        scope["app"] = self.root
        scope["route"] = self._route(path)
        try:
            body = await read_body(receive) if hot[0] else b""
            out = await hot[1](srv, scope, body)
        except Exception as exc:
            status = await self._error(exc, scope, receive, send)
        else:
            status = 200
            await send({"type": "http.response.start", "status": 200,
                        "headers": [_JSON, (b"content-length", str(len(out)).encode())]})
            await send({"type": "http.response.body", "body": out})
        self._observe(srv, path, method, status, time.perf_counter() - t0)

    async def _error(self, exc: Exception, scope: Scope, receive: Receive, send: Send) -> int:
        """Answer as the app's exception handler for ``exc`` does; returns the status."""
        handlers = self.root.exception_handlers
        handler = next((handlers[c] for c in type(exc).__mro__ if c in handlers), None)
        if handler is None:  # the app registers one for Exception: never expected
            raise exc
        response = handler(Request(scope, receive), exc)
        if inspect.isawaitable(response):
            response = await response
        await response(scope, receive, send)
        return int(response.status_code)
