"""The supervisor's steering: live changes and operator actions, their acknowledgements and their record.

A :class:`Steering` belongs to one :class:`~rtneuro.runtime.supervisor.Supervisor`
and runs in its thread. It starts the control server (its own thread), takes
the requests the server queues on the :class:`~rtneuro.control.hub.Hub`,
checks them (:mod:`rtneuro.control.live`), sends them to the services, and
answers when the services acknowledge: a parameter change with the stream and
sample index at which it took effect. Every accepted change or action becomes
a *control record*: kept for ``GET /api/changes``, pushed to WebSocket
clients, written by the recorder into the session's ``rtneuro.control``
stream, and applied again at the same sample by ``rtneuro replay --check``.

State that outlives a process is re-sent to it when it restarts (its nodes'
changed parameters, a disarm, a pause): a restart never loosens what the
operator set.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..control.hub import Hub, Request
from ..control.live import (
    MAX_TEXT,
    ControlError,
    jsonable,
    live_schema,
    parse_changes,
    validate_changes,
)
from ..nodes import node_class
from .clock import lsl_clock

if TYPE_CHECKING:  # pragma: no cover
    from .supervisor import Supervisor, _Proc

__all__ = ["Steering", "CONTROL_STREAM"]

log = logging.getLogger("rtneuro.control")

#: The session stream holding the control records.
CONTROL_STREAM = "rtneuro.control"
#: Control records kept in memory (beyond: only counted; the session keeps every one).
MAX_RECORDS = 10_000
#: Recent latency samples kept per stream for the status (supervisor thread).
RECENT = 2000
#: At the end of a run, how long the clients are given to take their "end" before the server stops (seconds).
END_DRAIN_S = 2.0
#: Bin edges (ms) of the status's latency histogram (the last bin is open).
LATENCY_EDGES_MS = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0, 200.0, float("inf"))


def _text(args: dict, key: str, default: str | None, limit: int = MAX_TEXT) -> str | None:
    v = args.get(key, default)
    if v is None:
        return default
    if not isinstance(v, str):
        raise ControlError(f'"{key}" must be a string', 400)
    v = v.strip()
    if len(v) > limit:
        raise ControlError(f'"{key}" is {len(v)} characters long; at most {limit}', 422)
    if any(ord(c) < 32 and c not in "\t" for c in v):
        raise ControlError(f'"{key}" must be one line of printable text', 422)
    return v


class Steering:
    """Live changes and operator actions of one run (the supervisor's thread)."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        graph = sup.graph
        self.graph = graph
        self.params = graph.control
        #: this run serves the API (control.enabled; auto: unless the run is as fast as possible)
        self.enabled = graph.control.serves(graph.runtime.speed)
        self.hub = Hub(graph.name)
        self.server: Any = None
        self.url: str | None = None
        #: the browser pages (ui.enabled): the tap and what the pages' routes need
        self.ui: Any = None
        self._auth: Any = None
        self._report: tuple[float, dict] | None = None
        self._cert: str | None = None
        self._key: str | None = None
        self.token = "rtn_" + secrets.token_urlsafe(32)
        #: each node's raw parameters as last requested (replaced, never mutated: snapshots read them)
        self.raw: dict[str, dict] = {nid: dict(spec.raw_params or {}) for nid, spec in graph.nodes.items()}
        self.changed: set[str] = set()
        self.records: list[dict] = []
        self.records_dropped = 0
        self._seq = 0
        self._rid = 0
        #: request id -> what is awaited: {"req", "nodes" (waiting), "applied", "record", "errors", "deadline", "answered"}
        self._waiting: dict[int, dict] = {}
        self.disarmed: str | None = None
        self.paused_at: float | None = None
        self.paused_total = 0.0
        #: the pause disarmed stimulation (resume arms it again)
        self.pause_disarmed = False
        self.segment: dict | None = None
        self._segments = 0
        self._watching = False
        self.recent: dict[str, list[float]] = {}
        self.recent_e2e: list[float] = []
        self.unapplied: list[dict] = []
        self.stimulators = [nid for nid, s in graph.nodes.items() if s.category == "stimulator"]
        self.recorders = [nid for nid, s in graph.nodes.items() if s.type == "recorder"]
        self.realtime_sources = [nid for nid, s in graph.nodes.items()
                                 if s.category == "source" and getattr(node_class(s.type), "realtime_only", False)]

    # -- life cycle ---------------------------------------------------------

    def prepare(self) -> None:
        """Check where the server may listen and load its tokens (ConfigError before any process starts)."""
        self.hub.set_graph(self._graph_snapshot())
        self.hub.set_status(self.status_snapshot(lsl_clock()))
        if not self.enabled:
            return
        from ..control.auth import TokenAuth, check_exposure, default_tokens_dir

        p = self.params
        self._cert = str(self.graph.base_dir / p.tls_cert) if p.tls_cert else None
        self._key = str(self.graph.base_dir / p.tls_key) if p.tls_key else None
        tokens = self.graph.base_dir / p.tokens if p.tokens else default_tokens_dir()
        check_exposure(p.host, self._cert, self._key, tokens)
        self._auth = TokenAuth(tokens if os.path.isdir(tokens) else None, extra={"local": (self.token, "steer")})

    def start(self) -> None:
        """Start the control server (raises RtneuroError when it cannot listen)."""
        if not self.enabled:
            return
        from ..control.server import ControlServer

        p = self.params
        # the server's threads and the supervisor's loop share this process's GIL: hand it over every 0.5 ms
        # (not 5 ms) so that a request reaches the supervisor, and its answer the client, without waiting a slice
        sys.setswitchinterval(0.0005)
        if self.graph.ui.enabled:
            self.ui = self._make_ui()
        self.server = ControlServer(self.hub, self._auth, p.host, p.port, ssl_certfile=self._cert, ssl_keyfile=self._key,
                                    ui=self.ui)
        try:
            self.url = self.server.start()
        except Exception:
            if self.ui is not None:
                self.ui.tap.stop()
            raise
        log.info("control API at %s", self.url)  # the UI's tap starts in the server's loop with the first page

    def _make_ui(self) -> Any:
        """The tap over the graph's streams and the ``ui:`` settings as the pages see them."""
        from ..control.scalp import scalp_positions
        from ..control.tap import Tap
        from ..control.ui_routes import UiState

        g = self.graph
        u = g.ui
        part = u.participant_params()
        config: dict[str, Any] = {"history_s": u.history_s, "frame_rate": u.frame_rate, "participant": None,
                                  "traces": u.traces or [n for n, m in g.streams.items() if m.kind == "sig"][:1]}
        if part is not None:
            config["participant"] = part.resolve(g.streams[part.stream])
        eps = (self.sup.plan or {}).get("endpoints", {})
        endpoints = {name: eps[g.stream_process(name)]["pub"] for name, m in g.streams.items()
                     if g.stream_process(name) in eps and m.dtype != "command"}  # commands go on command sockets
        tap = Tap(g.streams, endpoints, g.transport, u.history_s, feedback=part.stream if part else None)
        return UiState(tap, config, u.frame_rate, positions=lambda: scalp_positions(g.streams))

    def page_urls(self) -> dict[str, str]:
        """The pages' addresses with this run's token in the fragment (never sent to the server)."""
        if self.ui is None or self.url is None:
            return {}
        return {"dashboard": f"{self.url}/#token={self.token}", "participant": f"{self.url}/participant#token={self.token}"}

    def registry(self) -> dict:
        """What the run's registry entry says about the API (owner-only file)."""
        if self.url is None:
            return {}
        cafile = str(self.graph.base_dir / self.params.tls_cert) if self.params.tls_cert else None
        return {"api": self.url, "api_token": self.token, "api_cafile": cafile}

    def close(self, code: int | None) -> None:
        """The run is over: answer what waits, tell the clients, ask the server to stop (:meth:`join` waits for it)."""
        for w in list(self._waiting.values()):
            for nid in w["nodes"]:
                self.unapplied.append({"id": w["req_id"], "op": w["req"].op, "node": nid})
            self._answer(w, force=True)
        self._waiting.clear()
        self.hub.close(code)
        if self.ui is not None:
            self.ui.close()
            self._forward_paints()
        if self.server is not None:
            # every client gets its "end" (and the pages their close 1000) before the server stops (bounded)
            deadline = time.monotonic() + END_DRAIN_S
            while (self.hub.subscribers or (self.ui is not None and self.ui.clients)) and time.monotonic() < deadline:
                time.sleep(0.01)
            self.server.request_stop()

    def join(self) -> None:
        """Let the server's thread end and release what it holds, without making the caller wait for it."""
        server, hub = self.server, self.hub

        ui = self.ui

        def stop() -> None:
            if ui is not None:
                ui.tap.stop()
            if server is not None:
                try:
                    server.stop()
                except Exception:  # the run is over: a server that did not stop cleanly is only logged
                    log.warning("control server did not stop cleanly", exc_info=True)
            hub.release()

        threading.Thread(target=stop, name="rtneuro-control-stop", daemon=True).start()

    # -- snapshots ----------------------------------------------------------

    def _graph_snapshot(self) -> dict:
        g = self.graph
        sup = self.sup
        nodes = {}
        for nid, spec in g.nodes.items():
            cls = node_class(spec.type)
            live = {}
            if getattr(cls, "live", ()):
                try:
                    from ..nodes import build_params

                    live = live_schema(cls, build_params(cls.Params, self.raw[nid], f"node '{nid}' params"))
                except Exception:  # a snapshot never fails the run
                    live = {}
            nodes[nid] = {"type": spec.type, "category": spec.category, "process": spec.process,
                          "inputs": list(spec.inputs), "outputs": [m.name for m in spec.outputs.values()], "live": live}
        procs = {}
        for name, p in sup.procs.items():
            cur = p.incs[-1] if p.incs else None
            procs[name] = {"service": p.service, "nodes": list(g.processes[name].nodes), "pid": cur.pid if cur else None,
                           "alive": p.alive, "restarts": p.restarts}
        streams = {name: {"kind": m.kind, "producer": g.producer[name], "sfreq": m.sfreq, "n_channels": m.n_channels,
                          "ch_names": list(m.ch_names), "units": list(m.units)} for name, m in g.streams.items()}
        return {"name": g.name, "config": str(g.path), "speed": g.runtime.speed, "processes": procs, "nodes": nodes,
                "streams": streams}

    def _state(self) -> str:
        sup = self.sup
        if getattr(sup, "_stopping", False):
            return "stopping"
        return "running" if sup.origin is not None else "starting"

    def stream_now(self, now: float) -> float | None:
        """The run's stream time now (None on the virtual clock or before the start)."""
        sup = self.sup
        if sup.origin is None or sup.rt.speed == "max":
            return None
        if self.realtime_sources:
            return now  # LSL inlets: stream time is the LSL clock
        speed = 1.0 if sup.rt.speed == "realtime" else float(sup.rt.speed)
        paused = self.paused_total + (now - self.paused_at if self.paused_at is not None else 0.0)
        origin_stream = 0.0 if sup.rt.time_origin == "zero" else sup.origin
        return origin_stream + (now - sup.origin - paused) * speed

    def status_snapshot(self, now: float) -> dict:
        sup = self.sup
        rows = sup._stream_rows(latency=False)  # the status has its recent latencies, not the run's
        rates = sup._rates(now)
        virtual = sup.rt.speed == "max"
        streams = {}
        for name, r in rows.items():
            rec = self.recent.get(name) or []
            lat = None
            if rec and not virtual:
                lat = {"p50": round(float(np.median(rec)) / 1e3, 3), "p99": round(float(np.percentile(rec, 99)) / 1e3, 3)}
            streams[name] = {"kind": r["kind"], "rate_hz": round(rates.get(name, 0.0), 2), "samples": r["samples"],
                             "gaps": r["gaps"], "invalid": r["invalid"], "latency_ms": lat}
        e = self.recent_e2e
        e2e = ({"p50": round(float(np.median(e)) / 1e3, 3), "p99": round(float(np.percentile(e, 99)) / 1e3, 3), "n": len(e)}
               if e and not virtual else None)
        hist = None
        if e and not virtual:
            counts, _ = np.histogram(np.asarray(e) / 1e3, bins=LATENCY_EDGES_MS)
            hist = {"edges_ms": list(LATENCY_EDGES_MS[:-1]) + [None], "counts": counts.tolist()}
        self.recent = {}
        self.recent_e2e = []
        stims = {}
        for p in sup.procs.values():
            if not p.incs:
                continue
            for nid, line in (p.current.status.get("node_status") or {}).items():
                if nid in self.stimulators:
                    stims[nid] = line or "ok"
        for nid in self.stimulators:
            stims.setdefault(nid, "ok")
        rec_path = next((str((sup.graph.nodes[nid].raw_params or {}).get("path")) for nid in self.recorders), None)
        t_run = round(now - sup.origin, 3) if sup.origin is not None else None
        return {"type": "status", "name": self.graph.name, "state": self._state(), "t_run_s": t_run, "t_stream": self.stream_now(now),
                "speed": sup.rt.speed, "streams": streams, "latency_ms": e2e, "latency_hist": hist,
                "stimulation": {"armed": self.disarmed is None, "disarm_reason": self.disarmed,
                                "estop": sup._estop_latched is not None, "stimulators": stims},
                "paused": self.paused_at is not None,
                "recording": {"active": self.segment is not None, "segment": (self.segment or {}).get("label"), "path": rec_path},
                "changes": len(self.records) + self.records_dropped, "errors": len(sup.errors), "warnings": len(sup.warnings),
                "restarts": sum(p.restarts for p in sup.procs.values())}

    def absorb_latency(self, msg: dict) -> None:
        """Recent latency samples from a status message (for the API's status)."""
        for stream, vals in (msg.get("ages_us") or {}).items():
            lst = self.recent.setdefault(stream, [])
            if len(lst) < RECENT:
                lst.extend(vals[: RECENT - len(lst)])
        e = msg.get("e2e_us") or []
        if len(self.recent_e2e) < RECENT:
            self.recent_e2e.extend(e[: RECENT - len(self.recent_e2e)])

    def tick(self, now: float, status_due: bool) -> None:
        """Every loop turn of the supervisor: requests, timeouts, watchers; the status every interval."""
        self.take_requests(now)
        for w in list(self._waiting.values()):
            if not w["answered"] and now >= w["deadline"]:
                self._answer(w)
        watching = self.hub.subscribers > 0
        if watching != self._watching:
            self._watching = watching
            for name in {self.graph.nodes[n].process for n in self.stimulators}:
                self.sup._send(self.sup.procs[name], {"op": "watch", "on": watching})
        if self.ui is not None:
            self._forward_paints()
        if status_due:
            snap = self.status_snapshot(now)
            self.hub.set_status(snap)
            self.hub.set_graph(self._graph_snapshot())
            if watching:
                self.hub.publish(snap)

    def _forward_paints(self) -> None:
        """The participant display's paints, to the recorders (the session's ``rtneuro.display`` stream)."""
        rows = self.ui.tap.take_paint_rows()
        if not rows:
            return
        for nid in self.recorders:
            self.sup._send(self.sup.procs[self.graph.nodes[nid].process], {"op": "display", "rows": rows})

    def take_requests(self, now: float) -> None:
        """Handle the requests the server queued (the supervisor polls the hub's wake-up pipe)."""
        for req in self.hub.take():
            self._handle(req, now)

    def start_extra(self, proc: _Proc, restart: bool) -> dict:
        """What a process's start message carries beyond the plan: the live state it must resume with."""
        extra: dict[str, Any] = {}
        mine = [n for n in self.changed if self.graph.nodes[n].process == proc.name]
        if mine:
            extra["params"] = {n: self.raw[n] for n in mine}
        if self.disarmed is not None and any(self.graph.nodes[n].process == proc.name for n in self.stimulators):
            extra["disarmed"] = self.disarmed
        if self.paused_at is not None:
            extra["paused"] = True
        return extra

    # -- requests -----------------------------------------------------------

    def _handle(self, req: Request, now: float) -> None:
        try:
            if req.op == "report":
                # at most one report a second, however often it is asked for: the supervisor's loop stays free
                if self._report is None or now - self._report[0] > 1.0:
                    self._report = (now, self.sup._make_report(0))
                req.future.set_result(self._report[1])
                return
            if self.sup.origin is None or getattr(self.sup, "_stopping", False):
                raise ControlError("the run is not running (starting or stopping); retry once it runs", 503)
            getattr(self, f"_op_{req.op}")(req, now)
        except ControlError as exc:
            if not req.future.done():
                req.future.set_exception(exc)
        except Exception as exc:  # a bug must not stop the run: the client hears it
            log.exception("control request %s failed", req.op)
            if not req.future.done():
                req.future.set_exception(ControlError(f"internal error: {type(exc).__name__}: {exc}", 500))

    def _next_id(self) -> int:
        self._rid += 1
        return self._rid

    def _wait_for(self, req: Request, rid: int, nodes: set[str], record: dict, now: float, kind: str) -> None:
        self._waiting[rid] = {"req": req, "req_id": rid, "nodes": set(nodes), "applied": {}, "errors": {}, "record": record,
                              "deadline": now + req.wait_s, "answered": False, "kind": kind}
        if not nodes:
            self._answer(self._waiting[rid])

    def _op_set(self, req: Request, now: float) -> None:
        changes = parse_changes(req.args.get("changes"))
        checked = validate_changes(self.graph, self.raw, changes)  # every change passes, or nothing is sent
        rid = self._next_id()
        flat = {f"{c.node}.{k}": v for c in checked for k, v in c.changed.items()}
        for c in checked:
            self.raw = {**self.raw, c.node: c.raw}
            self.changed.add(c.node)
            proc = self.sup.procs[self.graph.nodes[c.node].process]
            self.sup._send(proc, {"op": "set", "id": rid, "node": c.node, "raw": c.raw})
            log.warning("live change by '%s': %s", req.who, ", ".join(f"{c.node}.{k}={v!r}" for k, v in c.changed.items()))
        record = {"op": "set", "who": req.who, "t_lsl": now, "t_stream": self.stream_now(now), "args": {"changes": flat},
                  "values": {c.node: c.changed for c in checked}}
        self._wait_for(req, rid, {c.node for c in checked}, record, now, "set")

    def _stim_action(self, req: Request, now: float, action: str, reason: str, op: str | None = None,
                     args: dict | None = None) -> None:
        """Send ``action`` to every stimulator; answer and record once they applied it (record ``op``, default ``action``)."""
        if not self.stimulators and op is None:
            raise ControlError(f"graph '{self.graph.name}' has no stimulator; nothing to {action}", 409)
        rid = self._next_id()
        for nid in self.stimulators:
            self.sup._send(self.sup.procs[self.graph.nodes[nid].process],
                           {"op": "action", "id": rid, "node": nid, "action": action, "reason": reason})
        record = {"op": op or action, "who": req.who, "t_lsl": now, "t_stream": self.stream_now(now),
                  "args": args if args is not None else {"reason": reason}}
        self._wait_for(req, rid, {n for n in self.stimulators if self.sup.procs[self.graph.nodes[n].process].alive},
                       record, now, op or action)

    def _op_disarm(self, req: Request, now: float) -> None:
        reason = _text(req.args, "reason", "operator", 200) or "operator"
        self.disarmed = reason
        log.warning("stimulation disarmed by '%s' (%s)", req.who, reason)
        self._stim_action(req, now, "disarm", reason)

    def _op_arm(self, req: Request, now: float) -> None:
        reason = _text(req.args, "reason", "operator", 200) or "operator"
        if self.sup._estop_latched is not None:
            raise ControlError("the emergency stop is latched; clear it first (rtneuro stop --clear), then arm", 409)
        self.disarmed = None
        log.warning("stimulation armed by '%s' (%s)", req.who, reason)
        self._stim_action(req, now, "arm", reason)

    def _op_estop(self, req: Request, now: float) -> None:
        reason = _text(req.args, "reason", "operator", 200) or "operator"
        self.sup._operator(None, {"op": "estop", "reason": reason, "who": req.who, "future": req.future})

    def _op_estop_clear(self, req: Request, now: float) -> None:
        reason = _text(req.args, "reason", "operator", 200) or "operator"
        self.sup._operator(None, {"op": "estop_clear", "reason": reason, "who": req.who, "future": req.future})

    def _op_annotate(self, req: Request, now: float) -> None:
        text = _text(req.args, "text", None)
        if not text:
            raise ControlError('"text" must be a non-empty string, such as {"text": "block 2 starts"}', 422)
        rec = self.add_record({"op": "annotate", "who": req.who, "t_lsl": now, "t_stream": self.stream_now(now),
                               "args": {"text": text}})
        req.future.set_result({"id": rec["id"], "seq": rec["seq"], "t_lsl": now, "t_stream": rec["t_stream"]})

    def _op_record_start(self, req: Request, now: float) -> None:
        if not self.recorders:
            raise ControlError("this run records nothing: start it with 'rtneuro run CONFIG --record DIR' to record segments", 409)
        if self.segment is not None:
            raise ControlError(f"segment '{self.segment['label']}' is recording already; stop it first (rtneuro record stop)", 409)
        self._segments += 1
        label = _text(req.args, "label", None, 100) or f"segment {self._segments}"
        t_stream = self.stream_now(now)
        self.segment = {"label": label, "t_lsl": now, "t_stream": t_stream}
        rec = self.add_record({"op": "record_start", "who": req.who, "t_lsl": now, "t_stream": t_stream, "args": {"label": label}})
        req.future.set_result({"id": rec["id"], "seq": rec["seq"], "segment": label, "t_lsl": now, "t_stream": t_stream})

    def _op_record_stop(self, req: Request, now: float) -> None:
        if self.segment is None:
            raise ControlError("no segment is recording; start one with 'rtneuro record start LABEL'", 409)
        seg, self.segment = self.segment, None
        t_stream = self.stream_now(now)
        duration = round(now - seg["t_lsl"], 6)
        rec = self.add_record({"op": "record_stop", "who": req.who, "t_lsl": now, "t_stream": t_stream,
                               "args": {"label": seg["label"], "duration_s": duration, "t_stream_start": seg["t_stream"]}})
        req.future.set_result({"id": rec["id"], "seq": rec["seq"], "segment": seg["label"], "t_lsl": now, "t_stream": t_stream,
                               "duration_s": duration})

    def _pausable(self) -> None:
        if self.realtime_sources:
            raise ControlError(f"cannot pause: source(s) {self.realtime_sources} follow a live stream; "
                               "only replayed sources pause", 409)
        if not any(s.category == "source" for s in self.graph.nodes.values()):
            raise ControlError("this graph has no source to pause", 409)

    def _op_pause(self, req: Request, now: float) -> None:
        self._pausable()
        if self.paused_at is not None:
            raise ControlError("the replay is paused already; resume it with 'rtneuro resume'", 409)
        self.paused_at = now
        for p in self.sup.procs.values():
            self.sup._send(p, {"op": "pause"})
        # stimulation waits in the safe state, refusing commands still in flight (recorded: a replay does the same)
        self.pause_disarmed = self.disarmed is None
        action = "disarm" if self.pause_disarmed else "none"
        self._stim_action(req, now, action, "the replay is paused", op="pause", args={"stimulation": action})

    def _op_resume(self, req: Request, now: float) -> None:
        self._pausable()
        if self.paused_at is None:
            raise ControlError("the replay is not paused", 409)
        shift = now - self.paused_at
        self.paused_total += shift
        self.paused_at = None
        self.sup.extend_deadline(shift)
        # armed again only if the pause disarmed it and nobody disarmed it meanwhile
        action = "arm" if self.pause_disarmed and self.disarmed is None else "none"
        self.pause_disarmed = False
        self._stim_action(req, now, action, "the replay resumed", op="resume", args={"stimulation": action, "paused_s": round(shift, 6)})
        for p in self.sup.procs.values():
            self.sup._send(p, {"op": "resume", "shift": shift})

    # -- acknowledgements ---------------------------------------------------

    def on_applied(self, msg: dict) -> None:
        """A service applied a change or an action to one node (or could not)."""
        rid = msg.get("id")
        w = self._waiting.get(rid) if isinstance(rid, int) else None
        nid = msg.get("node")
        if w is None or nid not in w["nodes"]:
            return
        w["nodes"].discard(nid)
        if msg.get("error"):
            w["errors"][nid] = str(msg["error"])[:300]
        else:
            at = msg.get("at") or {}
            stream, index = next(iter(at.items())) if len(at) == 1 else (None, None)
            w["applied"][nid] = {"stream": stream, "index": index, "at": at, "t_lsl": msg.get("t"), "t_stream": msg.get("t_stream"),
                                 "t_sample": msg.get("t_sample"), "t_received": msg.get("t_received")}
        if not w["nodes"]:
            self._answer(w)

    def process_lost(self, proc: _Proc) -> None:
        """A process died: what it was to apply is applied by its next incarnation at its start (or never)."""
        for w in list(self._waiting.values()):
            lost = {n for n in w["nodes"] if self.graph.nodes[n].process == proc.name}
            for n in lost:
                w["nodes"].discard(n)
                w["errors"][n] = f"process '{proc.name}' ended before applying it; a restart starts with it"
            if lost and not w["nodes"]:
                self._answer(w)

    def _answer(self, w: dict, force: bool = False) -> None:
        """Answer the client (once); record the change once every node has applied it."""
        req: Request = w["req"]
        done = not w["nodes"]
        if done or force:
            self._waiting.pop(w["req_id"], None)
            if w["applied"] or w["kind"] in ("pause", "resume"):
                self.add_record({**w["record"], "id": w["req_id"], "applied": w["applied"], "errors": w["errors"]})
        result: dict[str, Any] = {"id": w["req_id"], "status": "applied" if done and not w["errors"] else
                                  "failed" if done and w["errors"] and not w["applied"] else "partial" if done else "pending",
                                  "applied": w["applied"], "errors": w["errors"]}
        if w["kind"] == "set":
            result["values"] = w["record"]["values"]
        elif w["kind"] in ("pause", "resume"):
            result["paused"] = self.paused_at is not None
            result["stimulation"] = w["record"]["args"].get("stimulation")
            result["t_lsl"] = w["record"]["t_lsl"]
        else:
            result["armed"] = self.disarmed is None
            result["stimulators"] = {**{n: "ok" for n in w["applied"]}, **w["errors"]}
        if not w["answered"]:
            w["answered"] = True
            if not req.future.done():
                if result["status"] == "failed" and w["kind"] == "set":  # every node refused it: nothing was applied
                    req.future.set_exception(ControlError("the change was not applied: " + "; ".join(
                        f"node '{n}': {e}" for n, e in w["errors"].items()), 500))
                else:
                    req.future.set_result(result)
        elif done:
            self.hub.publish({"type": "ack", "result": result})

    def on_estop(self, ev: dict) -> None:
        """An emergency stop (or clear) answered by the stimulating processes: its record, and the API's answer."""
        at = ev.get("at") or {}
        applied = {nid: {"at": at.get(nid, {}), "t_lsl": ev.get("t_confirmed")} for nid, r in ev.get("results", {}).items() if r == "ok"}
        rec = self.add_record({"op": ev["op"], "who": ev.get("who") or "rtneuro stop", "t_lsl": ev["t_received"],
                               "t_stream": self.stream_now(ev["t_received"]), "args": {"reason": ev["reason"]},
                               "applied": applied, "errors": ev.get("failed") or {}})
        fut = ev.get("future")
        if fut is not None and not fut.done():
            fut.set_result({"id": rec["id"], "latched": self.sup._estop_latched is not None, "stimulators": dict(ev.get("results") or {}),
                            "missing": ev.get("missing", [])})

    # -- records --------------------------------------------------------------

    def refresh(self) -> None:
        """After a change: the graph's live values and the status's control state, at once (not at the next status)."""
        self.hub.set_graph(self._graph_snapshot())
        st = self.hub._status
        if st.get("type") == "status":
            st = {**st, "stimulation": {**st["stimulation"], "armed": self.disarmed is None, "disarm_reason": self.disarmed,
                                        "estop": self.sup._estop_latched is not None},
                  "paused": self.paused_at is not None,
                  "recording": {**st["recording"], "active": self.segment is not None, "segment": (self.segment or {}).get("label")},
                  "changes": len(self.records) + self.records_dropped}
            self.hub.set_status(st)

    def add_record(self, rec: dict) -> dict:
        """Number a control record, keep it, push it, and have the recorders write it."""
        self._seq += 1
        rid = rec["id"] if "id" in rec else self._next_id()
        rec = {"seq": self._seq, **rec, "id": rid}
        rec = _plain(rec)
        if len(self.records) < MAX_RECORDS:
            self.records.append(rec)
        else:
            self.records_dropped += 1
        self.hub.add_change(rec)
        self.refresh()
        for nid in self.recorders:
            self.sup._send(self.sup.procs[self.graph.nodes[nid].process], {"op": "ctl_record", "record": rec})
        return rec

    def report(self) -> dict:
        ops: dict[str, int] = {}
        for r in self.records:
            ops[r["op"]] = ops.get(r["op"], 0) + 1
        return {"api": self.url, "records": len(self.records) + self.records_dropped, "by_op": ops,
                "requests": self.hub.requests, "refused": dict(self.hub.refusals), "unapplied": self.unapplied,
                "armed": self.disarmed is None, "paused_s": round(self.paused_total, 3),
                "log_totals": dict(self.hub.ratelog.totals), "changes": self.records[:200]}


def _plain(o: Any) -> Any:
    """JSON for the records: a non-finite float is null."""
    return jsonable(o, lambda x: None)
