"""The demo, exactly as the README runs it."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rtneuro.decoders.train import train_from_config
from rtneuro.recording import read_session
from rtneuro.recording.replay import replay_check
from rtneuro.recording.session import append_report, recording_graph
from rtneuro.runtime.supervisor import Supervisor

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_the_demo_shows_alpha_rising_when_the_eyes_close(tmp_path):
    report = tmp_path / "demo-report.json"
    r = subprocess.run([sys.executable, "-m", "rtneuro", "run", "configs/demo.yaml", "--report", str(report)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rep = json.loads(report.read_text())
    assert rep["wall_s"] < 60
    assert len(rep["processes"]) >= 3
    for name, row in rep["streams"].items():
        assert row["gaps"] == 0 and row["invalid"] == 0, name
    assert rep["streams"]["eeg"]["samples"] == 2 * 9760
    lat = rep["latency_us"]
    assert lat["n"] == rep["streams"]["alpha"]["samples"] and lat["p50"] > 0
    open_, closed = rep["nodes"]["summary"]["segments"]
    assert open_["label"] == "file:S003R01.edf" and closed["label"] == "file:S003R02.edf"
    assert closed["mean"]["alpha"] - open_["mean"]["alpha"] > 6.0  # dB: eyes closed, alpha up ~10x
    assert closed["stim_on_fraction"] > 0.5 > open_["stim_on_fraction"]
    assert rep["commands"]["refused"] == 0 and rep["commands"]["accepted"] == rep["commands"]["sent"] > 0
    # each file ends with 0.8 s of zeros (the 60.2 s recorded, padded to 61 s): flagged flat on the
    # three occipital channels of each file, and the controller switched off on it, with the flags in time
    assert rep["nodes"]["quality"]["onsets"] == {"flat": 6, "clip": 0, "jump": 0, "nonfinite": 0}
    assert rep["nodes"]["ctl"]["gated"] > 0 and rep["nodes"]["ctl"]["gate_ahead"] == 0 and not rep["nodes"]["ctl"]["on"]
    # the summary a user sees
    assert "alpha: file:S003R02.edf vs baseline file:S003R01.edf: +" in r.stderr
    assert "baseline file:S003R01.edf (the first label" in r.stderr
    assert "latency, newest sample of the deciding window -> stimulator: p50" in r.stderr


#: configs whose stimulator needs a program outside the graph (the serial emulator, a zmq stimulator host)
EXTERNAL = ("driver: serial", "driver: zmq")
REPLAYED = sorted(p.name for p in (ROOT / "configs").glob("*.yaml")
                  if "lsl_inlet" not in p.read_text() and not any(e in p.read_text() for e in EXTERNAL))
LIVE = sorted(p.name for p in (ROOT / "configs").glob("*.yaml") if "lsl_inlet" in p.read_text())


@pytest.mark.parametrize("config", REPLAYED)
def test_every_shipped_config_runs_cleanly_as_fast_as_possible_recorded_and_replays_to_the_same_decisions(config, tmp_path):
    import yaml

    decoders = [n for n in yaml.safe_load((ROOT / "configs" / config).read_text())["nodes"] if n["type"] == "decoder"]
    # calibrate first, as the config's comment says: what 'rtneuro train' calls, in this process (an interpreter that
    # imports it all again costs seconds; the command line is tested in test_decoder_pipeline)
    for _node in decoders:
        train_from_config(ROOT / "configs" / config, [ROOT / "replay_data" / "S003R03.edf"])
    report = tmp_path / "r.json"
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    # 'rtneuro run configs/CONFIG --speed max --quiet --duration 60 --report REPORT --record SESSIONS', what it calls,
    # in this process: the run's own processes start as they do from the command line, but no interpreter is started
    # to import it all again first (seconds a config). The command line itself runs in the tests above and below.
    graph, recorded = recording_graph(ROOT / "configs" / config, sessions, overrides={"speed": "max", "duration_s": 60.0})
    sup = Supervisor(graph, report_path=report, out=io.StringIO(), quiet=True)
    code = sup.run()
    append_report(recorded, sup.report)  # as the command does
    assert code == 0, sup.report["errors"]
    rep = json.loads(report.read_text())
    assert rep["errors"] == [] and not rep["interrupted"]
    assert all(s["gaps"] == 0 and s["invalid"] == 0 and s["samples"] > 0 for s in rep["streams"].values())
    assert rep["commands"]["sent"] > 0 and rep["commands"]["refused"] == 0
    assert rep["latency_us"]["n"] > 0
    # the session holds every stream, whole, and the same graph replayed from it decides the same
    (session,) = sessions.glob("*.xdf")
    s = read_session(session)
    assert s.damage is None
    for name, row in rep["streams"].items():
        assert len(s.stream(name).time_stamps) == row["samples"], name
    # the check and the training below run in this process too (what 'rtneuro replay --check' and 'rtneuro train'
    # call); their command lines, exit codes and --json are tested in test_recording and test_decoder_pipeline
    check = replay_check(session, out=None)
    assert check["exit_code"] == 0 and check["differing"] == 0 and check["decisions"] > 0, json.dumps(check)[:3000]
    # a decoder trained on the recorded session is the decoder trained on the file it replayed
    for node in decoders:
        from rtneuro.decoders.pipeline import DecoderPipeline

        train_from_config(ROOT / "configs" / config, [session], out=tmp_path / "from_session.npz")
        a = DecoderPipeline.load(tmp_path / "from_session.npz")
        b = DecoderPipeline.load((ROOT / "configs" / node["params"]["model"]).resolve())
        assert a.info["train_hash"] == b.info["train_hash"]
        np.testing.assert_array_equal(a.filters, b.filters)
        np.testing.assert_array_equal(a.decoder.coef, b.decoder.coef)


@pytest.mark.parametrize("config", LIVE)
def test_every_live_config_runs_on_the_demo_recording_played_over_lsl(config, tmp_path):
    """As its comment says: the demo recording played as a live stream in another process."""
    import pylsl
    import yaml

    graph = yaml.safe_load((ROOT / "configs" / config).read_text())
    name = next(n["params"]["name"] for n in graph["nodes"] if n["type"] == "lsl_inlet")
    decoders = [n for n in graph["nodes"] if n["type"] == "decoder"]
    recording = "replay_data/S003R02.edf"
    if decoders:  # calibrate first, as the config's comment says, then decode the same recording live
        recording = "replay_data/S003R03.edf"
        train_from_config(ROOT / "configs" / config, [ROOT / recording])  # in this process, as above
    # the decoder's outputs as an application sees them: LSL outlets named after the outlet node and the stream
    outlets = {f"{n['params']['name']}-{d['id']}": 0 for n in graph["nodes"] if n["type"] == "lsl_outlet"
               for d in decoders if d["id"] in n["inputs"]}
    widths: set[int] = set()

    def listen(stream_name: str) -> None:
        found = pylsl.resolve_byprop("name", stream_name, 1, 60)
        if found:
            inlet = pylsl.StreamInlet(found[0])
            for _ in range(50):
                data, _ = inlet.pull_chunk(timeout=0.2)
                outlets[stream_name] += len(data)
                widths.update(len(row) for row in data)

    import threading

    listeners = [threading.Thread(target=listen, args=(n,), daemon=True) for n in outlets]
    player = subprocess.Popen([sys.executable, "-m", "rtneuro", "replay", recording, "--lsl", "--name", name,
                               "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert pylsl.resolve_byprop("name", name, 1, 60), player.stderr
        for t in listeners:
            t.start()
        report = tmp_path / "r.json"
        r = subprocess.run([sys.executable, "-m", "rtneuro", "run", f"configs/{config}", "--quiet", "--duration", "8",
                            "--report", str(report), "--record", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=180)
    finally:
        player.terminate()
        player.wait(10)
    for t in listeners:
        t.join(20)
    assert all(n > 10 for n in outlets.values()), outlets
    assert not outlets or widths == {3}  # p:left, p:right, class
    assert r.returncode == 0, r.stderr
    rep = json.loads(report.read_text())
    assert rep["errors"] == [] and rep["streams"]["eeg"]["samples"] > 500
    assert rep["latency_us"]["n"] > 10 and rep["streams"]["ctl"]["chunks"] > 10
    # the live session, recorded as it came in, replays to the same decisions without LSL
    (session,) = tmp_path.glob("*.xdf")
    assert len(read_session(session).stream("eeg").time_stamps) == rep["streams"]["eeg"]["samples"]
    check = replay_check(session, out=None)  # in this process, as above
    assert check["exit_code"] == 0 and check["differing"] == 0, json.dumps(check)[:3000]
    # online decoding equals offline decoding of the samples as they came in: same labels, same probabilities
    for node in decoders:
        from rtneuro.decoders.pipeline import DecoderPipeline
        from rtneuro.recording.replay import stream_meta

        s = read_session(session)
        pipe = DecoderPipeline.load((ROOT / "configs" / node["params"]["model"]).resolve())
        src = s.stream(node["inputs"][0])
        picks = pipe.check_inputs(stream_meta(src).ch_names, src.nominal_srate)
        offline = pipe.decode(np.asarray(src.time_series, dtype=np.float64)[:, picks])
        online = np.asarray(s.stream(node["id"]).time_series)
        assert len(online) == len(offline.ends) > 50
        np.testing.assert_array_equal(online[:, -1], offline.index)
        np.testing.assert_allclose(online[:, :-1], offline.proba, rtol=0, atol=1e-9)
        # and the command a user runs says so
        r = subprocess.run([sys.executable, "-m", "rtneuro", "decode", str(ROOT / "models" / Path(node["params"]["model"]).name),
                            "--data", str(session), "--compare", node["id"]], cwd=ROOT, capture_output=True, text=True,
                           timeout=180)
        assert r.returncode == 0 and "0 labels differ" in r.stdout and "identical" in r.stdout, r.stdout + r.stderr
