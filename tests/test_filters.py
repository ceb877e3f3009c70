"""Notch, FIR, re-referencing and decimation: equal to scipy / MNE / naive loops, chunk-invariant, NaN-proof.

Tolerances: every node is compared with its reference to 1e-10 absolute on
µV-scale signals (noise of ~10 µV, a 10 Hz rhythm, 50 Hz line noise) riding
on a DC offset of a few mV; splits are compared bit for bit.
"""

from __future__ import annotations

import mne
import numpy as np
import pytest
import yaml
from scipy.signal import cheby1, firwin, iirnotch, lfilter, lfilter_zi, sosfilt, sosfilt_zi, tf2sos

from rtneuro.config import load_graph
from rtneuro.errors import ConfigError
from rtneuro.messages import Chunk, StreamMeta
from rtneuro.nodes import NODE_TYPES, NodeContext, build_params, node_class
from rtneuro.nodes.filters import (
    Bandpass,
    BandpassParams,
    Decimate,
    DecimateParams,
    Fir,
    FirParams,
    Notch,
    NotchParams,
    Reref,
    RerefParams,
    _standard_positions,
)

from reference.filters import (
    common_average_loop,
    fir_loop,
    hold_nonfinite,
    nearest_neighbors,
    neighbor_loop,
)
from reference.naive import sosfilt_loop

FS = 500.0
ATOL = 1e-10  # absolute, on signals of ~1e3 µV
RNG = np.random.default_rng(2024)
NAMES = ("Fz", "C3", "Cz", "C4", "Pz", "O1", "Oz", "O2")


def _meta(names=NAMES, fs=FS, desc=None) -> StreamMeta:
    n = len(names)
    return StreamMeta(name="eeg", kind="sig", sfreq=fs, ch_names=tuple(names), ch_types=("eeg",) * n,
                      units=("uV",) * n, desc=desc or {})


def _signal(n=3000, c=8, fs=FS) -> np.ndarray:
    """µV-scale EEG-like data: noise, a 10 Hz rhythm, 50 Hz line noise, and a per-channel DC offset of mV."""
    t = np.arange(n) / fs
    x = RNG.standard_normal((n, c)) * 10.0
    x += 20.0 * np.sin(2 * np.pi * 10.0 * t)[:, None]
    x += 15.0 * np.sin(2 * np.pi * 50.0 * t + 0.3)[:, None]
    x += np.linspace(-3000.0, 3000.0, c)[None, :]
    return x


def _node(cls, raw: dict, meta: StreamMeta | None = None):
    """Build a node the way a graph file does: YAML text -> build_params -> constructor."""
    params = build_params(cls.Params, yaml.safe_load(yaml.safe_dump(raw)), "params")
    return cls(params, [meta or _meta()], NodeContext(node_id="n"))


def _splits(n: int, k: int) -> list[int]:
    """k random cut points, plus a run of consecutive ones (1-sample chunks)."""
    cuts = set(RNG.choice(np.arange(1, n), size=k, replace=False).tolist())
    start = int(RNG.integers(1, n - 12))
    cuts.update(range(start, start + 10))
    return sorted(cuts)


def _feed(node, x, splits, first=0, fs=FS) -> list[Chunk]:
    """Feed x (stream index ``first`` onwards) in chunks cut at ``splits``; the non-empty outputs."""
    outs = []
    edges = [0, *splits, x.shape[0]]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        out = node.process(Chunk(x[a:b], first + a, (first + a) / fs, fs, []))
        if out is not None:
            outs.append(out)
    return outs


def _cat(chunks: list[Chunk]) -> np.ndarray:
    return np.concatenate([c.data for c in chunks])


def _assert_split_invariant(make, x, first=0):
    whole = _cat(_feed(make(), x, [], first))
    for trial in range(5):
        got = _cat(_feed(make(), x, _splits(x.shape[0], 1 + 9 * trial), first))
        assert np.array_equal(got, whole), f"trial {trial}"
    every = _cat(_feed(make(), x[:300], list(range(1, 300)), first))  # 1-sample chunks only
    assert np.array_equal(every, _cat(_feed(make(), x[:300], [], first)))


