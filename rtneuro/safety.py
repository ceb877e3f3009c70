"""The safety gate: device profiles and the checks every command passes.

A device profile (YAML, in ``hardware/profiles/``) states per channel the
hard limits of a stimulator. :class:`Gate` checks each command against them
and either accepts it, clips it (only where the profile allows clipping) or
refuses it, always with a reason; a watchdog returns every channel to the
safe state when no fresh valid command or heartbeat arrived within the
profile's deadline. Drivers are only ever called by :class:`Gate`.

Charge per phase is amplitude times pulse width (mA x us = nC); charge
density uses the electrode area and is checked against the Shannon (1992)
limit ``log10(D) = k - log10(Q)`` (Q in uC/phase, D in uC/cm^2/phase) with the
profile's ``shannon_k`` (1.85 is the usual limit for macro-electrodes).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .errors import ConfigError, DeviceError, SafetyError
from .messages import (
    CMD_HOLD,
    CMD_LEVEL,
    CMD_OFF,
    CMD_PULSE,
    CMD_TRAIN,
    COMMAND_DTYPE,
    DECISION_DTYPE,
    SHAPE_MONOPHASIC_ANODIC,
    SHAPE_MONOPHASIC_CATHODIC,
    SHAPE_NAMES,
)
from .nodes.base import build_params, param

__all__ = ["ChannelLimits", "DeviceProfile", "load_profile", "Gate", "Decision", "PROFILE_DIR", "waveform_violation"]

log = logging.getLogger(__name__)

def _profile_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("rtneuro.hardware"))) / "profiles"


PROFILE_DIR = _profile_dir()
STATUS_ACCEPTED, STATUS_CLIPPED, STATUS_REFUSED, STATUS_RAMP, STATUS_WATCHDOG, STATUS_ESTOP, STATUS_SAFE, STATUS_DEVICE, \
    STATUS_ESTOP_CLEAR = range(9)  # rtneuro.messages.DECISION_STATUS
KIND_NAMES = {CMD_HOLD: "hold", CMD_LEVEL: "level", CMD_OFF: "off", CMD_PULSE: "pulse", CMD_TRAIN: "train"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelLimits:
    """Hard limits of one output channel."""

    channel: int = param(ge=0)
    max_amplitude_ma: float = param(gt=0, le=100)
    pulse_width_us: tuple[float, float] = param(doc="[min, max] pulse width per phase")
    max_frequency_hz: float = param(gt=0)
    max_charge_per_phase_uc: float = param(gt=0)
    electrode_area_cm2: float | None = param(None, gt=0)
    shannon_k: float = param(1.85, gt=0, le=3)
    max_train_s: float = param(3600.0, gt=0)
    min_interval_s: float = param(0.0, ge=0, doc="lockout after a change of level")
    clip_amplitude: bool = param(False, doc="clip amplitude (and charge) to the limit instead of refusing")
    max_duty_cycle: float = param(1.0, gt=0, le=1, doc="largest fraction of time a pulse phase is on (phases x width x rate)")
    ramp_up_ma_per_s: float | None = param(None, gt=0, doc="fastest rise of the amplitude (null: a step)")
    ramp_down_ma_per_s: float | None = param(None, gt=0, doc="fastest fall of the amplitude, watchdog included (null: a step)")
    blanking_ms: float = param(0.0, ge=0, doc="refuse decisions on data from this long after a delivered change (stimulation artifact)")
    allow_monophasic: bool = param(False, doc="monophasic pulses are not charge-balanced: refused unless allowed")
    safe_amplitude_ma: float = param(0.0, ge=0, doc="safe state: 0 is off; above 0, continuous stimulation at the safe waveform")
    safe_pulse_width_us: float = param(60.0, gt=0)
    safe_frequency_hz: float = param(130.0, gt=0)

    def __post_init__(self) -> None:
        lo, hi = self.pulse_width_us
        if not 0 < lo <= hi:
            raise ConfigError(f"pulse_width_us must be [min, max] with 0 < min <= max, got {list(self.pulse_width_us)}")
        if self.safe_amplitude_ma > 0:
            why = waveform_violation(self, self.safe_amplitude_ma, self.safe_pulse_width_us, self.safe_frequency_hz, 0)
            if why:
                raise ConfigError(f"the safe waveform of channel {self.channel} is outside its own limits ({why})")

    def charge_limit_uc(self) -> float:
        """Largest charge per phase: the profile's, and the Shannon limit for the electrode area."""
        q = self.max_charge_per_phase_uc
        if self.electrode_area_cm2 is not None:
            # Shannon: log10(Q/A) = k - log10(Q)  ->  Q_max = sqrt(10^k * A)
            q = min(q, math.sqrt(10 ** self.shannon_k * self.electrode_area_cm2))
        return q


