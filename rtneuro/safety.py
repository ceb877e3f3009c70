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

from .errors import ConfigError, SafetyError
from .messages import CMD_HOLD, CMD_LEVEL, CMD_OFF, CMD_PULSE, CMD_TRAIN, COMMAND_DTYPE
from .nodes.base import build_params, param

__all__ = ["ChannelLimits", "DeviceProfile", "load_profile", "Gate", "Decision", "PROFILE_DIR"]

log = logging.getLogger(__name__)

def _profile_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("rtneuro.hardware"))) / "profiles"


PROFILE_DIR = _profile_dir()
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

    def __post_init__(self) -> None:
        lo, hi = self.pulse_width_us
        if not 0 < lo <= hi:
            raise ConfigError(f"pulse_width_us must be [min, max] with 0 < min <= max, got {list(self.pulse_width_us)}")


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
                       "expired": 0, "watchdog": 0}
        self.reasons: dict[str, int] = {}
        self._last_valid: float | None = None
        self._last_change: dict[int, float] = {}
        self._active: set[int] = set()
        self.tripped = False

    def open(self, now: float) -> None:
        """Open the driver in its safe state. The watchdog arms at the first valid command."""
        self.driver.open()
        self.driver.safe_state(now)
        self._last_valid = None

    def heartbeat(self, now: float, deadline: float | None) -> Decision:
        """A ``hold`` decision: no change; feeds the watchdog unless it expired."""
        if deadline is not None and now > deadline:
            self.counts["expired"] += 1
            self.counts["heartbeats_refused"] += 1
            self.reasons["expired"] = self.reasons.get("expired", 0) + 1
            return Decision("refused", f"expired: arrived {1e3 * (now - deadline):.1f} ms after its deadline", None)
        self._last_valid = now
        self.tripped = False
        self.counts["heartbeats"] += 1
        return _ACCEPTED

    def submit(self, cmd: np.void, now: float, deadline: float | None, t_stream: float) -> Decision:
        """Check one command record and deliver it if allowed."""
        dec = self._check(cmd, now, deadline)
        kind = int(cmd["kind"])
        if dec.status == "refused":
            # A refused heartbeat (expired) is counted apart: 'refused' counts commands.
            self.counts["heartbeats_refused" if kind == CMD_HOLD else "refused"] += 1
            key = dec.reason.split(":")[0]
            self.reasons[key] = self.reasons.get(key, 0) + 1
            return dec
        self._last_valid = now
        self.tripped = False
        if kind == CMD_HOLD:
            self.counts["heartbeats"] += 1
            return dec
        self.counts[dec.status] += 1
        ch = int(cmd["channel"])
        self.driver.deliver(dec.command, now, t_stream)
        if kind == CMD_LEVEL:
            self._active.add(ch)
            self._last_change[ch] = now
        elif kind == CMD_OFF:
            self._active.discard(ch)
            self._last_change[ch] = now
        return dec

    def _check(self, cmd: np.void, now: float, deadline: float | None) -> Decision:
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
        amp, pw, freq, dur = (float(cmd[k]) for k in ("amplitude_ma", "pulse_width_us", "frequency_hz", "duration_s"))
        if not all(math.isfinite(v) for v in (amp, pw, freq, dur)):
            return Decision("refused", "nonfinite: a command field is NaN or infinite", None)
        if amp < 0 or dur < 0:
            return Decision("refused", f"negative: amplitude {amp} mA and duration {dur} s must be >= 0", None)
        last = self._last_change.get(ch)
        if kind == CMD_LEVEL and lim.min_interval_s > 0 and last is not None and now - last < lim.min_interval_s:
            return Decision("refused", f"lockout: {now - last:.3f} s since the last change, profile requires {lim.min_interval_s} s", None)
        lo, hi = lim.pulse_width_us
        if not lo <= pw <= hi:
            return Decision("refused", f"pulse_width: {pw} us outside [{lo}, {hi}] us", None)
        if kind in (CMD_LEVEL, CMD_TRAIN) and not 0 < freq <= lim.max_frequency_hz:
            return Decision("refused", f"frequency: {freq} Hz outside (0, {lim.max_frequency_hz}] Hz", None)
        if kind == CMD_TRAIN and dur > lim.max_train_s:
            return Decision("refused", f"train: {dur} s exceeds {lim.max_train_s} s", None)
        allowed = lim.max_amplitude_ma
        why = f"amplitude: {amp} mA exceeds the profile maximum {lim.max_amplitude_ma} mA"
        q_limit = lim.max_charge_per_phase_uc
        if lim.electrode_area_cm2 is not None:
            # Shannon: log10(Q/A) = k - log10(Q)  ->  Q_max = sqrt(10^k * A)
            q_limit = min(q_limit, math.sqrt(10 ** lim.shannon_k * lim.electrode_area_cm2))
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

    def tick(self, now: float) -> bool:
        """Watchdog: safe state when nothing valid arrived in time. True if it tripped."""
        if self.tripped or self._last_valid is None:
            return False
        if now - self._last_valid > self.profile.watchdog_s:
            self.driver.safe_state(now)
            self._active.clear()
            self.counts["watchdog"] += 1
            self.tripped = True
            log.error("watchdog: no valid command or heartbeat for %.0f ms; all channels of '%s' are in their safe state",
                      1e3 * (now - self._last_valid), self.profile.device)
            return True
        return False

    def safe_state(self, now: float) -> None:
        """Every channel to its safe state; the watchdog disarms until the next valid command."""
        self.driver.safe_state(now)
        self._active.clear()
        self._last_valid = None


def make_command(kind: int, channel: int = 0, amplitude_ma: float = 0.0, pulse_width_us: float = 0.0,
                 frequency_hz: float = 0.0, duration_s: float = 0.0) -> np.ndarray:
    """One command record as a length-1 array of :data:`COMMAND_DTYPE`."""
    rec = np.zeros(1, dtype=COMMAND_DTYPE)
    rec[0] = (kind, channel, amplitude_ma, pulse_width_us, frequency_hz, duration_s)
    return rec


__all__ += ["make_command", "SafetyError"]
