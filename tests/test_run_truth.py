"""The run tells the truth (issue 13): exit codes, lost inputs, restarts and latency on live graphs.

Real processes and sockets. The forger is a DEALER whose routing id has the
form the command receiver accepts from the controller's process
(``control:<inc>``) but another incarnation: what the receiver's publisher
check cannot tell apart, so that the run-side checks are what is tested.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import zmq

from rtneuro.messages import CMD_HOLD, COMMAND_DTYPE, Chunk, encode, encode_eos
from rtneuro.runtime.clock import lsl_clock

from conftest import start_graph, synthetic_chain, wait_until

pytestmark = pytest.mark.slow


def _stimulating(sup) -> bool:
    st = sup.procs["stimulate"].current.status if sup.procs["stimulate"].incs else {}
    return (st.get("decisions") or {}).get("heartbeats", 0) > 0


def _forger(sup, identity=b"control:1"):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.connect(sup.plan["endpoints"]["stimulate"]["cmd"])
    return sock


def _hold(trace):
    data = np.zeros(1, dtype=COMMAND_DTYPE)
    data["kind"] = CMD_HOLD
    now = lsl_clock()
    return Chunk(data, 0, now, 0.0, trace, {"deadline": now + 1.0})


def test_a_forged_end_of_stream_does_not_retire_the_stimulator(write_graph):
    """Finding 3: ends and commands from a peer named like the controller, but not its incarnation, are refused."""
    graph = synthetic_chain(speed="realtime", duration_s=300.0, runtime={"duration_s": 8.0})
    sup, t, box = start_graph(write_graph(graph))
    wait_until(lambda: _stimulating(sup), what="the first heartbeat at the stimulator")
    sock = _forger(sup)
    try:
        for seq in range(0, 400, 2):
            sock.send_multipart(encode("cmd", "ctl", seq, 1, _hold([["ctl", lsl_clock()]])), copy=False)
            sock.send_multipart(encode_eos("cmd", "ctl", seq + 1, 1, 1))
        wait_until(lambda: sup.procs["stimulate"].current.status.get("received", {}).get("ctl", {}).get("forged", 0) >= 400,
                    what="the forged messages counted at the stimulator")
        beats = sup.procs["stimulate"].current.status["decisions"]["heartbeats"]
        # the real controller still gets through after the forgeries
        wait_until(lambda: sup.procs["stimulate"].current.status["decisions"]["heartbeats"] > beats + 5,
                    what="heartbeats after the forgeries")
        t.join(120)
    finally:
        sock.close()
    rep = sup.report
    assert box["code"] == 0, rep["errors"]
    assert rep["errors"] == [] and rep["run_s"] >= 8.0  # ran to its duration, its stimulator never cut off
    assert rep["streams"]["ctl"]["forged"] >= 400


def test_a_stimulator_cut_off_from_its_running_controller_fails_the_run_with_one_line(write_graph):
    """Finding 3, run side: an input end its producer did not report ends the run with exit 1 and one line.

    With the receiver's checks no stranger can end the input any more; the
    stimulate service's own 'input_ended' report is injected into the live
    supervisor (a dict entry, as its control handler would make) to check
    the backstop.
    """
    graph = synthetic_chain(speed="realtime", duration_s=300.0, runtime={"duration_s": 90.0})
    sup, t, box = start_graph(write_graph(graph))
    wait_until(lambda: _stimulating(sup), what="the first heartbeat at the stimulator")
    sup._input_ended(sup.procs["stimulate"], {"op": "input_ended", "stream": "ctl"})
    t.join(120)
    rep = sup.report
    assert box["code"] == 1, rep["errors"]
    lines = [e for e in rep["errors"] if "lost its command input 'ctl'" in e]
    assert len(lines) == 1 and "'control' was still running" in lines[0], rep["errors"]
    assert rep["run_s"] < 90.0  # it stopped for this, not at its duration


def test_a_service_that_must_be_killed_at_shutdown_fails_the_run(write_graph):
    """Finding 8: a control service that ignores 'stop' and SIGTERM ends with -9; the run cannot exit 0."""
    hang = {"id": "hang", "type": "fault", "inputs": ["bpow"], "process": "control",
            "params": {"mode": "slow", "slow_ms": 600_000.0, "after_chunks": 2}}
    graph = synthetic_chain(speed="realtime", duration_s=300.0, extra_nodes=[hang],
                            runtime={"duration_s": 120.0, "restart": "never"})
    sup, t, box = start_graph(write_graph(graph))
    wait_until(lambda: _stimulating(sup), what="the first heartbeat at the stimulator")
    wait_until(lambda: sup._sum_flat("decisions").get("watchdog", 0) >= 1, what="the hung controller's watchdog trip")
    sup.stop()
    t.join(120)
    rep = sup.report
    assert rep["processes"]["control"]["exit_codes"] == [-9]
    assert box["code"] == 1
    assert sum("process 'control'" in e for e in rep["errors"]) >= 1
    assert all("\n" not in e for e in rep["errors"])


def test_a_service_killed_with_sigkill_fails_the_run_with_one_line(write_graph):
    """Finding 8: the control service killed (-9), not restarted: exit code 1, one line naming it and why."""
    graph = synthetic_chain(speed="realtime", duration_s=300.0, runtime={"duration_s": 120.0, "restart": "never"})
    sup, t, box = start_graph(write_graph(graph))
    wait_until(lambda: _stimulating(sup), what="the first heartbeat at the stimulator")
    os.kill(sup.procs["control"].current.popen.pid, signal.SIGKILL)
    t.join(120)
    rep = sup.report
    assert box["code"] == 1
    assert [e for e in rep["errors"] if "'control'" in e and "killed by SIGKILL" in e], rep["errors"]
    assert rep["run_s"] < 120.0


def test_clean_runs_stop_every_service_without_terminating_any(write_graph, run_graph):
    """Finding 8: a clean shutdown, with the other core busy, needs no SIGTERM (no interpreter teardown race)."""
    graph = synthetic_chain(speed="realtime", duration_s=300.0, runtime={"duration_s": 2.0, "stop_timeout_s": 0.3})
    path = write_graph(graph)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        for _ in range(3):
            code, rep, _ = run_graph(path)
            assert code == 0, rep["errors"]
            assert rep["errors"] == []
            assert all(p["exit_codes"] == [0] for p in rep["processes"].values()), rep["processes"]
    finally:
        hog.kill()
        hog.wait()


def test_watchdog_figures_survive_a_restart_of_the_stimulate_service(write_graph):
    """Finding 10: the killed incarnation's watchdog timings are in the report, one per counted trip."""
    graph = synthetic_chain(speed="realtime", duration_s=300.0, runtime={"duration_s": 150.0, "restart_backoff_s": 0.2})
    sup, t, box = start_graph(write_graph(graph))
    wait_until(lambda: _stimulating(sup), what="the first heartbeat at the stimulator")
    # the controller's input dies: the stimulator's watchdog trips in this incarnation
    os.kill(sup.procs["process"].current.popen.pid, signal.SIGKILL)
    wait_until(lambda: (sup.procs["stimulate"].current.status.get("decisions") or {}).get("watchdog", 0) >= 1,
                what="a watchdog trip")
    os.kill(sup.procs["stimulate"].current.popen.pid, signal.SIGKILL)
    wait_until(lambda: len(sup.procs["stimulate"].incs) == 2 and sup.procs["stimulate"].current.ready,
                what="the stimulate service's restart")
    sup.stop()
    t.join(120)
    rep = sup.report
    assert rep["processes"]["stimulate"]["exit_codes"][0] == -9
    trips = rep["commands"]["watchdog_trips"]
    stim = rep["nodes"]["stim"]
    assert trips >= 1
    assert len(stim["watchdog_to_safe_ms"]) == len(stim["watchdog_over_deadline_ms"]) == trips
    assert stim["gate"]["watchdog"] == trips


