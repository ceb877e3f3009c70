"""Read an XDF session, damaged or not: everything up to the damage, and where the damage starts.

:func:`read_session` first walks the file's chunks and checks each one (its
length fits in the file, its XML parses, its samples fill it exactly, its
stream was declared). The chunks that pass are handed to ``pyxdf.load_xdf``
through a file object that shows only them, so what is read is exactly what
pyxdf (and MNE, which uses it) reads from the intact part, with no clock
synchronisation and no dejittering: timestamps come back bit-exact.

Why not pyxdf alone: on a file cut at an arbitrary byte (a crash, a full
disk), pyxdf 1.17 raises (``ParseError`` in a header, ``struct.error`` in a
chunk's tag or a ClockOffset chunk, ``OSError`` in the magic), or reads on
without a word: a cut inside a Samples chunk's last sample returns that
sample with the previous sample's values in its missing bytes, a cut inside a
string returns the string shortened. Only a cut elsewhere in a Samples chunk
or in a footer is dropped (with a logged error).

After damage in the middle of a file (not only at its end), the walk skips to
the next Boundary chunk (the writer puts one every 10 s) and goes on, as
pyxdf does for Samples chunks.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import xml.etree.ElementTree as ET
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .xdf_writer import (
    BOUNDARY_SIGNATURE,
    CHANNEL_FORMATS,
    TAG_BOUNDARY,
    TAG_CLOCK_OFFSET,
    TAG_FILE_HEADER,
    TAG_SAMPLES,
    TAG_STREAM_FOOTER,
    TAG_STREAM_HEADER,
    RecordingError,
)

__all__ = ["read_session", "scan_chunks", "whole_chunks", "Session", "XdfStream", "ChunkInfo"]

log = logging.getLogger(__name__)

_KIND = {TAG_FILE_HEADER: "FileHeader", TAG_STREAM_HEADER: "StreamHeader", TAG_SAMPLES: "Samples",
         TAG_CLOCK_OFFSET: "ClockOffset", TAG_BOUNDARY: "Boundary", TAG_STREAM_FOOTER: "StreamFooter"}
_ITEMSIZE = {fmt: np.dtype(t).itemsize for fmt, t in CHANNEL_FORMATS.items() if t is not None}
_MAGIC = b"XDF:"


def _first(v: Any, default: Any = None) -> Any:
    """pyxdf wraps every XML value in a list."""
    if isinstance(v, list):
        return v[0] if v else default
    return default if v is None else v


@dataclass(slots=True)
class XdfStream:
    """One stream as pyxdf reads it.

    Attributes
    ----------
    stream_id : int
        The file's id of the stream.
    info : dict
        pyxdf's ``info``: every header field as a list of strings
        (``info["name"][0]``), ``desc`` as nested dicts of lists, plus pyxdf's
        ``stream_id``, ``effective_srate`` and ``segments``.
    footer : dict or None
        pyxdf's ``footer`` (``footer["info"]["sample_count"][0]``), or None
        when the file ends before it.
    time_series : ndarray, shape (n_times, n_channels), or list of lists of str
        The samples, in the stream's format.
    time_stamps : ndarray, shape (n_times,)
        The timestamps as written (no clock synchronisation, no dejittering).
    clock_offsets : ndarray, shape (n_offsets, 2)
        ``(collection_time, offset_value)`` of each ClockOffset chunk.
    """

    stream_id: int
    info: dict
    footer: dict | None
    time_series: Any
    time_stamps: np.ndarray
    clock_offsets: np.ndarray

    @property
    def name(self) -> str:
        return str(_first(self.info.get("name"), "") or "")

    @property
    def type(self) -> str:
        return str(_first(self.info.get("type"), "") or "")

    @property
    def channel_format(self) -> str:
        return str(_first(self.info.get("channel_format")))

    @property
    def n_channels(self) -> int:
        return int(_first(self.info.get("channel_count")))

    @property
    def nominal_srate(self) -> float:
        return float(_first(self.info.get("nominal_srate")))


@dataclass(slots=True)
class Session:
    """What :func:`read_session` read.

    Attributes
    ----------
    path : Path
        The file.
    streams : list of XdfStream
        In the order of their headers in the file.
    file_header : dict or None
        pyxdf's file header (``file_header["info"]["version"][0]``).
    damage : str or None
        None for a whole file (every stream has its footer); otherwise one
        line saying where the damage starts and what was read before it.
    size : int
        Bytes in the file.
    bytes_read : int
        Bytes of whole, valid chunks handed to pyxdf.
    names : list of str
        Every stream in the file (also those not read, with ``names=``).
    """

    path: Path
    streams: list[XdfStream]
    file_header: dict | None
    damage: str | None
    size: int
    bytes_read: int
    names: list[str] = field(default_factory=list)

    def stream(self, key: int | str, type: str | None = None) -> XdfStream:
        """The stream with this id (int) or name (str), and this LSL type when given.

        Raises
        ------
        KeyError
            When no stream matches, or several (streams of one name: give ``type``).
        """
        hits = [s for s in self.streams if ((s.stream_id == key) if isinstance(key, int) else (s.name == key))
                and (type is None or s.type == type)]
        if len(hits) == 1:
            return hits[0]
        have = ", ".join(f"{s.stream_id}: '{s.name}' ({s.type})" for s in self.streams) or "none"
        if hits:
            raise KeyError(f"{len(hits)} streams {key!r} in {self.path}: {have}; give type= (or the stream id)")
        raise KeyError(f"no stream {key!r}{f' of type {type!r}' if type else ''} in {self.path}; streams: {have}")


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    """A whole, valid chunk found by :func:`scan_chunks`."""

    offset: int  #: first byte of the chunk (its length field)
    size: int  #: bytes of the chunk, length field included
    tag: int  #: 1 FileHeader, 2 StreamHeader, 3 Samples, 4 ClockOffset, 5 Boundary, 6 StreamFooter
    stream_id: int | None
    n_samples: int | None  #: for Samples chunks


@dataclass(slots=True)
class _Problem:
    offset: int  # where the damage starts
    message: str
    resumed_at: int | None = None  # where whole chunks start again


class _Bad(Exception):
    """A chunk that cannot be used: ``truncated`` (runs past the end of the file) or corrupt."""

    def __init__(self, message: str, *, truncated: bool = False, skip_to: int | None = None) -> None:
        super().__init__(message)
        self.truncated = truncated
        self.skip_to = skip_to  # the chunk's framing is sound: go on after it


def _varlen(buf: bytes, at: int) -> tuple[int, int] | None:
    """(value, bytes used) of the variable-length integer at ``buf[at]``; None if ``buf`` ends first."""
    if at >= len(buf):
        return None
    nb = buf[at]
    if nb not in (1, 4, 8):
        raise _Bad(f"invalid length byte {nb}")
    if at + 1 + nb > len(buf):
        return None
    return int.from_bytes(buf[at + 1:at + 1 + nb], "little"), 1 + nb


def _parse_xml(raw: bytes, what: str) -> ET.Element:
    try:
        return ET.fromstring(raw)
    except ET.ParseError as exc:
        raise _Bad(f"its {what} XML does not parse ({exc})") from None


class _Walker:
    """Walks the chunks of an XDF file, checking each; collects whole chunks and problems."""

    def __init__(self, f: io.BufferedReader, size: int) -> None:
        self.f = f
        self.size = size
        self.streams: dict[int, tuple[str, int]] = {}  # id -> (format, channels) from the header
        self.names: dict[int, str] = {}  # id -> name from the header
        self.footers: set[int] = set()
        self.chunks: list[ChunkInfo] = []
        self.problems: list[_Problem] = []

    def read(self, at: int, n: int) -> bytes:
        self.f.seek(at)
        return self.f.read(n)

    def run(self) -> None:
        pos = len(_MAGIC)
        while pos < self.size:
            try:
                chunk = self.check(pos)
            except _Bad as bad:
                kind = "truncated" if bad.truncated else "corrupt"
                at = self.size if bad.truncated else pos
                prob = _Problem(pos, f"{kind} at byte {at} {bad}")
                self.problems.append(prob)
                if bad.truncated:
                    return
                nxt = bad.skip_to if bad.skip_to is not None else self.resync(pos + 1)
                if nxt is None:
                    prob.message += f"; no Boundary chunk after it: its last {self.size - pos} bytes were not read"
                    return
                prob.resumed_at = nxt
                pos = nxt
                continue
            self.chunks.append(chunk)
            pos = chunk.offset + chunk.size

    def resync(self, start: int) -> int | None:
        """Offset just after the next Boundary signature at or after ``start``."""
        block, keep = 1 << 20, len(BOUNDARY_SIGNATURE) - 1
        at, tail = start, b""
        while at < self.size:
            data = tail + self.read(at, block)
            hit = data.find(BOUNDARY_SIGNATURE)
            if hit >= 0:
                return at - len(tail) + hit + len(BOUNDARY_SIGNATURE)
            tail = data[-keep:]
            at += block
        return None

    def check(self, pos: int) -> ChunkInfo:
        head = self.read(pos, 1 + 8 + 2 + 4 + 9)
        where = "in a chunk's header"
        try:
            got = _varlen(head, 0)
        except _Bad as bad:
            raise _Bad(f"{where}: {bad}") from None
        if got is None:
            raise _Bad(where, truncated=True)
        length, nl = got
        if length < 2:
            raise _Bad(f"{where}: chunk length {length}")
        if len(head) < nl + 2:
            raise _Bad(where, truncated=True)
        tag = struct.unpack_from("<H", head, nl)[0]
        kind = _KIND.get(tag, f"tag-{tag}")
        end = pos + nl + length
        sid = None
        if tag in (TAG_STREAM_HEADER, TAG_SAMPLES, TAG_CLOCK_OFFSET, TAG_STREAM_FOOTER):
            if length < 6:
                raise _Bad(f"in a {kind} chunk: length {length} leaves no room for its stream id")
            if len(head) < nl + 6:
                raise _Bad(f"in a {kind} chunk", truncated=True)
            sid = struct.unpack_from("<I", head, nl + 2)[0]
        of = f"a {kind} chunk" + (f" of stream {sid}" if sid is not None else "")
        if end > self.size:
            raise _Bad(f"in {of} (it starts at byte {pos} and needs {end - pos} bytes, "
                       f"{self.size - pos} are there)", truncated=True)
        body = nl + 2 + (4 if sid is not None else 0)  # offset of the content in the chunk
        n = None
        try:
            if tag == TAG_FILE_HEADER:
                _parse_xml(self.read(pos + body, end - pos - body), "file header")
            elif tag == TAG_STREAM_HEADER:
                assert sid is not None
                self.check_header(sid, _parse_xml(self.read(pos + body, end - pos - body), "stream header"))
            elif tag in (TAG_SAMPLES, TAG_CLOCK_OFFSET, TAG_STREAM_FOOTER):
                assert sid is not None
                if sid not in self.streams:
                    raise _Bad(f"for stream {sid}, whose header comes nowhere before", skip_to=end)
                if tag == TAG_SAMPLES:
                    n = self.check_samples(pos + body, end, sid)
                elif tag == TAG_CLOCK_OFFSET:
                    if length != 6 + 16:
                        raise _Bad(f"length {length}, not 22")
                else:
                    _parse_xml(self.read(pos + body, end - pos - body), "footer")
                    self.footers.add(sid)
        except _Bad as bad:
            raise _Bad(f"in {of}: {bad}", skip_to=bad.skip_to) from None
        return ChunkInfo(pos, end - pos, tag, sid, n)

    def check_header(self, sid: int, xml: ET.Element) -> None:
        """Reject what would make pyxdf raise: missing or malformed name, channel_count, nominal_srate, format."""
        fields = {child.tag: (child.text or "") for child in xml}
        missing = [k for k in ("name", "channel_count", "nominal_srate", "channel_format") if k not in fields]
        if missing:
            raise _Bad(f"its header lacks {', '.join(missing)}")
        fmt = fields["channel_format"].strip()
        try:
            nch, _ = int(fields["channel_count"]), float(fields["nominal_srate"])
        except ValueError:
            raise _Bad("its header's channel_count or nominal_srate is not a number") from None
        if fmt not in CHANNEL_FORMATS or nch < 1:
            raise _Bad(f"its header's channel_format {fmt!r} or channel_count {nch} is invalid")
        self.streams[sid] = (fmt, nch)
        self.names[sid] = fields["name"]

    def check_samples(self, start: int, end: int, sid: int) -> int:
        """Samples in the chunk whose content is ``[start, end)``, checking they fill it exactly."""
        fmt, nch = self.streams[sid]
        if fmt == "string":
            return self.check_strings(self.read(start, end - start), nch)
        got = _varlen(self.read(start, 9), 0)
        if got is None or start + got[1] > end:
            raise _Bad("its sample count runs past its end")
        n, used = got
        per = 1 + nch * _ITEMSIZE[fmt]
        extra = (end - start - used) - n * per  # 8 bytes per stamped sample
        if extra == 8 * n or extra == 0:
            return n
        if extra < 0 or extra > 8 * n or extra % 8:
            raise _Bad(f"{n} samples of {nch} {fmt} do not fill its {end - start} bytes")
        # some samples stamped, some not (other writers): walk them
        raw = self.read(start + used, end - start - used)
        at = 0
        for _ in range(n):
            if at >= len(raw) or raw[at] not in (0, 8):
                raise _Bad("a sample's TimeStampBytes is neither 0 nor 8")
            at += per + raw[at]
        if at != len(raw):
            raise _Bad(f"{n} samples do not fill it")
        return n

    @staticmethod
    def check_strings(raw: bytes, nch: int) -> int:
        got = _varlen(raw, 0)
        if got is None:
            raise _Bad("its sample count runs past its end")
        n, at = got
        for _ in range(n):
            if at >= len(raw) or raw[at] not in (0, 8):
                raise _Bad("a sample's TimeStampBytes is neither 0 nor 8")
            at += 1 + raw[at]
            for _ in range(nch):
                got = _varlen(raw, at)
                if got is None:
                    raise _Bad("a string runs past its end")
                at += got[1] + got[0]
        if at != len(raw):
            raise _Bad(f"{n} samples do not fill it" if at < len(raw) else "a string runs past its end")
        return n


class _Spliced(io.RawIOBase):
    """A read-only file object that shows only some byte ranges of a file, back to back."""

    def __init__(self, f: io.BufferedReader, ranges: list[tuple[int, int]]) -> None:
        super().__init__()
        self._f = f
        self._ranges = ranges
        self._starts: list[int] = []  # virtual offset of each range
        total = 0
        for a, b in ranges:
            self._starts.append(total)
            total += b - a
        self._size = total
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, b: Any) -> int:
        if self._pos >= self._size or not self._ranges:
            return 0
        i = bisect_right(self._starts, self._pos) - 1
        a, e = self._ranges[i]
        real = a + self._pos - self._starts[i]
        view = memoryview(b).cast("B")
        n = min(len(view), e - real)
        self._f.seek(real)
        got = self._f.readinto(view[:n])
        self._pos += got
        return got


def _merge(chunks: list[ChunkInfo]) -> list[tuple[int, int]]:
    ranges = [(0, len(_MAGIC))]
    for c in chunks:
        if ranges[-1][1] == c.offset:
            ranges[-1] = (ranges[-1][0], c.offset + c.size)
        else:
            ranges.append((c.offset, c.offset + c.size))
    return ranges


def _open(path: Path) -> tuple[io.BufferedReader, int]:
    if path.suffix == ".xdfz" or path.suffixes[-2:] == [".xdf", ".gz"]:
        raise RecordingError(f"{path} is compressed; read it with pyxdf.load_xdf, or decompress it first "
                             "(read_session reads plain .xdf files)")
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed by the caller)
    except FileNotFoundError:
        raise RecordingError(f"XDF file not found: {path}; check the path") from None
    except OSError as exc:
        raise RecordingError(f"cannot open {path}: {exc.strerror}; check its permissions") from None
    size = os.fstat(f.fileno()).st_size
    magic = f.read(len(_MAGIC))
    if magic != _MAGIC[:len(magic)]:
        f.close()
        raise RecordingError(f"{path} is not an XDF file (it does not start with 'XDF:')")
    return f, size


def scan_chunks(path: str | os.PathLike[str]) -> tuple[list[ChunkInfo], list[str]]:
    """The whole, valid chunks of an XDF file, and a line per damaged region (no data is read).

    Raises
    ------
    RecordingError
        If the file is missing or is not an XDF file.
    """
    f, size = _open(Path(path))
    with f:
        if size < len(_MAGIC):
            return [], [f"truncated at byte {size} in the 'XDF:' magic"]
        w = _Walker(f, size)
        w.run()
    return w.chunks, [p.message for p in w.problems]


def _iter_pyxdf_streams(raw: list[dict]) -> Iterator[XdfStream]:
    for s in raw:
        info = s["info"]
        times = np.asarray(s.get("clock_times", []), dtype=np.float64)
        values = np.asarray(s.get("clock_values", []), dtype=np.float64)
        yield XdfStream(stream_id=int(info["stream_id"]), info=info, footer=s.get("footer"),
                        time_series=s["time_series"], time_stamps=np.asarray(s["time_stamps"], dtype=np.float64),
                        clock_offsets=np.column_stack([times, values]) if times.size else np.zeros((0, 2)))


def read_session(path: str | os.PathLike[str], names: Sequence[str] | None = None) -> Session:
    """Read an XDF file written by :class:`~rtneuro.recording.XdfWriter` (or LabRecorder), damaged or not.

    Parameters
    ----------
    path : path-like
        A plain (uncompressed) XDF file.
    names : sequence of str or None
        Read the samples of these streams only (every chunk is still checked).

    Returns
    -------
    Session
        The streams read from every whole, valid chunk (through
        ``pyxdf.load_xdf(synchronize_clocks=False, dejitter_timestamps=False)``),
        and ``damage``: None when every stream has its footer and nothing is
        damaged, else a line such as ``"truncated at byte 123456 in a Samples
        chunk of stream 3 (...); 2.0 s of recording before it were read"``.

    Raises
    ------
    RecordingError
        Only if the file is missing or is not an XDF file; a damaged file is
        read as far as it goes.

    Notes
    -----
    A file with no stream is reported as damaged (a recording cut before any
    stream was added looks the same as a finished empty one).
    """
    import pyxdf  # imported here: only processes that read recordings pay for it

    p = Path(path)
    f, size = _open(p)
    with f:
        if size < len(_MAGIC):
            return Session(p, [], None, f"truncated at byte {size} in the 'XDF:' magic; nothing could be read",
                           size, 0)
        walker = _Walker(f, size)
        walker.run()
        ranges = _merge(walker.chunks)
        reader = io.BufferedReader(_Spliced(f, ranges), buffer_size=1 << 20)
        select = None if names is None else [sid for sid, n in walker.names.items() if n in set(names)] or [-1]
        raw, header = pyxdf.load_xdf(reader, select_streams=select, synchronize_clocks=False, dejitter_timestamps=False)
    streams = list(_iter_pyxdf_streams(raw))
    bytes_read = sum(b - a for a, b in ranges)
    return Session(p, streams, header, _damage(walker, streams, size), size, bytes_read, list(walker.names.values()))


def _damage(w: _Walker, streams: list[XdfStream], size: int) -> str | None:
    parts = []
    for prob in w.problems:
        if prob.resumed_at is not None:
            parts.append(f"{prob.message}; whole chunks start again at byte {prob.resumed_at} "
                         f"({prob.resumed_at - prob.offset} bytes skipped)")
        else:
            parts.append(prob.message)
    unfinished = sorted(set(w.streams) - w.footers)
    if not w.problems:
        if not w.streams:
            parts.append(f"the file ends at byte {size} with no stream in it: the recording stopped (or the file "
                         "was cut) before any stream was added")
        elif unfinished:
            parts.append(f"the file ends at byte {size} after a whole chunk, but stream(s) "
                         f"{', '.join(map(str, unfinished))} have no footer: the recording was not closed "
                         "(the writer was killed, crashed or lost its disk)")
    if not parts:
        return None
    with_data = [s for s in streams if s.time_stamps.size]
    if with_data:
        t0 = min(float(s.time_stamps[0]) for s in with_data)
        t1 = max(float(s.time_stamps[-1]) for s in with_data)
        n = sum(int(s.time_stamps.size) for s in with_data)
        parts.append(f"{t1 - t0:.3f} s of recording were read ({n} samples in {len(with_data)} stream(s))")
    else:
        parts.append("no samples were read")
    return "; ".join(parts)


def whole_chunks(path: str | os.PathLike[str]) -> io.BufferedReader:
    """A read-only file object showing only the whole, valid chunks of an XDF file (for ``pyxdf.load_xdf``).

    What a damaged file's intact part holds, with nothing pyxdf would
    salvage from a cut chunk. The caller closes it.

    Raises
    ------
    RecordingError
        If the file is missing or is not an XDF file.
    """
    f, size = _open(Path(path))
    walker = _Walker(f, size)
    walker.run()
    return io.BufferedReader(_SplicedOwner(f, _merge(walker.chunks)), buffer_size=1 << 20)


class _SplicedOwner(_Spliced):
    """:class:`_Spliced` that closes the file it shows when it is closed."""

    def close(self) -> None:
        super().close()
        self._f.close()
