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

The gate keeps a delivery ledger per channel (:class:`ChannelLedger`): the
pulses the device delivered within the last ``window_s`` and the waveform it
will deliver from now on, on the same timeline the driver dates its
deliveries on. Every stimulating command is checked against that past and
that future together, so that no composition of accepted commands exceeds a
limit; the device model and the guarantees are stated in ``docs/safety.md``.
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
from .ratelog import RateLog

__all__ = ["ChannelLimits", "DeviceProfile", "load_profile", "Gate", "Decision", "PROFILE_DIR", "waveform_violation",
           "ChannelLedger", "Program", "pulses_before", "clock_start"]

log = logging.getLogger(__name__)

def _profile_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("rtneuro.hardware"))) / "profiles"


PROFILE_DIR = _profile_dir()
STATUS_ACCEPTED, STATUS_CLIPPED, STATUS_REFUSED, STATUS_RAMP, STATUS_WATCHDOG, STATUS_ESTOP, STATUS_SAFE, STATUS_DEVICE, \
    STATUS_ESTOP_CLEAR, STATUS_DISARM, STATUS_ARM, STATUS_LIMIT = range(12)  # rtneuro.messages.DECISION_STATUS
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
    window_s: float = param(1.0, gt=0, le=3600, doc="duty cycle and charge are summed over every window of this length of the delivered pulses")
    max_charge_per_window_uc: float | None = param(None, gt=0, doc="most charge (uC, cathodic phases) delivered within any window_s (null: no limit beyond rate x charge per phase)")

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
    command_deadline_s: float = param(1.0, gt=0, le=60, doc="a command that names no deadline expires when its stream time is this far behind the stream time reached")
    max_time_ahead_s: float = param(1.0, gt=0, le=3600, doc="a command or heartbeat dated further ahead of the stimulator's stream clock is refused (time_ahead)")
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


# -- the device model: one waveform per channel, shared by the gate's ledger and the simulated driver

INF = math.inf
#: Time tolerance of the rate check: a pulse interval short of 1 / max_frequency_hz by float rounding only (1 ns) is allowed.
TIME_TOL_S = 1e-9


def clock_start(t: float, last: float, freq: float) -> float:
    """When a new pulse clock at ``freq`` started at ``t`` gives its first pulse: never sooner than ``1 / freq`` after ``last``."""
    return max(t, last + 1.0 / freq)


class Program:
    """One channel's waveform from its start on: pulses at ``p0 + k / freq`` for ``k`` in ``[k, n)``.

    A continuous level has ``n = inf``; a train ``n = max(1, floor(freq x duration))``.
    """

    __slots__ = ("level", "p0", "freq", "k", "n", "amp", "pw", "phases", "t_on")

    def __init__(self, level: bool, p0: float, freq: float, n: float, amp: float, pw: float, phases: int, t_on: float) -> None:
        self.level = level
        self.p0 = p0
        self.freq = freq
        self.k = 0
        self.n = n
        self.amp = amp
        self.pw = pw
        self.phases = phases
        self.t_on = t_on

    def time(self, k: int) -> float:
        return self.p0 + k / self.freq


def pulses_before(p: Program, x: float) -> int:
    """The first pulse index (from ``p.k``, at most ``p.n``) whose time is not before ``x``: pulses ``p.k .. result-1`` come before ``x``.

    O(1) whatever ``x``: the work never grows with a jump in time.
    """
    k0 = p.k
    if k0 >= p.n or not p.time(k0) < x:
        return k0
    est = (x - p.p0) * p.freq
    k = int(math.ceil(est)) if est < 1e15 else 10**15
    k = max(k0 + 1, k)
    if k > p.n:
        k = int(p.n)
    while k > k0 + 1 and not p.time(k - 1) < x:
        k -= 1
    while k < p.n and p.time(k) < x:
        k += 1
    return k


def _phases(shape: int) -> int:
    return 1 if shape in (SHAPE_MONOPHASIC_CATHODIC, SHAPE_MONOPHASIC_ANODIC) else 2


