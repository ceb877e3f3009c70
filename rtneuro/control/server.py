"""The control API of a running graph: REST and a WebSocket, FastAPI on uvicorn in a thread.

The server is a thin face over a :class:`~rtneuro.control.hub.Hub`: each
route checks the caller's token, the shape of the body, and hands the
request to the hub, which validates it against the graph, applies it and
records it. The server never touches a node; a blocking hub call runs in a
worker thread, so neither the event loop nor the processing path waits on a
slow client.

Routes (all JSON, prefix ``/api``; :func:`openapi_schema` documents them)

==========================================  ========  =====================================
route                                       role      what
==========================================  ========  =====================================
``GET /api/graph``                          observer  processes, nodes, streams, live params
``GET /api/status``                         observer  per-stream rate, gaps, latency; state
``GET /api/report``                         observer  the run report so far
``GET /api/changes?since=N``                observer  ctl records with ``seq > N``
``GET /api/openapi.json``                   observer  this API's OpenAPI schema
``POST /api/params?wait_s=2``               steer     ``{"changes": {"node.param": value}}``
``POST /api/annotations``                   steer     ``{"text": "block 2 starts"}``
``POST /api/stimulation/arm`` (``disarm``,  steer     ``{"reason": "..."}`` (optional body)
``estop``, ``estop/clear``)
``POST /api/recording/start`` / ``stop``    steer     ``{"label": "..."}`` (optional body)
``POST /api/replay/pause`` / ``resume``     steer     no body
``WS /api/ws``                              observer  hello, then the hub's push events
==========================================  ========  =====================================

Errors are always ``{"error": "<one line naming the fix>"}`` with the
status of :class:`~rtneuro.control.live.ControlError`: 400 malformed, 401
no or unknown token, 403 an observer steering, 404 unknown node, parameter
or route, 409 not possible now, 413 a body over 64 KiB, 422 an invalid
value, 503 the run is not running, 500 a bug (logged with its traceback).
Every refusal made here (401, 403, 404 route, 400/413 malformed body) is
reported to :meth:`Hub.refused`, which counts and logs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import math
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, Protocol

import anyio
from fastapi import Depends, FastAPI, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import RtneuroError, did_you_mean
from .auth import Identity, allows, bearer_token
from .live import ControlError

__all__ = ["MAX_BODY", "create_app", "ControlServer", "openapi_schema", "api_markdown"]

log = logging.getLogger(__name__)

#: Largest request body accepted (bytes); a larger one is refused with 413 before it is read.
MAX_BODY = 64 * 1024
#: WebSocket clients served at once (each holds one worker thread waiting on its subscription).
MAX_WS_CLIENTS = 16
#: Longest a POST /api/params may wait for the change to be applied (``?wait_s=``).
MAX_WAIT_S = 10.0
_POLL_S = 0.25  # a WebSocket's wait on its subscription, per call


# -- what the server needs from the hub and the token check ----------------------

class Subscription(Protocol):
    """Push events of one client (:meth:`Hub.subscribe`)."""

    def get(self, timeout_s: float) -> dict | None: ...

    def close(self) -> None: ...


class HubLike(Protocol):
    """What the server calls (:class:`rtneuro.control.hub.Hub`); every method is thread-safe."""

    name: str

    def graph(self) -> dict: ...

    def status(self) -> dict: ...

    def report(self) -> dict: ...

    def changes(self, since: int = 0) -> list[dict]: ...

    def request(self, op: str, args: dict, who: str, timeout_s: float = 2.0) -> dict: ...

    def subscribe(self) -> Subscription: ...

    def refused(self, reason: str, peer: str, detail: str = "") -> None: ...


class Authenticator(Protocol):
    """The token check (:class:`rtneuro.control.auth.TokenAuth`)."""

    def check(self, token: str | None) -> Identity | None: ...


# -- request bodies (one schema per body) ------------------------------------------

class ParamsChange(BaseModel):
    """Live parameters to change together: all are applied at the next chunk boundary, or none."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"changes": {"thr.threshold": 2.5}}]})
    changes: dict[str, Any] = Field(min_length=1, max_length=256, description=(
        "'NODE.PARAM': value (or NODE: {PARAM: value}); values as in the graph YAML"))

    @field_validator("changes")
    @classmethod
    def _finite(cls, changes: dict[str, Any]) -> dict[str, Any]:
        """Refuse NaN and Infinity (Python's JSON reader accepts them; JSON has no such numbers)."""
        todo: list[Any] = [changes]
        while todo:
            v = todo.pop()
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{v} is not a JSON number; give a finite number")
            if isinstance(v, dict):
                todo.extend(v.values())
            elif isinstance(v, list):
                todo.extend(v)
        return changes


class Annotation(BaseModel):
    """Free text stamped on the LSL clock and recorded in the session."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": "block 2 starts"}]})
    text: str = Field(min_length=1, max_length=500, description="the annotation, 1 to 500 characters")


class Reason(BaseModel):
    """Why stimulation is armed, disarmed or stopped (recorded with the action)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reason": "participant moves"}]})
    reason: str | None = Field(default=None, max_length=200, description="at most 200 characters")


