"""Every processing node, any split of its input: the same output.

The table below must name every transform in the registry: a new node
cannot land without saying how it is chunk-tested. Each case runs on real
EEG (or the signal it needs), once whole and then split at random points
and into single samples; outputs on every port must be identical (NaN
equal to NaN), with the same sample indices and times.
"""

from __future__ import annotations

import mne
import numpy as np
import pytest

from rtneuro.messages import Chunk, StreamMeta
from rtneuro.nodes import NODE_TYPES, NodeContext, build_params, node_class

from conftest import REPLAY

RNG = np.random.default_rng(2024)
EEG_CHANNELS = ["FC3", "FCz", "FC4", "C3", "Cz", "C4", "CP3", "CPz", "CP4", "O1", "Oz", "O2"]


def _eeg(seconds: float = 12.0) -> tuple[np.ndarray, StreamMeta]:
    raw = mne.io.read_raw_edf(REPLAY / "S003R02.edf", verbose="error")
    mne.datasets.eegbci.standardize(raw)
    raw.pick(EEG_CHANNELS)
    x = np.ascontiguousarray(raw.get_data(tmax=seconds).T * 1e6)
    x[500:510, 3] = np.nan  # a short dropout: handled the same whatever the chunking
    meta = StreamMeta(name="eeg", kind="sig", sfreq=raw.info["sfreq"], ch_names=tuple(raw.ch_names),
                      ch_types=("eeg",) * len(raw.ch_names), units=("uV",) * len(raw.ch_names))
    return x, meta


def _spikeband(seconds: float = 1.0, n_ch: int = 16, fs: float = 30000.0) -> tuple[np.ndarray, StreamMeta]:
    n = int(seconds * fs)
    x = RNG.standard_normal((n, n_ch)) * 10.0
    for t in RNG.integers(100, n - 100, size=80):
        c = int(RNG.integers(0, n_ch))
        x[t:t + 30, c] -= 120.0 * np.hanning(30)
    meta = StreamMeta(name="ap", kind="sig", sfreq=fs, ch_names=tuple(f"ch{i}" for i in range(n_ch)), units=("uV",) * n_ch)
    return x, meta


def _counts(seconds: float = 60.0, n_units: int = 30, bin_s: float = 0.05) -> tuple[np.ndarray, StreamMeta]:
    from rtneuro.decoders.simulate import simulate_cosine_session

    sess = simulate_cosine_session(n_units, int(seconds / bin_s), bin_s=bin_s, seed=5, mode="ou")
    x = np.ascontiguousarray(sess.counts, dtype=np.float64)
    x[300:305, 2] = np.nan  # a bad bin: skipped and counted the same whatever the chunking
    meta = StreamMeta(name="units", kind="feat", sfreq=1 / bin_s, ch_names=tuple(f"u{i}" for i in range(n_units)),
                      ch_types=("misc",) * n_units, units=("count",) * n_units)
    return x, meta


_MODELS: dict[str, str] = {}


