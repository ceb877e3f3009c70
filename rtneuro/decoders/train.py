"""Calibration: epoch a recording by its annotations, cross-validate, fit, save.

``rtneuro train CONFIG --data FILE`` lands here. Training windows are cut by
the same causal filter bank and window positions as the online decoder
(:class:`rtneuro.decoders.windows.FilterBankWindows`), so the model sees in
training exactly the features it will see live. Windows of one trial are
never split across cross-validation folds (grouped, stratified folds).
"""

from __future__ import annotations

import hashlib
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rtneuro.errors import ConfigError, DamagedFileError, did_you_mean

from .linear import LinearDecoder, training_hash
from .pipeline import DecoderPipeline, PipelineSpec

__all__ = ["Recording", "TrainResult", "read_recording", "read_session_recording", "labelled_windows", "fit_pipeline", "train",
           "wilson_interval"]


@dataclass(slots=True)
class Recording:
    """Samples and annotations of a training recording (several files back to back)."""

    data: NDArray[np.float64]  # (n_times, n_channels), microvolts for EEG
    ch_names: tuple[str, ...]
    sfreq: float
    events: list[tuple[int, str]]  # (sample index, label)
    sources: list[str]
    file_hash: str


def read_recording(paths: Sequence[str | Path], picks: Sequence[str] | None = None) -> Recording:
    """Read recordings as the ``file_replay`` node plays them (same names, units, sample indices).

    Parameters
    ----------
    paths : sequence of path
        Files MNE opens (EDF, BDF, FIF, BrainVision, ...), concatenated.
    picks : sequence of str | None
        Channels to keep, in this order (default: every EEG channel, or
        every channel when none is typed EEG).
    """
    from rtneuro.nodes.sources import _clean, _open_raw, annotation_events, uv_scale

    if not paths:
        raise ConfigError("--data must name at least one recording")
    if any(Path(p).suffix.lower() == ".xdf" for p in paths):
        if len(paths) != 1:
            raise ConfigError("train on one session (.xdf) at a time, or on recordings MNE opens")
        return read_session_recording(paths[0], picks)
    chunks, events, names0, sfreq0 = [], [], None, None
    offset = 0
    for p in paths:
        path = Path(p)
        raw = _open_raw(path, option=None)  # never trains on a cut recording
        names = [_clean(c) for c in raw.ch_names]
        if picks is None:
            types = raw.get_channel_types()
            sel = [i for i, t in enumerate(types) if t == "eeg"] or list(range(len(names)))
        else:
            missing = [c for c in picks if c not in names]
            if missing:
                raise ConfigError(f"{path}: channels {missing[:5]} not found{did_you_mean(missing[0], names)}")
            sel = [names.index(c) for c in picks]
        these = tuple(names[i] for i in sel)
        sfreq = float(raw.info["sfreq"])
        if names0 is None:
            names0, sfreq0 = these, sfreq
        elif these != names0 or sfreq != sfreq0:
            raise ConfigError(f"{path}: channels or sampling rate differ from {paths[0]}; train on matching files")
        x = raw.get_data(picks=sel).T * uv_scale(raw, sel)
        events += [(offset + i, d) for i, d, _ in annotation_events(raw) if 0 <= i < raw.n_times]
        chunks.append(np.ascontiguousarray(x))
        offset += x.shape[0]
    assert names0 is not None and sfreq0 is not None
    return Recording(np.concatenate(chunks), names0, sfreq0, events, [str(p) for p in paths], _sha256(paths))


