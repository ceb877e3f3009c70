"""Emergency stop from another terminal: ``rtneuro stop --now`` against a graph running in real time."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from rtneuro.runtime.clock import lsl_clock
from rtneuro.security import create_keys

from conftest import ROOT, start_graph, synthetic_chain, wait_running

pytestmark = pytest.mark.slow

LINE = re.compile(r"(\d+) of (\d+) stimulators confirmed in ([0-9.]+) ms \(send -> stimulator confirmation; round trip ([0-9.]+) ms\)")


def _stop(*args, env):
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "rtneuro", "stop", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env=env)
    return r, time.monotonic() - t0


def _driver_log(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _accepted(sup) -> int:
    return (sup.procs["stimulate"].current.status.get("decisions") or {}).get("accepted", 0)


@pytest.mark.parametrize("transport", ["ipc", "tcp+keys"])
def test_rtneuro_stop_now_puts_the_running_stimulator_in_its_safe_state(write_graph, tmp_path, monkeypatch, transport):
    runs = tmp_path / "runs"
    monkeypatch.setenv("RTNEURO_RUNTIME_DIR", str(runs))  # this test's supervisors only
    env = {**os.environ, "RTNEURO_RUNTIME_DIR": str(runs)}
    graph = synthetic_chain(speed="realtime", duration_s=60.0)
    graph["nodes"][4]["params"] = {"log_path": "stim.jsonl"}
    if transport != "ipc":
        create_keys(tmp_path / "keys")
        graph["transport"] = {"scheme": "tcp", "host": "127.0.0.1", "keys": "keys"}
    sup, thread, box = start_graph(write_graph(graph))
    log_path = tmp_path / "stim.jsonl"
    try:
        wait_running(sup)
        t_end = time.monotonic() + 20
        while _accepted(sup) < 1 and time.monotonic() < t_end:
            time.sleep(0.05)  # the controller has switched stimulation on
        assert _accepted(sup) == 1

        t_before = lsl_clock()
        r, wall = _stop("--now", env=env)  # found through the per-user list of running supervisors
        t_after = lsl_clock()
        assert r.returncode == 0, r.stdout + r.stderr
        lines = r.stdout.strip().splitlines()
        assert len(lines) == 1 and "latched until 'rtneuro stop --clear'" in lines[0]
        m = LINE.search(lines[0])
        assert m is not None, lines[0]
        assert (int(m[1]), int(m[2])) == (1, 1)
        send_to_confirm_ms, rtt_ms = float(m[3]), float(m[4])
        print(f"\n[{transport}] rtneuro stop --now: send -> stimulator confirmation {send_to_confirm_ms:.2f} ms, "
              f"round trip {rtt_ms:.2f} ms, whole command {wall * 1e3:.0f} ms")
        assert 0 < send_to_confirm_ms <= rtt_ms  # the confirmation is measured inside the round trip

        r2, _ = _stop("--clear", "--run", str(sup.run_dir), env=env)
        assert r2.returncode == 0, r2.stdout + r2.stderr
        assert "emergency stop cleared" in r2.stdout and "1 of 1 stimulators confirmed" in r2.stdout
    finally:
        sup.stop()
        thread.join(30)
    assert box.get("code") == 0, sup.report["errors"]
    # the driver really went to its safe state while the command ran, after stimulation had been switched on
    entries = _driver_log(log_path)  # written when the driver closes
    on = [e["t"] for e in entries if e["kind"] == "level"]
    safe = [e["t"] for e in entries if e["kind"] == "safe_state" and t_before <= e["t"] <= t_after]
    assert len(on) == 1 and len(safe) == 1 and on[0] < safe[0]
    est = sup.report["estop"]
    assert [e["op"] for e in est["events"]] == ["estop", "estop_clear"] and not est["latched"]
    first = est["events"][0]
    assert first["expected"] == ["stim"] and first["confirmed"] == 1 and first["missing"] == []
    assert 0 < first["forward_to_confirm_ms"] <= first["send_to_confirm_ms"]
    stim = sup.report["nodes"]["stim"]
    if "estop" in stim:  # the stimulator's own account (the gate's latch)
        assert stim["estop"]["count"] == 1 and not stim["estop"]["latched"]


def test_stop_without_a_running_rtneuro_names_the_fix(tmp_path):
    env = {**os.environ, "RTNEURO_RUNTIME_DIR": str(tmp_path / "runs")}
    r, _ = _stop("--now", env=env)
    assert r.returncode == 1
    assert r.stderr.strip() == ("error: no running rtneuro found: start one with 'rtneuro run CONFIG', "
                                "or pass --run RUN_FOLDER")
    r, _ = _stop("--now", "--run", str(tmp_path / "nothing"), env=env)
    assert r.returncode == 1 and "no running rtneuro there" in r.stderr and r.stderr.count("\n") == 1


def test_an_estop_latched_before_a_restart_reaches_the_new_incarnation(write_graph, tmp_path, monkeypatch):
    monkeypatch.setenv("RTNEURO_RUNTIME_DIR", str(tmp_path / "runs"))
    env = {**os.environ, "RTNEURO_RUNTIME_DIR": str(tmp_path / "runs")}
    graph = synthetic_chain(speed="realtime", duration_s=60.0, runtime={"restart_backoff_s": 0.1})
    graph["processes"] = {"stimulate": {"restart": "on-failure", "max_restarts": 2}}
    sup, thread, box = start_graph(write_graph(graph))
    try:
        wait_running(sup)
        r, _ = _stop("--now", env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        proc = sup.procs["stimulate"]
        os.kill(proc.current.pid, 9)
        t_end = time.monotonic() + 30
        while not (len(proc.incs) == 2 and proc.current.started_run) and time.monotonic() < t_end:
            time.sleep(0.05)
        assert len(proc.incs) == 2 and proc.current.started_run
        time.sleep(0.3)
    finally:
        sup.stop()
        thread.join(30)
    assert sup.report["estop"]["latched"]  # never cleared
    new = (proc.current.final or proc.current.status)["nodes"]["stim"]  # the restarted incarnation's own report
    assert new["gate"]["estops"] == 1 and new["estop"]["latched"]
    # the run report sums the incarnations' counts: the killed one's stop, if it reported it, and the new one's
    assert sup.report["nodes"]["stim"]["gate"]["estops"] in (1, 2)


def test_a_device_that_cannot_confirm_its_safe_state_makes_the_stop_fail_loudly(write_graph, tmp_path, monkeypatch):
    """The serial stimulator is unplugged mid-run: ``rtneuro stop --now`` must not report it safe."""
    from rtneuro.hardware.serial_emulator import SerialEmulator

    monkeypatch.setenv("RTNEURO_RUNTIME_DIR", str(tmp_path / "runs"))
    env = {**os.environ, "RTNEURO_RUNTIME_DIR": str(tmp_path / "runs")}
    emu = SerialEmulator(n_channels=2, max_amplitude_ma=10.0).start()
    graph = synthetic_chain(speed="realtime", duration_s=60.0)
    graph["nodes"][4]["params"] = {"driver": "serial", "profile": "serial", "driver_args": {"port": emu.port}}
    sup, thread, box = start_graph(write_graph(graph))
    try:
        wait_running(sup)
        t_end = time.monotonic() + 20
        while _accepted(sup) < 1 and time.monotonic() < t_end:
            time.sleep(0.05)
        assert _accepted(sup) == 1
        emu.close()  # unplugged
        r, _ = _stop("--now", env=env)
        assert r.returncode == 1, r.stdout + r.stderr
        line = r.stdout.strip()
        assert "0 of 1 stimulators confirmed" in line
        assert "stim failed: DeviceError: device 'serial' did not confirm its safe state" in line
        assert "cut its power or disconnect it by hand" in line
    finally:
        sup.stop()
        thread.join(30)
        emu.close()
    assert sup.report["estop"]["latched"]
    stim = sup.report["nodes"]["stim"]
    assert stim["gate"]["device_errors"] >= 1 and "is gone" in stim["last_device_error"]
