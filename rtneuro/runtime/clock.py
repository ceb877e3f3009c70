"""Clocks: the live LSL clock, a scaled replay clock and a virtual clock.

Nodes never read wall time. They receive a clock from the runtime and ask it
for ``now()``; sources ask it to wait until their next chunk is due.

* :class:`LiveClock` is the LSL clock (``pylsl.local_clock``). On Linux that is
  ``CLOCK_MONOTONIC``, the same clock as :func:`time.monotonic`, which is read
  four times faster than through ctypes; :func:`lsl_clock` picks it there and
  ``tests/runtime/test_clock.py`` checks that the two agree.
* :class:`ScaledClock` runs stream time at ``speed`` times the LSL clock, for
  replays faster or slower than real time.
* :class:`VirtualClock` jumps straight to the next due time: as fast as
  possible, and fully deterministic, because nothing depends on how long the
  computation took.

Hop stamps and latency are always measured on the real LSL clock (see
:func:`lsl_clock`), whatever clock drives the stream, so that a replay at
any speed still reports the true processing latency.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

__all__ = ["lsl_clock", "Clock", "LiveClock", "ScaledClock", "VirtualClock", "make_clock", "sleep_until"]

if sys.platform.startswith("linux"):
    lsl_clock: Callable[[], float] = time.monotonic
else:  # pragma: no cover - other platforms go through liblsl
    from pylsl import local_clock as lsl_clock

#: Remaining time below which waiting switches from ``poll`` to ``time.sleep``.
COARSE_S = 0.0015
#: Remaining time below which waiting spins. On a virtual machine an idle
#: core halts and a plain ``sleep`` overshoots by 0.1-1 ms; sleeping to 0.3 ms
#: before the due time and spinning the rest costs about 1 % of a core at
#: 31 chunks/s and keeps the overshoot near 10 us.
FINE_S = 0.0003


def sleep_until(t_real: float, wait: Callable[[float], object] | None = None) -> None:
    """Wait until the LSL clock reads ``t_real``.

    Parameters
    ----------
    t_real : float
        Deadline on the LSL clock.
    wait : callable or None
        ``wait(seconds)`` used for the coarse part of the wait, typically a
        socket poll so that control messages are served meanwhile. It may
        return early; this function loops.
    """
    coarse = wait or time.sleep
    while True:
        remaining = t_real - lsl_clock()
        if remaining <= 0:
            return
        if remaining > COARSE_S:
            coarse(remaining - COARSE_S)
        elif remaining > FINE_S + 0.0001:
            time.sleep(remaining - FINE_S)
        else:
            break
    while lsl_clock() < t_real:
        pass


class Clock:
    """Interface of the clocks. ``now()`` is stream time."""

    #: True when stream time follows the LSL clock (speed 1).
    live: bool = False
    #: Stream time per second of real time; ``inf`` for the virtual clock.
    speed: float = 1.0

    def now(self) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def real_time_of(self, t: float) -> float:
        """LSL time at which stream time ``t`` happens (``now`` if virtual)."""
        raise NotImplementedError  # pragma: no cover - interface

    def wait_until(self, t: float, wait: Callable[[float], object] | None = None) -> float:
        """Wait until stream time ``t``; return the LSL time reached."""
        raise NotImplementedError  # pragma: no cover - interface


class ScaledClock(Clock):
    """Stream time advancing ``speed`` times faster than the LSL clock.

    Parameters
    ----------
    speed : float
        1.0 is real time.
    origin_stream, origin_real : float
        Stream time ``origin_stream`` happens at LSL time ``origin_real``.
    """

    def __init__(self, speed: float = 1.0, origin_stream: float | None = None, origin_real: float | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = float(speed)
        self.live = self.speed == 1.0
        real = lsl_clock() if origin_real is None else origin_real
        self.origin_real = real
        self.origin_stream = real if origin_stream is None else origin_stream

    def now(self) -> float:
        return self.origin_stream + (lsl_clock() - self.origin_real) * self.speed

    def real_time_of(self, t: float) -> float:
        return self.origin_real + (t - self.origin_stream) / self.speed

    def wait_until(self, t: float, wait: Callable[[float], object] | None = None) -> float:
        t_real = self.real_time_of(t)
        sleep_until(t_real, wait)
        return t_real


class LiveClock(ScaledClock):
    """The LSL clock itself."""

    def __init__(self) -> None:
        super().__init__(1.0, 0.0, 0.0)


class VirtualClock(Clock):
    """Stream time that jumps to each due time: as fast as possible.

    ``now()`` is the latest due time reached (or set by :meth:`advance`).
    """

    speed = float("inf")

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)

    def now(self) -> float:
        return self._t

    def advance(self, t: float) -> None:
        if t > self._t:
            self._t = t

    def real_time_of(self, t: float) -> float:
        return lsl_clock()

    def wait_until(self, t: float, wait: Callable[[float], object] | None = None) -> float:
        self.advance(t)
        return lsl_clock()


def make_clock(speed: str | float, origin_stream: float, origin_real: float) -> Clock:
    """Clock for a run: ``"realtime"``, ``"max"`` or a numeric speed factor."""
    if speed == "max":
        return VirtualClock(origin_stream)
    factor = 1.0 if speed == "realtime" else float(speed)
    return ScaledClock(factor, origin_stream, origin_real)