def read_session_recording(path: str | Path, picks: Sequence[str] | None = None, stream: str | None = None
                           ) -> Recording:
    """A signal stream of a recorded session (``rtneuro run --record``) and the events recorded with it.

    Events of ``<stream>.events`` keep their sample index; those of any other
    event stream (an LSL marker inlet) are placed at the first sample at or
    after their time stamp.
    """
    from rtneuro.recording.replay import _records, stream_meta
    from rtneuro.recording.xdf_read import read_session

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"session not found: {path}")
    s = read_session(path)
    if s.damage:
        raise DamagedFileError(f"{path}: damaged session: {s.damage}; train on an intact recording")
    metas = {}
    for xs in s.streams:
        try:
            metas[xs.name] = (xs, stream_meta(xs))
        except ConfigError:
            continue
    sigs = [n for n, (_, m) in metas.items() if m.kind == "sig" and m.sfreq > 0 and not n.startswith("rtneuro.")
            and not n.endswith(".delivered")]
    if stream is None:
        if len(sigs) != 1:
            raise ConfigError(f"{path}: {len(sigs)} signal streams {sigs}; name the one to train on")
        stream = sigs[0]
    if stream not in metas:
        raise ConfigError(f"{path}: no stream {stream!r}{did_you_mean(stream, list(metas))}")
    xs, meta = metas[stream]
    names = list(meta.ch_names)
    if picks is None:
        sel = [i for i, t in enumerate(meta.ch_types) if t == "eeg"] or list(range(len(names)))
    else:
        missing = [c for c in picks if c not in names]
        if missing:
            raise ConfigError(f"{path}: channels {missing[:5]} not in stream {stream!r}{did_you_mean(missing[0], names)}")
        sel = [names.index(c) for c in picks]
    data = np.ascontiguousarray(np.asarray(xs.time_series, dtype=np.float64)[:, sel])
    stamps = np.asarray(xs.time_stamps)
    events: list[tuple[int, str]] = []
    for name, (ev, m) in metas.items():
        if m.kind != "evt" or name.startswith("rtneuro."):
            continue
        for rec in _records(ev):
            if name == f"{stream}.events" and int(rec.get("index", -1)) >= 0:
                events.append((int(rec["index"]), str(rec["label"])))
            elif "t" in rec and len(stamps):
                events.append((int(np.searchsorted(stamps, float(rec["t"]))), str(rec["label"])))
    events.sort()
    return Recording(data, tuple(names[i] for i in sel), meta.sfreq, events, [str(path)], _sha256([path]))


