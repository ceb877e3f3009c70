"""Does a recording hold what its header claims? One check per file format.

A recording cut short (a full disk, a crash, a copy stopped half-way, ``head
-c``) is read by most libraries without an error: MNE infers the number of
EDF records from the file size and warns, pyxdf returns what it salvages. A
replay must never be quietly wrong, so every file source asks
:func:`check` first, from the file's own structure and without reading its
samples:

========================  ==================================================
format                    what is checked
========================  ==================================================
EDF, BDF (``.edf .bdf``)  header bytes, then ``n_records`` x record bytes
                          (from each signal's samples per record); a
                          partial record; ``n_records = -1`` (never closed)
GDF 1 and 2 (``.gdf``)    as EDF, with the binary header and each channel's
                          type; then the event table (its declared events)
EEGLAB (``.set``)         the MATLAB file's element structure; then the
                          ``.fdt`` holds ``nbchan x pnts x trials`` float32
BrainVision (``.vhdr``)   data and marker files present; the binary file is
                          whole samples (and ``DataPoints`` when declared);
                          no marker lies past the end of the data
FIF (``.fif``)            every tag's declared size is in the file, the
                          blocks are closed, the data buffers are whole
XDF (``.xdf``)            every chunk's declared length is there and its
                          content fills it exactly, the file ends on a
                          chunk boundary, every stream has its footer
                          (:func:`~rtneuro.recording.xdf_read.scan_chunks`)
========================  ==================================================

The answer is an :class:`Integrity`: whether the file is whole, how many
samples its header claims and how many are readable, the missing spans, and
a one-line reason. :func:`require` turns a damaged file into one
:class:`~rtneuro.errors.DamagedFileError` line (the file, what is missing,
the fix), unless the caller accepts damage knowingly.

Other readers add their formats with :func:`register`::

    @register(".dat")
    def _check_dat(path: Path) -> Integrity: ...
"""

from __future__ import annotations

import configparser
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import DamagedFileError

__all__ = ["Integrity", "check", "require", "register", "CHECKS", "ACCEPT_OPTION"]

#: How a file source accepts a damaged file (named in every refusal).
ACCEPT_OPTION = "accept_damaged: true"

Checker = Callable[[Path], "Integrity"]
#: Lower-case file suffix -> its check. Extend with :func:`register`.
CHECKS: dict[str, Checker] = {}


@dataclass(frozen=True, slots=True)
class Integrity:
    """What :func:`check` found in one file.

    Attributes
    ----------
    path : Path
        The file checked (for a multi-file format, the one a user names).
    format : str
        ``"EDF"``, ``"BDF"``, ``"GDF"``, ``"EEGLAB"``, ``"BrainVision"``,
        ``"FIF"``, ``"XDF"``, or another registered reader's name.
    ok : bool
        True when the file holds what its header claims.
    reason : str or None
        One line (no file name, no fix) saying what is wrong; None when ok.
    expected_samples : int or None
        Samples per channel the header claims; None when the header does not
        say (a FIF file, an EDF whose writer never closed it, a multi-stream
        XDF).
    readable_samples : int or None
        Samples per channel that are whole in the file (for XDF, the sum
        over its streams); None when unknown without reading.
    missing : tuple of (int, int or None)
        Missing spans ``[start, stop)`` in samples from the file's first
        sample; ``stop`` None when the header does not say where it ends.
    sfreq : float or None
        Samples per second, when the header says.
    checked : bool
        False when no check exists for this format (``ok`` is then True).
    details : dict
        Format-specific numbers (bytes expected and present, per-stream
        counts) for the run report.
    """

    path: Path
    format: str
    ok: bool = True
    reason: str | None = None
    expected_samples: int | None = None
    readable_samples: int | None = None
    missing: tuple[tuple[int, int | None], ...] = ()
    sfreq: float | None = None
    checked: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def missing_samples(self) -> int | None:
        """Samples missing in all (None when a span's end is unknown)."""
        if any(stop is None for _, stop in self.missing):
            return None
        return sum(int(stop) - start for start, stop in self.missing if stop is not None)

    def describe_missing(self) -> str:
        """``"samples 800 to 1600 (5.000 s from 5.000 s) are missing"``, or what is known."""
        if not self.missing:
            return "no sample is missing"
        parts = []
        for start, stop in self.missing:
            at = f" from {start / self.sfreq:.3f} s" if self.sfreq else ""
            if stop is None:
                at = f" ({start / self.sfreq:.3f} s)" if self.sfreq else ""
                parts.append(f"the samples from {start}{at} on are missing (how many, the header does not say)")
            else:
                dur = f" ({(stop - start) / self.sfreq:.3f} s{at})" if self.sfreq else ""
                parts.append(f"samples {start} to {stop} are missing{dur}")
        return "; ".join(parts)

    def message(self, option: str | None = ACCEPT_OPTION) -> str:
        """The one-line refusal: the file, what is wrong and missing, the fix (``option``: how to accept it, if one can)."""
        readable = "" if self.readable_samples is None else f"{self.readable_samples} readable samples"
        fix = (f"replace it with an intact copy, or set {option} to replay the readable part "
               f"({readable or 'what is whole'}) with the missing span marked as a gap")
        if option is None:
            fix = "replace it with an intact copy"
        elif not self.readable_samples and self.readable_samples is not None:
            fix = "replace it with an intact copy (nothing in it can be replayed)"
        what = f"{self.reason}; {self.describe_missing()}" if self.missing or self.reason is None else self.reason
        return f"{self.path}: damaged {self.format} file: {what}; {fix}"

    def to_report(self) -> dict[str, Any]:
        """JSON-ready summary for a run report."""
        return {"file": str(self.path), "format": self.format, "ok": self.ok, "reason": self.reason,
                "expected_samples": self.expected_samples, "readable_samples": self.readable_samples,
                "missing": [[a, b] for a, b in self.missing], "missing_samples": self.missing_samples,
                "sfreq": self.sfreq, **({"details": self.details} if self.details else {})}


