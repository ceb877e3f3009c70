"""Sessions: record every stream of a running graph, read it back with pyxdf, replay it and find the same decisions.

Real parts throughout: the supervisor and its processes, ZeroMQ between
them, the XDF file on disk, pyxdf to read it, SIGKILL for the crash and a
real (tmpfs) file system that fills up.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import pyxdf
import yaml

from rtneuro.config import load_graph
from rtneuro.errors import ConfigError
from rtneuro.recording.replay import replay_check
from rtneuro.recording.session import append_report, recording_graph
from rtneuro.recording.xdf_read import read_session
from rtneuro.runtime.supervisor import Supervisor

from conftest import ROOT, synthetic_chain, wait_running

pytestmark = pytest.mark.slow


def _record(write_graph, graph: dict, folder, name="graph.yaml"):
    path = write_graph(graph, name)
    g, session = recording_graph(path, folder)
    sup = Supervisor(g, out=io.StringIO(), quiet=True)
    code = sup.run()
    return code, sup.report, session


def _info(stream, *keys):
    v = stream["info"]
    for k in keys:
        v = v[k][0]
    return v


def _chain(**kw):
    graph = synthetic_chain(**kw)
    graph["nodes"][3]["params"]["threshold"] = 12.0  # on and off with the alpha bursts of the synthetic EEG
    graph["nodes"][0]["params"].update({"oscillations": [], "burst_rate_hz": 0.5, "burst_freq_hz": 10.0,
                                        "burst_amplitude": 30.0, "burst_duration_s": 1.0})
    graph["nodes"][2]["params"]["mode"] = "db"
    return graph


#: the tests that only read a session of ``_chain(duration_s=20.0)`` share one recording of it (a run is
#: several seconds of process start-up): one worker runs them, so it is recorded once
shares_session = pytest.mark.xdist_group("recording_session")


@pytest.fixture(scope="module")
def chain_session(tmp_path_factory):
    """(exit code, report, session) of one recorded run of ``_chain(duration_s=20.0)``; tests copy it to change it."""
    folder = tmp_path_factory.mktemp("chain_session")
    path = folder / "graph.yaml"
    path.write_text(yaml.safe_dump(_chain(duration_s=20.0), sort_keys=False))
    g, session = recording_graph(path, folder)
    sup = Supervisor(g, out=io.StringIO(), quiet=True)
    code = sup.run()
    return code, sup.report, session


@shares_session
def test_a_session_holds_every_stream_with_its_metadata_and_opens_in_pyxdf(chain_session, tmp_path):
    code, rep, recorded = chain_session
    assert code == 0 and rep["errors"] == []
    session = tmp_path / recorded.name
    shutil.copyfile(recorded, session)  # the report is appended to a copy: the other tests read the session as recorded
    append_report(session, rep)
    streams, header = pyxdf.load_xdf(str(session), synchronize_clocks=False, dejitter_timestamps=False)
    by = {s["info"]["name"][0]: s for s in streams}
    assert set(rep["streams"]) | {"rtneuro.gaps", "rtneuro.provenance", "rtneuro.chunks", "rtneuro.control", "rtneuro.display", "rtneuro.report"} == set(by)
    # every stream is complete, on its stream clock, with the run's own sample counts
    for name, row in rep["streams"].items():
        s = by[name]
        assert len(s["time_stamps"]) == row["samples"], name
        assert int(s["footer"]["info"]["sample_count"][0]) == row["samples"]
    src = by["src"]
    assert src["time_series"].shape == (5000, 4) and src["info"]["channel_format"][0] == "double64"
    np.testing.assert_allclose(np.diff(src["time_stamps"]), 1 / 250.0, rtol=0, atol=1e-9)
    assert [c["label"][0] for c in src["info"]["desc"][0]["channels"][0]["channel"]] == ["ch00", "ch01", "ch02", "ch03"]
    assert by["rtneuro.gaps"]["time_stamps"].size == 0
    # the header says what ran, with which software, on which device limits
    meta = json.loads(header["info"]["rtneuro"][0]["session"][0])
    assert yaml.safe_load(meta["config"])["nodes"][3]["params"]["threshold"] == 12.0
    assert meta["versions"]["numpy"] == np.__version__ and meta["git_revision"]
    assert "max_amplitude_ma" in meta["profiles"]["stim"]["text"]
    # latency histograms in the footers, the run report at the end
    lat = json.loads(_info(by["bpow"]["footer"], "rtneuro", "latency_us"))
    assert sum(lat["acquisition_to_recorder"]) == rep["streams"]["bpow"]["chunks"] and len(lat["edges"]) == 71
    hops = json.loads(_info(by["rtneuro.provenance"]["footer"], "rtneuro", "hop_latency_us"))["hops"]
    assert {"src>rx:process", "rx:process>bp", "bpow>rx:control", "rx:control>ctl"} <= set(hops)  # every hop, each way
    report = json.loads(by["rtneuro.report"]["time_series"][0][0])
    assert report["latency_us"]["n"] == rep["latency_us"]["n"]


@shares_session
def test_each_command_links_to_the_window_features_and_controller_state_that_caused_it(chain_session):
    code, rep, session = chain_session
    assert code == 0
    s = read_session(session)
    cmds = [json.loads(r[0]) for r in s.stream("ctl").time_series]
    prov = [json.loads(r[0]) for r in s.stream("rtneuro.provenance").time_series]
    feats = s.stream("bpow")
    decisions = [json.loads(r[0]) for r in s.stream("stim.decisions").time_series]
    switching = [c for c in cmds if c["kind"] != 0]
    assert len(switching) >= 4 and len(prov) == len(switching)
    for c, p in zip(switching, prov, strict=True):
        assert p["command_index"] == c["index"] and p["frame"] == c["index"]
        # the feature value the controller saw is the recorded feature frame
        assert p["feature_values"] == feats.time_series[p["frame"]][0]
        above = p["feature_values"] > 12.0
        assert p["controller_state"]["on"] == (c["kind"] == 1) == above
        # the window: 0.5 s of 'bp' (125 samples) ending 0.1 s (25 samples) per frame later
        first, last = p["input_window"]
        assert p["input_stream"] == "bp" and last - first + 1 == 125 and (last + 1) % 25 == 0
        assert abs(feats.time_stamps[p["frame"]] - c["t"]) < 1e-9
        # and the gate's decision on it says it was accepted
        d = next(d for d in decisions if d["cause_index"] == c["index"])
        assert d["status"] == 0 and d["kind"] == c["kind"]


def test_replaying_a_session_finds_no_differing_decision_and_a_changed_graph_does(write_graph, tmp_path):
    graph = _chain(duration_s=20.0)
    graph["nodes"][4]["params"] = {"timebase": "stream"}  # the delivered waveform follows the data: compared too
    code, _, session = _record(write_graph, graph, tmp_path)
    assert code == 0
    same = replay_check(session, out=None)
    assert same["exit_code"] == 0 and same["decisions"] > 100 and same["differing"] == 0
    assert same["streams"]["bpow"]["compared"] == 196 and same["streams"]["bpow"]["differing"] == 0
    assert same["streams"]["stim.delivered"]["compared"] > 15000 and same["streams"]["stim.delivered"]["differing"] == 0
    changed = _chain(duration_s=20.0)
    changed["nodes"][3]["params"]["threshold"] = 14.0
    cfg = write_graph(changed, "changed.yaml")
    diff = replay_check(session, cfg, out=None)
    assert diff["differing"] > 0 and diff["streams"]["bpow"]["differing"] == 0  # same features, other decisions
    assert diff["streams"]["ctl"]["differing"] > 0 and diff["streams"]["ctl"]["first"]


def test_a_replay_check_repeats_the_refusals_that_real_time_lateness_caused(write_graph, tmp_path):
    # live, a command that arrives after its deadline is refused because the machine was late, not because of the
    # data: the replay on the virtual clock has no lateness, so it takes the recorded verdicts as inputs, matched
    # per command (without them, every one of these commands would be accepted and the check would fail)
    graph = _chain(duration_s=20.0, speed=10.0)
    graph["nodes"][3]["params"]["deadline_ms"] = 0.001  # every command and heartbeat arrives after its deadline
    code, report, session = _record(write_graph, graph, tmp_path)
    assert code == 0
    expired = report["nodes"]["stim"]["gate"]["expired"]
    assert expired > 150 and report["nodes"]["stim"]["refusals"]["expired"] == expired
    res = replay_check(session, out=None)
    assert res["exit_code"] == 0 and res["differing"] == 0, json.dumps(res["streams"])[:2000]
    assert res["streams"]["stim.decisions"]["compared"] >= expired


@shares_session
def test_the_replay_check_command_line(chain_session, tmp_path):
    code, _, session = chain_session
    assert code == 0
    r = subprocess.run([sys.executable, "-m", "rtneuro", "replay", str(session), "--check", "--json", str(tmp_path / "c.json")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "replay check: no decision differs;" in r.stdout and "x real time" in r.stdout
    assert json.loads((tmp_path / "c.json").read_text())["differing"] == 0
    # and opens in MNE once exported
    r = subprocess.run([sys.executable, "-m", "rtneuro", "export", str(session), "--to", "fif", "--out", str(tmp_path / "fif")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    import mne

    raw = mne.io.read_raw_fif(r.stdout.split()[r.stdout.split().index(str(tmp_path / "fif" / f"{session.stem}-src_raw.fif"))], verbose="error")
    assert raw.info["sfreq"] == 250.0 and raw.n_times == 5000  # 20 s at 250 Hz
    assert any(d.startswith("stim level ch0") for d in raw.annotations.description)
    # a session cut short (a crash) is checked up to the damage, which is reported
    cut = tmp_path / "cut.xdf"
    cut.write_bytes(session.read_bytes()[: session.stat().st_size * 2 // 3])
    r = subprocess.run([sys.executable, "-m", "rtneuro", "replay", str(cut), "--check"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert "note: truncated at byte" in r.stdout, r.stdout + r.stderr


def test_killing_the_recorder_loses_at_most_the_last_flush_and_stops_the_run_safely(write_graph, tmp_path):
    graph = _chain(speed="realtime", duration_s=60.0)
    g, session = recording_graph(write_graph(graph), tmp_path, flush_s=0.5)
    sup = Supervisor(g, out=io.StringIO(), quiet=True)
    box: dict = {}
    import threading

    thread = threading.Thread(target=lambda: box.setdefault("code", sup.run()), daemon=True)
    thread.start()
    try:
        wait_running(sup)
        time.sleep(3.0)
        proc = sup.procs["record"]
        os.kill(proc.current.pid, signal.SIGKILL)
        t_kill = time.monotonic()
        thread.join(30)
    finally:
        sup.stop()
        thread.join(30)
    assert box.get("code") == 1  # the recorder is never restarted: the run stops, stimulators safe
    assert any("process 'record'" in e for e in sup.report["errors"])
    assert time.monotonic() - t_kill < 30
    s = read_session(session)
    assert s.damage is not None  # no footers: the recording was not closed
    src = s.stream("src")
    n = len(src.time_stamps)
    assert n >= (3.0 - 0.5 - 1.0) * 250  # everything but the last flush (and the start-up)
    np.testing.assert_allclose(np.diff(src.time_stamps), 1 / 250.0, rtol=0, atol=1e-6)
    assert np.isfinite(src.time_series).all()


def test_a_folder_that_cannot_take_a_session_refuses_the_run(write_graph, tmp_path):
    path = write_graph(_chain(), "g.yaml")
    with pytest.raises(ConfigError, match=r"--record: .*does not exist"):
        recording_graph(path, tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"--record: .*free"):
        recording_graph(path, tmp_path, min_free_mb=1e12)
    r = subprocess.run([sys.executable, "-m", "rtneuro", "run", str(path), "--record", str(tmp_path / "nope")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "--record:" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                                                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_disk_that_fills_mid_run_stops_stimulation_and_keeps_what_was_written(write_graph, small_disk):
    graph = _chain(duration_s=120.0, n_channels=64, sfreq=1000.0, chunk=50)
    graph["nodes"][2]["params"]["picks"] = None
    path = write_graph(graph, "big.yaml")
    g, session = recording_graph(path, small_disk, min_free_mb=1.0)
    sup = Supervisor(g, out=io.StringIO(), quiet=True)
    code = sup.run()
    assert code == 1
    errors = " ".join(sup.report["errors"])
    assert "recording stopped" in errors and "safe state" in errors, errors
    assert sup.report["nodes"]["stim"]["driver"]["safe_states"] >= 2
    s = read_session(session)  # what was written reads back, up to the last whole chunk
    assert len(s.stream("src").time_stamps) > 1000
    assert np.isfinite(s.stream("src").time_series).all()


def test_recording_adds_no_node_the_user_did_not_ask_for_beyond_the_recorder(write_graph, tmp_path):
    path = write_graph(_chain(), "g.yaml")
    base = load_graph(path)
    g, session = recording_graph(path, tmp_path)
    assert set(g.nodes) - set(base.nodes) == {"recorder"}
    rec = g.nodes["recorder"]
    assert rec.process == "record" and sorted(rec.inputs) == sorted(base.streams)
    assert g.processes["record"].restart == "never"
    assert session.parent == tmp_path and session.suffix == ".xdf" and not session.exists()


@shares_session
def test_the_session_knows_where_the_graph_cut_every_stream(chain_session):
    code, rep, session = chain_session
    assert code == 0
    s = read_session(session)
    cuts = np.asarray(s.stream("rtneuro.chunks").time_series)
    src = s.stream("src")
    mine = cuts[cuts[:, 0] == src.stream_id]
    assert mine[:, 2].sum() == len(src.time_stamps) == 5000  # 20 s at 250 Hz
    assert (mine[:, 2] == 25).all() and np.array_equal(mine[:, 1], np.arange(0, 5000, 25))  # the source's 25-sample chunks
    for name in ("src", "bp", "bpow", "ctl"):  # every chunk with rows (the stimulator may also send empty ones)
        assert (cuts[:, 0] == s.stream(name).stream_id).sum() == rep["streams"][name]["chunks"], name
