"""Coherence and phase coupling: against scipy, mne-connectivity and a naive reference; chunk-invariant."""

from __future__ import annotations

import re
import warnings
from functools import lru_cache

import mne
import numpy as np
import pytest
import yaml
from mne_connectivity import spectral_connectivity_epochs
from scipy.signal import coherence, get_window

from rtneuro.errors import ConfigError
from rtneuro.kernels.connectivity import MEASURE_CODES, pair_connectivity
from rtneuro.messages import Chunk, StreamMeta
from rtneuro.nodes import NodeContext, build_params, node_class
from rtneuro.nodes.connectivity import Coherence, CoherenceParams

from conftest import REPLAY, feed_split
from reference.connectivity import band_connectivity, measures_from_coefficients, segment_starts

RNG = np.random.default_rng(7)
FS = 160.0
BANDS = {"delta": (1.0, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 12.0), "beta": (13.0, 30.0), "gamma": (30.0, 45.0)}
ALL = ["coh", "imcoh", "plv", "pli", "wpli"]
PICKS = ["O1", "Oz", "O2", "P3", "Pz", "C4"]


@lru_cache(maxsize=1)
def _eeg() -> tuple[np.ndarray, tuple[str, ...]]:
    """PhysioNet EEGMMIDB S003R02 (eyes closed), all 64 channels in µV, (n_times, 64)."""
    raw = mne.io.read_raw_edf(REPLAY / "S003R02.edf", preload=True, verbose="error")
    names = tuple(re.sub(r"[.\s]+$", "", c.strip()) for c in raw.ch_names)
    return np.ascontiguousarray(raw.get_data(units="uV").T), names


def _eeg_picks(n_times: int, picks=PICKS, start: int = 800) -> np.ndarray:
    x, names = _eeg()
    return np.ascontiguousarray(x[start:start + n_times, [names.index(p) for p in picks]])


def _meta(names, fs=FS):
    return StreamMeta(name="eeg", kind="sig", sfreq=fs, ch_names=tuple(names), units=("uV",) * len(names))


def _node(names=PICKS, fs=FS, **params) -> Coherence:
    return Coherence(build_params(CoherenceParams, params, "coh"), [_meta(names, fs)], NodeContext(node_id="coh"))


def _feed(node, x, splits, fs=FS):
    return feed_split(node, x, splits, fs)


def _random_splits(n, k):
    return sorted(RNG.choice(np.arange(1, n), size=k, replace=False).tolist())


def _band_mean(f, values, lo, hi):
    return values[(f >= lo) & (f <= hi)].mean()


# -- against references -------------------------------------------------------


