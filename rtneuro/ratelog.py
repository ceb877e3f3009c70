"""Rate-limited logging by reason: the first line in full, then a count per interval.

Everything that logs about input from outside a process (a malformed
message, a forged control message, an unknown peer, an unacknowledged
command) goes through :class:`RateLog`, so that a flood of bad input costs a
bounded number of log lines whatever its variety: reasons are a small fixed
vocabulary chosen by the caller (never a stream name or a peer id taken from
the input), and the number of distinct reasons kept is bounded as well.
The totals per reason go into the run report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLog"]

#: Reasons beyond this many distinct ones are pooled under ``"other"``.
MAX_REASONS = 64


class RateLog:
    """Log at most one line per reason per interval, counting everything.

    The first occurrence of a reason is logged in full. Later ones within
    ``interval_s`` are only counted; the first one after the interval logs
    its own text followed by how many were suppressed since the last line.
    :meth:`flush` logs what is still suppressed (at shutdown).

    Parameters
    ----------
    logger : logging.Logger
    interval_s : float
        Shortest time between two lines of one reason.
    clock : callable
        Monotonic seconds (injectable for tests).
    """

    __slots__ = ("logger", "interval_s", "clock", "totals", "_last", "_suppressed", "lines")

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval_s = float(interval_s)
        self.clock = clock
        #: reason -> occurrences, logged or not
        self.totals: dict[str, int] = {}
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        #: lines actually written
        self.lines = 0

    def __call__(self, level: int, reason: str, msg: str, *args: object) -> bool:
        """Count one ``reason``; log ``msg % args`` unless suppressed. True when a line was written."""
        if reason not in self.totals and len(self.totals) >= MAX_REASONS:
            reason = "other"
        self.totals[reason] = self.totals.get(reason, 0) + 1
        now = self.clock()
        last = self._last.get(reason)
        if last is not None and now - last < self.interval_s:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return False
        self._last[reason] = now
        n = self._suppressed.pop(reason, 0)
        if n:
            msg = f"{msg} ({n} more '{reason}' in the last {now - last:.0f} s were only counted)"  # type: ignore[operator]
        elif last is None:
            msg = f"{msg} (further '{reason}' are logged at most every {self.interval_s:g} s)"
        if self.logger.isEnabledFor(level):
            self.logger.log(level, msg, *args)
        self.lines += 1
        return True

    def warning(self, reason: str, msg: str, *args: object) -> bool:
        return self(logging.WARNING, reason, msg, *args)

    def error(self, reason: str, msg: str, *args: object) -> bool:
        return self(logging.ERROR, reason, msg, *args)

    def flush(self) -> None:
        """Log one summary line per reason with occurrences not yet logged."""
        for reason, n in sorted(self._suppressed.items()):
            if n:
                self.logger.warning("%d more '%s' were only counted (total %d)", n, reason, self.totals.get(reason, 0))
                self.lines += 1
        self._suppressed.clear()

    @property
    def total(self) -> int:
        return sum(self.totals.values())
