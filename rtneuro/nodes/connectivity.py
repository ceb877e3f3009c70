"""Connectivity feature nodes: coherence and phase coupling between channel pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.fft

from .._lazy import lazy
from ..errors import ConfigError, did_you_mean
from ..kernels.connectivity import MEASURE_CODES, pair_connectivity, tapered_segments
from ..messages import Chunk, StreamMeta
from .base import Node, NodeContext, frames_chunk, param, regular_rate, window_and_step
from .buffers import RingBuffer
from .spectral import DEFAULT_BANDS

signal = lazy("scipy.signal")  # imported when a filter is designed (rtneuro/_lazy.py)

__all__ = ["Coherence", "CoherenceParams", "MEASURES", "resolve_pairs"]

Measure = Literal["coh", "imcoh", "plv", "pli", "wpli"]
MEASURES: tuple[str, ...] = tuple(MEASURE_CODES)


def _suggest(name: str, names: Sequence[str]) -> str:
    """``did_you_mean``, trying a case-insensitive match first (EDF files spell 'Po7', users 'PO7')."""
    same = [n for n in names if n.lower() == name.lower()]
    return f" (did you mean '{same[0]}'?)" if same else did_you_mean(name, names)


def resolve_pairs(spec: str | list, src: StreamMeta, ordered: bool = False) -> list[tuple[str, str]]:
    """Channel pairs of ``src``: ``'all'`` (every ``i < j``) or ``[[x, y], ...]`` checked by name (a pair listed
    twice, or a channel with itself, is an error; with ``ordered``, ``[x, y]`` and ``[y, x]`` are two pairs)."""
    names = list(src.ch_names)
    if spec == "all":
        if len(names) < 2:
            raise ConfigError(f"stream '{src.name}' has {len(names)} channel(s); pairs need at least two")
        return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]
    pairs = [(str(p[0]), str(p[1])) for p in spec]
    if not pairs:
        raise ConfigError("pairs is empty; list [x, y] channel pairs or use 'all'")
    seen: set = set()
    for x, y in pairs:
        for c in (x, y):
            if c not in names:
                raise ConfigError(f"pair [{x}, {y}]: {c!r} is not a channel of stream '{src.name}'{_suggest(c, names)}")
        if x == y:
            raise ConfigError(f"pair [{x}, {y}] joins a channel to itself; name two channels")
        key = (x, y) if ordered else frozenset((x, y))
        if key in seen:
            raise ConfigError(f"pair [{x}, {y}] is listed twice")
        seen.add(key)
    return pairs


@dataclass(frozen=True, slots=True, kw_only=True)
class CoherenceParams:
    """Parameters of :class:`Coherence`."""

    pairs: Literal["all"] | list[tuple[str, str]] = param("all", doc="[[x, y], ...] by channel name, or 'all' (every i < j)")
    measures: list[Measure] = param(["coh"], doc="any of coh, imcoh, plv, pli, wpli")
    bands: dict[str, tuple[float, float]] = param(dict(DEFAULT_BANDS), doc="name: [low, high] in Hz, edges inclusive")
    window_s: float = param(1.0, gt=0, doc="analysis window length")
    step_s: float = param(0.1, gt=0, doc="one frame every step_s seconds")
    nperseg: int | None = param(None, ge=8, doc="segment length in samples (default: a quarter of the window)")

    def __post_init__(self) -> None:
        if not self.bands:
            raise ConfigError("bands must name at least one band")
        for name, (lo, hi) in self.bands.items():
            if not 0 <= lo < hi:
                raise ConfigError(f"band {name!r}: need 0 <= low < high, got [{lo}, {hi}]")
        if not self.measures:
            raise ConfigError(f"measures must name at least one of {list(MEASURES)}")
        if len(set(self.measures)) != len(self.measures):
            raise ConfigError(f"measures {self.measures} lists a measure twice")


class Coherence(Node):
    """Coherence and phase coupling between channel pairs on sliding windows.

    Every ``step_s`` seconds of input, the last ``window_s`` seconds are cut
    into segments of ``nperseg`` samples with 50 % overlap, aligned to the
    window's end (the newest sample is always in the last segment; when the
    hop does not divide ``window - nperseg``, the oldest few samples are not
    used). Each segment has its mean removed and a periodic Hann taper
    applied; one ``scipy.fft.rfft`` over all segments and channels gives the
    Fourier coefficients, of which only the bins inside the bands are kept.
    A numba kernel then accumulates, for each pair and bin, the cross-spectra
    over the segments and computes the measures (see
    :func:`rtneuro.kernels.connectivity.pair_connectivity`). A band's value is
    the arithmetic mean of the measure's per-bin values over the bins ``f``
    with ``low <= f <= high`` (the same bins as ``bandpower``).

    Output: one row per frame, one column per (pair, band, measure) named
    ``"<x>-<y>:<band>:<measure>"``. Frame times are those of the window's
    last sample; frames are due at fixed sample counts, so any split of the
    input gives bit-identical output. A channel with a non-finite sample in
    the analysed part of a window makes every value of its pairs NaN for
    that frame (counted); nothing is carried from frame to frame, so later
    frames are unaffected once the bad samples have left the window.

    Notes
    -----
    ``coh`` equals ``scipy.signal.coherence(x, y, fs, window="hann", nperseg,
    noverlap=nperseg // 2, detrend="constant")`` averaged over the band's
    bins. ``imcoh``, ``plv``, ``pli`` and ``wpli`` follow
    ``mne_connectivity.spectral_connectivity_epochs`` with the segments as
    epochs (cross-spectrum ``X conj(Y)``). References: Welch (1967) IEEE
    Trans. Audio Electroacoust. 15:70; Nolte et al. (2004) Clin Neurophysiol
    115:2292; Lachaux et al. (1999) Hum Brain Mapp 8:194; Stam et al. (2007)
    Hum Brain Mapp 28:1178; Vinck et al. (2011) NeuroImage 55:1548.
    """

    Params = CoherenceParams
    input_kinds = ("sig",)

    def __init__(self, params: CoherenceParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        src = inputs[0]
        fs = regular_rate(src, "coherence")
        self.window, self.step = window_and_step(params.window_s, params.step_s, fs, 32)
        self.nperseg = params.nperseg or self.window // 4
        if self.nperseg > self.window:
            raise ConfigError(f"nperseg={self.nperseg} exceeds the window of {self.window} samples (window_s={params.window_s} at {fs:g} Hz); lower nperseg or lengthen window_s")
        hop = self.nperseg - self.nperseg // 2
        n_seg = (self.window - self.nperseg) // hop + 1
        if n_seg < 2:
            raise ConfigError(f"nperseg={self.nperseg} leaves one segment in the window of {self.window} samples, where every measure is 1 by construction; use nperseg <= {(2 * self.window) // 3}")
        # segments aligned to the end of the window
        self.used = (n_seg - 1) * hop + self.nperseg
        self._starts = np.ascontiguousarray(self.window - self.used + hop * np.arange(n_seg), dtype=np.int64)
        nyq = fs / 2
        for name, (lo, hi) in params.bands.items():
            if hi > nyq:
                raise ConfigError(f"band {name!r} [{lo}, {hi}] Hz goes beyond the Nyquist frequency {nyq:g} Hz of stream '{src.name}'")
        freqs = scipy.fft.rfftfreq(self.nperseg, 1 / fs)
        self.df = fs / self.nperseg
        band_sel = []
        for name, (lo, hi) in params.bands.items():
            sel = np.nonzero((freqs >= lo) & (freqs <= hi))[0]
            if sel.size == 0:
                raise ConfigError(f"band {name!r} [{lo}, {hi}] Hz holds no frequency bin at a resolution of {self.df:.3g} Hz (nperseg={self.nperseg}); widen it or raise nperseg")
            band_sel.append(sel)
        self.bins = np.unique(np.concatenate(band_sel))  # rfft bins used
        self.freqs = freqs[self.bins]
        pos = {int(k): n for n, k in enumerate(self.bins)}
        self._band_bins = np.array([pos[int(k)] for sel in band_sel for k in sel], dtype=np.int64)
        self._band_ptr = np.cumsum([0] + [sel.size for sel in band_sel]).astype(np.int64)

        names = list(src.ch_names)
        pairs = resolve_pairs(params.pairs, src)
        used = sorted({names.index(c) for p in pairs for c in p})
        self._cols = np.array(used, dtype=np.int64)
        self._all_cols = used == list(range(len(names)))
        col_of = {c: n for n, c in enumerate(used)}
        self._pair_i = np.array([col_of[names.index(x)] for x, _ in pairs], dtype=np.int64)
        self._pair_j = np.array([col_of[names.index(y)] for _, y in pairs], dtype=np.int64)
        self.pairs = pairs
        self._measures = np.array([MEASURE_CODES[m] for m in params.measures], dtype=np.int64)
        self._taper = np.ascontiguousarray(signal.get_window("hann", self.nperseg))  # periodic
        band_names = list(params.bands)
        out_names = tuple(f"{x}-{y}:{b}:{m}" for x, y in pairs for b in band_names for m in params.measures)
        self.n_in = len(used)
        self.n_features = len(out_names)
        self.sfreq_in = fs
        self.outputs = {"": StreamMeta(
            name=ctx.stream_name(), kind="feat", sfreq=fs / self.step, ch_names=out_names,
            ch_types=("misc",) * len(out_names), units=("1",) * len(out_names),
            dtype="<f8", source=f"coherence of {src.name}",
            desc={"window": self.window, "step": self.step, "nperseg": self.nperseg, "segments": n_seg,
                  "used": self.used, "bins_hz": [float(f) for f in self.freqs]},
        )}
        self.reset()

    def reset(self) -> None:
        n_seg = self._starts.size
        self._ring = RingBuffer(self.window, self.n_in)
        self._win = np.empty((self.window, self.n_in))
        self._segs = np.empty((n_seg, self.nperseg, self.n_in))
        self._bad = np.zeros(self.n_in, dtype=np.bool_)
        self._psd = np.empty((self.bins.size, self.n_in))
        self._vals = np.empty((self._measures.size, self.bins.size))
        self._next_end = self.window  # sample count at which the next frame is due
        self._frames = 0
        self._origin: int | None = None  # stream index of the first sample seen
        self.n_nonfinite_frames = 0  # frames with at least one bad channel
        self.n_nonfinite_channel_frames = 0  # (frame, channel) with a non-finite sample
        self.n_nan_values = 0  # output values set to NaN because of bad input

    def warmup(self) -> None:
        rng = np.random.default_rng(0)
        self._compute(rng.standard_normal((self.window, self.n_in)), np.empty(self.n_features))
        self.reset()

    def _compute(self, win: np.ndarray, out: np.ndarray) -> None:
        """Features of one window (window, n_in) into ``out`` (n_features,)."""
        n_bad = tapered_segments(win, self._starts, self._taper, self._bad, self._segs)
        spec = scipy.fft.rfft(self._segs, axis=1)
        F = np.ascontiguousarray(spec[:, self.bins, :])
        pair_connectivity(F, self._pair_i, self._pair_j, self._bad, self._band_bins, self._band_ptr,
                          self._measures, self._psd, self._vals, out)
        if n_bad:
            self.n_nonfinite_frames += 1
            self.n_nonfinite_channel_frames += n_bad
            hit = self._bad[self._pair_i] | self._bad[self._pair_j]
            self.n_nan_values += int(hit.sum()) * (self.n_features // self._pair_i.size)

    def process(self, chunk: Chunk, port: int = 0) -> Chunk | None:
        x = chunk.data
        n = x.shape[0]
        if n == 0:
            return None
        if self._origin is None:
            self._origin = chunk.first
        if not self._all_cols:
            x = x[:, self._cols]
        n_frames = self._ring.frames_due(n, self._next_end, self.step)
        if n_frames == 0:
            self._ring.write(x)
            return None
        rows = np.empty((n_frames, self.n_features))
        ends, self._next_end = self._ring.write_windows(x, self._next_end, self.step, self._win,
                                                        lambda f, w: self._compute(w, rows[f]))
        assert len(ends) == n_frames
        return self._frames_chunk(chunk, rows, ends)

    def _frames_chunk(self, chunk: Chunk, rows: np.ndarray, ends: list[int]) -> Chunk:
        origin = self._origin
        assert origin is not None  # set by the first process() call
        first_frame = self._frames
        self._frames += len(rows)
        return frames_chunk(chunk, rows, ends, origin=origin, first_frame=first_frame, window=self.window,
                            step=self.step, fs=self.sfreq_in, of=self.inputs[0].name)

    def report(self) -> dict:
        return {"frames": self._frames, "nonfinite_frames": self.n_nonfinite_frames,
                "nonfinite_channel_frames": self.n_nonfinite_channel_frames, "nan_values": self.n_nan_values}
