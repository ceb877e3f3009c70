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
from ..nodes.base import NodeContext, Source, param
from .xdf_read import Session, XdfStream, read_session

#: The replayed graph runs in this one process, its recorder included.
REPLAY_PROCESS = "replay"

__all__ = ["SessionReplay", "SessionReplayParams", "stream_meta", "session_info", "replay_check", "load"]


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
        session = load(ctx.resolve(params.path), params.streams)
        by_name = {s.name: s for s in session.streams}
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
        if meta.kind in ("sig", "feat"):
            data = np.ascontiguousarray(np.asarray(xs.time_series, dtype=np.dtype(meta.dtype)).reshape(n, -1))
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
    recorded = [s.name for s in session.streams]
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
                raw = {**raw, "params": {k: v for k, v in (raw.get("params") or {}).items() if k != "log_path"}}
            nodes.append(raw)
    # one process: no hop to pay for, and the order of everything is the data's
    nodes = [{**{k: v for k, v in n.items() if k != "process"}, "process": REPLAY_PROCESS} for n in nodes]
    doc = {**doc, "nodes": nodes, "runtime": {**(doc.get("runtime") or {}), "speed": "max"}}
    doc.pop("processes", None)
    doc.pop("transport", None)  # one host, ipc, lossless (speed max)
    path = tmp / "replay.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return doc, base_dir, sources, real_time


def _compare_numeric(a: XdfStream, b: XdfStream) -> tuple[int, int, list[str]]:
    xa, xb = np.asarray(a.time_series), np.asarray(b.time_series)
    n = max(len(xa), len(xb))
    m = min(len(xa), len(xb))
    rows = ~np.all((xa[:m] == xb[:m]) | (np.isnan(xa[:m]) & np.isnan(xb[:m])), axis=1) if m else np.zeros(0, bool)
    ts_bad = np.abs(np.asarray(a.time_stamps[:m]) - np.asarray(b.time_stamps[:m])) > 1e-9
    bad = rows | ts_bad
    diffs = [f"row {i}: recorded {xa[i].tolist()[:4]} at {a.time_stamps[i]:.6f}, replayed {xb[i].tolist()[:4]} at {b.time_stamps[i]:.6f}"
             for i in np.flatnonzero(bad)[:3]]
    if len(xa) != len(xb):
        diffs.append(f"recorded {len(xa)} rows, replayed {len(xb)}")
    return n, int(bad.sum()) + (n - m), diffs


def _compare_records(a: XdfStream, b: XdfStream) -> tuple[int, int, list[str]]:
    ra, rb = _records(a), _records(b)
    # fields that follow the real clock, not the data, are not compared: a decision's
    # 'time' (and the row time 't' the recorder took from it)
    skip = {"time", "t"} if stream_meta(a).dtype == "decision" else {"time"}
    n, m = max(len(ra), len(rb)), min(len(ra), len(rb))

    def same(x: dict, y: dict) -> bool:
        for k in x.keys() | y.keys():
            if k in skip:
                continue
            u, v = x.get(k), y.get(k)
            if isinstance(u, float) and isinstance(v, float):
                if not (u == v or (math.isnan(u) and math.isnan(v)) or (k == "t" or k == "t_stream") and abs(u - v) <= 1e-9):
                    return False
            elif u != v:
                return False
        return True

    bad = [i for i in range(m) if not same(ra[i], rb[i])]
    diffs = [f"record {i}: recorded {ra[i]}, replayed {rb[i]}" for i in bad[:3]]
    if len(ra) != len(rb):
        diffs.append(f"recorded {len(ra)} records, replayed {len(rb)}")
    return n, len(bad) + (n - m), diffs


def replay_check(session_path: str | Path, config: str | Path | None = None,
                 out: Callable[[str], None] | None = print) -> dict:
    """Rerun a session through its graph (or ``config``) on the virtual clock; compare what it computes.

    Returns a dict with ``speed_x`` (recorded seconds per wall second),
    ``decisions`` (controller commands and gate decisions compared),
    ``differing`` (how many of them differ), ``streams`` (per stream:
    compared, differing, first differences) and ``exit_code``.
    """
    from ..config import load_graph
    from ..runtime.supervisor import Supervisor
    from .session import recording_graph

    session_path = Path(session_path).expanduser().resolve()
    session = read_session(session_path)
    if session.damage:
        (out or (lambda s: None))(f"note: {session.damage}; checking what was read")
    with tempfile.TemporaryDirectory(prefix="rtn-check-") as d:
        tmp = Path(d)
        _doc, base_dir, sources, real_time = _replay_graph(session_path, session, Path(config).resolve() if config else None, tmp)
        graph_file = tmp / "replay.yaml"
        load_graph(graph_file, base_dir=base_dir)  # validation errors name the config, before anything runs
        replayed_sources = {s.name for s in session.streams if any(s.name == n or s.name.startswith(n + ".") for n in sources)}
        graph, new_path = recording_graph(graph_file, tmp, flush_s=5.0, min_free_mb=0, base_dir=base_dir,
                                          process=REPLAY_PROCESS, fsync=False, exclude=replayed_sources)
        t0 = time.perf_counter()
        sup = Supervisor(graph, out=io.StringIO(), quiet=True)
        code = sup.run()
        wall = time.perf_counter() - t0
        replayed = read_session(new_path)
    rec = {s.name: s for s in session.streams}
    rep = {s.name: s for s in replayed.streams}
    source_streams = {s for s in rec if any(s == n or s.startswith(n + ".") for n in sources)}
    streams: dict[str, dict] = {}
    decisions = differing = 0
    for name, a in rec.items():
        if name.startswith("rtneuro.") or name in source_streams:
            continue
        b = rep.get(name)
        if name in real_time:
            streams[name] = {"compared": 0, "differing": 0,
                             "first": ["not compared: the gate of a stimulator on 'timebase: real' delivers on the real clock"]}
            continue
        if b is None:
            streams[name] = {"compared": len(a.time_stamps), "differing": len(a.time_stamps), "first": ["not computed by the replayed graph"]}
            continue
        kind = stream_meta(a).kind
        if kind in ("sig", "feat"):
            n, k, diffs = _compare_numeric(a, b)
        else:
            n, k, diffs = _compare_records(a, b)
            if kind == "cmd":
                decisions += n
                differing += k
        streams[name] = {"compared": n, "differing": k, "first": diffs}
    for name in rep:
        if name not in rec and not name.startswith("rtneuro."):
            streams[name] = {"compared": 0, "differing": 0, "first": ["new in the replayed graph (not recorded)"]}
    src_ts = [np.asarray(rec[s].time_stamps) for s in source_streams if len(rec[s].time_stamps)]
    span = max((float(t[-1]) for t in src_ts), default=0.0) - min((float(t[0]) for t in src_ts), default=0.0)
    result = {"session": str(session_path), "exit_code": code, "wall_s": round(wall, 3),
              "recorded_s": round(span, 3), "speed_x": round(span / wall, 1) if wall > 0 else None,
              "decisions": decisions, "differing": differing, "streams": streams, "errors": sup.report.get("errors", [])}
    if out is not None:
        for name, s in streams.items():
            mark = "same" if s["differing"] == 0 and s["compared"] else "DIFFERENT" if s["differing"] else "-"
            out(f"  {name}: {s['compared']} compared, {s['differing']} differing ({mark})")
            for line in s["first"]:
                out(f"      {line[:300]}")
        verdict = "no decision differs" if differing == 0 else f"{differing} of {decisions} decisions differ"
        out(f"replay check: {verdict}; {span:.1f} s of session replayed in {wall:.2f} s ({result['speed_x']}x real time)")
    return result
