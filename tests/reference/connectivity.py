"""Slow, obviously-correct spectral connectivity: explicit DFT sums and per-bin loops."""

from __future__ import annotations

import cmath
import math
from collections.abc import Sequence

import numpy as np


def segment_starts(window: int, nperseg: int) -> list[int]:
    """Starts of the 50 %-overlap segments, aligned to the end of the window."""
    hop = nperseg - nperseg // 2
    n_seg = (window - nperseg) // hop + 1
    used = (n_seg - 1) * hop + nperseg
    return [window - used + k * hop for k in range(n_seg)]


def segment_dft(window: np.ndarray, nperseg: int, k: int) -> np.ndarray:
    """DFT bin ``k`` of every mean-removed, periodic-Hann-tapered segment.

    Returns (n_segments, n_channels) complex, by an explicit sum over samples.
    """
    w = [0.5 - 0.5 * math.cos(2 * math.pi * m / nperseg) for m in range(nperseg)]
    out = []
    for a in segment_starts(window.shape[0], nperseg):
        seg = window[a:a + nperseg]
        row = []
        for c in range(window.shape[1]):
            mean = sum(float(v) for v in seg[:, c]) / nperseg
            acc = 0j
            for m in range(nperseg):
                acc += (float(seg[m, c]) - mean) * w[m] * cmath.exp(-2j * math.pi * k * m / nperseg)
            row.append(acc)
        out.append(row)
    return np.array(out)


def measures_from_coefficients(X: Sequence[complex], Y: Sequence[complex]) -> dict[str, float]:
    """The five measures at one bin from the per-segment coefficients of x and y.

    Cross-spectrum ``S = X conj(Y)`` per segment (mne-connectivity's
    convention), means over segments, one formula per measure, in plain Python.
    """
    X = [complex(x) for x in X]
    Y = [complex(y) for y in Y]
    n = len(X)
    S = [x * y.conjugate() for x, y in zip(X, Y, strict=True)]
    sxy = sum(S) / n
    sxx = sum(abs(x) ** 2 for x in X) / n
    syy = sum(abs(y) ** 2 for y in Y) / n
    imag = [s.imag for s in S]
    abs_imag = sum(abs(v) for v in imag) / n
    return {
        "coh": abs(sxy) ** 2 / (sxx * syy),
        "imcoh": sxy.imag / math.sqrt(sxx * syy),
        "plv": abs(sum(s / abs(s) for s in S) / n),
        "pli": abs(sum((v > 0) - (v < 0) for v in imag) / n),
        "wpli": abs(sum(imag) / n) / abs_imag if abs_imag > 0 else 0.0,
    }


def band_connectivity(window: np.ndarray, sfreq: float, nperseg: int, pairs: list[tuple[int, int]],
                      bands: dict[str, tuple[float, float]], measures: list[str]) -> np.ndarray:
    """One frame: the measures of each pair, averaged over each band's bins (edges inclusive).

    Returns the row in the node's column order: pair, then band, then measure.
    """
    freqs = [k * sfreq / nperseg for k in range(nperseg // 2 + 1)]
    per_bin: dict[int, np.ndarray] = {}
    row = []
    for i, j in pairs:
        for lo, hi in bands.values():
            ks = [k for k, f in enumerate(freqs) if lo <= f <= hi]
            vals: dict[str, list[float]] = {m: [] for m in measures}
            for k in ks:
                if k not in per_bin:
                    per_bin[k] = segment_dft(window, nperseg, k)
                F = per_bin[k]
                got = measures_from_coefficients(list(F[:, i]), list(F[:, j]))
                for m in measures:
                    vals[m].append(got[m])
            row.extend(sum(vals[m]) / len(vals[m]) for m in measures)
    return np.array(row)