def test_node_types_are_registered():
    for name, cls in (("notch", Notch), ("fir", Fir), ("reref", Reref), ("decimate", Decimate)):
        assert name in NODE_TYPES and node_class(name) is cls


# -- notch --------------------------------------------------------------------


@pytest.mark.parametrize("freq, harmonics, expected", [
    (50.0, "all", [50.0, 100.0, 150.0, 200.0]),  # 250 Hz is the Nyquist frequency: left out
    (60.0, 2, [60.0, 120.0]),
    (50.0, 1, [50.0]),
])
def test_notch_equals_scipy_iirnotch_sosfilt_from_the_step_steady_state(freq, harmonics, expected):
    x = _signal()
    node = _node(Notch, {"freq": freq, "harmonics": harmonics, "q": 30})
    node.warmup()
    assert node.freqs == expected and node.outputs[""].desc["notch_hz"] == expected
    y = node.process(Chunk(x, 0, 0.0, FS, [])).data
    sos = np.concatenate([tf2sos(*iirnotch(f, 30.0, fs=FS)) for f in expected])
    zi = sosfilt_zi(sos)[:, :, None] * x[0][None, None, :]
    ref, _ = sosfilt(sos, x, axis=0, zi=zi)
    np.testing.assert_allclose(y, ref, rtol=0, atol=ATOL)
    naive, _ = sosfilt_loop(sos, x[:400], zi)
    np.testing.assert_allclose(y[:400], naive, rtol=0, atol=ATOL)


def test_notch_removes_the_line_and_keeps_the_rhythm():
    t = np.arange(5000) / FS
    line = 30.0 * np.sin(2 * np.pi * 50.0 * t) + 10.0 * np.sin(2 * np.pi * 150.0 * t)
    alpha = 20.0 * np.sin(2 * np.pi * 10.0 * t)
    x = (line + alpha + 500.0)[:, None]
    y = _node(Notch, {"freq": 50.0}).process(Chunk(x, 0, 0.0, FS, [])).data
    settled = slice(2500, None)  # notch at 50 Hz, q=30: time constant ~ q / (pi f) ~ 0.2 s
    err = y[settled, 0] - (alpha + 500.0)[settled]
    assert np.abs(err).max() < 0.5  # residual line + ripple on the 10 Hz rhythm, µV (out of 40 µV of line)


def test_notch_is_bit_identical_for_any_split():
    x = _signal()
    _assert_split_invariant(lambda: _node(Notch, {"freq": 50.0}), x)


def test_notch_holds_a_nan_burst_and_counts_it():
    x = _signal()
    bad = x.copy()
    bad[1000:1040, 2] = np.nan
    bad[1500, 5] = -np.inf
    node = _node(Notch, {})
    y = _cat(_feed(node, bad, [1020, 1500, 1501]))
    assert np.isfinite(y).all()
    assert node.report() == {"replaced_nonfinite": 41}
    sos = np.concatenate([tf2sos(*iirnotch(f, 30.0, fs=FS)) for f in (50.0, 100.0, 150.0, 200.0)])
    ref, _ = sosfilt(sos, hold_nonfinite(bad), axis=0, zi=sosfilt_zi(sos)[:, :, None] * x[0][None, None, :])
    np.testing.assert_allclose(y, ref, rtol=0, atol=ATOL)


