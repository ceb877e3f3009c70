"""A simulated stimulator: keeps an exact log of what it delivered."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rtneuro.messages import CMD_LEVEL, CMD_OFF, CMD_PULSE, CMD_TRAIN

KINDS = {CMD_LEVEL: "level", CMD_OFF: "off", CMD_PULSE: "pulse", CMD_TRAIN: "train"}


class SimulatedDriver:
    """Stimulator that delivers nothing but records everything.

    Keeps, per channel, whether continuous stimulation is on and at which
    waveform, the time it was on (on the stream clock, so a replay at any
    speed reports data time) and the pulses and charge delivered. With
    ``log_path`` every delivered command is also appended to a JSON-lines
    file, flushed on close.

    Parameters
    ----------
    log_path : str or Path or None
    """

    name = "simulated"

    def __init__(self, log_path: str | Path | None = None) -> None:
        self.log_path = Path(log_path) if log_path else None
        self.log: list[dict] = []
        self._on: dict[int, tuple[float, float, float, float]] = {}  # ch -> (t_stream, amp, pw, freq)
        self.on_time_s: dict[int, float] = {}
        self.pulses: dict[int, float] = {}
        self.charge_uc: dict[int, float] = {}
        self.safe_states = 0
        self._t_stream = 0.0
        self._offset: float | None = None

    def open(self) -> None:
        self._fh = self.log_path.open("a") if self.log_path else None

    def _accrue(self, ch: int, t_stream: float) -> None:
        start, amp, pw, freq = self._on.pop(ch)
        dt = max(0.0, t_stream - start)
        self.on_time_s[ch] = self.on_time_s.get(ch, 0.0) + dt
        n = dt * freq
        self.pulses[ch] = self.pulses.get(ch, 0.0) + n
        self.charge_uc[ch] = self.charge_uc.get(ch, 0.0) + n * amp * pw / 1000.0

    def deliver(self, command: np.void, now: float, t_stream: float) -> None:
        kind = int(command["kind"])
        ch = int(command["channel"])
        amp, pw, freq, dur = (float(command[k]) for k in ("amplitude_ma", "pulse_width_us", "frequency_hz", "duration_s"))
        self._t_stream = max(self._t_stream, t_stream)
        self._offset = now - t_stream  # LSL time minus stream time, to date a safe state
        if ch in self._on:
            self._accrue(ch, t_stream)
        if kind == CMD_LEVEL:
            self._on[ch] = (t_stream, amp, pw, freq)
        elif kind in (CMD_PULSE, CMD_TRAIN):
            n = 1.0 if kind == CMD_PULSE else freq * dur
            self.pulses[ch] = self.pulses.get(ch, 0.0) + n
            self.charge_uc[ch] = self.charge_uc.get(ch, 0.0) + n * amp * pw / 1000.0
        entry = {"t": now, "t_stream": t_stream, "kind": KINDS.get(kind, str(kind)), "channel": ch,
                 "amplitude_ma": amp, "pulse_width_us": pw, "frequency_hz": freq, "duration_s": dur,
                 "phase_shape": int(command["phase_shape"])}
        self.log.append(entry)
        if self._fh is not None:
            self._fh.write(json.dumps(entry) + "\n")

    def safe_state(self, now: float) -> None:
        # a safe state comes with LSL time only: date it on the stream clock by the last
        # delivery's offset (exact in real time; never before the last delivery)
        t_end = max(self._t_stream, now - self._offset) if self._offset is not None else self._t_stream
        self._t_stream = t_end
        for ch in list(self._on):
            self._accrue(ch, t_end)
        self.safe_states += 1
        if self._fh is not None:
            self._fh.write(json.dumps({"t": now, "kind": "safe_state"}) + "\n")

    def is_on(self, channel: int) -> bool:
        return channel in self._on

    def report(self) -> dict:
        return {
            "delivered": len(self.log),
            "on_time_s": {str(k): round(v, 6) for k, v in self.on_time_s.items()},
            "pulses": {str(k): round(v, 3) for k, v in self.pulses.items()},
            "charge_uc": {str(k): round(v, 6) for k, v in self.charge_uc.items()},
            "safe_states": self.safe_states,
        }

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
