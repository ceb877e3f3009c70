"""Slow, obviously-correct versions of the phase estimators, for comparison only.

``echt_last`` follows the published MATLAB ``echt.m`` of Schreglmann et al.
(2021) line by line (FFT, analytic mask, ``freqz`` of ``butter(2, band)`` at
the fftshifted bin frequencies, inverse FFT). ``ar_last`` is the AR forward
prediction with scipy building blocks; ``filtfilt_gust`` is
``scipy.signal.filtfilt(method="gust")`` written for second-order sections. ``naive_hilbert_track`` is the usual
real-time shortcut the estimators must beat: ``scipy.signal.hilbert`` of the
causally band-passed last window, read at its last sample.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_toeplitz
from scipy.signal import butter, freqz, hilbert, sosfilt


def echt_last(window: np.ndarray, l_freq: float, h_freq: float, sfreq: float) -> complex:
    """Analytic value at the last sample of ``window`` (shape (n,)) by the paper's ecHT."""
    n = window.shape[0]
    x = np.fft.fft(window, n)
    h = np.zeros(n)
    if n % 2 == 0:
        h[[0, n // 2]] = 1
        h[1:n // 2] = 2
    else:
        h[0] = 1
        h[1:(n + 1) // 2] = 2
    x = x * h
    b, a = butter(2, [l_freq / (sfreq / 2), h_freq / (sfreq / 2)], "bandpass")
    T = n / sfreq
    filt_freq = np.ceil(np.arange(-n / 2, n / 2 - 1 + 1e-9)) / T  # MATLAB's ceil(-n/2:n/2-1)/T
    _, coeff = freqz(b, a, worN=filt_freq, fs=sfreq)
    x = np.fft.fftshift(x) * coeff
    x = np.fft.ifftshift(x)
    return complex(np.fft.ifft(x)[-1])


def echt_track(x: np.ndarray, n: int, l_freq: float, h_freq: float, sfreq: float) -> np.ndarray:
    """ecHT at every sample from the n-th on (complex; NaN before)."""
    z = np.full(x.shape[0], np.nan + 0j)
    for i in range(n - 1, x.shape[0]):
        z[i] = echt_last(x[i - n + 1:i + 1], l_freq, h_freq, sfreq)
    return z


def yule_walker(y: np.ndarray, order: int) -> np.ndarray:
    """AR coefficients from the biased autocorrelation, by scipy's Toeplitz solver."""
    n = y.shape[0]
    r = np.array([y[: n - k] @ y[k:] for k in range(order + 1)]) / n
    return solve_toeplitz(r[:order], r[1:order + 1])


def burg(y: np.ndarray, order: int) -> np.ndarray:
    """AR coefficients by Burg's method, vectorised per order (Marple 1987)."""
    f = y.astype(float).copy()
    b = y.astype(float).copy()
    a = np.zeros(order)
    for k in range(order):
        ff, bb = f[k + 1:], b[k:-1]
        den = ff @ ff + bb @ bb
        kk = 2 * (ff @ bb) / den if den > 0 else 0.0
        a_new = a.copy()
        a_new[k] = kk
        a_new[:k] = a[:k] - kk * a[:k][::-1]
        a = a_new
        f_new, b_new = ff - kk * bb, bb - kk * ff
        f[k + 1:], b[k + 1:] = f_new, b_new
    return a


def filtfilt_gust(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``scipy.signal.filtfilt(b, a, x, method="gust")`` line by line, with ``sosfilt`` for ``lfilter``.

    (scipy's own takes ``b, a`` only, which loses about 1e-6 of relative
    precision for a narrow band at a high rate; the sections do not.)
    """
    n, ns = x.shape[0], 2 * sos.shape[0]
    obs = np.empty((n, ns))
    for j in range(ns):
        zi = np.zeros(ns)
        zi[j] = 1.0
        obs[:, j] = sosfilt(sos, np.zeros(n), zi=zi.reshape(-1, 2))[0]
    s = sosfilt(sos, obs[::-1], axis=0)
    m = np.hstack((s[::-1] - obs, obs[::-1] - s))
    y_fb = sosfilt(sos, sosfilt(sos, x)[::-1])[::-1]
    y_bf = sosfilt(sos, sosfilt(sos, x[::-1])[::-1])
    ic = np.linalg.lstsq(m, y_bf - y_fb, rcond=None)[0]
    y = sosfilt(sos, x, zi=ic[:ns].reshape(-1, 2))[0]
    return sosfilt(sos, y[::-1], zi=ic[ns:].reshape(-1, 2))[0][::-1]


def ar_predict(y: np.ndarray, a: np.ndarray, n_ahead: int) -> np.ndarray:
    """``y`` followed by ``n_ahead`` recursive AR predictions."""
    ext = list(y)
    p = a.shape[0]
    for _ in range(n_ahead):
        ext.append(float(np.dot(a, np.array(ext[-1:-p - 1:-1]))))
    return np.array(ext)


def ar_last(window: np.ndarray, l_freq: float, h_freq: float, sfreq: float, *, order: int, method: str = "yule-walker",
            decimate: int = 1, edge: int, ahead: int, filter_order: int = 2) -> complex:
    """Analytic value at the last sample of ``window`` by AR forward prediction (Zrenner et al. 2018)."""
    sos = butter(filter_order, [l_freq, h_freq], "bandpass", fs=sfreq, output="sos")
    y = filtfilt_gust(sos, window)  # Gustafsson's initial states, as the node
    y = y[::-1][::decimate][::-1]  # the newest sample stays on the grid
    keep = y[edge:y.shape[0] - edge]
    a = burg(keep, order) if method == "burg" else yule_walker(keep, order)
    ext = ar_predict(keep, a, edge + ahead)
    return complex(hilbert(ext)[keep.shape[0] + edge - 1])


def naive_hilbert_track(x: np.ndarray, n: int, l_freq: float, h_freq: float, sfreq: float) -> np.ndarray:
    """Causal band-pass (``butter(2)``, as ecHT's) of the stream, then ``hilbert`` of the last n samples."""
    sos = butter(2, [l_freq, h_freq], "bandpass", fs=sfreq, output="sos")
    y = sosfilt(sos, x)
    z = np.full(x.shape[0], np.nan + 0j)
    for i in range(n - 1, x.shape[0]):
        z[i] = hilbert(y[i - n + 1:i + 1])[-1]
    return z


def crossings(phase: np.ndarray, amp: np.ndarray, target: float, omega: float, min_interval: int,
              amp_min: float = 0.0) -> list[int]:
    """Sample-by-sample trigger rule (one estimate per sample; NaN = none yet)."""
    t = target - omega / 2
    out: list[int] = []
    last = -(1 << 62)
    prev = None
    for i in range(phase.shape[0]):
        if np.isnan(phase[i]):
            continue
        d = (phase[i] - t + np.pi) % (2 * np.pi) - np.pi
        if prev is not None and prev < 0 <= d and d - prev < np.pi and amp[i] >= amp_min and i - last >= min_interval:
            out.append(i)
            last = i
        prev = d
    return out


def circular_stats(errors_rad: np.ndarray) -> tuple[float, float, float]:
    """(circular mean in deg, circular SD ``sqrt(-2 ln R)`` in deg, R)."""
    m = np.mean(np.exp(1j * np.asarray(errors_rad)))
    r = float(np.abs(m))
    return float(np.degrees(np.angle(m))), float(np.degrees(np.sqrt(-2 * np.log(r)))), r