def register(*suffixes: str) -> Callable[[Checker], Checker]:
    """Decorator: ``func(path) -> Integrity`` checks files ending in ``suffixes`` (``".dat"``)."""

    def deco(func: Checker) -> Checker:
        for s in suffixes:
            CHECKS[s.lower()] = func
        return func

    return deco


def check(path: str | os.PathLike[str]) -> Integrity:
    """Check that ``path`` holds what its header claims, without reading its samples.

    Parameters
    ----------
    path : path-like
        A recording. Formats without a registered check come back with
        ``checked=False`` and ``ok=True``.

    Returns
    -------
    Integrity
    """
    p = Path(path)
    suffix = p.suffix.lower()
    func = CHECKS.get(suffix)
    if func is None:
        return Integrity(p, suffix.lstrip(".").upper() or "unknown", checked=False)
    try:
        size = p.stat().st_size
    except OSError as exc:
        return Integrity(p, suffix.lstrip(".").upper(), ok=False, reason=f"it cannot be read ({exc.strerror})",
                         readable_samples=0)
    if size == 0:
        return Integrity(p, func.__name__.removeprefix("_check_").upper(), ok=False, reason="it is empty (0 bytes)",
                         readable_samples=0)
    return func(p)


def require(path: str | os.PathLike[str], accept: bool = False, option: str | None = ACCEPT_OPTION) -> Integrity:
    """:func:`check`, raising :class:`DamagedFileError` unless the file is whole or ``accept`` is set.

    Even with ``accept``, a file with nothing readable in it is refused.
    ``option`` is how the caller's user accepts damage (named in the error).
    """
    res = check(path)
    if res.ok:
        return res
    if not accept or res.readable_samples == 0:
        raise DamagedFileError(res.message(option))
    return res


# -- helpers ------------------------------------------------------------------


def _damaged(base: Integrity, reason: str, readable: int | None = None,
             missing: tuple[tuple[int, int | None], ...] | None = None, *,
             details: dict[str, Any] | None = None) -> Integrity:
    if missing is None:
        missing = ()
        if readable is not None and base.expected_samples is not None and readable < base.expected_samples:
            missing = ((readable, base.expected_samples),)
    return replace(base, ok=False, reason=reason, readable_samples=readable, missing=missing,
                   details={**base.details, **(details or {})})


def _cut(size: int, need: int, what: str) -> str:
    return f"it ends at byte {size}, inside its {what} ({need} bytes)"


