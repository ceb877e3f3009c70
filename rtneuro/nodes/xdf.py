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

__all__ = ["XdfReplay", "XdfReplayParams", "load_streams", "dejitter", "choose_main", "MAIN_RULE", "MAIN_TYPES"]

log = logging.getLogger(__name__)

#: pyxdf's thresholds for a break in a stream (a new segment): a gap of
#: more than 1 s and more than 500 samples.
BREAK_S = 1.0
BREAK_SAMPLES = 500


#: LSL stream types of electrophysiology (compared without case): a stream of
#: one of these types is the main stream, when the configuration names none.
MAIN_TYPES = ("EEG", "MEG", "ECoG", "sEEG", "iEEG", "LFP", "ExG")

#: How the main stream is chosen when ``main`` is not given.
MAIN_RULE = (f"the numeric stream with samples whose LSL type is {'/'.join(MAIN_TYPES)} (any case), "
             "the one of highest nominal rate when there are several; when no stream has such a type, "
             "the only numeric stream; anything else is ambiguous (an error: give main)")

_QUERY_KEYS = ("name", "type", "source_id")


def _first(v: Any, default: Any = None) -> Any:
    """pyxdf wraps every header value in a list."""
    if isinstance(v, list):
        return v[0] if v else default
    return default if v is None else v


def _field(s: dict, key: str) -> str:
    return str(_first(s["info"].get(key), "") or "")


def _matches(s: dict, query: dict[str, str]) -> bool:
    """Whether stream ``s`` (pyxdf's dict) has every name/type/source_id ``query`` gives (exact strings)."""
    return all(_field(s, k) == v for k, v in query.items() if k in _QUERY_KEYS)


def _label(s: dict) -> str:
    """One stream as a person would find it: its name, type, source id and rate."""
    rate = float(_first(s["info"].get("nominal_srate"), 0) or 0)
    sid = _field(s, "source_id")
    return (f"'{_field(s, 'name')}' (type {_field(s, 'type')!r}{f', source_id {sid!r}' if sid else ''}, "
            f"{_field(s, 'channel_format')}, {f'{rate:g} Hz' if rate else 'irregular'}, {len(s['time_stamps'])} samples)")


def choose_main(streams: Sequence[dict], main: dict[str, str] | None = None) -> tuple[int | None, str]:
    """Index of the main stream among ``streams`` (pyxdf's dicts, those to be played) and why.

    Parameters
    ----------
    streams : sequence of dict
        The streams to play, as pyxdf reads them.
    main : dict or None
        ``{name:, type:, source_id:}`` (any of them) naming the main stream;
        None applies :data:`MAIN_RULE`.

    Returns
    -------
    index : int or None
        None when no stream is numeric (a marker-only file has no main output).
    why : str
        ``"main: {...}"`` or the rule that chose it.

    Raises
    ------
    ConfigError
        When ``main`` matches no numeric stream, or several; when the rule
        finds several candidates.
    """
    numeric = [i for i, s in enumerate(streams) if _field(s, "channel_format") != "string"]
    have = "; ".join(_label(streams[i]) for i in numeric) or "none"
    if main is not None:
        unknown = set(main) - set(_QUERY_KEYS)
        if unknown or not main:
            raise ConfigError(f"main={main}: give name, type and/or source_id of the main stream; "
                              f"unknown keys {sorted(unknown)}")
        hits = [i for i in numeric if _matches(streams[i], main)]
        if len(hits) != 1:
            what = "no numeric stream with samples" if not hits else f"{len(hits)} streams"
            raise ConfigError(f"main={main} matches {what}; the numeric streams are: {have}"
                              + ("; add type or source_id to tell them apart" if hits else ""))
        return hits[0], f"main: {main}"
    if not numeric:
        return None, "no numeric stream"
    wanted = {t.lower() for t in MAIN_TYPES}
    ephys = [i for i in numeric if _field(streams[i], "type").lower() in wanted]
    if ephys:
        top = max(float(_first(streams[i]["info"].get("nominal_srate"), 0) or 0) for i in ephys)
        best = [i for i in ephys if float(_first(streams[i]["info"].get("nominal_srate"), 0) or 0) == top]
        if len(best) == 1:
            return best[0], (f"the only electrophysiology stream ({MAIN_RULE})" if len(ephys) == 1
                             else f"the electrophysiology stream of highest rate ({MAIN_RULE})")
        tied = "; ".join(_label(streams[i]) for i in best)
        raise ConfigError(f"{len(best)} electrophysiology streams of {top:g} Hz could be the main one: {tied}; "
                          "choose it with main: {name: ..., type: ..., source_id: ...} "
                          "(rtneuro replay --lsl: --main name=...,type=...)")
    if len(numeric) == 1:
        return numeric[0], f"the only numeric stream ({MAIN_RULE})"
    raise ConfigError(f"{len(numeric)} numeric streams and none of type {'/'.join(MAIN_TYPES)}: {have}; "
                      "choose the main one with main: {name: ..., type: ...} (rtneuro replay --lsl: --main name=...,type=...)")


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
    """All streams of a whole XDF file, clocks synchronised and clock resets handled (pyxdf), raw timestamps."""
    return load_checked(path)[0]


