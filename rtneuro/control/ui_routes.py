"""The browser pages on the control server: the pages, their assets, and the data WebSocket.

``/`` is the operator dashboard, ``/participant`` the participant display,
``/ui/static/...`` their scripts and the vendored library
(``rtneuro/ui/static``); ``/api/ui/ws`` carries the data as binary frames
(protocol: docs/ui.md). The pages hold no secret: they are served without a
token; every API route and both WebSockets need one.

A client's frames are computed from the tap's rings when it can take them
(at most ``window`` unacknowledged frames, at most ``frame_rate`` per
second; feedback frames as soon as the value is there), never queued: a
browser that stops reading holds nothing but its socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import anyio
from fastapi import FastAPI, WebSocket
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from ..runtime.clock import lsl_clock
from ..ui import STATIC
from .auth import Identity
from .live import ControlError
from .server import _deny, dumps
from .tap import MAX_VIEWS, Tap, View, ViewError, encode_frame

__all__ = ["install", "UiState", "MAX_UI_CLIENTS", "WINDOW", "MAX_MESSAGE"]

log = logging.getLogger("rtneuro.control.ui")

#: Data WebSocket clients served at once.
MAX_UI_CLIENTS = 16
#: Unacknowledged binary frames per client, at most.
WINDOW = 8
#: A client's text message, at most (bytes).
MAX_MESSAGE = 64 * 1024


class UiState:
    """What the pages' routes need from the run: the tap, the ``ui:`` settings as the pages see them, the positions."""

    def __init__(self, tap: Tap, config: dict, frame_rate: float, positions: Callable[[], dict] | None = None) -> None:
        self.tap = tap
        self.config = config
        self.frame_rate = float(frame_rate)
        self._positions = positions
        self._positions_cache: dict | None = None
        self.ended = False
        self.clients = 0

    def positions(self) -> dict:
        if self._positions_cache is None:
            try:
                self._positions_cache = self._positions() if self._positions is not None else {}
            except Exception:  # a scalp map is a nicety: never a reason for a page to fail
                log.warning("scalp positions could not be computed", exc_info=True)
                self._positions_cache = {}
        return self._positions_cache

    def close(self) -> None:
        self.ended = True


def install(app: FastAPI, ui: UiState, hub: Any,
            identify: Callable[[Mapping[str, str], Mapping[str, str], Scope, str], Identity],
            refuse: Callable[[str, str, str], None], peer: Callable[[Scope], str]) -> None:
    """Add the pages and the data WebSocket to the control API's ``app``."""
    page_headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                                               "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"}

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "dashboard.html", headers=page_headers)

    @app.get("/participant", include_in_schema=False)
    def participant() -> FileResponse:
        return FileResponse(STATIC / "participant.html", headers=page_headers)

    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")

    @app.websocket("/api/ui/ws")
    async def data(websocket: WebSocket) -> None:
        """Binary data frames for the pages (docs/ui.md)."""
        try:
            ident = identify(websocket.headers, websocket.query_params, websocket.scope, "WEBSOCKET")
            if ui.clients >= MAX_UI_CLIENTS:
                refuse("ui_full", peer(websocket.scope), "WEBSOCKET /api/ui/ws")
                raise ControlError(f"{MAX_UI_CLIENTS} pages are connected already; close one", 503)
        except ControlError as exc:
            await _deny(websocket, exc)
            return
        ui.clients += 1
        client = _Client(websocket, ui, f"{ident.name}#{id(websocket) % 100000}", refuse, peer(websocket.scope))
        try:
            await websocket.accept()
            positions = await anyio.to_thread.run_sync(ui.positions)
            await client.text({"type": "hello", "name": ident.name, "role": ident.role, "graph": hub.graph(),
                               "ui": ui.config, "positions": positions, "frame_rate": ui.frame_rate, "window": WINDOW})
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.pump, tg.cancel_scope)
                await client.read()
                tg.cancel_scope.cancel()
        except Exception as exc:  # a client gone mid-send, or the server stopping
            log.debug("UI WebSocket %s ended: %r", client.peer, exc)
        finally:
            ui.clients -= 1
            ui.tap.unwant(client.views)
            client.views = []


