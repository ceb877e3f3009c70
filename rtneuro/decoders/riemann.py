"""Riemannian decoders: window covariance, minimum distance to mean, tangent space.

Covariance matrices of time-major windows ``(n_times, n_channels)`` are
estimated by :func:`covariance` (sample covariance or Ledoit-Wolf shrinkage),
then classified online either by :class:`MdmDecoder` (affine-invariant
distance to each class mean, pyRiemann's ``MDM``) or by
:class:`TangentSpaceDecoder` (pyRiemann's ``TangentSpace`` followed by a
linear model applied by :func:`rtneuro.decoders.linear.linear_infer`).
Models are fitted offline with pyRiemann / scikit-learn and reduced to plain
arrays saved through :mod:`rtneuro.decoders.io`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from numba import njit, types
from numba.extending import overload
from numpy.typing import ArrayLike, NDArray

from rtneuro.errors import ConfigError, RtneuroError, did_you_mean

from .io import ArrayFile, checked, require, require_arrays
from .linear import LinearDecoder, _classes_array, linear_infer

__all__ = [
    "COV_ESTIMATORS",
    "SHRINKAGE_LEDOIT_WOLF",
    "MdmDecoder",
    "TangentSpaceDecoder",
    "covariance",
    "covariance_batch",
    "estimator_shrinkage",
    "mdm_infer",
    "tangent_vector",
]

logger = logging.getLogger(__name__)

#: Covariance estimators :func:`covariance` supports, named as in pyRiemann's
#: ``Covariances(estimator=...)``: "scm" (sample covariance) and "lwf"
#: (Ledoit-Wolf shrinkage). A fixed shrinkage in (0, 1] is also accepted.
COV_ESTIMATORS = ("scm", "lwf")

#: ``shrinkage`` value asking :func:`covariance` for the Ledoit-Wolf estimate.
SHRINKAGE_LEDOIT_WOLF = -1.0

_MDM_FORMAT = "rtneuro.mdm_decoder"
_TS_FORMAT = "rtneuro.tangent_space_decoder"
_MDM_ARRAYS = ("covmeans", "covmeans_isqrt", "classes")
_TS_ARRAYS = ("reference", "reference_isqrt", "linear_coef", "linear_intercept", "linear_classes")


def estimator_shrinkage(estimator: str | float) -> float:
    """The ``shrinkage`` argument of :func:`covariance` for an estimator.

    Parameters
    ----------
    estimator : {"scm", "lwf"} | float
        Estimator name (see :data:`COV_ESTIMATORS`) or a fixed shrinkage in
        [0, 1] (scikit-learn's ``shrunk_covariance``).

    Returns
    -------
    shrinkage : float
        0.0 for "scm", :data:`SHRINKAGE_LEDOIT_WOLF` for "lwf", else the value.
    """
    if isinstance(estimator, str):
        if estimator == "scm":
            return 0.0
        if estimator == "lwf":
            return SHRINKAGE_LEDOIT_WOLF
        raise ConfigError(
            f"estimator={estimator!r} is not one of {list(COV_ESTIMATORS)} or a shrinkage "
            f"in [0, 1]{did_you_mean(estimator, COV_ESTIMATORS)}"
        )
    s = float(estimator)
    if not 0.0 <= s <= 1.0:
        raise ConfigError(f"shrinkage must be in [0, 1], got {s}")
    return s


# --------------------------------------------------------------------------- kernels


def _shrinkage_of(shrinkage):
    """``shrinkage`` as a float inside a kernel (a name or a number).

    This Python body runs only with the JIT disabled; compiled kernels use
    the overload below.
    """
    if isinstance(shrinkage, str):
        if shrinkage not in COV_ESTIMATORS:
            raise ValueError("covariance: shrinkage must be 'scm', 'lwf' or a number")
        return estimator_shrinkage(shrinkage)
    return float(shrinkage)


@overload(_shrinkage_of)
def _shrinkage_of_overload(shrinkage):  # pragma: no cover - compiled
    if isinstance(shrinkage, types.UnicodeType):

        def impl_name(shrinkage):
            if shrinkage == "scm":
                return 0.0
            if shrinkage == "lwf":
                return -1.0  # SHRINKAGE_LEDOIT_WOLF
            raise ValueError("covariance: shrinkage must be 'scm', 'lwf' or a number")

        return impl_name
    if isinstance(shrinkage, (types.Float, types.Integer)):

        def impl_number(shrinkage):
            return float(shrinkage)

        return impl_number
    return None


@njit(inline="always", cache=True, nogil=True)
def _covariance(win, out, shrinkage, work):  # pragma: no cover - compiled
    n_times, n = win.shape
    mean = work[0]
    row = work[1]
    inv_t = 1.0 / n_times
    for i in range(n):
        mean[i] = 0.0
        for j in range(n):
            out[i, j] = 0.0
    for t in range(n_times):
        for i in range(n):
            mean[i] += win[t, i] * inv_t
    # sums over time of the centered products (upper triangle), and for
    # Ledoit-Wolf the sum over time of squared row norms (sum of <X2.T, X2>)
    beta_ = 0.0
    for t in range(n_times):
        sq = 0.0
        for i in range(n):
            d = win[t, i] - mean[i]
            row[i] = d
            sq += d * d
        beta_ += sq * sq
        # the full square (not a triangle): this loop vectorises, ~3x faster;
        # out[i, j] and out[j, i] get the same products, so stay equal
        for i in range(n):
            ri = row[i]
            oi = out[i]
            for j in range(n):
                oi[j] += ri * row[j]
    trace = 0.0
    finite = True
    for i in range(n):
        for j in range(n):
            out[i, j] *= inv_t
        trace += out[i, i]
    if not math.isfinite(trace) or not math.isfinite(beta_):
        finite = False
    else:
        for i in range(n):
            for j in range(i + 1, n):
                if not math.isfinite(out[i, j]):
                    finite = False
    if not finite:
        for i in range(n):
            for j in range(n):
                out[i, j] = np.nan
        return np.nan
    if shrinkage == 0.0 or n == 1:
        return 0.0
    mu = trace / n
    if shrinkage < 0.0:  # Ledoit-Wolf, scikit-learn's ledoit_wolf_shrinkage
        s2 = 0.0
        for i in range(n):
            for j in range(n):
                s2 += out[i, j] * out[i, j]
        beta = (beta_ / n_times - s2) / (n * n_times)
        delta = (s2 - 2.0 * mu * trace + n * mu * mu) / n
        beta = min(beta, delta)
        s = 0.0 if beta == 0.0 else beta / delta
    else:
        s = shrinkage
    for i in range(n):
        for j in range(n):
            out[i, j] *= 1.0 - s
        out[i, i] += s * mu
    return s


@njit(cache=True, nogil=True)
def covariance(win, out, shrinkage, work=None):  # pragma: no cover - compiled
    """Covariance of one time-major window.

    Parameters
    ----------
    win : ndarray of float64, shape (n_times, n_channels)
        The window, time-major as the service buffers signals.
    out : ndarray of float64, shape (n_channels, n_channels)
        Output: the covariance matrix (all NaN when ``win`` is not finite).
    shrinkage : float | {"scm", "lwf"}
        0.0 or "scm": sample covariance (pyRiemann "scm"); in (0, 1]: fixed
        shrinkage towards ``trace / n_channels * I``;
        :data:`SHRINKAGE_LEDOIT_WOLF` (negative) or "lwf": Ledoit-Wolf
        shrinkage (pyRiemann "lwf"). A number is a little faster to dispatch.
    work : ndarray of float64, shape (2, n_channels) | None
        Scratch; pass one to avoid allocating it on every call.

    Returns
    -------
    shrinkage : float
        The shrinkage applied (the Ledoit-Wolf estimate for "lwf"); NaN when
        the window is not finite.

    Notes
    -----
    The sample covariance is centered and normalised by ``n_times``, as
    pyRiemann's ``covariance_scm`` (0.12) and scikit-learn's
    ``empirical_covariance``. Ledoit-Wolf follows scikit-learn's
    ``ledoit_wolf`` (1.9): the shrinkage ``min(beta, delta) / delta`` of
    O. Ledoit and M. Wolf, "A well-conditioned estimator for
    large-dimensional covariance matrices", J. Multivar. Anal. 88 (2004),
    with ``sum <X2.T, X2>`` computed as the sum over time of squared row
    norms; the result is ``(1 - s) S + s mu I`` with ``mu = trace(S) / n``.
    """
    if work is None:
        buf = np.empty((2, win.shape[1]))
    else:
        buf = work
    return _covariance(win, out, _shrinkage_of(shrinkage), buf)


@njit(cache=True, nogil=True)
def covariance_batch(wins, out, shrinkage, used):  # pragma: no cover - compiled
    """Covariance of each window; row ``i`` equals :func:`covariance` on ``wins[i]``.

    Parameters
    ----------
    wins : ndarray of float64, shape (n_windows, n_times, n_channels)
        Time-major windows.
    out : ndarray of float64, shape (n_windows, n_channels, n_channels)
        Output: covariance matrices.
    shrinkage : float | {"scm", "lwf"}
        As in :func:`covariance`.
    used : ndarray of float64, shape (n_windows,)
        Output: the shrinkage applied to each window.
    """
    work = np.empty((2, wins.shape[2]))
    s = _shrinkage_of(shrinkage)
    for k in range(wins.shape[0]):
        used[k] = _covariance(wins[k], out[k], s, work)


@njit(inline="always", cache=True, nogil=True)
def _whiten(isqrt, cov, tmp, w):  # pragma: no cover - compiled
    """``w = isqrt @ cov @ isqrt``, symmetrised (tmp is scratch)."""
    np.dot(isqrt, cov, tmp)
    np.dot(tmp, isqrt, w)
    n = w.shape[0]
    for i in range(n):
        for j in range(i + 1, n):
            v = 0.5 * (w[i, j] + w[j, i])
            w[i, j] = v
            w[j, i] = v


@njit(inline="always", cache=True, nogil=True)
def _all_finite(cov):  # pragma: no cover - compiled
    n = cov.shape[0]
    for i in range(n):
        for j in range(n):
            if not math.isfinite(cov[i, j]):
                return False
    return True


@njit(inline="always", cache=True, nogil=True)
def _mdm_row(isqrt_means, cov, work, dist, proba):  # pragma: no cover - compiled
    n_classes = isqrt_means.shape[0]
    ok = _all_finite(cov)
    if ok:
        for k in range(n_classes):
            _whiten(isqrt_means[k], cov, work[0], work[1])
            lam = np.linalg.eigvalsh(work[1])
            d2 = 0.0
            for i in range(lam.shape[0]):
                if not lam[i] > 0.0:  # not SPD (or NaN)
                    ok = False
                    break
                lg = math.log(lam[i])
                d2 += lg * lg
            if not ok:
                break
            dist[k] = math.sqrt(d2)
    if not ok:
        for k in range(n_classes):
            dist[k] = np.nan
            proba[k] = np.nan
        return -1
    # argmin of the distances (first minimum, as numpy.argmin)
    best = 0
    for k in range(1, n_classes):
        if dist[k] < dist[best]:
            best = k
    # softmax(-dist ** 2), as sklearn.utils.extmath.softmax
    top = -(dist[0] ** 2)
    for k in range(1, n_classes):
        v = -(dist[k] ** 2)
        if v > top:
            top = v
    total = 0.0
    for k in range(n_classes):
        e = math.exp(-(dist[k] ** 2) - top)
        proba[k] = e
        total += e
    for k in range(n_classes):
        proba[k] /= total
    return best


@njit(cache=True, nogil=True)
def mdm_infer(isqrt_means, cov, work, dist, proba):  # pragma: no cover - compiled
    """Minimum distance to mean classification of one covariance matrix.

    Parameters
    ----------
    isqrt_means : ndarray of float64, shape (n_classes, n_channels, n_channels)
        Inverse square roots ``M_k^{-1/2}`` of the class means.
    cov : ndarray of float64, shape (n_channels, n_channels)
        Symmetric positive definite matrix to classify.
    work : ndarray of float64, shape (2, n_channels, n_channels)
        Scratch.
    dist : ndarray of float64, shape (n_classes,)
        Output: affine-invariant Riemannian distance to each class mean.
    proba : ndarray of float64, shape (n_classes,)
        Output: ``softmax(-dist ** 2)``.

    Returns
    -------
    index : int
        Index of the nearest class mean; -1 (with NaN outputs) when ``cov``
        is not finite or not positive definite.

    Notes
    -----
    ``d(C, M) = sqrt(sum_i log(lambda_i) ** 2)`` with ``lambda_i`` the
    eigenvalues of ``M^{-1/2} C M^{-1/2}`` (Förstner & Moonen 2003); the
    classifier and its probabilities are those of pyRiemann's ``MDM``
    (0.12; Barachant et al., IEEE TBME 59(4), 2012), which computes the same
    eigenvalues by a Cholesky reduction. Only the lower triangle of the
    whitened matrix is read, so ``cov`` is assumed symmetric.
    """
    return _mdm_row(isqrt_means, cov, work, dist, proba)


@njit(cache=True, nogil=True)
def _mdm_batch(isqrt_means, covs, dist, proba, index):  # pragma: no cover - compiled
    n = covs.shape[1]
    work = np.empty((2, n, n))
    for i in range(covs.shape[0]):
        index[i] = _mdm_row(isqrt_means, covs[i], work, dist[i], proba[i])


@njit(inline="always", cache=True, nogil=True)
def _tangent_row(isqrt_ref, cov, work, vec):  # pragma: no cover - compiled
    n = cov.shape[0]
    if not _all_finite(cov):
        for i in range(vec.shape[0]):
            vec[i] = np.nan
        return False
    _whiten(isqrt_ref, cov, work[0], work[1])
    lam, v = np.linalg.eigh(work[1])
    for i in range(n):
        if not lam[i] > 0.0:
            for m in range(vec.shape[0]):
                vec[m] = np.nan
            return False
        lam[i] = math.log(lam[i])
    # logm = V diag(log lam) V^T, upper triangle row by row with sqrt(2)
    # off the diagonal (pyRiemann's ``upper``, numpy.triu_indices order)
    sqrt2 = math.sqrt(2.0)
    m = 0
    for i in range(n):
        for j in range(i, n):
            acc = 0.0
            for k in range(n):
                acc += v[i, k] * lam[k] * v[j, k]
            vec[m] = acc if i == j else sqrt2 * acc
            m += 1
    return True


@njit(cache=True, nogil=True)
def tangent_vector(isqrt_ref, cov, work, vec):  # pragma: no cover - compiled
    """Tangent-space vector of one covariance matrix at a reference point.

    Parameters
    ----------
    isqrt_ref : ndarray of float64, shape (n_channels, n_channels)
        Inverse square root ``P^{-1/2}`` of the reference point.
    cov : ndarray of float64, shape (n_channels, n_channels)
        Symmetric positive definite matrix.
    work : ndarray of float64, shape (2, n_channels, n_channels)
        Scratch.
    vec : ndarray of float64, shape (n_channels * (n_channels + 1) // 2,)
        Output: the tangent vector (NaN when ``cov`` is not SPD or finite).

    Returns
    -------
    ok : bool
        False when ``cov`` is not finite or not positive definite.

    Notes
    -----
    ``upper(log(P^{-1/2} C P^{-1/2}))`` with unit weights on the diagonal and
    ``sqrt(2)`` off it, as pyRiemann's ``tangent_space(metric="riemann")``
    (0.12; Barachant et al., IEEE TBME 59(4), 2012; Tuzel et al., IEEE
    TPAMI 30(10), 2008).
    """
    return _tangent_row(isqrt_ref, cov, work, vec)


@njit(cache=True, nogil=True)
def _tangent_infer(
    isqrt_ref, cov, work, vec, coef, intercept, link, scores, proba
):  # pragma: no cover - compiled
    if not _tangent_row(isqrt_ref, cov, work, vec):
        for k in range(scores.shape[0]):
            scores[k] = np.nan
        for k in range(proba.shape[0]):
            proba[k] = np.nan
        return -1
    return linear_infer(coef, intercept, vec, link, scores, proba)


@njit(cache=True, nogil=True)
def _tangent_batch(
    isqrt_ref, covs, vecs, coef, intercept, link, scores, proba, index
):  # pragma: no cover - compiled
    n = covs.shape[1]
    work = np.empty((2, n, n))
    for i in range(covs.shape[0]):
        index[i] = _tangent_infer(
            isqrt_ref, covs[i], work, vecs[i], coef, intercept, link, scores[i], proba[i]
        )


# --------------------------------------------------------------------------- helpers


def _invsqrtm(m: NDArray[np.float64]) -> NDArray[np.float64]:
    """``M^{-1/2}`` by eigendecomposition, as pyRiemann's ``invsqrtm``."""
    w, v = np.linalg.eigh(m)
    return np.ascontiguousarray((v * (1.0 / np.sqrt(w))[None, :]) @ v.T)


def _spd_stack(a: ArrayLike, name: str, n: int | None = None) -> NDArray[np.float64]:
    """Validate a stack of SPD matrices, shape (k, n, n)."""
    m = np.ascontiguousarray(a, dtype=np.float64)
    if m.ndim != 3 or m.shape[0] < 1 or m.shape[1] != m.shape[2] or m.shape[1] < 1:
        raise ConfigError(f"{name} must have shape (n, n_channels, n_channels), got {m.shape}")
    if n is not None and m.shape[1] != n:
        raise ConfigError(f"{name} must be {n}x{n} matrices, got {m.shape[1]}x{m.shape[2]}")
    if not np.isfinite(m).all():
        raise ConfigError(f"{name} must be finite")
    scale = np.abs(m).max(axis=(1, 2), keepdims=True)
    if (np.abs(m - m.transpose(0, 2, 1)) > 1e-10 * scale).any():
        raise ConfigError(f"{name} must be symmetric")
    if (np.linalg.eigvalsh(m)[:, 0] <= 0).any():
        raise ConfigError(f"{name} must be positive definite")
    return m


def _check_isqrt(means: NDArray[np.float64], isqrt: ArrayLike | None, name: str) -> NDArray[np.float64]:
    """The inverse square roots of ``means``: computed, or given and verified."""
    if isqrt is None:
        return np.stack([_invsqrtm(m) for m in means])
    p = np.ascontiguousarray(isqrt, dtype=np.float64)
    if p.shape != means.shape:
        raise ConfigError(f"{name} must have shape {means.shape}, got {p.shape}")
    if not np.isfinite(p).all():
        raise ConfigError(f"{name} must be finite")
    eye = np.eye(means.shape[1])
    err = np.abs(p @ means @ p - eye).max()
    if not err <= 1e-6:
        raise ConfigError(
            f"{name} is not the inverse square root of the matrices it goes with "
            f"(max |P M P - I| = {err:.3g})"
        )
    return p


def _check_channels(
    expected: tuple[str, ...] | None,
    n_channels: int,
    trained_sfreq: float | None,
    ch_names: Sequence[str],
    sfreq: float | None,
) -> None:
    """Refuse channels or a rate that differ from the training ones."""
    names = [str(n) for n in ch_names]
    if expected is None:
        if len(names) != n_channels:
            raise ConfigError(
                f"decoder expects {n_channels} channels, the graph gives {len(names)}"
            )
    elif names != list(expected):
        exp = list(expected)
        missing = [n for n in exp if n not in names]
        extra = [n for n in names if n not in exp]
        if missing or extra:
            hint = did_you_mean(extra[0], missing) if extra and missing else ""
            raise ConfigError(
                f"decoder expects {len(exp)} channels, the graph gives {len(names)}: "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}{hint}"
            )
        if len(names) != len(exp):
            raise ConfigError(
                f"decoder expects {len(exp)} channels, the graph gives {len(names)} "
                "(repeated names)"
            )
        i = next(i for i, (a, b) in enumerate(zip(names, exp, strict=True)) if a != b)
        raise ConfigError(
            f"channels are in a different order than in training: position {i} is "
            f"{names[i]!r} in the graph, {exp[i]!r} in the decoder; reorder the channels"
        )
    if trained_sfreq is not None:
        if sfreq is None or not math.isclose(float(sfreq), trained_sfreq, rel_tol=1e-9):
            raise ConfigError(
                f"decoder was trained on signals at sfreq={trained_sfreq:g} Hz, "
                f"the graph gives sfreq={sfreq} Hz"
            )
    elif sfreq is not None:
        logger.debug("decoder has no recorded sfreq; not checking sfreq=%s", sfreq)


def _channel_meta(
    ch_names: Sequence[str] | None, sfreq: float | None, estimator: str | None, n: int
) -> tuple[tuple[str, ...] | None, float | None, str | None]:
    names: tuple[str, ...] | None = None
    if ch_names is not None:
        names = tuple(str(c) for c in ch_names)
        if len(names) != n:
            raise ConfigError(f"{len(names)} channel names given for {n}x{n} matrices")
        if len(set(names)) != len(names):
            dup = sorted({c for c in names if names.count(c) > 1})
            raise ConfigError(f"channel names must be unique; repeated: {dup}")
    fs: float | None = None
    if sfreq is not None:
        fs = float(sfreq)
        if not (math.isfinite(fs) and fs > 0):
            raise ConfigError(f"sfreq must be a positive number of Hz, got {sfreq!r}")
    if estimator is not None:
        estimator_shrinkage(estimator)
    return names, fs, estimator


def _covs(C: ArrayLike, n: int) -> tuple[bool, NDArray[np.float64]]:
    c = np.ascontiguousarray(C, dtype=np.float64)
    single = c.ndim == 2
    c3 = c[None] if single else c
    if c3.ndim != 3 or c3.shape[1:] != (n, n):
        raise ConfigError(
            f"covariances must have shape (n_channels, n_channels) or "
            f"(n_matrices, n_channels, n_channels) with n_channels={n}, got {c.shape}"
        )
    return single, c3


def _metric_is_riemann(metric: Any) -> bool:
    if isinstance(metric, str):
        return metric == "riemann"
    if isinstance(metric, dict):
        return all(v == "riemann" for v in metric.values())
    return False


# --------------------------------------------------------------------------- MDM


class MdmDecoder(ArrayFile):
    """Minimum distance to mean (affine-invariant metric), applied online by numba.

    Parameters
    ----------
    covmeans : ndarray, shape (n_classes, n_channels, n_channels)
        Class means (SPD), ordered as ``classes``.
    classes : ndarray, shape (n_classes,)
        Class labels.
    covmeans_isqrt : ndarray, shape (n_classes, n_channels, n_channels) | None
        ``covmeans ** -1/2``; computed when None, verified when given.
    ch_names : sequence of str | None
        Channel names, in the order of the matrix rows.
    sfreq : float | None
        Sampling rate (Hz) of the signals the covariances come from.
    estimator : {"scm", "lwf"} | None
        Covariance estimator used in training (informative; see :func:`covariance`).

    Notes
    -----
    Same labels, distances and probabilities as pyRiemann's
    ``MDM(metric="riemann")`` (0.12); see :func:`mdm_infer`. The scratch used
    by :meth:`infer` belongs to the decoder: use one decoder per thread.
    """

    def __init__(
        self,
        *,
        covmeans: ArrayLike,
        classes: ArrayLike,
        covmeans_isqrt: ArrayLike | None = None,
        ch_names: Sequence[str] | None = None,
        sfreq: float | None = None,
        estimator: str | None = None,
    ) -> None:
        means = _spd_stack(covmeans, "covmeans")
        cls = _classes_array(classes)
        if cls.ndim != 1 or cls.shape[0] != means.shape[0]:
            raise ConfigError(
                f"{means.shape[0]} class means need {means.shape[0]} classes, got shape {cls.shape}"
            )
        if cls.shape[0] < 2:
            raise ConfigError(f"an MDM decoder needs at least 2 classes, got {cls.shape[0]}")
        if len(set(cls.tolist())) != cls.shape[0]:
            raise ConfigError(f"classes must be distinct, got {cls.tolist()!r}")
        self.covmeans = means
        self.covmeans_isqrt = _check_isqrt(means, covmeans_isqrt, "covmeans_isqrt")
        self.classes = cls
        self.n_classes = int(cls.shape[0])
        self.n_channels = int(means.shape[1])
        self.n_out = self.n_classes  # distances, the "scores" of an MDM
        self.n_proba = self.n_classes
        self.ch_names, self.sfreq, self.estimator = _channel_meta(
            ch_names, sfreq, estimator, self.n_channels
        )
        self._work = np.empty((2, self.n_channels, self.n_channels))

    @classmethod
    def fit(
        cls,
        covs: ArrayLike,
        y: ArrayLike,
        *,
        ch_names: Sequence[str] | None = None,
        sfreq: float | None = None,
        estimator: str | None = None,
    ) -> MdmDecoder:
        """Fit ``pyriemann.classification.MDM(metric="riemann")`` and keep its arrays.

        Parameters
        ----------
        covs : array-like, shape (n_matrices, n_channels, n_channels)
            Training SPD matrices (e.g. from :func:`covariance`).
        y : array-like, shape (n_matrices,)
            Labels.
        ch_names, sfreq, estimator
            As in the constructor.
        """
        from pyriemann.classification import MDM

        model = MDM(metric="riemann").fit(np.asarray(covs, dtype=np.float64), np.asarray(y))
        return cls.from_pyriemann(model, ch_names=ch_names, sfreq=sfreq, estimator=estimator)

    @classmethod
    def from_pyriemann(
        cls,
        model: Any,
        *,
        ch_names: Sequence[str] | None = None,
        sfreq: float | None = None,
        estimator: str | None = None,
    ) -> MdmDecoder:
        """Keep the class means and labels of a fitted ``pyriemann.classification.MDM``."""
        from pyriemann.classification import MDM

        if not isinstance(model, MDM):
            raise ConfigError(
                f"{type(model).__name__} is not supported: expected pyriemann MDM"
            )
        if not _metric_is_riemann(model.metric):
            raise ConfigError(
                f"MDM metric={model.metric!r} is not supported; fit with metric='riemann'"
            )
        if not hasattr(model, "covmeans_"):
            raise ConfigError("MDM is not fitted; call fit() first")
        return cls(
            covmeans=model.covmeans_,
            classes=model.classes_,
            ch_names=ch_names,
            sfreq=sfreq,
            estimator=estimator,
        )

    def check_inputs(self, ch_names: Sequence[str], sfreq: float | None) -> None:
        """Refuse channels (count, names, order) or a rate that differ from training.

        Raises
        ------
        ConfigError
            With the missing / unexpected / misplaced channel or the rates.
        """
        _check_channels(self.ch_names, self.n_channels, self.sfreq, ch_names, sfreq)

    def buffers(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Preallocated ``(dist, proba)`` buffers for :meth:`infer`."""
        return np.zeros(self.n_classes), np.zeros(self.n_classes)

    def infer(
        self, cov: NDArray[np.float64], dist: NDArray[np.float64], proba: NDArray[np.float64]
    ) -> int:
        """Classify one covariance matrix into preallocated buffers (the hot path).

        Parameters
        ----------
        cov : ndarray of float64, shape (n_channels, n_channels)
            SPD matrix, C-contiguous.
        dist : ndarray of float64, shape (n_classes,)
            Output: Riemannian distance to each class mean.
        proba : ndarray of float64, shape (n_classes,)
            Output: class probabilities.

        Returns
        -------
        index : int
            Index into :attr:`classes`; -1 (NaN outputs) for a non-finite or
            non-SPD matrix.
        """
        return int(mdm_infer(self.covmeans_isqrt, cov, self._work, dist, proba))

    def _run(self, C: ArrayLike) -> tuple[bool, NDArray[Any], NDArray[Any], NDArray[np.int64]]:
        single, c = _covs(C, self.n_channels)
        n = c.shape[0]
        dist = np.empty((n, self.n_classes))
        proba = np.empty((n, self.n_classes))
        index = np.empty(n, dtype=np.int64)
        _mdm_batch(self.covmeans_isqrt, c, dist, proba, index)
        return single, dist, proba, index

    def transform(self, C: ArrayLike) -> NDArray[np.float64]:
        """Distances to the class means, shape (n_matrices, n_classes) or (n_classes,)."""
        single, dist, _, _ = self._run(C)
        return dist[0] if single else dist

    def predict_proba(self, C: ArrayLike) -> NDArray[np.float64]:
        """Class probabilities (NaN rows for non-SPD matrices)."""
        single, _, proba, _ = self._run(C)
        return proba[0] if single else proba

    def predict(self, C: ArrayLike) -> Any:
        """Predicted labels.

        Raises
        ------
        RtneuroError
            When a matrix is not finite or not positive definite.
        """
        single, _, _, index = self._run(C)
        if (index < 0).any():
            bad = int(np.flatnonzero(index < 0)[0])
            raise RtneuroError(f"matrix {bad} is not finite or not positive definite")
        out = self.classes[index]
        return out[0] if single else out

    def warmup(self) -> None:
        """Compile the kernels and run them once."""
        dist, proba = self.buffers()
        self.infer(np.eye(self.n_channels), dist, proba)
        self._run(np.eye(self.n_channels)[None])

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
        """The decoder as a JSON-able header and plain arrays (see :mod:`.io`)."""
        meta = {
            "n_channels": self.n_channels,
            "ch_names": None if self.ch_names is None else list(self.ch_names),
            "sfreq": self.sfreq,
            "estimator": self.estimator,
        }
        arrays = {
            "covmeans": self.covmeans,
            "covmeans_isqrt": self.covmeans_isqrt,
            "classes": self.classes,
        }
        return meta, arrays

    @classmethod
    def from_arrays(
        cls, meta: dict[str, Any], arrays: dict[str, NDArray[Any]], where: str = "decoder"
    ) -> MdmDecoder:
        """Rebuild a decoder from :meth:`to_arrays` output, checking every field.

        Raises
        ------
        ConfigError
            ``"<where>: <problem>"`` on a missing field or inconsistent arrays.
        """
        require(where, meta, ("n_channels", "ch_names", "sfreq", "estimator"))
        require_arrays(where, arrays, _MDM_ARRAYS)
        require_arrays(where, arrays, ("covmeans", "covmeans_isqrt"), floating=True)
        dec = checked(where, lambda: cls(
            covmeans=arrays["covmeans"],
            classes=arrays["classes"],
            covmeans_isqrt=arrays["covmeans_isqrt"],
            ch_names=meta["ch_names"],
            sfreq=meta["sfreq"],
            estimator=meta["estimator"],
        ))
        if dec.n_channels != meta["n_channels"]:
            raise ConfigError(
                f"{where}: header says {meta['n_channels']} channels, covmeans are "
                f"{dec.n_channels}x{dec.n_channels}"
            )
        return dec

    file_format: ClassVar[str] = _MDM_FORMAT
    file_arrays: ClassVar[tuple[str, ...]] = _MDM_ARRAYS


# --------------------------------------------------------------------------- tangent space


class TangentSpaceDecoder(ArrayFile):
    """Tangent-space projection (affine-invariant) followed by a linear decoder.

    Parameters
    ----------
    reference : ndarray, shape (n_channels, n_channels)
        Reference point (SPD), pyRiemann's ``TangentSpace.reference_``.
    linear : LinearDecoder
        Classifier on tangent vectors of ``n_channels * (n_channels + 1) / 2``
        features (LDA or logistic regression).
    reference_isqrt : ndarray, shape (n_channels, n_channels) | None
        ``reference ** -1/2``; computed when None, verified when given.
    ch_names, sfreq, estimator
        As in :class:`MdmDecoder`.

    Notes
    -----
    Tangent vectors as pyRiemann's ``TangentSpace(metric="riemann").transform``
    (0.12, see :func:`tangent_vector`), then
    :func:`rtneuro.decoders.linear.linear_infer`. The scratch used by
    :meth:`infer` belongs to the decoder: use one decoder per thread.
    """

    def __init__(
        self,
        *,
        reference: ArrayLike,
        linear: LinearDecoder,
        reference_isqrt: ArrayLike | None = None,
        ch_names: Sequence[str] | None = None,
        sfreq: float | None = None,
        estimator: str | None = None,
    ) -> None:
        ref = _spd_stack(np.asarray(reference, dtype=np.float64)[None], "reference")
        n = int(ref.shape[1])
        if not isinstance(linear, LinearDecoder):
            raise ConfigError(f"linear must be a LinearDecoder, got {type(linear).__name__}")
        if linear.classes is None:
            raise ConfigError("the linear decoder must be a classifier (lda or logreg), got ridge")
        n_feat = n * (n + 1) // 2
        if linear.n_features != n_feat:
            raise ConfigError(
                f"{n}x{n} matrices give {n_feat} tangent features, the linear decoder "
                f"expects {linear.n_features}"
            )
        isqrt = None if reference_isqrt is None else np.asarray(reference_isqrt)[None]
        self.reference = ref[0]
        self.reference_isqrt = np.ascontiguousarray(_check_isqrt(ref, isqrt, "reference_isqrt")[0])
        self.linear = linear
        self.classes = linear.classes
        self.n_classes = int(linear.classes.shape[0])
        self.n_channels = n
        self.n_features = n_feat
        self.n_out = linear.n_out
        self.n_proba = linear.n_proba
        self.ch_names, self.sfreq, self.estimator = _channel_meta(ch_names, sfreq, estimator, n)
        self._work = np.empty((2, n, n))
        self._vec = np.empty(n_feat)

    @classmethod
    def fit(
        cls,
        covs: ArrayLike,
        y: ArrayLike,
        *,
        model: str = "lda",
        shrinkage: float | str | None = "auto",
        ch_names: Sequence[str] | None = None,
        sfreq: float | None = None,
        estimator: str | None = None,
    ) -> TangentSpaceDecoder:
        """Fit ``TangentSpace(metric="riemann")`` and a linear classifier on its vectors.

        Parameters
        ----------
        covs : array-like, shape (n_matrices, n_channels, n_channels)
            Training SPD matrices (e.g. from :func:`covariance`).
        y : array-like, shape (n_matrices,)
            Labels.
        model : {"lda", "logreg"}
            ``LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage)``
            (``solver="svd"`` when ``shrinkage`` is None) or
            ``LogisticRegression(max_iter=5000)``.
        shrinkage : float | "auto" | None
            LDA shrinkage (ignored for logreg).
        ch_names, sfreq, estimator
            As in the constructor.
        """
        from pyriemann.tangentspace import TangentSpace
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
        from sklearn.linear_model import LogisticRegression

        clf: Any
        if model == "lda":
            solver = "svd" if shrinkage is None else "lsqr"
            clf = LinearDiscriminantAnalysis(solver=solver, shrinkage=shrinkage)
        elif model == "logreg":
            clf = LogisticRegression(max_iter=5000)
        else:
            raise ConfigError(
                f"model={model!r} is not one of ['lda', 'logreg']"
                f"{did_you_mean(model, ('lda', 'logreg'))}"
            )
        c = np.asarray(covs, dtype=np.float64)
        labels = np.asarray(y)
        ts = TangentSpace(metric="riemann").fit(c)
        clf.fit(ts.transform(c), labels)
        return cls.from_pyriemann(ts, clf, ch_names=ch_names, sfreq=sfreq, estimator=estimator)

    @classmethod
    def from_pyriemann(
        cls,
        ts: Any,
        clf: Any,
        *,
        ch_names: Sequence[str] | None = None,
        sfreq: float | None = None,
        estimator: str | None = None,
    ) -> TangentSpaceDecoder:
        """Build from a fitted ``TangentSpace`` and a fitted linear classifier.

        Parameters
        ----------
        ts : pyriemann.tangentspace.TangentSpace
            Fitted with ``metric="riemann"`` and ``tsupdate=False``.
        clf : LinearDiscriminantAnalysis | LogisticRegression
            Fitted on ``ts.transform(covs)``.
        """
        from pyriemann.tangentspace import TangentSpace

        if not isinstance(ts, TangentSpace):
            raise ConfigError(f"{type(ts).__name__} is not supported: expected pyriemann TangentSpace")
        if not _metric_is_riemann(ts.metric):
            raise ConfigError(
                f"TangentSpace metric={ts.metric!r} is not supported; use metric='riemann'"
            )
        if ts.tsupdate:
            raise ConfigError("TangentSpace(tsupdate=True) is not supported online; use tsupdate=False")
        if not hasattr(ts, "reference_"):
            raise ConfigError("TangentSpace is not fitted; call fit() first")
        linear = LinearDecoder.from_sklearn(clf)
        return cls(
            reference=ts.reference_,
            linear=linear,
            ch_names=ch_names,
            sfreq=sfreq,
            estimator=estimator,
        )

    @classmethod
    def from_pipeline(
        cls,
        pipeline: Any,
        *,
        ch_names: Sequence[str] | None = None,
        sfreq: float | None = None,
        estimator: str | None = None,
    ) -> TangentSpaceDecoder:
        """Build from a fitted ``make_pipeline(TangentSpace(), <linear classifier>)``."""
        steps = getattr(pipeline, "steps", None)
        if steps is None or len(steps) != 2:
            raise ConfigError(
                "expected a fitted 2-step pipeline make_pipeline(TangentSpace(), LDA or "
                f"LogisticRegression), got {type(pipeline).__name__}"
                + ("" if steps is None else f" of {len(steps)} steps")
            )
        return cls.from_pyriemann(
            steps[0][1], steps[1][1], ch_names=ch_names, sfreq=sfreq, estimator=estimator
        )

    def check_inputs(self, ch_names: Sequence[str], sfreq: float | None) -> None:
        """Refuse channels (count, names, order) or a rate that differ from training."""
        _check_channels(self.ch_names, self.n_channels, self.sfreq, ch_names, sfreq)

    def buffers(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Preallocated ``(scores, proba)`` buffers for :meth:`infer`."""
        return np.zeros(self.n_out), np.zeros(self.n_proba)

    def infer(
        self,
        cov: NDArray[np.float64],
        scores: NDArray[np.float64],
        proba: NDArray[np.float64],
        vec: NDArray[np.float64] | None = None,
    ) -> int:
        """Classify one covariance matrix into preallocated buffers (the hot path).

        Parameters
        ----------
        cov : ndarray of float64, shape (n_channels, n_channels)
            SPD matrix, C-contiguous.
        scores : ndarray of float64, shape (n_out,)
            Output: decision function of the linear model (``n_out`` is 1
            for two classes).
        proba : ndarray of float64, shape (n_classes,)
            Output: class probabilities.
        vec : ndarray of float64, shape (n_features,) | None
            Output: the tangent vector; the decoder's own buffer when None.

        Returns
        -------
        index : int
            Index into :attr:`classes`; -1 (NaN outputs) for a non-finite or
            non-SPD matrix.
        """
        lin = self.linear
        return int(
            _tangent_infer(
                self.reference_isqrt, cov, self._work, self._vec if vec is None else vec,
                lin.coef, lin.intercept, lin.link, scores, proba,
            )
        )

    def _run(
        self, C: ArrayLike
    ) -> tuple[bool, NDArray[Any], NDArray[Any], NDArray[Any], NDArray[np.int64]]:
        single, c = _covs(C, self.n_channels)
        n = c.shape[0]
        lin = self.linear
        vecs = np.empty((n, self.n_features))
        scores = np.empty((n, lin.n_out))
        proba = np.empty((n, lin.n_proba))
        index = np.empty(n, dtype=np.int64)
        _tangent_batch(
            self.reference_isqrt, c, vecs, lin.coef, lin.intercept, lin.link, scores, proba, index
        )
        return single, vecs, scores, proba, index

    def transform(self, C: ArrayLike) -> NDArray[np.float64]:
        """Tangent vectors, shape (n_matrices, n_features) or (n_features,)."""
        single, vecs, _, _, _ = self._run(C)
        return vecs[0] if single else vecs

    def decision_function(self, C: ArrayLike) -> NDArray[np.float64]:
        """Decision function of the linear model, shaped as scikit-learn's."""
        single, _, scores, _, _ = self._run(C)
        out = scores[:, 0] if self.linear.ravel else scores
        return out[0] if single else out

    def predict_proba(self, C: ArrayLike) -> NDArray[np.float64]:
        """Class probabilities (NaN rows for non-SPD matrices)."""
        single, _, _, proba, _ = self._run(C)
        return proba[0] if single else proba

    def predict(self, C: ArrayLike) -> Any:
        """Predicted labels.

        Raises
        ------
        RtneuroError
            When a matrix is not finite or not positive definite.
        """
        single, _, _, _, index = self._run(C)
        if (index < 0).any():
            bad = int(np.flatnonzero(index < 0)[0])
            raise RtneuroError(f"matrix {bad} is not finite or not positive definite")
        out = self.classes[index]
        return out[0] if single else out

    def warmup(self) -> None:
        """Compile the kernels and run them once."""
        scores, proba = self.buffers()
        self.infer(np.ascontiguousarray(self.reference), scores, proba)
        self._run(self.reference[None])

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
        """The decoder as a JSON-able header and plain arrays (see :mod:`.io`).

        The embedded linear decoder's arrays are prefixed ``linear_`` and its
        header is nested under ``"linear"``.
        """
        lin_meta, lin_arrays = self.linear.to_arrays()
        meta = {
            "n_channels": self.n_channels,
            "ch_names": None if self.ch_names is None else list(self.ch_names),
            "sfreq": self.sfreq,
            "estimator": self.estimator,
            "linear": lin_meta,
        }
        arrays = {"reference": self.reference, "reference_isqrt": self.reference_isqrt}
        arrays.update({f"linear_{k}": v for k, v in lin_arrays.items()})
        return meta, arrays

    @classmethod
    def from_arrays(
        cls, meta: dict[str, Any], arrays: dict[str, NDArray[Any]], where: str = "decoder"
    ) -> TangentSpaceDecoder:
        """Rebuild a decoder from :meth:`to_arrays` output, checking every field.

        Raises
        ------
        ConfigError
            ``"<where>: <problem>"`` on a missing field or inconsistent arrays.
        """
        require(where, meta, ("n_channels", "ch_names", "sfreq", "estimator", "linear"))
        if not isinstance(meta["linear"], dict):
            raise ConfigError(f"{where}: header field 'linear' must be an object")
        require_arrays(where, arrays, _TS_ARRAYS)
        require_arrays(where, arrays, ("reference", "reference_isqrt"), floating=True)
        lin_arrays = {k[len("linear_"):]: v for k, v in arrays.items() if k.startswith("linear_")}
        linear = LinearDecoder.from_arrays(meta["linear"], lin_arrays, where=f"{where} (linear)")
        dec = checked(where, lambda: cls(
            reference=arrays["reference"],
            reference_isqrt=arrays["reference_isqrt"],
            linear=linear,
            ch_names=meta["ch_names"],
            sfreq=meta["sfreq"],
            estimator=meta["estimator"],
        ))
        if dec.n_channels != meta["n_channels"]:
            raise ConfigError(
                f"{where}: header says {meta['n_channels']} channels, the reference is "
                f"{dec.n_channels}x{dec.n_channels}"
            )
        return dec

    file_format: ClassVar[str] = _TS_FORMAT
    file_arrays: ClassVar[tuple[str, ...]] = _TS_ARRAYS
