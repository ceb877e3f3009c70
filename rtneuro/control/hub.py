"""The supervisor's side of the control API: requests in, events out, thread-safe.

The control server runs in its own thread (uvicorn); the supervisor owns
the ZeroMQ sockets and the run's state in its main thread. The hub joins
them without locks around that state:

* a request (:meth:`Hub.request`) is queued with a future and wakes the
  supervisor through a pipe its poller watches; the supervisor checks it,
  sends it to the services and resolves the future when they acknowledge
  (or answers "pending" after the request's wait);
* what clients read (:meth:`Hub.graph`, :meth:`Hub.status`) are snapshots
  the supervisor replaces as a whole (never mutated in place);
* events (status, the gate's decisions, accepted changes) go to every
  subscriber's bounded queue; a slow client loses its oldest events and is
  told how many.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..ratelog import RateLog
from .live import ControlError

__all__ = ["Hub", "Subscription", "Request", "OPS", "EVENT_QUEUE"]

log = logging.getLogger("rtneuro.control")

#: Requests a steering client may make.
OPS = ("set", "annotate", "arm", "disarm", "estop", "estop_clear", "record_start", "record_stop", "pause", "resume")
#: Events kept per subscriber (beyond: the oldest are dropped and counted).
EVENT_QUEUE = 1000
#: Requests waiting for the supervisor (beyond: refused with 503).
MAX_QUEUED = 256
#: Control records served by GET /api/changes (older ones only in the session and the report's count).
MAX_CHANGES = 10_000
#: Subscribers at once (beyond: refused with 503).
MAX_SUBSCRIBERS = 64


@dataclass
class Request:
    """A client's request, queued for the supervisor's thread."""

    op: str
    args: dict
    who: str
    wait_s: float
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class Subscription:
    """One client's events: a bounded queue, oldest dropped first."""

    def __init__(self, hub: Hub, maxlen: int = EVENT_QUEUE) -> None:
        self._hub = hub
        self._q: collections.deque = collections.deque(maxlen=maxlen)
        self._cond = threading.Condition()
        self.dropped = 0
        self._told = 0
        self.closed = False

    def put(self, event: dict) -> None:
        with self._cond:
            if len(self._q) == self._q.maxlen:
                self.dropped += 1
            self._q.append(event)
            self._cond.notify()

    def get(self, timeout_s: float | None = None) -> dict | None:
        """The next event (a ``{"type": "dropped"}`` first when some were lost); None after the timeout or once closed."""
        with self._cond:
            if self.dropped > self._told:
                n, self._told = self.dropped - self._told, self.dropped
                return {"type": "dropped", "count": n}
            if not self._q and not self.closed:
                self._cond.wait(timeout_s)
            if self._q:
                return self._q.popleft()
            return None

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        self._hub._unsubscribe(self)