def test_forged_commands_stay_out_of_the_latency_figures(write_graph):
    """Finding 11: commands from a stranger (absurd traces) never reach the stimulator nor its latency figures."""
    graph = synthetic_chain(speed="realtime", duration_s=300.0, runtime={"duration_s": 150.0})
    sup, t, box = start_graph(write_graph(graph))
    wait_until(lambda: _stimulating(sup), what="the first heartbeat at the stimulator")
    sock = _forger(sup, b"control:7")
    try:
        now = lsl_clock()
        sock.send_multipart(encode("cmd", "ctl", 0, 7, _hold([["ctl", now + 1000.0]])), copy=False)
        sock.send_multipart(encode("cmd", "ctl", 1, 7, _hold([["ctl", now - 5000.0]])), copy=False)
        wait_until(lambda: sup.procs["stimulate"].current.status.get("received", {}).get("ctl", {}).get("forged", 0) >= 2,
                    what="the forged commands counted")
    finally:
        sock.close()
    sup.stop()
    t.join(120)
    rep = sup.report
    lat = rep["latency_us"]
    assert lat["n"] > 0 and lat["max"] < 60e6  # no sample from either trace (5000 s old; 1000 s ahead)
    assert rep["latency_refused"] == {}  # they did not even reach the latency code


def test_implausible_traces_are_named():
    """Finding 11, second line: a trace that cannot be real is left out of the figures, by reason."""
    from rtneuro.runtime.service import TRACE_FUTURE_S, TRACE_MAX_AGE_S, _implausible

    now = 1000.0
    assert _implausible([["src", now - 0.01], ["ctl", now - 0.001]], now) is None
    assert _implausible([["src", now + TRACE_FUTURE_S + 1.0]], now) == "future"
    assert _implausible([["src", now - TRACE_MAX_AGE_S - 1.0], ["ctl", now]], now) == "stale"
    assert _implausible([["src", float("nan")]], now) == "nonfinite"
    assert _implausible([["src", "x"]], now) == "malformed"
