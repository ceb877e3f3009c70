"""Export a recorded session to FIF or EDF (through MNE) or to NWB (through pynwb).

``rtneuro export SESSION --to fif|edf|nwb`` reads the session with
:func:`~rtneuro.recording.xdf_read.read_session` (a damaged file is exported as
far as it reads) and writes:

FIF, EDF
    One file per regular signal stream (or per stream named), with the recorded
    channel names and types, values in MNE's SI units (uV -> V for EEG-like
    channels; misc channels keep their recorded units, listed in
    ``info["description"]``), and as annotations: the labels of every marker
    stream, every controller command that is not a hold (``"stim level ch0
    1.0mA"``, ``"stim off ch0"``), every decision of the safety gate (``"gate
    accepted: ..."``, ``"gate refused: <reason>"``), ``BAD_gap`` over each gap
    (filled with zeros, as MNE does for acquisition skips), ``BAD_restart`` at
    each publisher restart and ``BAD_nonfinite`` over NaN/inf samples; and
    every operator change or action of ``rtneuro.control`` (see below).
NWB
    One file holding every numeric stream as an ``ElectricalSeries`` (EEG-like
    channels, with an electrodes table) or a ``TimeSeries``, in acquisition
    (what the graph's sources produced), stimulus (what a stimulator
    delivered) or the ``rtneuro`` processing module (what the graph computed),
    with its timestamps (rate and starting time when regular to 1 ns); markers,
    commands, gate decisions, provenance and the operator's control records
    (table ``rtneuro.control``) as ``EventsTable``; gaps and
    restarts in ``invalid_times``; the configuration in ``source_script``,
    versions, git revision and command in ``notes``, the run report and the
    session header (JSON) in ``scratch``.

Time: time 0 of every exported file is the session's start, the first
timestamp of its numeric streams (``t_ref``, stream time, 0 for file replays);
``meas_date`` / ``session_start_time`` is the header's ``created_utc`` (to the
second). In a FIF file ``raw.first_time`` is when the stream started after
that, so annotation onsets (relative to ``meas_date``) are stream time minus
``t_ref``; an EDF file starts at its first sample (``meas_date`` +
``first_time``) and its onsets count from there. FIF stores annotation onsets
as float32 (about 10 us at 100 s); each FIF annotation's ``extras`` keeps its
exact stream time ``t`` and its stream.

Control records (``rtneuro.control``: live changes, annotations, arm/disarm,
emergency stops, recording segments, pauses, each with who made it) are one
line each, at the record's stream time: ``"annotation: block 2 starts"``,
``"set ctl.threshold=1.0 (by alice)"``, ``"disarm: participant moves (by
alice)"``, ``"estop: test (by rtneuro stop)"``, ``"pause"``, ``"resume"``
(who is named where the graph's behaviour changed; an annotation keeps the
operator's text, so equal texts give one MNE event id). A recording segment
(``record_start`` ... ``record_stop`` of one label) is one annotation,
``"segment: block 2"``, from its start over its length in stream time; a
segment still open when the session ends runs to the end of the data. FIF
``extras`` hold ``op``, ``who``, ``seq`` and the record as JSON (``record``;
a segment's stop in ``record_stop``). Records that are not JSON objects with
an ``op`` are left out, counted in one warning.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, RtneuroError, did_you_mean
from ..messages import (
    CMD_HOLD,
    CMD_LEVEL,
    CMD_OFF,
    CMD_PULSE,
    CMD_TRAIN,
    DECISION_STATUS,
    StreamMeta,
)
from .replay import _d, session_info, stream_meta
from .xdf_read import Session, XdfStream, read_session

__all__ = ["export_session", "FORMATS"]

log = logging.getLogger(__name__)

#: The stream of operator changes and actions (desc/rtneuro/kind "ctl").
CONTROL_STREAM = "rtneuro.control"

#: Formats :func:`export_session` writes.
FORMATS = ("fif", "edf", "nwb")

#: File name endings (MNE wants raw FIF files to end in ``raw.fif``).
_ENDING = {"fif": "_raw.fif", "edf": ".edf", "nwb": ".nwb"}

CMD_NAMES = {CMD_HOLD: "hold", CMD_LEVEL: "level", CMD_OFF: "off", CMD_PULSE: "pulse", CMD_TRAIN: "train"}

#: Channel types stored as an NWB ElectricalSeries (with an electrodes table).
_ELECTRICAL = frozenset({"eeg", "ecog", "seeg", "dbs"})
_TYPE_ALIASES = {"ieeg": "seeg", "ekg": "ecg", "trigger": "stim"}
_UNIT_WORDS = {"volts": "V", "millivolts": "mV", "microvolts": "uV", "nanovolts": "nV", "tesla": "T",
               "picotesla": "pT", "femtotesla": "fT", "ft/cm": "fT/cm"}
_PREFIX = {"": 1.0, "k": 1e3, "m": 1e-3, "u": 1e-6, "\u00b5": 1e-6, "\u03bc": 1e-6, "n": 1e-9, "p": 1e-12, "f": 1e-15}

#: Sessions whose gaps would add more zeros than this many times the recorded samples are refused for FIF/EDF.
_MAX_FILL = 10

#: Descriptions of the record fields (rtneuro.messages), for the NWB tables.
_FIELD_DOC = {
    "index": "index of the record in its stream (events: sample index in the parent signal)",
    "t": "stream time (s) of the record as rtneuro stored it",
    "time": "LSL time (s) when the gate decided (real clock)",
    "t_stream": "stream time (s) of the decision",
    "status": "gate decision code (status_name)",
    "status_name": "gate decision: accepted, clipped, refused, ramp, watchdog, estop, safe, device, estop_clear",
    "kind": "command kind code (kind_name)",
    "kind_name": "command kind: hold, level, off, pulse, train",
    "channel": "stimulator channel, or event channel index in the parent signal (-1: none or all)",
    "amplitude_ma": "amplitude (mA)",
    "pulse_width_us": "pulse width per phase (us)",
    "frequency_hz": "pulse frequency (Hz)",
    "duration_s": "duration of a train (s)",
    "phase_shape": "pulse shape code (rtneuro.messages.SHAPE_NAMES)",
    "ramp_s": "ramp time asked for (s)",
    "cause_index": "index of the command decided on in its stream (-1: the gate's own action)",
    "reason": "why the gate clipped or refused, or what it did",
    "label": "marker text",
    "code": "event code (the stream's event_id maps labels to codes)",
    "value": "numeric payload of the event",
}


@dataclass(slots=True)
class _Records:
    """The records of a marker or command stream, as (stream time, record) pairs."""

    meta: StreamMeta
    times: np.ndarray
    recs: list[dict]


@dataclass(slots=True)
class _Control:
    """One operator change or action (a segment: its start and stop), as the exporters write it."""

    t: float  # stream time (the recorded sample's timestamp; a segment's start)
    duration: float  # seconds (a segment's length, else 0)
    text: str  # the one-line description
    op: str  # the record's op ("segment" for a record_start ... record_stop pair)
    who: str
    seq: int  # the record's sequence number (-1: none)
    rec: dict  # the record (a segment's record_start, or its record_stop when the start is missing)
    stop: dict | None = None  # a segment's record_stop (None: still open at the end, or no segment)


@dataclass(slots=True)
class _Loaded:
    """A session as the exporters see it."""

    path: Path
    session: Session
    info: dict
    numeric: dict[str, tuple[XdfStream, StreamMeta]]
    records: dict[str, _Records]
    gaps: list[tuple[float, dict]]
    provenance: list[tuple[float, dict]]
    report: str | None
    t_ref: float
    start: datetime | None
    skipped: list[str] = field(default_factory=list)
    control: list[_Control] = field(default_factory=list)
    control_bad: int = 0  # samples of rtneuro.control that are not control records (left out)


# -- entry point --------------------------------------------------------------------------------


def export_session(session: str | Path, to: str, out: str | Path | None = None,
                   streams: list[str] | None = None) -> list[Path]:
    """Export a recorded session to FIF, EDF or NWB.

    Parameters
    ----------
    session : path-like
        The ``.xdf`` that ``rtneuro run --record`` wrote. A damaged session is
        exported as far as it reads, with a warning (logged) naming the damage.
    to : {"fif", "edf", "nwb"}
        The format.
    out : path-like or None
        The folder to write in (created if missing); default: the session's
        folder. For NWB, a path ending in ``.nwb`` names the file itself.
    streams : list of str or None
        FIF and EDF: the streams to write, one file each (default: every
        regular signal stream; feature streams when named). NWB: the streams
        to include (default: all). Marker, command and decision streams are
        always annotations (FIF, EDF).

    Returns
    -------
    list of Path
        The files written: ``<session stem>-<stream>_raw.fif`` or
        ``<session stem>-<stream>.edf`` per stream, or ``<session stem>.nwb``.

    Raises
    ------
    ConfigError
        Unknown format or stream name, a stream that cannot go to the format
        (irregular, no samples, EDF channel names over 16 characters), a
        session with no signal stream, an output file that exists already.
    RecordingError
        The session is not an XDF file.
    RtneuroError
        Writing failed (full disk, permissions); nothing is left behind.
    """
    fmt = str(to).strip().lower().lstrip(".")
    if fmt not in FORMATS:
        raise ConfigError(f"cannot export to '{to}'{did_you_mean(fmt, FORMATS)}; choose one of {', '.join(FORMATS)}")
    _need(fmt)
    path = Path(session).expanduser()
    if not path.is_file():
        raise ConfigError(f"session file not found: {path}; give the .xdf that 'rtneuro run --record' wrote")
    ld = _load(path)
    folder, nwb_name = _out_folder(path, out, fmt)
    if fmt == "nwb":
        picks = _pick_nwb(ld, streams)
        targets = [folder / (nwb_name or f"{path.stem}.nwb")]
    else:
        picks = _pick_mne(ld, streams, fmt)
        targets = [folder / f"{path.stem}-{name}{_ENDING[fmt]}" for name in picks]
    for t in targets:
        if t.exists():
            raise ConfigError(f"{t} exists already; delete it or export to another folder (out / --out): "
                              "exports never overwrite")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # write in a temporary folder next to the targets, then move: a failed export leaves nothing behind
        tmp = Path(tempfile.mkdtemp(prefix=".rtneuro-export-", dir=folder))
    except OSError as exc:
        raise ConfigError(f"cannot write in {folder}: {exc.strerror}; export to another folder (out / --out)") from None
    try:
        parts: list[Path] = []
        if fmt == "nwb":
            _write_nwb(ld, picks, tmp / targets[0].name)
            parts.append(tmp / targets[0].name)
        else:
            for name, target in zip(picks, targets, strict=True):
                parts.extend(_write_mne(ld, name, tmp / target.name, fmt))
        written = []
        for part in parts:
            dest = folder / part.name
            if dest.exists():
                raise ConfigError(f"{dest} exists already; delete it or export to another folder (out / --out): "
                                  "exports never overwrite")
            part.replace(dest)
            written.append(dest)
        log.info("export: %s -> %s", path.name, ", ".join(str(p) for p in written))
        return written
    except OSError as exc:
        raise RtneuroError(f"exporting {path.name} to {folder} failed: {exc}; nothing was written "
                           "(check the free space and permissions there)") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _need(fmt: str) -> None:
    """Refuse early, naming the package, when the writer for ``fmt`` is not installed."""
    import importlib.util

    pkg = {"edf": "edfio", "nwb": "pynwb"}.get(fmt)
    if pkg and importlib.util.find_spec(pkg) is None:
        raise ConfigError(f"exporting to {fmt.upper()} needs the '{pkg}' package, which is not installed: "
                          f"pip install {pkg} (or pip install 'rtneuro[export]')")


def _out_folder(path: Path, out: str | Path | None, fmt: str) -> tuple[Path, str | None]:
    if out is None:
        return path.parent, None
    o = Path(out).expanduser()
    if fmt == "nwb" and o.suffix.lower() == ".nwb":
        return o.parent, o.name
    if o.suffix.lower() in (".fif", ".edf", ".nwb"):
        raise ConfigError(f"out={o} looks like a file name; {fmt.upper()} exports write one file per stream: "
                          "give the folder to write them in")
    if o.exists() and not o.is_dir():
        raise ConfigError(f"out={o} is a file; give a folder to write the {fmt.upper()} files in")
    return o, None


# -- reading ------------------------------------------------------------------------------------


def _load(path: Path) -> _Loaded:
    s = read_session(path)
    if s.damage:
        log.warning("session %s is damaged: %s; exporting what was read", path, s.damage)
    numeric: dict[str, tuple[XdfStream, StreamMeta]] = {}
    records: dict[str, _Records] = {}
    gaps: list[tuple[float, dict]] = []
    prov: list[tuple[float, dict]] = []
    report = None
    skipped = []
    ctl_streams: list[XdfStream] = []
    for xs in s.streams:
        kind = _d(xs.info, "desc", "rtneuro", "kind")
        if kind == "report":
            report = str(xs.time_series[-1][0]) if len(xs.time_series) else None
            continue
        if kind == "ctl":
            ctl_streams.append(xs)
            continue
        if kind in ("gaps", "provenance"):
            rows = zip(np.asarray(xs.time_stamps, dtype=float).tolist(), _json_rows(xs, 0), strict=True)
            (gaps if kind == "gaps" else prov).extend((t, r) for t, r in rows if r is not None)
            continue
        try:
            meta = stream_meta(xs)
        except ConfigError:
            skipped.append(xs.name)
            continue
        if meta.kind in ("sig", "feat"):
            numeric[xs.name] = (xs, meta)
        else:
            col = 1 if meta.kind == "evt" else 0
            ts = np.asarray(xs.time_stamps, dtype=float)
            times, recs = [], []
            for t, r, row in zip(ts.tolist(), _json_rows(xs, col), xs.time_series, strict=True):
                if r is None:
                    continue
                if meta.kind == "evt":
                    r["label"] = str(row[0])  # the marker text as recorded (the record's may be cut at 64 bytes)
                times.append(t)
                recs.append(r)
            records[xs.name] = _Records(meta, np.array(times, dtype=float), recs)
    if skipped:
        log.info("export: streams %s were not written by an rtneuro recorder; left out", skipped)
    firsts = [float(x.time_stamps[0]) for x, _ in numeric.values() if len(x.time_stamps)]
    t_ref = min(firsts) if firsts else 0.0
    info = session_info(s)
    control: list[_Control] = []
    control_bad = 0
    for xs in ctl_streams:
        ctl_rows, bad = _control_rows(xs, _data_end(numeric))
        control.extend(ctl_rows)
        control_bad += bad
    return _Loaded(path, s, info, numeric, records, gaps, prov, report, t_ref, _start_time(s, info), skipped,
                   control=control, control_bad=control_bad)


def _parse_rows(xs: XdfStream, col: int) -> tuple[list[dict | None], int]:
    """The JSON object in column ``col`` of each sample (None where there is none), and how many had none."""
    out: list[dict | None] = []
    for row in xs.time_series:
        try:
            r = json.loads(row[col])
        except (ValueError, IndexError, TypeError):
            r = None
        out.append(r if isinstance(r, dict) else None)
    return out, sum(r is None for r in out)


def _json_rows(xs: XdfStream, col: int) -> list[dict | None]:
    out, bad = _parse_rows(xs, col)
    if bad:
        log.warning("export: %d records of stream '%s' are not JSON objects; left out", bad, xs.name)
    return out


def _data_end(numeric: dict[str, tuple[XdfStream, StreamMeta]]) -> float | None:
    """Stream time just after the last sample of the session's numeric streams (None: no samples)."""
    ends = [float(xs.time_stamps[-1]) + (1.0 / meta.sfreq if meta.sfreq > 0 else 0.0)
            for xs, meta in numeric.values() if len(xs.time_stamps)]
    return max(ends) if ends else None


