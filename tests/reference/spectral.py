"""Trusted references for band power and envelopes: scipy, MNE, and plain loops."""

from __future__ import annotations

import numpy as np
from mne.time_frequency import psd_array_multitaper
from scipy.signal import welch


def _finish(power: np.ndarray, total: np.ndarray, mode: str, average: bool, ratios: dict, bands: list) -> np.ndarray:
    """One feature row from absolute powers (n_bands, n_channels) and totals (n_channels,).

    Per channel: its bands then its ratios; with ``average``: the averaged bands,
    then the ratios of the averaged absolute powers. Logs come last.
    """
    def log(v):
        return np.log10(v) if mode == "log10" else 10 * np.log10(v) if mode == "db" else v

    shown = power / total if mode == "rel" else power
    idx = [(bands.index(a), bands.index(b)) for a, b in ratios.values()]
    if average:
        mean_abs = power.mean(axis=1)
        cols = [log(v) for v in shown.mean(axis=1)] + [log(mean_abs[a] / mean_abs[b]) for a, b in idx]
        return np.array(cols)
    rows = []
    for c in range(power.shape[1]):
        rows += [log(v) for v in shown[:, c]] + [log(power[a, c] / power[b, c]) for a, b in idx]
    return np.array(rows)


def welch_band_frames(x, fs, window, step, bands: dict, mode="abs", nperseg=None, average=False, ratios=None):
    """Band power features of every window ending at window, window + step, ... by ``scipy.signal.welch``."""
    nperseg = nperseg or window
    ratios = ratios or {}
    rows = []
    for end in range(window, x.shape[0] + 1, step):
        f, p = welch(x[end - window:end], fs=fs, window="hann", nperseg=nperseg, noverlap=nperseg // 2,
                     detrend="constant", axis=0)
        df = f[1] - f[0]
        power = np.array([p[(f >= lo) & (f <= hi)].sum(axis=0) * df for lo, hi in bands.values()])
        total = p[1:].sum(axis=0) * df
        rows.append(_finish(power, total, mode, average, ratios, list(bands)))
    return np.array(rows)


def mne_multitaper_band_frames(x, fs, window, step, bands: dict, bandwidth=None, mode="abs", average=False,
                               ratios=None, max_frames=None):
    """Band power by ``mne.time_frequency.psd_array_multitaper`` on each window.

    One call per band with ``fmin, fmax`` = the band edges (MNE keeps the
    ``rfftfreq`` bins with ``fmin <= f <= fmax``), ``adaptive=False,
    low_bias=True, normalization="full"``; band power = PSD summed over those
    bins times the bin width ``fs / window``. The total (relative mode) is
    the PSD summed over every bin but DC.
    """
    ratios = ratios or {}
    df = fs / window
    rows = []
    for end in list(range(window, x.shape[0] + 1, step))[:max_frames]:
        w = x[end - window:end].T
        kw = dict(bandwidth=bandwidth, adaptive=False, low_bias=True, normalization="full", verbose="error")
        power = np.array([psd_array_multitaper(w, fs, lo, hi, **kw)[0].sum(axis=-1) * df for lo, hi in bands.values()])
        total = psd_array_multitaper(w, fs, **kw)[0][:, 1:].sum(axis=-1) * df
        rows.append(_finish(power, total, mode, average, ratios, list(bands)))
    return np.array(rows)


def envelope_loop(y: np.ndarray, detector: str, power: bool, smoothing: str, alpha: float, box: int,
                  h: np.ndarray | None = None) -> np.ndarray:
    """Envelope of band-passed ``y`` (n_times, n_channels), one sample at a time, every sample.

    ``detector``: "rectify" (``|y|`` or ``y**2``) or "hilbert" (analytic
    magnitude with the FIR ``h`` of 2M+1 taps by ``np.convolve``, the real
    part delayed by M, zeros before the start). ``smoothing``: "exp"
    (``s += alpha (d - s)`` from 0), "boxcar" (mean of the last ``box``
    values, zeros before the start) or "none".
    """
    n, C = y.shape
    if detector == "hilbert":
        M = len(h) // 2
        im = np.stack([np.convolve(y[:, c], h)[:n] for c in range(C)], axis=1)
        re = np.vstack([np.zeros((M, C)), y[: n - M]])
        d = re**2 + im**2
        if not power:
            d = np.sqrt(d)
    else:
        d = y**2 if power else np.abs(y)
    out = np.empty((n, C))
    for c in range(C):
        s = 0.0
        hist = [0.0] * box
        for t in range(n):
            v = float(d[t, c])
            if smoothing == "exp":
                s = s + alpha * (v - s)
                out[t, c] = s
            elif smoothing == "boxcar":
                hist[t % box] = v
                acc = 0.0
                for u in hist:
                    acc += u
                out[t, c] = acc / box
            else:
                out[t, c] = v
    return out
