"""The supervisor: starts one service process per graph process, watches them, reports.

``rtneuro run`` builds a :class:`Supervisor` from a validated graph. It

1. writes the plan (graph, stream metadata, endpoints) into a private run
   folder that also holds the ``ipc://`` socket files;
2. starts each process as ``python -m rtneuro.services.<kind>``, waits until
   all are ready (kernels compiled, consumers subscribed), then starts them
   together on one clock origin;
3. prints a live status line per stream (rate, latency p50/p99, gaps,
   invalid messages) from the status every service sends;
4. restarts a process that fails, according to its policy, resuming sources
   where they were;
5. stops at the end of the data, after ``--duration``, or on Ctrl-C/SIGTERM:
   sources stop first and end-of-stream flows down the graph so nothing in
   flight is lost; whatever has not finished after ``stop_timeout_s`` is told
   to stop, then terminated, then killed (all within 2 s of Ctrl-C); the run
   folder is removed;
6. writes the JSON report and returns the exit code: 0 when every process
   finished cleanly, 2 when the configuration was invalid, and 1 when the
   run did not tell a clean story, each cause named in one error line:

   * a process died abnormally: killed by a signal, a non-zero exit code, a
     lost heartbeat (no status or pong for ``heartbeat_timeout`` while
     running: killed as hung; a remote one: silent for ``remote_timeout``);
   * a process had to be terminated or killed at shutdown (it did not stop
     when asked);
   * a stimulator lost its command input while its controller was still
     running (:meth:`Supervisor._check_inputs`), or a process stalled.

   The rule for restarts: a failure counts even when the restart policy
   brought the process back and the run went on (the report lists both the
   failure and the restart). Data was lost while it was down and the
   stimulator's watchdog may have tripped; a run that needed a restart is
   not a clean run, and scripts that check the exit code must hear it.

Emergency stop
    While it runs, the supervisor is listed in a per-user folder
    (:func:`runs_dir`: ``$RTNEURO_RUNTIME_DIR``, else
    ``$XDG_RUNTIME_DIR/rtneuro``, else ``/tmp/rtneuro-UID``; mode ``0700``)
    as ``rtn-XXXX.json`` with its control endpoint; the run folder holds the
    same ``control.json``. ``rtneuro stop --now`` sends ``{"op": "estop"}``
    to the control socket; the supervisor forwards it at once to every
    process, each service calls ``emergency_stop(now)`` on its nodes that
    have it, and answers; the supervisor answers the sender when every
    process holding a stimulator has confirmed (or after
    ``ESTOP_TIMEOUT_S``, naming those that did not). The stop is latched:
    a process (re)started while it holds gets it before it starts, until
    ``{"op": "estop_clear"}`` (``rtneuro stop --clear``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import zmq

from ..config import Graph
from ..errors import RtneuroError, SchemaError
from ..messages import pack_control, unpack_control
from ..ratelog import RateLog
from ..security import curve_server, private_dir, release_server, secure_ipc, security_stats
from .clock import lsl_clock
from .latency import LatencyStats
from .service import EXIT_FATAL, EXIT_STARTUP, SUPERVISOR_PID_ENV, Service

__all__ = ["Supervisor", "machine_info", "CpuLatencyRequest", "runs_dir", "running_supervisors", "ESTOP_TIMEOUT_S"]

log = logging.getLogger("rtneuro.supervisor")

EXIT_OK = 0
EXIT_FAILED = 1
#: After the sources ended, a process without progress for this long is stopped.
STALL_S = 10.0
#: Once every process has reported its end, those still waiting for subscribers are stopped after this long.
LINGER_GRACE_S = 2.0
#: An emergency stop (or clear) is answered after this long even if a stimulating process did not confirm.
ESTOP_TIMEOUT_S = 1.0
#: Control operations any local client of the control socket may send (rtneuro stop).
OPERATOR_OPS = ("estop", "estop_clear", "estop_status")
#: Emergency-stop events kept for the report (beyond: only counted).
MAX_ESTOP_EVENTS = 256
#: Status rates are taken over this window (supervisor time): a stream that stopped shows 0.
RATE_WINDOW_S = 3.0
#: Node report values that are settings, the same in every incarnation: not summed across restarts.
REPORT_SETTINGS = frozenset({"safe_deadline_s", "max_amplitude_ma", "max_frequency_hz"})


def runs_dir() -> Path:
    """The per-user folder listing running supervisors (created ``0700``).

    ``$RTNEURO_RUNTIME_DIR`` if set, else ``$XDG_RUNTIME_DIR/rtneuro``, else
    ``/tmp/rtneuro-UID``.
    """
    env = os.environ.get("RTNEURO_RUNTIME_DIR")
    if env:
        return private_dir(env)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return private_dir(Path(xdg) / "rtneuro")
    return private_dir(Path(tempfile.gettempdir()) / f"rtneuro-{os.getuid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_supervisors() -> list[dict]:
    """Entries of the supervisors of this user that are running (stale ones are removed).

    Each is the ``control.json`` of a run: ``pid``, ``run_dir``,
    ``control`` (endpoint), ``keys`` (folder or None), ``name``, ``config``,
    ``started``.
    """
    out = []
    d = runs_dir()
    for f in sorted(d.glob("rtn-*.json")):
        try:
            entry = json.loads(f.read_text())
            pid = int(entry["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not _alive(pid) or not Path(str(entry.get("run_dir"))).is_dir():  # killed (its pid may be reused)
            f.unlink(missing_ok=True)
            continue
        out.append(entry)
    return out


def machine_info() -> dict:
    import numba
    import zmq as _zmq

    from .. import __version__

    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "rtneuro": __version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "pyzmq": _zmq.__version__,
        "libzmq": _zmq.zmq_version(),
    }


class CpuLatencyRequest:
    """Hold a Linux PM QoS CPU latency request while in use.

    Writing a latency bound to ``/dev/cpu_dma_latency`` and keeping the file
    open tells the kernel not to put CPUs into idle states slower to leave
    than that (0 us: the CPUs poll instead of halting). On a machine
    dedicated to a closed loop this removes the wake-up cost an idle core
    adds to every hop; it costs power, and it needs write access to the
    device (root). The request ends when the file is closed.
    """

    PATH = "/dev/cpu_dma_latency"

    def __init__(self, latency_us: int) -> None:
        self.latency_us = int(latency_us)
        self._fd: int | None = None
        self.error: str | None = None

    def __enter__(self) -> CpuLatencyRequest:
        import struct

        try:
            self._fd = os.open(self.PATH, os.O_RDWR)
            os.write(self._fd, struct.pack("i", self.latency_us))
        except OSError as exc:
            self.error = (f"cannot hold cpu_dma_latency_us={self.latency_us} ({exc.strerror}: {self.PATH}); "
                          "running with the default CPU idle states")
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _ThreadedService:
    """A service run in a thread of the supervisor's process, with the part of ``subprocess.Popen``'s
    interface the supervisor uses (``Supervisor(inline=True)``: sweep jobs and replay checks, offline runs on the
    virtual clock).

    A job on a Dask worker spent most of its time starting a Python process, importing numpy, scipy and
    numba and loading the kernels from numba's cache (2.5 of 2.8 s for a 20 s recording); in a thread of
    the worker all of that happens once per worker. The service is the same code, talking to the
    supervisor over the same sockets (ipc), with its own ZeroMQ context.
    """

    def __init__(self, plan_path: Path, process: str, inc: int, restart: bool) -> None:
        self.pid = os.getpid()
        self.returncode: int | None = None
        self.service: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(plan_path, process, inc, restart),
                                        name=f"rtneuro-{process}", daemon=True)
        self._thread.start()

    def _run(self, plan_path: Path, process: str, inc: int, restart: bool) -> None:
        code = EXIT_FAILED
        try:
            try:
                service = Service(json.loads(plan_path.read_text()), process, inc, restart=restart, inline=True)
            except RtneuroError as exc:
                log.error("process '%s' cannot start: %s", process, exc)
                code = EXIT_STARTUP
                return
            self.service = service
            if self._stop.is_set():
                code = EXIT_OK
                return
            code = service.run()
        except Exception:
            log.error("process '%s' failed:\n%s", process, traceback.format_exc())
        finally:
            self.returncode = code

    def poll(self) -> int | None:
        return None if self._thread.is_alive() else self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise subprocess.TimeoutExpired(f"thread {self._thread.name}", timeout or 0.0)
        return int(self.returncode if self.returncode is not None else EXIT_FAILED)

    def terminate(self) -> None:
        """As SIGTERM does to a service process: stop at the next loop turn."""
        self._stop.set()
        if self.service is not None:
            self.service.request_stop()

    kill = terminate  # a thread cannot be killed; a hung node leaves the job to the worker's own timeout


@dataclass
class _Inc:
    """One incarnation of a process: a child process, a service in a thread, or a service on another host."""

    inc: int
    popen: subprocess.Popen | _ThreadedService | None  # None: started by hand on another host (rtneuro serve)
    started: float
    ready: bool = False
    started_run: bool = False
    final: dict | None = None
    #: told to stop after its final report (it was waiting for subscribers outside the graph)
    released: bool = False
    status: dict = field(default_factory=dict)
    exit_code: int | None = None
    #: (supervisor time, {stream: samples produced}) of recent status messages (see Supervisor._rates)
    history: list = field(default_factory=list)
    #: LSL time of the last control message (how a remote service is known to be alive)
    last_seen: float = 0.0
    #: remote service: registered (it said hello), and its exit as far as the supervisor can tell
    registered: bool = False
    remote_exit: int | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def poll(self) -> int | None:
        return self.popen.poll() if self.popen is not None else self.remote_exit

    def terminate(self) -> None:
        if self.popen is not None:
            self.popen.terminate()

    def kill(self) -> None:
        if self.popen is not None:
            self.popen.kill()


@dataclass
class _Proc:
    name: str
    service: str
    restart: str
    max_restarts: int
    launch: str = "local"
    host: str = ""
    incs: list[_Inc] = field(default_factory=list)
    restarts: int = 0
    failed: bool = False
    finished: bool = False
    gave_up: bool = False
    restart_at: float | None = None

    @property
    def current(self) -> _Inc:
        """The latest incarnation (every process has one once the run spawned it)."""
        return self.incs[-1]

    @property
    def alive(self) -> bool:
        return bool(self.incs) and self.incs[-1].exit_code is None


class Supervisor:
    """Runs a graph as a set of processes.

    Parameters
    ----------
    graph : Graph
        A validated graph (:func:`rtneuro.config.load_graph`).
    report_path : path or None
        Where to write the JSON report.
    out : text stream
        Where the live status and the summary go.
    live : bool or None
        Redraw the status in place (default: when ``out`` is a terminal).
    quiet : bool
        No live status (the summary is still printed).
    inline : bool
        Run the graph's local processes as threads of this process (offline runs on the virtual clock:
        sweep jobs and replay checks, which then pay no interpreter start-up, imports or kernel loading per
        process). The threads share one interpreter lock, so a paced (real-time) run keeps its processes.
    """

    #: when every process had reported its end (see _release_lingering)
    _all_done_at: float | None = None
    #: the run folder (plan, ipc socket files, control.json), set by run()
    run_dir: Path
    control_endpoint: str
    #: this run's entry in runs_dir(), removed at the end
    _registry_entry: Path | None = None

    def __init__(self, graph: Graph, *, report_path: str | Path | None = None, out: TextIO = sys.stderr,
                 live: bool | None = None, quiet: bool = False, schedule: list[dict] | None = None,
                 inline: bool = False) -> None:
        self.graph = graph
        #: run local processes as threads of this process (offline runs only: see the parameters)
        self.inline = inline and graph.runtime.speed == "max"
        #: recorded changes and actions a replay applies at their recorded samples (rtneuro replay --check)
        self.schedule = list(schedule or [])
        #: the operator's side: live changes, actions, the control server (set up by run())
        self.steer: Any = None
        self.report_path = Path(report_path) if report_path else None
        self.out = out
        self.live = out.isatty() if live is None else live
        self.quiet = quiet
        self.rt = graph.runtime
        #: a remote service silent for this long is considered lost (as generous as for a local one: a
        #: remote stimulator's own gate and watchdog keep it safe meanwhile; a busy host is not a lost one)
        self.remote_timeout = max(15.0, 10 * graph.runtime.status_interval_s)
        #: a local service silent for this long while running is hung (generous: a loaded machine is slow)
        self.heartbeat_timeout = max(15.0, 10 * graph.runtime.status_interval_s)
        self.procs = {
            name: _Proc(name, p.service, p.restart, p.max_restarts, p.launch, p.host) for name, p in graph.processes.items()
        }
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.e2e = LatencyStats()
        self.hops: dict[str, LatencyStats] = {}
        #: on the virtual clock (--speed max): each node's compute time per chunk, in us
        self.compute: dict[str, LatencyStats] = {}
        self.ages: dict[str, LatencyStats] = {s: LatencyStats(exact_cap=50_000) for s in graph.streams}
        self._recent_ages: dict[str, list] = {s: [] for s in graph.streams}
        self._recent_e2e: list[float] = []
        self._interrupted = 0
        self._lines_drawn = 0
        self.report: dict = {}
        #: the latched emergency stop ({"reason", "since"}), None when clear
        self._estop_latched: dict | None = None
        self._estop_seq = 0
        self._estop_events: list[dict] = []
        self._estop_pending: dict[int, dict] = {}
        self._estop_dropped = 0
        #: logs about the control socket's input, by reason (totals in the report)
        self.ratelog = RateLog(log)
        #: command stream -> (stimulating process, supervisor time) of an end-of-stream not yet explained
        self._inputs_ended: dict[str, tuple[str, float]] = {}

    # -- processes ----------------------------------------------------------

    def _endpoints(self, run_dir: Path) -> dict:
        tp = self.graph.transport
        eps = {}
        if tp.scheme == "ipc":
            for name in self.procs:
                eps[name] = {"pub": f"ipc://{run_dir}/{name}.pub", "cmd": f"ipc://{run_dir}/{name}.cmd"}
            return eps
        for i, (name, proc) in enumerate(self.graph.processes.items()):
            host = proc.host
            if tp.base_port:
                p1, p2 = tp.base_port + 2 * i, tp.base_port + 2 * i + 1
            else:
                p1, p2 = _free_port(host), _free_port(host)
            eps[name] = {"pub": f"tcp://{host}:{p1}", "cmd": f"tcp://{host}:{p2}"}
        return eps

    def _spawn(self, proc: _Proc) -> None:
        if proc.launch == "remote":
            # Started by hand on its host; it registers with 'hello' (see rtneuro.runtime.service.serve).
            proc.incs.append(_Inc(0, None, lsl_clock()))
            self.out.write(f"waiting for process '{proc.name}' on {proc.host}: there, run\n"
                           f"    rtneuro serve {self.control_endpoint} {proc.name}\n")
            self.out.flush()
            return
        inc = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
        if self.inline:
            proc.incs.append(_Inc(inc, _ThreadedService(self.plan_path, proc.name, inc, bool(proc.incs)), lsl_clock()))
            self._by_ident[f"{proc.name}:{inc}".encode()] = (proc, proc.incs[-1])
            self._tell_incs()
            return
        cmd = [sys.executable, "-m", f"rtneuro.services.{proc.service}", str(self.plan_path), proc.name, str(inc)]
        if proc.incs:
            cmd.append("--restart")
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env[SUPERVISOR_PID_ENV] = str(os.getpid())  # a service started after this process died stops at once
        # One thread per numerical library: a real-time process must not wake
        # (or wait for) a pool of BLAS/OpenMP threads on every chunk.
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env.setdefault(var, "1")
        try:
            popen = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise RtneuroError(f"cannot start process '{proc.name}' ({exc.strerror or exc}: {cmd[0]}); "
                               "check that this Python can be run by this user") from None
        proc.incs.append(_Inc(inc, popen, lsl_clock()))
        self._by_ident[f"{proc.name}:{inc}".encode()] = (proc, proc.incs[-1])
        self._tell_incs()

    def _send(self, proc: _Proc, msg: dict) -> None:
        if not proc.incs:
            return
        cur = proc.current
        if cur.exit_code is not None:
            return
        try:
            self.ctl.send_multipart([f"{proc.name}:{cur.inc}".encode(), pack_control(msg)], flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def _start_msg(self, proc: _Proc) -> dict:
        resume = {}
        for inc in proc.incs[:-1]:
            resume.update((inc.final or inc.status).get("positions", {}))
        origin_stream = 0.0 if self.rt.time_origin == "zero" else self.origin
        msg = {"op": "start", "origin": self.origin, "origin_stream": origin_stream, "speed": self.rt.speed,
               "resume": resume, "incs": self._incs()}
        if self.steer is not None:
            msg.update(self.steer.start_extra(proc, restart=len(proc.incs) > 1))
        if self.schedule:
            mine = set(self.graph.processes[proc.name].nodes)
            msg["schedule"] = [e for e in self.schedule if e.get("node") in mine]  # type: ignore[assignment]
        return msg

    def _incs(self) -> dict[str, int]:
        """Each process's current incarnation: a stimulator takes commands only from its controller's."""
        return {p.name: p.current.inc for p in self.procs.values()
                if p.incs and (p.launch != "remote" or p.current.registered)}

    def _tell_incs(self) -> None:
        """After a (re)start or a registration: every running process learns the new incarnation."""
        if self.origin is None:
            return  # the start message carries them
        msg = {"op": "incs", "incs": self._incs()}
        for p in self.procs.values():
            self._send(p, msg)

    def _on_control(self, max_messages: int = 256) -> None:
        for _ in range(max_messages):  # bounded per call: a flood cannot hold the supervisor's loop
            try:
                frames = self.ctl.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                self.ratelog.warning("malformed-control", "malformed control message: %d frames, expected 2", len(frames))
                continue
            ident, buf = frames
            try:
                msg = unpack_control(buf)
            except SchemaError as exc:
                self.ratelog.warning("malformed-control", "malformed control message: %s", exc)
                continue
            entry = self._by_ident.get(ident)
            if entry is None:  # no state is kept for an unknown peer
                if msg["op"] == "hello":
                    self._hello(ident, msg)
                elif msg["op"] in OPERATOR_OPS:
                    self._operator(ident, msg)
                else:
                    self.ratelog.warning("unknown-peer", "ignored a %r control message from a peer that is no process "
                                         "of this run", str(msg["op"])[:20])
                continue
            proc, inc = entry
            inc.last_seen = lsl_clock()
            op = msg["op"]
            if op == "estop_done":
                self._estop_confirmed(proc, msg)
            elif op == "ready":
                inc.ready = True
                if self._estop_latched is not None:
                    # latched: a process (re)started meanwhile stops before it starts
                    self._send(proc, {"op": "estop", "id": None, "reason": self._estop_latched["reason"]})
                if self.origin is not None and not inc.started_run and not self._stopping:
                    self._send(proc, self._start_msg(proc))
                    inc.started_run = True
            elif op in ("status", "final"):
                self._absorb(inc, msg)
                if self.steer is not None:
                    self.steer.absorb_latency(msg)
                if op == "final":
                    inc.final = msg
                    if inc.popen is None:
                        inc.remote_exit = 0 if msg.get("ok") else 1
            elif op == "error":
                for line in msg.get("errors", []):
                    self._error(line)
            elif op == "input_ended":
                self._input_ended(proc, msg)
            elif op == "applied" and self.steer is not None:
                self.steer.on_applied(msg)
            elif op == "decisions" and self.steer is not None and type(msg.get("records")) is list:
                self.steer.hub.publish({"type": "decisions", "stimulator": msg.get("stimulator"), "records": msg["records"][:256],
                                        "dropped": msg.get("dropped", 0)})

    def _hello(self, ident: bytes, msg: dict) -> None:
        """A service started by hand on another host asks for its plan."""
        name = msg.get("process")
        proc = self.procs.get(name) if isinstance(name, str) else None
        reply: dict[str, Any]
        if proc is None or proc.launch != "remote":
            reply = {"op": "refused", "reason": f"this run has no remote process {name!r}; remote processes: "
                     f"{[p.name for p in self.procs.values() if p.launch == 'remote']}"}
        elif proc.current.registered and proc.alive:
            reply = {"op": "refused", "reason": f"process {name!r} is already running"}
        elif self._stopping:
            reply = {"op": "refused", "reason": "the run is stopping"}
        elif proc.current.registered and len(proc.incs) > proc.max_restarts:
            # bounded: each registration keeps an incarnation for the report
            reply = {"op": "refused", "reason": f"process {name!r} was started {len(proc.incs)} times already"}
        else:
            inc = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
            if proc.current.registered:  # a second start after the first one ended
                proc.incs.append(_Inc(inc, None, lsl_clock()))
            cur = proc.current
            cur.inc, cur.registered, cur.last_seen = inc, True, lsl_clock()
            self._by_ident[f"{proc.name}:{inc}".encode()] = (proc, cur)
            reply = {"op": "plan", "plan": self.plan, "inc": inc, "restart": len(proc.incs) > 1}
            log.info("process '%s' registered from another host", name)
            self._tell_incs()
        try:
            self.ctl.send_multipart([ident, pack_control(reply)], flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    # -- emergency stop -----------------------------------------------------

    def _register(self, again: bool = False) -> None:
        """List this run where ``rtneuro stop`` finds it (run folder and per-user folder); ``again``: with the control API."""
        keys = self.graph.transport.curve_keys()
        entry = {"pid": os.getpid(), "run_dir": str(self.run_dir), "control": self.control_endpoint,
                 "keys": str(keys.directory) if keys is not None else None, "name": self.graph.name,
                 "config": str(self.graph.path), "started": self.started_at.isoformat(timespec="seconds")}
        if self.steer is not None:
            entry.update(self.steer.registry())  # the API's address and this run's token: owner-only files
        text = json.dumps(entry)
        fd = os.open(self.run_dir / "control.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        try:
            path = runs_dir() / f"{self.run_dir.name}.json"
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.replace(tmp, path)
            self._registry_entry = path
        except (OSError, RtneuroError) as exc:
            msg = f"cannot list this run for 'rtneuro stop' ({exc}); use 'rtneuro stop --run {self.run_dir}'"
            if msg not in self.warnings:
                self.warnings.append(msg)
            log.warning("%s", msg)
        serving = self.steer is not None and self.steer.enabled
        if again == serving:  # once: with the API's address where it serves one
            if not self.quiet:
                api = f"; control API {self.steer.url} (rtneuro status / set / annotate / arm / disarm)" if self.steer and self.steer.url else ""
                self.out.write(f"run folder {self.run_dir}; emergency stop from another terminal: rtneuro stop --now{api}\n")
            for page, url in (self.steer.page_urls() if self.steer is not None else {}).items():  # asked for: even --quiet
                self.out.write(f"{page}: {url}\n")
            self.out.flush()

    def _stim_procs(self) -> list[_Proc]:
        """Processes holding a stimulator that are running now (those whose confirmation is awaited)."""
        names = {spec.process for spec in self.graph.nodes.values() if spec.category == "stimulator"}
        return [p for n, p in self.procs.items() if n in names and p.alive
                and (p.current.popen is not None or p.current.registered)]

    def _operator(self, ident: bytes | None, msg: dict) -> None:
        """``estop`` / ``estop_clear`` / ``estop_status`` from ``rtneuro stop`` (or a monitor), or from the control API (``ident`` None)."""
        op = msg["op"]
        now = lsl_clock()
        if op == "estop_status":
            if ident is None:
                return
            self._reply(ident, {"op": "estop_status", "latched": self._estop_latched is not None,
                                "name": self.graph.name})
            return
        clear = op == "estop_clear"
        reason = str(msg.get("reason") or "operator")[:200]
        self._estop_seq += 1
        rid = self._estop_seq
        if clear:
            self._estop_latched = None
        else:
            self._estop_latched = {"reason": reason, "since": now}
        log.warning("%s requested (%s): forwarding to every process", "emergency stop clear" if clear else "emergency stop", reason)
        # stamped before the first send: a stimulator may confirm before the last process has been told
        t_forwarded = lsl_clock()
        for proc in self.procs.values():
            self._send(proc, {"op": op, "id": rid, "reason": reason})
        waiting = {p.name for p in self._stim_procs()}
        expected = [nid for nid, spec in self.graph.nodes.items() if spec.category == "stimulator" and spec.process in waiting]
        event = {"op": op, "id": rid, "reason": reason, "t_received": now, "t_forwarded": t_forwarded,
                 "t_sent": msg.get("t_sent"), "expected": expected, "results": {}, "t_confirmed": None,
                 "peer": ident, "waiting": waiting, "at": {}, "who": msg.get("who") if ident is None else "rtneuro stop",
                 "future": msg.get("future") if ident is None else None}
        if len(self._estop_events) < MAX_ESTOP_EVENTS:
            self._estop_events.append(event)
        else:
            self._estop_dropped += 1
        self._estop_pending[rid] = event
        self._answer_estops()

    def _estop_confirmed(self, proc: _Proc, msg: dict) -> None:
        rid = msg.get("id")
        event = self._estop_pending.get(rid) if isinstance(rid, int) else None
        if event is None:
            return
        event["results"].update(msg.get("results") or {})
        if isinstance(msg.get("at"), dict):
            event["at"].update(msg["at"])
        event["waiting"].discard(proc.name)
        t = msg.get("t")
        if isinstance(t, (int, float)) and msg.get("results"):
            event["t_confirmed"] = max(event["t_confirmed"] or t, t)
        self._answer_estops()

    def _answer_estops(self, force: bool = False) -> None:
        """Answer every pending stop whose stimulating processes all confirmed, or that timed out."""
        if not self._estop_pending:
            return
        now = lsl_clock()
        for rid, ev in list(self._estop_pending.items()):
            for name in list(ev["waiting"]):  # a process that died cannot confirm any more
                if not self.procs[name].alive:
                    ev["waiting"].discard(name)
                    ev.setdefault("lost", []).append(name)
            if ev["waiting"] and not force and now - ev["t_received"] < ESTOP_TIMEOUT_S:
                continue
            del self._estop_pending[rid]
            ok = [n for n, r in ev["results"].items() if r == "ok"]
            failed = {n: r for n, r in ev["results"].items() if r != "ok"}
            missing = sorted(ev["waiting"] | set(ev.get("lost", [])))
            ev["confirmed"] = len(ok)
            ev["missing"] = missing
            ev["failed"] = failed
            if ev["waiting"]:
                self._error(f"{ev['op']}: processes {sorted(ev['waiting'])} did not confirm within {ESTOP_TIMEOUT_S:g} s")
            if self.steer is not None:
                self.steer.on_estop(ev)
            ev.pop("future", None)
            peer = ev["peer"]
            if peer is None:
                continue
            self._reply(peer, {"op": f"{ev['op']}_result", "name": self.graph.name, "expected": ev["expected"],
                                     "confirmed": ok, "failed": failed,
                                     "missing": missing, "t_confirmed": ev["t_confirmed"],
                                     "t_forwarded": ev["t_forwarded"], "latched": self._estop_latched is not None})

    def _reply(self, ident: bytes, msg: dict) -> None:
        try:
            self.ctl.send_multipart([ident, pack_control(msg)], flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def _estop_report(self) -> dict:
        events = []
        t0 = self.origin
        for ev in self._estop_events:
            row = {"op": ev["op"], "reason": ev["reason"], "expected": ev["expected"],
                   "confirmed": ev.get("confirmed", 0), "missing": ev.get("missing", []), "failed": ev.get("failed", {}),
                   "at_s": round(ev["t_received"] - t0, 4) if t0 is not None else None}
            if ev["t_confirmed"] is not None:
                row["forward_to_confirm_ms"] = round((ev["t_confirmed"] - ev["t_forwarded"]) * 1e3, 3)
                if isinstance(ev["t_sent"], (int, float)):
                    row["send_to_confirm_ms"] = round((ev["t_confirmed"] - ev["t_sent"]) * 1e3, 3)
            events.append(row)
        return {"latched": self._estop_latched is not None, "events": events, "events_not_kept": self._estop_dropped}

    def _absorb(self, inc: _Inc, msg: dict) -> None:
        now = lsl_clock()
        samples = {stream: counts.get("samples", 0) for stream, counts in (msg.get("produced") or {}).items()
                   if isinstance(counts, dict)}
        inc.history.append((now, samples))
        window = self._rate_window
        while len(inc.history) > 2 and now - inc.history[1][0] > window:
            del inc.history[0]
        inc.status = {**inc.status, **{k: v for k, v in msg.items()
                                       if k not in ("ages_us", "e2e_us", "hops_us", "compute_us", "errors", "warnings")}}
        for hop, vals in (msg.get("hops_us") or {}).items():
            self.hops.setdefault(hop, LatencyStats(exact_cap=50_000)).extend(vals)
        for nid, vals in (msg.get("compute_us") or {}).items():
            self.compute.setdefault(nid, LatencyStats(exact_cap=50_000)).extend(vals)
        for stream, vals in (msg.get("ages_us") or {}).items():
            if stream in self.ages:
                self.ages[stream].extend(vals)
                self._recent_ages[stream].extend(vals)
        e2e = msg.get("e2e_us") or []
        self.e2e.extend(e2e)
        self._recent_e2e.extend(e2e)
        for line in msg.get("errors") or []:
            self._error(line)
        for line in msg.get("warnings") or []:
            if line not in self.warnings:
                self.warnings.append(line)

    def _rates(self, now: float) -> dict[str, float]:
        """Samples per second of every stream over the last ``RATE_WINDOW_S`` (supervisor time).

        From the oldest status in the window to *now*, not to the last status:
        a stream (or a process) that stopped reporting progress decays to 0
        instead of showing its last rate for ever.
        """
        rates: dict[str, float] = {}
        for proc in self.procs.values():
            if not proc.incs:
                continue
            hist = [h for h in proc.current.history if now - h[0] <= self._rate_window]
            if len(hist) < 2 or not proc.alive:
                continue
            (t0, first), (_, last) = hist[0], hist[-1]
            for stream, n in last.items():
                rates[stream] = max(0.0, (n - first.get(stream, 0)) / max(now - t0, 1e-3))
        return rates

    @property
    def _rate_window(self) -> float:
        """Rates are taken over at least two status intervals (statuses come once per interval)."""
        return max(RATE_WINDOW_S, 2.5 * self.rt.status_interval_s)

    def _input_ended(self, proc: _Proc, msg: dict) -> None:
        """A stimulating process says one of its command inputs ended (see :meth:`_check_inputs`)."""
        stream = msg.get("stream")
        if not isinstance(stream, str) or stream not in self.graph.streams or self._stopping:
            return
        self._inputs_ended.setdefault(stream, (proc.name, lsl_clock()))

    def _check_inputs(self, now: float) -> bool:
        """True when a stimulator lost its command input while its controller was still running.

        An end-of-stream on a command input is the end of the data only if
        the process that produces the stream ended it: it says so in its
        status (``ended_outputs``) within a few status intervals. If it
        goes on without having ended it (a forged or stray end-of-stream),
        the stimulator is cut off from its controller: the run stops with
        one error line and a non-zero exit code.
        """
        grace = 3 * self.rt.status_interval_s + 2.0
        for stream, (stim, t) in list(self._inputs_ended.items()):
            producer = self.procs[self.graph.stream_process(stream)]
            st = producer.current.final or producer.current.status
            if stream in (st.get("ended_outputs") or ()) or not producer.alive or producer.finished:
                del self._inputs_ended[stream]  # the real end (a producer that died is reported as such)
                continue
            if now - t > grace:
                del self._inputs_ended[stream]
                self._error(f"process '{stim}' lost its command input '{stream}' while its controller process "
                            f"'{producer.name}' was still running (an end-of-stream it did not send); stopping the run")
                self._aborted = True
                return True
        return False

    def _error(self, line: str) -> None:
        if line not in self.errors:
            self.errors.append(line)

    def _check_children(self, now: float) -> None:
        for proc in self.procs.values():
            cur = proc.current
            if cur.exit_code is None:
                if cur.popen is None and cur.registered and cur.remote_exit is None and cur.ready \
                        and now - cur.last_seen > self.remote_timeout:
                    cur.remote_exit = -1
                    self._error(f"process '{proc.name}' on {proc.host} stopped answering for {self.remote_timeout:.0f} s")
                elif cur.popen is not None and cur.started_run and cur.final is None and not cur.released \
                        and now - cur.last_seen > self.heartbeat_timeout and cur.poll() is None:
                    # lost heartbeat: a service sends its status every interval from its loop; one that is
                    # silent this long is hung (a node that never returns): a failure, handled as a crash
                    self._error(f"process '{proc.name}' (pid {cur.pid}) sent no status for "
                                f"{self.heartbeat_timeout:.0f} s (hung?); killing it")
                    cur.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        cur.popen.wait(timeout=5)
                rc = cur.poll()
                if rc is None:
                    continue
                cur.exit_code = rc
                if self.steer is not None:
                    self.steer.process_lost(proc)
                if rc == 0:
                    proc.finished = True
                    continue
                proc.failed = True
                if cur.popen is None:
                    how = "was lost" if rc < 0 else f"ended with an error (code {rc})"
                    self._error(f"process '{proc.name}' on {proc.host} {how}")
                else:
                    how = f"was killed by {_signame(-rc)}" if rc < 0 else f"exited with code {rc}"
                    self._error(f"process '{proc.name}' (pid {cur.pid}) {how}")
                if self._stopping or self.origin is None:
                    proc.gave_up = True
                elif cur.final is not None and cur.final.get("ok"):
                    # it had finished its work and reported; nothing left to restart for
                    proc.finished = True
                elif rc == EXIT_FATAL:
                    proc.gave_up = True
                    self._error(f"process '{proc.name}' is not restarted (its error, a damaged recording, would "
                                "happen again); stopping the run")
                elif proc.restart == "on-failure" and proc.restarts < proc.max_restarts and proc.launch == "local":
                    proc.restart_at = now + self.rt.restart_backoff_s * (proc.restarts + 1)
                    log.warning("restarting process '%s' in %.1f s (%d/%d)", proc.name, proc.restart_at - now,
                                proc.restarts + 1, proc.max_restarts)
                else:
                    proc.gave_up = True
                    why = ("it runs on another host" if proc.launch == "remote" else
                           "restart policy is 'never'" if proc.restart == "never" else f"it failed {proc.restarts + 1} times")
                    self._error(f"process '{proc.name}' is not restarted ({why}); stopping the run")
            if proc.restart_at is not None and now >= proc.restart_at and not self._stopping:
                proc.restart_at = None
                proc.restarts += 1
                self._spawn(proc)

    # -- main ---------------------------------------------------------------

    def _on_signal(self, signum, frame) -> None:
        # The first Ctrl-C drains; a second one skips to 'stop' (see _shutdown).
        # Never a kill from here: the stimulate service must get its 'stop'.
        self._interrupted += 1

    def stop(self) -> None:
        """Ask a running supervisor to stop, as Ctrl-C would (thread-safe)."""
        self._interrupted += 1

    def run(self) -> int:
        """Run the graph to its end; returns the exit code."""
        self.started_at = datetime.now(UTC)
        t_start = self._t_start = lsl_clock()
        self.origin = None
        self._stopping = False
        self._aborted = False
        self._by_ident: dict[bytes, tuple[_Proc, _Inc]] = {}
        self._ctl_keys = None
        self._registry_entry = None
        warning = self.graph.transport.security_warning()
        if warning and warning not in self.warnings:
            self.warnings.append(warning)
            log.warning("%s", warning)
        # Ctrl-C and SIGTERM start an orderly stop (only the main thread may install handlers;
        # a supervisor run from another thread is stopped with stop()).
        old = {}
        if threading.current_thread() is threading.main_thread():
            old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        parent = Path("/tmp") if os.path.isdir("/tmp") else Path(tempfile.gettempdir())
        _remove_stale_run_dirs(parent)
        self.run_dir = Path(tempfile.mkdtemp(prefix="rtn-", dir=parent))
        (self.run_dir / "supervisor.pid").write_text(str(os.getpid()))
        zctx: zmq.Context = zmq.Context.instance()
        self.ctl = zctx.socket(zmq.ROUTER)
        self.ctl.setsockopt(zmq.LINGER, 0)
        code = EXIT_OK
        qos = None
        if self.rt.cpu_dma_latency_us is not None:
            qos = CpuLatencyRequest(self.rt.cpu_dma_latency_us).__enter__()
            if qos.error:
                self.warnings.append(qos.error)
                log.warning("%s", qos.error)
        try:
            plan = self.graph.to_plan()
            plan["endpoints"] = self._endpoints(self.run_dir)
            # the browser pages view any stream: each is published even where no other process consumes it
            plan["publish_all"] = bool(self.graph.ui.enabled and self.graph.control.serves(self.rt.speed))
            tp = self.graph.transport
            if tp.scheme == "ipc":
                plan["control"] = f"ipc://{self.run_dir}/ctl"
            else:
                port = tp.base_port + 2 * len(self.procs) if tp.base_port else _free_port(tp.host)
                plan["control"] = f"tcp://{tp.host}:{port}"
            self._ctl_keys = tp.curve_keys()
            if self._ctl_keys is not None:
                curve_server(self.ctl, self._ctl_keys)
            self.ctl.bind(plan["control"])
            secure_ipc(plan["control"])
            self.control_endpoint = plan["control"]
            from .steering import Steering

            self.steer = Steering(self)
            self.steer.prepare()  # where the control API may listen, its tokens: refused before any process starts
            self._register()  # rtneuro stop --now finds the run from here on
            self.plan = plan
            self.plan_path = self.run_dir / "plan.json"
            self.plan_path.write_text(json.dumps(plan))
            for proc in self.procs.values():
                self._spawn(proc)
            # the control server starts while the services import and compile (its own imports take a
            # second: not on the way of the start), then the registry entry names it
            self.steer.start()
            self._register(again=True)
            if self._wait_ready():
                self.origin = lsl_clock() + 0.02
                for proc in self.procs.values():
                    self._send(proc, self._start_msg(proc))
                    proc.current.started_run = True
                self._main_loop()
                self.run_s = lsl_clock() - self.origin
            else:
                code = EXIT_FAILED
        finally:
            self._shutdown()
            if self.steer is not None:
                self.steer.close(code if not any(p.failed for p in self.procs.values()) and not self._aborted else EXIT_FAILED)
            self.ratelog.flush()
            if qos is not None:
                qos.__exit__(None, None, None)
            self._answer_estops(force=True)
            self.ctl.close(linger=0)
            if self._ctl_keys is not None:
                release_server(zctx, self._ctl_keys)
            if self._registry_entry is not None:
                self._registry_entry.unlink(missing_ok=True)
            shutil.rmtree(self.run_dir, ignore_errors=True)
            for s, h in old.items():
                signal.signal(s, h)
        if any(p.failed for p in self.procs.values()) or self._aborted:
            code = EXIT_FAILED
        self.wall_s = lsl_clock() - t_start
        self.report = self._make_report(code)
        if self.report_path is not None:
            self.report_path.parent.mkdir(parents=True, exist_ok=True)
            self.report_path.write_text(json.dumps(self.report, indent=2))
        self._print_summary()
        if self.steer is not None:
            self.steer.join()
        return code

    def _wait_ready(self) -> bool:
        deadline = lsl_clock() + self.rt.startup_timeout_s
        while True:
            self._poll(0.05)
            now = lsl_clock()
            for proc in self.procs.values():
                cur = proc.current
                rc = cur.poll()
                if rc is not None:
                    cur.exit_code = rc
                    proc.failed = True
                    self._error(f"process '{proc.name}' failed while starting (exit code {rc}); see its messages above")
                    return False
            if all(p.current.ready for p in self.procs.values()):
                return True
            if self._interrupted:
                return False
            if now > deadline:
                slow = [p.name for p in self.procs.values() if not p.current.ready]
                self._error(f"processes {slow} were not ready within startup_timeout_s={self.rt.startup_timeout_s:g} s")
                return False

    def _poll(self, timeout_s: float) -> None:
        steer = self.steer
        if steer is None:
            if self.ctl.poll(int(timeout_s * 1000)):
                self._on_control()
        else:
            poller = self._poller
            if poller is None:
                poller = self._poller = zmq.Poller()
                poller.register(self.ctl, zmq.POLLIN)
                poller.register(steer.hub.wake_fd, zmq.POLLIN)
            ready = dict(poller.poll(int(timeout_s * 1000)))
            if self.ctl in ready:
                self._on_control()
            if steer.hub.wake_fd in ready:
                steer.take_requests(lsl_clock())  # at once: a live change is on its way before anything else
        if self._estop_pending:
            self._answer_estops()

    _poller: Any = None

    def extend_deadline(self, seconds: float) -> None:
        """A pause: the run's --duration counts the time it ran, not the time it was paused."""
        if self._deadline is not None:
            self._deadline += seconds

    _deadline: float | None = None

    def _progress(self, proc: _Proc) -> int:
        st = proc.current.status if proc.current else {}
        return (sum(r.get("messages", 0) for r in (st.get("received") or {}).values())
                + sum(p.get("chunks", 0) for p in (st.get("produced") or {}).values()))

    def _check_stalls(self, now: float) -> bool:
        """After every source has ended, a process that stops making progress
        (an end-of-stream that will never come) must not hold the run forever."""
        sources_done = all(p.finished for p in self.procs.values() if p.service == "acquire")
        if not sources_done:
            return False
        for proc in self.procs.values():
            if proc.finished or not proc.alive:
                continue
            if proc.current.final is not None:
                continue  # done, waiting for its consumers to leave (see Service._await_consumers)
            value = self._progress(proc)
            last = self._last_progress.get(proc.name)
            if last is None or last[0] != value:
                self._last_progress[proc.name] = (value, now)
            elif now - last[1] > STALL_S:
                self._error(f"process '{proc.name}' made no progress for {STALL_S:.0f} s after the sources ended; "
                            "stopping the run (an end-of-stream was lost?)")
                self._aborted = True
                return True
        return False

    def _release_lingering(self, now: float) -> None:
        """Every process has ended its work: stop those still waiting for subscribers
        that are not part of the graph (they would otherwise wait for their flush time)."""
        done = [p for p in self.procs.values()
                if p.finished or (p.current.final is not None and p.current.final.get("ok"))]
        if len(done) < len(self.procs):
            self._all_done_at = None
            return
        if self._all_done_at is None:
            self._all_done_at = now
        elif now - self._all_done_at > LINGER_GRACE_S:
            for p in done:
                if not p.finished and p.alive and not p.current.released:
                    p.current.released = True
                    self._send(p, {"op": "stop"})

    def _main_loop(self) -> None:
        rt = self.rt
        # the run lasts duration_s from its origin (the time every process was told to start), pauses excluded
        self._deadline = None if rt.duration_s is None or self.origin is None else self.origin + rt.duration_s
        next_status = lsl_clock() + rt.status_interval_s
        self._last_progress: dict[str, tuple[int, float]] = {}
        self._all_done_at = None
        while True:
            self._poll(0.05)
            now = lsl_clock()
            self._check_children(now)
            if self._check_stalls(now) or self._check_inputs(now):
                break
            if self._interrupted:
                break
            if self._deadline is not None and now >= self._deadline:
                break
            if any(p.gave_up for p in self.procs.values()):
                break
            if all(p.finished for p in self.procs.values()):
                return
            self._release_lingering(now)
            status_due = now >= next_status
            if self.steer is not None:
                self.steer.tick(now, status_due)
            if status_due:
                for proc in self.procs.values():  # services stop by themselves if these stop coming
                    self._send(proc, {"op": "ping"})
                if not self.quiet:
                    self._draw_status(now)
                next_status = now + rt.status_interval_s

    def _shutdown(self) -> None:
        """Drain, then stop, then terminate, then kill: within 2 s of Ctrl-C.

        ``drain``: sources stop and end-of-stream flows down the graph, so
        nothing in flight is lost. ``stop``: every service ends now, putting
        its stimulators in their safe state. A second Ctrl-C cuts the drain
        short; only a service that ignores ``stop`` is terminated, then killed.
        """
        self._stopping = True
        t0 = lsl_clock()
        interrupted = bool(self._interrupted)
        drain_s = min(self.rt.stop_timeout_s, 0.9) if interrupted else self.rt.stop_timeout_s
        phases = [("drain", drain_s), ("stop", 0.4 if interrupted else 1.0), ("term", 0.3), ("kill", 1.0)]
        for phase, budget in phases:
            live = [p for p in self.procs.values() if p.alive]
            if not live:
                break
            for proc in live:
                if phase in ("drain", "stop"):
                    self._send(proc, {"op": phase})
                elif phase == "term":
                    proc.failed = True  # not a clean end, whatever its exit code
                    self._error(f"process '{proc.name}' did not stop when asked; terminating it")
                    proc.current.terminate()
                else:
                    proc.failed = True
                    self._error(f"process '{proc.name}' ignored SIGTERM; killing it")
                    proc.current.kill()
            signals = self._interrupted
            end = lsl_clock() + budget
            while lsl_clock() < end and any(p.alive for p in self.procs.values()):
                if phase == "drain" and self._interrupted > signals:
                    break  # Ctrl-C again: stop now
                self._poll(0.02)
                for proc in self.procs.values():
                    if not proc.incs:
                        continue  # never started (the run failed before it)
                    cur = proc.current
                    if cur.exit_code is None:
                        rc = cur.poll()
                        if rc is not None:
                            cur.exit_code = rc
                            if rc != 0 and phase in ("drain", "stop"):
                                proc.failed = True
                                how = f"was killed by {_signame(-rc)}" if rc < 0 else f"exited with code {rc}"
                                self._error(f"process '{proc.name}' {how} while stopping")
        # collect the last final messages still queued: a process that exited cleanly sent its final report just
        # before, and libzmq's I/O thread may hand it over a moment after the exit was seen (bounded wait)
        end = lsl_clock() + 0.5
        self._poll(0.0)
        while lsl_clock() < end and any(p.incs and p.current.final is None and p.current.exit_code == 0
                                        for p in self.procs.values()):
            self._poll(0.02)
        self.shutdown_s = lsl_clock() - t0
        for proc in self.procs.values():
            if not proc.incs:
                continue  # never started (the run failed before it)
            cur = proc.current
            if cur.exit_code is None:
                if cur.popen is None:  # a remote service that did not say goodbye
                    cur.exit_code = -1
                    if cur.registered:
                        self._error(f"process '{proc.name}' on {proc.host} did not confirm that it stopped")
                    continue
                try:
                    cur.exit_code = cur.popen.wait(timeout=5)
                except subprocess.TimeoutExpired:  # bounded: not even SIGKILL ended it (a process stuck in the kernel)
                    cur.exit_code = -1
                    proc.failed = True
                    self._error(f"process '{proc.name}' (pid {cur.pid}) did not end even when killed")

    # -- status and report --------------------------------------------------

    def _sum(self, key: str) -> dict:
        """Sum a per-stream counter map over every incarnation of every process."""
        out: dict[str, dict] = {}
        for proc in self.procs.values():
            for inc in proc.incs:
                src = (inc.final or inc.status).get(key) or {}
                for stream, counts in src.items():
                    dst = out.setdefault(stream, {})
                    for k, v in counts.items():
                        if isinstance(v, (int, float)) and not isinstance(v, bool):
                            dst[k] = dst.get(k, 0) + v
        return out

    def _sum_flat(self, key: str) -> dict:
        out: dict[str, int] = {}
        for proc in self.procs.values():
            for inc in proc.incs:
                for k, v in ((inc.final or inc.status).get(key) or {}).items():
                    out[k] = out.get(k, 0) + v
        return out

    def _stream_rows(self, latency: bool = True) -> dict:
        """Per stream: counts from every process; with ``latency``, the whole run's latency summary (the report's)."""
        produced = self._sum("produced")
        received = self._sum("received")
        rows = {}
        for name, meta in self.graph.streams.items():
            p = produced.get(name, {})
            r = received.get(name, {})
            rows[name] = {
                "kind": meta.kind,
                "producer": self.graph.producer[name],
                "process": self.graph.stream_process(name),
                "sfreq": meta.sfreq,
                "n_channels": meta.n_channels,
                "chunks": p.get("chunks", 0),
                "samples": p.get("samples", 0),
                "gaps": r.get("gaps", 0),
                "lost": r.get("lost", 0),
                "dropped": r.get("dropped", 0),
                "invalid": r.get("invalid", 0),
                "forged": r.get("forged", 0),
                "discontinuities": r.get("discontinuities", 0),
                "nonfinite": p.get("nonfinite", 0) + r.get("nonfinite", 0),
                "received": r.get("messages", 0),
                "publisher_restarts": r.get("restarts", 0),
            }
            if latency:
                rows[name]["latency_us"] = self.ages[name].summary()
            if meta.kind == "cmd":
                rows[name]["commands"] = p.get("sent", 0)
                rows[name]["heartbeats"] = p.get("heartbeats", 0)
        return rows

    def _draw_status(self, now: float) -> None:
        rows = self._stream_rows(latency=False)
        rates = self._rates(now)
        lines = [f"rtneuro {self.graph.name}  t={now - (self.origin or now):6.1f} s  speed {self.rt.speed}  "
                 f"restarts {sum(p.restarts for p in self.procs.values())}  errors {len(self.errors)}"]
        virtual = self.rt.speed == "max"  # the ages are then queueing on the virtual clock, not latency
        if virtual:
            lines[0] += "  (virtual clock: no latency is measured)"
        for name, r in rows.items():
            rate = rates.get(name, 0.0)
            recent = self._recent_ages[name]
            lat = (f"p50 {np.median(recent) / 1e3:6.2f} ms p99 {np.percentile(recent, 99) / 1e3:6.2f} ms"
                   if recent and not virtual else " " * 30)
            self._recent_ages[name] = []
            lines.append(f"  {r['kind']}.{name:<18} {rate:9.1f}/s  {lat}  gaps {r['gaps']}  invalid {r['invalid']}")
        for proc in self.procs.values():
            for nid, line in (proc.current.status.get("node_status") or {}).items():
                lines.append(f"  {nid}: {line}")
        if self._recent_e2e and virtual:
            self._recent_e2e = []
        if self._recent_e2e:
            e = self._recent_e2e
            lines.append(f"  end-to-end to stimulator: p50 {np.median(e) / 1e3:.2f} ms  p99 {np.percentile(e, 99) / 1e3:.2f} ms  (n={len(e)})")
            self._recent_e2e = []
        text = "\n".join(lines)
        if self.live:
            if self._lines_drawn:
                self.out.write(f"\x1b[{self._lines_drawn}F\x1b[J")
            self._lines_drawn = len(lines)
        self.out.write(text + "\n")
        self.out.flush()

    def _data_done_s(self) -> float | None:
        """From the start to the last service's final report: the time the data took, without process exits."""
        finals = [i.final["t"] for p in self.procs.values() for i in p.incs if i.final and "t" in i.final]
        if self.origin is None or not finals or not all(p.current.final for p in self.procs.values()):
            return None
        return round(max(finals) - self.origin, 3)

    def _make_report(self, code: int) -> dict:
        from .. import __version__

        streams = self._stream_rows()
        decisions = self._sum_flat("decisions")
        sent = sum(r.get("commands", 0) for r in streams.values())
        heartbeats = sum(r.get("heartbeats", 0) for r in streams.values())
        cmd_transport = self._sum_flat("commands")
        # Each incarnation's last word about its nodes (its final report, else the report in its last
        # status: a killed stimulate service's watchdog timings and gate counts), merged across restarts.
        nodes: dict = {}
        for proc in self.procs.values():
            for inc in proc.incs:
                for nid, rep in ((inc.final or inc.status).get("nodes") or {}).items():
                    nodes[nid] = _merge_reports(nodes[nid], rep) if nid in nodes else rep
        e2e = self.e2e.summary()
        e2e["measured_at"] = "stimulator (gate and driver done)"
        if self.rt.speed == "max":
            e2e["note"] = ("virtual clock (speed max): data time versus the time it was handled, queueing of a run "
                           "as fast as possible, not a latency; see compute_us")
        return {
            "rtneuro": __version__,
            "config": str(self.graph.path),
            "name": self.graph.name,
            "started": self.started_at.isoformat(timespec="seconds"),
            # while running (GET /api/report): so far
            "wall_s": round(getattr(self, "wall_s", lsl_clock() - self._t_start), 3),
            "run_s": round(getattr(self, "run_s", lsl_clock() - self.origin if self.origin is not None else 0.0), 3),
            "data_done_s": self._data_done_s(),
            "shutdown_s": round(getattr(self, "shutdown_s", 0.0), 3),
            "speed": self.rt.speed,
            "exit_code": code,
            "interrupted": bool(self._interrupted),
            "machine": machine_info(),
            "streams": streams,
            "latency_us": e2e,
            # the participant display: decision-to-paint and acquisition-to-paint latency (ms), beside the stimulator's
            "display": self.steer.ui.tap.report() if self.steer is not None and self.steer.ui is not None else None,
            "hops_us": {hop: st.summary() for hop, st in self.hops.items()},
            "compute_us": {nid: st.summary() for nid, st in self.compute.items()},
            "commands": {
                "sent": sent,
                "accepted": decisions.get("accepted", 0),
                "clipped": decisions.get("clipped", 0),
                "refused": decisions.get("refused", 0),
                "expired": decisions.get("expired", 0),
                "heartbeats": heartbeats,
                "heartbeats_accepted": decisions.get("heartbeats", 0),
                "heartbeats_refused": decisions.get("heartbeats_refused", 0),
                "watchdog_trips": decisions.get("watchdog", 0),
                "acked": cmd_transport.get("acked", 0),
                "resent": cmd_transport.get("resent", 0),
                "unacked": cmd_transport.get("unacked", 0),
            },
            "restarts": sum(p.restarts for p in self.procs.values()),
            "processes": {
                p.name: {
                    "service": p.service,
                    "restarts": p.restarts,
                    "exit_codes": [i.exit_code for i in p.incs],
                    "pids": [i.pid for i in p.incs],
                    "launch": p.launch,
                    "failed": p.failed,
                }
                for p in self.procs.values()
            },
            "invalid_messages": self._sum_flat("rejections"),
            # CURVE clients refused (wrong or unknown keys, no CURVE), by reason: services' and the control socket's
            "curve_refused": _summed(self._sum_flat("security"),
                                     {k: v for k, v in security_stats(zmq.Context.instance()).items() if v}),
            "latency_refused": self._sum_flat("latency_refused"),
            # rate-limited logs by reason: the supervisor's ("supervisor") and every service's, summed
            "log_totals": {"supervisor": dict(self.ratelog.totals), "services": self._sum_flat("log_totals")},
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "estop": self._estop_report(),
            "control": self.steer.report() if self.steer is not None else {},
            "nodes": nodes,
        }

    def _print_summary(self) -> None:
        r = self.report
        w = self.out
        lat = r["latency_us"]
        status = "finished" if r["exit_code"] == 0 else "FAILED"
        w.write(f"\nrtneuro run: {r['name']} {status} in {r['wall_s']:.1f} s (speed {r['speed']}), exit code {r['exit_code']}\n")
        for name, s in r["streams"].items():
            w.write(f"  {s['kind']}.{name:<18} {s['samples']:>9} samples {s['chunks']:>7} chunks  gaps {s['gaps']}"
                    f"  invalid {s['invalid']}  non-finite {s['nonfinite']}\n")
        if r["speed"] == "max":
            w.write(f"  {_compute_line(r['compute_us'])}\n")
        elif lat["n"]:
            w.write(f"  latency, newest sample of the deciding window -> stimulator: p50 {lat['p50'] / 1e3:.3f} ms"
                    f"  p99 {lat['p99'] / 1e3:.3f} ms  max {lat['max'] / 1e3:.3f} ms  (n={lat['n']})\n")
        disp = r.get("display") or {}
        if (disp.get("decision_to_paint_ms") or {}).get("n"):
            d, a = disp["decision_to_paint_ms"], disp["acquisition_to_paint_ms"]
            w.write(f"  participant display: decision -> paint p50 {d['p50']:.1f} ms  p99 {d['p99']:.1f} ms;"
                    f" acquisition -> paint p50 {a['p50']:.1f} ms  p99 {a['p99']:.1f} ms  (n={d['n']})\n")
        c = r["commands"]
        if c["sent"] or c["heartbeats"]:
            w.write(f"  commands: sent {c['sent']}  accepted {c['accepted']}  clipped {c['clipped']}  refused {c['refused']}"
                    f"  (heartbeats {c['heartbeats']}, watchdog trips {c['watchdog_trips']})\n")
        if r["restarts"]:
            w.write(f"  restarts: {r['restarts']}\n")
        for ev in r["estop"]["events"]:
            lat = f", {ev['send_to_confirm_ms']:.2f} ms from request to confirmation" if "send_to_confirm_ms" in ev else ""
            w.write(f"  {ev['op']}: {ev['confirmed']} of {len(ev['expected'])} stimulators confirmed{lat}\n")
        if r["estop"]["latched"]:
            w.write("  emergency stop still latched at the end of the run\n")
        for nid, rep in r["nodes"].items():
            if isinstance(rep, dict) and (line := _phase_line(rep)):
                w.write(f"  {nid}: {line}\n")
            for line in rep.get("summary", []) if isinstance(rep, dict) else []:
                w.write(f"  {nid}: {line}\n")
        for line in r["warnings"]:
            w.write(f"  warning: {line}\n")
        for line in r["errors"]:
            w.write(f"  error: {line}\n")
        if self.report_path is not None:
            w.write(f"  report: {self.report_path}\n")
        w.flush()


