"""A whole decoder: filter bank, windows, features and classifier in one safe file.

:class:`DecoderPipeline` is what ``rtneuro train`` writes and the ``decoder``
node loads. It holds everything the online path needs (channel names and
their order, sampling rate, filter sections, window and step, spatial
filters, the classifier's arrays) and nothing executable. The same
:class:`PipelineRunner` decodes a recording offline and a stream online, so
the two give the same labels and probabilities, bit for bit.

Feature kinds
-------------
``csp``
    Common spatial patterns on one band, log-variance of each component
    (``mne.decoding.CSP(log=True)``), then a linear classifier.
``fbcsp``
    A CSP per band of the filter bank (Ang et al. 2008), concatenated,
    optionally the ``select`` best by mutual information.
``bandpower``
    Log band power per channel and band: the log of the mean square of the
    band-passed window.
``covariance``
    The spatial covariance of the band-passed window, classified on the
    Riemannian manifold: minimum distance to mean (``mdm``) or tangent space
    plus a linear model (``tangent_lda``, ``tangent_logreg``), trained with
    pyRiemann.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from rtneuro.errors import ConfigError, did_you_mean

from .csp import logvar, logvar_channels
from .io import load_arrays, require, save_arrays
from .linear import LinearDecoder
from .windows import FilterBankWindows, design_bank

__all__ = ["FEATURE_KINDS", "CLASSIFIERS", "PipelineSpec", "DecoderPipeline", "PipelineRunner", "Frames"]

FEATURE_KINDS = ("csp", "fbcsp", "bandpower", "covariance")
#: Classifiers each feature kind can feed.
CLASSIFIERS: dict[str, tuple[str, ...]] = {
    "csp": ("lda", "logreg"),
    "fbcsp": ("lda", "logreg"),
    "bandpower": ("lda", "logreg"),
    "covariance": ("mdm", "tangent_lda", "tangent_logreg"),
}

_FORMAT = "rtneuro.decoder_pipeline"
_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineSpec:
    """How a decoder is built: the ``train`` block of a ``decoder`` node.

    Every field has a default; ``rtneuro train`` fills a spec from the
    configuration and fits it.
    """

    features: Literal["csp", "fbcsp", "bandpower", "covariance"] = "csp"
    classifier: Literal["lda", "logreg", "mdm", "tangent_lda", "tangent_logreg"] = "lda"
    bands: tuple[tuple[float, float], ...] = ((8.0, 30.0),)
    order: int = 4
    picks: tuple[str, ...] | None = None
    window_s: float = 1.0
    step_s: float = 0.1
    n_components: int = 4
    select: int | None = None
    shrinkage: float | Literal["auto"] | None = "auto"
    covariance: Literal["scm", "lwf"] = "scm"
    labels: dict[str, str] = field(default_factory=dict)
    tmin: float = 0.5
    tmax: float = 2.5
    cv: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.features not in FEATURE_KINDS:
            raise ConfigError(f"features={self.features!r} is not one of {list(FEATURE_KINDS)}{did_you_mean(self.features, FEATURE_KINDS)}")
        allowed = CLASSIFIERS[self.features]
        if self.classifier not in allowed:
            raise ConfigError(f"classifier={self.classifier!r} does not take {self.features} features; use one of {list(allowed)}")
        if not self.bands:
            raise ConfigError("bands must name at least one [low, high] band")
        if self.features in ("csp", "covariance") and len(self.bands) != 1:
            raise ConfigError(f"{self.features} features take one band, got {len(self.bands)}; use fbcsp for a filter bank")
        if not 1 <= self.order <= 10:
            raise ConfigError(f"order must be in [1, 10], got {self.order}")
        if not (self.window_s > 0 and self.step_s > 0):
            raise ConfigError("window_s and step_s must be positive")
        if self.n_components < 1:
            raise ConfigError(f"n_components must be >= 1, got {self.n_components}")
        if self.select is not None and self.features != "fbcsp":
            raise ConfigError("select applies to fbcsp features only")
        if not self.tmin < self.tmax:
            raise ConfigError(f"need tmin < tmax, got {self.tmin} and {self.tmax}")
        if self.tmax - self.tmin < self.window_s:
            raise ConfigError(f"the labelled span tmax - tmin = {self.tmax - self.tmin:g} s is shorter than window_s = {self.window_s:g} s; no window fits")
        if self.cv < 2:
            raise ConfigError(f"cv must be >= 2 folds, got {self.cv}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["bands"] = [list(b) for b in self.bands]
        d["picks"] = None if self.picks is None else list(self.picks)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PipelineSpec:
        """A spec from JSON or YAML values (lists for tuples); missing fields take their defaults.

        Raises
        ------
        ConfigError
            ``"train: ..."`` on an unknown field, or the field's own check.
        """
        d = dict(d)
        if "bands" in d:
            d["bands"] = tuple(tuple(float(v) for v in b) for b in d["bands"])
        if d.get("picks") is not None:
            d["picks"] = tuple(d["picks"])
        try:
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"train: {exc}") from None


@dataclass(slots=True)
class Frames:
    """Decoded frames: window ends, features, scores, probabilities, class indices."""

    ends: NDArray[np.int64]
    features: NDArray[np.float64]
    scores: NDArray[np.float64]
    proba: NDArray[np.float64]
    index: NDArray[np.int64]


class DecoderPipeline:
    """A fitted decoder with its preprocessing, as arrays and JSON.

    Parameters
    ----------
    spec : PipelineSpec
        How it was built.
    ch_names : sequence of str
        The channels it reads, in order.
    sfreq : float
        Sampling rate of the signal (Hz).
    filters : ndarray, shape (n_bands, n_components, n_channels) | None
        Spatial filters (CSP); None for band power and covariance features.
    selected : ndarray of int64 | None
        Indices of the features kept (fbcsp with ``select``).
    decoder : LinearDecoder | MdmDecoder | TangentSpaceDecoder
        The classifier.
    classes : sequence of str
        Class names, in the decoder's order.
    info : dict
        JSON-able training record (data hash, cross-validation, versions).
    lda_state : dict | None
        LDA means, covariance and priors (``classifier: lda``), kept for
        online adaptation (:class:`rtneuro.decoders.adaptive.AdaptiveLda`).
    """

    def __init__(self, *, spec: PipelineSpec, ch_names: Sequence[str], sfreq: float,
                 filters: NDArray[np.float64] | None, selected: NDArray[np.int64] | None,
                 decoder: Any, classes: Sequence[str], info: dict[str, Any] | None = None,
                 lda_state: dict[str, NDArray[np.float64]] | None = None) -> None:
        self.spec = spec
        self.ch_names = tuple(str(c) for c in ch_names)
        self.sfreq = float(sfreq)
        if not (math.isfinite(self.sfreq) and self.sfreq > 0):
            raise ConfigError(f"sfreq must be positive, got {sfreq}")
        self.window = int(round(spec.window_s * self.sfreq))
        self.step = max(1, int(round(spec.step_s * self.sfreq)))
        if self.window < 8:
            raise ConfigError(f"window_s={spec.window_s} is only {self.window} samples at {self.sfreq:g} Hz; use at least 8")
        self.bank = design_bank(spec.bands, spec.order, self.sfreq)
        C = len(self.ch_names)
        if filters is not None:
            filters = np.ascontiguousarray(filters, dtype=np.float64)
            if filters.ndim != 3 or filters.shape[0] != len(spec.bands) or filters.shape[2] != C:
                raise ConfigError(f"spatial filters must have shape ({len(spec.bands)}, n_components, {C}), got {filters.shape}")
        self.filters = filters
        self.selected = None if selected is None else np.ascontiguousarray(selected, dtype=np.int64)
        self.decoder = decoder
        self.classes = tuple(str(c) for c in classes)
        self.info = dict(info or {})
        self.lda_state = None if lda_state is None else {k: np.asarray(v, dtype=np.float64) for k, v in lda_state.items()}
        self.feature_names = self._feature_names()
        n_dec = getattr(decoder, "n_features", None)
        if self.spec.features != "covariance" and n_dec is not None and n_dec != len(self.feature_names):
            raise ConfigError(f"decoder takes {decoder.n_features} features, the pipeline makes {len(self.feature_names)}")

    def __repr__(self) -> str:
        return (f"DecoderPipeline({self.spec.features}+{self.spec.classifier}, {len(self.ch_names)} channels at "
                f"{self.sfreq:g} Hz, classes={list(self.classes)})")

    def _feature_names(self) -> tuple[str, ...]:
        s = self.spec
        bands = [f"{lo:g}-{hi:g}Hz" for lo, hi in s.bands]
        if s.features in ("csp", "fbcsp"):
            if self.filters is None:  # not fitted yet (training probes the windows first)
                return ()
            names = [f"{b}:csp{k}" for b in bands for k in range(self.filters.shape[1])]
            if self.selected is not None:
                names = [names[i] for i in self.selected.tolist()]
            return tuple(names)
        if s.features == "bandpower":
            return tuple(f"{ch}:{b}" for b in bands for ch in self.ch_names)
        C = len(self.ch_names)
        return tuple(f"cov{i},{j}" for i in range(C) for j in range(i, C))

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    # ---------------------------------------------------------------- inputs

    def check_inputs(self, ch_names: Sequence[str], sfreq: float, stream: str = "the input") -> NDArray[np.int64]:
        """Indices of the model's channels in ``ch_names``; refuse a mismatching stream.

        Raises
        ------
        ConfigError
            When a channel is missing or the sampling rate differs.
        """
        names = list(ch_names)
        missing = [c for c in self.ch_names if c not in names]
        if missing:
            hint = did_you_mean(missing[0], names)
            raise ConfigError(
                f"decoder was trained on {len(self.ch_names)} channels; {stream} lacks {missing[:5]}"
                f"{'...' if len(missing) > 5 else ''}{hint}; retrain on this montage or rename the channels")
        if not math.isclose(float(sfreq), self.sfreq, rel_tol=1e-9):
            raise ConfigError(f"decoder was trained at {self.sfreq:g} Hz, {stream} runs at {sfreq:g} Hz; "
                              "resample the stream or retrain")
        return np.array([names.index(c) for c in self.ch_names], dtype=np.int64)

    # ---------------------------------------------------------------- running

    def windows(self) -> FilterBankWindows:
        """A fresh filter bank and window cutter for this pipeline."""
        return FilterBankWindows(self.bank, len(self.ch_names), self.window, self.step)

    def runner(self) -> PipelineRunner:
        """A fresh online decoder (filter state, ring buffer, output buffers)."""
        return PipelineRunner(self)

    def decode(self, x: NDArray[np.float64]) -> Frames:
        """Decode a whole recording ``(n_times, n_channels)`` (the model's channels, in order).

        Equal, frame by frame, to feeding the same samples to a runner in any chunks.
        """
        return self.runner().push(x)

    def warmup(self) -> None:
        r = self.runner()
        r.push(np.random.default_rng(0).standard_normal((self.window + self.step, len(self.ch_names))))

    # ---------------------------------------------------------------- files

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the pipeline as plain arrays plus a JSON header (never pickle)."""
        meta, dec_arrays = self.decoder.to_arrays()
        arrays: dict[str, NDArray[Any]] = {f"dec_{k}": v for k, v in dec_arrays.items()}
        if self.filters is not None:
            arrays["filters"] = self.filters
        if self.selected is not None:
            arrays["selected"] = self.selected
        if self.lda_state is not None:
            arrays.update({f"lda_{k}": v for k, v in self.lda_state.items()})
        header = {
            "spec": self.spec.to_json(),
            "ch_names": list(self.ch_names),
            "sfreq": self.sfreq,
            "classes": list(self.classes),
            "decoder_kind": type(self.decoder).__name__,
            "decoder": meta,
            "info": self.info,
        }
        return save_arrays(path, format=_FORMAT, version=_VERSION, meta=header, arrays=arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DecoderPipeline:
        """Read a pipeline written by :meth:`save`; one-line ConfigError on any problem."""
        where = f"model file {str(path)!r}"
        meta, arrays = load_arrays(path, format=_FORMAT, version=_VERSION, required=(),
                                   optional=None, what="model")
        require(where, meta, ("spec", "ch_names", "sfreq", "classes", "decoder_kind", "decoder"))
        dec_arrays = {k[4:]: v for k, v in arrays.items() if k.startswith("dec_")}
        lda = {k[4:]: v for k, v in arrays.items() if k.startswith("lda_")}
        if lda and sorted(lda) != ["covariance", "means", "priors"]:
            raise ConfigError(f"{where}: LDA state must hold means, covariance and priors, got {sorted(lda)}")
        extra = sorted(k for k in arrays if not k.startswith(("dec_", "lda_")) and k not in ("filters", "selected"))
        if extra:
            raise ConfigError(f"{where}: unexpected arrays {extra}")
        try:
            spec = PipelineSpec.from_json(meta["spec"])
            decoder = _decoder_class(meta["decoder_kind"], where).from_arrays(meta["decoder"], dec_arrays, where=where)
            return cls(spec=spec, ch_names=meta["ch_names"], sfreq=meta["sfreq"], filters=arrays.get("filters"),
                       selected=arrays.get("selected"), decoder=decoder, classes=meta["classes"],
                       info=meta.get("info"), lda_state=lda or None)
        except ConfigError as exc:
            msg = str(exc)
            raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from exc
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"{where}: inconsistent contents ({type(exc).__name__}: {exc})") from exc


def _decoder_class(kind: str, where: str) -> Any:
    if kind == "LinearDecoder":
        return LinearDecoder
    if kind in ("MdmDecoder", "TangentSpaceDecoder"):
        from . import riemann
        return getattr(riemann, kind)
    raise ConfigError(f"{where}: unknown decoder kind {kind!r}")


class PipelineRunner:
    """Streaming state of one :class:`DecoderPipeline`: push samples, get decoded frames."""

    def __init__(self, pipe: DecoderPipeline) -> None:
        self.pipe = pipe
        self.cut = pipe.windows()
        s = pipe.spec
        C = len(pipe.ch_names)
        if s.features in ("csp", "fbcsp"):
            assert pipe.filters is not None
            self._all = np.empty(pipe.filters.shape[0] * pipe.filters.shape[1])
        elif s.features == "bandpower":
            self._all = np.empty(len(s.bands) * C)
        else:
            self._all = np.empty(0)
        self._cov = np.empty((C, C))
        self._cov_work = np.empty((2, C))
        self._shrink = 0.0
        if s.features == "covariance":
            from .riemann import estimator_shrinkage

            self._shrink = estimator_shrinkage(s.covariance)
        self.n_features = len(pipe.feature_names)
        self.n_out = pipe.decoder.n_out if hasattr(pipe.decoder, "n_out") else pipe.n_classes
        self.n_proba = pipe.n_classes

    def reset(self) -> None:
        self.cut.reset()

    def features_of(self, win: NDArray[np.float64], out: NDArray[np.float64]) -> None:
        """Features of one window ``(n_bands, window, n_channels)`` into ``out``."""
        pipe = self.pipe
        s = pipe.spec
        if s.features in ("csp", "fbcsp"):
            assert pipe.filters is not None
            k = pipe.filters.shape[1]
            for b in range(win.shape[0]):
                logvar(win[b], pipe.filters[b], self._all[b * k:(b + 1) * k])
            if pipe.selected is None:
                out[:] = self._all
            else:
                out[:] = self._all[pipe.selected]
        elif s.features == "bandpower":
            C = win.shape[2]
            for b in range(win.shape[0]):
                logvar_channels(win[b], out[b * C:(b + 1) * C])

    def push(self, x: NDArray[np.float64], decode: bool = True) -> Frames:
        """Take samples (the model's channels, in order); decode every window completed.

        With ``decode=False`` only the features are computed (``scores``,
        ``proba`` and ``index`` are left unset): for a caller that decodes
        frame by frame itself, such as adaptive LDA, which updates between frames.
        """
        ends, wins = self.cut.push(x)
        return self.decode_windows(ends, wins, decode)

    def decode_windows(self, ends: NDArray[np.int64], wins: NDArray[np.float64], decode: bool = True) -> Frames:
        """Features and decoding of windows already cut ``(n, n_bands, window, n_channels)``."""
        n = len(ends)
        pipe = self.pipe
        feats = np.empty((n, self.n_features)) if pipe.spec.features != "covariance" else np.empty((n, 0))
        scores = np.empty((n, self.n_out))
        proba = np.empty((n, self.n_proba))
        index = np.empty(n, dtype=np.int64)
        dec = pipe.decoder
        if pipe.spec.features == "covariance":
            from .riemann import covariance

            for i in range(n if decode else 0):
                covariance(wins[i, 0], self._cov, self._shrink, self._cov_work)
                index[i] = dec.infer(self._cov, scores[i], proba[i])
        else:
            for i in range(n):
                self.features_of(wins[i], feats[i])
                if decode:
                    index[i] = dec.infer(feats[i], scores[i], proba[i])
        return Frames(ends, feats, scores, proba, index)
