"""Spectral feature nodes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.fft

from .._lazy import lazy
from ..errors import ConfigError, did_you_mean
from ..kernels.envelope import (
    DETECT_HILBERT,
    DETECT_RECTIFY,
    SMOOTH_BOXCAR,
    SMOOTH_EXP,
    SMOOTH_NONE,
    envelope,
    hilbert_fir,
)
from ..kernels.spectral import (
    MODE_ABS,
    MODE_DB,
    MODE_LOG10,
    MODE_REL,
    band_sums_of_squares,
    finish_rows,
    hold_nonfinite,
    sliding_bandpower,
)
from ..messages import Chunk, StreamMeta
from .base import (
    Node,
    NodeContext,
    frames_chunk,
    param,
    regular_rate,
    resolve_picks,
    window_and_step,
)
from .buffers import RingBuffer

signal = lazy("scipy.signal")  # imported when a filter is designed (rtneuro/_lazy.py)

__all__ = ["Bandpower", "BandpowerParams", "Envelope", "EnvelopeParams", "DEFAULT_BANDS"]

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
    method: Literal["auto", "sliding", "fft", "multitaper"] = param(
        "auto", doc="Welch by a sliding DFT of the band bins or an FFT per frame, or DPSS multitaper")
    resync_samples: int = param(65536, ge=1024, doc="sliding: recompute the bins exactly this often")
    bandwidth: float | None = param(None, gt=0, doc="multitaper: full bandwidth in Hz, as MNE's (default 8 / window_s)")
    ratios: dict[str, tuple[str, str]] = param({}, doc="name: [numerator band, denominator band], added as columns")

    def __post_init__(self) -> None:
        if not self.bands:
            raise ConfigError("bands must name at least one band")
        for name, (lo, hi) in self.bands.items():
            if not 0 <= lo < hi:
                raise ConfigError(f"band {name!r}: need 0 <= low < high, got [{lo}, {hi}]")
        for name, pair in self.ratios.items():
            if name in self.bands:
                raise ConfigError(f"ratio {name!r} has the name of a band; rename it (e.g. '{pair[0]}/{pair[1]}')")
            for band in pair:
                if band not in self.bands:
                    raise ConfigError(f"ratio {name!r}: {band!r} is not a band{did_you_mean(band, self.bands)}; bands: {', '.join(self.bands)}")
        if self.bandwidth is not None and self.method != "multitaper":
            raise ConfigError(f"bandwidth applies to method 'multitaper' only (method is {self.method!r})")
        if self.nperseg is not None and self.method == "multitaper":
            raise ConfigError("nperseg applies to Welch only: method 'multitaper' tapers the whole window")


class Bandpower(Node):
    """Band power on sliding windows: Welch's method or DPSS multitaper.

    Every ``step_s`` seconds of input, the last ``window_s`` seconds are
    analysed and the one-sided power spectral density is summed over each
    band's bins (edges inclusive) times the bin width. Frame times are those
    of the window's last sample, so the output depends only on the samples,
    never on how they were chunked.

    Output: one row per frame; per picked channel one column per band
    ``"<channel>:<band>"`` followed by one per ratio ``"<channel>:<ratio>"``,
    or with ``average`` the bands then the ratios without a channel prefix.
    ``mode`` applies to every column: band power absolute, relative to the
    total power over (0, Nyquist], log10 or decibels; a ratio is computed
    from absolute powers (channel-averaged ones with ``average``) and then
    takes the logarithm of the mode (``log10`` / ``db``: log of the ratio).

    Methods
    -------
    ``sliding`` (Welch, the default when the window is one segment and the
    bands stay below Nyquist) keeps a sliding DFT of only the bins the bands
    need, updated sample by sample in a numba kernel, applies detrending and
    the Hann taper in the frequency domain at each frame, and recomputes the
    bins exactly every ``resync_samples`` samples to bound rounding drift.
    ``fft`` (Welch) takes an FFT of each Hann-tapered, mean-removed segment
    of ``nperseg`` samples with 50 % overlap and averages them.
    ``multitaper`` projects the mean-removed window on the DPSS tapers times
    the cosines and sines of only the bins the bands need (one matrix
    product, the scaling folded into the matrix), then sums squares per band;
    when the bands span more bins than ``3 log2(window)``, an FFT of each
    tapered window (``numpy.fft.rfft``) is cheaper and is used instead.

    Non-finite input samples are replaced by the channel's last finite value
    and counted (``report()["replaced_nonfinite"]``), whatever the method.

    Notes
    -----
    Welch, P. (1967) IEEE Trans. Audio Electroacoust. 15:70. The Welch PSD
    equals ``scipy.signal.welch(x, fs, window="hann", nperseg,
    noverlap=nperseg // 2, detrend="constant", scaling="density")``.

    Thomson, D. J. (1982) Proc. IEEE 70:1055; Slepian, D. (1978) Bell Syst.
    Tech. J. 57:1371. The multitaper PSD equals
    ``mne.time_frequency.psd_array_multitaper(x, sfreq, fmin, fmax,
    bandwidth, adaptive=False, low_bias=True, normalization="full")``: the
    same tapers (``scipy.signal.windows.dpss(N, bandwidth * N / (2 sfreq),
    int(bandwidth * N / sfreq), sym=False)``, kept where the concentration
    ratio exceeds 0.9), eigenvalue weights, DC and Nyquist halving, and bin
    set (``rfftfreq`` bins with ``low <= f <= high``).
    """

    Params = BandpowerParams
    input_kinds = ("sig",)

    def __init__(self, params: BandpowerParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        src = inputs[0]
        fs = regular_rate(src, "band power")
        self.window, self.step = window_and_step(params.window_s, params.step_s, fs, 8)
        self.nperseg = params.nperseg or self.window
        if self.nperseg > self.window:
            raise ConfigError(f"nperseg={self.nperseg} exceeds the window of {self.window} samples")
        self.noverlap = self.nperseg // 2
        nyq = fs / 2
        for name, (lo, hi) in params.bands.items():
            if hi > nyq:
                raise ConfigError(f"band {name!r} [{lo}, {hi}] Hz goes beyond the Nyquist frequency {nyq:g} Hz of stream '{src.name}'")
        self.picks = np.array(resolve_picks(params.picks, src), dtype=np.int64)
        freqs = scipy.fft.rfftfreq(self.nperseg, 1 / fs)
        self.df = fs / self.nperseg
        self._band_matrix = np.zeros((len(params.bands), freqs.size))
        for i, (name, (lo, hi)) in enumerate(params.bands.items()):
            sel = (freqs >= lo) & (freqs <= hi)
            if not sel.any():
                raise ConfigError(f"band {name!r} [{lo}, {hi}] Hz holds no frequency bin at a resolution of {self.df:.3g} Hz; widen it or lengthen {'window_s' if params.method == 'multitaper' else 'nperseg'}")
            self._band_matrix[i, sel] = self.df
        band_names = list(params.bands)
        self._r_num = np.array([band_names.index(a) for a, _ in params.ratios.values()], dtype=np.int64)
        self._r_den = np.array([band_names.index(b) for _, b in params.ratios.values()], dtype=np.int64)
        self._mode_code = {"abs": MODE_ABS, "rel": MODE_REL, "log10": MODE_LOG10, "db": MODE_DB}[params.mode]
        taper = signal.get_window("hann", self.nperseg)
        self._taper = taper[:, None]
        # one-sided density scaling, as scipy.signal.welch
        scale = np.full(freqs.size, 2.0 / (fs * (taper**2).sum()))
        scale[0] /= 2
        if self.nperseg % 2 == 0:
            scale[-1] /= 2
        self._scale = scale[:, None]
        self._starts = np.arange(0, self.window - self.nperseg + 1, self.nperseg - self.noverlap)
        band_bins = [np.nonzero(r)[0] for r in self._band_matrix]
        self._band_lo = np.array([r.min() for r in band_bins], dtype=np.int64)
        self._band_hi = np.array([r.max() for r in band_bins], dtype=np.int64)
        max_bin = int(self._band_hi.max())
        can_slide = self.nperseg == self.window and max_bin < self.nperseg // 2 - 1
        if params.method == "sliding" and not can_slide:
            raise ConfigError("method 'sliding' needs nperseg equal to the window and bands ending below Nyquist minus one bin; use 'fft' or 'auto'")
        if params.method == "multitaper":
            self.method = "multitaper"
            self._design_multitaper(params, fs)
        else:
            self.method = "fft" if params.method == "fft" or not can_slide else "sliding"
        if self.method == "sliding":
            N = self.window
            K = max(max_bin + 2, 3)
            k = np.arange(K)
            self._W = np.exp(2j * np.pi * k / N)
            self._E = np.ascontiguousarray(np.exp(-2j * np.pi * np.outer(k, np.arange(N)) / N))
            self._K = K
            self._scale_k = np.ascontiguousarray(scale[: K - 1])
            self._taper1 = np.ascontiguousarray(taper)
        unit = src.units[0] if src.units else ""
        ratio_names = list(params.ratios)
        if params.average:
            names = tuple(band_names + ratio_names)
        else:
            names = tuple(f"{src.ch_names[c]}:{b}" for c in self.picks for b in band_names + ratio_names)
        band_unit = {"abs": f"{unit}^2", "rel": "1", "log10": f"log10({unit}^2)", "db": f"dB re 1 {unit}^2"}[params.mode]
        ratio_unit = {"abs": "1", "rel": "1", "log10": "log10(1)", "db": "dB"}[params.mode]
        per_block = [band_unit] * len(band_names) + [ratio_unit] * len(ratio_names)
        units = tuple(per_block * (1 if params.average else len(self.picks)))
        desc = {"window": self.window, "step": self.step, "method": self.method}
        if self.method == "multitaper":
            desc.update(n_tapers=int(self._n_tapers), bandwidth=float(self.bandwidth))
        else:
            desc["nperseg"] = self.nperseg
        self.outputs = {"": StreamMeta(
            name=ctx.stream_name(), kind="feat", sfreq=fs / self.step, ch_names=names,
            ch_types=("misc",) * len(names), units=units, dtype="<f8",
            source=f"bandpower ({self.method}) of {src.name}", desc=desc,
        )}
        self.sfreq_in = fs
        self.n_in = len(self.picks)
        self._picks = np.ascontiguousarray(self.picks, dtype=np.int64)
        self.n_features = len(names)
        self.reset()

    def _design_multitaper(self, params: BandpowerParams, fs: float) -> None:
        """The projection matrix: DPSS taper x cosine/sine of each needed bin, scaled, mean-free."""
        N = self.window
        bandwidth = params.bandwidth if params.bandwidth is not None else 8.0 * fs / N
        half_nbw = bandwidth * N / (2.0 * fs)
        if half_nbw < 0.5:
            raise ConfigError(f"bandwidth={bandwidth:g} Hz is narrower than the {N}-sample window resolves; use at least {fs / N:.4g} Hz")
        tapers, eig = signal.windows.dpss(N, half_nbw, int(2 * half_nbw), sym=False, norm=None, return_ratios=True)
        tapers, eig = np.atleast_2d(tapers), np.atleast_1d(eig)
        keep = eig > 0.9  # low_bias, as MNE
        if not keep.any():
            keep = eig == eig.max()
        tapers, eig = tapers[keep], eig[keep]
        T = len(eig)
        k0, k1 = int(self._band_lo.min()), int(self._band_hi.max())
        k = np.arange(k0, k1 + 1)
        m = np.arange(N)
        phase = 2 * np.pi * ((k[:, None] * m[None, :]) % N) / N  # (n_bins, N), exact integer reduction
        # |X_jk|^2 weights: 2 lambda_j / (sum lambda fs) per bin, halved at DC and Nyquist, times df
        half = np.where((k == 0) | ((N % 2 == 0) & (k == N // 2)), 0.5, 1.0)
        gain = np.sqrt(2.0 * eig[None, :] / (eig.sum() * fs) * half[:, None] * self.df)  # (n_bins, T)
        rows = np.empty((k.size, T, 2, N))  # (bin, taper, cos/sin, sample)
        rows[:, :, 0, :] = gain[:, :, None] * tapers[None, :, :] * np.cos(phase)[:, None, :]
        rows[:, :, 1, :] = gain[:, :, None] * tapers[None, :, :] * -np.sin(phase)[:, None, :]
        A = rows.reshape(k.size * T * 2, N)
        A -= A.mean(axis=1, keepdims=True)  # the window's mean removed (MNE's remove_dc)
        self._A = np.ascontiguousarray(A)
        # The projection costs 2 T N per bin and channel, an FFT of each tapered
        # window about T N log2(N) in all: measured on one core (64 ch, N = 1000,
        # 3 tapers, 45 bins) they break even near 40 bins.
        self._mt_gemm = k.size <= 3 * np.log2(N)
        self._k0 = k0
        self._bin_weight = (2.0 * eig / (eig.sum() * fs) * self.df)[:, None, None] * half[None, :, None]
        self._row_lo = np.ascontiguousarray((self._band_lo - k0) * 2 * T, dtype=np.int64)
        self._row_hi = np.ascontiguousarray((self._band_hi - k0 + 1) * 2 * T, dtype=np.int64)
        self._tapers = tapers
        self._mt_weights = eig / (eig.sum() * fs) * self.df  # for the total power (relative mode)
        self._n_tapers = T
        self.bandwidth = bandwidth

    def reset(self) -> None:
        self._ring = RingBuffer(self.window, self.n_in)
        self._win = np.empty((self.window, self.n_in))
        self._last = np.zeros(self.n_in)
        self._n_replaced = 0
        self._next_end = self.window  # count of samples at which the next frame is due
        self._frames = 0
        self._origin: int | None = None  # stream index of the first sample seen
        if self.method == "sliding":
            self._sring = np.zeros((self.window, self.n_in))
            self._S = np.zeros((self.n_in, self._K), dtype=np.complex128)
            self._state = np.array([0, self.window, 0, 0], dtype=np.int64)
            self._r_x = np.zeros((1, int(self._picks.max()) + 1))
        elif self.method == "multitaper":
            self._proj = np.empty((self._A.shape[0], self.n_in))
            self._mt_d = np.empty((self.window, self.n_in))
            self._mt_y = np.empty((self._n_tapers, self.window, self.n_in))
            self._mt_spec = np.empty((self._n_tapers, self.window // 2 + 1, self.n_in), dtype=np.complex128)

    def warmup(self) -> None:
        x = np.random.default_rng(0).standard_normal((self.window + self.step, int(self._picks.max()) + 1))
        self.process(Chunk(x, 0, 0.0, self.sfreq_in, []))
        self.reset()

    def rehearse(self) -> None:
        """The sliding kernel on a copy of the state, emitting one frame."""
        if self.method != "sliding":
            return
        state = np.array([self.window - 1, self.window, 0, 0], dtype=np.int64)
        out = np.empty((2, self.n_features))
        ends = np.empty(2, dtype=np.int64)
        sliding_bandpower(
            self._r_x, self._picks, self._sring.copy(), self._S.copy(), self._W, self._E, state, self._last.copy(),
            self.step, self.params.resync_samples, self._band_lo, self._band_hi, self._scale_k, self.df,
            self._taper1, self._mode_code, self.params.average, self._r_num, self._r_den, out, ends,
        )

    def _process_sliding(self, x: np.ndarray):
        max_frames = x.shape[0] // self.step + 1
        out = np.empty((max_frames, self.n_features))
        ends = np.empty(max_frames, dtype=np.int64)
        n = sliding_bandpower(
            x, self._picks, self._sring, self._S, self._W, self._E, self._state, self._last, self.step,
            self.params.resync_samples, self._band_lo, self._band_hi, self._scale_k, self.df,
            self._taper1, self._mode_code, self.params.average, self._r_num, self._r_den, out, ends,
        )
        return out[:n], ends[:n]

    def _welch(self, win: np.ndarray, power: np.ndarray, total: np.ndarray) -> None:
        """Welch band power of one window (N, C) into ``power`` (B, C) and ``total`` (C,)."""
        psd = np.zeros((self._scale.shape[0], win.shape[1]))
        for s in self._starts:
            seg = win[s:s + self.nperseg]
            seg = (seg - seg.mean(axis=0)) * self._taper
            spec = scipy.fft.rfft(seg, axis=0)
            psd += spec.real**2 + spec.imag**2
        psd *= self._scale / len(self._starts)
        power[:] = self._band_matrix @ psd
        if self._mode_code == MODE_REL:
            total[:] = psd[1:].sum(axis=0) * self.df

    def _multitaper(self, win: np.ndarray, power: np.ndarray, total: np.ndarray) -> None:
        """Multitaper band power of one window (N, C) into ``power`` (B, C) and ``total`` (C,)."""
        # scratch buffers are reused: fresh megabyte arrays cost page faults on every frame
        y = self._mt_y
        if self._mt_gemm:
            np.matmul(self._A, win, out=self._proj)
            band_sums_of_squares(self._proj, self._row_lo, self._row_hi, power)
        else:
            np.multiply(self._tapers[:, :, None], np.subtract(win, win.mean(axis=0), out=self._mt_d)[None], out=y)
            np.fft.rfft(y, axis=1, out=self._mt_spec)
            spec = self._mt_spec[:, self._k0:self._k0 + self._bin_weight.shape[1]]
            psd = (self._bin_weight * (spec.real**2 + spec.imag**2)).sum(axis=0)  # (n_bins, C) times df
            for b in range(power.shape[0]):
                power[b] = psd[self._band_lo[b] - self._k0:self._band_hi[b] - self._k0 + 1].sum(axis=0)
        if self._mode_code == MODE_REL:
            # total one-sided power over bins 1..N/2 by Parseval, per taper
            if self._mt_gemm:
                np.multiply(self._tapers[:, :, None], np.subtract(win, win.mean(axis=0), out=self._mt_d)[None], out=y)
            x0 = y.sum(axis=1)
            total[:] = self._mt_weights @ (self.window * (y * y).sum(axis=1) - x0 * x0)

    @property
    def n_replaced(self) -> int:
        return int(self._state[3]) if self.method == "sliding" else self._n_replaced

    def process(self, chunk: Chunk, port: int = 0) -> Chunk | None:
        x = chunk.data
        n = x.shape[0]
        if n == 0:
            return None
        if self._origin is None:
            self._origin = chunk.first
        if x.dtype != np.float64:
            x = x.astype(np.float64)
        if self.method == "sliding":
            rows, ends = self._process_sliding(x)
            if rows.shape[0] == 0:
                return None
            return self._frames_chunk(chunk, rows, ends)
        held = np.empty((n, self.n_in))
        self._n_replaced += hold_nonfinite(x, self._picks, self._last, held)
        n_frames = self._ring.frames_due(n, self._next_end, self.step)
        power = np.empty((n_frames, len(self._band_lo), self.n_in))
        total = np.ones((n_frames, self.n_in))
        compute = self._multitaper if self.method == "multitaper" else self._welch
        ends, self._next_end = self._ring.write_windows(held, self._next_end, self.step, self._win,
                                                        lambda f, w: compute(w, power[f], total[f]))
        if not ends:
            return None
        rows = np.empty((len(ends), self.n_features))
        with np.errstate(divide="ignore", invalid="ignore"):
            finish_rows(power, total, self._mode_code, self.params.average, self._r_num, self._r_den, rows)
        return self._frames_chunk(chunk, rows, ends)

    def report(self) -> dict:
        return {"frames": self._frames, "replaced_nonfinite": self.n_replaced}

    def _frames_chunk(self, chunk: Chunk, rows: np.ndarray, ends) -> Chunk:
        origin = self._origin
        assert origin is not None  # set by the first process() call
        first_frame = self._frames
        self._frames += len(rows)
        return frames_chunk(chunk, rows, ends, origin=origin, first_frame=first_frame, window=self.window,
                            step=self.step, fs=self.sfreq_in, of=self.inputs[0].name)


# -- envelope -------------------------------------------------------------------

#: The FIR Hilbert transformer's gain must stay within this of 1 over every band.
HILBERT_GAIN_TOL = 0.01


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvelopeParams:
    """Parameters of :class:`Envelope`."""

    bands: dict[str, tuple[float, float]] = param({"alpha": (8.0, 12.0)}, doc="name: [low, high] pass band in Hz")
    order: int = param(4, ge=1, le=10, doc="Butterworth band-pass order (per edge)")
    detector: Literal["hilbert", "rectify"] = param("hilbert", doc="FIR Hilbert transformer or full-wave rectifier")
    feature: Literal["amplitude", "power"] = param("amplitude", doc="envelope amplitude or its square")
    smoothing: Literal["exp", "boxcar", "none"] = param("exp", doc="exponential, moving average or none")
    tau_s: float = param(0.25, gt=0, doc="exponential time constant, or boxcar length")
    hilbert_s: float | None = param(None, gt=0, doc="Hilbert FIR length (default: the shortest with a flat gain over the bands)")
    step_s: float = param(0.1, gt=0, doc="one feature frame every step_s seconds")
    picks: list[str] | None = param(None, doc="channel names (default: all)")
    average: bool = param(False, doc="average over the picked channels (before the log)")
    mode: Literal["abs", "log10", "db"] = param("abs", doc="linear, log10 or decibels (10 log10 of power)")

    def __post_init__(self) -> None:
        if not self.bands:
            raise ConfigError("bands must name at least one band")
        for name, (lo, hi) in self.bands.items():
            if not 0 < lo < hi:
                raise ConfigError(f"band {name!r}: need 0 < low < high, got [{lo}, {hi}]")
        if self.hilbert_s is not None and self.detector != "hilbert":
            raise ConfigError(f"hilbert_s applies to detector 'hilbert' only (detector is {self.detector!r})")


class Envelope(Node):
    """Band envelope amplitude or power per channel and band, at a frame step.

    Each picked channel goes through one causal Butterworth band-pass per
    band (second-order sections, starting from the step steady state of the
    first sample); then a detector gives the instantaneous envelope:

    ``hilbert``
        the magnitude of the analytic signal, its imaginary part from a
        causal FIR Hilbert transformer of ``L = 2 M + 1`` taps, its real part
        the band-passed signal delayed by ``M`` samples (the envelope lags by
        ``M`` samples, ``desc["delay_samples"]``). For a sinusoid it is the
        amplitude.
    ``rectify``
        ``|y|`` (its mean is ``2 / pi`` times the amplitude of a sinusoid).

    ``feature: power`` squares the detector output instead. Smoothing is an
    exponential moving average with time constant ``tau_s`` (starting from
    0), a boxcar mean over the last ``tau_s`` seconds, or none. A frame is
    emitted every ``step_s`` seconds on the absolute sample count, the first
    once the transformer and the boxcar are full, so any split of the input
    gives bit-identical output. Non-finite input samples are replaced by the
    channel's last finite value and counted.

    Output columns: ``"<channel>:<band>"``, or ``"<band>"`` with ``average``
    (the mean over channels, taken before the logarithm of ``mode``).

    Notes
    -----
    Hilbert transformer: Oppenheim & Schafer, Discrete-Time Signal
    Processing, sec. 12.4.3; analytic amplitude as in
    ``numpy.abs(scipy.signal.hilbert(y))``. Band-limited envelope features
    for neurofeedback: e.g. Zrenner et al. (2018) Brain Stimul. 11:374.
    """

    Params = EnvelopeParams
    input_kinds = ("sig",)

    def __init__(self, params: EnvelopeParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        src = inputs[0]
        fs = regular_rate(src, "an envelope")
        nyq = fs / 2
        for name, (lo, hi) in params.bands.items():
            if hi >= nyq:
                raise ConfigError(f"band {name!r} [{lo}, {hi}] Hz must end below the Nyquist frequency {nyq:g} Hz of stream '{src.name}'")
        self.step = int(round(params.step_s * fs))
        if self.step < 1:
            raise ConfigError(f"step_s={params.step_s} is shorter than one sample at {fs:g} Hz")
        self.picks = np.array(resolve_picks(params.picks, src), dtype=np.int64)
        self._sos = np.ascontiguousarray(np.stack([
            signal.butter(params.order, (lo, hi), "bandpass", fs=fs, output="sos") for lo, hi in params.bands.values()]))
        self._zi0 = np.stack([signal.sosfilt_zi(s) for s in self._sos])  # (B, n_sections, 2)
        if params.detector == "hilbert":
            self._h = self._design_hilbert(params, fs)
        else:
            self._h = np.zeros(1)
        self._h_rev = np.ascontiguousarray(self._h[::-1])
        self.delay = self._h.size // 2
        self._box = max(1, int(round(params.tau_s * fs))) if params.smoothing == "boxcar" else 1
        self._alpha = 1.0 - math.exp(-1.0 / (params.tau_s * fs))
        warm = max(self._h.size, self._box)
        self._first_end = self.step * -(-warm // self.step)
        band_names = list(params.bands)
        unit = src.units[0] if src.units else ""
        names = tuple(band_names) if params.average else tuple(
            f"{src.ch_names[c]}:{b}" for c in self.picks for b in band_names)
        amp = params.feature == "amplitude"
        units = {"abs": unit if amp else f"{unit}^2", "log10": f"log10({unit})" if amp else f"log10({unit}^2)",
                 "db": f"dB re 1 {unit}" if amp else f"dB re 1 {unit}^2"}[params.mode]
        self.outputs = {"": StreamMeta(
            name=ctx.stream_name(), kind="feat", sfreq=fs / self.step, ch_names=names,
            ch_types=("misc",) * len(names), units=(units,) * len(names), dtype="<f8",
            source=f"{params.detector} envelope of {src.name}",
            desc={"step": self.step, "delay_samples": self.delay, "hilbert_taps": int(self._h.size),
                  "smoothing": params.smoothing, "tau_s": params.tau_s},
        )}
        self.sfreq_in = fs
        self.n_in = len(self.picks)
        self._picks = np.ascontiguousarray(self.picks, dtype=np.int64)
        self._detector = DETECT_HILBERT if params.detector == "hilbert" else DETECT_RECTIFY
        self._smoothing = {"exp": SMOOTH_EXP, "boxcar": SMOOTH_BOXCAR, "none": SMOOTH_NONE}[params.smoothing]
        self.reset()

    @staticmethod
    def _hilbert_gain(h: np.ndarray, bands, fs: float) -> tuple[float, float]:
        """Worst gain deviation from 1 over the bands, and the frequency where it occurs."""
        f = np.concatenate([np.linspace(lo, hi, 64) for lo, hi in bands])
        _, H = signal.freqz(h, worN=f, fs=fs)
        dev = np.abs(np.abs(H) - 1.0)
        i = int(np.argmax(dev))
        return float(dev[i]), float(f[i])

    def _design_hilbert(self, params: EnvelopeParams, fs: float) -> np.ndarray:
        bands = list(params.bands.values())
        if params.hilbert_s is not None:
            taps = 2 * int(round(params.hilbert_s * fs / 2)) + 1
            h = hilbert_fir(max(taps, 3))
            dev, f = self._hilbert_gain(h, bands, fs)
            if dev > HILBERT_GAIN_TOL:
                need = self._shortest_hilbert(bands, fs)
                hint = f"use hilbert_s >= {need / fs:.3g}" if need else "narrow the bands away from 0 Hz and Nyquist"
                raise ConfigError(f"hilbert_s={params.hilbert_s} ({h.size} taps) has a gain off by {dev:.1%} at {f:.3g} Hz; {hint}")
            return h
        need = self._shortest_hilbert(bands, fs)
        if need is None:
            raise ConfigError(f"no Hilbert transformer up to 4 s is flat within {HILBERT_GAIN_TOL:.0%} over the bands; move them away from 0 Hz and Nyquist or use detector 'rectify'")
        return hilbert_fir(need)

    def _shortest_hilbert(self, bands, fs: float) -> int | None:
        for taps in range(3, 2 * int(2 * fs) + 2, 2):
            if self._hilbert_gain(hilbert_fir(taps), bands, fs)[0] <= HILBERT_GAIN_TOL:
                return taps
        return None

    def reset(self) -> None:
        B, C = self._sos.shape[0], self.n_in
        self._zi: np.ndarray | None = None
        self._last = np.zeros(C)
        self._hring = np.zeros((B, C, 2 * self._h.size))
        self._bring = np.zeros((self._box, B, C))
        self._smooth = np.zeros((B, C))
        self._state = np.array([0, self._first_end, 0], dtype=np.int64)
        self._frames = 0
        self._origin: int | None = None

    def warmup(self) -> None:
        x = np.random.default_rng(0).standard_normal((self._first_end + self.step, int(self._picks.max()) + 1))
        self.process(Chunk(x, 0, 0.0, self.sfreq_in, []))
        self.reset()

    @property
    def n_replaced(self) -> int:
        return int(self._state[2])

    def process(self, chunk: Chunk, port: int = 0) -> Chunk | None:
        x = chunk.data
        n = x.shape[0]
        if n == 0:
            return None
        if x.dtype != np.float64:
            x = x.astype(np.float64)
        if self._zi is None:
            self._origin = chunk.first
            x0 = x[0, self._picks]
            x0 = np.where(np.isfinite(x0), x0, 0.0)
            self._last[:] = x0
            self._zi = np.ascontiguousarray(self._zi0[:, :, :, None] * x0[None, None, None, :])
        max_frames = n // self.step + 1
        raw = np.empty((max_frames, self.n_in * self._sos.shape[0]))
        ends = np.empty(max_frames, dtype=np.int64)
        p = self.params
        k = envelope(x, self._picks, self._sos, self._zi, self._last, self._detector, p.feature == "power", self._h_rev,
                     self._hring, self._smoothing, self._alpha, self._bring, self._smooth, self._state, self.step,
                     raw, ends)
        if k == 0:
            return None
        rows = raw[:k]
        if p.average:
            rows = rows.reshape(k, self.n_in, -1).mean(axis=1)
        if p.mode != "abs":
            with np.errstate(divide="ignore"):
                rows = np.log10(rows)
            if p.mode == "db":
                rows *= 20.0 if p.feature == "amplitude" else 10.0
        origin = self._origin
        assert origin is not None
        first_frame = self._frames
        self._frames += k
        t_first = chunk.t0 + (origin + int(ends[0]) - 1 - chunk.first) / self.sfreq_in
        last_idx = origin + int(ends[k - 1]) - 1
        extra = {"window": [last_idx - max(self._h.size, self._box) + 1, last_idx], "of": self.inputs[0].name}
        return Chunk(np.ascontiguousarray(rows), first_frame, t_first, self.sfreq_in / self.step, chunk.trace, extra)

    def report(self) -> dict:
        return {"frames": self._frames, "replaced_nonfinite": self.n_replaced}
