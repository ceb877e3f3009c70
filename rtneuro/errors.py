"""The exceptions rtneuro raises.

One root, :class:`RtneuroError`, and a few subclasses so that callers can catch
a whole family (every configuration problem, every malformed message) without
string matching. Messages are one line, name the offending value and say how
to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "RtneuroError",
    "ConfigError",
    "DamagedFileError",
    "StreamNotFound",
    "SchemaError",
    "DeviceError",
    "SafetyError",
    "did_you_mean",
]


class RtneuroError(Exception):
    """Root of every error rtneuro raises on purpose."""


class ConfigError(RtneuroError):
    """A configuration file, a node parameter or a graph is invalid."""


class DamagedFileError(ConfigError):
    """A recording does not hold what its header claims (cut short, corrupt, a part missing).

    Deterministic: reading the file again fails the same way, so a process
    that meets it is never restarted, and the command line exits with the
    configuration error code.
    """


class StreamNotFound(ConfigError):
    """A live input stream is not there while a graph is checked without waiting for it (``rtneuro validate``).

    The message says what waits for the stream and what would let it be
    checked; the nodes that depend on it are not checked.
    """


class SchemaError(RtneuroError):
    """A message does not follow the wire schema.

    Parameters
    ----------
    kind : str
        Short machine-readable reason, used as the key under which the
        rejection is counted (``"frames"``, ``"header"``, ``"version"``,
        ``"size"``, ``"oversized"``, ``"dtype"``, ``"shape"``).
    message : str
        One-line human-readable explanation.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class DeviceError(RtneuroError):
    """A hardware driver failed (port gone, no acknowledgement, bad reply)."""


class SafetyError(RtneuroError):
    """A stimulation command or device profile violates a safety rule."""


def did_you_mean(value: str, options: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest option, or ``""``.

    Case does not count: an option that differs only in case wins (EDF files
    spell 'Fc3', users type 'FC3'), then the closest option ignoring case.
    """
    opts = [str(o) for o in options]
    low = str(value).lower()
    same = [o for o in opts if o.lower() == low]
    if same:
        return f" (did you mean '{same[0]}'?)"
    by_lower: dict[str, str] = {}
    for o in opts:
        by_lower.setdefault(o.lower(), o)
    matches = difflib.get_close_matches(low, list(by_lower), n=1, cutoff=0.5)
    return f" (did you mean '{by_lower[matches[0]]}'?)" if matches else ""
