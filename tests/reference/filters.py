"""Slow, obviously-correct versions of the filter, re-referencing and decimation kernels."""

from __future__ import annotations

import numpy as np


def fir_loop(taps: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Causal FIR, one output at a time, history before x[0] filled with x[0].

    ``x`` is (n_times, n_channels); ``y[n] = sum_k taps[k] x[n - k]`` with
    ``x[m] = x[0]`` for ``m < 0`` (the steady state of a constant input).
    """
    n_times, n_ch = x.shape
    y = np.zeros((n_times, n_ch))
    for c in range(n_ch):
        for n in range(n_times):
            acc = 0.0
            for k, h in enumerate(taps):
                acc += h * float(x[max(n - k, 0), c])
            y[n, c] = acc
    return y


def hold_nonfinite(x: np.ndarray) -> np.ndarray:
    """Replace each non-finite value by the last finite one of its channel (0 before any)."""
    y = np.array(x, dtype=float)
    for c in range(y.shape[1]):
        last = 0.0
        for n in range(y.shape[0]):
            if np.isfinite(y[n, c]):
                last = y[n, c]
            else:
                y[n, c] = last
    return y


def common_average_loop(x: np.ndarray, ref: list[int], rereference: list[int]) -> np.ndarray:
    """Each channel of ``rereference`` minus the mean of the finite ``ref`` channels of that sample."""
    y = np.array(x, dtype=float)
    for n in range(x.shape[0]):
        vals = [x[n, i] for i in ref if np.isfinite(x[n, i])]
        r = sum(vals) / len(vals) if vals else np.nan
        for c in rereference:
            y[n, c] = x[n, c] - r
    return y


def neighbor_loop(x: np.ndarray, derived: list[tuple[int, list[int]]]) -> np.ndarray:
    """Each derived channel minus the mean of its finite neighbours, sample by sample."""
    y = np.empty((x.shape[0], len(derived)))
    for n in range(x.shape[0]):
        for o, (c, nbs) in enumerate(derived):
            vals = [x[n, i] for i in nbs if np.isfinite(x[n, i])]
            y[n, o] = x[n, c] - sum(vals) / len(vals) if vals else np.nan
    return y


def nearest_neighbors(positions: dict[str, np.ndarray], names: list[str], k: int) -> dict[str, list[str]]:
    """For each name, the k others closest in 3-D (ties: stream order), by sorting all distances."""
    out = {}
    for a in names:
        d = sorted((float(np.sqrt(((positions[a] - positions[b]) ** 2).sum())), names.index(b), b)
                   for b in names if b != a)
        out[a] = [b for _, _, b in d[:k]]
    return out
