"""Nearest-neighbour kernels of the Kraskov-Stoegbauer-Grassberger estimators.

Distances are in the maximum norm (Kraskov, Stoegbauer & Grassberger 2004,
Phys. Rev. E 69, 066138, their algorithm 1). The k-th neighbour of a point
in two or more dimensions is found by a box-assisted search (a grid on two
coordinates, rings of cells visited outwards until no unvisited cell can
hold a closer point; Grassberger 1990); in one dimension, and for the
counts within a radius, the points are sorted by one coordinate and each
search walks outwards in that order, stopping when the gap in that
coordinate alone reaches the radius (a sweep). Every distance is compared
exactly as the radius was computed, so the results are those of a
brute-force search (tests compare them with one)."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["knn_radius", "count_within", "digamma_table"]


@njit(cache=True, nogil=True)
def _maxnorm(data: np.ndarray, i: int, j: int, cols: np.ndarray) -> float:
    d = 0.0
    for c in cols:
        v = abs(data[i, c] - data[j, c])
        if v > d:
            d = v
    return d


@njit(cache=True, nogil=True)
def _insert(best: np.ndarray, m: int, k: int, d: float) -> int:
    """Keep the ``k`` smallest distances in ``best[:m]`` (ascending); returns the new ``m``."""
    if m < k:
        p = m
        m += 1
    elif d < best[k - 1]:
        p = k - 1
    else:
        return m
    while p > 0 and best[p - 1] > d:
        best[p] = best[p - 1]
        p -= 1
    best[p] = d
    return m


@njit(cache=True, nogil=True)
def _edges(v: np.ndarray, m: int) -> np.ndarray:
    """Cell edges at the quantiles of ``v``: cell ``q`` holds ``edges[q] <= v < edges[q + 1]`` (the last one open)."""
    s = np.sort(v)
    n = s.shape[0]
    e = np.empty(m + 1)
    for q in range(m):
        e[q] = s[(q * n) // m]
    e[0] = -np.inf
    e[m] = np.inf
    return e


@njit(cache=True, nogil=True)
def _knn_grid(data: np.ndarray, cols: np.ndarray, k: int) -> np.ndarray:
    """The k-th neighbour distance by a box-assisted search: a grid on the first two coordinates with edges at
    their quantiles (about two points a cell on average), rings of cells visited outwards until the k-th distance
    found is no larger than the distance to any cell not yet visited (Grassberger 1990; Kraskov et al. 2004
    use boxes too). A bound is ``|edge - x_i|`` computed as the distances are, so the result is exact."""
    n = data.shape[0]
    c0 = cols[0]
    c1 = cols[1]
    m = max(1, min(n, int(np.sqrt(n / 2.0))))
    ex = _edges(data[:, c0].copy(), m)
    ey = _edges(data[:, c1].copy(), m)
    cx = np.empty(n, np.int64)
    cy = np.empty(n, np.int64)
    start = np.zeros(m * m + 1, np.int64)
    for i in range(n):
        cx[i] = min(max(np.searchsorted(ex, data[i, c0], side="right") - 1, 0), m - 1)
        cy[i] = min(max(np.searchsorted(ey, data[i, c1], side="right") - 1, 0), m - 1)
        start[cx[i] * m + cy[i] + 1] += 1
    for c in range(m * m):
        start[c + 1] += start[c]
    fill = start[:-1].copy()
    members = np.empty(n, np.int64)
    for i in range(n):
        c = cx[i] * m + cy[i]
        members[fill[c]] = i
        fill[c] += 1
    out = np.empty(n)
    best = np.empty(k)
    for i in range(n):
        got = 0
        r = 0
        xi = data[i, c0]
        yi = data[i, c1]
        while True:
            for gx in range(max(cx[i] - r, 0), min(cx[i] + r, m - 1) + 1):
                on_x = gx == cx[i] - r or gx == cx[i] + r
                for gy in range(max(cy[i] - r, 0), min(cy[i] + r, m - 1) + 1):
                    if not on_x and gy != cy[i] - r and gy != cy[i] + r:
                        continue  # inside the ring: visited already
                    c = gx * m + gy
                    for q in range(start[c], start[c + 1]):
                        j = members[q]
                        if j != i:
                            got = _insert(best, got, k, _maxnorm(data, i, j, cols))
            # the cells not visited hold points at least this far in one coordinate
            bound = np.inf
            if cx[i] - r > 0:
                bound = min(bound, abs(ex[cx[i] - r] - xi))
            if cx[i] + r + 1 < m:
                bound = min(bound, abs(ex[cx[i] + r + 1] - xi))
            if cy[i] - r > 0:
                bound = min(bound, abs(ey[cy[i] - r] - yi))
            if cy[i] + r + 1 < m:
                bound = min(bound, abs(ey[cy[i] + r + 1] - yi))
            if got == k and best[k - 1] <= bound:
                break
            if cx[i] - r <= 0 and cx[i] + r >= m - 1 and cy[i] - r <= 0 and cy[i] + r >= m - 1:
                break  # every cell visited
            r += 1
        out[i] = best[k - 1]
    return out


@njit(cache=True, nogil=True)
def knn_radius(data: np.ndarray, cols: np.ndarray, order: np.ndarray, k: int) -> np.ndarray:
    """Distance (max norm over ``cols``) from each point to its ``k``-th nearest other point.

    ``order`` sorts the points by column ``cols[0]`` (used in one dimension; two or more use the grid).
    """
    if cols.shape[0] >= 2:
        return _knn_grid(data, cols, k)
    n = data.shape[0]
    out = np.empty(n)
    pos = np.empty(n, np.int64)
    for r in range(n):
        pos[order[r]] = r
    best = np.empty(k)
    first = cols[0]
    for i in range(n):
        m = 0  # candidates held, best[0..m) kept sorted ascending
        lo = pos[i] - 1
        hi = pos[i] + 1
        xi = data[i, first]
        while lo >= 0 or hi < n:
            # the nearer side in the first coordinate next
            gl = xi - data[order[lo], first] if lo >= 0 else np.inf
            gh = data[order[hi], first] - xi if hi < n else np.inf
            if gl <= gh:
                j = order[lo]
                gap = gl
                lo -= 1
            else:
                j = order[hi]
                gap = gh
                hi += 1
            if m == k and gap >= best[k - 1]:
                break  # every point further out is at least this far
            m = _insert(best, m, k, _maxnorm(data, i, j, cols))
        out[i] = best[k - 1]
    return out


@njit(cache=True, nogil=True)
def _window(xs: np.ndarray, xi: float, eps: float) -> tuple:
    """The sorted positions ``[lo, hi)`` of the values with ``|x - xi| < eps``, compared as the distances
    are computed (a binary search on ``xi -/+ eps`` can be one value off: the rounding differs)."""
    n = xs.shape[0]
    lo = np.searchsorted(xs, xi - eps, side="left")
    while lo < n and xs[lo] < xi and abs(xs[lo] - xi) >= eps:
        lo += 1
    while lo > 0 and abs(xs[lo - 1] - xi) < eps:
        lo -= 1
    hi = np.searchsorted(xs, xi + eps, side="right")
    while hi > 0 and xs[hi - 1] > xi and abs(xs[hi - 1] - xi) >= eps:
        hi -= 1
    while hi < n and abs(xs[hi] - xi) < eps:
        hi += 1
    return lo, hi


@njit(cache=True, nogil=True)
def count_within(data: np.ndarray, cols: np.ndarray, order: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """For each point ``i``, how many other points lie strictly closer than ``radius[i]`` (max norm over ``cols``).

    ``order`` sorts the points by column ``cols[0]``.
    """
    n = data.shape[0]
    first = cols[0]
    xs = np.empty(n)
    for r in range(n):
        xs[r] = data[order[r], first]
    out = np.zeros(n, np.int64)
    single = cols.shape[0] == 1
    for i in range(n):
        eps = radius[i]
        a, b = _window(xs, data[i, first], eps)
        if single:
            out[i] = b - a - 1  # minus the point itself
            continue
        c = 0
        for r in range(a, b):
            j = order[r]
            if j != i and _maxnorm(data, i, j, cols) < eps:
                c += 1
        out[i] = c
    return out


def digamma_table(n: int) -> np.ndarray:
    """``psi(m)`` for ``m = 0..n`` (``psi(0)`` is ``-inf``): ``-gamma + sum_{j<m} 1/j``."""
    out = np.empty(n + 1)
    out[0] = -np.inf
    out[1:] = -np.euler_gamma + np.concatenate(([0.0], np.cumsum(1.0 / np.arange(1, n, dtype=float))))
    return out