class ChannelLedger:
    """What one channel delivered within the last window, and the waveform it delivers from now on.

    The ledger applies the same device model as the simulated driver (see
    ``docs/safety.md``): one waveform per channel, a new command replaces
    it; a level at the frequency already running keeps its pulse clock;
    any other new clock (level or train) gives its first pulse at
    ``max(t, last + 1 / freq)``; a single pulse is delivered at once.
    Delivered pulses of the last ``window_s`` are kept (times, and running
    sums of on-time and charge) so that a check costs a few vectorised
    operations over at most ``window_s x max_frequency_hz`` pulses.
    """

    __slots__ = ("min_gap", "window_s", "duty_cap", "q_cap", "prog", "last", "t", "_t", "_cu", "_cq", "_lo", "_n")

    def __init__(self, lim: ChannelLimits) -> None:
        self.min_gap = 1.0 / lim.max_frequency_hz
        self.window_s = lim.window_s
        self.duty_cap = lim.max_duty_cycle * lim.window_s
        self.q_cap = INF if lim.max_charge_per_window_uc is None else lim.max_charge_per_window_uc
        self.prog: Program | None = None
        self.last = -INF  # time of the last delivered pulse
        self.t = -INF  # device time reached
        cap = 2 * (int(min(lim.window_s * lim.max_frequency_hz, 1e6)) + 2) + 64
        self._t = np.empty(cap)
        self._cu = np.zeros(cap + 1)  # on-time (s) of the pulses before index i
        self._cq = np.zeros(cap + 1)  # charge (uC) of the pulses before index i
        self._lo = 0
        self._n = 0

    # -- the past -------------------------------------------------------------

    def _append(self, t: float, u: float, q: float) -> None:
        n = self._n
        if n == len(self._t):
            lo = self._lo
            live = n - lo
            if live > len(self._t) // 2:  # grow (only a safe waveform beyond the window's share could need it)
                cap = 2 * len(self._t)
                self._t, self._cu, self._cq = np.resize(self._t, cap), np.resize(self._cu, cap + 1), np.resize(self._cq, cap + 1)
            self._t[:live] = self._t[lo:n]
            self._cu[:live + 1] = self._cu[lo:n + 1] - self._cu[lo]
            self._cq[:live + 1] = self._cq[lo:n + 1] - self._cq[lo]
            self._lo, self._n = 0, live
            n = live
        self._t[n] = t
        self._cu[n + 1] = self._cu[n] + u
        self._cq[n + 1] = self._cq[n] + q
        self._n = n + 1
        self.last = t

    def pulse(self, t: float, amp: float, pw: float, phases: int) -> None:
        """A single pulse delivered at once at ``t``: it replaces the channel's waveform."""
        self.advance(t)
        self.prog = None
        self._append(t, phases * pw * 1e-6, amp * pw / 1000.0)

    def advance(self, t: float) -> None:
        """Device time reached ``t``: the pulses before it were delivered (bounded work: only the last window is kept)."""
        if not t > self.t:
            return
        p = self.prog
        if p is not None:
            k_hi = pulses_before(p, t)
            if k_hi > p.k:
                k_lo = max(p.k, pulses_before(p, t - self.window_s))
                u, q = p.phases * p.pw * 1e-6, p.amp * p.pw / 1000.0
                for k in range(k_lo, k_hi):
                    self._append(p.time(k), u, q)
                self.last = p.time(k_hi - 1)
                p.k = k_hi
                if k_hi >= p.n:
                    self.prog = None
        self.t = t

    # -- the future -----------------------------------------------------------

    def next_pulse(self) -> float:
        """Time of the running level's next pulse (inf when no level runs)."""
        p = self.prog
        return p.time(p.k) if p is not None and p.level else INF

    def apply(self, kind: int, t: float, amp: float, pw: float, freq: float, dur: float, shape: int) -> None:
        """The device received a checked command at device time ``t`` (the simulated driver's own rule)."""
        self.advance(t)
        phases = _phases(shape)
        p = self.prog
        if kind == CMD_LEVEL:
            if p is not None and p.level and p.freq == freq:  # same frequency: the pulse clock runs on
                p.amp, p.pw, p.phases = amp, pw, phases
            else:
                self.prog = Program(True, clock_start(t, self.last, freq), freq, INF, amp, pw, phases, t)
        elif kind == CMD_OFF:
            self.prog = None
        elif kind == CMD_PULSE:
            self.pulse(t, amp, pw, phases)
        elif kind == CMD_TRAIN:
            n = max(1, int(math.floor(freq * dur + 1e-9)))
            self.prog = Program(False, clock_start(t, self.last, freq), freq, n, amp, pw, phases, t)

    def check(self, t: float, s0: float, freq: float, n: float, u: float, q: float) -> str:
        """Why a new waveform from device time ``t`` (pulses at ``s0 + k / freq``, ``k < n``, at most
        ``u`` s on-time and ``q`` uC each) would break a limit together with what was delivered ("" when it would not).

        Windows are half-open, ``[a, a + window_s)``, and start at a pulse; a pulse count is
        rounded up where float arithmetic could place a pulse on the boundary.
        """
        gap = s0 - self.last
        if gap < self.min_gap - TIME_TOL_S:
            return (f"rate: a pulse {1e3 * gap:.3f} ms after the previous one on this channel; "
                    f"the profile allows one every {1e3 * self.min_gap:.3f} ms")
        w = self.window_s
        # windows that hold only the new waveform
        c = min(n, math.floor(w * freq - 1e-9) + 1)
        if c * u > self.duty_cap * (1 + 1e-12):
            return (f"duty_cycle: {int(c)} pulses of {1e6 * u:.1f} us in a {w:g} s window give {c * u / w:.4f}, "
                    f"above {self.duty_cap / w:g}")
        if c * q > self.q_cap * (1 + 1e-12):
            return f"charge_window: {c * q:.3f} uC within {w:g} s exceeds {self.q_cap:g} uC"
        # windows that start at a delivered pulse of the last window and reach into the new waveform
        n_past = self._n
        lo = self._lo
        while lo < n_past and self._t[lo] < t - w:
            lo += 1
        self._lo = lo
        if lo == n_past:
            return ""
        # cheap bound first: everything delivered within the window plus the fullest window of the new waveform
        if self._cu[n_past] - self._cu[lo] + c * u <= self.duty_cap and self._cq[n_past] - self._cq[lo] + c * q <= self.q_cap:
            return ""
        starts = self._t[lo:n_past]
        cnt = np.floor((starts + (w - s0)) * freq - 1e-9) + 1.0
        np.clip(cnt, 0.0, n, out=cnt)
        duty = (self._cu[n_past] - self._cu[lo:n_past]) + cnt * u
        i = int(np.argmax(duty))
        if duty[i] > self.duty_cap * (1 + 1e-12):
            return (f"duty_cycle: {duty[i] / w:.4f} over the {w:g} s window from t={starts[i]:.3f} s with what was "
                    f"delivered, above {self.duty_cap / w:g}")
        if self.q_cap < INF:
            charge = (self._cq[n_past] - self._cq[lo:n_past]) + cnt * q
            j = int(np.argmax(charge))
            if charge[j] > self.q_cap * (1 + 1e-12):
                return (f"charge_window: {charge[j]:.3f} uC within the {w:g} s window from t={starts[j]:.3f} s "
                        f"with what was delivered, above {self.q_cap:g} uC")
        return ""


