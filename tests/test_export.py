"""Export: a recorded session opens in MNE (FIF, EDF) and pynwb (NWB) with its data, times and annotations.

Two sessions: one recorded from a running graph (a FIF recording replayed
through band-pass, band power, a threshold controller and the simulated
stimulator, all in one process, at full speed), and one written by driving
the recorder node directly, with what a live run rarely gives on purpose: a
gap, a publisher restart, a NaN, float32 samples, mixed units, a refused
command and a cut file.
"""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime

import mne
import numpy as np
import pytest
import yaml

from rtneuro.errors import ConfigError
from rtneuro.messages import COMMAND_DTYPE, DECISION_DTYPE, Chunk, StreamMeta, make_events
from rtneuro.nodes.base import NodeContext
from rtneuro.nodes.recorder import Recorder, RecorderParams
from rtneuro.recording.export import export_session
from rtneuro.recording.replay import session_info
from rtneuro.recording.session import append_report, recording_graph
from rtneuro.recording.xdf_read import read_session
from rtneuro.runtime.supervisor import Supervisor

#: one worker runs the module, so its sessions (a graph run for graph_session) are made once, not once per worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("export")]
pytest.importorskip("edfio")
NWBHDF5IO = pytest.importorskip("pynwb").NWBHDF5IO

SFREQ = 250.0
#: FIF stores annotation onsets as float32: about 8 us at 100 s (the exact time is in each annotation's extras)
FIF_ONSET_TOL = 1e-4


# -- the sessions -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph_session(tmp_path_factory):
    """A session recorded from a running graph: 12 s of 4-channel EEG with two alpha bursts and two markers."""
    d = tmp_path_factory.mktemp("graph")
    n = int(12 * SFREQ)
    t = np.arange(n) / SFREQ
    bursts = ((t >= 3) & (t < 6)) | ((t >= 8) & (t < 10))
    x = 2e-6 * np.random.default_rng(0).standard_normal((4, n)) + 20e-6 * bursts * np.sin(2 * np.pi * 10 * t)
    raw = mne.io.RawArray(x, mne.create_info(["Oz", "Pz", "C3", "C4"], SFREQ, "eeg"), verbose=False)
    raw.set_annotations(mne.Annotations([1.0, 4.5], [0.0, 2.0], ["cue", "rest"]))
    raw.save(d / "rec_raw.fif", verbose=False)
    p = "main"
    graph = {"name": "exp", "runtime": {"speed": "max", "status_interval_s": 0.2}, "nodes": [
        {"id": "src", "type": "file_replay", "process": p, "params": {"path": "rec_raw.fif", "chunk_size": 25}},
        {"id": "bp", "type": "bandpass", "inputs": ["src"], "process": p, "params": {"l_freq": 1.0, "h_freq": 40.0}},
        {"id": "bpow", "type": "bandpower", "inputs": ["bp"], "process": p,
         "params": {"bands": {"alpha": [8.0, 12.0]}, "picks": ["Oz", "Pz"], "average": True, "window_s": 0.5,
                    "step_s": 0.1, "mode": "db"}},
        {"id": "ctl", "type": "threshold", "inputs": ["bpow"], "process": p,
         "params": {"threshold": 15.0, "amplitude_ma": 1.0, "deadline_ms": 2000.0}},
        {"id": "stim", "type": "stimulator", "inputs": ["ctl"], "process": p, "params": {}},
    ]}
    (d / "graph.yaml").write_text(yaml.safe_dump(graph, sort_keys=False))
    g, path = recording_graph(d / "graph.yaml", d, flush_s=5.0, min_free_mb=0, fsync=False)
    sup = Supervisor(g, out=io.StringIO(), quiet=True)
    assert sup.run() == 0 and sup.report["errors"] == []
    append_report(path, sup.report)  # as 'rtneuro run --record' does
    return path


T0 = 100.0  # stream time of the hand-made session's first sample
CREATED = "2025-03-04T05:06:07+00:00"


