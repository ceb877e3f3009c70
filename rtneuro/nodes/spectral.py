"""Spectral feature nodes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.fft
from scipy.signal import get_window

from ..errors import ConfigError, did_you_mean
from ..kernels.spectral import MODE_ABS, MODE_DB, MODE_LOG10, MODE_REL, sliding_bandpower
from ..messages import Chunk, StreamMeta
from .base import Node, NodeContext, param
from .buffers import RingBuffer

__all__ = ["Bandpower", "BandpowerParams", "DEFAULT_BANDS"]

DEFAULT_BANDS = {
    "delta": (1.0, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 12.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class BandpowerParams:
    """Parameters of :class:`Bandpower`."""

    bands: dict[str, tuple[float, float]] = param(dict(DEFAULT_BANDS), doc="name: [low, high] in Hz, edges inclusive")
    window_s: float = param(1.0, gt=0, doc="analysis window length")
    step_s: float = param(0.1, gt=0, doc="one feature frame every step_s seconds")
    nperseg: int | None = param(None, ge=8, doc="Welch segment length in samples (default: the whole window)")
    picks: list[str] | None = param(None, doc="channel names (default: all)")
    average: bool = param(False, doc="average the power over the picked channels")
    mode: Literal["abs", "rel", "log10", "db"] = param("db", doc="absolute, relative to the total, log10 or decibels")
    method: Literal["auto", "sliding", "fft"] = param("auto", doc="sliding DFT of the band bins, or an FFT per frame")
    resync_samples: int = param(65536, ge=1024, doc="sliding: recompute the bins exactly this often")

    def __post_init__(self) -> None:
        if not self.bands:
            raise ConfigError("bands must name at least one band")
        for name, (lo, hi) in self.bands.items():
            if not 0 <= lo < hi:
                raise ConfigError(f"band {name!r}: need 0 <= low < high, got [{lo}, {hi}]")


class Bandpower(Node):
    """Band power on sliding windows (Welch's method).

    Every ``step_s`` seconds of input, the last ``window_s`` seconds are split
    into Hann-tapered segments of ``nperseg`` samples with 50 % overlap
    (one segment by default), each detrended by its mean; the one-sided power
    spectral densities are averaged and summed over each band's bins times
    the bin width. Frame times are those of the window's last sample, so the
    output depends only on the samples, never on how they were chunked.

    Output: one row per frame, one column per (channel, band) named
    ``"<channel>:<band>"``, or per band when ``average`` is true.

    Two computations give the same result. ``sliding`` (the default when the
    window is one segment and the bands stay below Nyquist) keeps a sliding
    DFT of only the bins the bands need, updated sample by sample in a numba
    kernel, applies detrending and the Hann taper in the frequency domain at
    each frame, and recomputes the bins exactly every ``resync_samples``
    samples to bound rounding drift. It touches little memory per chunk,
    which is what matters on a core that has just woken up. ``fft`` takes an
    FFT of each (segment of the) window.

    Notes
    -----
    Welch, P. (1967) IEEE Trans. Audio Electroacoust. 15:70. The PSD equals
    ``scipy.signal.welch(x, fs, window="hann", nperseg, noverlap=nperseg // 2,
    detrend="constant", scaling="density")``.
    """

    Params = BandpowerParams
    input_kinds = ("sig",)

    def __init__(self, params: BandpowerParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        src = inputs[0]
        fs = src.sfreq
        if fs <= 0:
            raise ConfigError(f"stream '{src.name}' has no regular sampling rate")
        self.window = int(round(params.window_s * fs))
        self.step = int(round(params.step_s * fs))
        if self.window < 8 or self.step < 1:
            raise ConfigError(f"window_s={params.window_s} and step_s={params.step_s} give {self.window} and {self.step} samples at {fs:g} Hz; need a window of at least 8 samples")
        self.nperseg = params.nperseg or self.window
        if self.nperseg > self.window:
            raise ConfigError(f"nperseg={self.nperseg} exceeds the window of {self.window} samples")
        self.noverlap = self.nperseg // 2
        nyq = fs / 2
        for name, (lo, hi) in params.bands.items():
            if hi > nyq:
                raise ConfigError(f"band {name!r} [{lo}, {hi}] Hz goes beyond the Nyquist frequency {nyq:g} Hz of stream '{src.name}'")
        if params.picks is None:
            self.picks = np.arange(src.n_channels)
        else:
            missing = [p for p in params.picks if p not in src.ch_names]
            if missing:
                raise ConfigError(f"picks {missing} are not channels of stream '{src.name}'{did_you_mean(missing[0], src.ch_names)}")
            self.picks = np.array([src.ch_names.index(p) for p in params.picks])
        freqs = scipy.fft.rfftfreq(self.nperseg, 1 / fs)
        self.df = fs / self.nperseg
        self._band_matrix = np.zeros((len(params.bands), freqs.size))
        for i, (name, (lo, hi)) in enumerate(params.bands.items()):
            sel = (freqs >= lo) & (freqs <= hi)
            if not sel.any():
                raise ConfigError(f"band {name!r} [{lo}, {hi}] Hz holds no frequency bin at a resolution of {self.df:.3g} Hz; widen it or lengthen nperseg")
            self._band_matrix[i, sel] = self.df
        taper = get_window("hann", self.nperseg)
        self._taper = taper[:, None]
        # one-sided density scaling, as scipy.signal.welch
        scale = np.full(freqs.size, 2.0 / (fs * (taper**2).sum()))
        scale[0] /= 2
        if self.nperseg % 2 == 0:
            scale[-1] /= 2
        self._scale = scale[:, None]
        self._starts = np.arange(0, self.window - self.nperseg + 1, self.nperseg - self.noverlap)
        max_bin = int(np.nonzero(self._band_matrix.any(axis=0))[0].max())
        can_slide = self.nperseg == self.window and max_bin < self.nperseg // 2 - 1
        if params.method == "sliding" and not can_slide:
            raise ConfigError("method 'sliding' needs nperseg equal to the window and bands ending below Nyquist minus one bin; use 'fft' or 'auto'")
        self.method = "fft" if params.method == "fft" or not can_slide else "sliding"
        if self.method == "sliding":
            N = self.window
            K = max(max_bin + 2, 3)
            k = np.arange(K)
            self._W = np.exp(2j * np.pi * k / N)
            self._E = np.ascontiguousarray(np.exp(-2j * np.pi * np.outer(k, np.arange(N)) / N))
            self._K = K
            rows = [np.nonzero(r)[0] for r in self._band_matrix]
            self._band_lo = np.array([r.min() for r in rows], dtype=np.int64)
            self._band_hi = np.array([r.max() for r in rows], dtype=np.int64)
            self._scale_k = np.ascontiguousarray(scale[: K - 1])
            self._taper1 = np.ascontiguousarray(taper)
            self._mode_code = {"abs": MODE_ABS, "rel": MODE_REL, "log10": MODE_LOG10, "db": MODE_DB}[params.mode]
        band_names = list(params.bands)
        unit = src.units[0] if src.units else ""
        if params.average:
            names = tuple(band_names)
        else:
            names = tuple(f"{src.ch_names[c]}:{b}" for c in self.picks for b in band_names)
        units = {"abs": f"{unit}^2", "rel": "1", "log10": f"log10({unit}^2)", "db": f"dB re 1 {unit}^2"}[params.mode]
        self.outputs = {"": StreamMeta(
            name=ctx.stream_name(), kind="feat", sfreq=fs / self.step, ch_names=names,
            ch_types=("misc",) * len(names), units=(units,) * len(names), dtype="<f8",
            source=f"bandpower of {src.name}",
            desc={"window": self.window, "step": self.step, "nperseg": self.nperseg},
        )}
        self.sfreq_in = fs
        self.n_in = len(self.picks)
        self._picks = np.ascontiguousarray(self.picks, dtype=np.int64)
        self.n_features = len(names)
        self.reset()

    def reset(self) -> None:
        self._ring = RingBuffer(self.window, self.n_in)
        self._win = np.empty((self.window, self.n_in))
        self._next_end = self.window  # count of samples at which the next frame is due
        self._frames = 0
        self._origin: int | None = None  # stream index of the first sample seen
        if self.method == "sliding":
            self._sring = np.zeros((self.window, self.n_in))
            self._S = np.zeros((self.n_in, self._K), dtype=np.complex128)
            self._state = np.array([0, self.window, 0], dtype=np.int64)
            self._r_x = np.zeros((1, int(self._picks.max()) + 1))

    def warmup(self) -> None:
        if self.method == "sliding":
            x = np.random.default_rng(0).standard_normal((self.window + self.step, int(self._picks.max()) + 1))
            self._process_sliding(x)
            self.reset()
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                self._compute(np.random.default_rng(0).standard_normal((self.window, self.n_in)))

    def rehearse(self) -> None:
        """The sliding kernel on a copy of the state, emitting one frame."""
        if self.method != "sliding":
            return
        state = np.array([self.window - 1, self.window, 0], dtype=np.int64)
        out = np.empty((2, self.n_features))
        ends = np.empty(2, dtype=np.int64)
        sliding_bandpower(
            self._r_x, self._picks, self._sring.copy(), self._S.copy(), self._W, self._E, state, self.step,
            self.params.resync_samples, self._band_lo, self._band_hi, self._scale_k, self.df,
            self._taper1, self._mode_code, self.params.average, out, ends,
        )

    def _process_sliding(self, x: np.ndarray):
        max_frames = x.shape[0] // self.step + 1
        out = np.empty((max_frames, self.n_features))
        ends = np.empty(max_frames, dtype=np.int64)
        n = sliding_bandpower(
            x, self._picks, self._sring, self._S, self._W, self._E, self._state, self.step,
            self.params.resync_samples, self._band_lo, self._band_hi, self._scale_k, self.df,
            self._taper1, self._mode_code, self.params.average, out, ends,
        )
        return out[:n], ends[:n]

    def _compute(self, win: np.ndarray) -> np.ndarray:
        """Features of one window, shape (n_features,)."""
        psd = np.zeros((self._scale.shape[0], win.shape[1]))
        for s in self._starts:
            seg = win[s:s + self.nperseg]
            seg = (seg - seg.mean(axis=0)) * self._taper
            spec = scipy.fft.rfft(seg, axis=0)
            psd += spec.real**2 + spec.imag**2
        psd *= self._scale / len(self._starts)
        power = self._band_matrix @ psd  # (n_bands, n_channels)
        mode = self.params.mode
        if mode == "rel":
            total = psd[1:].sum(axis=0) * self.df
            power = power / np.where(total > 0, total, np.nan)
        if self.params.average:
            power = power.mean(axis=1)
        else:
            power = power.T
        if mode == "log10":
            power = np.log10(power)
        elif mode == "db":
            power = 10.0 * np.log10(power)
        return power.ravel()

    def process(self, chunk: Chunk, port: int = 0) -> Chunk | None:
        x = chunk.data
        n = x.shape[0]
        if n == 0:
            return None
        if self._origin is None:
            self._origin = chunk.first
        if self.method == "sliding":
            if x.dtype != np.float64:
                x = x.astype(np.float64)
            rows, ends = self._process_sliding(x)
            if rows.shape[0] == 0:
                return None
            return self._frames_chunk(chunk, rows, ends)
        if len(self.picks) != x.shape[1]:
            x = x[:, self.picks]
        rows = []
        ends = []
        pos = 0
        ring = self._ring
        while pos < n:
            take = min(n - pos, self._next_end - ring.written)
            ring.write(x[pos:pos + take])
            pos += take
            if ring.written == self._next_end:
                rows.append(self._compute(ring.read(self._next_end, self.window, self._win)))
                ends.append(self._next_end)
                self._next_end += self.step
        if not rows:
            return None
        return self._frames_chunk(chunk, np.array(rows), ends)

    def _frames_chunk(self, chunk: Chunk, rows: np.ndarray, ends) -> Chunk:
        origin = self._origin
        assert origin is not None  # set by the first process() call
        first_frame = self._frames
        self._frames += len(rows)
        # stream index and time of the last sample of the first and last window
        last_idx = origin + int(ends[-1]) - 1
        t_first = chunk.t0 + (origin + int(ends[0]) - 1 - chunk.first) / self.sfreq_in
        extra = {"window": [last_idx - self.window + 1, last_idx], "of": self.inputs[0].name}
        return Chunk(rows, first_frame, t_first, self.sfreq_in / self.step, chunk.trace, extra)
