"""Transient oscillations (sleep spindles, beta bursts): onset and offset events, for controllers."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .._lazy import lazy
from ..errors import ConfigError
from ..kernels.bursts import (
    C_CRITERIA,
    C_OFFSETS,
    C_ONSETS,
    C_SHORT,
    C_TOO_LONG,
    EV_ONSET,
    EV_TOO_LONG,
    F_HI,
    F_LO,
    N_COUNTERS,
    P_MAX,
    P_MIN,
    Q_HI,
    Q_LO,
    S_COUNT,
    burst_detect,
)
from ..kernels.envelope import hilbert_fir
from ..kernels.iir import sosfilt_hold
from ..messages import Chunk, StreamMeta, make_events
from .base import Node, NodeContext, frames_chunk, param, regular_rate, resolve_picks

signal = lazy("scipy.signal")  # imported when a filter is designed (rtneuro/_lazy.py)

__all__ = ["Bursts", "BurstsParams", "ONSET_CODE", "OFFSET_CODE", "TOO_LONG_CODE", "FREQUENCY_CODE", "group_delay_samples"]

#: Event codes on port ``events``.
ONSET_CODE = 1
OFFSET_CODE = 2
TOO_LONG_CODE = 3
FREQUENCY_CODE = 4
#: The FIR Hilbert transformer's gain must stay within this of 1 over the band (as the envelope node).
HILBERT_GAIN_TOL = 0.01
#: Baseline values are kept at this rate at most (Hz): a 30 s median at 30 kHz costs what it costs at 100 Hz.
BASELINE_RATE_HZ = 100.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BurstsParams:
    """Parameters of :class:`Bursts`."""

    band: tuple[float, float] = param((12.0, 15.0), doc="[low, high] in Hz of the oscillation (12-15: sleep spindles)")
    order: int = param(2, ge=1, le=8, doc="Butterworth band-pass order (per edge)")
    picks: list[str] | None = param(None, doc="channels, each detected on its own (default: all)")
    threshold: float = param(3.5, gt=0, doc="the envelope's peak must reach this multiple of the baseline statistic")
    lower: float | None = param(2.0, gt=0, doc="a burst starts and ends where the envelope crosses this multiple (null: threshold)")
    statistic: Literal["median", "percentile"] = param("median", doc="baseline statistic of the envelope")
    percentile: float = param(75.0, gt=0, lt=100, doc="statistic 'percentile': which one")
    baseline: Literal["running", "calibrated"] = param("running", doc="running: over the last baseline_s; calibrated: the first baseline_s, then fixed")
    baseline_s: float = param(30.0, gt=0, doc="length of the baseline window")
    baseline_min_s: float = param(10.0, gt=0, doc="running: no detection before this much baseline")
    update_s: float = param(1.0, gt=0, doc="running: thresholds recomputed this often")
    min_duration_s: float = param(0.5, ge=0, doc="a burst lasts at least this long (its onset event comes no earlier)")
    max_duration_s: float = param(2.0, gt=0, doc="a run longer than this is not a burst (a 'burst_too_long' event ends it)")
    gap_s: float = param(0.1, ge=0, doc="dips below the lower threshold up to this long do not end a burst")
    rel_power_min: float | None = param(None, gt=0, lt=1, doc="co-criterion: band power / broadband power over rel_power_window_s")
    rel_power_window_s: float = param(1.0, gt=0, doc="co-criterion window (trailing) of the relative power")
    corr_min: float | None = param(None, gt=-1, lt=1, doc="co-criterion: correlation of band-passed and broadband signal over corr_window_s")
    corr_window_s: float = param(0.3, gt=0, doc="co-criterion window (trailing) of the correlation")
    broad_band: tuple[float, float] = param((1.0, 30.0), doc="[low, high] in Hz of the broadband signal of the co-criteria")
    hilbert_s: float | None = param(None, gt=0, doc="Hilbert FIR length (default: the shortest with a flat gain over the band)")
    step_s: float = param(0.01, gt=0, doc="one feature frame every step_s (the gate's resolution)")
    events: bool = param(True, doc="publish onset and offset events on '<id>.events' (a gate needs only the main output)")

    def __post_init__(self) -> None:
        for name, (lo, hi) in (("band", self.band), ("broad_band", self.broad_band)):
            if not 0 < lo < hi:
                raise ConfigError(f"{name}={list((lo, hi))} needs 0 < low < high")
        if self.lower is not None and self.lower > self.threshold:
            raise ConfigError(f"lower={self.lower} is above threshold={self.threshold}; the lower (start/end) threshold must not exceed the peak one")
        if self.max_duration_s <= self.min_duration_s:
            raise ConfigError(f"max_duration_s={self.max_duration_s} must exceed min_duration_s={self.min_duration_s}")


def group_delay_samples(sos: np.ndarray, freq: float, fs: float) -> float:
    """Group delay (samples) of a filter in second-order sections at ``freq`` Hz (the phase slope)."""
    df = min(0.01, freq / 100.0)
    _, H = signal.sosfreqz(sos, worN=[freq - df, freq + df], fs=fs)
    dphi = np.angle(H[1] / H[0])
    return float(-dphi / (2 * math.pi * 2 * df / fs))


def align_delay(sos: np.ndarray, sos_ref: np.ndarray, band: tuple[float, float], fs: float) -> int:
    """Samples by which to delay the output of ``sos_ref`` so that it lines up with that of ``sos`` over ``band``.

    The integer delay ``D`` (0 to twice the group delay of ``sos``) that maximises the in-band agreement of
    the two responses, ``sum |H| cos(angle H - angle(H_ref e^{-j w D}))`` over ``band``: carriers and
    envelopes both line up, so the correlation co-criterion compares the same moment of the signal.
    """
    f = np.linspace(band[0], band[1], 32)
    _, H = signal.sosfreqz(sos, worN=f, fs=fs)
    _, Hr = signal.sosfreqz(sos_ref, worN=f, fs=fs)
    top = max(1, int(math.ceil(2 * group_delay_samples(sos, (band[0] + band[1]) / 2, fs))))
    d = np.arange(top + 1)
    score = (np.abs(H)[None, :] * np.cos(np.angle(H)[None, :] - np.angle(Hr)[None, :]
                                         + 2 * np.pi * f[None, :] * d[:, None] / fs)).sum(axis=1)
    return int(d[int(np.argmax(score))])


def _hilbert_gain(h: np.ndarray, lo: float, hi: float, fs: float) -> float:
    _, H = signal.freqz(h, worN=np.linspace(lo, hi, 64), fs=fs)
    return float(np.max(np.abs(np.abs(H) - 1.0)))


class Bursts(Node):
    """Bursts of an oscillation (sleep spindles, beta bursts) with onset and offset events.

    Each picked channel is band-passed (causal Butterworth, ``band``), its
    envelope taken as the magnitude of the analytic signal (a causal FIR
    Hilbert transformer, delay ``M`` samples), and run through a state
    machine, sample by sample:

    * thresholds are multiples (``lower`` and ``threshold``) of the median or
      a percentile of the envelope over a baseline window: the last
      ``baseline_s``, recomputed every ``update_s`` once ``baseline_min_s``
      has been seen (``running``), or the first ``baseline_s``, then fixed
      (``calibrated``);
    * a run starts where the envelope reaches the lower threshold and ends
      where it stays below it for longer than ``gap_s``;
    * it is a burst from the first sample at which it has lasted
      ``min_duration_s``, its peak has reached ``threshold`` times the
      baseline and the optional co-criteria hold (relative band power and
      band/broadband correlation over trailing windows, as YASA's spindle
      detector); a run that outlasts ``max_duration_s`` is not.

    Outputs
    -------
    main (feat)
        Every ``step_s``: ``<ch>:envelope`` (input units, at the delayed
        sample), ``<ch>:threshold`` (the peak threshold, NaN before a
        baseline exists), ``above`` (1 if any channel was in a run at any
        sample of the frame) and ``burst`` (1 if any was in a confirmed
        burst). A controller can gate on ``above`` or ``burst``
        (``pulse``'s third input).
    ``events`` (evt)
        ``burst_onset`` at the sample at which a burst is confirmed (the
        earliest it can be known): ``duration`` = its detection delay (s,
        from the estimated onset), ``value`` = the peak envelope so far.
        At the sample its end is known, ``burst_offset``: ``duration`` = the
        burst's duration (s), ``value`` = its peak envelope amplitude; and
        with it ``burst_frequency``: ``value`` = its frequency (Hz, from the
        upward zero crossings of the band-passed signal; NaN with fewer than
        two), ``duration`` = the time from its estimated onset (so the onset
        is ``time - duration``, as for ``burst_onset``). A burst that
        outlasts ``max_duration_s`` ends with ``burst_too_long`` instead
        (same fields as ``burst_offset``). ``channel`` is the position in
        ``picks``.

    The estimated onset is where the envelope crossed the lower threshold,
    moved back by the Hilbert delay and the band-pass group delay at the
    band centre (``desc``: ``delay_samples``, ``group_delay_samples``). Any
    split of the input gives identical frames and events. Non-finite input
    samples are held at the channel's last finite value and counted.

    Live parameters: ``threshold``, ``lower``, ``min_duration_s`` and
    ``max_duration_s``. :meth:`update` keeps the filters, the envelope, the
    baseline and a run under way; the current thresholds become the new
    multiples of the current baseline statistic at once (they stay unset
    before a baseline exists), and the run is judged with the new
    durations from the next sample. The band, the baseline settings, the
    gap and the co-criteria are fixed while running.

    Notes
    -----
    Envelope-threshold burst detection with a baseline-relative threshold
    and a duration criterion: Tinkhauser, G. et al. (2017) Brain 140:1053
    (beta bursts, 75th percentile); spindles: Ferrarelli, F. et al. (2007)
    Am J Psychiatry 164:483 (dual thresholds on the envelope). Co-criteria:
    Lacourse, K. et al. (2018) J Neurosci Methods 316:3; Vallat, R. &
    Walker, M.P. (2021) eLife 10:e70092 (YASA ``spindles_detect``: relative
    sigma power >= 0.2, correlation >= 0.65, duration 0.5-2 s). Hilbert
    transformer: Oppenheim & Schafer, Discrete-Time Signal Processing, sec. 12.4.3.
    """

    Params = BurstsParams
    input_kinds = ("sig",)
    live = ("threshold", "lower", "min_duration_s", "max_duration_s")

    def __init__(self, params: BurstsParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        src = inputs[0]
        fs = regular_rate(src, "burst detection")
        nyq = fs / 2
        lo, hi = params.band
        for name, (a, b) in (("band", params.band), ("broad_band", params.broad_band)):
            if b >= nyq:
                raise ConfigError(f"{name}={[a, b]} Hz must end below the Nyquist frequency {nyq:g} Hz of stream '{src.name}'")
        picks = resolve_picks(params.picks, src)
        if not picks:
            raise ConfigError(f"stream '{src.name}' has no channels to pick")
        self.sfreq = fs
        self.picks = np.array(picks, dtype=np.int64)
        self._sos = np.ascontiguousarray(signal.butter(params.order, params.band, "bandpass", fs=fs, output="sos"))
        self._sos_broad = np.ascontiguousarray(signal.butter(2, params.broad_band, "bandpass", fs=fs, output="sos"))
        self._zi0 = signal.sosfilt_zi(self._sos)
        self._zi0_broad = signal.sosfilt_zi(self._sos_broad)
        self._h = self._design_hilbert(params, fs)
        self.delay = self._h.size // 2
        self.group_delay = group_delay_samples(self._sos, (lo + hi) / 2, fs)
        gd = int(round(self.group_delay))
        db = align_delay(self._sos, self._sos_broad, params.band, fs)
        self._ring_len = max(self._h.size, self.delay + db + 1)
        self.step = max(1, int(round(params.step_s * fs)))
        sub = max(1, int(round(fs / BASELINE_RATE_HZ)))
        hn = max(1, int(round(params.baseline_s * fs / sub)))
        warm = hn if params.baseline == "calibrated" else min(hn, max(1, int(round(params.baseline_min_s * fs / sub))))
        min_n = int(round(params.min_duration_s * fs))
        max_n = int(round(params.max_duration_s * fs))
        gap_n = int(round(params.gap_s * fs))
        wc = int(round(params.corr_window_s * fs)) if params.corr_min is not None else 0
        wr = int(round(params.rel_power_window_s * fs)) if params.rel_power_min is not None else 0
        if params.corr_min is not None and wc < 3:
            raise ConfigError(f"corr_window_s={params.corr_window_s} holds {wc} samples at {fs:g} Hz; need at least 3")
        self._ip = np.array([self._h.size, sub, hn, max(1, int(round(params.update_s * fs))), warm,
                             int(params.baseline == "calibrated"), max(1, min_n), max_n, gap_n, gd, wc, wr, self.step, db],
                            dtype=np.int64)
        pct = 50.0 if params.statistic == "median" else params.percentile
        lower = params.threshold if params.lower is None else params.lower
        self._fp = np.array([params.threshold, lower, pct, params.rel_power_min or 0.0,
                             -1.0 if params.corr_min is None else params.corr_min])
        self._w = max(1, wc, wr)
        #: samples between a burst's estimated onset and the sample at which its end is known, minus its duration
        self.offset_delay = self.delay + gap_n + gd
        names = tuple(src.ch_names[p] for p in picks)
        unit = src.units[picks[0]] if src.units else ""
        desc = {"step": self.step, "window": self.step, "delay_samples": self.delay, "hilbert_taps": int(self._h.size),
                "group_delay_samples": self.group_delay, "offset_delay_s": self.offset_delay / fs, "band": list(params.band),
                "picks": list(names)}
        cols = tuple(f"{n}:envelope" for n in names) + tuple(f"{n}:threshold" for n in names) + ("above", "burst")
        units = (unit,) * (2 * len(names)) + ("", "")
        self.outputs = {
            "": StreamMeta(name=ctx.stream_name(), kind="feat", sfreq=fs / self.step, ch_names=cols,
                           ch_types=("misc",) * len(cols), units=units, dtype="<f8",
                           source=f"bursts {lo:g}-{hi:g} Hz of {src.name}", desc=desc),
        }
        if params.events:
            self.outputs["events"] = StreamMeta(
                name=ctx.stream_name("events"), kind="evt", sfreq=0.0, dtype="event",
                source=f"bursts {lo:g}-{hi:g} Hz of {src.name}: onset, offset, frequency",
                event_id={"burst_onset": ONSET_CODE, "burst_offset": OFFSET_CODE, "burst_too_long": TOO_LONG_CODE,
                          "burst_frequency": FREQUENCY_CODE}, desc=desc)
        self.reset()

    def update(self, params: BurstsParams) -> None:
        """New threshold multiples or durations; the detector's state stays (see the class docstring)."""
        old_hi, old_lo = float(self._fp[Q_HI]), float(self._fp[Q_LO])
        self.params = params
        hi = params.threshold
        lo = params.threshold if params.lower is None else params.lower
        self._fp[Q_HI] = hi
        self._fp[Q_LO] = lo
        # thresholds are multiples of the baseline statistic: the same statistic times the new multiples
        with np.errstate(invalid="ignore"):
            self._fst[:, F_HI] = np.where(np.isfinite(self._fst[:, F_HI]), self._fst[:, F_HI] / old_hi * hi, np.inf)
            self._fst[:, F_LO] = np.where(np.isfinite(self._fst[:, F_LO]), self._fst[:, F_LO] / old_lo * lo, np.inf)
        fs = self.sfreq
        self._ip[P_MIN] = max(1, int(round(params.min_duration_s * fs)))
        self._ip[P_MAX] = int(round(params.max_duration_s * fs))

    @staticmethod
    def _design_hilbert(params: BurstsParams, fs: float) -> np.ndarray:
        lo, hi = params.band
        if params.hilbert_s is not None:
            h = hilbert_fir(max(3, 2 * int(round(params.hilbert_s * fs / 2)) + 1))
            dev = _hilbert_gain(h, lo, hi, fs)
            if dev > HILBERT_GAIN_TOL:
                raise ConfigError(f"hilbert_s={params.hilbert_s} ({h.size} taps) has a gain off by {dev:.1%} over {lo:g}-{hi:g} Hz; "
                                  f"lengthen it or leave it out (the shortest flat one is chosen)")
            return h
        for taps in range(3, 2 * int(2 * fs) + 2, 2):
            h = hilbert_fir(taps)
            if _hilbert_gain(h, lo, hi, fs) <= HILBERT_GAIN_TOL:
                return h
        raise ConfigError(f"no Hilbert transformer up to 4 s is flat within {HILBERT_GAIN_TOL:.0%} over {lo:g}-{hi:g} Hz; "
                          "move the band away from 0 Hz and Nyquist")

    # -- state ----------------------------------------------------------------

    def reset(self) -> None:
        C = len(self.picks)
        self._zi: np.ndarray | None = None
        self._zi_broad = np.zeros((self._sos_broad.shape[0], 2, C))
        self._last = np.zeros(C)
        self._last_broad = np.zeros(C)
        self._h_rev = np.ascontiguousarray(self._h[::-1])
        self._ring = np.zeros((C, 2, 2 * self._ring_len))
        self._cring = np.zeros((C, 2, self._w))
        self._hist = np.zeros((C, int(self._ip[2])))
        self._ist = np.zeros((C, 4), dtype=np.int64)
        self._fst = np.zeros((C, 6))
        self._fst[:, F_HI] = np.inf
        self._fst[:, F_LO] = np.inf
        self._state = np.zeros(6, dtype=np.int64)
        self._counts = np.zeros(N_COUNTERS, dtype=np.int64)
        self._origin: int | None = None
        self.n_frames = 0
        self.n_replaced = 0
        self._durations: deque[float] = deque(maxlen=1000)  # of the last 1,000 bursts, for the report
        self._delays: deque[float] = deque(maxlen=1000)

    def warmup(self) -> None:
        n = max(4 * self._h.size, 2 * self.step, 64)
        x = np.random.default_rng(0).standard_normal((n, int(self.picks.max()) + 1))
        self.process(Chunk(x, 0, 0.0, self.sfreq, []))
        self.reset()

    # -- processing -----------------------------------------------------------

    def process(self, chunk: Chunk, port: int = 0) -> list | None:
        x = chunk.data
        n = x.shape[0]
        if n == 0:
            return None
        x = np.ascontiguousarray(x[:, self.picks], dtype=np.float64)
        if self._zi is None:
            self._origin = chunk.first
            x0 = np.where(np.isfinite(x[0]), x[0], 0.0)
            self._last[:] = x0
            self._last_broad[:] = x0
            self._zi = np.ascontiguousarray(self._zi0[:, :, None] * x0[None, None, :])
            self._zi_broad = np.ascontiguousarray(self._zi0_broad[:, :, None] * x0[None, None, :])
        band = np.empty_like(x)
        broad = np.empty_like(x)
        self.n_replaced += sosfilt_hold(self._sos, x, self._zi, self._last, band)
        sosfilt_hold(self._sos_broad, x, self._zi_broad, self._last_broad, broad)
        C = x.shape[1]
        max_ev = 2 * C * (n // max(1, int(self._ip[6])) + 2)
        ev_i = np.empty((max_ev, 4), dtype=np.int64)
        ev_f = np.empty((max_ev, 3))
        frames = np.empty((n // self.step + 1, 2 * C + 2))
        ends = np.empty(n // self.step + 1, dtype=np.int64)
        base = int(self._state[S_COUNT])  # count of chunk sample 0
        n_ev, n_fr = burst_detect(band, broad, self._h_rev, self._ring, self._cring, self._hist, self._ist, self._fst,
                                  self._state, self._counts, self._ip, self._fp, ev_i, ev_f, frames, ends)
        assert n_ev < max_ev
        origin = self._origin
        assert origin is not None
        out: list = []
        if n_fr:
            first = self.n_frames
            self.n_frames += n_fr
            out.append(("", frames_chunk(chunk, np.ascontiguousarray(frames[:n_fr]), ends[:n_fr], origin=origin,
                                         first_frame=first, window=self.step, step=self.step, fs=self.sfreq,
                                         of=self.inputs[0].name)))
        if n_ev and self.params.events:
            out.append(("events", Chunk(make_events(self._event_rows(ev_i[:n_ev], ev_f[:n_ev], chunk, base)),
                                        chunk.first, chunk.t0, 0.0, chunk.trace)))
        return out or None

    def _event_rows(self, ev_i: np.ndarray, ev_f: np.ndarray, chunk: Chunk, base: int) -> list[tuple]:
        fs = self.sfreq
        assert self._origin is not None
        rows: list[tuple] = []
        for (kind, k, c, onset), (dur, peak, freq) in zip(ev_i.tolist(), ev_f.tolist(), strict=True):
            idx = self._origin + k
            t = chunk.t0 + (k - base) / fs
            if kind == EV_ONSET:
                self._delays.append(dur / fs)
                rows.append((idx, t, ONSET_CODE, c, dur / fs, peak, "burst_onset"))
                continue
            too_long = kind == EV_TOO_LONG
            if not too_long:
                self._durations.append(dur / fs)
            rows.append((idx, t, TOO_LONG_CODE if too_long else OFFSET_CODE, c, dur / fs, peak,
                         "burst_too_long" if too_long else "burst_offset"))
            rows.append((idx, t, FREQUENCY_CODE, c, (k - onset) / fs, freq * fs, "burst_frequency"))
        return rows

    # -- reporting ------------------------------------------------------------

    def thresholds(self) -> tuple[np.ndarray, np.ndarray]:
        """The current upper and lower thresholds per picked channel (``inf`` before a baseline exists)."""
        return self._fst[:, F_HI].copy(), self._fst[:, F_LO].copy()

    def status(self) -> str:
        c = self._counts
        return f"bursts={int(c[C_OFFSETS])} onsets={int(c[C_ONSETS])}"

    def report(self) -> dict:
        c = self._counts
        hi, _ = self.thresholds()
        minutes = int(self._state[S_COUNT]) / self.sfreq / 60.0
        return {
            "frames": self.n_frames, "onsets": int(c[C_ONSETS]), "offsets": int(c[C_OFFSETS]),
            "too_long": int(c[C_TOO_LONG]), "too_short": int(c[C_SHORT]), "failed_criteria": int(c[C_CRITERIA]),
            "per_min": (int(c[C_OFFSETS]) / minutes) if minutes > 0 else None,
            "median_duration_s": float(np.median(self._durations)) if self._durations else None,
            "median_detection_delay_s": float(np.median(self._delays)) if self._delays else None,
            "threshold": [float(v) if math.isfinite(v) else None for v in hi.tolist()],
            "replaced_nonfinite": self.n_replaced,
        }