def _write_hand_session(path, *, signals=True):
    lfp = StreamMeta(name="lfp", kind="sig", sfreq=100.0, ch_names=("a", "b", "c"), ch_types=("seeg", "seeg", "misc"),
                     units=("uV", "mV", "au"), dtype="<f4", source="hand")
    feat = StreamMeta(name="feat", kind="feat", sfreq=10.0, ch_names=("alpha_power_over_occipital",),
                      ch_types=("misc",), units=("dB",), source="hand")
    evt = StreamMeta(name="lfp.events", kind="evt", sfreq=0.0, dtype="event", source="hand")
    ctl = StreamMeta(name="ctl", kind="cmd", sfreq=0.0, dtype="command", source="hand")
    dec = StreamMeta(name="stim.decisions", kind="cmd", sfreq=0.0, dtype="decision", source="hand")
    inputs = [lfp, feat, evt, ctl, dec] if signals else [evt, ctl]
    port = {m.name: i for i, m in enumerate(inputs)}
    session = {"graph": "hand", "created_utc": CREATED, "config": "name: hand\nnodes: []\n",
               "versions": {"rtneuro": "0.1.0"}, "git_revision": "abc123"}
    rec = Recorder(RecorderParams(path=str(path), session=session, fsync=False, min_free_mb=0), inputs,
                   NodeContext(node_id="recorder"))
    rec.open()
    rng = np.random.default_rng(1)
    if signals:
        for k in range(10):
            if k == 3:
                continue  # a gap: 10 samples never arrive
            first = 10 * k if k < 7 else 10 * (k - 7)  # the publisher restarts at k = 7 (its index starts again)
            x = rng.standard_normal((10, 3)).astype(np.float32) * np.float32(50)
            if k == 5:
                x[2, 1] = np.nan
            rec.process(Chunk(x, first, T0 + 0.1 * k, 100.0, []), port["lfp"])
        for k in range(9):
            rec.process(Chunk(np.array([[20.0 + k]]), k, T0 + 0.05 + 0.1 * k, 10.0, []), port["feat"])
    rec.process(Chunk(make_events([(25, T0 + 0.25, 1, -1, 0.0, 0.0, "go"), (55, T0 + 0.55, 2, -1, 0.2, 0.0, "stop")]),
                      25, T0 + 0.25, 0.0, []), port["lfp.events"])
    cmds = [(T0 + 0.1, (0, 0, 0.0, 0.0, 0.0, 0.0, 0, 0.0)), (T0 + 0.2, (1, 0, 0.5, 60.0, 130.0, 0.0, 0, 0.0)),
            (T0 + 0.6, (2, 0, 0.0, 0.0, 0.0, 0.0, 0, 0.0)), (T0 + 0.65, (4, 1, 2.0, 60.0, 50.0, 0.1, 0, 0.0))]
    for i, (t, c) in enumerate(cmds):
        rec.process(Chunk(np.array([c], dtype=COMMAND_DTYPE), i, t, 0.0, []), port["ctl"])
    if signals:
        decs = np.zeros(2, dtype=DECISION_DTYPE)
        decs[0] = (0, 5000.2, T0 + 0.2, 0, 1, 0, 0.5, 60.0, 130.0, 0.0, 0, 0.0, 1, b"")
        decs[1] = (1, 5000.65, T0 + 0.65, 2, 4, 1, 2.0, 60.0, 50.0, 0.1, 0, 0.0, 3, b"amplitude 2 mA above the profile's 1.5 mA")
        rec.process(Chunk(decs, 0, T0 + 0.2, 0.0, []), port["stim.decisions"])
    rec.close()
    return path


@pytest.fixture(scope="module")
def hand_session(tmp_path_factory):
    return _write_hand_session(tmp_path_factory.mktemp("hand") / "hand.xdf")


def _records(session, name):
    s = session.stream(name)
    col = 1 if s.type == "Markers" else 0
    return list(zip(s.time_stamps.tolist(), [json.loads(r[col]) for r in s.time_series], strict=True))


def _expected_annotations(session):
    """(stream time, description) of every marker, non-hold command and gate decision."""
    out = [(t, r["label"]) for t, r in _records(session, "src.events")]
    out += [(t, {1: f"stim level ch0 {r['amplitude_ma']}mA", 2: "stim off ch0"}[r["kind"]])
            for t, r in _records(session, "ctl") if r["kind"] != 0]
    status = {0: "accepted", 6: "safe"}
    level = {1: "stim level ch0 1.0mA", 2: "stim off ch0"}
    out += [(t, f"gate {status[r['status']]}: {r['reason'] or level[r['kind']]}") for t, r in _records(session, "stim.decisions")]
    return out