def _records(base: Integrity, size: int, header: int, n_records: int, rec_bytes: int, spr: int,
             data_end: int | None = None) -> Integrity:
    """EDF/BDF/GDF: whole records against the header's count (``data_end``: bytes after the header)."""
    avail = (size if data_end is None else data_end) - header
    whole, extra = divmod(max(avail, 0), rec_bytes) if rec_bytes else (0, 0)
    readable = whole * spr
    det = {"header_bytes": header, "record_bytes": rec_bytes, "records_in_header": n_records,
           "whole_records": whole, "file_bytes": size}
    if n_records == -1:
        return _damaged(base, f"its header gives the number of records as -1 (the recording was never closed); "
                        f"{whole} whole records of {rec_bytes} bytes are there"
                        + (f" and {extra} bytes of a partial one" if extra else ""),
                        readable, ((readable, None),), details=det)
    if n_records < 0:
        return _damaged(base, f"its header gives {n_records} records", 0, details=det)
    expected = header + n_records * rec_bytes
    if size < expected:
        partial = f" and {extra} bytes of the next" if extra else ""
        return _damaged(base, f"its header claims {n_records} records of {rec_bytes} bytes ({expected} bytes in all) "
                        f"but the file ends at byte {size}: {whole} whole records{partial}", readable, details=det)
    return base


def _ascii_int(raw: bytes, what: str) -> int:
    try:
        return int(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"its header field '{what}' is {raw!r}, not a number") from None


