"""Spectral connectivity between channel pairs from per-segment Fourier coefficients."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "MEASURE_CODES",
    "M_COH",
    "M_IMCOH",
    "M_PLV",
    "M_PLI",
    "M_WPLI",
    "pair_connectivity",
    "tapered_segments",
]

M_COH = 0
M_IMCOH = 1
M_PLV = 2
M_PLI = 3
M_WPLI = 4
#: measure name -> code understood by :func:`pair_connectivity`
MEASURE_CODES = {"coh": M_COH, "imcoh": M_IMCOH, "plv": M_PLV, "pli": M_PLI, "wpli": M_WPLI}


@njit(cache=True, nogil=True)
def tapered_segments(win, starts, taper, bad, out):  # pragma: no cover - compiled
    """Cut a window into segments, remove each segment's mean and apply the taper.

    Parameters
    ----------
    win : ndarray, shape (n_times, n_channels)
        The analysis window.
    starts : ndarray of int64, shape (n_segments,)
        First sample of each segment in ``win``.
    taper : ndarray, shape (nperseg,)
        The taper (periodic Hann).
    bad : ndarray of bool, shape (n_channels,)
        Set in place: the channel holds a non-finite sample in a segment.
        Its segments are written as zeros so that no NaN reaches the FFT.
    out : ndarray, shape (n_segments, nperseg, n_channels)
        Detrended, tapered segments.

    Returns
    -------
    n_bad : int
        Number of channels with a non-finite sample.

    Notes
    -----
    ``detrend="constant"`` of ``scipy.signal.csd``: the mean is removed
    before the taper is applied, with the same operation order
    (``(x - mean) * w``).
    """
    n_seg, nperseg, n_ch = out.shape
    mean = np.empty(n_ch)
    for c in range(n_ch):
        bad[c] = False
    for s in range(n_seg):
        a = starts[s]
        for c in range(n_ch):
            mean[c] = 0.0
        for m in range(nperseg):
            for c in range(n_ch):
                mean[c] += win[a + m, c]
        for c in range(n_ch):
            mean[c] /= nperseg
            if not np.isfinite(mean[c]):
                bad[c] = True
        for m in range(nperseg):
            w = taper[m]
            for c in range(n_ch):
                out[s, m, c] = (win[a + m, c] - mean[c]) * w
    n_bad = 0
    for c in range(n_ch):
        if bad[c]:
            n_bad += 1
            for s in range(n_seg):
                for m in range(nperseg):
                    out[s, m, c] = 0.0
    return n_bad


@njit(cache=True, nogil=True)
def pair_connectivity(F, pair_i, pair_j, bad, band_bins, band_ptr, measures, psd, vals, out):  # pragma: no cover - compiled
    """Connectivity measures of channel pairs, averaged over each band's bins.

    Parameters
    ----------
    F : ndarray of complex128, shape (n_segments, n_bins, n_channels)
        Fourier coefficients of each tapered segment at the bins used by
        the bands (time-major: segments first, channels innermost).
    pair_i, pair_j : ndarray of int64, shape (n_pairs,)
        Channel indices (columns of ``F``) of each pair ``(x, y)``.
    bad : ndarray of bool, shape (n_channels,)
        Channels whose window held non-finite samples: every value of a
        pair with such a channel is NaN.
    band_bins : ndarray of int64, shape (n_entries,)
        Indices into the bin axis of ``F``, band after band.
    band_ptr : ndarray of int64, shape (n_bands + 1,)
        Band ``b`` uses ``band_bins[band_ptr[b]:band_ptr[b + 1]]``.
    measures : ndarray of int64, shape (n_measures,)
        Codes (``M_COH``...) in output order.
    psd : ndarray, shape (n_bins, n_channels)
        Scratch: summed auto-spectra.
    vals : ndarray, shape (n_measures, n_bins)
        Scratch: one pair's per-bin values.
    out : ndarray, shape (n_pairs * n_bands * n_measures,)
        Pair-major, then band, then measure.

    Notes
    -----
    With the per-segment cross-spectrum ``S = X conj(Y)`` (the convention of
    mne-connectivity) and means over the ``K`` segments, at each bin:

    - ``coh``: ``|mean S|^2 / (mean |X|^2 mean |Y|^2)`` (magnitude-squared
      coherence, as ``scipy.signal.coherence``; mne-connectivity's ``coh``
      is its square root),
    - ``imcoh``: ``Im(mean S) / sqrt(mean |X|^2 mean |Y|^2)`` (signed;
      Nolte et al. 2004, Clin Neurophysiol 115:2292),
    - ``plv``: ``|mean(S / |S|)|`` (Lachaux et al. 1999, Hum Brain Mapp 8:194),
    - ``pli``: ``|mean(sign(Im S))|`` (Stam et al. 2007, Hum Brain Mapp 28:1178),
    - ``wpli``: ``|mean(Im S)| / mean(|Im S|)``, 0 where every ``Im S`` is 0
      (Vinck et al. 2011, NeuroImage 55:1548).

    These are the formulas of ``mne_connectivity.spectral_connectivity_epochs``
    with segments as epochs. Undefined values (a channel with zero power at
    a bin for ``coh``, ``imcoh``; a zero cross-spectrum for ``plv``) are NaN.
    A band's value is the arithmetic mean of the per-bin values over its bins.
    """
    n_seg, n_bins, n_ch = F.shape
    n_pairs = pair_i.shape[0]
    n_bands = band_ptr.shape[0] - 1
    n_meas = measures.shape[0]
    want_psd = False
    want_plv = False
    want_pli = False
    want_wpli = False
    for m in range(n_meas):
        code = measures[m]
        if code in (M_COH, M_IMCOH):
            want_psd = True
        elif code == M_PLV:
            want_plv = True
        elif code == M_PLI:
            want_pli = True
        else:
            want_wpli = True
    if want_psd:
        for b in range(n_bins):
            for c in range(n_ch):
                psd[b, c] = 0.0
        for s in range(n_seg):
            for b in range(n_bins):
                for c in range(n_ch):
                    z = F[s, b, c]
                    psd[b, c] += z.real * z.real + z.imag * z.imag
    inv_n = 1.0 / n_seg
    for p in range(n_pairs):
        i = pair_i[p]
        j = pair_j[p]
        o = p * n_bands * n_meas
        if bad[i] or bad[j]:
            for k in range(n_bands * n_meas):
                out[o + k] = np.nan
            continue
        for b in range(n_bins):
            sre = 0.0
            sim = 0.0
            pre = 0.0
            pim = 0.0
            sgn = 0.0
            sabs = 0.0
            plv_nan = False
            for s in range(n_seg):
                x = F[s, b, i]
                y = F[s, b, j]
                re = x.real * y.real + x.imag * y.imag
                im = x.imag * y.real - x.real * y.imag
                sre += re
                sim += im
                if want_plv:
                    a = np.sqrt(re * re + im * im)
                    if a > 0.0:
                        pre += re / a
                        pim += im / a
                    else:
                        plv_nan = True
                if want_pli:
                    if im > 0.0:
                        sgn += 1.0
                    elif im < 0.0:
                        sgn -= 1.0
                if want_wpli:
                    sabs += abs(im)
            for m in range(n_meas):
                code = measures[m]
                if code == M_COH:
                    den = psd[b, i] * psd[b, j]
                    vals[m, b] = (sre * sre + sim * sim) / den if den > 0.0 else np.nan
                elif code == M_IMCOH:
                    den = np.sqrt(psd[b, i] * psd[b, j])
                    vals[m, b] = sim / den if den > 0.0 else np.nan
                elif code == M_PLV:
                    vals[m, b] = np.nan if plv_nan else np.sqrt(pre * pre + pim * pim) * inv_n
                elif code == M_PLI:
                    vals[m, b] = abs(sgn) * inv_n
                else:
                    vals[m, b] = abs(sim) / sabs if sabs > 0.0 else 0.0
        for bb in range(n_bands):
            lo = band_ptr[bb]
            hi = band_ptr[bb + 1]
            for m in range(n_meas):
                acc = 0.0
                for e in range(lo, hi):
                    acc += vals[m, band_bins[e]]
                out[o + bb * n_meas + m] = acc / (hi - lo)
