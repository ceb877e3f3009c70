"""Band power kernels: a sliding DFT of only the bins the bands need, the
multitaper band sums, and the finishing step (relative power, channel
average, band ratios, logarithms) that every method shares."""

from __future__ import annotations

import numpy as np
from numba import njit

from .hold import held

__all__ = [
    "sliding_bandpower",
    "hold_nonfinite",
    "band_sums_of_squares",
    "finish_rows",
    "MODE_ABS",
    "MODE_REL",
    "MODE_LOG10",
    "MODE_DB",
]

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
def _log_value(v, mode):  # pragma: no cover - compiled
    if mode == MODE_LOG10:
        return np.log10(v)
    if mode == MODE_DB:
        return 10.0 * np.log10(v)
    return v


@njit(cache=True, nogil=True)
def _finish_row(power, total, mode, average, r_num, r_den, out, row):  # pragma: no cover - compiled
    """Write one feature row from absolute band powers.

    Columns: per channel its bands then its ratios, or (``average``) the
    bands then the ratios of the channel-averaged powers. Band columns are
    relative to ``total`` in MODE_REL; ratios always divide absolute powers
    (the total cancels); the logarithm, if any, comes last.
    """
    B, C = power.shape
    R = r_num.shape[0]
    j = 0
    if average:
        for b in range(B):
            acc = 0.0
            for c in range(C):
                v = power[b, c]
                if mode == MODE_REL:
                    v = v / total[c] if total[c] > 0 else np.nan
                acc += v
            out[row, j] = _log_value(acc / C, mode)
            j += 1
        for r in range(R):
            num = 0.0
            den = 0.0
            for c in range(C):
                num += power[r_num[r], c]
                den += power[r_den[r], c]
            out[row, j] = _log_value(num / den if den > 0 else np.nan, mode)
            j += 1
    else:
        for c in range(C):
            for b in range(B):
                v = power[b, c]
                if mode == MODE_REL:
                    v = v / total[c] if total[c] > 0 else np.nan
                out[row, j] = _log_value(v, mode)
                j += 1
            for r in range(R):
                den = power[r_den[r], c]
                out[row, j] = _log_value(power[r_num[r], c] / den if den > 0 else np.nan, mode)
                j += 1


@njit(cache=True, nogil=True)
def finish_rows(power, total, mode, average, r_num, r_den, out):  # pragma: no cover - compiled
    """Feature rows from absolute band powers, for the frame-by-frame methods.

    Parameters
    ----------
    power : ndarray, shape (n_frames, n_bands, n_channels)
        Absolute band power.
    total : ndarray, shape (n_frames, n_channels)
        Total one-sided power over (0, Nyquist] (read in MODE_REL only).
    mode : int
        MODE_ABS, MODE_REL, MODE_LOG10 or MODE_DB.
    average : bool
        Average over channels (before the logarithm).
    r_num, r_den : ndarray of int, shape (n_ratios,)
        Band indices of each ratio's numerator and denominator.
    out : ndarray, shape (n_frames, n_features)
        Feature rows, see :func:`sliding_bandpower` for the column order.
    """
    for f in range(power.shape[0]):
        _finish_row(power[f], total[f], mode, average, r_num, r_den, out, f)


@njit(cache=True, nogil=True)
def hold_nonfinite(x, picks, last, out):  # pragma: no cover - compiled
    """Copy the picked columns, replacing NaN and inf by the channel's last finite value.

    Parameters
    ----------
    x : ndarray, shape (n_times, n_channels_in)
    picks : ndarray of int, shape (C,)
    last : ndarray, shape (C,)
        Last finite value per picked channel, updated in place.
    out : ndarray, shape (n_times, C)

    Returns
    -------
    n_bad : int
        Values replaced.
    """
    n_bad = 0
    for n in range(x.shape[0]):
        for c in range(picks.shape[0]):
            v, bad = held(x[n, picks[c]], last, c)
            n_bad += bad
            out[n, c] = v
    return n_bad


@njit(cache=True, nogil=True)
def band_sums_of_squares(proj, row_lo, row_hi, power):  # pragma: no cover - compiled
    """``power[b, c] = sum(proj[row_lo[b]:row_hi[b], c] ** 2)``.

    Parameters
    ----------
    proj : ndarray, shape (n_rows, C)
        Scaled projections of a window on tapered cosines and sines, rows
        grouped by frequency bin (see :class:`rtneuro.nodes.spectral.Bandpower`).
    row_lo, row_hi : ndarray of int, shape (B,)
        Half-open row range of each band.
    power : ndarray, shape (B, C)
        Output.
    """
    B = row_lo.shape[0]
    C = proj.shape[1]
    for b in range(B):
        for c in range(C):
            power[b, c] = 0.0
        for i in range(row_lo[b], row_hi[b]):
            for c in range(C):
                v = proj[i, c]
                power[b, c] += v * v


@njit(cache=True, nogil=True)
def sliding_bandpower(x, picks, ring, S, W, E, state, last, step, resync, band_lo, band_hi, scale, df,
                      taper, mode, average, r_num, r_den, out, ends):  # pragma: no cover - compiled
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
    state : ndarray of int64, shape (4,)
        ``[samples seen, sample count of the next frame end, frames emitted,
        non-finite values replaced]``.
    last : ndarray, shape (C,)
        Last finite sample per channel: a NaN or inf input is replaced by
        it (and counted in ``state[3]``), so it cannot poison the DFT.
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
    r_num, r_den : ndarray of int, shape (R,)
        Band indices of each ratio's numerator and denominator.
    out : ndarray, shape (max_frames, n_features)
        Feature rows, written from row 0: per channel its B bands then its R
        ratios, or with ``average`` the B averaged bands then the R ratios
        of averaged powers.
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
    total = np.ones(C)
    H = np.empty(K - 1, dtype=np.complex128)
    for n in range(n_times):
        count = state[0]
        r = count % N
        for c in range(C):
            v, bad = held(x[n, picks[c]], last, c)
            state[3] += bad
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
                    total[c] = (N * y2 - y0 * y0) * scale[1] * 0.5 * df
            _finish_row(power, total, mode, average, r_num, r_den, out, n_out)
            ends[n_out] = count
            n_out += 1
    return n_out
