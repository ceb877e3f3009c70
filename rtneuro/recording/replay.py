"""Replay a recorded session through a graph and check that it decides the same.

``rtneuro replay SESSION --check [--config CONFIG]`` rebuilds the graph (the
recorded configuration, or a changed one), replaces each of its sources by a
:class:`SessionReplay` of what that source produced in the session, drops its
sinks (nothing is written but a new session in a temporary folder), runs it
on the virtual clock as fast as possible, and compares every stream the
graph computes with the recorded one: features and signals value for value
(bit-identical), controller commands and gate decisions record for record.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import ConfigError
from ..messages import COMMAND_DTYPE, DECISION_DTYPE, Chunk, StreamMeta, make_events
from ..nodes.base import Node, NodeContext, Source, param
from ..nodes.stimulator import Stimulator, StimulatorParams
from .xdf_read import Session, XdfStream, read_session

#: The replayed graph runs in this one process, its recorder included.
REPLAY_PROCESS = "replay"

__all__ = ["SessionReplay", "SessionReplayParams", "SessionCheck", "SessionCheckParams", "SessionStimulator", "stream_meta", "session_info", "replay_check", "load"]


def _d(tree: Any, *keys: str, default: Any = None) -> Any:
    """Walk pyxdf's nested ``{key: [value]}`` dicts."""
    for k in keys:
        if isinstance(tree, list):
            tree = tree[0] if tree else None
        if not isinstance(tree, dict) or k not in tree:
            return default
        tree = tree[k]
    if isinstance(tree, list):
        tree = tree[0] if tree else default
    return default if tree is None else tree


@lru_cache(maxsize=8)
def _load(path: str, mtime: float, size: int, names: tuple[str, ...] | None) -> Session:
    return read_session(path, names)


