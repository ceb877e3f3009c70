"""Adaptive controllers: threshold aDBS, PID, and controllers that are neuron and network models.

Every controller here decides once per feature frame and emits one command
per frame (a ``hold`` heartbeat when nothing changes), plus its state on
``<id>.state`` (a feature stream at the frame rate, recorded with the rest).
A non-finite feature holds the current output for ``nan_hold_s`` of stream
time, then switches stimulation off (the safe state) until finite values
come back; both are counted.

Live parameters: every controller here takes live changes of the waveform
(``pulse_width_us``, ``frequency_hz``, ``ramp_s``, ``train_s``),
``deadline_ms`` and ``nan_hold_s``, plus its own gains, targets and limits
(see each class). ``feature`` and ``channel`` are fixed while running.
:meth:`update` keeps the controller's running and learnt state; the
frames after the change are decided with the new values, and a command
already sent is not repeated, except where a class says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

import numpy as np

from ..errors import ConfigError, did_you_mean
from ..messages import (
    CMD_HOLD,
    CMD_LEVEL,
    CMD_OFF,
    CMD_PULSE,
    CMD_TRAIN,
    COMMAND_DTYPE,
    Chunk,
    StreamMeta,
)
from .base import Node, NodeContext, param
from .controllers import _extra, command_meta

__all__ = ["Adbs", "AdbsParams", "Pid", "PidParams", "LifTrigger", "LifTriggerParams", "RateAdaptive", "RateAdaptiveParams"]


@dataclass(frozen=True, slots=True, kw_only=True)
class _ControllerParams:
    """What every feature controller here takes: the feature, the waveform, deadlines, non-finite handling."""

    feature: str | None = param(None, doc="feature column (required when the stream has several)")
    channel: int = param(0, ge=0)
    pulse_width_us: float = param(60.0, gt=0)
    frequency_hz: float = param(130.0, gt=0)
    ramp_s: float = param(0.0, ge=0, doc="reach each new amplitude over this long (the profile's ramp rates apply too)")
    deadline_ms: float = param(100.0, gt=0, doc="a command not applied within this long is refused (not on the virtual clock)")
    nan_hold_s: float = param(0.5, ge=0, doc="non-finite features: hold this long, then stimulation off")
    train_s: float = param(0.0, ge=0, doc="duration of train commands")


class _FeatureController(Node):
    """One decision per frame of one feature column; commands on ``<id>``, state on ``<id>.state``."""

    category = "controller"
    input_kinds = ("feat",)
    max_inputs = 1
    #: names (and units) of the state columns, set by each controller
    STATE: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: live parameters every controller here takes (see the module docstring)
    LIVE_COMMON: ClassVar[tuple[str, ...]] = ("pulse_width_us", "frequency_hz", "ramp_s", "train_s", "deadline_ms", "nan_hold_s")

    def __init__(self, params: Any, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        src = inputs[0]
        feature = params.feature
        if feature is None:
            if src.n_channels != 1:
                raise ConfigError(f"stream '{src.name}' has {src.n_channels} features {list(src.ch_names)[:6]}; set 'feature' to one of them")
            self.col = 0
        elif feature not in src.ch_names:
            raise ConfigError(f"feature {feature!r} is not in stream '{src.name}'{did_you_mean(feature, src.ch_names)}; it has {list(src.ch_names)[:8]}")
        else:
            self.col = src.ch_names.index(feature)
        if not src.sfreq > 0:
            raise ConfigError(f"stream '{src.name}' has no frame rate; a controller needs regular feature frames")
        self.frame_s = 1.0 / src.sfreq
        self.outputs = {
            "": command_meta(ctx.stream_name(), f"{type(self).__name__.lower()} on {src.name}:{src.ch_names[self.col]}"),
            "state": StreamMeta(name=ctx.stream_name("state"), kind="feat", sfreq=src.sfreq,
                                ch_names=tuple(n for n, _ in self.STATE), ch_types=("misc",) * len(self.STATE),
                                units=tuple(u for _, u in self.STATE), source=f"state of controller {ctx.node_id}",
                                desc=dict(src.desc) if src.desc else {}),
        }
        self.reset()

    def reset(self) -> None:
        self.decisions = 0
        self.nonfinite = 0
        self.nan_safe = 0
        self._t_finite: float | None = None
        self._nan_off = False
        self.amplitude = 0.0  # what this controller last asked for
        self._reset()

    def _reset(self) -> None:
        """The controller's own state."""

    def update(self, params: Any) -> None:
        """Take live parameters between two frames, keeping the controller's state (see each class)."""
        old, self.params = self.params, params
        self._changed(old)

    def _changed(self, old: Any) -> None:
        """Rebuild what depends on the parameters that changed (``old`` are the previous ones)."""

    def _decide(self, v: float, t: float) -> tuple[int, float]:
        """``(kind, amplitude)`` for a finite feature value at stream time ``t``."""
        raise NotImplementedError  # pragma: no cover - interface

    def _state(self, v: float) -> list[float]:
        raise NotImplementedError  # pragma: no cover - interface

    def _on_nan_off(self) -> None:
        """The controller was forced off by non-finite features (reset what must be)."""

    def process(self, chunk: Chunk, port: int = 0) -> list[tuple[str, Chunk]] | None:
        if port != 0:
            self._feedback(chunk, port)
            return None
        p = self.params
        values = chunk.data[:, self.col].tolist()
        n = len(values)
        if n == 0:
            return None
        dt = 1.0 / chunk.sfreq if chunk.sfreq > 0 else self.frame_s
        recs, states = [], []
        for i, v in enumerate(values):
            t = chunk.t0 + i * dt
            kind, amp = CMD_HOLD, 0.0
            if math.isfinite(v):
                self._t_finite = t
                self._nan_off = False
                kind, amp = self._decide(v, t)
            else:
                self.nonfinite += 1
                since = t - (self._t_finite if self._t_finite is not None else t)
                if since >= p.nan_hold_s and not self._nan_off:
                    self._nan_off = True
                    if self.amplitude > 0:
                        self.nan_safe += 1
                        kind, amp = CMD_OFF, 0.0
                        self.amplitude = 0.0
                        self._on_nan_off()
            recs.append(self._record(kind, amp))
            states.append(self._state(v))
        self.decisions += n
        cause: dict[str, Any] = {"stream": self.inputs[0].name, "frames": [chunk.first, chunk.first + n - 1],
                                 "t_last": chunk.t0 + (n - 1) * dt, "values": values,
                                 "state": dict(zip((s for s, _ in self.STATE), states[-1], strict=True))}
        if chunk.extra and "window" in chunk.extra:
            cause["window"] = chunk.extra["window"]
            cause["of"] = chunk.extra.get("of")
        cmds = Chunk(np.array(recs, dtype=COMMAND_DTYPE), chunk.first, chunk.t0, chunk.sfreq, chunk.trace,
                     _extra(cause, self.ctx.command_deadline(p.deadline_ms)))
        state = Chunk(np.array(states, dtype=np.float64).reshape(n, len(self.STATE)), chunk.first, chunk.t0, chunk.sfreq, list(chunk.trace))
        return [("", cmds), ("state", state)]

    def _feedback(self, chunk: Chunk, port: int) -> None:
        """Feedback streams (the gate's decisions): controllers that learn use them."""

    def _record(self, kind: int, amp: float) -> tuple:
        p = self.params
        if kind == CMD_LEVEL:
            return (CMD_LEVEL, p.channel, amp, p.pulse_width_us, p.frequency_hz, 0.0, 0, p.ramp_s)
        if kind == CMD_OFF:
            return (CMD_OFF, p.channel, 0.0, 0.0, 0.0, 0.0, 0, p.ramp_s)
        if kind == CMD_TRAIN:
            return (CMD_TRAIN, p.channel, amp, p.pulse_width_us, p.frequency_hz, p.train_s, 0, 0.0)
        if kind == CMD_PULSE:
            return (CMD_PULSE, p.channel, amp, p.pulse_width_us, 0.0, 0.0, 0, 0.0)
        return (CMD_HOLD, p.channel, 0.0, 0.0, 0.0, 0.0, 0, 0.0)

    def _set(self, amp: float) -> tuple[int, float]:
        """Ask for ``amp`` (off at 0); a hold if it is what was asked last."""
        amp = max(0.0, float(amp))
        if abs(amp - self.amplitude) < 1e-12:
            return CMD_HOLD, 0.0
        self.amplitude = amp
        return (CMD_LEVEL, amp) if amp > 0 else (CMD_OFF, 0.0)

    def report(self) -> dict:
        return {"decisions": self.decisions, "nonfinite": self.nonfinite, "nan_safe": self.nan_safe,
                "amplitude_ma": self.amplitude, **self._report()}

    def _report(self) -> dict:
        return {}