@pytest.mark.parametrize("window_s, nperseg", [(1.0, None), (2.0, 64)])
def test_coh_equals_scipy_coherence_on_real_eeg(window_s, nperseg):
    """Tolerance 1e-10 absolute (coherence lies in [0, 1]); only rounding differs."""
    x = _eeg_picks(1600)
    node = _node(pairs="all", window_s=window_s, step_s=0.5, nperseg=nperseg)
    node.warmup()
    got = _feed(node, x, _random_splits(1600, 9))
    window, step, nps, used = node.window, node.step, node.nperseg, node.used
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    ends = list(range(window, 1601, step))
    assert got.shape == (len(ends), len(pairs) * len(BANDS))
    for r, end in enumerate(ends):
        seg = x[end - used:end]
        ref = []
        for i, j in pairs:
            f, c = coherence(seg[:, i], seg[:, j], FS, window="hann", nperseg=nps, noverlap=nps // 2, detrend="constant")
            ref.extend(_band_mean(f, c, lo, hi) for lo, hi in BANDS.values())
        np.testing.assert_allclose(got[r], ref, rtol=0, atol=1e-10)
    assert got.min() > 0.0 and got.max() <= 1.0


def test_every_measure_equals_the_naive_per_bin_reference_on_real_eeg():
    """Explicit DFT sums and plain-Python formulas; tolerance 1e-10 absolute."""
    x = _eeg_picks(400, picks=["O1", "O2", "Pz", "C4"])
    node = _node(["O1", "O2", "Pz", "C4"], pairs=[["O1", "O2"], ["C4", "Pz"], ["O2", "Pz"]], measures=ALL,
                 window_s=1.0, step_s=1.2, nperseg=50)
    got = _feed(node, x, [77, 201])
    assert got.shape == (2, 3 * 5 * 5) and np.isfinite(got).all()
    for r, end in enumerate((160, 352)):
        ref = band_connectivity(x[end - 160:end], FS, 50, [(0, 1), (3, 2), (1, 2)], BANDS, ALL)
        np.testing.assert_allclose(got[r], ref, rtol=0, atol=1e-10)
    # non-trivial values: each measure varies and phase coupling is not saturated
    vals = got.reshape(2, 3, 5, 5)
    assert np.ptp(vals[..., 1]) > 0.05 and np.abs(vals[..., 1]).max() < 1  # imcoh is signed
    assert (vals[..., 1] < 0).any() and (vals[..., 1] > 0).any()
    assert vals[..., 3].min() < 1 and vals[..., 4].min() < 1


def _segments(window, nperseg):
    return np.stack([window[a:a + nperseg] for a in segment_starts(window.shape[0], nperseg)])  # (K, nperseg, C)


def test_node_agrees_with_mne_connectivity_on_our_fourier_coefficients():
    """mne-connectivity has no mode with a periodic Hann taper (its "fourier"
    mode uses the symmetric ``np.hanning``), so the node's per-segment Fourier
    coefficients (mean removed, periodic Hann) are handed to
    ``spectral_connectivity_epochs`` as a complex ``EpochsSpectrumArray``,
    segments as epochs, and its per-bin scores averaged over each band.
    mne's ``coh`` is the magnitude coherence: it is squared to compare.
    Tolerance 1e-10 absolute.
    """
    names = ["O1", "Oz", "O2", "Pz"]
    x = _eeg_picks(160 * 3, picks=names)
    node = _node(names, pairs="all", measures=ALL, window_s=3.0, step_s=3.0, nperseg=64)
    got = _feed(node, x, [100]).reshape(6, 5, 5)
    assert np.isfinite(got).all()
    segs = _segments(x, 64)
    taper = get_window("hann", 64)
    coefs = np.fft.rfft((segs - segs.mean(axis=1, keepdims=True)) * taper[:, None], axis=1)  # (K, f, C)
    freqs = np.fft.rfftfreq(64, 1 / FS)
    spec = mne.time_frequency.EpochsSpectrumArray(coefs.transpose(0, 2, 1), mne.create_info(names, FS, "eeg"), freqs)
    iu = np.triu_indices(4, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cons = spectral_connectivity_epochs(spec, method=ALL, indices=iu, verbose="error")
    for m, con in enumerate(cons):
        per_bin = con.get_data()  # (n_pairs, n_freqs)
        if ALL[m] == "coh":
            per_bin = per_bin**2
        f = np.asarray(con.freqs)
        ref = np.array([[_band_mean(f, row, lo, hi) for lo, hi in BANDS.values()] for row in per_bin])
        np.testing.assert_allclose(got[:, :, m], ref, rtol=0, atol=1e-10, err_msg=ALL[m])


def test_kernel_equals_mne_connectivity_fourier_mode_on_raw_segments():
    """mne's own pipeline end to end (symmetric Hann, mean removed): its
    coefficients fed to our kernel, one bin per band, give mne's per-bin
    scores. Tolerance 1e-10 absolute.
    """
    names = ["O1", "Oz", "O2", "Pz", "C4"]
    x = _eeg_picks(320, picks=names)
    segs = _segments(x, 64)  # (K, 64, C)
    K, nps, C = segs.shape
    taper = np.hanning(nps)
    coefs = np.fft.rfft((segs - segs.mean(axis=1, keepdims=True)) * taper[:, None], axis=1)
    bins = np.arange(1, nps // 2)  # DC and Nyquist are rescaled by mne, and carry no phase
    F = np.ascontiguousarray(coefs[:, bins, :])
    pi_, pj_ = np.triu_indices(C, 1)
    measures = np.array([MEASURE_CODES[m] for m in ALL], dtype=np.int64)
    out = np.empty(pi_.size * bins.size * len(ALL))
    pair_connectivity(F, pi_.astype(np.int64), pj_.astype(np.int64), np.zeros(C, dtype=np.bool_),
                      np.arange(bins.size, dtype=np.int64), np.arange(bins.size + 1, dtype=np.int64),
                      measures, np.empty((bins.size, C)), np.empty((len(ALL), bins.size)), out)
    out = out.reshape(pi_.size, bins.size, len(ALL))
    assert np.isfinite(out).all()
    freqs = np.fft.rfftfreq(nps, 1 / FS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cons = spectral_connectivity_epochs(segs.transpose(0, 2, 1), sfreq=FS, mode="fourier", method=ALL,
                                            indices=(pi_, pj_), fmin=freqs[1] - 0.1, fmax=freqs[bins[-1]] + 0.1,
                                            verbose="error")
    for m, con in enumerate(cons):
        ref = con.get_data()
        np.testing.assert_allclose(con.freqs, freqs[bins])
        if ALL[m] == "coh":
            ref = ref**2
        np.testing.assert_allclose(out[:, :, m], ref, rtol=0, atol=1e-10, err_msg=ALL[m])


# -- streaming ------------------------------------------------------------------


@pytest.mark.parametrize("trial", range(3))
def test_any_split_gives_bit_identical_output(trial):
    x = _eeg_picks(1200)
    params = {"pairs": "all", "measures": ALL, "window_s": 1.0, "step_s": 0.1}
    whole = _feed(_node(**params), x, [])
    assert whole.shape == (1 + (1200 - 160) // 16, 15 * 5 * 5)
    got = _feed(_node(**params), x, _random_splits(1200, [1, 17, 400][trial]))
    assert np.array_equal(got, whole)


def test_frame_times_come_from_sample_indices():
    x = _eeg_picks(500)
    node = _node(pairs=[["O1", "O2"]], window_s=1.0, step_s=0.25)
    assert node.process(Chunk(x[:150], 1000, 4.0, FS, [["src", 1.0]])) is None
    out = node.process(Chunk(x[150:300], 1150, 4.0 + 150 / FS, FS, [["src", 2.0]]))
    # windows of 160 samples every 40: ending after 160, 200, 240, 280 samples
    assert out.first == 0 and out.data.shape == (4, 5)
    assert out.t0 == pytest.approx(4.0 + 159 / FS)
    assert out.sfreq == pytest.approx(4.0)
    assert out.extra == {"window": [1000 + 280 - 160, 1000 + 279], "of": "eeg"}
    assert out.trace == [["src", 2.0]]
    nxt = node.process(Chunk(x[300:330], 1300, 4.0 + 300 / FS, FS, []))
    assert nxt.first == 4 and nxt.t0 == pytest.approx(4.0 + 319 / FS)
    assert node.report()["frames"] == 5


def test_pairs_by_name_match_all_to_all_and_a_reversed_pair_flips_imcoh_only():
    x = _eeg_picks(640)
    full = _node(pairs="all", measures=ALL)
    names = full.outputs[""].ch_names
    assert len(names) == 15 * 5 * 5 and names[:6] == ("O1-Oz:delta:coh", "O1-Oz:delta:imcoh", "O1-Oz:delta:plv",
                                                      "O1-Oz:delta:pli", "O1-Oz:delta:wpli", "O1-Oz:theta:coh")
    ref = _feed(full, x, [])
    picked = _node(pairs=[["Pz", "O2"], ["O1", "C4"]], measures=ALL)
    got = _feed(picked, x, [333])
    cols = [n.replace("Pz-O2", "O2-Pz") for n in picked.outputs[""].ch_names]
    assert picked.outputs[""].ch_names[0] == "Pz-O2:delta:coh" and picked.n_in == 4  # only the channels it needs
    ref_cols = ref[:, [names.index(c) for c in cols]]
    sign = np.array([-1.0 if c.startswith("O2-Pz") and c.endswith(":imcoh") else 1.0 for c in cols])
    assert np.array_equal(got, ref_cols * sign)


def test_all_pairs_of_64_channels():
    x, names = _eeg()
    node = _node(names, pairs="all", bands={"alpha": [8.0, 12.0]}, measures=["wpli"], step_s=1.0)
    out_names = node.outputs[""].ch_names
    assert len(out_names) == 2016 == len(set(out_names))
    assert out_names[0] == f"{names[0]}-{names[1]}:alpha:wpli" and out_names[-1] == f"{names[62]}-{names[63]}:alpha:wpli"
    got = _feed(node, x[:480], [100])
    assert got.shape == (3, 2016) and np.isfinite(got).all() and got.min() >= 0 and got.max() <= 1
    small = _node(["Fp1", "Oz", "O2"], pairs=[["Oz", "O2"]], bands={"alpha": [8.0, 12.0]}, measures=["wpli"], step_s=1.0)
    one = _feed(small, x[:480, [names.index(c) for c in ("Fp1", "Oz", "O2")]], [])
    assert np.array_equal(one[:, 0], got[:, out_names.index("Oz-O2:alpha:wpli")])


def test_a_nan_burst_blanks_only_its_channels_frames_and_is_counted():
    x = _eeg_picks(800)
    bad = x.copy()
    bad[400:403, 2] = np.nan  # O2
    bad[410, 2] = np.inf
    params = {"pairs": "all", "measures": ALL, "window_s": 1.0, "step_s": 0.1}
    clean = _feed(_node(**params), x, [])
    node = _node(**params)
    got = _feed(node, bad, _random_splits(800, 30))
    names = node.outputs[""].ch_names
    hit = np.array(["O2" in n.split(":")[0].split("-") for n in names])
    ends = np.arange(160, 801, 16)
    affected = (ends > 400) & (ends - 160 <= 410)  # the window [end - 160, end) holds a bad sample
    assert affected.sum() == 10
    assert np.isnan(got[np.ix_(affected, hit)]).all()
    assert np.array_equal(got[np.ix_(affected, ~hit)], clean[np.ix_(affected, ~hit)])
    assert np.array_equal(got[~affected], clean[~affected])  # nothing carried over
    rep = node.report()
    assert rep["nonfinite_frames"] == 10 and rep["nonfinite_channel_frames"] == 10
    assert rep["nan_values"] == 10 * hit.sum() and rep["frames"] == ends.size


def test_a_flat_channel_gives_nan_where_a_measure_is_undefined():
    x = _eeg_picks(320)
    x[:, 1] = 5.0  # constant: zero power after the mean is removed
    got = _feed(_node(pairs=[["O1", "Oz"]], measures=ALL, bands={"alpha": [8.0, 12.0]}), x, [])
    coh, imcoh, plv, pli, wpli = got[-1]
    assert np.isnan(coh) and np.isnan(imcoh) and np.isnan(plv) and pli == 0.0 and wpli == 0.0


def test_built_from_yaml_and_registered():
    raw = yaml.safe_load("""
        pairs: [[O1, O2], [Oz, Pz]]
        measures: [wpli, coh]
        bands: {alpha: [8, 12], beta: [13, 30]}
        window_s: 1
        step_s: 0.1
        nperseg: 40
    """)
    cls = node_class("coherence")
    assert cls is Coherence
    params = build_params(cls.Params, raw, "node 'coh' params")
    assert params.pairs == [("O1", "O2"), ("Oz", "Pz")] and params.bands["alpha"] == (8.0, 12.0)
    node = cls(params, [_meta(PICKS)], NodeContext(node_id="coh"))
    assert node.outputs[""].ch_names == ("O1-O2:alpha:wpli", "O1-O2:alpha:coh", "O1-O2:beta:wpli", "O1-O2:beta:coh",
                                         "Oz-Pz:alpha:wpli", "Oz-Pz:alpha:coh", "Oz-Pz:beta:wpli", "Oz-Pz:beta:coh")
    assert node.outputs[""].kind == "feat" and node.outputs[""].sfreq == pytest.approx(10.0)
    assert node.outputs[""].desc["segments"] == 7 and node.outputs[""].desc["bins_hz"] == [8.0, 12.0, 16.0, 20.0, 24.0, 28.0]
    node.warmup()
    assert _feed(node, _eeg_picks(200), [50]).shape == (3, 8)


@pytest.mark.parametrize("params, match", [
    ({"bands": {"gamma": [30.0, 90.0]}}, r"band 'gamma' \[30.0, 90.0\] Hz goes beyond the Nyquist frequency 80 Hz"),
    ({"window_s": 0.25, "nperseg": 64}, r"nperseg=64 exceeds the window of 40 samples .*lower nperseg or lengthen window_s"),
    ({"window_s": 0.5, "nperseg": 64}, r"one segment .* use nperseg <= 53"),
    ({"pairs": [["O1", "Ozz"]]}, r"pair \[O1, Ozz\]: 'Ozz' is not a channel of stream 'eeg' \(did you mean 'Oz'\?\)"),
    ({"pairs": [["OZ", "Pz"]]}, r"'OZ' is not a channel of stream 'eeg' \(did you mean 'Oz'\?\)"),
    ({"pairs": [["Pz", "Pz"]]}, r"joins a channel to itself"),
    ({"pairs": [["O1", "O2"], ["O2", "O1"]]}, r"listed twice"),
    ({"pairs": "al"}, r"pairs='al' must be"),
    ({"measures": ["coh", "wpl"]}, r"'wpl' is not one of .*did you mean 'wpli'"),
    ({"measures": []}, r"measures must name at least one"),
    ({"bands": {"narrow": [9.0, 11.0]}}, r"band 'narrow' .* holds no frequency bin at a resolution of 4 Hz"),
    ({"bands": {"alpha": [12.0, 8.0]}}, r"need 0 <= low < high"),
    ({"step_s": 0}, r"step_s=0(\.0)? must be > 0"),
])
def test_config_errors_name_the_fix(params, match):
    with pytest.raises(ConfigError, match=match):
        _node(**params)


def test_measures_reference_formulas_on_known_phases():
    """The naive reference itself, on coefficients with known answers."""
    X = [1 + 0j, 1j, -1 + 0j, -1j]
    Y = [x * complex(np.exp(-1j * np.pi / 4)) for x in X]  # y lags x by 45 degrees in every segment
    m = measures_from_coefficients(X, Y)
    assert m["coh"] == pytest.approx(1.0) and m["plv"] == pytest.approx(1.0)
    assert m["pli"] == 1.0 and m["wpli"] == pytest.approx(1.0)
    assert m["imcoh"] == pytest.approx(np.sin(np.pi / 4))