def _read_head(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


# -- EDF / BDF ------------------------------------------------------------------


@register(".edf", ".bdf")
def _check_edf(path: Path) -> Integrity:
    """EDF(+) and BDF(+): the fixed 256-byte header, the signal headers, then the records."""
    size = path.stat().st_size
    head = _read_head(path, 256)
    fmt = "BDF" if head[:1] == b"\xff" else "EDF"
    base = Integrity(path, fmt)
    magic = b"\xffBIOSEMI" if fmt == "BDF" else b"0       "
    if not magic.startswith(head[:8]):  # not an EDF/BDF at all: the reader says what it is not
        return replace(base, checked=False)
    if len(head) < 256:
        return _damaged(base, _cut(size, 256, "fixed header"), 0)
    try:
        header = _ascii_int(head[184:192], "bytes in header")
        n_records = _ascii_int(head[236:244], "number of data records")
        ns = _ascii_int(head[252:256], "number of signals")
        try:
            duration = float(head[244:252].decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise ValueError(f"its header field 'duration of a data record' is {head[244:252]!r}, not a number") from None
    except ValueError as exc:
        return _damaged(base, str(exc), 0)
    if ns < 1 or header != 256 * (ns + 1):
        return _damaged(base, f"its header says {ns} signals in {header} header bytes (expected {256 * (ns + 1)})", 0)
    if size < header:
        return _damaged(base, _cut(size, header, f"signal headers ({ns} signals)"), 0)
    sig = _read_head(path, header)[256:]
    try:
        spr = [_ascii_int(sig[216 * ns + 8 * i:216 * ns + 8 * i + 8], f"samples per record of signal {i + 1}")
               for i in range(ns)]
    except ValueError as exc:
        return _damaged(base, str(exc), 0)
    labels = [sig[16 * i:16 * i + 16].decode("latin-1").strip() for i in range(ns)]
    data_spr = [n for n, lab in zip(spr, labels, strict=True) if lab not in ("EDF Annotations", "BDF Annotations")] or spr
    per = max(data_spr)
    rec_bytes = sum(spr) * (3 if fmt == "BDF" else 2)
    sfreq = per / duration if duration > 0 else None
    if n_records >= 0:
        base = replace(base, expected_samples=n_records * per, readable_samples=n_records * per)
    base = replace(base, sfreq=sfreq)
    return _records(base, size, header, n_records, rec_bytes, per)


# -- GDF ----------------------------------------------------------------------

#: bytes per sample of each GDF data type (GDF 2.20 table 9)
_GDF_BYTES = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 8, 8: 8, 16: 4, 17: 8, 18: 16, 279: 3, 535: 3}


@register(".gdf")
def _check_gdf(path: Path) -> Integrity:
    """GDF 1.x and 2.x: binary header, records of each channel's type, then the event table."""
    size = path.stat().st_size
    base = Integrity(path, "GDF")
    head = _read_head(path, 256)
    if len(head) < 256:
        return _damaged(base, _cut(size, 256, "fixed header"), 0)
    if head[:4] != b"GDF ":  # not a GDF at all: the reader says what it is not
        return replace(base, checked=False)
    try:
        version = float(head[4:8].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return _damaged(base, f"its version {head[4:8]!r} is not a number", 0)
    n_records = struct.unpack_from("<q", head, 236)[0]
    num, den = struct.unpack_from("<II", head, 244)
    if version < 1.9:
        header = struct.unpack_from("<q", head, 184)[0]
        ns = struct.unpack_from("<I", head, 252)[0]
        if den == 0 and num:
            num, den = 1, num
    else:
        header = 256 * struct.unpack_from("<H", head, 184)[0]
        ns = struct.unpack_from("<H", head, 252)[0]
    if ns < 1 or header < 256 * (ns + 1):
        return _damaged(base, f"its header says {ns} channels in {header} header bytes (at least {256 * (ns + 1)} needed)", 0)
    if size < header:
        return _damaged(base, _cut(size, header, f"channel headers ({ns} channels)"), 0)
    var = _read_head(path, 256 * (ns + 1))[256:]
    spr = struct.unpack_from(f"<{ns}I", var, 216 * ns)
    types = struct.unpack_from(f"<{ns}I", var, 220 * ns)
    unknown = sorted({t for t in types if t not in _GDF_BYTES})
    if unknown:
        return _damaged(base, f"its channel data types {unknown} are not GDF types", 0)
    rec_bytes = sum(n * _GDF_BYTES[t] for n, t in zip(spr, types, strict=True))
    per = max(spr)
    duration = num / den if den else 0.0
    base = replace(base, sfreq=per / duration if duration > 0 else None)
    if n_records >= 0:
        base = replace(base, expected_samples=n_records * per, readable_samples=n_records * per)
    res = _records(base, size, header, n_records, rec_bytes, per)
    if not res.ok or n_records < 0:
        return res
    # the event table after the data, when there is one
    etp = header + n_records * rec_bytes
    if size == etp:
        return res
    with open(path, "rb") as f:
        f.seek(etp)
        et = f.read(8)
    if len(et) < 8:
        return _damaged(res, _cut(size, etp + 8, "event table's header"), res.readable_samples, (), details={"bytes_after_data": size - etp})
    mode = et[0]
    if mode not in (1, 3):
        return _damaged(res, f"its event table (byte {etp}) has mode {mode}, not 1 or 3", res.readable_samples, ())
    n_ev = struct.unpack_from("<I", et, 4)[0] if version < 1.94 else int.from_bytes(et[1:4], "little")
    need = etp + 8 + n_ev * (12 if mode == 3 else 6)
    if size < need:
        return _damaged(res, f"its event table declares {n_ev} events ({need - etp} bytes) but the file ends at "
                        f"byte {size}, {need - size} bytes short; the samples are whole", res.readable_samples, ())
    return res


# -- EEGLAB -------------------------------------------------------------------


def _mat5_problem(path: Path, size: int) -> str | None:
    """Walk a MATLAB 5 file's top-level elements: None when each one's declared size is in the file."""
    if size < 128:
        return _cut(size, 128, "MATLAB header")
    with open(path, "rb") as f:
        hdr = f.read(128)
        endian = "<" if hdr[126:128] == b"IM" else ">" if hdr[126:128] == b"MI" else None
        if endian is None:
            return f"its MATLAB header has no endian mark ({hdr[126:128]!r})"
        pos = 128
        while pos < size:
            f.seek(pos)
            tag = f.read(8)
            if len(tag) < 8:
                return f"it ends at byte {size}, inside the tag of the MATLAB element at byte {pos}"
            mtype, nbytes = struct.unpack(endian + "II", tag)
            if mtype >> 16:  # small data element: 4 bytes of data in the tag
                pos += 8
                continue
            end = pos + 8 + (nbytes if mtype == 15 else (nbytes + 7) // 8 * 8)
            if pos + 8 + nbytes > size:
                return (f"it ends at byte {size}, inside the MATLAB element at byte {pos} "
                        f"(it needs {8 + nbytes} bytes, {size - pos} are there)")
            pos = end
    return None


def _eeglab_fields(path: Path) -> dict[str, Any]:
    """nbchan, pnts, trials, srate and the data field of a .set (EEG struct or top-level fields)."""
    import numpy as np
    import scipy.io

    keys = ("nbchan", "pnts", "trials", "srate", "data", "datfile")
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False, appendmat=False,
                               variable_names=("EEG", *keys))
    except NotImplementedError:  # MATLAB 7.3 (HDF5)
        import h5py

        with h5py.File(path, "r") as h5:
            grp = h5.get("EEG", h5)
            out: dict[str, Any] = {}
            for k in keys:
                if k in grp and isinstance(grp[k], h5py.Dataset):
                    v = grp[k][()]
                    if v.dtype.kind in "ui" and v.ndim == 2 and k in ("data", "datfile"):
                        v = "".join(chr(c) for c in v.ravel())  # MATLAB char array
                    elif getattr(v, "size", 0) == 1:
                        v = v.item()
                    out[k] = v
            return out
    src: Any = mat.get("EEG", mat)
    get = (lambda k: getattr(src, k, None)) if "EEG" in mat else mat.get
    out = {k: get(k) for k in keys if get(k) is not None}
    for k in ("data", "datfile"):
        if isinstance(out.get(k), np.ndarray) and out[k].dtype.kind in "US":
            out[k] = str(out[k])
    return out


@register(".set")
def _check_set(path: Path) -> Integrity:
    """EEGLAB: the .set (a MATLAB file) whole; its .fdt, when it has one, ``nbchan x pnts x trials`` float32."""
    size = path.stat().st_size
    base = Integrity(path, "EEGLAB")
    head = _read_head(path, 128)
    if not (head.startswith(b"MATLAB") or head.startswith(b"\x89HDF") or b"MATLAB 7.3".startswith(head[:10])):
        return replace(base, checked=False)  # not a MATLAB file at all: the reader says what it is not
    if head.startswith(b"MATLAB 5.0"):
        problem = _mat5_problem(path, size)
        if problem:
            return _damaged(base, f"its .set (a MATLAB file) is cut or corrupt: {problem}", 0)
    try:
        fields = _eeglab_fields(path)
        nbchan, pnts = int(fields["nbchan"]), int(fields["pnts"])
        trials = int(fields.get("trials", 1) or 1)
        sfreq = float(fields["srate"])
    except Exception as exc:  # scipy, h5py and missing fields: any means the .set is not readable
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return _damaged(base, f"its .set cannot be read as an EEGLAB dataset ({first[:120]})", 0)
    n = pnts * trials
    base = replace(base, expected_samples=n, readable_samples=n, sfreq=sfreq)
    data = fields.get("data")
    if not isinstance(data, str):
        data = fields.get("datfile") if isinstance(fields.get("datfile"), str) and fields.get("datfile") else None
        if data is None:
            return base  # the samples are in the .set itself, which is whole
    fdt = path.parent / Path(str(data).replace("\\", "/")).name
    if not fdt.exists():
        return _damaged(base, f"its data file {fdt.name} (named in the .set) is missing", 0, details={"fdt": str(fdt)})
    frame = 4 * nbchan
    expected = frame * n
    got = fdt.stat().st_size
    if got < expected:
        whole, extra = divmod(got, frame)
        partial = f" and {extra} bytes of the next sample" if extra else ""
        return _damaged(base, f"its data file {fdt.name} has {got} of the {expected} bytes the .set declares "
                        f"({nbchan} channels x {n} samples of float32): {whole} whole samples{partial}",
                        whole if trials == 1 else 0, None, details={"fdt": str(fdt), "fdt_bytes": got, "fdt_expected": expected})
    if got > expected:
        return _damaged(base, f"its data file {fdt.name} has {got} bytes, more than the {expected} the .set "
                        f"declares ({nbchan} channels x {n} samples): the .set and .fdt do not belong together",
                        0, details={"fdt": str(fdt)})
    return base


# -- BrainVision ----------------------------------------------------------------

_BV_BYTES = {"INT_16": 2, "UINT_16": 2, "INT_32": 4, "IEEE_FLOAT_32": 4, "IEEE_FLOAT_64": 8}


def _ini(path: Path) -> configparser.ConfigParser:
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip().startswith("[")), len(lines))
    cp = configparser.ConfigParser(interpolation=None, strict=False, comment_prefixes=(";",))
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string("\n".join(lines[start:]))
    return cp


