"""Index-based ring buffer: writes and window reads never shift the data."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["RingBuffer"]


class RingBuffer:
    """The last ``capacity`` samples of a multichannel stream.

    Samples are addressed by their absolute count since :meth:`reset`
    (``written`` is the count so far). Writing copies the new samples into
    place; reading a window copies at most two slices. Nothing is rolled.

    Parameters
    ----------
    capacity : int
        Samples kept.
    n_channels : int
    dtype : numpy dtype
    """

    def __init__(self, capacity: int, n_channels: int, dtype=np.float64) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._buf = np.zeros((self.capacity, n_channels), dtype=dtype)
        self.written = 0

    def reset(self) -> None:
        self._buf[:] = 0
        self.written = 0

    def write(self, x: np.ndarray) -> None:
        """Append ``x`` of shape (n_times, n_channels); n_times may exceed capacity."""
        n = x.shape[0]
        cap = self.capacity
        if n >= cap:
            x = x[n - cap:]
            self.written += n - cap
            n = cap
        start = self.written % cap
        first = min(n, cap - start)
        self._buf[start:start + first] = x[:first]
        if first < n:
            self._buf[: n - first] = x[first:]
        self.written += n

    def read(self, end: int, length: int, out: np.ndarray) -> np.ndarray:
        """Copy samples ``[end - length, end)`` into ``out`` (shape (length, n_channels))."""
        cap = self.capacity
        if length > cap or end > self.written or end - length < self.written - cap or end < length:
            raise IndexError(f"window [{end - length}, {end}) is not in the buffer (holds [{max(0, self.written - cap)}, {self.written}))")
        start = (end - length) % cap
        first = min(length, cap - start)
        out[:first] = self._buf[start:start + first]
        if first < length:
            out[first:] = self._buf[: length - first]
        return out

    def frames_due(self, n_new: int, next_end: int, step: int) -> int:
        """How many windows ending at ``next_end, next_end + step, ...`` ``n_new`` more samples complete."""
        return max(0, (self.written + n_new - next_end) // step + 1)

    def write_windows(self, x: np.ndarray, next_end: int, step: int, out: np.ndarray,
                      on_window: Callable[[int, np.ndarray], None]) -> tuple[list[int], int]:
        """Append ``x``, stopping at each window end ``next_end + i step`` it reaches to call
        ``on_window(i, window)`` with the last ``len(out)`` samples (copied into ``out``), as the window was
        then: a window's content never depends on how the samples were split. Returns the window ends and the
        next end due."""
        ends: list[int] = []
        pos, n, length = 0, x.shape[0], out.shape[0]
        while pos < n:
            take = min(n - pos, next_end - self.written)
            self.write(x[pos:pos + take])
            pos += take
            if self.written == next_end:
                on_window(len(ends), self.read(next_end, length, out))
                ends.append(next_end)
                next_end += step
        return ends, next_end
