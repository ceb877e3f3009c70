"""Band power methods (Welch, multitaper), band ratios and band envelopes.

References and tolerances:

- multitaper band power: ``mne.time_frequency.psd_array_multitaper`` on each
  window of real EEG, relative 1e-9;
- Welch (sliding DFT and multi-segment FFT) and ratios: ``scipy.signal.welch``,
  relative 1e-9;
- rectifier envelope: a plain Python loop, absolute 1e-10;
- Hilbert envelope: ``np.convolve`` with the same FIR, absolute 1e-10; and
  ``abs(scipy.signal.hilbert(y))`` of the whole band-passed recording, away
  from its ends: error relative to the channel's mean envelope below 0.5 %
  (median) and 3 % (worst sample).
"""

from __future__ import annotations

import mne
import numpy as np
import pytest
from scipy.signal import butter, freqz_sos, hilbert, sosfilt, sosfilt_zi

from rtneuro.errors import ConfigError
from rtneuro.messages import Chunk, StreamMeta
from rtneuro.nodes import NodeContext, build_params, node_class
from rtneuro.nodes.spectral import Bandpower, BandpowerParams, Envelope, EnvelopeParams

from conftest import REPLAY, feed_split
from reference.spectral import envelope_loop, mne_multitaper_band_frames, welch_band_frames

RNG = np.random.default_rng(7)
BANDS = {"delta": (1.0, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 12.0), "beta": (13.0, 30.0), "gamma": (30.0, 45.0)}
OCC = ("O1", "Oz", "O2")


@pytest.fixture(scope="module")
def eeg():
    """O1, Oz, O2 of the eyes-closed run, in uV, 160 Hz."""
    raw = mne.io.read_raw_edf(REPLAY / "S003R02.edf", verbose="error")
    raw.rename_channels(lambda n: n.strip(". "))
    return raw.get_data(picks=list(OCC)).T * 1e6, raw.info["sfreq"]


def _meta(names=OCC, fs=160.0):
    return StreamMeta(name="eeg", kind="sig", sfreq=fs, ch_names=tuple(names), units=("uV",) * len(names))




def _splits(n, k):
    return sorted(RNG.choice(np.arange(1, n), size=k, replace=False).tolist())


def _bandpower(fs=160.0, names=OCC, **kw):
    return Bandpower(BandpowerParams(**kw), [_meta(names, fs)], NodeContext(node_id="bpow"))


# -- multitaper -----------------------------------------------------------------


@pytest.mark.parametrize("bandwidth", [None, 2.0, 4.0])
@pytest.mark.parametrize("mode", ["abs", "rel", "db"])
def test_multitaper_equals_mne_on_real_eeg(eeg, bandwidth, mode):
    x, fs = eeg
    x = x[:1600]
    node = _bandpower(bands=BANDS, window_s=1.0, step_s=0.5, method="multitaper", bandwidth=bandwidth, mode=mode)
    node.warmup()
    assert not node._mt_gemm  # 45 bins of 81: the FFT path
    got = feed_split(node, x, _splits(1600, 9), fs)
    ref = mne_multitaper_band_frames(x, fs, 160, 80, BANDS, bandwidth=bandwidth, mode=mode)
    assert got.shape == ref.shape == (19, 15)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=0)
    assert node.outputs[""].desc["n_tapers"] == {None: 7, 2.0: 1, 4.0: 3}[bandwidth]


@pytest.mark.parametrize("mode", ["abs", "rel", "log10"])
def test_multitaper_projection_on_few_bins_equals_mne(eeg, mode):
    x, fs = eeg
    x = x[2000:3600]
    bands = {"theta": (4.0, 8.0), "alpha": (8.0, 12.0)}
    ratios = {"alpha/theta": ("alpha", "theta")}
    node = _bandpower(bands=bands, window_s=2.0, step_s=0.25, method="multitaper", bandwidth=3.0, mode=mode,
                      ratios=ratios)
    assert node._mt_gemm  # 17 bins: the projection matrix path
    got = feed_split(node, x, _splits(1600, 7), fs)
    ref = mne_multitaper_band_frames(x, fs, 320, 40, bands, bandwidth=3.0, mode=mode, ratios=ratios)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=0)
    assert node.outputs[""].ch_names == tuple(f"{c}:{b}" for c in OCC for b in ("theta", "alpha", "alpha/theta"))


