"""Sources: a seeded synthetic generator and a file replay for MNE-readable recordings.

A source is paced by the runtime: ``next_due()`` tells when its next chunk is
complete (stream time of the chunk's last sample), the runtime waits for it
on the run's clock and calls ``read()``. Both sources produce the same samples
and the same chunk boundaries whatever the clock (real time, a speed factor,
or as fast as possible).
"""

from __future__ import annotations

import bisect
import fnmatch
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import numpy as np

from .._lazy import lazy
from ..errors import ConfigError, DamagedFileError, did_you_mean
from ..kernels.iir import sosfilt_hold
from ..messages import Chunk, StreamMeta, make_events
from ..recording.ephys import detect_format, open_for_replay, stream_desc
from .base import GeneratorSource, NodeContext, Source, param

signal = lazy("scipy.signal")  # imported when a filter is designed (rtneuro/_lazy.py)

__all__ = ["Synthetic", "SyntheticParams", "FileReplay", "FileReplayParams", "aperiodic_sos"]

log = logging.getLogger(__name__)


# -- synthetic ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SyntheticParams:
    """Parameters of :class:`Synthetic`. Amplitudes are RMS-like, in ``unit``."""

    n_channels: int = param(8, ge=1, le=4096)
    sfreq: float = param(1000.0, gt=0, le=200_000)
    chunk_size: int = param(32, ge=1, le=1_000_000, doc="samples per chunk")
    seed: int = param(0, ge=0)
    ch_names: list[str] | None = param(None, doc="default: ch00, ch01, ...")
    oscillations: list[tuple[float, float]] = param([(10.0, 5.0)], doc="[frequency_hz, amplitude] pairs, random phase per channel")
    aperiodic_exponent: float = param(1.0, ge=0, le=2, doc="chi of the 1/f^chi background")
    aperiodic_amplitude: float = param(10.0, ge=0)
    noise_amplitude: float = param(1.0, ge=0, doc="white sensor noise")
    burst_rate_hz: float = param(0.0, ge=0, doc="mean number of bursts per second (Poisson)")
    burst_freq_hz: float = param(20.0, gt=0)
    burst_amplitude: float = param(20.0, ge=0)
    burst_duration_s: float = param(0.3, gt=0, le=10)
    duration_s: float | None = param(None, gt=0, doc="stop after this much signal (default: never)")
    unit: str = "uV"


def aperiodic_sos(exponent: float, sfreq: float, f_min: float = 0.5) -> np.ndarray:
    """First-order pole/zero sections whose cascade has a 1/f^exponent power spectrum.

    Poles at corner frequencies two per decade from ``f_min`` to Nyquist,
    each followed by a zero ``exponent / 2`` of the way to the next pole, so
    that the log-log slope alternates between -20 and 0 dB/decade and
    averages ``-10 * exponent`` dB/decade (Keshner 1982; Kasdin 1995).
    """
    if exponent == 0:
        return np.array([[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]])
    ratio = 10 ** 0.5
    corners = f_min * ratio ** np.arange(0, int(np.log(sfreq / 2 / f_min) / np.log(ratio)) + 1)
    rows = []
    for fp in corners:
        fz = fp * ratio ** (exponent / 2)
        p = np.exp(-2 * np.pi * fp / sfreq)
        z = np.exp(-2 * np.pi * min(fz, 0.49 * sfreq) / sfreq)
        rows.append([1.0, -z, 0.0, 1.0, -p, 0.0])
    return np.array(rows)


