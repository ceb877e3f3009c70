"""Replay of XDF recordings (LabRecorder's format): several streams at once, on their own timestamps."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..messages import Chunk, StreamMeta, make_events
from .base import NodeContext, Source, param

__all__ = ["XdfReplay", "XdfReplayParams", "load_streams", "dejitter"]

log = logging.getLogger(__name__)

#: pyxdf's thresholds for a break in a stream (a new segment): a gap of
#: more than 1 s and more than 500 samples.
BREAK_S = 1.0
BREAK_SAMPLES = 500


def _first(v: Any, default: Any = None) -> Any:
    """pyxdf wraps every header value in a list."""
    if isinstance(v, list):
        return v[0] if v else default
    return default if v is None else v


def dejitter(ts: np.ndarray, sfreq: float) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Evenly spaced timestamps per segment (least-squares line through each).

    A segment ends where the stream breaks (a gap longer than ``BREAK_S`` and
    ``BREAK_SAMPLES`` samples), as in pyxdf. Returns the new timestamps and
    the ``(first, last)`` sample of each segment.
    """
    n = ts.size
    if n < 2 or sfreq <= 0:
        return ts.copy(), [(0, n - 1)] if n else []
    gaps = np.nonzero(np.diff(ts) > max(BREAK_S, BREAK_SAMPLES / sfreq))[0]
    bounds = [0, *(gaps + 1).tolist(), n]
    out = np.empty_like(ts)
    segs = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        idx = np.arange(b - a, dtype=float)
        if b - a >= 2:
            slope, icpt = np.polyfit(idx, ts[a:b], 1)
            out[a:b] = icpt + slope * idx
        else:
            out[a:b] = ts[a:b]
        segs.append((a, b - 1))
    return out, segs


def _estimate_chunk(raw_ts: np.ndarray, sfreq: float) -> int | None:
    """The sender's chunk size, when its timestamps show it (samples of a chunk stamped together)."""
    if raw_ts.size < 20 or sfreq <= 0:
        return None
    d = np.diff(raw_ts)
    tight = d < 0.25 / sfreq
    if tight.mean() < 0.5:
        return None
    runs = np.diff(np.nonzero(np.concatenate([[True], ~tight, [True]]))[0])
    size = int(np.median(runs))
    return size if size > 1 else None


def load_streams(path) -> list[dict]:
    """All streams of an XDF file, clocks synchronised and clock resets handled (pyxdf), raw timestamps."""
    import pyxdf  # imported here: only processes that replay XDF pay for it

    if not path.exists():
        raise ConfigError(f"XDF file not found: {path}; check the path (relative paths are resolved against the configuration file's folder)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("pyxdf").setLevel(logging.ERROR)
            streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=True, handle_clock_resets=True,
                                        dejitter_timestamps=False)
    except Exception as exc:  # pyxdf raises many types for unreadable files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{path} is not an XDF file pyxdf can read ({first[:160]})") from None
    return streams


@dataclass(frozen=True, slots=True, kw_only=True)
class XdfReplayParams:
    """Parameters of :class:`XdfReplay`."""

    path: str = param(doc="the XDF file")
    select: list[dict[str, str]] | None = param(None, doc="streams to play: [{name: ..., type: ..., as: port}] (default: every stream with samples)")
    chunk_size: int | None = param(None, ge=1, doc="samples per chunk (default: the sender's, when the timestamps show it, else 0.1 s)")
    dejitter: bool = param(True, doc="evenly spaced timestamps per segment, as pyxdf does")
    start_s: float = param(0.0, ge=0, doc="skip this much of the recording")
    stop_s: float | None = param(None, gt=0, doc="end the replay this far into the recording")


@dataclass
class _Stream:
    port: str
    name: str
    kind: str
    data: Any  # (n, n_ch) float64 or list of labels
    ts: np.ndarray  # stream time of each sample (0 = first sample of the recording)
    sfreq: float
    chunk: int
    pos: int = 0
    codes: dict | None = None