@dataclass(slots=True)
class Decision:
    status: str  # "accepted", "clipped", "refused"
    reason: str
    command: np.void | None  # what reaches the driver (None when refused)


_ACCEPTED = Decision("accepted", "", None)


class Gate:
    """Checks commands against a profile and a per-channel delivery ledger; the only caller of a driver.

    Every command is accepted, clipped (only where the profile allows it) or
    refused, with a reason. Beyond the limits of each command alone, every
    stimulating command is checked against what the channel delivered within
    the profile's window and what it will deliver from now on
    (:class:`ChannelLedger`): the minimum interval between any two pulses,
    duty cycle and charge over every window, lockout. One waveform runs per
    channel: a new ``level`` replaces the one running, through the ramp; a
    ``pulse`` or ``train`` replaces a train still running and is refused
    (``busy``) while a level is on or ramping. A new level is reached along a
    ramp no steeper than the profile's rates (or the command's ``ramp_s``),
    one step per :meth:`tick`. The watchdog ramps every channel down to its
    safe state when no fresh valid command or heartbeat arrived within the
    profile's ``watchdog_s``; the output is safe at the latest
    ``safe_deadline_s`` after the last valid input. An emergency stop puts
    every channel in its safe state at once, without a ramp, and refuses every
    stimulating command until it is cleared. A driver that fails
    (``DeviceError``) is put in its safe state and the command is refused with
    the reason.

    Time is checked before anything else: a command or heartbeat whose time
    or deadline is not finite (``time_nonfinite``), whose gate time goes back
    (``time_backwards``), whose stream time lies more than the profile's
    ``max_time_ahead_s`` ahead of the stream clock (``time_ahead``), or that
    is past its deadline (``expired``: its own, else ``command_deadline_s``
    behind the stream time reached) is refused, counted and never feeds the
    watchdog, and the driver never sees its time.

    Parameters
    ----------
    profile : DeviceProfile
    driver : object
        Implements the driver protocol of :mod:`rtneuro.hardware.base`. A
        driver whose ``timeline`` attribute is ``"stream"`` (the simulated
        one) dates deliveries on stream time, and so does the ledger;
        otherwise the device delivers on the gate's clock (``now``).
    """

    def __init__(self, profile: DeviceProfile, driver) -> None:
        self.profile = profile
        self.driver = driver
        self.counts = {"accepted": 0, "clipped": 0, "refused": 0, "heartbeats": 0, "heartbeats_refused": 0,
                       "expired": 0, "watchdog": 0, "ramp_steps": 0, "device_errors": 0, "estops": 0, "time_jumps": 0}
        self.reasons: dict[str, int] = {}
        self._last_valid: float | None = None
        self._last_change: dict[int, float] = {}
        self._last_delivery_stream: dict[int, float] = {}
        #: channel -> delivered waveform [amplitude, pulse width, frequency, shape] while stimulating
        self.level: dict[int, list] = {}
        #: channel -> ramp in progress: [from amp, to amp, rate mA/s, t0, pw, freq, shape, off at the end, final waveform or None]
        self._ramps: dict[int, list] = {}
        #: channel -> its delivery ledger (on the device's timeline)
        self.ledgers = {ch: ChannelLedger(lim) for ch, lim in profile.limits.items()}
        self._stream_dated = getattr(driver, "timeline", "real") == "stream"
        self._t_dev = -INF  # device time reached
        self._offset: float | None = None  # gate time minus device time at the last delivery (stream-dated drivers)
        self._now = -INF  # gate clock reached
        self._t_ref: float | None = None  # stream time reached by accepted inputs
        #: the stimulator's stream clock (a callable giving stream time now), when it has one that follows real time
        self.stream_clock: Any = None
        #: log of refused times, rate-limited by reason (``.totals`` in the report)
        self.time_log = RateLog(log)
        self._plan: tuple | None = None
        self.tripped = False
        self.estopped = False
        self.estop_reason = ""
        #: the operator's switch: while disarmed, stimulating commands are refused (set by disarm()/arm())
        self.armed = True
        self.disarm_reason = ""
        #: operator limits below the profile's, set live (only ever lowered): amplitude (mA), frequency (Hz)
        self.op_amplitude_ma: float | None = None
        self.op_frequency_hz: float | None = None
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
        self._to_safe(now, 0.0, opening=True)  # before any input: the clocks are set by the first one
        self._last_valid = None

    def heartbeat(self, now: float, deadline: float | None, t_stream: float | None = None, cause: int = -1) -> Decision:
        """A ``hold`` decision: no change; feeds the watchdog unless its time is refused (only refusals are recorded)."""
        why = self.check_time(now, deadline, t_stream)
        if why:
            return self.refuse(None, now, t_stream, cause, why)
        self._accept_time(now, t_stream)
        self._fed(now)
        self.counts["heartbeats"] += 1
        return _ACCEPTED

    def refuse(self, cmd: np.void | None, now: float, t_stream: float | None, cause: int, reason: str) -> Decision:
        """Refuse a command (``None`` or a ``hold``: a heartbeat) with ``reason`` ("key: text"): counted and recorded."""
        kind = CMD_HOLD if cmd is None else int(cmd["kind"])
        key = reason.split(":")[0]
        self.counts["heartbeats_refused" if kind == CMD_HOLD else "refused"] += 1
        if key == "expired":
            self.counts["expired"] += 1
        self._count_reason(key)
        if key.startswith("time_"):
            self.time_log.warning(key, "safety gate of '%s': %s", self.profile.device, reason)
        if cmd is None:
            cmd = make_command(CMD_HOLD)[0]
        t_rec = t_stream if t_stream is not None and math.isfinite(t_stream) else self._t_stream_last
        now_rec = now if math.isfinite(now) else self._now
        self._record(STATUS_REFUSED, now_rec, t_rec, cmd if kind in KIND_NAMES else None, cause, reason)
        return Decision("refused", reason, None)

    def _record(self, status: int, now: float, t_stream: float, cmd: np.void | None, cause: int, reason: str) -> None:
        """One decision record (see :data:`rtneuro.messages.DECISION_DTYPE`)."""
        fields = tuple(cmd.item()) if cmd is not None else (CMD_OFF, -1, 0.0, 0.0, 0.0, 0.0, 0, 0.0)
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

    # -- time -----------------------------------------------------------------

    def _stream_ref(self) -> float | None:
        clock = self.stream_clock
        if clock is not None:
            t = float(clock())
            if math.isfinite(t):
                return t if self._t_ref is None else max(t, self._t_ref)
        return self._t_ref

    def _may_jump(self) -> bool:
        """A jump ahead in stream time is taken as a discontinuity only while nothing runs on the stream's time:
        no stream clock, the watchdog not armed (never fed, tripped, or a safe state since) and no ramp."""
        armed = self._last_valid is not None and not self.tripped
        return self.stream_clock is None and not armed and not self._ramps

    def check_time(self, now: float, deadline: float | None, t_stream: float | None) -> str:
        """Why the times of a command or heartbeat are refused ("" when they are not); changes nothing."""
        if not math.isfinite(now):
            return f"time_nonfinite: the gate's clock reads {now}; the stimulator's clock is broken"
        if t_stream is not None and not math.isfinite(t_stream):
            return f"time_nonfinite: stream time {t_stream} is not a finite time; the sender must date its commands"
        if deadline is not None and not math.isfinite(deadline):
            return (f"time_nonfinite: deadline {deadline} is not a finite time; send a finite LSL time, or none "
                    f"(the profile's command_deadline_s {self.profile.command_deadline_s} s applies)")
        if now < self._now:
            return f"time_backwards: the gate's clock went back from {self._now:.6f} s to {now:.6f} s"
        if deadline is not None and now > deadline:
            return f"expired: arrived {1e3 * (now - deadline):.1f} ms after its deadline"
        if t_stream is not None:
            ref = self._stream_ref()
            if ref is not None:
                ahead = t_stream - ref
                if ahead > self.profile.max_time_ahead_s and not self._may_jump():
                    return (f"time_ahead: stream time {t_stream:.6f} s lies {ahead:.3f} s ahead of the stimulator's "
                            f"clock ({ref:.6f} s); the profile allows {self.profile.max_time_ahead_s:g} s (max_time_ahead_s)")
                if deadline is None and -ahead > self.profile.command_deadline_s:
                    return (f"expired: decided on data {-ahead:.3f} s older than the stream time reached; the "
                            f"profile's command_deadline_s is {self.profile.command_deadline_s:g} s")
        return ""

    def _accept_time(self, now: float, t_stream: float | None) -> None:
        """The times of an input passed :meth:`check_time`: the clocks move on, and the device with them."""
        self._now = max(self._now, now)
        if t_stream is not None:
            if self._t_ref is not None and t_stream - self._t_ref > self.profile.max_time_ahead_s:
                self.counts["time_jumps"] += 1
            self._t_ref = t_stream if self._t_ref is None else max(self._t_ref, t_stream)
            if self._stream_dated:
                t_dev = t_stream
                if self.stream_clock is not None:  # the device delivers now, never at a stream time still to come
                    t_clock = float(self.stream_clock())
                    if math.isfinite(t_clock):
                        t_dev = min(t_dev, t_clock)
                self._advance_dev(t_dev)
        if not self._stream_dated:
            self._advance_dev(now)

    def _dev_time_for(self, now: float) -> float:
        """The device time that gate time ``now`` stands for (stream-dated drivers: by the last delivery's offset)."""
        if not self._stream_dated:
            return max(self._t_dev, now)
        if self._offset is None:
            return self._t_dev
        return max(self._t_dev, now - self._offset)

    def _advance_dev(self, t: float) -> None:
        if not t > self._t_dev or not math.isfinite(t):
            return
        self._t_dev = t
        for led in self.ledgers.values():
            led.advance(t)
        if self._stream_dated:
            adv = getattr(self.driver, "advance", None)
            if adv is not None:
                adv(t)

    def advance(self, t_stream: float) -> None:
        """Stream time has reached ``t_stream`` (the stimulator's own clock): a driver that keeps stream time delivers what is due."""
        if self._stream_dated and math.isfinite(t_stream):
            self._advance_dev(t_stream)

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
        kind = int(cmd["kind"])
        if kind not in KIND_NAMES:
            return self.refuse(cmd, now, t_stream, cause, f"unknown: command kind {kind} is not one of {sorted(KIND_NAMES)}")
        why = self.check_time(now, deadline, t_stream)
        if why:
            return self.refuse(cmd, now, t_stream, cause, why)
        self._accept_time(now, t_stream)
        dec = self._check(cmd, now, t_stream)
        if dec.status == "refused":
            return self.refuse(cmd, now, t_stream, cause, dec.reason)
        self._fed(now)
        if kind == CMD_HOLD:
            self.counts["heartbeats"] += 1
            return dec
        assert dec.command is not None
        try:
            self._apply(dec.command, now, t_stream)
        except DeviceError as exc:
            self._device_failed(exc, now, t_stream)
            return self.refuse(cmd, now, t_stream, cause, f"device: {exc}")
        self.counts[dec.status] += 1
        self._record(STATUS_CLIPPED if dec.status == "clipped" else STATUS_ACCEPTED, now, t_stream, dec.command, cause, dec.reason)
        return dec

    def _deliver(self, rec: np.void, now: float, t_stream: float) -> None:
        """The one place a command reaches the driver; the ledger follows it on the device's timeline."""
        t = self._t_dev
        self.driver.deliver(rec, now, t if self._stream_dated and math.isfinite(t) else t_stream)
        if self._stream_dated:
            self._offset = now - t
        kind, ch, amp, pw, freq, dur, shape, _ramp = rec.item()
        self.ledgers[ch].apply(kind, t, amp, pw, freq, dur, shape)

    def _apply(self, cmd: np.void, now: float, t_stream: float) -> None:
        kind = int(cmd["kind"])
        ch = int(cmd["channel"])
        led = self.ledgers[ch]
        self._last_change[ch] = self._t_dev
        self._last_delivery_stream[ch] = t_stream
        if kind in (CMD_PULSE, CMD_TRAIN):
            self._deliver(cmd, now, t_stream)
            return
        if led.prog is not None and not led.prog.level:
            self._deliver(make_command(CMD_OFF, ch)[0], now, t_stream)  # the rest of a train is cancelled
        if kind == CMD_OFF:
            cur = self.level.get(ch)
            if cur is None:
                self._ramps.pop(ch, None)
                return
            lim = self.profile.limits[ch]
            rate = lim.ramp_down_ma_per_s
            ramp_s = float(cmd["ramp_s"])
            if ramp_s > 0 and not self._forced_down(ch):
                asked = cur[0] / ramp_s
                rate = asked if rate is None else min(rate, asked)
            self._ramps.pop(ch, None)
            if rate is None:
                self._set(ch, 0.0, cur[1], cur[2], cur[3], now, t_stream)
                return
            self._ramps[ch] = [cur[0], 0.0, rate, now, cur[1], cur[2], cur[3], True, None]
            self._step_ramp(ch, now, t_stream)
            return
        plan = self._plan
        assert plan is not None and plan[0] == ch
        _, immediate, ramp = plan
        self._ramps.pop(ch, None)
        if immediate is not None:
            amp, pw, freq, shape = immediate
            self._set(ch, amp, pw, freq, shape, now, t_stream)
        if ramp is not None:
            self._ramps[ch] = ramp
            self._step_ramp(ch, now, t_stream)

    def _plan_level(self, ch: int, lim: ChannelLimits, target: float, pw: float, freq: float, shape: int,
                    ramp_s: float, now: float) -> tuple[tuple, tuple | None]:
        """How a level is reached (``(ch, immediate waveform or None, ramp or None)``) and the bound
        ``(s0, freq, n, u, q)`` on the pulses it gives, for the ledger."""
        cur = self.level.get(ch)
        cur_amp = cur[0] if cur is not None else 0.0
        led = self.ledgers[ch]
        p = led.prog
        runs_on = p is not None and p.level and p.freq == freq
        s0 = led.next_pulse() if runs_on else clock_start(self._t_dev, led.last, freq)
        u = _phases(shape) * pw * 1e-6
        rate = lim.ramp_up_ma_per_s if target > cur_amp else lim.ramp_down_ma_per_s
        if ramp_s > 0 and target != cur_amp and not (target < cur_amp and self._forced_down(ch)):
            asked = abs(target - cur_amp) / ramp_s
            rate = asked if rate is None else min(rate, asked)
        if rate is None or target == cur_amp:
            return (ch, (target, pw, freq, shape), None), (s0, freq, INF, u, target * pw / 1000.0) if target > 0 else None
        same = cur is not None and (pw, freq, shape) == tuple(cur[1:])
        if cur is None or same or not waveform_violation(lim, cur_amp, pw, freq, shape):
            # the new waveform at once, at the amplitude delivered; then the amplitude ramps
            immediate = (cur_amp, pw, freq, shape) if cur is not None and not same else None
            ramp = [cur_amp, target, rate, now, pw, freq, shape, False, None]
            return (ch, immediate, ramp), (s0, freq, INF, u, max(cur_amp, target) * pw / 1000.0)
        # the new waveform would break a limit at the amplitude delivered: ramp at the old one, switch at the end
        assert cur is not None
        _, pw0, f0, shape0 = cur
        fb = max(f0, freq)
        s0 = led.next_pulse() if p is not None and p.level else clock_start(self._t_dev, led.last, fb)
        ramp = [cur_amp, target, rate, now, pw0, f0, shape0, False, (pw, freq, shape)]
        bound = (s0, fb, INF, max(u, _phases(shape0) * pw0 * 1e-6), max(cur_amp * pw0, target * pw) / 1000.0)
        return (ch, None, ramp), bound

    def _forced_down(self, ch: int) -> bool:
        """The channel runs above what the operator allows (disarmed, or above a lowered limit): it comes down
        at the profile's rate, never slower whatever ramp a command asks for."""
        cur = self.level.get(ch)
        if cur is None:
            return False
        return (not self.armed or (self.op_amplitude_ma is not None and cur[0] > self.op_amplitude_ma + 1e-12)
                or (self.op_frequency_hz is not None and cur[2] > self.op_frequency_hz))

    def _set(self, ch: int, amp: float, pw: float, freq: float, shape: int, now: float, t_stream: float) -> None:
        """Deliver a level (``amp`` > 0) or off."""
        if amp <= 0.0:
            if ch in self.level:
                rec = make_command(CMD_OFF, ch)[0]
                self._deliver(rec, now, t_stream)
                self.level.pop(ch, None)
            return
        rec = make_command(CMD_LEVEL, ch, amp, pw, freq, 0.0, shape)[0]
        self._deliver(rec, now, t_stream)
        self.level[ch] = [amp, pw, freq, shape]

    def _step_ramp(self, ch: int, now: float, t_stream: float) -> None:
        a0, a1, rate, t0, pw, freq, shape, _off, final = self._ramps[ch]
        step = rate * max(0.0, now - t0)
        amp = min(a1, a0 + step) if a1 > a0 else max(a1, a0 - step)
        cur = self.level.get(ch)
        if amp == a1:
            del self._ramps[ch]
            if final is not None and a1 > 0:
                pw, freq, shape = final
        if cur is None and amp <= 0.0:
            return
        if cur is None or abs(cur[0] - amp) > 1e-9 or amp == a1:
            self._set(ch, amp, pw, freq, shape, now, t_stream)
            self.counts["ramp_steps"] += 1
            step_cmd = make_command(CMD_LEVEL if amp > 0 else CMD_OFF, ch, amp, pw, freq, 0.0, shape)[0]
            self._record(STATUS_RAMP, now, t_stream, step_cmd, -1, f"ramp: {amp:.4g} mA on the way to {a1:.4g} mA at {rate:.4g} mA/s")

    def _check(self, cmd: np.void, now: float, t_stream: float) -> Decision:
        # one conversion of the record to Python numbers (a field access on a numpy record costs about as much)
        kind, ch, amp, pw, freq, dur, shape, ramp_s = cmd.item()
        self._plan = None
        if kind == CMD_HOLD:
            return Decision("accepted", "", cmd)
        lim = self.profile.channel(ch)
        if lim is None:
            return Decision("refused", f"channel: {ch} is not in profile '{self.profile.device}' (channels {sorted(self.profile.limits)})", None)
        if kind == CMD_OFF:
            return Decision("accepted", "", cmd)
        if self.estopped:
            return Decision("refused", f"estop: the emergency stop is latched ({self.estop_reason}); clear it with 'rtneuro stop --clear'", None)
        if not self.armed:
            return Decision("refused", f"disarmed: stimulation is disarmed ({self.disarm_reason}); arm it with 'rtneuro arm'", None)
        if not all(math.isfinite(v) for v in (amp, pw, freq, dur, ramp_s)):
            return Decision("refused", "nonfinite: a command field is NaN or infinite", None)
        if amp < 0 or dur < 0 or ramp_s < 0:
            return Decision("refused", f"negative: amplitude {amp} mA, duration {dur} s and ramp {ramp_s} s must be >= 0", None)
        if shape not in SHAPE_NAMES:
            return Decision("refused", f"shape: phase_shape {shape} is not one of {sorted(SHAPE_NAMES)}", None)
        if shape in (SHAPE_MONOPHASIC_CATHODIC, SHAPE_MONOPHASIC_ANODIC) and not lim.allow_monophasic:
            return Decision("refused", f"charge_balance: {SHAPE_NAMES[shape]} pulses are not charge-balanced and profile '{self.profile.device}' does not allow them on channel {ch}", None)
        last = self._last_change.get(ch)
        if lim.min_interval_s > 0 and last is not None and self._t_dev - last < lim.min_interval_s:
            return Decision("refused", f"lockout: {self._t_dev - last:.3f} s since the last change, profile requires {lim.min_interval_s} s", None)
        if lim.blanking_ms > 0:
            t_del = self._last_delivery_stream.get(ch)
            if t_del is not None and 0 <= t_stream - t_del < lim.blanking_ms / 1000.0:
                return Decision("refused", f"blanking: decided on data {1e3 * (t_stream - t_del):.1f} ms after the stimulation it follows (blanking {lim.blanking_ms} ms)", None)
        lo, hi = lim.pulse_width_us
        if not lo <= pw <= hi:
            return Decision("refused", f"pulse_width: {pw} us outside [{lo}, {hi}] us", None)
        if kind in (CMD_LEVEL, CMD_TRAIN) and not 0 < freq <= lim.max_frequency_hz:
            return Decision("refused", f"frequency: {freq} Hz outside (0, {lim.max_frequency_hz}] Hz", None)
        if kind in (CMD_LEVEL, CMD_TRAIN) and self.op_frequency_hz is not None and freq > self.op_frequency_hz:
            return Decision("refused", f"operator_limit: {freq} Hz exceeds the operator's limit {self.op_frequency_hz} Hz (set while running)", None)
        if kind == CMD_TRAIN and dur > lim.max_train_s:
            return Decision("refused", f"train: {dur} s exceeds {lim.max_train_s} s", None)
        if kind in (CMD_LEVEL, CMD_TRAIN):
            phases = _phases(shape)
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
        op = self.op_amplitude_ma
        if op is not None and op < allowed:
            allowed = op
            if amp > op:
                why = f"operator_limit: {amp} mA exceeds the operator's limit {op} mA (set while running)"
        out, status, reason = cmd, "accepted", ""
        if amp > allowed:
            if not lim.clip_amplitude:
                return Decision("refused", why, None)
            out = cmd.copy()
            out["amplitude_ma"] = allowed
            amp, status, reason = allowed, "clipped", f"{why}; clipped to {allowed:.3f} mA"
        # the ledger: this command together with what the channel delivered and delivers
        led = self.ledgers[ch]
        t = self._t_dev
        if kind in (CMD_PULSE, CMD_TRAIN):
            if ch in self.level or ch in self._ramps:
                return Decision("refused", f"busy: channel {ch} is delivering a continuous level; send 'off' first (one waveform per channel)", None)
            u = _phases(shape) * pw * 1e-6
            if kind == CMD_PULSE:
                bound: tuple | None = (t, 1.0, 1, u, amp * pw / 1000.0)
            else:
                bound = (clock_start(t, led.last, freq), freq, max(1, int(math.floor(freq * dur + 1e-9))), u, amp * pw / 1000.0)
        else:
            self._plan, bound = self._plan_level(ch, lim, amp, pw, freq, shape, ramp_s, now)
        if bound is not None:
            why = led.check(t, *bound)
            if why:
                self._plan = None
                return Decision("refused", why, None)
        return Decision(status, reason, out)

    # -- time, failures, stops ---------------------------------------------

    def next_due(self) -> float | None:
        """The LSL time at which the watchdog trips unless a valid input arrives (None: not armed)."""
        if self.tripped or self._last_valid is None:
            return None
        return self._last_valid + self.profile.watchdog_s + 1e-4

    def tick(self, now: float, t_stream: float | None = None) -> bool:
        """Advance ramps; watchdog: ramp to the safe state when nothing valid arrived in time.

        ``t_stream`` is the stream time now (the device time of a stream-dated driver; by default the
        gate's time moved by the offset of the last delivery). Returns True when the watchdog tripped on this call.
        """
        if not math.isfinite(now):
            return False
        now = max(now, self._now)
        self._now = now
        if t_stream is not None and math.isfinite(t_stream) and self._stream_dated:
            self._advance_dev(t_stream)
        self._advance_dev(self._dev_time_for(now))
        t_s = self._t_dev if self._stream_dated and math.isfinite(self._t_dev) else (now if t_stream is None else t_stream)
        tripped = False
        try:
            # disarmed and in the safe state already, the watchdog has nothing left to protect (a paused replay)
            idle = not self.armed and not self._needs_safe
            if not self.tripped and not idle and self._last_valid is not None and now - self._last_valid > self.profile.watchdog_s:
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
            if (self.tripped or not self.armed) and not self._ramps and self._needs_safe:
                self._to_safe(now, t_s)
        except DeviceError as exc:
            self._device_failed(exc, now, t_s)
        return tripped

    _needs_safe = False

    def _begin_safe(self, now: float, t_stream: float) -> None:
        """Ramp every stimulating channel down at its profile rate; safe state at the end."""
        self._needs_safe = True
        for ch in list(self._ramps):
            if ch not in self.level:
                del self._ramps[ch]  # a ramp up that delivered nothing yet
        for ch in list(self.level):
            self._ramp_off(ch, now, t_stream)
        if not self._ramps:
            self._to_safe(now, t_stream)

    def _ramp_off(self, ch: int, now: float, t_stream: float) -> None:
        """Ramp a channel's level down to off at its profile rate (off at once without one)."""
        amp, pw, freq, shape = self.level[ch]
        rate = self.profile.limits[ch].ramp_down_ma_per_s
        if rate is None:
            self._ramps.pop(ch, None)
            self._set(ch, 0.0, pw, freq, shape, now, t_stream)  # no ramp: off now
            return
        ramp = self._ramps.get(ch)
        if ramp is not None and ramp[1] == 0.0 and ramp[2] >= rate:
            return  # already going down to 0 at least this fast
        self._ramps[ch] = [amp, 0.0, rate, now, pw, freq, shape, True, None]

    def _to_safe(self, now: float, t_stream: float, opening: bool = False) -> None:
        """The driver's safe state, then the profile's safe waveform where it is not off."""
        if self.tripped and self._trip_from is not None:
            # measured: from the last valid input to the safe state, and beyond the deadline
            self.trips.append((now - self._trip_from, now - self._trip_from - self.safe_deadline_s))
            self._trip_from = None
        self._ramps.clear()
        self.level.clear()
        self._needs_safe = False
        if math.isfinite(now) and not opening:
            self._now = max(self._now, now)
            self._advance_dev(self._dev_time_for(now))
        self.driver.safe_state(now)
        for led in self.ledgers.values():
            led.prog = None
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
        for led in self.ledgers.values():
            led.prog = None
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

    # -- the operator -------------------------------------------------------

    def disarm(self, now: float, reason: str = "operator") -> None:
        """Ramp every channel to its safe state (at the profile's rates) and refuse stimulating commands until :meth:`arm`.

        Unlike the emergency stop, the way down follows the ramp rates; ``off``
        and heartbeats are still accepted (the watchdog keeps counting).
        """
        if not self.armed:
            return
        self.armed = False
        self.disarm_reason = reason
        log.warning("stimulation of '%s' disarmed (%s): ramping to the safe state", self.profile.device, reason)
        self._record(STATUS_DISARM, now, self._t_stream_last, None, -1, f"disarm: {reason}")
        try:
            for ch in sorted(self.ledgers):  # a train stops at once; levels ramp down
                prog = self.ledgers[ch].prog
                if prog is not None and not prog.level:
                    self._deliver(make_command(CMD_OFF, ch)[0], now, self._t_stream_last)
            self._begin_safe(now, self._t_stream_last)
        except DeviceError as exc:
            self._device_failed(exc, now, self._t_stream_last)

    def arm(self, now: float, reason: str = "operator") -> None:
        """Accept stimulating commands again (an explicit operator action); channels stay safe until the next one."""
        if self.armed:
            return
        if not self._needs_safe:  # safe and idle while disarmed: the watchdog counts from the next valid input
            self._last_valid = None
        self.armed = True
        self.disarm_reason = ""
        log.warning("stimulation of '%s' armed (%s)", self.profile.device, reason)
        self._record(STATUS_ARM, now, self._t_stream_last, None, -1, f"arm: {reason}")

    def set_operator_limits(self, now: float, amplitude_ma: float | None, frequency_hz: float | None) -> None:
        """Operator limits below the profile's (only ever lowered: the caller checks); what runs above them ramps off.

        A level (or a ramp towards one) above the new amplitude or frequency
        limit ramps down to off at the profile's rate, and a train faster than
        the frequency limit is cancelled; the controller's next command is
        checked against the new limits.
        """
        if amplitude_ma is not None and (self.op_amplitude_ma is None or amplitude_ma < self.op_amplitude_ma):
            self.op_amplitude_ma = float(amplitude_ma)
        if frequency_hz is not None and (self.op_frequency_hz is None or frequency_hz < self.op_frequency_hz):
            self.op_frequency_hz = float(frequency_hz)
        a_lim = math.inf if self.op_amplitude_ma is None else self.op_amplitude_ma
        f_lim = math.inf if self.op_frequency_hz is None else self.op_frequency_hz
        t = self._t_stream_last
        self._record(STATUS_LIMIT, now, t, None, -1, f"limit: operator limits {self.op_amplitude_ma} mA, {self.op_frequency_hz} Hz")
        try:
            for ch in sorted(self.ledgers):
                cur = self.level.get(ch)
                ramp = self._ramps.get(ch)
                over = cur is not None and (cur[0] > a_lim + 1e-12 or cur[2] > f_lim)
                if ramp is not None:
                    final = ramp[8]
                    over = over or ramp[1] > a_lim + 1e-12 or ramp[5] > f_lim or (final is not None and final[1] > f_lim)
                if over:
                    if cur is None:
                        self._ramps.pop(ch, None)  # a ramp up that delivered nothing yet
                    else:
                        self._ramp_off(ch, now, t)
                        if ch in self._ramps:
                            self._step_ramp(ch, now, t)
                prog = self.ledgers[ch].prog
                if prog is not None and not prog.level and (prog.freq > f_lim or prog.amp > a_lim + 1e-12):
                    self._deliver(make_command(CMD_OFF, ch)[0], now, t)  # the rest of the train is cancelled
        except DeviceError as exc:
            self._device_failed(exc, now, t)


