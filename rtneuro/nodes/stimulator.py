"""The stimulator node: the safety gate in front of a hardware driver."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError, did_you_mean
from ..messages import CMD_HOLD, Chunk, StreamMeta
from ..safety import Gate, load_profile
from .base import Node, NodeContext, param

__all__ = ["Stimulator", "StimulatorParams"]

_TIME_REASONS = ("time_", "expired")


def _deadline(extra: dict) -> float | None:
    """A chunk's deadline: None when it names none; NaN (refused by the gate) when it is not a number."""
    if "deadline" not in extra or extra["deadline"] is None:
        return None
    d = extra["deadline"]
    if isinstance(d, bool) or not isinstance(d, (int, float)):
        return math.nan
    return float(d)


@dataclass(frozen=True, slots=True, kw_only=True)
class StimulatorParams:
    """Parameters of :class:`Stimulator`."""

    driver: str = param("simulated", doc="a driver registered in rtneuro.hardware.DRIVERS")
    profile: str = param("simulated", doc="shipped profile name or path to a profile YAML")
    log_path: str | None = param(None, doc="simulated driver: append delivered commands to this JSON-lines file")
    driver_args: dict[str, Any] = param({}, doc="the driver's own settings (serial: port, baudrate; zmq: endpoint; lsl_markers: stream_name)")
    timebase: Literal["real", "stream"] = param("real", doc="the gate's clock: 'real' (LSL clock; any driver) or 'stream' (data time, simulated driver only: deterministic at any replay speed)")
    waveform_rate: float = param(1000.0, ge=0.0, doc="simulated driver: rate in Hz of the delivered-waveform stream <id>.delivered (0: none)")
    armed: bool = param(True, doc="start armed; false: stimulating commands are refused until the operator arms (rtneuro arm)")
    max_amplitude_ma: float | None = param(None, gt=0, doc="operator limit below the profile's, every channel (live: can only be lowered)")
    max_frequency_hz: float | None = param(None, gt=0, doc="operator limit below the profile's, every channel (live: can only be lowered)")