class XdfReplay(Source):
    """Replays streams of an XDF file, each sample at its recorded time.

    Streams are picked by name or type (``select``), several at once; the
    first numeric one is the main output (``<id>``) and the others are
    ``<id>.<as>``; string (marker) streams are event streams whose labels
    are the markers. pyxdf synchronises the clocks with the offsets the file
    recorded and repairs clock resets; the timestamps are then checked to be
    monotonic (any that are not are held, and counted). Stream time 0 is the
    first sample of the recording, so a replay gives the same timestamps at
    any speed.
    """

    Params = XdfReplayParams

    def __init__(self, params: XdfReplayParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        path = ctx.resolve(params.path)
        raw = load_streams(path)
        described = "; ".join(f"'{_first(s['info'].get('name'), '?')}' (type {_first(s['info'].get('type'), '?')!r}, "
                              f"{len(s['time_stamps'])} samples)" for s in raw) or "none"
        chosen: list[tuple[dict, str | None]]
        if params.select is None:
            chosen = [(s, None) for s in raw if len(s["time_stamps"])]
            self.skipped_empty = [_first(s["info"].get("name"), "?") for s in raw if not len(s["time_stamps"])]
        else:
            chosen, self.skipped_empty = [], []
            for i, q in enumerate(params.select):
                unknown = set(q) - {"name", "type", "as"}
                if unknown or not ({"name", "type"} & set(q)):
                    raise ConfigError(f"select[{i}]={q}: give name and/or type (and optionally 'as'); unknown keys {sorted(unknown)}")
                hits = [s for s in raw if all(_first(s["info"].get(k)) == v for k, v in q.items() if k != "as")]
                if not hits:
                    raise ConfigError(f"{path}: no stream matches {q}; the file has {described}")
                with_data = [s for s in hits if len(s["time_stamps"])]
                if not with_data:
                    raise ConfigError(f"{path}: the stream(s) matching {q} have no samples; streams in the file: {described}")
                if len(with_data) > 1 and "as" in q:
                    raise ConfigError(f"{path}: {len(with_data)} streams match {q}; 'as' names one: make the query unique")
                chosen.extend((s, q.get("as")) for s in with_data)
        if not chosen:
            raise ConfigError(f"{path}: no stream with samples to replay; streams in the file: {described}")
        self.nonmonotonic = 0
        stamps = [self._timestamps(s) for s, _ in chosen]
        t_file0 = min(float(ts[0]) for ts in stamps)
        start = t_file0 + params.start_s
        self.streams: list[_Stream] = []
        self.outputs = {}
        used_ports: set[str] = set()
        for (s, alias), ts in zip(chosen, stamps, strict=True):
            st = self._prepare(s, alias, ts, t_file0, start, used_ports, ctx)
            if st is not None:
                self.streams.append(st)
        if not self.streams:
            raise ConfigError(f"{path}: start_s={params.start_s} is after the end of every selected stream")
        self.source = str(path)
        self.reset()

    def _timestamps(self, s: dict) -> np.ndarray:
        """A stream's timestamps: dejittered (numeric streams) and made monotonic."""
        info = s["info"]
        ts = np.asarray(s["time_stamps"], dtype=float)
        if self.params.dejitter and _first(info.get("channel_format")) != "string":
            ts, _ = dejitter(ts, float(_first(info.get("nominal_srate"), 0) or 0))
        bad = int((np.diff(ts) < 0).sum()) if ts.size > 1 else 0
        if bad:
            self.nonmonotonic += bad
            ts = np.maximum.accumulate(ts)
            msg = f"XDF stream '{_first(info.get('name'))}': {bad} timestamp(s) went back in time; held at the previous one"
            log.warning(msg)
            self.note(msg)
        return ts

    def _prepare(self, s: dict, alias: str | None, ts: np.ndarray, t_file0: float, start: float, used: set,
                 ctx: NodeContext) -> _Stream | None:
        info = s["info"]
        name = str(_first(info.get("name"), "stream"))
        sfreq = float(_first(info.get("nominal_srate"), 0) or 0)
        fmt = str(_first(info.get("channel_format"), "float32"))
        raw_ts = np.asarray(s["time_stamps"], dtype=float)
        keep = ts >= start
        if not keep.any():
            return None
        first = int(np.argmax(keep))
        last = len(ts) if self.params.stop_s is None else int(np.searchsorted(ts, t_file0 + self.params.stop_s))
        if last <= first:
            return None
        ts = ts[first:last] - t_file0
        is_main = fmt != "string" and not any(st.kind == "sig" for st in getattr(self, "streams", []))
        port = "" if is_main else (alias or _port_name(name, used))
        if port and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", port):
            raise ConfigError(f"'as: {port}' must be a name (letters, digits, _ and -)")
        used.add(port)
        stream_name = ctx.stream_name(port)
        source = f"XDF {self.params.path}: '{name}'"
        if fmt == "string":
            labels = ["|".join(str(v) for v in sample) for sample in s["time_series"][first:last]]
            codes = {lab: i + 1 for i, lab in enumerate(sorted(set(labels)))}
            self.outputs[port] = StreamMeta(name=stream_name, kind="evt", sfreq=0.0, dtype="event", source=source,
                                            event_id=codes)
            return _Stream(port, name, "evt", labels, ts, 0.0, 1, codes=codes)
        data = np.ascontiguousarray(np.asarray(s["time_series"])[first:last], dtype=np.float64)
        n_ch = data.shape[1]
        chans = _channels(info, n_ch)
        self.outputs[port] = StreamMeta(
            name=stream_name, kind="sig", sfreq=sfreq, ch_names=tuple(c[0] for c in chans),
            ch_types=tuple(c[1] for c in chans), units=tuple(c[2] for c in chans), dtype="<f8", source=source,
            desc={"xdf_name": name, "xdf_type": str(_first(info.get("type"), "")), "format": fmt,
                  "effective_srate": float(_first(info.get("effective_srate"), 0) or 0)},
        )
        chunk = self.params.chunk_size or _estimate_chunk(raw_ts, sfreq) or max(1, int(round(max(sfreq, 1.0) / 10)))
        return _Stream(port, name, "sig", data, ts, sfreq, chunk)

    def reset(self) -> None:
        self._origin = 0.0
        for st in getattr(self, "streams", []):
            st.pos = 0

    def start(self, origin: float, resume: int = 0) -> None:
        self._origin = origin
        if resume:  # resume where the main stream was: the others by time
            main = self.streams[0]
            pos = min(resume, len(main.ts))
            t = main.ts[pos] if pos < len(main.ts) else np.inf
            for st in self.streams:
                st.pos = pos if st is main else int(np.searchsorted(st.ts, t))

    def position(self) -> int:
        return self.streams[0].pos if self.streams else 0

    def _span(self, st: _Stream) -> int:
        """Samples in ``st``'s next chunk: ``chunk`` of them, cut short before a break in time."""
        a = st.pos
        b = min(a + st.chunk, len(st.ts))
        if st.kind == "sig" and st.sfreq > 0 and b - a > 1:
            d = np.diff(st.ts[a:b])
            jumps = np.nonzero(d > 2.5 / st.sfreq)[0]
            if jumps.size:
                b = a + int(jumps[0]) + 1
        return b - a

    def next_due(self) -> float | None:
        due = None
        for st in self.streams:
            if st.pos < len(st.ts):
                t = self._origin + st.ts[st.pos + self._span(st) - 1]
                if due is None or t < due:
                    due = t
        return due

    def read(self) -> list:
        due = self.next_due()
        out = []
        for st in self.streams:
            if st.pos >= len(st.ts):
                continue
            n = self._span(st)
            if self._origin + st.ts[st.pos + n - 1] > due:
                continue
            a = st.pos
            t0 = self._origin + float(st.ts[a])
            if st.kind == "sig":
                out.append((st.port, Chunk(np.ascontiguousarray(st.data[a:a + n]), a, t0, st.sfreq, [])))
            else:
                assert st.codes is not None
                rows = [(a + i, self._origin + float(st.ts[a + i]), st.codes[st.data[a + i]], -1, 0.0, 0.0, st.data[a + i])
                        for i in range(n)]
                out.append((st.port, Chunk(make_events(rows), a, t0, 0.0, [])))
            st.pos += n
        return out

    def report(self) -> dict:
        return {
            "file": self.source,
            "streams": {st.port or "(main)": {"xdf_name": st.name, "samples": len(st.ts), "chunk": st.chunk} for st in self.streams},
            "skipped_empty": self.skipped_empty,
            "nonmonotonic_timestamps": self.nonmonotonic,
        }


def _port_name(name: str, used: set) -> str:
    base = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "stream"
    if not base[0].isalpha():
        base = "s_" + base
    port, k = base[:40], 2
    while port in used:
        port, k = f"{base[:37]}_{k}", k + 1
    return port


def _channels(info: dict, n: int) -> list[tuple[str, str, str]]:
    """(label, type, unit) per channel from the stream description, with defaults."""
    out = []
    try:
        chans = info["desc"][0]["channels"][0]["channel"]
    except (KeyError, IndexError, TypeError):
        chans = []
    stype = str(_first(info.get("type"), "misc")).lower()
    for i in range(n):
        c = chans[i] if i < len(chans) and isinstance(chans[i], dict) else {}
        out.append((str(_first(c.get("label"), "") or f"ch{i:02d}"), str(_first(c.get("type"), "") or stype).lower(),
                    str(_first(c.get("unit"), "") or "au")))
    names = [c[0] for c in out]
    if len(set(names)) != len(names):
        out = [(f"{lab}_{i}", t, u) for i, (lab, t, u) in enumerate(out)]
    return out
