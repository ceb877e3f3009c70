"""Phase estimation (ecHT, AR prediction), phase-locked triggers and their online scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.signal import butter, freqz, hilbert, sosfiltfilt

from rtneuro.errors import ConfigError
from rtneuro.kernels.phase import burg, filtfilt_odd, yule_walker
from rtneuro.messages import Chunk, StreamMeta
from rtneuro.nodes import NodeContext, build_params, node_class
from rtneuro.nodes.phase import Phase, PhaseParams, analytic_weights, echt_weights

from reference.phase import ar_last, circular_stats, crossings, echt_last, naive_hilbert_track
from reference.phase import burg as burg_ref
from reference.phase import yule_walker as yule_walker_ref

ROOT = Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(7)


def _meta(n=1, fs=250.0, units="uV"):
    return StreamMeta(name="x", kind="sig", sfreq=fs, ch_names=tuple(f"c{i}" for i in range(n)), units=(units,) * n)


def _node(fs=250.0, n=1, **kw):
    return Phase(PhaseParams(**kw), [_meta(n, fs)], NodeContext(node_id="ph"))


def _feed(node, x, splits, fs):
    """Feed x (n_times, n_channels) cut at ``splits``; collect every port."""
    out = {"": [], "events": [], "scores": []}
    edges = [0, *sorted(splits), x.shape[0]]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        res = node.process(Chunk(x[a:b], 1000 + a, 5.0 + a / fs, fs, []))
        for port, chunk in res or []:
            out[port].append(chunk.data)
    feats = np.concatenate(out[""]) if out[""] else np.empty((0, 2))
    ev = np.concatenate(out["events"]) if out["events"] else np.empty(0)
    sc = np.concatenate(out["scores"]) if out["scores"] else np.empty(0)
    return feats, ev, sc


def _random_splits(n, k):
    return sorted(RNG.choice(np.arange(1, n), size=k, replace=False).tolist())


def _sine(n, fs, f0, noise=0.0, phase0=0.3):
    t = np.arange(n) / fs
    return np.cos(2 * np.pi * f0 * t + phase0) + noise * RNG.standard_normal(n), 2 * np.pi * f0 * t + phase0


def _wrap(p):
    return (p + np.pi) % (2 * np.pi) - np.pi


# -- kernels against references ----------------------------------------------------


@pytest.mark.parametrize("n", [125, 160, 161])
def test_echt_equals_the_papers_fft_algorithm(n):
    """The dot-product form equals the published FFT algorithm (echt.m) to 1e-10 (signal of unit scale)."""
    fs = 250.0 if n != 160 else 160.0
    x, _ = _sine(600, fs, 10.0, noise=0.5)
    node = _node(fs, window_s=n / fs, band=(8.0, 12.0))
    feats, _, _ = _feed(node, x[:, None], [], fs)
    ref = np.array([echt_last(x[i - n + 1:i + 1], 8.0, 12.0, fs) for i in range(n - 1, 600)])
    np.testing.assert_allclose(feats[:, 1] * np.exp(1j * feats[:, 0]), ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(x[:n] @ echt_weights(n, 8.0, 12.0, fs), ref[0], rtol=0, atol=1e-10)


def test_echt_phase_on_a_sinusoid_in_noise():
    """At the filter's zero-phase frequency the error is ~0 (|mean| < 2 deg, SD < 10 deg at SNR 10);
    elsewhere in the band it is the causal Butterworth's phase response (as the paper's method)."""
    fs = 250.0
    b, a = butter(2, [8.0, 12.0], "bandpass", fs=fs)
    f = np.linspace(9.0, 11.0, 2001)
    f0 = float(f[np.argmin(np.abs(np.angle(freqz(b, a, worN=f, fs=fs)[1])))])  # ~9.8 Hz
    for f_sig, expect_deg in ((f0, 0.0), (10.0, float(np.degrees(np.angle(freqz(b, a, worN=[10.0], fs=fs)[1][0]))))):
        x, true = _sine(5000, fs, f_sig, noise=np.sqrt(0.05))  # SNR 10 (power)
        feats, _, _ = _feed(_node(fs, window_s=0.5, band=(8.0, 12.0)), x[:, None], [], fs)
        err = _wrap(feats[:, 0] - true[124:])
        mean, sd, _ = circular_stats(err)
        print(f"ecHT on a {f_sig:.2f} Hz sinusoid, SNR 10: error {mean:+.2f} +- {sd:.2f} deg (filter phase {expect_deg:+.2f})")
        assert abs(mean - expect_deg) < 2.0 and sd < 10.0
        assert np.median(feats[:, 1]) == pytest.approx(1.0, abs=0.05)


def test_filtfilt_kernel_equals_scipy_sosfiltfilt():
    sos = butter(2, [8.0, 13.0], "bandpass", fs=160.0, output="sos")
    from scipy.signal import sosfilt_zi
    x = RNG.standard_normal(160) * 30
    out = np.empty(160)
    filtfilt_odd(sos, sosfilt_zi(sos), x, 15, np.empty(190), out)
    np.testing.assert_allclose(out, sosfiltfilt(sos, x), rtol=0, atol=1e-10)


def test_ar_fits_equal_scipy_toeplitz_and_a_numpy_burg():
    y = np.cumsum(RNG.standard_normal(300)) * 0.1 + np.sin(np.arange(300) * 0.4)
    for order in (2, 10, 30):
        a = np.empty(order)
        yule_walker(y, order, a, np.empty(order + 1), np.empty(order + 1))
        np.testing.assert_allclose(a, yule_walker_ref(y, order), rtol=1e-8, atol=1e-10)
        burg(y, order, a, np.empty(300), np.empty(300), np.empty(order))
        np.testing.assert_allclose(a, burg_ref(y, order), rtol=1e-9, atol=1e-11)


def test_ar_recovers_a_known_ar2_process_and_predicts_it():
    """AR(2) resonance at 10 Hz (fs 250): fitted coefficients within 0.05 and a one-step prediction
    error variance within 10 % of the innovation variance; a clean sinusoid (1 s fitted by Burg,
    order 4) extrapolated 0.2 s (two cycles) ahead within 1 % of its amplitude."""
    r, w = 0.97, 2 * np.pi * 10 / 250
    true = np.array([2 * r * np.cos(w), -r * r])
    e = RNG.standard_normal(20000)
    y = np.zeros(20000)
    for t in range(2, 20000):
        y[t] = true[0] * y[t - 1] + true[1] * y[t - 2] + e[t]
    for fit in ("yw", "burg"):
        a = np.empty(2)
        if fit == "yw":
            yule_walker(y, 2, a, np.empty(3), np.empty(3))
        else:
            burg(y, 2, a, np.empty(20000), np.empty(20000), np.empty(2))
        np.testing.assert_allclose(a, true, atol=0.05)
        resid = y[2:] - a[0] * y[1:-1] - a[1] * y[:-2]
        assert resid.var() == pytest.approx(1.0, rel=0.1)
    from rtneuro.kernels.phase import ar_extend
    s = np.cos(np.arange(300) * w)
    a = np.empty(4)
    burg(s[:250], 4, a, np.empty(250), np.empty(250), np.empty(4))
    ext = s.copy()
    ext[250:] = 0.0
    ar_extend(ext, 250, a)
    np.testing.assert_allclose(ext[250:], s[250:], atol=0.01)


@pytest.mark.parametrize("method, dec", [("yule-walker", 1), ("burg", 2)])
def test_ar_node_equals_the_scipy_reference_chain(method, dec):
    """Node (numba) vs sosfiltfilt -> solve_toeplitz / numpy Burg -> recursion -> scipy hilbert: 1e-8."""
    fs = 250.0
    x, _ = _sine(400, fs, 10.0, noise=0.5)
    kw = dict(method="ar", band=(8.0, 12.0), window_s=0.8, ar_order=12, ar_method=method, decimate=dec,
              edge_s=0.032, ahead_s=0.064, hop=7)
    feats, _, _ = _feed(_node(fs, **kw), x[:, None], [], fs)
    work = fs / dec
    edge, ahead = round(0.032 * work), round(0.064 * work)
    ends = list(range(199, 400, 7))
    ref = np.array([ar_last(x[i - 199:i + 1], 8.0, 12.0, fs, order=12, method=method, decimate=dec, edge=edge, ahead=ahead)
                    for i in ends])
    np.testing.assert_allclose(feats[:, 1] * np.exp(1j * feats[:, 0]), ref, rtol=1e-8, atol=1e-10)


def test_ar_phase_on_a_sinusoid_in_noise():
    """AR prediction on a 10 Hz sinusoid at SNR 10: |mean error| < 5 deg, SD < 10 deg."""
    fs = 250.0
    x, true = _sine(2000, fs, 10.0, noise=np.sqrt(0.05))
    feats, _, _ = _feed(_node(fs, method="ar", band=(8.0, 12.0), window_s=0.5, hop=5), x[:, None], [], fs)
    err = _wrap(feats[:, 0] - true[124::5])
    mean, sd, _ = circular_stats(err)
    print(f"AR on a 10 Hz sinusoid, SNR 10: error {mean:+.2f} +- {sd:.2f} deg")
    assert abs(mean) < 5.0 and sd < 10.0


def test_analytic_weights_equal_scipy_hilbert():
    x = RNG.standard_normal(97)
    for n in (97, 96):
        for idx in (0, 50, n - 1):
            assert x[:n] @ analytic_weights(n, idx) == pytest.approx(hilbert(x[:n])[idx], abs=1e-12)


# -- triggers, chunk invariance, scoring --------------------------------------------


@pytest.mark.parametrize("method, hop", [("echt", 1), ("ar", 1), ("ar", 4)])
def test_triggers_phase_and_scores_are_identical_for_any_split(method, hop):
    fs = 250.0
    x, _ = _sine(2500, fs, 10.0, noise=0.5)
    x = np.column_stack((x, x * 0.5 + RNG.standard_normal(2500) * 0.2))
    kw = dict(method=method, band=(8.0, 12.0), window_s=0.5, hop=hop, picks=["c0", "c1"], min_interval_s=0.05,
              lookahead_s=0.3)
    whole = _feed(_node(fs, n=2, **kw), x, [], fs)
    assert whole[1].size > 80 and whole[2].size > 80
    for k in (1, 17, 400):
        got = _feed(_node(fs, n=2, **kw), x, _random_splits(2500, k), fs)
        assert np.array_equal(got[0], whole[0])
        for a, b in ((got[1], whole[1]), (got[2], whole[2])):
            assert np.array_equal(a["index"], b["index"]) and np.array_equal(a["value"], b["value"])
            np.testing.assert_allclose(a["time"], b["time"], rtol=0, atol=1e-9)


def test_triggers_follow_the_sample_rule_and_scores_equal_an_offline_recomputation():
    fs, target = 250.0, -90.0
    x, _ = _sine(3000, fs, 10.0, noise=0.4)
    node = _node(fs, window_s=0.5, band=(8.0, 12.0), target_deg=target, min_interval_s=0.06, amplitude_min=0.3,
                 lookahead_s=0.4)
    feats, ev, sc = _feed(node, x[:, None], _random_splits(3000, 30), fs)
    # the trigger rule, naively, on the estimates
    phase = np.full(3000, np.nan)
    amp = np.full(3000, np.nan)
    phase[124:], amp[124:] = feats[:, 0], feats[:, 1]
    ref = crossings(phase, amp, np.radians(target), 2 * np.pi * 10 / fs, 15, amp_min=0.3)
    assert (ev["index"] - 1000).tolist() == ref
    assert np.allclose(ev["time"], 5.0 + (ev["index"] - 1000) / fs)
    # scores: every trigger with 0.4 s after it, true phase by sosfiltfilt + hilbert on [p - L, p + L]
    L = 100
    sos = butter(3, [8.0, 12.0], "bandpass", fs=fs, output="sos")
    scored = [p for p in ref if p + L < 3000]
    assert (sc["index"] - 1000).tolist() == scored
    true = np.array([np.angle(hilbert(sosfiltfilt(sos, x[max(0, p - L):p + L + 1]))[p - max(0, p - L)]) for p in scored])
    np.testing.assert_array_equal(sc["value"], np.degrees(true))
    rep = node.report()
    mean, sd, r = circular_stats(true - np.radians(target))
    assert rep["scored"] == len(scored) and rep["triggers"] == len(ref)
    assert rep["mean_error_deg"] == pytest.approx(mean, abs=1e-9) and rep["sd_deg"] == pytest.approx(sd, abs=1e-9)
    assert rep["plv"] == pytest.approx(abs(np.mean(np.exp(1j * true))), abs=1e-12)
    assert node.status() == f"phase err {mean:+.0f}±{sd:.0f} deg n={len(scored)}"
    assert abs(mean) < 20 and sd < 30


def test_hop_triggers_fall_on_the_sample_nearest_the_crossing():
    """With hop 10 on a clean sinusoid the triggers land on the same samples as with hop 1 (+-1)."""
    fs = 250.0
    x, true = _sine(2000, fs, 10.0)
    one = _feed(_node(fs, method="echt", band=(8.0, 12.0), hop=1), x[:, None], [], fs)[1]["index"]
    ten = _feed(_node(fs, method="echt", band=(8.0, 12.0), hop=10), x[:, None], [333], fs)[1]["index"]
    assert len(ten) >= len(one) - 1 and len(ten) > 60
    d = np.array([np.min(np.abs(one - i)) for i in ten])
    assert (d <= 1).all()


def test_a_nan_burst_is_held_and_counted_and_the_estimates_recover():
    fs = 250.0
    x, true = _sine(2000, fs, 10.0, noise=0.1)
    bad = x.copy()
    bad[600:640] = np.nan
    bad[900] = np.inf
    for method in ("echt", "ar"):
        node = _node(fs, method=method, band=(8.0, 12.0), hop=2)
        feats, ev, _ = _feed(node, bad[:, None], [610, 1500], fs)
        assert np.isfinite(feats).all()
        assert node.report()["replaced_nonfinite"] == 41
        clean = _feed(_node(fs, method=method, band=(8.0, 12.0), hop=2), x[:, None], [], fs)[0]
        late = slice((1300 - 124) // 2, None)  # a window after the burst: identical to the clean run
        np.testing.assert_allclose(feats[late], clean[late], rtol=0, atol=1e-12)


# -- configuration ----------------------------------------------------------------


def test_built_from_yaml_like_params_through_the_registry():
    cls = node_class("phase")
    assert cls is Phase
    p = build_params(PhaseParams, {"band": [8, 13], "method": "ar", "picks": ["c1"], "window_s": 1, "hop": 2,
                                   "target_deg": -90, "ar_method": "burg"}, "node 'ph' params")
    node = cls(p, [_meta(2, 160.0)], NodeContext(node_id="ph"))
    assert p.band == (8.0, 13.0) and node.outputs[""].ch_names == ("phase", "amplitude")
    assert node.outputs[""].sfreq == 80.0
    assert set(node.outputs) == {"", "events", "scores"}
    assert node.outputs["events"].dtype == "event" and node.outputs["events"].name == "ph.events"


@pytest.mark.parametrize("raw, fs, match", [
    ({"band": [70, 90]}, 160.0, "Nyquist"),
    ({"band": [30, 45], "method": "ar", "decimate": 2}, 160.0, "working rate"),
    ({"band": [8, 13], "window_s": 0.25}, 160.0, "cycles of 8 Hz; need at least 3: set window_s >= 0.375"),
    ({"target_deg": 270}, 160.0, "target_deg=270"),
    ({"target_deg": -181}, 160.0, "target_deg=-181"),
    ({"band": [13, 8]}, 160.0, "0 < low < high"),
    ({"picks": ["Oz"]}, 160.0, "did you mean 'c0'|not channels"),
    ({"method": "ar", "ar_order": 60, "window_s": 0.5}, 160.0, "lower ar_order"),
    ({"methd": "ar"}, 160.0, "did you mean 'method'"),
    ({"method": "hilbert"}, 160.0, "not one of"),
])
def test_configuration_errors_name_the_fix(raw, fs, match):
    with pytest.raises(ConfigError, match=match):
        p = build_params(PhaseParams, raw, "node 'ph' params")
        Phase(p, [_meta(1, fs)], NodeContext(node_id="ph"))


# -- real data: ecHT and AR against the naive trailing-window Hilbert ---------------


def _real(name):
    if name == "eeg":
        mne = pytest.importorskip("mne")
        raw = mne.io.read_raw_edf(ROOT / "replay_data" / "S003R02.edf", preload=True, verbose=False)
        return raw.get_data(picks=["Oz.."])[0] * 1e6, 160.0, (8.0, 13.0)
    return np.load(ROOT / "replay_data" / "neurodsp" / "sample_data_1.npy"), 1000.0, (15.0, 25.0)


REAL = {
    # data: (ecHT params, AR params)
    "eeg": (dict(window_s=0.5), dict(window_s=1.0, ar_order=15, edge_s=0.05, ahead_s=0.1)),
    "ecog": (dict(window_s=0.5), dict(window_s=1.0, decimate=4, ar_order=10, edge_s=0.032, ahead_s=0.064)),
}


@pytest.mark.parametrize("data", ["eeg", "ecog"])
def test_real_data_both_estimators_beat_the_naive_hilbert(data):
    """Triggers at 0 deg, scored online against sosfiltfilt + hilbert (0.5 s each side).

    Criterion, against the naive causal-filter + trailing-window Hilbert with the same window,
    trigger rule and scoring: a lower circular SD, and a mean cosine of the error R * cos(mean
    error) (1 = every trigger exactly on target; it penalises spread and bias) higher by 0.05.
    """
    x, fs, band = _real(data)
    echt_kw, ar_kw = REAL[data]
    results = {}
    for name, kw in (("echt", dict(method="echt", **echt_kw)), ("ar", dict(method="ar", **ar_kw))):
        node = _node(fs, band=band, min_interval_s=0.03, lookahead_s=0.5, **kw)
        _feed(node, x[:, None], _random_splits(x.size, 50), fs)
        rep = node.report()
        results[name] = (rep["mean_error_deg"], rep["sd_deg"], rep["plv"], rep["scored"])
    # the naive estimator through the same trigger rule and truth
    n = int(round(echt_kw["window_s"] * fs))
    z = naive_hilbert_track(x, n, *band, fs)
    trig = crossings(np.angle(z), np.abs(z), 0.0, 2 * np.pi * np.mean(band) / fs, int(round(0.03 * fs)))
    L = int(0.5 * fs)
    sos = butter(3, list(band), "bandpass", fs=fs, output="sos")
    true = [np.angle(hilbert(sosfiltfilt(sos, x[max(0, p - L):p + L + 1]))[p - max(0, p - L)]) for p in trig if p + L < x.size]
    m, s, r = circular_stats(np.array(true))
    results["naive"] = (m, s, r, len(true))
    score = {k: v[2] * np.cos(np.radians(v[0])) for k, v in results.items()}
    for k, (m, s, r, n_sc) in results.items():
        print(f"{data} {k:5s}: error {m:+6.1f} deg, circular SD {s:5.1f} deg, PLV {r:.3f}, R cos(mean) {score[k]:.3f}, n={n_sc}")
    for k in ("echt", "ar"):
        assert results[k][3] > 100
        assert score[k] > score["naive"] + 0.05
        assert results[k][1] < results["naive"][1]
