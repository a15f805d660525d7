"""HTTP API of the policy server (FastAPI). Logic lives in :mod:`pushrl.serve.server`.

Every client mistake is a 4xx JSON body ``{"error": code, "detail": message}``; 5xx is kept
for genuine server faults (the durable log failing). Request bodies are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import ValidationError
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from pushrl.errors import ArtifactError, PushrlError
from pushrl.policies.base import Policy
from pushrl.serve import registry_ops, store
from pushrl.serve.auth import ApiKey, AuthError, presented_key
from pushrl.serve.config import ServeConfig
from pushrl.serve.errors import ServeError
from pushrl.serve.hotpath import HotPath, Scope, json_bytes
from pushrl.serve.schemas import (
    ChangeOut,
    DecideBatchIn,
    DecideBatchOut,
    DecideIn,
    DecideOut,
    ErrorBody,
    Event,
    EventBatch,
    EventsOut,
    FeedbackBatchIn,
    FeedbackBatchOut,
    FeedbackIn,
    FeedbackOut,
    Health,
    ItemIn,
    ItemOut,
    ItemUpdate,
    ItemUpdateBatch,
    ItemUpdatesOut,
    KillSwitchIn,
    KillSwitchOut,
    PoliciesOut,
    PromoteIn,
    RollbackIn,
    TriggersDueIn,
    TriggersDueColumnsOut,
    TriggersDueOut,
    UserIn,
    UserOut,
    UserTriggersOut,
)
from pushrl.serve.server import Server

log = logging.getLogger("pushrl.serve")

PathId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$",
                             description="Opaque printable ASCII id")]
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "Malformed request", 401: "Missing or invalid API key",
            403: "API key lacks the scope", 404: "Unknown user, item, decision or policy",
            409: "Conflicts with the server's state", 422: "Invalid value",
            503: "Durable log unavailable"}
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None
           ) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    errs = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errs):
        ctx = next(e for e in errs if e.get("type") == "json_invalid").get("ctx", {})
        return 400, "malformed_json", f"request body is not valid JSON ({ctx.get('error', '')})"
    parts = []
    for e in errs[:10]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    more = f" (+{len(errs) - 10} more)" if len(errs) > 10 else ""
    return 422, "invalid_request", "; ".join(parts) + more


def authorize(srv: Server, authorization: str | None, x_api_key: str | None,
              scope: str | None) -> ApiKey | None:
    """The API key a request presents (``Authorization`` / ``X-API-Key`` header values),
    checked for ``scope`` (None: any valid key); None when the server has no keys.

    Raises:
        AuthError: 401 without a valid key, 403 without the scope.
    """
    checker = srv.keys
    if checker is None:
        return None
    return checker.check(presented_key(authorization, x_api_key), scope)


async def decide_json(srv: Server, body: bytes) -> bytes:
    """``/v1/decide``: the request body's JSON bytes to the answer's (a :class:`DecideOut`).

    The body is validated by pydantic-core straight from the bytes (the route's schema is
    the same model), and the answer is already JSON-ready and shaped as DecideOut, so it is
    not re-validated.

    Raises:
        RequestValidationError: an invalid body (the app's handler makes it a 400/422).
    """
    try:
        req = _DECIDE_IN(body)
    except ValidationError as exc:
        raise _body_error(body, exc) from None
    return json_bytes(await srv.batcher.submit(req))  # (= srv.decide_one, one frame less)


#: ``DecideIn.model_validate_json`` without its Python wrapper (the same pydantic-core
#: validator with the same defaults; the wrapper cost ~4.7k instructions per decide, a third
#: of the parse, issue 20).
_DECIDE_IN = DecideIn.__pydantic_validator__.validate_json


def _body_error(body: bytes, exc: ValidationError) -> RequestValidationError:
    """The error FastAPI gives a declared JSON body that fails ``exc``: an empty body is a
    missing one (422), text that is not JSON names the :mod:`json` parser's complaint (400),
    anything else is the model's own errors (422)."""
    if not body.strip():
        return RequestValidationError([{"type": "missing", "loc": ("body",),
                                        "msg": "Field required", "input": None}])
    if any(e["type"] == "json_invalid" for e in exc.errors()):
        try:
            json.loads(body)
        except ValueError as bad:
            msg = bad.msg if isinstance(bad, json.JSONDecodeError) else str(bad)
            return RequestValidationError([{"type": "json_invalid", "loc": ("body", 0),
                                            "msg": "JSON decode error", "input": {},
                                            "ctx": {"error": msg}}])
    return RequestValidationError(exc.errors(include_url=False))


#: The fields of a :class:`DecideOut` in order, with their defaults (None where required):
#: the batch answer lists every field, as its response model did.
_DECIDE_OUT_FIELDS = [(name, None if f.is_required() else f.default)
                      for name, f in DecideOut.model_fields.items()]


async def decide_batch_json(srv: Server, body: bytes) -> bytes:
    """``/v1/decide/batch``: the request body's JSON bytes to the answer's (a
    :class:`DecideBatchOut`), validated and answered as :func:`decide_json` does (every
    decision with all of DecideOut's fields, as the response model wrote them).

    Raises:
        RequestValidationError: an invalid body (the app's handler makes it a 400/422).
    """
    try:
        req = DecideBatchIn.model_validate_json(body)
    except ValidationError as exc:
        raise _body_error(body, exc) from None
    outs = await srv.decide_batch(req.requests)
    fields = _DECIDE_OUT_FIELDS
    return json_bytes({"decisions": [{k: o.get(k, d) for k, d in fields} for o in outs]})


def _header_value(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return str(v.decode("latin-1"))
    return None


def _hot_routes() -> dict[tuple[str, str], Any]:
    """The routes :class:`HotPath` answers without the framework; all need the ``decide``
    scope, as their declared dependency says."""
    def auth(srv: Server, scope: Scope) -> None:
        if srv.keys is not None:
            authorize(srv, _header_value(scope, b"authorization"),
                      _header_value(scope, b"x-api-key"),
                      "decide")

    def decide(srv: Server, scope: Scope, body: bytes) -> Awaitable[bytes]:
        auth(srv, scope)  # (raises inside HotPath's try, as the awaited body would)
        return decide_json(srv, body)  # HotPath awaits it: no coroutine frame of its own

    async def decide_batch(srv: Server, scope: Scope, body: bytes) -> bytes:
        auth(srv, scope)
        return await decide_batch_json(srv, body)

    async def echo(srv: Server, scope: Scope, _: bytes) -> bytes:
        auth(srv, scope)
        return _ECHO

    return {("POST", "/v1/decide"): (True, decide),
            ("POST", "/v1/decide/batch"): (True, decide_batch),
            ("GET", "/v1/echo"): (False, echo)}


_ECHO = json.dumps({"ok": True}).encode()


def create_app(cfg: ServeConfig, *, overrides: dict[str, Policy] | None = None) -> FastAPI:
    """Build the app; the :class:`Server` starts in the lifespan (``app.state.server``)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        srv = Server(cfg, overrides=overrides)
        app.state.server = srv
        # Everything loaded so far (policies, state, libraries) lives as long as the process:
        # move it out of the collector's generations, so a full collection scans only what
        # requests allocate. Without this, gen-2 pauses of 20-100 ms set the decide p99.
        gc.collect()
        gc.freeze()
        watcher = asyncio.create_task(srv.watch())
        try:
            yield
        finally:
            watcher.cancel()
            srv.close()

    private_docs = cfg.api_keys is not None and not cfg.public_docs
    app = FastAPI(title="pushrl policy server", version="1", lifespan=lifespan,
                  description="Decides whether, when and what to push; logs every decision "
                  "with its probability (pushlog v1). Errors: `{error, detail}`.",
                  docs_url=None if private_docs else "/docs",
                  redoc_url=None if private_docs else "/redoc",
                  openapi_url=None if private_docs else "/openapi.json")

    def srv() -> Server:
        return app.state.server  # type: ignore[no-any-return]

    def scope(name: str | None) -> Any:
        """``name`` scope needed (None: any valid key); the key's id goes to the audit log."""
        if cfg.api_keys is None:  # no keys configured: no auth (and none in the spec)
            async def open_() -> None:
                return None
            return Depends(open_)

        async def check(request: Request,
                        cred: HTTPAuthorizationCredentials | None = Security(_bearer),
                        key: str | None = Security(_header)) -> None:
            bearer = f"Bearer {cred.credentials}" if cred is not None else None
            got = authorize(srv(), bearer, key, name)
            if got is not None:
                request.state.api_key_id = got.id
        return Depends(check)

    decide_scope, admin_scope, any_key = scope("decide"), scope("admin"), scope(None)
    _add_error_handlers(app)
    if private_docs:
        _add_private_docs(app, any_key)
    _add_ops_routes(app, srv, decide_scope, None if cfg.public_metrics else any_key)
    _add_data_routes(app, srv, decide_scope, admin_scope)
    _add_decide_routes(app, srv, decide_scope)
    _add_trigger_routes(app, srv, decide_scope, admin_scope)
    _add_policy_routes(app, srv, decide_scope, admin_scope)
    app.state.cfg = cfg
    _raw_body_schemas(app, DecideBatchIn)
    _outermost_hot_path(app)
    return app


def _raw_body_schemas(app: FastAPI, *models: type[Any]) -> None:
    """List ``models`` in the OpenAPI components: routes that read their raw body name them
    only in ``openapi_extra`` (FastAPI lists a model only where a route declares it)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        spec = build()
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        for m in models:
            got = m.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in got.pop("$defs", {}).items():
                schemas.setdefault(name, sub)
            schemas.setdefault(m.__name__, got)
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _outermost_hot_path(app: FastAPI) -> None:
    """Put :class:`HotPath` outside every layer of the app's middleware stack (FastAPI's
    error, telemetry and body-limit middlewares cost ~10 % of a small request; an error on a
    hot route becomes the response of the app's own exception handler, and no body limit is
    configured)."""
    build = app.build_middleware_stack
    hot = _hot_routes()

    def build_with_hot_path() -> Any:
        return HotPath(build(), root=app, hot=hot)

    app.build_middleware_stack = build_with_hot_path  # type: ignore[method-assign]


def _add_private_docs(app: FastAPI, any_key: Any) -> None:
    """``/openapi.json`` and ``/docs`` behind a key (any scope)."""
    @app.get("/openapi.json", include_in_schema=False, dependencies=[any_key])
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[any_key])
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")


def _who(request: Request) -> str:
    """The audit log's ``user`` of an API call: the id of the key that made it."""
    key_id = getattr(request.state, "api_key_id", None)
    return f"api-key:{key_id}" if key_id else "api:no-auth"


def _disconnected(request: Request) -> Response:
    """The client went away mid-request: its error, not the server's (no traceback; counted
    as status 499, "client closed request", which nobody receives)."""
    log.info("client disconnected during %s %s", request.method, _route(request))
    return Response(status_code=499)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _: ClientDisconnect) -> Response:
        return _disconnected(request)

    @app.exception_handler(ServeError)
    async def _serve_error(_: Request, exc: ServeError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.detail)

    @app.exception_handler(AuthError)
    async def _auth_error(_: Request, exc: AuthError) -> JSONResponse:
        hdr = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error(exc.status, "unauthorized" if exc.status == 401 else "forbidden",
                      str(exc), hdr)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, code, msg = _validation_message(exc)
        return _error(status, code, msg)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc.__cause__, ClientDisconnect):  # FastAPI wraps it as a 400
            return _disconnected(request)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(registry_ops.GateRefused)
    async def _gate(_: Request, exc: registry_ops.GateRefused) -> JSONResponse:
        return _error(409, "gate_refused", str(exc))

    @app.exception_handler(ArtifactError)
    async def _artifact(_: Request, exc: ArtifactError) -> JSONResponse:
        msg = str(exc)
        return _error(404 if msg.startswith("no ") else 409, "artifact_error", msg)

    @app.exception_handler(PushrlError)
    async def _domain(_: Request, exc: PushrlError) -> JSONResponse:
        return _error(422, "invalid_request", str(exc))

    @app.exception_handler(sqlite3.Error)
    async def _log_down(request: Request, exc: sqlite3.Error) -> JSONResponse:
        store.errors.error("request", "durable log error on %s %s: %s", request.method,
                           _route(request), exc)
        return _error(503, "log_unavailable", "the durable log cannot be written; nothing was "
                      "acknowledged, retry later")

    @app.exception_handler(Exception)
    async def _fault(request: Request, exc: Exception) -> JSONResponse:
        # the route template, not the path: paths carry user ids; bodies are never logged
        log.error("internal error on %s %s: %s: %s", request.method, _route(request),
                  type(exc).__name__, exc)
        return _error(500, "internal", "internal server error (logged; the request may be "
                      "retried)")