@pytest.mark.parametrize("raw, fs, match", [
    ({"freq": 0}, FS, r"above 0 Hz"),
    ({"freq": -50.0}, FS, r"above 0 Hz"),
    ({"freq": 250.0}, FS, r"at or above the Nyquist frequency 250 Hz"),
    ({"freq": 60.0}, 100.0, r"at or above the Nyquist frequency 50 Hz"),
    ({"freq": 50.0, "harmonics": 5}, FS, r"harmonics=5 reaches 250 Hz.*use harmonics: 4 or 'all'"),
    ({"freq": 50.0, "harmonics": 0}, FS, r"harmonics=0: use 1"),
    ({"freq": 50.0, "harmonics": "al"}, FS, r"harmonics='al' must be int \| 'all'"),
])
def test_notch_config_errors_are_one_line_and_name_the_fix(raw, fs, match):
    with pytest.raises(ConfigError, match=match) as err:
        _node(Notch, raw, _meta(fs=fs))
    assert "\n" not in str(err.value)


# -- FIR ----------------------------------------------------------------------


@pytest.mark.parametrize("raw, cutoff, pass_zero", [
    ({"l_freq": 1.0, "h_freq": 40.0, "numtaps": 251}, [1.0, 40.0], False),
    ({"h_freq": 30.0, "numtaps": 100, "window": "hann"}, 30.0, True),
    ({"l_freq": 5.0, "trans_bandwidth": 4.0}, 5.0, False),
])
def test_fir_equals_lfilter_from_the_steady_state_of_the_first_sample(raw, cutoff, pass_zero):
    x = _signal()
    node = _node(Fir, raw)
    node.warmup()
    numtaps = raw.get("numtaps") or 413  # 3.3 * 500 / 4 = 412.5 -> 413 (odd)
    taps = firwin(numtaps, cutoff, window=raw.get("window", "hamming"), pass_zero=pass_zero, fs=FS)
    np.testing.assert_array_equal(node._taps, taps)
    desc = node.outputs[""].desc
    assert desc["numtaps"] == numtaps and desc["delay_samples"] == (numtaps - 1) / 2
    assert desc["delay_s"] == pytest.approx((numtaps - 1) / 2 / FS)
    y = node.process(Chunk(x, 0, 0.0, FS, [])).data
    zi = lfilter_zi(taps, 1.0)[:, None] * x[0][None, :]
    ref, _ = lfilter(taps, 1.0, x, axis=0, zi=zi)
    np.testing.assert_allclose(y, ref, rtol=0, atol=ATOL)
    np.testing.assert_allclose(y[:200, :2], fir_loop(taps, x[:200, :2]), rtol=0, atol=ATOL)


def test_fir_automatic_length_follows_mne():
    node = _node(Fir, {"l_freq": 1.0, "h_freq": 40.0})
    # MNE 'auto': l_trans = min(max(0.25, 2), 1) = 1 Hz, h_trans = 10 Hz; 3.3 / 1 Hz * 500 Hz = 1650 -> 1651
    assert node._taps.size == 1651
    fir = mne.filter.create_filter(None, FS, 1.0, 40.0, fir_design="firwin", verbose=False)
    assert fir.size == 1651


def test_fir_with_given_taps_and_an_asymmetric_response():
    x = _signal(800)
    taps = [0.5, 0.3, 0.15, 0.05]
    node = _node(Fir, {"taps": taps})
    assert node.outputs[""].desc["delay_samples"] is None
    y = _cat(_feed(node, x, [3, 4, 400]))
    ref, _ = lfilter(taps, 1.0, x, axis=0, zi=lfilter_zi(taps, 1.0)[:, None] * x[0][None, :])
    np.testing.assert_allclose(y, ref, rtol=0, atol=ATOL)
    assert _node(Fir, {"taps": [1.0, 2.0, 1.0]}).outputs[""].desc["delay_samples"] == 1.0


def test_fir_starts_without_a_transient_on_a_dc_offset():
    x = np.full((600, 2), 2000.0)
    for raw in ({"l_freq": 1.0, "numtaps": 301}, {"h_freq": 40.0, "numtaps": 301}):
        node = _node(Fir, raw, _meta(("Cz", "Pz")))
        y = node.process(Chunk(x, 0, 0.0, FS, [])).data
        # the steady-state response of a constant from the first sample on: the DC gain times the offset
        np.testing.assert_allclose(y, 2000.0 * node._taps.sum(), rtol=0, atol=1e-9)


