"""Sources: the seeded synthetic generator and the replay of real recordings."""

from __future__ import annotations

import mne
import numpy as np
import pytest
from scipy.signal import welch

from rtneuro.errors import ConfigError
from rtneuro.messages import EVENT_DTYPE
from rtneuro.nodes import NodeContext, build_params
from rtneuro.nodes.sources import FileReplay, FileReplayParams, Synthetic, SyntheticParams

from conftest import REPLAY


def _synthetic(**kw) -> Synthetic:
    node = Synthetic(build_params(SyntheticParams, kw, "params"), [], NodeContext(node_id="syn"))
    node.reset()
    node.start(100.0)
    return node


def _drain(src, prefetch_every=0):
    chunks = []
    k = 0
    while src.next_due() is not None:
        out = src.read()
        chunks.append(out)
        k += 1
        if prefetch_every and k % prefetch_every == 0:
            src.prefetch()
    return chunks


def test_synthetic_is_deterministic_and_independent_of_chunk_size():
    kw = dict(n_channels=3, sfreq=500.0, seed=7, duration_s=20.0, burst_rate_hz=1.0, oscillations=[[10.0, 5.0], [21.0, 2.0]])
    ref = np.concatenate([c.data for c in _drain(_synthetic(chunk_size=32, **kw))])
    for chunk, prefetch in ((1, 0), (7, 3), (1000, 1), (4096, 0), (5000, 1)):
        got = np.concatenate([c.data for c in _drain(_synthetic(chunk_size=chunk, **kw), prefetch)])
        assert np.array_equal(got, ref), chunk
    other = np.concatenate([c.data for c in _drain(_synthetic(chunk_size=32, **{**kw, "seed": 8}))])
    assert not np.allclose(other, ref)
    assert ref.shape == (10_000, 3)


def test_synthetic_timing_follows_the_origin_and_sample_index():
    src = _synthetic(sfreq=100.0, chunk_size=10, duration_s=1.0)
    assert src.next_due() == pytest.approx(100.0 + 9 / 100.0)  # the chunk's last sample
    c = src.read()
    assert (c.first, c.t0, c.sfreq) == (0, 100.0, 100.0)
    assert src.read().t0 == pytest.approx(100.1)
    assert len(_drain(src)) == 8
    assert src.next_due() is None


@pytest.mark.parametrize("chi", [0.5, 1.0, 2.0])
def test_synthetic_background_has_the_requested_1_over_f_slope(chi):
    src = _synthetic(n_channels=2, sfreq=500.0, chunk_size=500, duration_s=120.0, oscillations=[], noise_amplitude=0.0,
                     aperiodic_exponent=chi, aperiodic_amplitude=10.0)
    x = np.concatenate([c.data for c in _drain(src)])[2500:]
    f, p = welch(x, fs=500.0, nperseg=2000, axis=0)
    sel = (f >= 2) & (f <= 100)
    slope = np.polyfit(np.log10(f[sel]), np.log10(p[sel].mean(axis=1)), 1)[0]
    assert slope == pytest.approx(-chi, abs=0.15)
    assert x.std() == pytest.approx(10.0, rel=0.2)


def test_synthetic_oscillation_and_bursts_show_in_the_spectrum():
    src = _synthetic(n_channels=1, sfreq=250.0, chunk_size=25, duration_s=60.0, oscillations=[[10.0, 5.0]],
                     burst_rate_hz=2.0, burst_freq_hz=25.0, burst_amplitude=10.0, aperiodic_amplitude=1.0)
    x = np.concatenate([c.data for c in _drain(src)])
    f, p = welch(x[:, 0], fs=250.0, nperseg=1000)
    assert abs(f[np.argmax(p)] - 10.0) <= 0.25
    beta = p[(f > 23) & (f < 27)].mean()
    assert beta > 20 * p[(f > 40) & (f < 60)].mean()


def test_synthetic_rejects_oscillations_above_nyquist():
    with pytest.raises(ConfigError, match="must lie in"):
        Synthetic(SyntheticParams(sfreq=100.0, oscillations=[(60.0, 1.0)]), [], NodeContext(node_id="s"))


# -- file replay --------------------------------------------------------------


def _replay(**kw) -> FileReplay:
    kw.setdefault("path", str(REPLAY / "S003R01.edf"))
    node = FileReplay(build_params(FileReplayParams, kw, "params"), [], NodeContext(node_id="eeg"))
    node.open()
    node.reset()
    node.start(50.0)
    return node


def test_file_replay_gives_exactly_the_samples_mne_reads_in_microvolts():
    src = _replay(chunk_size=37, picks=["Oz", "C3", "Fp1"])
    chunks = _drain(src, prefetch_every=2)
    data = np.concatenate([c[0][1].data for c in chunks])
    raw = mne.io.read_raw(REPLAY / "S003R01.edf", verbose="error")
    picks = [raw.ch_names.index(n) for n in ("Oz..", "C3..", "Fp1.")]
    np.testing.assert_array_equal(data, raw.get_data(picks=picks).T * 1e6)
    meta = src.outputs[""]
    assert meta.ch_names == ("Oz", "C3", "Fp1") and meta.units == ("uV",) * 3 and meta.sfreq == 160.0
    assert [c[0][1].first for c in chunks[:3]] == [0, 37, 74]
    assert chunks[1][0][1].t0 == pytest.approx(50.0 + 37 / 160.0)


