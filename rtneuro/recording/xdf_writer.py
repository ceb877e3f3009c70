"""A crash-safe XDF 1.0 writer: whole chunks only, flushed (and fsynced) on a wall-clock schedule.

The file is the one LabRecorder writes (https://github.com/sccn/xdf/wiki/Specifications):
the magic ``XDF:``, a FileHeader chunk, then StreamHeader, Samples, ClockOffset
and Boundary chunks in any order (a stream's header before its samples), and a
StreamFooter per stream at :meth:`XdfWriter.close`. Every Samples chunk carries
a timestamp for every sample (TimeStampBytes = 8), so timestamps read back
bit-exact.

Crash safety comes from three rules. Chunks are encoded whole in memory and
written in one go at a flush, so a killed process leaves the file ending on the
last flushed chunk. A flush happens when a write call finds ``flush_s`` seconds
have passed since the previous one (or on :meth:`XdfWriter.flush`), and is
followed by ``os.fsync``. A write that fails half-way (disk full, file size
limit) cuts the file back to its last whole chunk before raising
:class:`RecordingError`, so the file still reads with pyxdf.
"""

from __future__ import annotations

import datetime as _dt
import errno
import logging
import os
import re
import shutil
import socket
import struct
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from ..errors import ConfigError, RtneuroError, did_you_mean

__all__ = [
    "XdfWriter",
    "RecordingError",
    "check_writable",
    "CHANNEL_FORMATS",
    "BOUNDARY_SIGNATURE",
    "desc_to_xml",
]

log = logging.getLogger(__name__)

#: XDF channel formats and the little-endian NumPy type each is written as.
CHANNEL_FORMATS: dict[str, str | None] = {
    "float32": "<f4",
    "double64": "<f8",
    "int8": "<i1",
    "int16": "<i2",
    "int32": "<i4",
    "int64": "<i8",
    "string": None,
}

#: The 16 bytes of every Boundary chunk; readers scan for them to resynchronise after damage.
BOUNDARY_SIGNATURE = bytes(
    [0x43, 0xA5, 0x46, 0xDC, 0xCB, 0xF5, 0x41, 0x0F, 0xB3, 0x0E, 0xD5, 0x46, 0x73, 0x83, 0xCB, 0xE4]
)

TAG_FILE_HEADER, TAG_STREAM_HEADER, TAG_SAMPLES, TAG_CLOCK_OFFSET, TAG_BOUNDARY, TAG_STREAM_FOOTER = range(1, 7)

_DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_XML_BAD_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class RecordingError(RtneuroError):
    """A recording cannot be written: missing or read-only folder, disk full, I/O error."""


def check_writable(folder: str | os.PathLike[str], min_free_bytes: int = 0) -> int:
    """Check that ``folder`` exists, is writable and has ``min_free_bytes`` free.

    Parameters
    ----------
    folder : path-like
        The folder recordings will be written to.
    min_free_bytes : int
        Free space the recording needs (e.g. bytes per second times the
        planned duration).

    Returns
    -------
    free_bytes : int
        Free space in the folder's file system, for unprivileged users.

    Raises
    ------
    RecordingError
        With a one-line message naming the folder and the fix.
    """
    d = Path(folder)
    if not d.exists():
        raise RecordingError(f"recording folder {d} does not exist; create it (mkdir -p {d}) or choose another folder")
    if not d.is_dir():
        raise RecordingError(f"recording folder {d} is not a folder; choose a folder, not a file")
    if not os.access(d, os.W_OK | os.X_OK):
        raise RecordingError(f"recording folder {d} is not writable by this user; fix its permissions "
                             f"(chmod u+w {d}) or choose another folder")
    free = shutil.disk_usage(d).free
    if free < min_free_bytes:
        raise RecordingError(f"recording folder {d} has {_mb(free)} free, the recording needs {_mb(min_free_bytes)}; "
                             "free space or choose another disk")
    return free


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _varlen(n: int) -> bytes:
    """XDF variable-length integer: NumBytes (1, 4 or 8) then the little-endian value."""
    if n < 0x100:
        return bytes((1, n))
    if n < 0x1_0000_0000:
        return b"\x04" + struct.pack("<I", n)
    return b"\x08" + struct.pack("<Q", n)