def _compute_line(compute: dict) -> str:
    """The summary's line for a run on the virtual clock: each node's compute time per chunk, never a latency."""
    rows = [(nid, st) for nid, st in compute.items() if st.get("n")]
    if not rows:
        return "virtual clock (--speed max): no latency is measured; no node computed"
    rows.sort(key=lambda x: -(x[1]["p50"] or 0))
    shown = "; ".join(f"{nid} {st['p50']:.0f} / {st['p99']:.0f}" for nid, st in rows[:8])
    more = f"; {len(rows) - 8} more in the report (compute_us)" if len(rows) > 8 else ""
    return (f"virtual clock (--speed max): no latency is measured; compute per chunk, p50 / p99 us: {shown}{more}")


def _phase_line(rep: dict) -> str | None:
    """A phase node's scores (its report's scored, mean_error_deg, sd_deg, plv) as one line, or None."""
    if not {"scored", "mean_error_deg", "sd_deg", "plv"} <= rep.keys():
        return None
    n = rep["scored"]
    head = f"phase scores: {rep.get('triggers', n)} triggers, {n} scored against the true phase"
    if not n:
        return head + " (none could be scored)"
    return (f"{head}: circular mean error {rep['mean_error_deg']:+.1f} deg, circular SD {rep['sd_deg']:.1f} deg, "
            f"PLV {rep['plv']:.3f}")


