"""Streaming spike detection: band-pass, adaptive noise level, threshold, peak, dedup, snippets, rates.

Everything runs sample by sample over time-major ``(n_times, n_channels)``
float32 blocks with channels innermost, and every piece of state (filter,
noise level, pending peaks, candidate queue, snippet FIFO, rate bins) lives
in arrays owned by the caller, so any split of the input gives identical
output.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "sosfilt_f32",
    "detect_spikes",
    "ST_COUNT",
    "ST_ACTIVE",
    "ST_QLEN",
    "ST_FHEAD",
    "ST_FLEN",
    "ST_NEXT_BIN",
    "ST_BAD",
    "ST_CANDIDATES",
    "ST_SUPPRESSED",
    "ST_DROPPED",
    "ST_KEPT",
    "ST_NPEND",
    "N_STATE",
    "SIGN_NEG",
    "SIGN_POS",
    "SIGN_BOTH",
]

#: Slots of the integer state vector of :func:`detect_spikes`.
ST_COUNT = 0  # samples consumed so far
ST_ACTIVE = 1  # 1 once the initial noise level is set (detection runs)
ST_QLEN = 2  # candidates waiting for de-duplication
ST_FHEAD = 3  # snippet FIFO: index of the oldest entry
ST_FLEN = 4  # snippet FIFO: entries
ST_NEXT_BIN = 5  # sample count at which the next rate frame is emitted
ST_BAD = 6  # non-finite input values replaced so far
ST_CANDIDATES = 7  # peaks found on single channels
ST_SUPPRESSED = 8  # candidates removed by de-duplication
ST_DROPPED = 9  # candidates lost to a full queue (never expected)
ST_KEPT = 10  # detections emitted
ST_NPEND = 11  # channels with an open peak window
N_STATE = 12

SIGN_NEG = 1
SIGN_POS = 2
SIGN_BOTH = 3


@njit(cache=True, nogil=True)
def sosfilt_f32(sos, x, zi, last, out):  # pragma: no cover - compiled
    """Float32 cascaded biquads holding the last finite input, state carried across calls.

    Parameters
    ----------
    sos : ndarray of float32, shape (n_sections, 6)
        Second-order sections with ``a0 == 1``.
    x : ndarray, shape (n_times, n_channels)
        Input samples (any float dtype).
    zi : ndarray of float32, shape (2, n_sections, n_channels)
        Filter state, updated in place (scipy's ``(n_sections, 2)`` layout
        with the first two axes swapped: two separate rows per section keep
        the channel loop vectorised).
    last : ndarray of float32, shape (n_channels,)
        Last finite input per channel, updated in place.
    out : ndarray of float32, shape (n_times, n_channels)
        Filtered output.

    Returns
    -------
    n_bad : int
        Non-finite inputs replaced by the channel's last finite value.

    Notes
    -----
    Transposed direct form II, the recursion of ``scipy.signal.sosfilt``, in
    single precision: the same kernel the detector runs, exposed for tests.
    """
    n_bad = 0
    for n in range(x.shape[0]):
        n_bad += _filter_row(sos, x, n, zi, last, out[n])
    return n_bad


@njit(cache=True, nogil=True, inline="always")
def _filter_row(sos, x, n, zi, last, row):  # pragma: no cover - compiled
    """Filter row ``n`` of ``x`` into ``row``; branch-free so that the channel loops vectorise."""
    n_ch = x.shape[1]
    n_bad = 0
    for c in range(n_ch):
        v = np.float32(x[n, c])
        ok = np.isfinite(v)
        v = v if ok else last[c]
        last[c] = v
        n_bad += 0 if ok else 1
        row[c] = v
    for s in range(sos.shape[0]):
        b0 = sos[s, 0]
        b1 = sos[s, 1]
        b2 = sos[s, 2]
        a1 = sos[s, 4]
        a2 = sos[s, 5]
        z0 = zi[0, s]
        z1 = zi[1, s]
        for c in range(n_ch):
            v = row[c]
            y = b0 * v + z0[c]
            z0[c] = b1 * v - a1 * y + z1[c]
            z1[c] = b2 * v - a2 * y
            row[c] = y
    return n_bad


@njit(cache=True, nogil=True, inline="always")
def _stronger(a_i, p_i, c_i, a_j, p_j, c_j):  # pragma: no cover - compiled
    """Whether candidate i beats candidate j: larger |amplitude|, then earlier, then lower channel."""
    if a_i != a_j:
        return a_i > a_j
    if p_i != p_j:
        return p_i < p_j
    return c_i < c_j


@njit(cache=True, nogil=True, inline="always")
def _close(c, count, refr, pend_end, pk_idx, pk_val, quiet_until, dedup, dedup_s, neigh,
           q_p, q_c, q_a, q_sup, st):  # pragma: no cover - compiled
    """Channel ``c``'s peak window closed at ``count``: queue its peak as a candidate."""
    pend_end[c] = -1
    # no new crossing before the refractory period ends, nor at this very sample
    quiet_until[c] = max(pk_idx[c] + refr, count)
    st[ST_CANDIDATES] += 1
    qn = st[ST_QLEN]
    if qn == q_p.shape[0]:
        st[ST_DROPPED] += 1
        return
    p_new = pk_idx[c]
    a_new = abs(pk_val[c])
    sup = False
    if dedup:
        for i in range(qn):
            ci = q_c[i]
            if neigh[ci, c] and abs(q_p[i] - p_new) <= dedup_s:
                if _stronger(abs(q_a[i]), q_p[i], ci, a_new, p_new, c):
                    sup = True
                else:
                    q_sup[i] = True
    q_p[qn] = p_new
    q_c[qn] = c
    q_a[qn] = pk_val[c]
    q_sup[qn] = sup
    st[ST_QLEN] = qn + 1