class _Client:
    """One page's data socket: its views, its flow control, its messages."""

    def __init__(self, ws: WebSocket, ui: UiState, name: str, refuse: Callable[[str, str, str], None], peer: str) -> None:
        self.ws, self.ui, self.name, self.refuse, self.peer = ws, ui, name, refuse, peer
        self.views: list[View] = []
        self.seq = 0
        self.acked = 0
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()
        self.last_full = 0.0

    async def text(self, obj: Any) -> None:
        async with self.lock:
            await self.ws.send_text(dumps(obj))

    async def pump(self, scope: anyio.CancelScope) -> None:
        """Send the frames due whenever the client can take them; close with 1000 when the run ends."""
        tap = self.ui.tap
        loop = asyncio.get_running_loop()
        listener = (loop, self.wake)
        tap.listen(listener)
        period = 1.0 / self.ui.frame_rate
        try:
            while not self.ui.ended:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), period)
                self.wake.clear()
                if self.seq - self.acked >= WINDOW:
                    tap.stats["frames_held"] += 1
                    continue
                now = lsl_clock()
                full = now - self.last_full >= period * 0.9
                views = self.views if full else [v for v in self.views if v.kind == "feedback"]
                if full:
                    self.last_full = now
                if not views:
                    continue
                for header, arrays in tap.frames(views, now):
                    if self.seq - self.acked >= WINDOW:
                        break
                    self.seq += 1
                    frame = encode_frame({**header, "seq": self.seq}, arrays)
                    async with self.lock:
                        await self.ws.send_bytes(frame)
                    tap.stats["frames"] += 1
            await self.text({"type": "end"})
            await self.ws.close(code=1000, reason="run ended")
        except Exception as exc:
            log.debug("UI push to %s ended: %r", self.peer, exc)
        finally:
            tap.unlisten(listener)
            scope.cancel()

    def _refused(self, what: str) -> None:
        self.refuse("ui_message", self.peer, what)

    async def read(self) -> None:
        """Handle the client's messages until it goes (each checked; a bad one is counted and answered)."""
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                self._refused("a binary message (the pages send JSON text)")
                continue
            if len(text) > MAX_MESSAGE:
                self._refused(f"a message of {len(text)} characters")
                await self.text({"type": "error", "error": f"message too long ({len(text)} > {MAX_MESSAGE} characters)"})
                continue
            try:
                msg = json.loads(text)
            except ValueError:
                self._refused("not JSON")
                await self.text({"type": "error", "error": "messages are JSON objects such as {\"type\": \"ping\"}"})
                continue
            kind = msg.get("type") if isinstance(msg, dict) else None
            if kind == "ack":
                seq = msg.get("seq")
                if type(seq) is int:
                    self.acked = max(self.acked, min(seq, self.seq))
                    self.wake.set()
            elif kind == "paint":
                self.ui.tap.paint(self.name, msg.get("items"))
            elif kind == "clock":
                c = msg.get("c")
                if type(c) in (int, float) and math.isfinite(c):
                    await self.text({"type": "clock", "c": c, "s": lsl_clock()})
            elif kind == "views":
                await self._views(msg.get("views"))
            elif kind == "ping":
                await self.text({"type": "pong"})
            else:
                self._refused(f"type {str(kind)[:20]!r}")
                await self.text({"type": "error", "error": "unknown message type; send views, ack, clock, paint or ping (docs/ui.md)"})

    async def _views(self, specs: Any) -> None:
        tap = self.ui.tap
        if not isinstance(specs, list) or len(specs) > MAX_VIEWS:
            self._refused("views")
            await self.text({"type": "error", "error": f"views must be a list of at most {MAX_VIEWS} views"})
            return
        new: list[View] = []
        seen: set[str] = set()
        for spec in specs:
            try:
                v = tap.make_view(spec)
                if v.id in seen:
                    raise ViewError(f"view '{v.id}' is given twice")
            except ViewError as exc:
                tap.stats["views_refused"] += 1
                vid = spec.get("id") if isinstance(spec, dict) and isinstance(spec.get("id"), str) else None
                await self.text({"type": "error", "view": vid, "error": str(exc)})
                continue
            seen.add(v.id)
            old = next((o for o in self.views if o.id == v.id and o.kind == v.kind and o.stream == v.stream
                        and o.channels == v.channels and o.bin_len == v.bin_len), None)
            if old is not None:
                v.next = old.next  # the same view again: go on where it was
            new.append(v)
        tap.want(new)
        tap.unwant(self.views)
        self.views = new
        self.last_full = 0.0
        self.wake.set()