def _sha256(paths: Sequence[str | Path]) -> str:
    """SHA-256 of the files' bytes, in order, as ``"sha256:<hex>"``."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()


def labelled_windows(rec: Recording, pipe_windows: Any, labels: dict[str, str], tmin: float, tmax: float
                     ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], list[str]]:
    """Windows inside ``[onset + tmin, onset + tmax]`` of each labelled annotation.

    Returns
    -------
    ends : ndarray of int64
        Window ends (sample counts), as the online decoder emits them.
    y : ndarray of int64
        Class index per window (into ``classes``).
    groups : ndarray of int64
        Trial number per window.
    classes : list of str
        Class names, sorted.
    """
    present = sorted({lab for _, lab in rec.events})
    missing = [k for k in labels if k not in present]
    if missing:
        raise ConfigError(f"annotations {missing} are not in the data{did_you_mean(missing[0], present)}; "
                          f"it has {present}")
    classes = sorted(set(labels.values()))
    if len(classes) < 2:
        raise ConfigError(f"labels must map to at least two classes, got {classes}; e.g. --labels T1=left,T2=right")
    all_ends = pipe_windows.frame_ends(rec.data.shape[0])
    W = pipe_windows.window
    fs = rec.sfreq
    ends, y, groups = [], [], []
    for trial, (onset, lab) in enumerate(e for e in rec.events if e[0] >= 0 and e[1] in labels):
        lo = onset + int(round(tmin * fs))
        hi = onset + int(round(tmax * fs))
        sel = all_ends[(all_ends - W >= lo) & (all_ends <= hi)]
        ends.extend(sel.tolist())
        y.extend([classes.index(labels[lab])] * len(sel))
        groups.extend([trial] * len(sel))
    if not ends:
        raise ConfigError(f"no window of {W / fs:g} s fits in [onset + {tmin:g}, onset + {tmax:g}] s of any labelled trial")
    return np.array(ends, dtype=np.int64), np.array(y, dtype=np.int64), np.array(groups, dtype=np.int64), classes


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (95 % by default; Wilson 1927)."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    r = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - r), min(1.0, c + r))


def _fit(spec: PipelineSpec, ch_names: Sequence[str], sfreq: float, wins: NDArray[np.float64],
         y: NDArray[np.int64], classes: list[str], info: dict[str, Any] | None = None) -> DecoderPipeline:
    """Fit spatial filters and classifier on training windows ``(n, n_bands, window, n_channels)``."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression

    n, B, W, C = wins.shape
    filters = None
    selected = None
    if spec.features in ("csp", "fbcsp"):
        from .csp import FilterBankCSP

        k = min(spec.n_components, C)
        k_best = spec.select if spec.select is not None and spec.select < B * k else None
        fb = FilterBankCSP.fit(wins.transpose(1, 0, 3, 2), y, n_components=k, k_best=k_best,
                               random_state=spec.seed)
        filters = np.stack([c.filters for c in fb.csps])
        selected = None if k_best is None else np.asarray(fb.selected, dtype=np.int64)
    if spec.features == "covariance":
        from .riemann import MdmDecoder, TangentSpaceDecoder, covariance, estimator_shrinkage

        decoder: Any
        covs = np.empty((n, C, C))
        cov_shrink = estimator_shrinkage(spec.covariance)
        for i in range(n):
            covariance(wins[i, 0], covs[i], cov_shrink)
        if spec.classifier == "mdm":
            decoder = MdmDecoder.fit(covs, y, ch_names=ch_names, sfreq=sfreq)
        else:
            decoder = TangentSpaceDecoder.fit(covs, y, ch_names=ch_names, sfreq=sfreq,
                                              model=spec.classifier.removeprefix("tangent_"),
                                              shrinkage=spec.shrinkage)
        return DecoderPipeline(spec=spec, ch_names=ch_names, sfreq=sfreq, filters=None, selected=None,
                               decoder=decoder, classes=classes, info=info)
    # features through the online kernels, so training sees what the decoder will see
    probe = DecoderPipeline(spec=spec, ch_names=ch_names, sfreq=sfreq, filters=filters, selected=None,
                            decoder=_Placeholder(), classes=classes)
    runner = probe.runner()
    X = np.empty((n, len(probe.feature_names)))
    for i in range(n):
        runner.features_of(wins[i], X[i])
    if selected is not None:
        X = X[:, selected]
    model: Any
    if spec.classifier == "lda":
        shrink = spec.shrinkage
        model = LinearDiscriminantAnalysis(solver="lsqr" if shrink is not None else "svd", shrinkage=shrink,
                                           store_covariance=True)
    else:
        model = LogisticRegression(max_iter=1000)
    model.fit(X, np.asarray(classes)[y])
    pipe = DecoderPipeline(spec=spec, ch_names=ch_names, sfreq=sfreq, filters=filters, selected=selected,
                           decoder=_Placeholder(), classes=classes, info=info)
    linear = LinearDecoder.from_sklearn(model, feature_names=pipe.feature_names, sfreq=sfreq / pipe.step, X=X, y=y)
    pipe.decoder = linear
    if spec.classifier == "lda":
        from .adaptive import lda_state

        pipe.lda_state = lda_state(model)
    return pipe


class _Placeholder:
    """Stands in for the classifier while the features it will take are computed."""

    def __init__(self) -> None:
        self.n_features = None
        self.n_out = 1

    def to_arrays(self) -> tuple[dict, dict]:  # pragma: no cover - never saved
        raise ConfigError("a pipeline without a fitted classifier cannot be saved")