@pytest.mark.parametrize("bands", [BANDS, {"alpha": (8.0, 12.0)}])
def test_multitaper_is_bit_identical_for_any_split(eeg, bands):
    x, fs = eeg
    x = x[:1200]
    p = dict(bands=bands, window_s=0.5, step_s=0.1, method="multitaper", bandwidth=6.0)
    whole = feed_split(_bandpower(**p), x, [], fs)
    for k in (1, 17, 400):
        assert np.array_equal(feed_split(_bandpower(**p), x, _splits(1200, k), fs), whole)


# -- Welch ----------------------------------------------------------------------


def test_welch_with_several_segments_equals_scipy_on_real_eeg(eeg):
    x, fs = eeg
    x = x[:2400]
    node = _bandpower(bands=BANDS, window_s=2.0, step_s=0.25, nperseg=64, mode="rel")
    assert node.method == "fft" and len(node._starts) == 9
    got = feed_split(node, x, _splits(2400, 11), fs)
    ref = welch_band_frames(x, fs, 320, 40, BANDS, mode="rel", nperseg=64)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=0)


@pytest.mark.parametrize("method", ["sliding", "fft"])
@pytest.mark.parametrize("mode", ["abs", "rel", "log10", "db"])
@pytest.mark.parametrize("average", [False, True])
def test_ratios_equal_scipy_welch(eeg, method, mode, average):
    x, fs = eeg
    x = x[3000:4400]
    ratios = {"theta_beta": ("theta", "beta"), "alpha_theta": ("alpha", "theta")}
    node = _bandpower(bands=BANDS, window_s=1.0, step_s=0.2, method=method, mode=mode, average=average, ratios=ratios)
    got = feed_split(node, x, _splits(1400, 6), fs)
    ref = welch_band_frames(x, fs, 160, 32, BANDS, mode=mode, average=average, ratios=ratios)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    names = node.outputs[""].ch_names
    per = [*BANDS, "theta_beta", "alpha_theta"]
    assert names == (tuple(per) if average else tuple(f"{c}:{b}" for c in OCC for b in per))
    units = node.outputs[""].units
    assert units[names.index("alpha_theta" if average else "Oz:alpha_theta")] == {
        "abs": "1", "rel": "1", "log10": "log10(1)", "db": "dB"}[mode]


def test_a_ratio_in_log_mode_is_the_log_of_the_ratio_of_absolute_powers(eeg):
    x, fs = eeg
    x = x[:800]
    ratios = {"alpha/theta": ("alpha", "theta")}
    absn = feed_split(_bandpower(bands=BANDS, mode="abs", average=True, ratios=ratios), x, [], fs)
    for mode in ("rel", "log10", "db"):
        got = feed_split(_bandpower(bands=BANDS, mode=mode, average=True, ratios=ratios), x, [], fs)
        expect = {"rel": absn[:, 2] / absn[:, 1], "log10": np.log10(absn[:, 2] / absn[:, 1]),
                  "db": 10 * np.log10(absn[:, 2] / absn[:, 1])}[mode]
        np.testing.assert_allclose(got[:, 5], expect, rtol=1e-12)


# -- bad input ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["sliding", "fft", "multitaper"])
def test_a_nan_burst_is_held_counted_and_does_not_poison_the_state(eeg, method):
    x, fs = eeg
    x = x[:2000].copy()
    bad = x.copy()
    bad[300:340, 1] = np.nan
    bad[900, 0] = np.inf
    held = bad.copy()
    held[300:340, 1] = x[299, 1]
    held[900, 0] = x[899, 0]
    p = dict(bands=BANDS, window_s=1.0, step_s=0.1, method=method, resync_samples=1 << 20)
    node = _bandpower(**p)
    got = feed_split(node, bad, [320, 901], fs)
    assert np.isfinite(got).all()
    assert node.report()["replaced_nonfinite"] == 41
    np.testing.assert_array_equal(got, feed_split(_bandpower(**p), held, [], fs))
    # long after the burst, the output is that of clean data again (the sliding DFT is not resynced here)
    clean = feed_split(_bandpower(**p), x, [], fs)
    np.testing.assert_allclose(got[-5:], clean[-5:], rtol=1e-9)


# -- configuration --------------------------------------------------------------


