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
from .tap import MAX_VIEWS, Tap, View, ViewError, encode_frames

__all__ = ["install", "UiState", "MAX_UI_CLIENTS", "WINDOW", "MAX_MESSAGE"]

log = logging.getLogger("rtneuro.control.ui")

#: Data WebSocket clients served at once.
MAX_UI_CLIENTS = 16
#: Unacknowledged binary messages per client, at most (half a second of feedback values at 31 a second).
WINDOW = 16
#: A client's text message, at most (bytes).
MAX_MESSAGE = 64 * 1024


class UiState:
    """What the pages' routes need from the run: the tap, the ``ui:`` settings as the pages see them, the positions."""

    def __init__(self, tap: Tap, config: dict, frame_rate: float, positions: Callable[[], dict] | None = None) -> None:
        self.tap = tap
        self.config = config
        self.frame_rate = float(frame_rate)
        #: (loop, wake event) of every page's pump
        self.pumps: set[tuple[Any, asyncio.Event]] = set()
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
        """The run ended (from any thread): every page's pump sends its "end" now."""
        self.ended = True
        for loop, event in list(self.pumps):
            with contextlib.suppress(RuntimeError):  # a loop that has closed
                loop.call_soon_threadsafe(event.set)


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
        ui.tap.start()  # in this loop, with the first page (idempotent)
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
        self.wake.set()
        self.last_full = 0.0
        #: the window was full when the pump last looked
        self.held = False

    async def text(self, obj: Any) -> None:
        async with self.lock:
            await self.ws.send_text(dumps(obj))

    async def pump(self, scope: anyio.CancelScope) -> None:
        """Send the frames due whenever the client can take them; close with 1000 when the run ends.

        The pump sleeps until something is due: a feedback value (the tap sets ``wake``), the next tick of the
        periodic views (traces, spectra, events: at most ``frame_rate`` a second, a timer only while there are
        some), an acknowledgement that reopens a full window, new views, or the end of the run.
        """
        tap = self.ui.tap
        loop = asyncio.get_running_loop()
        listener = (loop, self.wake)
        self.ui.pumps.add(listener)
        period = 1.0 / self.ui.frame_rate
        timer: asyncio.TimerHandle | None = None
        try:
            while not self.ui.ended:
                await self.wake.wait()
                self.wake.clear()
                if self.seq - self.acked >= WINDOW:
                    self.held = True  # the next acknowledgement wakes the pump
                    tap.stats["frames_held"] += 1
                    continue
                now = lsl_clock()
                periodic = [v for v in self.views if v.kind != "feedback"]
                full = bool(periodic) and now - self.last_full >= period * 0.9
                views = self.views if full else [v for v in self.views if v.kind == "feedback"]
                if full:
                    self.last_full = now
                if periodic and (timer is None or timer.cancelled() or timer.when() <= loop.time()):
                    wait = max(period - (now - self.last_full), 0.001)
                    timer = loop.call_later(wait, self.wake.set)
                if not views:
                    continue
                frames = tap.frames(views, now)
                if not frames:
                    continue
                # the tick's frames in one message: one send and one acknowledgement, however many views
                self.seq += 1
                message = encode_frames(frames, self.seq)
                async with self.lock:
                    await self.ws.send_bytes(message)
                tap.stats["frames"] += len(frames)
                tap.stats["messages_sent"] += 1
            await self.text({"type": "end"})
            await self.ws.close(code=1000, reason="run ended")
        except Exception as exc:
            log.debug("UI push to %s ended: %r", self.peer, exc)
        finally:
            if timer is not None:
                timer.cancel()
            tap.unlisten(listener)
            self.ui.pumps.discard(listener)
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
            # an acknowledgement comes alone or with any other message ("ack": N): one message, not two
            seq = msg.get("seq") if kind == "ack" else msg.get("ack") if isinstance(msg, dict) else None
            if type(seq) is int:
                self.acked = max(self.acked, min(seq, self.seq))
                if self.held:  # the window was full: what is due goes now
                    self.held = False
                    self.wake.set()
            if kind == "paint":
                self.ui.tap.paint(self.name, msg.get("items"))
            elif kind == "clock":
                c = msg.get("c")
                if type(c) in (int, float) and math.isfinite(c):
                    await self.text({"type": "clock", "c": c, "s": lsl_clock()})
            elif kind == "views":
                await self._views(msg.get("views"))
            elif kind == "ping":
                await self.text({"type": "pong"})
            elif kind != "ack":
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
        # the pump is woken by feedback values only while the page shows them
        listener = (asyncio.get_running_loop(), self.wake)
        (tap.listen if any(v.kind == "feedback" for v in new) else tap.unlisten)(listener)
        self.last_full = 0.0
        self.wake.set()
