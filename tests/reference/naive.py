"""Slow, obviously-correct versions of the fast kernels."""

from __future__ import annotations

import numpy as np


def sosfilt_loop(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cascaded biquads, transposed direct form II, one sample at a time.

    ``x`` is (n_times, n_channels); ``zi`` is (n_sections, 2, n_channels).
    """
    zi = zi.copy()
    y = np.empty_like(x, dtype=float)
    for c in range(x.shape[1]):
        for n in range(x.shape[0]):
            v = float(x[n, c])
            for s, (b0, b1, b2, _a0, a1, a2) in enumerate(sos):
                out = b0 * v + zi[s, 0, c]
                zi[s, 0, c] = b1 * v - a1 * out + zi[s, 1, c]
                zi[s, 1, c] = b2 * v - a2 * out
                v = out
            y[n, c] = v
    return y, zi


def dft_bandpower(window: np.ndarray, sfreq: float, bands: list[tuple[float, float]]) -> np.ndarray:
    """Band power of one window by an explicit DFT sum (Hann taper, mean removed).

    Returns (n_bands, n_channels): one-sided PSD (scipy 'density' scaling)
    summed over the bins inside each band (edges inclusive), times the bin width.
    """
    n = window.shape[0]
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)  # periodic Hann
    y = (window - window.mean(axis=0)) * w[:, None]
    freqs = np.arange(n // 2 + 1) * sfreq / n
    df = sfreq / n
    out = np.zeros((len(bands), window.shape[1]))
    for k, f in enumerate(freqs):
        basis = np.exp(-2j * np.pi * k * np.arange(n) / n)
        X = basis @ y
        p = np.abs(X) ** 2 / (sfreq * (w**2).sum())
        if 0 < k < n / 2:
            p = 2 * p
        for b, (lo, hi) in enumerate(bands):
            if lo <= f <= hi:
                out[b] += p * df
    return out


class NaiveRing:
    """A ring buffer built on np.roll: the obvious way, for comparison only."""

    def __init__(self, capacity: int, n_channels: int) -> None:
        self.buf = np.zeros((capacity, n_channels))
        self.written = 0

    def write(self, x: np.ndarray) -> None:
        for row in x:
            self.buf = np.roll(self.buf, -1, axis=0)
            self.buf[-1] = row
            self.written += 1

    def last(self, length: int) -> np.ndarray:
        return self.buf[-length:].copy()