def _model(kind: str) -> str:
    """A model file for the decoder nodes, made once per test session."""
    if kind not in _MODELS:
        import tempfile

        from rtneuro.decoders.kalman import KalmanDecoder
        from rtneuro.decoders.pipeline import PipelineSpec
        from rtneuro.decoders.poisson import PoissonDecoder
        from rtneuro.decoders.simulate import simulate_cosine_session
        from rtneuro.decoders.train import Recording, fit_pipeline

        d = tempfile.mkdtemp(prefix="rtn-chunking-")
        if kind == "mi":
            raw = mne.io.read_raw_edf(REPLAY / "S003R03.edf", verbose="error")
            mne.datasets.eegbci.standardize(raw)
            raw.pick(EEG_CHANNELS)
            ann = raw.annotations
            events = [(int(i), str(dsc)) for i, dsc in zip(raw.time_as_index(ann.onset), ann.description, strict=True)]
            rec = Recording(np.ascontiguousarray(raw.get_data().T * 1e6), tuple(raw.ch_names), raw.info["sfreq"],
                            events, ["S003R03.edf"], "")
            res = fit_pipeline(PipelineSpec(labels={"T1": "left", "T2": "right"}, cv=3), rec)
            _MODELS[kind] = str(res.pipeline.save(f"{d}/mi.npz"))
        else:
            sess = simulate_cosine_session(30, 2000, bin_s=0.05, seed=6, mode="ou")
            if kind == "kalman":
                dec = KalmanDecoder.fit(sess.velocity, sess.counts, bin_s=0.05)
            else:
                grid = (np.arctan2(sess.velocity[:, 1], sess.velocity[:, 0]) // (np.pi / 4)).astype(int) % 8
                dec = PoissonDecoder.fit(sess.counts, grid, 8, bin_s=0.05)
            _MODELS[kind] = str(dec.save(f"{d}/{kind}.npz"))
    return _MODELS[kind]


#: node type -> list of (params, signal name); every transform in the registry must appear.
CASES: dict[str, list[tuple[dict, str]]] = {
    "bandpass": [({"l_freq": 1.0, "h_freq": 40.0}, "eeg"), ({"l_freq": 5.0}, "eeg")],
    "bandpower": [({"window_s": 1.0, "step_s": 0.1, "mode": "db"}, "eeg"),
                  ({"window_s": 1.0, "step_s": 0.1, "nperseg": 64, "mode": "rel"}, "eeg"),
                  ({"window_s": 1.0, "step_s": 0.1, "method": "multitaper", "bandwidth": 4.0,
                    "ratios": {"alpha/theta": ["alpha", "theta"]}}, "eeg")],
    "quality": [({"hold_s": 0.2, "flat_s": 0.1}, "eeg")],
    "coherence": [({"measures": ["coh", "imcoh", "plv", "pli", "wpli"], "window_s": 1.0, "step_s": 0.1}, "eeg"),
                  ({"pairs": [["O1", "Oz"], ["C3", "C4"]], "bands": {"alpha": [8.0, 12.0]}, "window_s": 2.0,
                    "step_s": 0.25, "nperseg": 80}, "eeg")],
    "information": [({"pairs": [["O1", "Oz"], ["C3", "C4"], ["Cz", "O2"]], "measures": ["te_gaussian", "te_ksg", "mi_ksg", "mi_gcmi"],
                      "window_s": 2.0, "step_s": 0.5}, "eeg")],
    "envelope": [({"bands": {"alpha": [8.0, 12.0]}, "detector": "hilbert", "step_s": 0.1}, "eeg"),
                 ({"bands": {"theta": [4.0, 8.0], "beta": [13.0, 30.0]}, "detector": "rectify", "smoothing": "exp",
                   "tau_s": 0.2, "mode": "db"}, "eeg")],
    "notch": [({"freq": 50.0}, "eeg"), ({"freq": 60.0, "harmonics": 1, "q": 10.0}, "eeg")],
    "fir": [({"l_freq": 1.0, "h_freq": 40.0, "trans_bandwidth": 5.0}, "eeg")],
    "reref": [({"method": "common_average", "exclude": ["Oz"]}, "eeg"),
              ({"method": "bipolar", "pairs": ["C3-Cz", "O1-O2"]}, "eeg"),
              ({"method": "laplacian", "n_neighbors": 4}, "eeg")],
    "decimate": [({"q": 2}, "eeg"), ({"q": 3, "ftype": "fir"}, "eeg")],
    "phase": [({"method": "echt", "band": [8.0, 13.0], "picks": ["O1", "Oz", "O2"]}, "eeg"),
              ({"method": "ar", "band": [8.0, 13.0], "picks": ["Oz"], "window_s": 1.0, "hop": 4}, "eeg")],
    "neuron_model": [({"model": "lif", "dt_ms": 0.25, "gain": 0.1, "picks": ["O1", "Oz", "O2"]}, "eeg"),
                     ({"model": "izhikevich", "params": {"preset": "FS"}, "dt_ms": 0.125, "gain": 0.5, "picks": ["C3"]}, "eeg")],
    "decoder": [({"model": "<mi>", "threshold": 0.6, "min_frames": 2}, "eeg")],
    "kalman": [({"model": "<kalman>"}, "counts"), ({"model": "<kalman>", "gain": "steady"}, "counts")],
    "poisson_decoder": [({"model": "<poisson>", "n_directions": 8, "rest": False}, "counts")],
    "bursts": [({"band": [8.0, 13.0], "picks": ["O1", "Oz", "O2"], "threshold": 2.0, "lower": 1.5, "baseline_s": 6.0,
                 "baseline_min_s": 2.0, "update_s": 0.5, "min_duration_s": 0.3}, "eeg"),
               ({"band": [8.0, 13.0], "picks": ["Oz"], "statistic": "percentile", "percentile": 50.0, "threshold": 1.5, "lower": 1.2,
                 "baseline": "calibrated", "baseline_s": 3.0, "baseline_min_s": 3.0, "min_duration_s": 0.2,
                 "rel_power_min": 0.1, "corr_min": 0.3, "broad_band": [1.0, 40.0]}, "eeg")],
    "spike_detect": [({"noise_init_s": 0.2, "noise_tau_s": 1.0, "bin_s": 0.05}, "spikes"),  # no geometry: no dedup
                     ({"noise_init_s": 0.2, "channel_positions_um": [[0.0, 20.0 * i] for i in range(16)]}, "spikes"),
                     ({"noise_init_s": 0.2, "sign": "both", "dedup_ms": None}, "spikes")],
}
#: event times computed from sample indices in a different order of operations may differ by rounding
TIME_TOLERANCE = 1e-9
#: nodes whose outputs may differ by rounding between splits, with the tolerance (absolute)
TOLERANCE: dict[str, float] = {}
EXEMPT = {"fault",  # a supervision drill: fails after a number of chunks, by design
          "spike_stats"}  # takes events, not samples: split at every event in tests/test_spikestats.py


def _signal(name: str):
    return {"eeg": _eeg, "spikes": _spikeband, "counts": _counts}[name]()


def _collect(node, x, fs, edges):
    out: dict[str, list] = {}
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        res = node.process(Chunk(x[a:b], a, a / fs, fs, []))
        if res is None:
            continue
        for port, ch in (res if isinstance(res, list) else [("", res)]):
            out.setdefault(port, []).append(ch)
    end = node.end()
    for port, ch in (end if isinstance(end, list) else []):
        out.setdefault(port, []).append(ch)
    return out


def _rows(chunks):
    """Concatenated data, and per output row its index and time."""
    data = np.concatenate([c.data for c in chunks])
    if data.dtype.names and "index" in data.dtype.names:  # events: each record carries its sample index and time
        return data, data["index"], data["time"]
    index = np.concatenate([np.arange(c.first, c.first + len(c.data)) for c in chunks])
    if chunks[0].sfreq > 0:
        times = np.concatenate([c.t0 + np.arange(len(c.data)) / c.sfreq for c in chunks])
    else:  # irregular rows numbered by chunk.first (e.g. spike snippets)
        times = index.astype(float)
    return data, index, times


def test_every_transform_in_the_registry_has_a_chunking_case():
    transforms = {t for t in NODE_TYPES if node_class(t).category == "transform"} - EXEMPT
    assert transforms - set(CASES) == set(), "add the new node to CASES in tests/test_chunking.py"


@pytest.mark.parametrize("type_name, k", [(t, k) for t, cases in CASES.items() for k in range(len(cases))])
def test_any_split_gives_the_same_output(type_name, k):
    params, signal = CASES[type_name][k]
    params = {k: _model(v[1:-1]) if isinstance(v, str) and v.startswith("<") else v for k, v in params.items()}
    x, meta = _signal(signal)
    cls = node_class(type_name)

    def build():
        node = cls(build_params(cls.Params, params, f"node '{type_name}' params"), [meta], NodeContext(node_id="n"))
        node.warmup()
        node.reset()
        return node

    n = x.shape[0]
    whole = _collect(build(), x, meta.sfreq, [0, n])
    assert whole, f"{type_name} produced nothing on {n} samples"
    splits = [sorted(RNG.choice(np.arange(1, n), size=s, replace=False).tolist()) for s in (3, 40)]
    splits.append(list(range(1, min(n, 3000))))  # single samples at the start (state set-up)
    tol = TOLERANCE.get(type_name, 0.0)
    for cuts in splits:
        got = _collect(build(), x, meta.sfreq, [0, *cuts, n])
        assert set(got) == set(whole), type_name
        for port in whole:
            d0, i0, t0 = _rows(whole[port])
            d1, i1, t1 = _rows(got[port])
            assert np.array_equal(i0, i1), f"{type_name}:{port}: row indices differ"
            np.testing.assert_allclose(t1, t0, rtol=0, atol=TIME_TOLERANCE, err_msg=f"{type_name}:{port}: times differ")
            if d0.dtype.names:
                for field in d0.dtype.names:
                    if field == "time":  # from the chunk's t0 plus an offset: rounding depends on the split
                        np.testing.assert_allclose(d1[field], d0[field], rtol=0, atol=TIME_TOLERANCE)
                    else:
                        assert np.array_equal(d0[field], d1[field]), f"{type_name}:{port}: field {field} differs"
            elif tol:
                np.testing.assert_allclose(d1, d0, rtol=0, atol=tol, err_msg=f"{type_name}:{port}")
            else:
                assert np.array_equal(d0, d1, equal_nan=True), f"{type_name}:{port}: values differ"
