"""Naive references for the population decoders: textbook loops, no tricks."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp
from scipy.stats import poisson


def kalman_naive(A, W, C, Q, Z, x0, P0):
    """Textbook covariance-form Kalman filter with ``np.linalg.inv`` of the innovation covariance.

    ``A, W`` (s, s), ``C`` (n, s), ``Q`` (n, n), ``Z`` (T, n), ``x0`` (s,), ``P0`` (s, s).
    A row of ``Z`` holding a NaN is skipped (predict only). Returns the states (T, s).
    """
    x = np.array(x0, dtype=float)
    P = np.array(P0, dtype=float)
    out = np.empty((len(Z), len(x)))
    for t, z in enumerate(Z):
        x = A @ x
        P = A @ P @ A.T + W
        if np.isfinite(z).all():
            S = C @ P @ C.T + Q
            K = P @ C.T @ np.linalg.inv(S)
            x = x + K @ (z - C @ x)
            P = (np.eye(len(x)) - K @ C) @ P
        out[t] = x
    return out


def kalman_augmented(dec, Z):
    """Run :func:`kalman_naive` on the augmented state ``[v, 1]`` of a KalmanDecoder."""
    d = dec.n_dims
    A = np.eye(d + 1)
    A[:d, :d] = dec.A
    W = np.zeros((d + 1, d + 1))
    W[:d, :d] = dec.W
    C = np.column_stack([dec.C, dec.c0])
    x0 = np.zeros(d + 1)
    x0[d] = 1.0
    out = kalman_naive(A, W, C, dec.Q, Z, x0, np.zeros((d + 1, d + 1)))
    assert np.all(out[:, d] == 1.0)
    return out[:, :d]


def ols_velocity(rates_train, vel_train, rates_test):
    """Ordinary least squares (no ridge) from rates (with intercept) to velocity."""
    X = np.column_stack([rates_train, np.ones(len(rates_train))])
    coef, *_ = np.linalg.lstsq(X, vel_train, rcond=None)
    return np.column_stack([rates_test, np.ones(len(rates_test))]) @ coef


def poisson_posterior_naive(counts, rates_hz, bin_s, log_prior):
    """Normalized log posterior over grid points with ``scipy.stats.poisson.logpmf``.

    ``counts`` (n_units,), ``rates_hz`` (n_units, n_grid), ``log_prior`` (n_grid,).
    """
    n_units, n_grid = rates_hz.shape
    lp = np.empty(n_grid)
    for g in range(n_grid):
        acc = log_prior[g]
        for i in range(n_units):
            acc += poisson.logpmf(counts[i], rates_hz[i, g] * bin_s)
        lp[g] = acc
    return lp - logsumexp(lp)