# -- FIF ----------------------------------------------------------------------------------------


def test_fif_holds_each_signal_stream_with_its_data_channels_and_annotations_at_the_recorded_times(graph_session, tmp_path):
    paths = export_session(graph_session, "fif", out=tmp_path)
    stem = graph_session.stem
    assert [p.name for p in paths] == [f"{stem}-bp_raw.fif", f"{stem}-src_raw.fif", f"{stem}-stim.delivered_raw.fif"]
    s = read_session(graph_session)
    src = s.stream("src")
    raw = mne.io.read_raw_fif(tmp_path / f"{stem}-src_raw.fif", verbose=False)
    assert raw.ch_names == ["Oz", "Pz", "C3", "C4"] and raw.info["sfreq"] == SFREQ
    assert raw.get_channel_types() == ["eeg"] * 4
    # uV as recorded -> V, bit for bit (float64 streams are written as double)
    np.testing.assert_array_equal(raw.get_data(), src.time_series.T * 1e-6)
    created = datetime.fromisoformat(session_info(s)["created_utc"])
    assert raw.info["meas_date"] == created and raw.first_samp == 0
    assert "rtneuro session" in raw.info["description"] and "stream 'src'" in raw.info["description"]
    # annotations: markers, commands, decisions at their stream times (the session starts at stream time 0)
    expected = _expected_annotations(s)
    assert len(expected) >= 10 and {"cue", "rest", "stim level ch0 1.0mA", "gate safe: safe state"} <= {d for _, d in expected}
    got = [(a["onset"] - raw.first_time, a["description"], a["extras"]) for a in raw.annotations]
    assert sorted(d for _, d, _ in got) == sorted(d for _, d in expected)
    for t, desc in expected:
        match = [g for g in got if g[1] == desc and g[2]["t"] == t]  # the exact stream time, in extras
        assert len(match) == 1, (t, desc)
        assert abs(match[0][0] - t) < FIF_ONSET_TOL
    rest = next(a for a in raw.annotations if a["description"] == "rest")
    assert rest["duration"] == pytest.approx(2.0)
    # a stream that starts later: first_time is its first timestamp, annotations stay on the session's clock
    dl = s.stream("stim.delivered")
    raw = mne.io.read_raw_fif(tmp_path / f"{stem}-stim.delivered_raw.fif", verbose=False)
    assert raw.info["sfreq"] == 1000.0 and raw.first_samp == round(dl.time_stamps[0] * 1000)
    assert (raw.info["meas_date"] - created).total_seconds() + raw.first_time == pytest.approx(dl.time_stamps[0], abs=1e-6)
    np.testing.assert_array_equal(raw.get_data(), dl.time_series.T)  # misc channels keep their units (mA, Hz...)
    assert "mA: ch0.amplitude_ma" in raw.info["description"]
    level = next(a for a in raw.annotations if a["description"] == "stim level ch0 1.0mA")
    assert abs(level["onset"] - (raw.info["meas_date"] - created).total_seconds() - level["extras"]["t"]) < FIF_ONSET_TOL