def delivered_violations(profile: DeviceProfile, pulses, tol_s: float = 1e-9) -> list[str]:
    """Every limit of ``profile`` that a log of delivered pulses breaks (empty when none).

    Judges what a device delivered, independently of the gate that decided
    it: per channel the amplitude, the charge per phase and the pulse width
    of every pulse, the interval between any two pulses (``1 /
    max_frequency_hz``, within ``tol_s``), and the duty cycle and the charge
    summed over every window of ``window_s`` starting at a pulse. Pulses are
    taken as biphasic for the duty cycle (the stricter count; a profile that
    allows monophasic pulses is judged conservatively). A pulse on a channel
    the profile does not have is a violation.

    Parameters
    ----------
    profile : DeviceProfile
    pulses : array-like, shape (n_pulses, 4)
        Rows ``(t, channel, amplitude_ma, pulse_width_us)`` in any order, as
        ``SimulatedDriver.pulse_log`` or a file read by ``read_pulse_log``.
    """
    log = np.asarray(list(pulses) if not isinstance(pulses, np.ndarray) else pulses, dtype=float).reshape(-1, 4)
    out = []
    for ch in sorted(set(log[:, 1].astype(int).tolist()) - set(profile.limits)):
        out.append(f"ch{ch}: not in profile '{profile.device}'")
    for ch, lim in profile.limits.items():
        rows = log[log[:, 1] == ch]
        if not len(rows):
            continue
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
        t, amp, pw = rows[:, 0], rows[:, 2], rows[:, 3]
        if amp.max() > lim.max_amplitude_ma + 1e-12 or (amp * pw / 1000).max() > lim.charge_limit_uc() * (1 + 1e-9):
            out.append(f"ch{ch}: amplitude or charge per phase above the limit")
        if pw.min() < lim.pulse_width_us[0] or pw.max() > lim.pulse_width_us[1]:
            out.append(f"ch{ch}: pulse width outside {list(lim.pulse_width_us)} us")
        gaps = np.diff(t)
        if len(gaps) and gaps.min() < 1.0 / lim.max_frequency_hz - tol_s:
            out.append(f"ch{ch}: {gaps.min() * 1e3:.4f} ms between two pulses < {1e3 / lim.max_frequency_hz:.4f} ms")
        w = lim.window_s
        ends = np.searchsorted(t, t + w * (1 - 1e-9), side="left")  # windows [t_i, t_i + w) starting at each pulse
        idx = np.arange(len(t))
        on = np.concatenate([[0.0], np.cumsum(2 * pw * 1e-6)])
        if (on[ends] - on[idx]).max() > lim.max_duty_cycle * w * (1 + 1e-9):
            out.append(f"ch{ch}: duty cycle {(on[ends] - on[idx]).max() / w:.4f} in a {w} s window > {lim.max_duty_cycle}")
        cq = np.concatenate([[0.0], np.cumsum(amp * pw / 1000)])
        if lim.max_charge_per_window_uc is not None and (cq[ends] - cq[idx]).max() > lim.max_charge_per_window_uc * (1 + 1e-9):
            out.append(f"ch{ch}: {(cq[ends] - cq[idx]).max():.3f} uC in a {w} s window > {lim.max_charge_per_window_uc} uC")
    return out


def make_command(kind: int, channel: int = 0, amplitude_ma: float = 0.0, pulse_width_us: float = 0.0,
                 frequency_hz: float = 0.0, duration_s: float = 0.0, phase_shape: int = 0,
                 ramp_s: float = 0.0) -> np.ndarray:
    """One command record as a length-1 array of :data:`COMMAND_DTYPE`."""
    rec = np.zeros(1, dtype=COMMAND_DTYPE)
    rec[0] = (kind, channel, amplitude_ma, pulse_width_us, frequency_hz, duration_s, phase_shape, ramp_s)
    return rec


__all__ += ["make_command", "delivered_violations", "SafetyError"]