def load_checked(path, accept_damaged: bool = False) -> tuple[list[dict], Any]:
    """:func:`load_streams` after the file's integrity check; also returns its :class:`~rtneuro.recording.integrity.Integrity`.

    A damaged file (a chunk cut short or corrupt, a stream without footer)
    raises :class:`~rtneuro.errors.DamagedFileError` unless
    ``accept_damaged``; then only its whole, valid chunks are read.
    """
    import pyxdf  # imported here: only processes that replay XDF pay for it

    from ..recording import integrity
    from ..recording.xdf_read import whole_chunks

    if not path.exists():
        raise ConfigError(f"XDF file not found: {path}; check the path (relative paths are resolved against the configuration file's folder)")
    integ = integrity.require(path, accept_damaged)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("pyxdf").setLevel(logging.ERROR)
            if integ.ok:
                streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=True, handle_clock_resets=True,
                                            dejitter_timestamps=False)
            else:
                with whole_chunks(path) as f:
                    streams, _ = pyxdf.load_xdf(f, synchronize_clocks=True, handle_clock_resets=True,
                                                dejitter_timestamps=False)
    except Exception as exc:  # pyxdf raises many types for unreadable files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{path} is not an XDF file pyxdf can read ({first[:160]})") from None
    return streams, integ


@dataclass(frozen=True, slots=True, kw_only=True)
class XdfReplayParams:
    """Parameters of :class:`XdfReplay`."""

    path: str = param(doc="the XDF file")
    select: list[dict[str, str]] | None = param(None, doc="streams to play: [{name: ..., type: ..., source_id: ..., as: port}] (default: every stream with samples)")
    main: dict[str, str] | None = param(None, doc="the main stream (output <id>): {name: ..., type: ..., source_id: ...}; default: the electrophysiology (EEG, MEG, ECoG, sEEG, iEEG, LFP, ExG) stream of highest rate, else the only numeric stream, else an error")
    chunk_size: int | None = param(None, ge=1, doc="samples per chunk (default: the sender's, when the timestamps show it, else 0.1 s)")
    dejitter: bool = param(True, doc="evenly spaced timestamps per segment, as pyxdf does")
    start_s: float = param(0.0, ge=0, doc="skip this much of the recording")
    stop_s: float | None = param(None, gt=0, doc="end the replay this far into the recording")
    accept_damaged: bool = param(False, doc="replay the whole chunks of a damaged (cut) file instead of refusing it; the report says what is missing")