class BlockNoise:
    """Standard normal draws for sample ``a`` onwards, the same however they are asked for.

    Draws come in blocks of ``block`` samples from generators seeded by
    ``(seed, purpose, block index)``, so any chunking of a stream, any restart
    at any sample, gives the same numbers. The last few blocks are kept.

    Parameters
    ----------
    seed : int
    width : int
        Draws per sample (channels, or sub-steps).
    block : int
        Samples per block.
    """

    def __init__(self, seed: int, width: int, block: int = 4096) -> None:
        self.seed, self.width, self.block = seed, width, block
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def _block(self, purpose: int, b: int) -> np.ndarray:
        key = (purpose, b)
        blk = self._cache.get(key)
        if blk is None:
            if len(self._cache) > 8:
                self._cache.clear()
            blk = np.random.default_rng([self.seed, purpose, b]).standard_normal((self.block, self.width))
            self._cache[key] = blk
        return blk

    def take(self, purpose: int, a: int, n: int) -> np.ndarray:
        """Draws ``(n, width)`` for samples ``a`` to ``a + n - 1``."""
        out = np.empty((n, self.width))
        pos = 0
        while pos < n:
            b, off = divmod(a + pos, self.block)
            step = min(n - pos, self.block - off)
            out[pos:pos + step] = self._block(purpose, b)[off:off + step]
            pos += step
        return out


