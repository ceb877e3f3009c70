"""Whole graphs on real processes and sockets: reports, restarts, shutdown, bad data."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mne
import numpy as np
import pytest

from rtneuro.config import load_graph
from rtneuro.runtime.supervisor import Supervisor

from conftest import REPLAY, ROOT, children_of, run_folders, synthetic_chain, wait_until

pytestmark = pytest.mark.slow


def _start_in_thread(path, **overrides):
    graph = load_graph(path, overrides=overrides)
    sup = Supervisor(graph, out=io.StringIO(), quiet=True)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("code", sup.run()), daemon=True)
    t.start()
    return sup, t, box


def _wait_running(sup, names, timeout=60.0):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if getattr(sup, "origin", None) is not None and all(sup.procs[n].current and sup.procs[n].current.started_run for n in names):
            return
        time.sleep(0.05)
    raise AssertionError("graph did not start")


def test_a_graph_runs_across_processes_with_zero_gaps_and_reports_everything(write_graph, run_graph):
    code, rep, _ = run_graph(write_graph(synthetic_chain(speed=5, duration_s=6.0)))
    assert code == 0, rep["errors"]
    s = rep["streams"]
    assert s["src"]["samples"] == 1500 and s["src"]["chunks"] == 60
    assert s["bp"]["samples"] == 1500
    assert s["bpow"]["chunks"] > 0 and s["ctl"]["chunks"] == s["bpow"]["samples"]
    for row in s.values():
        assert row["gaps"] == 0 and row["invalid"] == 0 and row["nonfinite"] == 0
    # every stream that crossed a process boundary was received in full
    assert s["src"]["received"] == 60 and s["bpow"]["received"] == s["bpow"]["chunks"]
    assert s["bp"]["received"] == 0  # bp -> bpow stayed in one process: passed by reference
    lat = rep["latency_us"]
    assert lat["n"] == s["bpow"]["samples"] and 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert set(rep["hops_us"]) >= {"src>rx:process", "ctl>rx:stimulate", "rx:stimulate>stim"}
    c = rep["commands"]
    assert c["sent"] == 1 and c["accepted"] == 1 and c["refused"] == 0  # threshold -1e9: switched on once
    assert c["heartbeats"] == c["heartbeats_accepted"] == lat["n"] - 1
    assert c["acked"] == lat["n"] and c["unacked"] == 0
    assert rep["restarts"] == 0 and rep["errors"] == [] and rep["invalid_messages"] == {}
    assert set(rep["processes"]) == {"acquire", "process", "control", "stimulate"}
    assert rep["nodes"]["stim"]["driver"]["delivered"] == 1


def test_a_replay_as_fast_as_possible_is_deterministic(write_graph, run_graph, tmp_path):
    graph = synthetic_chain(speed="max", duration_s=20.0, threshold=15.3)  # the median of the feature
    graph["nodes"].append({"id": "rec", "type": "jsonl", "inputs": ["bpow", "ctl"], "process": "control",
                           "params": {"path": "out.jsonl", "flush_every": 50}})
    path = write_graph(graph)
    outputs = []
    for _ in range(2):
        (tmp_path / "out.jsonl").unlink(missing_ok=True)
        code, rep, _ = run_graph(path)
        assert code == 0, rep["errors"]
        assert rep["streams"]["src"]["gaps"] == 0 and rep["streams"]["bpow"]["samples"] == 196
        lines = (tmp_path / "out.jsonl").read_text().splitlines()
        # drop the wall-clock deadline carried by each command; everything else must match
        outputs.append([{k: v for k, v in json.loads(x).items() if k != "deadline"} for x in lines])
        assert rep["commands"]["sent"] >= 2  # the threshold switches at least on and off
    assert outputs[0] == outputs[1]


def test_a_service_killed_with_sigkill_is_restarted_and_the_run_reports_it(write_graph):
    # no fixed duration: the run is stopped once the events the test needs have happened
    path = write_graph(synthetic_chain(speed="realtime", duration_s=120.0, runtime={"restart_backoff_s": 0.2}))
    sup, t, box = _start_in_thread(path)
    _wait_running(sup, ["process"])
    wait_until(lambda: sup._stream_rows()["bpow"]["samples"] > 0, what="features")
    victim = sup.procs["process"].current.popen.pid
    before = sup._stream_rows()["bpow"]["samples"]
    os.kill(victim, signal.SIGKILL)
    # the new incarnation runs and its features reach the controller
    wait_until(lambda: len(sup.procs["process"].incs) == 2 and sup._stream_rows()["bpow"]["samples"] > before + 5,
                what="features from the restarted process")
    wait_until(lambda: sup._sum_flat("decisions").get("watchdog", 0) >= 1, what="a watchdog trip")
    sup.stop()
    t.join(60)
    rep = sup.report
    assert box["code"] == 1  # a service failed, even though it came back
    assert rep["restarts"] == 1 and rep["processes"]["process"]["exit_codes"][0] == -9
    assert any("killed by SIGKILL" in e for e in rep["errors"])
    # data flowed again after the restart: features from the new incarnation reached the controller
    assert rep["streams"]["bpow"]["publisher_restarts"] == 1
    assert rep["streams"]["bpow"]["samples"] > before + 5
    # while the processing was down, the stimulator stopped hearing from its controller
    assert rep["commands"]["watchdog_trips"] >= 1
    assert rep["processes"]["acquire"]["exit_codes"] == [0]


def test_a_node_that_raises_restarts_its_service_then_stops_the_run(write_graph):
    extra = [{"id": "boom", "type": "fault", "inputs": ["bp"], "process": "process", "params": {"after_chunks": 15, "mode": "raise"}},
             {"id": "sink", "type": "console", "inputs": ["boom"], "process": "process", "params": {"every_s": 100}}]
    graph = synthetic_chain(speed="realtime", duration_s=300.0, extra_nodes=extra,
                            runtime={"duration_s": 150.0, "max_restarts": 1, "restart_backoff_s": 0.1})
    sup, t, box = _start_in_thread(write_graph(graph))
    t.join(200)
    rep = sup.report
    assert box["code"] == 1
    # the run stopped once the restarts were used up, long before its duration (a loaded machine
    # only makes the start-ups slower; no wall-clock bound on them)
    assert not rep["interrupted"] and rep["run_s"] < 150.0
    assert rep["restarts"] == 1
    assert rep["processes"]["process"]["exit_codes"] == [1, 1]
    assert sum("node 'boom' (fault) in process 'process' raised RuntimeError: fault injected" in e for e in rep["errors"]) >= 1
    assert any("is not restarted" in e for e in rep["errors"])
    # the stimulate service was told to stop and ended cleanly, in its safe state
    assert rep["processes"]["stimulate"]["exit_codes"] == [0]
    assert rep["nodes"]["stim"]["driver"]["safe_states"] >= 2


def test_the_stimulator_refuses_what_the_profile_forbids_end_to_end(write_graph, tmp_path):
    graph = synthetic_chain(speed=5, duration_s=4.0, threshold=-1e9)
    graph["nodes"][3]["params"]["amplitude_ma"] = 50.0  # ten times the profile maximum on channel 0
    graph["nodes"][4]["params"] = {"log_path": "delivered.jsonl"}
    sup, t, box = _start_in_thread(write_graph(graph))
    t.join(60)
    rep = sup.report
    assert box["code"] == 0
    assert rep["commands"]["sent"] == 1 and rep["commands"]["refused"] == 1 and rep["commands"]["accepted"] == 0
    assert rep["nodes"]["stim"]["refusals"] == {"amplitude": 1}
    delivered = [json.loads(x) for x in (tmp_path / "delivered.jsonl").read_text().splitlines()]
    assert all(d["kind"] == "safe_state" for d in delivered)


def test_nan_in_a_recording_is_counted_and_loses_no_other_data(write_graph, tmp_path):
    raw = mne.io.read_raw(REPLAY / "S003R01.edf", preload=True, verbose="error").pick(["Oz..", "O1..", "O2.."]).crop(0, 10, include_tmax=False)
    data = raw.get_data()
    data[1, 800:830] = np.nan  # a 30-sample dropout on one channel
    raw._data = data
    path = tmp_path / "gappy_raw.fif"
    raw.save(path, verbose="error")
    graph = {
        "runtime": {"speed": 10},
        "nodes": [
            {"id": "eeg", "type": "file_replay", "process": "acquire", "params": {"path": str(path), "chunk_size": 16}},
            {"id": "bp", "type": "bandpass", "inputs": ["eeg"], "params": {"l_freq": 1.0, "h_freq": 40.0}},
            {"id": "alpha", "type": "bandpower", "inputs": ["bp"], "params": {"bands": {"alpha": [8, 12]}, "average": True}},
            {"id": "rec", "type": "jsonl", "inputs": ["alpha"], "params": {"path": "alpha.jsonl"}},
        ],
    }
    out = io.StringIO()
    sup = Supervisor(load_graph(write_graph(graph)), out=out, quiet=True)
    assert sup.run() == 0
    rep = sup.report
    assert rep["streams"]["eeg"]["nonfinite"] == 30 and rep["streams"]["eeg"]["samples"] == 1600
    assert rep["streams"]["bp"]["gaps"] == 0 and rep["streams"]["bp"]["samples"] == 1600
    assert rep["nodes"]["bp"]["replaced_nonfinite"] == 30
    values = [json.loads(x)["values"]["alpha"] for x in (tmp_path / "alpha.jsonl").read_text().splitlines()]
    assert len(values) == rep["streams"]["alpha"]["samples"] and np.isfinite(values).all()
    nan_warnings = [e for e in rep["warnings"] if "NaN/Inf" in e]
    assert len(nan_warnings) == 1 and "channel O1" in nan_warnings[0] and "\n" not in nan_warnings[0]
    assert rep["errors"] == []


def test_tcp_transport_runs_the_same_graph(write_graph, run_graph):
    graph = synthetic_chain(speed=5, duration_s=3.0)
    graph["transport"] = {"scheme": "tcp", "host": "127.0.0.1"}
    code, rep, _ = run_graph(write_graph(graph))
    assert code == 0, rep["errors"]
    assert rep["streams"]["src"]["received"] == rep["streams"]["src"]["chunks"] == 30
    assert rep["latency_us"]["n"] > 0 and rep["streams"]["bp"]["gaps"] == 0


def test_a_service_that_cannot_open_its_device_fails_the_run_with_a_clear_message(write_graph, run_graph):
    graph = synthetic_chain(speed=5, duration_s=3.0)
    graph["nodes"][4]["params"] = {"log_path": "no/such/folder/log.jsonl"}
    code, rep, _ = run_graph(write_graph(graph))
    assert code == 1
    assert any("process 'stimulate'" in e and "No such file or directory" in e for e in rep["errors"]), rep["errors"]
    assert all("\n" not in e for e in rep["errors"])


# -- the command line: shutdown, orphans, files ---------------------------------


def _cli_run(path, *args):
    return subprocess.Popen([sys.executable, "-m", "rtneuro", "run", str(path), "--quiet", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _cli_run_until_stimulating(path, *args):
    """Start ``rtneuro run`` (status lines on stderr) and return once commands reach the stimulator.

    Waits on the run's own status line ("end-to-end to stimulator"), not on
    a fixed sleep: start-up takes seconds on an idle machine and much longer
    on a busy one. Returns the process and the list its stderr lines go to.
    """
    proc = subprocess.Popen([sys.executable, "-m", "rtneuro", "run", str(path), *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: list[str] = []
    seen = threading.Event()

    def read():
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "end-to-end to stimulator" in line:
                seen.set()

    threading.Thread(target=read, daemon=True).start()
    if not seen.wait(120):
        proc.kill()
        raise AssertionError("the run never reached the stimulator:\n" + "".join(lines[-30:]))
    return proc, lines


def _wait_for_children(pid, n, timeout=60.0):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        kids = children_of(pid)
        if len(kids) >= n:
            return kids
        time.sleep(0.1)
    raise AssertionError(f"expected {n} service processes, found {children_of(pid)}")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie awaiting its parent is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig, to_group", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_ctrl_c_or_sigterm_stops_everything_promptly_and_cleans_up(write_graph, sig, to_group):
    path = write_graph(synthetic_chain(speed="realtime", duration_s=300.0))
    proc, lines = _cli_run_until_stimulating(path, "--report", str(path.parent / "r.json"))
    kids = _wait_for_children(proc.pid, 4)
    assert len(run_folders(proc.pid)) == 1
    if to_group:
        os.killpg(proc.pid, sig)  # what a terminal does on Ctrl-C
    else:
        os.kill(proc.pid, sig)
    proc.wait(60)
    rep = json.loads((path.parent / "r.json").read_text())
    # prompt means: every service stopped within its drain by itself; none had to be terminated or
    # killed (what a wall-clock bound stood for, without one)
    assert proc.returncode == 0, rep["errors"]
    assert rep["errors"] == [] and all(p["exit_codes"] == [0] for p in rep["processes"].values()), rep["processes"]
    assert not any("terminating" in line or "killing" in line for line in lines)
    assert not any(_alive(k) for k in kids)
    assert run_folders(proc.pid) == []  # the run folder and its ipc files are gone
    assert rep["interrupted"] and rep["streams"]["bp"]["gaps"] == 0 and rep["latency_us"]["n"] > 0


@pytest.mark.parametrize("after_s", [0.0, 1.0], ids=["while-services-import", "running"])
def test_killing_the_supervisor_leaves_no_orphan_services(write_graph, run_graph, after_s):
    path = write_graph(synthetic_chain(speed="realtime", duration_s=300.0))
    proc = _cli_run(path)
    kids = _wait_for_children(proc.pid, 4)
    wait_until(lambda: run_folders(proc.pid), what="the supervisor's run folder")
    stale = set(run_folders(proc.pid))
    time.sleep(after_s)  # 0: before a service could ask the kernel to signal it on its parent's death
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)
    # each service hears SIGTERM from the kernel and stops in order: a generous bound for a loaded machine
    wait_until(lambda: not any(_alive(k) for k in kids), timeout=120.0, what="every orphaned service to stop")
    # its run folder outlives it (unless another test's run already removed it); the next run removes it
    assert len(stale) == 1 and set(run_folders(proc.pid)) <= stale
    code, _, _ = run_graph(write_graph(synthetic_chain(speed="max", duration_s=1.0), "next.yaml"))
    assert code == 0
    assert not (stale & set(run_folders()))


def test_a_fast_source_still_serves_its_control_socket(write_graph, run_graph):
    # 1 ms chunks: the source never waits long enough for the coarse wait that serves the
    # sockets; it must still hear the supervisor's pings (or it would stop after 5 s)
    graph = synthetic_chain(speed="realtime", duration_s=60.0, sfreq=2000.0, chunk=2, runtime={"duration_s": 7.0})
    code, rep, _ = run_graph(write_graph(graph))
    assert code == 0, rep["errors"]
    assert rep["errors"] == []
    assert rep["streams"]["src"]["chunks"] > 4000 and rep["streams"]["src"]["gaps"] == 0


def test_spinning_for_inputs_changes_nothing_but_timing(write_graph, run_graph):
    code, rep, _ = run_graph(write_graph(synthetic_chain(speed="realtime", duration_s=3.0, runtime={"spin_ms": 2.0})))
    assert code == 0, rep["errors"]
    s = rep["streams"]
    assert s["src"]["samples"] == 750 and s["bpow"]["received"] == s["bpow"]["chunks"] > 0
    assert all(row["gaps"] == 0 for row in s.values())
    assert rep["latency_us"]["n"] == s["bpow"]["samples"]


def test_a_second_ctrl_c_skips_the_drain_but_still_stops_the_stimulator_safely(write_graph):
    path = write_graph(synthetic_chain(speed="realtime", duration_s=300.0))
    proc, _ = _cli_run_until_stimulating(path, "--report", str(path.parent / "r.json"))
    os.kill(proc.pid, signal.SIGINT)
    os.kill(proc.pid, signal.SIGINT)
    proc.wait(60)
    rep = json.loads((path.parent / "r.json").read_text())
    assert proc.returncode == 0, rep["errors"]
    # every service ended by itself: none was terminated or killed
    assert all(p["exit_codes"] == [0] for p in rep["processes"].values())
    assert rep["nodes"]["stim"]["driver"]["safe_states"] >= 2  # opened safe, closed safe


def test_a_slow_consumer_gets_every_message_of_a_replay_as_fast_as_possible(write_graph, run_graph, tmp_path):
    """Lossless to the end: the producer finishes long before its consumer and waits for it to leave."""
    graph = {
        "runtime": {"speed": "max"},
        "nodes": [
            {"id": "src", "type": "synthetic", "process": "acquire",
             "params": {"n_channels": 4, "sfreq": 1000.0, "chunk_size": 1, "seed": 1, "duration_s": 3.0}},
            {"id": "slow", "type": "fault", "inputs": ["src"], "process": "sink",
             "params": {"mode": "slow", "slow_ms": 1.0, "after_chunks": 0}},
            {"id": "rec", "type": "jsonl", "inputs": ["slow"], "process": "sink",
             "params": {"path": str(tmp_path / "rows.jsonl"), "flush_every": 500}},
        ],
    }
    code, rep, _ = run_graph(write_graph(graph))
    assert code == 0 and rep["errors"] == []
    assert rep["streams"]["src"]["samples"] == rep["streams"]["src"]["received"] == 3000
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == 3000


def test_killing_the_controller_mid_stimulation_puts_the_device_in_its_safe_state_by_the_watchdog():
    """SIGKILL of the control process while stimulating: the stimulate service's watchdog trips on its own."""
    from benchmarks.safety import _run_and_kill

    rep = _run_and_kill("control", settle_s=3.0)
    stim = rep["nodes"]["stim"]
    assert rep["processes"]["control"]["exit_codes"][0] == -9
    assert stim["gate"]["watchdog"] >= 1 and stim["driver"]["safe_states"] >= 2
    (to_safe_ms, *_), (over_ms, *_) = stim["watchdog_to_safe_ms"], stim["watchdog_over_deadline_ms"]
    # measured, not a timing guarantee of this shared machine: printed for the record
    print(f"watchdog: safe {to_safe_ms:.2f} ms after the last valid input ({over_ms:+.2f} ms beyond the deadline)")
    assert to_safe_ms >= 1e3 * 0.5  # it waited for the profile's watchdog_s (no ramp in this profile)
    assert stim["driver"]["on_time_s"]["0"] > 1.0  # it had been stimulating


