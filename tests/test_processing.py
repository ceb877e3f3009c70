"""Filters and band power: exact against scipy and naive references, and chunk-invariant."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import butter, sosfilt, sosfilt_zi, welch

from rtneuro.messages import Chunk, StreamMeta
from rtneuro.nodes import NodeContext
from rtneuro.nodes.buffers import RingBuffer
from rtneuro.nodes.filters import Bandpass, BandpassParams
from rtneuro.nodes.spectral import Bandpower, BandpowerParams

from conftest import feed_split
from reference.naive import NaiveRing, dft_bandpower, sosfilt_loop

FS = 250.0
RNG = np.random.default_rng(42)


def _meta(n=4, fs=FS):
    return StreamMeta(name="x", kind="sig", sfreq=fs, ch_names=tuple(f"c{i}" for i in range(n)), units=("uV",) * n)


def _feed(node, x, splits, fs=FS):
    return feed_split(node, x, splits, fs)


def _random_splits(n, k):
    return sorted(RNG.choice(np.arange(1, n), size=k, replace=False).tolist())


def _signal(n=2000, c=4):
    t = np.arange(n) / FS
    x = RNG.standard_normal((n, c)) * 2 + 40 * np.sin(2 * np.pi * 10 * t)[:, None] + 100.0  # DC offset
    return x


@pytest.mark.parametrize("l_freq, h_freq, btype", [(1.0, 40.0, "bandpass"), (5.0, None, "highpass"), (None, 30.0, "lowpass")])
def test_bandpass_equals_scipy_sosfilt_from_the_step_steady_state(l_freq, h_freq, btype):
    x = _signal()
    node = Bandpass(BandpassParams(l_freq=l_freq, h_freq=h_freq, order=4), [_meta()], NodeContext(node_id="bp"))
    node.warmup()
    y = node.process(Chunk(x, 0, 0.0, FS, [])).data
    wn = (l_freq, h_freq) if btype == "bandpass" else (l_freq or h_freq)
    sos = butter(4, wn, btype, fs=FS, output="sos")
    zi = sosfilt_zi(sos)[:, :, None] * x[0][None, None, :]
    ref, _ = sosfilt(sos, x, axis=0, zi=zi)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-10)
    naive, _ = sosfilt_loop(sos, x[:300], zi)
    np.testing.assert_allclose(y[:300], naive, rtol=0, atol=1e-10)


def test_bandpass_starts_without_a_transient_on_a_dc_offset():
    x = np.full((500, 2), 1000.0)
    node = Bandpass(BandpassParams(l_freq=1.0, h_freq=40.0), [_meta(2)], NodeContext(node_id="bp"))
    y = node.process(Chunk(x, 0, 0.0, FS, [])).data
    assert np.abs(y).max() < 1e-9


@pytest.mark.parametrize("trial", range(5))
def test_bandpass_is_bit_identical_for_any_split(trial):
    x = _signal()
    whole = Bandpass(BandpassParams(l_freq=1.0, h_freq=40.0), [_meta()], NodeContext(node_id="bp"))
    ref = whole.process(Chunk(x, 0, 0.0, FS, [])).data
    split = Bandpass(BandpassParams(l_freq=1.0, h_freq=40.0), [_meta()], NodeContext(node_id="bp"))
    got = _feed(split, x, _random_splits(x.shape[0], 1 + trial * 7))
    assert np.array_equal(got, ref)


def test_bandpass_holds_the_last_finite_value_across_a_nan_burst():
    x = _signal()
    bad = x.copy()
    bad[500:520, 1] = np.nan
    bad[700, 2] = np.inf
    node = Bandpass(BandpassParams(l_freq=1.0, h_freq=40.0), [_meta()], NodeContext(node_id="bp"))
    y = node.process(Chunk(bad, 0, 0.0, FS, [])).data
    assert np.isfinite(y).all()
    assert node.report()["replaced_nonfinite"] == 21
    held = bad.copy()
    held[500:520, 1] = bad[499, 1]
    held[700, 2] = bad[699, 2]
    ref = Bandpass(BandpassParams(l_freq=1.0, h_freq=40.0), [_meta()], NodeContext(node_id="bp")).process(
        Chunk(held, 0, 0.0, FS, [])).data
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(y[:, 0], ref[:, 0])


def test_bandpass_accepts_float32_input():
    x = _signal().astype(np.float32)
    node = Bandpass(BandpassParams(l_freq=1.0, h_freq=40.0), [_meta()], NodeContext(node_id="bp"))
    y = node.process(Chunk(x, 0, 0.0, FS, [])).data
    assert y.dtype == np.float64 and np.isfinite(y).all()


# -- band power ---------------------------------------------------------------

BANDS = {"delta": (1.0, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 12.0), "beta": (13.0, 30.0), "gamma": (30.0, 45.0)}


def _welch_reference(x, fs, window, step, mode, nperseg=None, average=False, picks=None):
    nperseg = nperseg or window
    rows = []
    cols = list(range(x.shape[1])) if picks is None else picks
    for end in range(window, x.shape[0] + 1, step):
        f, p = welch(x[end - window:end, cols], fs=fs, window="hann", nperseg=nperseg, noverlap=nperseg // 2,
                     detrend="constant", axis=0)
        df = f[1] - f[0]
        power = np.array([[p[(f >= lo) & (f <= hi), c].sum() * df for c in range(len(cols))] for lo, hi in BANDS.values()])
        if mode == "rel":
            power = power / (p[1:].sum(axis=0) * df)
        power = power.mean(axis=1) if average else power.T.ravel()
        if mode == "log10":
            power = np.log10(power)
        elif mode == "db":
            power = 10 * np.log10(power)
        rows.append(power)
    return np.array(rows)


@pytest.mark.parametrize("method", ["sliding", "fft"])
@pytest.mark.parametrize("mode", ["abs", "rel", "log10", "db"])
def test_bandpower_equals_scipy_welch(method, mode):
    x = _signal(1500, 3)
    p = BandpowerParams(bands=BANDS, window_s=1.0, step_s=0.1, mode=mode, method=method, resync_samples=1024)
    node = Bandpower(p, [_meta(3)], NodeContext(node_id="bpow"))
    node.warmup()
    got = _feed(node, x, _random_splits(1500, 20))
    ref = _welch_reference(x, FS, 250, 25, mode)
    assert got.shape == ref.shape == (51, 15)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)


def test_bandpower_with_several_welch_segments_picks_and_average():
    x = _signal(1500, 4)
    p = BandpowerParams(bands=BANDS, window_s=2.0, step_s=0.2, nperseg=128, picks=["c1", "c3"], average=True, mode="abs")
    node = Bandpower(p, [_meta(4)], NodeContext(node_id="bpow"))
    assert node.method == "fft"
    got = _feed(node, x, [100, 777])
    ref = _welch_reference(x, FS, 500, 50, "abs", nperseg=128, average=True, picks=[1, 3])
    np.testing.assert_allclose(got, ref, rtol=1e-9)
    assert node.outputs[""].ch_names == tuple(BANDS)


def test_bandpower_matches_a_naive_dft():
    x = _signal(600, 2)
    p = BandpowerParams(bands=BANDS, window_s=1.0, step_s=1.0, mode="abs")
    got = _feed(Bandpower(p, [_meta(2)], NodeContext(node_id="bpow")), x, [333])
    for j, end in enumerate(range(250, 601, 250)):
        ref = dft_bandpower(x[end - 250:end], FS, list(BANDS.values()))
        np.testing.assert_allclose(got[j], ref.T.ravel(), rtol=1e-9)


@pytest.mark.parametrize("method", ["sliding", "fft"])
def test_bandpower_is_bit_identical_for_any_split(method):
    x = _signal(3000, 4)
    p = BandpowerParams(bands=BANDS, window_s=0.5, step_s=0.1, method=method, resync_samples=1024)
    whole = _feed(Bandpower(p, [_meta()], NodeContext(node_id="b")), x, [])
    for k in (1, 13, 300):
        got = _feed(Bandpower(p, [_meta()], NodeContext(node_id="b")), x, _random_splits(3000, k))
        assert np.array_equal(got, whole)


def test_bandpower_frame_times_are_those_of_the_window_end():
    x = _signal(700, 2)
    node = Bandpower(BandpowerParams(bands=BANDS, window_s=1.0, step_s=0.2), [_meta(2)], NodeContext(node_id="b"))
    out = node.process(Chunk(x, 1000, 4.0, FS, [["src", 1.0]]))  # stream index 1000 at t = 4 s
    # 250-sample windows every 50 samples: ending after 250, 300, ..., 700 samples
    assert out.first == 0 and out.data.shape[0] == 10
    assert out.t0 == pytest.approx(4.0 + 249 / FS)
    assert out.sfreq == pytest.approx(5.0)
    assert out.extra["window"] == [1000 + 450, 1000 + 699]
    assert out.trace == [["src", 1.0]]
    nxt = node.process(Chunk(x[:60], 1700, 4.0 + 700 / FS, FS, []))
    assert nxt.first == 10 and nxt.t0 == pytest.approx(4.0 + 749 / FS)


def test_sliding_dft_does_not_drift_over_a_long_run():
    fs = 1000.0
    x = RNG.standard_normal((200_000, 1)) * 10
    p = BandpowerParams(bands={"alpha": (8.0, 12.0)}, window_s=0.256, step_s=0.032, mode="abs", resync_samples=1 << 20)
    node = Bandpower(p, [_meta(1, fs)], NodeContext(node_id="b"))
    got = _feed(node, x, list(range(32, 200_000, 32)), fs=fs)
    f, pxx = welch(x[-256:], fs=fs, window="hann", nperseg=256, axis=0)
    ref = pxx[(f >= 8) & (f <= 12)].sum() * (f[1] - f[0])
    assert got[-1, 0] == pytest.approx(ref, rel=1e-9)


# -- ring buffer --------------------------------------------------------------


def test_ring_buffer_matches_a_np_roll_buffer():
    ring, naive = RingBuffer(50, 3), NaiveRing(50, 3)
    out = np.empty((20, 3))
    for _ in range(40):
        x = RNG.standard_normal((int(RNG.integers(1, 70)), 3))
        ring.write(x)
        naive.write(x)
        if ring.written >= 20:
            np.testing.assert_array_equal(ring.read(ring.written, 20, out), naive.last(20))
        else:
            with pytest.raises(IndexError):
                ring.read(ring.written, 20, out)
    with pytest.raises(IndexError):
        ring.read(ring.written - 45, 20, out)  # older than the buffer holds


@pytest.mark.parametrize("method", ["sliding", "fft"])
@pytest.mark.parametrize("average", [False, True])
def test_bandpower_picks_and_average_with_either_method(method, average):
    x = _signal(1200, 4)
    p = BandpowerParams(bands=BANDS, window_s=1.0, step_s=0.2, picks=["c3", "c0"], average=average, mode="log10", method=method)
    node = Bandpower(p, [_meta(4)], NodeContext(node_id="b"))
    got = _feed(node, x, [1, 500, 501])
    ref = _welch_reference(x, FS, 250, 50, "log10", average=average, picks=[3, 0])
    np.testing.assert_allclose(got, ref, rtol=1e-9)
    names = node.outputs[""].ch_names
    assert names == (tuple(BANDS) if average else tuple(f"{c}:{b}" for c in ("c3", "c0") for b in BANDS))
