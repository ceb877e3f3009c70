"""FIR filtering by direct convolution with explicit state."""

from __future__ import annotations

from numba import njit

from .hold import held

__all__ = ["fir_hold"]


@njit(cache=True, nogil=True, fastmath=False)
def fir_hold(taps, x, work, last, q, phase, out):  # pragma: no cover - compiled
    """Causal FIR filter (optionally decimating), carrying history across calls.

    Parameters
    ----------
    taps : ndarray, shape (n_taps,)
        Impulse response ``h``; ``y[n] = sum_k h[k] x[n - k]``.
    x : ndarray, shape (n_times, n_channels)
        Input samples.
    work : ndarray, shape (n_taps - 1 + capacity, n_channels)
        Rows ``[0, n_taps - 1)`` hold the last ``n_taps - 1`` input samples
        (oldest first) and are updated in place; the rest is scratch, with
        ``capacity >= n_times``.
    last : ndarray, shape (n_channels,)
        Last finite input sample per channel, updated in place. A NaN or
        infinite input is replaced by it (and so enters the history held).
    q : int
        Compute one output row in ``q`` (1: every row).
    phase : int
        Row of ``x`` of the first output computed (``0 <= phase``).
    out : ndarray, shape (n_out, n_channels)
        Outputs for rows ``phase, phase + q, ...`` of ``x``,
        ``n_out = len(range(phase, n_times, q))``.

    Returns
    -------
    n_bad : int
        Number of non-finite input values that were replaced.

    Notes
    -----
    Direct-form convolution, summed over taps in order ``k = 0 .. n_taps - 1``
    with the channels innermost, so every output is the same sum of the same
    products whatever the chunking: any split of the input gives
    bit-identical output. Equals ``scipy.signal.lfilter(taps, 1, x, axis=0)``
    with the matching initial state up to rounding (lfilter sums in its
    transposed form, in another order). Skipping the rows that a decimator
    drops saves a factor ``q`` (as ``scipy.signal.upfirdn``).
    """
    n_times, n_ch = x.shape
    n_taps = taps.shape[0]
    hist = n_taps - 1
    n_bad = 0
    for n in range(n_times):
        for c in range(n_ch):
            v, bad = held(x[n, c], last, c)
            n_bad += bad
            work[hist + n, c] = v
    for j, n in enumerate(range(phase, n_times, q)):
        newest = hist + n
        for c in range(n_ch):
            out[j, c] = 0.0
        for k in range(n_taps):
            h = taps[k]
            row = newest - k
            for c in range(n_ch):
                out[j, c] += h * work[row, c]
    for i in range(hist):
        for c in range(n_ch):
            work[i, c] = work[n_times + i, c]
    return n_bad
