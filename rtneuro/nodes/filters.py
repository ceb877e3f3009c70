"""Filter nodes: band-pass, notch, FIR, re-referencing and decimation.

Every node here is causal, keeps its state explicitly between chunks (any
split of the input gives bit-identical output), starts from the steady
state of the first sample (no start-up transient from a DC offset), and
replaces non-finite input by the channel's last finite value before it
reaches a filter's memory, counting each replacement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .._lazy import lazy
from ..errors import ConfigError, did_you_mean
from ..kernels.fir import fir_hold
from ..kernels.iir import sosfilt_hold, sosfilt_hold_decimate
from ..kernels.reref import common_average, neighbor_reference
from ..messages import Chunk, StreamMeta
from .base import Node, NodeContext, param, regular_rate

signal = lazy("scipy.signal")  # imported when a filter is designed (rtneuro/_lazy.py)

__all__ = [
    "Bandpass",
    "BandpassParams",
    "Notch",
    "NotchParams",
    "Fir",
    "FirParams",
    "Reref",
    "RerefParams",
    "Decimate",
    "DecimateParams",
    "FIR_LENGTH_FACTORS",
]

#: Filter length per transition bandwidth (in periods), by window, as MNE's
#: ``filter_length="auto"``: numtaps = factor * sfreq / transition width.
FIR_LENGTH_FACTORS = {"hann": 3.1, "hamming": 3.3, "blackman": 5.0}


def _regular_rate(src: StreamMeta) -> float:
    return regular_rate(src, "filtering")


def _band_desc(src: StreamMeta, l_freq: float | None, h_freq: float | None) -> dict:
    """The band a stream is known to be limited to, after one more filter."""
    lo, hi = src.desc.get("l_freq"), src.desc.get("h_freq")
    if l_freq is not None:
        lo = l_freq if lo is None else max(lo, l_freq)
    if h_freq is not None:
        hi = h_freq if hi is None else min(hi, h_freq)
    return {k: v for k, v in (("l_freq", lo), ("h_freq", hi)) if v is not None}


class _SosFilter(Node):
    """Shared state handling of the nodes that run :func:`sosfilt_hold`.

    Subclasses set ``self._sos`` (n_sections, 6), then call
    :meth:`_setup`.
    """

    input_kinds = ("sig",)
    _sos: np.ndarray

    def _setup(self, src: StreamMeta, source: str, desc: dict) -> None:
        self._sos = np.ascontiguousarray(self._sos, dtype=np.float64)
        self._zi0 = np.ascontiguousarray(signal.sosfilt_zi(self._sos))  # (n_sections, 2)
        self.n_channels = src.n_channels
        self.outputs = {"": StreamMeta(
            name=self.ctx.stream_name(), kind="sig", sfreq=src.sfreq, ch_names=src.ch_names,
            ch_types=src.ch_types, units=src.units, dtype="<f8", source=source, desc=desc,
        )}
        self.reset()

    def reset(self) -> None:
        self._zi: np.ndarray | None = None
        self._last = np.zeros(self.n_channels)
        self.n_replaced = 0
        self._r_x = np.zeros((1, self.n_channels))

    def warmup(self) -> None:
        x = np.zeros((4, self.n_channels))
        zi = np.zeros((self._sos.shape[0], 2, self.n_channels))
        sosfilt_hold(self._sos, x, zi, np.zeros(self.n_channels), np.empty_like(x))

    def rehearse(self) -> None:
        if self._zi is None:
            return
        sosfilt_hold(self._sos, self._r_x, self._zi.copy(), self._last.copy(), np.empty(self._r_x.shape))

    def _initial_state(self, x0: np.ndarray) -> None:
        x0 = np.where(np.isfinite(x0), x0, 0.0)
        self._last[:] = x0
        self._zi = np.ascontiguousarray(self._zi0[:, :, None] * x0[None, None, :])

    def _redesign(self, sos: np.ndarray) -> None:
        """New coefficients between two chunks: the state restarts from the steady state of the last input.

        The old delay line means nothing to other coefficients (its values
        are partial sums of the old recursion), so it is not kept: the new
        filter starts as if the channel's last (held) input sample had
        always been there, as at the first sample; the output continues
        without a step from a DC offset.
        """
        self._sos = np.ascontiguousarray(sos, dtype=np.float64)
        self._zi0 = np.ascontiguousarray(signal.sosfilt_zi(self._sos))
        if self._zi is not None:
            self._zi = np.ascontiguousarray(self._zi0[:, :, None] * self._last[None, None, :])

    def process(self, chunk: Chunk, port: int = 0) -> Chunk | None:
        x = chunk.data
        if x.shape[0] == 0:
            return None
        if self._zi is None:
            self._initial_state(np.asarray(x[0], dtype=np.float64))
        if x.dtype != np.float64:
            x = x.astype(np.float64)
        out = np.empty(x.shape)
        self.n_replaced += sosfilt_hold(self._sos, x, self._zi, self._last, out)
        return Chunk(out, chunk.first, chunk.t0, chunk.sfreq, chunk.trace, chunk.extra)

    def report(self) -> dict:
        return {"replaced_nonfinite": self.n_replaced}


# -- band-pass ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BandpassParams:
    """Parameters of :class:`Bandpass`.

    ``l_freq`` only is a high-pass, ``h_freq`` only a low-pass.
    """

    l_freq: float | None = param(None, gt=0, doc="lower pass-band edge in Hz")
    h_freq: float | None = param(None, gt=0, doc="upper pass-band edge in Hz")
    order: int = param(4, ge=1, le=10, doc="Butterworth order (band-pass: per edge)")

    def __post_init__(self) -> None:
        if self.l_freq is None and self.h_freq is None:
            raise ConfigError("set l_freq, h_freq or both")
        if self.l_freq is not None and self.h_freq is not None and self.l_freq >= self.h_freq:
            raise ConfigError(f"l_freq={self.l_freq} must be below h_freq={self.h_freq}")


class Bandpass(_SosFilter):
    """Causal Butterworth filter in second-order sections.

    The state starts from the step steady state of the first sample, so
    there is no start-up transient from a DC offset; any split of the
    input gives the same output. Non-finite input samples are replaced by
    the channel's last finite value (and counted) so that the recursive
    state is never poisoned.

    Output desc: ``l_freq``, ``h_freq`` (the band the stream is limited to).

    Notes
    -----
    Design: ``scipy.signal.butter(..., output="sos")``; filtering:
    :func:`rtneuro.kernels.iir.sosfilt_hold` (transposed direct form II,
    as ``scipy.signal.sosfilt``).

    Live parameters: ``l_freq`` and ``h_freq``. :meth:`update` designs the new filter
    and restarts its state from the steady state of each channel's last
    input sample (the old delay line means nothing to new coefficients);
    the held values and counts stay. The output stream keeps the
    metadata it was announced with (its ``desc`` band and ``source`` name
    the band the graph was built with). ``order`` is fixed while running.
    """

    Params = BandpassParams
    live = ("l_freq", "h_freq")

    def __init__(self, params: BandpassParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        src = inputs[0]
        nyq = src.sfreq / 2
        for name in ("l_freq", "h_freq"):
            f = getattr(params, name)
            if f is not None and f >= nyq:
                raise ConfigError(f"{name}={f} Hz must be below the Nyquist frequency {nyq:g} Hz of stream '{src.name}'")
        self._sos = self._design(params, src.sfreq)
        self._setup(src, f"bandpass {params.l_freq}-{params.h_freq} Hz order {params.order} of {src.name}",
                    _band_desc(src, params.l_freq, params.h_freq))

    @staticmethod
    def _design(params: BandpassParams, sfreq: float) -> np.ndarray:
        wn: float | tuple[float, float]
        if params.l_freq is not None and params.h_freq is not None:
            wn, btype = (params.l_freq, params.h_freq), "bandpass"
        elif params.l_freq is not None:
            wn, btype = params.l_freq, "highpass"
        else:
            assert params.h_freq is not None  # BandpassParams requires one edge
            wn, btype = params.h_freq, "lowpass"
        return signal.butter(params.order, wn, btype, fs=sfreq, output="sos")

    def update(self, params: BandpassParams) -> None:
        """New band edges: a new design; the state restarts from the last input (see the class docstring)."""
        self.params = params
        self._redesign(self._design(params, self.inputs[0].sfreq))


# -- notch --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NotchParams:
    """Parameters of :class:`Notch`."""

    freq: float = param(50.0, doc="line frequency in Hz (50 or 60)")
    harmonics: int | Literal["all"] = param(
        "all", doc="how many multiples of freq to notch, the fundamental included, or 'all' below Nyquist")
    q: float = param(30.0, gt=0, doc="quality factor: notch width at -3 dB is f / q")

    def __post_init__(self) -> None:
        if not (math.isfinite(self.freq) and self.freq > 0):
            raise ConfigError(f"freq={self.freq} Hz: a notch needs a frequency above 0 Hz (the line frequency, e.g. 50 or 60)")
        if isinstance(self.harmonics, int) and self.harmonics < 1:
            raise ConfigError(f"harmonics={self.harmonics}: use 1 (the fundamental only), more, or 'all'")


class Notch(_SosFilter):
    """Causal IIR notch at the line frequency and its harmonics.

    One second-order notch per frequency ``k * freq`` (``k = 1 .. harmonics``,
    or every multiple below Nyquist for ``"all"``), each of quality factor
    ``q`` (so the notch at ``k * freq`` is ``k`` times wider), cascaded as
    second-order sections. State, start-up and NaN holding as
    :class:`Bandpass`.

    Output desc: ``notch_hz`` (the frequencies notched).

    Notes
    -----
    Design: ``scipy.signal.iirnotch(f, q, fs)`` per frequency (the
    second-order notch of Orfanidis, *Introduction to Signal Processing*,
    1996, sec. 11.3), converted with ``scipy.signal.tf2sos``; filtering:
    :func:`rtneuro.kernels.iir.sosfilt_hold`, the recursion of
    ``scipy.signal.sosfilt``.

    Live parameters: ``freq`` and ``q``. :meth:`update` designs the new
    cascade (``harmonics`` of the new ``freq``) and restarts its state from the steady state of each channel's
    last input sample, as :class:`Bandpass`; the output stream keeps the
    metadata it was announced with (``notch_hz`` of the build).
    ``harmonics`` is fixed while running.
    """

    Params = NotchParams
    live = ("freq", "q")

    def __init__(self, params: NotchParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        src = inputs[0]
        fs = _regular_rate(src)
        nyq = fs / 2
        if params.freq >= nyq:
            raise ConfigError(f"freq={params.freq:g} Hz is at or above the Nyquist frequency {nyq:g} Hz of stream '{src.name}'; "
                              f"a notch must sit below it")
        if params.harmonics == "all":
            n = math.ceil(nyq / params.freq) - 1  # k * freq < nyq
        else:
            n = int(params.harmonics)
            if n * params.freq >= nyq:
                n_ok = math.ceil(nyq / params.freq) - 1
                raise ConfigError(f"harmonics={n} reaches {n * params.freq:g} Hz, at or above the Nyquist frequency {nyq:g} Hz "
                                  f"of stream '{src.name}'; use harmonics: {n_ok} or 'all'")
        self.freqs = [params.freq * k for k in range(1, n + 1)]
        self._sos = self._design(self.freqs, params.q, fs)
        self._setup(src, f"notch {params.freq:g} Hz x{n} q={params.q:g} of {src.name}",
                    {**_band_desc(src, None, None), "notch_hz": self.freqs})

    @staticmethod
    def _design(freqs: list[float], q: float, fs: float) -> np.ndarray:
        return np.concatenate([signal.tf2sos(*signal.iirnotch(f, q, fs=fs)) for f in freqs])

    def update(self, params: NotchParams) -> None:
        """A new line frequency or q: a new cascade of as many notches; the state restarts from the last input."""
        self.params = params
        fs = self.inputs[0].sfreq
        n = math.ceil(fs / 2 / params.freq) - 1 if params.harmonics == "all" else int(params.harmonics)
        self.freqs = [params.freq * k for k in range(1, n + 1)]
        self._redesign(self._design(self.freqs, params.q, fs))


# -- FIR ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FirParams:
    """Parameters of :class:`Fir`.

    Give ``l_freq`` and/or ``h_freq`` (band-pass, high-pass or low-pass,
    ``firwin`` cutoffs, i.e. the -6 dB points), and at most one of
    ``numtaps`` and ``trans_bandwidth``; or give ``taps``.
    """

    l_freq: float | None = param(None, gt=0, doc="lower cutoff in Hz (-6 dB)")
    h_freq: float | None = param(None, gt=0, doc="upper cutoff in Hz (-6 dB)")
    numtaps: int | None = param(None, ge=1, doc="filter length (default: from the transition bandwidth)")
    trans_bandwidth: float | None = param(
        None, gt=0, doc="transition width in Hz (default as MNE's 'auto': 25 % of the edge, at least 2 Hz)")
    window: str = param("hamming", doc="firwin window: hamming, hann, blackman (or any, with numtaps)")
    taps: list[float] | None = param(None, doc="your own impulse response, instead of a design")

    def __post_init__(self) -> None:
        if self.taps is not None:
            given = [k for k in ("l_freq", "h_freq", "numtaps", "trans_bandwidth") if getattr(self, k) is not None]
            if given:
                raise ConfigError(f"taps are given, so drop {given}: they are for designing the filter")
            if not self.taps:
                raise ConfigError("taps is empty; give at least one coefficient")
            if not all(math.isfinite(t) for t in self.taps):
                raise ConfigError("taps contain a non-finite value")
            return
        if self.l_freq is None and self.h_freq is None:
            raise ConfigError("set l_freq, h_freq or both (or give taps)")
        if self.l_freq is not None and self.h_freq is not None and self.l_freq >= self.h_freq:
            raise ConfigError(f"l_freq={self.l_freq} must be below h_freq={self.h_freq}")
        if self.numtaps is not None and self.trans_bandwidth is not None:
            raise ConfigError("give numtaps or trans_bandwidth, not both")


class Fir(Node):
    """Causal linear-phase FIR filter, designed with ``firwin`` or given.

    The last ``numtaps - 1`` input samples are carried across chunks; the
    history starts filled with the first sample (the steady state of a
    constant input, so a DC offset gives no start-up transient). Non-finite
    input samples are replaced by the channel's last finite value, counted.

    Output desc: ``delay_samples`` (the group delay, ``(numtaps - 1) / 2``
    for symmetric or antisymmetric taps, ``None`` otherwise), ``delay_s``
    and ``numtaps``.

    Notes
    -----
    Design: ``scipy.signal.firwin(numtaps, cutoff, window=window,
    pass_zero=..., fs=sfreq)``; high-pass and band-stop need an odd length,
    which the automatic length always is. The automatic length follows
    MNE-Python's ``filter_length="auto"`` (Gramfort et al. 2013, Front.
    Neurosci. 7:267; Widmann et al. 2015, J. Neurosci. Methods 250:34):
    ``numtaps = factor * sfreq / trans_bandwidth`` with factor 3.3 (hamming),
    3.1 (hann) or 5.0 (blackman), rounded up to odd. Filtering:
    :func:`rtneuro.kernels.fir.fir_hold`, direct convolution, equal to
    ``scipy.signal.lfilter(taps, 1, x, axis=0)`` up to rounding.
    """

    Params = FirParams
    input_kinds = ("sig",)

    def __init__(self, params: FirParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        src = inputs[0]
        fs = _regular_rate(src)
        nyq = fs / 2
        if params.taps is not None:
            taps = np.asarray(params.taps, dtype=np.float64)
            what = f"FIR ({taps.size} given taps)"
        else:
            for name in ("l_freq", "h_freq"):
                f = getattr(params, name)
                if f is not None and f >= nyq:
                    raise ConfigError(f"{name}={f} Hz must be below the Nyquist frequency {nyq:g} Hz of stream '{src.name}'")
            numtaps = params.numtaps or self._auto_numtaps(params, fs)
            cutoff: float | list[float]
            if params.l_freq is not None and params.h_freq is not None:
                cutoff, pass_zero = [params.l_freq, params.h_freq], False
            elif params.l_freq is not None:
                cutoff, pass_zero = params.l_freq, False
            else:
                assert params.h_freq is not None  # FirParams requires one edge
                cutoff, pass_zero = params.h_freq, True
            try:
                taps = signal.firwin(numtaps, cutoff, window=params.window, pass_zero=pass_zero, fs=fs)
            except ValueError as exc:
                if not pass_zero and numtaps % 2 == 0:
                    raise ConfigError(f"numtaps={numtaps}: a high-pass FIR needs an odd length; use {numtaps + 1}") from None
                raise ConfigError(f"cannot design the FIR filter: {exc}") from None
            what = f"FIR {params.l_freq}-{params.h_freq} Hz {numtaps} taps {params.window}"
        self._taps = np.ascontiguousarray(taps)
        n = self._taps.size
        tol = 1e-12 * float(np.abs(self._taps).max())  # firwin's taps are symmetric up to rounding
        sym = bool(np.allclose(self._taps, self._taps[::-1], rtol=0, atol=tol)
                   or np.allclose(self._taps, -self._taps[::-1], rtol=0, atol=tol))
        self.delay_samples: float | None = (n - 1) / 2 if sym else None
        if self.delay_samples is not None and self.delay_samples / fs > 1.0:
            self.note(f"FIR of {n} taps delays the signal by {self.delay_samples / fs:.2f} s")
        self.n_channels = src.n_channels
        desc = {**_band_desc(src, params.l_freq, params.h_freq), "numtaps": n, "delay_samples": self.delay_samples,
                "delay_s": None if self.delay_samples is None else self.delay_samples / fs}
        self.outputs = {"": StreamMeta(
            name=ctx.stream_name(), kind="sig", sfreq=src.sfreq, ch_names=src.ch_names, ch_types=src.ch_types,
            units=src.units, dtype="<f8", source=f"{what} of {src.name}", desc=desc,
        )}
        self.reset()

    @staticmethod
    def _auto_numtaps(params: FirParams, fs: float) -> int:
        nyq = fs / 2
        factor = FIR_LENGTH_FACTORS.get(params.window)
        if factor is None:
            raise ConfigError(f"window={params.window!r} has no automatic length; give numtaps, or use one of "
                              f"{list(FIR_LENGTH_FACTORS)}{did_you_mean(params.window, FIR_LENGTH_FACTORS)}")
        trans = params.trans_bandwidth
        if trans is None:
            widths = []
            if params.l_freq is not None:
                widths.append(min(max(0.25 * params.l_freq, 2.0), params.l_freq))
            if params.h_freq is not None:
                widths.append(min(max(0.25 * params.h_freq, 2.0), nyq - params.h_freq))
            trans = min(widths)
        n = int(math.ceil(factor * fs / trans))
        return n + 1 - n % 2  # odd: integer group delay, and high-pass allowed

    def reset(self) -> None:
        self._work: np.ndarray | None = None  # history, filled from the first sample
        self._last = np.zeros(self.n_channels)
        self.n_replaced = 0

    def _ensure(self, n: int) -> np.ndarray:
        work = self._work
        assert work is not None
        hist = self._taps.size - 1
        if work.shape[0] < hist + n:
            grown = np.empty((hist + max(n, 2 * (work.shape[0] - hist)), self.n_channels))
            grown[:hist] = work[:hist]
            self._work = work = grown
        return work

    def warmup(self) -> None:
        x = np.zeros((4, self.n_channels))
        work = np.zeros((self._taps.size + 3, self.n_channels))
        fir_hold(self._taps, x, work, np.zeros(self.n_channels), 1, 0, np.empty_like(x))

    def _initial_state(self, x0: np.ndarray) -> None:
        x0 = np.where(np.isfinite(x0), x0, 0.0)
        self._last[:] = x0
        hist = self._taps.size - 1
        self._work = np.empty((hist + 256, self.n_channels))
        self._work[:hist] = x0

    def process(self, chunk: Chunk, port: int = 0) -> Chunk | None:
        x = chunk.data
        n = x.shape[0]
        if n == 0:
            return None
        if self._work is None:
            self._initial_state(np.asarray(x[0], dtype=np.float64))
        if x.dtype != np.float64:
            x = x.astype(np.float64)
        work = self._ensure(n)
        out = np.empty(x.shape)
        self.n_replaced += fir_hold(self._taps, x, work, self._last, 1, 0, out)
        return Chunk(out, chunk.first, chunk.t0, chunk.sfreq, chunk.trace, chunk.extra)

    def report(self) -> dict:
        return {"replaced_nonfinite": self.n_replaced}


# -- re-referencing -------------------------------------------------------------


def _standard_positions() -> dict[str, np.ndarray]:
    """Electrode positions of the 10-05 system (MNE's ``standard_1005``)."""
    import warnings

    import mne

    # MNE 1.13 renamed 'standard_1005' to 'colin27_1005' (same positions)
    name = "colin27_1005" if "colin27_1005" in mne.channels.get_builtin_montages() else "standard_1005"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        montage = mne.channels.make_standard_montage(name)
    return dict(montage.get_positions()["ch_pos"])


@dataclass(frozen=True, slots=True, kw_only=True)
class RerefParams:
    """Parameters of :class:`Reref`."""

    method: Literal["common_average", "bipolar", "laplacian"] = param("common_average", doc="the derivation")
    picks: list[str] | None = param(
        None, doc="common_average: channels averaged and re-referenced (default all); laplacian: channels derived")
    exclude: list[str] = param(
        [], doc="common_average: left out of the average (still re-referenced); laplacian: never a neighbour")
    pairs: list[str] | None = param(None, doc="bipolar: 'A-B' derivations")
    neighbors: dict[str, list[str]] | None = param(None, doc="laplacian: channel -> its neighbours")
    n_neighbors: int = param(4, ge=1, doc="laplacian without neighbors: this many nearest on the 10-05 montage")

    def __post_init__(self) -> None:
        if self.method == "bipolar":
            if not self.pairs:
                raise ConfigError("method 'bipolar' needs pairs, e.g. pairs: [Fp1-F3, F3-C3]")
        elif self.pairs is not None:
            raise ConfigError(f"pairs are for method 'bipolar', not {self.method!r}; drop them or set method: bipolar")
        if self.neighbors is not None and self.method != "laplacian":
            raise ConfigError(f"neighbors are for method 'laplacian', not {self.method!r}; drop them or set method: laplacian")
        if self.method == "bipolar" and (self.picks is not None or self.exclude):
            raise ConfigError("method 'bipolar' takes its channels from pairs; drop picks and exclude")
        if self.method == "laplacian" and self.neighbors is not None and self.picks is not None:
            raise ConfigError("laplacian: neighbors already name the derived channels; drop picks")


class Reref(Node):
    """Re-referencing: common average, bipolar pairs or nearest-neighbour Laplacian.

    ``common_average``
        Every channel of ``picks`` (default: all) minus the mean of
        ``picks`` without ``exclude``; other channels pass through. Output:
        all input channels. An excluded channel is re-referenced too (to
        the same reference as the others), where MNE leaves its bad
        channels as they were.
    ``bipolar``
        One output ``"A-B"`` per pair, ``A - B``.
    ``laplacian``
        One output per derived channel, named as it: the channel minus the
        mean of its neighbours, given (``neighbors``) or the
        ``n_neighbors`` nearest among the stream's channels (``picks`` or
        every channel with a position, without ``exclude``) on the 10-05
        montage (MNE's ``standard_1005``, 3-D Euclidean distance).

    Every mean leaves out the values that are not finite in that sample (a
    dead or saturated channel drops out of its neighbours' reference for as
    long as it is bad); they are counted. A non-finite input stays
    non-finite in its own output, so the filters downstream hold it. There is
    no state: any split of the input gives bit-identical output.

    Notes
    -----
    Common average and bipolar derivations as
    ``mne.set_eeg_reference(ref_channels="average")`` and
    ``mne.set_bipolar_reference``; the Laplacian is Hjorth's (1975,
    Electroencephalogr. Clin. Neurophysiol. 39:526) nearest-neighbour
    approximation, not the spherical-spline current source density.
    Kernels: :mod:`rtneuro.kernels.reref`.
    """

    Params = RerefParams
    input_kinds = ("sig",)

    def __init__(self, params: RerefParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        src = inputs[0]
        self.n_in = src.n_channels
        self._names = list(src.ch_names)
        self.neighbor_map: dict[str, list[str]] = {}
        desc = _band_desc(src, None, None)
        if params.method == "common_average":
            picks = list(range(self.n_in))
            if params.picks is not None:
                picks = list(dict.fromkeys(self._indices(params.picks, "picks")))  # each channel once
            excl = set(self._indices(params.exclude, "exclude"))
            ref = [i for i in picks if i not in excl]
            if not ref:
                raise ConfigError("common_average: every picked channel is excluded; keep at least one in the average")
            self._ref = np.array(ref, dtype=np.int64)
            self._mask = np.zeros(self.n_in, dtype=np.bool_)
            self._mask[picks] = True
            names, types, units = src.ch_names, src.ch_types, src.units
            desc["reference"] = [self._names[i] for i in ref]
            source = f"common average of {len(ref)} channels of {src.name}"
        else:
            if params.method == "bipolar":
                assert params.pairs is not None  # RerefParams requires pairs
                derived = [self._pair(p) for p in params.pairs]
                seen = [p for i, p in enumerate(params.pairs) if derived[i] in derived[:i]]
                if seen:
                    raise ConfigError(f"pair {seen[0]!r} is listed twice; each derivation once")
            else:
                derived = self._laplacian(params)
            self._center = np.array([c for c, _ in derived], dtype=np.int64)
            self._ptr = np.cumsum([0] + [len(nb) for _, nb in derived]).astype(np.int64)
            self._nb = np.array([i for _, nb in derived for i in nb], dtype=np.int64)
            if params.method == "bipolar":
                names = tuple(f"{self._names[c]}-{self._names[nb[0]]}" for c, nb in derived)
            else:
                names = tuple(self._names[c] for c, _ in derived)
                self.neighbor_map = {self._names[c]: [self._names[i] for i in nb] for c, nb in derived}
                desc["neighbors"] = self.neighbor_map
            types = tuple(src.ch_types[c] for c, _ in derived) if src.ch_types else ()
            units = tuple(src.units[c] for c, _ in derived) if src.units else ()
            source = f"{params.method} derivation of {src.name}"
        self.n_out = len(names)
        self.outputs = {"": StreamMeta(
            name=ctx.stream_name(), kind="sig", sfreq=src.sfreq, ch_names=tuple(names), ch_types=tuple(types),
            units=tuple(units), dtype="<f8", source=source, desc=desc,
        )}
        self.reset()

    def _index(self, name: str, what: str) -> int:
        if name not in self._names:
            raise ConfigError(f"{what}: {name!r} is not a channel of stream '{self.inputs[0].name}'"
                              f"{did_you_mean(name, self._names)}")
        return self._names.index(name)

    def _indices(self, names: list[str], what: str) -> list[int]:
        return [self._index(n, what) for n in names]

    def _pair(self, pair: str) -> tuple[int, list[int]]:
        # channel names may hold '-' themselves: take the split whose both sides are channels
        cuts = [i for i, ch in enumerate(pair) if ch == "-"]
        for i in cuts:
            a, b = pair[:i], pair[i + 1:]
            if a in self._names and b in self._names:
                if a == b:
                    raise ConfigError(f"pair {pair!r} subtracts a channel from itself")
                return self._names.index(a), [self._names.index(b)]
        if not cuts:
            raise ConfigError(f"pair {pair!r} must be written 'A-B' (anode minus cathode)")
        a, b = pair[:cuts[0]], pair[cuts[0] + 1:]
        bad = a if a not in self._names else b
        raise ConfigError(f"pair {pair!r}: {bad!r} is not a channel of stream '{self.inputs[0].name}'"
                          f"{did_you_mean(bad, self._names)}")

    def _laplacian(self, params: RerefParams) -> list[tuple[int, list[int]]]:
        excl = set(self._indices(params.exclude, "exclude"))
        if params.neighbors is not None:
            derived = []
            for ch, nbs in params.neighbors.items():
                c = self._index(ch, "neighbors")
                idx = [self._index(nb, f"neighbors of {ch!r}") for nb in nbs]
                idx = [i for i in dict.fromkeys(idx) if i not in excl]
                if not idx:
                    raise ConfigError(f"neighbors of {ch!r}: none left (after exclude); give at least one")
                if c in idx:
                    raise ConfigError(f"neighbors of {ch!r} include the channel itself; remove it")
                derived.append((c, idx))
            if not derived:
                raise ConfigError("neighbors is empty; map at least one channel to its neighbours")
            return derived
        positions = _standard_positions()
        lower = {k.lower(): k for k in positions}

        def pos_of(i: int) -> np.ndarray | None:
            key = lower.get(self._names[i].lower())
            return None if key is None else positions[key]

        if params.picks is not None:
            centres = self._indices(params.picks, "picks")
            for i in centres:
                if pos_of(i) is None:
                    raise ConfigError(f"picks: {self._names[i]!r} has no position on the 10-05 montage"
                                      f"{did_you_mean(self._names[i], positions)}; give neighbors explicitly")
        else:
            centres = [i for i in range(self.n_in) if pos_of(i) is not None and i not in excl]
            if not centres:
                raise ConfigError(f"laplacian: no channel of stream '{self.inputs[0].name}' is on the 10-05 montage "
                                  f"(e.g. {self._names[:3]}); give neighbors explicitly")
        candidates = [i for i in range(self.n_in) if pos_of(i) is not None and i not in excl]
        k = params.n_neighbors
        derived = []
        for c in centres:
            others = [i for i in candidates if i != c]
            if len(others) < k:
                raise ConfigError(f"laplacian: {self._names[c]!r} has only {len(others)} channels with positions "
                                  f"to choose {k} neighbours from; lower n_neighbors")
            pc = pos_of(c)
            assert pc is not None
            dist = [float(np.linalg.norm(pos_of(i) - pc)) for i in others]
            order = sorted(range(len(others)), key=lambda j: (dist[j], others[j]))
            derived.append((c, [others[j] for j in order[:k]]))
        return derived

    def reset(self) -> None:
        self._counts = np.zeros(2, dtype=np.int64)

    def warmup(self) -> None:
        x = np.zeros((2, self.n_in))
        counts = np.zeros(2, dtype=np.int64)
        if self.params.method == "common_average":
            common_average(x, self._ref, self._mask, np.empty((2, self.n_out)), counts)
        else:
            neighbor_reference(x, self._center, self._ptr, self._nb, np.empty((2, self.n_out)), counts)

    def process(self, chunk: Chunk, port: int = 0) -> Chunk | None:
        x = chunk.data
        if x.shape[0] == 0:
            return None
        if x.dtype != np.float64:
            x = x.astype(np.float64)
        out = np.empty((x.shape[0], self.n_out))
        if self.params.method == "common_average":
            common_average(x, self._ref, self._mask, out, self._counts)
        else:
            neighbor_reference(x, self._center, self._ptr, self._nb, out, self._counts)
        return Chunk(out, chunk.first, chunk.t0, chunk.sfreq, chunk.trace, chunk.extra)

    def report(self) -> dict:
        return {"nonfinite_left_out": int(self._counts[0]), "samples_without_reference": int(self._counts[1])}


# -- decimation -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DecimateParams:
    """Parameters of :class:`Decimate`."""

    q: int = param(ge=2, doc="decimation factor")
    ftype: Literal["iir", "fir"] = param("iir", doc="anti-aliasing filter: Chebyshev I (iir) or Kaiser FIR (fir)")
    order: int | None = param(
        None, ge=1, doc="iir: filter order (default 8); fir: numtaps - 1 (default: the length kaiserord gives)")
    stop_atten_db: float = param(80.0, gt=20, doc="fir: stop-band attenuation of the default design, from the new Nyquist")

    def __post_init__(self) -> None:
        if self.q < 2:
            raise ConfigError(f"q={self.q}: a decimation factor is an integer >= 2")


class Decimate(Node):
    """Anti-aliasing filter, then one sample in ``q``, aligned on absolute indices.

    The filter runs causally with state on every input sample (state,
    start-up and NaN holding as :class:`Bandpass` / :class:`Fir`); the
    output keeps the samples whose stream index is a multiple of ``q``, so
    chunk boundaries never matter. Output sample ``j`` is input sample
    ``j * q``: the chunk's ``first`` is its first kept input index ``// q``,
    its ``t0`` that sample's time, its rate ``sfreq / q``.

    ``iir`` (default): order-8 Chebyshev type I, 0.05 dB ripple, cut-off at
    0.8 times the new Nyquist frequency, as ``scipy.signal.decimate``. It
    attenuates by 25 dB at the new Nyquist frequency and by more than 60 dB
    from about 1.5 times it (q = 4; see the tests), so a tone just above the
    new Nyquist aliases only partly suppressed, as with scipy.

    ``fir``: linear-phase Kaiser-window FIR whose pass band ends at 0.8 and
    stop band starts at 1.0 times the new Nyquist frequency, with
    ``stop_atten_db`` (80 dB) attenuation in the whole stop band; only the
    kept outputs are computed. Its delay is ``order / 2`` input samples.

    Output desc: ``q``, ``h_freq`` (the anti-aliasing pass-band edge or a
    lower upstream one), ``delay_samples`` (FIR, in input samples).

    Notes
    -----
    IIR design ``scipy.signal.cheby1(order, 0.05, 0.8 / q, output="sos")``
    (the default of ``scipy.signal.decimate``), run by
    :func:`rtneuro.kernels.iir.sosfilt_hold_decimate`. FIR design
    ``scipy.signal.kaiserord`` and ``firwin`` (Kaiser 1974; Oppenheim and
    Schafer, *Discrete-Time Signal Processing*, sec. 7.6), run by
    :func:`rtneuro.kernels.fir.fir_hold`. A stream whose upstream band
    (``h_freq`` in its desc) reaches beyond the new pass band is refused.
    """

    Params = DecimateParams
    input_kinds = ("sig",)

    def __init__(self, params: DecimateParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        src = inputs[0]
        fs = _regular_rate(src)
        q = params.q
        new_nyq = fs / (2 * q)
        edge = 0.8 * new_nyq
        upstream = src.desc.get("h_freq")
        if upstream is not None and upstream > edge:
            q_ok = int(math.floor(0.8 * fs / (2 * upstream)))
            fix = f"use q <= {q_ok}" if q_ok >= 2 else "do not decimate this stream"
            raise ConfigError(f"q={q} gives a new Nyquist frequency of {new_nyq:g} Hz (pass band to {edge:g} Hz), below the "
                              f"{upstream:g} Hz band of stream '{src.name}'; {fix} or lower h_freq upstream to {edge:g} Hz")
        self.q = q
        self.n_channels = src.n_channels
        desc = {**_band_desc(src, None, edge), "q": q}
        if params.ftype == "iir":
            order = params.order or 8
            self._sos = np.ascontiguousarray(signal.cheby1(order, 0.05, 0.8 / q, output="sos"))
            self._zi0 = np.ascontiguousarray(signal.sosfilt_zi(self._sos))
            what = f"Chebyshev I order {order}"
        else:
            if params.order is not None:
                numtaps, beta = params.order + 1, signal.kaiser_beta(params.stop_atten_db)
            else:
                numtaps, beta = signal.kaiserord(params.stop_atten_db, 0.2 / q)
                numtaps |= 1  # odd: an integer delay
            taps = signal.firwin(numtaps, 0.9 / q, window=("kaiser", beta))
            self._taps = np.ascontiguousarray(taps)
            desc["delay_samples"] = (numtaps - 1) / 2
            desc["delay_s"] = (numtaps - 1) / 2 / fs
            what = f"FIR {numtaps} taps"
        self.outputs = {"": StreamMeta(
            name=ctx.stream_name(), kind="sig", sfreq=src.sfreq / q, ch_names=src.ch_names, ch_types=src.ch_types,
            units=src.units, dtype="<f8", source=f"decimate by {q} ({what}) of {src.name}", desc=desc,
        )}
        self.reset()

    def reset(self) -> None:
        self._started = False
        self._last = np.zeros(self.n_channels)
        self.n_replaced = 0
        if self.params.ftype == "iir":
            self._zi = np.zeros((self._sos.shape[0], 2, self.n_channels))
        else:
            self._work = np.empty((self._taps.size - 1 + 256, self.n_channels))

    def warmup(self) -> None:
        x = np.zeros((4, self.n_channels))
        out = np.empty((2, self.n_channels))
        last = np.zeros(self.n_channels)
        if self.params.ftype == "iir":
            sosfilt_hold_decimate(self._sos, x, np.zeros_like(self._zi), last, 2, 0, out)
        else:
            work = np.zeros((self._taps.size + 3, self.n_channels))
            fir_hold(self._taps, x, work, last, 2, 0, out)

    def _initial_state(self, x0: np.ndarray) -> None:
        x0 = np.where(np.isfinite(x0), x0, 0.0)
        self._last[:] = x0
        if self.params.ftype == "iir":
            self._zi = np.ascontiguousarray(self._zi0[:, :, None] * x0[None, None, :])
        else:
            self._work[: self._taps.size - 1] = x0
        self._started = True

    def process(self, chunk: Chunk, port: int = 0) -> Chunk | None:
        x = chunk.data
        n = x.shape[0]
        if n == 0:
            return None
        if not self._started:
            self._initial_state(np.asarray(x[0], dtype=np.float64))
        if x.dtype != np.float64:
            x = x.astype(np.float64)
        q = self.q
        phase = (-chunk.first) % q
        n_out = max(0, (n - phase + q - 1) // q)
        out = np.empty((n_out, self.n_channels))
        if self.params.ftype == "iir":
            self.n_replaced += sosfilt_hold_decimate(self._sos, x, self._zi, self._last, q, phase, out)
        else:
            hist = self._taps.size - 1
            if self._work.shape[0] < hist + n:
                grown = np.empty((hist + max(n, 2 * (self._work.shape[0] - hist)), self.n_channels))
                grown[:hist] = self._work[:hist]
                self._work = grown
            self.n_replaced += fir_hold(self._taps, x, self._work, self._last, q, phase, out)
        if n_out == 0:
            return None
        return Chunk(out, (chunk.first + phase) // q, chunk.t0 + phase / chunk.sfreq, chunk.sfreq / q,
                     chunk.trace, chunk.extra)

    def report(self) -> dict:
        return {"replaced_nonfinite": self.n_replaced}