@dataclass
class _Stream:
    port: str
    name: str
    type: str
    source_id: str
    kind: str
    data: Any  # (n, n_ch) float64 or list of labels
    ts: np.ndarray  # stream time of each sample (0 = first sample of the recording)
    sfreq: float
    chunk: int
    pos: int = 0
    codes: dict | None = None


class XdfReplay(Source):
    """Replays streams of an XDF file, each sample at its recorded time.

    Streams are picked by name, type or source id (``select``), several at
    once. One numeric stream is the main output (``<id>``): the one ``main``
    names, else the electrophysiology stream (type EEG, MEG, ECoG, sEEG,
    iEEG, LFP or ExG) of highest nominal rate, else the only numeric stream;
    anything else is an error that lists the streams. The others are
    ``<id>.<port>``: ``as`` when given, else the stream's name, with its type
    (then its source id) added when streams share a name (a LabRecorder file
    of a Muse holds three streams called ``Muse``: ``muse_eeg``,
    ``muse_acc``, ``muse_ppg``). Each output keeps the stream's recorded name,
    type and source id (``desc``: ``xdf_name``, ``xdf_type``,
    ``xdf_source_id``). String (marker) streams are event streams whose
    labels are the markers. pyxdf synchronises the clocks with the offsets the file
    recorded and repairs clock resets; the timestamps are then checked to be
    monotonic (any that are not are held, and counted). Stream time 0 is the
    first sample of the recording, so a replay gives the same timestamps at
    any speed.
    """

    Params = XdfReplayParams

    def __init__(self, params: XdfReplayParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        path = ctx.resolve(params.path)
        raw, self.integrity = load_checked(path, params.accept_damaged)
        described = "; ".join(_label(s) for s in raw) or "none"
        chosen: list[tuple[dict, str | None]]
        if params.select is None:
            chosen = [(s, None) for s in raw if len(s["time_stamps"])]
            self.skipped_empty = [_first(s["info"].get("name"), "?") for s in raw if not len(s["time_stamps"])]
        else:
            chosen, self.skipped_empty = [], []
            for i, q in enumerate(params.select):
                unknown = set(q) - {*_QUERY_KEYS, "as"}
                if unknown or not (set(_QUERY_KEYS) & set(q)):
                    raise ConfigError(f"select[{i}]={q}: give name, type and/or source_id (and optionally 'as'); unknown keys {sorted(unknown)}")
                hits = [s for s in raw if _matches(s, q)]
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
        try:
            k, self.main_rule = choose_main([s for s, _ in chosen], params.main)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if k is not None:
            chosen.insert(0, chosen.pop(k))  # the main stream first: its position is the node's
        ports = _ports([s for s, _ in chosen], [a for _, a in chosen], has_main=k is not None)
        self.nonmonotonic = 0
        stamps = [self._timestamps(s) for s, _ in chosen]
        t_file0 = min(float(ts[0]) for ts in stamps)
        start = t_file0 + params.start_s
        self.streams: list[_Stream] = []
        self.outputs = {}
        for (s, _alias), port, ts in zip(chosen, ports, stamps, strict=True):
            st = self._prepare(s, port, ts, t_file0, start, ctx)
            if st is not None:
                self.streams.append(st)
        if not self.streams:
            raise ConfigError(f"{path}: start_s={params.start_s} is after the end of every selected stream")
        if k is not None and self.streams[0].port != "":
            raise ConfigError(f"{path}: start_s={params.start_s} is after the end of the main stream "
                              f"{_label(chosen[0][0])}")
        self.source = str(path)
        if not self.integrity.ok:
            self._note_damage()
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

    def _prepare(self, s: dict, port: str, ts: np.ndarray, t_file0: float, start: float,
                 ctx: NodeContext) -> _Stream | None:
        info = s["info"]
        name = str(_first(info.get("name"), "stream"))
        stype, sid = _field(s, "type"), _field(s, "source_id")
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
        stream_name = ctx.stream_name(port)
        source = f"XDF {self.params.path}: '{name}' (type {stype!r})"
        recorded = {"xdf_name": name, "xdf_type": stype, "xdf_source_id": sid}
        if fmt == "string":
            labels = ["|".join(str(v) for v in sample) for sample in s["time_series"][first:last]]
            codes = {lab: i + 1 for i, lab in enumerate(sorted(set(labels)))}
            self.outputs[port] = StreamMeta(name=stream_name, kind="evt", sfreq=0.0, dtype="event", source=source,
                                            event_id=codes, desc=recorded)
            return _Stream(port, name, stype, sid, "evt", labels, ts, 0.0, 1, codes=codes)
        data = np.ascontiguousarray(np.asarray(s["time_series"])[first:last], dtype=np.float64)
        n_ch = data.shape[1]
        chans = _channels(info, n_ch)
        self.outputs[port] = StreamMeta(
            name=stream_name, kind="sig", sfreq=sfreq, ch_names=tuple(c[0] for c in chans),
            ch_types=tuple(c[1] for c in chans), units=tuple(c[2] for c in chans), dtype="<f8", source=source,
            desc={**recorded, "format": fmt, "effective_srate": float(_first(info.get("effective_srate"), 0) or 0)},
        )
        chunk = self.params.chunk_size or _estimate_chunk(raw_ts, sfreq) or max(1, int(round(max(sfreq, 1.0) / 10)))
        return _Stream(port, name, stype, sid, "sig", data, ts, sfreq, chunk)

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

    def _note_damage(self) -> None:
        """A damaged file accepted knowingly: where its readable part ends, in the run report."""
        integ = self.integrity
        end = max((float(st.ts[-1]) for st in self.streams if len(st.ts)), default=0.0)
        what = (f"the replay ends at {end:.3f} s (stream time), what followed is missing"
                if integ.details.get("truncated", True) else
                "the damaged chunks are skipped: the samples they held are missing and the replay jumps over them in time")
        msg = f"{self.source}: damaged XDF file replayed as accept_damaged asks: {integ.reason}; {what}"
        log.info(msg)  # the note puts it in the run's summary once
        self.note(msg)
        self._damage = {**integ.to_report(), "readable_until_s": round(end, 6)}

    def report(self) -> dict:
        return {
            **({"damaged_file": self._damage} if getattr(self, "_damage", None) else {}),
            "file": self.source,
            "streams": {st.port or "(main)": {"xdf_name": st.name, "xdf_type": st.type, "xdf_source_id": st.source_id,
                                              "samples": len(st.ts), "chunk": st.chunk} for st in self.streams},
            "main": self.main_rule,
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


def _ports(streams: Sequence[dict], aliases: Sequence[str | None], has_main: bool) -> list[str]:
    """The output port of each stream: '' for the main one (first), ``as`` or a name from the stream's header.

    A stream's port is its name; where streams share a name, its name and
    type; where they share both, its name, type and source id (then a number).
    """
    used: set[str] = {""}
    out: list[str] = []
    for i, (s, alias) in enumerate(zip(streams, aliases, strict=True)):
        if i == 0 and has_main:
            out.append("")
            continue
        if alias is not None:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", alias):
                raise ConfigError(f"'as: {alias}' must be a name (letters, digits, _ and -)")
            if alias in used:
                raise ConfigError(f"'as: {alias}' names two streams; give each its own")
            out.append(alias)
            used.add(alias)
            continue
        same_name = [t for t in streams if _field(t, "name") == _field(s, "name")]
        parts = [_field(s, "name")]
        if len(same_name) > 1:
            parts.append(_field(s, "type"))
            if sum(_field(t, "type") == _field(s, "type") for t in same_name) > 1 and _field(s, "source_id"):
                parts.append(_field(s, "source_id"))
        port = _port_name("_".join(p for p in parts if p), used)
        out.append(port)
        used.add(port)
    return out


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
