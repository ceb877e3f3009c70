"""Burst detection: a per-sample state machine on a band envelope, with a relative threshold."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "burst_detect",
    "EV_ONSET",
    "EV_OFFSET",
    "EV_TOO_LONG",
    "I_MODE",
    "I_START",
    "I_GAP",
    "I_NZC",
    "F_PEAK",
    "F_PREV",
    "F_ZC_FIRST",
    "F_ZC_LAST",
    "F_HI",
    "F_LO",
    "P_L",
    "P_SUB",
    "P_HN",
    "P_UPDATE",
    "P_WARM",
    "P_CALIBRATE",
    "P_MIN",
    "P_MAX",
    "P_GAP",
    "P_GD",
    "P_WC",
    "P_WR",
    "P_STEP",
    "P_DB",
    "Q_HI",
    "Q_LO",
    "Q_PCT",
    "Q_REL",
    "Q_CORR",
    "S_COUNT",
    "S_HIST",
    "S_FROZEN",
    "S_REPLACED",
    "S_ABOVE",
    "S_BURST",
    "N_COUNTERS",
    "C_ONSETS",
    "C_OFFSETS",
    "C_TOO_LONG",
    "C_SHORT",
    "C_CRITERIA",
]

#: Event kinds written to ``ev_i[:, 0]``.
EV_ONSET = 1
EV_OFFSET = 2
EV_TOO_LONG = 3

#: Columns of the per-channel integer state ``ist`` (shape (C, 4)).
I_MODE, I_START, I_GAP, I_NZC = 0, 1, 2, 3
#: Columns of the per-channel float state ``fst`` (shape (C, 6)).
F_PEAK, F_PREV, F_ZC_FIRST, F_ZC_LAST, F_HI, F_LO = 0, 1, 2, 3, 4, 5
#: Integer parameters ``ip``.
P_L, P_SUB, P_HN, P_UPDATE, P_WARM, P_CALIBRATE, P_MIN, P_MAX, P_GAP, P_GD, P_WC, P_WR, P_STEP, P_DB = range(14)
#: Float parameters ``fp``.
Q_HI, Q_LO, Q_PCT, Q_REL, Q_CORR = range(5)
#: Global state ``state`` (int64): samples seen, baseline values stored, thresholds frozen (calibration done),
#: non-finite inputs replaced, and the two frame flags (any channel above / in a burst since the last frame).
S_COUNT, S_HIST, S_FROZEN, S_REPLACED, S_ABOVE, S_BURST = range(6)
#: Counters ``counts``: onsets, offsets, bursts that outlasted the maximum, runs ended before the minimum duration,
#: runs long enough that ended without meeting the peak threshold or the co-criteria.
C_ONSETS, C_OFFSETS, C_TOO_LONG, C_SHORT, C_CRITERIA = range(5)
N_COUNTERS = 5

MODE_IDLE = 0
MODE_CANDIDATE = 1
MODE_BURST = 2
MODE_TOO_LONG = 3


@njit(inline="always", cache=True, nogil=True)
def _criteria(cring, c, k, W, wr, wc, rel_min, corr_min):  # pragma: no cover - compiled
    """Relative band power over the last ``wr`` samples and band/broad correlation over the last ``wc``."""
    if wr > 0:
        ps = 0.0
        pb = 0.0
        for j in range(wr):
            q = (k - j) % W
            s = cring[c, 0, q]
            b = cring[c, 1, q]
            ps += s * s
            pb += b * b
        if not (pb > 0.0 and ps >= rel_min * pb):
            return False
    if wc > 1:
        ss = 0.0
        sb = 0.0
        sss = 0.0
        sbb = 0.0
        ssb = 0.0
        for j in range(wc):
            q = (k - j) % W
            s = cring[c, 0, q]
            b = cring[c, 1, q]
            ss += s
            sb += b
            sss += s * s
            sbb += b * b
            ssb += s * b
        cov = ssb - ss * sb / wc
        vs = sss - ss * ss / wc
        vb = sbb - sb * sb / wc
        if not (vs > 0.0 and vb > 0.0 and cov >= corr_min * math.sqrt(vs * vb)):
            return False
    return True


@njit(cache=True, nogil=True)
def burst_detect(band, broad, h, ring, cring, hist, ist, fst, state, counts, ip, fp,
                 ev_i, ev_f, frames, ends):  # pragma: no cover - compiled
    """Detect bursts of a band-passed signal, sample by sample, carrying all state across calls.

    Parameters
    ----------
    band : ndarray, shape (n_times, C)
        The band-passed signal (e.g. 12-15 Hz), causal.
    broad : ndarray, shape (n_times, C)
        The broadband-passed signal (e.g. 1-30 Hz), causal; used by the co-criteria only.
    h : ndarray, shape (L,)
        FIR Hilbert transformer, ``L = 2 M + 1``, *time-reversed*.
    ring : ndarray, shape (C, 2, 2 R)
        The last ``R >= max(L, M + ip[P_DB] + 1)`` band and broad samples, each written twice
        (updated in place).
    cring : ndarray, shape (C, 2, W)
        The last ``W`` band and broad samples delayed by ``M`` (co-criteria windows), updated in place.
    hist : ndarray, shape (C, Hn)
        Envelope values kept for the baseline, one every ``ip[P_SUB]`` samples, a ring.
    ist : ndarray of int64, shape (C, 4)
        Per channel: mode (idle, candidate, burst, too long), run start (delayed sample
        count), samples below the lower threshold in the current gap, zero crossings.
    fst : ndarray, shape (C, 6)
        Per channel: peak envelope of the run, previous band sample, first and last
        upward zero crossing (fractional sample count), upper and lower thresholds
        (``inf`` until a baseline exists).
    state : ndarray of int64, shape (6,)
        Global state (see ``S_*``).
    counts : ndarray of int64, shape (N_COUNTERS,)
        Counters (see ``C_*``), updated in place.
    ip : ndarray of int64, shape (14,)
        ``L``, baseline subsampling, baseline length ``Hn``, threshold update period,
        baseline values needed before the first threshold, calibrate (1: thresholds
        computed once, when the baseline is first full), minimum and maximum duration,
        gap tolerated inside a burst, onset correction (filter group delay), correlation
        window, relative-power window (samples; 0 disables a co-criterion), frame step, and
        the delay of the broadband signal behind the band-passed one (the difference of
        their group delays at the band centre), so the co-criteria compare aligned samples.
    fp : ndarray, shape (5,)
        Upper and lower threshold factors (times the baseline statistic), the baseline
        percentile (50: the median), minimum relative band power, minimum correlation.
    ev_i : ndarray of int64, shape (max_events, 4)
        Events out: kind (``EV_*``), sample count at which it is known, channel, onset
        (delayed sample count, corrected by the group delay).
    ev_f : ndarray, shape (max_events, 3)
        Events out: duration in samples (for an onset: samples from the onset to now),
        peak envelope, frequency in Hz times ``1 / fs`` (cycles per sample; NaN if unknown).
    frames : ndarray, shape (max_frames, 2 C + 2)
        Feature rows out: envelope per channel, upper threshold per channel (NaN until
        known), then whether any channel was above its lower threshold and whether any
        was in a confirmed burst at any sample since the previous frame.
    ends : ndarray of int64, shape (max_frames,)
        Sample count at each frame.

    Returns
    -------
    n_events, n_frames : int

    Notes
    -----
    The envelope is the magnitude of the analytic signal (FIR Hilbert
    transformer, Oppenheim & Schafer sec. 12.4.3), delayed by ``M``. A run
    starts where the envelope reaches the lower threshold and ends where it
    stays below it for more than ``ip[P_GAP]`` samples. A run becomes a burst
    (onset event) at the first sample at which it has lasted the minimum
    duration, its peak has reached the upper threshold and the co-criteria
    hold over their trailing windows (relative sigma power and the
    correlation of the band-passed with the broadband signal, after
    Lacourse et al. 2018 and YASA's ``spindles_detect``, Vallat & Walker
    2021); it ends with an offset event, or with a too-long event once it
    outlasts the maximum. Thresholds are factors of a percentile of the
    envelope over the baseline window, recomputed every ``ip[P_UPDATE]``
    samples on the absolute count (running) or once (calibrated), so any
    split of the input gives identical events and frames.
    """
    n_times, C = band.shape
    L = ip[P_L]
    M = L // 2
    sub = ip[P_SUB]
    Hn = ip[P_HN]
    W = cring.shape[2]
    min_n = ip[P_MIN]
    max_n = ip[P_MAX]
    gap_n = ip[P_GAP]
    gd = ip[P_GD]
    wc = ip[P_WC]
    wr = ip[P_WR]
    step = ip[P_STEP]
    R = ring.shape[2] // 2
    Db = M + ip[P_DB]
    n_ev = 0
    n_fr = 0
    for n in range(n_times):
        k = state[S_COUNT]
        i = k - M  # the sample the envelope stands for
        valid = k >= R - 1
        p = k % R
        o = p + R - L + 1  # the oldest of the last L samples
        for c in range(C):
            s_new = band[n, c]
            b_new = broad[n, c]
            ring[c, 0, p] = s_new
            ring[c, 0, p + R] = s_new
            ring[c, 1, p] = b_new
            ring[c, 1, p + R] = b_new
            im = 0.0
            for j in range(L):
                im += h[j] * ring[c, 0, o + j]
            s = ring[c, 0, p + R - M]
            b = ring[c, 1, p + R - Db]
            env = math.sqrt(s * s + im * im)
            q = k % W
            cring[c, 0, q] = s
            cring[c, 1, q] = b
            # -- state machine on the delayed sample i
            mode = ist[c, I_MODE]
            above = valid and env >= fst[c, F_LO]
            if mode == MODE_IDLE:
                if above:
                    ist[c, I_MODE] = MODE_CANDIDATE
                    ist[c, I_START] = i
                    ist[c, I_GAP] = 0
                    ist[c, I_NZC] = 0
                    fst[c, F_PEAK] = env
                    mode = MODE_CANDIDATE
            else:
                if above:
                    ist[c, I_GAP] = 0
                    if env > fst[c, F_PEAK]:
                        fst[c, F_PEAK] = env
                    prev = fst[c, F_PREV]
                    if prev < 0.0 <= s:
                        t = (i - 1) + (-prev) / (s - prev)
                        if ist[c, I_NZC] == 0:
                            fst[c, F_ZC_FIRST] = t
                        fst[c, F_ZC_LAST] = t
                        ist[c, I_NZC] += 1
                else:
                    ist[c, I_GAP] += 1
                gap = ist[c, I_GAP]
                ended = gap > gap_n
                dur = i - ist[c, I_START] + 1 - gap
                start = ist[c, I_START]
                if mode == MODE_CANDIDATE:
                    if ended:
                        ist[c, I_MODE] = MODE_IDLE
                        if dur >= min_n:
                            counts[C_CRITERIA] += 1
                        else:
                            counts[C_SHORT] += 1
                    elif dur > max_n:
                        ist[c, I_MODE] = MODE_TOO_LONG
                        counts[C_TOO_LONG] += 1
                    elif (above and dur >= min_n and fst[c, F_PEAK] >= fst[c, F_HI]
                          and _criteria(cring, c, k, W, wr, wc, fp[Q_REL], fp[Q_CORR])):
                        ist[c, I_MODE] = MODE_BURST
                        counts[C_ONSETS] += 1
                        if n_ev < ev_i.shape[0]:
                            onset = start - gd
                            ev_i[n_ev, 0] = EV_ONSET
                            ev_i[n_ev, 1] = k
                            ev_i[n_ev, 2] = c
                            ev_i[n_ev, 3] = onset
                            ev_f[n_ev, 0] = k - onset
                            ev_f[n_ev, 1] = fst[c, F_PEAK]
                            ev_f[n_ev, 2] = np.nan
                            n_ev += 1
                elif mode == MODE_BURST:
                    if ended or dur > max_n:
                        nz = ist[c, I_NZC]
                        span = fst[c, F_ZC_LAST] - fst[c, F_ZC_FIRST]
                        if ended:
                            ist[c, I_MODE] = MODE_IDLE
                            counts[C_OFFSETS] += 1
                        else:
                            ist[c, I_MODE] = MODE_TOO_LONG
                            counts[C_TOO_LONG] += 1
                        if n_ev < ev_i.shape[0]:
                            ev_i[n_ev, 0] = EV_OFFSET if ended else EV_TOO_LONG
                            ev_i[n_ev, 1] = k
                            ev_i[n_ev, 2] = c
                            ev_i[n_ev, 3] = start - gd
                            ev_f[n_ev, 0] = dur
                            ev_f[n_ev, 1] = fst[c, F_PEAK]
                            ev_f[n_ev, 2] = (nz - 1) / span if nz >= 2 and span > 0.0 else np.nan
                            n_ev += 1
                elif ended:  # MODE_TOO_LONG: wait for the envelope to fall
                    ist[c, I_MODE] = MODE_IDLE
            mode = ist[c, I_MODE]
            if mode != MODE_IDLE:
                state[S_ABOVE] = 1
            if mode == MODE_BURST:
                state[S_BURST] = 1
            fst[c, F_PREV] = s
            if valid and k % sub == 0:
                hist[c, state[S_HIST] % Hn] = env
            if (k + 1) % step == 0 and n_fr < frames.shape[0]:
                frames[n_fr, c] = env
                frames[n_fr, C + c] = fst[c, F_HI] if math.isfinite(fst[c, F_HI]) else np.nan
        if valid and k % sub == 0:
            state[S_HIST] += 1
        # -- thresholds, on the absolute count
        nh = state[S_HIST]
        if (k + 1) % ip[P_UPDATE] == 0 and nh >= ip[P_WARM] and state[S_FROZEN] == 0:
            m = min(nh, Hn)
            if ip[P_CALIBRATE] == 0 or nh >= Hn:
                for c in range(C):
                    stat = np.percentile(hist[c, :m], fp[Q_PCT])
                    fst[c, F_HI] = fp[Q_HI] * stat
                    fst[c, F_LO] = fp[Q_LO] * stat
                if ip[P_CALIBRATE] != 0:
                    state[S_FROZEN] = 1
        if (k + 1) % step == 0:
            if n_fr < frames.shape[0]:
                frames[n_fr, 2 * C] = state[S_ABOVE]
                frames[n_fr, 2 * C + 1] = state[S_BURST]
                ends[n_fr] = k + 1
                n_fr += 1
            state[S_ABOVE] = 0
            state[S_BURST] = 0
        state[S_COUNT] = k + 1
    return n_ev, n_fr
