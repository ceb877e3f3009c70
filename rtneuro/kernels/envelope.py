"""Band envelopes: a band-pass filter bank, a detector (rectifier or FIR
Hilbert transformer), smoothing, and frames on the absolute sample count."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "envelope",
    "hilbert_fir",
    "DETECT_RECTIFY",
    "DETECT_HILBERT",
    "SMOOTH_NONE",
    "SMOOTH_EXP",
    "SMOOTH_BOXCAR",
]

DETECT_RECTIFY = 0
DETECT_HILBERT = 1
SMOOTH_NONE = 0
SMOOTH_EXP = 1
SMOOTH_BOXCAR = 2


def hilbert_fir(n_taps: int) -> np.ndarray:
    """A type III FIR Hilbert transformer (odd length, Hamming-windowed ideal response).

    Parameters
    ----------
    n_taps : int
        Odd number of taps ``2 M + 1``; the transformer delays by ``M`` samples.

    Returns
    -------
    h : ndarray, shape (n_taps,)
        ``h[M + n] = 2 / (pi n)`` for odd ``n``, 0 for even ``n``, times a
        Hamming window. ``(h * x)[t]`` approximates the Hilbert transform of
        ``x`` at ``t - M``.

    Notes
    -----
    Oppenheim, A. V. & Schafer, R. W., Discrete-Time Signal Processing
    (3rd ed.), sec. 12.4.3 (windowed ideal Hilbert transformer). The gain is
    0 at DC and Nyquist; the node checks it is close to 1 over every band.
    """
    if n_taps < 3 or n_taps % 2 == 0:
        raise ValueError(f"n_taps must be odd and >= 3, got {n_taps}")
    M = n_taps // 2
    n = np.arange(-M, M + 1)
    h = np.zeros(n_taps)
    odd = n % 2 != 0
    h[odd] = 2.0 / (np.pi * n[odd])
    return h * np.hamming(n_taps)


@njit(cache=True, nogil=True)
def envelope(x, picks, sos, zi, last, detector, power, h, hring, smoothing, alpha, bring, smooth, state, step,
             out, ends):  # pragma: no cover - compiled
    """Band-pass each channel into each band, detect its envelope, smooth, emit frames.

    Parameters
    ----------
    x : ndarray, shape (n_times, n_channels_in)
        New samples.
    picks : ndarray of int, shape (C,)
        Columns of ``x`` to analyse.
    sos : ndarray, shape (B, n_sections, 6)
        One band-pass filter per band, second-order sections.
    zi : ndarray, shape (B, n_sections, 2, C)
        Filter states (transposed direct form II), updated in place.
    last : ndarray, shape (C,)
        Last finite input per channel: NaN and inf inputs are replaced by it
        (counted in ``state[2]``), so they cannot poison the filters.
    detector : int
        DETECT_RECTIFY: ``|y|`` (or ``y**2`` with ``power``);
        DETECT_HILBERT: ``|y_a|`` (or ``|y_a|**2``) of the analytic signal
        ``y_a[t - M] = y[t - M] + 1j (h * y)[t]``, delayed by ``M``.
    power : bool
        Detect power (squared) rather than amplitude.
    h : ndarray, shape (L,)
        Hilbert transformer, ``L = 2 M + 1``, *time-reversed* (``h[::-1]``;
        unused by the rectifier).
    hring : ndarray, shape (B, C, 2 L)
        The last ``L`` band-passed samples (Hilbert only), each written twice
        (at ``count % L`` and ``count % L + L``) so that the last ``L`` are
        always contiguous; updated in place.
    smoothing : int
        SMOOTH_NONE (the detector value at the frame's last sample),
        SMOOTH_EXP (``s += alpha (d - s)`` every sample) or SMOOTH_BOXCAR
        (mean of the detector over the last ``bring.shape[0]`` samples).
    alpha : float
        Exponential smoothing coefficient, ``1 - exp(-1 / (tau fs))``.
    bring : ndarray, shape (Lb, B, C)
        The last ``Lb`` detector values (boxcar only), updated in place.
    smooth : ndarray, shape (B, C)
        Exponential smoother state, updated in place.
    state : ndarray of int64, shape (3,)
        ``[samples seen, sample count of the next frame, non-finite replaced]``.
    step : int
        Samples between frames.
    out : ndarray, shape (max_frames, C * B)
        Feature rows, channel-major (column ``c * B + b``), from row 0.
    ends : ndarray of int64, shape (max_frames,)
        Sample count at each emitted frame.

    Returns
    -------
    n_frames : int

    Notes
    -----
    The same operations run in the same order whatever the chunking, so any
    split of the input gives bit-identical output. Boxcar means are summed
    afresh at each frame (no running sum to drift).
    """
    n_times = x.shape[0]
    B = sos.shape[0]
    n_sec = sos.shape[1]
    C = picks.shape[0]
    L = h.shape[0]
    M = L // 2
    Lb = bring.shape[0]
    n_out = 0
    for n in range(n_times):
        count = state[0]
        for c in range(C):
            v0 = x[n, picks[c]]
            if np.isfinite(v0):
                last[c] = v0
            else:
                v0 = last[c]
                state[2] += 1
            for b in range(B):
                v = v0
                for s in range(n_sec):
                    y = sos[b, s, 0] * v + zi[b, s, 0, c]
                    zi[b, s, 0, c] = sos[b, s, 1] * v - sos[b, s, 4] * y + zi[b, s, 1, c]
                    zi[b, s, 1, c] = sos[b, s, 2] * v - sos[b, s, 5] * y
                    v = y
                if detector == DETECT_HILBERT:
                    p = count % L
                    hring[b, c, p] = v
                    hring[b, c, p + L] = v
                    # oldest of the last L samples at p + 1, newest at p + L
                    im = 0.0
                    for j in range(L):
                        im += h[j] * hring[b, c, p + 1 + j]
                    re = hring[b, c, p + L - M]
                    d = re * re + im * im
                    if not power:
                        d = np.sqrt(d)
                else:
                    d = v * v if power else abs(v)
                if smoothing == SMOOTH_EXP:
                    smooth[b, c] += alpha * (d - smooth[b, c])
                elif smoothing == SMOOTH_BOXCAR:
                    bring[count % Lb, b, c] = d
                else:
                    smooth[b, c] = d
        count += 1
        state[0] = count
        if count == state[1]:
            state[1] = count + step
            for c in range(C):
                for b in range(B):
                    if smoothing == SMOOTH_BOXCAR:
                        acc = 0.0
                        for i in range(Lb):
                            acc += bring[i, b, c]
                        out[n_out, c * B + b] = acc / Lb
                    else:
                        out[n_out, c * B + b] = smooth[b, c]
            ends[n_out] = count
            n_out += 1
    return n_out
