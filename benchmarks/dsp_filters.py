"""Streaming filters beside scipy.signal on the same chunks.

All variants: 64 ch at 1 kHz in 32-sample chunks (time-major ``(32, 64)``
float64 arrays, µV-scale noise plus a DC offset), ``duration_s`` seconds of
signal; ``core_fraction`` (CPU s per s of signal, best of three passes)
with per-chunk percentiles.

``filter_rtneuro``
    The ``bandpass`` node (Butterworth order 4, 1-40 Hz: 4 second-order
    sections), ``process()`` per chunk: the numba kernel
    ``sosfilt_hold`` plus the output array and the Chunk.
``filter_scipy``
    ``scipy.signal.sosfilt(sos, chunk, axis=0, zi=zi)`` on the same chunks,
    carrying ``zi``.
``filter_rtneuro_f32`` / ``filter_scipy_f32``
    The same two in float32 (kernel and sos cast; the node itself stays
    float64). For information only.
``notch_rtneuro``, ``fir_rtneuro``, ``fir_scipy``, ``decimate_rtneuro``, ``reref_rtneuro``
    The other filter nodes on the same stream: notch at 50 Hz and every
    harmonic below Nyquist (9 sections); FIR 1-40 Hz, 10 Hz transition
    (331 taps) and ``scipy.signal.lfilter`` with ``zi`` on it; decimation
    by 4 (Chebyshev I order 8); common average reference.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter, lfilter_zi, sosfilt, sosfilt_zi

from rtneuro.kernels.iir import sosfilt_hold
from rtneuro.messages import Chunk, StreamMeta
from rtneuro.nodes import NodeContext, build_params
from rtneuro.nodes.filters import Bandpass, Decimate, Fir, Notch, Reref

from .common import core_fraction

__all__ = ["VARIANTS", "run_variant"]

VARIANTS = (
    "filter_rtneuro", "filter_scipy", "filter_rtneuro_f32", "filter_scipy_f32",
    "notch_rtneuro", "fir_rtneuro", "fir_scipy", "decimate_rtneuro", "reref_rtneuro",
)

FS = 1000.0
N_CH = 64
CHUNK = 32
BAND = {"l_freq": 1.0, "h_freq": 40.0, "order": 4}
FIR = {"l_freq": 1.0, "h_freq": 40.0, "trans_bandwidth": 10.0}
NODES = {
    "filter_rtneuro": (Bandpass, BAND),
    "notch_rtneuro": (Notch, {"freq": 50.0}),
    "fir_rtneuro": (Fir, FIR),
    "decimate_rtneuro": (Decimate, {"q": 4}),
    "reref_rtneuro": (Reref, {"method": "common_average"}),
}


def _meta() -> StreamMeta:
    return StreamMeta(name="eeg", kind="sig", sfreq=FS, ch_names=tuple(f"ch{i:02d}" for i in range(N_CH)),
                      units=("uV",) * N_CH)


def _chunks(duration_s: float, dtype=np.float64) -> list[np.ndarray]:
    n_steps = max(1, int(round(duration_s * FS / CHUNK)))
    rng = np.random.default_rng(0)
    x = 10.0 * rng.standard_normal((n_steps * CHUNK, N_CH)) + np.linspace(-2000, 2000, N_CH)[None, :]
    x = x.astype(dtype)
    return [np.ascontiguousarray(x[i * CHUNK:(i + 1) * CHUNK]) for i in range(n_steps)]


def _node(name: str, duration_s: float) -> dict:
    cls, raw = NODES[name]
    node = cls(build_params(cls.Params, dict(raw), "params"), [_meta()], NodeContext(node_id="f"))
    node.warmup()
    chunks = _chunks(duration_s)

    def step(i: int) -> None:
        node.process(Chunk(chunks[i], i * CHUNK, i * CHUNK / FS, FS, []))

    node.process(Chunk(chunks[0], 0, 0.0, FS, []))  # state from the first sample, outside the measurement
    res = core_fraction(step, len(chunks), CHUNK / FS)
    desc = node.outputs[""].desc
    extra = f", {desc['numtaps']} taps" if "numtaps" in desc else ""
    sections = f", {node._sos.shape[0]} sections" if hasattr(node, "_sos") else ""
    res["notes"] = f"{cls.__name__} node process(), {N_CH} ch @ {FS:g} Hz, {CHUNK}-sample chunks{sections}{extra}"
    return res


def _bandpass_sos() -> np.ndarray:
    node = Bandpass(build_params(Bandpass.Params, dict(BAND), "params"), [_meta()], NodeContext(node_id="f"))
    return node._sos


def _scipy_sos(duration_s: float, dtype) -> dict:
    sos = _bandpass_sos().astype(dtype)
    chunks = _chunks(duration_s, dtype)
    zi = [(sosfilt_zi(sos)[:, :, None] * chunks[0][0][None, None, :]).astype(dtype)]

    def step(i: int) -> None:
        _, zi[0] = sosfilt(sos, chunks[i], axis=0, zi=zi[0])

    step(0)
    res = core_fraction(step, len(chunks), CHUNK / FS)
    res["notes"] = f"scipy.signal.sosfilt axis=0 with zi, {sos.shape[0]} sections, {np.dtype(dtype).name}"
    return res


def _rtneuro_f32(duration_s: float) -> dict:
    sos = _bandpass_sos().astype(np.float32)
    chunks = _chunks(duration_s, np.float32)
    zi = (sosfilt_zi(sos)[:, :, None] * chunks[0][0][None, None, :]).astype(np.float32)
    last = chunks[0][0].copy()
    out = np.empty((CHUNK, N_CH), dtype=np.float32)
    sosfilt_hold(sos, chunks[0], zi.copy(), last.copy(), out)  # compile the float32 specialisation

    def step(i: int) -> None:
        sosfilt_hold(sos, chunks[i], zi, last, np.empty((CHUNK, N_CH), dtype=np.float32))

    res = core_fraction(step, len(chunks), CHUNK / FS)
    res["notes"] = "sosfilt_hold kernel in float32 (no Chunk), for comparison; the node runs float64"
    return res


def _fir_scipy(duration_s: float) -> dict:
    node = Fir(build_params(Fir.Params, dict(FIR), "params"), [_meta()], NodeContext(node_id="f"))
    taps = node._taps
    chunks = _chunks(duration_s)
    zi = [lfilter_zi(taps, 1.0)[:, None] * chunks[0][0][None, :]]

    def step(i: int) -> None:
        _, zi[0] = lfilter(taps, 1.0, chunks[i], axis=0, zi=zi[0])

    step(0)
    res = core_fraction(step, len(chunks), CHUNK / FS)
    res["notes"] = f"scipy.signal.lfilter(taps, 1, axis=0, zi), {taps.size} taps"
    return res


def run_variant(name: str, duration_s: float) -> dict:
    if name in NODES:
        return _node(name, duration_s)
    if name == "filter_scipy":
        return _scipy_sos(duration_s, np.float64)
    if name == "filter_scipy_f32":
        return _scipy_sos(duration_s, np.float32)
    if name == "filter_rtneuro_f32":
        return _rtneuro_f32(duration_s)
    if name == "fir_scipy":
        return _fir_scipy(duration_s)
    raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
