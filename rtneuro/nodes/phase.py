"""Phase estimation for phase-locked stimulation, with online accuracy scoring."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .._lazy import lazy
from ..errors import ConfigError
from ..kernels.phase import (
    AR_BURG,
    AR_YULE_WALKER,
    ar_stream,
    echt_stream,
    hold_average,
    phase_triggers,
)
from ..messages import Chunk, StreamMeta, make_events
from .base import Node, NodeContext, param, regular_rate, resolve_picks

signal = lazy("scipy.signal")  # imported when a filter is designed (rtneuro/_lazy.py)

__all__ = ["Phase", "PhaseParams", "echt_weights", "analytic_weights", "gust_matrix", "true_phase", "TRIGGER_CODE", "SCORE_CODE"]

#: Event code of a trigger on port ``events`` (label ``"phase_trigger"``).
TRIGGER_CODE = 1
#: Event code of a scored trigger on port ``scores`` (label ``"true_phase"``).
SCORE_CODE = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseParams:
    """Parameters of :class:`Phase`."""

    band: tuple[float, float] = param((8.0, 13.0), doc="[low, high] in Hz of the rhythm to lock to")
    method: Literal["echt", "ar"] = param("echt", doc="endpoint-corrected Hilbert transform or AR forward prediction")
    picks: list[str] | None = param(None, doc="channels averaged into the one signal tracked (default: all)")
    window_s: float = param(0.5, gt=0, doc="analysis window; at least 3 cycles of the low band edge")
    hop: int = param(1, ge=1, doc="one estimate every hop samples; triggers still fall on the right sample")
    target_deg: float = param(0.0, ge=-180, le=180, doc="trigger phase in degrees (0 = peak, +-180 = trough)")
    amplitude_min: float = param(0.0, ge=0, doc="no trigger while the estimated amplitude is below it (input units)")
    min_interval_s: float = param(0.1, ge=0, doc="at least this long between two triggers")
    # method "ar"
    ar_order: int = param(10, ge=1, le=100, doc="ar: model order at the working rate")
    ar_method: Literal["yule-walker", "burg"] = param("yule-walker", doc="ar: how the model is fitted")
    decimate: int = param(1, ge=1, doc="ar: working rate is sfreq / decimate")
    edge_s: float = param(0.032, ge=0, doc="ar: filtered samples dropped at each end of the window, then predicted")
    ahead_s: float = param(0.064, ge=0, doc="ar: predicted past the present before the Hilbert transform")
    filter_order: int = param(2, ge=1, le=8, doc="ar: Butterworth order of the zero-phase band-pass")
    # online scoring
    score: bool = param(True, doc="score each trigger against the non-causal phase once lookahead_s has arrived")
    lookahead_s: float = param(0.5, gt=0, doc="scoring: samples each side of a trigger for the true phase")
    score_order: int = param(3, ge=1, le=8, doc="scoring: Butterworth order of the zero-phase band-pass")

    def __post_init__(self) -> None:
        lo, hi = self.band
        if not 0 < lo < hi:
            raise ConfigError(f"band={list(self.band)} needs 0 < low < high")
        if not -180.0 <= self.target_deg <= 180.0:
            raise ConfigError(f"target_deg={self.target_deg} must be within [-180, 180]")


def echt_weights(n: int, l_freq: float, h_freq: float, sfreq: float) -> np.ndarray:
    """Weights ``w`` (shape (n,), complex, oldest sample first) with ``ecHT(x)[-1] == x @ w``.

    The multiplier of the paper's algorithm: the analytic-signal mask (DC and
    Nyquist 1, positive bins 2, negative bins 0) times the frequency response
    of ``signal.butter(2, [l_freq, h_freq], "bandpass")`` at each FFT bin (the
    Nyquist bin at ``-sfreq / 2``, as the reference MATLAB code); its
    inverse FFT, reversed, gives the weights of the window's last sample.
    """
    k = np.arange(n // 2 + 1)
    mask = np.full(k.size, 2.0)
    mask[0] = 1.0
    freqs = k * sfreq / n
    if n % 2 == 0:
        mask[-1] = 1.0
        freqs[-1] = -sfreq / 2
    b, a = signal.butter(2, [l_freq, h_freq], "bandpass", fs=sfreq)
    _, resp = signal.freqz(b, a, worN=freqs, fs=sfreq)
    mult = np.zeros(n, dtype=np.complex128)
    mult[: k.size] = mask * resp
    return np.fft.ifft(mult)[::-1].copy()


def analytic_weights(n: int, index: int) -> np.ndarray:
    """Weights ``w`` (shape (n,), complex) with ``scipy.signal.hilbert(x)[index] == x @ w``."""
    mask = np.zeros(n)
    mask[0] = 1.0
    if n % 2 == 0:
        mask[n // 2] = 1.0
        mask[1: n // 2] = 2.0
    else:
        mask[1: (n + 1) // 2] = 2.0
    g = np.fft.ifft(mask)
    return g[(index - np.arange(n)) % n]


def gust_matrix(sos: np.ndarray, n: int) -> np.ndarray:
    """Pseudo-inverse (shape (4 * n_sections, n)) of Gustafsson's matrix for ``sos`` and length ``n``.

    The matrix ``[S^R - O, O^R - S]`` of ``scipy.signal.filtfilt``'s
    ``method="gust"``: ``O`` (shape (n, 2 * n_sections)) maps the initial
    state of the cascade (``sosfilt``'s ``zi``, flattened row by row) to its
    output with zero input, ``S`` filters ``O`` reversed, ``^R`` reverses the
    rows. The optimal initial states of a window ``x`` are this
    pseudo-inverse times ``bf(x) - fb(x)``; the matrix depends only on the
    filter and the window length, so it is computed once.
    """
    n_sec = sos.shape[0]
    ns = 2 * n_sec
    obs = np.empty((n, ns))
    for j in range(ns):
        zi = np.zeros(ns)
        zi[j] = 1.0
        obs[:, j] = signal.sosfilt(sos, np.zeros(n), zi=zi.reshape(n_sec, 2))[0]
    s = signal.sosfilt(sos, obs[::-1], axis=0)
    m = np.hstack((s[::-1] - obs, obs[::-1] - s))
    return np.ascontiguousarray(np.linalg.pinv(m))


def true_phase(segment: np.ndarray, center: int, sos: np.ndarray) -> float:
    """Non-causal phase at ``segment[center]``: ``sosfiltfilt`` then ``hilbert``."""
    return float(np.angle(signal.hilbert(signal.sosfiltfilt(sos, segment))[center]))


class Phase(Node):
    """Instantaneous phase of a rhythm at the newest sample, and phase-locked triggers.

    The picked channels are averaged (non-finite samples held at the
    channel's last finite value, and counted) into one signal. Every ``hop``
    samples, once a full window has arrived, the phase and amplitude at the
    newest sample are estimated by one of:

    ``echt``
        The endpoint-corrected Hilbert transform of the last ``window_s``
        (Schreglmann et al. 2021): analytic spectrum times the response of
        a causal 2nd-order Butterworth band-pass. Computed exactly as one
        complex dot product per estimate (see
        :func:`rtneuro.kernels.phase.echt_stream`).
    ``ar``
        AR forward prediction (Zrenner et al. 2018; Chen et al. 2013): the
        window is band-passed forward and backward (Butterworth,
        ``filter_order``, Gustafsson's initial states), optionally decimated, ``edge_s`` is cut at both
        ends, an AR model (``ar_order``, Yule-Walker or Burg) is fitted and
        predicts over the cut edge and ``ahead_s`` beyond; the analytic
        signal of that series is read at the present sample.

    Outputs
    -------
    main (feat)
        ``phase`` (rad, -pi..pi, 0 at a peak of the band-passed signal) and
        ``amplitude`` (input units), one row per estimate, at ``sfreq / hop``.
        The amplitude is that of the band-passed rhythm: a sine of
        amplitude A at f reads A |H(f)|, with H the causal Butterworth of
        ``echt`` or, for ``ar``, the squared response of the zero-phase
        band-pass (both 1 at the band centre).
    ``events`` (evt)
        A trigger (code 1, label ``phase_trigger``, ``value`` = amplitude)
        at the sample nearest to where the phase crosses ``target_deg``,
        with the amplitude at least ``amplitude_min`` and at least
        ``min_interval_s`` after the previous trigger. Between estimates the
        phase advances at the band centre frequency, so with ``hop > 1`` the
        trigger still falls on the right sample. A trigger is published
        with the chunk holding its sample, never ahead of the data.
    ``scores`` (evt)
        Online accuracy: once ``lookahead_s`` of samples after a trigger
        have arrived, its true phase is computed non-causally
        (``scipy.signal.sosfiltfilt`` with a Butterworth band-pass of
        ``score_order``, then ``scipy.signal.hilbert``, on the signal from
        ``lookahead_s`` before to ``lookahead_s`` after the trigger) and
        published (code 2, label ``true_phase``, ``index`` and ``time`` of
        the trigger, ``value`` = true phase in degrees). The circular mean
        error to the target, its circular SD and the phase-locking value
        accumulate in :meth:`report` and :meth:`status`.

    Any split of the input gives the same estimates, triggers and scores.

    Live parameters: ``target_deg``, ``amplitude_min`` and
    ``min_interval_s``. :meth:`update` keeps the estimator, the time of the
    last trigger (``min_interval_s`` counts from it) and the triggers
    waiting to be published or scored. From the first sample after the
    change, a trigger is where the phase crosses the new target (the
    previous sample's phase is measured against the new target too, so a
    change never fires a trigger by itself); each trigger is scored
    against the target in force when it fired. The band, the method and
    its settings are fixed while running.

    Notes
    -----
    Schreglmann, S.R. et al. (2021) Non-invasive suppression of essential
    tremor via phase-locked disruption of its temporal coherence. Nat Commun
    12:363. Zrenner, C. et al. (2018) Real-time EEG-defined excitability
    states determine efficacy of TMS-induced plasticity in human motor
    cortex. Brain Stimul 11:374. Chen, L.L. et al. (2013) Real-time
    brain oscillation detection and phase-locked stimulation using
    autoregressive spectral estimation and time-series forward prediction.
    IEEE Trans Biomed Eng 60:753. Circular statistics: the circular SD is
    ``sqrt(-2 ln R)`` (Mardia & Jupp 2000; ``circ_std`` of CircStat).
    """

    Params = PhaseParams
    input_kinds = ("sig",)
    live = ("target_deg", "amplitude_min", "min_interval_s")

    def __init__(self, params: PhaseParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        src = inputs[0]
        fs = regular_rate(src, "phase")
        lo, hi = params.band
        work_fs = fs / params.decimate if params.method == "ar" else fs
        if hi >= work_fs / 2:
            where = f"the working rate {work_fs:g} Hz (sfreq / decimate)" if params.method == "ar" and params.decimate > 1 else f"stream '{src.name}'"
            raise ConfigError(f"band={list(params.band)} Hz reaches the Nyquist frequency {work_fs / 2:g} Hz of {where}; lower the band's high edge")
        cycles = params.window_s * lo
        if cycles < 3.0:
            raise ConfigError(f"window_s={params.window_s} holds {cycles:.3g} cycles of {lo:g} Hz; need at least 3: set window_s >= {3.0 / lo:.3g}")
        picks = resolve_picks(params.picks, src)
        if not picks:
            raise ConfigError(f"stream '{src.name}' has no channels to pick")
        self.sfreq = fs
        self.picks = np.array(picks, dtype=np.int64)
        self.window = int(round(params.window_s * fs))
        self.hop = params.hop
        self.omega = 2 * math.pi * (lo + hi) / 2 / fs
        self.target = math.radians(params.target_deg)
        self.min_interval = int(round(params.min_interval_s * fs))
        if params.method == "echt":
            w = echt_weights(self.window, lo, hi, fs)
            self._w_re = np.ascontiguousarray(w.real)
            self._w_im = np.ascontiguousarray(w.imag)
        else:
            self._setup_ar(params, fs, work_fs)
        self.lookahead = max(1, int(round(params.lookahead_s * fs)))
        self._score_sos = signal.butter(params.score_order, [lo, hi], "bandpass", fs=fs, output="sos")
        if params.score and hi >= fs / 2:
            raise ConfigError(f"band={list(params.band)} Hz reaches the Nyquist frequency {fs / 2:g} Hz of stream '{src.name}'")
        unit = src.units[picks[0]] if src.units else ""
        label = ",".join(src.ch_names[p] for p in picks[:4]) + ("..." if len(picks) > 4 else "")
        desc = {"method": params.method, "band": list(params.band), "window": self.window, "hop": self.hop,
                "picks": [src.ch_names[p] for p in picks]}
        self.outputs = {
            "": StreamMeta(name=ctx.stream_name(), kind="feat", sfreq=fs / self.hop, ch_names=("phase", "amplitude"),
                           ch_types=("misc", "misc"), units=("rad", unit), dtype="<f8",
                           source=f"phase ({params.method}) {lo:g}-{hi:g} Hz of {src.name}:{label}", desc=desc),
            "events": StreamMeta(name=ctx.stream_name("events"), kind="evt", sfreq=0.0, dtype="event",
                                 source=f"phase triggers of {src.name}", event_id={"phase_trigger": TRIGGER_CODE}),
        }
        if params.score:
            self.outputs["scores"] = StreamMeta(
                name=ctx.stream_name("scores"), kind="evt", sfreq=0.0, dtype="event",
                source=f"true phase (deg) of each trigger, {params.lookahead_s:g} s later", event_id={"true_phase": SCORE_CODE})
        self.reset()

    def _setup_ar(self, params: PhaseParams, fs: float, work_fs: float) -> None:
        dec = params.decimate
        self._dec = dec
        self._edge = int(round(params.edge_s * work_fs))
        self._ahead = int(round(params.ahead_s * work_fs))
        n_work = (self.window - 1) // dec + 1
        n_keep = n_work - 2 * self._edge
        if n_keep < 2 * params.ar_order + 1:
            raise ConfigError(
                f"the AR fit gets {n_keep} samples (window {n_work} at {work_fs:g} Hz minus 2 x edge {self._edge}); "
                f"need more than 2 x ar_order={params.ar_order}: lengthen window_s, shorten edge_s or lower ar_order")
        self._n_keep = n_keep
        self._ar_code = AR_BURG if params.ar_method == "burg" else AR_YULE_WALKER
        self._sos = np.ascontiguousarray(signal.butter(params.filter_order, list(params.band), "bandpass", fs=fs, output="sos"))
        self._gust = gust_matrix(self._sos, self.window)
        n_ext = n_keep + self._edge + self._ahead
        h = analytic_weights(n_ext, n_keep + self._edge - 1)
        self._h_re = np.ascontiguousarray(h.real)
        self._h_im = np.ascontiguousarray(h.imag)
        p = params.ar_order
        self._scratch = (np.empty((self._sos.shape[0], 2)), np.empty(self.window), np.empty(self.window), np.empty(n_ext), np.empty(p),
                         np.empty(max(p + 1, n_ext)), np.empty(max(p + 1, n_ext)), np.empty(p + 1))

    # -- state ----------------------------------------------------------------

    def reset(self) -> None:
        n_p = len(self.picks)
        self._last = np.zeros(n_p)
        self._seeded = False
        self._ring = np.zeros(self.window)
        self._win = np.empty(self.window)
        self._state = np.zeros(1, dtype=np.int64)
        self._fstate = np.zeros(1)
        self._istate = np.array([0, -(1 << 62), 0, 0], dtype=np.int64)
        self._origin: int | None = None
        # the averaged signal, for scoring: positions [written - cap, written)
        self._block = self.lookahead + 1
        self._cap = 2 * self.lookahead + 2 * self._block + 2
        self._sbuf = np.zeros(self._cap)
        self._written = 0
        self._pending: list[tuple[int, float, float]] = []  # (position, amplitude, target) of triggers not yet published
        self._to_score: list[tuple[int, float, float]] = []  # (position, time, target) published, not yet scored
        self.n_frames = 0
        self.n_triggers = 0
        self.n_replaced = 0
        self.n_scored = 0
        self._sum_cos = 0.0
        self._sum_sin = 0.0

    def warmup(self) -> None:
        x = np.random.default_rng(0).standard_normal((self.window + 2 * self.hop + 2, int(self.picks.max()) + 1))
        self.process(Chunk(x, 0, 0.0, self.sfreq, []))
        self.reset()

    def update(self, params: PhaseParams) -> None:
        """Take a new target, amplitude floor or interval; the estimator and the trigger state stay."""
        old_target = self.target
        self.params = params
        self.target = math.radians(params.target_deg)
        self.min_interval = int(round(params.min_interval_s * self.sfreq))
        if self.target != old_target:
            # the previous sample's phase relative to the target, as if the new target had always been in force
            d = self._fstate[0] + old_target - self.target
            self._fstate[0] = (d + math.pi) % (2 * math.pi) - math.pi

    # -- processing -----------------------------------------------------------

    def _estimate(self, x: np.ndarray):
        n_max = x.shape[0] // self.hop + 2
        phase = np.empty(n_max)
        amp = np.empty(n_max)
        counts = np.empty(n_max, dtype=np.int64)
        if self.params.method == "echt":
            n = echt_stream(x, self._ring, self._state, self._w_re, self._w_im, self.hop, phase, amp, counts)
        else:
            n = ar_stream(x, self._ring, self._state, self.hop, self._win, self._sos, self._gust, self._dec, self._edge,
                          self.params.ar_order, self._ar_code, self._ahead, self._h_re, self._h_im, *self._scratch,
                          phase, amp, counts)
        return phase, amp, counts, n

    def process(self, chunk: Chunk, port: int = 0) -> list | None:
        x = chunk.data
        n = x.shape[0]
        if n == 0:
            return None
        if x.dtype != np.float64:
            x = x.astype(np.float64)
        if self._origin is None:
            self._origin = chunk.first
        if not self._seeded:  # as Bandpass: hold starts from the first sample (0 where it is not finite)
            x0 = x[0, self.picks]
            self._last[:] = np.where(np.isfinite(x0), x0, 0.0)
            self._seeded = True
        avg = np.empty(n)
        self.n_replaced += hold_average(x, self.picks, self._last, avg)
        frames: list[np.ndarray] = []
        frame_counts: list[np.ndarray] = []
        events: list[tuple] = []
        scores: list[tuple] = []
        fs = self.sfreq
        base = chunk.first - self._origin  # position of chunk sample 0
        for a in range(0, n, self._block):
            blk = avg[a:a + self._block]
            phase, amp, counts, k = self._estimate(blk)
            if k:
                frames.append(np.column_stack((phase[:k], amp[:k])))
                frame_counts.append(counts[:k].copy())
                trig = np.empty(k * self.hop, dtype=np.int64)
                tamp = np.empty(k * self.hop)
                nt = phase_triggers(phase, amp, counts, k, self.hop, self.omega, self.target, self.params.amplitude_min,
                                    self.min_interval, self._fstate, self._istate, trig, tamp)
                self._pending.extend((p, a, self.target) for p, a in zip(trig[:nt].tolist(), tamp[:nt].tolist(), strict=True))
            self._write(blk)
            while self._pending and self._pending[0][0] < self._written:
                p, trig_amp, target = self._pending.pop(0)
                t = chunk.t0 + (p - base) / fs
                events.append((self._origin + p, t, TRIGGER_CODE, -1, 0.0, trig_amp, "phase_trigger"))
                self.n_triggers += 1
                if self.params.score:
                    self._to_score.append((p, t, target))
            while self._to_score and self._to_score[0][0] + self.lookahead < self._written:
                p, t, target = self._to_score.pop(0)
                true = self._score(p, target)
                scores.append((self._origin + p, t, SCORE_CODE, -1, 0.0, math.degrees(true), "true_phase"))
        out: list = []
        if frames:
            rows = np.ascontiguousarray(np.concatenate(frames))
            cnt = np.concatenate(frame_counts)
            first_pos = int(cnt[0]) - 1
            t_first = chunk.t0 + (first_pos - base) / fs
            extra = {"window": [self._origin + int(cnt[-1]) - self.window, self._origin + int(cnt[-1]) - 1],
                     "of": self.inputs[0].name}
            out.append(("", Chunk(rows, self.n_frames, t_first, fs / self.hop, chunk.trace, extra)))
            self.n_frames += rows.shape[0]
        if events:
            out.append(("events", Chunk(make_events(events), chunk.first, chunk.t0, 0.0, chunk.trace)))
        if scores:
            out.append(("scores", Chunk(make_events(scores), chunk.first, chunk.t0, 0.0, chunk.trace)))
        return out or None

    def _write(self, blk: np.ndarray) -> None:
        cap = self._cap
        n = blk.shape[0]
        start = self._written % cap
        first = min(n, cap - start)
        self._sbuf[start:start + first] = blk[:first]
        if first < n:
            self._sbuf[: n - first] = blk[first:]
        self._written += n

    def _segment(self, a: int, b: int) -> np.ndarray:
        """Averaged samples at positions [a, b)."""
        assert a >= self._written - self._cap and b <= self._written
        idx = np.arange(a, b) % self._cap
        return self._sbuf[idx]

    def _score(self, p: int, target: float) -> float:
        a = max(0, p - self.lookahead)
        seg = self._segment(a, p + self.lookahead + 1)
        true = true_phase(seg, p - a, self._score_sos)
        err = true - target
        self._sum_cos += math.cos(err)
        self._sum_sin += math.sin(err)
        self.n_scored += 1
        return true

    # -- reporting ------------------------------------------------------------

    def accuracy(self) -> dict:
        """Circular mean error (deg), circular SD (deg) and PLV of the scored triggers."""
        n = self.n_scored
        if n == 0:
            return {"scored": 0, "mean_error_deg": None, "sd_deg": None, "plv": None}
        c, s = self._sum_cos / n, self._sum_sin / n
        r = math.hypot(c, s)
        sd = math.degrees(math.sqrt(-2.0 * math.log(r))) if r > 0 else math.inf
        return {"scored": n, "mean_error_deg": math.degrees(math.atan2(s, c)), "sd_deg": sd, "plv": r}

    def status(self) -> str:
        acc = self.accuracy()
        if not acc["scored"]:
            return f"phase triggers={self.n_triggers} n=0"
        return f"phase err {acc['mean_error_deg']:+.0f}±{acc['sd_deg']:.0f} deg n={acc['scored']}"

    def report(self) -> dict:
        acc = self.accuracy()
        return {"frames": self.n_frames, "triggers": self.n_triggers, "replaced_nonfinite": self.n_replaced,
                "refused_amplitude": int(self._istate[2]), "refused_interval": int(self._istate[3]),
                "pending_scores": len(self._to_score), **acc}