@register(".vhdr")
def _check_vhdr(path: Path) -> Integrity:
    """BrainVision: data file whole samples, ``DataPoints`` if declared, markers inside the data."""
    base = Integrity(path, "BrainVision")
    try:
        hdr = _ini(path)
        common = hdr["Common Infos"]
        nch = int(common["NumberOfChannels"])
        data_name = common["DataFile"]
        sfreq = 1e6 / float(common["SamplingInterval"])
    except (configparser.Error, KeyError, ValueError) as exc:
        return _damaged(base, f"its header lacks or garbles a field of [Common Infos] ({type(exc).__name__}: {exc})", 0)
    base = replace(base, sfreq=sfreq)
    data = path.parent / data_name
    if not data.exists():
        return _damaged(base, f"its data file {data_name} (named in the header) is missing", 0)
    if common.get("DataFormat", "BINARY").strip().upper() != "BINARY":
        return replace(base, checked=False)  # ASCII: no byte count to check
    binfmt = hdr.get("Binary Infos", "BinaryFormat", fallback="INT_16").strip().upper()
    item = _BV_BYTES.get(binfmt)
    if item is None or nch < 1:
        return _damaged(base, f"its header's BinaryFormat {binfmt!r} or NumberOfChannels {nch} is invalid", 0)
    frame = nch * item
    got = data.stat().st_size
    whole, extra = divmod(got, frame)
    declared = common.get("DataPoints")
    expected = int(declared) if declared and declared.strip().isdigit() else None
    base = replace(base, expected_samples=expected, readable_samples=whole)
    vectorized = common.get("DataOrientation", "MULTIPLEXED").strip().upper() == "VECTORIZED"
    det = {"data_file": str(data), "data_bytes": got, "sample_bytes": frame}
    if expected is not None and whole < expected:
        return _damaged(base, f"its data file {data_name} has {got} bytes, {whole} whole samples of the {expected} "
                        f"the header declares ({nch} channels of {binfmt})", 0 if vectorized else whole, details=det)
    if extra:
        what = "the file is cut inside a sample" if not vectorized else "the file is cut (channel after channel: no sample is whole)"
        return _damaged(base, f"its data file {data_name} has {got} bytes, not a multiple of {frame} "
                        f"({nch} channels of {binfmt}): {what}", 0 if vectorized else whole,
                        ((whole, None),), details=det)
    marker_name = common.get("MarkerFile")
    marker = path.parent / marker_name if marker_name else None
    if marker is not None and marker.exists():
        last = 0
        try:
            mrk = _ini(marker)
            for _, value in mrk.items("Marker Infos") if mrk.has_section("Marker Infos") else []:
                fields = value.split(",")
                if len(fields) >= 3 and fields[2].strip().isdigit():
                    last = max(last, int(fields[2]))
        except configparser.Error:
            last = 0
        if last > whole:
            return _damaged(base, f"its data file {data_name} holds {whole} samples but its marker file "
                            f"{marker.name} has a marker at sample {last}: the data file is cut",
                            0 if vectorized else whole, ((whole, None),), details={**det, "last_marker": last})
    return base