# -- control records ----------------------------------------------------------------------------

#: Control ops whose description names who made them (they change what the graph does).
_BY_WHO = frozenset({"set", "arm", "disarm", "estop", "estop_clear"})


def _one_line(v: Any, limit: int = 500) -> str:
    """``v`` as text on one line (whitespace runs become one space), cut at ``limit`` characters."""
    text = " ".join(str(v).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _value_text(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return _one_line(json.dumps(v, default=str, ensure_ascii=False), 80)


def _control_text(rec: dict) -> str:
    """The one-line description of a control record (not a segment)."""
    op = str(rec["op"])
    args = rec["args"] if isinstance(rec.get("args"), dict) else {}
    if op == "annotate":
        text = f"annotation: {_one_line(args.get('text', ''))}"
    elif op == "set":
        values = rec.get("values")
        flat = ({f"{n}.{k}": v for n, vs in values.items() if isinstance(vs, dict) for k, v in vs.items()}
                if isinstance(values, dict) else {})
        if not flat and isinstance(args.get("changes"), dict):
            flat = {str(k): v for k, v in args["changes"].items()}
        text = "set " + (", ".join(f"{k}={_value_text(v)}" for k, v in flat.items()) or "(nothing)")
    else:
        detail = args.get("reason") or args.get("text") or args.get("label")
        if detail == "operator" or op in ("pause", "resume"):  # the default reason says nothing
            detail = None
        text = f"{op}: {_one_line(detail, 200)}" if detail else op
    notes = []
    if op in _BY_WHO and rec.get("who"):
        notes.append(f"by {_one_line(rec['who'], 100)}")
    errors = rec.get("errors")
    if isinstance(errors, dict) and errors:
        notes.append("not applied to " + ", ".join(str(n) for n in errors))
    return text + (f" ({'; '.join(notes)})" if notes else "")


def _seq(rec: dict) -> int:
    seq = rec.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else -1


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _control_rows(xs: XdfStream, end: float | None) -> tuple[list[_Control], int]:
    """The control records of stream ``xs`` as annotations, and how many samples were no control record.

    ``end`` is the stream time where the data ends: a segment still open runs
    to it (or to the last record, without data).
    """
    recs, _ = _parse_rows(xs, 0)
    times = np.asarray(xs.time_stamps, dtype=float).tolist()
    good = [(t, r) for t, r in zip(times, recs, strict=True)
            if r is not None and isinstance(r.get("op"), str) and r["op"] and math.isfinite(t)]
    bad = len(times) - len(good)
    if bad:
        log.warning("export: %d samples of stream '%s' are not control records (JSON objects with an 'op'); left out",
                    bad, xs.name)
    out: list[_Control] = []
    opened: dict[str, tuple[float, dict]] = {}  # segment label -> (start, record_start)

    def segment(t0: float, t1: float | None, start: dict, stop: dict | None, label: str) -> None:
        dur = 0.0 if t1 is None else t1 - t0
        if dur < 0 or not math.isfinite(dur):  # the records lie on different clocks: trust the recorded length
            stop_args = stop.get("args") if stop is not None else None
            dur = max(_finite(stop_args.get("duration_s")) or 0.0, 0.0) if isinstance(stop_args, dict) else 0.0
        whos = dict.fromkeys(str(r.get("who") or "") for r in (start, stop) if r is not None)
        out.append(_Control(t0, dur, f"segment: {_one_line(label, 200)}", "segment", ", ".join(w for w in whos if w),
                            _seq(start), start, stop))

    for t, r in good:
        op = r["op"]
        args = r["args"] if isinstance(r.get("args"), dict) else {}
        label = str(args.get("label") or "")
        if op == "record_start":
            if label in opened:  # its stop was lost: it ended when the next one began
                t0, start = opened.pop(label)
                segment(t0, t, start, None, label)
            opened[label] = (t, r)
        elif op == "record_stop":
            if label in opened:
                t0, start = opened.pop(label)
                segment(t0, t, start, r, label)
            else:  # the start is not in the file: from where the record says it began
                began = _finite(args.get("t_stream_start"))
                if began is None:
                    began = t - max(_finite(args.get("duration_s")) or 0.0, 0.0)
                segment(began, t, r, r, label)
        else:
            out.append(_Control(t, 0.0, _control_text(r), op, str(r.get("who") or ""), _seq(r), r))
    last = max((t for t, _ in good), default=None)
    for label, (t0, start) in opened.items():  # still recording when the session ended
        t1 = end if end is not None and end >= t0 else last
        segment(t0, t1, start, None, label)
    out.sort(key=lambda c: c.t)
    return out, bad


def _start_time(s: Session, info: dict) -> datetime | None:
    """Wall-clock time of stream time ``t_ref``: the header's created_utc (else the XDF header's datetime)."""
    for raw in (info.get("created_utc"), _d(s.file_header, "info", "datetime")):
        if not raw:
            continue
        try:
            dt = datetime.fromisoformat(str(raw))
        except ValueError:
            continue
        return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)
    return None


# -- choosing streams ---------------------------------------------------------------------------


def _unknown(ld: _Loaded, names: Sequence[str]) -> None:
    have = [*ld.numeric, *ld.records, *([CONTROL_STREAM] if _has_control(ld) else [])]
    for n in names:
        if n not in have:
            raise ConfigError(f"stream '{n}' is not in session {ld.path.name}{did_you_mean(n, have)}; "
                              f"its streams: {', '.join(have) or 'none'}")


def _no_signal(ld: _Loaded, fmt: str) -> ConfigError:
    have = ", ".join(f"{n} ({m.kind})" for n, (_, m) in ld.numeric.items()) or "none"
    what = f"{ld.path} has no regular signal stream to export to {fmt.upper()} (numeric streams: {have})"
    if not ld.numeric:
        what = f"{ld.path} has no signal stream to export (rtneuro streams: {', '.join(ld.records) or 'none'})"
        if ld.skipped:
            what += f"; streams {', '.join(ld.skipped)} were not written by rtneuro: read them with pyxdf or mne"
    if ld.session.damage:
        what += f"; the session is damaged: {ld.session.damage}"
    elif ld.numeric:
        what += "; name a feature stream (streams=[...] / --stream), or export to nwb"
    return ConfigError(what)


def _pick_mne(ld: _Loaded, streams: list[str] | None, fmt: str) -> list[str]:
    if streams:
        _unknown(ld, streams)
        for n in streams:
            if n == CONTROL_STREAM and n not in ld.numeric:
                raise ConfigError(f"stream '{n}' holds the operator's control records: in {fmt.upper()} they are "
                                  "annotations of every exported stream; name signal or feature streams")
            if n in ld.records:
                raise ConfigError(f"stream '{n}' is a {_what(ld.records[n].meta)} stream: in {fmt.upper()} its "
                                  "records are annotations of every exported stream; name signal or feature streams")
            xs, meta = ld.numeric[n]
            if meta.sfreq <= 0:
                raise ConfigError(f"stream '{n}' is irregular (no sampling rate): {fmt.upper()} holds regular "
                                  "signals only; export it to nwb")
            if not len(xs.time_stamps):
                raise ConfigError(f"stream '{n}' has no samples in {ld.path.name}; nothing to export")
        picks = list(dict.fromkeys(streams))
    else:
        picks = _default_picks(ld, fmt)
    if fmt == "edf":
        for n in picks:
            long = [c for c in ld.numeric[n][1].ch_names if len(c) > 16]
            if long:
                raise ConfigError(f"stream '{n}': EDF channel labels have at most 16 characters, and "
                                  f"{', '.join(long[:3])}{' ...' if len(long) > 3 else ''} are longer; "
                                  "export it to fif or nwb")
    return picks


def _default_picks(ld: _Loaded, fmt: str) -> list[str]:
    picks = []
    for n, (xs, meta) in ld.numeric.items():
        if meta.kind != "sig" or meta.sfreq <= 0:
            continue
        if not len(xs.time_stamps):
            log.warning("export: stream '%s' has no samples; left out", n)
            continue
        picks.append(n)
    if not picks:
        raise _no_signal(ld, fmt)
    return picks


def _pick_nwb(ld: _Loaded, streams: list[str] | None) -> list[str]:
    if streams:
        _unknown(ld, streams)
        return list(dict.fromkeys(streams))
    if not ld.numeric:
        raise _no_signal(ld, "nwb")
    return [*ld.numeric, *ld.records]


def _has_control(ld: _Loaded) -> bool:
    return any(_d(xs.info, "desc", "rtneuro", "kind") == "ctl" for xs in ld.session.streams)


def _what(meta: StreamMeta) -> str:
    if meta.kind == "evt":
        return "marker"
    return "decision" if meta.dtype == "decision" else "command"


# -- channels and units -------------------------------------------------------------------------


def _mne_type(t: str) -> str | None:
    import mne

    t = _TYPE_ALIASES.get(t.strip().lower(), t.strip().lower())
    return t if t in mne.io.get_channel_type_constants() else None


def _scale(unit: str, si: str) -> float | None:
    """Factor from ``unit`` to the SI unit ``si`` ("V", "T", "T/m"...), or None."""
    u = unit.strip()
    u = _UNIT_WORDS.get(u.lower(), u)
    if si == "T/m" and u.endswith("/cm"):
        f = _scale(u[:-3], "T")
        return None if f is None else f * 100.0
    for p, f in _PREFIX.items():
        if u == p + si:
            return f
    return None


@dataclass(slots=True)
class _Channels:
    names: list[str]
    types: list[str]  # MNE channel types
    scales: np.ndarray  # recorded value * scale = value in MNE's unit
    kept: dict[str, str]  # channel -> recorded unit, for channels kept as recorded
    notes: list[str]  # what was changed


def _channels(meta: StreamMeta) -> _Channels:
    from mne.defaults import DEFAULTS

    si_units = DEFAULTS["si_units"]
    n = meta.n_channels
    types, scales, kept, notes = [], np.ones(n), {}, []
    for i, name in enumerate(meta.ch_names):
        raw_type = meta.ch_types[i] if i < len(meta.ch_types) else ""
        unit = meta.units[i] if i < len(meta.units) else ""
        t = _mne_type(raw_type)
        if t is None:
            notes.append(f"{name}: type '{raw_type}' unknown to MNE, written as misc")
            t = "misc"
        si = si_units.get(t)
        if t in ("misc", "stim") or si in (None, "AU"):
            kept[name] = unit
        else:
            f = _scale(unit, si)
            if f is None:
                notes.append(f"{name}: unit '{unit}' is not a unit of {t} ({si}), written unscaled as misc")
                t = "misc"
                kept[name] = unit
            else:
                scales[i] = f
        types.append(t)
    return _Channels(list(meta.ch_names), types, scales, kept, notes)


# -- FIF and EDF --------------------------------------------------------------------------------


def _fill_gaps(x: np.ndarray, ts: np.ndarray, sfreq: float, gaps: list[tuple[float, dict]],
               name: str) -> tuple[np.ndarray, list[tuple[int, int]], list[int]]:
    """The samples with each recorded gap filled with zeros.

    Returns the samples ``(n_times, n_channels)``, the gaps as ``(first
    filled sample, samples)`` and the samples where the publisher restarted,
    in positions of the returned samples.
    """
    n = len(ts)
    holes: list[tuple[int, int]] = []  # (position in x, missing)
    restarts: list[int] = []
    half = 0.5 / sfreq
    for t, g in gaps:
        if g.get("stream") != name:
            continue
        j = int(np.searchsorted(ts, t - half))
        if g.get("what") == "gap":
            missing = int(g.get("missing", 0))
            if missing <= 0 or j <= 0 or j >= n:
                log.info("export: gap record %s of '%s' lies outside its recorded samples; no fill", g, name)
                continue
            holes.append((j, missing))
        elif 0 < j < n:
            restarts.append(j)
    if not holes:
        return x, [], sorted(restarts)
    total = sum(m for _, m in holes)
    if total > _MAX_FILL * max(n, 1):
        raise ConfigError(f"stream '{name}' has gaps of {total} samples, more than {_MAX_FILL}x its {n} recorded "
                          "samples: too much to fill with zeros; export it to nwb (which keeps the timestamps)")
    holes.sort()
    y = np.insert(x, np.repeat([j for j, _ in holes], [m for _, m in holes]), 0, axis=0)
    filled, shift = [], 0
    for j, m in holes:
        filled.append((j + shift, m))
        shift += m
    moved = [r + sum(m for j, m in holes if j <= r) for r in restarts]
    return y, filled, sorted(moved)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of True."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return [(int(a), int(b - a)) for a, b in zip(starts, stops, strict=True)]


def _num(v: Any) -> str:
    return repr(round(float(v), 6))


def _command_text(r: dict) -> str:
    kind = int(r.get("kind", -1))
    ch = int(r.get("channel", -1))
    where = f"ch{ch}" if ch >= 0 else "all channels"
    name = CMD_NAMES.get(kind, f"kind {kind}")
    if kind in (CMD_OFF, CMD_HOLD):
        return f"stim {name} {where}"
    text = f"stim {name} {where} {_num(r.get('amplitude_ma', 0.0))}mA"
    if kind == CMD_TRAIN:
        text += f" {_num(r.get('frequency_hz', 0.0))}Hz {_num(r.get('duration_s', 0.0))}s"
    return text


def _decision_text(r: dict) -> str:
    status = DECISION_STATUS.get(int(r.get("status", -1)), f"status {r.get('status')}")
    reason = str(r.get("reason") or "").strip()
    return f"gate {status}: {reason or _command_text(r)}"


def _annotations(ld: _Loaded) -> list[tuple[float, float, str, dict]]:
    """(stream time, duration, description, extras) of every marker, non-hold command, gate decision and control record."""
    out = []
    for c in ld.control:
        extras: dict[str, Any] = {"stream": CONTROL_STREAM, "t": c.t, "op": c.op, "who": c.who, "seq": c.seq,
                                  "record": json.dumps(c.rec, default=str)}
        if c.op == "segment":
            extras["record_stop"] = None if c.stop is None else json.dumps(c.stop, default=str)
        out.append((c.t, c.duration, c.text, extras))
    for name, rs in ld.records.items():
        meta = rs.meta
        for t, r in zip(rs.times.tolist(), rs.recs, strict=True):
            if meta.kind == "evt":
                dur = float(r.get("duration") or 0.0)
                out.append((t, dur if math.isfinite(dur) and dur > 0 else 0.0, str(r["label"]), {"stream": name, "t": t}))
            elif meta.dtype == "decision":
                if int(r.get("kind", -1)) == CMD_HOLD and int(r.get("status", -1)) == 0:
                    continue
                out.append((t, 0.0, _decision_text(r), {"stream": name, "t": t}))
            elif meta.dtype == "command":
                if int(r.get("kind", -1)) == CMD_HOLD:
                    continue
                dur = float(r.get("duration_s") or 0.0) if int(r.get("kind", -1)) == CMD_TRAIN else 0.0
                out.append((t, dur, _command_text(r), {"stream": name, "t": t}))
    return out


def _write_mne(ld: _Loaded, name: str, target: Path, fmt: str) -> list[Path]:
    import mne

    xs, meta = ld.numeric[name]
    ts = np.asarray(xs.time_stamps, dtype=float)
    sfreq = float(meta.sfreq)
    ch = _channels(meta)
    for note in ch.notes:
        log.warning("export: stream '%s', channel %s", name, note)
    x = np.asarray(xs.time_series)
    data, holes, restarts = _fill_gaps(x, ts, sfreq, ld.gaps, name)
    y = np.ascontiguousarray(data.astype(np.float64).T) * ch.scales[:, None]  # (n_channels, n_times)
    bad = ~np.isfinite(y).all(axis=0)
    nonfinite = _runs(bad)
    if fmt == "edf" and nonfinite:
        y[:, bad] = 0.0  # EDF has no NaN: zeros, under BAD_nonfinite
    t0 = float(ts[0])
    rel0 = t0 - ld.t_ref
    if fmt == "fif":
        first_samp = int(round(rel0 * sfreq))
        offset = rel0 - first_samp / sfreq  # sub-sample: sample times stay exact
    else:  # EDF starts at its first sample
        first_samp, offset = 0, rel0
    info = mne.create_info(ch.names, sfreq, ch.types, verbose=False)
    raw = mne.io.RawArray(y, info, first_samp=first_samp, verbose=False)
    meas = None if ld.start is None else ld.start + timedelta(seconds=offset)
    raw.set_meas_date(meas)
    raw.info["description"] = _description(ld, name, meta, ch, t0, holes)
    raw.info["device_info"] = {"type": "rtneuro", "model": name}

    # annotations, as seconds after the stream's first sample
    rows = [(t - t0, d, desc, ex) for t, d, desc, ex in _annotations(ld)]
    rows += [(j / sfreq, m / sfreq, "BAD_gap", {"stream": name, "samples": m}) for j, m in holes]
    rows += [(j / sfreq, 0.0, "BAD_restart", {"stream": name}) for j in restarts]
    rows += [(j / sfreq, m / sfreq, "BAD_nonfinite", {"stream": name, "samples": m}) for j, m in nonfinite]
    span = data.shape[0] / sfreq
    half = 0.5 / sfreq
    inside = []
    for rel, dur, desc, ex in rows:
        if rel >= span or rel + dur < -half or (rel < -half and dur == 0):
            continue
        if rel < 0:  # began before the stream: keep the part inside it
            rel, dur = 0.0, max(dur + rel, 0.0)
        inside.append((rel, dur, desc, ex))
    if len(inside) < len(rows):
        log.info("export: %d annotations fall outside stream '%s' (%.3f s from stream time %.6f s); left out",
                 len(rows) - len(inside), name, span, t0)
    inside.sort(key=lambda r: r[0])
    shift = raw.first_time if meas is not None else 0.0
    annot = mne.Annotations([r[0] + shift for r in inside], [r[1] for r in inside],
                            [r[2] for r in inside], orig_time=meas, extras=[r[3] for r in inside] if fmt == "fif" else None)
    raw.set_annotations(annot, emit_warning=False)
    with warnings.catch_warnings(record=True) as caught, mne.utils.use_log_level("error"):
        warnings.simplefilter("always")
        if fmt == "fif":
            dt = np.dtype(meta.dtype)
            single = dt == np.float32 or (dt.kind in "iu" and dt.itemsize <= 2)  # exact in float32
            parts = raw.save(target, fmt="single" if single else "double", overwrite=False, verbose=False)
        else:
            mne.export.export_raw(target, raw, fmt="edf", physical_range="channelwise", add_ch_type=False,
                                  overwrite=False, verbose=False)
            _edf_units(target, ch)
            parts = [target]
    for w in caught:
        log.info("export: %s: %s", target.name, w.message)
    return [Path(p) for p in parts]


def _description(ld: _Loaded, name: str, meta: StreamMeta, ch: _Channels, t0: float,
                 holes: list[tuple[int, int]]) -> str:
    info = ld.info
    parts = [f"rtneuro session {ld.path.name}, stream '{name}' ({meta.kind}, {meta.n_channels} channels at "
             f"{meta.sfreq:g} Hz, {meta.source or 'source unknown'})"]
    if ld.start is not None:
        parts.append(f"time 0 (meas_date, the session's start) is stream time {ld.t_ref:.6f} s")
    parts.append(f"the first sample is at stream time {t0:.6f} s")
    if info:
        parts.append(f"graph '{info.get('graph', '?')}', rtneuro {(info.get('versions') or {}).get('rtneuro', '?')}, "
                     f"git {info.get('git_revision', '?')}")
    converted = sorted({t for c, t in zip(ch.names, ch.types, strict=True) if c not in ch.kept})
    if converted:
        parts.append(f"{', '.join(converted)} channels in SI units")
    if ch.kept:
        by_unit: dict[str, list[str]] = {}
        for c, u in ch.kept.items():
            by_unit.setdefault(u or "no unit", []).append(c)
        parts.append("values as recorded for " + "; ".join(f"{u}: {', '.join(cs)}" for u, cs in by_unit.items()))
    parts.extend(ch.notes)
    if holes:
        parts.append(f"{len(holes)} gaps ({sum(m for _, m in holes)} samples) filled with zeros under BAD_gap")
    if ld.control_bad:
        parts.append(f"{ld.control_bad} samples of {CONTROL_STREAM} that are not control records left out")
    if ld.session.damage:
        parts.append(f"damaged session, exported as far as it reads: {ld.session.damage}")
    return "; ".join(parts)


def _edf_units(path: Path, ch: _Channels) -> None:
    """Write the recorded units of channels kept as recorded (MNE writes none for them) in the EDF header."""
    import edfio

    units = {c: u for c, u in ch.kept.items() if u and u.isascii() and len(u) <= 8}
    if not units:
        return
    edf = edfio.read_edf(path)
    for sig in edf.signals:
        if sig.label in units:
            sig.physical_dimension = units[sig.label]
    tmp = path.with_name(path.name + ".units")
    edf.write(tmp)
    tmp.replace(path)


# -- NWB ----------------------------------------------------------------------------------------


def _categories(info: dict) -> dict[str, str]:
    """Node id -> node category ("source", "stimulator", ...), from the recorded configuration."""
    import yaml

    from ..nodes import node_class

    try:
        doc = yaml.safe_load(info.get("config") or "") or {}
    except yaml.YAMLError:
        return {}
    out = {}
    for raw in doc.get("nodes") or [] if isinstance(doc, dict) else []:
        if not isinstance(raw, dict) or "id" not in raw:
            continue
        try:
            out[str(raw["id"])] = node_class(str(raw.get("type", ""))).category
        except RtneuroError:
            continue
    return out


def _category(name: str, cats: dict[str, str]) -> str:
    for nid, cat in cats.items():
        if name == nid or name.startswith(nid + "."):
            return cat
    return ""


def _column(name: str, values: list[Any], doc: str) -> Any:
    """A VectorData of numbers or strings (anything else as JSON text)."""
    from hdmf.common import VectorData

    if values and all(isinstance(v, bool) for v in values):
        data: Any = np.asarray(values, dtype=bool)
    elif values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        data = np.asarray(values)
    elif all(isinstance(v, str) for v in values):
        data = list(values)
    else:
        data = [json.dumps(v, default=str) for v in values]
        doc += " (JSON)"
    return VectorData(name=name, description=doc, data=data)


def _events_table(name: str, description: str, times: np.ndarray, recs: list[dict],
                  durations: np.ndarray | None = None, docs: dict[str, str] | None = None) -> Any:
    from pynwb.event import DurationVectorData, EventsTable, TimestampVectorData

    cols = [TimestampVectorData(name="timestamp", description="seconds after the session start (stream time - t_ref)",
                                data=np.asarray(times, dtype=float))]
    if durations is not None:
        cols.append(DurationVectorData(name="duration", description="seconds (NaN: none)", data=durations))
    keys = list(dict.fromkeys(k for r in recs for k in r))
    for k in keys:
        if k in ("timestamp", "id") or (k == "duration" and durations is not None):
            continue
        doc = (docs or {}).get(k) or _FIELD_DOC.get(k, f"record field '{k}'")
        cols.append(_column(k, [r.get(k) for r in recs], doc))
    return EventsTable(name=name, description=description, columns=cols)


def _series(ld: _Loaded, nwb: Any, name: str, source: bool, groups: dict[str, dict[str, int]]) -> Any:
    """The stream as an ElectricalSeries (EEG-like channels in volts) or a TimeSeries (as recorded).

    ``groups`` maps each electrode group (one per stream that added electrodes)
    to its channels' rows in the electrodes table: a derived stream whose
    channels all belong to one group (the band-passed EEG) points at those
    rows; a source stream always adds its own.
    """
    from pynwb import TimeSeries
    from pynwb.ecephys import ElectricalSeries

    xs, meta = ld.numeric[name]
    ts = np.asarray(xs.time_stamps, dtype=float)
    data = np.asarray(xs.time_series)
    n = len(ts)
    timing: dict[str, Any]
    regular = (meta.sfreq > 0 and n >= 1
               and float(np.max(np.abs(ts - (ts[0] + np.arange(n) / meta.sfreq)), initial=0.0)) <= 1e-9)
    if regular:
        timing = {"rate": float(meta.sfreq), "starting_time": float(ts[0] - ld.t_ref)}
    else:
        timing = {"timestamps": ts - ld.t_ref}
    ch = _channels(meta)
    units = meta.units or ("",) * meta.n_channels
    desc = (f"rtneuro stream '{name}' ({meta.kind}, {meta.source or 'source unknown'}); channels: "
            + ", ".join(f"{c} [{u}]" for c, u in zip(meta.ch_names, units, strict=False)))
    gaps = [g for _, g in ld.gaps if g.get("stream") == name]
    if gaps:
        desc += f"; {len(gaps)} gaps or restarts (see invalid_times), visible in the timestamps"
    if not _is_electrical(ch):
        kinds = set(units)
        unit = units[0] if len(kinds) == 1 and units[0] else "mixed (see description)" if len(kinds) > 1 else "n.a."
        return TimeSeries(name=name, data=data, unit=unit, description=desc, **timing)
    rows = None
    if not source:
        rows = next(([g[c] for c in ch.names] for g in groups.values() if set(ch.names) <= set(g)), None)
    if rows is None:
        dev = nwb.create_device(name=name, description=f"source of stream '{name}': {meta.source or 'unknown'}")
        group = nwb.create_electrode_group(name=name, description=f"channels of stream '{name}'",
                                           location="unknown", device=dev)
        mine = groups[name] = {}
        for c, t in zip(ch.names, ch.types, strict=True):
            mine[c] = len(nwb.electrodes) if nwb.electrodes is not None else 0
            nwb.add_electrode(group=group, location="unknown", label=c, channel_type=t)
        rows = [mine[c] for c in ch.names]
    region = nwb.create_electrode_table_region(region=rows, description=f"channels of stream '{name}'")
    same = bool(np.all(ch.scales == ch.scales[0]))
    return ElectricalSeries(name=name, data=data, electrodes=region, description=desc,
                            conversion=float(ch.scales[0]) if same else 1.0,
                            channel_conversion=None if same else ch.scales, **timing)


def _is_electrical(ch: _Channels) -> bool:
    return bool(ch.names) and not ch.kept and set(ch.types) <= _ELECTRICAL


def _notes(ld: _Loaded) -> str:
    info = ld.info
    lines = [f"rtneuro session {ld.path.name}, exported by rtneuro.recording.export.",
             f"Time 0 is stream time {ld.t_ref:.6f} s (the first sample of the session's numeric streams); "
             f"stream time = NWB time + {ld.t_ref:.6f} s."]
    for k in ("graph", "config_path", "created_utc", "git_revision", "command", "clock"):
        if info.get(k):
            lines.append(f"{k}: {info[k]}")
    if info.get("versions"):
        lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    if ld.session.damage:
        lines.append(f"The session is damaged; exported as far as it reads: {ld.session.damage}")
    return "\n".join(lines)


def _write_nwb(ld: _Loaded, picks: list[str], target: Path) -> None:
    import pynwb
    import yaml
    from pynwb import NWBHDF5IO, NWBFile

    info = ld.info
    start = ld.start
    if start is None:
        start = datetime.fromtimestamp(ld.path.stat().st_mtime, UTC)
        log.warning("export: %s has no start time in its header; NWB session_start_time is the file's modification time",
                    ld.path.name)
    try:
        cfg = yaml.safe_load(info.get("config") or "") or {}
    except yaml.YAMLError:
        cfg = {}
    about = str(cfg.get("description") or "") if isinstance(cfg, dict) else ""
    versions = info.get("versions") or {}
    profiles = info.get("profiles") or {}
    nwb = NWBFile(
        session_description=f"rtneuro session of graph '{info.get('graph', ld.path.stem)}'" + (f": {about}" if about else ""),
        identifier=str(uuid.uuid4()),
        session_start_time=start,
        session_id=ld.path.stem,
        experiment_description=about or None,
        notes=_notes(ld),
        source_script=info.get("config") or None,
        source_script_file_name=(info.get("config_path") or "unknown") if info.get("config") else None,
        stimulus_notes="\n\n".join(f"{sid}: device profile {p.get('profile')} ({p.get('path')})\n{p.get('text', '')}"
                                   for sid, p in profiles.items() if isinstance(p, dict)) or None,
        was_generated_by=[["rtneuro", str(versions.get("rtneuro", "unknown"))], ["pynwb", pynwb.__version__]],
    )
    cats = _categories(info)
    groups: dict[str, dict[str, int]] = {}
    module = None
    rank = {"source": 0, "stimulator": 2}  # sources first: their streams name the electrodes
    numeric = sorted((n for n in picks if n in ld.numeric), key=lambda n: rank.get(_category(n, cats), 1))
    if any(_is_electrical(_channels(ld.numeric[n][1])) for n in numeric):
        nwb.add_electrode_column(name="label", description="channel name")
        nwb.add_electrode_column(name="channel_type", description="MNE channel type")
    for name in numeric:
        if not len(ld.numeric[name][0].time_stamps):
            log.warning("export: stream '%s' has no samples; left out of the NWB file", name)
            continue
        cat = _category(name, cats)
        series = _series(ld, nwb, name, cat == "source", groups)
        if cat == "source":
            nwb.add_acquisition(series)
        elif cat == "stimulator":
            nwb.add_stimulus(series)
        else:
            if module is None:
                module = nwb.create_processing_module(name="rtneuro", description="streams the rtneuro graph computed")
            module.add(series)
    for name in picks:
        rs = ld.records.get(name)
        if rs is None or not rs.recs:
            continue
        meta = rs.meta
        recs = [dict(r) for r in rs.recs]
        durations = None
        if meta.kind == "evt":
            durations = np.array([float(r.get("duration") or 0.0) for r in recs])
            about = f"markers of stream '{name}' ({meta.source})"
            if meta.event_id:
                about += f"; event_id {json.dumps(meta.event_id)}"
        elif meta.dtype == "decision":
            for r in recs:
                r["status_name"] = DECISION_STATUS.get(int(r.get("status", -1)), "")
                r["kind_name"] = CMD_NAMES.get(int(r.get("kind", -1)), "")
            about = f"decisions of the safety gate, stream '{name}' ({meta.source})"
        else:
            for r in recs:
                r["kind_name"] = CMD_NAMES.get(int(r.get("kind", -1)), "")
            about = f"controller commands, stream '{name}' ({meta.source}), holds (heartbeats) included"
        nwb.add_events_table(_events_table(name, about, rs.times - ld.t_ref, recs, durations))
    if ld.control:
        nwb.add_events_table(_control_table(ld))
    if ld.provenance:
        times = np.array([t for t, _ in ld.provenance]) - ld.t_ref
        nwb.add_events_table(_events_table(
            "rtneuro.provenance", "for each stimulation command: the feature frame and values, the input window "
            "and the controller state that caused it", times, [r for _, r in ld.provenance]))
    if ld.gaps:
        _invalid_times(ld, nwb)
    if ld.report:
        nwb.add_scratch(ld.report, name="rtneuro.report", description="the run report (JSON): latency, counters, errors")
    if info:
        nwb.add_scratch(json.dumps(info, default=str), name="rtneuro.session",
                        description="the session header (JSON): configuration, versions, git revision, profiles, machine")
    with NWBHDF5IO(str(target), "w") as io:
        io.write(nwb)


#: Columns of the NWB table of control records.
_CONTROL_DOC = {
    "op": "set, annotate, arm, disarm, estop, estop_clear, pause, resume, or segment (a record_start and its "
          "record_stop, over the segment's length)",
    "who": "who made it: the API token's name (local: the run's own token; 'rtneuro stop': the command line)",
    "text": "the change or action on one line (the description of the FIF/EDF annotation)",
    "seq": "sequence number of the record in the run (-1: none)",
    "t_lsl": "LSL time (s) of the request, real clock (NaN: none)",
    "t_stream": "stream time (s) of the request (NaN: not known, as on the virtual clock)",
    "args": "the request's arguments (JSON): changes, text, reason, label",
    "record": "the control record as recorded (JSON; a segment: its record_start)",
    "record_stop": "a segment's record_stop (JSON; empty: still recording when the session ended, or no segment)",
}


def _control_table(ld: _Loaded) -> Any:
    """The operator's changes and actions as an EventsTable, one row per record (one per recording segment)."""

    def js(v: Any) -> str:
        return "" if v is None else json.dumps(v, default=str)

    rows = []
    for c in ld.control:
        t_stream = _finite(c.rec.get("t_stream"))
        rows.append({"op": c.op, "who": c.who, "text": c.text, "seq": c.seq,
                     "t_lsl": _finite(c.rec.get("t_lsl")) or math.nan,
                     "t_stream": math.nan if t_stream is None else t_stream,
                     "args": js(c.rec.get("args")), "record": js(c.rec), "record_stop": js(c.stop)})
    about = ("the operator's changes and actions while the graph ran (stream rtneuro.control): live parameter changes "
             "(set), annotations, arm/disarm, emergency stops and their clearing, pauses, resumes, and recording "
             "segments (one row each, from its start over its length)")
    if ld.control_bad:
        about += f"; {ld.control_bad} samples that were no control record left out"
    times = np.array([c.t for c in ld.control]) - ld.t_ref
    return _events_table(CONTROL_STREAM, about, times, rows, np.array([c.duration for c in ld.control]),
                         docs=_CONTROL_DOC)


def _invalid_times(ld: _Loaded, nwb: Any) -> None:
    nwb.add_invalid_times_column(name="stream", description="the stream with the gap or restart")
    nwb.add_invalid_times_column(name="what", description="gap (samples never arrived) or restart (publisher restarted)")
    nwb.add_invalid_times_column(name="samples", description="samples missing (gap) or 0 (restart)")
    for t, g in sorted(ld.gaps, key=lambda x: x[0]):
        stream = str(g.get("stream", ""))
        what = str(g.get("what", ""))
        sfreq = ld.numeric[stream][1].sfreq if stream in ld.numeric else 0.0
        missing = int(g.get("missing", 0)) if what == "gap" else 0
        start = t - missing / sfreq if sfreq > 0 else t
        nwb.add_invalid_time_interval(start_time=start - ld.t_ref, stop_time=t - ld.t_ref, tags=[what, stream],
                                      stream=stream, what=what, samples=missing)
