"""Signal-quality flags per sample and channel: flat line, clipping, amplitude jumps, non-finite runs."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["FLAT", "CLIP", "JUMP", "NONFINITE", "FLAG_NAMES", "quality_flags"]

FLAT = 1
CLIP = 2
JUMP = 4
NONFINITE = 8
FLAG_NAMES = {FLAT: "flat", CLIP: "clip", JUMP: "jump", NONFINITE: "nonfinite"}
_BITS = (FLAT, CLIP, JUMP, NONFINITE)


@njit(cache=True, nogil=True)
def quality_flags(x, prev, run, hold, active, acc, state, flat_tol, flat_n, clip_level, jump_level, hold_n,
                  step, frames, ends, ev_index, ev_chan, ev_code, ev_on):  # pragma: no cover - compiled
    """Flag samples and emit one bitmask per channel per frame of ``step`` samples.

    Parameters
    ----------
    x : ndarray, shape (n_times, n_channels)
        New samples.
    prev : ndarray, shape (n_channels,)
        Last finite sample per channel (NaN before the first), updated in place.
    run : ndarray of int64, shape (n_channels,)
        Consecutive samples whose step from the previous finite sample was at
        most ``flat_tol``, updated in place.
    hold : ndarray of int64, shape (4, n_channels)
        Samples each flag stays raised after its condition was last seen.
    active : ndarray of int64, shape (4, n_channels)
        Whether each flag is raised (0/1), to report onsets and offsets.
    acc : ndarray of int64, shape (n_channels,)
        Bitmask of the flags raised so far in the current frame.
    state : ndarray of int64, shape (3,)
        ``[samples seen, sample count at the next frame end, frames emitted]``.
    flat_tol : float
        A step of at most this size (in the signal's unit) continues a flat run.
    flat_n : int
        Flat once that many consecutive steps were that small.
    clip_level : float
        Clipping when ``|x| >= clip_level`` (``inf``: off).
    jump_level : float
        A jump when a step exceeds it (``inf``: off).
    hold_n : int
        A flag stays raised this many samples after its condition ends.
    step : int
        Samples per frame.
    frames : ndarray of int64, shape (max_frames, n_channels)
        Bitmask per channel for each completed frame, from row 0.
    ends : ndarray of int64, shape (max_frames,)
        Sample count at the end of each emitted frame.
    ev_index, ev_chan, ev_code, ev_on : ndarray of int64, shape (max_events,)
        Flag changes: sample count (index since the start) at which a flag
        was raised (``ev_on == 1``) or cleared (0), its channel and bit.

    Returns
    -------
    n_frames, n_events : int
        ``n_events`` may exceed ``max_events``; only the first ones are stored.

    Notes
    -----
    Everything is decided sample by sample from carried state, so any split
    of the input gives the same flags, frames and events. A non-finite sample
    raises ``NONFINITE`` and neither extends nor breaks a flat run; steps are
    measured from the last finite sample.
    """
    n_times, n_ch = x.shape
    n_frames = 0
    n_ev = 0
    max_ev = ev_index.shape[0]
    for n in range(n_times):
        count = state[0]
        for c in range(n_ch):
            v = x[n, c]
            cond = 0
            if not np.isfinite(v):
                cond |= NONFINITE
            else:
                p = prev[c]
                if np.isfinite(p):
                    d = abs(v - p)
                    if d <= flat_tol:
                        run[c] += 1
                    else:
                        run[c] = 0
                    if d > jump_level:
                        cond |= JUMP
                if run[c] >= flat_n:
                    cond |= FLAT
                if abs(v) >= clip_level:
                    cond |= CLIP
                prev[c] = v
            for b in range(4):
                bit = 1 << b
                if cond & bit:
                    hold[b, c] = hold_n
                    on = 1
                elif hold[b, c] > 0:
                    hold[b, c] -= 1
                    on = 1
                else:
                    on = 0
                if on != active[b, c]:
                    active[b, c] = on
                    if n_ev < max_ev:
                        ev_index[n_ev] = count
                        ev_chan[n_ev] = c
                        ev_code[n_ev] = bit
                        ev_on[n_ev] = on
                    n_ev += 1
                if on:
                    acc[c] |= bit
        count += 1
        state[0] = count
        if count == state[1]:
            for c in range(n_ch):
                frames[n_frames, c] = acc[c]
                acc[c] = 0
            ends[n_frames] = count
            n_frames += 1
            state[1] = count + step
            state[2] += 1
    return n_frames, n_ev