def test_fif_fills_gaps_with_zeros_under_bad_gap_and_marks_restarts_and_nan(hand_session, tmp_path):
    (path,) = export_session(hand_session, "fif", out=tmp_path)
    raw = mne.io.read_raw_fif(path, verbose=False)
    lfp = read_session(hand_session).stream("lfp")
    assert raw.ch_names == ["a", "b", "c"] and raw.get_channel_types() == ["seeg", "seeg", "misc"]
    assert raw.info["meas_date"] == datetime.fromisoformat(CREATED) and raw.first_samp == 0
    x = raw.get_data()
    assert x.shape == (3, 100)  # 90 recorded samples and the 10 that never arrived
    # float32 stream, written as single: uV -> V, mV -> V, misc as recorded
    want = lfp.time_series.astype(np.float64) * [1e-6, 1e-3, 1.0]
    want = np.insert(want, [30] * 10, 0.0, axis=0).astype(np.float32).T
    np.testing.assert_array_equal(x, want)
    assert np.all(x[:, 30:40] == 0) and np.isnan(x[1, 52])
    ann = {a["description"]: (a["onset"], a["duration"]) for a in raw.annotations}
    assert ann["BAD_gap"] == pytest.approx((0.3, 0.1), abs=FIF_ONSET_TOL)
    assert ann["BAD_restart"] == pytest.approx((0.7, 0.0), abs=FIF_ONSET_TOL)
    assert ann["BAD_nonfinite"] == pytest.approx((0.52, 0.01), abs=FIF_ONSET_TOL)
    assert ann["go"][0] == pytest.approx(0.25, abs=FIF_ONSET_TOL) and ann["stop"] == pytest.approx((0.55, 0.2), abs=FIF_ONSET_TOL)
    assert ann["stim level ch0 0.5mA"][0] == pytest.approx(0.2, abs=FIF_ONSET_TOL)
    assert ann["stim train ch1 2.0mA 50.0Hz 0.1s"] == pytest.approx((0.65, 0.1), abs=FIF_ONSET_TOL)
    assert ann["gate refused: amplitude 2 mA above the profile's 1.5 mA"][0] == pytest.approx(0.65, abs=FIF_ONSET_TOL)
    assert "stim hold ch0" not in ann  # holds are heartbeats, not annotations
    assert "1 gaps (10 samples) filled with zeros" in raw.info["description"]
    # a feature stream, named: its first frame is 50 ms after the session's start, meas_date carries the sub-sample part
    (path,) = export_session(hand_session, "fif", out=tmp_path / "feat", streams=["feat"])
    raw = mne.io.read_raw_fif(path, verbose=False)
    assert raw.info["sfreq"] == 10.0 and raw.ch_names == ["alpha_power_over_occipital"]
    start = raw.info["meas_date"] - datetime.fromisoformat(CREATED)
    assert start.total_seconds() + raw.first_time == pytest.approx(0.05, abs=1e-6)
    np.testing.assert_array_equal(raw.get_data()[0], 20.0 + np.arange(9))


# -- EDF ----------------------------------------------------------------------------------------


def test_edf_holds_the_data_within_its_16_bit_resolution_and_the_annotations(graph_session, tmp_path):
    paths = export_session(graph_session, "edf", out=tmp_path, streams=["src", "stim.delivered"])
    assert [p.suffix for p in paths] == [".edf", ".edf"]
    s = read_session(graph_session)
    src = s.stream("src")
    raw = mne.io.read_raw_edf(paths[0], verbose=False)
    assert raw.ch_names == ["Oz", "Pz", "C3", "C4"] and raw.info["sfreq"] == SFREQ
    # 16 bits over each channel's range: within half a step, (max - min) / 65534 / 2 (about 0.0008 uV here)
    x = src.time_series
    step = (x.max(axis=0) - x.min(axis=0)) / 65534
    err = np.abs(raw.get_data().T * 1e6 - x)
    assert np.all(err <= step * 0.5 * (1 + 1e-6) + 1e-9)
    assert raw.info["meas_date"] == datetime.fromisoformat(session_info(s)["created_utc"])
    # EDF counts onsets from its first sample
    got = [(a["onset"], a["description"]) for a in raw.annotations]
    t0 = float(src.time_stamps[0])
    for t, desc in _expected_annotations(s):
        assert any(d == desc and abs(o - (t - t0)) < 1e-6 for o, d in got), (t, desc)
    # a stream that starts later starts the file later, and its units are in the header
    dl = s.stream("stim.delivered")
    raw = mne.io.read_raw_edf(paths[1], verbose=False)
    assert raw.info["sfreq"] == 1000.0 and raw._orig_units["ch0.amplitude_ma"] == "mA"
    level = next(t for t, d in _expected_annotations(s) if d == "stim level ch0 1.0mA")
    onset = next(a["onset"] for a in raw.annotations if a["description"] == "stim level ch0 1.0mA")
    assert onset == pytest.approx(level - dl.time_stamps[0], abs=1e-6)
    step = (dl.time_series.max(axis=0) - dl.time_series.min(axis=0)) / 65534
    step[step == 0] = 1 / 65534  # flat channels: MNE widens the range to 1
    n = len(dl.time_stamps)  # 11.5 s: EDF records are whole seconds, the last one padded under BAD_ACQ_SKIP
    assert raw.n_times == 12000 and ("BAD_ACQ_SKIP", 11.5, 0.5) in [(a["description"], a["onset"], a["duration"]) for a in raw.annotations]
    assert np.all(np.abs(raw.get_data()[:, :n].T - dl.time_series) <= step * 0.5 * (1 + 1e-6) + 1e-9)


