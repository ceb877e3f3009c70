"""Lab Streaming Layer: an inlet source and an outlet sink.

The inlet turns an LSL stream (an amplifier, a marker stream, another tool)
into an rtneuro stream, with everything that goes wrong with time in LSL made
visible: timestamps are corrected to the local LSL clock; clock offset and
drift are measured all along; data older than a budget is reported as stale
instead of being served as if it were new; the backlog that built up before
the run starts is dropped (by default); an outlet that disappears and comes
back is waited for, and the samples lost meanwhile are counted.

The outlet publishes any rtneuro stream to LSL with the channel metadata
LabRecorder, MNE-LSL and OpenViBE read (``desc/channels/channel`` with
``label``, ``unit`` and ``type``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pylsl
from pylsl.util import LostError
from pylsl.util import TimeoutError as LslTimeout

from ..errors import ConfigError, DeviceError, StreamNotFound, did_you_mean
from ..messages import Chunk, StreamMeta, event_label, make_events
from .base import Node, NodeContext, Source, param

__all__ = ["LslInlet", "LslInletParams", "LslOutlet", "LslOutletParams", "resolve", "meta_from_info", "info_for_meta",
           "ClockTracker"]

log = logging.getLogger(__name__)

#: How long ``rtneuro validate`` looks for a live stream before describing it from its declared parameters.
VALIDATE_PROBE_S = 1.0
#: LSL types of marker streams (compared without case): with nothing declared, such a stream is an event stream.
MARKER_TYPES = ("markers", "marker", "events", "stringmarker", "stim")

_NUMERIC = {pylsl.cf_float32: np.float32, pylsl.cf_double64: np.float64, pylsl.cf_int8: np.int8,
            pylsl.cf_int16: np.int16, pylsl.cf_int32: np.int32, pylsl.cf_int64: np.int64}
_FORMAT_NAMES = {pylsl.cf_float32: "float32", pylsl.cf_double64: "double64", pylsl.cf_string: "string",
                 pylsl.cf_int8: "int8", pylsl.cf_int16: "int16", pylsl.cf_int32: "int32", pylsl.cf_int64: "int64"}


def _describe(info: pylsl.StreamInfo) -> str:
    rate = f"{info.nominal_srate():g} Hz" if info.nominal_srate() > 0 else "irregular"
    return (f"'{info.name()}' (type {info.type()!r}, {info.channel_count()} ch {_FORMAT_NAMES.get(info.channel_format(), '?')}, "
            f"{rate}, source_id {info.source_id()!r}, host {info.hostname()!r})")


def _query(name: str | None, type_: str | None, source_id: str | None) -> str:
    """An XPath predicate for ``resolve_bypred``."""
    parts = []
    for key, value in (("name", name), ("type", type_), ("source_id", source_id)):
        if value is not None:
            if "'" in value:
                raise ConfigError(f"{key}={value!r}: LSL queries cannot contain single quotes")
            parts.append(f"{key}='{value}'")
    return " and ".join(parts)


def resolve(name: str | None = None, type_: str | None = None, source_id: str | None = None,
            timeout_s: float = 10.0) -> pylsl.StreamInfo:
    """The one LSL stream matching the query.

    Raises
    ------
    ConfigError
        When none is found within ``timeout_s`` (listing the streams that are
        visible instead), or when several match.
    """
    pred = _query(name, type_, source_id)
    if not pred:
        raise ConfigError("give at least one of name, type or source_id to find the LSL stream")
    found = pylsl.resolve_bypred(pred, 1, timeout_s)
    if not found:
        visible = pylsl.resolve_streams(1.0)
        seen = "; ".join(_describe(i) for i in visible[:8]) or "none"
        raise ConfigError(f"no LSL stream with {pred} found within {timeout_s:g} s; streams visible: {seen}; "
                          "start the outlet or fix name/type/source_id")
    by_uid = {i.uid(): i for i in (*found, *pylsl.resolve_bypred(pred, 2, 0.3))}
    if len(by_uid) > 1:
        both = "; ".join(_describe(i) for i in by_uid.values())
        raise ConfigError(f"{len(by_uid)} LSL streams match {pred}: {both}; add source_id to pick one, or stop the others")
    return found[0]


def _full_info(info: pylsl.StreamInfo, timeout_s: float) -> pylsl.StreamInfo:
    """The stream's whole description (channel labels...), which resolving does not carry."""
    inlet = pylsl.StreamInlet(info, max_buflen=1, recover=False)
    try:
        return inlet.info(timeout_s)
    except LslTimeout:
        raise ConfigError(f"LSL stream {_describe(info)} did not send its description within {timeout_s:g} s") from None
    finally:
        inlet.close_stream()
        del inlet


