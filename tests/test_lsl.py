"""Lab Streaming Layer on loopback: real outlets feeding running graphs, and graphs publishing to LSL."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pylsl
import pytest

from rtneuro.config import load_graph
from rtneuro.errors import ConfigError
from rtneuro.nodes import NodeContext, build_params
from rtneuro.nodes.lsl import LslInlet, LslInletParams
from rtneuro.probe import ProbeOutlet, listen, summary

from conftest import REPLAY, ROOT, start_graph
from lsl_helpers import OutletProcess, counter_outlet, marker_outlet, unique

pytestmark = pytest.mark.slow


def _inlet(**params) -> LslInlet:
    return LslInlet(build_params(LslInletParams, params, "params"), [], NodeContext(node_id="eeg"))


def _counter_graph(name: str, path_out: str, duration_s: float, **inlet) -> dict:
    return {
        "name": "lsl-counter",
        "runtime": {"duration_s": duration_s, "status_interval_s": 0.25},
        "nodes": [
            {"id": "eeg", "type": "lsl_inlet", "process": "main", "params": {"name": name, "resolve_timeout_s": 10, **inlet}},
            {"id": "rec", "type": "jsonl", "inputs": ["eeg"], "process": "main", "params": {"path": path_out, "flush_every": 1}},
        ],
    }


def _counters(path) -> tuple[np.ndarray, np.ndarray]:
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    return np.array([r["values"]["counter"] for r in rows]), np.array([r["t"] for r in rows])


def test_a_stream_that_is_not_there_is_named_with_what_is_there():
    other = unique("other")
    with OutletProcess(counter_outlet, other, None, 20.0), pytest.raises(ConfigError) as err:
        _inlet(name=unique("absent"), resolve_timeout_s=0.5)
    msg = str(err.value)
    assert "no LSL stream with name=" in msg and "found within 0.5 s" in msg and f"'{other}'" in msg
    assert "start the outlet or fix name/type/source_id" in msg and "\n" not in msg


def test_ambiguous_and_wrong_channel_count_streams_are_refused():
    name = unique("twin")
    with OutletProcess(counter_outlet, name, "src-a", 20.0), OutletProcess(counter_outlet, name, "src-b", 20.0):
        with pytest.raises(ConfigError, match="2 LSL streams match name="):
            _inlet(name=name, resolve_timeout_s=5)
        node = _inlet(name=name, source_id="src-b", resolve_timeout_s=5)
        meta = node.outputs[""]
        assert meta.ch_names == ("counter", "C1", "C2", "C3") and meta.units[0] == "count" and meta.sfreq == 250.0
        assert meta.ch_types == ("misc", "eeg", "eeg", "eeg")
        with pytest.raises(ConfigError, match="has 4 channels but n_channels=64"):
            _inlet(name=name, source_id="src-a", n_channels=64, resolve_timeout_s=5)


def test_a_live_outlet_feeds_a_running_graph_without_loss(write_graph, tmp_path):
    name = unique("live")
    with OutletProcess(counter_outlet, name, f"{name}-src", 30.0):
        time.sleep(1.0)  # the outlet has been sending for a while: that backlog is dropped at the start
        sup, t, box = start_graph(write_graph(_counter_graph(name, "rows.jsonl", 4.0)))
        t.join(60)
    rep = sup.report
    assert box["code"] == 0, rep["errors"]
    counter, times = _counters(tmp_path / "rows.jsonl")
    assert counter.size > 500
    assert np.array_equal(counter, np.arange(counter[0], counter[0] + counter.size))  # every sample, in order
    node = rep["nodes"]["eeg"]
    assert node["gaps"] == 0 and node["stale_chunks"] == 0 and node["clock_offset_ms"] is not None
    assert abs(node["clock_offset_ms"]) < 5  # same host
    # sample times are the outlet's timestamps: 250 Hz spacing, on the LSL clock
    assert np.allclose(np.diff(times), 1 / 250.0, atol=2e-3)
    assert rep["streams"]["eeg"]["latency_us"]["p50"] < 50_000  # age at production: fresh data, not a backlog


def test_the_backlog_before_the_start_is_dropped_unless_asked():
    name = unique("backlog")
    t_origin = time.monotonic()
    first = {}
    with OutletProcess(counter_outlet, name, f"{name}-src", 30.0, t_origin=t_origin):
        for discard in (True, False):
            node = _inlet(name=name, discard_backlog=discard)
            node.open()
            time.sleep(1.5)  # the run takes its time to start (kernels compile, peers connect)
            node.start(0.0)
            now = time.monotonic()
            chunk = None
            while chunk is None:
                chunk = node.pull(0.5, time.monotonic())
            first[discard] = (chunk.data[0, 0], (now - t_origin) * 250)
            node.close()
    counter, at_start = first[True]
    assert counter >= at_start - 30  # the data of the start, not of the wait
    counter, at_start = first[False]
    assert counter < at_start - 300  # 1.5 s (375 samples) of backlog served first


@pytest.mark.parametrize("source_id", [True, False], ids=["lsl-recovers", "rtneuro-re-resolves"])
def test_an_outlet_that_dies_and_comes_back_is_waited_for_and_the_gap_counted(write_graph, tmp_path, source_id):
    name = unique("flaky")
    sid = f"{name}-src" if source_id else None
    t_origin = time.monotonic()
    graph = _counter_graph(name, "rows.jsonl", 12.0)
    rows = tmp_path / "rows.jsonl"
    with OutletProcess(counter_outlet, name, sid, 60.0, t_origin=t_origin):
        sup, t, box = start_graph(write_graph(graph))
        # the outlet dies once the graph has received from it, however long the graph took to start
        t_end = time.monotonic() + 120
        while time.monotonic() < t_end and (not rows.exists() or rows.read_text().count("\n") < 100):
            time.sleep(0.05)
        assert rows.exists(), "the graph received nothing from the first outlet"
    t_dead = time.monotonic()
    time.sleep(1.5)  # no outlet at all
    with OutletProcess(counter_outlet, name, sid, 60.0, t_origin=t_origin):
        t_back = time.monotonic()  # the second outlet counts by time: samples until now are lost
        t.join(60)
    rep = sup.report
    assert box["code"] == 0, rep["errors"]  # the graph kept running
    node = rep["nodes"]["eeg"]
    assert node["gaps"] == 1
    # at least the 1.5 s without an outlet (250 Hz); at most until the second one was up, plus what
    # was in flight when the first one died (up to 2 s on a loaded machine); exact: the counter's jump below
    assert 1.5 * 250 - 50 < node["lost_samples"] < (t_back - t_dead + 2.0) * 250
    counter, _ = _counters(tmp_path / "rows.jsonl")
    jump = np.diff(counter)
    assert (jump == 1).sum() == counter.size - 2 and jump.max() == node["lost_samples"] + 1
    if not source_id:
        assert node["reconnects"] == 1
        assert any("lost; waiting for it to come back" in w for w in rep["warnings"])
    assert any("without samples" in w for w in rep["warnings"])


def test_stale_data_is_reported_not_served_silently(write_graph, tmp_path):
    name = unique("stale")
    with OutletProcess(counter_outlet, name, f"{name}-src", 20.0, stamp_delay_s=0.6):
        sup, t, box = start_graph(write_graph(_counter_graph(name, "rows.jsonl", 2.5, stale_ms=250)))
        t.join(60)
    rep = sup.report
    assert box["code"] == 0
    assert rep["nodes"]["eeg"]["stale_chunks"] > 10
    assert any("is stale: newest sample" in w and "budget 250 ms" in w for w in rep["warnings"])


def test_a_marker_stream_becomes_events_even_with_empty_markers(write_graph, tmp_path):
    name = unique("markers")
    markers = ["start", "", "left hand", "stop"]
    with OutletProcess(marker_outlet, name, markers, lead_s=3.0):
        graph = {
            "runtime": {"duration_s": 6.0, "status_interval_s": 0.25},
            "nodes": [
                {"id": "mk", "type": "lsl_inlet", "process": "main", "params": {"name": name}},
                {"id": "rec", "type": "jsonl", "inputs": ["mk"], "process": "main", "params": {"path": "ev.jsonl"}},
            ],
        }
        sup, t, box = start_graph(write_graph(graph))
        t.join(60)
    rep = sup.report
    assert box["code"] == 0, rep["errors"]
    rows = [json.loads(x) for x in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == markers
    assert rows[0]["code"] == rows[0]["code"] and len({r["code"] for r in rows}) == 4
    assert rep["nodes"]["mk"]["empty_markers"] == 1
    assert any("sent an empty marker" in w for w in rep["warnings"])


def test_an_lsl_outlet_publishes_with_metadata_and_data_timestamps(write_graph):
    name = unique("pub")
    graph = {
        "runtime": {"duration_s": 5.0, "status_interval_s": 0.25},
        "nodes": [
            {"id": "src", "type": "synthetic", "process": "main",
             "params": {"n_channels": 3, "sfreq": 200.0, "chunk_size": 20, "seed": 5, "ch_names": ["Cz", "Pz", "Oz"]}},
            {"id": "bpow", "type": "bandpower", "inputs": ["src"], "process": "main",
             "params": {"bands": {"alpha": [8, 12]}, "window_s": 0.5, "step_s": 0.1, "average": True}},
            {"id": "out", "type": "lsl_outlet", "inputs": ["src", "bpow"], "process": "main", "params": {"name": name}},
        ],
    }
    sup, t, box = start_graph(write_graph(graph))
    found = pylsl.resolve_byprop("name", f"{name}-src", 1, 20)
    feat = pylsl.resolve_byprop("name", f"{name}-bpow", 1, 20)
    assert found and feat
    inlet = pylsl.StreamInlet(found[0], processing_flags=pylsl.proc_clocksync)
    info = inlet.info(5)
    ch = info.desc().child("channels").child("channel")
    labels = []
    while not ch.empty():
        labels.append((ch.child_value("label"), ch.child_value("unit")))
        ch = ch.next_sibling("channel")
    assert labels == [("Cz", "uV"), ("Pz", "uV"), ("Oz", "uV")]
    assert info.nominal_srate() == 200.0 and info.type() == "EEG"
    finfo = pylsl.StreamInlet(feat[0]).info(5)
    got, stamps = [], []
    t_end = time.monotonic() + 2.0
    while time.monotonic() < t_end:
        x, ts = inlet.pull_chunk(timeout=0.5)
        got.extend(x)
        stamps.extend(ts)
    t.join(60)
    assert box["code"] == 0, sup.report["errors"]
    assert len(got) > 200
    assert np.allclose(np.diff(stamps), 1 / 200.0, atol=1e-4)  # data timestamps, not arrival times
    assert abs(stamps[-1] - time.monotonic()) < 5  # on the LSL clock
    assert finfo.type() == "Features" and finfo.channel_count() == 1 and finfo.nominal_srate() == 10.0


def test_the_loop_back_probe_times_a_live_graph(write_graph):
    probe, out = unique("probe"), unique("decisions")
    graph = {
        "runtime": {"duration_s": 9.0, "status_interval_s": 0.5},
        "nodes": [
            {"id": "eeg", "type": "lsl_inlet", "process": "main", "params": {"name": probe, "n_channels": 8}},
            {"id": "bp", "type": "bandpass", "inputs": ["eeg"], "process": "main", "params": {"l_freq": 1.0, "h_freq": 40.0}},
            {"id": "bpow", "type": "bandpower", "inputs": ["bp"], "process": "main",
             "params": {"bands": {"alpha": [8, 12]}, "window_s": 0.256, "step_s": 0.032, "average": True}},
            {"id": "ctl", "type": "threshold", "inputs": ["bpow"], "process": "main", "params": {"threshold": 1e9}},
            {"id": "stim", "type": "stimulator", "inputs": ["ctl"], "process": "stimulate"},
            {"id": "out", "type": "lsl_outlet", "inputs": ["ctl"], "process": "main", "params": {"name": out}},
        ],
    }
    with ProbeOutlet(probe, n_channels=8, sfreq=1000.0, chunk=32, duration_s=30):
        time.sleep(1.0)
        sup, t, box = start_graph(write_graph(graph))
        ages = listen(out, duration_s=3.0, warmup_s=1.0)
        t.join(60)
    rep = sup.report
    assert box["code"] == 0, rep["errors"]
    res = summary(ages)
    assert res["n"] > 50 and 0 < res["p50_us"] < 1e6
    # the internal figure (push -> stimulator) is part of the loop-back figure (push -> graph -> probe)
    assert 0 < rep["latency_us"]["p50"] < res["p50_us"] + 5_000
    assert rep["nodes"]["eeg"]["chunks"] > 100


def test_live_graphs_run_in_real_time_only(write_graph):
    name = unique("rt")
    with OutletProcess(counter_outlet, name, f"{name}-src", 20.0):
        graph = _counter_graph(name, "rows.jsonl", 2.0)
        with pytest.raises(ConfigError, match="read live LSL streams: the graph runs in real time only"):
            load_graph(write_graph(graph), overrides={"speed": "max"})
        graph["nodes"].append({"id": "syn", "type": "synthetic", "process": "main", "params": {}})
        with pytest.raises(ConfigError, match="holds live and paced"):
            load_graph(write_graph(graph, "mixed.yaml"))
        g = load_graph(write_graph(_counter_graph(name, "rows.jsonl", 2.0), "ok.yaml"))
        assert g.runtime.time_origin == "lsl"


def test_rtneuro_replay_plays_a_recording_as_lsl_outlets():
    name = unique("player")
    proc = subprocess.Popen([sys.executable, "-m", "rtneuro", "replay", str(REPLAY / "S003R02.edf"), "--lsl", "--name", name,
                             "--speed", "2", "--quiet"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        found = pylsl.resolve_byprop("name", name, 1, 30)
        markers = pylsl.resolve_byprop("name", f"{name}-events", 1, 30)
        assert found and markers
        inlet = pylsl.StreamInlet(found[0])
        info = inlet.info(5)
        assert info.channel_count() == 64 and info.nominal_srate() == 160.0
        assert info.desc().child("channels").child("channel").child_value("label") == "Fc5"
        x, ts = [], []
        t_end = time.monotonic() + 3.0
        while time.monotonic() < t_end:
            a, b = inlet.pull_chunk(timeout=0.5)
            x.extend(a)
            ts.extend(b)
        assert len(x) > 500  # about 320 samples per second at 2x
        rate = (len(ts) - 1) / (ts[-1] - ts[0])
        assert 250 < rate < 400  # twice the 160 Hz of the recording
    finally:
        proc.terminate()
        proc.wait(10)
    assert "LSL outlet" in proc.stdout.read()
