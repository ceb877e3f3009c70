"""The stimulator node: the safety gate in front of a hardware driver."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, did_you_mean
from ..messages import CMD_HOLD, Chunk, StreamMeta
from ..safety import Gate, load_profile
from .base import Node, NodeContext, param

__all__ = ["Stimulator", "StimulatorParams"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StimulatorParams:
    """Parameters of :class:`Stimulator`."""

    driver: str = param("simulated", doc="a driver registered in rtneuro.hardware.DRIVERS")
    profile: str = param("simulated", doc="shipped profile name or path to a profile YAML")
    log_path: str | None = param(None, doc="simulated driver: append delivered commands to this JSON-lines file")
    driver_args: dict[str, Any] = param({}, doc="the driver's own settings (serial: port, baudrate; zmq: endpoint; lsl_markers: stream_name)")


class Stimulator(Node):
    """Every command it receives passes the safety gate before the driver.

    The driver is created in :meth:`open` (never while validating) and put
    in its safe state at once; :meth:`close` and the watchdog put it back
    there. :meth:`process` returns one ``(status, reason)`` per command,
    which the runtime sends back to the controller as the acknowledgement.

    The recommended layout gives this node a process of its own (the
    ``stimulate`` service), so that a failure anywhere in the processing
    cannot stop the watchdog.
    """

    category = "stimulator"
    Params = StimulatorParams
    input_kinds = ("cmd",)
    max_inputs = 8

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
        #: every decision of the gate, with its reason (DECISION_DTYPE records)
        self.outputs = {"decisions": StreamMeta(name=ctx.stream_name("decisions"), kind="cmd", sfreq=0.0, dtype="decision",
                                                source=f"safety gate decisions of {params.driver}/{self.profile.device}")}
        self.gate: Gate | None = None

    def open(self) -> None:
        kwargs = dict(self.params.driver_args)
        if self.params.log_path:
            kwargs["log_path"] = self.ctx.resolve(self.params.log_path)
        self.gate = Gate(self.profile, self._driver_cls(**kwargs))
        self.gate.open(self.ctx.real_clock())

    def warmup(self) -> None:
        pass

    def process(self, chunk: Chunk, port: int = 0) -> list[tuple[str, str]]:
        gate = self.gate
        if gate is None:
            raise RuntimeError("stimulator used before open()")
        now = self.ctx.real_clock()
        extra = chunk.extra or {}
        deadline = extra.get("deadline")
        deadline = float(deadline) if isinstance(deadline, (int, float)) else None
        dt = 1.0 / chunk.sfreq if chunk.sfreq > 0 else 0.0
        out = []
        data = chunk.data
        for i, kind in enumerate(data["kind"].tolist()):
            if kind == CMD_HOLD:
                d = gate.heartbeat(now, deadline, chunk.t0 + i * dt, chunk.first + i)
            else:
                d = gate.submit(data[i], now, deadline, chunk.t0 + i * dt, chunk.first + i)
            out.append((d.status, d.reason))
        return out

    def take_outputs(self) -> list[tuple[str, Chunk]]:
        """The gate's decisions since the last call, for the ``<id>.decisions`` stream (the service publishes them)."""
        recs = None if self.gate is None else self.gate.take_records()
        if recs is None:
            return []
        first = self._n_decisions
        self._n_decisions += len(recs)
        return [("decisions", Chunk(recs, first, float(recs["time"][0]), 0.0, []))]

    _n_decisions = 0

    def next_tick_due(self) -> float | None:
        """When the watchdog must next be checked (the service wakes up for it)."""
        return None if self.gate is None else self.gate.next_due()

    def emergency_stop(self, now: float, reason: str = "operator") -> None:
        """Safe state at once, latched until :meth:`clear_emergency_stop` (``rtneuro stop --now``)."""
        if self.gate is not None:
            self.gate.emergency_stop(now, reason)

    def clear_emergency_stop(self, now: float) -> None:
        """Accept stimulating commands again (``rtneuro stop --clear``)."""
        if self.gate is not None:
            self.gate.clear_emergency_stop(now)

    def status(self) -> str:
        if self.gate is None:
            return ""
        if self.gate.estopped:
            return "EMERGENCY STOP latched"
        return "watchdog tripped" if self.gate.tripped else ""

    def end(self) -> None:
        """Every command input has ended: safe state now, not after the watchdog deadline."""
        if self.gate is not None:
            self.gate.safe_state(self.ctx.real_clock())

    def tick(self, now: float) -> None:
        if self.gate is not None:
            self.gate.tick(now)

    def report(self) -> dict:
        if self.gate is None:
            return {}
        g = self.gate
        return {"gate": dict(g.counts), "refusals": dict(g.reasons), "driver": g.driver.report(),
                "estop": {"latched": g.estopped, "count": g.counts["estops"], "reason": g.estop_reason},
                "safe_deadline_s": round(g.safe_deadline_s, 6), "last_device_error": g.last_error,
                "watchdog_to_safe_ms": [round(1e3 * a, 3) for a, _ in g.trips],
                "watchdog_over_deadline_ms": [round(1e3 * b, 3) for _, b in g.trips]}

    def close(self) -> None:
        if self.gate is not None:
            now = self.ctx.real_clock()
            self.gate.safe_state(now)
            self.gate.driver.close()
