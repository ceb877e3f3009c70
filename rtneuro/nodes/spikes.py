"""Spike detection at probe scale, and a synthetic probe to feed it."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._lazy import lazy
from ..errors import ConfigError
from ..kernels.spikes import (
    N_STATE,
    SIGN_BOTH,
    SIGN_NEG,
    SIGN_POS,
    ST_ACTIVE,
    ST_BAD,
    ST_CANDIDATES,
    ST_COUNT,
    ST_DROPPED,
    ST_KEPT,
    ST_NEXT_BIN,
    ST_SUPPRESSED,
    detect_spikes,
)
from ..messages import EVENT_DTYPE, Chunk, StreamMeta, make_events
from .base import GeneratorSource, Node, NodeContext, param, regular_rate

signal = lazy("scipy.signal")  # imported when a filter is designed (rtneuro/_lazy.py)

__all__ = ["SpikeDetect", "SpikeDetectParams", "SyntheticSpikes", "SyntheticSpikesParams", "EVENT_ID", "probe_positions",
           "DEFAULT_DEDUP_RADIUS_UM"]

log = logging.getLogger(__name__)

#: Event codes of the ``events`` port of :class:`SpikeDetect`.
EVENT_ID = {"spike_neg": 1, "spike_pos": 2}
#: Slope of the running-median update for Gaussian noise: the median of
#: ``|x|`` relaxes as ``exp(-0.8575 * eta * n)`` (``2 f(m) m`` at the median of a half-normal).
_GAUSS_GAIN = 2 * 0.6745 * math.exp(-0.5 * 0.6745**2) * 2 / math.sqrt(2 * math.pi)


#: Neighbour radius when positions are known and ``dedup_radius_um`` is not set
#: (SpikeInterface's ``locally_exclusive`` default).
DEFAULT_DEDUP_RADIUS_UM = 50.0


def probe_positions(path: Path) -> np.ndarray:
    """Contact positions (um, shape (n_channels, 2 or 3)) in channel order from a probe file.

    ``.json``: a probeinterface file (every probe of the group, contacts
    placed by their ``device_channel_indices`` where set, else in order);
    ``.prb``: a SpyKING CIRCUS / Klusta probe file, through probeinterface;
    ``.csv`` (or ``.txt``): one row ``x, y[, z]`` per channel, in the
    stream's channel order, an optional header line.
    """
    if not path.is_file():
        raise ConfigError(f"probe_file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt", ".tsv"):
        text = path.read_text().splitlines()
        rows = [ln.replace("\t", ",").replace(";", ",") for ln in text if ln.strip()]
        try:
            start = 0 if all(_isnum(v) for v in rows[0].split(",")) else 1
            return np.array([[float(v) for v in r.split(",")] for r in rows[start:]], dtype=float)
        except (ValueError, IndexError) as exc:
            raise ConfigError(f"probe_file {path}: need one row x, y[, z] per channel ({exc})") from None
    if suffix not in (".json", ".prb"):
        raise ConfigError(f"probe_file {path}: unknown format {suffix!r}; use a probeinterface .json, a .prb or a .csv of x,y rows")
    try:
        import probeinterface
    except ImportError:  # pragma: no cover - installed with spikeinterface
        raise ConfigError(f"probe_file {path}: reading {suffix} needs probeinterface (pip install probeinterface), or give a .csv of x,y rows") from None
    try:
        group = probeinterface.read_probeinterface(path) if suffix == ".json" else probeinterface.read_prb(path)
    except Exception as exc:  # noqa: BLE001 - any parse error of a user's file becomes one line
        raise ConfigError(f"probe_file {path}: probeinterface could not read it ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    parts = []
    for probe in group.probes:
        pos = np.asarray(probe.contact_positions, dtype=float)
        dev = probe.device_channel_indices
        parts.append((pos, None if dev is None else np.asarray(dev, dtype=np.int64)))
    if all(d is not None for _, d in parts):
        n = max(int(d.max()) for _, d in parts if d is not None and d.size) + 1
        out = np.full((n, parts[0][0].shape[1]), np.nan)
        for pos, dev in parts:
            assert dev is not None
            wired = dev >= 0
            out[dev[wired]] = pos[wired]
        if np.isnan(out).any():
            missing = np.nonzero(np.isnan(out[:, 0]))[0][:8].tolist()
            raise ConfigError(f"probe_file {path}: no contact is wired to channel(s) {missing}")
        return out
    return np.concatenate([pos for pos, _ in parts])


def _isnum(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _samples(ms: float, fs: float) -> int:
    return int(round(ms * fs / 1000.0))


@dataclass(frozen=True, slots=True, kw_only=True)
class SpikeDetectParams:
    """Parameters of :class:`SpikeDetect`. Times in ms unless the name says ``_s``."""

    l_freq: float | None = param(300.0, gt=0, doc="band-pass lower edge in Hz (null with h_freq: input is spike-band already)")
    h_freq: float | None = param(6000.0, gt=0, doc="band-pass upper edge in Hz")
    order: int = param(3, ge=1, le=8, doc="Butterworth order per edge")
    threshold: float = param(5.0, gt=0, doc="detection threshold in noise levels (median(|x|) / 0.6745)")
    sign: Literal["neg", "pos", "both"] = param("neg", doc="detect negative, positive or both crossings")
    noise_init_s: float = param(1.0, gt=0, doc="the noise level starts as the MAD of this first stretch (no detection meanwhile)")
    noise_tau_s: float | None = param(10.0, gt=0, doc="time constant of the running noise estimate; null: frozen after init")
    refractory_ms: float = param(1.0, ge=0, doc="no new crossing on a channel this long after its last peak")
    peak_window_ms: float = param(0.5, ge=0, doc="the peak is the extremum this long after the crossing (output lag)")
    snippet_ms: tuple[float, float] = param((1.0, 2.0), ge=0, doc="waveform snippet before and after the peak")
    dedup_ms: float | None = param(0.5, ge=0, doc="detections on neighbouring sites this close keep only the largest (needs geometry); null: off")
    dedup_radius_um: float | None = param(None, gt=0, doc="sites within this distance are neighbours (default 50 um when positions are known)")
    dedup_index_distance: int | None = param(None, ge=1, doc="opt-in without geometry: channels this close in index are neighbours (only where channel order is the probe's layout)")
    channel_positions_um: list[list[float]] | None = param(None, doc="[x, y] per channel (default: probe_file, else the stream's desc.positions_um)")
    probe_file: str | None = param(None, doc="channel positions from a probeinterface .json, a .prb or a .csv of x,y[,z] rows in channel order")
    bin_s: float = param(0.05, gt=0, doc="rate frames: one every bin_s, counting detections per channel and in total (MUA)")

    def __post_init__(self) -> None:
        if (self.l_freq is None) != (self.h_freq is None):
            raise ConfigError("set both l_freq and h_freq for a band-pass, or neither for input that is spike-band already")
        if self.l_freq is not None and self.h_freq is not None and self.l_freq >= self.h_freq:
            raise ConfigError(f"l_freq={self.l_freq} must be below h_freq={self.h_freq}")


class SpikeDetect(Node):
    """Threshold-crossing spike detection with peak alignment and de-duplication.

    For each sample, channels innermost, in one numba kernel:

    1. Butterworth band-pass in second-order sections, float32, state from
       the step steady state of the first sample; non-finite input holds the
       channel's last finite value (counted).
    2. Noise level per channel: ``median(|x|) / 0.6745`` over the first
       ``noise_init_s`` (every k-th sample, at most ``MAX_INIT_ROWS``; no
       detection meanwhile), then a running median of
       ``|x|`` by the quantile update ``m <- m exp(+eta)`` when
       ``|x| > m``, else ``m exp(-eta)``. With ``eta = 1 / (0.8575 tau fs)``
       the estimate relaxes with time constant ``noise_tau_s`` for Gaussian
       noise; its equilibrium is the median whatever the distribution, so
       spikes barely move it. Per-sample and state-only: chunk invariant.
    3. A crossing of ``threshold`` noise levels (from inside the threshold,
       outside the refractory period of the previous peak) opens a window of
       ``peak_window_ms``; the peak is its extremum (earliest on ties).
    4. With geometry, a candidate survives de-duplication unless a
       candidate on a neighbouring site (within ``dedup_radius_um``, the
       channel itself included) within ``dedup_ms`` has a larger
       |amplitude|. Geometry is, first found: ``channel_positions_um``,
       ``probe_file``, the stream's ``desc.positions_um`` (file readers fill
       it where the format has it). Without geometry there is no
       de-duplication (each channel keeps its own refractory period), said
       once in the log, the run report and :meth:`status`: channel indices
       say nothing of where sites are (on a tetrode, taking neighbours by
       index removed 87 % of one wire's detections). ``dedup_index_distance``
       opts in to index neighbours for a probe whose channel order is its
       layout. The number removed is ``suppressed_duplicates`` in
       :meth:`report` and in :meth:`status`.

    A detection is final ``peak_window_ms + dedup_ms`` after its peak: the
    events port lags the input by that much (``desc.lag_samples``).

    Live parameters: ``threshold``, ``noise_tau_s`` and ``refractory_ms``.
    :meth:`update` keeps the filter, the noise levels, the open peak
    windows and the refractory periods already running (they end as
    they were set); from the next sample the threshold is the new
    multiple of the current noise levels, the noise level adapts with the
    new time constant (null: frozen where it is) and the next peak sets
    the new refractory period. The band, the peak window, de-duplication
    and the snippets are fixed while running.

    Outputs
    -------
    ``<id>.events``
        One event per detection: ``index`` (the peak's sample index in the
        input stream), ``time``, ``code`` (1 negative, 2 positive peak; see
        ``event_id``), ``channel``, ``value`` (the filtered peak amplitude,
        signed, in the input's unit). Chunk ``first`` counts events.
    ``<id>.rates``
        One frame every ``bin_s``: detections per channel and their total
        (``mua``) over the bin, in Hz. Bins start when detection starts and
        are emitted once every detection of the bin is final.
    ``<id>.snippets``
        One row per event, same order and numbering (chunk ``first``): the
        filtered waveform on the event's channel from ``snippet_ms[0]``
        before to ``snippet_ms[1]`` after the peak, float32. A snippet
        follows its event once its last sample has arrived.

    Notes
    -----
    Quiroga, Nadasdy & Ben-Shaul (2004) Neural Comput 16:1661 (threshold on
    ``median(|x|) / 0.6745``); the running median is the stochastic
    approximation of a quantile (Robbins & Monro 1951). De-duplication
    follows SpikeInterface's ``locally_exclusive`` peak detector; with
    de-duplication off, a frozen noise level and ``refractory_ms =
    peak_window_ms = exclude_sweep_ms`` the detections agree with
    ``spikeinterface.sortingcomponents.peak_detection.detect_peaks(method="by_channel")``
    (tested).
    """

    Params = SpikeDetectParams
    input_kinds = ("sig",)
    live = ("threshold", "noise_tau_s", "refractory_ms")
    #: The initial median is taken over at most this many samples per channel
    #: (evenly spaced): a one-off cost of about 10 ms per 100 channels.
    MAX_INIT_ROWS = 8192

    def __init__(self, params: SpikeDetectParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        src = inputs[0]
        fs = regular_rate(src, "spike detection")
        C = src.n_channels
        if C < 1:
            raise ConfigError(f"stream '{src.name}' has no channels")
        self.sfreq = fs
        self.n_channels = C
        nyq = fs / 2
        if params.l_freq is not None and params.h_freq is not None:
            if params.h_freq >= nyq:
                raise ConfigError(f"h_freq={params.h_freq} Hz must be below the Nyquist frequency {nyq:g} Hz of stream '{src.name}'")
            sos = signal.butter(params.order, (params.l_freq, params.h_freq), "bandpass", fs=fs, output="sos")
            self._sos = np.ascontiguousarray(sos, dtype=np.float32)
            self._zi0 = np.ascontiguousarray(signal.sosfilt_zi(sos), dtype=np.float32)
        else:
            self._sos = np.zeros((0, 6), dtype=np.float32)
            self._zi0 = np.zeros((0, 2), dtype=np.float32)
        self.win = _samples(params.peak_window_ms, fs)
        self.refr = _samples(params.refractory_ms, fs)
        self._neigh, self.dedup_mode = self._neighbours(params, src, ctx)
        self.dedup = params.dedup_ms is not None and self.dedup_mode != "off"
        self.dedup_s = _samples(params.dedup_ms, fs) if self.dedup and params.dedup_ms is not None else 0
        self.pre = _samples(params.snippet_ms[0], fs)
        self.post = _samples(params.snippet_ms[1], fs)
        self.n_init = int(round(params.noise_init_s * fs))
        if self.n_init < 100:
            raise ConfigError(f"noise_init_s={params.noise_init_s} gives {self.n_init} samples at {fs:g} Hz; "
                              "the initial median needs at least 100: lengthen it")
        #: the initial median uses every init_stride-th sample, at most MAX_INIT_ROWS of them
        self.init_stride = -(-self.n_init // self.MAX_INIT_ROWS)
        self.bin_len = int(round(params.bin_s * fs))
        if self.bin_len < 1:
            raise ConfigError(f"bin_s={params.bin_s} is shorter than one sample at {fs:g} Hz")
        self.lag = self.win + self.dedup_s
        self._up, self._down = self._steps(params.noise_tau_s, fs)
        self._sign = {"neg": SIGN_NEG, "pos": SIGN_POS, "both": SIGN_BOTH}[params.sign]
        self.ch_names = src.ch_names
        unit = src.units[0] if src.units else ""
        lag_desc = {"lag_samples": self.lag, "of": src.name}
        offsets = range(-self.pre, self.post + 1)
        self.outputs = {
            "events": StreamMeta(
                name=ctx.stream_name("events"), kind="evt", sfreq=0.0, dtype="event",
                source=f"spike_detect of {src.name}", event_id=dict(EVENT_ID), desc=lag_desc,
            ),
            "rates": StreamMeta(
                name=ctx.stream_name("rates"), kind="feat", sfreq=fs / self.bin_len,
                ch_names=(*(f"{c}:rate" for c in src.ch_names), "mua"), ch_types=("misc",) * (C + 1),
                units=("Hz",) * (C + 1), dtype="<f8", source=f"spike rates of {src.name}",
                desc={**lag_desc, "bin": self.bin_len},
            ),
            "snippets": StreamMeta(
                name=ctx.stream_name("snippets"), kind="feat", sfreq=0.0,
                ch_names=tuple(f"{k:+d}" for k in offsets), ch_types=("misc",) * (self.pre + self.post + 1),
                units=(unit,) * (self.pre + self.post + 1), dtype="<f4", source=f"spike snippets of {src.name}",
                desc={"pre": self.pre, "post": self.post, "rows": f"one per event of {ctx.stream_name('events')}, same order"},
            ),
        }
        # capacities: a channel yields at most one candidate every max(win + 1, 2) samples
        spacing = max(self.win + 1, 2)
        self._q_cap = C * (self.lag // spacing + 2)
        self._f_cap = C * (max(self.post - self.lag, 0) // spacing + 2)
        self._ring_len = self.pre + max(self.post, self.lag) + 2
        self.reset()

    @staticmethod
    def _steps(noise_tau_s: float | None, fs: float) -> tuple[float, float]:
        """Multiplicative up and down steps of the running median for time constant ``noise_tau_s``."""
        if noise_tau_s is None:
            return 1.0, 1.0
        eta = 1.0 / (_GAUSS_GAIN * noise_tau_s * fs)
        return math.exp(eta), math.exp(-eta)

    def update(self, params: SpikeDetectParams) -> None:
        """A new threshold, noise time constant or refractory period; all detection state stays."""
        self.params = params
        self.refr = _samples(params.refractory_ms, self.sfreq)
        self._up, self._down = self._steps(params.noise_tau_s, self.sfreq)
        if self._st[ST_ACTIVE]:  # as the kernel and _set_noise compute it, so a fresh run agrees
            if params.noise_tau_s is not None:
                self._thr[:] = (params.threshold / 0.6745) * self._noise
            else:
                self._thr[:] = (self._noise / 0.6745) * params.threshold
        self._bind()

    def _neighbours(self, params: SpikeDetectParams, src: StreamMeta, ctx: NodeContext) -> tuple[np.ndarray, str]:
        """The neighbour matrix (shape (C, C), bool) and how it was made, for the report."""
        C = src.n_channels
        if params.channel_positions_um is not None and params.probe_file is not None:
            raise ConfigError("set channel_positions_um or probe_file, not both")
        pos: Any = params.channel_positions_um
        where = "channel_positions_um"
        if pos is None and params.probe_file is not None:
            pos, where = probe_positions(ctx.resolve(params.probe_file)), f"probe_file {params.probe_file}"
        if pos is None and src.desc.get("positions_um") is not None:
            pos, where = src.desc["positions_um"], f"stream '{src.name}' desc.positions_um"
        arr = None
        if pos is not None:
            arr = np.asarray(pos, dtype=float)
            if arr.ndim != 2 or arr.shape[0] != C or arr.shape[1] not in (2, 3):
                raise ConfigError(f"{where} has shape {list(arr.shape)}; need [x, y] for each of the {C} channels of '{src.name}'")
        own = np.eye(C, dtype=np.bool_)
        if params.dedup_ms is None:
            return own, "off"
        if params.dedup_index_distance is not None:
            if params.dedup_radius_um is not None:
                raise ConfigError("set dedup_radius_um (geometry) or dedup_index_distance (channel order), not both")
            idx = np.arange(C)
            mode = f"index distance <= {params.dedup_index_distance}"
            msg = f"spike de-duplication by channel index (dedup_index_distance={params.dedup_index_distance}), as configured"
            log.info(msg + (f"; the positions in {where} are not used" if arr is not None else ""))
            return np.ascontiguousarray(np.abs(idx[:, None] - idx[None, :]) <= params.dedup_index_distance), mode
        if arr is None:
            if params.dedup_radius_um is not None:
                raise ConfigError(f"dedup_radius_um needs channel positions: set channel_positions_um or probe_file "
                                  f"(stream '{src.name}' has no desc.positions_um)")
            if C > 1:
                msg = (f"no channel positions for '{src.name}': spike de-duplication across channels is off (each channel "
                       "keeps its own refractory period); give channel_positions_um or probe_file to enable it")
                log.warning(msg)
                self.note(msg)
            return own, "off"
        radius = params.dedup_radius_um if params.dedup_radius_um is not None else DEFAULT_DEDUP_RADIUS_UM
        d = np.linalg.norm(arr[:, None, :] - arr[None, :, :], axis=2)
        return np.ascontiguousarray(d <= radius), f"radius {radius:g} um ({where})"

    def reset(self) -> None:
        C = self.n_channels
        ns = self._sos.shape[0]
        self._origin: int | None = None
        self._zi = np.zeros((2, ns, C), dtype=np.float32)
        self._last = np.zeros(C, dtype=np.float32)
        self._ring = np.zeros((self._ring_len, C), dtype=np.float32)
        self._init_buf = np.zeros((-(-self.n_init // self.init_stride), C), dtype=np.float32)
        self._noise = np.zeros(C)
        self._thr = np.full(C, np.inf)
        self._prev = np.full(C, 3, dtype=np.uint8)  # as if beyond: a crossing must come from inside
        self._cross = np.zeros(C, dtype=np.uint8)
        self._plist = np.zeros(C, dtype=np.int64)
        self._pend_end = np.full(C, -1, dtype=np.int64)
        self._pk_idx = np.zeros(C, dtype=np.int64)
        self._pk_val = np.zeros(C, dtype=np.float32)
        self._pk_sign = np.zeros(C, dtype=np.int8)
        self._quiet = np.full(C, -1, dtype=np.int64)
        self._counts = np.zeros(C, dtype=np.int64)
        self._q_p = np.zeros(self._q_cap, dtype=np.int64)
        self._q_c = np.zeros(self._q_cap, dtype=np.int64)
        self._q_a = np.zeros(self._q_cap, dtype=np.float32)
        self._q_sup = np.zeros(self._q_cap, dtype=np.bool_)
        self._f_p = np.zeros(self._f_cap, dtype=np.int64)
        self._f_c = np.zeros(self._f_cap, dtype=np.int64)
        self._st = np.zeros(N_STATE, dtype=np.int64)
        ev_cap = self._q_cap + 4096
        self._ev_p = np.zeros(ev_cap, dtype=np.int64)
        self._ev_c = np.zeros(ev_cap, dtype=np.int64)
        self._ev_a = np.zeros(ev_cap, dtype=np.float32)
        sn_cap = self._f_cap + self._q_cap + 4096
        self._snip = np.zeros((sn_cap, self.pre + self.post + 1), dtype=np.float32)
        self._sn_p = np.zeros(sn_cap, dtype=np.int64)
        self._rates = np.zeros((64, C + 1))
        self._n_out = np.zeros(3, dtype=np.int64)
        self._n_events = 0
        self._n_snippets = 0
        self._n_frames = 0
        self._bind()

    @property
    def noise_levels(self) -> np.ndarray:
        """Current noise level per channel (``median(|x|) / 0.6745``), NaN before initialisation."""
        if not self._st[ST_ACTIVE]:
            return np.full(self.n_channels, np.nan)
        return self._noise / 0.6745  # inf: flat during initialisation, never detects

    def warmup(self) -> None:
        dtype = np.float32 if self.inputs[0].dtype == "<f4" else np.float64
        rng = np.random.default_rng(0)
        x = (rng.standard_normal((self.n_init + self.lag + self.bin_len + self.post + 8, self.n_channels)) * 10).astype(dtype)
        x[self.n_init + 4, :] = -1000.0  # one detection on every channel
        self.process(Chunk(x, 0, 0.0, self.sfreq, []))
        self.reset()

    def _start(self, x0: np.ndarray) -> None:
        x0 = np.where(np.isfinite(x0), x0, 0.0).astype(np.float32)
        self._last[:] = x0
        self._zi[:] = self._zi0.T[:, :, None] * x0[None, None, :]  # (2, n_sections, n_channels)

    def _set_noise(self) -> None:
        med = np.median(np.abs(self._init_buf), axis=0)
        flat = med <= 0
        self._noise[:] = np.where(flat, np.inf, med)
        self._thr[:] = (self._noise / 0.6745) * self.params.threshold  # as SpikeInterface: noise_levels * threshold
        if flat.any():
            names = [self.ch_names[i] for i in np.nonzero(flat)[0][:8]]
            msg = f"{int(flat.sum())} channel(s) flat during noise initialisation never detect: {names}"
            log.warning(msg)
            self.note(msg)
        st = self._st
        st[ST_ACTIVE] = 1
        st[ST_NEXT_BIN] = self.n_init + self.bin_len - 1 + self.lag

    def _bind(self) -> None:
        """The kernel's arguments after ``x``, bound once (the arrays are updated in place)."""
        self._args = (
            self._sos, self._zi, self._last, self._ring, self._init_buf, self.init_stride, self.n_init,
            self._noise, self._thr,
            float(self.params.threshold), self._up, self._down, self.params.noise_tau_s is not None, self._sign,
            self.win, self.refr, self.dedup, self.dedup_s, self._neigh, self.pre, self.post, self.bin_len,
            self.sfreq / self.bin_len, self._prev, self._cross, self._plist, self._pend_end, self._pk_idx,
            self._pk_val, self._pk_sign, self._quiet, self._counts, self._q_p, self._q_c, self._q_a, self._q_sup,
            self._f_p, self._f_c, self._st, self._ev_p, self._ev_c, self._ev_a, self._snip, self._sn_p,
            self._rates, self._n_out,
        )

    def _run(self, x: np.ndarray) -> int:
        return detect_spikes(x, *self._args)

    def process(self, chunk: Chunk, port: int = 0) -> list | None:
        x = chunk.data
        n = x.shape[0]
        if n == 0:
            return None
        if x.dtype != np.float32 and x.dtype != np.float64:
            x = x.astype(np.float32)
        if self._origin is None:
            self._origin = chunk.first
            self._start(np.asarray(x[0]))
        n_out = self._n_out
        pos = detect_spikes(x, *self._args)
        if pos == n and self._st[ST_ACTIVE]:  # the common case: one call
            if n_out[0] == 0 and n_out[1] == 0 and n_out[2] == 0:
                return None
            return self._chunks(chunk, [self._take()])
        parts: list[tuple] = []
        while True:
            if not self._st[ST_ACTIVE] and self._st[ST_COUNT] == self.n_init:
                self._set_noise()
            elif n_out[0] or n_out[1] or n_out[2]:
                parts.append(self._take())  # an output buffer is full
            if pos == n:
                break
            pos += detect_spikes(x[pos:], *self._args)
        if n_out[0] or n_out[1] or n_out[2]:
            parts.append(self._take())
        return self._chunks(chunk, parts) if parts else None

    def _take(self) -> tuple:
        ne, ns, nr = (int(v) for v in self._n_out)
        out = (self._ev_p[:ne].copy(), self._ev_c[:ne].copy(), self._ev_a[:ne].copy(),
               self._snip[:ns].copy(), self._sn_p[:ns].copy(), self._rates[:nr].copy())
        self._n_out[:] = 0
        return out

    def _chunks(self, chunk: Chunk, parts: list) -> list | None:
        if len(parts) == 1:
            ev_p, ev_c, ev_a, snip, sn_p, rates = parts[0]
        else:
            ev_p, ev_c, ev_a, snip, sn_p, rates = (np.concatenate(a) for a in zip(*parts, strict=True))
        assert self._origin is not None  # set by the first process() call
        origin, fs = self._origin, self.sfreq
        out = []

        def time_of(count: np.ndarray | int) -> np.ndarray | float:
            return chunk.t0 + (origin + count - chunk.first) / fs

        if ev_p.size:
            ev = np.zeros(ev_p.size, dtype=EVENT_DTYPE)
            ev["index"] = origin + ev_p
            ev["time"] = time_of(ev_p)
            ev["code"] = np.where(ev_a < 0, EVENT_ID["spike_neg"], EVENT_ID["spike_pos"])
            ev["channel"] = ev_c
            ev["value"] = ev_a
            out.append(("events", Chunk(ev, self._n_events, float(ev["time"][0]), 0.0, chunk.trace)))
            self._n_events += ev_p.size
        if sn_p.size:
            out.append(("snippets", Chunk(snip, self._n_snippets, float(time_of(int(sn_p[0]))), 0.0, chunk.trace)))
            self._n_snippets += sn_p.size
        if rates.shape[0]:
            k0 = self._n_frames
            k1 = k0 + rates.shape[0] - 1
            last0 = self.n_init + (k0 + 1) * self.bin_len - 1
            last1 = self.n_init + (k1 + 1) * self.bin_len - 1
            extra = {"window": [origin + last1 - self.bin_len + 1, origin + last1], "of": self.inputs[0].name}
            out.append(("rates", Chunk(rates, k0, float(time_of(last0)), fs / self.bin_len, chunk.trace, extra)))
            self._n_frames = k1 + 1
        return out or None

    def status(self) -> str:
        st = self._st
        dedup = f"dedup removed {int(st[ST_SUPPRESSED])}" if self.dedup else "dedup off" + (
            " (no geometry)" if self.params.dedup_ms is not None and self.n_channels > 1 else "")
        return f"spikes {int(st[ST_KEPT])}, {dedup}"

    def report(self) -> dict:
        st = self._st
        noise = self.noise_levels
        return {
            "replaced_nonfinite": int(st[ST_BAD]),
            "detections": int(st[ST_KEPT]),
            "candidates": int(st[ST_CANDIDATES]),
            "dedup": self.dedup_mode,
            "suppressed_duplicates": int(st[ST_SUPPRESSED]),
            "dropped": int(st[ST_DROPPED]),
            "frames": self._n_frames,
            "noise_median": None if not st[ST_ACTIVE] else round(float(np.median(noise)), 4),
        }


# -- synthetic probe ----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SyntheticSpikesParams:
    """Parameters of :class:`SyntheticSpikes`. Amplitudes in ``unit``."""

    n_channels: int = param(64, ge=1, le=4096)
    sfreq: float = param(30000.0, ge=1000, le=200_000)
    chunk_size: int = param(300, ge=1, le=1_000_000, doc="samples per chunk")
    seed: int = param(0, ge=0)
    pitch_um: float = param(20.0, gt=0, doc="contact spacing of the linear probe")
    n_units: int = param(8, ge=0, le=10_000)
    rate_hz: float = param(10.0, ge=0, doc="mean firing rate of each unit")
    amplitude: tuple[float, float] = param((50.0, 120.0), ge=0, doc="range of trough amplitudes on a unit's peak channel")
    spatial_decay_um: float = param(25.0, gt=0, doc="amplitude falls as exp(-distance / spatial_decay_um)")
    noise: float = param(8.0, ge=0, doc="RMS of the white Gaussian noise")
    modulation_hz: float = param(0.25, ge=0, doc="firing rates are modulated sinusoidally at this frequency")
    modulation_depth: float = param(0.0, ge=0, le=1, doc="0: constant rates; 1: rates swing from 0 to twice the mean")
    duration_s: float | None = param(None, gt=0, doc="stop after this much signal (default: never)")
    unit: str = "uV"

    def __post_init__(self) -> None:
        if self.amplitude[0] > self.amplitude[1]:
            raise ConfigError(f"amplitude={list(self.amplitude)} must be [low, high]")


class SyntheticSpikes(GeneratorSource):
    """A linear probe with units, Poisson spike trains and Gaussian noise.

    Channels sit on a line every ``pitch_um``. Each unit has a position
    beside the probe, a trough amplitude on its peak channel and a
    biphasic template (a sharp trough then a slower positive lobe, 3 ms
    long) that decays as ``exp(-(d - d0) / spatial_decay_um)`` with the
    distance ``d`` to each contact (``d0`` to the nearest). Spike trains are
    (inhomogeneous) Poisson: candidates at twice the peak rate thinned to
    ``rate_hz (1 + modulation_depth sin(2 pi modulation_hz t))``. Random
    numbers are drawn per 4096-sample block from generators seeded by
    ``(seed, purpose, block)``, so the signal does not depend on the
    chunk size.

    Outputs
    -------
    ``<id>``
        The probe signal, float32, ``(n_times, n_channels)``; the stream's
        ``desc.positions_um`` gives each contact's [x, y].
    ``<id>.events``
        Ground truth: one event per spike at its trough sample, ``code``
        the unit number + 1 (labels ``unit<k>``), ``channel`` the unit's
        peak channel, ``value`` its trough amplitude (negative).
    """

    Params = SyntheticSpikesParams
    BLOCK = 4096

    def __init__(self, params: SyntheticSpikesParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        C = params.n_channels
        fs = params.sfreq
        if params.modulation_depth > 0 and not 0 < params.modulation_hz < fs / 2:
            raise ConfigError(f"modulation_hz={params.modulation_hz} must lie in (0, {fs / 2:g}) Hz when modulation_depth > 0")
        self.sfreq = fs
        self.n_channels = C
        rng = np.random.default_rng([params.seed, 9])
        U = params.n_units
        ys = np.arange(C) * params.pitch_um
        self.positions = np.stack([np.zeros(C), ys], axis=1)
        uy = rng.uniform(0, ys[-1], U) if C > 1 else np.zeros(U)
        ux = rng.uniform(5.0, 25.0, U)
        amp = rng.uniform(params.amplitude[0], params.amplitude[1], U)
        d = np.hypot(ux[:, None], uy[:, None] - ys[None, :])  # (U, C)
        spatial = np.exp(-(d - d.min(axis=1, keepdims=True)) / params.spatial_decay_um)
        self.peak_channel = np.argmin(d, axis=1) if U else np.zeros(0, dtype=int)
        self.amplitudes = amp
        self.pre_t = _samples(1.0, fs)
        self.post_t = _samples(2.0, fs)
        t_ms = (np.arange(-self.pre_t, self.post_t + 1)) * 1000.0 / fs
        widths = rng.uniform(0.8, 1.2, U)
        templates = np.empty((U, t_ms.size, C), dtype=np.float32)
        for u in range(U):
            w = widths[u]
            shape = -np.exp(-0.5 * (t_ms / (0.1 * w)) ** 2) + 0.25 * np.exp(-0.5 * ((t_ms - 0.3 * w) / (0.15 * w)) ** 2)
            shape /= -shape.min()
            templates[u] = (amp[u] * shape[:, None] * spatial[u][None, :]).astype(np.float32)
        self.templates = templates
        self._end = None if params.duration_s is None else int(round(params.duration_s * fs))
        names = tuple(f"ch{i:03d}" for i in range(C))
        self.event_id = {f"unit{u}": u + 1 for u in range(U)}
        self.outputs = {
            "": StreamMeta(
                name=ctx.stream_name(), kind="sig", sfreq=fs, ch_names=names, ch_types=("misc",) * C,
                units=(params.unit,) * C, dtype="<f4", source=f"synthetic_spikes seed={params.seed}",
                desc={"positions_um": self.positions.tolist(), "peak_channels": self.peak_channel.tolist()},
            ),
            "events": StreamMeta(
                name=ctx.stream_name("events"), kind="evt", sfreq=0.0, dtype="event",
                source=f"ground-truth spikes of {ctx.stream_name()}", event_id=dict(self.event_id),
            ),
        }
        self.reset()

    def reset(self) -> None:
        self._index = 0
        self._origin = 0.0
        self._n_events = 0
        self._cache: dict[tuple[int, int], Any] = {}
        self._prepared: list | None = None

    def _cached(self, purpose: int, b: int) -> Any:
        """Noise (purpose 0) or spikes (purpose 1) of block ``b``, kept for the next chunks."""
        key = (purpose, b)
        v: Any = self._cache.get(key)
        if v is None:
            if len(self._cache) > 12:
                self._cache.clear()
            v = self._noise_block(b) if purpose == 0 else self._spike_block(b)
            self._cache[key] = v
        return v

    def _noise_block(self, b: int) -> np.ndarray:
        rng = np.random.default_rng([self.params.seed, 0, b])
        return rng.standard_normal((self.BLOCK, self.n_channels), dtype=np.float32) * np.float32(self.params.noise)

    def _spike_block(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Spikes whose trough falls in block ``b``: (sample index, unit), sorted by index."""
        p = self.params
        rng = np.random.default_rng([p.seed, 1, b])
        U = p.n_units
        rmax = p.rate_hz * (1 + p.modulation_depth)
        counts = rng.poisson(rmax * self.BLOCK / self.sfreq, U)
        idx = b * self.BLOCK + rng.integers(0, self.BLOCK, int(counts.sum()))
        unit = np.repeat(np.arange(U), counts)
        keep_u = rng.random(idx.size)
        if p.modulation_depth > 0 and rmax > 0:
            rate = p.rate_hz * (1 + p.modulation_depth * np.sin(2 * np.pi * p.modulation_hz * idx / self.sfreq))
            sel = keep_u < rate / rmax
            idx, unit = idx[sel], unit[sel]
        order = np.lexsort((unit, idx))
        return idx[order], unit[order]

    def prefetch(self) -> None:
        if self._prepared is None and self._remaining() > 0:
            self._prepared = self._make(self._index, self._remaining())

    def read(self) -> list:
        n = self._remaining()
        out = self._prepared if self._prepared is not None else self._make(self._index, n)
        self._prepared = None
        self._index += n
        return out

    def generate(self, a: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Samples ``[a, a + n)`` and the ground truth (sample index, unit) of the spikes in it."""
        C = self.n_channels
        x = np.empty((n, C), dtype=np.float32)
        pos = 0
        while pos < n:
            b, off = divmod(a + pos, self.BLOCK)
            take = min(n - pos, self.BLOCK - off)
            x[pos:pos + take] = self._cached(0, b)[off:off + take]
            pos += take
        gt_i: list[np.ndarray] = []
        gt_u: list[np.ndarray] = []
        lo_b = max(0, (a - self.post_t) // self.BLOCK)
        hi_b = (a + n + self.pre_t) // self.BLOCK
        for b in range(lo_b, hi_b + 1):
            idx, unit = self._cached(1, b)
            sel = (idx + self.post_t >= a) & (idx - self.pre_t < a + n)
            for s, u in zip(idx[sel].tolist(), unit[sel].tolist(), strict=True):
                t_lo = s - self.pre_t
                lo, hi = max(a, t_lo), min(a + n, s + self.post_t + 1)
                x[lo - a:hi - a] += self.templates[u, lo - t_lo:hi - t_lo]
            inside = (idx >= a) & (idx < a + n)
            gt_i.append(idx[inside])
            gt_u.append(unit[inside])
        return x, np.concatenate(gt_i), np.concatenate(gt_u)

    def _make(self, a: int, n: int) -> list:
        x, gi, gu = self.generate(a, n)
        t0 = self._origin + a / self.sfreq
        out = [("", Chunk(x, a, t0, self.sfreq, []))]
        if gi.size:
            rows = [(int(i), self._origin + int(i) / self.sfreq, int(u) + 1, int(self.peak_channel[u]), 0.0,
                     -float(self.amplitudes[u]), f"unit{int(u)}") for i, u in zip(gi, gu, strict=True)]
            ev = make_events(rows)
            out.append(("events", Chunk(ev, self._n_events, float(ev["time"][0]), 0.0, [])))
            self._n_events += len(rows)
        return out