def test_edf_marks_gaps_and_replaces_nan_by_zeros(hand_session, tmp_path):
    (path,) = export_session(hand_session, "edf", out=tmp_path)
    raw = mne.io.read_raw_edf(path, verbose=False)
    x = raw.get_data()
    assert x.shape == (3, 100) and np.all(np.isfinite(x))
    step = (x.max(axis=1) - x.min(axis=1)) / 65534  # zero is within half a step of a digital value
    assert abs(x[1, 52]) <= step[1] / 2 and np.all(np.abs(x[:, 30:40]) <= step[:, None] / 2)
    ann = {a["description"]: (a["onset"], a["duration"]) for a in raw.annotations}
    assert ann["BAD_gap"] == pytest.approx((0.3, 0.1)) and ann["BAD_nonfinite"] == pytest.approx((0.52, 0.01))
    assert ann["BAD_restart"][0] == pytest.approx(0.7) and ann["go"][0] == pytest.approx(0.25)


# -- NWB ----------------------------------------------------------------------------------------


def test_nwb_holds_every_stream_with_its_timestamps_and_the_decisions_table(graph_session, tmp_path):
    (path,) = export_session(graph_session, "nwb", out=tmp_path)
    assert path == tmp_path / f"{graph_session.stem}.nwb"
    s = read_session(graph_session)
    info = session_info(s)
    with NWBHDF5IO(str(path), "r") as io_:
        f = io_.read()
        assert f.session_start_time == datetime.fromisoformat(info["created_utc"])
        assert info["git_revision"] in f.notes and f.source_script == info["config"]
        # the source's stream in acquisition, as an ElectricalSeries with its electrodes, exact
        src = f.acquisition["src"]
        assert type(src).__name__ == "ElectricalSeries" and src.conversion == 1e-6 and src.rate == SFREQ
        np.testing.assert_array_equal(src.data[:], s.stream("src").time_series)
        np.testing.assert_allclose(src.get_timestamps(), s.stream("src").time_stamps, rtol=0, atol=1e-9)
        assert list(f.electrodes["label"][:]) == ["Oz", "Pz", "C3", "C4"]
        # what the graph computed in the processing module (the band-passed EEG on the same electrodes)
        mod = f.processing["rtneuro"]
        assert list(mod["bp"].electrodes.data[:]) == [0, 1, 2, 3]
        np.testing.assert_array_equal(mod["bpow"].data[:], s.stream("bpow").time_series)
        np.testing.assert_allclose(mod["bpow"].get_timestamps(), s.stream("bpow").time_stamps, rtol=0, atol=1e-9)
        # what the stimulator delivered in stimulus
        dl = f.stimulus["stim.delivered"]
        np.testing.assert_array_equal(dl.data[:], s.stream("stim.delivered").time_series)
        np.testing.assert_allclose(dl.get_timestamps(), s.stream("stim.delivered").time_stamps, rtol=0, atol=1e-9)
        # the gate's decisions, record for record
        dec = f.get_events_table("stim.decisions").to_dataframe()
        recs = _records(s, "stim.decisions")
        np.testing.assert_array_equal(dec["timestamp"], [t for t, _ in recs])
        assert list(dec["status_name"]) == ["safe", "accepted", "accepted", "accepted", "accepted", "safe"]
        for col in ("status", "kind", "amplitude_ma", "cause_index", "reason", "time"):
            assert list(dec[col]) == [r[col] for _, r in recs], col
        ev = f.get_events_table("src.events").to_dataframe()
        assert list(ev["label"]) == ["file:rec_raw.fif", "cue", "rest"] and list(ev["duration"]) == [0.0, 0.0, 2.0]
        assert len(f.get_events_table("ctl")) == len(s.stream("ctl").time_stamps)  # heartbeats included
        prov = f.get_events_table("rtneuro.provenance").to_dataframe()
        assert len(prov) == 4 and list(prov["input_stream"]) == ["bp"] * 4
        assert json.loads(f.scratch["rtneuro.report"].data)["exit_code"] == 0


