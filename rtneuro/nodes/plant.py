"""A simulated brain to close the loop on: an STN LFP with pathological beta that responds to stimulation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .._lazy import lazy
from ..errors import ConfigError, did_you_mean
from ..hardware.simulated import WAVEFORM_FIELDS
from ..kernels.iir import sosfilt_hold
from ..messages import Chunk, StreamMeta
from ..models.plant import StnGpeParams, hfs_dose, stn_gpe_init, stn_gpe_step
from .base import GeneratorSource, NodeContext, param
from .sources import BlockNoise, aperiodic_sos

signal = lazy("scipy.signal")  # imported when a filter is designed (rtneuro/_lazy.py)

__all__ = ["SimBrain", "SimBrainParams"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SimBrainParams:
    """Parameters of :class:`SimBrain`."""

    sfreq: float = param(1000.0, ge=250, le=20000, doc="LFP sampling rate")
    chunk_size: int = param(20, ge=1, le=100000, doc="samples per chunk")
    duration_s: float | None = param(None, gt=0, doc="stop after this much signal (default: never)")
    seed: int = param(0, ge=0)
    model: dict[str, float] = param({"w_gs": 1.2}, doc="STN-GPe model parameters (rtneuro.models.plant.StnGpeParams) that differ from its defaults")
    lfp_uv_per_hz: float = param(0.25, gt=0, doc="LFP per spike/s of STN population rate deviation")
    aperiodic_amplitude: float = param(4.0, ge=0, doc="1/f background, uV rms")
    aperiodic_exponent: float = param(1.5, ge=0, le=2)
    noise_amplitude: float = param(1.0, ge=0, doc="white sensor noise, uV rms")
    settle_s: float = param(2.0, ge=0, le=60, doc="model time simulated before the first sample (past the start-up transient)")
    stim_channel: int = param(0, ge=0, doc="the stimulator channel on the STN")
    feedback_delay_s: float = param(0.02, ge=0, le=1, doc="stimulation acts this long after the stimulator delivered it")


class SimBrain(GeneratorSource):
    """Source that runs a basal-ganglia model (:mod:`rtneuro.models.plant`) and publishes its LFP.

    Outputs ``<id>``, a one-channel STN local field potential in uV (the STN
    population rate's deviation from its slow mean, plus a 1/f background and
    white sensor noise), and ``<id>.truth``, the model's hidden state at the
    same rate (STN and GPe rates, the fraction of STN output DBS blocks, the
    dose). Beta bursts near 17 Hz wax and wane with the model's noisy
    cortical drive.

    It takes the stimulation a simulated stimulator delivered as
    ``feedback`` (``feedback: [stim.delivered]``): each sample's dose is the
    amplitude and frequency the stimulator delivered ``feedback_delay_s``
    earlier. What was not delivered yet holds the last known state (a device
    holds its level until told otherwise). With the whole loop in one process
    on the virtual clock, everything the stimulator delivered before a chunk
    begins has reached the model when the chunk is computed, so a closed
    loop replays bit for bit; ``late_feedback`` in the report counts any
    stimulation change that arrived after the model had passed it (other
    layouts, live runs).
    """

    Params = SimBrainParams
    feedback_kinds = ("sig",)

    def __init__(self, params: SimBrainParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        names = {f.name for f in fields(StnGpeParams)}
        for k in params.model:
            if k not in names:
                raise ConfigError(f"model: {k!r} is not a parameter of the STN-GPe model{did_you_mean(k, sorted(names))}; "
                                  f"they are {sorted(names)}")
        self.model = StnGpeParams(**params.model)
        sub = 1000.0 / params.sfreq / self.model.dt_ms
        if abs(sub - round(sub)) > 1e-9 or round(sub) < 1:
            raise ConfigError(f"sfreq={params.sfreq} Hz is not a whole number of model steps of {self.model.dt_ms} ms")
        self.sub = int(round(sub))
        self.sfreq = params.sfreq
        self._end = None if params.duration_s is None else int(round(params.duration_s * params.sfreq))
        self._sos = np.ascontiguousarray(aperiodic_sos(params.aperiodic_exponent, params.sfreq))
        _, h = signal.sosfreqz(self._sos, worN=8192, fs=params.sfreq)
        self._ap_gain = params.aperiodic_amplitude / np.sqrt(np.mean(np.abs(h) ** 2))
        self._ema = 1.0 - math.exp(-1.0 / (2.0 * params.sfreq))  # the LFP's slow mean: 2 s time constant
        desc = {"model": "STN-GPe rate loop (Holgado, Terry & Bogacz 2010)", "parameters": {f.name: getattr(self.model, f.name) for f in fields(StnGpeParams)}}
        self.outputs = {
            "": StreamMeta(name=ctx.stream_name(), kind="sig", sfreq=params.sfreq, ch_names=("STN",), ch_types=("dbs",),
                           units=("uV",), dtype="<f8", source=f"sim_brain seed={params.seed}", desc=desc),
            "truth": StreamMeta(name=ctx.stream_name("truth"), kind="sig", sfreq=params.sfreq,
                                ch_names=("stn_hz", "gpe_hz", "dbs_block", "dose_ma"), ch_types=("misc",) * 4,
                                units=("Hz", "Hz", "", "mA"), dtype="<f8", source=f"sim_brain seed={params.seed} hidden state"),
        }
        self.reset()

    @staticmethod
    def check_feedback(params: SimBrainParams, port: int, meta: StreamMeta) -> None:
        c = params.stim_channel
        need = [f"ch{c}.amplitude_ma", f"ch{c}.frequency_hz"]
        missing = [n for n in need if n not in meta.ch_names]
        if missing:
            raise ConfigError(f"has no {missing}: feed back a simulated stimulator's '<id>.delivered' stream with channel {c} in its profile")
        if not meta.sfreq > 0:
            raise ConfigError("must be a regular stream (a simulated stimulator's '<id>.delivered')")

    def reset(self) -> None:
        self._index = 0
        self._origin = 0.0
        self._drive_noise = BlockNoise(self.params.seed, self.sub)  # the cortical drive's, per model step
        self._sensor_noise = BlockNoise(self.params.seed, 1)  # sensor noise and the 1/f background
        self.state = stn_gpe_init(self.model)
        self._zi = np.zeros((self._sos.shape[0], 2, 1))
        self._last = np.zeros(1)
        self._fb_origin: float | None = None  # the delivered stream's sample grid
        self._fb_rate = 0.0
        self._fb_first = self._fb_next = 0  # feedback samples kept: [first, next)
        self._fb_dose = np.empty(0)
        self._held: tuple[float, float] | None = None  # (since, dose) the device holds until told otherwise
        self._pre = 0.0  # the dose before that
        self._simulated_to = -math.inf
        self.late_feedback = 0
        self.held_samples = 0
        self.feedback_samples = 0
        n = int(round(self.params.settle_s * self.sfreq))
        if n:
            rng = np.random.default_rng([self.params.seed, 9])
            s, _, _ = stn_gpe_step(self.state, self.model, rng.standard_normal(n * self.sub), np.zeros(n), self.sub)
            start = s[-min(n, int(self.sfreq)):].mean()
        else:
            start = self.model.b_s
        self._mean_zi = np.array([start * (1.0 - self._ema)])  # the slow mean's filter state

    def warmup(self) -> None:
        st = stn_gpe_init(self.model)
        stn_gpe_step(st, self.model, np.zeros(self.sub), np.zeros(1), self.sub)

    def prefetch(self) -> None:
        """Nothing ahead of time: the next chunk depends on the stimulation still to come."""

    # -- feedback ---------------------------------------------------------

    def process(self, chunk: Chunk, port: int = 0) -> None:
        """Stimulation the stimulator delivered (a chunk of its ``<id>.delivered`` stream)."""
        extra = chunk.extra or {}
        c = self.params.stim_channel
        if self._fb_origin is None:
            if not isinstance(extra.get("origin"), (int, float)):
                raise ConfigError("feedback carries no sample grid: feed back a simulated stimulator's '<id>.delivered' stream")
            self._fb_origin, self._fb_rate = float(extra["origin"]), float(chunk.sfreq)
            self._fb_first = self._fb_next = int(chunk.first)
        n = chunk.data.shape[0]
        if n:
            w = len(WAVEFORM_FIELDS)
            dose = hfs_dose(chunk.data[:, w * c], chunk.data[:, w * c + 1])
            ks = chunk.first + np.arange(n)
            # a change the model has already passed (with its delay) came too late to act: count it
            passed = self._sample_time(ks) + self.params.feedback_delay_s < self._simulated_to
            if passed.any():
                assumed = self._lookup(ks[passed])
                self.late_feedback += int(np.count_nonzero(dose[passed] != assumed))
            drop = max(0, min(self._fb_dose.size, int(chunk.first) - int(2 * self._fb_rate) - self._fb_first))
            self._fb_dose = np.concatenate([self._fb_dose[drop:], dose])  # two seconds of history are plenty
            self._fb_first += drop
            self._fb_next = int(chunk.first) + n
            self.feedback_samples += n
        level, now = extra.get("level"), extra.get("now")
        if isinstance(level, list) and len(level) > c and isinstance(now, (int, float)):
            d = float(hfs_dose(np.array([level[c][0]]), np.array([level[c][1]]))[0])
            if self._held is None or d != self._held[1]:
                self._pre = self._held[1] if self._held is not None else 0.0
                self._held = (float(now), d)
        return None

    def _sample_time(self, k: np.ndarray) -> np.ndarray:
        assert self._fb_origin is not None
        return self._fb_origin + k / self._fb_rate  # the stimulator's own arithmetic

    def _bins(self, t: np.ndarray) -> np.ndarray:
        """The feedback sample whose interval holds each time (as the stimulator bins pulses)."""
        assert self._fb_origin is not None
        k = np.floor((t - self._fb_origin) * self._fb_rate).astype(np.int64)
        k += self._sample_time(k + 1) <= t
        k -= self._sample_time(k) > t
        return k

    def _lookup(self, ks: np.ndarray) -> np.ndarray:
        """Dose of feedback samples ``ks``: delivered, or beyond them the level the device holds."""
        out = np.zeros(ks.size)
        have = (ks >= self._fb_first) & (ks < self._fb_next)
        out[have] = self._fb_dose[ks[have] - self._fb_first]
        ahead = ks >= self._fb_next
        if ahead.any() and self._held is not None:
            t_held, d_held = self._held
            out[ahead] = np.where(self._sample_time(ks[ahead]) >= t_held, d_held, self._pre)
        elif ahead.any() and self._fb_dose.size:
            out[ahead] = self._fb_dose[-1]
        return out

    def _dose_at(self, times: np.ndarray) -> np.ndarray:
        """The dose in effect at each (delayed) time; 0 before the stimulator's first word."""
        if self._fb_origin is None:
            return np.zeros(times.size)
        ks = self._bins(times)
        self.held_samples += int(np.count_nonzero(ks >= self._fb_next))
        return np.where(ks >= 0, self._lookup(ks), 0.0)

    # -- output ------------------------------------------------------------

    def read(self) -> list[tuple[str, Chunk]]:
        p = self.params
        n = self._remaining()
        a = self._index
        t0 = self._origin + a / self.sfreq
        times = t0 + np.arange(n) / self.sfreq
        dose = self._dose_at(times - p.feedback_delay_s)
        s, g, b = stn_gpe_step(self.state, self.model, self._drive_noise.take(0, a, n).ravel(), dose, self.sub)
        mean, self._mean_zi = signal.lfilter([self._ema], [1.0, self._ema - 1.0], s, zi=self._mean_zi)
        x = (p.lfp_uv_per_hz * (s - mean))[:, None] + self._sensor_noise.take(1, a, n) * p.noise_amplitude
        if p.aperiodic_amplitude > 0:
            ap = np.empty((n, 1))
            sosfilt_hold(self._sos, self._sensor_noise.take(2, a, n), self._zi, self._last, ap)
            x += ap * self._ap_gain
        self._index += n
        self._simulated_to = float(times[-1]) + 1.0 / self.sfreq
        truth = np.column_stack([s, g, b, dose])
        return [("", Chunk(np.ascontiguousarray(x), a, t0, self.sfreq, [])),
                ("truth", Chunk(truth, a, t0, self.sfreq, []))]

    def report(self) -> dict[str, Any]:
        return {"samples": self._index, "feedback_samples": self.feedback_samples,
                "held_samples": self.held_samples, "late_feedback": self.late_feedback}
