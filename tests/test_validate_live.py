"""rtneuro validate of a graph with a live LSL input: everything checked without waiting for the stream."""

from __future__ import annotations

import subprocess
import sys

import mne
import pytest
import yaml

from rtneuro.errors import StreamNotFound
from rtneuro.nodes import NodeContext, build_params
from rtneuro.nodes.lsl import LslInlet, LslInletParams
from rtneuro.nodes.sources import _clean

from conftest import REPLAY, ROOT
from lsl_helpers import OutletProcess, counter_outlet, unique

#: the channels of the demo recording, as 'rtneuro replay replay_data/S003R02.edf --lsl' publishes them
EDF_CHANNELS = [_clean(c) for c in mne.io.read_raw(REPLAY / "S003R02.edf", verbose="error").ch_names]


def _validate(path, *flags, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "rtneuro", "validate", str(path), *flags], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def _lsl_alpha(tmp_path, name: str, **inlet) -> str:
    """configs/lsl_alpha.yaml as shipped, its inlet looking for ``name`` (a stream no other test publishes)."""
    doc = yaml.safe_load((ROOT / "configs" / "lsl_alpha.yaml").read_text())
    eeg = next(n for n in doc["nodes"] if n["id"] == "eeg")
    eeg["params"].update(name=name, **inlet)
    path = tmp_path / "lsl_alpha.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def test_a_graph_whose_stream_is_not_running_is_valid_with_one_warning_unless_strict(tmp_path):
    cfg = _lsl_alpha(tmp_path, unique("absent-eeg"))  # resolve_timeout_s: 30 in the shipped file
    r = _validate(cfg)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("warning: live stream(s) not running, waited for by 'rtneuro run': 'eeg' (LSL name=")
    assert "declare ch_names and sfreq to check what depends on it; not checked: bp, alpha, ctl, stim, lsl_out" in lines[0]
    assert "valid graph 'lsl-alpha' with 6 nodes in 2 processes (5 not checked without their live stream)" in r.stdout
    strict = _validate(cfg, "--strict")
    assert strict.returncode == 2
    lines = strict.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--strict: start the outlet(s)" in lines[0], lines


def test_declared_channels_and_rate_check_the_whole_graph_and_a_missing_pick_is_still_an_error(tmp_path):
    cfg = _lsl_alpha(tmp_path, unique("absent-eeg"), ch_names=EDF_CHANNELS, sfreq=160.0)
    r = _validate(cfg)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "'eeg' (LSL name=" in lines[0] and "checked against its declared ch_names and sfreq" in lines[0]
    assert "not checked" not in r.stderr + r.stdout
    assert "stream sig.eeg: 64 ch, 160 Hz, from eeg (declared; its stream was not running)" in r.stdout
    assert "stream feat.alpha: 1 ch, 10 Hz, from alpha" in r.stdout and "stream cmd.ctl:" in r.stdout
    without_o2 = _lsl_alpha(tmp_path, unique("absent-eeg"), ch_names=[c for c in EDF_CHANNELS if c != "O2"], sfreq=160.0)
    r = _validate(without_o2)
    assert r.returncode == 2
    assert "node 'alpha' (bandpower)" in r.stderr and "O2" in r.stderr
    too_fast = _lsl_alpha(tmp_path, unique("absent-eeg"), ch_names=EDF_CHANNELS, sfreq=16.0)  # 12 Hz > Nyquist
    assert _validate(too_fast).returncode == 2


def test_an_absent_marker_stream_is_an_event_stream_by_its_type_and_an_undeclared_one_waits():
    ctx = NodeContext(node_id="mk", wait_for_streams=False)
    node = LslInlet(build_params(LslInletParams, {"name": unique("absent-markers"), "type": "Markers"}, "p"), [], ctx)
    assert node.outputs[""].kind == "evt" and "a marker stream, by its type" in node.waiting_for
    with pytest.raises(StreamNotFound, match="declare sfreq to check what depends on it"):
        LslInlet(build_params(LslInletParams, {"name": unique("absent"), "ch_names": ["Cz"]}, "p"), [], ctx)


@pytest.mark.slow
def test_a_running_stream_is_checked_against_what_is_declared(tmp_path):
    name = unique("live-eeg")

    def graph(**inlet) -> str:
        doc = {"name": "live", "nodes": [
            {"id": "eeg", "type": "lsl_inlet", "process": "main", "params": {"name": name, "resolve_timeout_s": 10, **inlet}},
            {"id": "bp", "type": "bandpass", "inputs": ["eeg"], "process": "main", "params": {"l_freq": 1.0, "h_freq": 40.0}},
            {"id": "out", "type": "jsonl", "inputs": ["bp"], "process": "main", "params": {"path": "out.jsonl"}}]}
        path = tmp_path / f"g{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return str(path)

    with OutletProcess(counter_outlet, name, None, 60.0):
        r = _validate(graph(ch_names=["counter", "C1", "C2", "C3"], sfreq=250.0), "--strict")
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert "stream sig.eeg: 4 ch, 250 Hz, from eeg\n" in r.stdout  # the stream's, not declared
        r = _validate(graph(sfreq=500.0))
        assert r.returncode == 2 and "runs at 250 Hz but sfreq=500 is declared" in r.stderr
        r = _validate(graph(ch_names=["counter", "C1", "C2", "c4"]))
        assert r.returncode == 2 and "but ch_names=['counter', 'C1', 'C2', 'c4'] is declared (did you mean 'C3'?)" in r.stderr
