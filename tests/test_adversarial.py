"""A live graph under attack: every socket kind of every service, real sockets, real processes (issue 13).

The attacker (:mod:`benchmarks.attacker`) reads the run's plan and sends
random, truncated, huge-shape and oversized messages, forged ends of stream
and stimulation commands (named like the real controller), replayed
commands with far-future times and NaN deadlines, fresh identities,
distinct subscriptions and malformed control messages, while the graph
stimulates. Invariants: no service crashes or restarts, the run exits 0 with
no error, the controller's commands still get through, every rejection is
counted by reason, the logs stay bounded, memory stays bounded, and the
driver's own pulse log (every pulse it delivered) holds nothing beyond the
profile.
"""

from __future__ import annotations

import json

import pytest

from benchmarks.attacker import KINDS, Attacker
from benchmarks.hostile import rss_mb
from rtneuro.hardware.simulated import read_pulse_log
from rtneuro.safety import delivered_violations, load_profile

from conftest import start_graph, synthetic_chain, wait_until

pytestmark = pytest.mark.slow


def _heartbeats(sup) -> int:
    proc = sup.procs["stimulate"]
    return (proc.current.status.get("decisions") or {}).get("heartbeats", 0) if proc.incs else 0


def test_a_live_graph_under_every_kind_of_hostile_message_keeps_running_within_its_profile(write_graph, tmp_path, capfd):
    graph = synthetic_chain(speed="realtime", duration_s=300.0, runtime={"duration_s": 12.0})
    graph["transport"] = {"max_message_bytes": 1 << 20}
    pulses = tmp_path / "pulses.csv"
    stim = next(n for n in graph["nodes"] if n["id"] == "stim")
    stim["params"] = {"driver_args": {"pulse_log_path": str(pulses)}}
    sup, t, box = start_graph(write_graph(graph))
    wait_until(lambda: _heartbeats(sup) > 0, what="the first heartbeat at the stimulator")
    pids = {name: p.current.popen.pid for name, p in sup.procs.items()}
    rss0 = {name: rss_mb(pid) for name, pid in pids.items()}
    beats0 = _heartbeats(sup)
    atk = Attacker(json.loads((sup.run_dir / "plan.json").read_text()), "hostile", seed=13, max_message_bytes=1 << 20)
    try:
        sent = atk.run(4.0, rate_hz=2000.0)
    finally:
        atk.close()
    rss1 = {name: rss_mb(pid) for name, pid in pids.items()}
    # the real controller still gets through
    wait_until(lambda: _heartbeats(sup) > beats0 + 10, what="heartbeats after the attack")
    t.join(120)
    rep = sup.report
    err = capfd.readouterr().err

    assert all(sent["sent"][k] > 0 for k in KINDS), sent
    # no crash, no restart, a truthful and clean exit
    assert box["code"] == 0 and rep["errors"] == [], rep["errors"]
    assert all(p["exit_codes"] == [0] and p["restarts"] == 0 for p in rep["processes"].values()), rep["processes"]
    # every rejection counted by reason (oversized messages are refused by ZeroMQ itself, which drops the connection)
    rej = rep["invalid_messages"]
    for reason in ("forged", "shape", "size", "header", "frames"):
        assert rej.get(reason, 0) > 0, rej
    assert rep["streams"]["ctl"]["forged"] > 0
    assert rep["log_totals"]["supervisor"].get("malformed-control", 0) > 0
    # bounded logs: thousands of bad messages, a few lines per reason and process
    lines = [x for x in err.splitlines() if "WARNING" in x or "ERROR" in x]
    assert len(lines) < 60, "\n".join(lines[:80])
    # bounded memory
    for name in pids:
        assert rss1[name] - rss0[name] < 30.0, (name, rss0[name], rss1[name])
    # nothing beyond the profile, judged on every pulse the driver delivered
    log = read_pulse_log(pulses)
    assert len(log) > 100
    assert delivered_violations(load_profile("simulated"), log) == []
    gate = rep["nodes"]["stim"]["gate"]
    assert gate["accepted"] >= 1 and gate["refused"] == 0  # no stranger's command reached the gate
