"""The service process: hosts the nodes placed in one process and runs them.

One service per process of a graph. It builds its nodes from the plan the
supervisor wrote, binds and connects its sockets, waits until every process
that consumes its streams has subscribed, reports ``ready``, and on ``start``
runs the loop:

* sources are paced by the run's clock (live, scaled or virtual); while a
  source waits for its next chunk, the service keeps serving its sockets;
* a chunk produced by a node is handed *by reference* to the consumers in
  the same process, depth first, and published once for the consumers in
  other processes;
* command streams go to stimulators over the acknowledged command channel;
  the stimulate side answers each command with the gate's decision;
* every ``status_interval_s`` the service reports its counters and new
  latency samples to the supervisor.

An ``estop`` from the supervisor calls ``emergency_stop(now)`` at once on
every node that has it (the stimulators: safe state, latched in their gate),
``estop_clear`` calls ``clear_emergency_stop(now)``; the service answers
with each node's outcome.

It ends when its sources are exhausted and every input has ended (``drain``),
when told to ``stop``, or on SIGTERM. A node that raises ends the service
with exit code 1 after its stimulators are put in their safe state; the
supervisor then applies the restart policy.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from ..config import parse_speed
from ..errors import DamagedFileError, RtneuroError, SchemaError
from ..messages import CMD_HOLD, Chunk, StreamMeta, encode, pack_control, unpack_control
from ..nodes import Node, NodeContext, Source, build_params, node_class
from ..ratelog import RateLog
from ..security import curve_client, load_keys, security_stats, stop_authenticator
from ..transport import CommandReceiver, CommandSender, Publisher, Subscriber, TransportParams
from .clock import COARSE_S, Clock, VirtualClock, lsl_clock, make_clock, sleep_until

__all__ = ["Service", "main", "serve", "exit_process", "EXIT_FAILED", "EXIT_STARTUP", "EXIT_FATAL"]

log = logging.getLogger("rtneuro.service")

EXIT_FAILED = 1
EXIT_STARTUP = 3
#: A deterministic error (a damaged recording): a restart would meet it again, so none is tried.
EXIT_FATAL = 4

#: Longest time the loop blocks without checking control messages and timers.
MAX_BLOCK_S = 0.05
#: Chunks due more often than this keep the caches warm by themselves: no rehearsal.
PREWARM_MIN_PERIOD_S = 0.004
#: At a clean end, time allowed to deliver what is still queued ('latest' policy).
FLUSH_S = 5.0
#: ... with the 'lossless' policy, whose queues may hold thousands of messages for a
#: slower consumer: everything is delivered unless the consumer is gone (its pipe
#: closes) or stalls (the supervisor stops the run after 10 s without progress).
LOSSLESS_FLUSH_S = 600.0
#: At a clean end, time a command socket may take to deliver what it still queues (see _close_sockets).
COMMAND_LINGER_MS = 1000
#: Longest blocking pull of a live source when nothing else needs serving.
PUSH_WAIT_S = 0.02
#: ... and when other sources or inputs share the process.
PUSH_WAIT_SHARED_S = 0.002
#: A busy source loop serves its sockets (control, subscriptions) at least this often.
POLL_EVERY_S = 0.005
#: Sources prepare their next chunk this long after emitting one.
PREFETCH_DELAY_S = 0.002
#: Latency samples kept per stream and status message (beyond: every k-th).
MAX_SAMPLES_PER_STATUS = 5000
#: A trace stamp this far ahead of the receiving clock is implausible (same host: the clocks are one).
#: Command messages read per wake-up of the stimulate service (the rest on the next one).
#: Environment variable holding the supervisor's pid (set when it spawns a service).
SUPERVISOR_PID_ENV = "RTNEURO_SUPERVISOR_PID"
COMMAND_BATCH = 64
TRACE_FUTURE_S = 0.5
#: ... and one older than this: no command of a live loop is that old when it arrives.
TRACE_MAX_AGE_S = 60.0


class ServiceFailure(RtneuroError):
    """A node failed; the service must stop."""


class RealtimeRefused(RtneuroError):
    """``runtime.realtime_priority`` asked for what this system does not allow this process."""


@dataclass(slots=True)
class _Out:
    """Where a stream produced in this process goes."""

    stream: str
    kind: str
    topic: bytes
    local: list  # [(node, port)]
    publish: bool
    senders: list  # [CommandSender]
    chunks: int = 0
    samples: int = 0
    nonfinite: int = 0
    next_index: int = 0
    ages: list = field(default_factory=list)
    sent: int = 0
    heartbeats: int = 0


class Service:
    """Runs the nodes of one process.

    Parameters
    ----------
    plan : dict
        Written by the supervisor (:meth:`rtneuro.config.Graph.to_plan` plus
        ``endpoints`` and ``control``).
    process : str
        Name of the process to run.
    inc : int
        Incarnation id (new at each restart).
    """

    def __init__(self, plan: dict, process: str, inc: int, restart: bool = False, inline: bool = False) -> None:
        self.plan = plan
        #: run in a thread of the supervisor's process (offline runs: sweep jobs, replay checks): a ZeroMQ
        #: context of its own (the process-wide one holds the supervisor's sockets), and no real-time
        #: scheduling (it would apply to every thread of the supervisor's process)
        self.inline = inline
        self.name = process
        self.inc = inc
        #: A restarted service does not wait for its consumers: they are
        #: connected already (or finished), and reconnect by themselves.
        self.restart = restart
        self.transport = TransportParams(**plan["transport"])
        rt = plan["runtime"]
        self.status_interval = float(rt["status_interval_s"])
        self.prewarm_s = float(rt.get("prewarm_ms", 0.5)) / 1000.0
        self.spin_s = float(rt.get("spin_ms", 0.0)) / 1000.0
        #: the supervisor pings every status interval; without them the service stops
        self.supervisor_timeout = max(5.0, 10 * self.status_interval)
        self.startup_timeout = float(rt["startup_timeout_s"])
        self.metas = {k: StreamMeta.from_dict(v) for k, v in plan["streams"].items()}
        self.base_dir = Path(plan["base_dir"])
        self.endpoints = plan["endpoints"]
        self.clock: Clock | None = None
        self._stop = False
        self._draining = False
        self.errors: list[str] = []
        self._new_errors: list[str] = []
        self._e2e: list[float] = []
        #: commands whose trace could not be a real one (future, non-finite, too old): not in the latency figures
        self.latency_refused: dict[str, int] = {}
        #: logs about input from outside this process, by reason (totals go into the report)
        self.ratelog = RateLog(log)
        #: per-hop latency at stimulators: "a>b" -> samples (us) since the last status
        self._hops: dict[str, list[float]] = {}
        self._build_nodes()
        # loop state
        self._active: set = set()  # paced sources still producing
        self._pushing: list[Source] = []  # live sources still producing
        self._ended: set = set()  # streams that will carry no more data
        self._vclock: VirtualClock | None = None  # set when the run is as fast as possible
        #: on the virtual clock (no latency to measure): each node's compute time per chunk (us) since the last status
        self._compute: dict[str, list[float]] | None = None
        self._rx_stamp = f"rx:{process}"
        self._warned_nonfinite: set = set()  # streams whose NaNs were reported
        self._new_warnings: list[str] = []
        self._polled_at = 0.0
        self._prefetch_pending: list = []
        self._prefetch_at = 0.0
        self._last_out: tuple[_Out, Chunk] | None = None  # last published: rehearsed before the next chunk
        self._rehearsers = [n for n in self.nodes.values() if type(n).rehearse is not Node.rehearse]
        self._acq_times: list[float] = []  # spin_ms: recent acquisition times and delays of inputs
        self._delays: list[float] = []
        self._next_arrival: float | None = None
        self._spun = True
        self._start_msg: dict | None = None
        self._last_ping = 0.0
        #: an emergency stop is latched (the nodes hold the latch; this is for the report)
        self._estopped = False
        #: live changes and operator actions waiting for their node's next chunk: node -> entries
        #: ({"id", "raw"/"params" or "action"/"reason", "at": None (next chunk) or {stream: index} (a replay's schedule)})
        self._pending: dict[Node, list[dict]] = {}
        #: live changes and actions applied (for the report)
        self.applied_changes = 0
        #: paused by the operator since this LSL time (paced sources only)
        self._paused_at: float | None = None
        #: a client watches the gate's decisions: they go to the supervisor every tick
        self._watch = False
        self._watched: list[tuple[str, Any]] = []
        self._watch_dropped = 0

    # -- construction -------------------------------------------------------

    def _build_nodes(self) -> None:
        plan = self.plan
        specs = [n for n in plan["nodes"] if n["process"] == self.name]
        if not specs:
            raise RtneuroError(f"process '{self.name}' has no node in the plan")
        self.specs = {s["id"]: s for s in specs}
        self.nodes: dict[str, Node] = {}
        self.ctx: dict[str, NodeContext] = {}
        for s in specs:
            cls = node_class(s["type"])
            params = build_params(cls.Params, s["params"], f"node '{s['id']}' params")
            ctx = NodeContext(node_id=s["id"], base_dir=self.base_dir)
            node = cls(params, [self.metas[i] for i in s["inputs"]], ctx)
            self.nodes[s["id"]] = node
            self.ctx[s["id"]] = ctx
        self.sources: list[Source] = [n for n in self.nodes.values() if isinstance(n, Source)]
        self.stimulators = {nid for nid, n in self.nodes.items() if n.category == "stimulator"}
        self.tickers: list[Any] = [n for n in self.nodes.values() if callable(getattr(n, "tick", None))]
        #: tickers that name the moment they must next be ticked (a stimulator's watchdog deadline)
        self._deadline_tickers: list[Any] = [n for n in self.tickers if callable(getattr(n, "next_tick_due", None))]
        #: stream -> ids of the nodes of this process that consume it
        self.local_consumers: dict[str, list[str]] = {}
        for s in specs:
            for name in s["inputs"]:
                self.local_consumers.setdefault(name, []).append(s["id"])

    def _setup_sockets(self) -> None:
        plan = self.plan
        tp = self.transport
        self.zctx: zmq.Context = _context(self.inline)
        ep = self.endpoints[self.name]
        producer = plan["producer"]
        proc_of = {n["id"]: n["process"] for n in plan["nodes"]}
        consumers = plan["consumers"]
        type_of = {n["id"]: n["type"] for n in plan["nodes"]}

        def acked(cid: str) -> bool:
            """Commands reach a stimulator over the acknowledged channel; any other consumer subscribes."""
            return node_class(type_of[cid]).category == "stimulator"

        self.publisher: Publisher | None = None
        self.subscriber: Subscriber | None = None
        self.cmd_receiver: CommandReceiver | None = None
        self.senders: dict[str, CommandSender] = {}
        self.outs: dict[str, _Out] = {}
        self.expected_subs: dict[bytes, int] = {}
        for node in self.nodes.values():
            for meta in node.outputs.values():
                s = meta.name
                local, remote_procs, cmd_procs = [], set(), set()
                is_command = meta.kind == "cmd" and meta.dtype == "command"
                for cid, port in consumers.get(s, []):
                    if proc_of[cid] == self.name:
                        local.append((self.nodes[cid], port))
                    elif is_command and acked(cid):
                        cmd_procs.add(proc_of[cid])
                    else:
                        remote_procs.add(proc_of[cid])
                senders = []
                publish = False
                for p in sorted(cmd_procs):
                    if p not in self.senders:
                        # its routing id names this process: the receiver accepts commands only from the stream's publisher
                        self.senders[p] = CommandSender(self.zctx, self.endpoints[p]["cmd"], tp, self.inc, lsl_clock,
                                                        identity=f"{self.name}:{self.inc}".encode())
                    senders.append(self.senders[p])
                if remote_procs:
                    publish = True
                    self.expected_subs[meta.topic] = len(remote_procs)
                elif plan.get("publish_all") and not is_command:
                    publish = True  # the browser pages may view it (the run waits for no subscriber of it)
                self.outs[s] = _Out(s, meta.kind, meta.topic, local, publish, senders)
        self._out_of: dict[tuple[str, str], _Out] = {}
        for nid, node in self.nodes.items():
            for port_name, meta in node.outputs.items():
                self._out_of[(nid, port_name)] = self.outs[meta.name]
        #: node -> (its main output, its id): the lookup on every chunk
        self._main_out = {node: (self._out_of[(nid, "")], nid) for nid, node in self.nodes.items() if "" in node.outputs}
        if any(o.publish for o in self.outs.values()):
            # only the topics this process publishes may be subscribed to (a flood of others is refused)
            self.publisher = Publisher(self.zctx, ep["pub"], tp, self.inc,
                                       topics=[o.topic for o in self.outs.values() if o.publish],
                                       elsewhere=[m.topic for m in self.metas.values()])
            self.publisher.on_stall = self._poll_control
        # remote inputs
        self.remote_in: dict[str, list] = {}  # topic -> [(node, port)]
        self.cmd_in: dict[str, list] = {}
        connect_to: set[str] = set()
        for nid, spec in self.specs.items():
            for port, s in enumerate(spec["inputs"] + spec.get("feedback", [])):  # a source's feedback: ports 0, 1...
                home = proc_of[producer[s]]
                if home == self.name:
                    continue
                meta = self.metas[s]
                if meta.kind == "cmd" and meta.dtype == "command" and acked(nid):  # commands: the acknowledged channel
                    if self.cmd_receiver is None:
                        self.cmd_receiver = CommandReceiver(self.zctx, ep["cmd"], tp, self.inc)
                    if s not in self.cmd_in:
                        self.cmd_receiver.expect(s, meta, publisher=home)
                    self.cmd_in.setdefault(s, []).append((self.nodes[nid], port))
                else:
                    if self.subscriber is None:
                        # a recorder keeps every message: no backlog policy on its side, a deep queue
                        keep_all = any(getattr(n, "lossless_inputs", False) for n in self.nodes.values())
                        self.subscriber = Subscriber(self.zctx, replace(tp, policy="lossless", hwm=max(tp.hwm, 100_000)) if keep_all else tp)
                    topic = meta.topic.decode("ascii")
                    if topic not in self.remote_in:
                        self.subscriber.subscribe(meta.topic, meta)
                    self.remote_in.setdefault(topic, []).append((self.nodes[nid], port))
                    connect_to.add(home)
        if self.subscriber is not None:
            for p in sorted(connect_to):
                self.subscriber.connect(self.endpoints[p]["pub"])
        self.control = self.zctx.socket(zmq.DEALER)
        self.control.setsockopt(zmq.LINGER, 1000)
        self.control.setsockopt(zmq.IDENTITY, f"{self.name}:{self.inc}".encode())
        keys = tp.curve_keys()
        if keys is not None and plan["control"].startswith("tcp://"):
            curve_client(self.control, keys)
        self.control.connect(plan["control"])
        self.poller = zmq.Poller()
        self._handlers: dict[zmq.Socket, Callable[[], None]] = {}
        for sock, handler in (
            (self.subscriber.socket if self.subscriber else None, self._on_data),
            (self.cmd_receiver.socket if self.cmd_receiver else None, self._on_commands),
            (self.publisher.socket if self.publisher else None, self._on_subscriptions),
            (self.control, self._on_control),
            *[(s.socket, self._on_acks) for s in self.senders.values()],
        ):
            if sock is not None and sock not in self._handlers:
                self.poller.register(sock, zmq.POLLIN)
                self._handlers[sock] = handler
        self.remote_streams = {t.split(".", 1)[1] for t in self.remote_in} | set(self.cmd_in)

    # -- control channel ----------------------------------------------------

    def _send_control(self, msg: dict) -> None:
        msg.setdefault("process", self.name)
        msg.setdefault("inc", self.inc)
        try:
            self.control.send(pack_control(msg), flags=zmq.NOBLOCK)
        except zmq.Again:  # pragma: no cover - supervisor gone or slow
            pass

    def _on_control(self) -> None:
        while True:
            try:
                buf = self.control.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = unpack_control(buf)
            except SchemaError as exc:
                self.ratelog.warning("malformed-control", "ignored a malformed control message: %s", exc)
                continue
            op = msg["op"]
            if op in ("start", "incs") and self.cmd_receiver is not None and type(msg.get("incs")) is dict:
                self.cmd_receiver.set_incarnations(msg["incs"])  # commands only from the current controllers
            if op == "start":
                self._start_msg = msg
            elif op == "incs":
                pass
            elif op == "drain":
                self._begin_drain()
            elif op == "stop":
                self._stop = True
            elif op == "ping":
                self._last_ping = lsl_clock()
                self._send_control({"op": "pong"})  # the heartbeat: a hung node cannot answer
            elif op in ("estop", "estop_clear"):
                self._emergency(msg, clear=op == "estop_clear")
            elif op in ("set", "action"):
                self._on_change(msg)
            elif op == "pause":
                if self._paused_at is None:
                    self._paused_at = lsl_clock()
            elif op == "resume":
                self._resume(msg)
            elif op == "ctl_record" and isinstance(msg.get("record"), dict):
                self._to_keepers("control_record", msg["record"])  # an operator's change or action
            elif op == "display" and isinstance(msg.get("rows"), list):
                self._to_keepers("display_record", msg["rows"])  # the participant display's paints
            elif op == "watch":
                self._watch = bool(msg.get("on"))
                if not self._watch:
                    self._watched = []

    # -- live changes and operator actions ------------------------------------

    def _entry(self, msg: dict, scheduled: bool = False) -> tuple[Node, dict] | None:
        """A change or action from the supervisor (or a replay's schedule) as a pending entry; None if not for here."""
        nid = msg.get("node")
        node = self.nodes.get(nid) if isinstance(nid, str) else None
        if node is None:
            if not scheduled:
                self._send_control({"op": "applied", "id": msg.get("id"), "node": nid, "error": f"no node {nid!r} in process '{self.name}'"})
            return None
        entry: dict[str, Any] = {"id": msg.get("id"), "at": msg.get("at") if scheduled else None, "t_received": lsl_clock()}
        if msg["op"] == "set":
            spec = self.specs[nid]
            try:
                entry["params"] = build_params(node_class(spec["type"]).Params, msg.get("raw"), f"node '{nid}' params")
            except RtneuroError as exc:  # checked by the supervisor already: only a mismatched plan gets here
                if not scheduled:
                    self._send_control({"op": "applied", "id": msg.get("id"), "node": nid, "error": str(exc)})
                return None
            entry["raw"] = msg.get("raw")
        else:
            action = msg.get("action")
            if action == "none":  # nothing to do, but the index where the moment fell is recorded
                entry["action"] = "none"
                entry["reason"] = ""
                return node, entry
            if action not in ("arm", "disarm", "emergency_stop", "clear_emergency_stop") or not callable(getattr(node, str(action), None)):
                if not scheduled:
                    self._send_control({"op": "applied", "id": msg.get("id"), "node": nid, "error": f"node '{nid}' cannot {action}"})
                return None
            entry["action"] = action
            entry["reason"] = str(msg.get("reason") or "operator")[:200]
        return node, entry

    def _on_change(self, msg: dict) -> None:
        """A live change or an action: a stimulator's applies now; any other node's at its next chunk."""
        got = self._entry(msg)
        if got is None:
            return
        node, entry = got
        if node.category == "stimulator":
            self._apply_entry(node, entry, dict(getattr(node, "next_index", {})), None)
            self._emit_records(node)
        else:
            self._pending.setdefault(node, []).append(entry)

    def _apply_pending(self, node: Node, chunk: Chunk, port: int) -> None:
        """Before ``node`` takes ``chunk``: the changes due (the next chunk, or the recorded sample of a replay)."""
        spec = self.specs[node.ctx.node_id]
        names = spec["inputs"] + spec.get("feedback", [])
        stream = names[port] if port < len(names) else ""
        keep = []
        for entry in self._pending[node]:
            at = entry["at"]
            if at is not None and not (stream in at and chunk.first >= int(at[stream])):
                keep.append(entry)
                continue
            self._apply_entry(node, entry, {stream: int(chunk.first)}, float(chunk.t0), chunk)
        if keep:
            self._pending[node] = keep
        else:
            del self._pending[node]

    def _apply_entry(self, node: Node, entry: dict, at: dict, t_stream: float | None, chunk: Chunk | None = None) -> None:
        nid = node.ctx.node_id
        try:
            if "params" in entry:
                node.update(entry["params"])
                self.specs[nid] = {**self.specs[nid], "params": entry["raw"]}  # a restart resumes with them
            elif entry["action"] == "none":
                pass
            else:
                fn = getattr(node, entry["action"])
                if entry["action"] == "clear_emergency_stop":
                    fn(node.ctx.real_clock())
                else:
                    fn(node.ctx.real_clock(), entry["reason"])
        except Exception as exc:
            if entry["id"] is not None:
                self._send_control({"op": "applied", "id": entry["id"], "node": nid, "error": f"{type(exc).__name__}: {exc}"})
            self._fail(node, exc)
        self.applied_changes += 1
        if entry["id"] is not None:
            # the LSL time the first chunk computed with the change was complete (its last sample acquired)
            t_sample = None
            if chunk is not None and self._vclock is None and len(chunk.data):
                dt = 1.0 / chunk.sfreq if chunk.sfreq > 0 else 0.0
                t_sample = node.ctx.lsl_time(float(chunk.t0) + (len(chunk.data) - 1) * dt)
            self._send_control({"op": "applied", "id": entry["id"], "node": nid, "at": at, "t": lsl_clock(), "t_stream": t_stream,
                                "t_sample": t_sample, "t_received": entry["t_received"]})

    def _resume(self, msg: dict) -> None:
        """Resume paced sources where they stopped: the clock moves on by the pause (the supervisor's measure)."""
        if self._paused_at is None:
            return
        shift = msg.get("shift")
        if not isinstance(shift, (int, float)) or not math.isfinite(shift) or shift < 0:
            shift = lsl_clock() - self._paused_at
        self._paused_at = None
        clock = self.clock
        if clock is not None and not isinstance(clock, VirtualClock) and hasattr(clock, "origin_real"):
            clock.origin_real += float(shift)

    def _to_keepers(self, method: str, record: Any) -> None:
        """A record from the supervisor, for the nodes that keep such records (the recorder): ``node.<method>(record)``."""
        for node in self.nodes.values():
            fn = getattr(node, method, None)
            if fn is not None:
                try:
                    fn(record)
                except Exception as exc:
                    self._fail(node, exc)

    def _flush_watched(self) -> None:
        """The gate's decisions since the last tick, to the supervisor (for WebSocket clients)."""
        from ..nodes.sinks import _rows

        batches, self._watched = self._watched, []
        by: dict[str, list] = {}
        for nid, ch in batches:
            rows = by.setdefault(nid, [])
            if len(rows) >= 256:
                self._watch_dropped += len(ch.data)
                continue
            rows.extend(_rows(ch, self.metas[f"{nid}.decisions"]))
        for nid, rows in by.items():
            self._send_control({"op": "decisions", "stimulator": nid, "records": rows[:256], "dropped": self._watch_dropped})

    def _emergency(self, msg: dict, clear: bool) -> None:
        """Call ``emergency_stop(now)`` (or ``clear_emergency_stop(now)``) on every node that has it; confirm.

        A stimulator node without the method but with a gate that has it
        gets the gate's. Each node's outcome (``"ok"`` or the error) goes
        back to the supervisor at once, with the time the last one returned.
        """
        name = "clear_emergency_stop" if clear else "emergency_stop"
        results: dict[str, str] = {}
        for nid, node in self.nodes.items():
            fn = getattr(node, name, None)
            if fn is None and node.category == "stimulator":
                fn = getattr(getattr(node, "gate", None), name, None)
            if fn is None:
                if node.category == "stimulator":
                    results[nid] = f"failed: {type(node).__name__} has no {name}()"
                continue
            try:
                if clear:
                    fn(node.ctx.real_clock())
                else:
                    fn(node.ctx.real_clock(), str(msg.get("reason") or "operator")[:200])
                results[nid] = "ok"
            except Exception as exc:  # report it: the operator must know this stimulator did not confirm
                log.error("%s on node '%s' failed:\n%s", name, nid, traceback.format_exc())
                results[nid] = f"failed: {type(exc).__name__}: {exc}"
        t = lsl_clock()
        self._estopped = not clear
        if results:
            log.warning("%s: %s", "emergency stop cleared" if clear else "emergency stop", results)
        at = {nid: dict(getattr(self.nodes[nid], "next_index", {})) for nid in results}
        self._send_control({"op": "estop_done", "id": msg.get("id"), "clear": clear, "results": results, "t": t, "at": at})

    def request_stop(self) -> None:
        """Stop at the next loop turn (signal handlers call this)."""
        self._stop = True

    def _poll_control(self) -> bool:
        """Non-blocking check used while a lossless publisher waits; True to abort."""
        self._on_control()
        return self._stop

    # -- data path ----------------------------------------------------------

    def _learn_arrival(self, t_acq: float, now: float) -> None:
        """Predict when the next input arrives: acquisition period plus the usual delay.

        Both are medians of the last 15 messages; the acquisition times come
        from the messages' traces, so a message that arrived late does not
        shift the prediction of the next one.
        """
        acq, lat = self._acq_times, self._delays
        if not acq or t_acq - acq[-1] > 0.0005:
            acq.append(t_acq)
        lat.append(now - t_acq)
        if len(acq) > 16:
            del acq[0]
        if len(lat) > 15:
            del lat[0]
        if len(acq) >= 4:
            gaps = sorted(b - a for a, b in zip(acq[:-1], acq[1:], strict=True))
            period = gaps[len(gaps) // 2]
            delay = sorted(lat)[len(lat) // 2]
            self._next_arrival = acq[-1] + period + delay if period >= PREWARM_MIN_PERIOD_S else None
            self._spun = False

    def _spin_for_input(self, seconds: float) -> float:
        """``spin_ms``: be awake (and rehearsed) when the next input arrives.

        A process woken from idle by a message pays the core's wake-up and
        cold caches on top of the hop (about 0.25 ms per hop here). With
        ``spin_ms`` > 0 the service wakes ``spin_ms / 2`` before the predicted
        arrival, rehearses, and polls without sleeping (yielding the core)
        for up to ``spin_ms``. The cost is that much CPU per input message.
        Returns how long the caller may still block.
        """
        t_next = self._next_arrival
        if t_next is None or self._spun:
            return seconds
        now = lsl_clock()
        t0 = t_next - self.spin_s / 2
        if now < t0 - COARSE_S:
            return min(seconds, t0 - COARSE_S - now)  # a socket poll may overshoot by a millisecond
        self._spun = True
        if now > t_next + self.spin_s:  # missed (or the input stopped)
            return seconds
        if now < t0:
            time.sleep(t0 - now)
        self._rehearse()
        end = t0 + self.spin_s
        poll = self.poller.poll
        while lsl_clock() < end:
            ready = poll(0)
            if ready:
                for sock, _ in ready:
                    self._handlers[sock]()
                return 0.0
            os.sched_yield()
        return seconds

    def _rehearse(self) -> None:
        """Run the hot path on copies, just before a source's next chunk is due.

        On a core that has been idle for tens of milliseconds, nothing of the
        path a chunk takes is left in the CPU caches, and the first pass
        through it costs several times the warm one (a NumPy call: 120 us
        instead of 4 us on this kind of virtual machine). A source's chunks
        are due at known times, so ``prewarm_ms`` before each one the service
        runs every node's ``rehearse()`` (its kernels on scratch state) and
        encodes the last published header again. Nothing is sent and no
        state changes; the real chunk then finds the path warm.
        """
        try:
            for node in self._rehearsers:
                node.rehearse()
            last = self._last_out
            if last is not None:
                encode(last[0].kind, last[0].stream, 0, self.inc, last[1], last[0].topic)
        except Exception:  # a rehearsal must never disturb the run
            log.debug("rehearsal failed", exc_info=True)

    def _tick_due(self) -> float | None:
        """The earliest LSL time a node asked to be ticked at (None: the regular 20 ms ticks will do)."""
        dues = [d for n in self._deadline_tickers if (d := n.next_tick_due()) is not None]
        return min(dues) if dues else None

    def _wait(self, seconds: float) -> None:
        """Serve sockets for up to ``seconds`` (returns after the first batch)."""
        if self.spin_s and not self._active:
            seconds = self._spin_for_input(seconds)
            if seconds <= 0:
                return
        self._polled_at = lsl_clock()
        ms = int(seconds * 1000)
        if ms < 1 and seconds > 0:
            time.sleep(seconds)
            ms = 0
        ready = self.poller.poll(min(ms, int(MAX_BLOCK_S * 1000)))
        if len(ready) > 1:  # control first: a live change that arrived with a chunk applies to that chunk
            ready.sort(key=lambda r: r[0] is not self.control)
        for sock, _ in ready:
            self._handlers[sock]()
            if self._stop:
                return

    # The socket handlers run only for sockets that exist (see _setup_sockets).

    def _on_subscriptions(self) -> None:
        assert self.publisher is not None
        self.publisher.poll_subscriptions()

    def _on_data(self) -> None:
        assert self.subscriber is not None
        now = lsl_clock()
        stamp = self._rx_stamp
        vclock = self._vclock
        for msg in self.subscriber.drain():
            if msg.type == "eos":
                self._stream_ended(msg.stream)
                continue
            ch = msg.chunk()
            if self.spin_s and ch.trace:
                self._learn_arrival(ch.trace[0][1], now)
            ch.trace.append((stamp, now))
            if vclock is not None:
                vclock.advance(ch.t0)
            for node, port in self.remote_in[msg.topic]:
                self._run(node, ch, port)

    def _on_commands(self) -> None:
        receiver = self.cmd_receiver
        assert receiver is not None
        now = lsl_clock()
        # a bounded batch per wake-up: the ROUTER queues fairly across peers, so the controller's
        # next command is among the first few read however many strangers flood the socket
        for peer, msg in receiver.drain(max_messages=COMMAND_BATCH):
            if msg.type == "eos":
                if msg.stream not in self._ended and not self._draining:
                    # the supervisor judges it: the end of the data, or a stimulator cut off from its controller
                    self._send_control({"op": "input_ended", "stream": msg.stream, "t": now})
                self._stream_ended(msg.stream)
                continue
            ch = msg.chunk()
            if self.spin_s and ch.trace:
                self._learn_arrival(ch.trace[0][1], now)
            ch.trace = [*ch.trace, (self._rx_stamp, now)]
            statuses, reasons = [], []
            for node, port in self.cmd_in[msg.stream]:
                result = self._run(node, ch, port)
                if node.category == "stimulator" and result is not None:
                    statuses = [r[0] for r in result]
                    reasons = [r[1] for r in result]
            receiver.ack(peer, msg, statuses, reasons, lsl_clock())

    def _on_acks(self) -> None:
        for s in self.senders.values():
            s.poll()

    def _count_nonfinite(self, o: _Out, ch: Chunk) -> None:
        """Count the samples with a NaN or infinity of a source's chunk; say so once per stream."""
        bad = ~np.isfinite(ch.data)
        o.nonfinite += int(bad.any(axis=1).sum())
        if o.stream not in self._warned_nonfinite:
            self._warned_nonfinite.add(o.stream)
            first = np.argwhere(bad)[0]
            meta = self.metas[o.stream]
            cname = meta.ch_names[first[1]] if first[1] < meta.n_channels else first[1]
            msg = (f"stream '{o.stream}': {int(bad.sum())} NaN/Inf value(s) in the chunk at sample {ch.first + first[0]} "
                   f"(channel {cname}); filters hold the last finite value; check the electrode or amplifier")
            log.warning(msg)
            self._new_warnings.append(msg)

    def _stream_ended(self, stream: str) -> None:
        """``stream`` will carry no more data: tell its consumers, here and remote.

        A node of this process whose inputs have all ended ends its outputs.
        """
        if stream in self._ended:
            return
        self._ended.add(stream)
        o = self.outs.get(stream)
        if o is not None:
            if self.publisher is not None and o.publish:
                self.publisher.end(o.kind, o.stream, o.topic, o.next_index)
            for sender in o.senders:
                sender.end(o.stream, o.next_index)
        for nid in self.local_consumers.get(stream, ()):
            if all(i in self._ended for i in self.specs[nid]["inputs"]):
                node = self.nodes[nid]
                try:
                    node.end()
                except Exception as exc:
                    self._fail(node, exc)
                if node.category == "stimulator":
                    self._emit_records(node)  # the safe state at the end
                for meta in node.outputs.values():
                    self._stream_ended(meta.name)

    def _source_ended(self, src: Node) -> None:
        self._active.discard(src)
        if src in self._pushing:
            self._pushing.remove(src)
        for meta in src.outputs.values():
            self._stream_ended(meta.name)

    def _run(self, node: Node, chunk: Chunk, port: int):
        if self._pending and node in self._pending:
            self._apply_pending(node, chunk, port)
        try:
            if self._compute is None:
                out = node.process(chunk, port)
            else:  # virtual clock: what a chunk costs, since there is no latency to measure
                t = time.perf_counter()
                out = node.process(chunk, port)
                self._compute.setdefault(node.ctx.node_id, []).append((time.perf_counter() - t) * 1e6)
        except Exception as exc:
            self._fail(node, exc)
        if out is None:
            return None
        if node.category == "stimulator":
            self._record_latency(node, chunk)
            self._emit_records(node)
            return out
        if isinstance(out, Chunk):
            if out is chunk:  # a pass-through node: its output gets its own trace
                out = Chunk(chunk.data, chunk.first, chunk.t0, chunk.sfreq, list(chunk.trace), chunk.extra)
            o, nid = self._main_out[node]
            self._emit(o, nid, out)
        else:
            nid = node.ctx.node_id
            for port_name, ch in out:
                self._emit(self._out_of[(nid, port_name)], nid, ch)
        return None

    def _emit_records(self, node: Node) -> None:
        """A stimulator's decision records (its gate's), on their stream."""
        take = getattr(node, "take_outputs", None)
        if take is None:
            return
        nid = node.ctx.node_id
        for port_name, ch in take():
            self._emit(self._out_of[(nid, port_name)], nid, ch)
            if self._watch and port_name == "decisions":
                if len(self._watched) < 256:
                    self._watched.append((nid, ch))
                else:
                    self._watch_dropped += len(ch.data)

    def _record_latency(self, node: Node, chunk: Chunk) -> None:
        """End-to-end and per-hop latency of a command that reached a stimulator.

        Only plausible traces count: a command reaches a node only from its
        stream's publisher (the receiver checks), and a trace whose stamps are
        not finite, lie ahead of this clock (beyond ``TRACE_FUTURE_S``) or are
        older than ``TRACE_MAX_AGE_S`` is counted in ``latency_refused`` by
        reason instead of entering the figures.
        """
        now = lsl_clock()
        trace = chunk.trace
        if not trace:
            return
        why = _implausible(trace, now)
        if why is not None:
            self.latency_refused[why] = self.latency_refused.get(why, 0) + 1
            self.ratelog.warning(f"trace-{why}", "a command for node '%s' carried an implausible trace (%s); "
                                 "left out of the latency figures", node.ctx.node_id, why)
            return
        self._e2e.append((now - trace[0][1]) * 1e6)
        hops = self._hops
        prev_name, prev_t = trace[0]
        for name, t in [*trace[1:], (node.ctx.node_id, now)]:
            key = f"{prev_name}>{name}"
            lst = hops.get(key)
            if lst is None:
                lst = hops[key] = []
            lst.append((t - prev_t) * 1e6)
            prev_name, prev_t = name, t

    def _emit(self, o: _Out, nid: str, c: Chunk) -> None:
        """Hand a node's output chunk ``c`` (a new object) to every consumer."""
        now = lsl_clock()
        trace = c.trace = [*c.trace, (nid, now)]
        n = c.data.shape[0]
        o.chunks += 1
        o.samples += n
        o.next_index = c.first + n
        o.ages.append((now - trace[0][1]) * 1e6)
        if o.kind == "cmd" and "status" not in (c.data.dtype.names or ()):  # commands, not the gate's decision records
            holds = c.data["kind"].tolist().count(CMD_HOLD)
            o.sent += n - holds
            o.heartbeats += holds
            for sender in o.senders:
                sender.send(o.stream, c, heartbeat=holds == n)
            if o.senders:
                os.sched_yield()
        if o.publish:
            self.publisher.publish(o.kind, o.stream, o.topic, c)  # type: ignore[union-attr]  # publish implies a publisher
            self._last_out = (o, c)
        for node, port in o.local:
            self._run(node, c, port)

    def _emit_source(self, src: Node, out, t_acq: float) -> None:
        """Hand a source's chunk(s) on; its trace starts at the acquisition time.

        Consumers first, bookkeeping after: the counters and the non-finite
        check are not on the path of the decision.
        """
        nid = src.ctx.node_id
        items = [("", out)] if type(out) is Chunk else out
        for port_name, ch in items:
            if not ch.trace:  # live sources stamp the acquisition time themselves
                ch.trace = [(nid, t_acq)]
            o = self._out_of[(nid, port_name)]
            if o.publish:
                self.publisher.publish(o.kind, o.stream, o.topic, ch)  # type: ignore[union-attr]
            for node, port in o.local:
                self._run(node, ch, port)
        for port_name, ch in items:
            o = self._out_of[(nid, port_name)]
            n = ch.data.shape[0]
            o.chunks += 1
            o.samples += n
            o.next_index = ch.first + n
            o.ages.append((lsl_clock() - ch.trace[0][1]) * 1e6)
            if o.kind == "sig" and not np.isfinite(ch.data).all():
                self._count_nonfinite(o, ch)

    def _pull_once(self) -> None:
        """Sources that are not paced (live inlets): take what arrived.

        The first one is waited for with a blocking pull, which returns as
        soon as its data arrives (LSL's cheapest strategy: no busy polling);
        the others are polled without waiting. The sockets are served at
        least every ``POLL_EVERY_S``; the wait is short when other inputs
        need serving too.
        """
        first, *others = self._pushing
        now = lsl_clock()
        for src in others:
            self._pull(src, 0.0, now)
        alone = not others and not self.remote_streams
        self._pull(first, PUSH_WAIT_S if alone else PUSH_WAIT_SHARED_S, now)
        if lsl_clock() - self._polled_at > POLL_EVERY_S:
            self._wait(0)

    def _pull(self, src: Source, timeout_s: float, now: float) -> None:
        try:
            out = src.pull(timeout_s, now)
        except Exception as exc:
            self._fail(src, exc)
        if out is not None:
            self._emit_source(src, out, lsl_clock())

    def _wait_paced(self, seconds: float) -> None:
        """Wait for a source's next chunk; prepare pending chunks on the way.

        Sources prepare their next chunk ahead of time (``prefetch``), but not
        right after emitting one: that is when the processes downstream
        wake up, and on a small machine they may need this very core.
        """
        if self._prefetch_pending:
            now = lsl_clock()
            if now >= self._prefetch_at:
                for src in self._prefetch_pending:
                    src.prefetch()
                self._prefetch_pending = []
                return
            seconds = min(seconds, self._prefetch_at - now)
        self._wait(seconds)

    def _fail(self, node: Node, exc: Exception):
        nid = node.ctx.node_id
        spec = self.specs[nid]
        line = f"node '{nid}' ({spec['type']}) in process '{self.name}' raised {type(exc).__name__}: {exc}"
        log.error("%s\n%s", line, traceback.format_exc())
        self._note_error(line)
        raise ServiceFailure(line) from exc

    def _note_error(self, line: str) -> None:
        self.errors.append(line)
        self._new_errors.append(line)

    # -- life cycle ---------------------------------------------------------

    def _begin_drain(self) -> None:
        if not self._draining:
            self._draining = True
            for src in [*self._active, *self._pushing]:
                self._source_ended(src)

    def _status(self, final: bool = False, ok: bool = True) -> None:
        for node in self.nodes.values():
            self._new_warnings.extend(node.take_notes())
        produced = {s: {"chunks": o.chunks, "samples": o.samples, "nonfinite": o.nonfinite, "next_index": o.next_index,
                        "sent": o.sent, "heartbeats": o.heartbeats, "kind": o.kind}
                    for s, o in self.outs.items()}
        ages = {}
        for s, o in self.outs.items():
            if o.ages:
                ages[s] = _thin(o.ages)
                o.ages = []
        received = {}
        rejections: dict[str, int] = {}
        if self.subscriber is not None:
            for topic, st in self.subscriber.streams.items():
                name = topic.decode().split(".", 1)[1]
                received[name] = st.stats.as_dict()
            _merge(rejections, self.subscriber.rejections.counts)
        if self.cmd_receiver is not None:
            for name, st in self.cmd_receiver.streams.items():
                received[name] = st.stats.as_dict()
            _merge(rejections, self.cmd_receiver.rejections.counts)
        for sender in self.senders.values():
            _merge(rejections, sender.rejections.counts)
        commands = {"acked": 0, "resent": 0, "unacked": 0}
        for sender in self.senders.values():
            cs = sender.stats
            commands["acked"] += cs.acked
            commands["resent"] += cs.resent
            commands["unacked"] += cs.unacked
        decisions: dict[str, int] = {}
        for nid in self.stimulators:
            gate = getattr(self.nodes[nid], "gate", None)
            if gate is not None:
                _merge(decisions, gate.counts)
        msg = {
            "op": "final" if final else "status",
            "t": lsl_clock(),
            "produced": produced,
            "received": received,
            "rejections": rejections,
            # clients the CURVE servers of this process refused, by reason (empty without keys)
            "security": {k: v for k, v in security_stats(self.zctx).items() if v},
            "ages_us": ages,
            "e2e_us": _thin(self._e2e),
            "hops_us": {k: _thin(v) for k, v in self._hops.items()},
            "compute_us": {k: _thin(v) for k, v in (self._compute or {}).items()},
            "commands": commands,
            "decisions": decisions,
            "positions": {src.ctx.node_id: src.position() for src in self.sources},
            "errors": self._new_errors,
            "warnings": self._new_warnings,
            "node_status": {nid: line for nid, node in self.nodes.items() if (line := node.status())},
            # streams this process produced and has ended (the supervisor tells a real end from a lost input)
            "ended_outputs": sorted(s for s in self._ended if s in self.outs),
            "latency_refused": dict(self.latency_refused),
            "log_totals": self._log_totals(),
            "control": {"applied": self.applied_changes, "paused": self._paused_at is not None,
                        "armed": {nid: bool(getattr(self.nodes[nid], "armed", True)) for nid in self.stimulators}},
        }
        self._e2e = []
        self._hops = {}
        if self._compute is not None:
            self._compute = {}
        self._new_errors = []
        self._new_warnings = []
        # A stimulator's report (watchdog timings, gate counts and refusals) goes out with every
        # status, not only the final one: an incarnation that is killed keeps its figures.
        reports = {}
        for nid, node in self.nodes.items():
            if final or nid in self.stimulators:
                try:
                    reports[nid] = node.report()
                except Exception as exc:  # a report must never lose the final status
                    reports[nid] = {"error": f"report failed: {exc!r}"}
        if reports:
            msg["nodes"] = reports
        if final:
            msg["ok"] = ok  # False: the service is ending because it failed
            msg["estop_latched"] = self._estopped
        self._send_control(msg)

    def _log_totals(self) -> dict[str, int]:
        """Occurrences by reason of every rate-limited log of this process (own and its sockets')."""
        totals: dict[str, int] = {}
        logs: list[Any] = [self.ratelog]
        for sock in (*self.senders.values(), self.cmd_receiver, self.subscriber, self.publisher):
            logs += [getattr(sock, "log", None), getattr(getattr(sock, "rejections", None), "log", None)]
        for rl in logs:
            if isinstance(rl, RateLog):
                _merge(totals, rl.totals)
        return totals

    def _wait_subscribers(self) -> None:
        if not self.expected_subs or self.restart:
            return
        deadline = lsl_clock() + self.startup_timeout
        pub = self.publisher
        assert pub is not None  # consumers to wait for means streams to publish
        while True:
            missing = {t: n for t, n in self.expected_subs.items() if pub.subscriptions.get(t, 0) < n}
            if not missing:
                return
            if self._stop:
                return
            if lsl_clock() > deadline:
                names = ", ".join(t.decode() for t in missing)
                raise RtneuroError(f"timed out after {self.startup_timeout:.0f} s waiting for consumers to subscribe to {names}")
            self._wait(0.05)

    def _wait_start(self) -> dict | None:
        self._start_msg = None
        deadline = lsl_clock() + self.startup_timeout
        while self._start_msg is None:
            if self._stop:
                return None
            if lsl_clock() > deadline:
                raise RtneuroError(f"no start from the supervisor within {self.startup_timeout:.0f} s")
            self._wait(0.05)
        return self._start_msg

    def _realtime(self) -> None:
        """``runtime.realtime_priority``: SCHED_FIFO from here on (after the imports and compilation, which
        would otherwise hold a core for seconds); a one-line RealtimeRefused when the system does not allow it."""
        prio = self.plan["runtime"].get("realtime_priority")
        if prio is None or self.inline:
            return
        try:
            # every thread of the process: ZeroMQ's I/O threads carry each message before this one sees it
            # (threads started later inherit the policy)
            tids = [int(t) for t in os.listdir("/proc/self/task")] if os.path.isdir("/proc/self/task") else [0]
            for tid in tids:
                with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                    os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(int(prio)))
        except (OSError, AttributeError) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            raise RealtimeRefused(
                f"runtime.realtime_priority={prio}: this process may not use real-time scheduling ({why}); run as root, "
                "give Python CAP_SYS_NICE (sudo setcap cap_sys_nice+ep $(readlink -f $(which python))) or an rtprio "
                "limit (/etc/security/limits.conf), or remove realtime_priority") from None
        log.info("real-time scheduling: SCHED_FIFO priority %d", prio)

    def run(self) -> int:
        """Run until the end of the data, ``stop`` or SIGTERM. Returns the exit code."""
        self._setup_sockets()
        opened: list[Node] = []
        code = 0
        try:
            for node in self.nodes.values():
                node.open()
                opened.append(node)
                node.warmup()
                node.reset()
            self._realtime()
            self._wait_subscribers()
            self._send_control({"op": "ready", "pid": os.getpid()})
            start = self._wait_start()
            if start is not None:
                self._loop(start)
        except ServiceFailure:
            code = EXIT_FAILED
        except (DamagedFileError, RealtimeRefused) as exc:  # a restart would meet the same
            log.error("%s", exc)
            self._note_error(f"process '{self.name}': {exc}")
            code = EXIT_FATAL
        except RtneuroError as exc:
            log.error("%s", exc)
            self._note_error(f"process '{self.name}': {exc}")
            code = EXIT_FAILED
        except Exception as exc:
            log.error("process '%s' failed:\n%s", self.name, traceback.format_exc())
            self._note_error(f"process '{self.name}' failed: {type(exc).__name__}: {exc}")
            code = EXIT_FAILED
        finally:
            for node in reversed(opened):
                try:
                    node.close()
                except Exception:
                    log.error("closing node '%s' failed:\n%s", node.ctx.node_id, traceback.format_exc())
            try:
                if code != 0:
                    self._send_control({"op": "error", "errors": list(self._new_errors)})
                self._status(final=True, ok=code == 0)
            except Exception:  # the final report must not turn a clean end into a crash
                log.error("could not send the final status:\n%s", traceback.format_exc())
            if code == 0 and not self._stop:
                self._await_consumers()
            self._close_sockets(clean=code == 0 and not self._stop)
            self.ratelog.flush()
        return code

    def _loop(self, start: dict) -> None:
        origin_real = float(start["origin"])
        origin = float(start.get("origin_stream", origin_real))
        speed = parse_speed(start["speed"])
        clock = self.clock = make_clock(speed, origin, origin_real)
        lsl_time = (lambda t: lsl_clock()) if isinstance(clock, VirtualClock) else clock.real_time_of
        for ctx in self.ctx.values():
            ctx.clock = clock
            ctx.lsl_time = lsl_time
        resume = start.get("resume") or {}
        self._restore(start)
        for src in self.sources:
            src.start(origin, int(resume.get(src.ctx.node_id, 0)))
            if src.paced:
                src.prefetch()
        self._active = {s for s in self.sources if s.paced}
        self._pushing = [s for s in self.sources if not s.paced]
        if self._draining:
            for src in self.sources:
                self._source_ended(src)
        self._vclock = self.clock if isinstance(self.clock, VirtualClock) else None
        virtual = self._vclock is not None
        self._compute = {} if virtual else None
        next_status = lsl_clock() + self.status_interval
        self._last_ping = lsl_clock()
        next_tick = lsl_clock()
        while not self._stop:
            if self._paused_at is not None and self._active:
                tick_due = self._tick_due()
                self._wait(MAX_BLOCK_S if tick_due is None else min(MAX_BLOCK_S, max(0.0, tick_due - lsl_clock())))
            elif self._active:
                best: Source | None = None
                due = math.inf
                for src in list(self._active):
                    d = src.next_due()
                    if d is None:
                        self._source_ended(src)
                    elif d < due:
                        best, due = src, d
                if best is not None:
                    if lsl_clock() - self._polled_at > POLL_EVERY_S:
                        # fast or virtual sources may never wait long enough to serve the sockets
                        self._wait(0)
                    if virtual:
                        t_acq = self.clock.wait_until(due)
                    else:
                        if self.prewarm_s and (self._rehearsers or self._last_out is not None):
                            t_due = self.clock.real_time_of(due)
                            if t_due - lsl_clock() > PREWARM_MIN_PERIOD_S:
                                sleep_until(t_due - self.prewarm_s, self._wait_paced)
                                self._rehearse()
                        t_acq = self.clock.wait_until(due, self._wait_paced)
                    if self._stop:
                        break
                    if self.control.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                        self._on_control()  # a live change that came during the last, unpolled, moments of the wait
                    if best in self._active:
                        self._emit_source(best, best.read(), t_acq)
                        if virtual:
                            best.prefetch()
                        elif best not in self._prefetch_pending:
                            self._prefetch_pending.append(best)
                            nxt = best.next_due()
                            gap = self.clock.real_time_of(nxt) - lsl_clock() if nxt is not None else 0.0
                            self._prefetch_at = lsl_clock() + min(PREFETCH_DELAY_S, gap / 2)
            elif self._pushing:
                self._pull_once()
            elif self.remote_streams <= self._ended:
                break
            else:
                tick_due = self._tick_due()
                self._wait(MAX_BLOCK_S if tick_due is None else min(MAX_BLOCK_S, max(0.0, tick_due - lsl_clock())))
            now = lsl_clock()
            tick_due = self._tick_due() if self._deadline_tickers else None
            if now >= next_tick or (tick_due is not None and now >= tick_due):
                for node in self.tickers:
                    node.tick(now)
                    if node.category == "stimulator":
                        self._emit_records(node)
                for s in self.senders.values():
                    s.poll()
                if self._watched:
                    self._flush_watched()
                next_tick = now + 0.02
            if now >= next_status:
                self._status()
                next_status = now + self.status_interval
                if now - self._last_ping > self.supervisor_timeout:
                    msg = f"no word from the supervisor for {self.supervisor_timeout:.0f} s; stopping (safe state)"
                    log.error(msg)
                    self._note_error(f"process '{self.name}': {msg}")
                    self._stop = True
        if not self._stop:
            self._finish_commands()

    def _restore(self, start: dict) -> None:
        """Before the loop: a restarted process takes the live state its nodes had; a replay its schedule.

        ``params``: each node's parameters as last changed while running;
        ``disarmed``: the reason stimulation was disarmed; ``schedule``: the
        recorded changes and actions of a session, each applied before the
        chunk that starts at its recorded sample (``at``).
        """
        for nid, raw in (start.get("params") or {}).items():
            got = self._entry({"op": "set", "node": nid, "raw": raw}, scheduled=True)
            if got is not None:
                got[0].update(got[1]["params"])
                self.specs[nid] = {**self.specs[nid], "params": raw}
        reason = start.get("disarmed")
        if reason:
            for node in self.nodes.values():
                disarm = getattr(node, "disarm", None)
                if node.category == "stimulator" and callable(disarm):
                    disarm(node.ctx.real_clock(), str(reason))
        if start.get("paused"):
            self._paused_at = lsl_clock()
        for item in start.get("schedule") or []:
            if not isinstance(item, dict) or item.get("node") not in self.nodes or not isinstance(item.get("at"), dict):
                continue
            got = self._entry({**item, "id": None}, scheduled=True)
            if got is not None:
                self._pending.setdefault(got[0], []).append(got[1])

    def _finish_commands(self) -> None:
        """Wait (briefly) for the acknowledgement of commands still in flight."""
        deadline = lsl_clock() + 1.0
        while any(s.pending for s in self.senders.values()) and lsl_clock() < deadline and not self._stop:
            self._wait(0.01)
            for s in self.senders.values():
                s.poll()

    def _await_consumers(self) -> None:
        """After a clean end, keep publishing sockets open until every subscriber has left.

        Subscribers leave when they have received the end of every stream they
        read (or when they die). Only then is everything this process sent
        certainly delivered: a process that exits while a slower consumer's
        queue is full can lose the tail of its streams, even with a linger,
        once the connection drops. Bounded by ``FLUSH_S`` (``LOSSLESS_FLUSH_S``
        with the lossless policy) and by a ``stop`` from the supervisor.
        """
        pub = self.publisher
        if pub is None:
            return
        flush_s = LOSSLESS_FLUSH_S if self.transport.policy == "lossless" else FLUSH_S
        deadline = lsl_clock() + flush_s
        while not self._stop and lsl_clock() < deadline:
            pub.poll_subscriptions()
            if not any(n > 0 for n in pub.subscriptions.values()):
                return
            self._on_control()
            time.sleep(0.002)
        if not self._stop:
            log.warning("subscribers of process '%s' still connected %.0f s after its end; closing", self.name, flush_s)

    def _close_sockets(self, clean: bool) -> None:
        """Close every socket. After a clean end, queued messages (the last
        chunks and the end-of-stream marks of a fast replay) are delivered
        first, for at most ``FLUSH_S`` (``LOSSLESS_FLUSH_S`` with the lossless
        policy); after a stop or a failure they are not."""
        flush_s = LOSSLESS_FLUSH_S if self.transport.policy == "lossless" else FLUSH_S
        linger = int(flush_s * 1000) if clean else 0
        if self.publisher is not None:
            self.publisher.close(linger)
        for sender in self.senders.values():
            # Commands are acknowledged one by one (_finish_commands waited for that): what a command socket still
            # queues is an end-of-stream on its way or a re-send of a command already acknowledged. A second is
            # plenty for the first; the second would wait for ever once the stimulate service has ended (its peer
            # gone), and the process would hang in the context's termination instead of exiting.
            sender.close(min(linger, COMMAND_LINGER_MS))
        for receiver in (self.subscriber, self.cmd_receiver):
            if receiver is not None:
                receiver.close()
        self.control.close(linger=1000)
        stop_authenticator(self.zctx)  # its sockets belong to the context
        # Lingering happens in the context: without terminating it, a process that
        # exits drops whatever is still queued (the tail of a fast lossless replay).
        # Every socket is closed with its own linger above; this one applies to none left.
        self.zctx.destroy(linger=linger)


def _implausible(trace: list, now: float) -> str | None:
    """Why a trace's stamps cannot be real ones (None: plausible)."""
    try:
        stamps = [float(t) for _, t in trace]
    except (TypeError, ValueError):
        return "malformed"
    if not all(math.isfinite(t) for t in stamps):
        return "nonfinite"
    if max(stamps) > now + TRACE_FUTURE_S:
        return "future"
    if min(stamps) < now - TRACE_MAX_AGE_S:
        return "stale"
    return None


def _thin(values: list, cap: int = MAX_SAMPLES_PER_STATUS) -> list:
    if len(values) <= cap:
        return [round(v, 1) for v in values]
    step = len(values) / cap
    return [round(values[int(i * step)], 1) for i in range(cap)]


def _merge(into: dict, counts: dict) -> None:
    for k, v in counts.items():
        into[k] = into.get(k, 0) + v


def _send_nowait(sock: zmq.Socket, buf: bytes) -> bool:
    try:
        sock.send(buf, flags=zmq.NOBLOCK)
    except zmq.Again:
        return False
    return True


def _context(inline: bool) -> zmq.Context:
    """The process-wide ZeroMQ context; a new one for a service run in a thread of the supervisor's process."""
    return zmq.Context() if inline else zmq.Context.instance()


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the supervisor dies (no orphans)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _setup_logging(process: str) -> None:
    level = os.environ.get("RTNEURO_LOG", "WARNING").upper()
    logging.basicConfig(level=getattr(logging, level, logging.WARNING), stream=sys.stderr,
                        format=f"[{process}] %(levelname)s %(name)s: %(message)s")


def _build(plan: dict, process: str, inc: int, restart: bool, stop_signals: tuple) -> Service | None:
    """The service for ``process``, stopped cleanly by ``stop_signals``; None if it cannot be built."""
    try:
        service = Service(plan, process, inc, restart=restart)
    except RtneuroError as exc:
        log.error("cannot start: %s", exc)
        return None

    def _stop(signum, frame):
        service.request_stop()

    for sig in stop_signals:
        signal.signal(sig, _stop)
    return service


def serve(control: str, process: str, timeout_s: float = 120.0, keys: str | None = None) -> int:
    """Run one process of a graph whose supervisor runs on another host.

    ``rtneuro run`` prints the command for every process with
    ``launch: remote``; on that process's host, ``rtneuro serve ENDPOINT
    PROCESS`` asks the supervisor for the plan and runs the process as if
    the supervisor had started it. Device profiles and files named in the
    plan must exist on this host at the same paths (shipped profiles are
    found by name). Ctrl-C stops it; so does losing the supervisor. With
    ``keys`` (the run's ``transport.keys`` folder, copied to this host) the
    request for the plan is CURVE-authenticated, as the supervisor requires
    when its graph names keys.
    """
    import socket as _socket

    _setup_logging(process)
    ctx: zmq.Context = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, f"{process}:hello:{os.getpid()}".encode())
    if keys is not None and control.startswith("tcp://"):
        try:
            curve_client(sock, load_keys(keys))
        except RtneuroError as exc:
            log.error("%s", exc)
            sock.close()
            return EXIT_STARTUP
    sock.connect(control)
    hello = pack_control({"op": "hello", "process": process, "host": _socket.gethostname()})
    # bounded, as every socket operation of a service: a DEALER with no connection yet would block its send
    if not (sock.poll(int(timeout_s * 1000), zmq.POLLOUT) and _send_nowait(sock, hello)) or not sock.poll(int(timeout_s * 1000)):
        log.error("no answer from the supervisor at %s within %.0f s; is 'rtneuro run' running and waiting for '%s'?%s",
                  control, timeout_s, process,
                  "" if keys else " (if its graph sets transport.keys, pass --keys with that folder)")
        return EXIT_STARTUP
    try:
        reply = unpack_control(sock.recv())
    except SchemaError as exc:
        log.error("bad answer from the supervisor: %s", exc)
        return EXIT_STARTUP
    finally:
        sock.close()
    if reply["op"] != "plan":
        log.error("the supervisor refused: %s", reply.get("reason", reply))
        return EXIT_STARTUP
    plan = reply["plan"]
    if keys is not None:  # this host's copy of the keys folder, wherever it is here
        plan["transport"]["keys"] = str(Path(keys).expanduser().resolve())
    service = _build(plan, process, int(reply["inc"]), bool(reply.get("restart")), (signal.SIGTERM, signal.SIGINT))
    return EXIT_STARTUP if service is None else service.run()


def exit_process(code: int) -> None:
    """End a service process now, skipping the interpreter's teardown.

    By the time :meth:`Service.run` returns, everything the service owns is
    released explicitly: nodes closed (devices in their safe state, files
    flushed), sockets closed and the ZeroMQ context terminated after its
    linger. What is left is the interpreter's own teardown (freeing every
    module of numpy, scipy, numba, mne...), which takes 0.3 to 1 s of CPU
    per process. Four services doing it at once on a busy two-core machine
    outlasted the supervisor's drain and stop budgets, and clean runs ended
    with "did not stop when asked; terminating it". Skipping it makes a
    service's exit follow its last socket by milliseconds.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def main(argv: list[str] | None = None, kind: str = "process") -> int:
    """Entry point of a service process: ``python -m rtneuro.services.<kind> PLAN PROCESS INC``."""
    argv = sys.argv[1:] if argv is None else argv
    restart = "--restart" in argv
    argv = [a for a in argv if a != "--restart"]
    if len(argv) != 3:
        sys.stderr.write(f"usage: python -m rtneuro.services.{kind} PLAN.json PROCESS INC [--restart]\n")
        return 2
    plan_path, process, inc = argv
    _die_with_parent()
    _setup_logging(process)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor handles Ctrl-C and tells us
    # the kernel's SIGTERM on the supervisor's death is asked for only now, after the imports: a
    # supervisor that died before has left this process to another parent, and it must not run
    ppid = int(os.environ.get(SUPERVISOR_PID_ENV) or os.getppid())
    if os.getppid() != ppid:
        sys.stderr.write(f"[{process}] the supervisor (pid {ppid}) is gone; not starting\n")
        return EXIT_FAILED
    service = _build(json.loads(Path(plan_path).read_text()), process, int(inc), restart, (signal.SIGTERM,))
    if service is None:
        return EXIT_STARTUP
    if os.getppid() != ppid:  # pragma: no cover - parent died during start-up
        return EXIT_FAILED
    return service.run()
