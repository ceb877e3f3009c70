"""Causal filter bank and sliding windows: the one path from samples to decoder windows.

Training (``rtneuro train``) and the online ``decoder`` node both cut their
windows here, so the features a model is trained on are computed exactly as
the ones it decodes live: the same causal IIR filters with their state
carried across chunks, the same window ends counted from the first sample.
Any split of the input gives the same windows, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from rtneuro._lazy import lazy
from rtneuro.errors import ConfigError
from rtneuro.kernels.iir import sosfilt_hold
from rtneuro.nodes.buffers import RingBuffer

signal = lazy("scipy.signal")  # imported when a filter is designed (rtneuro/_lazy.py)

__all__ = ["FilterBankWindows", "design_bank"]


def design_bank(bands: Sequence[Sequence[float]], order: int, sfreq: float) -> NDArray[np.float64]:
    """Butterworth band-pass sections for each band, stacked ``(n_bands, n_sections, 6)``.

    Parameters
    ----------
    bands : sequence of (low, high)
        Pass bands in Hz; ``low == 0`` gives a low-pass.
    order : int
        Butterworth order of each band-pass (``scipy.signal.butter``).
    sfreq : float
        Sampling rate in Hz.
    """
    nyq = sfreq / 2
    out = []
    for lo, hi in bands:
        if not 0 <= lo < hi < nyq:
            raise ConfigError(f"band [{lo}, {hi}] Hz must satisfy 0 <= low < high < Nyquist ({nyq:g} Hz)")
        if lo == 0:
            sos = signal.butter(order, hi, "lowpass", fs=sfreq, output="sos")
        else:
            sos = signal.butter(order, [lo, hi], "bandpass", fs=sfreq, output="sos")
        out.append(sos)
    n_sec = max(s.shape[0] for s in out)
    bank = np.zeros((len(out), n_sec, 6))
    bank[:, :, 0] = 1.0  # pass-through sections pad shorter designs
    bank[:, :, 3] = 1.0
    for b, sos in enumerate(out):
        bank[b, : sos.shape[0]] = sos
    return bank


class FilterBankWindows:
    """Filter a stream through each band and hand out sliding windows.

    Parameters
    ----------
    bank : ndarray, shape (n_bands, n_sections, 6)
        Second-order sections per band (see :func:`design_bank`); an empty
        bank (``n_bands == 0``) passes the signal through unfiltered as one band.
    n_channels : int
        Channels of the input.
    window, step : int
        Window length and hop, in samples. The first window ends after
        ``window`` samples; the next every ``step`` samples.

    Notes
    -----
    Filters are :func:`rtneuro.kernels.iir.sosfilt_hold` (transposed direct
    form II, as ``scipy.signal.sosfilt``; a non-finite sample is replaced by
    the channel's last finite one and counted in :attr:`n_replaced`).
    """

    def __init__(self, bank: NDArray[np.float64], n_channels: int, window: int, step: int) -> None:
        if window < 2 or step < 1:
            raise ConfigError(f"window must be >= 2 and step >= 1 samples, got {window} and {step}")
        self.bank = np.ascontiguousarray(bank, dtype=np.float64)
        self.n_bands = max(1, self.bank.shape[0])
        self.n_channels = int(n_channels)
        self.window = int(window)
        self.step = int(step)
        self.reset()

    def reset(self) -> None:
        C = self.n_channels
        self._zi = np.zeros((self.bank.shape[0], self.bank.shape[1] if self.bank.ndim == 3 else 0, 2, C))
        self._last = np.zeros((self.n_bands, C))
        self._ring = RingBuffer(self.window + self.step, self.n_bands * C)
        self._next_end = self.window
        self.n_replaced = 0

    def filter(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Filter ``x`` (n_times, n_channels) through every band: ``(n_times, n_bands * n_channels)``.

        Updates the filter state; called by :meth:`push`, or alone to filter a
        whole recording in one pass (the same output as any split).
        """
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_channels:
            raise ConfigError(f"expected samples of shape (n, {self.n_channels}), got {x.shape}")
        C = self.n_channels
        out = np.empty((x.shape[0], self.n_bands * C))
        if self.bank.shape[0] == 0:
            out[:] = x
            return out
        tmp = np.empty_like(x)
        for b in range(self.n_bands):
            self.n_replaced += int(sosfilt_hold(self.bank[b], x, self._zi[b], self._last[b], tmp))
            out[:, b * C:(b + 1) * C] = tmp
        return out

    def push(self, x: NDArray[np.float64], out: NDArray[np.float64] | None = None) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Take samples; return the windows that became complete.

        Parameters
        ----------
        x : ndarray, shape (n_times, n_channels)
        out : ndarray | None
            Buffer of at least ``(n_frames, n_bands, window, n_channels)``.

        Returns
        -------
        ends : ndarray of int64, shape (n_frames,)
            Index (count of samples since reset) one past each window's last sample.
        windows : ndarray, shape (n_frames, n_bands, window, n_channels)
            Each window of each band, time-major.
        """
        y = self.filter(x)
        n = y.shape[0]
        first = self._ring.written
        ends_l = []
        e = self._next_end
        while e <= first + n:
            ends_l.append(e)
            e += self.step
        ends = np.array(ends_l, dtype=np.int64)
        W, C, B = self.window, self.n_channels, self.n_bands
        if out is None or out.shape[0] < len(ends):
            out = np.empty((len(ends), B, W, C))
        wins = out[: len(ends)]
        # write in pieces no longer than one step so every window is still in the ring
        pos = 0
        k = 0
        flat = np.empty((W, B * C))
        while pos < n:
            take = min(self.step, n - pos)
            self._ring.write(y[pos:pos + take])
            pos += take
            while k < len(ends) and ends[k] <= first + pos:
                self._ring.read(int(ends[k]), W, flat)
                wins[k] = flat.reshape(W, B, C).transpose(1, 0, 2)
                k += 1
        self._next_end = e
        return ends, wins

    def windows_at(self, y: NDArray[np.float64], ends: NDArray[np.int64]) -> NDArray[np.float64]:
        """Windows ending at ``ends`` of an already filtered signal ``y`` (from :meth:`filter`).

        Returns ``(n_frames, n_bands, window, n_channels)``, equal to what
        :meth:`push` gives for the same frames.
        """
        W, C, B = self.window, self.n_channels, self.n_bands
        out = np.empty((len(ends), B, W, C))
        for k, e in enumerate(ends.tolist()):
            out[k] = y[e - W:e].reshape(W, B, C).transpose(1, 0, 2)
        return out

    def frame_ends(self, n_times: int) -> NDArray[np.int64]:
        """Ends of every window a stream of ``n_times`` samples yields (from reset)."""
        if n_times < self.window:
            return np.zeros(0, dtype=np.int64)
        return np.arange(self.window, n_times + 1, self.step, dtype=np.int64)