class Segment(BaseModel):
    """A recording segment's label."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"label": "block2"}]})
    label: str | None = Field(default=None, max_length=100, description="at most 100 characters")


# -- response shapes (documentation; the hub's dicts are sent as they are) ---------

class ErrorBody(BaseModel):
    """Every error: one line naming the fix."""

    error: str


class AppliedAt(BaseModel):
    """Where a change took effect in one node: the first sample of its input processed with it."""

    stream: str | None = Field(description="the node's input stream (None for a source, or several inputs)")
    index: int | None = Field(description="sample index in that stream")
    at: dict[str, int] | None = Field(default=None, description="input stream -> sample index, for every input")
    t_lsl: float = Field(description="LSL clock when applied")
    t_stream: float | None = Field(description="stream time of that sample")


class SetResult(BaseModel):
    """``applied``: every node runs the new values; ``pending`` (HTTP 202): not within wait_s, the record comes as a
    change event; ``partial`` / ``failed``: a node's process could not apply it (``errors``; a restart starts with it)."""

    id: int
    status: Literal["applied", "pending", "partial", "failed"]
    applied: dict[str, AppliedAt]
    errors: dict[str, str] = Field(default_factory=dict, description="node -> why it did not apply")
    values: dict[str, dict[str, Any]] = Field(description="node -> the live parameters' values now")


class AnnotationResult(BaseModel):
    id: int
    t_lsl: float
    t_stream: float | None


class ArmResult(BaseModel):
    id: int
    armed: bool
    stimulators: dict[str, str] = Field(description="stimulator node -> 'ok' or 'failed: why'")


class EstopResult(BaseModel):
    id: int
    latched: bool
    stimulators: dict[str, str] = Field(description="stimulator node -> 'ok' or 'failed: why'")


class SegmentResult(BaseModel):
    id: int
    segment: str
    t_lsl: float
    t_stream: float | None


class PauseResult(BaseModel):
    id: int
    paused: bool
    t_lsl: float


class ChangeRecord(BaseModel):
    """One accepted change or action, as recorded in the session's ``rtneuro.control`` stream."""

    model_config = ConfigDict(extra="allow")
    seq: int
    id: int
    op: str
    who: str = Field(description="the token's name")
    t_lsl: float
    t_stream: float | None
    args: dict[str, Any]
    applied: dict[str, AppliedAt] | None = None
    result: dict[str, Any]


class ChangesResult(BaseModel):
    changes: list[ChangeRecord]
    seq: int = Field(description="the last record's seq (or since): pass it as ?since= next time")


