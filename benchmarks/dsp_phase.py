"""Phase estimation for phase-locked stimulation: rtneuro's ecHT and AR beside the usual Python way.

``phase_echt_rtneuro``
    ecHT (0.5 s window) of one channel at 1 kHz, an estimate every sample,
    fed in 1 ms chunks (one sample each) through :class:`rtneuro.nodes.phase.Phase`
    (estimate, trigger rule, online scoring); p50/p99 per update.
``phase_echt_numpy``
    the same estimate as the paper's code does it: FFT of the window, mask and
    filter response, inverse FFT (``numpy.fft``), once per sample.
``phase_ar_rtneuro``
    AR forward prediction (1 s window, decimate 4, order 10, Yule-Walker), an
    estimate every 4 samples (4 ms chunks); p50/p99 per update.
``phase_ar_scipy``
    the same chain with scipy building blocks (``sosfiltfilt``,
    ``solve_toeplitz``, a prediction loop, ``hilbert``), once per 4 samples.
"""

from __future__ import annotations

import time

import numpy as np
from scipy.linalg import solve_toeplitz
from scipy.signal import butter, freqz, hilbert, sosfiltfilt

from benchmarks.common import stats
from rtneuro.messages import Chunk, StreamMeta
from rtneuro.nodes.base import NodeContext
from rtneuro.nodes.phase import Phase, PhaseParams

VARIANTS = ("phase_echt_rtneuro", "phase_echt_numpy", "phase_ar_rtneuro", "phase_ar_scipy")

FS = 1000.0
BAND = (15.0, 25.0)


def _signal(n: int) -> np.ndarray:
    t = np.arange(n) / FS
    rng = np.random.default_rng(0)
    return 50 * np.cos(2 * np.pi * 20 * t) + 10 * rng.standard_normal(n)


def _node(**kw) -> Phase:
    meta = StreamMeta(name="lfp", kind="sig", sfreq=FS, ch_names=("c0",), units=("uV",))
    node = Phase(PhaseParams(band=BAND, **kw), [meta], NodeContext(node_id="ph"))
    node.warmup()
    return node


def _run_node(node: Phase, x: np.ndarray, chunk: int, skip: int) -> list[float]:
    times: list[float] = []
    for a in range(0, x.shape[0] - chunk + 1, chunk):
        c = Chunk(x[a:a + chunk, None], a, a / FS, FS, [])
        t0 = time.perf_counter_ns()
        node.process(c)
        if a >= skip:
            times.append((time.perf_counter_ns() - t0) / 1e3)
    return times


def run_variant(name: str, duration_s: float) -> dict:
    n = int(duration_s * FS)
    if name == "phase_echt_rtneuro":
        x = _signal(n + 500)
        return stats(_run_node(_node(method="echt", window_s=0.5), x, 1, 500),
                     notes="ecHT 0.5 s, 1 kHz, every sample, incl. triggers and scoring")
    if name == "phase_ar_rtneuro":
        x = _signal(n + 1000)
        node = _node(method="ar", window_s=1.0, decimate=4, ar_order=10, hop=4)
        return stats(_run_node(node, x, 4, 1000), notes="AR 1 s, decimate 4, order 10, every 4 samples")
    x = _signal(n + 1000)
    times: list[float] = []
    if name == "phase_echt_numpy":
        N = 500
        k = np.arange(N // 2 + 1)
        mask = np.full(k.size, 2.0)
        mask[0] = mask[-1] = 1.0
        freqs = k * FS / N
        freqs[-1] = -FS / 2
        b, a = butter(2, BAND, "bandpass", fs=FS)
        mult = np.zeros(N, dtype=complex)
        mult[: k.size] = mask * freqz(b, a, worN=freqs, fs=FS)[1]
        for i in range(N, n + N):
            t0 = time.perf_counter_ns()
            z = np.fft.ifft(np.fft.fft(x[i - N:i]) * mult)[-1]
            np.angle(z)
            times.append((time.perf_counter_ns() - t0) / 1e3)
        return stats(times, notes="numpy FFT ecHT per sample (filter response precomputed)")
    if name == "phase_ar_scipy":
        sos = butter(2, BAND, "bandpass", fs=FS, output="sos")
        N, dec, edge, ahead, p = 1000, 4, 8, 16, 10
        for i in range(N, n + N, 4):
            t0 = time.perf_counter_ns()
            y = sosfiltfilt(sos, x[i - N:i])[::-1][::dec][::-1]
            keep = y[edge:-edge]
            m = keep.shape[0]
            r = np.array([keep[: m - j] @ keep[j:] for j in range(p + 1)]) / m
            coef = solve_toeplitz(r[:p], r[1:])
            ext = np.concatenate((keep, np.zeros(edge + ahead)))
            for t in range(m, ext.shape[0]):
                ext[t] = coef @ ext[t - p:t][::-1]
            np.angle(hilbert(ext)[m + edge - 1])
            times.append((time.perf_counter_ns() - t0) / 1e3)
        return stats(times, notes="scipy chain per estimate, every 4 samples")
    raise ValueError(f"unknown variant {name!r}")