@njit(cache=True, nogil=True)
def detect_spikes(x, sos, zi, last, ring, init_buf, init_stride, n_init, noise, thr, k_thr, up, down, adapt, sign,
                  win, refr, dedup, dedup_s, neigh, pre, post, bin_len, bin_scale,
                  prev, cross, plist, pend_end, pk_idx, pk_val, pk_sign, quiet_until, counts,
                  q_p, q_c, q_a, q_sup, f_p, f_c, st,
                  ev_p, ev_c, ev_a, snip, sn_p, rates, n_out):  # pragma: no cover - compiled
    """Filter ``x`` and detect threshold crossings, emitting finished detections.

    Stops early (between two samples) when ``ST_ACTIVE`` is 0 and the noise
    buffer is full, or when an output buffer might overflow on the next
    sample; the caller handles that and calls again with the rest.

    Parameters
    ----------
    x : ndarray, shape (n_times, n_channels)
        New raw samples.
    sos, zi, last
        Band-pass sections (float32, ``(n_sections, 6)``; zero sections
        means no filtering), state ``(n_sections, 2, n_channels)`` and last
        finite input ``(n_channels,)``, as :func:`sosfilt_f32` (``zi`` is
        ``(2, n_sections, n_channels)``).
    ring : ndarray of float32, shape (L, n_channels)
        The last ``L`` filtered samples (sample count ``k`` at row ``k % L``).
    init_buf : ndarray of float32, shape (ceil(n_init / init_stride), n_channels)
        Every ``init_stride``-th filtered sample of the noise-initialisation period.
    init_stride, n_init : int
        Detection starts after ``n_init`` samples.
    noise : ndarray of float64, shape (n_channels,)
        Median of ``|filtered|`` per channel (the noise level times 0.6745);
        ``inf`` for a channel that never detects (flat during initialisation).
    thr : ndarray of float64, shape (n_channels,)
        Detection threshold ``k_thr * noise / 0.6745``, kept in step with ``noise``.
    k_thr : float
        Threshold in multiples of the noise level.
    up, down : float
        Multiplicative steps of the running median (``exp(+-eta)``).
    adapt : bool
        Track the median with those steps (else the noise level is frozen).
    sign : int
        SIGN_NEG, SIGN_POS or SIGN_BOTH.
    win : int
        Peak window in samples: the peak is the extremum of samples
        ``[crossing, crossing + win]``.
    refr : int
        Refractory period in samples after a peak.
    dedup : bool
        De-duplicate across neighbouring channels.
    dedup_s : int
        Two candidates within this many samples (peak to peak) on
        neighbouring channels compete; only the larger |amplitude| survives.
    neigh : ndarray of bool, shape (n_channels, n_channels)
        Neighbour matrix (including the diagonal).
    pre, post : int
        Snippet samples before and after the peak.
    bin_len : int
        Rate bin in samples (bins start when detection starts).
    bin_scale : float
        ``1 / bin_s``: counts to Hz.
    prev : ndarray of uint8, shape (n_channels,)
        Bit 0: previous sample below ``-thr``; bit 1: above ``+thr``.
    cross : ndarray of uint8, shape (n_channels,)
        Scratch: crossings of the current sample (same bits).
    plist : ndarray of int64, shape (n_channels,)
        Channels with an open peak window (``st[ST_NPEND]`` of them), in
        the order their windows opened.
    pend_end : ndarray of int64, shape (n_channels,)
        Sample count at which a pending peak window closes (-1: none).
    pk_idx, pk_val, pk_sign : ndarray, shape (n_channels,)
        The pending peak's sample count, value and sign (-1 or +1).
    quiet_until : ndarray of int64, shape (n_channels,)
        No crossing is accepted at counts ``<= quiet_until`` (refractory).
    counts : ndarray of int64, shape (n_channels,)
        Detections in the current rate bin.
    q_p, q_c, q_a, q_sup : ndarray, shape (q_cap,)
        Candidate queue: peak count, channel, amplitude, suppressed flag.
    f_p, f_c : ndarray of int64, shape (f_cap,)
        Circular FIFO of kept detections waiting for their snippet's last sample.
    st : ndarray of int64, shape (N_STATE,)
        Scalar state and counters (``ST_*`` slots).
    ev_p, ev_c, ev_a : ndarray, shape (ev_cap,)
        Output detections: peak sample count, channel, amplitude.
    snip : ndarray of float32, shape (sn_cap, pre + post + 1)
        Output snippets, one per detection, in the same order.
    sn_p : ndarray of int64, shape (sn_cap,)
        Peak sample count of each snippet.
    rates : ndarray of float64, shape (rt_cap, n_channels + 1)
        Output rate frames: per-channel rate and the total (MUA), in Hz.
    n_out : ndarray of int64, shape (3,)
        Rows written so far to ``ev_*``, ``snip`` and ``rates``; updated.

    Returns
    -------
    consumed : int
        Rows of ``x`` processed.

    Notes
    -----
    Threshold crossing with peak alignment as in Quiroga, Nadasdy &
    Ben-Shaul (2004) Neural Comput 16:1661 (threshold ``k * median(|x|) /
    0.6745``). The noise level tracks the running median of ``|x|`` by the
    stochastic-approximation quantile update ``m <- m * exp(+-eta)``
    (Robbins & Monro 1951). De-duplication keeps
    a candidate only when no neighbouring candidate within ``dedup_s``
    samples is larger, as SpikeInterface's ``locally_exclusive`` detector.
    A detection is final ``dedup_s + win`` samples after its peak.
    """
    n_times, n_ch = x.shape
    L = ring.shape[0]
    q_cap = q_p.shape[0]
    f_cap = f_p.shape[0]
    lag = win + (dedup_s if dedup else 0)
    count = st[ST_COUNT]
    active = st[ST_ACTIVE] != 0
    neg_bit = np.uint8(1 if sign != SIGN_POS else 0)
    pos_bit = np.uint8(1 if sign != SIGN_NEG else 0)
    kf = k_thr / 0.6745
    n_snip = pre + post + 1
    n = 0
    while n < n_times:
        if not active and count >= n_init:
            break
        if active and (n_out[0] + q_cap > ev_p.shape[0] or n_out[1] + f_cap > snip.shape[0]
                       or n_out[2] + 1 > rates.shape[0]):
            break
        row = ring[count % L]
        st[ST_BAD] += _filter_row(sos, x, n, zi, last, row)
        if not active:
            if count % init_stride == 0:
                k = count // init_stride
                for c in range(n_ch):
                    init_buf[k, c] = row[c]
            count += 1
            n += 1
            continue
        # -- every channel, branch-free (vectorised): noise level, threshold, crossings
        any_cross = np.uint8(0)
        for c in range(n_ch):
            y = row[c]
            t = thr[c]
            f = (np.uint8(y < -t) & neg_bit) | (np.uint8(y > t) & pos_bit) << np.uint8(1)
            if adapt:
                m = noise[c]
                m = m * up if abs(y) > m else m * down
                noise[c] = m
                thr[c] = kf * m
            x_new = f & ~prev[c]
            prev[c] = f
            cross[c] = x_new
            any_cross |= x_new
        # -- open peak windows: follow the extremum, close the due ones
        npend = st[ST_NPEND]
        if npend > 0:
            keep = 0
            for i in range(npend):
                c = plist[i]
                y = row[c]
                if (pk_sign[c] < 0 and y < pk_val[c]) or (pk_sign[c] > 0 and y > pk_val[c]):
                    pk_idx[c] = count
                    pk_val[c] = y
                if pend_end[c] == count:
                    _close(c, count, refr, pend_end, pk_idx, pk_val, quiet_until, dedup, dedup_s, neigh,
                           q_p, q_c, q_a, q_sup, st)
                else:
                    plist[keep] = c
                    keep += 1
            npend = keep
        # -- new crossings outside the refractory period
        if any_cross:
            for c in range(n_ch):
                if cross[c] and pend_end[c] < 0 and count > quiet_until[c]:
                    pk_idx[c] = count
                    pk_val[c] = row[c]
                    pk_sign[c] = -1 if cross[c] & 1 else 1
                    pend_end[c] = count + win
                    if win == 0:
                        _close(c, count, refr, pend_end, pk_idx, pk_val, quiet_until, dedup, dedup_s, neigh,
                               q_p, q_c, q_a, q_sup, st)
                    else:
                        plist[npend] = c
                        npend += 1
        st[ST_NPEND] = npend
        # -- finalise candidates whose competitors have all arrived
        qn = st[ST_QLEN]
        if qn > 0:
            keep = 0
            for i in range(qn):
                if q_p[i] + lag <= count:
                    if q_sup[i]:
                        st[ST_SUPPRESSED] += 1
                    else:
                        k = n_out[0]
                        ev_p[k] = q_p[i]
                        ev_c[k] = q_c[i]
                        ev_a[k] = q_a[i]
                        n_out[0] = k + 1
                        st[ST_KEPT] += 1
                        counts[q_c[i]] += 1
                        fl = st[ST_FLEN]
                        if fl < f_cap:
                            j = (st[ST_FHEAD] + fl) % f_cap
                            f_p[j] = q_p[i]
                            f_c[j] = q_c[i]
                            st[ST_FLEN] = fl + 1
                        else:  # cannot happen with the capacities of the node; keeps snippets aligned
                            st[ST_DROPPED] += 1
                            for j in range(n_snip):
                                snip[n_out[1], j] = np.nan
                            sn_p[n_out[1]] = q_p[i]
                            n_out[1] += 1
                else:
                    q_p[keep] = q_p[i]
                    q_c[keep] = q_c[i]
                    q_a[keep] = q_a[i]
                    q_sup[keep] = q_sup[i]
                    keep += 1
            st[ST_QLEN] = keep
        # -- snippets whose last sample has arrived
        while st[ST_FLEN] > 0:
            h = st[ST_FHEAD]
            p0 = f_p[h]
            if p0 + post > count:
                break
            c0 = f_c[h]
            k = n_out[1]
            for j in range(n_snip):
                snip[k, j] = ring[(p0 - pre + j) % L, c0]
            sn_p[k] = p0
            n_out[1] = k + 1
            st[ST_FHEAD] = (h + 1) % f_cap
            st[ST_FLEN] -= 1
        # -- rate frames
        if count == st[ST_NEXT_BIN]:
            k = n_out[2]
            total = 0
            for c in range(n_ch):
                total += counts[c]
                rates[k, c] = counts[c] * bin_scale
                counts[c] = 0
            rates[k, n_ch] = total * bin_scale
            n_out[2] = k + 1
            st[ST_NEXT_BIN] = count + bin_len
        count += 1
        n += 1
    st[ST_COUNT] = count
    return n