class LiveParam(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    value: Any
    doc: str | None = None
    stricter: str | None = Field(default=None, description="'lower', 'higher', 'true' or 'false': the only way it may move")


class NodeInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    category: str
    process: str
    inputs: list[str]
    outputs: list[str]
    live: dict[str, LiveParam]


class GraphInfo(BaseModel):
    """The running graph: processes, nodes (with each live parameter's type, range and value), streams."""

    model_config = ConfigDict(extra="allow")
    name: str
    config: str | None = None
    speed: Any = None
    processes: dict[str, dict[str, Any]]
    nodes: dict[str, NodeInfo]
    streams: dict[str, dict[str, Any]]


class StreamStatus(BaseModel):
    model_config = ConfigDict(extra="allow")
    kind: str
    rate_hz: float | None = None
    gaps: int = 0
    invalid: int = 0
    latency_ms: dict[str, float] | None = None


class StatusInfo(BaseModel):
    """The run now: state, per-stream rate/gaps/latency, stimulation, pause, recording, API counters."""

    model_config = ConfigDict(extra="allow")
    name: str
    state: Literal["starting", "running", "stopping", "ended"]
    t_run_s: float | None = None
    streams: dict[str, StreamStatus]
    latency_ms: dict[str, Any] | None = None
    stimulation: dict[str, Any]
    paused: bool
    recording: dict[str, Any]
    errors: int = 0
    warnings: int = 0
    api: dict[str, Any]


_EXAMPLES = {
    "/api/params": '{"changes": {"thr.threshold": 2.5}}',
    "/api/annotations": '{"text": "block 2 starts"}',
    "/api/stimulation/arm": '{"reason": "ready"} or no body',
    "/api/stimulation/disarm": '{"reason": "participant moves"} or no body',
    "/api/stimulation/estop": '{"reason": "..."} or no body',
    "/api/stimulation/estop/clear": '{"reason": "..."} or no body',
    "/api/recording/start": '{"label": "block2"} or no body',
}
_BODY_FIELDS: dict[str, tuple[str, ...]] = {
    "/api/params": ("changes",), "/api/annotations": ("text",),
    "/api/recording/start": ("label",),
    **{f"/api/stimulation/{op}": ("reason",) for op in ("arm", "disarm", "estop", "estop/clear")},
}
_VALUE_ERRORS = frozenset({"string_too_long", "string_too_short", "too_long", "too_short", "greater_than",
                           "greater_than_equal", "less_than", "less_than_equal", "finite_number"})
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


def _err(*statuses: int) -> dict[int | str, dict[str, Any]]:
    what = {400: "malformed body or query (one line naming the field)", 401: "no token or an unknown token",
            403: "an observer token on a steering route", 404: "unknown node or parameter (did you mean ...)",
            409: "not possible in this state (not live, nothing to pause, no recorder)",
            413: "body over 64 KiB", 422: "invalid value (type, range, the node's check, a safety loosening)",
            503: "the run is not running (starting or stopping)"}
    return {s: {"model": ErrorBody, "description": what[s]} for s in statuses}


_READ_ERRORS = _err(401, 503)
_STEER_ERRORS = _err(400, 401, 403, 409, 413, 422, 503)


# -- JSON out -----------------------------------------------------------------------

def _plain(v: Any) -> Any:
    """``v`` with what JSON cannot hold made plain: numpy scalars and arrays, tuples, non-finite floats."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_plain(x) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    item = getattr(v, "item", None)
    if callable(item) and getattr(v, "ndim", 1) == 0:
        return _plain(item())
    tolist = getattr(v, "tolist", None)
    if callable(tolist):
        return _plain(tolist())
    return str(v)


def dumps(obj: Any) -> str:
    """Compact JSON of a hub answer or event (numpy values and non-finite floats made plain)."""
    try:
        return json.dumps(obj, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return json.dumps(_plain(obj), allow_nan=False, separators=(",", ":"))


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return dumps(content).encode()


def _one_line(text: str) -> str:
    line = "; ".join(p.strip() for p in str(text).splitlines() if p.strip())
    return line[:1000] or "error"


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> _JSON:
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer", **(headers or {})}
    return _JSON({"error": _one_line(message)}, status_code=status, headers=dict(headers or {}))


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    if not client:
        return "?"
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


# -- the body limit (pure ASGI: the body is never read past MAX_BODY) ----------------

class _BodyLimit:
    """Refuse a body over ``limit`` bytes with 413: by its Content-Length, else while it streams in.

    A body within the limit is read whole here (at most ``limit`` bytes
    held) and handed on to the app, so nothing downstream reads an unbounded
    body.
    """

    def __init__(self, app: ASGIApp, limit: int, refused: Callable[[str, str, str], None]) -> None:
        self.app, self.limit, self.refused = app, limit, refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        what = f"{scope.get('method')} {scope.get('path')}"
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    n = int(value)
                except ValueError:
                    self.refused("malformed", _peer(scope), f"{what}: bad Content-Length")
                    await _error(400, "Content-Length is not a number")(scope, receive, send)
                    return
                if n > self.limit:
                    await self._too_large(scope, receive, send, what, f"{n} bytes")
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await self._too_large(scope, receive, send, what, f"over {self.limit} bytes")
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, what: str, size: str) -> None:
        self.refused("too_large", _peer(scope), f"{what}: {size}")
        await _error(413, f"request body of {size} is over the limit of {self.limit} bytes; send a smaller body "
                     "(a parameter change is a few hundred bytes)", {"Connection": "close"})(scope, receive, send)


async def _caller(request: Request) -> Identity:
    """The route dependency: the caller's identity (401/403 otherwise), checked by the app's ``who``.

    On the event loop (a hash and a stat): no hop to a worker thread on the way of a change.
    """
    who: Callable[[Request], Identity] = request.app.state.who
    return who(request)


_Who = Annotated[Identity, Depends(_caller)]


# -- the app --------------------------------------------------------------------------

def create_app(hub: HubLike, auth: Authenticator, *, max_ws_clients: int = MAX_WS_CLIENTS, ui: Any = None) -> FastAPI:
    """The FastAPI application of the control API over ``hub``.

    Parameters
    ----------
    hub : Hub
        The supervisor's side (:class:`rtneuro.control.hub.Hub`, or any
        object with its methods); called from worker threads.
    auth : TokenAuth
        The token check; ``auth.check(token)`` gives an
        :class:`~rtneuro.control.auth.Identity` or None.
    max_ws_clients : int
        WebSocket clients served at once; more are refused (503).
    ui : rtneuro.control.ui_routes.UiState or None
        Also serve the browser pages and their data WebSocket (docs/ui.md).

    Returns
    -------
    FastAPI
        Serve it with :class:`ControlServer` (or any ASGI server).
    """
    app = FastAPI(title="rtneuro control API", version="1",
                  description="Steer a running rtneuro graph: live parameters, operator actions, status and push events. "
                              "Every request needs 'Authorization: Bearer TOKEN' (the WebSocket also takes ?token=); "
                              "observer tokens read, steer tokens also POST. Errors are {\"error\": one line}.",
                  docs_url=None, redoc_url=None, openapi_url=None, default_response_class=_JSON)
    ws_limiter = anyio.CapacityLimiter(max(1, max_ws_clients))
    ws_count = [0]

    def refuse(reason: str, peer: str, detail: str = "") -> None:
        try:
            hub.refused(reason, peer, detail)
        except Exception:  # the count must never turn a refusal into a 500
            log.exception("hub.refused failed")

    def identify(headers: Mapping[str, str], query: Mapping[str, str], scope: Scope, method: str) -> Identity:
        """The caller's identity, or a ControlError (401/403), counted as refused."""
        token = bearer_token(headers.get("authorization"))
        if token is None and method == "WEBSOCKET":
            token = query.get("token") or None
        where = f"{method} {scope.get('path')}"
        if token is None:
            refuse("no_token", _peer(scope), where)
            raise ControlError("no token: send 'Authorization: Bearer TOKEN' (the run's own token is in its registry "
                               "entry, which 'rtneuro status' reads; others come from 'rtneuro keys DIR --token NAME')", 401)
        ident = auth.check(token)
        if ident is None:
            refuse("bad_token", _peer(scope), where)
            raise ControlError("unknown or revoked token; use the run's token ('rtneuro status' finds it) or one made by "
                               "'rtneuro keys DIR --token NAME --role observer|steer'", 401)
        if not allows(ident, method):
            refuse("observer", _peer(scope), f"{where} by '{ident.name}'")
            raise ControlError(f"token '{ident.name}' is an observer token: it reads but cannot steer ({where}); "
                               "use a steer token ('rtneuro keys DIR --token NAME --role steer')", 403)
        return ident

    def who(request: Request) -> Identity:
        return identify(request.headers, request.query_params, request.scope, request.method)

    app.state.who = who

    def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the hub (in a worker thread); anything but a ControlError is logged and answered 500."""
        try:
            return fn(*args, **kwargs)
        except ControlError:
            raise
        except Exception as exc:
            log.exception("control API: %s failed", getattr(fn, "__name__", fn))
            why = str(exc) if isinstance(exc, RtneuroError) else f"{type(exc).__name__} in the control server"
            raise ControlError(f"internal error: {_one_line(why)}; see the run's log", 500) from None

    async def request(op: str, args: dict, ident: Identity, timeout_s: float = 2.0) -> _JSON:
        """Hand a steering request to the hub and await its answer without holding a worker thread."""
        submit = getattr(hub, "submit", None)
        if submit is None:  # a hub with only the blocking call
            result = await anyio.to_thread.run_sync(functools.partial(call, hub.request, op, args, ident.name, timeout_s=timeout_s))
        else:
            fut = call(submit, op, args, ident.name, timeout_s)
            try:
                result = await asyncio.wait_for(asyncio.wrap_future(fut), timeout_s + 5.0)
            except TimeoutError:
                raise ControlError("the supervisor did not answer in time (is the machine overloaded?); "
                                   "check 'rtneuro status' before retrying", 503) from None
            except ControlError:
                raise
            except Exception as exc:
                log.error("control API: %s failed: %r", op, exc)
                raise ControlError(f"internal error: {_one_line(str(exc))}; see the run's log", 500) from None
        status = 202 if isinstance(result, dict) and result.get("status") == "pending" else 200
        return _JSON(result, status_code=status)

    app.add_middleware(_BodyLimit, limit=MAX_BODY, refused=refuse)
    if ui is not None:
        from .ui_routes import install

        install(app, ui, hub, identify, refuse, _peer)

    # -- errors: always {"error": one line} --

    def _authorised_first(request: Request) -> _JSON | None:
        """A refusal answer when the caller may not use this route at all (auth comes before the body's shape)."""
        try:
            who(request)
        except ControlError as exc:
            return _error(exc.status, str(exc))
        return None

    @app.exception_handler(ControlError)
    async def _control_error(request: Request, exc: ControlError) -> _JSON:
        return _error(exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> _JSON:
        denied = _authorised_first(request)
        if denied is not None:
            return denied
        status, line = _validation_line(exc, request.url.path)
        refuse("malformed", _peer(request.scope), f"{request.method} {request.url.path}: {line}")
        return _error(status, line)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> _JSON:
        denied = _authorised_first(request)
        if denied is not None:
            return denied
        path, method = request.url.path, request.method
        if exc.status_code == 404:
            refuse("no_route", _peer(request.scope), f"{method} {path}")
            routes = sorted({str(getattr(r, "path", "")) for r in app.routes} - {""})
            return _error(404, f"no route {path}{did_you_mean(path, routes)}; routes: {', '.join(routes)}")
        if exc.status_code == 405:
            allowed = exc.headers.get("Allow", "") if exc.headers else ""
            return _error(405, f"{method} is not allowed on {path}; use {allowed or 'another method'}",
                          {"Allow": allowed} if allowed else None)
        if exc.status_code == 400:  # a body the JSON parser gave up on (nesting, encoding)
            refuse("malformed", _peer(request.scope), f"{method} {path}")
            example = _EXAMPLES.get(path)
            return _error(400, "the body cannot be read as JSON (not UTF-8, or nested too deeply)"
                          + (f"; send e.g. {example}" if example else ""))
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> _JSON:  # pragma: no cover - only a bug reaches it
        log.error("control API: %s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal error ({type(exc).__name__}); see the run's log")

    # -- reading --

    @app.get("/api/graph", response_model=None, summary="The running graph",
             responses={200: {"model": GraphInfo}, **_READ_ERRORS})
    def graph(ident: _Who) -> _JSON:
        """Processes, nodes with their streams and each live parameter's type, range, doc and current value."""
        return _JSON(call(hub.graph))

    @app.get("/api/status", response_model=None, summary="The run now",
             responses={200: {"model": StatusInfo}, **_READ_ERRORS})
    def status(ident: _Who) -> _JSON:
        """State, per-stream rate/gaps/latency, end-to-end latency, stimulation, pause, recording, API counters."""
        return _JSON(call(hub.status))

    @app.get("/api/report", response_model=None, summary="The run report so far",
             responses={200: {"description": "the same shape as the final JSON run report"}, **_READ_ERRORS})
    def report(ident: _Who) -> _JSON:
        """The run report so far (the same shape as ``rtneuro run --report``'s)."""
        return _JSON(call(hub.report))

    @app.get("/api/changes", response_model=None, summary="Accepted changes and actions",
             responses={200: {"model": ChangesResult}, **_err(400, 401, 503)})
    def changes(ident: _Who, since: int = Query(0, ge=0, description="only records with seq > since")) -> _JSON:
        """The ctl records (who, when, what, where applied) with ``seq > since``, oldest first."""
        records = call(hub.changes, since)
        last = max([since, *(int(r.get("seq", 0)) for r in records if isinstance(r, dict))])
        return _JSON({"changes": records, "seq": last})

    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi(ident: _Who) -> _JSON:
        return _JSON(app.openapi())

    # -- steering --

    @app.post("/api/params", response_model=None, summary="Change live parameters",
              responses={200: {"model": SetResult, "description": "applied"},
                         202: {"model": SetResult, "description": "accepted, not applied within wait_s"},
                         **_err(400, 401, 403, 404, 409, 413, 422, 503)})
    async def params(ident: _Who, body: ParamsChange,
               wait_s: float = Query(2.0, ge=0.0, le=MAX_WAIT_S, description="seconds to wait for the change to apply")) -> _JSON:
        """Validated like the YAML (types, ranges, the node's checks; safety parameters only stricter); all or none."""
        return await request("set", {"changes": body.changes}, ident, timeout_s=wait_s)

    @app.post("/api/annotations", response_model=None, summary="Annotate the session",
              responses={200: {"model": AnnotationResult}, **_STEER_ERRORS})
    async def annotate(ident: _Who, body: Annotation) -> _JSON:
        """Free text stamped on the LSL clock, recorded in the session's control stream."""
        return await request("annotate", {"text": body.text}, ident)

    def _reason(body: Reason | None) -> dict:
        return {"reason": body.reason} if body is not None and body.reason is not None else {}

    @app.post("/api/stimulation/arm", response_model=None, summary="Arm stimulation",
              responses={200: {"model": ArmResult}, **_STEER_ERRORS})
    async def arm(ident: _Who, body: Reason | None = None) -> _JSON:
        """Stimulators accept commands again (arming is always explicit)."""
        return await request("arm", _reason(body), ident)

    @app.post("/api/stimulation/disarm", response_model=None, summary="Disarm stimulation",
              responses={200: {"model": ArmResult}, **_STEER_ERRORS})
    async def disarm(ident: _Who, body: Reason | None = None) -> _JSON:
        """Stimulators ramp to their safe state and refuse commands until armed again."""
        return await request("disarm", _reason(body), ident)

    @app.post("/api/stimulation/estop", response_model=None, summary="Emergency stop",
              responses={200: {"model": EstopResult}, **_STEER_ERRORS})
    async def estop(ident: _Who, body: Reason | None = None) -> _JSON:
        """Every stimulator to its safe state at once, latched until cleared."""
        return await request("estop", _reason(body), ident)

    @app.post("/api/stimulation/estop/clear", response_model=None, summary="Clear the emergency stop",
              responses={200: {"model": EstopResult}, **_STEER_ERRORS})
    async def estop_clear(ident: _Who, body: Reason | None = None) -> _JSON:
        """Release the latched emergency stop (stimulation stays disarmed until armed)."""
        return await request("estop_clear", _reason(body), ident)

    @app.post("/api/recording/start", response_model=None, summary="Start a recording segment",
              responses={200: {"model": SegmentResult}, **_STEER_ERRORS})
    async def record_start(ident: _Who, body: Segment | None = None) -> _JSON:
        """A new segment of the session (the run records with ``--record DIR``)."""
        return await request("record_start", {"label": body.label} if body is not None and body.label is not None else {}, ident)

    @app.post("/api/recording/stop", response_model=None, summary="Stop the recording segment",
              responses={200: {"model": SegmentResult}, **_STEER_ERRORS})
    async def record_stop(ident: _Who) -> _JSON:
        """End the current segment."""
        return await request("record_stop", {}, ident)

    @app.post("/api/replay/pause", response_model=None, summary="Pause the replayed sources",
              responses={200: {"model": PauseResult}, **_STEER_ERRORS})
    async def pause(ident: _Who) -> _JSON:
        """Replayed sources stop sending (live sources cannot pause: 409)."""
        return await request("pause", {}, ident)

    @app.post("/api/replay/resume", response_model=None, summary="Resume the replayed sources",
              responses={200: {"model": PauseResult}, **_STEER_ERRORS})
    async def resume(ident: _Who) -> _JSON:
        """Replayed sources go on where they paused."""
        return await request("resume", {}, ident)

    # -- push events --

    @app.websocket("/api/ws")
    async def events(websocket: WebSocket) -> None:
        """Hello, then the hub's events (status, decisions, change, end, dropped); ``{"type": "ping"}`` -> pong."""
        try:
            ident = identify(websocket.headers, websocket.query_params, websocket.scope, "WEBSOCKET")
            if ws_count[0] >= max_ws_clients:
                refuse("ws_full", _peer(websocket.scope), "WEBSOCKET /api/ws")
                raise ControlError(f"{max_ws_clients} WebSocket clients are connected already; close one, or poll GET /api/status", 503)
            sub: Subscription = await anyio.to_thread.run_sync(call, hub.subscribe)
        except ControlError as exc:
            await _deny(websocket, exc)
            return
        ws_count[0] += 1
        lock = asyncio.Lock()

        async def send(obj: Any) -> None:
            async with lock:
                await websocket.send_text(dumps(obj))

        try:
            await websocket.accept()
            await send({"type": "hello", "name": ident.name, "role": ident.role, "graph": hub.name})
            async with anyio.create_task_group() as tg:
                tg.start_soon(_pull, sub, send, websocket, tg.cancel_scope, ws_limiter)
                await _read(websocket, send)
                tg.cancel_scope.cancel()
        except Exception as exc:  # a client gone mid-send, or the server stopping
            log.debug("WebSocket %s ended: %r", _peer(websocket.scope), exc)
        finally:
            ws_count[0] -= 1
            with contextlib.suppress(Exception):
                sub.close()

    return app


async def _deny(websocket: WebSocket, exc: ControlError) -> None:
    """Refuse a WebSocket before accepting it: an HTTP answer where the server can send one, else close 1008."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(_error(exc.status, str(exc)))
    else:  # pragma: no cover - uvicorn's websockets implementations all send denial responses
        await websocket.close(code=1008 if exc.status in (401, 403) else 1013, reason=str(exc)[:120])


async def _read(websocket: WebSocket, send: Callable[[Any], Any]) -> None:
    """Read the client's messages until it goes: ``{"type": "ping"}`` gets a pong, anything else is ignored."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if not text or len(text) > 4096:
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("type") == "ping":
            await send({"type": "pong"})


async def _pull(sub: Subscription, send: Callable[[Any], Any], websocket: WebSocket,
                scope: anyio.CancelScope, limiter: anyio.CapacityLimiter) -> None:
    """Forward the subscription's events; after ``end`` close the socket (1000)."""
    try:
        while True:
            event = await anyio.to_thread.run_sync(sub.get, _POLL_S, abandon_on_cancel=True, limiter=limiter)
            if event is None:
                if getattr(sub, "closed", False) is True:  # the hub ended without an "end" for this client
                    await websocket.close(code=1000, reason="run ended")
                    break
                continue
            await send(event)
            if isinstance(event, dict) and event.get("type") == "end":
                await websocket.close(code=1000, reason="run ended")
                break
    except Exception as exc:  # the client went away mid-send
        log.debug("WebSocket push ended: %r", exc)
    scope.cancel()


def _validation_line(exc: RequestValidationError, path: str) -> tuple[int, str]:
    """One line for a body or query that does not fit its schema: the field, the problem, an example."""
    errors = sorted(exc.errors(), key=lambda e: e.get("type") != "extra_forbidden")  # a typo explains a missing field
    e = errors[0] if errors else {}
    loc = tuple(e.get("loc", ()))
    kind = str(e.get("type", ""))
    example = _EXAMPLES.get(path)
    fix = f"; send e.g. {example}" if example else ""
    msg = str(e.get("msg", "invalid")).rstrip(".").removeprefix("Value error, ")
    got = _JSON_TYPES.get(type(e.get("input")), type(e.get("input")).__name__)
    if kind == "json_invalid":
        why = (e.get("ctx") or {}).get("error", "not JSON")
        at = f" at character {loc[1]}" if len(loc) > 1 else ""
        return 400, f"the body is not valid JSON ({why}{at}){fix}"
    where = loc[0] if loc else "body"
    if where == "body":
        fields = [str(x) for x in loc[1:]]
        if not fields or fields[0] in ("ParamsChange", "Annotation", "Reason", "Segment"):
            fields = fields[1:]
        if not fields:
            if kind == "missing":
                return 400, f"{path} needs a JSON body{fix}"
            if isinstance(e.get("input"), (bytes, bytearray)):
                return 400, f"the body is not sent as JSON: add the header 'Content-Type: application/json'{fix}"
            return 400, f"the body must be a JSON object, not {got}{fix}"
        name = fields[0]
        allowed = _BODY_FIELDS.get(path, ())
        if kind == "extra_forbidden":
            hint = did_you_mean(name, allowed)
            return 400, f"body field '{name}' is not known{hint}; the fields are: {', '.join(allowed)}{fix}"
        if kind == "missing":
            return 400, f"body field '{name}' is missing{fix}"
        inner = "" if len(fields) == 1 else f" (at {'.'.join(fields)})"
        status = 422 if kind in _VALUE_ERRORS else 400
        got_text = f", not {got}" if kind.endswith(("_type", "_parsing")) else ""
        return status, f"body field '{name}'{inner}: {msg}{got_text}{fix}"
    name = str(loc[1]) if len(loc) > 1 else "?"
    status = 422 if kind in _VALUE_ERRORS else 400
    hint = {"since": "?since=0", "wait_s": f"?wait_s=2 (0 to {MAX_WAIT_S:g})"}.get(name, "")
    return status, f"{where} parameter '{name}': {msg}" + (f"; e.g. {hint}" if hint else "")


# -- the server in its own thread ----------------------------------------------------

def _url_host(host: str) -> str:
    """The host to put in the URL a local client uses: a wildcard address becomes loopback."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    if ip.is_unspecified:
        ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
    return f"[{ip}]" if ip.version == 6 else str(ip)


class ControlServer:
    """The control API served by uvicorn in a daemon thread of the supervisor.

    Parameters
    ----------
    hub : Hub
        What the routes call (:func:`create_app`).
    auth : TokenAuth
        The token check.
    host : str
        Address to listen on (``control.host``; loopback by default).
    port : int
        0 for a free port (the bound one is in :attr:`url`).
    ssl_certfile, ssl_keyfile : str or None
        PEM files to serve HTTPS/WSS (both or neither).
    max_ws_clients : int
        WebSocket clients served at once.

    Notes
    -----
    The socket is bound in :meth:`start` itself, so a port in use is an
    error at once in the caller's thread. uvicorn then runs its own event
    loop in the thread (no signal handlers: the supervisor owns signals,
    and no access log: the WebSocket's ``?token=`` must not be written).
    """

    def __init__(self, hub: HubLike, auth: Authenticator, host: str = "127.0.0.1", port: int = 0, *,
                 ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
                 max_ws_clients: int = MAX_WS_CLIENTS, ui: Any = None) -> None:
        if (ssl_certfile is None) != (ssl_keyfile is None):
            raise RtneuroError("give both tls_cert and tls_key (or neither) to the control server")
        self.hub, self.auth, self.host, self.port = hub, auth, host, int(port)
        self.ssl_certfile, self.ssl_keyfile = ssl_certfile, ssl_keyfile
        self.app = create_app(hub, auth, max_ws_clients=max_ws_clients, ui=ui)
        self.url: str | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._failure: BaseException | None = None

    def _bind(self) -> socket.socket:
        host = self.host.strip("[]")
        try:
            infos = socket.getaddrinfo(host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise RtneuroError(f"control.host {self.host!r} cannot be resolved ({exc.strerror}); give an address such as 127.0.0.1") from None
        family, _, _, _, addr = infos[0]
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say they are TCP (else a reply waits
        # for the client's delayed ACK, about 40 ms)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            raise RtneuroError(f"the control server cannot listen on {self.host}:{self.port} ({exc.strerror}); "
                               "choose another control.port, or 0 for a free one") from None
        sock.set_inheritable(False)
        return sock

    def start(self, timeout_s: float = 10.0) -> str:
        """Bind, start serving in a daemon thread, and return the base URL once it serves.

        Raises
        ------
        RtneuroError
            The address cannot be bound, the TLS files cannot be loaded, or
            the server did not start within ``timeout_s``.
        """
        import uvicorn

        if self._thread is not None:
            raise RtneuroError("this control server was started already; make a new ControlServer")
        sock = self._bind()
        port = sock.getsockname()[1]
        from uvicorn.config import WS_PROTOCOLS

        ws = "websockets-sansio" if "websockets-sansio" in WS_PROTOCOLS else "websockets"  # uvicorn >= 0.35: no legacy API
        # no per-message compression: the pages' float frames barely compress and deflating them cost a
        # tenth of the supervisor's CPU (the JSON events are small)
        config = uvicorn.Config(self.app, host=self.host, port=port, ssl_certfile=self.ssl_certfile,
                                ssl_keyfile=self.ssl_keyfile, log_level="warning", lifespan="off", ws=ws,
                                ws_max_size=MAX_BODY, ws_per_message_deflate=False, access_log=False, server_header=False,
                                timeout_graceful_shutdown=1, log_config=None)
        try:
            config.load()  # TLS files and the app, here: an error belongs to the caller
        except Exception as exc:
            sock.close()
            raise RtneuroError(f"the control server cannot start ({_one_line(str(exc))}); check control.tls_cert and "
                               "control.tls_key ('rtneuro keys DIR --tls HOST' makes a pair)") from None
        server = uvicorn.Server(config)
        if hasattr(server, "install_signal_handlers"):  # uvicorn < 0.29 installs them from any thread
            server.install_signal_handlers = lambda: None
        self._server, self._sock = server, sock

        def serve() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # SystemExit from uvicorn's startup, or a bug
                self._failure = exc
                log.error("control server stopped: %r", exc)

        self._thread = threading.Thread(target=serve, name="rtneuro-control-api", daemon=True)
        self._thread.start()
        deadline = threading.Event()
        waited = 0.0
        while not server.started:
            if not self._thread.is_alive() or waited >= timeout_s:
                self.stop()
                why = f" ({self._failure!r})" if self._failure is not None else f" within {timeout_s:g} s"
                raise RtneuroError(f"the control server did not start{why}; see the log above, or set control.enabled: false")
            deadline.wait(0.01)
            waited += 0.01
        scheme = "https" if self.ssl_certfile else "http"
        self.port = port
        self.url = f"{scheme}://{_url_host(self.host)}:{port}"
        log.info("control API at %s", self.url)
        return self.url

    def request_stop(self) -> None:
        """Ask the server to stop, without waiting (:meth:`stop` waits)."""
        if self._server is not None:
            self._server.should_exit = True

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop serving (WebSocket clients get close 1012) within about ``timeout_s``; idempotent."""
        server, thread = self._server, self._thread
        if server is not None:
            server.should_exit = True
        if thread is not None and thread.is_alive():
            thread.join(timeout_s * 0.75)
            if thread.is_alive() and server is not None:
                server.force_exit = True
                thread.join(timeout_s * 0.25)
            if thread.is_alive():
                log.warning("the control server thread did not stop within %g s (a daemon thread: it ends with the process)", timeout_s)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def __enter__(self) -> ControlServer:
        if self.url is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the published schema ----------------------------------------------------------------

class _NoHub:
    name = "graph"

    def graph(self) -> dict:  # pragma: no cover - the schema never calls the hub
        return {}

    status = report = graph

    def changes(self, since: int = 0) -> list[dict]:  # pragma: no cover
        return []

    def request(self, op: str, args: dict, who: str, timeout_s: float = 2.0) -> dict:  # pragma: no cover
        raise ControlError("no run", 503)

    def subscribe(self) -> Subscription:  # pragma: no cover
        raise ControlError("no run", 503)

    def refused(self, reason: str, peer: str, detail: str = "") -> None:  # pragma: no cover
        pass


class _NoAuth:
    def check(self, token: str | None) -> Identity | None:  # pragma: no cover
        return None


def openapi_schema() -> dict:
    """The control API's OpenAPI schema (what ``GET /api/openapi.json`` serves), without a run."""
    schema = create_app(_NoHub(), _NoAuth()).openapi()
    schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer", "description": "a run's token, or one from 'rtneuro keys DIR --token NAME'"}
    schema["security"] = [{"bearer": []}]
    return schema


def api_markdown(schema: dict | None = None) -> str:
    """A Markdown reference of the routes (for ``docs/control-api.md``), from :func:`openapi_schema`."""
    schema = schema or openapi_schema()
    comps = schema.get("components", {}).get("schemas", {})

    def ref_name(obj: dict) -> str:
        if "$ref" in obj:
            return obj["$ref"].rsplit("/", 1)[-1]
        for key in ("anyOf", "oneOf"):
            if key in obj:
                return " or ".join(ref_name(o) for o in obj[key])  # not "|": a Markdown table cell
        return str(obj.get("type", "any"))

    lines = [f"# {schema['info']['title']}", "", schema["info"].get("description", ""), "",
             "| method | route | summary | body | answers |", "|---|---|---|---|---|"]
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            body = ""
            content = op.get("requestBody", {}).get("content", {}).get("application/json")
            if content:
                body = ref_name(content.get("schema", {}))
            answers = ", ".join(
                f"{code} {ref_name(r.get('content', {}).get('application/json', {}).get('schema', {}))}"
                if r.get("content") else code for code, r in op.get("responses", {}).items())
            answers = ", ".join(a for a in answers.split(", ") if "HTTPValidationError" not in a)  # FastAPI's, never sent
            lines.append(f"| {method.upper()} | `{path}` | {op.get('summary', '')} | {body} | {answers} |")
    lines += ["| WS | `/api/ws` | push events: hello, status, decisions, change, end, dropped; ping -> pong | | |", ""]
    for name in sorted(comps):
        c = comps[name]
        if name in ("HTTPValidationError", "ValidationError"):
            continue
        lines.append(f"## {name}\n")
        if c.get("description"):
            lines.append(c["description"] + "\n")
        for field, spec in c.get("properties", {}).items():
            req = " (required)" if field in c.get("required", []) else ""
            desc = f": {spec['description']}" if spec.get("description") else ""
            lines.append(f"- `{field}` {ref_name(spec)}{req}{desc}")
        lines.append("")
    return "\n".join(lines)
