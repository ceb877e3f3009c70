"""Common spatial patterns (CSP), filter-bank CSP and their online log-variance kernels.

CSP is fitted offline exactly as ``mne.decoding.CSP`` (MNE 1.13) with
``transform_into="average_power"``, ``log=True``, ``norm_trace=False`` does
it; only the spatial filters and class labels are kept. Online, one
time-major window ``(n_times, n_channels)`` becomes its feature vector
``log(mean_t (w_k . x_t)^2)`` through :func:`logvar`, a numba kernel that
writes into a preallocated output. :class:`CSPDecoder` chains those
features with a :class:`~rtneuro.decoders.linear.LinearDecoder`. Files are
plain arrays plus a JSON header (:mod:`.io`), never pickle.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import numpy as np
import scipy.linalg
from numba import njit
from numpy.typing import ArrayLike, NDArray

from rtneuro.errors import ConfigError, did_you_mean

from .io import ArrayFile, checked, require, require_arrays
from .linear import LinearDecoder, linear_infer_batch

__all__ = [
    "CSP",
    "CSPDecoder",
    "FilterBankCSP",
    "fbcsp_logvar",
    "logvar",
    "logvar_batch",
    "logvar_channels",
]

logger = logging.getLogger(__name__)

_COV_EST = ("concat", "epoch")
_ORDERS = ("mutual_info", "alternate")
_CSP_FORMAT = "rtneuro.csp"
_FBCSP_FORMAT = "rtneuro.fbcsp"
_DEC_FORMAT = "rtneuro.csp_decoder"
_CSP_ARRAYS = ("filters", "patterns", "evals", "classes")
_FB_ARRAYS = (*_CSP_ARRAYS, "selected")
_LIN_PREFIX = "lin_"


# --------------------------------------------------------------------------- kernels


@njit(inline="always", cache=True, nogil=True)
def _mean_power(win, w):  # pragma: no cover - compiled
    """Mean over time of ``(w . win[t])**2`` for one filter row."""
    n_times, n_channels = win.shape
    acc = 0.0
    for t in range(n_times):
        y = 0.0
        for c in range(n_channels):
            y += w[c] * win[t, c]
        acc += y * y
    return acc / n_times


@njit(inline="always", cache=True, nogil=True)
def _finish_log(out):  # pragma: no cover - compiled
    """Log of the mean powers in ``out``; all NaN if one power is not finite."""
    n = out.shape[0]
    for k in range(n):
        if not math.isfinite(out[k]):
            for j in range(n):
                out[j] = np.nan
            return False
    for k in range(n):
        out[k] = math.log(out[k]) if out[k] > 0.0 else -np.inf
    return True


@njit(cache=True, nogil=True)
def logvar(win, filters, out):  # pragma: no cover - compiled
    """Log mean power of spatially filtered signals of one window.

    Parameters
    ----------
    win : ndarray of float64, shape (n_times, n_channels)
        Window, time-major as the service buffers it.
    filters : ndarray of float64, shape (n_components, n_channels)
        Spatial filters, one per row.
    out : ndarray of float64, shape (n_components,)
        Output: ``log(mean_t (filters[k] @ win[t])**2)``.

    Returns
    -------
    ok : bool
        False when the window is not finite (``out`` is then all NaN).

    Notes
    -----
    The mean is not subtracted, as in ``mne.decoding.CSP.transform``
    (``np.log((filters @ X)**2).mean(axis=-1))``); a band-passed signal has
    zero mean anyway. A power of exactly zero gives ``-inf`` as in MNE.
    Reference: Blankertz et al. (2008), IEEE Signal Process. Mag. 25(1), 41-56.
    """
    for k in range(filters.shape[0]):
        out[k] = _mean_power(win, filters[k])
    return _finish_log(out)


@njit(cache=True, nogil=True)
def logvar_channels(win, out):  # pragma: no cover - compiled
    """Per-channel log mean power of one window (no spatial filter).

    Parameters
    ----------
    win : ndarray of float64, shape (n_times, n_channels)
        Window, time-major.
    out : ndarray of float64, shape (n_channels,)
        Output: ``log(mean_t win[t, c]**2)``.

    Returns
    -------
    ok : bool
        False when the window is not finite (``out`` is then all NaN).

    Notes
    -----
    Bit-identical to :func:`logvar` with identity filters; like it, the mean
    is not subtracted (log-variance of a zero-mean, band-passed signal).
    """
    n_times, n_channels = win.shape
    for c in range(n_channels):
        out[c] = 0.0
    for t in range(n_times):
        for c in range(n_channels):
            y = win[t, c]
            out[c] += y * y
    for c in range(n_channels):
        out[c] = out[c] / n_times
    return _finish_log(out)


@njit(cache=True, nogil=True)
def logvar_batch(X, filters, out):  # pragma: no cover - compiled
    """Apply :func:`logvar` to each window of ``X``.

    Parameters
    ----------
    X : ndarray of float64, shape (n_epochs, n_times, n_channels)
        Windows, time-major.
    filters : ndarray of float64, shape (n_components, n_channels)
        Spatial filters.
    out : ndarray of float64, shape (n_epochs, n_components)
        Output; row ``i`` is bit-identical to ``logvar(X[i], filters, out[i])``.
    """
    for i in range(X.shape[0]):
        for k in range(filters.shape[0]):
            out[i, k] = _mean_power(X[i], filters[k])
        _finish_log(out[i])


@njit(cache=True, nogil=True)
def fbcsp_logvar(wins, band_of, filters, out):  # pragma: no cover - compiled
    """Log mean power of the selected filter-bank CSP components of one window.

    Parameters
    ----------
    wins : ndarray of float64, shape (n_bands, n_times, n_channels)
        The window filtered in each band, time-major.
    band_of : ndarray of int64, shape (n_features,)
        Band of each selected feature.
    filters : ndarray of float64, shape (n_features, n_channels)
        Spatial filter of each selected feature.
    out : ndarray of float64, shape (n_features,)
        Output: ``log(mean_t (filters[j] @ wins[band_of[j], t])**2)``.

    Returns
    -------
    ok : bool
        False when a used band is not finite (``out`` is then all NaN).

    Notes
    -----
    Only the selected components are computed. Each feature equals the
    corresponding :func:`logvar` output bit for bit.
    """
    for j in range(filters.shape[0]):
        out[j] = _mean_power(wins[band_of[j]], filters[j])
    return _finish_log(out)


@njit(cache=True, nogil=True)
def fbcsp_logvar_batch(X, band_of, filters, out):  # pragma: no cover - compiled
    """Apply :func:`fbcsp_logvar` to each epoch.

    Parameters
    ----------
    X : ndarray of float64, shape (n_epochs, n_bands, n_times, n_channels)
        Epochs, band-filtered, time-major.
    band_of, filters
        As in :func:`fbcsp_logvar`.
    out : ndarray of float64, shape (n_epochs, n_features)
        Output; row ``i`` is bit-identical to ``fbcsp_logvar(X[i], ...)``.
    """
    for i in range(X.shape[0]):
        for j in range(filters.shape[0]):
            out[i, j] = _mean_power(X[i, band_of[j]], filters[j])
        _finish_log(out[i])


# --------------------------------------------------------------------------- fitting


def _data_rank(X: NDArray[np.float64]) -> int:
    """Rank of the concatenated epochs as MNE estimates it (tol ``"auto"``)."""
    data = np.concatenate(list(X), axis=1)
    s = scipy.linalg.svdvals(data)
    tol = s.shape[-1] * s.max() * np.finfo(np.float64).eps
    return int((s > tol).sum())


def _principal(C: NDArray[np.float64], rank: int) -> NDArray[np.float64]:
    """Rows spanning the ``rank``-dimensional principal subspace of ``C``."""
    _, vec = scipy.linalg.eigh(C)
    return np.ascontiguousarray(vec[:, -rank:].T)


def _block_cov(data: NDArray[np.float64], reg: float | str | None, rank: int) -> NDArray[np.float64]:
    """Covariance of ``(n_channels, n_samples)`` data as MNE's ``_regularized_covariance``.

    Uncentered (``assume_centered=True``) but divided by ``n_samples - 1``
    as MNE does; computed in the data's principal subspace when it is rank
    deficient, then mapped back.
    """
    from sklearn.covariance import ledoit_wolf_shrinkage, shrunk_covariance

    n_channels, n_samples = data.shape
    proj = None
    if rank < n_channels:
        proj = _principal(data @ data.T, rank)
        data = proj @ data
    cov = data @ data.T / n_samples
    if reg is not None:
        if reg == "ledoit_wolf":
            shrink = float(ledoit_wolf_shrinkage(data.T, assume_centered=True))
        else:
            shrink = float(reg)
        cov = shrunk_covariance(cov, shrinkage=shrink)
    if proj is not None:
        cov = proj.T @ cov @ proj
    cov = cov * (n_samples / max(n_samples - 1, 1))  # MNE "undoes the bias" here too
    return np.asarray(cov, dtype=np.float64)


def _ajd_pham(covs: NDArray[np.float64], eps: float = 1e-6, max_iter: int = 15) -> NDArray[Any]:
    """Pham's approximate joint diagonalization, as ``mne.decoding.csp._ajd_pham``.

    Returns the diagonalizer ``V`` (rows are filters). Pham (2001), SIAM J.
    Matrix Anal. Appl. 22(4), 1136-1152.
    """
    n_mat = covs.shape[0]
    A = np.concatenate(covs, axis=0).T
    n, n_m = A.shape
    V = np.eye(n)
    epsilon = n * (n - 1) * eps
    for _ in range(max_iter):
        decr = 0.0
        for ii in range(1, n):
            for jj in range(ii):
                Ii = np.arange(ii, n_m, n)
                Ij = np.arange(jj, n_m, n)
                c1 = A[ii, Ii]
                c2 = A[jj, Ij]
                g12 = np.mean(A[ii, Ij] / c1)
                g21 = np.mean(A[ii, Ij] / c2)
                omega21 = np.mean(c1 / c2)
                omega12 = np.mean(c2 / c1)
                omega = np.sqrt(omega12 * omega21)
                tmp = np.sqrt(omega21 / omega12)
                tmp1 = (tmp * g12 + g21) / (omega + 1)
                tmp2 = (tmp * g12 - g21) / max(omega - 1, 1e-9)
                h12 = tmp1 + tmp2
                h21 = np.conj((tmp1 - tmp2) / tmp)
                decr += n_mat * (g12 * np.conj(h12) + g21 * h21) / 2.0
                tmp = 1 + 1.0j * 0.5 * np.imag(h12 * h21)
                tmp = np.real(tmp + np.sqrt(tmp**2 - h12 * h21))
                tau = np.array([[1, -h12 / tmp], [-h21 / tmp, 1]])
                A[[ii, jj], :] = np.dot(tau, A[[ii, jj], :])
                blk = np.c_[A[:, Ii], A[:, Ij]]
                blk = np.reshape(blk, (n * n_mat, 2), order="F")
                blk = np.dot(blk, tau.T)
                blk = np.reshape(blk, (n, n_mat * 2), order="F")
                A[:, Ii] = blk[:, :n_mat]
                A[:, Ij] = blk[:, n_mat:]
                V[[ii, jj], :] = np.dot(tau, V[[ii, jj], :])
        if decr < epsilon:
            break
    return V


def _check_option(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(
            f"{name}={value!r} is not one of {list(options)}{did_you_mean(str(value), options)}"
        )


def _check_reg(reg: Any) -> float | str | None:
    if reg is None or reg == "empirical":
        return None
    if isinstance(reg, str):
        if reg != "ledoit_wolf":
            raise ConfigError(
                f"reg={reg!r} is not supported; use None, a shrinkage in [0, 1] or "
                f"'ledoit_wolf'{did_you_mean(reg, ('ledoit_wolf', 'empirical'))}"
            )
        return reg
    if isinstance(reg, bool) or not isinstance(reg, int | float) or not 0.0 <= reg <= 1.0:
        raise ConfigError(f"reg={reg!r} must be None, a shrinkage in [0, 1] or 'ledoit_wolf'")
    return float(reg)


def _fit_csp_filters(
    X: NDArray[np.float64],
    y: NDArray[Any],
    reg: float | str | None,
    cov_est: str,
    component_order: str,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[Any]]:
    """All CSP filters, patterns and eigenvalues, ordered as MNE 1.13 orders them."""
    classes, y_idx = np.unique(y, return_inverse=True)
    n_classes = classes.shape[0]
    n_channels = X.shape[1]
    rank = _data_rank(X)
    covs = []
    weights = []
    for ci in range(n_classes):
        Xc = X[y_idx == ci]
        if cov_est == "concat":
            cov = _block_cov(Xc.transpose(1, 0, 2).reshape(n_channels, -1), reg, rank)
            weight = n_channels
        else:
            cov = np.sum([_block_cov(e, reg, rank) for e in Xc], axis=0) / len(Xc)
            weight = len(Xc)
        covs.append(cov)
        weights.append(weight)
    if rank < n_channels and (n_classes > 2 or reg == "ledoit_wolf"):
        logger.warning(
            "data rank %d < %d channels: CSP with %d classes and reg=%r is not verified "
            "equal to MNE's on rank-deficient data",
            rank, n_channels, n_classes, reg,
        )
    C = np.stack(covs)
    C_ref = C.mean(0)
    restr = np.eye(n_channels) if rank == n_channels else _principal(C_ref, rank)
    if n_classes == 2:
        S = restr @ C[0] @ restr.T
        R = restr @ C[1] @ restr.T
        evals, ev = scipy.linalg.eigh(S, S + R)
        evecs = restr.T @ ev
        if component_order == "mutual_info":
            ix = np.argsort(np.abs(evals - 0.5))[::-1]
        else:
            i = np.argsort(evals)
            ix = np.empty_like(i)
            ix[1::2] = i[: len(i) // 2]
            ix[0::2] = i[len(i) // 2 :][::-1]
        evals = evals[ix]
    else:
        Cr = np.array([restr @ c @ restr.T for c in C], float)
        evecs = _ajd_pham(Cr).T
        w = np.asarray(weights, dtype=float)
        mean_cov = np.average(Cr, axis=0, weights=w)
        for ii in range(evecs.shape[1]):
            evecs[:, ii] /= np.sqrt(evecs[:, ii].T @ mean_cov @ evecs[:, ii])
        evecs = restr.T @ evecs
        probas = w / w.sum()
        mi = []
        for jj in range(evecs.shape[1]):
            aa, bb = 0.0, 0.0
            for cov, p in zip(C, probas, strict=True):
                tmp = evecs[:, jj].T @ cov @ evecs[:, jj]
                aa += p * np.log(np.sqrt(tmp))
                bb += p * (tmp**2 - 1)
            mi.append(-(aa + (3.0 / 16) * (bb**2)))
        ix = np.argsort(mi)[::-1]
        evals = np.zeros(0)
    evecs = evecs[:, ix]
    filters = np.ascontiguousarray(evecs.T, dtype=np.float64)
    patterns = np.ascontiguousarray(scipy.linalg.pinv(evecs), dtype=np.float64)
    return filters, patterns, np.ascontiguousarray(evals, dtype=np.float64), classes


def _classes(classes: ArrayLike, where: str = "classes") -> NDArray[Any]:
    c = np.asarray(classes)
    if c.dtype.kind == "O":
        c = c.astype(str)
    if c.dtype.kind not in "biufU" or c.ndim != 1 or c.shape[0] < 2:
        raise ConfigError(f"{where} must be a 1-D array of at least 2 numbers or strings, got {c!r}")
    if len(set(c.tolist())) != c.shape[0]:
        raise ConfigError(f"{where} must be distinct, got {c.tolist()!r}")
    return c


def _epochs(X: ArrayLike, ndim: int, what: str) -> NDArray[np.float64]:
    x = np.asarray(X, dtype=np.float64)
    if x.ndim != ndim:
        raise ConfigError(f"{what} must have {ndim} dimensions, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ConfigError(f"{what} must be finite to fit CSP")
    return x


def _float_array(arrays: dict[str, NDArray[Any]], key: str, ndim: int, where: str) -> NDArray[np.float64]:
    a = arrays[key]
    if a.dtype.kind != "f" or a.ndim != ndim:
        raise ConfigError(f"{where}: {key!r} must be a {ndim}-D float array, got {a.dtype} {a.shape}")
    if not np.isfinite(a).all():
        raise ConfigError(f"{where}: {key!r} must be finite")
    return np.ascontiguousarray(a, dtype=np.float64)


# --------------------------------------------------------------------------- CSP


class CSP(ArrayFile):
    """Common spatial patterns with log-power features, applied online by :func:`logvar`.

    Parameters
    ----------
    filters : ndarray, shape (n_components, n_channels)
        Spatial filters (MNE's ``filters_[:n_components]``).
    patterns : ndarray, shape (n_components, n_channels)
        Spatial patterns (MNE's ``patterns_[:n_components]``).
    evals : ndarray, shape (n_components,) or (0,)
        Generalized eigenvalues of the kept components (two classes), empty
        for the multiclass joint diagonalization.
    classes : ndarray, shape (n_classes,)
        Class labels the filters were fitted on.
    reg : None | float | "ledoit_wolf"
        Covariance regularization used in fitting (informative).
    cov_est : {"concat", "epoch"}
        Covariance estimation used in fitting (informative).
    component_order : {"mutual_info", "alternate"}
        Component ordering used in fitting (informative).

    Notes
    -----
    Koles (1991), Electroencephalogr. Clin. Neurophysiol. 79(6); Ramoser,
    Müller & Pfurtscheller (2000), IEEE Trans. Rehabil. Eng. 8(4); Blankertz
    et al. (2008), IEEE Signal Process. Mag. 25(1). Fitting reproduces
    ``mne.decoding.CSP(reg, log=True, norm_trace=False, cov_est)`` of MNE
    1.13: uncentered class covariances (restricted to the data's principal
    subspace when rank deficient), ``eigh(C_0, C_0 + C_1)`` ordered by
    ``|lambda - 0.5|`` for two classes, Pham's joint diagonalization ordered
    by approximate mutual information (Grosse-Wentrup & Buss 2008) for more.
    Filters are equal to MNE's up to the sign of each row, features equal.
    """

    def __init__(
        self,
        *,
        filters: ArrayLike,
        patterns: ArrayLike,
        evals: ArrayLike,
        classes: ArrayLike,
        reg: float | str | None = None,
        cov_est: str = "concat",
        component_order: str = "mutual_info",
    ) -> None:
        f = np.ascontiguousarray(filters, dtype=np.float64)
        if f.ndim != 2 or f.shape[0] < 1 or f.shape[0] > f.shape[1]:
            raise ConfigError(
                f"filters must have shape (n_components, n_channels) with "
                f"1 <= n_components <= n_channels, got {f.shape}"
            )
        p = np.ascontiguousarray(patterns, dtype=np.float64)
        if p.shape != f.shape:
            raise ConfigError(f"patterns must have shape {f.shape}, got {p.shape}")
        e = np.ascontiguousarray(np.atleast_1d(np.asarray(evals, dtype=np.float64)))
        if e.shape not in ((0,), (f.shape[0],)):
            raise ConfigError(f"evals must have shape (0,) or ({f.shape[0]},), got {e.shape}")
        if not (np.isfinite(f).all() and np.isfinite(p).all() and np.isfinite(e).all()):
            raise ConfigError("filters, patterns and evals must be finite")
        _check_option("cov_est", cov_est, _COV_EST)
        _check_option("component_order", component_order, _ORDERS)
        self.filters = f
        self.patterns = p
        self.evals = e
        self.classes = _classes(classes)
        self.reg = _check_reg(reg)
        self.cov_est = cov_est
        self.component_order = component_order

    @property
    def n_components(self) -> int:
        """Number of spatial filters (features)."""
        return int(self.filters.shape[0])

    @property
    def n_channels(self) -> int:
        """Number of input channels."""
        return int(self.filters.shape[1])

    @property
    def n_features(self) -> int:
        """Length of the feature vector (``n_components``)."""
        return self.n_components

    @classmethod
    def fit(
        cls,
        X: ArrayLike,
        y: ArrayLike,
        *,
        n_components: int = 4,
        reg: float | str | None = None,
        cov_est: str = "concat",
        component_order: str = "mutual_info",
    ) -> CSP:
        """Fit CSP filters on epochs, as ``mne.decoding.CSP(...).fit(X, y)``.

        Parameters
        ----------
        X : array-like, shape (n_epochs, n_channels, n_times)
            Band-passed epochs (MNE's layout).
        y : array-like, shape (n_epochs,)
            Class of each epoch (at least two classes).
        n_components : int
            Number of filters kept.
        reg : None | float | "ledoit_wolf"
            Covariance shrinkage: None (empirical), a value in [0, 1], or
            Ledoit-Wolf; as MNE's ``reg``.
        cov_est : {"concat", "epoch"}
            Class covariance of the concatenated epochs, or mean of per-epoch
            covariances.
        component_order : {"mutual_info", "alternate"}
            Component ordering (``"alternate"`` needs two classes).

        Returns
        -------
        csp : CSP
        """
        x = _epochs(X, 3, "X (n_epochs, n_channels, n_times)")
        labels = np.asarray(y)
        if labels.shape != (x.shape[0],):
            raise ConfigError(f"y must have shape ({x.shape[0]},), got {labels.shape}")
        regv = _check_reg(reg)
        _check_option("cov_est", cov_est, _COV_EST)
        _check_option("component_order", component_order, _ORDERS)
        n_classes = np.unique(labels).shape[0]
        if n_classes < 2:
            raise ConfigError(f"CSP needs at least 2 classes, got {n_classes}")
        if n_classes > 2 and component_order == "alternate":
            raise ConfigError(
                f"component_order='alternate' needs 2 classes, got {n_classes}; use 'mutual_info'"
            )
        if isinstance(n_components, bool) or not isinstance(n_components, int | np.integer) or not 1 <= n_components <= x.shape[1]:
            raise ConfigError(f"n_components={n_components!r} must be an int in [1, {x.shape[1]}]")
        filters, patterns, evals, classes = _fit_csp_filters(x, labels, regv, cov_est, component_order)
        k = int(n_components)
        return cls(
            filters=filters[:k],
            patterns=patterns[:k],
            evals=evals[:k],
            classes=classes,
            reg=regv,
            cov_est=cov_est,
            component_order=component_order,
        )

    @classmethod
    def from_mne(cls, csp: Any) -> CSP:
        """Keep the arrays of a fitted ``mne.decoding.CSP`` (log-power, single GED)."""
        if getattr(csp, "filters_", None) is None:
            raise ConfigError("the MNE CSP is not fitted; call fit(X, y) first")
        if csp.transform_into != "average_power" or csp.log is False:
            raise ConfigError(
                "only CSP(transform_into='average_power', log=True or None) can be imported"
            )
        if np.ndim(csp.filters_) != 2:
            raise ConfigError("only single-decomposition MNE CSP objects can be imported")
        k = int(csp.n_components)
        ev = np.zeros(0) if csp.evals_ is None else np.asarray(csp.evals_)[:k]
        return cls(
            filters=csp.filters_[:k],
            patterns=csp.patterns_[:k],
            evals=ev,
            classes=csp.classes_,
            reg=csp.reg,
            cov_est=csp.cov_est,
            component_order=csp.component_order,
        )

    # ---------------------------------------------------------------- features

    def features(self, win: NDArray[np.float64], out: NDArray[np.float64]) -> bool:
        """Log-power features of one time-major window into ``out`` (the hot path).

        Parameters
        ----------
        win : ndarray of float64, shape (n_times, n_channels)
            Window, C-contiguous.
        out : ndarray of float64, shape (n_components,)
            Output features (all NaN when the window is not finite).

        Returns
        -------
        ok : bool
            False when the window is not finite.
        """
        return bool(logvar(win, self.filters, out))

    def transform(self, X: ArrayLike) -> NDArray[np.float64]:
        """Features of epochs, equal to MNE's ``CSP.transform``.

        Parameters
        ----------
        X : array-like, shape (n_epochs, n_channels, n_times)
            Epochs in MNE's layout.

        Returns
        -------
        features : ndarray, shape (n_epochs, n_components)
            Row ``i`` equals :meth:`features` of ``X[i].T`` bit for bit.
        """
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 3 or x.shape[1] != self.n_channels:
            raise ConfigError(
                f"X must have shape (n_epochs, {self.n_channels}, n_times), got {x.shape}"
            )
        xt = np.ascontiguousarray(x.transpose(0, 2, 1))
        out = np.empty((x.shape[0], self.n_components))
        logvar_batch(xt, self.filters, out)
        return out

    def warmup(self) -> None:
        """Compile the kernels and run them once."""
        out = np.empty(self.n_components)
        self.features(np.zeros((2, self.n_channels)), out)
        self.transform(np.zeros((1, self.n_channels, 2)))
        logvar_channels(np.zeros((2, self.n_channels)), np.empty(self.n_channels))

    # ---------------------------------------------------------------- files

    def _meta(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "n_channels": self.n_channels,
            "reg": self.reg,
            "cov_est": self.cov_est,
            "component_order": self.component_order,
        }

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
        """The CSP as a JSON-able header and plain arrays (see :mod:`.io`)."""
        arrays = {
            "filters": self.filters,
            "patterns": self.patterns,
            "evals": self.evals,
            "classes": self.classes,
        }
        return self._meta(), arrays

    @classmethod
    def from_arrays(
        cls, meta: dict[str, Any], arrays: dict[str, NDArray[Any]], where: str = "csp"
    ) -> CSP:
        """Rebuild a CSP from :meth:`to_arrays` output, checking every field.

        Raises
        ------
        ConfigError
            ``"<where>: <problem>"`` on a missing field or inconsistent arrays.
        """
        require(where, meta, ("n_components", "n_channels", "reg", "cov_est", "component_order"))
        require_arrays(where, arrays, _CSP_ARRAYS)
        filters = _float_array(arrays, "filters", 2, where)
        patterns = _float_array(arrays, "patterns", 2, where)
        evals = _float_array(arrays, "evals", 1, where)
        if filters.shape != (meta["n_components"], meta["n_channels"]):
            raise ConfigError(
                f"{where}: header says {meta['n_components']} components of "
                f"{meta['n_channels']} channels, filters have shape {filters.shape}"
            )
        return checked(where, lambda: cls(
            filters=filters,
            patterns=patterns,
            evals=evals,
            classes=arrays["classes"],
            reg=meta["reg"],
            cov_est=meta["cov_est"],
            component_order=meta["component_order"],
        ))

    file_format: ClassVar[str] = _CSP_FORMAT
    file_arrays: ClassVar[tuple[str, ...]] = _CSP_ARRAYS
    file_what: ClassVar[str] = "csp"


# --------------------------------------------------------------------------- FBCSP


class FilterBankCSP(ArrayFile):
    """Filter-bank CSP: one CSP per band, log-power features, optional MI selection.

    Parameters
    ----------
    csps : sequence of CSP
        One fitted CSP per band, all on the same channels and classes.
    selected : array-like of int, shape (n_features,) | None
        Indices into the concatenated ``n_bands * n_components`` feature
        vector (band-major), strictly increasing; None keeps all.

    Notes
    -----
    Ang, Chin, Zhang & Guan (2008), "Filter Bank Common Spatial Pattern
    (FBCSP) in brain-computer interface", IJCNN, 2390-2397. Features are
    selected by mutual information with the class (scikit-learn's
    ``mutual_info_classif``, seeded) instead of the paper's MIBIF; the
    online kernel :func:`fbcsp_logvar` computes only the selected features.
    The caller filters the signal into the bands.
    """

    def __init__(self, csps: list[CSP], selected: ArrayLike | None = None) -> None:
        if len(csps) < 1:
            raise ConfigError("FilterBankCSP needs at least one band")
        first = csps[0]
        for b, c in enumerate(csps):
            if c.filters.shape != first.filters.shape:
                raise ConfigError(
                    f"band {b} has filters of shape {c.filters.shape}, band 0 {first.filters.shape}"
                )
            if c.classes.tolist() != first.classes.tolist():
                raise ConfigError(f"band {b} was fitted on other classes than band 0")
        self.csps = list(csps)
        n_all = len(csps) * first.n_components
        if selected is None:
            sel = np.arange(n_all, dtype=np.int64)
        else:
            s = np.asarray(selected)
            if s.dtype.kind not in "iu" or s.ndim != 1 or s.shape[0] < 1:
                raise ConfigError(f"selected must be a non-empty 1-D integer array, got {s!r}")
            sel = s.astype(np.int64)
            if sel.min() < 0 or sel.max() >= n_all or (np.diff(sel) <= 0).any():
                raise ConfigError(
                    f"selected must be strictly increasing indices in [0, {n_all}), got {sel.tolist()}"
                )
        self.selected = np.ascontiguousarray(sel)
        k = first.n_components
        self.band_of = np.ascontiguousarray(self.selected // k)
        all_filters = np.concatenate([c.filters for c in csps])
        self.sel_filters = np.ascontiguousarray(all_filters[self.selected])

    @property
    def n_bands(self) -> int:
        """Number of bands."""
        return len(self.csps)

    @property
    def n_channels(self) -> int:
        """Number of input channels."""
        return self.csps[0].n_channels

    @property
    def n_components(self) -> int:
        """Filters per band."""
        return self.csps[0].n_components

    @property
    def n_features(self) -> int:
        """Length of the (selected) feature vector."""
        return int(self.selected.shape[0])

    @property
    def classes(self) -> NDArray[Any]:
        """Class labels."""
        return self.csps[0].classes

    @classmethod
    def fit(
        cls,
        X: ArrayLike,
        y: ArrayLike,
        *,
        n_components: int = 4,
        k_best: int | None = None,
        reg: float | str | None = None,
        cov_est: str = "concat",
        component_order: str = "mutual_info",
        random_state: int = 0,
    ) -> FilterBankCSP:
        """Fit one CSP per band and optionally keep the ``k_best`` features.

        Parameters
        ----------
        X : array-like, shape (n_bands, n_epochs, n_channels, n_times)
            Epochs filtered in each band.
        y : array-like, shape (n_epochs,)
            Class of each epoch.
        n_components : int
            Filters per band.
        k_best : int | None
            Keep the ``k_best`` features of highest mutual information with
            ``y`` (``mutual_info_classif(..., random_state=random_state)``);
            None keeps all.
        reg, cov_est, component_order
            As in :meth:`CSP.fit`.
        random_state : int
            Seed of the mutual information estimate.

        Returns
        -------
        fbcsp : FilterBankCSP
        """
        x = _epochs(X, 4, "X (n_bands, n_epochs, n_channels, n_times)")
        csps = [
            CSP.fit(
                xb, y, n_components=n_components, reg=reg, cov_est=cov_est,
                component_order=component_order,
            )
            for xb in x
        ]
        fb = cls(csps)
        if k_best is None:
            return fb
        if isinstance(k_best, bool) or not isinstance(k_best, int | np.integer) or not 1 <= k_best <= fb.n_features:
            raise ConfigError(f"k_best={k_best!r} must be None or an int in [1, {fb.n_features}]")
        from sklearn.feature_selection import mutual_info_classif

        feats = fb.transform(x)
        mi = mutual_info_classif(feats, np.asarray(y), random_state=random_state)
        best = np.sort(np.argsort(-mi, kind="stable")[: int(k_best)])
        return cls(csps, selected=best)

    def features(self, wins: NDArray[np.float64], out: NDArray[np.float64]) -> bool:
        """Selected log-power features of one window into ``out`` (the hot path).

        Parameters
        ----------
        wins : ndarray of float64, shape (n_bands, n_times, n_channels)
            The window filtered in each band, time-major, C-contiguous.
        out : ndarray of float64, shape (n_features,)
            Output features (all NaN when a used band is not finite).

        Returns
        -------
        ok : bool
        """
        return bool(fbcsp_logvar(wins, self.band_of, self.sel_filters, out))

    def transform(self, X: ArrayLike) -> NDArray[np.float64]:
        """Selected features of epochs.

        Parameters
        ----------
        X : array-like, shape (n_bands, n_epochs, n_channels, n_times)
            Epochs filtered in each band (MNE's layout per band).

        Returns
        -------
        features : ndarray, shape (n_epochs, n_features)
            Row ``i`` equals :meth:`features` of that epoch bit for bit.
        """
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 4 or x.shape[0] != self.n_bands or x.shape[2] != self.n_channels:
            raise ConfigError(
                f"X must have shape ({self.n_bands}, n_epochs, {self.n_channels}, n_times), "
                f"got {x.shape}"
            )
        xt = np.ascontiguousarray(x.transpose(1, 0, 3, 2))
        out = np.empty((x.shape[1], self.n_features))
        fbcsp_logvar_batch(xt, self.band_of, self.sel_filters, out)
        return out

    def warmup(self) -> None:
        """Compile the kernels and run them once."""
        self.features(np.zeros((self.n_bands, 2, self.n_channels)), np.empty(self.n_features))
        self.transform(np.zeros((self.n_bands, 1, self.n_channels, 2)))

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
        """The filter bank as a JSON-able header and plain arrays."""
        first = self.csps[0]
        meta = {**first._meta(), "n_bands": self.n_bands}
        arrays = {
            "filters": np.stack([c.filters for c in self.csps]),
            "patterns": np.stack([c.patterns for c in self.csps]),
            "evals": np.stack([c.evals for c in self.csps]),
            "classes": first.classes,
            "selected": self.selected,
        }
        return meta, arrays

    @classmethod
    def from_arrays(
        cls, meta: dict[str, Any], arrays: dict[str, NDArray[Any]], where: str = "fbcsp"
    ) -> FilterBankCSP:
        """Rebuild a filter bank from :meth:`to_arrays` output, checking every field."""
        if "n_bands" not in meta:
            raise ConfigError(f"{where}: header lacks 'n_bands'")
        require_arrays(where, arrays, _FB_ARRAYS)
        filters = _float_array(arrays, "filters", 3, where)
        patterns = _float_array(arrays, "patterns", 3, where)
        evals = _float_array(arrays, "evals", 2, where)
        n_bands = meta["n_bands"]
        if filters.shape[0] != n_bands or patterns.shape[0] != n_bands or evals.shape[0] != n_bands:
            raise ConfigError(
                f"{where}: header says {n_bands} bands, arrays have "
                f"{filters.shape[0]}, {patterns.shape[0]}, {evals.shape[0]}"
            )
        csps = [
            CSP.from_arrays(
                meta,
                {"filters": filters[b], "patterns": patterns[b], "evals": evals[b],
                 "classes": arrays["classes"]},
                where=f"{where} band {b}",
            )
            for b in range(n_bands)
        ]
        try:
            return cls(csps, selected=arrays["selected"])
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc

    file_format: ClassVar[str] = _FBCSP_FORMAT
    file_arrays: ClassVar[tuple[str, ...]] = _FB_ARRAYS
    file_what: ClassVar[str] = "fbcsp"


# --------------------------------------------------------------------------- decoder


class CSPDecoder(ArrayFile):
    """CSP or filter-bank CSP features followed by a linear decoder.

    Parameters
    ----------
    features : CSP | FilterBankCSP
        Feature extractor.
    linear : LinearDecoder
        Classifier fitted on those features (LDA or logistic regression),
        over the same classes.

    Notes
    -----
    The online path is :func:`logvar` (or :func:`fbcsp_logvar`) then
    :func:`~rtneuro.decoders.linear.linear_infer`, both writing into
    preallocated buffers; this is the ``CSP -> LDA`` pipeline of MNE's
    motor-imagery example (Blankertz et al. 2008).
    """

    def __init__(self, features: CSP | FilterBankCSP, linear: LinearDecoder) -> None:
        if linear.classes is None:
            raise ConfigError("a CSPDecoder needs a classifier, got a ridge decoder")
        if linear.n_features != features.n_features:
            raise ConfigError(
                f"linear decoder expects {linear.n_features} features, CSP gives {features.n_features}"
            )
        if sorted(map(str, linear.classes.tolist())) != sorted(map(str, features.classes.tolist())):
            raise ConfigError(
                f"linear decoder classes {linear.classes.tolist()} differ from CSP classes "
                f"{features.classes.tolist()}"
            )
        self.csp = features
        self.linear = linear
        self.classes = linear.classes

    @property
    def is_filter_bank(self) -> bool:
        """True for filter-bank CSP features."""
        return isinstance(self.csp, FilterBankCSP)

    def buffers(self) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Preallocated ``(features, scores, proba)`` buffers for :meth:`infer`."""
        return np.zeros(self.csp.n_features), *self.linear.buffers()

    def infer(
        self,
        win: NDArray[np.float64],
        feats: NDArray[np.float64],
        scores: NDArray[np.float64],
        proba: NDArray[np.float64],
    ) -> int:
        """Decode one window into preallocated buffers (the hot path).

        Parameters
        ----------
        win : ndarray of float64, shape (n_times, n_channels) or (n_bands, n_times, n_channels)
            Time-major window (per band for a filter bank).
        feats : ndarray of float64, shape (n_features,)
            Output: log-power features.
        scores, proba : ndarray of float64
            Outputs of :meth:`LinearDecoder.infer`.

        Returns
        -------
        index : int
            Index into :attr:`classes`, or -1 when the window is not finite
            (features and probabilities are then NaN).
        """
        self.csp.features(win, feats)
        return self.linear.infer(feats, scores, proba)

    def _run(self, X: ArrayLike) -> tuple[NDArray[Any], NDArray[Any], NDArray[np.int64]]:
        feats = self.csp.transform(X)
        n = feats.shape[0]
        scores = np.empty((n, self.linear.n_out))
        proba = np.empty((n, self.linear.n_proba))
        index = np.empty(n, dtype=np.int64)
        lin = self.linear
        linear_infer_batch(lin.coef, lin.intercept, feats, lin.link, scores, proba, index)
        return scores, proba, index

    def predict_index(self, X: ArrayLike) -> NDArray[np.int64]:
        """Class index per epoch (-1 for a non-finite epoch).

        Parameters
        ----------
        X : array-like, shape (n_epochs, n_channels, n_times) or (n_bands, n_epochs, n_channels, n_times)
            Epochs in MNE's layout (per band for a filter bank).
        """
        return self._run(X)[2]

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """Predicted labels; row ``i`` equals :meth:`infer` on epoch ``i``.

        Raises
        ------
        ConfigError
            When an epoch is not finite (no label can be given).
        """
        index = self.predict_index(X)
        if (index < 0).any():
            raise ConfigError(
                f"epoch {int(np.flatnonzero(index < 0)[0])} is not finite; no label; "
                "use predict_index() to get -1 instead"
            )
        return self.classes[index]

    def predict_proba(self, X: ArrayLike) -> NDArray[np.float64]:
        """Class probabilities per epoch, shape (n_epochs, n_classes) (NaN rows if not finite)."""
        return self._run(X)[1]

    def warmup(self) -> None:
        """Compile the kernels and run them once."""
        self.csp.warmup()
        self.linear.warmup()
        f, s, p = self.buffers()
        shape: tuple[int, ...] = (2, self.csp.n_channels)
        if isinstance(self.csp, FilterBankCSP):
            shape = (self.csp.n_bands, *shape)
        self.infer(np.zeros(shape), f, s, p)

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
        """The decoder as a JSON-able header and plain arrays."""
        cmeta, carrays = self.csp.to_arrays()
        lmeta, larrays = self.linear.to_arrays()
        if isinstance(self.csp, CSP):
            carrays = {**carrays, "selected": np.zeros(0, dtype=np.int64)}
        meta = {"features": "fbcsp" if self.is_filter_bank else "csp", "csp": cmeta, "linear": lmeta}
        arrays = {**carrays, **{_LIN_PREFIX + k: v for k, v in larrays.items()}}
        return meta, arrays

    @classmethod
    def from_arrays(
        cls, meta: dict[str, Any], arrays: dict[str, NDArray[Any]], where: str = "csp decoder"
    ) -> CSPDecoder:
        """Rebuild a decoder from :meth:`to_arrays` output, checking every field."""
        require(where, meta, ("features", "csp", "linear"))
        if not isinstance(meta["csp"], dict) or not isinstance(meta["linear"], dict):
            raise ConfigError(f"{where}: 'csp' and 'linear' header fields must be objects")
        lin_arrays = {k[len(_LIN_PREFIX):]: v for k, v in arrays.items() if k.startswith(_LIN_PREFIX)}
        csp_arrays = {k: v for k, v in arrays.items() if not k.startswith(_LIN_PREFIX)}
        features: CSP | FilterBankCSP
        if meta["features"] == "csp":
            features = CSP.from_arrays(meta["csp"], csp_arrays, where=where)
        elif meta["features"] == "fbcsp":
            features = FilterBankCSP.from_arrays(meta["csp"], csp_arrays, where=where)
        else:
            raise ConfigError(f"{where}: features={meta['features']!r} is not 'csp' or 'fbcsp'")
        linear = LinearDecoder.from_arrays(meta["linear"], lin_arrays, where=where)
        try:
            return cls(features, linear)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc

    file_format: ClassVar[str] = _DEC_FORMAT
    file_arrays: ClassVar[tuple[str, ...]] = (*_FB_ARRAYS, *(_LIN_PREFIX + k for k in ("coef", "intercept", "classes")))