class Stimulator(Node):
    """Every command it receives passes the safety gate before the driver.

    The driver is created in :meth:`open` (never while validating) and put
    in its safe state at once; :meth:`close` and the watchdog put it back
    there. :meth:`process` returns one ``(status, reason)`` per command,
    which the runtime sends back to the controller as the acknowledgement.

    The recommended layout gives this node a process of its own (the
    ``stimulate`` service), so that a failure anywhere in the processing
    cannot stop the watchdog.

    **Time base.** With ``timebase: real`` the gate runs on the LSL clock:
    ramps, lockouts, command deadlines and the watchdog follow real time, as
    a device needs. With ``timebase: stream`` (simulated driver only) the gate
    runs on data time: each command is checked at its stream time, ramps step
    and the watchdog counts in stream time, a command's LSL deadline is not
    checked (the profile's ``command_deadline_s`` applies in stream time), and
    decision records carry stream time in ``time``. A run replayed at any
    speed then takes exactly the same decisions and delivers exactly the same
    waveform. A real-time backstop remains: when no command or heartbeat
    arrives for the profile's ``watchdog_s`` of real time, the gate's time is
    moved on by the real time elapsed, and the watchdog trips as usual.

    **Time checks.** Before a command or heartbeat moves any clock, its
    times are checked (:meth:`rtneuro.safety.Gate.check_time`): non-finite
    times or deadlines, a stream time before the last one accepted on the same
    input, a stream time further ahead of the run's stream clock than the
    profile's ``max_time_ahead_s``, and expired commands are refused, counted
    by reason and never feed the watchdog; the real-time backstop of
    ``timebase: stream`` counts only inputs whose time was accepted.

    **Delivered waveform.** With the simulated driver the node also publishes
    ``<id>.delivered``, a signal stream at ``waveform_rate`` Hz on the stream
    clock: per profile channel the amplitude (mA) and frequency (Hz) in effect
    at each sample, and the number of pulses and the cathodic-phase charge
    (uC) delivered within the sample's interval. A simulated brain subscribes
    to it.

    **The operator.** :meth:`disarm` ramps every channel to its safe state at
    the profile's rates and refuses stimulating commands (``disarmed``) until
    :meth:`arm`; ``armed: false`` starts the run disarmed. The live parameters
    ``max_amplitude_ma`` and ``max_frequency_hz`` are limits below the
    profile's that can only be lowered while running (:attr:`stricter`): the
    change applies at once, not at the next command, and a level above the
    new limit ramps down to off.
    """

    category = "stimulator"
    Params = StimulatorParams
    input_kinds = ("cmd",)
    max_inputs = 8
    live = ("max_amplitude_ma", "max_frequency_hz")
    stricter = {"max_amplitude_ma": "lower", "max_frequency_hz": "lower"}

    def __init__(self, params: StimulatorParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        from rtneuro.hardware import driver_class

        self.profile = load_profile(params.profile, ctx.base_dir)
        self._driver_cls = driver_class(params.driver)
        if params.driver != self.profile.device:
            raise ConfigError(f"profile '{params.profile}' is for device '{self.profile.device}', not driver '{params.driver}'")
        import inspect

        sig = inspect.signature(self._driver_cls)
        accepted = [n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        for key in params.driver_args:
            if key not in accepted:
                raise ConfigError(f"driver_args: driver '{params.driver}' takes no {key!r}{did_you_mean(key, accepted)}; it takes {accepted}")
        missing = [n for n, p in sig.parameters.items()
                   if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in params.driver_args]
        if missing:
            raise ConfigError(f"driver_args: driver '{params.driver}' needs {missing}")
        if params.timebase == "stream" and params.driver != "simulated":
            raise ConfigError(f"timebase: 'stream' is for the simulated driver only; driver '{params.driver}' drives a device and runs on the real clock (set timebase: real)")
        #: every decision of the gate, with its reason (DECISION_DTYPE records)
        self.outputs = {"decisions": StreamMeta(name=ctx.stream_name("decisions"), kind="cmd", sfreq=0.0, dtype="decision",
                                                source=f"safety gate decisions of {params.driver}/{self.profile.device}")}
        self._wave = params.waveform_rate > 0 and callable(getattr(self._driver_cls, "enable_waveform", None))
        if self._wave:
            from rtneuro.hardware.simulated import WAVEFORM_FIELDS

            chans = sorted(self.profile.limits)
            names = tuple(f"ch{c}.{f}" for c in chans for f, _ in WAVEFORM_FIELDS)
            self.outputs["delivered"] = StreamMeta(
                name=ctx.stream_name("delivered"), kind="sig", sfreq=float(params.waveform_rate), ch_names=names,
                ch_types=("misc",) * len(names), units=tuple(u for _ in chans for _, u in WAVEFORM_FIELDS),
                source=f"waveform delivered by the simulated stimulator '{ctx.node_id}' (stream clock)")
        self.gate: Gate | None = None
        self._stream_time = params.timebase == "stream"
        self._t_now: float | None = None  # stream time reached (the gate's clock with timebase 'stream')
        self._real_last: float | None = None  # LSL time of the last input
        self._n_decisions = 0
        self._last_level: list | None = None
        self._port_t: dict[int, float] = {}  # input -> stream time of its last command whose time was accepted
        #: input stream -> index of the next command expected on it (where an operator action takes effect)
        self.next_index: dict[str, int] = {m.name: 0 for m in inputs}

    def open(self) -> None:
        kwargs = dict(self.params.driver_args)
        if self.params.log_path:
            kwargs["log_path"] = self.ctx.resolve(self.params.log_path)
        if kwargs.get("pulse_log_path"):  # like every path of a graph: relative to the graph file
            kwargs["pulse_log_path"] = self.ctx.resolve(str(kwargs["pulse_log_path"]))
        driver = self._driver_cls(**kwargs)
        if self._wave:
            driver.enable_waveform(sorted(self.profile.limits), self.params.waveform_rate)
        self.gate = Gate(self.profile, driver)
        clock = self.ctx.clock
        if not self._stream_time and clock is not None and math.isfinite(clock.speed):
            self.gate.stream_clock = clock.now  # commands dated ahead of the run's stream clock are refused
        self.gate.open(self._gate_now(self.ctx.real_clock()))
        self.gate.op_amplitude_ma = self.params.max_amplitude_ma
        self.gate.op_frequency_hz = self.params.max_frequency_hz
        if not self.params.armed:
            self.gate.armed = False
            self.gate.disarm_reason = "the configuration says armed: false"

    def _gate_now(self, real: float) -> float:
        """The gate's clock: LSL time, or (timebase 'stream') the stream time reached."""
        if not self._stream_time:
            return real
        return self._t_now if self._t_now is not None else 0.0

    def _stream_now(self) -> float | None:
        """Best estimate of the current stream time, to date ticks (None before any input)."""
        clock = self.ctx.clock
        if not self._stream_time and clock is not None and math.isfinite(clock.speed):
            return float(clock.now())
        return self._t_now

    def warmup(self) -> None:
        pass

    def process(self, chunk: Chunk, port: int = 0) -> list[tuple[str, str]]:
        """One ``(status, reason)`` per command of ``chunk``.

        Times are checked first, by the gate (:meth:`rtneuro.safety.Gate.check_time`)
        and here per input (a stream's time never goes back by more than the
        profile's ``command_deadline_s``: ``time_backwards``);
        a refused time never moves the gate's clocks nor the device's.
        """
        gate = self.gate
        if gate is None:
            raise RuntimeError("stimulator used before open()")
        real = self.ctx.real_clock()
        extra = chunk.extra or {}
        deadline = _deadline(extra)
        if deadline is not None and self._stream_time and math.isfinite(deadline):
            deadline = None  # an LSL deadline says nothing about data time; the profile's stream deadline applies
        sfreq = float(chunk.sfreq)
        dt = 1.0 / sfreq if math.isfinite(sfreq) and sfreq > 0 else 0.0
        out = []
        data = chunk.data
        name = self.inputs[port].name if port < len(self.inputs) else ""
        self.next_index[name] = max(self.next_index.get(name, 0), int(chunk.first) + len(data))
        for i, kind in enumerate(data["kind"].tolist()):
            t_stream = float(chunk.t0) + i * dt
            cause = chunk.first + i
            why = self.time_verdict(cause, t_stream, kind)
            if why:
                d = gate.refuse(data[i] if kind != CMD_HOLD else None, self._gate_now(real), t_stream, cause, why)
                out.append((d.status, d.reason))
                continue
            last = self._port_t.get(port)
            # a controller may date an event-triggered command at its event, a little before the heartbeat
            # of the chunk that held it; going back further than command_deadline_s is refused (the device
            # never dates a delivery before an earlier one in any case)
            if last is not None and t_stream < last - self.profile.command_deadline_s:
                d = gate.refuse(data[i], self._gate_now(real), t_stream, cause,
                                f"time_backwards: stream time {t_stream:.6f} s is more than "
                                f"{self.profile.command_deadline_s:g} s before {last:.6f} s, this input's last")
                out.append((d.status, d.reason))
                continue
            if self._stream_time:
                cand = t_stream if self._t_now is None else max(self._t_now, t_stream)
                if not gate.check_time(cand, deadline, t_stream):
                    self._t_now = cand
                    self._real_last = real
                    gate.tick(cand, cand)  # ramps and the watchdog, at data time
                now = self._t_now if self._t_now is not None else 0.0
            else:
                now = real
            if kind == CMD_HOLD:
                d = gate.heartbeat(now, deadline, t_stream, cause)
            else:
                d = gate.submit(data[i], now, deadline, t_stream, cause)
            if not d.reason.startswith(_TIME_REASONS):
                self._port_t[port] = t_stream
                self._real_last = real
                if not self._stream_time:
                    self._t_now = t_stream if self._t_now is None else max(self._t_now, t_stream)
            out.append((d.status, d.reason))
        return out

    def time_verdict(self, cause: int, t_stream: float, kind: int) -> str:
        """A refusal on time decided outside this gate ("" for none): a replay check repeats the recording's."""
        return ""

    def take_outputs(self) -> list[tuple[str, Chunk]]:
        """The gate's decisions and the delivered waveform since the last call (the service publishes them)."""
        if self.gate is None:
            return []
        out = []
        recs = self.gate.take_records()
        if recs is not None:
            first = self._n_decisions
            self._n_decisions += len(recs)
            out.append(("decisions", Chunk(recs, first, float(recs["time"][0]), 0.0, [])))
        if self._wave:
            drv = self.gate.driver
            wave = drv.render()
            state = drv.current()  # what the device does from now on, until told otherwise: a simulated brain holds it
            if wave is None and state["level"] != self._last_level and state["origin"] is not None:
                # no whole sample yet, but the level changed: say so now, in an empty chunk
                k = state["next"]
                wave = (k, state["origin"] + k / self.params.waveform_rate, np.zeros((0, len(self.outputs["delivered"].ch_names))))
            if wave is not None:
                first, t0, data = wave
                self._last_level = state["level"]
                out.append(("delivered", Chunk(data, first, t0, self.params.waveform_rate, [], state)))
        return out

    def next_tick_due(self) -> float | None:
        """When the watchdog must next be checked, on the LSL clock (the service wakes up for it)."""
        if self.gate is None:
            return None
        if not self._stream_time:
            return self.gate.next_due()
        if self.gate.next_due() is None or self._real_last is None:
            return None
        return self._real_last + self.profile.watchdog_s + 1e-4  # the real-time backstop

    def emergency_stop(self, now: float, reason: str = "operator") -> None:
        """Safe state at once, latched until :meth:`clear_emergency_stop` (``rtneuro stop --now``)."""
        if self.gate is not None:
            self.gate.emergency_stop(self._gate_now(now), reason)

    def clear_emergency_stop(self, now: float) -> None:
        """Accept stimulating commands again (``rtneuro stop --clear``)."""
        if self.gate is not None:
            self.gate.clear_emergency_stop(self._gate_now(now))

    def disarm(self, now: float, reason: str = "operator") -> None:
        """Ramp to the safe state and refuse stimulating commands until :meth:`arm`."""
        if self.gate is not None:
            self.gate.disarm(self._gate_now(now), reason)

    def arm(self, now: float, reason: str = "operator") -> None:
        """Accept stimulating commands again."""
        if self.gate is not None:
            self.gate.arm(self._gate_now(now), reason)

    @property
    def armed(self) -> bool:
        return self.gate is None or self.gate.armed

    def update(self, params: StimulatorParams) -> None:
        """Lower the operator limits (the caller refused any loosening); applies at once."""
        self.params = params
        if self.gate is not None:
            self.gate.set_operator_limits(self._gate_now(self.ctx.real_clock()), params.max_amplitude_ma, params.max_frequency_hz)

    def status(self) -> str:
        if self.gate is None:
            return ""
        if self.gate.estopped:
            return "EMERGENCY STOP latched"
        if not self.gate.armed:
            return "disarmed"
        return "watchdog tripped" if self.gate.tripped else ""

    def end(self) -> None:
        """Every command input has ended: safe state now, not after the watchdog deadline."""
        if self.gate is not None:
            self.gate.safe_state(self._gate_now(self.ctx.real_clock()))

    def tick(self, now: float) -> None:
        gate = self.gate
        if gate is None:
            return
        if not self._stream_time:
            t_s = self._stream_now()
            gate.tick(now, t_s)
            if t_s is not None:
                gate.advance(t_s)
            return
        # timebase 'stream': time moves with the data; only a real-time silence moves it on
        if self._real_last is not None and self._t_now is not None and now - self._real_last > self.profile.watchdog_s:
            self._t_now += now - self._real_last
            self._real_last = now
            gate.tick(self._t_now, self._t_now)
            gate.advance(self._t_now)

    def report(self) -> dict:
        if self.gate is None:
            return {}
        g = self.gate
        return {"gate": dict(g.counts), "refusals": dict(g.reasons), "driver": g.driver.report(),
                "estop": {"latched": g.estopped, "count": g.counts["estops"], "reason": g.estop_reason},
                "armed": g.armed, "operator_limits": {"max_amplitude_ma": g.op_amplitude_ma, "max_frequency_hz": g.op_frequency_hz},
                "safe_deadline_s": round(g.safe_deadline_s, 6), "last_device_error": g.last_error,
                "watchdog_to_safe_ms": [round(1e3 * a, 3) for a, _ in g.trips],
                "watchdog_over_deadline_ms": [round(1e3 * b, 3) for _, b in g.trips],
                "time_log": dict(g.time_log.totals)}

    def close(self) -> None:
        if self.gate is not None:
            now = self._gate_now(self.ctx.real_clock())
            self.gate.safe_state(now)
            self.gate.driver.close()