def test_nwb_keeps_gaps_in_the_timestamps_and_invalid_times(hand_session, tmp_path):
    (path,) = export_session(hand_session, "nwb", out=tmp_path / "x.nwb")
    assert path == tmp_path / "x.nwb"
    lfp = read_session(hand_session).stream("lfp")
    with NWBHDF5IO(str(path), "r") as io_:
        f = io_.read()
        ts = f.processing["rtneuro"]["lfp"]  # mixed units (uV, mV, au): a TimeSeries, as recorded
        assert ts.data.dtype == np.float32
        np.testing.assert_array_equal(ts.data[:], lfp.time_series)
        np.testing.assert_allclose(ts.timestamps[:], lfp.time_stamps - T0, rtol=0, atol=1e-9)  # time 0: the session start
        bad = f.invalid_times.to_dataframe()
        assert list(bad["what"]) == ["gap", "restart"] and list(bad["samples"]) == [10, 0]
        np.testing.assert_allclose(bad[["start_time", "stop_time"]].to_numpy(), [[0.3, 0.4], [0.7, 0.7]], atol=1e-9)
        assert f.session_start_time == datetime.fromisoformat(CREATED)


# -- errors -------------------------------------------------------------------------------------


def test_errors_name_the_problem_and_the_fix(graph_session, hand_session, tmp_path):
    with pytest.raises(ConfigError, match=r"cannot export to 'fiff' \(did you mean 'fif'\?\); choose one of fif, edf, nwb"):
        export_session(graph_session, "fiff", out=tmp_path)
    with pytest.raises(ConfigError, match=r"stream 'bpw' is not in session .* \(did you mean 'bpow'\?\); its streams: "):
        export_session(graph_session, "edf", out=tmp_path, streams=["bpw"])
    with pytest.raises(ConfigError, match=r"stream 'ctl' is a command stream: in FIF its records are annotations"):
        export_session(graph_session, "fif", out=tmp_path, streams=["ctl"])
    with pytest.raises(ConfigError, match=r"EDF channel labels have at most 16 characters.*export it to fif or nwb"):
        export_session(hand_session, "edf", out=tmp_path, streams=["feat"])
    with pytest.raises(ConfigError, match=r"session file not found: .*nope.xdf"):
        export_session(tmp_path / "nope.xdf", "fif")
    empty = _write_hand_session(tmp_path / "markers-only.xdf", signals=False)
    with pytest.raises(ConfigError, match=r"has no signal stream to export \(rtneuro streams: lfp.events, ctl\)"):
        export_session(empty, "nwb", out=tmp_path)
    # an existing file is never overwritten, and nothing else is written either
    first = export_session(hand_session, "fif", out=tmp_path / "out")
    before = first[0].read_bytes()
    with pytest.raises(ConfigError, match=r"hand-lfp_raw.fif exists already; delete it or export to another folder"):
        export_session(hand_session, "fif", out=tmp_path / "out")
    assert first[0].read_bytes() == before and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["hand-lfp_raw.fif"]
    assert not list(tmp_path.glob("*.fif")) and not list(tmp_path.glob("*.nwb"))  # the failures left nothing


def test_a_damaged_session_is_exported_as_far_as_it_reads_with_a_warning(hand_session, tmp_path, caplog):
    cut = tmp_path / "cut.xdf"
    data = hand_session.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    damage = read_session(cut).damage
    assert damage
    with caplog.at_level(logging.WARNING, logger="rtneuro.recording.export"):
        (path,) = export_session(cut, "fif")
    assert path.parent == tmp_path and any(damage in r.getMessage() for r in caplog.records)
    raw = mne.io.read_raw_fif(path, verbose=False)
    n = len(read_session(cut).stream("lfp").time_stamps)
    assert n > 0 and raw.n_times >= n and "damaged session" in raw.info["description"]

