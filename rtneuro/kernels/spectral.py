"""Band power on sliding windows by a sliding DFT of only the bins the bands need."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["sliding_bandpower", "MODE_ABS", "MODE_REL", "MODE_LOG10", "MODE_DB"]

MODE_ABS = 0
MODE_REL = 1
MODE_LOG10 = 2
MODE_DB = 3


@njit(cache=True, nogil=True)
def _resync(ring, count, S, E):  # pragma: no cover - compiled
    """Recompute the rectangular DFT bins of the window ending at ``count`` exactly."""
    N, C = ring.shape
    K = S.shape[1]
    start = count - N
    for c in range(C):
        for k in range(K):
            S[c, k] = 0.0
    for m in range(N):
        r = (start + m) % N
        for c in range(C):
            v = ring[r, c]
            for k in range(K):
                S[c, k] += v * E[k, m]


@njit(cache=True, nogil=True)
def sliding_bandpower(x, picks, ring, S, W, E, state, step, resync, band_lo, band_hi, scale, df,
                      taper, mode, average, out, ends):  # pragma: no cover - compiled
    """Feed samples through a sliding DFT and emit band power at each frame end.

    Parameters
    ----------
    x : ndarray, shape (n_times, n_channels_in)
        New samples.
    picks : ndarray of int, shape (C,)
        Columns of ``x`` to analyse.
    ring : ndarray, shape (N, C)
        The last N samples (N = window length), updated in place.
    S : ndarray of complex, shape (C, K)
        Rectangular DFT bins 0..K-1 of the current window, updated in place.
    W : ndarray of complex, shape (K,)
        Twiddles ``exp(2j pi k / N)``.
    E : ndarray of complex, shape (K, N)
        ``exp(-2j pi k m / N)``, for the exact resynchronisation.
    state : ndarray of int64, shape (3,)
        ``[samples seen, sample count of the next frame end, frames emitted]``.
    step : int
        Samples between frames.
    resync : int
        Recompute the bins exactly every ``resync`` samples (bounds rounding
        drift; scheduled on the sample count, so chunking does not matter).
    band_lo, band_hi : ndarray of int, shape (B,)
        Inclusive bin range of each band.
    scale : ndarray, shape (K - 1,)
        One-sided density scaling per bin (``2 / (fs sum(w^2))``, halved at DC).
    df : float
        Bin width in Hz.
    taper : ndarray, shape (N,)
        The periodic Hann taper (relative mode only).
    mode : int
        MODE_ABS, MODE_REL, MODE_LOG10 or MODE_DB.
    average : bool
        Average band power over channels (before the log).
    out : ndarray, shape (max_frames, n_features)
        Feature rows, written from row 0.
    ends : ndarray of int64, shape (max_frames,)
        Sample count at the end of each emitted frame's window.

    Returns
    -------
    n_frames : int

    Notes
    -----
    Sliding DFT: ``S_k(n) = W_k (S_k(n-1) + x[n] - x[n-N])``. At a frame end the
    window's mean is removed (``S_0 = 0``, Welch's ``detrend="constant"``) and
    the periodic Hann taper is applied in the frequency domain,
    ``H_k = S_k / 2 - (S_{k-1} + S_{k+1}) / 4`` with ``S_{-1} = conj(S_1)``.
    The result equals ``scipy.signal.welch(window="hann", nperseg=N,
    detrend="constant")`` summed over each band's bins times the bin width.
    Requires every band to end below bin N/2 - 1.
    """
    n_times = x.shape[0]
    N, C = ring.shape
    K = S.shape[1]
    B = band_lo.shape[0]
    n_out = 0
    power = np.empty((B, C))
    H = np.empty(K - 1, dtype=np.complex128)
    for n in range(n_times):
        count = state[0]
        r = count % N
        for c in range(C):
            v = x[n, picks[c]]
            d = v - ring[r, c]
            ring[r, c] = v
            for k in range(K):
                S[c, k] = W[k] * (S[c, k] + d)
        count += 1
        state[0] = count
        if count >= N and count % resync == 0:
            _resync(ring, count, S, E)
        if count == state[1]:
            state[1] = count + step
            state[2] += 1
            for c in range(C):
                # detrend: rectangular DC bin is zero; Hann in the frequency domain
                s1 = S[c, 1]
                H[0] = -0.5 * s1.real
                for k in range(1, K - 1):
                    lo = S[c, k - 1] if k > 1 else 0.0
                    H[k] = 0.5 * S[c, k] - 0.25 * (lo + S[c, k + 1])
                for b in range(B):
                    acc = 0.0
                    for k in range(band_lo[b], band_hi[b] + 1):
                        acc += scale[k] * (H[k].real * H[k].real + H[k].imag * H[k].imag)
                    power[b, c] = acc * df
                if mode == MODE_REL:
                    # total one-sided power over bins 1..N/2, by Parseval on the
                    # tapered, detrended window (oldest sample at count % N)
                    mean = 0.0
                    for m in range(N):
                        mean += ring[m, c]
                    mean /= N
                    y0 = 0.0
                    y2 = 0.0
                    for m in range(N):
                        y = taper[m] * (ring[(count + m) % N, c] - mean)
                        y0 += y
                        y2 += y * y
                    total = (N * y2 - y0 * y0) * scale[1] * 0.5 * df
                    for b in range(B):
                        power[b, c] = power[b, c] / total if total > 0 else np.nan
            j = 0
            if average:
                for b in range(B):
                    acc = 0.0
                    for c in range(C):
                        acc += power[b, c]
                    out[n_out, j] = acc / C
                    j += 1
            else:
                for c in range(C):
                    for b in range(B):
                        out[n_out, j] = power[b, c]
                        j += 1
            if mode == MODE_LOG10:
                for i in range(j):
                    out[n_out, i] = np.log10(out[n_out, i])
            elif mode == MODE_DB:
                for i in range(j):
                    out[n_out, i] = 10.0 * np.log10(out[n_out, i])
            ends[n_out] = count
            n_out += 1
    return n_out
