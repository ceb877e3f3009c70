"""Readers of electrophysiology recordings: the formats of spike and LFP labs, raw binary and ``.npy``.

One small interface, :class:`EphysRecording`, over

- neo's raw I/O (``neo.rawio``) for Open Ephys (binary and legacy),
  SpikeGLX, Intan, Blackrock, Neuralynx and Plexon: neo is the field's
  reader library, and its raw layer is lazy (headers parsed once, samples
  read from memory-mapped files on demand) and returns the integers on disk
  with per-channel gains and offsets, so no layer sits between the file and
  the replay. SpikeInterface's extractors are built on the same raw I/O and
  add recording objects, preprocessing chains and job machinery that a
  replay does not need;
- h5py for NWB ``ElectricalSeries`` (lazy dataset slices, the electrodes
  table for names and positions);
- ``numpy.memmap`` / ``numpy.load(mmap_mode="r")`` for raw binary and
  ``.npy`` with a declared dtype, channel count, rate, gain and offset.

Samples come back as ``(n_times, n_channels)`` in physical units: microvolts
for voltage channels, the file's own unit for the others. Each format's
file sizes are checked against what its headers declare before anything is
read; a mismatch is one :class:`~rtneuro.errors.ConfigError` line naming
the file, what is missing and the fix.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DamagedFileError, did_you_mean

__all__ = ["FORMATS", "EphysRecording", "detect_format", "open_recording", "open_for_replay", "check", "stream_desc", "read_meta"]

log = logging.getLogger(__name__)

#: format name -> what it reads
FORMATS: dict[str, str] = {
    "openephys_binary": "Open Ephys binary (a folder with structure.oebin, or the .oebin file)",
    "openephys_legacy": "Open Ephys legacy (a folder of .continuous files)",
    "spikeglx": "SpikeGLX (a folder, or a .bin/.meta pair: imec ap/lf, nidq)",
    "intan": "Intan (.rhd, .rhs, or a one-file-per-... folder with info.rhd)",
    "blackrock": "Blackrock (.ns1-.ns6, with the .nev beside it for events)",
    "neuralynx": "Neuralynx (a folder of .ncs files, or one .ncs)",
    "plexon": "Plexon (.plx)",
    "nwb": "NWB (.nwb, an ElectricalSeries)",
    "binary": "raw binary (.bin/.dat/.raw: dtype, n_channels and sfreq declared)",
    "npy": "NumPy .npy (n_times, n_channels), sfreq declared",
}

#: neo's voltage unit strings -> microvolts per unit
_UV_PER = {"uV": 1.0, "µV": 1.0, "μV": 1.0, "mV": 1e3, "V": 1e6, "nV": 1e-3, "volts": 1e6, "volt": 1e6}
_FIFF_UNIT_V = 107  # MNE's unit code for volts


def supported() -> str:
    """One line naming every format and the parameter that forces one."""
    return ", ".join(FORMATS) + " (format: ...), and the formats MNE reads (format: mne)"


# -- detection -------------------------------------------------------------------


def detect_format(path: Path, fmt: str | None = None) -> str | None:
    """The electrophysiology format of ``path``, or None for MNE's formats.

    ``fmt`` forces one (``"mne"`` forces MNE); an unknown name is a
    ConfigError listing the supported ones.
    """
    if fmt is not None:
        if fmt == "mne":
            return None
        if fmt not in FORMATS:
            raise ConfigError(f"format={fmt!r} is not supported{did_you_mean(fmt, [*FORMATS, 'mne'])}; supported: {supported()}")
        return fmt
    suffix = path.suffix.lower()
    if path.is_dir():
        return _detect_folder(path)
    if suffix == ".oebin":
        return "openephys_binary"
    if suffix == ".continuous":
        return "openephys_legacy"
    if suffix == ".meta" or (suffix == ".bin" and path.with_suffix(".meta").exists()):
        return "spikeglx"
    if suffix in (".rhd", ".rhs"):
        return "intan"
    if re.fullmatch(r"\.ns[1-6]", suffix) or suffix == ".nev":
        return "blackrock"
    if suffix == ".ncs":
        return "neuralynx"
    if suffix == ".plx":
        return "plexon"
    if suffix == ".nwb":
        return "nwb"
    if suffix == ".npy":
        return "npy"
    if suffix in (".bin", ".dat", ".raw"):
        return "binary"
    return None


def _detect_folder(folder: Path) -> str:
    def has(pattern: str, depth: int = 4) -> bool:
        return any(True for _ in _glob(folder, pattern, depth))

    if has("structure.oebin"):
        return "openephys_binary"
    if has("*.continuous", 1):
        return "openephys_legacy"
    if has("*.meta", 2):
        return "spikeglx"
    if has("*.ncs", 1):
        return "neuralynx"
    if has("info.rhd", 1) or has("info.rhs", 1):
        return "intan"
    raise ConfigError(f"{folder} is a folder with no recording rtneuro recognises (Open Ephys structure.oebin or .continuous, SpikeGLX .meta, "
                      f"Neuralynx .ncs, Intan info.rhd); point path at a file, or set format: one of {', '.join(FORMATS)}")


def _glob(folder: Path, pattern: str, depth: int):
    """Matches of ``pattern`` in ``folder`` and up to ``depth - 1`` levels below it, sorted."""
    found = []
    for level in range(depth):
        found.extend(sorted(folder.glob("/".join(["*"] * level + [pattern]))))
    return found


# -- the interface ---------------------------------------------------------------


class EphysRecording:
    """A recording opened for replay: lazy, memory-mapped, physical units.

    Attributes
    ----------
    path : Path
    format : str
        One of :data:`FORMATS`.
    stream : str
        Which signal stream of the file is read (neo stream name, NWB series).
    sfreq : float
    ch_names : tuple of str
    units : tuple of str
        Per channel: ``"uV"`` for voltage channels, the file's unit otherwise.
    n_samples : int
        Samples per channel (segments of a neo file played back to back).
    positions_um : ndarray, shape (n_channels, 2), or None
        Contact positions where the format has them.
    events : list of (int, str, float)
        ``(sample index, label, duration in s)``.
    notes : list of str
        What the reader decided for the user (stream chosen, segments joined).
    """

    path: Path
    format: str
    stream: str = ""
    sfreq: float
    ch_names: tuple[str, ...]
    units: tuple[str, ...]
    n_samples: int
    positions_um: np.ndarray | None = None

    def __init__(self) -> None:
        self.events: list[tuple[int, str, float]] = []
        self.notes: list[str] = []

    # per-channel raw -> physical: x * _scale + _offset
    _scale: np.ndarray
    _offset: np.ndarray

    def _raw(self, start: int, stop: int, picks: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        """Samples on disk ``[start, stop)`` of channels ``picks``, ``(n, len(picks))``."""
        raise NotImplementedError

    def read(self, start: int, stop: int, picks: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Samples ``[start, stop)`` as float32 ``(n_times, n_picks)`` in :attr:`units`.

        Reads only the asked span from the memory-mapped file.
        """
        p = np.arange(len(self.ch_names)) if picks is None else np.asarray(picks, dtype=np.intp)
        start, stop = max(0, int(start)), min(int(stop), self.n_samples)
        if stop <= start:
            return np.empty((0, len(p)), dtype=np.float32)
        x = np.asarray(self._raw(start, stop, p), dtype=np.float32)
        x *= self._scale[p].astype(np.float32)
        x += self._offset[p].astype(np.float32)
        return x

    def close(self) -> None:
        """Release the file handles."""

    @property
    def is_voltage(self) -> np.ndarray:
        return np.array([u == "uV" for u in self.units])

    def as_raw(self) -> _RawView:
        """This recording seen through the part of MNE's ``Raw`` that ``file_replay`` uses."""
        return _RawView(self)

    def _set_units(self, units: Sequence[str], gains: np.ndarray, offsets: np.ndarray) -> None:
        """Fold each channel's unit into its gain: voltage channels come out in microvolts."""
        out, scale, offset = [], np.asarray(gains, dtype=float).copy(), np.asarray(offsets, dtype=float).copy()
        for i, u in enumerate(units):
            f = _UV_PER.get(str(u).strip())
            if f is None:
                out.append(str(u).strip() or "au")
            else:
                out.append("uV")
                scale[i] *= f
                offset[i] *= f
        self.units, self._scale, self._offset = tuple(out), scale, offset