def test_fir_is_bit_identical_for_any_split():
    x = _signal()
    _assert_split_invariant(lambda: _node(Fir, {"l_freq": 1.0, "h_freq": 40.0, "numtaps": 301}), x)


def test_fir_holds_a_nan_burst_and_counts_it():
    x = _signal()
    bad = x.copy()
    bad[0, 1] = np.nan  # the very first sample too: history starts from 0 there
    bad[900:1000, 3] = np.nan
    bad[2000, 0] = np.inf
    node = _node(Fir, {"h_freq": 40.0, "numtaps": 201})
    y = _cat(_feed(node, bad, [950, 2000, 2001, 2002]))
    assert np.isfinite(y).all()
    assert node.report() == {"replaced_nonfinite": 102}
    held = hold_nonfinite(bad)
    taps = node._taps
    ref, _ = lfilter(taps, 1.0, held, axis=0, zi=lfilter_zi(taps, 1.0)[:, None] * held[0][None, :])
    np.testing.assert_allclose(y, ref, rtol=0, atol=ATOL)


@pytest.mark.parametrize("raw, match", [
    ({"l_freq": 5.0, "numtaps": 100}, r"numtaps=100: a high-pass FIR needs an odd length; use 101"),
    ({"h_freq": 30.0, "numtaps": 101, "trans_bandwidth": 5.0}, r"give numtaps or trans_bandwidth, not both"),
    ({"taps": [1.0, 1.0], "h_freq": 30.0}, r"taps are given, so drop \['h_freq'\]"),
    ({"h_freq": 300.0}, r"h_freq=300.0 Hz must be below the Nyquist frequency 250 Hz"),
    ({"h_freq": 30.0, "window": "hammng"}, r"no automatic length; give numtaps.*did you mean 'hamming'"),
    ({"l_freq": 40.0, "h_freq": 30.0}, r"l_freq=40.0 must be below h_freq=30.0"),
    ({"numtaps": 11}, r"set l_freq, h_freq or both"),
])
def test_fir_config_errors_are_one_line_and_name_the_fix(raw, match):
    with pytest.raises(ConfigError, match=match) as err:
        _node(Fir, raw)
    assert "\n" not in str(err.value)


# -- re-referencing -----------------------------------------------------------


def _raw(x, names=NAMES):
    info = mne.create_info(list(names), FS, "eeg")
    return mne.io.RawArray(x.T.copy(), info, verbose=False)


def test_common_average_equals_mne_set_eeg_reference():
    x = _signal()
    node = _node(Reref, {"method": "common_average"})
    y = _cat(_feed(node, x, [7, 8, 1000]))
    ref = mne.set_eeg_reference(_raw(x), "average", copy=True, verbose=False)[0].get_data().T
    np.testing.assert_allclose(y, ref, rtol=0, atol=ATOL)


def test_common_average_over_picks_with_excluded_bad_channels_equals_mne():
    x = _signal()
    node = _node(Reref, {"picks": ["Fz", "C3", "Cz", "C4", "Pz"], "exclude": ["C4"]})
    y = node.process(Chunk(x, 0, 0.0, FS, [])).data
    assert node.outputs[""].desc["reference"] == ["Fz", "C3", "Cz", "Pz"]
    raw = _raw(x)
    raw.info["bads"] = ["C4"]
    with pytest.warns(RuntimeWarning, match="unit"):
        raw.set_channel_types({"O1": "misc", "Oz": "misc", "O2": "misc"}, verbose=False)  # not re-referenced
    mne_ref = mne.set_eeg_reference(raw, "average", copy=True, verbose=False)[0].get_data().T
    # MNE leaves a bad channel as it was; rtneuro re-references an excluded channel too (same reference for all picks)
    good = [0, 1, 2, 4, 5, 6, 7]
    np.testing.assert_allclose(y[:, good], mne_ref[:, good], rtol=0, atol=ATOL)
    np.testing.assert_allclose(y[:, 3], x[:, 3] - x[:, [0, 1, 2, 4]].mean(axis=1), rtol=0, atol=ATOL)
    np.testing.assert_allclose(y, common_average_loop(x, [0, 1, 2, 4], [0, 1, 2, 3, 4]), rtol=0, atol=ATOL)
    np.testing.assert_array_equal(y[:, 5:], x[:, 5:])


