"""Spike detection at Neuropixels scale: 384 channels at 30 kHz in 1 ms (30-sample) chunks.

Both variants band-pass (300-6000 Hz Butterworth) and detect negative
threshold crossings at 5 noise levels on every chunk, and report
``core_fraction`` (CPU seconds per second of signal, best of three passes)
with per-chunk percentiles. The signal is 2 s of :class:`SyntheticSpikes`
(384 channels, 150 units at 10 Hz, 8 uV noise) after 0.5 s used for the
noise level; it is played cyclically for ``duration_s`` seconds.

``spikes_rtneuro``
    :class:`rtneuro.nodes.spikes.SpikeDetect` ``process()`` per chunk: order-3
    band-pass, adaptive noise level, peak window 0.5 ms, refractory 1 ms,
    de-duplication over 2 neighbouring channels within 0.5 ms, snippets
    and 50 ms rate frames: everything the node emits.
``spikes_spikeinterface``
    The fairest small-chunk streaming equivalent in SpikeInterface: the
    public ``bandpass_filter(direction="forward")`` preprocessor (causal,
    as ours; SpikeInterface's filters keep no state between chunks, so
    each chunk is re-filtered from its automatic margin, 3 periods of the
    high-pass corner = 10 ms) read with ``get_traces`` for the chunk plus
    the detector's +-0.5 ms sweep margin, then the ``by_channel`` peak
    detector's own ``compute`` on it (what ``detect_peaks`` runs per chunk,
    without its job machinery, which alone costs milliseconds per call).
    Noise levels are computed once beforehand and not timed. It does less
    than the node: no refractory, no de-duplication, no snippets, no rates.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import core_fraction

VARIANTS = ("spikes_rtneuro", "spikes_spikeinterface")

FS = 30000.0
N_CH = 384
CHUNK = 30
INIT_S = 0.5
SIGNAL_S = 2.0


def _signal() -> tuple[np.ndarray, object]:
    from rtneuro.nodes import NodeContext
    from rtneuro.nodes.spikes import SyntheticSpikes, SyntheticSpikesParams

    src = SyntheticSpikes(SyntheticSpikesParams(n_channels=N_CH, sfreq=FS, n_units=150, rate_hz=10.0, seed=1), [],
                          NodeContext(node_id="probe"))
    x, _, _ = src.generate(0, int((INIT_S + SIGNAL_S) * FS))
    return x, src.outputs[""]


def _rtneuro(duration_s: float) -> dict:
    from rtneuro.messages import Chunk
    from rtneuro.nodes import NodeContext
    from rtneuro.nodes.spikes import SpikeDetect, SpikeDetectParams

    x, meta = _signal()
    node = SpikeDetect(SpikeDetectParams(noise_init_s=INIT_S, dedup_index_distance=2), [meta], NodeContext(node_id="spk"))
    node.warmup()
    n_init = node.n_init
    node.process(Chunk(x[:n_init], 0, 0.0, FS, []))
    body = x[n_init:]
    chunks = [np.ascontiguousarray(body[i:i + CHUNK]) for i in range(0, body.shape[0] - CHUNK + 1, CHUNK)]
    n_steps = int(duration_s * FS / CHUNK)
    k = len(chunks)

    def step(i: int) -> None:
        j = n_init + i * CHUNK
        node.process(Chunk(chunks[i % k], j, j / FS, FS, []))

    out = core_fraction(step, n_steps, CHUNK / FS)
    rep = node.report()
    out["notes"] = f"{N_CH} ch, {CHUNK}-sample chunks; {rep['detections']} detections, lag {node.lag} samples"
    return out


def _spikeinterface(duration_s: float) -> dict:
    from spikeinterface.core import NumpyRecording, get_noise_levels
    from spikeinterface.preprocessing import bandpass_filter
    from spikeinterface.sortingcomponents.peak_detection.by_channel import ByChannelPeakDetector

    x, _ = _signal()
    rec = NumpyRecording([x], FS)
    filt = bandpass_filter(rec, freq_min=300.0, freq_max=6000.0, direction="forward", dtype="float32")
    noise = get_noise_levels(filt, return_in_uV=False, progress_bar=False)
    det = ByChannelPeakDetector(filt, peak_sign="neg", detect_threshold=5.0, exclude_sweep_ms=0.5, noise_levels=noise)
    sweep = det.get_margin()
    n_init = int(INIT_S * FS)
    starts = np.arange(n_init + 400, x.shape[0] - CHUNK - sweep, CHUNK)
    seg = filt._recording_segments[0]
    n_steps = int(duration_s * FS / CHUNK)
    k = len(starts)
    found = [0]

    def step(i: int) -> None:
        s0 = int(starts[i % k])
        traces = seg.get_traces(s0 - sweep, s0 + CHUNK + sweep, None)
        (peaks,) = det.compute(traces, s0, s0 + CHUNK, 0, sweep)
        found[0] += peaks.size

    out = core_fraction(step, n_steps, CHUNK / FS)
    out["notes"] = f"{N_CH} ch, {CHUNK}-sample chunks, filter margin {seg.margin} samples; {found[0]} peaks over all passes"
    return out


def run_variant(name: str, duration_s: float) -> dict:
    """Measure one variant over ``duration_s`` seconds of signal."""
    if name == "spikes_rtneuro":
        return _rtneuro(duration_s)
    if name == "spikes_spikeinterface":
        return _spikeinterface(duration_s)
    raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