def load(path: str | Path, names: Sequence[str] | None = None) -> Session:
    """A session (only the streams ``names``, if given), read once per process (cached on path, time and size)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"session file not found: {p}; give the .xdf that 'rtneuro run --record' wrote")
    st = p.stat()
    return _load(str(p), st.st_mtime, st.st_size, None if names is None else tuple(sorted(names)))


def session_info(session: Session) -> dict:
    """The session metadata rtneuro wrote in the file header (empty for other XDF files)."""
    raw = _d(session.file_header, "info", "rtneuro", "session")
    try:
        return json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        return {}


def stream_meta(xs: XdfStream) -> StreamMeta:
    """The StreamMeta an rtneuro stream had, from its XDF header."""
    info = xs.info
    rt = _d(info, "desc", "rtneuro") or {}
    kind = _d(rt, "kind")
    if kind not in ("sig", "feat", "evt", "cmd"):
        raise ConfigError(f"stream '{xs.name}' of the session was not written by an rtneuro recorder (no desc/rtneuro/kind)")
    chans = _d(info, "desc", "channels") or {}
    ch_list = chans.get("channel", []) if isinstance(chans, dict) else []
    names = tuple(str(_d(c, "label", default="")) for c in ch_list) if kind in ("sig", "feat") else ()
    units = tuple(str(_d(c, "unit", default="")) for c in ch_list) if kind in ("sig", "feat") else ()
    types = tuple(str(_d(c, "type", default="")) for c in ch_list) if kind in ("sig", "feat") else ()
    return StreamMeta(name=xs.name, kind=kind, sfreq=xs.nominal_srate, ch_names=names, ch_types=types, units=units,
                      dtype=str(_d(rt, "dtype", default="<f8")), source=str(_d(rt, "source", default="")),
                      event_id=json.loads(_d(rt, "event_id", default="{}")), desc=json.loads(_d(rt, "desc", default="{}")))


def _records(xs: XdfStream) -> list[dict]:
    col = 1 if stream_meta(xs).kind == "evt" else 0
    return [json.loads(row[col]) for row in xs.time_series]


# -- the source -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionReplayParams:
    """Parameters of :class:`SessionReplay`."""

    path: str = param(doc="the session (.xdf written by rtneuro run --record)")
    streams: list[str] = param(doc="recorded streams to play: '<id>' is the main output, '<id>.<port>' the others")
    chunk_s: float = param(1.0, gt=0, le=10, doc="signal samples per chunk, in seconds (results do not depend on it)")


class SessionReplay(Source):
    """Plays the streams a source produced in a recorded session, on their recorded timestamps.

    Each stream keeps its name, channels, rate, dtype and metadata, its
    samples keep their values and stream times bit for bit, and events keep
    their indices; so a graph fed from it computes what it computed live.
    """

    Params = SessionReplayParams

    def __init__(self, params: SessionReplayParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        session = load(ctx.resolve(params.path), [*params.streams, "rtneuro.chunks"])
        by_name = {s.name: s for s in session.streams}
        cuts = by_name.get("rtneuro.chunks")
        self._cuts: dict[int, np.ndarray] = {}  # stream id -> (first, rows) of the chunks the graph had
        if cuts is not None and len(cuts.time_stamps):
            rows = np.asarray(cuts.time_series, dtype=np.int64)
            for sid in np.unique(rows[:, 0]):
                self._cuts[int(sid)] = rows[rows[:, 0] == sid, 1:]
        self.outputs = {}
        self._chunks: list[tuple[float, int, str, Chunk]] = []
        nid = ctx.node_id
        for k, name in enumerate(params.streams):
            xs = by_name.get(name)
            if xs is None:
                raise ConfigError(f"stream '{name}' is not in session {session.path} (it has {sorted(s.name for s in load(session.path).streams)})")
            if name == nid:
                port = ""
            elif name.startswith(nid + "."):
                port = name[len(nid) + 1:]
            else:
                raise ConfigError(f"session_replay '{nid}' can only play '{nid}' and '{nid}.<port>' streams, not '{name}'")
            meta = stream_meta(xs)
            self.outputs[port] = meta
            self._chunks.extend((due, k, port, c) for due, c in self._split(xs, meta))
        self._chunks.sort(key=lambda x: (x[0], x[1]))
        self._t_first = min((c[3].t0 for c in self._chunks), default=0.0)
        self._pos = 0
        self._origin = 0.0

    def _split(self, xs: XdfStream, meta: StreamMeta) -> list[tuple[float, Chunk]]:
        ts = np.asarray(xs.time_stamps, dtype=float)
        n = ts.size
        out = []
        cuts = self._cuts.get(xs.stream_id)
        if meta.kind in ("sig", "feat"):
            data = np.ascontiguousarray(np.asarray(xs.time_series, dtype=np.dtype(meta.dtype)).reshape(n, -1))
            if cuts is not None and int(cuts[:, 1].sum()) == n:  # the graph's own chunks (rows in order)
                pos = 0
                for first, rows in cuts.tolist():
                    out.append((float(ts[pos + rows - 1]), Chunk(data[pos:pos + rows], first, float(ts[pos]), meta.sfreq, [])))
                    pos += rows
                return out
            for a, b in _regular_runs(ts, meta.sfreq, max(1, int(round(self.params.chunk_s * meta.sfreq))) if meta.sfreq > 0 else 1):
                out.append((float(ts[b - 1]), Chunk(data[a:b], a, float(ts[a]), meta.sfreq, [])))
            return out
        recs = _records(xs)
        if meta.kind == "evt":
            arr = make_events([(r["index"], r["t"], r["code"], r["channel"], r["duration"], r["value"], r["label"]) for r in recs])
        else:
            dt = DECISION_DTYPE if meta.dtype == "decision" else COMMAND_DTYPE
            arr = np.zeros(len(recs), dtype=dt)
            for name in dt.names or ():
                arr[name] = [r[name].encode() if isinstance(r[name], str) else r[name] for r in recs]
        if cuts is not None and int(cuts[:, 1].sum()) == len(recs):  # the graph's own chunks
            pos = 0
            for first, rows in cuts.tolist():
                if rows:
                    out.append((float(ts[pos + rows - 1]), Chunk(arr[pos:pos + rows], first, float(ts[pos]), 0.0, [])))
                pos += rows
            return out
        for i, r in enumerate(recs):  # one chunk per record, at its time
            out.append((float(ts[i]), Chunk(arr[i:i + 1], int(r["index"]), float(ts[i]), 0.0, [])))
        return out

    def start(self, origin: float, resume: int = 0) -> None:
        self._origin = origin
        if resume:
            self._pos = resume

    def position(self) -> int:
        return self._pos

    def next_due(self) -> float | None:
        if self._pos >= len(self._chunks):
            return None
        return self._origin + (self._chunks[self._pos][0] - self._t_first)

    def read(self) -> list:
        _due, _k, port, c = self._chunks[self._pos]
        self._pos += 1
        return [(port, Chunk(c.data, c.first, c.t0, c.sfreq, []))]

    def report(self) -> dict:
        times = [due for due, _k, _p, _c in self._chunks]
        return {"chunks": len(self._chunks), "played": self._pos,
                "span_s": round(max(times) - self._t_first, 6) if times else 0.0}


def _regular_runs(ts: np.ndarray, sfreq: float, longest: int) -> list[tuple[int, int]]:
    """Chunks ``[a, b)`` whose times are ``ts[a] + i / sfreq``, as a chunk's samples are timed.

    A live source times each chunk on its own (LSL time correction), so the
    recorded times jump a little between chunks: a chunk boundary goes at
    every jump of more than 0.1 ns, where the graph had one, so that every
    node sees the times it saw live. Regular stretches are cut every
    ``longest`` samples (results do not depend on where).
    """
    n = ts.size
    if n == 0:
        return []
    if sfreq <= 0:
        return [(i, i + 1) for i in range(n)]
    dt = 1.0 / sfreq
    runs = []
    a = 0
    while a < n:
        b = min(n, a + longest)
        expected = ts[a] + np.arange(b - a) * dt
        off = np.flatnonzero(np.abs(ts[a:b] - expected) > 1e-10)
        if off.size:
            b = a + int(off[0])
        runs.append((a, b))
        a = b
    return runs


# -- the check ------------------------------------------------------------------------------


def _replay_graph(session_path: Path, session: Session, config: Path | None, tmp: Path) -> tuple[dict, Path, list[str], list[str]]:
    """The graph to rerun: recorded (or given) config, sources replayed from the session, no sinks."""
    from ..nodes import node_class

    info = session_info(session)
    if config is not None:
        doc = yaml.safe_load(config.read_text())
        base_dir = config.parent
    else:
        if not info.get("config"):
            raise ConfigError(f"{session_path} holds no configuration (not an rtneuro session?); give one with --config")
        doc = yaml.safe_load(info["config"])
        base_dir = Path(info.get("config_path", str(session_path))).parent
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list):
        raise ConfigError("the configuration has no 'nodes' list")
    recorded = list(session.names)
    nodes, sources, dropped = [], [], []
    real_time = [f"{n['id']}.delivered" for n in doc["nodes"]
                 if n.get("type") == "stimulator" and (n.get("params") or {}).get("timebase", "real") != "stream"]
    for raw in doc["nodes"]:
        try:
            cls = node_class(raw.get("type", ""))
        except ConfigError:
            nodes.append(raw)
            continue
        if cls.category == "source":
            nid = raw["id"]
            mine = [s for s in recorded if s == nid or s.startswith(nid + ".")]
            if not mine:
                raise ConfigError(f"source '{nid}' of the configuration is not in the session (recorded streams: {recorded})")
            nodes.append({"id": nid, "type": "session_replay", "params": {"path": str(session_path), "streams": mine}})
            sources.append(nid)
        elif cls.category == "sink":
            dropped.append(raw["id"])
        else:
            if raw.get("type") == "stimulator":
                params = {k: v for k, v in (raw.get("params") or {}).items() if k != "log_path"}
                if params.get("timebase", "real") != "stream":  # its real-time refusals are repeated
                    raw = {**raw, "type": "session_stimulator", "params": {**params, "session": str(session_path)}}
                else:
                    raw = {**raw, "params": params}
            nodes.append(raw)
    # one process: no hop to pay for, and the order of everything is the data's
    nodes = [{**{k: v for k, v in n.items() if k != "process"}, "process": REPLAY_PROCESS} for n in nodes]
    doc = {**doc, "nodes": nodes, "runtime": {**(doc.get("runtime") or {}), "speed": "max"}}
    doc["processes"] = {REPLAY_PROCESS: {"restart": "never"}}  # a failure is a result, not something to retry
    doc.pop("transport", None)  # one host, ipc, lossless (speed max)
    doc["control"] = {"enabled": False}  # the recorded changes are applied from the session, nobody steers a check
    path = tmp / "replay.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return doc, base_dir, sources, real_time


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionCheckParams:
    """Parameters of :class:`SessionCheck`."""

    path: str = param(doc="the recorded session its inputs are compared with")
    listed: int = param(3, ge=0, le=100, doc="differences described per stream")


class SessionCheck(Node):
    """Compares every input, row by row, with the stream of the same name in a recorded session.

    Signals and features: values bit for bit (NaN equals NaN), times within
    1 ns. Events, commands and gate decisions: every field of every record,
    except the LSL time of a decision (``time``, and the row time the
    recorder took from it), which follows the machine rather than the data.
    The comparison runs as the replayed graph computes, so nothing is
    written to disk; the report holds the counts and the first differences.
    """

    category = "sink"
    Params = SessionCheckParams
    input_kinds = ("sig|feat|evt|cmd",)
    max_inputs = 1024

    def __init__(self, params: SessionCheckParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        self.path = ctx.resolve(params.path)
        self.reset()

    def reset(self) -> None:
        n = len(self.inputs)
        self.compared = [0] * n
        self.differing = [0] * n
        self.first: list[list[str]] = [[] for _ in range(n)]
        self._seen = [0] * n

    _rec: list[Any] | None = None

    def open(self) -> None:
        self._rec = []
        session = load(self.path, [m.name for m in self.inputs])
        by = {s.name: s for s in session.streams}
        for m in self.inputs:
            xs = by.get(m.name)
            if xs is None:
                self._rec.append(None)
            elif m.kind in ("sig", "feat"):
                n = len(xs.time_stamps)
                self._rec.append((np.asarray(xs.time_series, dtype=np.float64).reshape(n, -1), np.asarray(xs.time_stamps)))
            else:
                self._rec.append(_records(xs))

    def _note(self, port: int, k: int, text: str) -> None:
        self.differing[port] += k
        if len(self.first[port]) < self.params.listed:
            self.first[port].append(text)

    def process(self, chunk: Chunk, port: int = 0) -> None:
        from ..nodes.sinks import _rows

        meta = self.inputs[port]
        if self._rec is None:
            raise RuntimeError("session_check used before open()")
        rec = self._rec[port]
        n = chunk.data.shape[0]
        if n == 0:
            return None
        self.compared[port] += n
        if rec is None:
            self._note(port, n, "not in the recorded session")
            return None
        if meta.kind in ("sig", "feat"):
            data, ts = rec
            a = chunk.first
            got = np.asarray(chunk.data, dtype=np.float64)
            want = data[a:a + n]
            m = want.shape[0]
            dt = 1.0 / chunk.sfreq if chunk.sfreq > 0 else 0.0
            t = chunk.t0 + np.arange(m) * dt
            bad = ~np.all((got[:m] == want) | (np.isnan(got[:m]) & np.isnan(want)), axis=1) | (np.abs(t - ts[a:a + m]) > 1e-9)
            for i in np.flatnonzero(bad)[: self.params.listed]:
                self._note(port, 0, f"row {a + i}: recorded {want[i].tolist()[:4]} at {ts[a + i]:.6f}, replayed {got[i].tolist()[:4]} at {t[i]:.6f}")
            self.differing[port] += int(bad.sum())
            if m < n:
                self._note(port, n - m, f"rows {a + m}..{a + n - 1} are not in the recording (it has {data.shape[0]})")
            self._seen[port] = max(self._seen[port], a + n)
            return None
        skip = {"time", "t"} if meta.dtype == "decision" else {"time"}
        for row in _rows(chunk, meta):
            row = json.loads(json.dumps(row))  # as the recorder wrote it
            i = self._seen[port]
            self._seen[port] += 1
            if i >= len(rec):
                self._note(port, 1, f"record {i} is not in the recording: {row}")
            elif not _same(rec[i], row, skip):
                self._note(port, 1, f"record {i}: recorded {rec[i]}, replayed {row}")
        return None

    def report(self) -> dict:
        out = {}
        for port, m in enumerate(self.inputs):
            rec = self._rec[port] if self._rec is not None and port < len(self._rec) else None
            total = 0 if rec is None else (rec[0].shape[0] if isinstance(rec, tuple) else len(rec))
            missing = max(0, total - self._seen[port])
            first = list(self.first[port])
            if missing:
                first.append(f"{missing} recorded rows were not computed by the replayed graph")
            out[m.name] = {"compared": max(self.compared[port], total), "differing": self.differing[port] + missing, "first": first}
        return {"streams": out}


def _same(x: dict, y: dict, skip: set[str]) -> bool:
    for k in x.keys() | y.keys():
        if k in skip:
            continue
        u, v = x.get(k), y.get(k)
        if isinstance(u, float) and isinstance(v, float):
            if not (u == v or (math.isnan(u) and math.isnan(v)) or (k in ("t", "t_stream") and abs(u - v) <= 1e-9)):
                return False
        elif u != v:
            return False
    return True


#: Refusals on time that depend on the real clock: lateness in the live run, not the data.
_REAL_TIME_REFUSALS = ("expired", "time_ahead")


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStimulatorParams(StimulatorParams):
    """Parameters of :class:`SessionStimulator`."""

    session: str = param(doc="the recorded session whose real-time refusals this gate repeats")


class SessionStimulator(Stimulator):
    """A ``timebase: real`` stimulator in a replay check: the recording's real-time refusals are inputs.

    Live, a command can arrive after its deadline, or dated ahead of the
    stream clock, because the machine was late, not because of the data; the
    replay on the virtual clock has no such lateness. This gate refuses again,
    with the recorded reason, each command or heartbeat the recorded gate
    refused as ``expired`` or ``time_ahead`` (matched by index, stream time
    and kind), and decides everything else itself. Watchdog trips on the real
    clock are not repeated: the check reports them as differences.
    """

    Params = SessionStimulatorParams

    def __init__(self, params: SessionStimulatorParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        self._verdicts: dict[tuple[int, float, int], str] = {}
        self.repeated = 0

    def open(self) -> None:
        super().open()
        name = self.outputs["decisions"].name
        xs = next((x for x in load(self.ctx.resolve(self.params.session), [name]).streams if x.name == name), None)
        for r in _records(xs) if xs is not None else []:
            reason = str(r.get("reason", ""))
            if r.get("status") == 2 and reason.split(":")[0] in _REAL_TIME_REFUSALS and isinstance(r.get("t_stream"), float):
                self._verdicts[(int(r.get("cause_index", -1)), round(r["t_stream"], 9), int(r.get("kind", -1)))] = reason

    def time_verdict(self, cause: int, t_stream: float, kind: int) -> str:
        why = self._verdicts.pop((cause, round(t_stream, 9), kind), "")
        self.repeated += bool(why)
        return why

    def report(self) -> dict:
        return {**super().report(), "real_time_refusals_repeated": self.repeated}


#: Control records that change what a graph decides, and what the replay does with them.
_ACTIONS = {"disarm": "disarm", "arm": "arm", "estop": "emergency_stop", "estop_clear": "clear_emergency_stop"}


def control_schedule(session: Session | str | Path, config_nodes: list[dict]) -> tuple[list[dict], list[dict]]:
    """The recorded live changes and actions of a session, as a replay applies them; and every control record.

    Each entry names the node, what to apply (``set`` with the node's whole
    parameters at that moment, or an action) and ``at``: the stream and
    sample index before which it took effect live.
    """
    if not isinstance(session, Session):
        session = load(session, ["rtneuro.control"])
    xs = next((x for x in session.streams if x.name == "rtneuro.control"), None)
    if xs is None:
        return [], []
    records = []
    for row in xs.time_series:
        try:
            rec = json.loads(row[0])
        except (TypeError, ValueError, IndexError):
            continue
        if isinstance(rec, dict):
            records.append(rec)
    records.sort(key=lambda r: r.get("seq", 0) if isinstance(r.get("seq"), int) else 0)
    raw = {n["id"]: dict(n.get("params") or {}) for n in config_nodes if isinstance(n, dict) and "id" in n}
    schedule = []
    for rec in records:
        op = rec.get("op")
        applied: dict = rec["applied"] if isinstance(rec.get("applied"), dict) else {}
        for nid, a in applied.items():
            at = a.get("at") if isinstance(a, dict) else None
            if not isinstance(at, dict) or not at or nid not in raw:
                continue
            if op == "set":
                values = (rec.get("values") or {}).get(nid)
                if not isinstance(values, dict):
                    continue
                raw[nid] = {**raw[nid], **values}
                schedule.append({"op": "set", "node": nid, "raw": dict(raw[nid]), "at": at, "seq": rec.get("seq")})
            elif op in _ACTIONS:
                schedule.append({"op": "action", "node": nid, "action": _ACTIONS[op], "at": at, "seq": rec.get("seq"),
                                 "reason": str((rec.get("args") or {}).get("reason") or op)})
            elif op in ("pause", "resume") and (rec.get("args") or {}).get("stimulation") in ("disarm", "arm"):
                schedule.append({"op": "action", "node": nid, "action": rec["args"]["stimulation"], "at": at, "seq": rec.get("seq"),
                                 "reason": "the replay is paused" if op == "pause" else "the replay resumed"})
    return schedule, records


def replay_check(session_path: str | Path, config: str | Path | None = None,
                 out: Callable[[str], None] | None = print, apply_control: bool = True) -> dict:
    """Rerun a session through its graph (or ``config``) on the virtual clock; compare what it computes.

    Returns a dict with ``speed_x`` (recorded seconds per wall second of the
    rerun), ``decisions`` (controller commands and gate decisions compared),
    ``differing`` (how many of them differ), ``streams`` (per stream:
    compared, differing, first differences) and ``exit_code``.
    """
    from ..config import load_graph
    from ..runtime.supervisor import Supervisor

    session_path = Path(session_path).expanduser().resolve()
    session = read_session(session_path, names=())  # headers, the configuration and the damage: no samples yet
    if session.damage:
        (out or (lambda s: None))(f"note: {session.damage}; checking what was read")
    recorded = [n for n in session.names if not n.startswith("rtneuro.")]
    session.names = recorded
    with tempfile.TemporaryDirectory(prefix="rtn-check-") as d:
        tmp = Path(d)
        _doc, base_dir, sources, real_time = _replay_graph(session_path, session, Path(config).resolve() if config else None, tmp)
        graph_file = tmp / "replay.yaml"
        base = load_graph(graph_file, base_dir=base_dir)  # validation errors name the config, before anything runs
        source_streams = {n for n in recorded if any(n == s or n.startswith(s + ".") for s in sources)}
        compared = sorted(n for n in base.streams if n in recorded and n not in source_streams and n not in real_time)
        checker = {"id": "session_check", "type": "session_check", "process": REPLAY_PROCESS, "inputs": compared,
                   "params": {"path": str(session_path)}}
        graph = load_graph(graph_file, base_dir=base_dir, extra_nodes=[checker] if compared else None)
        schedule, control = control_schedule(session_path, _doc["nodes"])
        if not apply_control:  # what the graph would have decided without the operator's changes
            schedule = []
        t0 = time.perf_counter()
        sup = Supervisor(graph, out=io.StringIO(), quiet=True, schedule=schedule, inline=True)
        code = sup.run()
        wall = time.perf_counter() - t0
    checked = (sup.report.get("nodes", {}).get("session_check") or {}).get("streams", {})
    streams: dict[str, dict] = {}
    decisions = differing = 0
    for name in recorded:
        if name in source_streams:
            continue
        if name in real_time:
            streams[name] = {"compared": 0, "differing": 0,
                             "first": ["not compared: the gate of a stimulator on 'timebase: real' delivers on the real clock"]}
        elif name not in base.streams:
            streams[name] = {"compared": 0, "differing": 1, "first": ["not computed by the replayed graph"]}
        else:
            row = checked.get(name) or {"compared": 0, "differing": 0, "first": ["no result (see the errors)"]}
            streams[name] = row
            if base.streams[name].kind == "cmd":
                decisions += row["compared"]
                differing += row["differing"]
    for name in base.streams:
        if name not in recorded:
            streams[name] = {"compared": 0, "differing": 0, "first": ["new in the replayed graph (not recorded)"]}
    spans = [sup.report.get("nodes", {}).get(s, {}).get("span_s") for s in sources]
    span = max((x for x in spans if isinstance(x, (int, float))), default=0.0)
    result = {"session": str(session_path), "exit_code": code, "wall_s": round(wall, 3),
              "recorded_s": round(span, 3), "speed_x": round(span / wall, 1) if wall > 0 else None,
              "decisions": decisions, "differing": differing, "streams": streams, "errors": sup.report.get("errors", []),
              "control": {"records": len(control), "applied_again": len(schedule)},
              "real_time_refusals_repeated": sum(int(n.get("real_time_refusals_repeated", 0))
                                                 for n in sup.report.get("nodes", {}).values() if isinstance(n, dict))}
    if out is not None:
        for name, s in streams.items():
            mark = "same" if s["differing"] == 0 and s["compared"] else "DIFFERENT" if s["differing"] else "-"
            out(f"  {name}: {s['compared']} compared, {s['differing']} differing ({mark})")
            for line in s["first"]:
                out(f"      {line[:300]}")
        for e in result["errors"]:
            out(f"  error: {e}")
        if control:
            out(f"  control: {len(control)} operator records in the session, {len(schedule)} changes and actions applied again at their recorded samples")
        if result["real_time_refusals_repeated"]:
            out(f"  {result['real_time_refusals_repeated']} commands the recorded gate refused on the real clock "
                "(expired, time_ahead: the live machine was late) were refused again")
        verdict = ("the replayed graph failed (errors above)" if code != 0 else
                   "no decision differs" if differing == 0 else f"{differing} of {decisions} decisions differ")
        out(f"replay check: {verdict}; {span:.1f} s of session replayed in {wall:.2f} s ({result['speed_x']}x real time)")
    return result
