"""A stimulator on another machine, reached over ZeroMQ.

The driver sends every command the local safety gate accepted to a host
process (:mod:`rtneuro.hardware.zmq_host`) that runs the real driver behind
its own gate and watchdog, and waits for that host's answer. Defence in
depth: the command is checked twice, against both profiles, and the host
returns to its safe state by itself if this machine or the network goes
quiet.

Messages are msgpack maps (never pickle) on a ``DEALER`` socket; the wire
protocol is documented in :mod:`rtneuro.hardware.zmq_host`. Each request
carries a deadline on the host's clock (the LSL clock there, the offset
estimated at :meth:`ZmqDriver.open` from one round trip), so a request that
reaches the host too late (a congested link) is refused by the host's gate
as expired instead of being applied late. A reply that does not arrive
within ``reply_timeout_ms`` raises DeviceError; the socket is then
re-created so that nothing queued can be sent later.

A keep-alive thread pings the host every ``keepalive_ms`` on a socket of its
own; the pings feed the host's watchdog, so that steady stimulation with no
new command survives while this process is alive and reachable, and stops
within the host profile's ``watchdog_s`` when it is not.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np
import zmq

from rtneuro.errors import ConfigError, DeviceError
from rtneuro.messages import CMD_LEVEL, CMD_OFF, COMMAND_DTYPE

from .zmq_host import MAX_REQUEST_BYTES, WIRE_VERSION, apply_curve

__all__ = ["ZmqDriver"]

log = logging.getLogger(__name__)

HELLOS = 5  # round trips at open() for the clock offset
_HINT = "start it there with `python -m rtneuro.hardware.zmq_host ENDPOINT --driver ... --profile ...` or fix driver_args endpoint"


def _clock() -> float:
    import pylsl

    return float(pylsl.local_clock())


class _Link:
    """One DEALER socket and its request/reply matching (one thread only)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, curve: Mapping[str, Any] | None) -> None:
        self.ctx, self.endpoint, self.curve = ctx, endpoint, curve
        self.sock: zmq.Socket | None = None
        self.stale = 0
        self._connect()

    def _connect(self) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # queue nothing while the host is unreachable
        sock.setsockopt(zmq.SNDHWM, 16)
        apply_curve(sock, self.curve, server=False)
        sock.connect(self.endpoint)
        self.sock = sock

    def reset(self) -> None:
        """Drop the socket (and whatever it queued) and connect afresh."""
        if self.sock is not None:
            self.sock.close(0)
        self._connect()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    def request(self, req: dict, timeout_s: float) -> dict | None:
        """Send ``req`` and return the reply with its ``seq``, or None when ``timeout_s`` passes first."""
        sock = self.sock
        assert sock is not None
        deadline = time.perf_counter() + timeout_s
        if not sock.poll(max(0, int(1e3 * timeout_s)), zmq.POLLOUT):
            return None  # no connection to the host
        sock.send(msgpack.packb(req, use_bin_type=True), zmq.NOBLOCK)
        while True:
            left = deadline - time.perf_counter()
            if left <= 0 or not sock.poll(max(1, int(1e3 * left)), zmq.POLLIN):
                return None
            frame = sock.recv(zmq.NOBLOCK)
            if len(frame) > MAX_REQUEST_BYTES:
                raise ValueError(f"reply of {len(frame)} bytes")
            try:
                rep = msgpack.unpackb(frame, raw=False, strict_map_key=True)
            except Exception as exc:
                raise ValueError(f"not msgpack ({type(exc).__name__})") from None
            if not isinstance(rep, dict) or not isinstance(rep.get("seq"), int) or not isinstance(rep.get("ok"), bool):
                raise ValueError(f"a reply is a map with an integer 'seq' and a boolean 'ok', got {str(rep)[:60]}")
            if rep["seq"] == req["seq"]:
                return rep
            self.stale += 1  # the answer to a request that already timed out


