"""XDF files as LabRecorder writes them: several streams of one name, kept apart by type, replayed as recorded."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pylsl
import pytest

from rtneuro.cli import parse_stream_query, replay_graph
from rtneuro.errors import ConfigError
from rtneuro.nodes import NodeContext, build_params
from rtneuro.nodes.xdf import XdfReplay, XdfReplayParams
from rtneuro.recording.xdf_read import read_session
from rtneuro.recording.xdf_writer import XdfWriter

from conftest import REPLAY, ROOT
from lsl_helpers import unique

#: A Muse headband through muselsl and LabRecorder: three streams called the same, told apart by type.
MUSE = [  # (stream id, type, rate, channels, channel type, unit)
    (1, "ACC", 52.0, ["X", "Y", "Z"], "accelerometer", "g"),
    (2, "EEG", 256.0, ["TP9", "AF7", "AF8", "TP10"], "EEG", "microvolts"),
    (3, "PPG", 64.0, ["PPG1", "PPG2", "PPG3"], "PPG", "mmHg"),
]


def _values(sid: int, n: int, n_ch: int) -> np.ndarray:
    """Sample k of channel c of stream sid is sid * 1e6 + k * 10 + c (exact in float32): every value tells where it came from."""
    return (sid * 1_000_000 + np.arange(n)[:, None] * 10 + np.arange(n_ch)[None]).astype(np.float32)


def write_muse(path, name: str = "Muse", duration_s: float = 4.0, twin_eeg: bool = False) -> None:
    """An XDF file as LabRecorder writes a Muse: ACC first, then EEG and PPG, all named ``name``, and markers."""
    specs = list(MUSE) + ([(4, "EEG", 256.0, ["TP9", "AF7", "AF8", "TP10"], "EEG", "microvolts")] if twin_eeg else [])
    with XdfWriter(path, fsync=False) as w:
        for sid, typ, fs, chans, ctype, unit in specs:
            w.add_stream(sid, name=name, type=typ, channel_count=len(chans), nominal_srate=fs, channel_format="float32",
                         source_id=f"muse-00:55:da:b0:{sid}",
                         desc={"channels": {"channel": [{"label": c, "unit": unit, "type": ctype} for c in chans]}})
        w.add_stream(9, name=name, type="Markers", channel_count=1, nominal_srate=0, channel_format="string",
                     source_id="muse-markers")
        for sid, _typ, fs, chans, *_ in specs:
            n = int(fs * duration_s)
            w.write_samples(sid, 100.0 + np.arange(n) / fs, _values(sid, n, len(chans)))
        w.write_samples(9, [101.0, 102.5], [["start"], ["stop"]])


def _node(**params) -> XdfReplay:
    return XdfReplay(build_params(XdfReplayParams, params, "params"), [], NodeContext(node_id="x"))


def _play(node: XdfReplay) -> dict[str, np.ndarray]:
    node.reset()
    node.start(0.0)
    out: dict[str, list] = {}
    while node.next_due() is not None:
        for port, ch in node.read():
            out.setdefault(port, []).append(ch.data)
    return {p: np.concatenate(c) for p, c in out.items()}


@pytest.fixture
def muse(tmp_path):
    path = tmp_path / "muse.xdf"
    write_muse(path)
    return path


def test_streams_of_one_name_keep_their_names_and_types_and_the_eeg_is_the_main_one(muse):
    node = _node(path=str(muse))
    assert list(node.outputs) == ["", "muse_acc", "muse_ppg", "muse_markers"]
    for port, typ in [("", "EEG"), ("muse_acc", "ACC"), ("muse_ppg", "PPG"), ("muse_markers", "Markers")]:
        assert node.outputs[port].desc["xdf_name"] == "Muse"
        assert node.outputs[port].desc["xdf_type"] == typ  # as recorded: not 'ACCELEROMETER'
    assert node.outputs[""].ch_names == ("TP9", "AF7", "AF8", "TP10") and node.outputs[""].sfreq == 256.0
    assert node.outputs["muse_acc"].desc["xdf_source_id"] == "muse-00:55:da:b0:1"
    assert "the only electrophysiology stream" in node.report()["main"]
    played = _play(node)
    np.testing.assert_array_equal(played[""], _values(2, 1024, 4))  # the EEG, not the ACC written first
    np.testing.assert_array_equal(played["muse_acc"], _values(1, 208, 3))
    np.testing.assert_array_equal(played["muse_ppg"], _values(3, 256, 3))
    assert node.position() == 1024  # the node's position is the main stream's


def test_the_main_stream_is_chosen_explicitly_or_the_choice_is_refused_as_ambiguous(tmp_path, muse):
    acc = _node(path=str(muse), main={"type": "ACC"})
    assert list(acc.outputs) == ["", "muse_eeg", "muse_ppg", "muse_markers"]
    np.testing.assert_array_equal(_play(acc)[""], _values(1, 208, 3))
    with pytest.raises(ConfigError, match=r"main=\{'type': 'ECG'\} matches no numeric stream.*'Muse' \(type 'ACC'"):
        _node(path=str(muse), main={"type": "ECG"})
    with pytest.raises(ConfigError, match=r"main=\{'name': 'Muse'\} matches 3 streams.*add type or source_id"):
        _node(path=str(muse), main={"name": "Muse"})
    with pytest.raises(ConfigError, match="unknown keys \\['kind'\\]"):
        _node(path=str(muse), main={"kind": "EEG"})
    twin = tmp_path / "twin.xdf"
    write_muse(twin, twin_eeg=True)  # two EEG streams of one name, type and rate
    with pytest.raises(ConfigError, match="2 electrophysiology streams of 256 Hz could be the main one.*choose it with main"):
        _node(path=str(twin))
    node = _node(path=str(twin), main={"source_id": "muse-00:55:da:b0:4"})
    assert list(node.outputs) == ["", "muse_acc", "muse_eeg_muse_00_55_da_b0_2", "muse_ppg", "muse_markers"]
    np.testing.assert_array_equal(_play(node)[""], _values(4, 1024, 4))
    # several numeric streams, none of them electrophysiology: no guess
    with pytest.raises(ConfigError, match="2 numeric streams and none of type EEG"):
        _node(path=str(muse), select=[{"type": "ACC"}, {"type": "PPG"}])
    only = _node(path=str(muse), select=[{"type": "PPG"}, {"name": "Muse", "type": "ACC", "as": "acc"}], main={"type": "ACC"})
    assert list(only.outputs) == ["", "muse_ppg"]


def test_the_shared_recordings_keep_their_main_stream():
    for file, main, why in [("clock_resets.xdf", "BioSemi", "the only electrophysiology stream"),
                            ("minimal.xdf", "SendDataC", "the only electrophysiology stream"),
                            ("empty_streams.xdf", "Data stream: test stream 0 counter", "the only numeric stream")]:
        node = _node(path=str(REPLAY / "xdf" / file))
        assert node.outputs[""].desc["xdf_name"] == main, file
        assert node.report()["main"].startswith(why), file
    node = _node(path=str(REPLAY / "xdf" / "clock_resets.xdf"))
    assert node.outputs["mymarkerstream"].desc == {"xdf_name": "MyMarkerStream", "xdf_type": "Markers",
                                                    "xdf_source_id": "myuidw43536"}


def test_a_session_tells_streams_of_one_name_apart_by_type(muse):
    s = read_session(muse)
    assert s.stream("Muse", type="ACC").n_channels == 3
    assert s.stream("Muse", type="EEG").nominal_srate == 256.0
    with pytest.raises(KeyError, match="4 streams 'Muse'.*give type="):
        s.stream("Muse")
    with pytest.raises(KeyError, match="no stream 'Muse' of type 'ECG'"):
        s.stream("Muse", type="ECG")


def test_replay_to_lsl_publishes_every_stream_under_its_recorded_name_and_type(muse):
    graph = replay_graph(str(muse))
    outs = {n["id"]: n["params"] for n in graph["nodes"] if n["type"] == "lsl_outlet"}
    assert outs == {
        "out_main": {"name": "Muse", "type": "EEG", "source_id": "rtneuro-replay:muse-00:55:da:b0:2"},
        "out_muse_acc": {"name": "Muse", "type": "ACC", "source_id": "rtneuro-replay:muse-00:55:da:b0:1"},
        "out_muse_ppg": {"name": "Muse", "type": "PPG", "source_id": "rtneuro-replay:muse-00:55:da:b0:3"},
        "out_muse_markers": {"name": "Muse", "type": "Markers", "source_id": "rtneuro-replay:muse-markers"},
    }
    graph = replay_graph(str(muse), name="headband", main=parse_stream_query("type=ACC"))
    outs = {n["id"]: n["params"] for n in graph["nodes"] if n["type"] == "lsl_outlet"}
    assert outs["out_main"]["name"] == "headband" and outs["out_main"]["type"] == "ACC"
    assert outs["out_muse_eeg"]["name"] == "Muse"
    assert parse_stream_query("name=Muse, type=EEG") == {"name": "Muse", "type": "EEG"}
    assert parse_stream_query("Muse") == {"name": "Muse"}
    with pytest.raises(ConfigError, match="key=value pairs"):
        parse_stream_query("kind=EEG")
    with pytest.raises(ConfigError, match="--main picks the main stream of an XDF file"):
        replay_graph(str(REPLAY / "S003R01.edf"), main={"type": "EEG"})


def test_replay_to_lsl_of_an_ambiguous_file_is_one_line_and_exit_2(tmp_path):
    twin = tmp_path / "twin.xdf"
    write_muse(twin, twin_eeg=True)
    r = subprocess.run([sys.executable, "-m", "rtneuro", "replay", str(twin), "--lsl"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "could be the main one" in lines[0] and "--main" in lines[0], lines


@pytest.mark.slow
def test_an_inlet_resolving_the_recorded_type_finds_the_replayed_stream(tmp_path):
    name = unique("Muse")  # LSL is shared by every test on this host: a name of its own
    path = tmp_path / "muse.xdf"
    write_muse(path, name=name, duration_s=60.0)
    proc = subprocess.Popen([sys.executable, "-m", "rtneuro", "replay", str(path), "--lsl", "--quiet"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        acc = pylsl.resolve_bypred(f"name='{name}' and type='ACC'", 1, 30)
        eeg = pylsl.resolve_bypred(f"name='{name}' and type='EEG'", 1, 30)
        assert acc and eeg, proc.stderr.read() if proc.poll() is not None else "no outlet found"
        assert acc[0].channel_count() == 3 and acc[0].nominal_srate() == 52.0
        assert eeg[0].channel_count() == 4 and eeg[0].nominal_srate() == 256.0
        inlet = pylsl.StreamInlet(acc[0])
        info = inlet.info(5)
        assert info.desc().child("channels").child("channel").child_value("label") == "X"
        inlet.open_stream(5)
        got: list = []
        for _ in range(40):
            x, _ts = inlet.pull_chunk(timeout=0.5)
            got.extend(x)
            if len(got) >= 10:
                break
        values = np.asarray(got)
        assert values.shape[1] == 3 and len(values) >= 10
        assert np.all(values // 1_000_000 == 1)  # the accelerometer's samples (stream 1), not the EEG's
    finally:
        proc.terminate()
        out, _err = proc.communicate(timeout=20)
    assert f"LSL outlet '{name}' (type 'EEG'): 4 ch at 256 Hz, main" in out
    assert f"LSL outlet '{name}' (type 'ACC'): 3 ch at 52 Hz" in out