# -- neo -------------------------------------------------------------------------

_NEO_CLASS = {
    "openephys_binary": "OpenEphysBinaryRawIO", "openephys_legacy": "OpenEphysRawIO", "spikeglx": "SpikeGLXRawIO",
    "intan": "IntanRawIO", "blackrock": "BlackrockRawIO", "neuralynx": "NeuralynxRawIO", "plexon": "PlexonRawIO",
}


class NeoRecording(EphysRecording):
    """One signal stream of a file that ``neo.rawio`` reads (block 0, its segments back to back)."""

    def __init__(self, path: Path, fmt: str, stream: str | None = None) -> None:
        super().__init__()
        import neo.rawio  # imported here: only processes that replay such a file pay for it

        self.path, self.format = path, fmt
        cls = _neuralynx_whole_records(path) if fmt == "neuralynx" else getattr(neo.rawio, _NEO_CLASS[fmt])
        self.io = io = cls(**_neo_kwargs(path, fmt))
        try:
            io.parse_header()
        except ConfigError:
            raise
        except Exception as exc:  # neo raises many types for damaged or foreign files
            cut = ("mmap length is greater than file size", "not a multiple of the data-type size")
            if any(c in str(exc) for c in cut):  # the data its header declares is not all there
                raise DamagedFileError(f"{path}: damaged {fmt} file: shorter than the data its header declares "
                                       f"({_first_line(exc)}); replace it with an intact copy (a file cut this way "
                                       "cannot be opened, so it cannot be replayed in part)") from None
            raise ConfigError(f"{path}: not a readable {fmt} recording ({_first_line(exc)}); check the file, or set format: (one of {', '.join(FORMATS)})") from None
        streams = io.header["signal_streams"]
        if len(streams) == 0:
            raise ConfigError(f"{path}: the {fmt} recording has no continuous signal stream")
        chans = io.header["signal_channels"]
        self._si = si = self._pick_stream(streams, chans, stream)
        sid = streams[si]["id"]
        self.stream = str(streams[si]["name"])
        mine = chans[chans["stream_id"] == sid]
        self.ch_names = _unique([str(n) for n in mine["name"]])
        self.sfreq = float(mine["sampling_rate"][0])
        units = [str(u) for u in mine["units"]]
        if fmt == "plexon":  # neo names no unit; Plexon's gain (SlowMaxMagnitudeMV / (0.5 2^bits Gain PreAmpGain)) is mV a step
            units = [u or "mV" for u in units]
        self._set_units(units, mine["gain"], mine["offset"])
        n_seg = io.segment_count(0)
        self._seg_len = [int(io.get_signal_size(0, s, si)) for s in range(n_seg)]
        self._seg_start = np.concatenate([[0], np.cumsum(self._seg_len)]).astype(np.int64)
        self.n_samples = int(self._seg_start[-1])
        if n_seg > 1:
            self.notes.append(f"{path.name}: {n_seg} segments (recordings or gaps) played back to back; each start is an event 'segment:<k>'")
            self.events.extend((int(self._seg_start[s]), f"segment:{s}", 0.0) for s in range(1, n_seg))
        self.events.extend(self._neo_events())
        self.events.sort(key=lambda e: e[0])
        self.positions_um = _positions(self)

    def _pick_stream(self, streams, chans, stream: str | None) -> int:
        names = [str(s["name"]) for s in streams]
        ids = [str(s["id"]) for s in streams]
        if stream is not None:
            for i, (n, sid) in enumerate(zip(names, ids, strict=True)):
                if stream in (n, sid):
                    return i
            raise ConfigError(f"{self.path}: no signal stream {stream!r}{did_you_mean(stream, names)}; streams: {', '.join(names)}")

        def rank(i: int) -> tuple:
            mine = chans[chans["stream_id"] == streams[i]["id"]]
            voltage = any(str(u).strip() in _UV_PER for u in mine["units"])
            amplifier = "amplifier" in names[i].lower() or names[i].lower().endswith(".ap")
            return (voltage, amplifier, float(mine["sampling_rate"][0]) if len(mine) else 0.0, len(mine))

        best = max(range(len(streams)), key=rank)
        if len(streams) > 1:
            self.notes.append(f"{self.path.name}: stream '{names[best]}' of {', '.join(names)} (set stream: to choose)")
        return best

    def _raw(self, start: int, stop: int, picks: np.ndarray) -> np.ndarray:
        if self.format == "plexon":
            return _plexon_raw(self.io, self._si, start, stop, picks)
        parts = []
        s = int(np.searchsorted(self._seg_start, start, side="right") - 1)
        pos = start
        n_all = len(self.ch_names)
        # a run of neighbouring channels (all of a probe but its sync channel) is a view of the mapped
        # file, not a copy: neo reads every channel and the run is sliced out
        first = int(picks[0]) if len(picks) else 0
        run = len(picks) > 0 and np.array_equal(picks, np.arange(first, first + len(picks)))
        chan = None if run else picks.tolist()
        while pos < stop:
            lo = pos - int(self._seg_start[s])
            hi = min(stop, int(self._seg_start[s + 1])) - int(self._seg_start[s])
            x = self.io.get_analogsignal_chunk(0, s, lo, hi, self._si, channel_indexes=chan)
            parts.append(x[:, first:first + len(picks)] if run and len(picks) < n_all else x)
            pos += hi - lo
            s += 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _neo_events(self) -> list[tuple[int, str, float]]:
        io, out = self.io, []
        for k, ch in enumerate(io.header["event_channels"]):
            name = str(ch["name"])
            for s in range(len(self._seg_len)):
                try:
                    ts, durs, labels = io.get_event_timestamps(0, s, k)
                except Exception as exc:  # a damaged event file costs its events, not the signal
                    self.notes.append(f"{self.path.name}: events of '{name}' unreadable ({_first_line(exc)})")
                    break
                if len(ts) == 0:
                    continue
                t = io.rescale_event_timestamp(ts, "float64", k)
                d = np.zeros(len(t)) if durs is None else io.rescale_epoch_duration(durs, "float64", k)
                t0 = io.get_signal_t_start(0, s, self._si)
                idx = np.round((t - t0) * self.sfreq).astype(np.int64)
                for i, lab, dur in zip(idx, labels, d, strict=True):
                    if 0 <= i < self._seg_len[s]:
                        text = str(lab).strip()
                        out.append((int(i + self._seg_start[s]), f"{name}:{text}" if text else name, float(dur)))
        return out