def _channels(info: pylsl.StreamInfo) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty() and len(out) < info.channel_count():
        out.append({k: ch.child_value(k) for k in ("label", "unit", "type")})
        ch = ch.next_sibling("channel")
    return out


def meta_from_info(info: pylsl.StreamInfo, stream_name: str) -> StreamMeta:
    """rtneuro metadata of an LSL stream (with its full description)."""
    n = info.channel_count()
    chans = _channels(info)
    names = [c["label"] or f"ch{i:02d}" for i, c in enumerate(chans)] + [f"ch{i:02d}" for i in range(len(chans), n)]
    if len(set(names)) != len(names):  # duplicate labels: keep them apart
        names = [f"{nm}_{i}" if names.count(nm) > 1 else nm for i, nm in enumerate(names)]
    stype = info.type().lower()
    types = [(c["type"] or stype or "misc").lower() for c in chans] + [stype or "misc"] * (n - len(chans))
    units = [c["unit"] or "au" for c in chans] + ["au"] * (n - len(chans))
    source = f"LSL {_describe(info)}"
    if info.channel_format() == pylsl.cf_string:
        return StreamMeta(name=stream_name, kind="evt", sfreq=0.0, dtype="event", source=source,
                          desc={"lsl_name": info.name(), "lsl_type": info.type(), "lsl_source_id": info.source_id()})
    return StreamMeta(name=stream_name, kind="sig", sfreq=float(info.nominal_srate()), ch_names=tuple(names),
                      ch_types=tuple(types), units=tuple(units), dtype="<f8", source=source,
                      desc={"lsl_name": info.name(), "lsl_type": info.type(), "lsl_source_id": info.source_id(),
                            "lsl_format": _FORMAT_NAMES.get(info.channel_format(), "?")})


class ClockTracker:
    """Clock offset of a remote LSL host and its drift, measured all along.

    Each measurement is LSL's ``time_correction`` (remote clock minus local
    clock, estimated from round trips). Drift is the slope of a least-squares
    line through the last ``keep`` measurements, in parts per million.
    """

    def __init__(self, keep: int = 120) -> None:
        self.keep = keep
        self.times: list[float] = []
        self.offsets: list[float] = []

    def add(self, t: float, offset: float) -> None:
        self.times.append(t)
        self.offsets.append(offset)
        if len(self.times) > self.keep:
            del self.times[0]
            del self.offsets[0]

    @property
    def offset_s(self) -> float | None:
        return self.offsets[-1] if self.offsets else None

    @property
    def drift_ppm(self) -> float | None:
        if len(self.times) < 3 or self.times[-1] - self.times[0] < 1.0:
            return None
        t = np.asarray(self.times) - self.times[0]
        slope = np.polyfit(t, np.asarray(self.offsets), 1)[0]
        return float(slope * 1e6)


