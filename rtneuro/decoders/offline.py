"""``rtneuro decode``: a model applied offline to a recording or a recorded session.

The windows are cut and decoded by the same :class:`PipelineRunner` the
``decoder`` node runs, so offline and online predictions are the same for
the same samples; ``--compare`` checks that against what a recorded session's
decoder published live.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from rtneuro.errors import ConfigError, did_you_mean

from .pipeline import DecoderPipeline, Frames
from .train import Recording, read_recording, read_session_recording

__all__ = ["decode_offline", "compare_online"]

#: online and offline probabilities may differ by at most this (they are computed by the same code)
PROBA_TOL = 1e-9


def decode_offline(model: str | Path, data: str | Path, stream: str | None = None) -> tuple[DecoderPipeline, Recording, Frames]:
    """Decode every window of ``data`` (a recording MNE opens, or a session ``.xdf``)."""
    pipe = DecoderPipeline.load(model)
    if Path(data).suffix.lower() == ".xdf":
        rec = read_session_recording(data, pipe.ch_names, stream)
    else:
        rec = read_recording([data], pipe.ch_names)
    pipe.check_inputs(rec.ch_names, rec.sfreq, f"'{data}'")
    return pipe, rec, pipe.decode(rec.data)


def compare_online(session: str | Path, online_stream: str, pipe: DecoderPipeline, frames: Frames) -> dict:
    """Compare offline frames with a decoder stream recorded in ``session``.

    Returns ``{"windows", "labels_equal", "differing_labels", "max_abs_dproba"}``.
    """
    from rtneuro.recording.xdf_read import read_session

    s = read_session(session, names=[online_stream])
    if online_stream not in s.names:
        raise ConfigError(f"{session}: no stream {online_stream!r}{did_you_mean(online_stream, s.names)}")
    online = np.asarray(s.stream(online_stream).time_series, dtype=np.float64)
    K = pipe.n_classes
    if online.ndim != 2 or online.shape[1] != K + 1:
        raise ConfigError(f"stream {online_stream!r} has {online.shape[1] if online.ndim == 2 else 0} columns; "
                          f"a decoder of {K} classes publishes {K + 1} (p:<class>..., class)")
    n = min(len(online), len(frames.ends))
    labels_on = online[:n, K].astype(np.int64)
    differ = int(np.count_nonzero(labels_on != frames.index[:n]))
    dp = float(np.nanmax(np.abs(online[:n, :K] - frames.proba[:n]))) if n else 0.0
    return {"windows": n, "online_windows": int(len(online)), "offline_windows": int(len(frames.ends)),
            "labels_equal": differ == 0 and len(online) == len(frames.ends), "differing_labels": differ,
            "max_abs_dproba": dp}


def write_csv(path: str | Path, pipe: DecoderPipeline, rec: Recording, frames: Frames) -> Path:
    """One row per window: last sample index, its time (s from the first sample), probabilities, class."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["last_sample", "time_s", *(f"p:{c}" for c in pipe.classes), "class"])
        for i, end in enumerate(frames.ends.tolist()):
            k = int(frames.index[i])
            w.writerow([end - 1, f"{(end - 1) / rec.sfreq:.6f}", *(repr(float(p)) for p in frames.proba[i]),
                        pipe.classes[k] if k >= 0 else ""])
    return path
