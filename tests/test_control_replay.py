"""A session steered while it ran reproduces: every change and action is recorded and applied again.

The neurofeedback graph runs on its real recordings with a recorder; the
README's steering script and curl line run against it as written; then a
client changes the threshold and the hysteresis, lowers the stimulator's
limit, annotates, disarms and arms, pauses and resumes the replay, records a
segment and stops and clears an emergency stop, all through the REST API.
``rtneuro replay --check`` must then compute every feature, command and gate
decision bit for bit, and the same check without the recorded changes must
not (the changes were not idle). A second run kills the stimulate process
after a live change and a disarm: its next incarnation starts with both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from test_control_server import _end_run, _start_run, _until

from rtneuro.control.client import Client
from rtneuro.recording.replay import control_schedule, load, replay_check

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("control_replay")]


def _neurofeedback(speed: float = 8.0) -> dict:
    doc = yaml.safe_load((ROOT / "configs" / "neurofeedback.yaml").read_text())
    for n in doc["nodes"]:
        if n["type"] == "file_replay":
            n["params"]["path"] = [str((ROOT / "configs" / p).resolve()) for p in n["params"]["path"]]
    doc["runtime"] = {**doc.get("runtime", {}), "speed": speed, "status_interval_s": 0.5}
    return doc


def _finish(proc, timeout_s: float = 180.0) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except Exception:
        return _end_run(proc)
    return out


def test_a_steered_session_replays_bit_for_bit_and_not_without_its_changes(tmp_path):
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    proc, entry, env = _start_run(tmp_path, _neurofeedback(), "--record", str(sessions), "--report", str(tmp_path / "report.json"))
    c = Client(entry["api"], entry["api_token"], timeout=30)
    events: list[dict] = []
    listening = threading.Event()

    def watch() -> None:
        for e in Client(entry["api"], entry["api_token"], timeout=30).events():
            events.append(e)
            listening.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert listening.wait(30)  # the WebSocket client is there before the first change
    try:
        # the README's script and its curl line, as a user runs them (they find the run through its registry entry)
        text = (ROOT / "README.md").read_text()
        section = text.split("## Steering a running graph", 1)[1].split("\n## ", 1)[0]
        script = next(b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "Client.find()" in b)
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert "'stream': 'ratio'" in lines[0] and "p50" in lines[-1], out.stdout
        shell = next(b for b in re.findall(r"```sh\n(.*?)```", section, re.S) if "curl" in b)
        if shutil.which("curl"):
            sh = subprocess.run(["bash", "-c", shell.replace("python -c", f"{sys.executable} -c")], env=env,
                                capture_output=True, text=True, timeout=60)
            assert sh.returncode == 0 and '"status":"applied"' in sh.stdout.replace(" ", ""), (sh.stdout, sh.stderr)
        else:  # the same change without curl
            c.set({"ctl.threshold": 1.0}, wait_s=10)
        # then the rest of a session: the threshold, a stricter limit, a pause, an emergency stop
        first = c.set({"ctl.threshold": 0.0}, wait_s=10)  # eyes open: the ratio crosses 0 dB often
        assert first["status"] == "applied" and first["applied"]["ctl"]["stream"] == "ratio"
        assert c.set({"stim.max_amplitude_ma": 0.8}, wait_s=10)["status"] == "applied"  # stricter than the 1 mA asked
        time.sleep(0.5)
        c.record_start("block 3")
        time.sleep(0.3)
        assert c.pause()["paused"] is True
        time.sleep(1.0)  # longer than the watchdog: a pause must not look like a lost controller
        assert c.resume()["paused"] is False
        time.sleep(0.5)
        assert c.set({"ctl.threshold": 6.0, "ctl.hysteresis": 1.0}, wait_s=10)["status"] == "applied"
        c.record_stop()
        c.estop("drill")
        time.sleep(0.3)
        c.estop_clear()
        so_far = c.report()  # the run report while it runs
        assert so_far["streams"]["ratio"]["samples"] > 0 and so_far["control"]["by_op"]["set"] == 5
    finally:
        c.close()
    out = _finish(proc)
    assert proc.returncode == 0, out
    watcher.join(30)  # the WebSocket ends with the run
    kinds = {e["type"] for e in events}
    assert {"hello", "status", "change", "decisions", "end"} <= kinds, kinds
    pushed = [r["reason"] for e in events if e["type"] == "decisions" for r in e["records"]]
    assert "disarm: participant moves" in pushed and "estop: drill" in pushed, pushed[:20]
    assert [e["record"]["op"] for e in events if e["type"] == "change"][:3] == ["set", "annotate", "disarm"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["nodes"]["stim"]["gate"]["watchdog"] == 0  # the pause disarmed: no watchdog trip
    session = next(sessions.glob("*.xdf"))
    schedule, records = control_schedule(load(session, ["rtneuro.control"]), _neurofeedback()["nodes"])
    ops = [r["op"] for r in records]
    assert ops == ["set", "annotate", "disarm", "arm", "record_start", "record_stop", "set", "set", "set", "record_start",
                   "pause", "resume", "set", "record_stop", "estop", "estop_clear"], ops
    assert all(r["who"] == "local" for r in records)
    assert len(schedule) == 11  # 5 changes, disarm, arm, the pause's disarm and the resume's arm, estop, clear
    res = replay_check(session, out=None)
    assert res["exit_code"] == 0 and res["differing"] == 0, json.dumps(res["streams"], indent=1)[:3000]
    assert res["decisions"] > 1000 and res["control"]["applied_again"] == 11
    assert res["streams"]["stim.decisions"]["compared"] > 10
    without = replay_check(session, out=None, apply_control=False)
    assert without["differing"] > 0  # the changes changed what was decided
    assert without["streams"]["ratio"]["differing"] == 0  # ... and nothing upstream of them


def test_a_restarted_stimulate_process_keeps_the_operators_limits_and_disarm(tmp_path):
    proc, entry, _env = _start_run(tmp_path, _neurofeedback(speed=4.0), "--report", str(tmp_path / "report.json"))
    c = Client(entry["api"], entry["api_token"], timeout=30)
    try:
        assert c.set({"stim.max_amplitude_ma": 0.5}, wait_s=10)["status"] == "applied"
        c.disarm("drill")
        pid = c.graph()["processes"]["stimulate"]["pid"]
        os.kill(pid, signal.SIGKILL)
        _until(lambda: c.graph()["processes"]["stimulate"]["restarts"] == 1 and c.graph()["processes"]["stimulate"]["alive"],
               "the stimulate process's restart", 60)
        _until(lambda: c.status()["stimulation"]["stimulators"].get("stim") == "disarmed", "the new incarnation's status", 60)
        # still only stricter: the restart did not reset the limit the refusal is judged against
        with pytest.raises(Exception, match="can only be made stricter"):
            c.set({"stim.max_amplitude_ma": 1.0}, wait_s=10)
    finally:
        c.close()
        out = _end_run(proc)
    report = json.loads((tmp_path / "report.json").read_text())
    stim = report["nodes"]["stim"]
    assert stim["operator_limits"]["max_amplitude_ma"] == 0.5 and stim["armed"] is False, (stim, out[-2000:])
    assert report["processes"]["stimulate"]["restarts"] == 1

