"""The recorder: every stream of a graph, with the gate's decisions and their provenance, in one XDF session file."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, RtneuroError
from ..messages import CMD_HOLD, Chunk, StreamMeta
from ..recording.xdf_writer import RecordingError
from .base import Node, NodeContext, param
from .sinks import _ANY, _rows

__all__ = ["Recorder", "RecorderParams", "LATENCY_EDGES_US", "xdf_format", "xdf_type"]

log = logging.getLogger(__name__)

#: Samples gathered in memory are written once they reach this many bytes (or flush_s / 4 has passed).
GATHER_BYTES = 1_000_000

#: Latency histogram bin edges in microseconds: 10 bins per decade from 1 us to 10 s.
LATENCY_EDGES_US = np.logspace(0, 7, 71)

_FORMATS = {"<f8": "double64", "<f4": "float32", "<i8": "int64", "<i4": "int32", "<i2": "int16", "|i1": "int8"}


def xdf_format(meta: StreamMeta) -> str:
    """XDF channel format of a stream: numeric as on the wire, structured records as JSON strings."""
    return _FORMATS.get(np.dtype(meta.dtype).str, "string") if meta.kind in ("sig", "feat") else "string"


def xdf_type(meta: StreamMeta) -> str:
    """XDF content type: the channel type for signals (EEG, ECOG...), else what the records are."""
    if meta.kind == "sig":
        types = set(meta.ch_types)
        return next(iter(types)).upper() if len(types) == 1 else "Signal"
    return {"feat": "Features", "evt": "Markers", "cmd": "Decisions" if meta.dtype == "decision" else "Commands"}[meta.kind]


@dataclass(frozen=True, slots=True, kw_only=True)
class RecorderParams:
    """Parameters of :class:`Recorder`."""

    path: str = param(doc="session file to write (.xdf); it must not exist yet")
    flush_s: float = param(1.0, gt=0, le=60, doc="write to disk at least this often: what a crash can lose")
    fsync: bool = param(True, doc="fsync at every flush (a power cut loses at most flush_s)")
    min_free_mb: float = param(50.0, ge=0, doc="refuse to start with less free disk space than this")
    session: dict[str, Any] = param({}, doc="session metadata for the file header (rtneuro run --record fills it)")


@dataclass(slots=True)
class _Track:
    """What the recorder knows of one input stream."""

    sid: int
    meta: StreamMeta
    fmt: str
    next_index: int | None = None
    samples: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    gaps: int = 0
    gap_samples: int = 0
    restarts: int = 0
    e2e: np.ndarray = field(default_factory=lambda: np.zeros(len(LATENCY_EDGES_US) - 1, dtype=np.int64))
    pending_ts: list = field(default_factory=list)
    pending: list = field(default_factory=list)


class Recorder(Node):
    """Writes every input stream to one XDF file, losslessly, crash-safe.

    One XDF stream per rtneuro stream, on the stream clock (the timestamps the
    graph computed with): signals and features as numbers in their wire
    format, events as ``[label, JSON]`` string samples, commands and gate
    decisions as JSON string samples. Two more streams: ``rtneuro.gaps``
    (every gap or restart seen in an input, never hidden) and
    ``rtneuro.provenance`` (for each stimulation command: the feature frame
    and values, the input window and the controller state that caused it).
    The file header holds the session metadata; each stream's footer its
    counts, gaps and latency histogram (acquisition to recorder, per hop).

    The runtime subscribes a recorder's process without a backlog policy
    (``lossless_inputs``): under the ``latest`` policy a publisher whose queue
    to the recorder overflows still drops, and the recorder records the gap.
    Everything is on disk at most ``flush_s`` after it arrived; after a
    SIGKILL the file reads back up to the last flush.
    """

    category = "sink"
    Params = RecorderParams
    input_kinds = (_ANY,)
    max_inputs = 1024
    lossless_inputs = True

    def __init__(self, params: RecorderParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        self.path = ctx.resolve(params.path)
        if self.path.suffix.lower() != ".xdf":
            raise ConfigError(f"recorder path {self.path} must end in .xdf")
        self.tracks = [_Track(i + 1, m, xdf_format(m)) for i, m in enumerate(inputs)]
        self._by_name = {m.name: m for m in inputs}
        self.gap_sid = len(inputs) + 1
        self.prov_sid = len(inputs) + 2
        self.chunk_sid = len(inputs) + 3
        self.ctl_sid = len(inputs) + 4
        self.display_sid = len(inputs) + 5
        self.control_records = 0
        self.display_records = 0
        self._chunk_rows: list[tuple[int, int, int]] = []
        self._chunk_ts: list[float] = []
        self.writer: Any = None
        self.hops: dict[str, np.ndarray] = {}
        self.provenance = 0
        self.gap_events = 0

    def open(self) -> None:
        from ..recording.xdf_writer import XdfWriter, check_writable

        if self.path.exists():
            raise RtneuroError(f"session file {self.path} exists already; choose another path (sessions are never overwritten)")
        check_writable(self.path.parent, int(self.params.min_free_mb * 1e6))
        header = {"rtneuro": {"session": json.dumps(self.params.session, default=str)}}
        # samples are gathered per stream for a quarter of flush_s, then written as one chunk each
        # (a 30-fold smaller chunk count than one chunk per message: files read back that much faster)
        self._gather_s = self.params.flush_s / 4
        self._gathered_at = time.monotonic()
        self._gathered_bytes = 0
        w = XdfWriter(self.path, flush_s=self.params.flush_s - self._gather_s, fsync=self.params.fsync, file_header=header)
        for tr in self.tracks:
            m = tr.meta
            n_ch = m.n_channels if m.kind in ("sig", "feat") else (2 if m.kind == "evt" else 1)
            chans = ([{"label": n, "unit": u, "type": t} for n, u, t in zip(m.ch_names, m.units or ("",) * len(m.ch_names),
                                                                              m.ch_types or ("",) * len(m.ch_names), strict=False)]
                     if m.kind in ("sig", "feat") else [{"label": "label"}, {"label": "record"}] if m.kind == "evt" else [{"label": "record"}])
            desc = {"channels": {"channel": chans},
                    "rtneuro": {"kind": m.kind, "dtype": m.dtype, "source": m.source,
                                "event_id": json.dumps(m.event_id), "desc": json.dumps(m.desc, default=str)}}
            w.add_stream(tr.sid, name=m.name, type=xdf_type(m), channel_count=n_ch, nominal_srate=m.sfreq,
                         channel_format=tr.fmt, source_id=f"rtneuro:{self.ctx.node_id}:{m.name}", desc=desc)
        w.add_stream(self.gap_sid, name="rtneuro.gaps", type="Markers", channel_count=1, nominal_srate=0.0,
                     channel_format="string", source_id=f"rtneuro:{self.ctx.node_id}:gaps",
                     desc={"rtneuro": {"kind": "gaps", "about": "one JSON record per gap or restart seen in an input stream"}})
        w.add_stream(self.prov_sid, name="rtneuro.provenance", type="Provenance", channel_count=1, nominal_srate=0.0,
                     channel_format="string", source_id=f"rtneuro:{self.ctx.node_id}:provenance",
                     desc={"rtneuro": {"kind": "provenance",
                                       "about": "one JSON record per stimulation command: what caused it (feature frame and values, input window, controller state)"}})
        w.add_stream(self.chunk_sid, name="rtneuro.chunks", type="Chunks", channel_count=3, nominal_srate=0.0,
                     channel_format="int64", source_id=f"rtneuro:{self.ctx.node_id}:chunks",
                     desc={"rtneuro": {"kind": "chunks", "about": "one sample per chunk received: [stream id in this file, index of its first row, rows]; "
                                       "a replay cuts the streams where the graph did"}})
        w.add_stream(self.ctl_sid, name="rtneuro.control", type="Markers", channel_count=1, nominal_srate=0.0,
                     channel_format="string", source_id=f"rtneuro:{self.ctx.node_id}:control",
                     desc={"rtneuro": {"kind": "ctl", "about": "one JSON record per operator change or action (live parameters with the "
                                       "stream and sample index where each took effect, annotations, arm/disarm, emergency stops, "
                                       "recording segments, pauses), with who made it; rtneuro replay --check applies them again"}})
        w.add_stream(self.display_sid, name="rtneuro.display", type="Latency", channel_count=4, nominal_srate=0.0,
                     channel_format="double64", source_id=f"rtneuro:{self.ctx.node_id}:display",
                     desc={"channels": {"channel": [{"label": "t_paint_lsl", "unit": "s"}, {"label": "index"},
                                                    {"label": "acquisition_to_paint", "unit": "ms"},
                                                    {"label": "decision_to_paint", "unit": "ms"}]},
                           "rtneuro": {"kind": "display", "about": "one sample per frame the participant display painted with a new "
                                       "feedback value: when (LSL clock), which sample of the feedback stream (its index), and how "
                                       "late after the acquisition and after the decision; timed at the shown chunk's stream time"}})
        self.writer = w

    def display_record(self, rows: list) -> None:
        """Paints of the participant display (``[t_stream, t_paint, index, a2p_ms, d2p_ms]`` each): samples of ``rtneuro.display``."""
        if self.writer is None:
            return
        good = [r for r in rows if isinstance(r, list) and len(r) == 5 and all(isinstance(x, (int, float)) for x in r)]
        if not good:
            return
        arr = np.array(good, dtype=float)
        try:
            self.writer.write_samples(self.display_sid, arr[:, 0], arr[:, 1:])
        except RecordingError as exc:
            self.writer = None
            raise self._stopped(exc) from None
        self.display_records += len(good)

    def control_record(self, rec: dict) -> None:
        """An operator's change or action (from the supervisor): one sample of ``rtneuro.control``.

        Timed on the stream clock where the record knows it (the time the
        change took effect, else the stream time of the request), else on the
        LSL clock of the request.
        """
        if self.writer is None:
            return
        t = rec.get("t_stream")
        if not isinstance(t, (int, float)):
            applied = [a.get("t_stream") for a in (rec.get("applied") or {}).values() if isinstance(a, dict)]
            t = next((x for x in applied if isinstance(x, (int, float))), rec.get("t_lsl", 0.0))
        try:
            self.writer.write_samples(self.ctl_sid, np.array([float(t)]), [[json.dumps(rec, default=_plain)]])
        except RecordingError as exc:
            self.writer = None
            raise self._stopped(exc) from None
        self.control_records += 1

    def warmup(self) -> None:
        pass

    # -- data -------------------------------------------------------------

    def process(self, chunk: Chunk, port: int = 0) -> None:
        if self.writer is None:
            raise RuntimeError("recorder used before open()")
        try:
            self._record(chunk, port)
        except RecordingError as exc:
            self.writer = None  # the writer has cut the file back to its last whole chunk and closed it
            raise self._stopped(exc) from None
        return None

    def _stopped(self, exc: RecordingError) -> RecordingError:
        """The one error a failed write ends the run with, whether a chunk or a timed flush hit it."""
        return RecordingError(f"recording stopped: {exc}. The run stops so that nothing is decided unrecorded "
                              f"(stimulators go to their safe state); {self.path} keeps everything written before")

    def _record(self, chunk: Chunk, port: int) -> None:
        tr = self.tracks[port]
        m = tr.meta
        n = chunk.data.shape[0]
        self._latency(tr, chunk)
        if n == 0:
            return
        # signals, features, commands and decisions count their rows; an event's index is its sample's
        self._chunk_rows.append((tr.sid, chunk.first, n))
        self._chunk_ts.append(chunk.t0)
        if tr.next_index is not None and chunk.first != tr.next_index and m.kind != "evt":
            self._gap(tr, chunk)
        tr.next_index = chunk.first + n
        if m.kind in ("sig", "feat"):
            dt = 1.0 / chunk.sfreq if chunk.sfreq > 0 else 0.0
            ts = chunk.t0 + np.arange(n) * dt
            tr.pending_ts.append(ts)
            tr.pending.append(chunk.data)
            self._gathered_bytes += chunk.data.nbytes
        else:
            rows = _rows(chunk, m)
            if m.kind == "evt":
                ts = np.asarray(chunk.data["time"], dtype=float)
                values = [[r["label"], json.dumps(r)] for r in rows]
            elif m.dtype == "decision":
                ts = np.asarray(chunk.data["t_stream"], dtype=float)
                values = [[json.dumps(r)] for r in rows]
            else:
                ts = np.array([r["t"] for r in rows], dtype=float)
                values = [[json.dumps(r)] for r in rows]
                if m.dtype == "command":
                    self._provenance(tr, chunk, rows)
            tr.pending_ts.append(ts)
            tr.pending.append(values)
        tr.samples += n
        tr.first_ts = float(ts[0]) if tr.first_ts is None else tr.first_ts
        tr.last_ts = float(ts[-1])
        if self._gathered_bytes >= GATHER_BYTES or time.monotonic() - self._gathered_at >= self._gather_s:
            self._write_gathered()

    def _write_gathered(self) -> None:
        """One Samples chunk per stream for what was gathered."""
        w = self.writer
        for tr in self.tracks:
            if not tr.pending:
                continue
            ts = tr.pending_ts[0] if len(tr.pending_ts) == 1 else np.concatenate(tr.pending_ts)
            if tr.fmt == "string":
                data: Any = [row for part in tr.pending for row in part]
            else:
                data = tr.pending[0] if len(tr.pending) == 1 else np.concatenate(tr.pending)
            tr.pending_ts, tr.pending = [], []
            w.write_samples(tr.sid, ts, data)
        if self._chunk_rows:
            w.write_samples(self.chunk_sid, np.array(self._chunk_ts), np.array(self._chunk_rows, dtype=np.int64))
            self._chunk_rows, self._chunk_ts = [], []
        self._gathered_at = time.monotonic()
        self._gathered_bytes = 0

    def _latency(self, tr: _Track, chunk: Chunk) -> None:
        trace = chunk.trace
        if not trace:
            return
        now = self.ctx.real_clock()
        e2e = (now - trace[0][1]) * 1e6
        tr.e2e[_bin(e2e)] += 1
        for (a, ta), (b, tb) in zip(trace[:-1], trace[1:], strict=False):
            key = f"{a}>{b}"
            h = self.hops.get(key)
            if h is None:
                h = self.hops[key] = np.zeros(len(LATENCY_EDGES_US) - 1, dtype=np.int64)
            h[_bin((tb - ta) * 1e6)] += 1

    def _gap(self, tr: _Track, chunk: Chunk) -> None:
        assert tr.next_index is not None
        missing = chunk.first - tr.next_index
        if missing > 0:
            tr.gaps += 1
            tr.gap_samples += missing
            rec = {"stream": tr.meta.name, "what": "gap", "from_index": tr.next_index, "missing": missing}
            log.warning("recorder: %d samples of '%s' never arrived (from index %d); the session marks the gap",
                        missing, tr.meta.name, tr.next_index)
        else:
            tr.restarts += 1
            rec = {"stream": tr.meta.name, "what": "restart", "expected_index": tr.next_index, "got_index": chunk.first}
        self.gap_events += 1
        self.writer.write_samples(self.gap_sid, np.array([chunk.t0]), [[json.dumps(rec)]])

    def _provenance(self, tr: _Track, chunk: Chunk, rows: list[dict]) -> None:
        """One record per stimulating command: what caused it."""
        cause = (chunk.extra or {}).get("cause") or {}
        feat = self._by_name.get(cause.get("stream", ""))
        frames = cause.get("frames")
        values = cause.get("values")
        window = cause.get("window")
        n = len(rows)
        step = int(feat.desc.get("step", 0)) if feat is not None and feat.desc else 0
        width = int(feat.desc.get("window", 0)) if feat is not None and feat.desc else 0
        out = []
        for i, r in enumerate(rows):
            if r["kind"] == CMD_HOLD:
                continue
            rec: dict[str, Any] = {"command_stream": tr.meta.name, "command_index": r["index"], "t_stream": r["t"],
                                   "kind": r["kind"], "channel": r["channel"], "amplitude_ma": r["amplitude_ma"],
                                   "feature_stream": cause.get("stream"),
                                   "frame": frames[0] + i if isinstance(frames, list) and frames else None,
                                   "feature_values": values[i] if isinstance(values, list) and len(values) == n else None,
                                   "input_stream": cause.get("of"), "input_window": None,
                                   "controller_state": cause.get("state")}
            if isinstance(window, list) and len(window) == 2:
                last = int(window[1]) - (n - 1 - i) * step if step else int(window[1])
                first = last - width + 1 if width else int(window[0])
                rec["input_window"] = [first, last]
            out.append(rec)
        if out:
            self.provenance += len(out)
            self.writer.write_samples(self.prov_sid, np.array([r["t_stream"] for r in out], dtype=float),
                                      [[json.dumps(r, default=_plain)] for r in out])

    def tick(self, now: float) -> None:
        """Quiet inputs: what is buffered still reaches the disk within ``flush_s``."""
        if self.writer is not None:
            try:
                if time.monotonic() - self._gathered_at >= self._gather_s:
                    self._write_gathered()
                self.writer.flush_if_due()
            except RecordingError as exc:
                self.writer = None
                raise self._stopped(exc) from None

    # -- end ----------------------------------------------------------------

    def footers(self) -> dict[int, dict]:
        out: dict[int, dict] = {}
        edges = [round(float(e), 3) for e in LATENCY_EDGES_US]
        for tr in self.tracks:
            out[tr.sid] = {"rtneuro": {"gaps": tr.gaps, "gap_samples": tr.gap_samples, "restarts": tr.restarts,
                                       "latency_us": json.dumps({"edges": edges, "acquisition_to_recorder": tr.e2e.tolist()})}}
        out[self.prov_sid] = {"rtneuro": {"hop_latency_us": json.dumps({"edges": edges, "hops": {k: v.tolist() for k, v in self.hops.items()}})}}
        return out

    def report(self) -> dict:
        return {"path": str(self.path), "streams": len(self.tracks),
                "samples": {tr.meta.name: tr.samples for tr in self.tracks},
                "gaps": {tr.meta.name: tr.gap_samples for tr in self.tracks if tr.gaps},
                "restarts": {tr.meta.name: tr.restarts for tr in self.tracks if tr.restarts},
                "provenance_records": self.provenance, "control_records": self.control_records,
                "display_records": self.display_records}

    def close(self) -> None:
        if self.writer is not None:
            try:
                self._write_gathered()
            except RecordingError as exc:
                log.error("recorder: %s", exc)
                self.writer = None
                return
            w, self.writer = self.writer, None
            w.close(self.footers())


def _bin(us: float) -> int:
    i = int(np.searchsorted(LATENCY_EDGES_US, us, side="right")) - 1
    return min(max(i, 0), len(LATENCY_EDGES_US) - 2)


def _plain(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
