"""Re-referencing: common average and neighbour (bipolar, Laplacian) derivations."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["common_average", "neighbor_reference"]


@njit(cache=True, nogil=True, fastmath=False)
def common_average(x, ref, rereference, out, counts):  # pragma: no cover - compiled
    """Subtract the mean of the finite reference channels, sample by sample.

    Parameters
    ----------
    x : ndarray, shape (n_times, n_channels)
        Input samples.
    ref : ndarray of int64, shape (n_ref,)
        Columns averaged into the reference.
    rereference : ndarray of bool, shape (n_channels,)
        Columns the reference is subtracted from; the others pass through.
    out : ndarray, shape (n_times, n_channels)
        Output buffer.
    counts : ndarray of int64, shape (2,)
        Incremented in place: ``[non-finite reference values left out,
        samples with no finite reference value]``.

    Notes
    -----
    The reference of each sample is the plain mean (sum in column order,
    then one division) of the reference columns that are finite in that
    sample, so a dead or saturated channel drops out of the average for
    exactly the samples it is bad. A sample without any finite reference
    value gives NaN in the re-referenced columns. A non-finite input stays
    non-finite in its own output column.
    """
    n_times, n_ch = x.shape
    n_ref = ref.shape[0]
    for n in range(n_times):
        s = 0.0
        k = 0
        for i in range(n_ref):
            v = x[n, ref[i]]
            if np.isfinite(v):
                s += v
                k += 1
        counts[0] += n_ref - k
        if k > 0:
            r = s / k
        else:
            r = np.nan
            counts[1] += 1
        for c in range(n_ch):
            if rereference[c]:
                out[n, c] = x[n, c] - r
            else:
                out[n, c] = x[n, c]


@njit(cache=True, nogil=True, fastmath=False)
def neighbor_reference(x, center, ptr, neighbors, out, counts):  # pragma: no cover - compiled
    """Each output is a channel minus the mean of its finite neighbours.

    Parameters
    ----------
    x : ndarray, shape (n_times, n_channels)
        Input samples.
    center : ndarray of int64, shape (n_out,)
        Column of ``x`` of each output channel.
    ptr : ndarray of int64, shape (n_out + 1,)
        Output ``o`` uses neighbours ``neighbors[ptr[o]:ptr[o + 1]]``
        (compressed sparse rows).
    neighbors : ndarray of int64, shape (ptr[-1],)
        Columns of ``x``.
    out : ndarray, shape (n_times, n_out)
        Output buffer.
    counts : ndarray of int64, shape (2,)
        Incremented in place: ``[non-finite neighbour values left out (once per use),
        output samples with no finite neighbour]``.

    Notes
    -----
    Bipolar derivations are the one-neighbour case (``A - B``); the
    Hjorth (1975) nearest-neighbour Laplacian the k-neighbour case. The
    mean is the sum in neighbour order divided once by the count.
    """
    n_times = x.shape[0]
    n_out = center.shape[0]
    for n in range(n_times):
        for o in range(n_out):
            s = 0.0
            k = 0
            for i in range(ptr[o], ptr[o + 1]):
                v = x[n, neighbors[i]]
                if np.isfinite(v):
                    s += v
                    k += 1
            m = ptr[o + 1] - ptr[o]
            counts[0] += m - k
            if k > 0:
                out[n, o] = x[n, center[o]] - s / k
            else:
                out[n, o] = np.nan
                counts[1] += 1