def waveform_violation(lim: ChannelLimits, amp: float, pw: float, freq: float, shape: int) -> str:
    """Why a continuous waveform breaks a channel's limits ("" when it does not).

    Amplitude and charge are checked here only as hard ceilings; the gate
    decides about clipping before.
    """
    lo, hi = lim.pulse_width_us
    if not lo <= pw <= hi:
        return f"pulse_width: {pw} us outside [{lo}, {hi}] us"
    if not 0 < freq <= lim.max_frequency_hz:
        return f"frequency: {freq} Hz outside (0, {lim.max_frequency_hz}] Hz"
    if amp > lim.max_amplitude_ma + 1e-12:
        return f"amplitude: {amp} mA exceeds the profile maximum {lim.max_amplitude_ma} mA"
    q = lim.charge_limit_uc()
    if amp * pw / 1000.0 > q + 1e-12:
        return f"charge: {amp * pw / 1000:.3f} uC/phase exceeds the limit {q:.3f} uC/phase"
    phases = 1 if shape in (SHAPE_MONOPHASIC_CATHODIC, SHAPE_MONOPHASIC_ANODIC) else 2
    duty = phases * pw * 1e-6 * freq
    if duty > lim.max_duty_cycle + 1e-12:
        return f"duty_cycle: {duty:.4f} ({phases} phases x {pw} us x {freq} Hz) exceeds {lim.max_duty_cycle}"
    return ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceProfile:
    """A stimulator's safety profile."""

    device: str
    description: str = ""
    watchdog_s: float = param(0.5, gt=0, le=60, doc="safe state when no valid command or heartbeat for this long")
    channels: list[dict[str, Any]] = param(doc="one entry of ChannelLimits per channel")
    limits: dict = field(default_factory=dict)

    def channel(self, ch: int) -> ChannelLimits | None:
        return self.limits.get(ch)