@dataclass(frozen=True, slots=True, kw_only=True)
class LslInletParams:
    """Parameters of :class:`LslInlet`. Give at least one of name, type, source_id."""

    name: str | None = param(None, doc="LSL stream name")
    type: str | None = param(None, doc="LSL stream type (EEG, Markers...)")
    source_id: str | None = param(None, doc="LSL source_id (unique per device; allows automatic reconnection)")
    resolve_timeout_s: float = param(10.0, gt=0, doc="how long to look for the stream")
    n_channels: int | None = param(None, ge=1, doc="refuse a stream with another channel count")
    ch_names: list[str] | None = param(None, doc="the channels the stream must have, in order (refused otherwise); lets 'rtneuro validate' check the graph without the stream")
    sfreq: float | None = param(None, gt=0, doc="the nominal rate the stream must have, in Hz (refused otherwise); lets 'rtneuro validate' check the graph without the stream")
    discard_backlog: bool = param(True, doc="drop what the inlet buffered before the run starts")
    stale_ms: float = param(250.0, gt=0, doc="newest sample older than this: the data is stale (reported)")
    max_buffer_s: float = param(10.0, gt=0, doc="what the inlet may buffer")
    dejitter: bool = param(False, doc="let LSL smooth the timestamps (adds a little delay)")
    clock_check_s: float = param(5.0, gt=0, doc="measure clock offset and drift this often")
    gap_s: float = param(0.1, gt=0, doc="a jump in timestamps longer than this (and 20 samples) counts as a gap")