class ZmqDriver:
    """Stimulator on a remote host behind its own safety gate (see :mod:`rtneuro.hardware.zmq_host`).

    Parameters
    ----------
    endpoint : str
        The host's address, e.g. ``tcp://stim-pc.lab:5560``.
    reply_timeout_ms : float
        How long to wait for each answer.
    keepalive_ms : float
        Interval of the keep-alive pings that feed the host's watchdog (0: none;
        then keep it below the host profile's ``watchdog_s``).
    curve : mapping or None
        ``{"keys": DIR}``: an authenticated, encrypted link with the keys folder
        made by ``rtneuro keys DIR`` (the host runs with ``--keys`` on a copy);
        see :func:`rtneuro.hardware.zmq_host.apply_curve`.
    """

    name = "zmq"

    def __init__(self, endpoint: str | None = None, reply_timeout_ms: float = 100.0, keepalive_ms: float = 100.0,
                 curve: Mapping[str, Any] | None = None) -> None:
        if not isinstance(endpoint, str) or not endpoint.startswith(("tcp://", "ipc://")):
            raise ConfigError(f"the zmq driver needs endpoint: tcp://HOST:PORT (or ipc://PATH), got {endpoint!r}; "
                              "it is where `python -m rtneuro.hardware.zmq_host` listens")
        if not 0 < float(reply_timeout_ms) <= 60_000:
            raise ConfigError(f"reply_timeout_ms must be in (0, 60000], got {reply_timeout_ms!r} (default 100)")
        if not 0 <= float(keepalive_ms) <= 60_000:
            raise ConfigError(f"keepalive_ms must be in [0, 60000], got {keepalive_ms!r} (default 100; 0 disables)")
        if curve is not None and not isinstance(curve, Mapping):
            raise ConfigError(f"curve must be a mapping of CURVE keys, got {type(curve).__name__}")
        self.endpoint = endpoint
        self.reply_timeout_s = float(reply_timeout_ms) / 1000.0
        self.keepalive_s = float(keepalive_ms) / 1000.0
        self.curve = curve
        self._ctx: zmq.Context | None = None
        self._link: _Link | None = None
        self._seq = itertools.count(1)
        self.offset_s = 0.0  # host clock - local clock
        self.rtt_s = math.nan  # the fastest hello round trip: the offset's uncertainty is half of it
        self.host_device = ""
        self.sent: dict[str, int] = {}
        self.acked: dict[str, int] = {}
        self.state: dict[int, str] = {}
        self.clipped_by_host = 0
        self.refused_by_host = 0
        self.timeouts = 0
        self.failures: list[str] = []
        self.safe_states = 0
        self._rtt_us: list[float] = []
        self._safe = False
        self._stop = threading.Event()
        self._pinger: threading.Thread | None = None
        self.host_watchdog_trips = 0
        self.pings = {"sent": 0, "answered": 0, "refused": 0, "missed": 0}

    # -- connection -------------------------------------------------------------------------------
    def open(self) -> None:
        """Connect, check the host's command record, estimate the clock offset, start the keep-alive."""
        self._ctx = zmq.Context()
        self._link = _Link(self._ctx, self.endpoint, self.curve)
        try:
            best = math.inf
            for _ in range(HELLOS):  # the offset from the fastest round trip (the first one also sets up the connection)
                t0 = _clock()
                rep = self._call("hello", {"t": t0})
                t1 = _clock()
                t_host = rep.get("t")
                if isinstance(t_host, bool) or not isinstance(t_host, (int, float)):
                    raise self._fail(f"the stimulator host at {self.endpoint} sent no clock in its hello; "
                                     "run the same rtneuro version on both hosts")
                if t1 - t0 < best:
                    best = t1 - t0
                    self.offset_s = float(t_host) - 0.5 * (t0 + t1)
            self.rtt_s = best
            self.host_device = str(rep.get("device", ""))
            fields = rep.get("fields")
            if fields != list(COMMAND_DTYPE.names or ()):
                raise self._fail(f"the stimulator host at {self.endpoint} uses command fields {fields}, this side "
                                 f"{list(COMMAND_DTYPE.names or ())}; run the same rtneuro version on both hosts")
        except DeviceError:
            self._link.close()  # left closed: nothing queued can reach the host later
            self._link = None
            self._ctx.term()
            self._ctx = None
            raise
        log.info("zmq stimulator host %s: device '%s', clock offset %.3f ms (+- %.3f ms)",
                 self.endpoint, self.host_device, 1e3 * self.offset_s, 0.5e3 * self.rtt_s)
        if self.keepalive_s > 0:
            self._stop.clear()
            self._pinger = threading.Thread(target=self._keepalive, name="zmq-driver-keepalive", daemon=True)
            self._pinger.start()

    def close(self) -> None:
        """Stop the keep-alive, safe state (unless already), close the sockets. Never raises."""
        self._stop.set()
        if self._pinger is not None:
            self._pinger.join(2.0 + self.reply_timeout_s)
            self._pinger = None
        if self._link is not None:
            try:
                if not self._safe:
                    self.safe_state(0.0)
            except DeviceError as exc:
                log.error("zmq stimulator host %s: safe state at close not confirmed: %s", self.endpoint, exc)
            self._link.close()
            self._link = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    # -- the driver protocol ----------------------------------------------------------------------
    def deliver(self, command: np.void, now: float, t_stream: float) -> None:
        """Send one checked command; returns once the host applied it (DeviceError otherwise)."""
        names = COMMAND_DTYPE.names or ()
        fields = {n: command[n].item() for n in names}
        self._safe = False
        deadline = _clock() + self.offset_s + self.reply_timeout_s
        rep = self._call("deliver", {"command": fields, "deadline": deadline, "t_stream": float(t_stream)})
        ch, kind = int(command["channel"]), int(command["kind"])
        if rep.get("status") == "clipped":
            self.clipped_by_host += 1
            log.warning("zmq stimulator host %s clipped a command: %s", self.endpoint, rep.get("reason"))
        if kind == CMD_LEVEL:
            self.state[ch] = "on"
        elif kind == CMD_OFF:
            self.state[ch] = "off"

    def safe_state(self, now: float) -> None:
        """Every channel of the host to its safe state, confirmed by the host."""
        self._call("safe_state", {})
        self._safe = True
        self.safe_states += 1
        for ch in self.state:
            self.state[ch] = "off"

    def host_report(self) -> dict:
        """The host's own report (its gate counts and its driver's report); DeviceError if it does not answer."""
        return dict(self._call("report", {}).get("report", {}))

    def report(self) -> dict:
        rtt = np.asarray(self._rtt_us)
        return {
            "endpoint": self.endpoint,
            "host_device": self.host_device,
            "sent": dict(self.sent),
            "acknowledged": dict(self.acked),
            "state": {str(k): v for k, v in sorted(self.state.items())},
            "safe_states": self.safe_states,
            "clipped_by_host": self.clipped_by_host,
            "refused_by_host": self.refused_by_host,
            "timeouts": self.timeouts,
            "failures": list(self.failures),
            "keepalive": dict(self.pings),
            "host_watchdog_trips": self.host_watchdog_trips,
            "clock_offset_ms": round(1e3 * self.offset_s, 3),
            "clock_offset_uncertainty_ms": round(0.5e3 * self.rtt_s, 3),
            "reply_us": {"n": int(rtt.size), "p50": round(float(np.median(rtt)), 1) if rtt.size else None,
                         "max": round(float(rtt.max()), 1) if rtt.size else None},
        }

    # -- one exchange -----------------------------------------------------------------------------
    def _fail(self, message: str) -> DeviceError:
        self.failures.append(message)
        log.error("%s", message)
        return DeviceError(message)

    def _call(self, op: str, body: dict) -> dict:
        link = self._link
        if link is None:
            raise self._fail(f"zmq driver for {self.endpoint} is not open; the stimulate service must call open() first")
        req = {"v": WIRE_VERSION, "seq": next(self._seq), "op": op, **body}
        self.sent[op] = self.sent.get(op, 0) + 1
        t0 = time.perf_counter()
        try:
            rep = link.request(req, self.reply_timeout_s)
        except ValueError as exc:
            link.reset()
            raise self._fail(f"garbled reply from the stimulator host at {self.endpoint} ({exc}); "
                             "run the same rtneuro version on both hosts") from None
        if rep is None:
            self.timeouts += 1
            link.reset()
            raise self._fail(f"no reply to '{op}' from the stimulator host at {self.endpoint} within "
                             f"{1e3 * self.reply_timeout_s:g} ms; is it running? {_HINT}")
        self._rtt_us.append(1e6 * (time.perf_counter() - t0))
        if not rep["ok"]:
            status, reason = rep.get("status"), rep.get("reason", "")
            if status == "refused":
                self.refused_by_host += 1
                raise self._fail(f"the stimulator host at {self.endpoint} refused '{op}': {reason}; make this side's "
                                 "profile no looser than the host's")
            if status == "device_error":
                raise self._fail(f"the device on the stimulator host at {self.endpoint} failed '{op}' ({reason}); the host "
                                 "put it in its safe state: fix the device there (see the zmq_host log) and restart it")
            raise self._fail(f"the stimulator host at {self.endpoint} could not read '{op}' ({status}: {reason}); "
                             "run the same rtneuro version on both hosts")
        self.acked[op] = self.acked.get(op, 0) + 1
        return rep

    def _keepalive(self) -> None:
        assert self._ctx is not None
        link = _Link(self._ctx, self.endpoint, self.curve)
        seq = itertools.count(1)
        try:
            while not self._stop.wait(self.keepalive_s):
                deadline = _clock() + self.offset_s + self.reply_timeout_s
                self.pings["sent"] += 1
                try:
                    rep = link.request({"v": WIRE_VERSION, "seq": next(seq), "op": "ping", "deadline": deadline},
                                       self.reply_timeout_s)
                except ValueError:
                    rep = None
                if rep is None:
                    self.pings["missed"] += 1
                    link.reset()
                    log.warning("zmq stimulator host %s: keep-alive not answered within %g ms",
                                self.endpoint, 1e3 * self.reply_timeout_s)
                elif rep["ok"]:
                    self.pings["answered"] += 1
                    trips = rep.get("watchdog")
                    if isinstance(trips, int) and trips > self.host_watchdog_trips:
                        self.host_watchdog_trips = trips
                        log.error("zmq stimulator host %s: its watchdog tripped (%d times so far); every channel there "
                                  "is in its safe state until the next command", self.endpoint, trips)
                else:
                    self.pings["refused"] += 1
        finally:
            link.close()
