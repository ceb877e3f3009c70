"""Controllers: nodes that turn features into stimulation commands."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import ConfigError, did_you_mean
from ..messages import CMD_HOLD, CMD_LEVEL, CMD_OFF, COMMAND_DTYPE, Chunk, StreamMeta
from .base import Node, NodeContext, param

__all__ = ["Threshold", "ThresholdParams", "command_meta"]


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


class Threshold(Node):
    """On/off controller with hysteresis and a minimum hold time.

    Every feature frame yields one decision: ``level`` (switch on with the
    configured waveform), ``off``, or ``hold`` (no change, a heartbeat for
    the stimulator's watchdog). A non-finite feature value holds the
    current state and is counted. Each command carries its cause: the
    feature stream, frame indices, input window and feature values.
    """

    category = "controller"
    Params = ThresholdParams
    input_kinds = ("feat",)

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
        self.outputs = {"": command_meta(ctx.stream_name(), f"threshold on {src.name}:{src.ch_names[self.col]}")}
        self.reset()

    def reset(self) -> None:
        self.on = False
        self._t_change = -math.inf
        self.switches = 0
        self.decisions = 0
        self.nonfinite = 0

    def _decide(self, v: float, t: float) -> int:
        p = self.params
        if not math.isfinite(v):
            self.nonfinite += 1
            return CMD_HOLD
        if p.direction == "above":
            go_on, go_off = v > p.threshold, v < p.threshold - p.hysteresis
        else:
            go_on, go_off = v < p.threshold, v > p.threshold + p.hysteresis
        if t - self._t_change < p.min_hold_s:
            return CMD_HOLD
        if not self.on and go_on:
            self.on, self._t_change = True, t
            self.switches += 1
            return CMD_LEVEL
        if self.on and go_off:
            self.on, self._t_change = False, t
            self.switches += 1
            return CMD_OFF
        return CMD_HOLD

    def process(self, chunk: Chunk, port: int = 0) -> Chunk:
        p = self.params
        values = chunk.data[:, self.col].tolist()
        n = len(values)
        dt = 1.0 / chunk.sfreq if chunk.sfreq > 0 else 0.0
        hold = (CMD_HOLD, p.channel, 0.0, 0.0, 0.0, 0.0)
        recs = []
        for i, v in enumerate(values):
            kind = self._decide(v, chunk.t0 + i * dt)
            if kind == CMD_HOLD:
                recs.append(hold)
            elif kind == CMD_LEVEL:
                recs.append((CMD_LEVEL, p.channel, p.amplitude_ma, p.pulse_width_us, p.frequency_hz, 0.0))
            else:
                recs.append((kind, p.channel, 0.0, 0.0, 0.0, 0.0))
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
        extra = {"cause": cause, "deadline": self.ctx.real_clock() + p.deadline_ms / 1000.0}
        return Chunk(np.array(recs, dtype=COMMAND_DTYPE), chunk.first, chunk.t0, chunk.sfreq, chunk.trace, extra)

    def report(self) -> dict:
        return {"decisions": self.decisions, "switches": self.switches, "on": self.on, "nonfinite": self.nonfinite}