def _neuralynx_whole_records(path: Path) -> Any:
    """neo's Neuralynx reader, mapping whole 1044-byte records only when some ``.ncs`` is cut inside one.

    neo maps each ``.ncs`` whole and numpy refuses a file that ends inside a
    record, so a cut file (replayed knowingly, ``accept_damaged``) could not
    be opened at all. When a file ends inside a record, every ``.ncs`` read
    is mapped to the fewest whole records any of them holds: the channels of
    a stream stay the same length (neo requires it) and the replay ends where
    the cut file's readable part ends. Intact files are neo's own reading.
    """
    import neo.rawio

    base = neo.rawio.NeuralynxRawIO
    files = [path] if path.is_file() else _glob(path, "*.ncs", 1)
    sizes = [f.stat().st_size - 16384 for f in files if f.stat().st_size > 16384]
    if not any(size % 1044 for size in sizes):
        return base
    n_records = min(size // 1044 for size in sizes)

    class WholeRecords(base):  # type: ignore[misc, valid-type]
        @staticmethod
        def _get_file_map(filename: str) -> Any:
            if Path(filename).suffix.lower() != ".ncs":
                return base._get_file_map(filename)
            return np.memmap(filename, dtype=base._ncs_dtype, mode="r", offset=16384, shape=(n_records,))

    return WholeRecords


def _plexon_raw(io, si: int, start: int, stop: int, picks: np.ndarray) -> np.ndarray:
    """Samples ``[start, stop)`` of a .plx stream from the continuous (type 5) blocks neo located.

    neo 0.14's ``PlexonRawIO._get_analogsignal_chunk`` misreads two cases: a read that ends at the last sample
    drops the whole last block (``data[:-0]`` is empty), and a block's first sample index is the running sum
    including its own size, so a block after one of another size (the shorter last block) is placed wrong.
    The block table itself (file position and size of each block, in file order) is right and is used here."""
    chans = io.header["signal_channels"]
    mine = chans[chans["stream_id"] == io.header["signal_streams"][si]["id"]]
    out = np.zeros((stop - start, len(picks)), dtype=np.int16)
    for k, c in enumerate(picks):
        blocks = io._data_blocks[5][np.int32(mine["id"][int(c)])]
        n = blocks["size"] // 2
        first = np.concatenate([[0], np.cumsum(n)])
        for b in range(int(np.searchsorted(first, start, side="right")) - 1, len(blocks)):
            if first[b] >= stop:
                break
            lo, hi = max(start, int(first[b])), min(stop, int(first[b + 1]))
            pos = int(blocks["pos"][b]) + 2 * (lo - int(first[b]))
            out[lo - start:hi - start, k] = io._memmap[pos:pos + 2 * (hi - lo)].view("<i2")
    return out


def _neo_kwargs(path: Path, fmt: str) -> dict:
    if fmt == "openephys_binary":
        folder = path.parent if path.is_file() else path
        return {"dirname": str(folder)}
    if fmt == "openephys_legacy":
        return {"dirname": str(path.parent if path.is_file() else path)}
    if fmt == "spikeglx":
        return {"dirname": str(path.parent if path.is_file() else path)}
    if fmt == "neuralynx":
        # neo 0.14 reads one file as its folder narrowed to it (``filename`` alone is refused: dirname cannot be empty)
        return {"dirname": str(path.parent), "include_filenames": [path.name]} if path.is_file() else {"dirname": str(path)}
    if fmt == "intan" and path.is_dir():
        info = [p for p in (path / "info.rhd", path / "info.rhs") if p.exists()]
        return {"filename": str(info[0])}
    if fmt == "blackrock":
        return {"filename": str(path.with_suffix(""))} if path.suffix.lower() == ".nev" else {"filename": str(path)}
    if fmt == "plexon":
        return {"filename": str(path), "progress_bar": False}  # no tqdm bars on stderr while a graph runs
    return {"filename": str(path)}


def _positions(rec: NeoRecording) -> np.ndarray | None:
    if rec.format == "spikeglx":
        return _spikeglx_positions(rec)
    if rec.format == "openephys_binary":
        return _openephys_positions(rec)
    return None


def _spikeglx_positions(rec: NeoRecording) -> np.ndarray | None:
    """Contact [x, y] per channel from the stream's .meta (``~snsGeomMap``, SpikeGLX >= 2023), else probeinterface."""
    meta_path = _spikeglx_meta_of_stream(rec)
    if meta_path is None:
        return None
    meta = read_meta(meta_path)
    geom = meta.get("~snsGeomMap")
    names = rec.ch_names
    xy: dict[str, tuple[float, float]] = {}
    if geom:
        entries = re.findall(r"\(([^)]*)\)", geom)
        head = entries[0].split(",")
        shank_sep = float(head[2]) if len(head) > 2 else 0.0
        sites = [tuple(float(v) for v in e.split(":")) for e in entries[1:]]
        kind = "AP" if rec.stream.endswith(".ap") else "LF"
        for i, (shank, x, y, *_rest) in enumerate(sites):
            xy[f"{kind}{i}"] = (shank * shank_sep + x, y)
    else:
        try:
            import probeinterface

            probe = probeinterface.read_spikeglx(meta_path)
        except Exception as exc:  # no probeinterface, or a probe it does not know
            rec.notes.append(f"{meta_path.name}: no ~snsGeomMap and no probe geometry from probeinterface ({_first_line(exc)}); spike de-duplication needs channel_positions_um")
            return None
        kind = "AP" if rec.stream.endswith(".ap") else "LF"
        for i, pos in enumerate(probe.contact_positions):
            xy[f"{kind}{i}"] = (float(pos[0]), float(pos[1]))
    if not any(n in xy for n in names) or not all(n in xy for n in names if not n.startswith("SY")):
        return None
    # channels without a contact (the sync word) sit far from every contact
    far = 1e9
    return np.array([xy.get(n, (far, far)) for n in names], dtype=float)


def _spikeglx_meta_of_stream(rec: NeoRecording) -> Path | None:
    folder = rec.path.parent if rec.path.is_file() else rec.path
    kind = rec.stream.split("-")[0]  # "imec0.ap" (neo may add "-SYNC" streams)
    metas = [m for m in _glob(folder, "*.meta", 2) if m.name.endswith(f".{kind}.meta")]
    return metas[0] if metas else None


def _openephys_positions(rec: NeoRecording) -> np.ndarray | None:
    """Contact positions from a Neuropixels settings.xml, through probeinterface when it is installed."""
    folder = rec.path.parent if rec.path.is_file() else rec.path
    settings = _glob(folder, "settings.xml", 3)
    if not settings:
        for parent in folder.parents[:3]:
            if (parent / "settings.xml").exists():
                settings = [parent / "settings.xml"]
                break
    if not settings:
        return None
    try:
        import probeinterface

        reader = getattr(probeinterface, "read_openephys_neuropixels", None) or probeinterface.read_openephys
        probe = reader(settings[0], stream_name=rec.stream.split("#")[-1], raise_error=False)
    except Exception:  # no probeinterface, or a settings.xml without a probe
        return None
    if probe is None or probe.get_contact_count() != len(rec.ch_names):
        return None
    return np.asarray(probe.contact_positions[:, :2], dtype=float)


def read_meta(path: Path) -> dict[str, str]:
    """A SpikeGLX ``.meta`` file as ``key -> value`` strings."""
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


# -- NWB ---------------------------------------------------------------------------


class NwbRecording(EphysRecording):
    """An ``ElectricalSeries`` of an NWB file, read lazily with h5py."""

    def __init__(self, path: Path, stream: str | None = None) -> None:
        super().__init__()
        try:
            import h5py
        except ImportError:  # pragma: no cover - h5py comes with pynwb, which NWB users have
            raise ConfigError(f"{path}: reading NWB needs h5py; pip install h5py") from None
        self.path, self.format = path, "nwb"
        try:
            self._f = h5py.File(path, "r")
        except Exception as exc:
            if "truncated file" in str(exc):  # HDF5 knows the size it wrote: the file ends before it
                raise DamagedFileError(f"{path}: damaged NWB file: the HDF5 file ends before the size it records "
                                       f"({_first_line(exc)}); replace it with an intact copy (a truncated HDF5 "
                                       "file cannot be opened, so it cannot be replayed in part)") from None
            raise ConfigError(f"{path}: not a readable NWB (HDF5) file ({_first_line(exc)}); check the file, or set format:") from None
        series: dict[str, Any] = {}

        def visit(name: str, obj: Any) -> None:
            t = obj.attrs.get("neurodata_type")
            if isinstance(t, bytes):
                t = t.decode()
            if t == "ElectricalSeries" and isinstance(obj, h5py.Group):
                series[name] = obj

        self._f.visititems(visit)
        if not series:
            raise ConfigError(f"{path}: no ElectricalSeries in this NWB file")
        if stream is not None:
            key = next((k for k in series if stream in (k, k.split("/")[-1])), None)
            if key is None:
                raise ConfigError(f"{path}: no ElectricalSeries {stream!r}{did_you_mean(stream, [k.split('/')[-1] for k in series])}; series: {', '.join(series)}")
        else:
            key = max(series, key=lambda k: (_nwb_rate(series[k]), series[k]["data"].shape[1] if series[k]["data"].ndim > 1 else 1))
            if len(series) > 1:
                self.notes.append(f"{path.name}: series '{key}' of {', '.join(series)} (set stream: to choose)")
        g = series[key]
        self.stream = key
        self._data = data = g["data"]
        if data.ndim not in (1, 2):
            raise ConfigError(f"{path}: {key}/data has {data.ndim} dimensions; expected (n_times, n_channels)")
        n_ch = data.shape[1] if data.ndim == 2 else 1
        self.sfreq = _nwb_rate(g)
        if not self.sfreq > 0:
            raise ConfigError(f"{path}: {key} has neither starting_time.rate nor regular timestamps")
        self.n_samples = int(data.shape[0])
        conv = float(data.attrs.get("conversion", 1.0))
        off = float(data.attrs.get("offset", 0.0))
        unit = data.attrs.get("unit", "volts")
        unit = unit.decode() if isinstance(unit, bytes) else str(unit)
        gains = np.full(n_ch, conv)
        if "channel_conversion" in g:
            gains = gains * np.asarray(g["channel_conversion"][()], dtype=float)
        self._set_units([unit] * n_ch, gains, np.full(n_ch, off))
        names, pos = _nwb_electrodes(g, n_ch)
        self.ch_names = _unique(names)
        self.positions_um = pos

    def _raw(self, start: int, stop: int, picks: np.ndarray) -> np.ndarray:
        block = self._data[start:stop]
        if block.ndim == 1:
            block = block[:, None]
        return block[:, picks]

    def close(self) -> None:
        self._f.close()


def _nwb_rate(g) -> float:
    if "starting_time" in g:
        return float(g["starting_time"].attrs.get("rate", 0.0))
    if "timestamps" in g and g["timestamps"].shape[0] > 1:
        ts = g["timestamps"][: min(10_000, g["timestamps"].shape[0])]
        d = np.diff(ts)
        if np.all(d > 0) and np.ptp(d) < 1e-3 * np.median(d):
            return float(1.0 / np.median(d))
    return 0.0


def _nwb_electrodes(g, n_ch: int) -> tuple[list[str], np.ndarray | None]:
    if "electrodes" not in g:
        return [f"ch{i:03d}" for i in range(n_ch)], None
    region = g["electrodes"]
    rows = np.asarray(region[()], dtype=np.intp)
    table = g.file[region.attrs["table"]]

    def column(name: str):
        return table[name][()] if name in table else None

    ids = column("id")
    names = None
    for col in ("label", "channel_name"):
        c = column(col)
        if c is not None:
            names = [(v.decode() if isinstance(v, bytes) else str(v)) for v in c[rows]]
            break
    if names is None:
        names = [f"e{int(ids[r])}" if ids is not None else f"ch{i:03d}" for i, r in enumerate(rows)]
    pos = None
    for cx, cy in (("rel_x", "rel_y"), ("x", "y")):
        x, y = column(cx), column(cy)
        if x is not None and y is not None:
            xy = np.stack([np.asarray(x, dtype=float)[rows], np.asarray(y, dtype=float)[rows]], axis=1)
            if np.all(np.isfinite(xy)):
                unit = table[cx].attrs.get("unit", "")
                unit = unit.decode() if isinstance(unit, bytes) else str(unit)
                pos = xy * {"meters": 1e6, "m": 1e6, "mm": 1e3}.get(unit, 1.0)
                break
    return names, pos


# -- raw binary and .npy -----------------------------------------------------------


class ArrayRecording(EphysRecording):
    """Raw binary (``numpy.memmap``) or ``.npy`` (``numpy.load(mmap_mode="r")``), time-major."""

    def __init__(self, path: Path, fmt: str, *, dtype: str | None, n_channels: int | None, sfreq: float | None,
                 gain: float, offset: float, data_unit: str) -> None:
        super().__init__()
        self.path, self.format, self.stream = path, fmt, path.name
        if sfreq is None:
            raise ConfigError(f"{path}: a {fmt} file does not say its rate; set sfreq: (samples per second)")
        if fmt == "npy":
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except ValueError as exc:
                raise ConfigError(f"{path}: not a readable .npy ({_first_line(exc)}); the file is truncated or not an array: copy it again") from None
            if arr.ndim == 1:
                arr = arr[:, None]
            if arr.ndim != 2:
                raise ConfigError(f"{path}: the array has shape {list(arr.shape)}; expected (n_times, n_channels)")
            if not arr.flags.c_contiguous:
                log.info("%s: stored in Fortran order; reads are strided", path)
            if dtype is not None and np.dtype(dtype) != arr.dtype:
                raise ConfigError(f"{path}: the file holds {arr.dtype}, not the declared dtype={dtype!r}; remove dtype or fix it")
            if n_channels is not None and n_channels != arr.shape[1]:
                raise ConfigError(f"{path}: the array has {arr.shape[1]} columns, not n_channels={n_channels}; arrays are (n_times, n_channels): transpose it when saving")
        else:
            if dtype is None or n_channels is None:
                raise ConfigError(f"{path}: a raw binary file needs dtype: (e.g. int16) and n_channels: declared")
            dt = _dtype(dtype, path)
            n_samples, _ = binary_samples(path, dt, n_channels)  # whole samples (check() refuses a partial one)
            arr = np.memmap(path, dtype=dt, mode="r", shape=(n_samples, n_channels)) if n_samples else np.zeros((0, n_channels), dt)
        self._arr = arr
        self.sfreq = float(sfreq)
        self.n_samples = int(arr.shape[0])
        n = int(arr.shape[1])
        self.ch_names = tuple(f"ch{i:03d}" for i in range(n))
        self._set_units([data_unit] * n, np.full(n, gain), np.full(n, offset))

    def _raw(self, start: int, stop: int, picks: np.ndarray) -> np.ndarray:
        return self._arr[start:stop, picks]


def _dtype(dtype: str, path: Path) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ConfigError(f"{path}: dtype={dtype!r} is not a NumPy dtype (e.g. int16, <i2, float32)") from None
    if dt.kind not in "iuf":
        raise ConfigError(f"{path}: dtype={dtype!r} is not a numeric sample type")
    return dt


# -- integrity ---------------------------------------------------------------------


def binary_samples(path: Path, dt: np.dtype, n_channels: int, header_bytes: int = 0) -> tuple[int, int]:
    """Whole samples of a time-major raw file, and the bytes left over."""
    size = max(path.stat().st_size - header_bytes, 0)
    n, rest = divmod(size, n_channels * dt.itemsize)
    return int(n), int(rest)


def check(path: Path, fmt: str | None = None, *, n_channels: int | None = None, dtype: str | None = None,
          sfreq: float | None = None) -> Any:
    """Does an electrophysiology recording hold what its headers declare? Sizes only, no samples read.

    ==================  ====================================================
    format              what is checked
    ==================  ====================================================
    SpikeGLX            each ``.bin`` against its ``.meta`` (``fileSizeBytes``,
                        whole samples of ``nSavedChans`` int16)
    Open Ephys binary   each ``continuous.dat`` is whole samples of the
                        ``num_channels`` of ``structure.oebin`` and as long
                        as its ``sample_numbers.npy``
    Open Ephys legacy   each ``.continuous`` is its 1024-byte header and
                        whole 2070-byte records
    Neuralynx           each ``.ncs`` is its 16 kB header and whole
                        1044-byte records
    raw binary          whole samples of ``n_channels`` x dtype
    ``.npy``            the array the header declares is all there
    Blackrock ``.nsX``  whole samples (2.1), or every data packet whole
                        (2.2, 2.3, 3.0)
    ==================  ====================================================

    Intan, Plexon and NWB are checked by their readers (neo, HDF5) when
    opened: a file they cannot read is one error line.

    Returns
    -------
    rtneuro.recording.integrity.Integrity
    """
    from .integrity import Integrity

    fmt = detect_format(path, fmt)
    name = fmt or "unknown"
    if fmt is None or not path.exists():
        return Integrity(path, name, checked=False)
    folder = path.parent if path.is_file() else path
    found: list[Integrity] = []
    if fmt == "spikeglx":
        metas = [path.with_suffix(".meta")] if path.is_file() else _glob(folder, "*.meta", 2)
        found = [_check_spikeglx(m) for m in metas]
    elif fmt == "openephys_binary":
        found = [_check_oebin(o) for o in _glob(folder, "structure.oebin", 5)]
    elif fmt == "openephys_legacy":
        found = [_check_records(f, fmt, 1024, 2070, 1024) for f in _glob(folder, "*.continuous", 1)]
    elif fmt == "neuralynx":
        files = [path] if path.is_file() else _glob(path, "*.ncs", 1)
        found = [_check_records(f, fmt, 16384, 1044, 512) for f in files]
    elif fmt == "binary" and n_channels is not None and dtype is not None:
        n, rest = binary_samples(path, _dtype(dtype, path), n_channels)
        base = Integrity(path, fmt, readable_samples=n, sfreq=sfreq)
        if rest:
            return replace(base, ok=False, reason=f"its size is not whole samples of {n_channels} channels x {np.dtype(dtype).itemsize} bytes "
                                                   f"({rest} bytes over {n} samples: cut short, or n_channels/dtype is wrong)",
                           missing=((n, n + 1),))
        return base
    elif fmt == "npy":
        return _check_npy(path)
    elif fmt == "blackrock" and path.is_file() and path.suffix.lower().startswith(".ns"):
        return _check_nsx(path)
    else:
        return Integrity(path, fmt, checked=False)
    bad = [i for i in found if not i.ok]
    if bad:
        return bad[0]
    return found[0] if found else Integrity(path, fmt, checked=False)


def _check_spikeglx(meta_path: Path) -> Any:
    from .integrity import Integrity

    meta = read_meta(meta_path) if meta_path.exists() else {}
    bin_path = meta_path.with_suffix(".bin")
    rate = float(meta.get("imSampRate") or meta.get("niSampRate") or 0) or None
    n_chan = int(meta.get("nSavedChans", 1))
    frame = 2 * n_chan
    if not meta:
        return Integrity(bin_path, "SpikeGLX", ok=False, reason=f"its .meta ({meta_path.name}) is missing or empty", readable_samples=0)
    if not bin_path.exists():
        return Integrity(bin_path, "SpikeGLX", ok=False, reason=f"the data file {bin_path.name} of {meta_path.name} is missing", readable_samples=0)
    size = bin_path.stat().st_size
    declared = int(meta.get("fileSizeBytes", size))
    base = Integrity(bin_path, "SpikeGLX", expected_samples=declared // frame, readable_samples=size // frame, sfreq=rate,
                     details={"bytes_declared": declared, "bytes_present": size})
    if size < declared:
        return replace(base, ok=False, reason=f"it holds {size} of the {declared} bytes its .meta declares (fileSizeBytes)",
                       missing=((size // frame, declared // frame),))
    if size % frame:
        return replace(base, ok=False, reason=f"{size} bytes are not whole samples of {n_chan} channels x 2 bytes (nSavedChans)",
                       missing=((size // frame, size // frame + 1),))
    return base


def _check_oebin(oebin: Path) -> Any:
    import json

    from .integrity import Integrity

    try:
        info = json.loads(oebin.read_text())
    except ValueError as exc:
        return Integrity(oebin, "Open Ephys binary", ok=False, reason=f"structure.oebin is not valid JSON ({_first_line(exc)})", readable_samples=0)
    for cont in info.get("continuous", []):
        folder = oebin.parent / "continuous" / str(cont.get("folder_name", "")).strip("/")
        dat = folder / "continuous.dat"
        rate = float(cont.get("sample_rate", 0)) or None
        if not dat.exists():
            return Integrity(dat, "Open Ephys binary", ok=False, reason=f"it is missing (structure.oebin lists stream {cont.get('stream_name', '')!r})",
                             readable_samples=0)
        n_ch = int(cont["num_channels"])
        n, rest = binary_samples(dat, np.dtype("<i2"), n_ch)
        m = None
        for name in ("sample_numbers.npy", "timestamps.npy"):
            if (folder / name).exists():
                try:
                    m = int(np.load(folder / name, mmap_mode="r").shape[0])
                except ValueError as exc:
                    return Integrity(folder / name, "Open Ephys binary", ok=False, reason=f"it is unreadable ({_first_line(exc)})", readable_samples=0)
                break
        base = Integrity(dat, "Open Ephys binary", expected_samples=m, readable_samples=n, sfreq=rate)
        if m is not None and n < m:
            return replace(base, ok=False, reason=f"it holds {n} samples of {n_ch} channels but sample_numbers.npy has {m}", missing=((n, m),))
        if rest:
            return replace(base, ok=False, reason=f"its size is not whole samples of {n_ch} channels x 2 bytes ({rest} bytes over)",
                           missing=((n, n + 1),))
    return Integrity(oebin, "Open Ephys binary")


def _check_records(f: Path, fmt: str, header: int, record: int, per_record: int) -> Any:
    from .integrity import Integrity

    size = f.stat().st_size
    label = {"openephys_legacy": "Open Ephys legacy", "neuralynx": "Neuralynx"}[fmt]
    if size < header:
        return Integrity(f, label, ok=False, reason=f"{size} bytes, shorter than its {header}-byte header", readable_samples=0)
    n, rest = divmod(size - header, record)
    base = Integrity(f, label, readable_samples=n * per_record)
    if rest:
        return replace(base, ok=False, expected_samples=(n + 1) * per_record,
                       reason=f"its last record ({record} bytes, {per_record} samples) is cut after {rest} bytes",
                       missing=((n * per_record, (n + 1) * per_record),))
    return base


#: Blackrock NSx: at most this many data packets are walked (a PTP file has one per sample: its size is
#: then checked as whole packets of one sample)
_NSX_MAX_PACKETS = 100_000


def _check_nsx(path: Path) -> Any:
    """A Blackrock ``.nsX``: whole samples (2.1), or every data packet whole (2.2, 2.3, 3.0).

    Layouts from the Blackrock NEV/NSx file specification: 2.1 (``NEURALSG``)
    is a 32-byte header, 4 bytes per channel id, then int16 samples; 2.2+
    (``NEURALCD``, ``BRSMPGRP``) declares its header size at byte 10 and its
    channel count at byte 310, then packets of a 0x01 byte, a timestamp (4
    bytes, 8 from 3.0), a sample count and that many int16 samples of every
    channel.
    """
    import struct

    from .integrity import Integrity

    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(314)
        kind = head[:8]
        if kind == b"NEURALSG" and len(head) >= 32:
            cc = struct.unpack_from("<I", head, 28)[0]
            start = 32 + 4 * cc
            frame = 2 * max(cc, 1)
            if size < start:
                return Integrity(path, "Blackrock", ok=False, reason=f"{size} bytes, shorter than its {start}-byte header", readable_samples=0)
            n, rest = divmod(size - start, frame)
            base = Integrity(path, "Blackrock", readable_samples=n)
            if rest:
                return replace(base, ok=False, reason=f"its size is not whole samples of {cc} channels x 2 bytes ({rest} bytes over {n} samples)",
                               missing=((n, n + 1),))
            return base
        if kind not in (b"NEURALCD", b"BRSMPGRP") or len(head) < 314:
            return Integrity(path, "Blackrock", checked=False)
        major = head[8]
        ts = 8 if major >= 3 else 4
        start = struct.unpack_from("<I", head, 10)[0]
        cc = struct.unpack_from("<I", head, 310)[0]
        frame = 2 * max(cc, 1)
        if size < start:
            return Integrity(path, "Blackrock", ok=False, reason=f"{size} bytes, shorter than its {start}-byte headers", readable_samples=0)
        pos, whole, packets = start, 0, 0
        while pos < size and packets < _NSX_MAX_PACKETS:
            f.seek(pos)
            ph = f.read(1 + ts + 4)
            if len(ph) < 1 + ts + 4 or ph[0] != 1:
                what = "a data packet header cut short" if len(ph) < 1 + ts + 4 else f"a byte {ph[0]:#x} where a data packet starts"
                return Integrity(path, "Blackrock", ok=False, readable_samples=whole, missing=((whole, None),),
                                 reason=f"{what} at byte {pos} after {packets} whole packets")
            n = struct.unpack_from("<I", ph, 1 + ts)[0]
            end = pos + len(ph) + n * frame
            if end > size:
                have = (size - pos - len(ph)) // frame
                return Integrity(path, "Blackrock", ok=False, expected_samples=whole + n, readable_samples=whole + have,
                                 missing=((whole + have, whole + n),),
                                 reason=f"data packet {packets + 1} declares {n} samples of {cc} channels but the file ends after {have}")
            if packets == 0 and n == 1 and (size - start) % (end - pos) == 0:  # PTP: one sample per packet
                return Integrity(path, "Blackrock", readable_samples=(size - start) // (end - pos))
            whole += n
            packets += 1
            pos = end
        return Integrity(path, "Blackrock", readable_samples=whole)


def _check_npy(path: Path) -> Any:
    from .integrity import Integrity

    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        return Integrity(path, "npy", expected_samples=int(arr.shape[0]) if arr.ndim else None, readable_samples=int(arr.shape[0]) if arr.ndim else None)
    except ValueError as exc:
        return Integrity(path, "npy", ok=False, reason=f"the array its header declares is not all there ({_first_line(exc)})", readable_samples=0)


# -- opening -------------------------------------------------------------------------


def open_recording(path: Path, fmt: str | None = None, *, stream: str | None = None, dtype: str | None = None,
                   n_channels: int | None = None, sfreq: float | None = None, gain: float = 1.0, offset: float = 0.0,
                   data_unit: str = "uV") -> EphysRecording:
    """Open an electrophysiology recording (format detected when ``fmt`` is None).

    Checks no sizes (see :func:`check` and :func:`open_for_replay`).

    Parameters
    ----------
    path : Path
        A file or a recording folder.
    fmt : str or None
        One of :data:`FORMATS`.
    stream : str or None
        Which signal stream (neo stream name or id, NWB series name);
        default: voltage channels first, then the amplifier/AP stream, the
        highest rate, the most channels.
    dtype, n_channels, sfreq, gain, offset, data_unit
        For raw binary and ``.npy``: how to read the samples and turn them
        into ``data_unit`` (``x * gain + offset``).
    """
    if not path.exists():
        raise ConfigError(f"recording not found: {path}; check the path (relative paths are resolved against the configuration file's folder)")
    found = detect_format(path, fmt)
    if found is None:
        raise ConfigError(f"{path}: not an electrophysiology recording rtneuro reads; supported: {supported()}")
    rec: EphysRecording
    if found in _NEO_CLASS:
        rec = NeoRecording(path, found, stream)
    elif found == "nwb":
        rec = NwbRecording(path, stream)
    else:
        rec = ArrayRecording(path, found, dtype=dtype, n_channels=n_channels, sfreq=sfreq, gain=gain, offset=offset,
                             data_unit=data_unit)
    for note in rec.notes:
        log.info("%s", note)
    return rec


def open_for_replay(path: Path, fmt: str, accept_damaged: bool = False, option: str | None = "accept_damaged: true",
                    **kwargs: Any) -> tuple[_RawView, Any]:
    """:func:`check`, then :func:`open_recording`, seen as ``file_replay`` reads MNE's raws.

    A damaged recording raises :class:`~rtneuro.errors.DamagedFileError`
    (one line: the file, what is missing, the fix: ``option``, or None where
    damage cannot be accepted) unless ``accept_damaged``; then the readable
    part is replayed (the reader reads whole samples only).

    Returns
    -------
    (view, integrity)
    """
    from ..errors import DamagedFileError

    if not path.exists():
        raise ConfigError(f"recording not found: {path}; check the path (relative paths are resolved against the configuration file's folder)")
    integ = check(path, fmt, n_channels=kwargs.get("n_channels"), dtype=kwargs.get("dtype"), sfreq=kwargs.get("sfreq"))
    if not integ.ok and (not accept_damaged or integ.readable_samples == 0):
        raise DamagedFileError(integ.message(option))
    rec = open_recording(path, fmt, **kwargs)
    if integ.sfreq is None:
        integ = replace(integ, sfreq=rec.sfreq)
    return rec.as_raw(), integ


def stream_desc(raw: Any, picks: Sequence[int] | np.ndarray) -> dict:
    """Stream metadata extras of a recording opened for ``file_replay`` (``{}`` for MNE's raws).

    ``positions_um`` ([x, y] per picked channel) where the format has
    geometry: what spike de-duplication reads.
    """
    rec = getattr(raw, "recording", None)
    if not isinstance(rec, EphysRecording):
        return {}
    desc: dict = {"format": rec.format, "stream": rec.stream}
    if rec.positions_um is not None:
        desc["positions_um"] = rec.positions_um[np.asarray(picks, dtype=np.intp)].tolist()
    return desc


class _Annotations:
    """The part of ``mne.Annotations`` that ``annotation_events`` reads."""

    orig_time = None

    def __init__(self, onset: np.ndarray, description: list[str], duration: np.ndarray) -> None:
        self.onset, self.description, self.duration = onset, description, duration

    def __len__(self) -> int:
        return len(self.onset)


class _RawView:
    """An :class:`EphysRecording` through the part of MNE's ``Raw`` that ``file_replay`` uses.

    Voltage channels come out in volts (MNE's unit) and are marked so, so
    that ``file_replay``'s ``unit`` turns them into microvolts as for every
    other format; other channels keep their unit. Channel type: ``seeg``
    for voltage channels (intracranial; MNE has no extracellular type),
    ``misc`` for the others.
    """

    def __init__(self, rec: EphysRecording) -> None:
        self.recording = rec
        self.ch_names = list(rec.ch_names)
        volt = rec.is_voltage
        self.info = {"sfreq": rec.sfreq, "chs": [{"unit": _FIFF_UNIT_V if v else 0} for v in volt]}
        self._types = ["seeg" if v else "misc" for v in volt]
        self._to_si = np.where(volt, 1e-6, 1.0)
        self.n_times = rec.n_samples
        ev = rec.events
        self.annotations = _Annotations(np.array([e[0] / rec.sfreq for e in ev], dtype=float), [e[1] for e in ev],
                                        np.array([e[2] for e in ev], dtype=float))

    def get_channel_types(self, picks: Sequence[int] | None = None) -> list[str]:
        return self._types if picks is None else [self._types[i] for i in picks]

    def time_as_index(self, times, use_rounding: bool = True, origin=None) -> np.ndarray:
        return np.round(np.asarray(times, dtype=float) * self.recording.sfreq).astype(np.int64)

    def read_scaled(self, start: int, stop: int, picks: np.ndarray, scale: np.ndarray, out: np.ndarray) -> None:
        """``out[:] = get_data(picks, start, stop).T * scale`` in one pass from the file's integers.

        The replay's hot path: the mapped integers are multiplied by one
        factor per channel straight into ``out`` (float64, time-major), with
        no intermediate arrays.
        """
        rec = self.recording
        p = np.asarray(picks, dtype=np.intp)
        factor = rec._scale[p] * self._to_si[p] * scale
        np.multiply(rec._raw(start, stop, p), factor, out=out)
        off = rec._offset[p] * self._to_si[p] * scale
        if np.any(off):
            out += off

    def get_data(self, picks: Sequence[int] | None = None, start: int = 0, stop: int | None = None) -> np.ndarray:
        """``(n_channels, n_times)`` float64 (a transposed view), volts for voltage channels."""
        rec = self.recording
        p = np.arange(len(self.ch_names)) if picks is None else np.asarray(picks, dtype=np.intp)
        start, stop = max(0, int(start)), min(self.n_times if stop is None else int(stop), self.n_times)
        if stop <= start:
            return np.empty((len(p), 0))
        # one conversion pass and one multiply (plus the offset where there is one): the hot path of a replay
        x = np.asarray(rec._raw(start, stop, p), dtype=np.float64)
        x *= rec._scale[p] * self._to_si[p]
        off = rec._offset[p] * self._to_si[p]
        if np.any(off):
            x += off
        return x.T


def _unique(names: list[str]) -> tuple[str, ...]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        n = n.strip() or "ch"
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}_{k + 1}")
    return tuple(out)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]