@dataclass(slots=True)
class TrainResult:
    """A fitted pipeline and its cross-validation record."""

    pipeline: DecoderPipeline
    classes: list[str]
    n_trials: dict[str, int]
    window_accuracy: float
    window_n: int
    fold_accuracy: list[float]
    trial_accuracy: float
    trial_n: int
    trial_ci: tuple[float, float]
    chance: float
    confusion: NDArray[np.int64]  # trials, rows true, columns predicted
    window_confusion: NDArray[np.int64]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "classes": self.classes, "n_trials": self.n_trials,
            "window_accuracy": self.window_accuracy, "window_n": self.window_n,
            "fold_accuracy": self.fold_accuracy, "trial_accuracy": self.trial_accuracy,
            "trial_n": self.trial_n, "trial_ci95": list(self.trial_ci), "chance": self.chance,
            "confusion_trials": self.confusion.tolist(), "confusion_windows": self.window_confusion.tolist(),
        }

    def summary(self) -> str:
        lo, hi = self.trial_ci
        counts = ", ".join(f"{c} {self.n_trials[c]}" for c in self.classes)
        folds = len(self.fold_accuracy)
        sd = float(np.std(self.fold_accuracy))
        lines = [
            f"{sum(self.n_trials.values())} trials ({counts}), {self.window_n} windows",
            f"cross-validation: {folds} folds, stratified, trials never split across folds",
            f"  trials:  accuracy {self.trial_accuracy:.3f} (95% CI {lo:.3f}-{hi:.3f}, Wilson, n={self.trial_n}); "
            f"chance {self.chance:.3f}",
            f"  windows: accuracy {self.window_accuracy:.3f} (fold SD {sd:.3f}; windows of a trial are not independent)",
            "confusion (trials; rows: true, columns: predicted):",
        ]
        width = max(6, *(len(c) for c in self.classes))
        lines.append(" " * (width + 2) + " ".join(f"{c:>{width}}" for c in self.classes))
        for i, c in enumerate(self.classes):
            lines.append(f"  {c:<{width}}" + " ".join(f"{v:>{width}d}" for v in self.confusion[i]))
        return "\n".join(lines)


def fit_pipeline(spec: PipelineSpec, rec: Recording) -> TrainResult:
    """Cross-validate ``spec`` on ``rec`` by trial, then fit it on every trial."""
    from sklearn.model_selection import StratifiedGroupKFold

    picks = spec.picks or rec.ch_names
    idx = [rec.ch_names.index(c) for c in picks]
    x = np.ascontiguousarray(rec.data[:, idx])
    probe = DecoderPipeline(spec=spec, ch_names=picks, sfreq=rec.sfreq, filters=None, selected=None,
                            decoder=_Placeholder(), classes=("a", "b"))
    cut = probe.windows()
    ends, y, groups, classes = labelled_windows(rec, cut, dict(spec.labels), spec.tmin, spec.tmax)
    filtered = cut.filter(x)
    wins = cut.windows_at(filtered, ends)
    n_trials = {c: int(len(set(groups[y == k].tolist()))) for k, c in enumerate(classes)}
    folds = min(spec.cv, min(n_trials.values()))
    if folds < 2:
        raise ConfigError(f"too few trials to cross-validate: {n_trials}; record more trials")
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=spec.seed)
    pred = np.full(len(y), -1, dtype=np.int64)
    proba = np.full((len(y), len(classes)), np.nan)
    fold_acc = []
    for train_i, test_i in cv.split(np.zeros(len(y)), y, groups):
        pipe = _fit(spec, picks, rec.sfreq, wins[train_i], y[train_i], classes)
        fr = pipe.runner().decode_windows(ends[test_i], wins[test_i])
        pred[test_i] = fr.index
        proba[test_i] = fr.proba
        fold_acc.append(float(np.mean(fr.index == y[test_i])))
    K = len(classes)
    wconf = np.zeros((K, K), dtype=np.int64)
    np.add.at(wconf, (y, np.clip(pred, 0, K - 1)), 1)
    trials = np.unique(groups)
    tconf = np.zeros((K, K), dtype=np.int64)
    for g in trials.tolist():
        m = groups == g
        tconf[y[m][0], int(np.argmax(proba[m].mean(axis=0)))] += 1
    n_ok = int(np.trace(tconf))
    chance = max(n_trials.values()) / sum(n_trials.values())
    info = {
        "data": rec.sources, "data_hash": rec.file_hash,
        "train_hash": training_hash(wins.reshape(len(y), -1), y),
        "windows": int(len(y)), "trials": n_trials,
        "cv": {"folds": folds, "window_accuracy": float(np.mean(pred == y)),
               "trial_accuracy": n_ok / len(trials)},
        "python": platform.python_version(),
    }
    final = _fit(spec, picks, rec.sfreq, wins, y, classes, info=info)
    return TrainResult(final, classes, n_trials, float(np.mean(pred == y)), int(len(y)), fold_acc,
                       n_ok / len(trials), int(len(trials)), wilson_interval(n_ok, len(trials)), chance,
                       tconf, wconf)


