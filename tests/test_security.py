"""Who may talk to a graph: CURVE over tcp (real sockets), owner-only ipc files, key files."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
import time

import pytest
import yaml
import zmq

from rtneuro.config import load_graph
from rtneuro.errors import ConfigError
from rtneuro.messages import CMD_LEVEL, Chunk, StreamMeta
from rtneuro.runtime.clock import lsl_clock
from rtneuro.safety import make_command
from rtneuro.security import (
    AUTHORIZED_FILE,
    PUBLIC_FILE,
    SECRET_FILE,
    SERVER_FILE,
    create_keys,
    load_keys,
    refusals,
    stop_authenticator,
)
from rtneuro.transport import CommandReceiver, CommandSender, Publisher, Subscriber, TransportParams

from conftest import ROOT, start_graph, synthetic_chain, wait_running

META = StreamMeta(name="eeg", kind="sig", sfreq=100.0, ch_names=("a", "b"), units=("uV", "uV"))


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _cmd() -> Chunk:
    return Chunk(make_command(CMD_LEVEL, 0, 1.0, 60.0, 130.0), 0, 0.0, 10.0, [["ctl", lsl_clock()]],
                 {"deadline": lsl_clock() + 5.0})


def _received(rx: CommandReceiver, timeout_s: float) -> list:
    """Commands that reach ``rx`` within ``timeout_s``."""
    got: list = []
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end and not got:
        if rx.socket.poll(20):
            got.extend(rx.drain())
    return got


@pytest.fixture
def deployment(tmp_path):
    """The deployment's keys, and an outsider's keys that know the deployment's server key."""
    ours = create_keys(tmp_path / "keys")
    theirs_dir = tmp_path / "outsider"
    theirs = create_keys(theirs_dir)
    return ours, theirs


# -- rtneuro keys -------------------------------------------------------------