def _fifo_threads(pid: int) -> tuple[int, int]:
    """(threads on SCHED_FIFO, threads) of process ``pid``."""
    fifo = total = 0
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            policy = int((t / "stat").read_text().rsplit(")", 1)[1].split()[38])
        except (OSError, IndexError):
            continue
        total += 1
        fifo += policy == os.SCHED_FIFO
    return fifo, total


def test_realtime_priority_puts_every_thread_of_every_graph_process_on_sched_fifo_and_a_refusal_is_one_line(tmp_path, write_graph):
    """runtime.realtime_priority: the loop's processes preempt a browser or anything else on the machine."""
    path = write_graph(synthetic_chain(speed="realtime", duration_s=60.0, runtime={"realtime_priority": 10}))
    proc = subprocess.Popen([sys.executable, "-m", "rtneuro", "run", str(path), "--quiet", "--duration", "30"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        seen: dict[int, tuple[int, int]] = {}

        def all_fifo() -> bool:
            kids = children_of(proc.pid)
            for k in kids:
                with contextlib.suppress(OSError):
                    seen[k] = _fifo_threads(k)
            return len(kids) == 4 and all(seen.get(k, (0, 1))[0] == seen.get(k, (0, 1))[1] for k in kids)

        wait_until(all_fifo, timeout=120, what="every thread of the four processes on SCHED_FIFO")
        assert all(t > 1 for _, t in seen.values()), "ZeroMQ's I/O threads are among them"
        assert _fifo_threads(proc.pid)[0] == 0, "the supervisor (and the pages' server) stay below the loop"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    # a user who may not use real-time scheduling: the run stops at start with one line naming the fixes
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return  # (as another user, or without setpriv, this test has checked what it can)
    # a user who may not use real-time scheduling (here: root without CAP_SYS_NICE): the run stops at start,
    # before any data, with one line naming the fixes
    no_nice = ["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice"]
    out = subprocess.run([*no_nice, sys.executable, "-m", "rtneuro", "run", str(path), "--quiet", "--duration", "30"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.splitlines() if "realtime_priority=10" in ln]
    assert lines and "CAP_SYS_NICE" in lines[0], out.stderr[-2000:]