def load_profile(ref: str, base_dir: Path | None = None) -> DeviceProfile:
    """Load and validate a profile by shipped name (``"simulated"``) or path."""
    path = Path(ref)
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILE_DIR / f"{ref}.yaml"
    elif not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.exists():
        shipped = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise ConfigError(f"device profile {ref!r} not found (looked for {path}); shipped profiles: {shipped}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    where = f"{path}"
    prof = build_params(DeviceProfile, raw, where)
    limits = {}
    for i, ch in enumerate(prof.channels):
        lim = build_params(ChannelLimits, ch, f"{where}: channels[{i}]")
        if lim.channel in limits:
            raise ConfigError(f"{where}: channel {lim.channel} is listed twice")
        limits[lim.channel] = lim
    if not limits:
        raise ConfigError(f"{where}: a profile needs at least one channel")
    object.__setattr__(prof, "limits", limits)
    return prof


@dataclass(slots=True)
class Decision:
    status: str  # "accepted", "clipped", "refused"
    reason: str
    command: np.void | None  # what reaches the driver (None when refused)


_ACCEPTED = Decision("accepted", "", None)


class Gate:
    """Checks commands against a profile; the only caller of a driver.

    Every command is accepted, clipped (only where the profile allows it) or
    refused, with a reason. A new level is reached along a ramp no steeper
    than the profile's rates (or the command's ``ramp_s``), one step per
    :meth:`tick`. The watchdog ramps every channel down to its safe state
    when no fresh valid command or heartbeat arrived within the profile's
    ``watchdog_s``; the output is safe at the latest ``safe_deadline_s``
    after the last valid input. An emergency stop puts every channel in its
    safe state at once, without a ramp, and refuses every stimulating
    command until it is cleared. A driver that fails (``DeviceError``) is
    put in its safe state and the command is refused with the reason.

    Parameters
    ----------
    profile : DeviceProfile
    driver : object
        Implements the driver protocol of :mod:`rtneuro.hardware.base`.
    """

    def __init__(self, profile: DeviceProfile, driver) -> None:
        self.profile = profile
        self.driver = driver
        self.counts = {"accepted": 0, "clipped": 0, "refused": 0, "heartbeats": 0, "heartbeats_refused": 0,
                       "expired": 0, "watchdog": 0, "ramp_steps": 0, "device_errors": 0, "estops": 0}
        self.reasons: dict[str, int] = {}
        self._last_valid: float | None = None
        self._last_change: dict[int, float] = {}
        self._last_delivery_stream: dict[int, float] = {}
        #: channel -> delivered waveform [amplitude, pulse width, frequency, shape] while stimulating
        self.level: dict[int, list] = {}
        #: channel -> ramp in progress: [from amp, to amp, rate mA/s, t0, pw, freq, shape, off at the end]
        self._ramps: dict[int, list] = {}
        self.tripped = False
        self.estopped = False
        self.estop_reason = ""
        self.last_error = ""
        #: decisions not yet taken by the stimulator node (rows of DECISION_DTYPE, as tuples)
        self.records: list[tuple] = []
        self._n_records = 0
        self._t_stream_last = 0.0
        #: per watchdog trip: (seconds from the last valid input to the safe state, seconds beyond the deadline)
        self.trips: list[tuple[float, float]] = []
        self._trip_from: float | None = None
        #: Latest time the output is safe after the last valid input.
        self.safe_deadline_s = profile.watchdog_s + max(
            (lim.max_amplitude_ma / lim.ramp_down_ma_per_s if lim.ramp_down_ma_per_s else 0.0)
            for lim in profile.limits.values())

    @property
    def _active(self) -> set[int]:
        return set(self.level)

    # -- life cycle ---------------------------------------------------------

    def open(self, now: float) -> None:
        """Open the driver in its safe state. The watchdog arms at the first valid command."""
        self.driver.open()
        self._to_safe(now, 0.0)
        self._last_valid = None

    def heartbeat(self, now: float, deadline: float | None, t_stream: float | None = None, cause: int = -1) -> Decision:
        """A ``hold`` decision: no change; feeds the watchdog unless it expired (only refusals are recorded)."""
        if deadline is not None and now > deadline:
            self.counts["expired"] += 1
            self.counts["heartbeats_refused"] += 1
            self._count_reason("expired")
            reason = f"expired: arrived {1e3 * (now - deadline):.1f} ms after its deadline"
            self._record(STATUS_REFUSED, now, now if t_stream is None else t_stream, make_command(CMD_HOLD)[0], cause, reason)
            return Decision("refused", reason, None)
        self._fed(now)
        self.counts["heartbeats"] += 1
        return _ACCEPTED

    def _record(self, status: int, now: float, t_stream: float, cmd: np.void | None, cause: int, reason: str) -> None:
        """One decision record (see :data:`rtneuro.messages.DECISION_DTYPE`)."""
        fields = tuple(cmd[n].item() for n in COMMAND_DTYPE.names or ()) if cmd is not None else (CMD_OFF, -1, 0.0, 0.0, 0.0, 0.0, 0, 0.0)
        self.records.append((self._n_records, now, t_stream, status, *fields, cause, reason.encode("utf-8")[:96]))
        self._n_records += 1
        self._t_stream_last = max(self._t_stream_last, t_stream)

    def take_records(self) -> np.ndarray | None:
        """The decisions since the last call, as a DECISION_DTYPE array (None when there are none)."""
        if not self.records:
            return None
        out = np.array(self.records, dtype=DECISION_DTYPE)
        self.records = []
        return out

    def advance(self, t_stream: float) -> None:
        """Stream time has reached ``t_stream``: a driver that keeps stream time (the simulated one) delivers what is due."""
        adv = getattr(self.driver, "advance", None)
        if adv is not None:
            adv(t_stream)

    def _fed(self, now: float) -> None:
        self._last_valid = now
        self.tripped = False

    def _count_reason(self, key: str) -> None:
        self.reasons[key] = self.reasons.get(key, 0) + 1

    # -- commands -----------------------------------------------------------

    def submit(self, cmd: np.void, now: float, deadline: float | None, t_stream: float, cause: int = -1) -> Decision:
        """Check one command record and deliver it (or start its ramp) if allowed; record the decision.

        ``cause`` is the command's index in its stream, for the record.
        """
        dec = self._check(cmd, now, deadline, t_stream)
        kind = int(cmd["kind"])
        if dec.status == "refused":
            # A refused heartbeat (expired) is counted apart: 'refused' counts commands.
            self.counts["heartbeats_refused" if kind == CMD_HOLD else "refused"] += 1
            self._count_reason(dec.reason.split(":")[0])
            self._record(STATUS_REFUSED, now, t_stream, cmd if kind in KIND_NAMES else None, cause, dec.reason)
            return dec
        self._fed(now)
        if kind == CMD_HOLD:
            self.counts["heartbeats"] += 1
            return dec
        assert dec.command is not None
        try:
            self._apply(dec.command, now, t_stream)
        except DeviceError as exc:
            self._device_failed(exc, now, t_stream)
            self.counts["refused"] += 1
            self._count_reason("device")
            self._record(STATUS_REFUSED, now, t_stream, cmd, cause, f"device: {exc}")
            return Decision("refused", f"device: {exc}", None)
        self.counts[dec.status] += 1
        self._record(STATUS_CLIPPED if dec.status == "clipped" else STATUS_ACCEPTED, now, t_stream, dec.command, cause, dec.reason)
        return dec

    def _apply(self, cmd: np.void, now: float, t_stream: float) -> None:
        kind = int(cmd["kind"])
        ch = int(cmd["channel"])
        lim = self.profile.limits[ch]
        if kind in (CMD_PULSE, CMD_TRAIN):
            self.driver.deliver(cmd, now, t_stream)
            self._last_delivery_stream[ch] = t_stream
            return
        self._last_change[ch] = now
        self._last_delivery_stream[ch] = t_stream
        cur = self.level.get(ch)
        cur_amp = cur[0] if cur is not None else 0.0
        target: float
        pw: float
        freq: float
        shape: int
        if kind == CMD_OFF:
            target = 0.0
            pw, freq, shape = (cur[1], cur[2], cur[3]) if cur is not None else (0.0, 0.0, 0)
        else:
            target, pw, freq, shape = (float(cmd["amplitude_ma"]), float(cmd["pulse_width_us"]),
                                       float(cmd["frequency_hz"]), int(cmd["phase_shape"]))
        rate = lim.ramp_up_ma_per_s if target > cur_amp else lim.ramp_down_ma_per_s
        ramp_s = float(cmd["ramp_s"])
        if ramp_s > 0 and target != cur_amp:
            asked = abs(target - cur_amp) / ramp_s
            rate = asked if rate is None else min(rate, asked)
        self._ramps.pop(ch, None)
        if rate is None or target == cur_amp:
            self._set(ch, target, pw, freq, shape, now, t_stream)
            return
        if cur is not None and (pw, freq, shape) != tuple(cur[1:]) and kind == CMD_LEVEL:
            # a new waveform takes effect at the current amplitude, where it is within limits
            if not waveform_violation(lim, cur_amp, pw, freq, shape):
                self._set(ch, cur_amp, pw, freq, shape, now, t_stream)
            else:
                pw, freq, shape = cur[1], cur[2], cur[3]
        self._ramps[ch] = [cur_amp, target, rate, now, pw, freq, shape, kind == CMD_OFF]
        self._step_ramp(ch, now, t_stream)

    def _set(self, ch: int, amp: float, pw: float, freq: float, shape: int, now: float, t_stream: float) -> None:
        """Deliver a level (``amp`` > 0) or off."""
        if amp <= 0.0:
            if ch in self.level:
                rec = make_command(CMD_OFF, ch)[0]
                self.driver.deliver(rec, now, t_stream)
                self.level.pop(ch, None)
            return
        rec = make_command(CMD_LEVEL, ch, amp, pw, freq, 0.0, shape)[0]
        self.driver.deliver(rec, now, t_stream)
        self.level[ch] = [amp, pw, freq, shape]

    def _step_ramp(self, ch: int, now: float, t_stream: float) -> None:
        a0, a1, rate, t0, pw, freq, shape, _off = self._ramps[ch]
        step = rate * max(0.0, now - t0)
        amp = min(a1, a0 + step) if a1 > a0 else max(a1, a0 - step)
        cur = self.level.get(ch)
        if amp == a1:
            del self._ramps[ch]
        if cur is None and amp <= 0.0:
            return
        if cur is None or abs(cur[0] - amp) > 1e-9 or amp == a1:
            self._set(ch, amp, pw, freq, shape, now, t_stream)
            self.counts["ramp_steps"] += 1
            step_cmd = make_command(CMD_LEVEL if amp > 0 else CMD_OFF, ch, amp, pw, freq, 0.0, shape)[0]
            self._record(STATUS_RAMP, now, t_stream, step_cmd, -1, f"ramp: {amp:.4g} mA on the way to {a1:.4g} mA at {rate:.4g} mA/s")

    def _check(self, cmd: np.void, now: float, deadline: float | None, t_stream: float) -> Decision:
        kind = int(cmd["kind"])
        if kind not in KIND_NAMES:
            return Decision("refused", f"unknown: command kind {kind} is not one of {sorted(KIND_NAMES)}", None)
        if deadline is not None and now > deadline:
            self.counts["expired"] += 1
            return Decision("refused", f"expired: arrived {1e3 * (now - deadline):.1f} ms after its deadline", None)
        if kind == CMD_HOLD:
            return Decision("accepted", "", cmd)
        ch = int(cmd["channel"])
        lim = self.profile.channel(ch)
        if lim is None:
            return Decision("refused", f"channel: {ch} is not in profile '{self.profile.device}' (channels {sorted(self.profile.limits)})", None)
        if kind == CMD_OFF:
            return Decision("accepted", "", cmd)
        if self.estopped:
            return Decision("refused", f"estop: the emergency stop is latched ({self.estop_reason}); clear it with 'rtneuro stop --clear'", None)
        amp, pw, freq, dur, ramp_s = (float(cmd[k]) for k in ("amplitude_ma", "pulse_width_us", "frequency_hz", "duration_s", "ramp_s"))
        shape = int(cmd["phase_shape"])
        if not all(math.isfinite(v) for v in (amp, pw, freq, dur, ramp_s)):
            return Decision("refused", "nonfinite: a command field is NaN or infinite", None)
        if amp < 0 or dur < 0 or ramp_s < 0:
            return Decision("refused", f"negative: amplitude {amp} mA, duration {dur} s and ramp {ramp_s} s must be >= 0", None)
        if shape not in SHAPE_NAMES:
            return Decision("refused", f"shape: phase_shape {shape} is not one of {sorted(SHAPE_NAMES)}", None)
        if shape in (SHAPE_MONOPHASIC_CATHODIC, SHAPE_MONOPHASIC_ANODIC) and not lim.allow_monophasic:
            return Decision("refused", f"charge_balance: {SHAPE_NAMES[shape]} pulses are not charge-balanced and profile '{self.profile.device}' does not allow them on channel {ch}", None)
        last = self._last_change.get(ch)
        if kind == CMD_LEVEL and lim.min_interval_s > 0 and last is not None and now - last < lim.min_interval_s:
            return Decision("refused", f"lockout: {now - last:.3f} s since the last change, profile requires {lim.min_interval_s} s", None)
        if lim.blanking_ms > 0:
            t_del = self._last_delivery_stream.get(ch)
            if t_del is not None and 0 <= t_stream - t_del < lim.blanking_ms / 1000.0:
                return Decision("refused", f"blanking: decided on data {1e3 * (t_stream - t_del):.1f} ms after the stimulation it follows (blanking {lim.blanking_ms} ms)", None)
        lo, hi = lim.pulse_width_us
        if not lo <= pw <= hi:
            return Decision("refused", f"pulse_width: {pw} us outside [{lo}, {hi}] us", None)
        if kind in (CMD_LEVEL, CMD_TRAIN) and not 0 < freq <= lim.max_frequency_hz:
            return Decision("refused", f"frequency: {freq} Hz outside (0, {lim.max_frequency_hz}] Hz", None)
        if kind == CMD_TRAIN and dur > lim.max_train_s:
            return Decision("refused", f"train: {dur} s exceeds {lim.max_train_s} s", None)
        if kind in (CMD_LEVEL, CMD_TRAIN):
            phases = 1 if shape in (SHAPE_MONOPHASIC_CATHODIC, SHAPE_MONOPHASIC_ANODIC) else 2
            duty = phases * pw * 1e-6 * freq
            if duty > lim.max_duty_cycle + 1e-12:
                return Decision("refused", f"duty_cycle: {duty:.4f} ({phases} phases x {pw} us x {freq} Hz) exceeds {lim.max_duty_cycle}", None)
        allowed = lim.max_amplitude_ma
        why = f"amplitude: {amp} mA exceeds the profile maximum {lim.max_amplitude_ma} mA"
        q_limit = lim.charge_limit_uc()
        amp_q = q_limit * 1000.0 / pw  # mA giving the charge limit at this width
        if amp_q < allowed:
            allowed = amp_q
            if amp > amp_q:
                why = f"charge: {amp * pw / 1000:.3f} uC/phase exceeds the limit {q_limit:.3f} uC/phase"
        if amp > allowed:
            if not lim.clip_amplitude:
                return Decision("refused", why, None)
            out = cmd.copy()
            out["amplitude_ma"] = allowed
            return Decision("clipped", f"{why}; clipped to {allowed:.3f} mA", out)
        return Decision("accepted", "", cmd)

    # -- time, failures, stops ---------------------------------------------

    def next_due(self) -> float | None:
        """The LSL time at which the watchdog trips unless a valid input arrives (None: not armed)."""
        if self.tripped or self._last_valid is None:
            return None
        return self._last_valid + self.profile.watchdog_s + 1e-4

    def tick(self, now: float, t_stream: float | None = None) -> bool:
        """Advance ramps; watchdog: ramp to the safe state when nothing valid arrived in time.

        Returns True when the watchdog tripped on this call.
        """
        t_s = now if t_stream is None else t_stream
        tripped = False
        try:
            if not self.tripped and self._last_valid is not None and now - self._last_valid > self.profile.watchdog_s:
                self.counts["watchdog"] += 1
                self.tripped = tripped = True
                self._trip_from = self._last_valid
                log.error("watchdog: no valid command or heartbeat for %.0f ms; every channel of '%s' goes to its safe state",
                          1e3 * (now - self._last_valid), self.profile.device)
                self._record(STATUS_WATCHDOG, now, max(t_s, self._t_stream_last), None, -1,
                             f"watchdog: no valid command or heartbeat for {1e3 * (now - self._last_valid):.0f} ms (limit {1e3 * self.profile.watchdog_s:.0f} ms)")
                self._begin_safe(now, t_s)
            for ch in list(self._ramps):
                self._step_ramp(ch, now, t_s)
            if self.tripped and not self._ramps and self._needs_safe:
                self._to_safe(now, t_s)
        except DeviceError as exc:
            self._device_failed(exc, now, t_s)
        return tripped

    _needs_safe = False

    def _begin_safe(self, now: float, t_stream: float) -> None:
        """Ramp every stimulating channel down at its profile rate; safe state at the end."""
        self._needs_safe = True
        for ch, (amp, pw, freq, shape) in list(self.level.items()):
            rate = self.profile.limits[ch].ramp_down_ma_per_s
            if rate is None:
                self._ramps.pop(ch, None)
                self._set(ch, 0.0, pw, freq, shape, now, t_stream)  # no ramp: off now
                continue
            ramp = self._ramps.get(ch)
            if ramp is not None and ramp[1] == 0.0 and ramp[2] >= rate:
                continue  # already going down to 0 at least this fast
            self._ramps[ch] = [amp, 0.0, rate, now, pw, freq, shape, True]
        if not self._ramps:
            self._to_safe(now, t_stream)

    def _to_safe(self, now: float, t_stream: float) -> None:
        """The driver's safe state, then the profile's safe waveform where it is not off."""
        if self.tripped and self._trip_from is not None:
            # measured: from the last valid input to the safe state, and beyond the deadline
            self.trips.append((now - self._trip_from, now - self._trip_from - self.safe_deadline_s))
            self._trip_from = None
        self._ramps.clear()
        self.level.clear()
        self._needs_safe = False
        self.driver.safe_state(now)
        self._record(STATUS_SAFE, now, max(t_stream, self._t_stream_last), None, -1, "safe state")
        for ch, lim in self.profile.limits.items():
            if lim.safe_amplitude_ma > 0:
                self._set(ch, lim.safe_amplitude_ma, lim.safe_pulse_width_us, lim.safe_frequency_hz, 0, now, t_stream)

    def _device_failed(self, exc: Exception, now: float, t_stream: float) -> bool:
        """Count and record a driver failure, then try its safe state; True if the device confirmed it."""
        self.counts["device_errors"] += 1
        self.last_error = str(exc)
        self._record(STATUS_DEVICE, now, t_stream, None, -1, f"device: {exc}")
        log.error("driver '%s' failed: %s; putting the device in its safe state", getattr(self.driver, "name", "?"), exc)
        self._ramps.clear()
        self.level.clear()
        try:
            self.driver.safe_state(now)
        except DeviceError as exc2:
            log.error("driver '%s' could not reach its safe state: %s", getattr(self.driver, "name", "?"), exc2)
            self.last_error = str(exc2)
            return False
        return True

    def safe_state(self, now: float) -> bool:
        """Every channel to its safe state now; the watchdog disarms until the next valid command.

        Returns False when the driver failed and could not confirm the safe state either.
        """
        ok = True
        try:
            self._to_safe(now, self._t_stream_last)
        except DeviceError as exc:
            ok = self._device_failed(exc, now, self._t_stream_last)
        self._last_valid = None
        return ok

    def emergency_stop(self, now: float, reason: str = "operator") -> None:
        """Safe state at once (no ramp), latched: stimulating commands are refused until cleared.

        Raises DeviceError when the device did not confirm its safe state (the
        latch holds all the same), so that the operator is told.
        """
        self.estopped = True
        self.estop_reason = reason
        self.counts["estops"] += 1
        log.error("emergency stop (%s): every channel of '%s' is in its safe state until cleared", reason, self.profile.device)
        self._record(STATUS_ESTOP, now, self._t_stream_last, None, -1, f"estop: {reason}")
        if not self.safe_state(now):
            raise DeviceError(f"device '{self.profile.device}' did not confirm its safe state ({self.last_error}); "
                              "cut its power or disconnect it by hand")

    def clear_emergency_stop(self, now: float) -> None:
        """Accept stimulating commands again; channels stay in their safe state until the next one."""
        if self.estopped:
            log.warning("emergency stop of '%s' cleared", self.profile.device)
            self._record(STATUS_ESTOP_CLEAR, now, self._t_stream_last, None, -1, "estop cleared")
        self.estopped = False
        self.estop_reason = ""


def make_command(kind: int, channel: int = 0, amplitude_ma: float = 0.0, pulse_width_us: float = 0.0,
                 frequency_hz: float = 0.0, duration_s: float = 0.0, phase_shape: int = 0,
                 ramp_s: float = 0.0) -> np.ndarray:
    """One command record as a length-1 array of :data:`COMMAND_DTYPE`."""
    rec = np.zeros(1, dtype=COMMAND_DTYPE)
    rec[0] = (kind, channel, amplitude_ma, pulse_width_us, frequency_hz, duration_s, phase_shape, ramp_s)
    return rec


__all__ += ["make_command", "SafetyError"]
