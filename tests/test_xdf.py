"""XDF replay of the shared recordings, and replays that give the same output at any speed."""

from __future__ import annotations

import json

import mne
import numpy as np
import pytest

from rtneuro.errors import ConfigError
from rtneuro.nodes import NodeContext, build_params
from rtneuro.nodes.sources import FileReplay, FileReplayParams
from rtneuro.nodes.xdf import XdfReplay, XdfReplayParams, _estimate_chunk, dejitter, load_streams

from conftest import REPLAY

XDF = REPLAY / "xdf"


def _xdf(**params) -> XdfReplay:
    node = XdfReplay(build_params(XdfReplayParams, params, "params"), [], NodeContext(node_id="x"))
    node.reset()
    node.start(0.0)
    return node


def _play(node) -> dict[str, list]:
    out: dict[str, list] = {}
    last_due = -np.inf
    while (due := node.next_due()) is not None:
        assert due >= last_due  # chunks come out in time order
        last_due = due
        for port, ch in node.read():
            out.setdefault(port, []).append(ch)
    return out


def test_a_clock_reset_recording_replays_whole_with_monotonic_times():
    node = _xdf(path=str(XDF / "clock_resets.xdf"))
    assert set(node.outputs) == {"", "mymarkerstream"}
    assert node.outputs[""].n_channels == 8 and node.outputs[""].sfreq == 100.0
    played = _play(node)
    eeg = np.concatenate([c.data for c in played[""]])
    times = np.concatenate([c.t0 + np.arange(c.n_times) / 100.0 for c in played[""]])  # per-chunk start times
    starts = np.array([c.t0 for c in played[""]])
    assert eeg.shape == (27815, 8)
    assert np.all(np.diff(starts) > 0)  # monotonic through the reset
    assert times[0] >= 0 and starts[-1] < 575
    raw = [s for s in load_streams(XDF / "clock_resets.xdf") if s["info"]["type"][0] == "EEG"][0]
    np.testing.assert_array_equal(eeg, np.asarray(raw["time_series"], dtype=np.float64))
    markers = np.concatenate([c.data for c in played["mymarkerstream"]])
    assert len(markers) == 175
    assert [m.decode() for m in markers["label"][:3]] == ["XXX", "Test", "Blah"]
    assert np.all(np.diff(markers["time"]) > 0)
    assert node.report()["nonmonotonic_timestamps"] == 0
    # the 274 s pause in the recording is kept: faithful timing
    assert np.diff(starts).max() > 270


def test_the_minimal_file_and_its_integer_samples():
    node = _xdf(path=str(XDF / "minimal.xdf"))
    played = _play(node)
    data = np.concatenate([c.data for c in played[""]])
    raw = [s for s in load_streams(XDF / "minimal.xdf") if s["info"]["name"][0] == "SendDataC"][0]
    np.testing.assert_array_equal(data, np.asarray(raw["time_series"], dtype=np.float64))
    labels = [m.decode() for c in played["senddatastring"] for m in c.data["label"]]
    assert labels[1:3] == ["Hello", "World"] and len(labels[0].encode()) <= 64  # the long XML marker, truncated


def test_empty_streams_are_skipped_or_refused_clearly():
    node = _xdf(path=str(XDF / "empty_streams.xdf"))
    assert node.report()["skipped_empty"] == ["Empty data stream: test stream 0 counter", "Empty marker stream: test stream 0 counter"]
    assert sum(c.n_times for c in _play(node)[""]) == 10
    with pytest.raises(ConfigError, match="have no samples; streams in the file: 'Empty data stream"):
        _xdf(path=str(XDF / "empty_streams.xdf"), select=[{"name": "Empty data stream: test stream 0 counter"}])
    picked = _xdf(path=str(XDF / "empty_streams.xdf"), select=[{"type": "data", "as": "counter"}, {"name": "ctrl", "as": "ctl"}])
    assert set(picked.outputs) == {"", "ctl"}  # only the 'data' stream with samples, as the main output
    with pytest.raises(ConfigError, match="no stream matches"):
        _xdf(path=str(XDF / "empty_streams.xdf"), select=[{"type": "EEG"}])