def _remove_stale_run_dirs(parent: Path) -> None:
    """Remove the run folders (ipc socket files) of supervisors that were killed.

    A supervisor removes its folder when it ends; one killed with SIGKILL
    cannot, so the next run removes every folder whose ``supervisor.pid``
    names a process that no longer exists.
    """
    for d in parent.glob("rtn-*"):
        try:
            pid = int((d / "supervisor.pid").read_text())
        except (OSError, ValueError):
            continue  # not a run folder, or one being created
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


def _merge_reports(a: Any, b: Any) -> Any:
    """Merge the node report ``b`` of a later incarnation into ``a``.

    Lists are concatenated (watchdog timings), counters (numbers) summed,
    mappings merged key by key; settings (``REPORT_SETTINGS``), flags, text
    and anything whose type differs take the later value.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = v if k not in a or k in REPORT_SETTINGS else _merge_reports(a[k], v)
        return out
    if isinstance(a, list) and isinstance(b, list):
        return [*a, *b]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return a + b
    return b


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _free_port(host: str) -> int:
    """A free tcp port on ``host`` (for another host's address: one free here, a good guess)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, 0))
        except OSError:
            s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def _summed(a: dict, b: dict) -> dict:
    """Two count maps added key by key."""
    return {k: a.get(k, 0) + b.get(k, 0) for k in sorted({*a, *b})}
