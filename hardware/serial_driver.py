"""A stimulator on a serial port, spoken to in a small ASCII line protocol.

Protocol (version 1)
--------------------
ASCII, one message per line, lines end with ``\\n`` (a ``\\r`` before it is
ignored). The host sends one command and waits for its acknowledgement before
it sends the next one; every command carries a sequence number, so that a late
or repeated answer is never taken for the answer to another command.

Host to device::

    S <seq> PING                                           is the device there? (sent by open())
    S <seq> LEVEL <ch> <amp_ma> <pw_us> <freq_hz> <shape>  continuous stimulation on / change level
    S <seq> OFF <ch>                                       continuous stimulation off
    S <seq> PULSE <ch> <amp_ma> <pw_us> <shape>            one pulse
    S <seq> TRAIN <ch> <amp_ma> <pw_us> <freq_hz> <dur_s> <shape>   a finite train
    S <seq> SAFE                                           every channel off (the safe state)

Device to host::

    A <seq> OK
    A <seq> ERR <reason, free text to the end of the line>

``<seq>`` is a decimal integer, 1 to 999999999, counting up by one per
command and wrapping to 1; ``<ch>`` a decimal channel number; every other
number is written in fixed point, amplitudes with three decimals
(``1.000``), the others with at most three (``60``, ``130.5``), all rounded towards zero so that the device never receives
more than the safety gate let through. ``<shape>`` is the pulse shape
(``phase_shape`` of the command): ``BC`` biphasic cathodic-first, ``BA``
biphasic anodic-first, ``MC`` monophasic cathodic, ``MA`` monophasic anodic
(pulse width is per phase). Ramps are made by the gate, as a sequence of
``LEVEL`` lines, so the protocol has none. The safety gate models what the
device delivers (``docs/safety.md``): one waveform per channel, a new
command replacing it; ``LEVEL`` at the frequency already running keeps the
pulse clock; any other new clock (``LEVEL``, ``TRAIN``) gives its first pulse
at once, or one period after the channel's last pulse if that is later;
``PULSE`` fires at once. A device must follow these rules. A device must answer a repeated
``<seq>`` (the same line again) with the same answer without applying the
command twice.

Failures
--------
Every failure raises :class:`rtneuro.errors.DeviceError` with one line that
names the fix: the port cannot be opened or disappears, no acknowledgement
within ``ack_timeout_ms``, a reply that does not follow the grammar (or
acknowledges another sequence number), or an ``ERR`` answer. The safety gate
then puts the channel in its safe state. Answers to earlier sequence numbers
(a late acknowledgement after a timeout) are discarded and counted.

:mod:`rtneuro.hardware.serial_emulator` implements the device side on a
pseudo-terminal.
"""

from __future__ import annotations

import logging
import math
import re
import time
from typing import Any

import numpy as np

from rtneuro.errors import ConfigError, DeviceError
from rtneuro.messages import (
    CMD_LEVEL,
    CMD_OFF,
    CMD_PULSE,
    CMD_TRAIN,
    SHAPE_BIPHASIC_ANODIC_FIRST,
    SHAPE_BIPHASIC_CATHODIC_FIRST,
    SHAPE_MONOPHASIC_ANODIC,
    SHAPE_MONOPHASIC_CATHODIC,
)

__all__ = ["SerialDriver", "format_command", "parse_reply", "fixed", "PROTOCOL_VERSION", "SHAPE_CODES"]

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_SEQ = 999_999_999
#: ``phase_shape`` -> its protocol token
SHAPE_CODES = {SHAPE_BIPHASIC_CATHODIC_FIRST: "BC", SHAPE_BIPHASIC_ANODIC_FIRST: "BA",
               SHAPE_MONOPHASIC_CATHODIC: "MC", SHAPE_MONOPHASIC_ANODIC: "MA"}
MAX_LINE = 256  # bytes: a longer reply is garbled
_REPLY = re.compile(r"A (\d{1,9}) (?:(OK)|ERR(?: (.*))?)")


def fixed(x: float, always3: bool = False) -> str:
    """``x`` in fixed point with at most three decimals, rounded towards zero.

    Parameters
    ----------
    x : float
        A finite value.
    always3 : bool
        Write all three decimals (amplitudes).

    Returns
    -------
    str
        e.g. ``fixed(130.0) == "130"``, ``fixed(3.3337) == "3.333"``, ``fixed(1.0, True) == "1.000"``.
    """
    milli = math.floor(abs(x) * 1000.0 + 1e-6)  # 1e-6: 1.001 * 1000 = 1000.9999999999999
    sign = "-" if x < 0 and milli else ""
    whole, frac = divmod(milli, 1000)
    if always3:
        return f"{sign}{whole}.{frac:03d}"
    return f"{sign}{whole}" if frac == 0 else f"{sign}{whole}.{frac:03d}".rstrip("0")


