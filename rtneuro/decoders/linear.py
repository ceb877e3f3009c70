"""Linear decoders (LDA, logistic regression, ridge) applied online by a numba kernel.

The model is fitted offline with scikit-learn; :meth:`LinearDecoder.from_sklearn`
keeps only its arrays, and :func:`linear_infer` applies them to one feature
vector without allocating. Files are ``.npz`` archives of plain arrays plus a
JSON header, read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray

from rtneuro.errors import ConfigError, RtneuroError, did_you_mean

from .io import ArrayFile, checked, require, require_arrays

__all__ = [
    "LINK_IDENTITY",
    "LINK_LOGISTIC",
    "LINK_SOFTMAX",
    "LinearDecoder",
    "linear_infer",
    "linear_infer_batch",
    "training_hash",
]

logger = logging.getLogger(__name__)

#: Output link of a decoder: regression output, binary logistic, multiclass softmax.
LINK_IDENTITY = 0
LINK_LOGISTIC = 1
LINK_SOFTMAX = 2

_FORMAT = "rtneuro.linear_decoder"
_ARRAYS = ("coef", "intercept", "classes")
_KINDS = ("lda", "logreg", "ridge")


# --------------------------------------------------------------------------- kernels


@njit(inline="always", cache=True, nogil=True)
def _infer_row(coef, intercept, x, link, scores, proba):  # pragma: no cover - compiled
    """Scores, probabilities and class index of one feature vector."""
    n_out, n_feat = coef.shape
    finite = True
    for k in range(n_out):
        acc = 0.0
        for j in range(n_feat):
            acc += coef[k, j] * x[j]
        s = acc + intercept[k]
        scores[k] = s
        if not math.isfinite(s):
            finite = False
    if link == 0:  # LINK_IDENTITY
        return -1
    if not finite:
        for k in range(proba.shape[0]):
            proba[k] = np.nan
        return -1
    if link == 1:  # LINK_LOGISTIC
        d = scores[0]
        if d >= 0.0:
            p = 1.0 / (1.0 + math.exp(-d))
        else:
            e = math.exp(d)
            p = e / (1.0 + e)
        proba[0] = 1.0 - p
        proba[1] = p
        return 1 if d > 0.0 else 0
    # LINK_SOFTMAX: first maximum wins, as numpy.argmax
    best = 0
    top = scores[0]
    for k in range(1, n_out):
        if scores[k] > top:
            top = scores[k]
            best = k
    total = 0.0
    for k in range(n_out):
        e = math.exp(scores[k] - top)
        proba[k] = e
        total += e
    for k in range(n_out):
        proba[k] /= total
    return best


@njit(cache=True, nogil=True)
def linear_infer(coef, intercept, x, link, scores, proba):  # pragma: no cover - compiled
    """Apply a linear decoder to one feature vector.

    Parameters
    ----------
    coef : ndarray, shape (n_out, n_features)
        Weights, one row per output (``n_out == 1`` for a binary classifier).
    intercept : ndarray, shape (n_out,)
        Intercepts.
    x : ndarray, shape (n_features,)
        Feature vector.
    link : int
        ``LINK_IDENTITY`` (0, regression), ``LINK_LOGISTIC`` (1, binary) or
        ``LINK_SOFTMAX`` (2, multiclass).
    scores : ndarray, shape (n_out,)
        Output: decision function (regression output for the identity link).
    proba : ndarray, shape (n_proba,)
        Output: class probabilities; ``n_proba`` is 2 for the logistic link,
        ``n_out`` for softmax, 0 for identity.

    Returns
    -------
    index : int
        Index of the predicted class in ``classes``; -1 for the identity link
        or when a score is not finite (probabilities are then NaN).

    Notes
    -----
    ``scores = coef @ x + intercept``; the logistic link gives
    ``[1 - expit(s), expit(s)]`` and predicts class 1 when ``s > 0``; softmax
    subtracts the maximum before exponentiating and predicts the first
    maximum. These are the formulas of scikit-learn's
    ``LinearClassifierMixin.predict`` and of ``predict_proba`` in
    ``LinearDiscriminantAnalysis`` and ``LogisticRegression`` (1.9).
    """
    return _infer_row(coef, intercept, x, link, scores, proba)


@njit(cache=True, nogil=True)
def linear_infer_batch(
    coef, intercept, x, link, scores, proba, index
):  # pragma: no cover - compiled
    """Apply a linear decoder to each row of ``x``.

    Parameters
    ----------
    coef : ndarray, shape (n_out, n_features)
        Weights.
    intercept : ndarray, shape (n_out,)
        Intercepts.
    x : ndarray, shape (n_samples, n_features)
        Feature vectors, one per row.
    link : int
        Output link, as in :func:`linear_infer`.
    scores : ndarray, shape (n_samples, n_out)
        Output: decision function per row.
    proba : ndarray, shape (n_samples, n_proba)
        Output: probabilities per row.
    index : ndarray of int64, shape (n_samples,)
        Output: predicted class index per row (-1 as in :func:`linear_infer`).

    Notes
    -----
    Row ``i`` is bit-identical to ``linear_infer(coef, intercept, x[i], ...)``.
    """
    for i in range(x.shape[0]):
        index[i] = _infer_row(coef, intercept, x[i], link, scores[i], proba[i])


# --------------------------------------------------------------------------- helpers


def training_hash(X: ArrayLike, y: ArrayLike | None = None) -> str:
    """SHA-256 of training data (values, dtype and shape), as ``"sha256:<hex>"``.

    Parameters
    ----------
    X : array-like, shape (n_samples, n_features)
        Training features.
    y : array-like, shape (n_samples,) | None
        Training targets.
    """
    h = hashlib.sha256()
    for arr in (X, y):
        if arr is None:
            continue
        a = np.asarray(arr)
        if a.dtype.kind == "O":
            a = a.astype(str)
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    return "sha256:" + h.hexdigest()


def _classes_array(classes: ArrayLike) -> NDArray[Any]:
    """Class labels as a picklable-free array (numbers or unicode strings)."""
    c = np.asarray(classes)
    if c.dtype.kind == "O":
        if not all(isinstance(v, str) for v in c.tolist()):
            raise ConfigError(
                f"classes must be numbers or strings, got {c.tolist()!r}; "
                "encode the labels before fitting"
            )
        c = c.astype(str)
    if c.dtype.kind not in "biufU":
        raise ConfigError(f"classes of dtype {c.dtype} cannot be stored; use numbers or strings")
    return c


# --------------------------------------------------------------------------- decoder


class LinearDecoder(ArrayFile):
    """A fitted linear model reduced to arrays, applied online by a numba kernel.

    Parameters
    ----------
    kind : {"lda", "logreg", "ridge"}
        Which scikit-learn model the arrays come from.
    coef : ndarray, shape (n_out, n_features)
        Weights (``n_out == 1`` for a binary classifier or a single target).
    intercept : ndarray, shape (n_out,)
        Intercepts.
    classes : ndarray, shape (n_classes,) | None
        Class labels, ordered as scikit-learn's ``classes_``; None for ridge.
    feature_names : sequence of str | None
        Names of the features, in the order of the columns of ``coef``.
    sfreq : float | None
        Rate (Hz) of the feature vectors the model was trained on.
    train_hash : str | None
        Hash of the training data (see :func:`training_hash`).
    ravel : bool
        Return ridge outputs as a scalar per sample (scikit-learn's 1-D
        ``coef_``) instead of a vector of ``n_out`` targets.
    sklearn_version : str | None
        Version of scikit-learn the model was fitted with (informative).

    Notes
    -----
    LDA (any solver), logistic regression and ridge all predict through
    ``coef_ @ x + intercept_``; the classifiers add a logistic (two classes)
    or softmax (more) link, see :func:`linear_infer`.
    """

    kinds: ClassVar[tuple[str, ...]] = _KINDS

    def __init__(
        self,
        *,
        kind: str,
        coef: ArrayLike,
        intercept: ArrayLike,
        classes: ArrayLike | None = None,
        feature_names: Sequence[str] | None = None,
        sfreq: float | None = None,
        train_hash: str | None = None,
        ravel: bool = False,
        sklearn_version: str | None = None,
    ) -> None:
        if kind not in _KINDS:
            raise ConfigError(
                f"kind={kind!r} is not one of {list(_KINDS)}{did_you_mean(kind, _KINDS)}"
            )
        w = np.ascontiguousarray(coef, dtype=np.float64)
        if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
            raise ConfigError(f"coef must have shape (n_out, n_features), got {w.shape}")
        n_out, n_features = w.shape
        b = np.ascontiguousarray(np.atleast_1d(np.asarray(intercept, dtype=np.float64)))
        if b.shape != (n_out,):
            raise ConfigError(f"intercept must have shape ({n_out},), got {b.shape}")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise ConfigError("coef and intercept must be finite")
        if kind == "ridge":
            if classes is not None and np.size(classes) > 0:
                raise ConfigError("a ridge decoder has no classes")
            cls = None
            link = LINK_IDENTITY
            if ravel and n_out != 1:
                raise ConfigError(f"ravel=True needs a single target, got {n_out}")
        else:
            if classes is None:
                raise ConfigError(f"a {kind} decoder needs its classes")
            cls = _classes_array(classes)
            n_classes = cls.shape[0] if cls.ndim == 1 else -1
            if n_classes < 2:
                raise ConfigError(
                    f"classes must be a 1-D array of at least 2 labels, got shape {cls.shape}"
                )
            if len(set(cls.tolist())) != n_classes:
                raise ConfigError(f"classes must be distinct, got {cls.tolist()!r}")
            expected = 1 if n_classes == 2 else n_classes
            if n_out != expected:
                raise ConfigError(
                    f"{n_classes} classes need coef with {expected} row(s), got {n_out}"
                )
            link = LINK_LOGISTIC if n_classes == 2 else LINK_SOFTMAX
            ravel = n_classes == 2
        names: tuple[str, ...] | None = None
        if feature_names is not None:
            names = tuple(str(n) for n in feature_names)
            if len(names) != n_features:
                raise ConfigError(
                    f"{len(names)} feature names given for a model of {n_features} features"
                )
            if len(set(names)) != len(names):
                dup = sorted({n for n in names if names.count(n) > 1})
                raise ConfigError(f"feature names must be unique; repeated: {dup}")
        if sfreq is not None:
            sfreq = float(sfreq)
            if not (math.isfinite(sfreq) and sfreq > 0):
                raise ConfigError(f"sfreq must be a positive number of Hz, got {sfreq}")
        w.setflags(write=False)
        b.setflags(write=False)
        self.kind = kind
        self.coef = w
        self.intercept = b
        self.classes = cls
        self.link = link
        self.ravel = bool(ravel)
        self.feature_names = names
        self.sfreq = sfreq
        self.train_hash = train_hash
        self.sklearn_version = sklearn_version
        self.n_features = n_features
        self.n_out = n_out
        self.n_proba = {LINK_IDENTITY: 0, LINK_LOGISTIC: 2, LINK_SOFTMAX: n_out}[link]

    def __repr__(self) -> str:
        n_cls = "" if self.classes is None else f", n_classes={self.classes.shape[0]}"
        return f"LinearDecoder(kind={self.kind!r}, n_features={self.n_features}{n_cls})"

    # ---------------------------------------------------------------- building

    @classmethod
    def from_sklearn(
        cls,
        model: Any,
        *,
        feature_names: Sequence[str] | None = None,
        sfreq: float | None = None,
        X: ArrayLike | None = None,
        y: ArrayLike | None = None,
        train_hash: str | None = None,
    ) -> LinearDecoder:
        """Take the arrays of a fitted scikit-learn model.

        Parameters
        ----------
        model : LinearDiscriminantAnalysis | LogisticRegression | Ridge
            A fitted model (LDA with any solver, e.g. ``solver="lsqr",
            shrinkage="auto"`` or ``solver="eigen"``).
        feature_names : sequence of str | None
            Names of the features, in column order.
        sfreq : float | None
            Rate (Hz) of the feature vectors.
        X, y : array-like | None
            Training data; if given, their hash is stored (``train_hash``).
        train_hash : str | None
            A precomputed hash, used when ``X`` is not given.
        """
        import sklearn
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
        from sklearn.linear_model import LogisticRegression, Ridge

        kinds = {LinearDiscriminantAnalysis: "lda", LogisticRegression: "logreg", Ridge: "ridge"}
        kind = next((k for t, k in kinds.items() if isinstance(model, t)), None)
        if kind is None:
            raise ConfigError(
                f"cannot take a {type(model).__name__}; supported: "
                "LinearDiscriminantAnalysis, LogisticRegression, Ridge"
            )
        if not hasattr(model, "coef_"):
            raise ConfigError(f"the {type(model).__name__} is not fitted; call fit() first")
        coef = np.asarray(model.coef_, dtype=np.float64)
        ravel = coef.ndim == 1
        coef = np.atleast_2d(coef)
        intercept = np.broadcast_to(
            np.asarray(model.intercept_, dtype=np.float64), (coef.shape[0],)
        )
        if feature_names is None and hasattr(model, "feature_names_in_"):
            feature_names = [str(n) for n in model.feature_names_in_]
        if X is not None:
            train_hash = training_hash(X, y)
        return cls(
            kind=kind,
            coef=coef,
            intercept=intercept,
            classes=None if kind == "ridge" else model.classes_,
            feature_names=feature_names,
            sfreq=sfreq,
            train_hash=train_hash,
            ravel=ravel,
            sklearn_version=sklearn.__version__,
        )

    # ---------------------------------------------------------------- checks

    def check_inputs(self, feature_names: Sequence[str], sfreq: float | None) -> None:
        """Refuse features that differ from those the model was trained on.

        Parameters
        ----------
        feature_names : sequence of str
            Names of the features the graph delivers, in order.
        sfreq : float | None
            Rate (Hz) of the feature vectors the graph delivers.

        Raises
        ------
        ConfigError
            When the count, names or order of the features, or the rate,
            differ from the model's.
        """
        names = [str(n) for n in feature_names]
        if self.feature_names is None:
            if len(names) != self.n_features:
                raise ConfigError(
                    f"decoder expects {self.n_features} features, the graph gives {len(names)}"
                )
        elif names != list(self.feature_names):
            expected = list(self.feature_names)
            missing = [n for n in expected if n not in names]
            extra = [n for n in names if n not in expected]
            if missing or extra:
                hint = did_you_mean(extra[0], missing) if extra and missing else ""
                raise ConfigError(
                    f"decoder expects {len(expected)} features, the graph gives {len(names)}: "
                    f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                    f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}{hint}"
                )
            if len(names) != len(expected):
                raise ConfigError(
                    f"decoder expects {len(expected)} features, the graph gives {len(names)} "
                    "(repeated names)"
                )
            i = next(i for i, (a, b) in enumerate(zip(names, expected, strict=True)) if a != b)
            raise ConfigError(
                f"features are in a different order than in training: position {i} is "
                f"{names[i]!r} in the graph, {expected[i]!r} in the decoder; reorder the features"
            )
        if self.sfreq is not None:
            if sfreq is None or not math.isclose(float(sfreq), self.sfreq, rel_tol=1e-9):
                raise ConfigError(
                    f"decoder was trained on features at sfreq={self.sfreq:g} Hz, "
                    f"the graph gives sfreq={sfreq} Hz"
                )
        elif sfreq is not None:
            logger.debug("decoder has no recorded sfreq; not checking sfreq=%s", sfreq)

    # ---------------------------------------------------------------- inference

    def buffers(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Preallocated ``(scores, proba)`` buffers for :meth:`infer`."""
        return np.zeros(self.n_out), np.zeros(self.n_proba)

    def infer(
        self, x: NDArray[np.float64], scores: NDArray[np.float64], proba: NDArray[np.float64]
    ) -> int:
        """Decode one feature vector into preallocated buffers (the hot path).

        Parameters
        ----------
        x : ndarray of float64, shape (n_features,)
            Feature vector.
        scores : ndarray of float64, shape (n_out,)
            Output: decision function.
        proba : ndarray of float64, shape (n_proba,)
            Output: probabilities (empty for ridge).

        Returns
        -------
        index : int
            Index into :attr:`classes`, or -1 (ridge, or a non-finite score).
        """
        return int(linear_infer(self.coef, self.intercept, x, self.link, scores, proba))

    def _run(self, X: ArrayLike) -> tuple[bool, NDArray[Any], NDArray[Any], NDArray[np.int64]]:
        x = np.ascontiguousarray(X, dtype=np.float64)
        single = x.ndim == 1
        x2 = x[None, :] if single else x
        if x2.ndim != 2 or x2.shape[1] != self.n_features:
            raise ConfigError(
                f"features must have shape (n_features,) or (n_samples, n_features) with "
                f"n_features={self.n_features}, got {x.shape}"
            )
        n = x2.shape[0]
        scores = np.empty((n, self.n_out))
        proba = np.empty((n, self.n_proba))
        index = np.empty(n, dtype=np.int64)
        linear_infer_batch(self.coef, self.intercept, x2, self.link, scores, proba, index)
        return single, scores, proba, index

    def decision_function(self, X: ArrayLike) -> NDArray[np.float64]:
        """Decision function (regression output for ridge), shaped as scikit-learn's.

        Parameters
        ----------
        X : array-like, shape (n_features,) or (n_samples, n_features)
            One feature vector or a batch.

        Returns
        -------
        scores : ndarray, shape (n_samples,) or (n_samples, n_out)
            Without the sample axis for a 1-D input.
        """
        single, scores, _, _ = self._run(X)
        out = scores[:, 0] if self.ravel else scores
        return out[0] if single else out

    def predict_proba(self, X: ArrayLike) -> NDArray[np.float64]:
        """Class probabilities, shape (n_samples, n_classes) or (n_classes,) for 1-D input."""
        if self.link == LINK_IDENTITY:
            raise ConfigError("a ridge decoder has no probabilities; use predict()")
        single, _, proba, _ = self._run(X)
        return proba[0] if single else proba

    def predict(self, X: ArrayLike) -> Any:
        """Predicted labels (classifiers) or regression outputs (ridge).

        Raises
        ------
        RtneuroError
            When a classifier's score is not finite (NaN or infinite features).
        """
        single, scores, _, index = self._run(X)
        if self.classes is None:
            out = scores[:, 0] if self.ravel else scores
        else:
            if (index < 0).any():
                bad = int(np.flatnonzero(index < 0)[0])
                raise RtneuroError(
                    f"non-finite decision score for sample {bad}; check the features"
                )
            out = self.classes[index]
        return out[0] if single else out

    def warmup(self) -> None:
        """Compile the kernels and run them once."""
        scores, proba = self.buffers()
        self.infer(np.zeros(self.n_features), scores, proba)
        self._run(np.zeros((1, self.n_features)))

    # ---------------------------------------------------------------- files

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
        """The decoder as a JSON-able header and plain arrays (see :mod:`.io`)."""
        meta = {
            "kind": self.kind,
            "ravel": self.ravel,
            "n_features": self.n_features,
            "feature_names": None if self.feature_names is None else list(self.feature_names),
            "sfreq": self.sfreq,
            "train_hash": self.train_hash,
            "sklearn_version": self.sklearn_version,
        }
        classes = np.zeros(0) if self.classes is None else self.classes
        return meta, {"coef": self.coef, "intercept": self.intercept, "classes": classes}

    @classmethod
    def from_arrays(
        cls, meta: dict[str, Any], arrays: dict[str, NDArray[Any]], where: str = "decoder"
    ) -> LinearDecoder:
        """Rebuild a decoder from :meth:`to_arrays` output, checking every field.

        Raises
        ------
        ConfigError
            ``"<where>: <problem>"`` on a missing field or inconsistent arrays.
        """
        require(where, meta, ("kind", "ravel", "n_features", "feature_names", "sfreq", "train_hash"))
        require_arrays(where, arrays, ("coef", "intercept", "classes"))
        require_arrays(where, arrays, ("coef", "intercept"), floating=True)
        dec = checked(where, lambda: cls(
            kind=meta["kind"],
            coef=arrays["coef"],
            intercept=arrays["intercept"],
            classes=None if meta["kind"] == "ridge" else arrays["classes"],
            feature_names=meta["feature_names"],
            sfreq=meta["sfreq"],
            train_hash=meta["train_hash"],
            ravel=bool(meta["ravel"]),
            sklearn_version=meta.get("sklearn_version"),
        ))
        if dec.n_features != meta["n_features"]:
            raise ConfigError(
                f"{where}: header says {meta['n_features']} features, coef has {dec.n_features}"
            )
        return dec

    file_format: ClassVar[str] = _FORMAT
    file_arrays: ClassVar[tuple[str, ...]] = _ARRAYS