def test_file_replay_publishes_annotations_and_file_boundaries_as_events():
    src = _replay(path=[str(REPLAY / "S003R01.edf"), str(REPLAY / "S003R02.edf")], chunk_size=16, picks="eeg")
    events = [ev for c in _drain(src) for port, ev in c if port == "events"]
    ev = np.concatenate([e.data for e in events])
    assert ev.dtype == EVENT_DTYPE
    labels = {v: k for k, v in src.outputs["events"].event_id.items()}
    assert [labels[c] for c in ev["code"]] == ["file:S003R01.edf", "T0", "file:S003R02.edf", "T0"]
    assert [x.decode() for x in ev["label"]] == ["file:S003R01.edf", "T0", "file:S003R02.edf", "T0"]
    assert ev["index"].tolist() == [0, 0, 9760, 9760]
    assert ev["time"][2] == pytest.approx(50.0 + 9760 / 160.0)
    assert src.n_total == 19520 and src.outputs[""].n_channels == 64


def test_file_replay_loops_and_crops():
    src = _replay(start_s=1.0, stop_s=2.0, chunk_size=40, loop=True, events=False)
    data = np.concatenate([src.read()[0][1].data for _ in range(8)])  # 320 samples: two laps of 160
    np.testing.assert_array_equal(data[:160], data[160:])
    raw = mne.io.read_raw(REPLAY / "S003R01.edf", verbose="error")
    np.testing.assert_array_equal(data[:160], raw.get_data(start=160, stop=320).T * 1e6)


def test_file_replay_resumes_at_a_chunk_boundary_after_a_restart():
    src = _replay(chunk_size=16)
    src.start(50.0, resume=1000)
    c = src.read()[0][1]
    assert c.first == 992 and c.t0 == pytest.approx(50.0 + 992 / 160.0)


def test_files_that_disagree_cannot_be_played_back_to_back(tmp_path):
    raw = mne.io.read_raw(REPLAY / "S003R01.edf", preload=True, verbose="error").pick([0, 1, 2]).crop(0, 5)
    other = tmp_path / "three_raw.fif"
    raw.save(other, verbose="error")
    with pytest.raises(ConfigError, match="channels or sampling rate differ"):
        _replay(path=[str(REPLAY / "S003R01.edf"), str(other)])


def test_a_fif_recording_replays_too(tmp_path):
    raw = mne.io.read_raw(REPLAY / "S003R01.edf", preload=True, verbose="error").pick([0, 1]).crop(0, 3)
    raw.set_annotations(mne.Annotations([1.0], [0.5], ["stim"]))
    path = tmp_path / "small_raw.fif"
    raw.save(path, verbose="error")
    src = _replay(path=str(path), chunk_size=32)
    chunks = _drain(src)
    data = np.concatenate([c[0][1].data for c in chunks])
    np.testing.assert_allclose(data, raw.get_data().T * 1e6, rtol=1e-6)
    ev = np.concatenate([e.data for c in chunks for port, e in c if port == "events"])
    labels = {v: k for k, v in src.outputs["events"].event_id.items()}
    assert [labels[c] for c in ev["code"]] == ["file:small_raw.fif", "stim"]
    assert ev["index"][1] == 160 and ev["duration"][1] == pytest.approx(0.5)


def test_a_file_replay_process_does_not_import_scipy_signal():
    """scipy.signal costs 1.6 s to import (rtneuro/_lazy.py): only a process that designs a filter pays for it."""
    import subprocess
    import sys

    code = ("import sys, rtneuro.nodes.sources, rtneuro.nodes.filters, rtneuro.nodes.spectral, rtneuro.nodes.plant; "
            "from rtneuro.nodes import node_class; node_class('file_replay'); "
            "print('scipy.signal' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    # and the lazy module is the real one once used (but for the design functions: tests/test_design_cache.py)
    import scipy.signal

    from rtneuro.nodes.filters import signal
    assert signal.sosfilt is scipy.signal.sosfilt


@pytest.mark.parametrize("first_samp, shift_s", [(0, 0.0), (1234, 0.0), (1234, 2.5)])
def test_annotation_sample_indices_equal_mnes_time_as_index(first_samp, shift_s):
    # what MNE computes with raw.time_as_index(onset, use_rounding=True, origin=orig_time), here without raw.times:
    # a raw starting at a later first sample, annotations measured from another origin, onsets between samples
    from datetime import UTC, datetime, timedelta

    from rtneuro.nodes.sources import annotation_events

    sfreq = 160.0
    info = mne.create_info(["a", "b"], sfreq, "eeg")
    raw = mne.io.RawArray(np.zeros((2, 5000)), info, first_samp=first_samp, verbose="error")
    meas = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    raw.set_meas_date(meas)
    onsets = np.array([0.0, 0.3, 1.0031, 7.77, 12.5]) + first_samp / sfreq
    raw.set_annotations(mne.Annotations(onsets, [0.5] * 5, ["T0", "T1", "T2", "T1", "T0"],
                                        orig_time=meas + timedelta(seconds=shift_s)))
    ann = raw.annotations
    expected = raw.time_as_index(ann.onset, use_rounding=True, origin=ann.orig_time)
    got = annotation_events(raw)
    assert [i for i, _, _ in got] == expected.tolist() and len(got) == len(ann) > 0
    assert [d for _, d, _ in got] == list(ann.description) and [x for _, _, x in got] == list(ann.duration)
    # and a file's: the labelled run's 30 annotations
    edf = mne.io.read_raw_edf(REPLAY / "S003R03.edf", verbose="error")
    ann = edf.annotations
    assert [i for i, _, _ in annotation_events(edf)] == edf.time_as_index(ann.onset, use_rounding=True, origin=ann.orig_time).tolist()