def test_missing_and_unreadable_xdf_files(tmp_path):
    with pytest.raises(ConfigError, match="XDF file not found"):
        _xdf(path=str(tmp_path / "none.xdf"))
    bad = tmp_path / "bad.xdf"
    bad.write_bytes(b"not an xdf file at all" * 10)
    with pytest.raises(ConfigError, match="is not an XDF file pyxdf can read"):
        _xdf(path=str(bad))


def test_dejitter_and_chunk_size_from_timestamps():
    rng = np.random.default_rng(0)
    fs = 100.0
    t = np.arange(1000) / fs
    jittery = t + rng.normal(0, 0.002, t.size)
    jittery[600:] += 300.0  # a break: two segments
    even, segs = dejitter(jittery, fs)
    assert segs == [(0, 599), (600, 999)]
    np.testing.assert_allclose(np.diff(even[:600]), 1 / fs, rtol=1e-3)
    # a sender that pushes 10 samples at once, all stamped with the push time
    chunked = np.repeat(np.arange(100) * 0.1, 10)
    assert _estimate_chunk(chunked, fs) == 10
    assert _estimate_chunk(t, fs) is None


def test_an_edf_with_channels_of_other_types_is_picked_by_type(tmp_path):
    raw = mne.io.read_raw(REPLAY / "S003R01.edf", preload=True, verbose="error").crop(0, 5).pick([0, 1, 2, 3])
    raw.set_channel_types({raw.ch_names[2]: "eog", raw.ch_names[3]: "stim"})
    path = tmp_path / "mixed_raw.fif"
    raw.save(path, verbose="error")

    def build(picks):
        return FileReplay(build_params(FileReplayParams, {"path": str(path), "picks": picks}, "p"), [], NodeContext(node_id="f"))

    node = build("eeg")
    assert node.outputs[""].n_channels == 2 and node.outputs[""].ch_types == ("eeg", "eeg")
    with pytest.raises(ConfigError, match=r"no channel of type 'ecg'; types present: \['eeg', 'eog', 'stim'\]"):
        build("ecg")


# -- the same replay at different speeds gives the same output -----------------


def _replay_graph(source: dict, speed) -> dict:
    return {
        "runtime": {"speed": speed, "status_interval_s": 0.5},
        "nodes": [
            {"id": "rec", "process": "acquire", **source},
            {"id": "bp", "type": "bandpass", "inputs": ["rec"], "process": "process", "params": {"l_freq": 1.0, "h_freq": 20.0}},
            {"id": "pow", "type": "bandpower", "inputs": ["bp"], "process": "process",
             "params": {"bands": {"alpha": [8.0, 12.0]}, "window_s": 1.0, "step_s": 0.25, "average": True}},
            {"id": "ctl", "type": "threshold", "inputs": ["pow"], "process": "control", "params": {"threshold": 15.0, "hysteresis": 2.0}},
            {"id": "out", "type": "jsonl", "inputs": ["rec", "pow", "ctl"], "process": "control",
             "params": {"path": "out.jsonl", "flush_every": 100, "chunks": True}},
        ],
    }


@pytest.mark.slow
@pytest.mark.parametrize("source, fast", [
    ({"type": "file_replay", "params": {"path": str(REPLAY / "S003R02.edf"), "picks": ["O1", "Oz", "O2"], "stop_s": 20.0}}, 5),
    ({"type": "xdf_replay", "params": {"path": str(XDF / "clock_resets.xdf"), "stop_s": 20.0}}, 5),
], ids=["edf", "xdf"])
def test_a_replay_gives_the_same_samples_chunks_timestamps_and_decisions_at_any_speed(write_graph, run_graph, tmp_path, source, fast):
    outputs = []
    for speed in (fast, "max"):
        (tmp_path / "out.jsonl").unlink(missing_ok=True)
        code, rep, _ = run_graph(write_graph(_replay_graph(source, speed)))
        assert code == 0, rep["errors"]
        assert all(s["gaps"] == 0 for s in rep["streams"].values())
        outputs.append([json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()])
    # each stream in order (streams from different processes interleave in the file as they arrive)
    slow, fastest = ({s: [r for r in rows if r["stream"] == s] for s in ("rec", "pow", "ctl")} for rows in outputs)
    assert len(slow["rec"]) > 1000 and slow["pow"] and slow["ctl"]
    for s in slow:
        assert slow[s] == fastest[s], s  # every sample, frame and decision, with its index, timestamp and chunk