@pytest.mark.parametrize("params, message", [
    ({"ratios": {"a/t": ["alpha", "thetta"]}}, "'thetta' is not a band (did you mean 'theta'?)"),
    ({"ratios": {"alpha": ["alpha", "theta"]}}, "ratio 'alpha' has the name of a band"),
    ({"method": "multitaper", "bandwidth": 0.5}, "bandwidth=0.5 Hz is narrower than the 160-sample window resolves; use at least 1 Hz"),
    ({"bandwidth": 4.0}, "bandwidth applies to method 'multitaper' only"),
    ({"method": "multitaper", "nperseg": 64}, "nperseg applies to Welch only"),
    ({"method": "multitaper", "bands": {"x": [90.0, 100.0]}}, "beyond the Nyquist frequency 80 Hz"),
    ({"method": "multitaper", "bands": {"x": [10.2, 10.8]}}, "holds no frequency bin at a resolution of 1 Hz; widen it or lengthen window_s"),
    ({"method": "multitap"}, "is not one of ['auto', 'sliding', 'fft', 'multitaper'] (did you mean 'multitaper'?)"),
])
def test_bandpower_config_errors_name_the_fix(params, message):
    with pytest.raises(ConfigError) as exc:
        node_class("bandpower")(build_params(BandpowerParams, params, "node 'bpow' params"), [_meta()], NodeContext(node_id="bpow"))
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_bandpower_and_envelope_build_from_yaml_like_params(eeg):
    x, fs = eeg
    raw = {"bands": {"theta": [4, 8], "alpha": [8, 12]}, "ratios": {"alpha/theta": ["alpha", "theta"]},
           "picks": ["O1", "O2"], "average": True, "mode": "db", "method": "multitaper", "bandwidth": 2}
    params = build_params(BandpowerParams, raw, "node 'r' params")
    assert params.ratios == {"alpha/theta": ("alpha", "theta")} and params.bandwidth == 2.0
    node = node_class("bandpower")(params, [_meta()], NodeContext(node_id="r"))
    assert node.outputs[""].ch_names == ("theta", "alpha", "alpha/theta")
    assert node.process(Chunk(x[:400], 0, 0.0, fs, [])).data.shape == (16, 3)
    eraw = {"bands": {"alpha": [8, 12]}, "detector": "rectify", "feature": "power", "smoothing": "boxcar",
            "tau_s": 0.5, "step_s": 0.05, "picks": ["Oz"], "mode": "log10"}
    env = node_class("envelope")(build_params(EnvelopeParams, eraw, "node 'e' params"), [_meta()], NodeContext(node_id="e"))
    assert env.outputs[""].ch_names == ("Oz:alpha",) and env.outputs[""].units == ("log10(uV^2)",)
    assert env.process(Chunk(x[:400], 0, 0.0, fs, [])).data.shape == (400 // 8 - 9, 1)


# -- envelope -------------------------------------------------------------------


def _bandpassed(x, fs, lo, hi, order=4):
    sos = butter(order, (lo, hi), "bandpass", fs=fs, output="sos")
    return sosfilt(sos, x, axis=0, zi=sosfilt_zi(sos)[:, :, None] * x[0][None, None, :])[0]


def _envelope(fs=160.0, names=OCC, **kw):
    return Envelope(EnvelopeParams(**kw), [_meta(names, fs)], NodeContext(node_id="env"))


@pytest.mark.parametrize("smoothing", ["exp", "boxcar", "none"])
@pytest.mark.parametrize("feature", ["amplitude", "power"])
def test_rectify_envelope_equals_a_naive_loop(eeg, smoothing, feature):
    x, fs = eeg
    x = x[:1500]
    bands = {"theta": (4.0, 8.0), "alpha": (8.0, 12.0)}
    node = _envelope(bands=bands, detector="rectify", feature=feature, smoothing=smoothing, tau_s=0.2, step_s=0.05)
    got = feed_split(node, x, _splits(1500, 20), fs)
    step, first = 8, node._first_end
    assert first == (32 if smoothing == "boxcar" else 8)
    for b, (lo, hi) in enumerate(bands.values()):
        env = envelope_loop(_bandpassed(x, fs, lo, hi), "rectify", feature == "power", smoothing,
                            1 - np.exp(-1 / (0.2 * fs)), 32)
        ref = env[first - 1::step]
        np.testing.assert_allclose(got[:, b::2], ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("hilbert_s", [0.2, 0.21])  # 33 taps (delay 16, even) and 35 taps (delay 17, odd)
def test_hilbert_envelope_equals_the_fir_by_convolution(eeg, hilbert_s):
    x, fs = eeg
    x = x[:1000]
    node = _envelope(bands={"alpha": (8.0, 12.0)}, detector="hilbert", smoothing="exp", tau_s=0.1, step_s=0.025,
                     hilbert_s=hilbert_s)
    assert node._h.size == {0.2: 33, 0.21: 35}[hilbert_s]
    got = feed_split(node, x, _splits(1000, 13), fs)
    env = envelope_loop(_bandpassed(x, fs, 8.0, 12.0), "hilbert", False, "exp", 1 - np.exp(-1 / (0.1 * fs)), 1, h=node._h)
    np.testing.assert_allclose(got, env[node._first_end - 1::4], rtol=0, atol=1e-10)


def test_hilbert_envelope_follows_scipy_hilbert_on_real_eeg(eeg):
    x, fs = eeg
    bands = {"theta": (4.0, 8.0), "alpha": (8.0, 12.0), "beta": (13.0, 30.0)}
    node = _envelope(bands=bands, detector="hilbert", smoothing="none", step_s=1 / fs)
    assert node._h.size == 65 and node.outputs[""].desc["delay_samples"] == 32
    got = node.process(Chunk(x, 0, 0.0, fs, [])).data
    # row i is the envelope at sample first_end + i - 1 - delay
    idx = np.arange(node._first_end, node._first_end + got.shape[0]) - 1 - node.delay
    for b, (lo, hi) in enumerate(bands.values()):
        ref = np.abs(hilbert(_bandpassed(x, fs, lo, hi), axis=0))[idx][2000:8000]  # away from the ends
        err = np.abs(got[2000:8000, b::3] - ref) / ref.mean(axis=0)
        assert np.median(err) < 0.005 and err.max() < 0.03, (lo, hi, np.median(err), err.max())


def test_the_hilbert_gain_of_a_sinusoid_is_its_amplitude():
    fs = 250.0
    t = np.arange(2500) / fs
    x = (30 * np.sin(2 * np.pi * 10 * t) + 5.0)[:, None]
    node = _envelope(names=("c",), fs=fs, bands={"alpha": (8.0, 12.0)}, smoothing="none", step_s=0.1)
    got = feed_split(node, x, [7, 1234], fs)
    gain = np.abs(freqz_sos(node._sos[0], worN=[10.0], fs=fs)[1][0])
    np.testing.assert_allclose(got[-10:, 0], 30 * gain, rtol=0.01)


@pytest.mark.parametrize("detector, smoothing", [("hilbert", "exp"), ("rectify", "boxcar"), ("hilbert", "none")])
def test_envelope_is_bit_identical_for_any_split(eeg, detector, smoothing):
    x, fs = eeg
    x = x[:1500]
    p = dict(bands=BANDS, detector=detector, smoothing=smoothing, step_s=0.1, average=True, mode="db")
    whole = feed_split(_envelope(**p), x, [], fs)
    for k in (1, 29, 700):
        assert np.array_equal(feed_split(_envelope(**p), x, _splits(1500, k), fs), whole)


def test_envelope_holds_nonfinite_input_and_frames_follow_the_sample_count(eeg):
    x, fs = eeg
    x = x[:1000]
    bad = x.copy()
    bad[400:410] = np.nan
    held = bad.copy()
    held[400:410] = x[399]
    p = dict(bands={"alpha": (8.0, 12.0)}, step_s=0.1)
    node = _envelope(**p)
    out = node.process(Chunk(bad, 5000, 12.0, fs, [["src", 1.0]]))
    assert np.isfinite(out.data).all() and node.report()["replaced_nonfinite"] == 30
    np.testing.assert_array_equal(out.data, _envelope(**p).process(Chunk(held, 5000, 12.0, fs, [])).data)
    # frames every 16 samples from the first count that fills the 33-tap transformer (48)
    assert node._first_end == 48 and out.first == 0 and out.data.shape[0] == (1000 - 48) // 16 + 1
    assert out.t0 == pytest.approx(12.0 + 47 / fs) and out.sfreq == pytest.approx(10.0)
    assert out.trace == [["src", 1.0]]


@pytest.mark.parametrize("params, message", [
    ({"bands": {"x": [70.0, 80.0]}}, "must end below the Nyquist frequency 80 Hz"),
    ({"bands": {"alpha": [8.0, 12.0]}, "hilbert_s": 0.05}, "hilbert_s=0.05 (9 taps) has a gain off by"),
    ({"bands": {"alpha": [8.0, 12.0]}, "hilbert_s": 0.05}, "use hilbert_s >= 0.2"),
    ({"detector": "rectify", "hilbert_s": 0.5}, "hilbert_s applies to detector 'hilbert' only"),
    ({"bands": {"x": [0.0, 4.0]}}, "need 0 < low < high"),
    ({"picks": ["Oz", "POz"]}, "picks ['POz'] are not channels of stream 'eeg'"),
])
def test_envelope_config_errors_name_the_fix(params, message):
    with pytest.raises(ConfigError) as exc:
        node_class("envelope")(build_params(EnvelopeParams, params, "node 'env' params"), [_meta()], NodeContext(node_id="env"))
    assert message in str(exc.value)
