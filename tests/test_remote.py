"""A graph across hosts: tcp transport and a process started by hand with ``rtneuro serve``.

The two-host test uses a network namespace joined by a veth pair, a second
network stack on this machine; it is skipped where namespaces cannot be made.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time

import pytest

from rtneuro.config import load_graph
from rtneuro.errors import ConfigError
from rtneuro.runtime.supervisor import Supervisor

from conftest import ROOT, synthetic_chain

pytestmark = pytest.mark.slow


def _remote_graph(host_supervisor: str, host_remote: str, **kw) -> dict:
    graph = synthetic_chain(speed=5, duration_s=5.0, **kw)
    graph["transport"] = {"scheme": "tcp", "host": host_supervisor, "insecure": True}  # an isolated test network
    graph["processes"] = {"stimulate": {"launch": "remote", "host": host_remote}}
    return graph


def _run_with_remote(path, serve_prefix: list[str], startup_timeout=60.0):
    graph = load_graph(path, overrides={"startup_timeout_s": startup_timeout})
    out = io.StringIO()
    sup = Supervisor(graph, out=out, quiet=True)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("code", sup.run()), daemon=True)
    t.start()
    t_end = time.monotonic() + 30
    while "rtneuro serve" not in out.getvalue() and time.monotonic() < t_end:
        time.sleep(0.05)
    line = next(x for x in out.getvalue().splitlines() if "rtneuro serve" in x)
    endpoint, process = line.split()[-2:]
    remote = subprocess.run([*serve_prefix, sys.executable, "-m", "rtneuro", "serve", endpoint, process],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    t.join(60)
    return box.get("code"), sup.report, remote, out.getvalue()


def _check_run(code, rep, remote):
    assert remote.returncode == 0, remote.stderr
    assert code == 0, rep["errors"]
    assert rep["processes"]["stimulate"]["launch"] == "remote"
    assert rep["latency_us"]["n"] == rep["streams"]["bpow"]["samples"] > 0
    assert "ctl>rx:stimulate" in rep["hops_us"]
    assert rep["commands"]["accepted"] == rep["commands"]["sent"] == 1
    assert rep["commands"]["unacked"] == 0 and rep["streams"]["ctl"]["gaps"] == 0
    assert rep["nodes"]["stim"]["driver"]["delivered"] == 1


def test_a_process_started_by_hand_joins_the_run_over_tcp(write_graph):
    code, rep, remote, out = _run_with_remote(write_graph(_remote_graph("127.0.0.1", "127.0.0.1")), [])
    assert "waiting for process 'stimulate' on 127.0.0.1" in out
    _check_run(code, rep, remote)


@pytest.fixture
def two_hosts():
    """A second network stack (namespace) at 10.98.N.2, this one at 10.98.N.1."""
    n = os.getpid() % 200 + 20
    ns, host_if, ns_if = f"rtn{n}", f"rtnh{n}", f"rtnn{n}"
    cmds = [
        ["ip", "netns", "add", ns],
        ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"],
        ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if],
        ["ip", "link", "set", ns_if, "netns", ns],
        ["ip", "addr", "add", f"10.98.{n}.1/24", "dev", host_if],
        ["ip", "link", "set", host_if, "up"],
        ["ip", "netns", "exec", ns, "ip", "addr", "add", f"10.98.{n}.2/24", "dev", ns_if],
        ["ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up"],
    ]
    try:
        for c in cmds:
            subprocess.run(c, check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.CalledProcessError) as exc:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        pytest.skip(f"cannot create a network namespace here ({exc})")
    try:
        yield f"10.98.{n}.1", f"10.98.{n}.2", ["ip", "netns", "exec", ns]
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_the_stimulate_service_on_another_network_host(write_graph, two_hosts):
    here, there, prefix = two_hosts
    code, rep, remote, _ = _run_with_remote(write_graph(_remote_graph(here, there)), prefix)
    _check_run(code, rep, remote)


def test_a_remote_process_that_never_comes_fails_the_start_clearly(write_graph):
    graph = load_graph(write_graph(_remote_graph("127.0.0.1", "127.0.0.1")), overrides={"startup_timeout_s": 3.0})
    sup = Supervisor(graph, out=io.StringIO(), quiet=True)
    assert sup.run() == 1
    # the remote one is named (on a loaded machine a local process may still be starting too)
    assert any("were not ready within startup_timeout_s=3 s" in e and "'stimulate'" in e for e in sup.report["errors"])


def test_serve_without_a_supervisor_says_so():
    r = subprocess.run([sys.executable, "-m", "rtneuro", "serve", "tcp://127.0.0.1:9", "stimulate", "--timeout", "1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 3
    assert "no answer from the supervisor at tcp://127.0.0.1:9" in r.stderr


def test_remote_processes_need_tcp(write_graph):
    graph = _remote_graph("127.0.0.1", "127.0.0.1")
    graph["transport"] = {"scheme": "ipc"}
    with pytest.raises(ConfigError, match="runs on another host: set transport.scheme: tcp"):
        load_graph(write_graph(graph))
