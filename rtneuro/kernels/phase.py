"""Instantaneous phase at the newest sample: ecHT, AR forward prediction, trigger timing.

Every kernel here is causal and keeps its state in arrays passed in by the
caller, so any split of the input gives bit-identical output.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .hold import held

__all__ = [
    "hold_average",
    "echt_stream",
    "ar_stream",
    "ar_estimate",
    "filtfilt_gust",
    "yule_walker",
    "burg",
    "ar_extend",
    "phase_triggers",
    "AR_YULE_WALKER",
    "AR_BURG",
]

AR_YULE_WALKER = 0
AR_BURG = 1


@njit(cache=True, nogil=True)
def hold_average(x, picks, last, out):  # pragma: no cover - compiled
    """Mean of the picked channels, non-finite samples held per channel.

    Parameters
    ----------
    x : ndarray, shape (n_times, n_channels)
        Input samples.
    picks : ndarray of int64, shape (n_picks,)
        Columns of ``x`` to average.
    last : ndarray, shape (n_picks,)
        Last finite value of each picked channel, updated in place; a NaN or
        infinite sample is replaced by it.
    out : ndarray, shape (n_times,)
        The average.

    Returns
    -------
    n_bad : int
        Number of non-finite values replaced.
    """
    n_times = x.shape[0]
    n_p = picks.shape[0]
    n_bad = 0
    for n in range(n_times):
        acc = 0.0
        for j in range(n_p):
            v, bad = held(x[n, picks[j]], last, j)
            n_bad += bad
            acc += v
        out[n] = acc / n_p
    return n_bad


@njit(cache=True, nogil=True)
def echt_stream(x, ring, state, w_re, w_im, hop, phase_out, amp_out, count_out):  # pragma: no cover - compiled
    """Endpoint-corrected Hilbert transform at every ``hop``-th sample.

    Parameters
    ----------
    x : ndarray, shape (n_times,)
        New samples.
    ring : ndarray, shape (N,)
        The last N samples (N = window length); sample count ``c`` lives at
        ``ring[c % N]``. Updated in place.
    state : ndarray of int64, shape (1,)
        ``[samples seen]``, updated in place.
    w_re, w_im : ndarray, shape (N,)
        Complex weights, oldest sample first (see Notes).
    hop : int
        One estimate when ``count >= N`` and ``(count - N) % hop == 0``.
    phase_out, amp_out : ndarray, shape (max_frames,)
        Phase (rad, -pi..pi, 0 at a peak) and amplitude of each estimate.
    count_out : ndarray of int64, shape (max_frames,)
        Sample count (1-based position of the newest sample) of each estimate.

    Returns
    -------
    n_frames : int

    Notes
    -----
    ecHT (Schreglmann et al. 2021, Nat Commun 12:363): FFT of the window,
    negative frequencies zeroed and positive ones doubled, multiplied by the
    frequency response of a causal 2nd-order Butterworth band-pass, inverse
    FFT, last sample. Every step is linear and the same for every window, so
    the last sample equals ``sum_m x[m] w[m]`` with ``w[m] = g[N - 1 - m]``
    and ``g = ifft(multiplier)``: an exact O(N) dot product per estimate, no
    FFT. The sum runs oldest to newest, whatever the chunking.
    """
    N = ring.shape[0]
    n_out = 0
    for n in range(x.shape[0]):
        count = state[0]
        ring[count % N] = x[n]
        count += 1
        state[0] = count
        if count >= N and (count - N) % hop == 0:
            re = 0.0
            im = 0.0
            start = count % N  # oldest sample
            for m in range(N):
                v = ring[(start + m) % N]
                re += v * w_re[m]
                im += v * w_im[m]
            phase_out[n_out] = np.arctan2(im, re)
            amp_out[n_out] = np.sqrt(re * re + im * im)
            count_out[n_out] = count
            n_out += 1
    return n_out


@njit(cache=True, nogil=True)
def _sos_run(sos, z, src, dst, backward):  # pragma: no cover - compiled
    """Run the cascade over ``src`` (forward or backward in index) from state ``z``, into ``dst`` (may be ``src``)."""
    n = src.shape[0]
    n_sec = sos.shape[0]
    for k in range(n):
        i = n - 1 - k if backward else k
        v = src[i]
        for s in range(n_sec):
            y = sos[s, 0] * v + z[s, 0]
            z[s, 0] = sos[s, 1] * v - sos[s, 4] * y + z[s, 1]
            z[s, 1] = sos[s, 2] * v - sos[s, 5] * y
            v = y
        dst[i] = v


@njit(cache=True, nogil=True)
def filtfilt_gust(sos, gust, x, z, tmp, out):  # pragma: no cover - compiled
    """Zero-phase (forward-backward) filtering with Gustafsson's initial conditions.

    Parameters
    ----------
    sos : ndarray, shape (n_sections, 6)
    gust : ndarray, shape (4 * n_sections, n)
        Pseudo-inverse of Gustafsson's matrix for this filter and length
        (:func:`rtneuro.nodes.phase.gust_matrix`).
    x : ndarray, shape (n,)
    z : ndarray, shape (n_sections, 2)
        Scratch (filter state).
    tmp : ndarray, shape (n,)
        Scratch.
    out : ndarray, shape (n,)

    Notes
    -----
    The algorithm of ``scipy.signal.filtfilt(b, a, x, method="gust")``
    (Gustafsson, F. (1996) Determining the initial states in
    forward-backward filtering. IEEE Trans Signal Process 44:988): the
    initial states of the forward and the backward pass are those (least
    squares) for which forward-backward and backward-forward filtering agree.
    Unlike odd padding this leaves an oscillation's amplitude intact at the
    ends of the window: the zero-phase band-pass of a signal extended by its
    point reflection (``sosfiltfilt``'s default) is odd about the last
    sample, so it passes through zero there and its envelope sags over a
    span of the filter's impulse response (hundreds of ms for a narrow
    band).
    """
    n = x.shape[0]
    n_sec = sos.shape[0]
    ns = 2 * n_sec
    # forward-backward (into out) and backward-forward (into tmp) from zero states
    z[:, :] = 0.0
    _sos_run(sos, z, x, out, False)
    z[:, :] = 0.0
    _sos_run(sos, z, out, out, True)
    z[:, :] = 0.0
    _sos_run(sos, z, x, tmp, True)
    z[:, :] = 0.0
    _sos_run(sos, z, tmp, tmp, False)
    for i in range(n):
        tmp[i] -= out[i]
    # optimal initial states: gust @ (bf - fb); forward states first, then backward
    for j in range(ns):
        acc = 0.0
        for i in range(n):
            acc += gust[j, i] * tmp[i]
        z[j // 2, j % 2] = acc
    _sos_run(sos, z, x, out, False)
    for j in range(ns):
        acc = 0.0
        for i in range(n):
            acc += gust[ns + j, i] * tmp[i]
        z[j // 2, j % 2] = acc
    _sos_run(sos, z, out, out, True)


@njit(cache=True, nogil=True)
def yule_walker(y, order, a, r, tmp):  # pragma: no cover - compiled
    """AR coefficients by Yule-Walker (biased autocorrelation, Levinson-Durbin).

    Parameters
    ----------
    y : ndarray, shape (n,)
        Data (not de-meaned: a band-passed signal has zero mean).
    order : int
    a : ndarray, shape (order,)
        Output: ``y[t] ~ sum_k a[k] y[t - 1 - k]``.
    r, tmp : ndarray, shape (order + 1,)
        Scratch.

    Returns
    -------
    err : float
        Final prediction error variance (0 for an all-zero input, ``a`` zero).
    """
    n = y.shape[0]
    for k in range(order + 1):
        acc = 0.0
        for t in range(n - k):
            acc += y[t] * y[t + k]
        r[k] = acc / n
    for k in range(order):
        a[k] = 0.0
    err = r[0]
    for k in range(order):
        if err <= 0.0:
            break
        acc = r[k + 1]
        for j in range(k):
            acc -= a[j] * r[k - j]
        kk = acc / err
        for j in range(k):
            tmp[j] = a[j] - kk * a[k - 1 - j]
        for j in range(k):
            a[j] = tmp[j]
        a[k] = kk
        err *= 1.0 - kk * kk
    return err


@njit(cache=True, nogil=True)
def burg(y, order, a, f, b, tmp):  # pragma: no cover - compiled
    """AR coefficients by Burg's method.

    Parameters
    ----------
    y : ndarray, shape (n,)
    order : int
    a : ndarray, shape (order,)
        Output: ``y[t] ~ sum_k a[k] y[t - 1 - k]``.
    f, b : ndarray, shape (n,)
        Scratch (forward and backward prediction errors).
    tmp : ndarray, shape (order,)
        Scratch.

    Notes
    -----
    Burg, J.P. (1975) Maximum entropy spectral analysis, PhD thesis,
    Stanford; the recursion of Marple (1987), Digital Spectral Analysis, ch. 8.
    """
    n = y.shape[0]
    for t in range(n):
        f[t] = y[t]
        b[t] = y[t]
    for k in range(order):
        a[k] = 0.0
    for k in range(order):
        num = 0.0
        den = 0.0
        for t in range(k + 1, n):
            num += f[t] * b[t - 1]
            den += f[t] * f[t] + b[t - 1] * b[t - 1]
        kk = 2.0 * num / den if den > 0.0 else 0.0
        for j in range(k):
            tmp[j] = a[j] - kk * a[k - 1 - j]
        for j in range(k):
            a[j] = tmp[j]
        a[k] = kk
        # update errors from the end so that b[t - 1] is still the old value
        for t in range(n - 1, k, -1):
            ft = f[t]
            f[t] = ft - kk * b[t - 1]
            b[t] = b[t - 1] - kk * ft


@njit(cache=True, nogil=True)
def ar_extend(ext, n_known, a):  # pragma: no cover - compiled
    """Predict ``ext[n_known:]`` recursively from ``ext[:n_known]`` with AR coefficients ``a``."""
    order = a.shape[0]
    for t in range(n_known, ext.shape[0]):
        acc = 0.0
        for k in range(order):
            acc += a[k] * ext[t - 1 - k]
        ext[t] = acc


@njit(cache=True, nogil=True)
def ar_estimate(win, sos, gust, dec, edge, order, method, n_ahead, h_re, h_im, z, tmp, yf, ext, a, s1, s2, s3):  # pragma: no cover - compiled
    """Phase and amplitude at the newest sample of ``win`` by AR forward prediction.

    Parameters
    ----------
    win : ndarray, shape (N,)
        The window, oldest sample first.
    sos, gust :
        Zero-phase band-pass (see :func:`filtfilt_gust`).
    dec : int
        Decimation: the working series is ``yf[N-1], yf[N-1-dec], ...``
        (the newest sample is always on the grid).
    edge : int
        Working samples dropped at each end of the filtered window.
    order : int
        AR order.
    method : int
        AR_YULE_WALKER or AR_BURG.
    n_ahead : int
        Working samples predicted past the present.
    h_re, h_im : ndarray, shape (L,)
        Weights of the analytic signal (FFT Hilbert) at the present, for the
        extended series of length ``L = (M - 2 * edge) + edge + n_ahead``
        (``M = (N - 1) // dec + 1`` working samples).
    z : ndarray, shape (n_sections, 2)
        Scratch.
    tmp : ndarray, shape (N,)
        Scratch.
    yf : ndarray, shape (N,)
        Scratch.
    ext : ndarray, shape (L,)
        Scratch: the kept series followed by its prediction.
    a : ndarray, shape (order,)
        Scratch: the AR coefficients.
    s1, s2 : ndarray, shape (>= max(order + 1, L),)
        Scratch.
    s3 : ndarray, shape (order + 1,)
        Scratch.

    Returns
    -------
    phase, amplitude : float

    Notes
    -----
    Zrenner et al. (2018) Brain Stimul 11:374 and Chen et al. (2013) IEEE
    Trans Biomed Eng 60:753: zero-phase band-pass of the window, edges cut,
    AR fit, forward prediction over the cut edge and ``n_ahead`` beyond the
    present, analytic signal (``scipy.signal.hilbert``) of the extended
    series read at the present. The band-pass is forward-backward with
    Gustafsson's initial states (:func:`filtfilt_gust`), so the amplitude is
    that of the band-passed rhythm (input amplitude times the squared
    magnitude response) up to the window's end; with odd padding it sagged
    towards zero there and the AR model predicted a fraction of it.
    """
    N = win.shape[0]
    filtfilt_gust(sos, gust, win, z, tmp, yf)
    M = (N - 1) // dec + 1
    n_keep = M - 2 * edge
    # working sample i (0 oldest) is yf[N - 1 - dec * (M - 1 - i)]
    for i in range(n_keep):
        ext[i] = yf[N - 1 - dec * (M - 1 - (i + edge))]
    if method == AR_BURG:
        burg(ext[:n_keep], order, a, s1, s2, s3)
    else:
        yule_walker(ext[:n_keep], order, a, s1, s3)
    ar_extend(ext, n_keep, a)
    re = 0.0
    im = 0.0
    for m in range(ext.shape[0]):
        re += ext[m] * h_re[m]
        im += ext[m] * h_im[m]
    return np.arctan2(im, re), np.sqrt(re * re + im * im)


@njit(cache=True, nogil=True)
def ar_stream(x, ring, state, hop, win, sos, gust, dec, edge, order, method, n_ahead, h_re, h_im,
              z, tmp, yf, ext, a, s1, s2, s3, phase_out, amp_out, count_out):  # pragma: no cover - compiled
    """:func:`ar_estimate` at every ``hop``-th sample; the ring and counts as :func:`echt_stream`.

    ``win`` (shape (N,)) is scratch for the window copied out of the ring.
    """
    N = ring.shape[0]
    n_out = 0
    for n in range(x.shape[0]):
        count = state[0]
        ring[count % N] = x[n]
        count += 1
        state[0] = count
        if count >= N and (count - N) % hop == 0:
            start = count % N
            for m in range(N):
                win[m] = ring[(start + m) % N]
            ph, amp = ar_estimate(win, sos, gust, dec, edge, order, method, n_ahead, h_re, h_im,
                                  z, tmp, yf, ext, a, s1, s2, s3)
            phase_out[n_out] = ph
            amp_out[n_out] = amp
            count_out[n_out] = count
            n_out += 1
    return n_out


@njit(cache=True, nogil=True)
def _wrap(p):  # pragma: no cover - compiled
    return (p + np.pi) % (2.0 * np.pi) - np.pi


@njit(cache=True, nogil=True)
def phase_triggers(phase, amp, counts, n_frames, hop, omega, target, amp_min, min_interval, fstate, istate,
                   trig_out, trig_amp):  # pragma: no cover - compiled
    """Samples at which the phase crosses ``target``, from estimates every ``hop`` samples.

    Between two estimates the phase advances by ``omega`` per sample from the
    last estimate, so every sample has a phase and the trigger falls on the
    sample nearest the predicted crossing, whatever the hop.

    Parameters
    ----------
    phase, amp : ndarray, shape (>= n_frames,)
        Estimates (rad; input units).
    counts : ndarray of int64, shape (>= n_frames,)
        Sample count of each estimate (its sample is at position ``count - 1``).
    n_frames : int
    hop : int
    omega : float
        Phase advance per sample (rad), ``2 pi f_centre / sfreq``.
    target : float
        Target phase (rad).
    amp_min : float
        No trigger while the amplitude is below it.
    min_interval : int
        Samples at least between two triggers.
    fstate : ndarray, shape (1,)
        ``[phase - target' of the previous sample]``, updated in place.
    istate : ndarray of int64, shape (4,)
        ``[previous sample valid, position of the last trigger (or very
        negative), crossings refused for amplitude, refused for interval]``.
    trig_out : ndarray of int64, shape (>= n_frames * hop,)
        Positions (0-based sample counts) of the triggers.
    trig_amp : ndarray, shape (>= n_frames * hop,)
        The amplitude estimate behind each trigger.

    Returns
    -------
    n_triggers : int

    Notes
    -----
    A crossing happens between samples ``n - 1`` and ``n`` when
    ``d = wrap(phase - target + omega / 2)`` goes from negative to
    non-negative by less than pi (a forward step, not a wrap at +-pi). The
    half-sample shift puts the trigger on the sample nearest the crossing
    instead of always the first one after it.
    """
    n_trig = 0
    t_shift = target - 0.5 * omega
    for j in range(n_frames):
        p0 = counts[j] - 1
        for s in range(hop):
            d = _wrap(phase[j] + omega * s - t_shift)
            pos = p0 + s
            if istate[0] == 1:
                dp = fstate[0]
                if dp < 0.0 <= d and d - dp < np.pi:
                    if amp[j] < amp_min:
                        istate[2] += 1
                    elif pos - istate[1] < min_interval:
                        istate[3] += 1
                    else:
                        trig_out[n_trig] = pos
                        trig_amp[n_trig] = amp[j]
                        n_trig += 1
                        istate[1] = pos
            fstate[0] = d
            istate[0] = 1
    return n_trig
