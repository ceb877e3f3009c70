"""Index-based ring buffer: writes and window reads never shift the data."""

from __future__ import annotations

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
