"""IIR filtering in second-order sections with explicit state."""

from __future__ import annotations

from numba import njit

from .hold import held

__all__ = ["sosfilt_hold", "sosfilt_hold_decimate"]


@njit(inline="always", cache=True, nogil=True)
def _cascade(sos, zi, c, v):  # pragma: no cover - compiled
    """One sample of channel ``c`` through every section (transposed direct form II)."""
    for s in range(sos.shape[0]):
        y = sos[s, 0] * v + zi[s, 0, c]
        zi[s, 0, c] = sos[s, 1] * v - sos[s, 4] * y + zi[s, 1, c]
        zi[s, 1, c] = sos[s, 2] * v - sos[s, 5] * y
        v = y
    return v


@njit(cache=True, nogil=True, fastmath=False)
def sosfilt_hold(sos, x, zi, last, out):  # pragma: no cover - compiled
    """Filter ``x`` through cascaded biquads, carrying state across calls.

    Parameters
    ----------
    sos : ndarray, shape (n_sections, 6)
        Second-order sections ``[b0, b1, b2, a0, a1, a2]`` with ``a0 == 1``.
    x : ndarray, shape (n_times, n_channels)
        Input samples.
    zi : ndarray, shape (n_sections, 2, n_channels)
        Filter state, updated in place (scipy's layout for ``axis=0``).
    last : ndarray, shape (n_channels,)
        Last finite input sample per channel, updated in place. A NaN or
        infinite input is replaced by it, so one bad sample cannot poison
        the recursive state.
    out : ndarray, shape (n_times, n_channels)
        Output buffer (may be ``x`` itself).

    Returns
    -------
    n_bad : int
        Number of non-finite input values that were replaced.

    Notes
    -----
    Transposed direct form II per section, the same recursion and
    operation order as ``scipy.signal.sosfilt``; any split of the input
    gives the same output.
    """
    n_times, n_ch = x.shape
    n_bad = 0
    for n in range(n_times):
        for c in range(n_ch):
            v, bad = held(x[n, c], last, c)
            n_bad += bad
            v = _cascade(sos, zi, c, v)
            out[n, c] = v
    return n_bad


@njit(cache=True, nogil=True, fastmath=False)
def sosfilt_hold_decimate(sos, x, zi, last, q, phase, out):  # pragma: no cover - compiled
    """Filter like :func:`sosfilt_hold` but store only every ``q``-th output.

    Parameters
    ----------
    sos : ndarray, shape (n_sections, 6)
        Second-order sections ``[b0, b1, b2, a0, a1, a2]`` with ``a0 == 1``.
    x : ndarray, shape (n_times, n_channels)
        Input samples.
    zi : ndarray, shape (n_sections, 2, n_channels)
        Filter state, updated in place (scipy's layout for ``axis=0``).
    last : ndarray, shape (n_channels,)
        Last finite input sample per channel, updated in place; a NaN or
        infinite input is replaced by it.
    q : int
        Keep one output row in ``q``.
    phase : int
        Row of ``x`` of the first kept output (``0 <= phase``); rows
        ``phase, phase + q, ...`` are kept.
    out : ndarray, shape (n_kept, n_channels)
        Kept outputs, ``n_kept = len(range(phase, n_times, q))``.

    Returns
    -------
    n_bad : int
        Number of non-finite input values that were replaced.

    Notes
    -----
    The recursion runs on every input sample (an IIR filter cannot skip
    any), with the same operations in the same order as
    :func:`sosfilt_hold`, so the kept rows are bit-identical to
    ``sosfilt_hold(...)[phase::q]``.
    """
    n_times, n_ch = x.shape
    n_bad = 0
    keep = phase
    j = 0
    for n in range(n_times):
        store = n == keep
        for c in range(n_ch):
            v, bad = held(x[n, c], last, c)
            n_bad += bad
            v = _cascade(sos, zi, c, v)
            if store:
                out[j, c] = v
        if store:
            keep += q
            j += 1
    return n_bad