def test_bipolar_equals_mne_set_bipolar_reference():
    names = (*NAMES, "EOG-L")  # a name holding '-' itself
    x = _signal(c=len(names))
    node = _node(Reref, {"method": "bipolar", "pairs": ["Fz-Cz", "C3-C4", "O1-O2", "EOG-L-Fz"]}, _meta(names))
    y = _cat(_feed(node, x, [1, 2, 3, 1777]))
    assert node.outputs[""].ch_names == ("Fz-Cz", "C3-C4", "O1-O2", "EOG-L-Fz")
    bip = mne.set_bipolar_reference(_raw(x[:, :8]), ["Fz", "C3", "O1"], ["Cz", "C4", "O2"], drop_refs=False,
                                    verbose=False)
    ref = bip.get_data(picks=["Fz-Cz", "C3-C4", "O1-O2"]).T
    np.testing.assert_allclose(y[:, :3], ref, rtol=0, atol=ATOL)
    np.testing.assert_array_equal(y[:, 3], x[:, 8] - x[:, 0])


def test_laplacian_with_given_neighbours_equals_a_naive_loop():
    x = _signal()
    neighbors = {"Cz": ["Fz", "C3", "C4", "Pz"], "Oz": ["O1", "O2", "Pz"]}
    node = _node(Reref, {"method": "laplacian", "neighbors": neighbors})
    y = _cat(_feed(node, x, [500]))
    assert node.outputs[""].ch_names == ("Cz", "Oz")
    ref = neighbor_loop(x, [(2, [0, 1, 3, 4]), (6, [5, 7, 4])])
    np.testing.assert_allclose(y, ref, rtol=0, atol=ATOL)


def test_laplacian_neighbours_from_the_10_05_montage():
    names = ("Fz", "FCz", "C1", "Cz", "C2", "CPz", "Pz", "C3", "C4", "Counter")
    x = _signal(c=len(names))
    node = _node(Reref, {"method": "laplacian", "n_neighbors": 4}, _meta(names))
    # 'Counter' has no position: neither derived nor a neighbour
    assert node.outputs[""].ch_names == names[:-1]
    # the classic Hjorth cross around Cz
    assert sorted(node.neighbor_map["Cz"]) == ["C1", "C2", "CPz", "FCz"]
    pos = _standard_positions()
    expected = nearest_neighbors(pos, list(names[:-1]), 4)
    assert node.neighbor_map == expected
    y = node.process(Chunk(x, 0, 0.0, FS, [])).data
    derived = [(names.index(a), [names.index(b) for b in nbs]) for a, nbs in expected.items()]
    np.testing.assert_allclose(y, neighbor_loop(x, derived), rtol=0, atol=ATOL)


@pytest.mark.parametrize("raw", [
    {"method": "common_average"},
    {"method": "bipolar", "pairs": ["Fz-Cz", "O1-O2"]},
    {"method": "laplacian", "n_neighbors": 3},
])
def test_reref_is_bit_identical_for_any_split(raw):
    _assert_split_invariant(lambda: _node(Reref, raw), _signal())