class LslInlet(Source):
    """An LSL stream, live.

    Numeric streams become signal streams (``float64``), string (marker)
    streams become event streams whose labels are the markers. Channel
    names, types, units and the sampling rate come from the stream's
    description. Timestamps are on the local LSL clock (LSL time
    correction); each chunk's trace starts at the timestamp of its newest
    sample, so latency is measured from the moment the amplifier stamped it.

    Chunks are taken as they arrive: a blocking pull that returns as soon as
    a pushed chunk is there, never split.

    Notes
    -----
    The stream is looked up (and its description read) when the graph is
    loaded, so that the graph's streams are known before anything runs, and
    again when the run starts. ``rtneuro validate`` looks for it for
    ``VALIDATE_PROBE_S`` only: when it is not there, the declared
    ``ch_names`` and ``sfreq`` (or, for a marker ``type``, nothing) describe
    it, and the graph is checked against them.
    """

    Params = LslInletParams
    paced: ClassVar[bool] = False
    realtime_only: ClassVar[bool] = True

    def __init__(self, params: LslInletParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        if params.ch_names is not None and params.n_channels is not None and len(params.ch_names) != params.n_channels:
            raise ConfigError(f"ch_names has {len(params.ch_names)} channels but n_channels={params.n_channels}")
        if params.ch_names is not None and len(set(params.ch_names)) != len(params.ch_names):
            raise ConfigError(f"ch_names={params.ch_names} names a channel twice")
        #: while validating without the stream: what waits for it (None when the stream was there)
        self.waiting_for: str | None = None
        self._inlet: Any = None
        if ctx.wait_for_streams:
            info = _full_info(self._resolve(params.resolve_timeout_s), params.resolve_timeout_s)
        else:
            pred = _query(params.name, params.type, params.source_id)
            if not pred:
                raise ConfigError("give at least one of name, type or source_id to find the LSL stream")
            found = pylsl.resolve_bypred(pred, 1, min(VALIDATE_PROBE_S, params.resolve_timeout_s))
            if not found:
                self._declared(params, ctx)
                self.reset()
                return
            info = _full_info(self._resolve(params.resolve_timeout_s), params.resolve_timeout_s)
        self._check(info)
        meta = meta_from_info(info, ctx.stream_name())
        self._check_declared(info, meta)
        self.outputs = {"": meta}
        self.kind = meta.kind
        self.sfreq = meta.sfreq
        self.n_channels = info.channel_count()
        self.reset()

    def _declared(self, p: LslInletParams, ctx: NodeContext) -> None:
        """The output as declared, for a graph checked while the stream is not there."""
        query = _query(p.name, p.type, p.source_id)
        what = f"'{ctx.node_id}' (LSL {query})"
        if p.ch_names is not None and p.sfreq is not None:
            stype = (p.type or "misc").lower()
            meta = StreamMeta(name=ctx.stream_name(), kind="sig", sfreq=float(p.sfreq), ch_names=tuple(p.ch_names),
                              ch_types=(stype,) * len(p.ch_names), units=("au",) * len(p.ch_names), dtype="<f8",
                              source=f"LSL {query} (declared; not seen while validating)",
                              desc={"lsl_name": p.name or "", "lsl_type": p.type or "", "declared": True})
            self.waiting_for = f"{what}: checked against its declared ch_names and sfreq"
        elif p.ch_names is None and p.sfreq is None and p.n_channels is None and (p.type or "").lower() in MARKER_TYPES:
            meta = StreamMeta(name=ctx.stream_name(), kind="evt", sfreq=0.0, dtype="event",
                              source=f"LSL {query} (declared markers; not seen while validating)",
                              desc={"lsl_name": p.name or "", "lsl_type": p.type or "", "declared": True})
            self.waiting_for = f"{what}: a marker stream, by its type"
        else:
            missing = " and ".join(k for k, v in (("ch_names", p.ch_names), ("sfreq", p.sfreq)) if v is None)
            raise StreamNotFound(f"{what}: declare {missing} to check what depends on it")
        self.outputs = {"": meta}
        self.kind = meta.kind
        self.sfreq = meta.sfreq
        self.n_channels = meta.n_channels

    def _check_declared(self, info: pylsl.StreamInfo, meta: StreamMeta) -> None:
        """Refuse a stream whose channels or rate are not those the configuration declares."""
        p = self.params
        if p.sfreq is not None and float(info.nominal_srate()) != float(p.sfreq):
            raise ConfigError(f"LSL stream {_describe(info)} runs at {info.nominal_srate():g} Hz but sfreq={p.sfreq:g} "
                              "is declared; fix the query or sfreq")
        if p.ch_names is not None and list(meta.ch_names) != list(p.ch_names):
            missing = [c for c in p.ch_names if c not in meta.ch_names]
            hint = did_you_mean(missing[0], meta.ch_names) if missing else " (same names, another order)"
            raise ConfigError(f"LSL stream {_describe(info)} has channels {list(meta.ch_names)[:16]} but ch_names="
                              f"{list(p.ch_names)[:16]} is declared{hint}; fix the query or ch_names")

    def _resolve(self, timeout_s: float) -> pylsl.StreamInfo:
        p = self.params
        return resolve(p.name, p.type, p.source_id, timeout_s)

    def _check(self, info: pylsl.StreamInfo) -> None:
        n = self.params.n_channels
        if n is not None and info.channel_count() != n:
            raise ConfigError(f"LSL stream {_describe(info)} has {info.channel_count()} channels but n_channels={n}; "
                              "fix the query or n_channels")

    def reset(self) -> None:
        self._index = 0
        self._last_ts: float | None = None
        self._events = 0
        self._codes: dict[str, int] = {}
        self.chunks = 0
        self.samples = 0
        self.gaps = 0
        self.lost_samples = 0
        self.stale_chunks = 0
        self._stale = False
        self.empty_markers = 0
        self.reconnects = 0
        self._lost_since: float | None = None
        self._next_resolve = 0.0
        self.clock = ClockTracker()
        self._next_clock_check = 0.0
        self.age_ms: float | None = None

    def open(self) -> None:
        info = self._resolve(self.params.resolve_timeout_s)
        self._check(info)
        expected = self.outputs[""]
        if info.channel_count() != (expected.n_channels if self.kind == "sig" else info.channel_count()) or (
                self.kind == "sig" and float(info.nominal_srate()) != expected.sfreq):
            raise DeviceError(f"LSL stream {_describe(info)} changed since the graph was validated "
                              f"({expected.n_channels} ch at {expected.sfreq:g} Hz expected); restart the run")
        self._open_inlet(info)

    def _open_inlet(self, info: pylsl.StreamInfo) -> None:
        flags = pylsl.proc_clocksync | (pylsl.proc_dejitter if self.params.dejitter else 0)
        buflen = max(1, int(math.ceil(self.params.max_buffer_s)))
        self._inlet = pylsl.StreamInlet(info, max_buflen=buflen, recover=True, processing_flags=flags)
        self._inlet.open_stream(self.params.resolve_timeout_s)
        if self.kind == "sig":
            self._max = max(1024, int(2 * self.params.max_buffer_s * max(self.sfreq, 1.0)))
            self._buf = np.empty((self._max, self.n_channels), dtype=_NUMERIC.get(info.channel_format(), np.float64))

    def warmup(self) -> None:
        pass

    def start(self, origin: float, resume: int = 0) -> None:
        if self.params.discard_backlog and self._inlet is not None:
            dropped = self._inlet.flush()
            if dropped:
                log.info("%s: dropped %d samples buffered before the start", self.ctx.node_id, dropped)

    def position(self) -> int:
        return self._index

    def next_due(self) -> float | None:  # pragma: no cover - push source: not paced
        return None

    # -- pulling --------------------------------------------------------------

    def pull(self, timeout_s: float, now: float) -> Chunk | None:
        """What arrived, waiting up to ``timeout_s`` for the first sample."""
        if now >= self._next_clock_check:
            self._measure_clock(now)
        if self._inlet is None:
            self._try_reconnect(now)
            return None
        inlet = self._inlet
        try:
            if self.kind == "sig":
                x, ts = inlet.pull_chunk(timeout=timeout_s, max_samples=self._max, dest_obj=self._buf,
                                         min_samples=1, as_numpy=True)
                n = len(ts)
                if n and n < self._max and inlet.samples_available():
                    # the rest of a pushed chunk, still being unpacked when the first samples came out
                    x2, ts2 = inlet.pull_chunk(timeout=0.0, max_samples=self._max - n, dest_obj=self._buf[n:],
                                               as_numpy=True)
                    if len(ts2):
                        ts = np.concatenate([ts, ts2])
                        x = self._buf[: len(ts)]
            else:
                x, ts = inlet.pull_chunk(timeout=timeout_s, max_samples=1024, min_samples=1)
        except LostError:
            self._lost(now)
            return None
        n = len(ts)
        if n == 0:
            self._idle(now)
            return None
        if self._lost_since is not None:
            log.warning("%s: the LSL stream is back after %.1f s", self.ctx.node_id, now - self._lost_since)
            self.note(f"LSL stream of '{self.ctx.node_id}' came back after {now - self._lost_since:.1f} s")
            self._lost_since = None
        t_first, t_last = float(ts[0]), float(ts[-1])
        self._track_time(t_first, t_last, n, now)
        if self.kind == "evt":
            return self._markers(x, ts)
        data = np.array(x, dtype=np.float64)  # a copy: the pull buffer is reused
        chunk = Chunk(data, self._index, t_first, self.sfreq, [(self.ctx.node_id, t_last)])
        self._index += n
        self.chunks += 1
        self.samples += n
        return chunk

    def _track_time(self, t_first: float, t_last: float, n: int, now: float) -> None:
        last = self._last_ts
        if last is not None and self.sfreq > 0:
            jump = t_first - last
            if jump > max(self.params.gap_s, 20.0 / self.sfreq):
                missing = max(0, int(round(jump * self.sfreq)) - 1)
                self.gaps += 1
                self.lost_samples += missing
                self._index += missing  # sample indices keep following time
                msg = f"LSL stream of '{self.ctx.node_id}': {jump:.3f} s without samples (about {missing} lost)"
                log.warning(msg)
                self.note(msg)
        self._last_ts = t_last
        self.age_ms = (now - t_last) * 1e3
        if self.age_ms > self.params.stale_ms:
            self.stale_chunks += 1
            if not self._stale:
                self._stale = True
                msg = (f"LSL stream of '{self.ctx.node_id}' is stale: newest sample {self.age_ms:.0f} ms old "
                       f"(budget {self.params.stale_ms:g} ms); the sender or the network is behind")
                log.warning(msg)
                self.note(msg)
        else:
            self._stale = False

    def _markers(self, x: list, ts: Any) -> Chunk:
        rows = []
        for sample, t in zip(x, ts, strict=True):
            label = "|".join(str(v) for v in sample) if len(sample) > 1 else str(sample[0]) if sample else ""
            if not label.strip():
                self.empty_markers += 1
                if self.empty_markers == 1:
                    msg = (f"LSL marker stream of '{self.ctx.node_id}' sent an empty marker at t={float(t):.3f}; "
                           "it is passed on with an empty label (check the sender)")
                    log.warning(msg)
                    self.note(msg)
            code = self._codes.setdefault(label, len(self._codes) + 1)
            rows.append((self._events, float(t), code, -1, 0.0, 0.0, label))
            self._events += 1
        events = make_events(rows)
        chunk = Chunk(events, self._index, float(ts[0]), 0.0, [(self.ctx.node_id, float(ts[-1]))])
        self._index += len(rows)
        self.chunks += 1
        self.samples += len(rows)
        return chunk

    def _idle(self, now: float) -> None:
        last = self._last_ts
        if last is not None:
            self.age_ms = (now - last) * 1e3

    def _lost(self, now: float) -> None:
        """The outlet is gone and LSL cannot recover it by itself (no source_id): look for it again."""
        if self._lost_since is None:
            self._lost_since = now
            msg = (f"LSL stream of '{self.ctx.node_id}' lost; waiting for it to come back "
                   "(give the outlet a source_id to let LSL reconnect by itself)")
            log.warning(msg)
            self.note(msg)
        self._inlet = None
        self._next_resolve = now

    def _try_reconnect(self, now: float) -> None:
        if now < self._next_resolve:
            return
        self._next_resolve = now + 1.0
        try:
            info = self._resolve(0.2)
        except ConfigError:
            return
        expected = self.outputs[""]
        if info.channel_count() != (expected.n_channels if self.kind == "sig" else info.channel_count()):
            return  # not the same stream
        self._open_inlet(info)
        self.reconnects += 1

    def _measure_clock(self, now: float) -> None:
        """Record LSL's clock offset estimate; never waits (LSL updates it in the background)."""
        if self._inlet is None:
            return
        try:
            self.clock.add(now, self._inlet.time_correction(0.0))
            self._next_clock_check = now + self.params.clock_check_s
        except (LslTimeout, LostError):
            self._next_clock_check = now + 0.25  # the first estimate is not ready yet

    def status(self) -> str:
        if self._lost_since is not None:
            return "LOST"
        parts = []
        if self._stale:
            parts.append(f"STALE {self.age_ms:.0f} ms")
        elif self.age_ms is not None:
            parts.append(f"age {self.age_ms:.1f} ms")
        off, drift = self.clock.offset_s, self.clock.drift_ppm
        if off is not None:
            parts.append(f"clock offset {off * 1e3:+.3f} ms")
        if drift is not None:
            parts.append(f"drift {drift:+.1f} ppm")
        if self.gaps:
            parts.append(f"gaps {self.gaps}")
        return ", ".join(parts)

    def report(self) -> dict:
        return {
            "chunks": self.chunks, "samples": self.samples, "gaps": self.gaps, "lost_samples": self.lost_samples,
            "stale_chunks": self.stale_chunks, "reconnects": self.reconnects, "empty_markers": self.empty_markers,
            "clock_offset_ms": None if self.clock.offset_s is None else round(self.clock.offset_s * 1e3, 4),
            "clock_drift_ppm": None if self.clock.drift_ppm is None else round(self.clock.drift_ppm, 3),
            "last_age_ms": None if self.age_ms is None else round(self.age_ms, 3),
            "marker_codes": dict(self._codes) if self.kind == "evt" else None,
        }

    def close(self) -> None:
        if self._inlet is not None:
            self._inlet.close_stream()
            self._inlet = None


# -- outlet -------------------------------------------------------------------

_DEFAULT_TYPE = {"sig": "EEG", "feat": "Features", "evt": "Markers", "cmd": "Commands"}
_CMD_FIELDS = ("kind", "channel", "amplitude_ma", "pulse_width_us", "frequency_hz", "duration_s")


def info_for_meta(meta: StreamMeta, name: str, type_: str | None, source_id: str,
                  channel_format: str = "float32") -> pylsl.StreamInfo:
    """An LSL description of an rtneuro stream, with the channel metadata LSL tools read."""
    if meta.kind == "evt":
        info = pylsl.StreamInfo(name, type_ or "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, source_id)
        labels, units, types = ["marker"], [""], ["marker"]
    elif meta.kind == "cmd":
        info = pylsl.StreamInfo(name, type_ or "Commands", len(_CMD_FIELDS), pylsl.IRREGULAR_RATE, pylsl.cf_double64,
                                source_id)
        labels, units, types = list(_CMD_FIELDS), ["", "", "mA", "us", "Hz", "s"], ["command"] * len(_CMD_FIELDS)
    else:
        fmt = pylsl.cf_float32 if channel_format == "float32" else pylsl.cf_double64
        kind_type = _DEFAULT_TYPE[meta.kind]
        if meta.kind == "sig" and meta.ch_types:
            kind_type = max(set(meta.ch_types), key=meta.ch_types.count).upper()
        info = pylsl.StreamInfo(name, type_ or kind_type, meta.n_channels, meta.sfreq or pylsl.IRREGULAR_RATE, fmt,
                                source_id)
        labels, units = list(meta.ch_names), list(meta.units or ("",) * meta.n_channels)
        types = list(meta.ch_types or ("misc",) * meta.n_channels)
    chans = info.desc().append_child("channels")
    for label, unit, ctype in zip(labels, units, types, strict=True):
        ch = chans.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("unit", unit)
        ch.append_child_value("type", ctype)
    acq = info.desc().append_child("acquisition")
    acq.append_child_value("manufacturer", "rtneuro")
    acq.append_child_value("source", meta.source)
    return info


@dataclass(frozen=True, slots=True, kw_only=True)
class LslOutletParams:
    """Parameters of :class:`LslOutlet`."""

    name: str | None = param(None, doc="LSL stream name (default: the input stream's name; with several inputs, a prefix)")
    type: str | None = param(None, doc="LSL stream type (default: EEG, Features, Markers or Commands)")
    source_id: str | None = param(None, doc="default: rtneuro:<node id>:<stream>")
    channel_format: Literal["float32", "double64"] = param("float32", doc="numeric streams")


class LslOutlet(Node):
    """Publishes its inputs as LSL outlets (one per input stream).

    Signals and features go out as numeric streams, events as string
    markers (their labels), commands as a 6-channel numeric stream (kind,
    channel, amplitude_ma, pulse_width_us, frequency_hz, duration_s). Every
    sample is stamped with the LSL time of its data: for a live graph the
    acquisition time it inherits; for a replay, the time it is replayed at.
    """

    category = "sink"
    Params = LslOutletParams
    input_kinds = ("sig|feat|evt|cmd",)
    max_inputs = 8

    def __init__(self, params: LslOutletParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        names = []
        for meta in inputs:
            if len(inputs) == 1:
                names.append(params.name or meta.name)
            else:
                names.append(f"{params.name}-{meta.name}" if params.name else meta.name)
        if len(set(names)) != len(names):
            raise ConfigError(f"two inputs would publish the same LSL name: {names}")
        self.names = names
        self._outlets: list[Any] = []

    def open(self) -> None:
        p = self.params
        for meta, name in zip(self.inputs, self.names, strict=True):
            source_id = p.source_id if (p.source_id and len(self.inputs) == 1) else (
                f"{p.source_id or 'rtneuro:' + self.ctx.node_id}:{meta.name}")
            info = info_for_meta(meta, name, p.type, source_id, p.channel_format)
            chunk = max(1, int(meta.sfreq / 20)) if meta.sfreq else 0
            self._outlets.append(pylsl.StreamOutlet(info, chunk_size=chunk, max_buffered=60))

    def process(self, chunk: Chunk, port: int = 0) -> None:
        outlet = self._outlets[port]
        meta = self.inputs[port]
        data = chunk.data
        n = data.shape[0]
        if n == 0:
            return None
        lsl_time = self.ctx.lsl_time
        if meta.kind == "evt":
            for e in data:
                outlet.push_sample([event_label(e["label"])], lsl_time(float(e["time"])))
            return None
        dt = 1.0 / chunk.sfreq if chunk.sfreq > 0 else 0.0
        stamps = [lsl_time(chunk.t0 + i * dt) for i in range(n)]
        if meta.kind == "cmd":
            values = np.column_stack([data[f].astype(np.float64) for f in _CMD_FIELDS])
            outlet.push_chunk(values, stamps)
        else:
            outlet.push_chunk(data, stamps[-1] if dt else stamps)
        return None

    def report(self) -> dict:
        return {"outlets": self.names}

    def close(self) -> None:
        self._outlets = []