def format_command(seq: int, command: np.void | None) -> str:
    """The protocol line (without the newline) for one command record, or ``SAFE`` for ``None``.

    Parameters
    ----------
    seq : int
        Sequence number.
    command : numpy.void or None
        A ``COMMAND_DTYPE`` record, read by field name; ``None`` for the safe state.

    Returns
    -------
    str
    """
    if command is None:
        return f"S {seq} SAFE"
    kind = int(command["kind"])
    ch = int(command["channel"])
    if kind == CMD_OFF:
        return f"S {seq} OFF {ch}"
    amp, pw = fixed(float(command["amplitude_ma"]), True), fixed(float(command["pulse_width_us"]))
    code = int(command["phase_shape"])
    shape = SHAPE_CODES.get(code)
    if shape is None:
        raise DeviceError(f"the serial protocol has no pulse shape {code}; one of {SHAPE_CODES} "
                          "(update rtneuro.hardware.serial_driver for a new shape)")
    if kind == CMD_LEVEL:
        return f"S {seq} LEVEL {ch} {amp} {pw} {fixed(float(command['frequency_hz']))} {shape}"
    if kind == CMD_PULSE:
        return f"S {seq} PULSE {ch} {amp} {pw} {shape}"
    if kind == CMD_TRAIN:
        return (f"S {seq} TRAIN {ch} {amp} {pw} {fixed(float(command['frequency_hz']))} "
                f"{fixed(float(command['duration_s']))} {shape}")
    raise DeviceError(f"the serial protocol has no command for kind {kind}; only level, off, pulse and train "
                      "reach a serial stimulator (update rtneuro.hardware.serial_driver for a new kind)")


def parse_reply(line: bytes) -> tuple[int, bool, str]:
    """Parse one reply line into ``(seq, ok, reason)``; ValueError if it is not ``A <seq> OK|ERR ...``."""
    text = line.decode("ascii").rstrip("\n").rstrip("\r")
    m = _REPLY.fullmatch(text)
    if m is None:
        raise ValueError(text)
    return int(m.group(1)), m.group(2) is not None, m.group(3) or ""