# -- FIF ----------------------------------------------------------------------

_FIF_ITEM = {2: 2, 3: 4, 4: 4, 5: 8, 16: 2, 20: 8, 21: 16}  # FIFFT_SHORT, INT, FLOAT, DOUBLE, DAU_PACK16, COMPLEX_*
_FIFF_BLOCK_START, _FIFF_BLOCK_END, _FIFF_NCHAN = 104, 105, 200
_FIFF_DATA_BUFFER, _FIFF_DATA_SKIP, _FIFF_DATA_SKIP_SAMP = 300, 301, 303


@register(".fif")
def _check_fif(path: Path) -> Integrity:
    """FIF: each tag whole, the blocks closed, the raw data buffers whole (counted in samples)."""
    size = path.stat().st_size
    base = Integrity(path, "FIF")
    if re.search(r"(-|_)(epo|ave|cov|fwd|inv|trans|sol)\.fif$", path.name):
        return replace(base, checked=False)
    first = _read_head(path, 8)
    if len(first) == 8 and struct.unpack(">iI", first) != (100, 31):  # FIFF_FILE_ID of type FIFFT_ID_STRUCT
        return replace(base, checked=False)  # not a FIF file at all: the reader says what it is not
    nchan = 0
    samples = 0
    last_buf = 0
    depth = 0
    pos = 0
    problem = None
    with open(path, "rb") as f:
        while pos < size:
            f.seek(pos)
            tag = f.read(16)
            if len(tag) < 16:
                problem = f"it ends at byte {size}, inside the header of the tag at byte {pos} ({size - pos} of 16 bytes)"
                break
            kind, ttype, tsize, _next = struct.unpack(">iIii", tag)
            if tsize < 0:
                problem = f"its tag at byte {pos} declares a negative size ({tsize})"
                break
            if pos + 16 + tsize > size:
                problem = (f"it ends at byte {size}, inside the tag at byte {pos} "
                           f"(kind {kind}: {tsize} bytes of data, {size - pos - 16} are there)")
                break
            if kind == _FIFF_BLOCK_START:
                depth += 1
            elif kind == _FIFF_BLOCK_END:
                depth -= 1
            elif kind == _FIFF_NCHAN and tsize >= 4 and not nchan:
                nchan = struct.unpack(">i", f.read(4))[0]
            elif kind == _FIFF_DATA_BUFFER and nchan:
                item = _FIF_ITEM.get(ttype & 0xFFFF)
                if item is not None:
                    last_buf = tsize // (item * nchan)
                    samples += last_buf
            elif kind == _FIFF_DATA_SKIP and tsize >= 4:
                samples += struct.unpack(">i", f.read(4))[0] * last_buf
            elif kind == _FIFF_DATA_SKIP_SAMP and tsize >= 4:
                samples += struct.unpack(">i", f.read(4))[0]
            pos += 16 + tsize
    base = replace(base, readable_samples=samples if nchan else None)
    if problem is None and depth > 0:
        problem = f"it ends at byte {size} with {depth} block(s) still open: the file was cut after a whole tag or never closed"
    if problem is None:
        return replace(base, expected_samples=base.readable_samples)
    missing: tuple[tuple[int, int | None], ...] = ((samples, None),) if nchan and samples else ()
    if nchan:
        problem += f"; {samples} samples are in whole data buffers"
    return _damaged(base, problem, samples if nchan else 0, missing, details={"file_bytes": size})