def _add_ops_routes(app: FastAPI, srv: Callable[[], Server], decide_scope: Any,
                    metrics_scope: Any) -> None:
    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz() -> dict[str, Any]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=Health, tags=["ops"], responses=_errors(503))
    async def readyz() -> Any:
        """Readiness: state rebuilt, policies loaded, durable log writable, and a decision
        can be made (items in the catalog, the item policy knows them)."""
        s = srv()
        why = s.not_ready()
        if why is not None:
            return _error(503, *why)
        return {"status": "ready", "detail": f"timing={s.engine.policies.timing.label} "
                f"item={s.engine.policies.item.label}"}

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse,
             dependencies=[] if metrics_scope is None else [metrics_scope])
    async def metrics() -> Response:
        """Prometheus metrics (``serve_*``)."""
        return Response(generate_latest(srv().metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/echo", tags=["ops"], dependencies=[decide_scope], responses=_errors(401, 403))
    async def echo() -> dict[str, bool]:
        """Does nothing (the load benchmark's ceiling, same auth as decide)."""
        return {"ok": True}



def _add_data_routes(app: FastAPI, srv: Callable[[], Server], decide_scope: Any,
                     admin_scope: Any) -> None:
    @app.put("/v1/users/{user_id}", response_model=UserOut, tags=["data"],
             response_model_exclude_none=True,  # `channels` only with --channels
             dependencies=[decide_scope], responses=_errors(400, 401, 403, 409, 422, 503))
    async def put_user(user_id: PathId, body: UserIn) -> dict[str, Any]:
        """Create or update a user (time zone, features, subscription)."""
        s = srv()
        await s.idle()
        created, stmts = s.put_user(user_id, body.timezone, body.features, body.ts,
                                    body.subscribed, body.channels)
        await s.commit(stmts)
        idx, ch = s.state.users[user_id], s.engine.channels
        return {"user_id": user_id, "created": created,
                "subscribed": s.state.subscriptions.is_subscribed(idx),
                "channels": None if ch is None else ch.opted_in(idx)}

    @app.put("/v1/items/{item_id}", response_model=ItemOut, tags=["data"],
             dependencies=[admin_scope], responses=_errors(400, 401, 403, 422, 503))
    async def put_item(item_id: PathId, body: ItemIn) -> dict[str, Any]:
        """Create or update a catalog item."""
        created = await srv().put_item(item_id, body.category, body.features)
        return {"item_id": item_id, "created": created}

    @app.post("/v1/events", response_model=EventsOut, tags=["data"],
              dependencies=[decide_scope], responses=_errors(400, 401, 403, 404, 422, 503))
    async def events(body: Event | EventBatch) -> dict[str, Any]:
        """Record one activity event or a batch ``{"events": [...]}``."""
        evs = body.events if isinstance(body, EventBatch) else [body]
        await srv().record_events(evs)
        return {"accepted": len(evs)}

    @app.get("/v1/users/{user_id}/profile", tags=["data"], dependencies=[decide_scope],
             responses=_errors(401, 403, 404, 409, 422))
    async def user_profile(user_id: PathId, as_of: str | None = None) -> dict[str, Any]:
        """The user's profile (peak hours, engagement, churn risk, affinities, RFM segment,
        push responsiveness) at ``as_of`` (unix seconds or ISO 8601 with offset; default
        now), as ``pushrl profiles`` computes it
        (:mod:`pushrl.serve.profiles`)."""
        from pushrl.serve.profiles import user_profile as profile

        return await profile(srv(), user_id, as_of)

    @app.get("/v1/users/{user_id}/plan", tags=["data"], dependencies=[decide_scope],
             responses=_errors(401, 403, 404, 422))
    async def user_plan(user_id: PathId) -> dict[str, Any]:
        """The user's hours in the loaded plans (``pushrl serve --plan FILE``, written by
        ``pushrl plan``), as planned, with the user's live status (a plan's guardrails were
        applied at plan time: drop a planned send if ``live.subscribed`` is false)."""
        from pushrl.serve.served_plans import user_plan as plan_of

        s = srv()
        return plan_of(s.plans, s.state, user_id)



def _add_decide_routes(app: FastAPI, srv: Callable[[], Server], decide_scope: Any) -> None:
    @app.post("/v1/decide", response_model=DecideOut, tags=["decide"],
              dependencies=[decide_scope], responses=_errors(400, 401, 403, 404, 409, 422, 503),
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/DecideIn"}}}}})
    async def decide(request: Request) -> Any:
        """Send now or wait; which item. Logged durably (with its pscore) before answering.

        (Answered by :class:`~pushrl.serve.hotpath.HotPath` with the same function.)"""
        return Response(await decide_json(srv(), await request.body()),
                        media_type="application/json")

    @app.post("/v1/decide/batch", response_model=DecideBatchOut, tags=["decide"],
              dependencies=[decide_scope], responses=_errors(400, 401, 403, 404, 409, 422, 503),
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/DecideBatchIn"}}}}})
    async def decide_batch(request: Request) -> Any:
        """Several decisions (distinct users) in one request.

        (Answered by :class:`~pushrl.serve.hotpath.HotPath` with the same function.)"""
        return Response(await decide_batch_json(srv(), await request.body()),
                        media_type="application/json")

    @app.post("/v1/feedback", response_model=FeedbackOut, tags=["decide"],
              dependencies=[decide_scope], responses=_errors(400, 401, 403, 404, 409, 422, 503))
    async def feedback(body: FeedbackIn) -> dict[str, Any]:
        """Outcomes of a decision (idempotent; late ones are kept but flagged)."""
        s = srv()
        await s.idle()
        out, stmts, token = s.feedback(body)
        try:
            await s.commit(stmts)
        finally:
            s.feedback_done(body.decision_id, token)
        return out

    @app.post("/v1/feedback/batch", response_model=FeedbackBatchOut, tags=["decide"],
              dependencies=[decide_scope], responses=_errors(400, 401, 403, 404, 409, 422, 503))
    async def feedback_batch(body: FeedbackBatchIn) -> dict[str, Any]:
        """Several outcome reports in one request and one commit (all or nothing; an error
        names its row as ``feedback[i]``)."""
        s = srv()
        await s.idle()
        outs, stmts, tokens = s.feedback_batch(body.feedback)
        try:
            await s.commit(stmts)
        finally:
            for decision_id, token in tokens:
                s.feedback_done(decision_id, token)
        return {"results": outs}



def _add_trigger_routes(app: FastAPI, srv: Callable[[], Server], decide_scope: Any,
                        admin_scope: Any) -> None:
    @app.post("/v1/items/updates", response_model=ItemUpdatesOut, tags=["triggers"],
              dependencies=[admin_scope], responses=_errors(400, 401, 403, 404, 422, 503))
    async def item_updates(body: ItemUpdate | ItemUpdateBatch) -> dict[str, Any]:
        """Price / stock changes of items, one or a batch ``{"updates": [...]}`` (price-drop
        and back-in-stock triggers; logged as pushlog ``item_updates``)."""
        ups = body.updates if isinstance(body, ItemUpdateBatch) else [body]
        s = srv()
        if len(ups) > 64:  # each may fire for many users: off the event loop
            out: dict[str, Any] = await s.in_worker(lambda: s.item_updates(ups))
            return out
        await s.idle()
        out, stmts = s.item_updates(ups)
        await s.commit(stmts)
        return out

    @app.post("/v1/triggers/due", response_model=TriggersDueOut | TriggersDueColumnsOut,
              tags=["triggers"],
              dependencies=[decide_scope], responses=_errors(400, 401, 403, 404, 409, 422, 503))
    async def triggers_due(body: TriggersDueIn) -> Response:
        """The behaviour-triggered sends due now for a batch of users (what a sender polls).
        Each is logged as a push with its delay arm's probability and marked sent before
        the answer; retry with the same `request_id` to get the same answer again.

        (The answer is built as TriggersDueOut and not re-validated: 10k sends would cost
        more to validate than to decide.)"""
        text, sent = await srv().triggers_due_json(body)
        return Response(text, media_type="application/json", background=BackgroundTask(sent))

    @app.get("/v1/users/{user_id}/triggers", response_model=UserTriggersOut,
             tags=["triggers"], dependencies=[decide_scope],
             responses=_errors(400, 401, 403, 404, 409, 422))
    async def user_triggers(user_id: PathId) -> dict[str, Any]:
        """A user's pending (open) triggers in sending order."""
        s = srv()
        await s.idle()
        return s.user_triggers(user_id)


def _add_policy_routes(app: FastAPI, srv: Callable[[], Server], decide_scope: Any,
                       admin_scope: Any) -> None:
    @app.get("/v1/policies", response_model=PoliciesOut, tags=["policies"],
             dependencies=[decide_scope], responses=_errors(401, 403))
    async def policies() -> dict[str, Any]:
        """Active and shadow policies, kill switch, and the registry's artifacts."""
        s = srv()
        ps = s.engine.policies
        hist = {k: [h or "default" for h in ps.pointer.get(k, {}).get("history", [])]
                for k in registry_ops.KINDS}
        avail = await asyncio.to_thread(registry_ops.list_artifacts, s.cfg.registry)
        tr = s.state.triggers  # the delay slot: promoted, else the server's own
        delay = ps.delay.label if ps.delay else (tr.policy.label if tr else None)
        fb = {k: "; ".join(v for kk, v in ps.fallback.items() if kk.endswith(k)) or None
              for k in registry_ops.KINDS}
        return {"timing": {"active": ps.timing.label, "history": hist["timing"],
                           "shadow": ps.shadow_timing.label if ps.shadow_timing else None,
                           "fallback": fb["timing"]},
                "item": {"active": ps.item.label, "history": hist["item"],
                         "shadow": ps.shadow_item.label if ps.shadow_item else None,
                         "fallback": fb["item"]},
                "delay": None if delay is None else {
                    "active": delay, "history": hist["delay"],
                    "shadow": ps.shadow_delay.label if ps.shadow_delay else None,
                    "fallback": fb["delay"]},
                "kill_switch": s.engine.kill_switch, "generation": ps.generation,
                "available": avail}

    @app.post("/v1/policies/{name}/promote", response_model=ChangeOut, tags=["policies"],
              dependencies=[admin_scope], responses=_errors(400, 401, 403, 404, 409, 422, 503))
    async def promote(name: PathId, body: PromoteIn, request: Request) -> dict[str, Any]:
        """Promote (OPE gate) or shadow an artifact; swaps policies without a restart.

        The artifact must load, make a decision and (item policies) know this server's
        catalog before the pointer moves; otherwise nothing changes."""
        s = srv()
        res = await asyncio.to_thread(registry_ops.promote, s.cfg.registry, name, body.version,
                                      shadow=body.shadow, force=body.force, reason=body.reason,
                                      user=_who(request), check=s.check_catalog)
        await s.apply_pointer()
        return _change(s, res)

    @app.post("/v1/policies/{name}/rollback", response_model=ChangeOut, tags=["policies"],
              dependencies=[admin_scope], responses=_errors(400, 401, 403, 404, 409, 422, 503))
    async def rollback(request: Request, name: PathId,
                       body: RollbackIn | None = None) -> dict[str, Any]:
        """Undo the last promotion of the slot `name` is active in (or stop its shadow)."""
        s = srv()
        res = await asyncio.to_thread(registry_ops.rollback, s.cfg.registry, name,
                                      reason=body.reason if body else None, user=_who(request))
        await s.apply_pointer()
        return _change(s, res)

    @app.post("/v1/policies/reload", response_model=ChangeOut, tags=["policies"],
              dependencies=[admin_scope], responses=_errors(401, 403, 409, 422, 503))
    async def reload_pointer() -> dict[str, Any]:
        """Load what the registry's pointer names now (a sharded server's router calls it
        on every shard after shard 0 promoted: :mod:`pushrl.serve.router`)."""
        s = srv()
        await s.apply_pointer()
        return _change(s, {"kind": "timing"})

    @app.put("/v1/kill-switch", response_model=KillSwitchOut, tags=["policies"],
             dependencies=[admin_scope], responses=_errors(400, 401, 403, 422, 503))
    async def kill_switch(body: KillSwitchIn, request: Request) -> dict[str, Any]:
        """Global kill switch: on = the safe default policy decides (never sends)."""
        await srv().set_kill_switch(body.enabled, body.reason, user=_who(request))
        return {"enabled": body.enabled}


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", "unmatched route"))


def _change(s: Server, res: dict[str, Any]) -> dict[str, Any]:
    ps = s.engine.policies
    kind = res["kind"]
    if kind == "delay":
        tr = s.state.triggers
        label = ps.delay.label if ps.delay else (tr.policy.label if tr else "server default")
        return {"kind": kind, "active": label,
                "shadow": ps.shadow_delay.label if ps.shadow_delay else None,
                "generation": ps.generation, "gate": res.get("gate")}
    loaded = ps.timing if kind == "timing" else ps.item
    shadow = ps.shadow_timing if kind == "timing" else ps.shadow_item
    return {"kind": kind, "active": loaded.label, "shadow": shadow.label if shadow else None,
            "generation": ps.generation, "gate": res.get("gate")}