class SerialDriver:
    """Stimulator on a serial port (RS-232, USB CDC), via pyserial.

    Parameters
    ----------
    port : str
        Device path (``/dev/ttyUSB0``, ``COM3``, or the link made by
        ``python -m rtneuro.hardware.serial_emulator``).
    baudrate : int
        Line speed in baud; ignored by pseudo-terminals.
    ack_timeout_ms : float
        How long to wait for each acknowledgement.

    Notes
    -----
    :meth:`report` gives the commands sent and acknowledged per kind, the
    last acknowledged state of each channel, stale answers discarded, the
    round-trip time of the acknowledgements (p50 / max, in microseconds) and
    the failures.
    """

    name = "serial"

    def __init__(self, port: str | None = None, baudrate: int = 115200, ack_timeout_ms: float = 50.0) -> None:
        if not port:
            raise ConfigError("the serial driver needs a port (driver_args: {port: /dev/ttyUSB0}); "
                              "to try it without hardware run `python -m rtneuro.hardware.serial_emulator /tmp/rtneuro-stim`")
        if not isinstance(baudrate, int) or baudrate <= 0:
            raise ConfigError(f"baudrate must be a positive integer, got {baudrate!r} (e.g. 115200)")
        if not 0 < float(ack_timeout_ms) <= 10_000:
            raise ConfigError(f"ack_timeout_ms must be in (0, 10000], got {ack_timeout_ms!r} (default 50)")
        self.port = str(port)
        self.baudrate = baudrate
        self.ack_timeout_s = float(ack_timeout_ms) / 1000.0
        self._ser: Any = None
        self._seq = 0
        self._rx = bytearray()
        self.sent: dict[str, int] = {}
        self.acked: dict[str, int] = {}
        self.state: dict[int, str] = {}
        self.stale = 0
        self.failures: list[str] = []
        self.safe_states = 0
        self._rtt_us: list[float] = []
        self._safe = False

    # -- connection -------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the port and check with ``PING`` that a device answers."""
        import serial  # pyserial

        try:
            self._ser = serial.Serial(self.port, self.baudrate, timeout=self.ack_timeout_s,
                                      write_timeout=self.ack_timeout_s, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise self._fail(f"cannot open serial port {self.port} ({_first_line(exc)}); check the cable and the "
                             "driver_args port, or start the emulator: python -m rtneuro.hardware.serial_emulator PORT") from None
        self._ser.reset_input_buffer()
        self._rx.clear()
        self._transact("PING", None)

    def close(self) -> None:
        """Safe state (unless the last command was SAFE and acknowledged), then close the port. Never raises."""
        if self._ser is None:
            return
        try:
            if not self._safe:
                self.safe_state(0.0)
        except DeviceError as exc:
            log.error("serial stimulator on %s: could not confirm the safe state at close: %s", self.port, exc)
        try:
            self._ser.close()
        except Exception as exc:  # the port may be gone already
            log.warning("closing %s: %s", self.port, _first_line(exc))
        self._ser = None

    # -- the driver protocol ----------------------------------------------------------------------
    def deliver(self, command: np.void, now: float, t_stream: float) -> None:
        """Send one checked command and wait for its acknowledgement."""
        kind = _KIND_WORDS.get(int(command["kind"]), str(int(command["kind"])))
        self._safe = False
        self._transact(kind, command)
        ch = int(command["channel"])
        if kind == "LEVEL":
            self.state[ch] = (f"on {fixed(float(command['amplitude_ma']), True)} mA {fixed(float(command['pulse_width_us']))} us "
                              f"{fixed(float(command['frequency_hz']))} Hz {SHAPE_CODES[int(command['phase_shape'])]}")
        elif kind == "OFF":
            self.state[ch] = "off"

    def safe_state(self, now: float) -> None:
        """``SAFE``: every channel off, acknowledged by the device."""
        self._transact("SAFE", None)
        self._safe = True
        self.safe_states += 1
        for ch in self.state:
            self.state[ch] = "off"

    def report(self) -> dict:
        """Commands sent and acknowledged per kind, last state per channel, failures, ack round trip."""
        rtt = np.asarray(self._rtt_us)
        return {
            "port": self.port,
            "sent": dict(self.sent),
            "acknowledged": dict(self.acked),
            "state": {str(k): v for k, v in sorted(self.state.items())},
            "safe_states": self.safe_states,
            "stale_replies": self.stale,
            "failures": list(self.failures),
            "ack_us": {"n": int(rtt.size), "p50": round(float(np.median(rtt)), 1) if rtt.size else None,
                       "max": round(float(rtt.max()), 1) if rtt.size else None},
        }

    # -- one exchange -----------------------------------------------------------------------------
    def _fail(self, message: str) -> DeviceError:
        self.failures.append(message)
        log.error("%s", message)
        return DeviceError(message)

    def _transact(self, kind: str, command: np.void | None) -> None:
        import serial

        if self._ser is None:
            raise self._fail(f"serial port {self.port} is not open; the stimulate service must call open() first")
        self._seq = self._seq % MAX_SEQ + 1
        seq = self._seq
        if kind == "PING":
            line = f"S {seq} PING"
        elif kind == "SAFE":
            line = format_command(seq, None)
        else:
            line = format_command(seq, command)
        self.sent[kind] = self.sent.get(kind, 0) + 1
        t0 = time.perf_counter()
        deadline = t0 + self.ack_timeout_s
        try:
            self._ser.write(line.encode("ascii") + b"\n")
            while True:
                reply = self._readline(deadline)
                if reply is None:
                    raise self._fail(f"no acknowledgement of '{line}' from {self.port} within {1e3 * self.ack_timeout_s:g} ms; "
                                     "check that the stimulator is on and connected, or raise ack_timeout_ms")
                try:
                    r_seq, ok, reason = parse_reply(reply)
                except (ValueError, UnicodeDecodeError):
                    raise self._fail(f"garbled reply {bytes(reply)[:60]!r} from {self.port} to '{line}'; check the baud rate "
                                     f"({self.baudrate}) and that the device speaks rtneuro serial protocol {PROTOCOL_VERSION}") from None
                if r_seq != seq and _is_earlier(r_seq, seq):
                    self.stale += 1  # a late answer to a command that already timed out
                    log.warning("%s: discarded a late reply to command %d", self.port, r_seq)
                    continue
                if r_seq != seq:
                    raise self._fail(f"reply from {self.port} acknowledges command {r_seq}, not {seq} ('{line}'); "
                                     "another program may be using the port: close it and restart the stimulate service")
                break
        except serial.SerialException as exc:
            raise self._fail(f"serial port {self.port} is gone ({_first_line(exc)}); reconnect the stimulator "
                             "and restart the stimulate service") from None
        except OSError as exc:
            raise self._fail(f"serial port {self.port} is gone ({_first_line(exc)}); reconnect the stimulator "
                             "and restart the stimulate service") from None
        if not ok:
            raise self._fail(f"the stimulator on {self.port} refused '{line}': {reason or 'no reason given'}; "
                             "make the device profile match the device's own limits")
        self._rtt_us.append(1e6 * (time.perf_counter() - t0))
        self.acked[kind] = self.acked.get(kind, 0) + 1

    def _readline(self, deadline: float) -> bytes | None:
        """One line from the port, or None when ``deadline`` (perf_counter) passes first."""
        buf = self._rx
        while True:
            nl = buf.find(b"\n")
            if nl >= 0:
                line = bytes(buf[: nl + 1])
                del buf[: nl + 1]
                return line
            if len(buf) > MAX_LINE:
                line = bytes(buf)
                buf.clear()
                return line  # no newline in a reply this long: garbled
            left = deadline - time.perf_counter()
            if left <= 0:
                return None
            self._ser.timeout = left
            buf += self._ser.read(self._ser.in_waiting or 1)


_KIND_WORDS = {CMD_LEVEL: "LEVEL", CMD_OFF: "OFF", CMD_PULSE: "PULSE", CMD_TRAIN: "TRAIN"}


def _is_earlier(r_seq: int, seq: int) -> bool:
    """True if ``r_seq`` came before ``seq`` (within the last half of the sequence space, wrapping)."""
    return 0 < (seq - r_seq) % MAX_SEQ < MAX_SEQ // 2


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