def _chunk_head(tag: int, content_bytes: int, stream_id: int | None = None) -> bytes:
    """[Length][Tag][StreamId?] of a chunk whose content (after the stream id) has ``content_bytes``."""
    if stream_id is None:
        return _varlen(2 + content_bytes) + struct.pack("<H", tag)
    return _varlen(6 + content_bytes) + struct.pack("<HI", tag, stream_id)


def _text(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        s = "true" if value else "false"
    elif isinstance(value, float):
        s = repr(value)  # shortest text that reads back to the same double
    else:
        s = str(value)
    return _XML_BAD_CHARS.sub("\ufffd", s)


def _fill(elem: ET.Element, value: Any, where: str) -> None:
    if value is None:
        return
    if isinstance(value, Mapping):
        for key, sub in value.items():
            name = str(key)
            here = f"{where}.{name}" if where else name
            if not _XML_NAME.match(name) or name.lower().startswith("xml"):
                raise ConfigError(f"metadata key {here!r} is not a valid XML element name; use letters, digits, "
                                  "'_', '-' and '.', starting with a letter or '_'")
            items = sub if isinstance(sub, list | tuple) else [sub]
            for item in items:
                if isinstance(item, list | tuple):
                    raise ConfigError(f"metadata {here!r} holds a list inside a list; wrap the inner list in a dict "
                                      "(e.g. {'item': [...]}) so that each level has an element name")
                _fill(ET.SubElement(elem, name), item, here)
        return
    if isinstance(value, np.ndarray):
        raise ConfigError(f"metadata {where!r} is an array; pass .tolist() wrapped in a dict, or text")
    elem.text = _text(value)


def desc_to_xml(root: str, *parts: Mapping[str, Any] | None) -> bytes:
    """``<?xml ...?><root>...</root>`` from nested dicts, as UTF-8.

    Dict keys become elements, lists become repeated elements, ``None`` an
    empty element, booleans ``true``/``false``, floats their shortest exact
    text. Characters XML 1.0 cannot hold become U+FFFD.
    """
    elem = ET.Element(root)
    for part in parts:
        _fill(elem, part, "")
    return b'<?xml version="1.0"?>' + ET.tostring(elem, encoding="utf-8", xml_declaration=False)


@dataclass(slots=True)
class _Stream:
    stream_id: int
    name: str
    fmt: str
    n_channels: int
    nominal_srate: float
    sample_dtype: np.dtype | None  # [tag u1][ts f8][values] for numeric streams
    first_ts: float | None = None
    last_ts: float | None = None
    count: int = 0
    on_disk: int = 0
    offsets: list[tuple[float, float]] = field(default_factory=list)


class XdfWriter:
    """Write one XDF file, crash-safely.

    Parameters
    ----------
    path : path-like
        The file to create. Its folder must exist and be writable.
    flush_s : float
        Write buffered chunks to the file (and fsync) at least this often, in
        wall-clock seconds, checked on every write call. 0 flushes on every call.
    fsync : bool
        ``os.fsync`` after every flush, so that a flushed chunk survives a
        power cut as well as a killed process.
    file_header : dict or None
        Extra elements of the FileHeader's ``<info>`` (after ``version`` and
        ``datetime``), as a nested dict.
    boundary_s : float
        Insert a Boundary chunk when this much wall time has passed since the
        previous one (LabRecorder: 10 s), so that a reader can resynchronise
        after damage in the middle of the file.
    boundary_bytes : int
        Also insert one after this many bytes.
    overwrite : bool
        Replace an existing file (default: refuse, so a session is never lost
        to a repeated name).

    Notes
    -----
    The recorder owns the schedule: if all streams go quiet, call
    :meth:`flush_if_due` (or :meth:`flush`) from its loop so that buffered
    samples do not wait for the next write. Methods are thread-safe. After a
    :class:`RecordingError` from a write, the file has been cut back to its
    last whole chunk and closed; open a new file to go on recording.
    """

    def __init__(self, path: str | os.PathLike[str], *, flush_s: float = 1.0, fsync: bool = True,
                 file_header: Mapping[str, Any] | None = None, boundary_s: float = 10.0,
                 boundary_bytes: int = 10_000_000, overwrite: bool = False) -> None:
        if not flush_s >= 0:
            raise ConfigError(f"flush_s={flush_s}: must be >= 0 seconds")
        if not boundary_s > 0 or boundary_bytes <= 0:
            raise ConfigError(f"boundary_s={boundary_s}, boundary_bytes={boundary_bytes}: must be > 0")
        self.path = Path(path)
        self.flush_s = float(flush_s)
        self.fsync = bool(fsync)
        self.boundary_s = float(boundary_s)
        self.boundary_bytes = int(boundary_bytes)
        self._lock = threading.RLock()
        self._streams: dict[int, _Stream] = {}
        self._pending: list[bytes] = []
        # per pending chunk: (end offset in the pending bytes, stream id or -1, samples)
        self._pending_ends: list[tuple[int, int, int]] = []
        self._pending_bytes = 0
        self._since_boundary = 0
        self._fd: int | None = None
        self._failed: str | None = None
        self.bytes_written = 0
        stamp = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        header = desc_to_xml("info", {"version": "1.0", "datetime": stamp}, file_header)
        self._open(overwrite)
        now = time.monotonic()
        self._last_flush = now
        self._last_boundary = now
        self._append(b"XDF:" + _chunk_head(TAG_FILE_HEADER, len(header)) + header)
        self.flush()

    # -- opening -----------------------------------------------------------------------------

    def _open(self, overwrite: bool) -> None:
        folder = self.path.parent
        if not folder.is_dir():
            raise RecordingError(f"cannot record to {self.path}: folder {folder} does not exist; create it "
                                 "or choose another folder")
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL) | getattr(os, "O_CLOEXEC", 0)
        try:
            self._fd = os.open(self.path, flags, 0o644)
        except FileExistsError:
            raise RecordingError(f"cannot record to {self.path}: the file exists; choose a new name "
                                 "(or pass overwrite=True)") from None
        except PermissionError:
            raise RecordingError(f"cannot record to {self.path}: folder {folder} is not writable; fix its "
                                 "permissions or choose another folder") from None
        except OSError as exc:
            raise RecordingError(f"cannot record to {self.path}: {exc.strerror} "
                                 f"({errno.errorcode.get(exc.errno or 0, exc.errno)}); choose another folder") from None
        if self.fsync:  # make the new name itself durable
            try:
                dfd = os.open(folder, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            except OSError:
                pass  # some file systems cannot fsync a folder; the file's own fsyncs still hold

    # -- public API --------------------------------------------------------------------------

    def add_stream(self, stream_id: int, *, name: str, type: str, channel_count: int, nominal_srate: float,
                   channel_format: str, source_id: str = "", desc: Mapping[str, Any] | None = None,
                   created_at: float | None = None, uid: str | None = None, session_id: str = "default",
                   hostname: str | None = None) -> None:
        """Write a stream's StreamHeader chunk; allowed at any time before its first sample.

        Parameters
        ----------
        stream_id : int
            The file's id of the stream (0 to 2**32 - 1), used by every later call.
        name, type : str
            LSL name and content type (``"EEG"``, ``"Markers"``, ...).
        channel_count : int
            Channels per sample.
        nominal_srate : float
            Sampling rate in Hz; 0 for irregular streams.
        channel_format : str
            One of ``float32``, ``double64``, ``int8``, ``int16``, ``int32``,
            ``int64``, ``string``.
        source_id : str
            LSL source id.
        desc : dict or None
            The ``<desc>`` element as a nested dict; lists become repeated
            elements, e.g. ``{"channels": {"channel": [{"label": "Fz",
            "unit": "microvolts", "type": "EEG"}, ...]}}``.
        created_at : float or None
            The stream's creation time on the LSL clock (default: now, on
            ``time.monotonic``, which is LSL's ``local_clock`` on Linux).
        uid, session_id, hostname : str
            As liblsl writes them (defaults: a new UUID, ``"default"``, this host).
        """
        with self._lock:
            self._check_open()
            if isinstance(stream_id, bool) or not isinstance(stream_id, int | np.integer) \
                    or not 0 <= int(stream_id) < 2**32:
                raise ConfigError(f"stream_id={stream_id!r}: must be an integer from 0 to 2**32 - 1")
            stream_id = int(stream_id)
            if stream_id in self._streams:
                raise ConfigError(f"stream_id={stream_id} is already in this file (stream "
                                  f"'{self._streams[stream_id].name}'); give each stream its own id")
            if channel_format not in CHANNEL_FORMATS:
                raise ConfigError(f"channel_format={channel_format!r}: must be one of "
                                  f"{', '.join(CHANNEL_FORMATS)}{did_you_mean(channel_format, CHANNEL_FORMATS)}")
            if isinstance(channel_count, bool) or not isinstance(channel_count, int | np.integer) \
                    or channel_count < 1:
                raise ConfigError(f"channel_count={channel_count!r}: must be an integer >= 1")
            srate = float(nominal_srate)
            if not (np.isfinite(srate) and srate >= 0):
                raise ConfigError(f"nominal_srate={nominal_srate!r}: must be >= 0 Hz (0 for irregular streams)")
            info = {
                "name": name,
                "type": type,
                "channel_count": int(channel_count),
                "channel_format": channel_format,
                "source_id": source_id,
                "nominal_srate": srate,
                "version": 1.1,
                "created_at": time.monotonic() if created_at is None else float(created_at),
                "uid": uid or str(uuid.uuid4()),
                "session_id": session_id,
                "hostname": hostname if hostname is not None else socket.gethostname(),
            }
            xml = desc_to_xml("info", info, {"desc": dict(desc) if desc else None})
            np_fmt = CHANNEL_FORMATS[channel_format]
            dtype = None if np_fmt is None else np.dtype(
                [("tag", "u1"), ("ts", "<f8"), ("values", np_fmt, (int(channel_count),))])
            self._streams[stream_id] = _Stream(stream_id, str(name), channel_format, int(channel_count), srate, dtype)
            self._append(_chunk_head(TAG_STREAM_HEADER, len(xml), stream_id) + xml)
            self._maybe_flush()

    def write_samples(self, stream_id: int, timestamps: np.ndarray | Sequence[float],
                      data: np.ndarray | Sequence[Sequence[str]]) -> None:
        """Append one Samples chunk.

        Parameters
        ----------
        stream_id : int
            A stream added with :meth:`add_stream`.
        timestamps : ndarray, shape (n_times,)
            Each sample's time (LSL clock, seconds); written exactly.
        data : ndarray, shape (n_times, n_channels), or list of lists of str
            Numeric streams: any array NumPy casts to the stream's format with
            ``same_kind`` casting (float64 into float32 yes, float into int
            no). String streams: ``n_times`` lists of ``n_channels`` strings.

        Notes
        -----
        Numeric samples are encoded with one structured array per call
        (``[u1 8][f8 timestamp][values]`` per sample), with no Python work
        per sample.
        """
        with self._lock:
            self._check_open()
            st = self._stream(stream_id)
            ts = np.ascontiguousarray(timestamps, dtype="<f8")
            if ts.ndim != 1:
                raise ConfigError(f"stream {stream_id} ('{st.name}'): timestamps must have shape (n_times,), "
                                  f"got {ts.shape}")
            n = ts.shape[0]
            if st.sample_dtype is None:
                body = self._encode_strings(st, ts, data)
            else:
                body = self._encode_numeric(st, ts, data)
            if n == 0:
                return
            content = _varlen(n) + body
            self._append(_chunk_head(TAG_SAMPLES, len(content), st.stream_id) + content, st.stream_id, n)
            if st.first_ts is None:
                st.first_ts = float(ts[0])
            st.last_ts = float(ts[-1])
            st.count += n
            self._maybe_flush()

    def write_clock_offset(self, stream_id: int, collection_time: float, offset_value: float) -> None:
        """Append a ClockOffset chunk: at ``collection_time`` (the stream's clock), add ``offset_value`` s.

        As LabRecorder does with ``inlet.time_correction()``: ``collection_time``
        is the local time of the measurement minus the offset, and
        ``offset_value`` is what to add to the stream's timestamps to get local time.
        """
        with self._lock:
            self._check_open()
            st = self._stream(stream_id)
            t, v = float(collection_time), float(offset_value)
            self._append(_chunk_head(TAG_CLOCK_OFFSET, 16, st.stream_id) + struct.pack("<dd", t, v))
            st.offsets.append((t, v))
            self._maybe_flush()

    def write_boundary(self) -> None:
        """Append a Boundary chunk (readers resynchronise on it after damage); also done every ``boundary_s``."""
        with self._lock:
            self._check_open()
            self._boundary()

    def flush(self) -> int:
        """Write every buffered chunk to the file and fsync it; returns the bytes written.

        Raises
        ------
        RecordingError
            If the write fails; the file is then cut back to its last whole
            chunk and closed.
        """
        with self._lock:
            self._check_open()
            return self._flush()

    def flush_if_due(self) -> bool:
        """Flush if ``flush_s`` has passed since the last flush; for a recorder's idle loop."""
        with self._lock:
            self._check_open()
            if time.monotonic() - self._last_flush >= self.flush_s:
                self._flush()
                return True
            return False

    def close(self, footers: Mapping[int, Mapping[str, Any]] | None = None) -> None:
        """Write each stream's StreamFooter, flush, fsync and close. Does nothing if already closed.

        Parameters
        ----------
        footers : dict or None
            Per stream id, extra nested dicts for the footer's ``<info>``
            (e.g. ``{"rtneuro": {"config": text, "versions": {...}}}``). They
            come after ``first_timestamp``, ``last_timestamp``,
            ``sample_count``, ``measured_srate`` and ``clock_offsets``, which
            the writer computes; a key of the same name replaces the computed one.
        """
        with self._lock:
            if self._fd is None:
                return
            if self._failed is not None:
                self._close_fd()
                return
            extra = dict(footers or {})
            unknown = sorted(set(extra) - set(self._streams))
            if unknown:
                raise ConfigError(f"footers for stream id(s) {unknown} that were never added; streams: "
                                  f"{sorted(self._streams)}")
            # encode every footer before writing any, so that bad metadata leaves the writer open
            chunks = []
            for st in self._streams.values():
                xml = desc_to_xml("info", self._footer_fields(st, extra.get(st.stream_id)))
                chunks.append(_chunk_head(TAG_STREAM_FOOTER, len(xml), st.stream_id) + xml)
            for c in chunks:
                self._append(c)
            self._flush()
            self._close_fd()

    @property
    def closed(self) -> bool:
        return self._fd is None

    @property
    def samples_on_disk(self) -> dict[int, int]:
        """Samples of each stream written and flushed (fsynced if ``fsync``) so far."""
        with self._lock:
            return {sid: st.on_disk for sid, st in self._streams.items()}

    @property
    def sample_counts(self) -> dict[int, int]:
        """Samples of each stream passed to :meth:`write_samples` so far (buffered or written)."""
        with self._lock:
            return {sid: st.count for sid, st in self._streams.items()}

    def __enter__(self) -> XdfWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:  # keep what is there and leave the file readable; the original error is what matters
            try:
                self.close()
            except RtneuroError as close_exc:
                log.error("while closing %s after an error: %s", self.path, close_exc)

    # -- internals ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._failed is not None:
            raise RecordingError(self._failed)
        if self._fd is None:
            raise RecordingError(f"{self.path} is closed; open a new XdfWriter to record more")

    def _stream(self, stream_id: int) -> _Stream:
        try:
            return self._streams[int(stream_id)]
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"stream_id={stream_id!r} was not added; call add_stream first (streams in this "
                              f"file: {sorted(self._streams)})") from None

    def _encode_numeric(self, st: _Stream, ts: np.ndarray, data: Any) -> bytes:
        assert st.sample_dtype is not None
        x = np.asarray(data)
        n = ts.shape[0]
        if x.shape != (n, st.n_channels):
            raise ConfigError(f"stream {st.stream_id} ('{st.name}'): data must have shape (n_times, n_channels) = "
                              f"({n}, {st.n_channels}), got {x.shape}")
        target = st.sample_dtype["values"].base
        if not np.can_cast(x.dtype, target, casting="same_kind"):
            raise ConfigError(f"stream {st.stream_id} ('{st.name}'): {x.dtype} data cannot be written as "
                              f"{st.fmt} without losing its kind; convert it first (e.g. np.round().astype)")
        rec = np.empty(n, dtype=st.sample_dtype)
        rec["tag"] = 8
        rec["ts"] = ts
        rec["values"] = x
        return rec.tobytes()

    def _encode_strings(self, st: _Stream, ts: np.ndarray, data: Any) -> bytes:
        n = ts.shape[0]
        if isinstance(data, np.ndarray):
            data = data.tolist()
        if len(data) != n:
            raise ConfigError(f"stream {st.stream_id} ('{st.name}'): {len(data)} samples of strings for "
                              f"{n} timestamps")
        parts: list[bytes] = []
        for i in range(n):  # string streams are markers: few samples
            sample = data[i]
            if isinstance(sample, str) or len(sample) != st.n_channels:
                raise ConfigError(f"stream {st.stream_id} ('{st.name}'): sample {i} must be a list of "
                                  f"{st.n_channels} strings, got {sample!r}")
            parts.append(b"\x08" + struct.pack("<d", ts[i]))
            for v in sample:
                if not isinstance(v, str):
                    raise ConfigError(f"stream {st.stream_id} ('{st.name}'): sample {i} holds {v!r}, not a str")
                b = v.encode("utf-8", "surrogatepass")
                parts.append(_varlen(len(b)))
                parts.append(b)
        return b"".join(parts)

    def _footer_fields(self, st: _Stream, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if st.count:
            fields["first_timestamp"] = st.first_ts
            fields["last_timestamp"] = st.last_ts
        fields["sample_count"] = st.count
        if st.count > 1 and st.nominal_srate > 0 and st.last_ts != st.first_ts:
            assert st.first_ts is not None and st.last_ts is not None
            fields["measured_srate"] = (st.count - 1) / (st.last_ts - st.first_ts)
        fields["clock_offsets"] = {"offset": [{"time": t, "value": v} for t, v in st.offsets]}
        if extra:
            fields.update(extra)
        return fields

    def _append(self, chunk: bytes, stream_id: int = -1, n_samples: int = 0) -> None:
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        self._pending_ends.append((self._pending_bytes, stream_id, n_samples))
        self._since_boundary += len(chunk)

    def _boundary(self) -> None:
        self._append(_chunk_head(TAG_BOUNDARY, len(BOUNDARY_SIGNATURE)) + BOUNDARY_SIGNATURE)
        self._since_boundary = 0
        self._last_boundary = time.monotonic()

    def _maybe_flush(self) -> None:
        now = time.monotonic()
        if now - self._last_boundary >= self.boundary_s or self._since_boundary >= self.boundary_bytes:
            self._boundary()
        if now - self._last_flush >= self.flush_s or self._pending_bytes >= 64_000_000:
            self._flush()

    def _flush(self) -> int:
        assert self._fd is not None
        self._last_flush = time.monotonic()
        if not self._pending:
            return 0
        buf = memoryview(b"".join(self._pending))
        try:
            done = 0
            while done < len(buf):
                done += os.write(self._fd, buf[done:])
            if self.fsync:
                os.fsync(self._fd)
        except OSError as exc:
            self._fail(exc)
        except BaseException:  # e.g. KeyboardInterrupt half-way: keep the file whole and the rest pending
            self._settle()
            raise
        self._settle(len(buf))
        return len(buf)

    def _settle(self, done: int | None = None) -> int:
        """Keep the pending chunks that reached the file whole; returns the file's new length.

        ``done`` is how many pending bytes were written (default: what the
        file position says). A chunk cut short is removed from the file and
        stays pending, as do the chunks after it.
        """
        assert self._fd is not None
        if done is None:
            done = os.lseek(self._fd, 0, os.SEEK_CUR) - self.bytes_written
        k, whole = 0, 0
        for end, sid, n in self._pending_ends:
            if end > done:
                break
            k, whole = k + 1, end
            if n:
                self._streams[sid].on_disk += n
        good = self.bytes_written + whole
        if done != whole:
            try:
                os.ftruncate(self._fd, good)
                os.lseek(self._fd, good, os.SEEK_SET)
                if self.fsync:
                    os.fsync(self._fd)
            except OSError as exc:
                log.error("could not cut %s back to its last whole chunk (byte %d): %s", self.path, good, exc)
        self.bytes_written = good
        del self._pending[:k]
        self._pending_ends = [(end - whole, sid, n) for end, sid, n in self._pending_ends[k:]]
        self._pending_bytes -= whole
        return good

    def _fail(self, exc: OSError) -> None:
        """A write or fsync failed: cut the file to its last whole chunk, close it for good, raise."""
        try:
            good = self._settle()
        except OSError:  # the file position itself is unknown: assume nothing pending reached the file
            good = self._settle(0)
        code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        if exc.errno in _DISK_FULL:
            msg = (f"cannot write {self.path}: disk full or file too large ({code}); the file keeps everything up "
                   f"to byte {good} (its last whole chunk) and reads back; free space (or raise the file size "
                   "limit) and record to a new file")
        else:
            msg = (f"cannot write {self.path}: {exc.strerror} ({code}); the file keeps everything up to byte "
                   f"{good} (its last whole chunk); check the disk and record to a new file")
        self._failed = msg
        self._pending.clear()
        self._pending_ends.clear()
        self._pending_bytes = 0
        self._close_fd()
        raise RecordingError(msg) from exc

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError as exc:
                log.error("closing %s: %s", self.path, exc)