class Synthetic(GeneratorSource):
    """Seeded synthetic signal: oscillations, 1/f background, bursts, white noise.

    Deterministic for a given seed and independent of the chunk size: random
    numbers are drawn in fixed blocks of 4096 samples from generators seeded
    by ``(seed, purpose, block)``, and the 1/f background is a recursive
    filter whose state is carried across chunks.
    """

    Params = SyntheticParams
    BLOCK = 4096

    def __init__(self, params: SyntheticParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        n = params.n_channels
        names = tuple(params.ch_names) if params.ch_names else tuple(f"ch{i:02d}" for i in range(n))
        if len(names) != n:
            raise ConfigError(f"ch_names has {len(names)} names for n_channels={n}")
        if len(set(names)) != n:
            raise ConfigError("ch_names must be unique")
        for f, _ in params.oscillations:
            if not 0 < f < params.sfreq / 2:
                raise ConfigError(f"oscillation at {f} Hz must lie in (0, {params.sfreq / 2:g}) Hz")
        if params.burst_freq_hz >= params.sfreq / 2:
            raise ConfigError(f"burst_freq_hz={params.burst_freq_hz} must be below Nyquist ({params.sfreq / 2:g} Hz)")
        self.sfreq = params.sfreq
        self.n_channels = n
        self._sos = np.ascontiguousarray(aperiodic_sos(params.aperiodic_exponent, params.sfreq))
        _, h = signal.sosfreqz(self._sos, worN=8192, fs=params.sfreq)
        self._ap_gain = params.aperiodic_amplitude / np.sqrt(np.mean(np.abs(h) ** 2))
        rng = np.random.default_rng([params.seed, 4])
        self._phases = rng.uniform(0, 2 * np.pi, (len(params.oscillations), n))
        self._burst_gain = np.random.default_rng([params.seed, 3]).uniform(0.5, 1.0, n)
        self._burst_len = int(round(params.burst_duration_s * params.sfreq))
        self._end = None if params.duration_s is None else int(round(params.duration_s * params.sfreq))
        self.outputs = {"": StreamMeta(
            name=ctx.stream_name(), kind="sig", sfreq=params.sfreq, ch_names=names,
            ch_types=("eeg",) * n, units=(params.unit,) * n, dtype="<f8",
            source=f"synthetic seed={params.seed}",
        )}
        self.reset()

    def reset(self) -> None:
        self._index = 0
        self._origin = 0.0
        self._zi = np.zeros((self._sos.shape[0], 2, self.n_channels))
        self._last = np.zeros(self.n_channels)
        self._draws = BlockNoise(self.params.seed, self.n_channels, self.BLOCK)
        self._prepared: np.ndarray | None = None

    def warmup(self) -> None:
        x = np.zeros((4, self.n_channels))
        sosfilt_hold(self._sos, x, np.zeros_like(self._zi), np.zeros(self.n_channels), np.empty_like(x))

    def _noise(self, purpose: int, a: int, n: int) -> np.ndarray:
        return self._draws.take(purpose, a, n)

    def _bursts(self, a: int, n: int, x: np.ndarray) -> None:
        p = self.params
        L = self._burst_len
        fs = self.sfreq
        b_first = max(0, (a - L) // self.BLOCK)
        b_last = (a + n - 1) // self.BLOCK
        env = np.hanning(L) if L > 1 else np.ones(1)
        for b in range(b_first, b_last + 1):
            rng = np.random.default_rng([p.seed, 2, b])
            count = rng.poisson(p.burst_rate_hz * self.BLOCK / fs)
            onsets = b * self.BLOCK + np.sort(rng.integers(0, self.BLOCK, count))
            for o in onsets:
                lo, hi = max(a, o), min(a + n, o + L)
                if lo >= hi:
                    continue
                k = np.arange(lo - o, hi - o)
                wave = p.burst_amplitude * np.sqrt(2) * env[k] * np.sin(2 * np.pi * p.burst_freq_hz * k / fs)
                x[lo - a:hi - a] += wave[:, None] * self._burst_gain[None, :]

    def prefetch(self) -> None:
        """Compute the next chunk now (between chunks) so that ``read`` is instant."""
        if self._prepared is None and self._remaining() > 0:
            self._prepared = self._generate(self._index, self._remaining())

    def read(self) -> Chunk:
        n = self._remaining()
        a = self._index
        x = self._prepared if self._prepared is not None else self._generate(a, n)
        self._prepared = None
        self._index += n
        return Chunk(x, a, self._origin + a / self.sfreq, self.sfreq, [])

    def _generate(self, a: int, n: int) -> np.ndarray:
        p = self.params
        x = self._noise(0, a, n) * p.noise_amplitude
        if p.aperiodic_amplitude > 0:
            ap = np.empty((n, self.n_channels))
            sosfilt_hold(self._sos, self._noise(1, a, n), self._zi, self._last, ap)
            x += ap * self._ap_gain
        if p.oscillations:
            t = np.arange(a, a + n, dtype=np.float64)[:, None]
            for (f, amp), phase in zip(p.oscillations, self._phases, strict=True):
                x += amp * np.sqrt(2) * np.sin(2 * np.pi * f / self.sfreq * t + phase[None, :])
        if p.burst_rate_hz > 0 and p.burst_amplitude > 0:
            self._bursts(a, n, x)
        return x


# -- file replay --------------------------------------------------------------

_SUPPORTED = "EDF/BDF/GDF, FIF, BrainVision (.vhdr), EEGLAB (.set), and the other formats mne.io.read_raw opens"


@dataclass(frozen=True, slots=True, kw_only=True)
class FileReplayParams:
    """Parameters of :class:`FileReplay`."""

    path: str | list[str] = param(doc="one recording, or several played back to back")
    chunk_size: int | None = param(None, ge=1, doc="samples per chunk (default: 0.1 s worth)")
    picks: list[str] | str | None = param(None, doc="channel names, or a channel type such as 'eeg'")
    unit: Literal["uV", "V"] = param("uV", doc="scale volts to microvolts (the default) or keep volts")
    clean_names: bool = param(True, doc="strip the dots and spaces some EDF files pad names with")
    events: bool = param(True, doc="publish annotations (and file boundaries) on '<id>.events'")
    loop: bool = param(False, doc="start again at the end")
    start_s: float = param(0.0, ge=0)
    stop_s: float | None = param(None, gt=0)
    accept_damaged: bool = param(False, doc="replay the readable part of a file cut short (a 'gap' event and the report mark what is missing) instead of refusing it")
    format: str | None = param(None, doc="recording format (default: from the extension or the folder's contents): openephys_binary, openephys_legacy, spikeglx, intan, blackrock, neuralynx, plexon, nwb, binary, npy, or mne")
    stream: str | None = param(None, doc="signal stream of a multi-stream recording (neo stream name or id, NWB series; default: the amplifier/AP stream)")
    dtype: str | None = param(None, doc="raw binary: sample type (int16, <f4...)")
    n_channels: int | None = param(None, ge=1, doc="raw binary: channels per sample (time-major); .npy: checked")
    sfreq: float | None = param(None, gt=0, doc="raw binary and .npy: samples per second")
    gain: float = param(1.0, doc="raw binary and .npy: value = sample * gain + offset, in data_unit")
    offset: float = 0.0
    data_unit: str = param("uV", doc="raw binary and .npy: unit of sample * gain + offset (uV, mV, V, or another: not scaled)")


@dataclass
class _Part:
    path: str
    raw: Any  # an mne.io.BaseRaw
    start: int
    stop: int
    picks: np.ndarray
    scale: np.ndarray
    events: np.ndarray  # (n, 3): local sample index, code, duration in samples
    integrity: Any = None  # rtneuro.recording.integrity.Integrity of a damaged file accepted knowingly


class FileReplay(Source):
    """Replay of a recording that ``mne.io.read_raw`` opens, annotations as events.

    Samples are read in blocks ahead of time (the next block is read right
    after a chunk is emitted, never while one is due). Several files play
    back to back as one stream: their channels and rates must agree. Each
    file start is an event labelled ``file:<name>``; annotations keep their
    description as label.

    Outputs
    -------
    ``<id>``
        The signal, ``(n_times, n_channels)``, in ``unit``.
    ``<id>.events``
        Annotations in the structured event dtype; ``event_id`` in the
        stream metadata maps labels to codes.
    """

    Params = FileReplayParams

    def __init__(self, params: FileReplayParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        paths = [params.path] if isinstance(params.path, str) else list(params.path)
        if not paths:
            raise ConfigError("path must name at least one file")
        self.parts: list[_Part] = []
        labels: list[str] = []
        raw_events = []
        opened = []
        damaged = {}
        for p in paths:
            raw, integ = open_recording(ctx.resolve(p), params.accept_damaged, ephys=_ephys_params(params))
            if not integ.ok:
                damaged[str(p)] = integ
            names = [_clean(c) if params.clean_names else c for c in raw.ch_names]
            picks = _pick(raw, names, params.picks, p)
            opened.append((p, raw, picks, tuple(names[i] for i in picks)))
        _, raw0, picks0, ch_names = opened[0]
        sfreq = float(raw0.info["sfreq"])
        self.ch_types = tuple(raw0.get_channel_types(picks=picks0))
        raw_units = [raw0.info["chs"][i]["unit"] for i in picks0]
        for p, raw, picks, these in opened:
            if these != ch_names or float(raw.info["sfreq"]) != sfreq:
                raise ConfigError(f"{p}: channels or sampling rate differ from {paths[0]} ({len(these)} channels at {raw.info['sfreq']:g} Hz vs {len(ch_names)} at {sfreq:g} Hz); play them in separate sources")
            start = int(round(params.start_s * sfreq))
            n_times = int(raw.n_times)
            stop = n_times if params.stop_s is None else min(n_times, int(round(params.stop_s * sfreq)))
            if start >= stop:
                raise ConfigError(f"{p}: start_s={params.start_s} leaves no samples (the file lasts {n_times / sfreq:.1f} s)")
            scale = uv_scale(raw0, picks0, params.unit == "uV")
            evs = []
            label = f"file:{ctx.resolve(p).name}"
            labels.append(label)
            evs.append((0, label, 0.0))
            for i, desc, dur in annotation_events(raw):
                if start <= i < stop:
                    evs.append((i - start, desc, dur))
                    labels.append(desc)
            integ = damaged.get(str(p))
            if integ is not None:
                evs.extend(self._gap(p, integ, n_times, start, stop, sfreq, labels))
            raw_events.append(evs)
            self.parts.append(_Part(str(p), raw, start, stop, picks, scale, np.empty((0, 3)), integ))
        self.event_id = {lab: i + 1 for i, lab in enumerate(sorted(set(labels)))}
        self._label_of = {code: lab for lab, code in self.event_id.items()}
        for part, evs in zip(self.parts, raw_events, strict=True):
            part.events = np.array([(i, self.event_id[lab], dur) for i, lab, dur in evs], dtype=float).reshape(-1, 3)
        self.sfreq = sfreq
        self.ch_names = ch_names
        self.chunk_size = params.chunk_size or max(1, int(round(sfreq / 10)))
        self.n_total = int(sum(part.stop - part.start for part in self.parts))
        units = tuple(
            ("uV" if scale == 1e6 else "V") if u == FIFF_UNIT_V else "au"
            for scale, u in zip(self.parts[0].scale, raw_units, strict=True)
        )
        self.outputs = {"": StreamMeta(
            name=ctx.stream_name(), kind="sig", sfreq=sfreq, ch_names=ch_names, ch_types=self.ch_types,
            units=units, dtype="<f8", source=f"file_replay {', '.join(str(p) for p in paths)}", desc=stream_desc(raw0, picks0),
        )}
        if params.events:
            self.outputs["events"] = StreamMeta(
                name=ctx.stream_name("events"), kind="evt", sfreq=0.0, dtype="event",
                source=f"annotations of {', '.join(str(p) for p in paths)}", event_id=dict(self.event_id),
            )
        # global sample index -> (part, local index) boundaries
        self._bounds = [0]
        for part in self.parts:
            self._bounds.append(self._bounds[-1] + part.stop - part.start)
        self.reset()

    def _gap(self, p: str, integ: Any, n_times: int, start: int, stop: int, sfreq: float,
             labels: list[str]) -> list[tuple[int, str, float]]:
        """Note a damaged file accepted knowingly; its ``gap`` event (on its last readable sample, when replayed)."""
        missing = integ.missing_samples
        how_much = f"{missing / sfreq:.3f} s ({missing} samples)" if missing is not None else "an unknown length"
        msg = (f"{p}: damaged {integ.format} file replayed as accept_damaged asks: {integ.reason}; "
               f"{integ.describe_missing()}; {n_times} samples replayed, {how_much} missing after sample {n_times}")
        log.info(msg)  # the note puts it in the run's summary once
        self.note(msg)
        if not integ.missing or not start < n_times <= stop:
            return []
        labels.append("gap")
        return [(n_times - 1 - start, "gap", (missing or 0) / sfreq)]

    def report(self) -> dict:
        damaged = [part.integrity.to_report() for part in self.parts if part.integrity is not None]
        return {"damaged_files": damaged} if damaged else {}

    def reset(self) -> None:
        self._index = 0
        self._origin = 0.0
        self._block: np.ndarray | None = None
        self._block_start = 0
        self._prepared: list | None = None

    def start(self, origin: float, resume: int = 0) -> None:
        self._origin = origin
        self._prepared = None
        if resume:
            self._index = min(resume - resume % self.chunk_size, self.n_total)

    def position(self) -> int:
        return self._index

    def _remaining(self) -> int:
        if self.params.loop:
            return self.chunk_size
        return min(self.chunk_size, self.n_total - self._index)

    def next_due(self) -> float | None:
        n = self._remaining()
        if n <= 0:
            return None
        return self._origin + (self._index + n - 1) / self.sfreq

    def _read_span(self, a: int, n: int) -> np.ndarray:
        """Samples [a, a+n) of the concatenated (possibly looped) recording."""
        out = np.empty((n, len(self.ch_names)))
        pos = 0
        while pos < n:
            g = (a + pos) % self.n_total
            k = bisect.bisect_right(self._bounds, g) - 1
            part = self.parts[k]
            local = g - self._bounds[k]
            take = min(n - pos, self._bounds[k + 1] - g)
            lo = part.start + local
            fast = getattr(part.raw, "read_scaled", None)  # electrophysiology readers: one pass from the integers
            try:
                if fast is not None:
                    fast(lo, lo + take, part.picks, part.scale, out[pos:pos + take])
                else:
                    data = part.raw.get_data(picks=part.picks, start=lo, stop=lo + take)
            except Exception as exc:  # the file changed or is damaged in a way its header does not show
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise DamagedFileError(f"{part.path}: reading samples {lo} to {lo + take} failed ({first[:160]}); "
                                       "the file is damaged or changed while it was replayed: check it with "
                                       "'rtneuro validate' and replace it with an intact copy") from None
            if fast is None:
                out[pos:pos + take] = data.T * part.scale
            pos += take
        return out

    def _block_samples(self) -> int:
        # about 8 MB per block, at least 10 chunks, at most 10 s
        per = 8 * len(self.ch_names)
        return int(max(self.chunk_size * 10, min(8_000_000 // per, 10 * self.sfreq)))

    def _fill(self) -> None:
        """Read the next block if the current one is nearly used up."""
        end = self._block_start + (0 if self._block is None else self._block.shape[0])
        if self._block is None or end - self._index < 2 * self.chunk_size:
            total = None if self.params.loop else self.n_total
            a = self._index
            n = self._block_samples()
            if total is not None:
                n = min(n, total - a)
            if n > 0:
                self._block = self._read_span(a, n)
                self._block_start = a

    def prefetch(self) -> None:
        """Prepare the next chunk now (between chunks) so that ``read`` is instant."""
        n = self._remaining()
        if self._prepared is None and n > 0:
            self._prepared = self._make(self._index, n)

    def read(self) -> list:
        n = self._remaining()
        out = self._prepared if self._prepared is not None else self._make(self._index, n)
        self._prepared = None
        self._index += n
        return out

    def _make(self, a: int, n: int) -> list:
        block = self._block
        if block is None or a < self._block_start or a + n > self._block_start + block.shape[0]:
            self._block = None
            self._fill()
            block = self._block
        assert block is not None  # _fill reads at least the n samples asked for
        off = a - self._block_start
        x = np.ascontiguousarray(block[off:off + n])
        t0 = self._origin + a / self.sfreq
        out = [("", Chunk(x, a, t0, self.sfreq, []))]
        if self.params.events:
            ev = self._events_in(a, n)
            if ev.size:
                out.append(("events", Chunk(ev, a, t0, 0.0, [])))
        return out

    def _events_in(self, a: int, n: int) -> np.ndarray:
        rows = []
        span_lo = a
        while span_lo < a + n:
            lap, g = divmod(span_lo, self.n_total)
            k = bisect.bisect_right(self._bounds, g) - 1
            seg_end = min(a + n, lap * self.n_total + self._bounds[k + 1])
            local_lo = g - self._bounds[k]
            local_hi = local_lo + (seg_end - span_lo)
            ev = self.parts[k].events
            sel = (ev[:, 0] >= local_lo) & (ev[:, 0] < local_hi)
            for local, code, dur in ev[sel]:
                idx = span_lo + int(local) - local_lo
                rows.append((idx, self._origin + idx / self.sfreq, int(code), -1, dur, 0.0, self._label_of[int(code)]))
            span_lo = seg_end
        return make_events(rows)


#: MNE's unit code for volts (FIFF_UNIT_V)
FIFF_UNIT_V = 107


def uv_scale(raw, picks, to_uv: bool = True) -> np.ndarray:
    """Per picked channel, the factor that turns MNE's volts into microvolts (1 for other units, or without ``to_uv``)."""
    return np.array([1e6 if (to_uv and raw.info["chs"][i]["unit"] == FIFF_UNIT_V) else 1.0 for i in picks])


def annotation_events(raw) -> list[tuple[int, str, float]]:
    """``(sample index in the file, description, duration)`` of each annotation of an MNE raw."""
    ann = raw.annotations
    if not len(ann):
        return []
    # MNE's raw.time_as_index(onset, use_rounding=True, origin=ann.orig_time), without building raw.times (the time
    # of every sample, through a numba function MNE compiles in every process: 0.3 s a file, at every start)
    sfreq = float(raw.info["sfreq"])
    delta = 0.0
    if ann.orig_time is not None and raw.info["meas_date"] is not None:
        delta = (ann.orig_time - (raw.info["meas_date"] + timedelta(0, raw.first_samp / sfreq))).total_seconds()
    idx = np.round((np.atleast_1d(np.asarray(ann.onset, dtype=float)) + delta) * sfreq).astype(int)
    return [(int(i), str(d), float(dur)) for i, d, dur in zip(idx, ann.description, ann.duration, strict=True)]


def _clean(name: str) -> str:
    return re.sub(r"[.\s]+$", "", name.strip()) or name


def _open_raw(path, accept_damaged: bool = False, option: str | None = "accept_damaged: true"):
    """The MNE raw of ``path`` (not preloaded), after its integrity check; see :func:`open_recording`."""
    return open_recording(path, accept_damaged, option)[0]


def open_recording(path, accept_damaged: bool = False, option: str | None = "accept_damaged: true",
                   ephys: dict | None = None) -> tuple[Any, Any]:
    """Open a recording MNE reads, once :func:`rtneuro.recording.integrity.check` finds it whole.

    Returns the raw (not preloaded) and the file's
    :class:`~rtneuro.recording.integrity.Integrity`. A damaged file raises
    :class:`~rtneuro.errors.DamagedFileError` (one line: the file, what is
    missing, the fix: ``option``, or None where damage cannot be accepted),
    unless ``accept_damaged``: then the raw is
    cropped to the samples that are whole in the file.
    """
    import mne  # imported here: only processes that replay a file pay for it

    from ..recording import integrity

    if not path.exists():
        raise ConfigError(f"recording not found: {path}; check the path (relative paths are resolved against the configuration file's folder)")
    fmt = detect_format(path, (ephys or {}).get("format"))
    if fmt is not None:  # spike and LFP formats, raw binary, .npy: rtneuro.recording.ephys
        return open_for_replay(path, fmt, accept_damaged, option, **{k: v for k, v in (ephys or {}).items() if k != "format"})
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a recording")
    integ = integrity.require(path, accept_damaged, option)
    try:
        raw = mne.io.read_raw(path, preload=False, verbose="error")
    except Exception as exc:  # MNE raises many types for unreadable files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not integ.ok:
            raise DamagedFileError(f"{integ.message(option)} (MNE cannot open even the readable part: {first[:120]})") from None
        raise ConfigError(f"{path} is not a recording MNE can read ({first[:160]}); supported: {_SUPPORTED}") from None
    n = integ.readable_samples
    if not integ.ok and n is not None and n < raw.n_times:
        raw.crop(0.0, (n - 1) / raw.info["sfreq"], verbose="error")
        if raw.n_times != n:  # pragma: no cover - MNE rounds times to samples
            raise DamagedFileError(f"{path}: cropping to the {n} readable samples gave {raw.n_times}; replace it with an intact copy")
    return raw, integ


def _ephys_params(params: FileReplayParams) -> dict:
    return {"format": params.format, "stream": params.stream, "dtype": params.dtype, "n_channels": params.n_channels,
            "sfreq": params.sfreq, "gain": params.gain, "offset": params.offset, "data_unit": params.data_unit}


def _pick(raw, names: list[str], picks, path: str) -> np.ndarray:
    if picks is None:
        return np.arange(len(names))
    if isinstance(picks, str):
        types = raw.get_channel_types()
        sel = [i for i, t in enumerate(types) if fnmatch.fnmatch(t, picks)]
        if not sel:
            raise ConfigError(f"{path}: no channel of type {picks!r}; types present: {sorted(set(types))}")
        return np.array(sel)
    missing = [p for p in picks if p not in names]
    if missing:
        raise ConfigError(f"{path}: channels {missing} not found{did_you_mean(missing[0], names)}")
    return np.array([names.index(p) for p in picks])
