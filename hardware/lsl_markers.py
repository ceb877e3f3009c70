"""Stimulation commands as Lab Streaming Layer markers.

For stimulators driven by another program that reads LSL (a TMS or tACS
controller, a stimulus presentation script), and for recording every
delivered command beside the data in LabRecorder.

Marker grammar (version 1)
--------------------------
One string marker per delivered command, stamped with the gate's ``now`` (the
LSL clock)::

    level ch=<int> amp=<x>mA pw=<x>us f=<x>Hz shape=<shape>
    off ch=<int>
    pulse ch=<int> amp=<x>mA pw=<x>us shape=<shape>
    train ch=<int> amp=<x>mA pw=<x>us f=<x>Hz dur=<x>s shape=<shape>
    safe_state

Tokens are separated by one space. ``amp`` always has three decimals
(``amp=1.000mA``); the other numbers have at most three decimals, trailing
zeros dropped (``pw=60us``, ``f=130.5Hz``); every number is rounded towards
zero, so a marker never states more than the gate let through. ``<shape>``
is one of ``biphasic-cathodic-first``, ``biphasic-anodic-first``,
``monophasic-cathodic``, ``monophasic-anodic`` (``pw`` is per phase). Ramps
are made by the gate as a sequence of ``level`` markers. Fields that a
later version of the command record adds (e.g. ``ramp_s``) follow as
``name=value`` tokens, in the record's field order; a reader should ignore
tokens it does not know. ``safe_state`` means every channel is off.

The stream: type ``Markers``, one channel of ``cf_string``, irregular rate,
``desc/grammar`` = ``rtneuro-stim-markers 1``.
"""

from __future__ import annotations

import logging

import numpy as np

from rtneuro.errors import ConfigError, DeviceError
from rtneuro.messages import CMD_LEVEL, CMD_OFF, CMD_PULSE, CMD_TRAIN, SHAPE_NAMES

from .serial_driver import fixed

__all__ = ["LslMarkerDriver", "format_marker", "GRAMMAR"]

log = logging.getLogger(__name__)

GRAMMAR = "rtneuro-stim-markers 1"
# ramp_s is realised by the gate (a sequence of levels), so it is not repeated in the markers
_KNOWN = frozenset(["kind", "channel", "amplitude_ma", "pulse_width_us", "frequency_hz", "duration_s", "phase_shape", "ramp_s"])
_WORDS = {CMD_LEVEL: "level", CMD_OFF: "off", CMD_PULSE: "pulse", CMD_TRAIN: "train"}


def _num(x: float, decimals: int | None = None) -> str:
    """Fixed point, rounded towards zero; ``decimals=3`` writes all three decimals, else at most three."""
    return fixed(x, decimals == 3)


def _extra(value: object) -> str:
    if isinstance(value, bytes):
        return value.rstrip(b"\0").decode("utf-8", "replace").replace(" ", "_")
    if isinstance(value, float):
        return _num(value)
    return str(value).replace(" ", "_")


def format_marker(command: np.void | None) -> str:
    """The marker string of one command record (read by field name), or ``safe_state`` for ``None``."""
    if command is None:
        return "safe_state"
    kind = int(command["kind"])
    word = _WORDS.get(kind)
    if word is None:
        raise DeviceError(f"no marker for command kind {kind}; only level, off, pulse and train are delivered "
                          "(update rtneuro.hardware.lsl_markers for a new kind)")
    parts = [word, f"ch={int(command['channel'])}"]
    if kind != CMD_OFF:
        parts.append(f"amp={_num(float(command['amplitude_ma']), 3)}mA")
        parts.append(f"pw={_num(float(command['pulse_width_us']))}us")
    if kind in (CMD_LEVEL, CMD_TRAIN):
        parts.append(f"f={_num(float(command['frequency_hz']))}Hz")
    if kind == CMD_TRAIN:
        parts.append(f"dur={_num(float(command['duration_s']))}s")
    if kind != CMD_OFF:
        code = int(command["phase_shape"])
        parts.append(f"shape={SHAPE_NAMES[code].replace(' ', '-') if code in SHAPE_NAMES else code}")
    names = command.dtype.names or ()
    parts.extend(f"{n}={_extra(command[n].item())}" for n in names if n not in _KNOWN)
    return " ".join(parts)


class LslMarkerDriver:
    """Publishes every delivered command as a string marker on an LSL outlet.

    Parameters
    ----------
    stream_name : str
        Name of the marker stream.
    source_id : str or None
        LSL source id (lets a recorder reconnect after a restart); defaults to
        ``rtneuro-stim:<stream_name>``.

    Notes
    -----
    LSL delivers a marker only to inlets connected when it is pushed; a
    reader must connect before stimulation starts. :meth:`report` counts the
    markers pushed by kind, the last marker per channel, and whether an
    inlet was connected at the last push.
    """

    name = "lsl_markers"

    def __init__(self, stream_name: str = "rtneuro-stim", source_id: str | None = None) -> None:
        if not isinstance(stream_name, str) or not stream_name.strip():
            raise ConfigError(f"stream_name must be a non-empty string, got {stream_name!r} (default 'rtneuro-stim')")
        self.stream_name = stream_name
        self.source_id = source_id or f"rtneuro-stim:{stream_name}"
        self._outlet = None
        self.counts: dict[str, int] = {}
        self.last: dict[int, str] = {}
        self.safe_states = 0
        self.without_consumer = 0
        self.failures: list[str] = []
        self._safe = False

    def open(self) -> None:
        import pylsl

        info = pylsl.StreamInfo(self.stream_name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, self.source_id)
        desc = info.desc()
        desc.append_child_value("grammar", GRAMMAR)
        desc.append_child_value("manufacturer", "rtneuro")
        desc.append_child("channels").append_child("channel").append_child_value("label", "stim")
        try:
            self._outlet = pylsl.StreamOutlet(info)
        except Exception as exc:  # liblsl raises RuntimeError on socket problems
            msg = (f"cannot create the LSL marker outlet '{self.stream_name}' ({exc}); check the network settings "
                   "in lsl_api.cfg (LSLAPICFG)")
            self.failures.append(msg)
            raise DeviceError(msg) from None

    def _push(self, marker: str, now: float) -> None:
        if self._outlet is None:
            raise DeviceError(f"LSL marker outlet '{self.stream_name}' is not open; the stimulate service must call open() first")
        if not self._outlet.have_consumers():
            self.without_consumer += 1
        self._outlet.push_sample([marker], now)
        word = marker.split(" ", 1)[0]
        self.counts[word] = self.counts.get(word, 0) + 1
        log.debug("marker %.6f %s", now, marker)

    def deliver(self, command: np.void, now: float, t_stream: float) -> None:
        marker = format_marker(command)
        self._push(marker, now)
        self.last[int(command["channel"])] = marker
        self._safe = False

    def safe_state(self, now: float) -> None:
        self._push("safe_state", now)
        self.safe_states += 1
        self._safe = True
        for ch in self.last:
            self.last[ch] = "safe_state"

    def report(self) -> dict:
        return {
            "stream": self.stream_name,
            "markers": dict(self.counts),
            "delivered": sum(v for k, v in self.counts.items() if k != "safe_state"),
            "last": {str(k): v for k, v in sorted(self.last.items())},
            "safe_states": self.safe_states,
            "pushed_without_consumer": self.without_consumer,
            "failures": list(self.failures),
        }

    def close(self) -> None:
        """A ``safe_state`` marker (unless that was the last one), then the outlet goes away."""
        if self._outlet is None:
            return
        import pylsl

        if not self._safe:
            self.safe_state(pylsl.local_clock())
        self._outlet = None
