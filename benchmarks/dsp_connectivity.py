"""Coherence on all channel pairs, beside mne-connectivity on the same windows.

``coherence_rtneuro``
    The ``coherence`` node: 64 ch at 1 kHz, all 2016 pairs, the 5 default
    bands (delta..gamma), magnitude-squared coherence, 1 s window updated
    every 100 ms, ``nperseg`` 250 (7 Hann segments with 50 % overlap, 4 Hz
    bins), fed in 100 ms chunks; ``core_fraction`` (CPU s per s of signal).
``coherence_rtneuro_5measures``
    The same with all five measures (coh, imcoh, plv, pli, wpli).
``coherence_mne_connectivity``
    ``mne_connectivity.spectral_connectivity_epochs`` on the same window
    at each update (its 7 segments as epochs, ``mode="fourier"``,
    ``method="coh"``, all pairs, the 5 bands with ``faverage=True``); fewer
    updates when slow, the fraction still per second of signal.
"""

from __future__ import annotations

import warnings

import numpy as np

from rtneuro.messages import Chunk, StreamMeta
from rtneuro.nodes import NodeContext
from rtneuro.nodes.connectivity import Coherence, CoherenceParams
from rtneuro.nodes.spectral import DEFAULT_BANDS

from .common import core_fraction

__all__ = ["VARIANTS", "run_variant"]

VARIANTS = ("coherence_rtneuro", "coherence_rtneuro_5measures", "coherence_mne_connectivity")

FS = 1000.0
N_CH = 64
CHUNK = 100  # 100 ms: one update per chunk
WINDOW = 1000
NPERSEG = 250


def _signal(n_times: int) -> np.ndarray:
    """Noise with a shared 10 Hz rhythm at channel-dependent phase, (n_times, 64), µV."""
    rng = np.random.default_rng(0)
    t = np.arange(n_times) / FS
    phase = np.linspace(0, np.pi, N_CH)
    x = 10 * rng.standard_normal((n_times, N_CH)) + 20 * np.sin(2 * np.pi * 10 * t[:, None] + phase[None, :])
    return np.ascontiguousarray(x)


def _rtneuro(duration_s: float, measures: list[str]) -> dict:
    names = tuple(f"ch{i:02d}" for i in range(N_CH))
    meta = StreamMeta(name="eeg", kind="sig", sfreq=FS, ch_names=names)
    node = Coherence(CoherenceParams(pairs="all", measures=measures, bands=dict(DEFAULT_BANDS), window_s=1.0, step_s=0.1,
                                     nperseg=NPERSEG), [meta], NodeContext(node_id="coh"))
    node.warmup()
    n_steps = max(1, int(round(duration_s * FS / CHUNK)))
    x = _signal(WINDOW + n_steps * CHUNK)
    node.process(Chunk(x[:WINDOW - CHUNK], 0, 0.0, FS, []))  # fill the window: every chunk below gives one frame
    pos = [WINDOW - CHUNK]
    frames = [0]

    def step(i: int) -> None:
        a = WINDOW - CHUNK + i * CHUNK
        out = node.process(Chunk(x[a:a + CHUNK], pos[0], pos[0] / FS, FS, []))
        pos[0] += CHUNK
        frames[0] += 0 if out is None else out.data.shape[0]

    res = core_fraction(step, n_steps, CHUNK / FS)
    res.update({"notes": f"{N_CH} ch @ {FS:g} Hz, {len(node.pairs)} pairs x 5 bands x {len(measures)} measure(s), "
                         f"1 s window / 100 ms step, nperseg {NPERSEG} ({node.outputs[''].desc['segments']} segments), "
                         f"{node.bins.size} bins", "frames": frames[0], "n_features": node.n_features})
    return res


def _mne(duration_s: float) -> dict:
    import mne
    from mne_connectivity import spectral_connectivity_epochs

    mne.set_log_level("ERROR")
    hop = NPERSEG // 2
    starts = np.arange(0, WINDOW - NPERSEG + 1, hop)
    fmin = tuple(lo for lo, _ in DEFAULT_BANDS.values())
    fmax = tuple(hi for _, hi in DEFAULT_BANDS.values())
    iu = np.triu_indices(N_CH, 1)
    # mne-connectivity takes ~0.1-1 s per window: measure a few updates, report per second of signal
    n_steps = max(2, min(int(round(duration_s * FS / CHUNK)), 10))
    x = _signal(WINDOW + n_steps * CHUNK)

    def step(i: int) -> None:
        win = x[(i + 1) * CHUNK:(i + 1) * CHUNK + WINDOW]
        epochs = np.stack([win[a:a + NPERSEG].T for a in starts])  # (n_segments, n_ch, nperseg)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spectral_connectivity_epochs(epochs, sfreq=FS, mode="fourier", method="coh", indices=iu,
                                         fmin=fmin, fmax=fmax, faverage=True, verbose="error")

    step(0)  # imports and caches outside the measurement
    res = core_fraction(step, n_steps, CHUNK / FS, repeats=2)
    res["notes"] = (f"spectral_connectivity_epochs per update: {len(starts)} segments as epochs, mode='fourier' "
                    f"(symmetric Hann), method='coh' (|coherency|), {iu[0].size} pairs, 5 bands faverage")
    return res


def run_variant(name: str, duration_s: float) -> dict:
    if name == "coherence_rtneuro":
        return _rtneuro(duration_s, ["coh"])
    if name == "coherence_rtneuro_5measures":
        return _rtneuro(duration_s, ["coh", "imcoh", "plv", "pli", "wpli"])
    if name == "coherence_mne_connectivity":
        return _mne(duration_s)
    raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
