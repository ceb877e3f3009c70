"""Controllers: nodes that turn features into stimulation commands."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import ConfigError, did_you_mean
from ..messages import (
    CMD_HOLD,
    CMD_LEVEL,
    CMD_OFF,
    CMD_PULSE,
    COMMAND_DTYPE,
    EVENT_DTYPE,
    Chunk,
    StreamMeta,
)
from .base import Node, NodeContext, param
from .quality import GATE_COLUMN

__all__ = ["Threshold", "ThresholdParams", "Pulse", "PulseParams", "command_meta"]


def command_meta(name: str, source: str) -> StreamMeta:
    return StreamMeta(name=name, kind="cmd", sfreq=0.0, dtype="command", source=source)


@dataclass(frozen=True, slots=True, kw_only=True)
class ThresholdParams:
    """Parameters of :class:`Threshold`."""

    threshold: float = param(doc="switch on when the feature crosses it")
    feature: str | None = param(None, doc="feature column (required when the stream has several)")
    direction: Literal["above", "below"] = param("above", doc="stimulate when the feature is above or below")
    hysteresis: float = param(0.0, ge=0, doc="switch off only once the feature is this far back")
    min_hold_s: float = param(0.0, ge=0, doc="at least this long (stream time) between two switches")
    channel: int = param(0, ge=0)
    amplitude_ma: float = param(1.0, ge=0)
    pulse_width_us: float = param(60.0, gt=0)
    frequency_hz: float = param(130.0, gt=0)
    deadline_ms: float = param(50.0, gt=0, doc="a command not applied within this long is refused")
    ramp_s: float = param(0.0, ge=0, doc="reach a new level (or off) over this long; the profile's ramp rates apply in any case")
    gate_action: Literal["off", "hold"] = param(
        "off", doc="with a quality stream as second input, on a flagged window: switch off, or hold the current state")


class Threshold(Node):
    """On/off controller with hysteresis and a minimum hold time.

    Every feature frame yields one decision: ``level`` (switch on with the
    configured waveform), ``off``, or ``hold`` (no change, a heartbeat for
    the stimulator's watchdog). A non-finite feature value holds the
    current state and is counted. Each command carries its cause: the
    feature stream, frame indices, input window and feature values.

    An optional second input is a signal-quality stream (the ``quality``
    node on the same signal): a frame whose input window overlaps a flagged
    stretch never switches stimulation on; with ``gate_action: off`` it
    switches it off (regardless of ``min_hold_s``). When the quality flags
    have not yet covered a window's last sample (they run in parallel), the
    most recent flag row decides, and the frame is counted as
    ``gate_ahead``.

    Live parameters: ``threshold``, ``hysteresis``, ``min_hold_s``, the
    waveform (``amplitude_ma``, ``pulse_width_us``, ``frequency_hz``,
    ``ramp_s``), ``deadline_ms`` and ``gate_action``. :meth:`update` keeps
    the on/off state, the time of the last switch (so ``min_hold_s`` counts
    from it) and the quality flags seen; the frames after the change are
    decided with the new values. While stimulation is on, a changed
    waveform is sent as a new ``level`` on the next finite, unflagged frame
    that does not switch it off (not a switch: ``min_hold_s`` does not apply, and the
    switch count does not move). ``feature``, ``direction`` and
    ``channel`` are fixed while running.
    """

    category = "controller"
    Params = ThresholdParams
    input_kinds = ("feat", "feat")
    max_inputs = 2
    live = ("threshold", "hysteresis", "min_hold_s", "amplitude_ma", "pulse_width_us", "frequency_hz", "ramp_s",
            "deadline_ms", "gate_action")

    def __init__(self, params: ThresholdParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        src = inputs[0]
        if params.feature is None:
            if src.n_channels != 1:
                raise ConfigError(f"stream '{src.name}' has {src.n_channels} features {list(src.ch_names)[:6]}...; set 'feature' to one of them")
            self.col = 0
        elif params.feature not in src.ch_names:
            raise ConfigError(f"feature {params.feature!r} is not in stream '{src.name}'{did_you_mean(params.feature, src.ch_names)}; it has {list(src.ch_names)[:8]}")
        else:
            self.col = src.ch_names.index(params.feature)
        self.gate_col: int | None = None
        if len(inputs) > 1:
            gate = inputs[1]
            if GATE_COLUMN not in gate.ch_names or "step" not in gate.desc:
                raise ConfigError(f"second input '{gate.name}' is not a signal-quality stream (no '{GATE_COLUMN}' column); connect a 'quality' node there or remove it")
            self.gate_col = gate.ch_names.index(GATE_COLUMN)
            self.gate_step = int(gate.desc["step"])
        self.feat_window = int(src.desc.get("window", 0)) if src.desc else 0
        self.feat_step = int(src.desc.get("step", 0)) if src.desc else 0
        self.outputs = {"": command_meta(ctx.stream_name(), f"threshold on {src.name}:{src.ch_names[self.col]}")}
        self.reset()

    def reset(self) -> None:
        self.on = False
        self._t_change = -math.inf
        self.switches = 0
        self.decisions = 0
        self.nonfinite = 0
        self.gated = 0
        self.gate_ahead = 0
        self._bad: list[list[int]] = []  # flagged input-sample ranges [first, last], merged, in order
        self._gate_known = -1  # last input sample the flags cover
        self._gate_last_bad = False
        self._relevel = False  # a live change of the waveform while on: send it with the next frame

    def update(self, params: ThresholdParams) -> None:
        """Take live parameters; the on/off state and the last switch time stay (see the class docstring)."""
        old, self.params = self.params, params
        waveform = ("amplitude_ma", "pulse_width_us", "frequency_hz", "ramp_s")
        if self.on and any(getattr(old, k) != getattr(params, k) for k in waveform):
            self._relevel = True

    def _gate(self, chunk: Chunk) -> None:
        """Take quality flag rows: remember the flagged input-sample ranges."""
        assert self.gate_col is not None
        start = int(chunk.extra["window"][0]) if chunk.extra and "window" in chunk.extra else self._gate_known + 1
        for j, flag in enumerate(chunk.data[:, self.gate_col].tolist()):
            a = start + j * self.gate_step
            b = a + self.gate_step - 1
            bad = flag != 0
            if bad:
                if self._bad and self._bad[-1][1] >= a - 1:
                    self._bad[-1][1] = max(self._bad[-1][1], b)
                else:
                    self._bad.append([a, b])
            self._gate_known = max(self._gate_known, b)
            self._gate_last_bad = bad

    def _flagged(self, first: int, last: int) -> bool:
        """Whether input samples [first, last] overlap flagged data (as far as the flags are known)."""
        while self._bad and self._bad[0][1] < first:
            self._bad.pop(0)  # before this window, hence before every later one
        if any(a <= last and b >= first for a, b in self._bad):
            return True
        if last > self._gate_known:
            self.gate_ahead += 1
            return self._gate_last_bad
        return False

    def _decide(self, v: float, t: float, bad: bool = False) -> int:
        p = self.params
        if bad:
            self.gated += 1
            if self.on and p.gate_action == "off":
                self.on, self._t_change, self._relevel = False, t, False
                self.switches += 1
                return CMD_OFF
            return CMD_HOLD
        if not math.isfinite(v):
            self.nonfinite += 1
            return CMD_HOLD
        if p.direction == "above":
            go_on, go_off = v > p.threshold, v < p.threshold - p.hysteresis
        else:
            go_on, go_off = v < p.threshold, v > p.threshold + p.hysteresis
        if t - self._t_change < p.min_hold_s:
            if self.on and self._relevel:  # not a switch: the new waveform goes out at once
                self._relevel = False
                return CMD_LEVEL
            return CMD_HOLD
        if not self.on and go_on:
            self.on, self._t_change, self._relevel = True, t, False
            self.switches += 1
            return CMD_LEVEL
        if self.on and go_off:
            self.on, self._t_change, self._relevel = False, t, False
            self.switches += 1
            return CMD_OFF
        if self.on and self._relevel:
            self._relevel = False
            return CMD_LEVEL
        return CMD_HOLD

    def process(self, chunk: Chunk, port: int = 0) -> Chunk | None:
        if port == 1:
            self._gate(chunk)
            return None
        p = self.params
        values = chunk.data[:, self.col].tolist()
        n = len(values)
        dt = 1.0 / chunk.sfreq if chunk.sfreq > 0 else 0.0
        hold = (CMD_HOLD, p.channel, 0.0, 0.0, 0.0, 0.0, 0, 0.0)
        recs = []
        win = chunk.extra.get("window") if chunk.extra else None
        for i, v in enumerate(values):
            bad = False
            if self.gate_col is not None:
                if win is not None and self.feat_step and self.feat_window:
                    last = int(win[1]) - (n - 1 - i) * self.feat_step
                    bad = self._flagged(last - self.feat_window + 1, last)
                elif win is not None:
                    bad = self._flagged(int(win[0]), int(win[1]))
                else:
                    bad = self._flagged(self._gate_known + 1, self._gate_known + 1)
            kind = self._decide(v, chunk.t0 + i * dt, bad)
            if kind == CMD_HOLD:
                recs.append(hold)
            elif kind == CMD_LEVEL:
                recs.append((CMD_LEVEL, p.channel, p.amplitude_ma, p.pulse_width_us, p.frequency_hz, 0.0, 0, p.ramp_s))
            else:
                recs.append((kind, p.channel, 0.0, 0.0, 0.0, 0.0, 0, p.ramp_s))
        self.decisions += n
        cause = {
            "stream": self.inputs[0].name,
            "frames": [chunk.first, chunk.first + n - 1],
            "t_last": chunk.t0 + (n - 1) * dt,
            "values": values,
        }
        if chunk.extra and "window" in chunk.extra:
            cause["window"] = chunk.extra["window"]
            cause["of"] = chunk.extra.get("of")
        cause["state"] = {"on": self.on, "switches": self.switches, "t_change": self._t_change}
        extra: dict = {"cause": cause}
        deadline = self.ctx.command_deadline(p.deadline_ms)
        if deadline is not None:
            extra["deadline"] = deadline
        return Chunk(np.array(recs, dtype=COMMAND_DTYPE), chunk.first, chunk.t0, chunk.sfreq, chunk.trace, extra)

    def report(self) -> dict:
        out = {"decisions": self.decisions, "switches": self.switches, "on": self.on, "nonfinite": self.nonfinite}
        if self.gate_col is not None:
            out.update(gated=self.gated, gate_ahead=self.gate_ahead)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class PulseParams:
    """Parameters of :class:`Pulse`."""

    labels: list[str] = param(["phase_trigger"], doc="event labels that fire a pulse ('*' for any)")
    channel: int = param(0, ge=0)
    amplitude_ma: float = param(1.0, ge=0)
    pulse_width_us: float = param(100.0, gt=0)
    deadline_ms: float = param(20.0, gt=0, doc="a pulse not delivered within this long is refused (a late pulse misses its phase)")
    gate_feature: str = param("burst", doc="with a gate stream as third input: its column that holds pulses off while nonzero")
    gate_hold_s: float = param(0.0, ge=0, doc="with a gate: pulses stay held off this long after the gate clears")


#: Trigger events waiting for the gate to cover their sample, at most (beyond: refused, counted).
MAX_PENDING = 256
#: Gated spans kept for triggers still to come, at most (the oldest go first).
MAX_SPANS = 4096


class Pulse(Node):
    """One stimulation pulse per trigger event (TMS/TTL-style phase-locked stimulation).

    Input 0 is a regular stream (the trigger's source, e.g. the ``phase``
    node's features): each of its chunks yields one ``hold`` command, the
    heartbeat that keeps the stimulator's watchdog fed. Input 1 is an event
    stream (e.g. ``<phase id>.events``): each event whose label matches
    ``labels`` yields one ``pulse`` command carrying the event's sample
    index and time as its cause. The deadline is short on purpose: a pulse
    that cannot be delivered promptly is refused by the gate rather than
    delivered at the wrong phase.

    An optional third input is a gate: a regular feature stream whose frames
    tile the input samples (``desc["step"]`` samples each, the ``bursts``
    node's main output) with a column ``gate_feature`` (``burst`` or
    ``above`` of ``bursts``). A trigger whose sample falls in a frame where
    that column is nonzero, or less than ``gate_hold_s`` after one, fires
    no pulse (counted ``gated``). A trigger waits until the gate's frames
    cover its sample, so the decision is the same whatever order the two
    streams arrive in (live or replayed); in one process, with the gate's
    node listed before the trigger's, it never waits.

    Live parameters: ``amplitude_ma``, ``pulse_width_us``, ``deadline_ms``
    and ``gate_hold_s``. :meth:`update` keeps the gated spans and the
    triggers waiting for the gate; a waiting trigger is decided with the
    ``gate_hold_s`` in force when the gate releases it (gate spans that
    ended more than the old hold before the latest trigger are already
    forgotten, so a longer hold reaches back only over the spans still
    kept), and every pulse carries the waveform in force when it is sent. ``labels``,
    ``channel`` and ``gate_feature`` are fixed while running.
    """

    category = "controller"
    Params = PulseParams
    live = ("amplitude_ma", "pulse_width_us", "deadline_ms", "gate_hold_s")
    input_kinds = ("sig|feat", "evt", "feat")
    min_inputs = 2
    max_inputs = 3

    def __init__(self, params: PulseParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        if not params.labels:
            raise ConfigError("labels must name at least one event label ('*' for any)")
        self._any = "*" in params.labels
        self._labels = {lbl.encode("utf-8") for lbl in params.labels}
        self.outputs = {"": command_meta(ctx.stream_name(), f"pulses on {inputs[1].name} {list(params.labels)}")}
        self.gate_col: int | None = None
        if len(inputs) > 2:
            gate = inputs[2]
            if params.gate_feature not in gate.ch_names:
                raise ConfigError(f"gate_feature {params.gate_feature!r} is not a column of the gate stream '{gate.name}'"
                                  f"{did_you_mean(params.gate_feature, gate.ch_names)}; it has {list(gate.ch_names)[-8:]}")
            step = gate.desc.get("step") if gate.desc else None
            if not isinstance(step, int) or step < 1 or not gate.sfreq > 0:
                raise ConfigError(f"third input '{gate.name}' is not a gate: a regular feature stream whose frames tile the samples "
                                  f"(desc 'step'); connect a 'bursts' node's main output there")
            self.gate_col = gate.ch_names.index(params.gate_feature)
            self.gate_step = step
            self.gate_hold = int(round(params.gate_hold_s * gate.sfreq * step))
        self.reset()

    def update(self, params: PulseParams) -> None:
        """Take live parameters; gated spans and waiting triggers stay (see the class docstring)."""
        self.params = params
        if self.gate_col is not None:
            gate = self.inputs[2]
            self.gate_hold = int(round(params.gate_hold_s * gate.sfreq * self.gate_step))

    def reset(self) -> None:
        self.pulses = 0
        self.heartbeats = 0
        self.ignored = 0
        self.gated = 0
        self.gate_waited = 0
        self.gate_unknown = 0
        self._spans: list[list[int]] = []  # gated input-sample spans [first, last], merged, in order
        self._covered = -1  # last input sample the gate's frames cover
        self._pending: list[tuple[np.void, list]] = []  # (event, trace) waiting for the gate

    def _take_gate(self, chunk: Chunk) -> None:
        """Gate frames: remember the input-sample spans where the gate is set, and how far the frames reach."""
        step = self.gate_step
        n = chunk.data.shape[0]
        last = int(chunk.extra["window"][1]) if chunk.extra and "window" in chunk.extra else self._covered + n * step
        first = last - n * step + 1
        for j, v in enumerate(chunk.data[:, self.gate_col].tolist()):
            if v != 0:  # NaN counts as set: unknown is not clear
                a = first + j * step
                b = a + step - 1
                if self._spans and self._spans[-1][1] >= a - 1:
                    self._spans[-1][1] = max(self._spans[-1][1], b)
                else:
                    self._spans.append([a, b])
        if len(self._spans) > MAX_SPANS:
            del self._spans[: len(self._spans) - MAX_SPANS]
        self._covered = max(self._covered, last)

    def _gated(self, index: int) -> bool:
        hold = self.gate_hold
        while self._spans and self._spans[0][1] + hold < index:
            self._spans.pop(0)  # triggers come in order: no later one falls in it
        return any(a <= index <= b + hold for a, b in self._spans)

    def _release(self) -> tuple[list, list | None]:
        """Pending triggers the gate now covers: those it lets through, and the trace of the first."""
        fire: list = []
        trace = None
        while self._pending and int(self._pending[0][0]["index"]) <= self._covered:
            ev, tr = self._pending.pop(0)
            if self._gated(int(ev["index"])):
                self.gated += 1
            else:
                fire.append(ev)
                trace = tr if trace is None else trace
        return fire, trace

    def _pulses(self, ev, trace: list, deadline: float | None) -> Chunk:
        p = self.params
        self.pulses += len(ev)
        recs = np.zeros(len(ev), dtype=COMMAND_DTYPE)
        recs["kind"] = CMD_PULSE
        recs["channel"] = p.channel
        recs["amplitude_ma"] = p.amplitude_ma
        recs["pulse_width_us"] = p.pulse_width_us
        cause = {"stream": self.inputs[1].name, "events": ev["index"].tolist(), "t_last": float(ev["time"][-1]),
                 "values": ev["value"].tolist()}
        return Chunk(recs, int(ev["index"][0]), float(ev["time"][0]), 0.0, trace, _extra(cause, deadline))

    def process(self, chunk: Chunk, port: int = 0) -> Chunk | None:
        p = self.params
        deadline = self.ctx.command_deadline(p.deadline_ms)
        if port == 0:
            if chunk.data.shape[0] == 0:
                return None
            self.heartbeats += 1
            n = chunk.data.shape[0]
            t_last = chunk.t0 + (n - 1) / chunk.sfreq if chunk.sfreq > 0 else chunk.t0
            recs = np.array([(CMD_HOLD, p.channel, 0.0, 0.0, 0.0, 0.0, 0, 0.0)], dtype=COMMAND_DTYPE)
            cause = {"stream": self.inputs[0].name, "frames": [chunk.first + n - 1, chunk.first + n - 1], "t_last": t_last}
            return Chunk(recs, chunk.first + n - 1, t_last, 0.0, chunk.trace, _extra(cause, deadline))
        if port == 2:
            self._take_gate(chunk)
            fire, trace = self._release()
            return self._pulses(np.array(fire, dtype=EVENT_DTYPE), trace or chunk.trace, deadline) if fire else None
        ev = chunk.data
        keep = np.ones(len(ev), dtype=bool) if self._any else np.array([lbl in self._labels for lbl in ev["label"]], dtype=bool)
        self.ignored += int((~keep).sum())
        ev = ev[keep]
        if len(ev) == 0:
            return None
        if self.gate_col is None:
            return self._pulses(ev, chunk.trace, deadline)
        for e in ev:
            if int(e["index"]) > self._covered:
                self.gate_waited += 1
            self._pending.append((e, chunk.trace))
        while len(self._pending) > MAX_PENDING:  # the gate has stalled: unknown is not clear
            self._pending.pop(0)
            self.gate_unknown += 1
        fire, trace = self._release()
        return self._pulses(np.array(fire, dtype=EVENT_DTYPE), trace or chunk.trace, deadline) if fire else None

    def end(self) -> None:
        self.gate_unknown += len(self._pending)  # the gate never covered them: no pulse
        self._pending.clear()

    def report(self) -> dict:
        out = {"pulses": self.pulses, "heartbeats": self.heartbeats, "ignored_events": self.ignored}
        if self.gate_col is not None:
            out.update(gated=self.gated, gate_waited=self.gate_waited, gate_unknown=self.gate_unknown + len(self._pending))
        return out


def _extra(cause: dict, deadline: float | None) -> dict:
    """A command chunk's extras: its cause, and its deadline unless the run is on the virtual clock."""
    return {"cause": cause} if deadline is None else {"cause": cause, "deadline": deadline}