# -- XDF ----------------------------------------------------------------------


@register(".xdf")
def _check_xdf(path: Path) -> Integrity:
    """XDF: every chunk whole and valid, the file ends on a chunk boundary, every stream closed by its footer."""
    from .xdf_read import scan_chunks
    from .xdf_writer import TAG_SAMPLES, TAG_STREAM_FOOTER, TAG_STREAM_HEADER

    base = Integrity(path, "XDF")
    try:
        chunks, problems = scan_chunks(path)
    except Exception:  # RecordingError: not an XDF file at all (the reader says so), or unreadable
        return replace(base, checked=False)
    per: dict[int, int] = {}
    declared: list[int] = []
    closed: list[int] = []
    for c in chunks:
        if c.tag == TAG_STREAM_HEADER and c.stream_id is not None:
            declared.append(c.stream_id)
            per.setdefault(c.stream_id, 0)
        elif c.tag == TAG_SAMPLES and c.stream_id is not None:
            per[c.stream_id] = per.get(c.stream_id, 0) + int(c.n_samples or 0)
        elif c.tag == TAG_STREAM_FOOTER and c.stream_id is not None:
            closed.append(c.stream_id)
    total = sum(per.values())
    base = replace(base, readable_samples=total, details={"samples_per_stream": {str(k): v for k, v in per.items()}})
    if not problems:
        unclosed = sorted(set(declared) - set(closed))
        if not declared:
            return _damaged(base, "it holds no stream (the recording stopped, or the file was cut, before any stream was added)", 0)
        if unclosed:
            return _damaged(base, f"it ends on a chunk boundary at byte {path.stat().st_size} but stream(s) "
                            f"{', '.join(map(str, unclosed))} have no footer: the recording was not closed "
                            f"(the writer was killed, crashed or lost its disk); {total} samples are in whole chunks",
                            total, ())
        return replace(base, expected_samples=total)
    reason = "; ".join(problems)
    return _damaged(base, f"{reason}; {total} samples are in whole chunks", total, (),
                    details={"truncated": any(p.startswith("truncated") for p in problems)})
