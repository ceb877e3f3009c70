"""Band power per update beside scipy's Welch and MNE's multitaper.

All variants: 64 ch at 1 kHz (µV-scale noise plus a DC offset per channel),
1 s window, one update every 32 samples, 5 bands (delta 1-4, theta 4-8,
alpha 8-12, beta 13-30, gamma 30-45 Hz); ``duration_s`` seconds of signal
after a first second that fills the window (not measured). Reported:
wall-clock time per update (``time.perf_counter_ns``), p50/p99/max in µs.

``bandpower_rtneuro``
    The ``bandpower`` node in its default method (``auto``: the sliding DFT
    of the 46 band bins), ``process()`` of each 32-sample chunk, which
    emits one frame: everything the service does per update.
``bandpower_rtneuro_multitaper``
    The same node with ``method: multitaper, bandwidth: 4`` (3 DPSS tapers);
    45 band bins make it take an FFT of each tapered window.
``bandpower_scipy_welch``
    Per update: ``scipy.signal.welch`` of the last 1 s (``nperseg`` = the
    window, Hann, constant detrend) and the band sums; the window is kept in
    a ring buffer written per chunk, inside the timed region.
``bandpower_mne_multitaper``
    Per update: ``mne.time_frequency.psd_array_multitaper(window, fmin=1,
    fmax=45, bandwidth=4, adaptive=False, low_bias=True,
    normalization="full")`` and the band sums, window as above.
``envelope_rtneuro`` (not in ``rtneuro bench dsp``'s list; call
``run_variant`` directly)
    The ``envelope`` node, the 4 bands from theta up (4-45 Hz), FIR Hilbert
    detector, exponential smoothing, one frame per 32-sample chunk. One FIR
    serves every band and its length is set by the lowest band edge: at
    1 Hz (delta) it would need 1585 taps at 1 kHz (about 50 ms per chunk
    here), at 4 Hz it needs about 400.

Multi-threaded BLAS (the multitaper projection path, used for narrow bands)
should be limited to one thread in a real-time process
(``OPENBLAS_NUM_THREADS=1``): its p99 on a busy machine is otherwise far
worse than its median.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from rtneuro.messages import Chunk, StreamMeta
from rtneuro.nodes import NodeContext, build_params
from rtneuro.nodes.buffers import RingBuffer
from rtneuro.nodes.spectral import DEFAULT_BANDS, Bandpower, Envelope

from .common import stats

__all__ = ["VARIANTS", "run_variant"]

VARIANTS = (
    "bandpower_rtneuro", "bandpower_rtneuro_multitaper", "bandpower_scipy_welch", "bandpower_mne_multitaper",
    "envelope_rtneuro",
)

FS = 1000.0
N_CH = 64
CHUNK = 32
WINDOW = 1000
BANDS = {k: list(v) for k, v in DEFAULT_BANDS.items()}
BANDWIDTH = 4.0


def _meta() -> StreamMeta:
    return StreamMeta(name="eeg", kind="sig", sfreq=FS, ch_names=tuple(f"ch{i:02d}" for i in range(N_CH)),
                      units=("uV",) * N_CH)


def _chunks(duration_s: float) -> list[np.ndarray]:
    n_steps = max(1, int(round(duration_s * FS / CHUNK))) + WINDOW // CHUNK + 1
    rng = np.random.default_rng(0)
    x = 10.0 * rng.standard_normal((n_steps * CHUNK, N_CH)) + np.linspace(-2000, 2000, N_CH)[None, :]
    return [np.ascontiguousarray(x[i * CHUNK:(i + 1) * CHUNK]) for i in range(n_steps)]


def _measure(step: Callable[[int], None], chunks: list[np.ndarray]) -> dict:
    """Run the first second unmeasured, then time each later update."""
    skip = WINDOW // CHUNK + 1
    for i in range(skip):
        step(i)
    times = np.empty(len(chunks) - skip)
    for j, i in enumerate(range(skip, len(chunks))):
        t0 = time.perf_counter_ns()
        step(i)
        times[j] = (time.perf_counter_ns() - t0) / 1e3
    return stats(times)


def _node(cls, raw: dict, duration_s: float) -> tuple[dict, object]:
    node = cls(build_params(cls.Params, raw, "params"), [_meta()], NodeContext(node_id="b"))
    node.warmup()
    chunks = _chunks(duration_s)

    def step(i: int) -> None:
        node.process(Chunk(chunks[i], i * CHUNK, i * CHUNK / FS, FS, []))

    return _measure(step, chunks), node


def _peer(duration_s: float, spectrum: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> dict:
    chunks = _chunks(duration_s)
    ring = RingBuffer(WINDOW, N_CH)
    win = np.empty((WINDOW, N_CH))

    def step(i: int) -> None:
        ring.write(chunks[i])
        if ring.written < WINDOW:
            return
        psd, freqs = spectrum(ring.read(ring.written, WINDOW, win))
        df = freqs[1] - freqs[0]
        np.array([psd[..., (freqs >= lo) & (freqs <= hi)].sum(axis=-1) * df for lo, hi in BANDS.values()])

    return _measure(step, chunks)


def run_variant(name: str, duration_s: float) -> dict:
    if name == "bandpower_rtneuro":
        res, node = _node(Bandpower, {"bands": BANDS, "window_s": 1.0, "step_s": CHUNK / FS}, duration_s)
        res["notes"] = f"bandpower node ({node.method}), process() per 32-sample chunk = 1 frame"
        return res
    if name == "bandpower_rtneuro_multitaper":
        raw = {"bands": BANDS, "window_s": 1.0, "step_s": CHUNK / FS, "method": "multitaper", "bandwidth": BANDWIDTH}
        res, node = _node(Bandpower, raw, duration_s)
        path = "projection" if node._mt_gemm else "FFT"
        res["notes"] = f"bandpower node (multitaper, {node._n_tapers} tapers, {path} path), process() per chunk"
        return res
    if name == "bandpower_scipy_welch":
        from scipy.signal import welch

        def spectrum(w):
            freqs, psd = welch(w, fs=FS, window="hann", nperseg=WINDOW, detrend="constant", axis=0)
            return psd.T, freqs

        res = _peer(duration_s, spectrum)
        res["notes"] = "scipy.signal.welch(nperseg=1000) of the 1 s window + band sums, per update"
        return res
    if name == "bandpower_mne_multitaper":
        from mne.time_frequency import psd_array_multitaper

        def spectrum(w):
            psd, freqs = psd_array_multitaper(w.T, FS, fmin=1.0, fmax=45.0, bandwidth=BANDWIDTH, adaptive=False,
                                              low_bias=True, normalization="full", verbose="error")
            return psd, freqs

        res = _peer(duration_s, spectrum)
        res["notes"] = f"mne psd_array_multitaper(bandwidth={BANDWIDTH:g}) of the 1 s window + band sums, per update"
        return res
    if name == "envelope_rtneuro":
        bands = {k: v for k, v in BANDS.items() if k != "delta"}
        raw = {"bands": bands, "step_s": CHUNK / FS, "detector": "hilbert", "smoothing": "exp", "tau_s": 0.25}
        res, node = _node(Envelope, raw, duration_s)
        res["notes"] = f"envelope node (Hilbert FIR {node._h.size} taps, 4 band-passes 4-45 Hz), process() per chunk"
        return res
    raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