def test_a_nan_channel_drops_out_of_the_average_sample_by_sample():
    x = _signal()
    bad = x.copy()
    bad[1000:1100, 3] = np.nan  # C4 dead for 100 samples
    bad[2000, :] = np.nan  # every channel lost for one sample
    node = _node(Reref, {})
    y = _cat(_feed(node, bad, [1050]))
    ref = common_average_loop(bad, list(range(8)), list(range(8)))
    np.testing.assert_allclose(y, ref, rtol=0, atol=ATOL)
    # the others are referenced to the mean of the 7 good channels while C4 is out, and C4 stays NaN
    good = [0, 1, 2, 4, 5, 6, 7]
    np.testing.assert_allclose(y[1000:1100, 0], x[1000:1100, 0] - x[1000:1100, good].mean(axis=1), rtol=0, atol=ATOL)
    assert np.isnan(y[1000:1100, 3]).all() and np.isnan(y[2000]).all()
    # and nothing lingers afterwards
    assert np.isfinite(y[1100:2000]).all() and np.isfinite(y[2001:]).all()
    np.testing.assert_allclose(y[1100:2000], common_average_loop(x[1100:2000], list(range(8)), list(range(8))),
                               rtol=0, atol=ATOL)
    assert node.report() == {"nonfinite_left_out": 100 + 8, "samples_without_reference": 1}


def test_a_nan_neighbour_drops_out_of_a_laplacian():
    x = _signal()
    bad = x.copy()
    bad[300:320, 0] = np.nan
    node = _node(Reref, {"method": "laplacian", "neighbors": {"Cz": ["Fz", "Pz"], "Fz": ["Cz"]}})
    y = node.process(Chunk(bad, 0, 0.0, FS, [])).data
    np.testing.assert_allclose(y[300:320, 0], x[300:320, 2] - x[300:320, 4], rtol=0, atol=ATOL)
    assert np.isnan(y[300:320, 1]).all() and np.isfinite(y[320:]).all()
    assert node.report() == {"nonfinite_left_out": 20, "samples_without_reference": 0}


@pytest.mark.parametrize("raw, match", [
    ({"method": "bipolar", "pairs": ["Fz-Cx"]}, r"pair 'Fz-Cx': 'Cx' is not a channel of stream 'eeg' \(did you mean 'Cz'\?\)"),
    ({"method": "bipolar", "pairs": ["FzCz"]}, r"must be written 'A-B'"),
    ({"method": "bipolar", "pairs": ["Fz-Cz", "O1-O2", "Fz-Cz"]}, r"pair 'Fz-Cz' is listed twice"),
    ({"method": "bipolar"}, r"method 'bipolar' needs pairs"),
    ({"picks": ["Fz", "Pzz"]}, r"picks: 'Pzz' is not a channel of stream 'eeg' \(did you mean 'Pz'\?\)"),
    ({"exclude": ["c3"]}, r"exclude: 'c3' is not a channel.*did you mean 'C3'"),
    ({"picks": ["Fz"], "exclude": ["Fz"]}, r"every picked channel is excluded"),
    ({"pairs": ["Fz-Cz"]}, r"pairs are for method 'bipolar'.*set method: bipolar"),
    ({"method": "laplacian", "neighbors": {"Cz": ["Czz"]}}, r"neighbors of 'Cz': 'Czz' is not a channel.*did you mean 'Cz'"),
    ({"method": "laplacian", "n_neighbors": 8}, r"has only 7 channels .* lower n_neighbors"),
    ({"method": "lapacian"}, r"is not one of .*did you mean 'laplacian'"),
])
def test_reref_config_errors_are_one_line_and_name_the_fix(raw, match):
    with pytest.raises(ConfigError, match=match) as err:
        _node(Reref, raw)
    assert "\n" not in str(err.value)


def test_laplacian_refuses_a_pick_without_montage_position():
    with pytest.raises(ConfigError, match=r"'Cz1' has no position on the 10-05 montage.*give neighbors"):
        _node(Reref, {"method": "laplacian", "picks": ["Cz1"]}, _meta(("Cz1", "Fz", "Pz", "C3", "C4")))


# -- decimation ---------------------------------------------------------------


