"""A simulated stimulator: an exact log of every pulse, and the delivered waveform as a stream.

Everything is dated on the stream clock (the data time of the decision that
caused it), so that a replay at any speed gives the same log and the same
waveform. The pulse clock of a continuous level keeps running across
amplitude changes at the same frequency, as on a real stimulator; a new
frequency, or a level after ``off``, starts with a pulse at once.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TextIO

import numpy as np

from rtneuro.messages import (
    CMD_LEVEL,
    CMD_OFF,
    CMD_PULSE,
    CMD_TRAIN,
    SHAPE_MONOPHASIC_ANODIC,
    SHAPE_MONOPHASIC_CATHODIC,
)

_MONOPHASIC = (SHAPE_MONOPHASIC_CATHODIC, SHAPE_MONOPHASIC_ANODIC)
KINDS = {CMD_LEVEL: "level", CMD_OFF: "off", CMD_PULSE: "pulse", CMD_TRAIN: "train"}

#: Columns of the delivered-waveform stream, per stimulation channel. ``energy_uj``
#: is the electrical energy the pulses put into a 1 kOhm load (E = R I^2 t per
#: phase; scale by the electrode impedance in kOhm).
WAVEFORM_FIELDS = (("amplitude_ma", "mA"), ("frequency_hz", "Hz"), ("pulses", "count"), ("charge_uc", "uC"), ("energy_uj", "uJ"))


class SimulatedDriver:
    """Stimulator that delivers nothing but records everything, exactly.

    Keeps, per channel, the continuous level in effect (amplitude, pulse
    width, frequency), the trains and single pulses still to come, and a log
    of every pulse: ``pulse_log`` rows ``(t_stream, channel, amplitude_ma,
    pulse_width_us)``. Pulses are generated as stream time advances
    (:meth:`advance`, called by the gate); a safe state cancels whatever was
    still to come.

    With :meth:`enable_waveform` it also renders what it delivered on a
    regular grid (``rate`` Hz from the first time it saw): per channel the
    amplitude and frequency in effect at each sample, and the number of pulses
    and cathodic-phase charge delivered within each sample interval. A sample
    is rendered only once its whole interval is in the past, so any split of
    the same deliveries renders the same samples (:meth:`render`).

    Parameters
    ----------
    log_path : str or Path or None
        Append every delivered command (not every pulse) to this JSON-lines file.
    """

    name = "simulated"

    def __init__(self, log_path: str | Path | None = None) -> None:
        self.log_path = Path(log_path) if log_path else None
        self._fh: TextIO | None = None
        self.log: list[dict] = []
        #: every pulse delivered: (t_stream, channel, amplitude_ma, pulse_width_us)
        self.pulse_log: list[tuple[float, int, float, float]] = []
        # ch -> [t_on, amp, pw, freq, p0, next k]: pulses at p0 + k / freq
        self._on: dict[int, list] = {}
        self._pending: dict[int, list[tuple[float, float, float, int]]] = {}  # trains and single pulses to come
        self.on_time_s: dict[int, float] = {}
        self.pulses: dict[int, int] = {}
        self.charge_uc: dict[int, float] = {}
        self.energy_uj: dict[int, float] = {}  # into a 1 kOhm load
        self.safe_states = 0
        self._t: float | None = None  # stream time reached: nothing is dated earlier
        self._offset: float | None = None
        # the waveform stream
        self._wave_channels: list[int] = []
        self._rate = 0.0
        self._origin: float | None = None
        self._next_sample = 0
        self._state: dict[int, tuple[float, float]] = {}  # ch -> (amp, freq) at the next sample to render
        self._changes: list[tuple[float, int, float, float]] = []  # (t, ch, amp, freq) not yet rendered
        self._wave_pulses: list[tuple[float, int, float, float]] = []  # (t, ch, charge, energy) not yet rendered

    # -- protocol -----------------------------------------------------------

    def open(self) -> None:
        self._fh = self.log_path.open("a") if self.log_path else None

    def deliver(self, command: np.void, now: float, t_stream: float) -> None:
        kind = int(command["kind"])
        ch = int(command["channel"])
        amp, pw, freq, dur = (float(command[k]) for k in ("amplitude_ma", "pulse_width_us", "frequency_hz", "duration_s"))
        phases = 1 if int(command["phase_shape"]) in _MONOPHASIC else 2
        t = self._date(t_stream)
        self.advance(t)
        self._offset = now - t_stream  # LSL time minus stream time, to date a safe state
        if kind == CMD_LEVEL:
            cur = self._on.get(ch)
            self._pending.pop(ch, None)
            if cur is not None:
                self._accrue(ch, t)
                if cur[3] == freq:  # same frequency: the pulse clock runs on
                    cur[:4] = [t, amp, pw, freq]
                    cur[6] = phases
                else:
                    self._on[ch] = [t, amp, pw, freq, t, 0, phases]
            else:
                self._on[ch] = [t, amp, pw, freq, t, 0, phases]
            self._change(t, ch, amp, freq)
        elif kind == CMD_OFF:
            self._pending.pop(ch, None)
            if ch in self._on:
                self._accrue(ch, t)
                del self._on[ch]
                self._change(t, ch, 0.0, 0.0)
        elif kind == CMD_PULSE:  # delivered at once
            self._pending.pop(ch, None)
            self._pulse(t, ch, amp, pw, phases)
        elif kind == CMD_TRAIN:
            n = max(1, int(math.floor(freq * dur + 1e-9)))
            self._pending[ch] = [(t + j / freq, amp, pw, phases) for j in range(n)]
        entry = {"t": now, "t_stream": t, "kind": KINDS.get(kind, str(kind)), "channel": ch,
                 "amplitude_ma": amp, "pulse_width_us": pw, "frequency_hz": freq, "duration_s": dur,
                 "phase_shape": int(command["phase_shape"])}
        self.log.append(entry)
        if self._fh is not None:
            self._fh.write(json.dumps(entry) + "\n")

    def safe_state(self, now: float) -> None:
        # a safe state comes with LSL time only: date it on the stream clock by the last
        # delivery's offset (exact in real time; never before what was already delivered)
        if self._t is not None:
            t_end = max(self._t, now - self._offset) if self._offset is not None else self._t
            self.advance(t_end)
            for ch in list(self._on):
                self._accrue(ch, t_end)
                del self._on[ch]
                self._change(t_end, ch, 0.0, 0.0)
        self._pending.clear()
        self.safe_states += 1
        if self._fh is not None:
            self._fh.write(json.dumps({"t": now, "kind": "safe_state"}) + "\n")

    def report(self) -> dict:
        return {
            "delivered": len(self.log),
            "on_time_s": {str(k): round(v, 6) for k, v in self.on_time_s.items()},
            "pulses": {str(k): v for k, v in self.pulses.items()},
            "charge_uc": {str(k): round(v, 6) for k, v in self.charge_uc.items()},
            "energy_uj_1kohm": {str(k): round(v, 6) for k, v in self.energy_uj.items()},
            "safe_states": self.safe_states,
        }

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    # -- stream time ----------------------------------------------------------

    def _date(self, t_stream: float) -> float:
        t = float(t_stream) if self._t is None else max(self._t, float(t_stream))
        if self._origin is None:
            self._origin = t
        return t

    def advance(self, t_stream: float) -> None:
        """Stream time has reached ``t_stream``: deliver every pulse due before it."""
        t = self._date(t_stream)
        if self._t is not None and t <= self._t:
            return
        for ch, (_t_on, amp, pw, freq, p0, k, phases) in self._on.items():
            if freq <= 0:
                continue
            k_end = max(k, int(math.ceil((t - p0) * freq)) + 1)
            times = [p0 + i / freq for i in range(k, k_end)]
            times = [x for x in times if x < t]
            for x in times:
                self._pulse(x, ch, amp, pw, phases)
            self._on[ch][5] = k + len(times)
        for ch, due in list(self._pending.items()):
            i = 0
            while i < len(due) and due[i][0] < t:
                self._pulse(due[i][0], ch, due[i][1], due[i][2], due[i][3])
                i += 1
            if i == len(due):
                del self._pending[ch]
            elif i:
                self._pending[ch] = due[i:]
        self._t = t

    def _pulse(self, t: float, ch: int, amp: float, pw: float, phases: int) -> None:
        q = amp * pw / 1000.0  # uC per phase
        e = phases * amp * amp * pw * 1e-3  # uJ into 1 kOhm: phases x (I mA)^2 x (pw us) x 1 kOhm
        self.pulse_log.append((t, ch, amp, pw))
        self.pulses[ch] = self.pulses.get(ch, 0) + 1
        self.charge_uc[ch] = self.charge_uc.get(ch, 0.0) + q
        self.energy_uj[ch] = self.energy_uj.get(ch, 0.0) + e
        if self._rate > 0:
            self._wave_pulses.append((t, ch, q, e))

    def _accrue(self, ch: int, t: float) -> None:
        self.on_time_s[ch] = self.on_time_s.get(ch, 0.0) + max(0.0, t - self._on[ch][0])

    def _change(self, t: float, ch: int, amp: float, freq: float) -> None:
        if self._rate > 0:
            self._changes.append((t, ch, amp, freq))

    def is_on(self, channel: int) -> bool:
        return channel in self._on

    # -- the delivered waveform ------------------------------------------------

    def enable_waveform(self, channels: list[int], rate: float) -> None:
        """Render the delivered waveform of ``channels`` at ``rate`` Hz (see :meth:`render`)."""
        if not rate > 0:
            raise ValueError(f"waveform rate must be > 0, got {rate}")
        self._wave_channels = [int(c) for c in channels]
        self._rate = float(rate)
        self._state = {c: (0.0, 0.0) for c in self._wave_channels}

    @property
    def waveform_columns(self) -> list[tuple[str, str]]:
        """``(name, unit)`` of each rendered column, channel by channel."""
        return [(f"ch{c}.{f}", u) for c in self._wave_channels for f, u in WAVEFORM_FIELDS]

    def _sample_time(self, k: int) -> float:
        assert self._origin is not None
        return self._origin + k / self._rate

    def _bin(self, t: float) -> int:
        """The sample whose interval [t_k, t_k+1) holds ``t``, by the same arithmetic as :meth:`render`."""
        assert self._origin is not None
        k = int(math.floor((t - self._origin) * self._rate))
        while self._sample_time(k + 1) <= t:
            k += 1
        while k > 0 and self._sample_time(k) > t:
            k -= 1
        return k

    def current(self) -> dict:
        """What the device does from the stream time reached on, until told otherwise.

        ``now``: that time; ``level``: per waveform channel ``[amplitude_ma,
        frequency_hz]``; ``origin`` and ``next``: the waveform's sample grid
        (sample ``k`` starts at ``origin + k / rate``) and the next sample to
        render. A consumer that must know the waveform ahead of the rendered
        samples (a simulated brain) applies ``level`` from the first sample
        starting at or after ``now``, as :meth:`render` will.
        """
        return {"now": self._t, "origin": self._origin, "next": self._next_sample,
                "level": [[self._on[c][1], self._on[c][3]] if c in self._on else [0.0, 0.0] for c in self._wave_channels]}

    def render(self) -> tuple[int, float, np.ndarray] | None:
        """The samples completed since the last call: ``(first index, t0, data)`` or None.

        ``data`` has one row per sample and, per channel, the columns of
        :data:`WAVEFORM_FIELDS`. Sample ``k`` covers stream time
        ``[origin + k / rate, origin + (k + 1) / rate)``.
        """
        if self._rate <= 0 or self._origin is None or self._t is None:
            return None
        k0 = self._next_sample
        k1 = int(math.floor((self._t - self._origin) * self._rate))
        while self._sample_time(k1) > self._t:
            k1 -= 1
        while self._sample_time(k1 + 1) <= self._t:
            k1 += 1
        # samples k0 .. k1-1 have their whole interval before self._t
        if k1 <= k0:
            return None
        n = k1 - k0
        times = self._origin + np.arange(k0, k1) / self._rate  # the same float arithmetic as _sample_time
        chans = self._wave_channels
        data = np.zeros((n, len(chans) * len(WAVEFORM_FIELDS)))
        col = {c: i * len(WAVEFORM_FIELDS) for i, c in enumerate(chans)}
        t_end = self._sample_time(k1)
        keep = [x for x in self._changes if x[0] >= t_end]
        done = [x for x in self._changes if x[0] < t_end]
        for c in chans:
            ch_changes = [(t, a, f) for t, cc, a, f in done if cc == c]
            amp0, f0 = self._state[c]
            amp = np.full(n, amp0)
            fr = np.full(n, f0)
            for t, a, f in ch_changes:  # in time order: each applies from its sample on
                idx = np.searchsorted(times, t, side="left")
                amp[idx:] = a
                fr[idx:] = f
            if ch_changes:
                self._state[c] = (ch_changes[-1][1], ch_changes[-1][2])
            data[:, col[c]] = amp
            data[:, col[c] + 1] = fr
        later = []
        for t, c, q, e in self._wave_pulses:
            k = self._bin(t)
            if k >= k1:
                later.append((t, c, q, e))
            elif c in col:
                data[k - k0, col[c] + 2] += 1
                data[k - k0, col[c] + 3] += q
                data[k - k0, col[c] + 4] += e
        self._changes = keep
        self._wave_pulses = later
        self._next_sample = k1
        return k0, self._sample_time(k0), data
