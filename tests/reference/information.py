"""Naive references for the information-theory estimators: every distance computed, no sorting, no search."""

from __future__ import annotations

import numpy as np


def ksg_counts(data: np.ndarray, k: int, spaces: list[list[int]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The k-th neighbour radius in the joint space (max norm) and each marginal space's strict counts, by brute force."""
    n = data.shape[0]
    eps = np.empty(n)
    counts = [np.zeros(n, np.int64) for _ in spaces]
    for i in range(n):
        d = np.abs(data - data[i]).max(axis=1)
        d[i] = np.inf
        eps[i] = np.sort(d)[k - 1]
        for c, cols in zip(counts, spaces, strict=True):
            dm = np.abs(data[:, cols] - data[i, cols]).max(axis=1)
            c[i] = int(np.sum(dm < eps[i])) - 1
    return eps, counts


def var1_transfer_entropy(a: float, b: float, c: float) -> float:
    """T_{Y->X} (nats, k = l = 1) of X_t = a X_{t-1} + c Y_{t-1} + e_t, Y_t = b Y_{t-1} + u_t, unit-variance
    independent Gaussian noises: 1/2 ln(Var(X_t | X_{t-1}) / Var(e)) from the stationary moments."""
    vy = 1.0 / (1.0 - b * b)
    gxy = c * b * vy / (1.0 - a * b)  # E[X_t Y_t]
    vx = (c * c * vy + 2.0 * a * c * gxy + 1.0) / (1.0 - a * a)
    cxx = a * vx + c * gxy  # E[X_t X_{t-1}]
    return 0.5 * np.log(vx - cxx * cxx / vx)


def var1(a: float, b: float, c: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(source Y, target X) of the VAR(1) above, after a burn-in."""
    rng = np.random.default_rng(seed)
    e, u = rng.standard_normal((2, n + 500))
    x, y = np.zeros(n + 500), np.zeros(n + 500)
    for t in range(1, n + 500):
        y[t] = b * y[t - 1] + u[t]
        x[t] = a * x[t - 1] + c * y[t - 1] + e[t]
    return y[500:], x[500:]