@pytest.mark.parametrize("first", [0, 1003])  # 1003: the stream does not start on a multiple of q
@pytest.mark.parametrize("ftype", ["iir", "fir"])
def test_decimate_equals_filtering_then_slicing_on_absolute_indices(ftype, first):
    q = 4
    x = _signal()
    node = _node(Decimate, {"q": q, "ftype": ftype})
    node.warmup()
    chunks = _feed(node, x, [1, 2, 3, 5, 700, 1337], first=first)
    y = _cat(chunks)
    if ftype == "iir":
        sos = cheby1(8, 0.05, 0.8 / q, output="sos")
        full, _ = sosfilt(sos, x, axis=0, zi=sosfilt_zi(sos)[:, :, None] * x[0][None, None, :])
    else:
        taps = node._taps
        assert taps.size % 2 == 1 and node.outputs[""].desc["delay_samples"] == (taps.size - 1) / 2
        full, _ = lfilter(taps, 1.0, x, axis=0, zi=lfilter_zi(taps, 1.0)[:, None] * x[0][None, :])
    phase = (-first) % q  # first row whose stream index is a multiple of q
    ref = full[phase::q]
    np.testing.assert_allclose(y, ref, rtol=0, atol=ATOL)
    # every output chunk says where its rows are: index // q, the time of that input sample, sfreq / q
    row = 0
    for c in chunks:
        assert c.first == (first + phase) // q + row
        assert c.t0 == pytest.approx(c.first * q / FS)
        assert c.sfreq == FS / q
        row += c.data.shape[0]
    assert node.outputs[""].sfreq == FS / q


@pytest.mark.parametrize("ftype", ["iir", "fir"])
def test_decimate_is_bit_identical_for_any_split(ftype):
    x = _signal()
    _assert_split_invariant(lambda: _node(Decimate, {"q": 3, "ftype": ftype}), x, first=7)