def train(spec: PipelineSpec, data: Sequence[str | Path], labels: dict[str, str] | None = None) -> TrainResult:
    """Read ``data``, cross-validate and fit ``spec`` (``labels`` override the spec's)."""
    if labels:
        spec = replace(spec, labels=dict(labels))
    if not spec.labels:
        raise ConfigError("no labels: give --labels ANNOTATION=CLASS,... or train.labels in the decoder node")
    rec = read_recording(data, spec.picks)
    return fit_pipeline(spec, rec)


def parse_labels(text: str | None) -> dict[str, str] | None:
    """``"T1=left,T2=right"`` -> ``{"T1": "left", "T2": "right"}``."""
    if not text:
        return None
    out = {}
    for item in text.split(","):
        key, sep, val = item.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise ConfigError(f"--labels takes ANNOTATION=CLASS pairs separated by commas, got {item!r}; e.g. T1=left,T2=right")
        out[key.strip()] = val.strip()
    return out


def decoder_nodes(config: str | Path) -> dict[str, tuple[dict[str, Any], Path]]:
    """The ``decoder`` nodes of a config: id -> (raw params, base folder). The model need not exist yet."""
    from rtneuro.config import _plain, _read_yaml

    path = Path(config)
    doc = _plain(_read_yaml(path))
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    if not isinstance(nodes, list):
        raise ConfigError(f"{path}: no 'nodes:' list")
    found = {}
    for n in nodes:
        if isinstance(n, dict) and n.get("type") == "decoder":
            found[str(n.get("id"))] = (dict(n.get("params") or {}), path.resolve().parent)
    if not found:
        raise ConfigError(f"{path}: no node of type 'decoder' to train")
    return found


def train_from_config(config: str | Path, data: Sequence[str | Path], labels: str | None = None,
                      node: str | None = None, out: str | Path | None = None) -> tuple[TrainResult, Path]:
    """``rtneuro train``: fit the ``decoder`` node of ``config`` on ``data`` and save its model file."""
    from rtneuro.nodes.base import build_params
    from rtneuro.nodes.decoders import DecoderParams

    nodes = decoder_nodes(config)
    if node is None:
        if len(nodes) > 1:
            raise ConfigError(f"{config}: several decoder nodes {sorted(nodes)}; pick one with --node")
        node = next(iter(nodes))
    if node not in nodes:
        raise ConfigError(f"{config}: no decoder node {node!r}{did_you_mean(node, nodes)}; decoders: {sorted(nodes)}")
    raw, base = nodes[node]
    params = build_params(DecoderParams, raw, f"node '{node}'")
    spec = PipelineSpec.from_json(params.train)
    result = train(spec, data, parse_labels(labels))
    path = Path(out) if out is not None else (base / params.model).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    result.pipeline.info["cv"] = result.to_json()
    result.pipeline.save(path)
    return result, path