def test_rtneuro_keys_writes_a_keypair_with_an_owner_only_secret(tmp_path):
    d = tmp_path / "deploy" / "keys"
    r = subprocess.run([sys.executable, "-m", "rtneuro", "keys", str(d)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert str(d) in r.stdout and "transport: {scheme: tcp, keys:" in r.stdout
    assert _mode(d) == 0o700
    assert _mode(d / SECRET_FILE) == 0o600
    assert _mode(d / PUBLIC_FILE) == 0o644
    public = (d / PUBLIC_FILE).read_text().strip().encode()
    secret = (d / SECRET_FILE).read_text().strip().encode()
    assert len(public) == len(secret) == 40
    assert zmq.curve_public(secret) == public  # a real Curve25519 pair
    lines = [x for x in (d / AUTHORIZED_FILE).read_text().splitlines() if x and not x.startswith("#")]
    assert [x.split()[0].encode() for x in lines] == [public]
    assert load_keys(d).authorized == frozenset({public})
    # a second call does not replace the keypair silently
    r2 = subprocess.run([sys.executable, "-m", "rtneuro", "keys", str(d)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r2.returncode == 2 and "--force" in r2.stderr and r2.stderr.count("\n") == 1
    assert (d / PUBLIC_FILE).read_text().strip().encode() == public


def test_a_secret_key_readable_by_others_is_refused(tmp_path):
    keys = create_keys(tmp_path / "k")
    os.chmod(keys.directory / SECRET_FILE, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_keys(keys.directory)


# -- CURVE on real tcp sockets --------------------------------------------------

def test_only_a_client_with_an_authorized_key_can_deliver_a_command(deployment, tmp_path, caplog):
    ours, theirs = deployment
    ctx = zmq.Context.instance()
    server = TransportParams(scheme="tcp", keys=str(ours.directory))
    rx = CommandReceiver(ctx, "tcp://127.0.0.1:0", server, inc=9)
    rx.expect("ctl")
    assert rx.socket.curve_server
    attempts = {
        "no key": TransportParams(scheme="tcp"),
        "another deployment's keys": TransportParams(scheme="tcp", keys=str(theirs.directory)),
    }
    # an outsider who knows our (public) server key but whose own key is not authorized
    spy = tmp_path / "spy"
    shutil.copytree(theirs.directory, spy)
    (spy / SERVER_FILE).write_text(ours.public.decode() + "\n")
    attempts["unauthorized key that knows the server key"] = TransportParams(scheme="tcp", keys=str(spy))
    caplog.set_level(logging.WARNING, logger="rtneuro.security")
    for what, params in attempts.items():
        tx = CommandSender(ctx, rx.endpoint, params, inc=5, clock=lsl_clock)
        tx.send("ctl", _cmd(), heartbeat=False)
        assert _received(rx, 0.5) == [], f"{what}: a command got through"
        tx.close()
    # the ZAP handler saw the unauthorized key, refused it and said so, once
    refused = [r.getMessage() for r in caplog.records if "refused a CURVE client" in r.getMessage()]
    assert len(refused) == 1 and theirs.public.decode() in refused[0] and AUTHORIZED_FILE in refused[0]
    # the client without keys never reached the ZAP handler: the socket's monitor saw its handshake fail
    t_end = time.monotonic() + 5
    while not any("does not use CURVE" in r.getMessage() for r in caplog.records) and time.monotonic() < t_end:
        time.sleep(0.02)
    plain = [r.getMessage() for r in caplog.records if "does not use CURVE" in r.getMessage()]
    assert len(plain) == 1 and rx.endpoint.rsplit(":", 1)[1] in plain[0] and "rtneuro keys" in plain[0]
    assert refusals(ctx) >= 3  # no key, another deployment's server key, an unauthorized key
    # the deployment's own key gets through, and the acknowledgement comes back
    tx = CommandSender(ctx, rx.endpoint, TransportParams(scheme="tcp", keys=str(ours.directory)), inc=6, clock=lsl_clock)
    tx.send("ctl", _cmd(), heartbeat=False)
    got = _received(rx, 5.0)
    assert len(got) == 1 and got[0][1].stream == "ctl"
    peer, msg = got[0]
    rx.ack(peer, msg, ["accepted"], [""], lsl_clock())
    t_end = time.monotonic() + 5
    while tx.stats.acked == 0 and time.monotonic() < t_end:
        tx.socket.poll(20)
        tx.poll()
    assert tx.stats.acked == 1
    tx.close()
    rx.close()


def test_without_its_zap_handler_a_curve_server_refuses_everyone(deployment):
    ours, _ = deployment
    ctx = zmq.Context()
    try:
        rx = CommandReceiver(ctx, "tcp://127.0.0.1:0", TransportParams(scheme="tcp", keys=str(ours.directory)), inc=9)
        rx.expect("ctl")
        stop_authenticator(ctx)  # fail closed, not open: libzmq's default would let any key in
        tx = CommandSender(ctx, rx.endpoint, TransportParams(scheme="tcp", keys=str(ours.directory)), inc=5, clock=lsl_clock)
        tx.send("ctl", _cmd(), heartbeat=False)
        assert _received(rx, 0.5) == []
        tx.close()
        rx.close()
    finally:
        ctx.destroy(linger=0)


def test_data_streams_over_tcp_reach_only_authorized_subscribers(deployment):
    ours, theirs = deployment
    ctx = zmq.Context.instance()
    pub = Publisher(ctx, "tcp://127.0.0.1:0", TransportParams(scheme="tcp", keys=str(ours.directory)), inc=1)
    pub.announce(META)
    subs = {}
    for what, params in {"ours": TransportParams(scheme="tcp", keys=str(ours.directory)),
                         "none": TransportParams(scheme="tcp"),
                         "theirs": TransportParams(scheme="tcp", keys=str(theirs.directory))}.items():
        sub = Subscriber(ctx, params)
        sub.subscribe(META.topic, META)
        sub.connect(pub.endpoint)
        subs[what] = sub
    t_end = time.monotonic() + 5
    while pub.subscriptions.get(META.topic, 0) < 1 and time.monotonic() < t_end:
        pub.socket.poll(20)
        pub.poll_subscriptions()
    time.sleep(0.2)  # would let the other two subscribe too, if they could
    pub.poll_subscriptions()
    assert pub.subscriptions.get(META.topic, 0) == 1  # only one subscriber got through the handshake
    import numpy as np

    for k in range(3):
        pub.publish("sig", "eeg", META.topic, Chunk(np.full((4, 2), float(k)), 4 * k, 0.04 * k, 100.0, [["src", lsl_clock()]]))
    got: dict[str, list] = {w: [] for w in subs}
    t_end = time.monotonic() + 1.0
    while time.monotonic() < t_end and len(got["ours"]) < 3:
        for w, sub in subs.items():
            if sub.socket.poll(10):
                got[w].extend(m for m in sub.drain() if m.type == "data")
    assert [m.seq for m in got["ours"]] == [0, 1, 2]
    assert got["none"] == [] and got["theirs"] == []
    for sub in subs.values():
        sub.close()
    pub.close()


def test_a_graph_runs_over_tcp_with_curve_end_to_end(write_graph, run_graph, tmp_path):
    create_keys(tmp_path / "keys")
    graph = synthetic_chain(speed=5, duration_s=3.0)
    graph["transport"] = {"scheme": "tcp", "host": "127.0.0.1", "keys": "keys"}  # relative to the graph file
    code, rep, _ = run_graph(write_graph(graph))
    assert code == 0, rep["errors"]
    s = rep["streams"]
    assert s["src"]["received"] == s["src"]["chunks"] == 30
    assert rep["commands"]["accepted"] == 1 and rep["commands"]["unacked"] == 0
    assert rep["commands"]["acked"] == rep["latency_us"]["n"] > 0
    assert not any("without keys" in w for w in rep["warnings"])


def test_a_live_graph_reports_the_clients_its_curve_sockets_refused(deployment, write_graph):
    """Issue 13, finding 9, end to end: a client holding another server key is counted in the run report."""
    ours, theirs = deployment
    graph = synthetic_chain(speed="realtime", duration_s=300.0, runtime={"duration_s": 300.0})
    graph["transport"] = {"scheme": "tcp", "host": "127.0.0.1", "keys": "keys"}
    sup, t, box = start_graph(write_graph(graph))
    wait_running(sup)
    ctx = zmq.Context()
    try:
        tx = CommandSender(ctx, sup.plan["endpoints"]["stimulate"]["cmd"],
                           TransportParams(scheme="tcp", keys=str(theirs.directory)), inc=5, clock=lsl_clock)
        tx.send("ctl", _cmd(), heartbeat=False)  # returns at once: the handshake never completes
        t_end = time.monotonic() + 120
        while time.monotonic() < t_end and (sup.procs["stimulate"].current.status.get("security") or {}).get(
                "wrong_server_key", 0) < 1:
            time.sleep(0.05)
        tx.close()
    finally:
        ctx.destroy(linger=0)
        sup.stop()
        t.join(120)
    rep = sup.report
    assert box["code"] == 0, rep["errors"]
    assert rep["curve_refused"].get("wrong_server_key", 0) >= 1, rep["curve_refused"]
    assert rep["commands"]["refused"] == 0  # nothing of the stranger's reached the gate


# -- validation ----------------------------------------------------------------

def _graph_with(write_graph, transport: dict, **kw):
    graph = synthetic_chain(**kw)
    graph["transport"] = transport
    return write_graph(graph)


def test_tcp_on_a_network_address_without_keys_is_refused_at_validation(write_graph):
    with pytest.raises(ConfigError) as exc:
        load_graph(_graph_with(write_graph, {"scheme": "tcp", "host": "10.1.2.3"}))
    text = str(exc.value)
    assert "rtneuro keys DIR" in text and "transport.keys" in text and "insecure: true" in text
    assert len([x for x in text.splitlines() if "tcp on 10.1.2.3" in x]) == 1
    # a process on another host counts as well
    graph = synthetic_chain()
    graph["transport"] = {"scheme": "tcp", "host": "127.0.0.1"}
    graph["processes"] = {"stimulate": {"launch": "remote", "host": "10.1.2.4"}}
    with pytest.raises(ConfigError, match="tcp on 10.1.2.4 without keys"):
        load_graph(write_graph(graph))


def test_insecure_or_loopback_tcp_is_allowed_with_a_warning(write_graph):
    g = load_graph(_graph_with(write_graph, {"scheme": "tcp", "host": "10.1.2.3", "insecure": True}))
    assert "isolated" in g.transport.security_warning()
    g = load_graph(_graph_with(write_graph, {"scheme": "tcp", "host": "127.0.0.1"}))
    assert "any user of this machine" in g.transport.security_warning()
    assert load_graph(_graph_with(write_graph, {"scheme": "ipc"})).transport.security_warning() is None


def test_keys_that_do_not_exist_or_leak_are_refused_at_validation(write_graph, tmp_path):
    with pytest.raises(ConfigError, match=r"create the keys with 'rtneuro keys .*nokeys'"):
        load_graph(_graph_with(write_graph, {"scheme": "tcp", "host": "10.1.2.3", "keys": "nokeys"}))
    keys = create_keys(tmp_path / "keys")
    g = load_graph(_graph_with(write_graph, {"scheme": "tcp", "host": "10.1.2.3", "keys": "keys"}))
    assert g.transport.keys == str(keys.directory)  # resolved against the graph file's folder
    os.chmod(keys.directory / SECRET_FILE, 0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_graph(_graph_with(write_graph, {"scheme": "tcp", "host": "10.1.2.3", "keys": "keys"}))


# -- ipc: owner-only files ---------------------------------------------------------

def test_ipc_socket_files_are_owner_only(tmp_path):
    ctx = zmq.Context.instance()
    pub = Publisher(ctx, f"ipc://{tmp_path}/p.pub", TransportParams(), inc=1)
    rx = CommandReceiver(ctx, f"ipc://{tmp_path}/p.cmd", TransportParams(), inc=1)
    assert _mode(tmp_path / "p.pub") == 0o600 and _mode(tmp_path / "p.cmd") == 0o600
    assert stat.S_ISSOCK(os.stat(tmp_path / "p.pub").st_mode)
    pub.close()
    rx.close()


def test_a_running_graph_keeps_its_run_folder_and_sockets_owner_only(write_graph, tmp_path, monkeypatch):
    monkeypatch.setenv("RTNEURO_RUNTIME_DIR", str(tmp_path / "runs"))
    sup, thread, box = start_graph(write_graph(synthetic_chain(speed="realtime", duration_s=30.0)))
    try:
        wait_running(sup)
        run_dir = sup.run_dir
        assert _mode(run_dir) == 0o700
        socks = sorted(p.name for p in run_dir.iterdir() if stat.S_ISSOCK(p.stat().st_mode))
        assert "ctl" in socks and "stimulate.cmd" in socks and "acquire.pub" in socks
        assert {p: oct(_mode(run_dir / p)) for p in socks} == {p: oct(0o600) for p in socks}
        assert _mode(tmp_path / "runs") == 0o700
        entries = list((tmp_path / "runs").glob("rtn-*.json"))
        assert len(entries) == 1 and _mode(entries[0]) == 0o600
        assert yaml.safe_load(entries[0].read_text())["run_dir"] == str(run_dir)
    finally:
        sup.stop()
        thread.join(30)
    assert box.get("code") == 0
    assert not run_dir.exists() and not list((tmp_path / "runs").glob("rtn-*.json"))


def test_a_client_with_a_wrong_server_key_is_counted_and_logged(deployment, caplog, monkeypatch):
    """Issue 13, finding 9: the README says a wrong server key is counted and logged; it was neither."""
    import rtneuro.security as security
    from rtneuro.ratelog import RateLog
    from rtneuro.security import security_stats

    monkeypatch.setattr(security, "_ratelog", RateLog(security.log))  # a fresh rate limit: this test's line is the first
    caplog.set_level(logging.WARNING, logger="rtneuro.security")
    ours, theirs = deployment  # theirs expects its own public key from the server: the wrong one
    ctx = zmq.Context()
    try:
        rx = CommandReceiver(ctx, "tcp://127.0.0.1:0", TransportParams(scheme="tcp", keys=str(ours.directory)), inc=9)
        rx.expect("ctl")
        pub = Publisher(ctx, "tcp://127.0.0.1:0", TransportParams(scheme="tcp", keys=str(ours.directory)), inc=9)
        tx = CommandSender(ctx, rx.endpoint, TransportParams(scheme="tcp", keys=str(theirs.directory)), inc=5, clock=lsl_clock)
        tx.send("ctl", _cmd(), heartbeat=False)
        t_end = time.monotonic() + 60
        while rx.security.get("wrong_server_key", 0) < 1 and time.monotonic() < t_end:
            time.sleep(0.01)
        assert rx.security["wrong_server_key"] >= 1 and pub.security["wrong_server_key"] == 0
        assert security_stats(ctx)["wrong_server_key"] >= 1 and refusals(ctx) >= 1
        lines = [r.getMessage() for r in caplog.records if "wrong server key" in r.getMessage()]
        assert len(lines) == 1 and rx.endpoint in lines[0] and "rtneuro keys" in lines[0]
        assert _received(rx, 0.2) == []
        tx.close()
        rx.close()
        pub.close()
    finally:
        stop_authenticator(ctx)
        ctx.destroy(linger=0)