# -- threshold aDBS ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AdbsParams(_ControllerParams):
    """Parameters of :class:`Adbs`."""

    mode: Literal["single", "dual"] = param("single", doc="single: on/off at one threshold; dual: step the amplitude between two")
    threshold: float | None = param(None, doc="single: stimulate while the feature is above it")
    lower: float | None = param(None, doc="dual: step the amplitude down while the feature is below it")
    upper: float | None = param(None, doc="dual: step the amplitude up while the feature is above it")
    onset_s: float = param(0.2, ge=0, doc="the feature must stay above (threshold/upper) this long before a step up")
    termination_s: float = param(0.4, ge=0, doc="the feature must stay below (threshold/lower) this long before a step down")
    amplitude_ma: float = param(2.0, gt=0, doc="single: the on amplitude; dual: the highest amplitude")
    min_amplitude_ma: float = param(0.0, ge=0, doc="dual: the lowest amplitude (0: off)")
    step_ma: float = param(0.5, gt=0, doc="dual: amplitude change per step")
    ramp_s: float = param(0.25, ge=0, doc="reach each new amplitude over this long (the profile's ramp rates apply too)")


class Adbs(_FeatureController):
    """Adaptive DBS on a biomarker (beta power), as implanted aDBS systems do it.

    ``single`` (Little et al. 2013, Ann Neurol 74:449): stimulation switches
    on at ``amplitude_ma`` once the feature has stayed above ``threshold``
    for ``onset_s``, and off once it has stayed below it for
    ``termination_s``. ``dual`` (the dual-threshold mode of sensing
    neurostimulators; Velisar et al. 2019, Brain Stimul 12:868): while the
    feature stays above ``upper`` the amplitude rises by ``step_ma`` every
    ``onset_s`` up to ``amplitude_ma``; while it stays below ``lower`` it falls
    every ``termination_s`` down to ``min_amplitude_ma``; in between it holds.
    Onset and termination debounce the decision; every change is reached over
    ``ramp_s`` (the gate also enforces the profile's ramp rates).

    Live parameters: ``threshold``, ``lower``, ``upper``, ``onset_s``,
    ``termination_s``, ``amplitude_ma``, ``min_amplitude_ma``, ``step_ma``
    and the common ones. :meth:`update` keeps the amplitude asked for and
    the times since the feature went above or below, so onset and
    termination count on across the change, judged against the new
    thresholds from the next frame. While stimulating, new amplitude
    limits are applied on the next finite frame that changes nothing else:
    ``single`` moves to the new ``amplitude_ma``; ``dual`` moves into
    ``[min_amplitude_ma, amplitude_ma]`` if the amplitude has left it.
    ``mode`` is fixed while running.
    """

    Params = AdbsParams
    live = _FeatureController.LIVE_COMMON + ("threshold", "lower", "upper", "onset_s", "termination_s", "amplitude_ma",
                                             "min_amplitude_ma", "step_ma")
    STATE = (("feature", ""), ("amplitude_ma", "mA"), ("above_s", "s"), ("below_s", "s"))

    def __init__(self, params: AdbsParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        if params.mode == "single" and params.threshold is None:
            raise ConfigError("mode 'single' needs 'threshold'")
        if params.mode == "dual":
            if params.lower is None or params.upper is None:
                raise ConfigError("mode 'dual' needs 'lower' and 'upper'")
            if not params.lower < params.upper:
                raise ConfigError(f"lower ({params.lower}) must be below upper ({params.upper})")
            if params.min_amplitude_ma >= params.amplitude_ma:
                raise ConfigError(f"min_amplitude_ma ({params.min_amplitude_ma}) must be below amplitude_ma ({params.amplitude_ma})")
        super().__init__(params, inputs, ctx)

    def _reset(self) -> None:
        self._above_since: float | None = None
        self._below_since: float | None = None
        self.steps_up = 0
        self.steps_down = 0
        self._retarget = False

    def _changed(self, old: Any) -> None:
        p = self.params
        if (p.amplitude_ma, p.min_amplitude_ma) != (old.amplitude_ma, old.min_amplitude_ma):
            self._retarget = True

    def _limited(self) -> tuple[int, float]:
        """After a live change of the amplitude limits: move the running amplitude into them."""
        self._retarget = False
        p = self.params
        if self.amplitude <= 0:
            return CMD_HOLD, 0.0
        if p.mode == "single":
            return self._set(p.amplitude_ma)
        return self._set(min(p.amplitude_ma, max(p.min_amplitude_ma, self.amplitude)))

    def _decide(self, v: float, t: float) -> tuple[int, float]:
        p = self.params
        hi = p.threshold if p.mode == "single" else p.upper
        lo = p.threshold if p.mode == "single" else p.lower
        assert hi is not None and lo is not None
        self._above_since = (self._above_since if self._above_since is not None else t) if v > hi else None
        self._below_since = (self._below_since if self._below_since is not None else t) if v < lo else None
        # a frame is dt long: "stayed above for onset_s" counts the frame itself
        up = self._above_since is not None and t - self._above_since + self.frame_s >= p.onset_s - 1e-9
        down = self._below_since is not None and t - self._below_since + self.frame_s >= p.termination_s - 1e-9
        if p.mode == "single":
            if up and self.amplitude == 0:
                self.steps_up += 1
                return self._set(p.amplitude_ma)
            if down and self.amplitude > 0:
                self.steps_down += 1
                return self._set(0.0)
            return self._limited() if self._retarget else (CMD_HOLD, 0.0)
        if up and self.amplitude < p.amplitude_ma:
            self._above_since = t + self.frame_s  # the next step needs another onset_s above
            self.steps_up += 1
            return self._set(min(p.amplitude_ma, max(self.amplitude, p.min_amplitude_ma) + p.step_ma))
        if down and self.amplitude > p.min_amplitude_ma:
            self._below_since = t + self.frame_s
            self.steps_down += 1
            return self._set(max(p.min_amplitude_ma, self.amplitude - p.step_ma))
        return self._limited() if self._retarget else (CMD_HOLD, 0.0)

    def _state(self, v: float) -> list[float]:
        return [v, self.amplitude, 0.0 if self._above_since is None else 1.0, 0.0 if self._below_since is None else 1.0]

    def _report(self) -> dict:
        return {"mode": self.params.mode, "steps_up": self.steps_up, "steps_down": self.steps_down}


# -- PID ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PidParams(_ControllerParams):
    """Parameters of :class:`Pid`."""

    target: float = param(doc="the feature level to hold")
    kp: float = param(0.1, ge=0, doc="mA per feature unit of error")
    ki: float = param(0.05, ge=0, doc="mA per feature unit and second")
    kd: float = param(0.0, ge=0, doc="mA per feature unit per second")
    direction: Literal["above", "below"] = param("above", doc="above: more stimulation when the feature is above target")
    min_amplitude_ma: float = param(0.0, ge=0)
    max_amplitude_ma: float = param(3.0, gt=0)
    min_change_ma: float = param(0.05, ge=0, doc="send a new level only when it moves at least this much")


class Pid(_FeatureController):
    """PID control of stimulation amplitude on a feature.

    ``u = kp e + ki integral(e dt) + kd de/dt`` with ``e = feature - target``
    (``direction: above``) or its negative, clamped to ``[min_amplitude_ma,
    max_amplitude_ma]``; the integral stops growing while the output is
    saturated (anti-windup by conditional integration, Astrom & Murray 2008,
    ch. 10). The derivative is taken on the feature, not the error, so that
    a target change does not kick.

    Live parameters: ``target``, ``kp``, ``ki``, ``kd``,
    ``min_amplitude_ma``, ``max_amplitude_ma``, ``min_change_ma`` and the
    common ones. :meth:`update` keeps the integrator, the previous feature
    value and the amplitude sent. A change of ``ki`` is bumpless: the
    integral is rescaled so that its term ``ki * integral`` is the same mA
    before and after (Astrom & Murray 2008, sec. 10.4); from ``ki = 0`` the
    integral restarts at 0, as its term was. A target change moves the
    proportional term at once (the derivative, on the feature, does not
    kick). An amplitude above a lowered ``max_amplitude_ma`` is brought
    down on the next finite frame even when the step is below
    ``min_change_ma``. ``direction`` is fixed while running.
    """

    Params = PidParams
    live = _FeatureController.LIVE_COMMON + ("target", "kp", "ki", "kd", "min_amplitude_ma", "max_amplitude_ma", "min_change_ma")
    STATE = (("feature", ""), ("error", ""), ("integral", ""), ("amplitude_ma", "mA"))

    def __init__(self, params: PidParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        if params.min_amplitude_ma >= params.max_amplitude_ma:
            raise ConfigError(f"min_amplitude_ma ({params.min_amplitude_ma}) must be below max_amplitude_ma ({params.max_amplitude_ma})")
        super().__init__(params, inputs, ctx)

    def _reset(self) -> None:
        self.integral = 0.0
        self._prev: float | None = None
        self.error = 0.0
        self._sent = 0.0

    def _changed(self, old: Any) -> None:
        ki, ki_old = self.params.ki, old.ki
        if ki != ki_old:
            self.integral = self.integral * (ki_old / ki) if ki > 0 and ki_old > 0 else 0.0

    def _decide(self, v: float, t: float) -> tuple[int, float]:
        p = self.params
        sign = 1.0 if p.direction == "above" else -1.0
        e = sign * (v - p.target)
        d = 0.0 if self._prev is None else sign * (v - self._prev) / self.frame_s
        self._prev = v
        self.error = e
        u = p.kp * e + p.ki * (self.integral + e * self.frame_s) + p.kd * d
        if p.min_amplitude_ma < u < p.max_amplitude_ma or (u >= p.max_amplitude_ma and e < 0) or (u <= p.min_amplitude_ma and e > 0):
            self.integral += e * self.frame_s
        amp = min(p.max_amplitude_ma, max(p.min_amplitude_ma, p.kp * e + p.ki * self.integral + p.kd * d))
        if (abs(amp - self.amplitude) < p.min_change_ma and not (amp == 0 < self.amplitude)
                and self.amplitude <= p.max_amplitude_ma):
            return CMD_HOLD, 0.0
        return self._set(amp)

    def _state(self, v: float) -> list[float]:
        return [v, self.error, self.integral, self.amplitude]

    def _on_nan_off(self) -> None:
        self.integral = 0.0


# -- a neuron as controller ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LifTriggerParams(_ControllerParams):
    """Parameters of :class:`LifTrigger`."""

    offset: float = param(doc="feature level at which the neuron gets no input")
    gain_na: float = param(1.0, doc="input current per feature unit above offset (nA)")
    neuron: dict[str, float] = param({"tau_m_ms": 100.0, "t_ref_ms": 200.0}, doc="LIF parameters (rtneuro.models.LIFParams) that differ from its defaults")
    dt_ms: float = param(1.0, gt=0, le=10)
    action: Literal["burst", "train", "pulse"] = param("burst", doc="per spike: continuous stimulation for train_s (a level, then off), a train command of train_s, or one pulse")
    amplitude_ma: float = param(2.0, gt=0)
    train_s: float = param(0.3, ge=0, doc="burst or train length")


class LifTrigger(_FeatureController):
    """A leaky integrate-and-fire neuron driven by the biomarker: it stimulates when it spikes.

    The feature, held over each frame, drives ``I = gain_na (feature -
    offset)`` into an LIF neuron (:class:`rtneuro.models.LIF`, exact
    integration at ``dt_ms``): a biomarker that stays high charges it to
    threshold, brief excursions leak away. Each spike starts a burst of
    continuous stimulation ``train_s`` long (or sends a train command, or one
    pulse); the refractory period bounds how often.

    Live parameters: ``offset``, ``gain_na``, ``amplitude_ma`` and the
    common ones (``train_s`` included). :meth:`update` keeps the neuron's
    membrane and refractory state and a burst under way: its amplitude and
    end were set by the spike that started it; the new values apply from
    the next spike. ``neuron``, ``dt_ms`` and ``action`` are fixed while
    running.
    """

    Params = LifTriggerParams
    live = _FeatureController.LIVE_COMMON + ("offset", "gain_na", "amplitude_ma")
    STATE = (("feature", ""), ("v_mv", "mV"), ("spikes", "count"))

    def __init__(self, params: LifTriggerParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        from ..models import LIF, LIFParams

        names = {f.name for f in fields(LIFParams)}
        for k in params.neuron:
            if k not in names:
                raise ConfigError(f"neuron: {k!r} is not an LIF parameter{did_you_mean(k, sorted(names))}; they are {sorted(names)}")
        self._lif, self._lif_p = LIF, LIFParams(**params.neuron)
        if params.action in ("train", "burst") and params.train_s <= 0:
            raise ConfigError(f"action '{params.action}' needs train_s > 0")
        super().__init__(params, inputs, ctx)
        steps = self.frame_s * 1000.0 / params.dt_ms
        if abs(steps - round(steps)) > 1e-6:
            raise ConfigError(f"the feature's frame period ({self.frame_s * 1000:g} ms) is not a whole number of dt_ms={params.dt_ms}")
        self._steps = int(round(steps))

    def _reset(self) -> None:
        self.neuron = self._lif.init_state(self._lif_p, 1)
        self.spikes = 0
        self.v = float(self.neuron.v[0])
        self._burst_end = -math.inf

    def warmup(self) -> None:
        self._lif.step(self._lif.init_state(self._lif_p, 1), self._lif_p, 0.0, self.params.dt_ms, 1)

    def _decide(self, v: float, t: float) -> tuple[int, float]:
        p = self.params
        i = p.gain_na * (v - p.offset)
        spikes = self._lif.step(self.neuron, self._lif_p, np.array([i]), p.dt_ms, self._steps)
        self.v = float(self.neuron.v[0])
        if spikes.any():
            self.spikes += int(spikes.sum())
            if p.action == "burst":
                self._burst_end = t + p.train_s
                return self._set(p.amplitude_ma)
            return (CMD_TRAIN if p.action == "train" else CMD_PULSE), p.amplitude_ma
        if p.action == "burst" and self.amplitude > 0 and t >= self._burst_end - 1e-9:
            return self._set(0.0)
        return CMD_HOLD, 0.0

    def _state(self, v: float) -> list[float]:
        return [v, self.v, float(self.spikes)]

    def _report(self) -> dict:
        return {"spikes": self.spikes}


# -- a plastic rate network as controller ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RateAdaptiveParams(_ControllerParams):
    """Parameters of :class:`RateAdaptive`."""

    target: float = param(doc="the feature level the network learns to hold")
    scale: float = param(1.0, gt=0, doc="feature units per unit of network input")
    n_units: int = param(8, ge=1, le=1000)
    tau_ms: float = param(200.0, gt=0, doc="rate units' time constant")
    eta: float = param(0.05, ge=0, doc="learning rate of the error-modulated Hebbian rule")
    w_init: float = param(0.5, doc="initial weight of the error input (bias weights start at 0)")
    w_min: float = param(-4.0)
    w_max: float = param(4.0)
    max_amplitude_ma: float = param(3.0, gt=0, doc="the network's full output (all units at their maximum rate)")
    min_change_ma: float = param(0.05, ge=0)
    seed: int = param(0, ge=0)


class RateAdaptive(_FeatureController):
    """A rate network whose output sets the amplitude and whose weights learn toward a target feature level.

    Inputs ``x = [(feature - target) / scale, 1]`` drive ``n_units`` sigmoid
    rate units (:class:`rtneuro.models.RatePopulation`, ``tau_ms``) through
    weights ``W`` (``n_units x 2``); the amplitude is ``max_amplitude_ma``
    times their mean rate. ``W`` learns with a Hebbian rule gated by the
    error, a three-factor rule (Fremaux & Gerstner 2016, Front Neural
    Circuits 9:85): ``dW = eta e r x^T`` with ``e = (feature - target) /
    scale``, clipped to ``[w_min, w_max]`` — while the feature stays above
    target the units that drive stimulation are strengthened, below it they
    are weakened. The rule is bounded, so no block of bad data can take the
    weights anywhere they cannot come back from.

    With the gate's decisions as feedback (``feedback: [stim.decisions]``)
    the network learns only on frames whose last command the gate accepted:
    a refused or clipped command teaches it nothing (counted).

    Live parameters: ``target``, ``scale``, ``eta`` (0 stops learning: the
    network goes on controlling with the weights it has), ``w_min``,
    ``w_max``, ``max_amplitude_ma``, ``min_change_ma`` and the common ones.
    :meth:`update` keeps the weights, the rates and the feedback block; new
    weight bounds clip the weights at once. An amplitude above a lowered
    ``max_amplitude_ma`` is brought down on the next finite frame even when
    the step is below ``min_change_ma``. ``n_units``, ``tau_ms``,
    ``w_init`` and ``seed`` are fixed while running.
    """

    Params = RateAdaptiveParams
    live = _FeatureController.LIVE_COMMON + ("target", "scale", "eta", "w_min", "w_max", "max_amplitude_ma", "min_change_ma")
    STATE = (("feature", ""), ("error", ""), ("rate", ""), ("w_mean", ""), ("amplitude_ma", "mA"))
    feedback_kinds = ("cmd",)

    def __init__(self, params: RateAdaptiveParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        if not params.w_min < params.w_max:
            raise ConfigError(f"w_min ({params.w_min}) must be below w_max ({params.w_max})")
        super().__init__(params, inputs, ctx)

    def _reset(self) -> None:
        from ..models import RateParams, RatePopulation

        p = self.params
        rng = np.random.default_rng(p.seed)
        w0 = np.column_stack([np.full(p.n_units, p.w_init), np.zeros(p.n_units)])  # error weights, bias weights
        self.W = np.clip(w0 + 0.05 * rng.standard_normal((p.n_units, 2)), p.w_min, p.w_max)
        self._rp = RateParams(tau_ms=p.tau_ms, transfer="sigmoid", gain=4.0, theta=0.5, r_max=1.0)
        self._pop = RatePopulation
        self.rates = self._pop.init_state(self._rp, p.n_units)
        self.error = 0.0
        self.updates = 0
        self.not_learned = 0
        self._blocked = False

    def _changed(self, old: Any) -> None:
        p = self.params
        if (p.w_min, p.w_max) != (old.w_min, old.w_max):
            np.clip(self.W, p.w_min, p.w_max, out=self.W)

    def warmup(self) -> None:
        from ..models import RatePopulation

        RatePopulation.step(RatePopulation.init_state(self._rp, 1), self._rp, np.zeros(1), 1.0, 1)

    def _feedback(self, chunk: Chunk, port: int) -> None:
        """The gate's decisions: block learning after a refused or clipped command of ours."""
        recs = chunk.data
        if "status" not in (recs.dtype.names or ()):
            return
        mine = recs["channel"] == self.params.channel
        for st in recs["status"][mine].tolist():
            if st in (0,):  # accepted
                self._blocked = False
            elif st in (1, 2):  # clipped, refused
                self._blocked = True

    def _decide(self, v: float, t: float) -> tuple[int, float]:
        p = self.params
        e = (v - p.target) / p.scale
        self.error = e
        x = np.array([e, 1.0])
        drive = self.W @ x
        steps = max(1, int(round(self.frame_s * 1000.0)))
        r = self._pop.step(self.rates, self._rp, np.tile(drive, (steps, 1)), 1.0, steps)
        rates = r[-1] if r.ndim == 2 else self.rates.r
        if self._blocked:
            self.not_learned += 1
        elif p.eta > 0:
            self.W += p.eta * e * np.outer(rates, x)
            np.clip(self.W, p.w_min, p.w_max, out=self.W)
            self.updates += 1
        amp = p.max_amplitude_ma * float(np.mean(self.rates.r))
        if abs(amp - self.amplitude) < p.min_change_ma and self.amplitude <= p.max_amplitude_ma:
            return CMD_HOLD, 0.0
        return self._set(amp)

    def _state(self, v: float) -> list[float]:
        return [v, self.error, float(np.mean(self.rates.r)), float(np.mean(self.W)), self.amplitude]

    def _report(self) -> dict:
        return {"updates": self.updates, "not_learned": self.not_learned, "w": self.W.round(4).tolist()}