def _gain_db(node, f, fs=1000.0, n=8000):
    """Output RMS over input RMS of a settled tone, in dB."""
    t = np.arange(n) / fs
    x = (50.0 * np.sin(2 * np.pi * f * t))[:, None]
    y = _cat(_feed(node, x, _splits(n, 20), fs=fs))
    settled = y[y.shape[0] // 2:, 0]
    return 20 * np.log10(np.sqrt(np.mean(settled**2)) / (50.0 / np.sqrt(2)))


@pytest.mark.parametrize("ftype, f_alias", [
    ("iir", 200.0),  # 1.6 x the new Nyquist (125 Hz): Chebyshev I order 8 gives -75 dB there
    ("fir", 130.0),  # just above the new Nyquist: the Kaiser FIR's stop band starts at 125 Hz
])
def test_decimate_attenuates_a_tone_above_the_new_nyquist_by_more_than_60_db(ftype, f_alias):
    meta = _meta(("Cz",), fs=1000.0)
    stop = _gain_db(_node(Decimate, {"q": 4, "ftype": ftype}, meta), f_alias)
    assert stop < -60.0, f"{f_alias} Hz aliased at {stop:.1f} dB"
    passed = _gain_db(_node(Decimate, {"q": 4, "ftype": ftype}, meta), 40.0)
    assert abs(passed) < 0.1, f"40 Hz passed at {passed:.2f} dB"


def test_decimate_holds_a_nan_burst_and_counts_it():
    x = _signal()
    bad = x.copy()
    bad[400:460, 1] = np.nan
    for ftype in ("iir", "fir"):
        node = _node(Decimate, {"q": 2, "ftype": ftype})
        y = _cat(_feed(node, bad, [430, 431]))
        assert np.isfinite(y).all() and node.report() == {"replaced_nonfinite": 60}
        ref = _cat(_feed(_node(Decimate, {"q": 2, "ftype": ftype}), hold_nonfinite(bad), []))
        np.testing.assert_array_equal(y, ref)


def test_decimate_refuses_a_factor_that_cuts_the_band_upstream():
    bp = Bandpass(BandpassParams(l_freq=1.0, h_freq=40.0), [_meta()], NodeContext(node_id="bp"))
    assert bp.outputs[""].desc == {"l_freq": 1.0, "h_freq": 40.0}
    with pytest.raises(ConfigError, match=r"q=6 gives a new Nyquist frequency of 41.6667 Hz \(pass band to 33.3333 Hz\), "
                                          r"below the 40 Hz band of stream 'bp'; use q <= 5 or lower h_freq upstream"):
        Decimate(DecimateParams(q=6), [bp.outputs[""]], NodeContext(node_id="d"))
    bp200 = Bandpass(BandpassParams(h_freq=200.0), [_meta()], NodeContext(node_id="bp"))
    with pytest.raises(ConfigError, match=r"do not decimate this stream or lower h_freq upstream to 100 Hz"):
        Decimate(DecimateParams(q=2), [bp200.outputs[""]], NodeContext(node_id="d"))
    ok = Decimate(DecimateParams(q=5), [bp.outputs[""]], NodeContext(node_id="d"))
    assert ok.outputs[""].desc["h_freq"] == 40.0 and ok.outputs[""].sfreq == 100.0


@pytest.mark.parametrize("raw, match", [
    ({"q": 1}, r"q=1 must be >= 2"),
    ({"q": 2.5}, r"q=2.5 must be an integer"),
    ({"q": 4, "ftype": "fri"}, r"did you mean 'fir'"),
])
def test_decimate_config_errors(raw, match):
    with pytest.raises(ConfigError, match=match) as err:
        _node(Decimate, raw)
    assert "\n" not in str(err.value)


# -- a graph file -------------------------------------------------------------


def test_a_graph_file_builds_the_whole_chain(write_graph):
    graph = {"name": "filters", "nodes": [
        {"id": "src", "type": "synthetic", "params": {"n_channels": 4, "sfreq": 1000.0, "ch_names": ["Fz", "Cz", "Pz", "Oz"]}},
        {"id": "car", "type": "reref", "inputs": ["src"], "params": {"method": "common_average", "exclude": ["Oz"]}},
        {"id": "line", "type": "notch", "inputs": ["car"], "params": {"freq": 60.0, "harmonics": "all"}},
        {"id": "lp", "type": "fir", "inputs": ["line"], "params": {"h_freq": 40.0, "trans_bandwidth": 10.0}},
        {"id": "dec", "type": "decimate", "inputs": ["lp"], "params": {"q": 8}},
        {"id": "bip", "type": "reref", "inputs": ["dec"], "params": {"method": "bipolar", "pairs": ["Fz-Pz"]}},
    ]}
    g = load_graph(write_graph(graph))
    assert {n.type for n in g.nodes.values()} >= {"reref", "notch", "fir", "decimate"}
    assert g.streams["dec"].sfreq == 125.0 and g.streams["bip"].ch_names == ("Fz-Pz",)
    assert g.streams["line"].desc["notch_hz"] == [60.0, 120.0, 180.0, 240.0, 300.0, 360.0, 420.0, 480.0]
    bad = dict(graph)
    bad["nodes"] = [*graph["nodes"][:-1], {"id": "bip", "type": "reref", "inputs": ["dec"],
                                           "params": {"method": "bipolar", "pairs": ["Fz-Pzz"]}}]
    with pytest.raises(ConfigError, match=r"'Pzz' is not a channel of stream 'dec' \(did you mean 'Pz'\?\)"):
        load_graph(write_graph(bad, "bad.yaml"))


def test_params_dataclasses_reject_nonsense_directly():
    with pytest.raises(ConfigError, match="above 0 Hz"):
        NotchParams(freq=0.0)
    with pytest.raises(ConfigError, match="taps is empty"):
        FirParams(taps=[])
    with pytest.raises(ConfigError, match="needs pairs"):
        RerefParams(method="bipolar")