class Hub:
    """What the control server calls; every method is thread-safe.

    Parameters
    ----------
    name : str
        The graph's name.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: collections.deque[Request] = collections.deque()
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        #: snapshots replaced whole by the supervisor
        self._graph: dict = {"name": name}
        self._status: dict = {"name": name, "state": "starting"}
        self._changes: list[dict] = []
        self._report: Callable[[], dict] | None = None
        self.requests = 0
        self.refusals: dict[str, int] = {}
        self.ratelog = RateLog(log)
        self.closed = False

    # -- the server's side ------------------------------------------------------

    @property
    def wake_fd(self) -> int:
        """A file descriptor that is readable when requests wait (the supervisor polls it)."""
        return self._rfd

    def graph(self) -> dict:
        return self._graph

    def status(self) -> dict:
        st = self._status
        with self._lock:
            api = {"requests": self.requests, "refused": dict(self.refusals), "subscribers": len(self._subs)}
        return {**st, "api": api}

    def report(self) -> dict:
        """The run report so far (computed in the supervisor's thread)."""
        return self.request("report", {}, "", 10.0)

    def changes(self, since: int = 0) -> list[dict]:
        rows = self._changes
        return [r for r in rows if r["seq"] > since]

    def request(self, op: str, args: dict, who: str, timeout_s: float = 2.0) -> dict:
        """Queue a request for the supervisor; its answer, or a ControlError."""
        fut = self.submit(op, args, who, timeout_s)
        try:
            return fut.result(timeout=timeout_s + 5.0)
        except concurrent.futures.TimeoutError:
            raise ControlError("the supervisor did not answer in time (is the machine overloaded?); "
                               "check 'rtneuro status' before retrying", 503) from None

    def submit(self, op: str, args: dict, who: str, timeout_s: float = 2.0) -> concurrent.futures.Future:
        """Queue a request for the supervisor without waiting: the future of its answer (an asyncio server awaits it)."""
        if op not in (*OPS, "report"):
            raise ControlError(f"unknown operation {op!r}; one of {', '.join(OPS)}", 400)
        if not isinstance(args, dict):
            raise ControlError("the request body must be a JSON object", 400)
        req = Request(op, args, who, float(timeout_s))
        with self._lock:
            if self.closed:
                raise ControlError("the run has ended; nothing can be changed", 503)
            if len(self._queue) >= MAX_QUEUED:
                raise ControlError(f"{MAX_QUEUED} requests are waiting already; retry in a moment", 503)
            self._queue.append(req)
            if op != "report":
                self.requests += 1
        try:
            os.write(self._wfd, b"x")
        except BlockingIOError:  # the pipe is full of wake-ups: the supervisor is awake anyway
            pass
        return req.future

    def subscribe(self) -> Subscription:
        with self._lock:
            if self.closed:
                raise ControlError("the run has ended", 503)
            if len(self._subs) >= MAX_SUBSCRIBERS:
                raise ControlError(f"{MAX_SUBSCRIBERS} clients are subscribed already", 503)
            sub = Subscription(self)
            self._subs.append(sub)
        sub.put({"type": "status", **self._status})
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def refused(self, reason: str, peer: str, detail: str = "") -> None:
        """A refused request: counted by reason, logged at a bounded rate."""
        with self._lock:
            self.refusals[reason] = self.refusals.get(reason, 0) + 1
        self.ratelog.warning(f"api-{reason}", "control API refused a request from %s: %s %s", peer, reason, detail[:200])

    # -- the supervisor's side --------------------------------------------------

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def take(self) -> list[Request]:
        """The requests waiting (the supervisor's thread)."""
        try:
            while os.read(self._rfd, 4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            reqs = list(self._queue)
            self._queue.clear()
        return reqs

    def set_graph(self, graph: dict) -> None:
        self._graph = graph

    def set_status(self, status: dict) -> None:
        self._status = status

    def add_change(self, record: dict) -> None:
        """Keep the latest ``MAX_CHANGES`` records for ``GET /api/changes`` (the session keeps every one) and push it."""
        self._changes = [*self._changes[-(MAX_CHANGES - 1):], record]
        self.publish({"type": "change", "record": record})

    def publish(self, event: dict) -> None:
        with self._lock:
            subs = list(self._subs)
        for s in subs:
            s.put(event)

    def close(self, exit_code: int | None = None) -> None:
        """The run ended: pending requests fail, subscribers get an ``end`` event."""
        with self._lock:
            self.closed = True
            reqs = list(self._queue)
            self._queue.clear()
        for r in reqs:
            if not r.future.done():
                r.future.set_exception(ControlError("the run has ended; nothing was applied", 503))
        self.publish({"type": "end", "exit_code": exit_code})
        with self._lock:
            subs = list(self._subs)
        for s in subs:
            with s._cond:
                s.closed = True
                s._cond.notify_all()

    def release(self) -> None:
        for fd in (self._rfd, self._wfd):
            try:
                os.close(fd)
            except OSError:
                pass
