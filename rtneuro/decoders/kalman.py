"""Velocity Kalman filter decoder with closed-loop decoder adaptation (CLDA).

The state is the velocity plus a constant, ``x = [v_1, ..., v_d, 1]`` (``d``
is usually 2): as in the ReFIT Kalman filter of Gilja et al. (2012), the
cursor position is integrated from the decoded velocity outside the filter,
so the decoder never fights the cursor the user sees. The constant absorbs
the baseline rates: internally the filter runs on the ``d`` velocity
components with the observation ``z - c0``, which is the same filter as the
augmented one whose constant component has zero variance.

Each step (:func:`kalman_step`) is a predict and an information-form update,
with ``H = C^T Q^-1 C`` and ``G = C^T Q^-1`` precomputed, so a step costs
``O(n_units * d)`` plus one ``d x d`` solve, never an ``n_units x n_units``
inverse. :func:`kalman_step_steady` applies the steady-state gain instead.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.linalg
from numba import njit
from numpy.typing import ArrayLike, NDArray

from rtneuro.errors import ConfigError, did_you_mean

from .io import ArrayFile, checked, require, require_arrays
from .linear import training_hash

__all__ = [
    "AdaptRecord",
    "CLDAParams",
    "KalmanDecoder",
    "intended_velocity",
    "kalman_run",
    "kalman_step",
    "kalman_step_steady",
]

logger = logging.getLogger(__name__)

_FORMAT = "rtneuro.kalman_decoder"
_ARRAYS = ("A", "W", "C", "c0", "Q")
_GAINS = ("adaptive", "steady")


# --------------------------------------------------------------------------- kernels


@njit(inline="always", cache=True, nogil=True)
def _step(A, W, H, G, g0, z, x, P, xm, Pm, aug):  # pragma: no cover - compiled
    d = x.shape[0]
    n = z.shape[0]
    finite = True
    for i in range(n):
        if not math.isfinite(z[i]):
            finite = False
            break
    # predict: xm = A x, Pm = A P A^T + W (aug[:, :d] holds A P)
    for r in range(d):
        acc = 0.0
        for c in range(d):
            acc += A[r, c] * x[c]
        xm[r] = acc
        for c in range(d):
            acc = 0.0
            for k in range(d):
                acc += A[r, k] * P[k, c]
            aug[r, c] = acc
    for r in range(d):
        for c in range(d):
            acc = 0.0
            for k in range(d):
                acc += aug[r, k] * A[c, k]
            Pm[r, c] = acc + W[r, c]
    if not finite:
        for r in range(d):
            x[r] = xm[r]
            for c in range(d):
                P[r, c] = Pm[r, c]
        return -1
    # information residual r = G z - g0 - H xm, kept in x for now
    for r in range(d):
        acc = 0.0
        for i in range(n):
            acc += G[r, i] * z[i]
        acc -= g0[r]
        for c in range(d):
            acc -= H[r, c] * xm[c]
        x[r] = acc
    # P+ = (I + Pm H)^-1 Pm by Gauss-Jordan with partial pivoting on [I + Pm H | Pm]
    for r in range(d):
        for c in range(d):
            acc = 1.0 if r == c else 0.0
            for k in range(d):
                acc += Pm[r, k] * H[k, c]
            aug[r, c] = acc
            aug[r, d + c] = Pm[r, c]
    w = 2 * d
    for col in range(d):
        piv = col
        best = abs(aug[col, col])
        for r in range(col + 1, d):
            if abs(aug[r, col]) > best:
                best = abs(aug[r, col])
                piv = r
        if piv != col:
            for c in range(w):
                tmp = aug[col, c]
                aug[col, c] = aug[piv, c]
                aug[piv, c] = tmp
        inv = 1.0 / aug[col, col]
        for c in range(w):
            aug[col, c] *= inv
        for r in range(d):
            if r != col:
                f = aug[r, col]
                if f != 0.0:
                    for c in range(w):
                        aug[r, c] -= f * aug[col, c]
    # x+ = xm + P+ r ; P = sym(P+)
    for r in range(d):
        acc = xm[r]
        for c in range(d):
            acc += aug[r, d + c] * x[c]
        Pm[r, 0] = acc  # Pm no longer needed: borrow its first column
    for r in range(d):
        x[r] = Pm[r, 0]
        for c in range(d):
            P[r, c] = 0.5 * (aug[r, d + c] + aug[c, d + r])
    return 0


@njit(cache=True, nogil=True)
def kalman_step(A, W, H, G, g0, z, x, P, xm, Pm, aug):  # pragma: no cover - compiled
    """One predict + information-form update of the velocity Kalman filter, in place.

    Parameters
    ----------
    A, W : ndarray, shape (d, d)
        State transition and process noise covariance.
    H : ndarray, shape (d, d)
        ``C^T Q^-1 C``.
    G : ndarray, shape (d, n_units)
        ``C^T Q^-1``.
    g0 : ndarray, shape (d,)
        ``G @ c0`` (the baseline rates seen through ``G``).
    z : ndarray, shape (n_units,)
        Observation (binned rates or counts).
    x : ndarray, shape (d,)
        State, updated in place.
    P : ndarray, shape (d, d)
        State covariance, updated in place.
    xm, Pm, aug : ndarray, shapes (d,), (d, d), (d, 2 d)
        Workspace.

    Returns
    -------
    status : int
        0 after a full update, -1 when ``z`` was not finite (predict only).

    Notes
    -----
    Predict ``x- = A x``, ``P- = A P A^T + W``; update in information form
    ``P+ = (P-^-1 + H)^-1 = (I + P- H)^-1 P-`` and
    ``x+ = x- + P+ (G z - g0 - H x-)``, which equals the covariance form with
    gain ``K = P- C^T (C P- C^T + Q)^-1`` (Wu et al. 2006, Neural Comput
    18:80, eqs. 4-8) and needs no ``n_units x n_units`` inverse.
    """
    return _step(A, W, H, G, g0, z, x, P, xm, Pm, aug)


@njit(inline="always", cache=True, nogil=True)
def _step_steady(A, M, K, k0, z, x, xm):  # pragma: no cover - compiled
    d = x.shape[0]
    n = z.shape[0]
    finite = True
    for i in range(n):
        if not math.isfinite(z[i]):
            finite = False
            break
    if not finite:
        for r in range(d):
            acc = 0.0
            for c in range(d):
                acc += A[r, c] * x[c]
            xm[r] = acc
        for r in range(d):
            x[r] = xm[r]
        return -1
    for r in range(d):
        acc = -k0[r]
        for c in range(d):
            acc += M[r, c] * x[c]
        for i in range(n):
            acc += K[r, i] * z[i]
        xm[r] = acc
    for r in range(d):
        x[r] = xm[r]
    return 0


@njit(cache=True, nogil=True)
def kalman_step_steady(A, M, K, k0, z, x, xm):  # pragma: no cover - compiled
    """One step of the steady-state Kalman filter, in place.

    Parameters
    ----------
    A : ndarray, shape (d, d)
        State transition (used alone when ``z`` is not finite).
    M : ndarray, shape (d, d)
        ``(I - K C) A``.
    K : ndarray, shape (d, n_units)
        Steady-state gain.
    k0 : ndarray, shape (d,)
        ``K @ c0``.
    z : ndarray, shape (n_units,)
        Observation.
    x : ndarray, shape (d,)
        State, updated in place.
    xm : ndarray, shape (d,)
        Workspace.

    Returns
    -------
    status : int
        0 after an update, -1 when ``z`` was not finite (``x <- A x`` only).

    Notes
    -----
    ``x <- (I - K C) A x + K (z - c0)`` with the gain the Riccati recursion
    converges to (Malik et al. 2011 IEEE TNSRE 19:25: steady-state Kalman
    filter for BMIs).
    """
    return _step_steady(A, M, K, k0, z, x, xm)


@njit(cache=True, nogil=True)
def kalman_run(
    A, W, H, G, g0, M, K, k0, steady, Z, x, P, xm, Pm, aug, out, status
):  # pragma: no cover - compiled
    """Run the filter over the rows of ``Z`` from state ``(x, P)``.

    ``out[i]`` is the state after row ``i`` and ``status[i]`` its status;
    bit-identical to calling :func:`kalman_step` (or
    :func:`kalman_step_steady` when ``steady``) row by row.
    """
    for i in range(Z.shape[0]):
        if steady:
            status[i] = _step_steady(A, M, K, k0, Z[i], x, xm)
        else:
            status[i] = _step(A, W, H, G, g0, Z[i], x, P, xm, Pm, aug)
        for r in range(x.shape[0]):
            out[i, r] = x[r]


# --------------------------------------------------------------------------- fitting helpers


def _lstsq_obs(kin: NDArray[np.float64], Z: NDArray[np.float64]) -> tuple[Any, Any, Any]:
    """Least squares ``Z ~ kin C^T + c0``; returns C (n, d), c0 (n,), residuals (T, n)."""
    X = np.column_stack([kin, np.ones(len(kin))])
    coef, *_ = np.linalg.lstsq(X, Z, rcond=None)
    res = Z - X @ coef
    return np.ascontiguousarray(coef[:-1].T), np.ascontiguousarray(coef[-1]), res


def _floor_cov(Q: NDArray[np.float64], q_floor: float) -> NDArray[np.float64]:
    """Symmetrize and floor the diagonal at ``q_floor`` times its mean (silent units)."""
    Q = 0.5 * (Q + Q.T)
    diag = np.diag(Q)
    floor = max(q_floor * float(diag.mean()), 1e-12)
    Q[np.diag_indices_from(Q)] = np.maximum(diag, floor)
    return Q


def intended_velocity(
    decoded: NDArray[np.float64],
    position: NDArray[np.float64],
    target: NDArray[np.float64],
    target_radius: float,
) -> NDArray[np.float64]:
    """Intention estimate: the decoded speed, pointed at the target (zero on target).

    Parameters
    ----------
    decoded : ndarray, shape (n_bins, d)
        Decoded velocities.
    position, target : ndarray, shape (n_bins, d)
        Cursor and target positions.
    target_radius : float
        Within this distance of the target the intended velocity is zero.

    Returns
    -------
    intended : ndarray, shape (n_bins, d)

    Notes
    -----
    The ReFIT innovation of Gilja et al. (2012) Nat Neurosci 15:1752.
    """
    to_target = target - position
    dist = np.linalg.norm(to_target, axis=1)
    speed = np.linalg.norm(decoded, axis=1)
    on = dist <= target_radius
    scale = np.where(on, 0.0, speed / np.where(on, 1.0, dist))
    return to_target * scale[:, None]


@dataclass(frozen=True, slots=True, kw_only=True)
class CLDAParams:
    """Bounds and pace of :meth:`KalmanDecoder.adapt`.

    Parameters
    ----------
    half_life_s : float
        Half-life (s) of the old decoder in the SmoothBatch blend:
        ``alpha = 0.5 ** (batch_s / half_life_s)``.
    alpha_floor : float
        Lower bound of ``alpha`` (the old decoder always keeps this weight).
    max_change : float
        Largest accepted relative change ``||C_new - C_old||_F / ||C_old||_F``
        of the blended observation matrix; a batch above it is rejected.
    min_bins : int
        Batches with fewer bins are rejected.
    target_radius : float
        Intended velocity is zero within this distance of the target.
    q_floor : float
        Diagonal floor of the refitted ``Q`` relative to its mean.
    """

    half_life_s: float = 60.0
    alpha_floor: float = 0.5
    max_change: float = 0.5
    min_bins: int = 50
    target_radius: float = 0.0
    q_floor: float = 1e-2

    def __post_init__(self) -> None:
        if not self.half_life_s > 0:
            raise ConfigError(f"half_life_s must be > 0, got {self.half_life_s}")
        if not 0.0 <= self.alpha_floor < 1.0:
            raise ConfigError(f"alpha_floor must be in [0, 1), got {self.alpha_floor}")
        if not self.max_change > 0:
            raise ConfigError(f"max_change must be > 0, got {self.max_change}")
        if self.min_bins < 2:
            raise ConfigError(f"min_bins must be >= 2, got {self.min_bins}")
        if not self.target_radius >= 0:
            raise ConfigError(f"target_radius must be >= 0, got {self.target_radius}")


@dataclass(frozen=True, slots=True)
class AdaptRecord:
    """What one :meth:`KalmanDecoder.adapt` call did (publishable with :meth:`to_dict`).

    Attributes
    ----------
    accepted : bool
        Whether the decoder was changed.
    reason : str
        ``"ok"``, ``"too_short"``, ``"non_finite"``, ``"too_large"`` or ``"singular"``.
    rel_change : float
        Relative Frobenius change of ``C`` the batch would make (NaN if not computed).
    n_bins : int
        Batch size.
    r2 : float
        Variance of the rates explained by the batch refit (NaN if not computed).
    alpha : float
        Weight of the old decoder in the blend.
    """

    accepted: bool
    reason: str
    rel_change: float
    n_bins: int
    r2: float
    alpha: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)


# --------------------------------------------------------------------------- decoder


class KalmanDecoder(ArrayFile):
    """Velocity Kalman filter ``x = [v, 1]``, ``z = C x + q``, with CLDA.

    Parameters
    ----------
    A : ndarray, shape (d, d)
        Velocity transition matrix.
    W : ndarray, shape (d, d)
        Process noise covariance (symmetric positive semi-definite).
    C : ndarray, shape (n_units, d)
        Observation matrix (rates per unit of velocity).
    c0 : ndarray, shape (n_units,)
        Baseline rates (the observation column of the constant state).
    Q : ndarray, shape (n_units, n_units)
        Observation noise covariance (symmetric positive definite).
    bin_s : float
        Bin width (s) of the observations.
    gain : {"adaptive", "steady"}
        Full covariance recursion per step, or the precomputed steady-state gain.
    train_hash : str | None
        Hash of the training data.
    riccati_tol : float
        Relative tolerance at which the Riccati recursion counts as converged.

    Notes
    -----
    Wu, Gao, Bienenstock, Donoghue & Black (2006) Neural Comput 18:80 (the
    Kalman filter for motor cortical decoding, least-squares fit); Gilja et
    al. (2012) Nat Neurosci 15:1752 (velocity state with a constant, ReFIT
    intention estimation); Orsborn et al. (2012) IEEE TNSRE 20:468
    (SmoothBatch CLDA). Observations are in whatever units ``fit`` was given
    (counts per bin or Hz); the same units must be fed online.
    """

    def __init__(
        self,
        *,
        A: ArrayLike,
        W: ArrayLike,
        C: ArrayLike,
        c0: ArrayLike,
        Q: ArrayLike,
        bin_s: float,
        gain: str = "adaptive",
        train_hash: str | None = None,
        riccati_tol: float = 1e-12,
    ) -> None:
        if gain not in _GAINS:
            raise ConfigError(f"gain={gain!r} is not one of {list(_GAINS)}{did_you_mean(gain, _GAINS)}")
        if not (isinstance(bin_s, int | float) and math.isfinite(bin_s) and bin_s > 0):
            raise ConfigError(f"bin_s must be a finite number > 0, got {bin_s!r}")
        a = np.ascontiguousarray(A, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 1:
            raise ConfigError(f"A must have shape (d, d), got {a.shape}")
        d = a.shape[0]
        c = np.ascontiguousarray(C, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] != d or c.shape[0] < 1:
            raise ConfigError(f"C must have shape (n_units, {d}), got {c.shape}")
        n = c.shape[0]
        w = np.ascontiguousarray(W, dtype=np.float64)
        if w.shape != (d, d):
            raise ConfigError(f"W must have shape ({d}, {d}), got {w.shape}")
        b = np.ascontiguousarray(c0, dtype=np.float64)
        if b.shape != (n,):
            raise ConfigError(f"c0 must have shape ({n},), got {b.shape}")
        q = np.ascontiguousarray(Q, dtype=np.float64)
        if q.shape != (n, n):
            raise ConfigError(f"Q must have shape ({n}, {n}), got {q.shape}")
        for name, arr in (("A", a), ("W", w), ("C", c), ("c0", b), ("Q", q)):
            if not np.isfinite(arr).all():
                raise ConfigError(f"{name} contains NaN or infinite values")
        if not np.allclose(w, w.T, rtol=1e-10, atol=1e-14):
            raise ConfigError("W must be symmetric")
        if np.linalg.eigvalsh(w).min() < -1e-12 * max(1.0, float(np.abs(w).max())):
            raise ConfigError("W must be positive semi-definite")
        if not np.allclose(q, q.T, rtol=1e-10, atol=1e-14):
            raise ConfigError("Q must be symmetric")
        self.A, self.W, self.C, self.c0, self.Q = a, w, c, b, q
        self.bin_s = float(bin_s)
        self.gain = gain
        self.train_hash = train_hash
        self.riccati_tol = float(riccati_tol)
        self.n_skipped = 0
        self.n_adapt_accepted = 0
        self.n_adapt_rejected = 0
        self._precompute()
        self._xm = np.zeros(d)
        self._Pm = np.zeros((d, d))
        self._aug = np.zeros((d, 2 * d))

    # ---------------------------------------------------------------- derived arrays

    def _precompute(self) -> None:
        """``H``, ``G``, ``g0`` and the steady-state gain from ``C``, ``c0``, ``Q``."""
        try:
            cho = scipy.linalg.cho_factor(self.Q, lower=True)
        except np.linalg.LinAlgError as exc:
            raise ConfigError("Q must be positive definite") from exc
        G = scipy.linalg.cho_solve(cho, self.C).T  # C^T Q^-1
        self.G = np.ascontiguousarray(G)
        H = G @ self.C
        self.H = np.ascontiguousarray(0.5 * (H + H.T))
        self.g0 = np.ascontiguousarray(self.G @ self.c0)
        d = self.n_dims
        eye = np.eye(d)
        P = np.zeros((d, d))
        n_iter = 0
        for n_iter in range(1, 100_001):  # noqa: B007 - n_iter is reported after the loop
            Pm = self.A @ P @ self.A.T + self.W
            Pn = np.linalg.solve(eye + Pm @ self.H, Pm)
            Pn = 0.5 * (Pn + Pn.T)
            delta = float(np.abs(Pn - P).max())
            P = Pn
            if delta <= self.riccati_tol * max(float(np.abs(P).max()), 1e-300):
                break
        else:  # pragma: no cover - would need an unstable A
            logger.warning("Riccati recursion did not converge; steady gain is approximate")
        self.riccati_iterations = n_iter
        self.P_steady = P
        K = P @ self.G
        self.K_steady = np.ascontiguousarray(K)
        self.M_steady = np.ascontiguousarray((eye - K @ self.C) @ self.A)
        self.k0_steady = np.ascontiguousarray(K @ self.c0)

    @property
    def n_units(self) -> int:
        """Number of observed units."""
        return int(self.C.shape[0])

    @property
    def n_dims(self) -> int:
        """Number of velocity dimensions ``d`` (the state without its constant)."""
        return int(self.A.shape[0])

    # ---------------------------------------------------------------- fitting

    @classmethod
    def fit(
        cls,
        velocity: ArrayLike,
        rates: ArrayLike,
        *,
        bin_s: float,
        gain: str = "adaptive",
        q_floor: float = 1e-2,
    ) -> KalmanDecoder:
        """Fit ``A, W`` on the velocities and ``C, c0, Q`` on rates against velocities.

        Parameters
        ----------
        velocity : array-like, shape (n_bins, d)
            Kinematics (velocities) of each bin, consecutive bins in order.
        rates : array-like, shape (n_bins, n_units)
            Observations of each bin (counts or rates, the unit used online).
        bin_s : float
            Bin width (s).
        gain : {"adaptive", "steady"}
            See the class.
        q_floor : float
            Floor of ``diag(Q)`` relative to its mean, so a silent unit does
            not get an infinite weight.

        Notes
        -----
        Least squares as in Wu et al. (2006): ``A = argmin ||v_t - A v_{t-1}||``,
        ``W`` the covariance of its residuals (divided by ``T - 1``); ``[C, c0]``
        regress rates on ``[v, 1]``, ``Q`` the covariance of those residuals
        (divided by ``T``).
        """
        v = np.ascontiguousarray(velocity, dtype=np.float64)
        Z = np.ascontiguousarray(rates, dtype=np.float64)
        if v.ndim != 2 or Z.ndim != 2 or v.shape[0] != Z.shape[0]:
            raise ConfigError(
                f"velocity (n_bins, d) and rates (n_bins, n_units) must share n_bins, "
                f"got {v.shape} and {Z.shape}"
            )
        if v.shape[0] < v.shape[1] + 2:
            raise ConfigError(f"need at least {v.shape[1] + 2} bins to fit, got {v.shape[0]}")
        if not (np.isfinite(v).all() and np.isfinite(Z).all()):
            raise ConfigError("training velocity or rates contain NaN or infinite values")
        x1, x2 = v[:-1], v[1:]
        At, *_ = np.linalg.lstsq(x1, x2, rcond=None)
        A = At.T
        e = x2 - x1 @ At
        W = e.T @ e / (len(e) - 1)
        C, c0, res = _lstsq_obs(v, Z)
        Q = _floor_cov(res.T @ res / len(res), q_floor)
        return cls(
            A=A, W=0.5 * (W + W.T), C=C, c0=c0, Q=Q, bin_s=bin_s, gain=gain,
            train_hash=training_hash(v, Z),
        )

    # ---------------------------------------------------------------- inference

    def initial_state(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """A fresh state ``(x, P)``: zero velocity, zero covariance (steady: ``P_steady``)."""
        d = self.n_dims
        if self.gain == "steady":
            return np.zeros(d), self.P_steady.copy()
        return np.zeros(d), np.zeros((d, d))

    def infer(self, z: NDArray[np.float64], x: NDArray[np.float64], P: NDArray[np.float64]) -> int:
        """One filter step in place (the hot path).

        Parameters
        ----------
        z : ndarray of float64, shape (n_units,)
            Observation of this bin.
        x : ndarray of float64, shape (d,)
            Decoded velocity, updated in place.
        P : ndarray of float64, shape (d, d)
            Covariance, updated in place (left untouched with ``gain="steady"``).

        Returns
        -------
        status : int
            0 when the observation was used; -1 when it was not finite, in which
            case only the prediction was applied and :attr:`n_skipped` grows.

        Notes
        -----
        Uses workspace owned by the decoder: one decoder per thread.
        """
        if self.gain == "steady":
            s = int(
                kalman_step_steady(self.A, self.M_steady, self.K_steady, self.k0_steady, z, x, self._xm)
            )
        else:
            s = int(
                kalman_step(
                    self.A, self.W, self.H, self.G, self.g0, z, x, P, self._xm, self._Pm, self._aug
                )
            )
        if s < 0:
            self.n_skipped += 1
        return s

    def predict(
        self,
        rates: ArrayLike,
        x0: ArrayLike | None = None,
        P0: ArrayLike | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """Decode a sequence of observations from ``(x0, P0)``.

        Parameters
        ----------
        rates : array-like, shape (n_bins, n_units)
        x0 : array-like, shape (d,) | None
            Initial state (zero when None); not modified.
        P0 : array-like, shape (d, d) | None
            Initial covariance (as :meth:`initial_state` when None); not modified.

        Returns
        -------
        velocity : ndarray, shape (n_bins, d)
            Row ``i`` bit-identical to the state after the ``i``-th :meth:`infer`.
        status : ndarray of int64, shape (n_bins,)
            Status of each step (-1: observation skipped).
        """
        Z = np.ascontiguousarray(rates, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[1] != self.n_units:
            raise ConfigError(
                f"rates must have shape (n_bins, {self.n_units}), got {Z.shape}"
            )
        x, P = self.initial_state()
        if x0 is not None:
            x[:] = np.asarray(x0, dtype=np.float64)
        if P0 is not None:
            P[:] = np.asarray(P0, dtype=np.float64)
        out = np.empty((Z.shape[0], self.n_dims))
        status = np.empty(Z.shape[0], dtype=np.int64)
        kalman_run(
            self.A, self.W, self.H, self.G, self.g0, self.M_steady, self.K_steady,
            self.k0_steady, self.gain == "steady", Z, x, P, self._xm, self._Pm, self._aug,
            out, status,
        )
        self.n_skipped += int((status < 0).sum())
        return out, status

    def warmup(self) -> None:
        """Compile the kernels and run them once (counters left as they were)."""
        skipped = self.n_skipped
        z = self.c0.copy()
        x, P = np.zeros(self.n_dims), np.zeros((self.n_dims, self.n_dims))
        kalman_step(self.A, self.W, self.H, self.G, self.g0, z, x, P, self._xm, self._Pm, self._aug)
        kalman_step_steady(self.A, self.M_steady, self.K_steady, self.k0_steady, z, x, self._xm)
        self.predict(z[None, :])
        self.n_skipped = skipped

    # ---------------------------------------------------------------- CLDA

    def adapt(
        self,
        decoded: ArrayLike,
        position: ArrayLike,
        target: ArrayLike,
        rates: ArrayLike,
        params: CLDAParams | None = None,
    ) -> AdaptRecord:
        """Refit ``C, c0, Q`` on intended velocities of a closed-loop batch and blend.

        Parameters
        ----------
        decoded : array-like, shape (n_bins, d)
            Velocities the decoder produced in the batch.
        position : array-like, shape (n_bins, d)
            Cursor positions at each bin.
        target : array-like, shape (n_bins, d)
            Target positions at each bin.
        rates : array-like, shape (n_bins, n_units)
            Observations of each bin.
        params : CLDAParams | None
            Pace and bounds (defaults when None).

        Returns
        -------
        record : AdaptRecord
            Whether the batch was accepted, why not, the relative change, the
            batch size, the refit R^2 and the blend weight. A rejected batch
            leaves the decoder unchanged.

        Notes
        -----
        Intention estimation of ReFIT (Gilja et al. 2012): the decoded speed,
        pointed at the target, zero on target (:func:`intended_velocity`).
        SmoothBatch (Orsborn et al. 2012 IEEE TNSRE 20:468):
        ``C <- alpha C + (1 - alpha) C_batch`` and the same for ``c0`` and
        ``Q``, with ``alpha = max(alpha_floor, 0.5 ** (batch_s / half_life_s))``.
        ``A`` and ``W`` are kept. A batch is rejected when it has fewer than
        ``min_bins`` bins, holds a non-finite value, its intended velocities
        do not span ``d`` dimensions, or the blend would move ``C`` by more
        than ``max_change`` (relative Frobenius norm).
        """
        p = CLDAParams() if params is None else params
        d, n = self.n_dims, self.n_units
        arrs = []
        for name, arr, cols in (
            ("decoded", decoded, d), ("position", position, d), ("target", target, d),
            ("rates", rates, n),
        ):
            a = np.asarray(arr, dtype=np.float64)
            if a.ndim != 2 or a.shape[1] != cols:
                raise ConfigError(f"{name} must have shape (n_bins, {cols}), got {a.shape}")
            arrs.append(a)
        dec, pos, tgt, Z = arrs
        n_bins = dec.shape[0]
        if any(a.shape[0] != n_bins for a in arrs):
            raise ConfigError(
                f"decoded, position, target and rates must share n_bins, got "
                f"{[a.shape[0] for a in arrs]}"
            )
        alpha = max(p.alpha_floor, 0.5 ** (n_bins * self.bin_s / p.half_life_s))

        def reject(reason: str, change: float = math.nan, r2: float = math.nan) -> AdaptRecord:
            self.n_adapt_rejected += 1
            logger.info("CLDA batch of %d bins rejected: %s", n_bins, reason)
            return AdaptRecord(
                accepted=False, reason=reason, rel_change=change, n_bins=n_bins, r2=r2, alpha=alpha
            )

        if n_bins < p.min_bins:
            return reject("too_short")
        if not all(np.isfinite(a).all() for a in arrs):
            return reject("non_finite")
        kin = intended_velocity(dec, pos, tgt, p.target_radius)
        X = np.column_stack([kin, np.ones(n_bins)])
        if np.linalg.matrix_rank(X) < d + 1:
            return reject("singular")
        C_b, c0_b, res = _lstsq_obs(kin, Z)
        ss_res = float((res**2).sum())
        ss_tot = float(((Z - Z.mean(axis=0)) ** 2).sum())
        r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
        Q_b = _floor_cov(res.T @ res / n_bins, p.q_floor)
        C_new = alpha * self.C + (1.0 - alpha) * C_b
        change = float(np.linalg.norm(C_new - self.C)) / max(float(np.linalg.norm(self.C)), 1e-300)
        if not math.isfinite(change) or change > p.max_change:
            return reject("too_large", change, r2)
        c0_new = alpha * self.c0 + (1.0 - alpha) * c0_b
        Q_new = alpha * self.Q + (1.0 - alpha) * Q_b
        old = (self.C, self.c0, self.Q, self.G, self.H, self.g0)
        old_ss = (self.P_steady, self.K_steady, self.M_steady, self.k0_steady)
        self.C = np.ascontiguousarray(C_new)
        self.c0 = np.ascontiguousarray(c0_new)
        self.Q = np.ascontiguousarray(0.5 * (Q_new + Q_new.T))
        try:
            self._precompute()
        except ConfigError:  # pragma: no cover - a blend of SPD matrices is SPD
            self.C, self.c0, self.Q, self.G, self.H, self.g0 = old
            self.P_steady, self.K_steady, self.M_steady, self.k0_steady = old_ss
            return reject("singular", change, r2)
        self.train_hash = None
        self.n_adapt_accepted += 1
        return AdaptRecord(
            accepted=True, reason="ok", rel_change=change, n_bins=n_bins, r2=r2, alpha=alpha
        )

    # ---------------------------------------------------------------- files

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
        """The decoder as a JSON-able header and plain arrays (see :mod:`.io`)."""
        meta = {
            "bin_s": self.bin_s,
            "gain": self.gain,
            "n_units": self.n_units,
            "n_dims": self.n_dims,
            "train_hash": self.train_hash,
            "riccati_tol": self.riccati_tol,
        }
        return meta, {"A": self.A, "W": self.W, "C": self.C, "c0": self.c0, "Q": self.Q}

    @classmethod
    def from_arrays(
        cls, meta: dict[str, Any], arrays: dict[str, NDArray[Any]], where: str = "decoder"
    ) -> KalmanDecoder:
        """Rebuild a decoder from :meth:`to_arrays` output, checking every field.

        Raises
        ------
        ConfigError
            ``"<where>: <problem>"`` on a missing field or inconsistent arrays.
        """
        require(where, meta, ("bin_s", "gain", "n_units", "n_dims", "train_hash", "riccati_tol"))
        require_arrays(where, arrays, _ARRAYS, floating=True)
        dec = checked(where, lambda: cls(
            A=arrays["A"], W=arrays["W"], C=arrays["C"], c0=arrays["c0"], Q=arrays["Q"],
            bin_s=meta["bin_s"], gain=meta["gain"], train_hash=meta["train_hash"],
            riccati_tol=float(meta["riccati_tol"]),
        ))
        if (dec.n_units, dec.n_dims) != (meta["n_units"], meta["n_dims"]):
            raise ConfigError(
                f"{where}: header says {meta['n_units']} units x {meta['n_dims']} dims, "
                f"arrays have {dec.n_units} x {dec.n_dims}"
            )
        return dec

    file_format: ClassVar[str] = _FORMAT
    file_arrays: ClassVar[tuple[str, ...]] = _ARRAYS
