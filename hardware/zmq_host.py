"""The remote end of the ``zmq`` driver: runs on the host the stimulator is plugged into.

:func:`serve` binds a ZeroMQ ``ROUTER`` socket and applies the requests of
:class:`rtneuro.hardware.zmq_driver.ZmqDriver` to a real driver (simulated,
serial, ...) behind **its own** safety gate (:class:`rtneuro.safety.Gate`,
with this host's device profile): a command that passed the controller-side
gate is checked again here, and the host's watchdog puts every channel in its
safe state when the link goes quiet (no command and no keep-alive within the
host profile's ``watchdog_s``), whatever happened to the other machine.

Run it on the stimulator host::

    python -m rtneuro.hardware.zmq_host tcp://0.0.0.0:5560 --driver simulated --profile simulated
    python -m rtneuro.hardware.zmq_host tcp://0.0.0.0:5560 --driver serial --profile serial --arg port=/dev/ttyUSB0

Wire protocol (version 1)
-------------------------
One msgpack map per message, one frame (never pickle); the client's
``DEALER`` sends a request, the host answers on its ``ROUTER`` with the same
``seq``. Requests: ``{"v": 1, "seq": int, "op": op, ...}`` with ``op`` one of

``hello``
    answered with the host clock ``t`` (LSL clock, for the client's offset
    estimate), the host profile's ``device`` and the command record's
    ``fields`` (the client refuses to run against a host whose record differs).
``deliver``
    ``command``: a map field name -> value with exactly the host's fields;
    ``deadline``: on the host clock, or nil; ``t_stream``: data time.
``ping``
    a keep-alive: feeds the host watchdog (a heartbeat of the host gate)
    unless past its ``deadline``; answered with ``watchdog``, the number of
    times the host watchdog has tripped.
``safe_state``
    every channel to its safe state.
``report``
    the host gate's counts and the driver's report.

Replies: ``{"v": 1, "seq": int, "ok": bool, "status": str, "reason": str,
"t": float}`` plus the ``hello``/``report`` fields. ``ok`` is false when the
host gate refused the command (``status`` ``refused``), the host driver
failed (``status`` ``device_error``; the host has put its channels in the safe
state) or the request was malformed (``status`` ``invalid``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

import msgpack
import numpy as np
import zmq

from rtneuro.errors import ConfigError, DeviceError
from rtneuro.messages import COMMAND_DTYPE
from rtneuro.safety import DeviceProfile, Gate, load_profile

__all__ = ["serve", "apply_curve", "WIRE_VERSION", "MAX_REQUEST_BYTES", "main"]

log = logging.getLogger(__name__)

WIRE_VERSION = 1
MAX_REQUEST_BYTES = 64 * 1024
_OPS = ("hello", "deliver", "ping", "safe_state", "report")


def apply_curve(sock: zmq.Socket, curve: Mapping[str, Any] | None, *, server: bool) -> Any:
    """CURVE authentication and encryption of the driver's and the host's sockets.

    The keys and the ZAP authenticator are :mod:`rtneuro.security`'s: the host
    socket becomes a CURVE server accepting only the ``authorized`` keys of the
    folder, the driver socket a CURVE client presenting the folder's keypair.
    Call before ``bind``/``connect``.

    Parameters
    ----------
    sock : zmq.Socket
    curve : mapping or None
        ``{"keys": DIR}``: a keys folder made by ``rtneuro keys DIR`` and copied
        to both hosts. None: no CURVE (use the link only on a trusted network).
    server : bool
        True on the host (``ROUTER``, binds), False on the driver (``DEALER``, connects).

    Returns
    -------
    rtneuro.security.Keys or None
        The keys loaded (a server passes them to ``release_server`` when it closes).
    """
    if curve is None:
        return None
    keys_dir = curve.get("keys") if isinstance(curve, Mapping) else None
    if not keys_dir or set(curve) != {"keys"}:
        raise ConfigError(f"curve must be {{keys: DIR}} (a folder made by 'rtneuro keys DIR'), got {dict(curve) if isinstance(curve, Mapping) else curve!r}")
    try:
        security = importlib.import_module("rtneuro.security")
    except ImportError:
        raise ConfigError("CURVE keys were given but this rtneuro has no rtneuro.security; remove 'curve' "
                          "(then use the link only on a trusted network) or update rtneuro") from None
    keys = security.load_keys(keys_dir)
    (security.curve_server if server else security.curve_client)(sock, keys)
    return keys


def _command(fields: Any) -> np.void:
    """A COMMAND_DTYPE record from a map of field name -> number (ValueError naming the problem)."""
    names = COMMAND_DTYPE.names or ()
    if not isinstance(fields, dict):
        raise ValueError("'command' must be a map of field name -> value")
    if set(fields) != set(names):
        missing, extra = sorted(set(names) - set(fields)), sorted(set(fields) - set(names))
        raise ValueError(f"command fields differ from this host's (missing {missing}, unknown {extra}); "
                         "run the same rtneuro version on both hosts")
    rec = np.zeros(1, dtype=COMMAND_DTYPE)
    for name in names:
        value = fields[name]
        if isinstance(value, bool) or not isinstance(value, (int, float, bytes)):
            raise ValueError(f"command field {name!r} must be a number, got {type(value).__name__}")
        try:
            rec[0][name] = value
        except (OverflowError, ValueError, TypeError):
            raise ValueError(f"command field {name!r} = {value!r} does not fit {COMMAND_DTYPE[name]}") from None
    return rec[0]


def _decode(frame: bytes) -> dict:
    if len(frame) > MAX_REQUEST_BYTES:
        raise ValueError(f"request of {len(frame)} bytes exceeds {MAX_REQUEST_BYTES}")
    try:
        req = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for bad input
        raise ValueError(f"not msgpack ({type(exc).__name__})") from None
    if not isinstance(req, dict) or not isinstance(req.get("seq"), int) or isinstance(req.get("seq"), bool):
        raise ValueError("a request is a map with an integer 'seq'")
    if req.get("v") != WIRE_VERSION:
        raise ValueError(f"wire version {req.get('v')!r}, this host speaks {WIRE_VERSION}; run the same rtneuro version on both hosts")
    if req.get("op") not in _OPS:
        raise ValueError(f"unknown op {req.get('op')!r}; one of {', '.join(_OPS)}")
    return req


def _deadline(req: dict) -> float | None:
    d = req.get("deadline")
    if d is None:
        return None
    if isinstance(d, bool) or not isinstance(d, (int, float)):
        raise ValueError("'deadline' must be a number or nil")
    return float(d)


class _Host:
    def __init__(self, gate: Gate, clock: Callable[[], float]) -> None:
        self.gate = gate
        self.clock = clock
        self.requests: dict[str, int] = {}
        self.invalid = 0
        self.device_errors: list[str] = []

    def handle(self, frame: bytes) -> dict:
        now = self.clock()
        try:
            req = _decode(frame)
        except ValueError as exc:
            self.invalid += 1
            log.warning("zmq host: invalid request dropped: %s", exc)
            return {"seq": -1, "ok": False, "status": "invalid", "reason": str(exc)}
        op = req["op"]
        self.requests[op] = self.requests.get(op, 0) + 1
        out: dict[str, Any] = {"seq": req["seq"]}
        try:
            if op == "hello":
                out.update(ok=True, status="hello", reason="", device=self.gate.profile.device,
                           fields=list(COMMAND_DTYPE.names or ()))
            elif op == "report":
                out.update(ok=True, status="report", reason="", report=self.report())
            elif op == "safe_state":
                errors = self.gate.counts["device_errors"]
                self.gate.safe_state(now)  # the gate catches a failing driver and counts it
                if self.gate.counts["device_errors"] > errors:
                    self.device_errors.append(self.gate.last_error)
                    out.update(ok=False, status="device_error", reason=self.gate.last_error)
                else:
                    out.update(ok=True, status="safe_state", reason="")
            elif op == "ping":
                d = self.gate.heartbeat(now, _deadline(req))
                out.update(ok=d.status != "refused", status=d.status, reason=d.reason, watchdog=self.gate.counts["watchdog"])
            else:
                d = self.gate.submit(_command(req.get("command")), now, _deadline(req), float(req.get("t_stream", 0.0)))
                if d.status == "refused" and d.reason.startswith("device:"):
                    # the host driver failed; the host gate has put it in its safe state
                    self.device_errors.append(d.reason)
                    out.update(ok=False, status="device_error", reason=d.reason)
                else:
                    out.update(ok=d.status != "refused", status=d.status, reason=d.reason)
        except (ValueError, TypeError) as exc:
            self.invalid += 1
            out.update(ok=False, status="invalid", reason=str(exc))
        except DeviceError as exc:
            self.device_errors.append(str(exc))
            log.error("zmq host: the %s driver failed: %s", self.gate.profile.device, exc)
            try:
                self.gate.safe_state(self.clock())
            except DeviceError as exc2:
                log.error("zmq host: the safe state could not be confirmed either: %s", exc2)
            out.update(ok=False, status="device_error", reason=str(exc))
        return out

    def report(self) -> dict:
        return {"gate": dict(self.gate.counts), "refusals": dict(self.gate.reasons), "requests": dict(self.requests),
                "invalid": self.invalid, "device_errors": list(self.device_errors), "driver": self.gate.driver.report()}


def serve(endpoint: str, driver: Any, profile: DeviceProfile | str, *, stop: threading.Event | None = None,
          ready: threading.Event | None = None, curve: Mapping[str, Any] | None = None,
          clock: Callable[[], float] | None = None, poll_ms: int = 5) -> dict:
    """Answer ``zmq`` driver requests at ``endpoint`` until ``stop`` is set (or Ctrl-C).

    Parameters
    ----------
    endpoint : str
        Where to bind, e.g. ``tcp://0.0.0.0:5560`` (``tcp://127.0.0.1:0`` picks a free port;
        ``ready.endpoint`` then holds the bound address).
    driver : driver object
        The real driver (protocol of :mod:`rtneuro.hardware.base`), not opened yet.
    profile : DeviceProfile or str
        This host's safety profile, or its shipped name / path.
    stop : threading.Event or None
        Set it to stop serving (the default serves until KeyboardInterrupt).
    ready : threading.Event or None
        Set once the socket is bound and the driver is open in its safe state.
    curve : mapping or None
        ``{"keys": DIR}`` for CURVE, see :func:`apply_curve`.
    clock : callable or None
        The host clock (LSL clock by default).
    poll_ms : int
        How often the watchdog is checked when no request arrives.

    Returns
    -------
    dict
        The host report: gate counts, refusals, requests per op, invalid requests,
        driver failures and the driver's own report.
    """
    if not isinstance(endpoint, str) or not endpoint.startswith(("tcp://", "ipc://")):
        raise ConfigError(f"endpoint must be tcp://HOST:PORT or ipc://PATH, got {endpoint!r}")
    if isinstance(profile, str):
        profile = load_profile(profile)
    if clock is None:
        import pylsl

        clock = pylsl.local_clock
    stop = stop or threading.Event()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 1000)
    host = _Host(Gate(profile, driver), clock)
    keys = None
    try:
        keys = apply_curve(sock, curve, server=True)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise ConfigError(f"zmq host cannot bind {endpoint} ({exc}); choose a free port or another address") from None
        bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        host.gate.open(clock())
        log.info("zmq stimulator host at %s: %s driver, profile '%s'", bound, getattr(driver, "name", "?"), profile.device)
        if ready is not None:
            ready.endpoint = bound  # type: ignore[attr-defined]
            ready.set()
        while not stop.is_set():
            if sock.poll(poll_ms, zmq.POLLIN):
                for _ in range(100):
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if len(frames) != 2:
                        host.invalid += 1
                        continue
                    reply = host.handle(frames[1])
                    reply.update(v=WIRE_VERSION, t=clock())
                    sock.send_multipart([frames[0], msgpack.packb(reply, use_bin_type=True)])
            host.gate.tick(clock())
    except KeyboardInterrupt:
        pass
    finally:
        try:
            host.gate.safe_state(clock())
        except DeviceError as exc:
            log.error("zmq host: safe state at exit not confirmed: %s", exc)
        driver.close()
        sock.close(0)
        if keys is not None:
            importlib.import_module("rtneuro.security").release_server(ctx, keys)
        ctx.term()
    return host.report()


def main(argv: list[str] | None = None) -> int:
    """``python -m rtneuro.hardware.zmq_host ENDPOINT --driver NAME --profile NAME [--arg KEY=VALUE ...]``."""
    import json

    import yaml

    from rtneuro.hardware import driver_class

    ap = argparse.ArgumentParser(prog="python -m rtneuro.hardware.zmq_host",
                                 description="Stimulator host for rtneuro's zmq driver: a real driver behind its own safety gate.")
    ap.add_argument("endpoint", help="where to listen, e.g. tcp://0.0.0.0:5560")
    ap.add_argument("--driver", default="simulated", help="driver of the device on this host (default simulated)")
    ap.add_argument("--profile", default=None, help="this host's safety profile: shipped name or YAML path (default: the driver's name)")
    ap.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                    help="a driver constructor argument (value parsed as YAML), e.g. --arg port=/dev/ttyUSB0")
    ap.add_argument("--keys", default=None, metavar="DIR",
                    help="CURVE: accept only the clients authorized in this keys folder (made by 'rtneuro keys DIR')")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s")
    try:
        kwargs = {}
        for item in args.arg:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"--arg must be KEY=VALUE, got {item!r}")
            kwargs[key] = yaml.safe_load(value)
        profile = load_profile(args.profile or args.driver)
        if profile.device != args.driver:
            raise ConfigError(f"profile '{args.profile}' is for device '{profile.device}', not driver '{args.driver}'")
        driver = driver_class(args.driver)(**kwargs)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())  # terminate: safe state, then exit
        report = serve(args.endpoint, driver, profile, stop=stop, curve={"keys": args.keys} if args.keys else None)
    except (ConfigError, DeviceError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
