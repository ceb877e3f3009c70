"""The wire against hostile and faulty peers, on real sockets (issue 13, findings 2, 3, 6, 7, 12, time jumps).

Every test here failed on the code before the fix (checked against a
worktree of the previous commit); what each one covers is in its name and
docstring.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from rtneuro.messages import CMD_HOLD, CMD_LEVEL, Chunk, StreamMeta, encode, encode_eos, encode_meta
from rtneuro.safety import make_command
from rtneuro.transport import (
    MAX_PEERS,
    CommandReceiver,
    CommandSender,
    Publisher,
    Subscriber,
    TransportParams,
)

from conftest import ROOT

META = StreamMeta(name="eeg", kind="sig", sfreq=100.0, ch_names=("a", "b"), units=("uV", "uV"))
TIMEOUT_S = 60.0  # generous bound on every wait: the suite runs on busy machines


def _wait(cond, timeout=TIMEOUT_S, what="condition"):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if cond():
            return
        time.sleep(0.005)
    raise AssertionError(f"{what} not met within {timeout} s")


def _cmd(t0: float = 1.0, first: int = 0, kind: int = CMD_LEVEL, sfreq: float = 0.0) -> Chunk:
    rec = make_command(kind, 0, 1.0, 60.0, 130.0) if kind == CMD_LEVEL else make_command(kind)
    return Chunk(rec, first, t0, sfreq, [["ctl", 1.0]], {"deadline": time.monotonic() + 30.0})


def _dealer(ctx, endpoint, identity: bytes | None = None) -> zmq.Socket:
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    if identity is not None:
        s.setsockopt(zmq.ROUTING_ID, identity)
    s.connect(endpoint)
    return s


def _drain_until(rx: CommandReceiver, cond, what: str) -> list:
    got: list = []

    def check():
        if rx.socket.poll(10):
            got.extend(rx.drain())
        return cond(got)

    _wait(check, what=what)
    return got


def _frames_bytes(frames: list) -> list:
    return [bytes(memoryview(f)) if isinstance(f, np.ndarray) else f for f in frames]


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
def pubsub(tmp_path, ctx):
    tp = TransportParams()
    pub = Publisher(ctx, f"ipc://{tmp_path}/p.pub", tp, inc=1)
    pub.announce(META)
    sub = Subscriber(ctx, tp)
    sub.subscribe(META.topic, META)
    sub.connect(pub.endpoint)
    _wait(lambda: pub.poll_subscriptions() or pub.subscriptions.get(META.topic, 0) >= 1, what="subscription")
    yield pub, sub
    sub.close()
    pub.close()


def _receive(sub: Subscriber, until) -> list:
    got: list = []

    def check():
        if sub.socket.poll(10):
            got.extend(sub.drain())
        return until(got)

    _wait(check, what="messages")
    return got


# -- finding 2: one message must not crash a service ---------------------------------

def _huge_shape(topic: bytes, stream: str, dtype: str) -> list:
    header = {"v": 2, "type": "data", "stream": stream, "seq": 0, "inc": 7, "first": 0, "sfreq": 0.0, "t0": 1.0,
              "arrays": [[dtype, [2**63, 0]]], "trace": []}
    return [topic, msgpack.packb(header), b""]


def test_a_huge_declared_shape_is_counted_by_a_command_receiver_which_goes_on(tmp_path, ctx):
    rx = CommandReceiver(ctx, f"ipc://{tmp_path}/rx", TransportParams(), inc=1)
    rx.expect("ctl")
    attacker = _dealer(ctx, rx.endpoint)
    for _ in range(4):  # four such messages ended the run before
        attacker.send_multipart(_huge_shape(b"cmd.ctl", "ctl", "command"))
    attacker.send_multipart(_frames_bytes(encode("cmd", "ctl", 0, 7, _cmd())))
    got = _drain_until(rx, lambda g: len(g) >= 1, "the valid command after the garbage")
    assert [m.seq for _, m in got] == [0]
    assert rx.rejections.counts == {"shape": 4}
    assert rx.streams["ctl"].stats.invalid == 4


def test_a_huge_declared_shape_is_counted_by_a_subscriber_which_goes_on(pubsub):
    pub, sub = pubsub
    for _ in range(4):
        pub.socket.send_multipart(_huge_shape(META.topic, "eeg", "<f8"))
    pub.publish("sig", "eeg", META.topic, Chunk(np.zeros((4, 2)), 0, 0.0, 100.0, []))
    got = _receive(sub, lambda g: any(m.type == "data" for m in g))
    assert [m.seq for m in got] == [0]
    assert sub.rejections.counts == {"shape": 4} and sub.stats(META.topic).invalid == 4


# -- finding 3: control messages only from the stream's publisher ----------------------

def test_a_forged_eos_from_another_sender_does_not_end_command_input(tmp_path, ctx):
    rx = CommandReceiver(ctx, f"ipc://{tmp_path}/rx", TransportParams(), inc=1)
    rx.expect("ctl", publisher="control")
    tx = CommandSender(ctx, rx.endpoint, TransportParams(), inc=5, clock=time.monotonic, identity=b"control:5")
    tx.send("ctl", _cmd(), heartbeat=False)
    got = _drain_until(rx, lambda g: len(g) == 1, "the controller's command")
    assert got[0][0] == b"control:5" and rx.current_publisher("ctl") == b"control:5"
    # forgers: anonymous, another process's name, the publisher's name with garbage, and a
    # command and eos from a peer named like the publisher but not the last sender
    forgers = [_dealer(ctx, rx.endpoint), _dealer(ctx, rx.endpoint, b"evil:5"), _dealer(ctx, rx.endpoint, b"control:5x"),
               _dealer(ctx, rx.endpoint, b"control")]
    for s in forgers:
        s.send_multipart(encode_eos("cmd", "ctl", 1, 5, 1))
        s.send_multipart(_frames_bytes(encode("cmd", "ctl", 1, 5, _cmd())))
    restarted = _dealer(ctx, rx.endpoint, b"control:6")  # named like the publisher, but did not send the last command
    restarted.send_multipart(encode_eos("cmd", "ctl", 0, 6, 1))
    tx.send("ctl", _cmd(), heartbeat=True)
    # connections are fair-queued: wait for every forgery (which may come after the marker) and the marker
    got = _drain_until(rx, lambda g: rx.stats["forged"] >= 9 and any(p == b"control:5" and m.seq == 1 for p, m in g),
                       "the forgeries and the marker")
    assert [(p, m.type) for p, m in got] == [(b"control:5", "data")]
    st = rx.streams["ctl"].stats
    assert not st.eos and st.forged == 9 and rx.stats["forged"] == 9 and rx.rejections.counts == {"forged": 9}
    # the publisher's own end of stream is honoured
    tx.end("ctl", 2)
    got = _drain_until(rx, lambda g: len(g) == 1, "the real end of stream")
    assert got[0][1].type == "eos" and rx.streams["ctl"].stats.eos


def test_without_a_named_publisher_eos_counts_only_from_the_last_commands_sender(tmp_path, ctx):
    rx = CommandReceiver(ctx, f"ipc://{tmp_path}/rx", TransportParams(), inc=1)
    rx.expect("ctl")
    early = _dealer(ctx, rx.endpoint)
    early.send_multipart(encode_eos("cmd", "ctl", 0, 5, 0))  # before any command: nobody's to end
    tx = CommandSender(ctx, rx.endpoint, TransportParams(), inc=5, clock=time.monotonic)
    tx.send("ctl", _cmd(), heartbeat=False)
    _drain_until(rx, lambda g: len(g) == 1, "the command")
    forger = _dealer(ctx, rx.endpoint)
    forger.send_multipart(encode_eos("cmd", "ctl", 1, 5, 1))  # same header inc, another peer
    tx.send("ctl", _cmd(), heartbeat=True)
    _drain_until(rx, lambda g: len(g) == 1 and rx.stats["forged"] >= 2, "the forgeries and the marker")
    assert not rx.streams["ctl"].stats.eos and rx.stats["forged"] == 2


def test_a_subscriber_honours_eos_and_meta_only_from_the_incarnation_that_sends_the_data(pubsub):
    pub, sub = pubsub
    pub.publish("sig", "eeg", META.topic, Chunk(np.zeros((4, 2)), 0, 0.0, 100.0, []))
    _receive(sub, lambda g: len(g) == 1)
    other = StreamMeta(name="eeg", kind="sig", sfreq=999.0, ch_names=("a", "b"))
    pub.socket.send_multipart(encode_eos("sig", "eeg", 1, 666, 4))  # another incarnation ends the stream
    pub.socket.send_multipart(encode_meta(other, 666))  # ... and re-describes it
    pub.publish("sig", "eeg", META.topic, Chunk(np.zeros((4, 2)), 4, 0.04, 100.0, []))
    got = _receive(sub, lambda g: len(g) == 1)
    st = sub.stats(META.topic)
    assert [m.type for m in got] == ["data"] and not st.eos and st.forged == 1
    assert sub.streams[META.topic].meta.sfreq == 100.0  # not applied: that incarnation sent no data
    # a genuine restart: the new incarnation's metadata applies once its data arrives
    pub.socket.send_multipart(encode_meta(other, 777))
    pub.socket.send_multipart(_frames_bytes(encode("sig", "eeg", 0, 777, Chunk(np.zeros((4, 2)), 0, 0.0, 100.0, []))))
    _receive(sub, lambda g: len(g) == 1)
    assert sub.streams[META.topic].meta.sfreq == 999.0 and st.restarts == 1
    pub.socket.send_multipart(encode_eos("sig", "eeg", 1, 777, 4))
    got = _receive(sub, lambda g: len(g) == 1)
    assert got[0].type == "eos" and st.eos


# -- finding 6: per-peer state is bounded ------------------------------------------------

_FLOODED_PUBLISHER = r"""
import json, sys, time, zmq
from rtneuro.transport import Publisher, TransportParams
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
n = int(sys.argv[2])
ctx = zmq.Context()
pub = Publisher(ctx, sys.argv[1], TransportParams(), inc=1, topics=[b"sig.eeg"])
print("ready", flush=True)
base = peak = rss_mb()
t_end = time.monotonic() + 240
told = False
while pub.stats["subscriptions_released"] < n and time.monotonic() < t_end:
    if pub.socket.poll(50):
        pub.poll_subscriptions()
        peak = max(peak, rss_mb())
    if not told and pub.stats["subscriptions_refused"] >= n and pub.subscriptions.get(b"sig.eeg"):
        print("flooded", flush=True)
        told = True
print(json.dumps({"base": base, "peak": peak, "end": rss_mb(), "stats": pub.stats,
                  "subscriptions": {k.decode(): v for k, v in pub.subscriptions.items()}}), flush=True)
"""


def test_a_subscription_flood_is_refused_and_its_memory_returned(tmp_path):
    """100,000 distinct subscriptions: none tracked, none matched, RSS back near its start after they leave."""
    n = 100_000
    endpoint = f"ipc://{tmp_path}/flood.pub"
    child = subprocess.Popen([sys.executable, "-c", _FLOODED_PUBLISHER, endpoint, str(n)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.linger = 0
        sub.sndhwm = 0  # every subscription reaches the publisher
        sub.connect(endpoint)
        for i in range(n):
            sub.setsockopt(zmq.SUBSCRIBE, b"sig.%032x" % i + os.urandom(4).hex().encode())
        legit = ctx.socket(zmq.SUB)
        legit.setsockopt(zmq.SUBSCRIBE, b"sig.eeg")
        legit.connect(endpoint)
        # the attacker leaves once the publisher has read every subscription (and the legitimate one)
        assert child.stdout.readline().strip() == "flooded"
        sub.close()
        out, _ = child.communicate(timeout=280)
        legit.close(0)
        ctx.term()
    finally:
        if child.poll() is None:
            child.kill()
    rep = json.loads(out.strip().splitlines()[-1])
    assert rep["stats"]["subscriptions_refused"] == rep["stats"]["subscriptions_released"] == n
    assert rep["subscriptions"] == {"sig.eeg": 1}
    assert rep["end"] - rep["base"] < 20.0, rep  # libzmq's per-peer trie (~150 MB at the peak) was given back


def test_fresh_command_sender_identities_cost_no_memory(tmp_path, ctx):
    """40,000 fresh (identity, incarnation) pairs: the dedup table keeps the most recent MAX_PEERS."""
    rx = CommandReceiver(ctx, f"ipc://{tmp_path}/rx", TransportParams(hwm=100_000), inc=1)
    rx.expect("ctl")
    n = 40_000
    s = _dealer(ctx, rx.endpoint)
    s.sndhwm = 0
    frames = _frames_bytes(encode("cmd", "ctl", 0, 0, _cmd()))
    for inc in range(n):  # one socket, a fresh incarnation per message: a fresh table key each
        h = msgpack.unpackb(frames[1])
        h["inc"] = inc
        s.send_multipart([frames[0], msgpack.packb(h), frames[2]])
    got = _drain_until(rx, lambda g: len(g) >= n, "every command")
    assert len(got) == n
    assert rx.stats["evicted"] == n - MAX_PEERS
    # the most recent sender is still de-duplicated
    h["inc"] = n - 1
    s.send_multipart([frames[0], msgpack.packb(h), frames[2]])
    s2 = CommandSender(ctx, rx.endpoint, TransportParams(), inc=5, clock=time.monotonic)
    s2.send("ctl", _cmd(), heartbeat=False)
    got = _drain_until(rx, lambda g: any(m.inc == 5 for _, m in g) and rx.duplicates >= 1, "the duplicate and a marker")
    assert [m.inc for _, m in got] == [5] and rx.duplicates == 1


def test_with_a_named_publisher_strangers_leave_no_state(tmp_path, ctx):
    rx = CommandReceiver(ctx, f"ipc://{tmp_path}/rx", TransportParams(), inc=1)
    rx.expect("ctl", publisher="control")
    strangers = [_dealer(ctx, rx.endpoint, f"x{i}:1".encode()) for i in range(200)]
    for s in strangers:
        s.send_multipart(_frames_bytes(encode("cmd", "ctl", 0, 1, _cmd())))
    tx = CommandSender(ctx, rx.endpoint, TransportParams(), inc=5, clock=time.monotonic, identity=b"control:5")
    _wait(lambda: (rx.socket.poll(10) and rx.drain() and False) or rx.stats["forged"] == 200, what="200 refusals")
    tx.send("ctl", _cmd(), heartbeat=False)
    got = _drain_until(rx, lambda g: len(g) == 1, "the publisher's command")
    assert got[0][0] == b"control:5" and rx.stats["evicted"] == 0 and rx.rejections.counts == {"forged": 200}


# -- finding 7: logs about input are rate-limited by reason ------------------------------

def test_varied_garbage_logs_a_bounded_number_of_lines(tmp_path, ctx, caplog):
    caplog.set_level(logging.WARNING, logger="rtneuro.transport")
    rx = CommandReceiver(ctx, f"ipc://{tmp_path}/rx", TransportParams(), inc=1)
    rx.expect("ctl")
    s = _dealer(ctx, rx.endpoint)
    n = 500
    frames = _frames_bytes(encode("cmd", "ctl", 0, 0, _cmd()))
    for i in range(n):
        s.send_multipart([f"cmd.random{i}".encode(), b"\xc1garbage"])  # a fresh topic each time
        h = msgpack.unpackb(frames[1])
        h["inc"] = 1000 + i  # a fresh "incarnation" each time: a restart each
        s.send_multipart([frames[0], msgpack.packb(h), frames[2]])
    _drain_until(rx, lambda g: len(g) >= n, "the commands")
    assert rx.rejections.counts == {"header": n} and rx.streams["ctl"].stats.restarts == n - 1
    lines = [r.getMessage() for r in caplog.records]
    assert sum("dropped a message" in x for x in lines) == 1
    assert sum("publisher restarted" in x for x in lines) == 1
    assert rx.rejections.log.totals == {"header": n} and rx.log.totals["restart"] == n - 1


def test_unacknowledged_commands_log_one_error_line_per_interval(tmp_path, ctx, caplog):
    caplog.set_level(logging.WARNING, logger="rtneuro.transport")
    now = [0.0]
    tx = CommandSender(ctx, f"ipc://{tmp_path}/nobody", TransportParams(), inc=5, clock=lambda: now[0])
    for _ in range(300):
        c = _cmd()
        c.extra = {"deadline": 1.0}
        tx.send("ctl", c, heartbeat=False)
    now[0] = 10.0
    tx.poll()
    assert tx.stats.unacked == 300 and not tx.pending
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "not acknowledged" in errors[0].getMessage()


# -- finding 12: no send blocks ----------------------------------------------------------

def _in_thread(fn) -> None:
    """Run ``fn`` in a thread; fail (rather than hang) if it does not return within TIMEOUT_S."""
    done = threading.Event()
    errors: list = []

    def run():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(TIMEOUT_S), "a send blocked"
    if errors:
        raise errors[0]


def test_commands_to_an_unreachable_stimulator_never_block_and_are_delivered_later(tmp_path, ctx):
    endpoint = f"ipc://{tmp_path}/later"
    tx = CommandSender(ctx, endpoint, TransportParams(hwm=10), inc=5, clock=time.monotonic, identity=b"control:5")
    n = 50  # five times the high-water mark

    def send_all():
        for k in range(n):
            tx.send("ctl", _cmd(first=k), heartbeat=False)
        tx.end("ctl", n)

    _in_thread(send_all)
    assert tx.stats.blocked > 0 and len(tx.pending) == n
    rx = CommandReceiver(ctx, endpoint, TransportParams(), inc=1)
    rx.expect("ctl", publisher="control")
    got: list = []

    def delivered():
        tx.poll()
        if rx.socket.poll(10):
            for peer, msg in rx.drain():
                got.append(msg)
                if msg.type == "data":
                    rx.ack(peer, msg, ["accepted"], [""], 0.0)
        return not tx.pending and any(m.type == "eos" for m in got)

    _wait(delivered, what="every command acknowledged")
    assert sorted(m.seq for m in got if m.type == "data") == list(range(n)) and tx.stats.acked == n


def test_a_command_over_a_curve_handshake_that_never_completes_does_not_block(tmp_path, ctx):
    from rtneuro.security import create_keys

    ours, theirs = create_keys(tmp_path / "ours"), create_keys(tmp_path / "theirs")
    rx = CommandReceiver(ctx, "tcp://127.0.0.1:0", TransportParams(scheme="tcp", keys=str(ours.directory)), inc=1)
    rx.expect("ctl")
    tx = CommandSender(ctx, rx.endpoint, TransportParams(scheme="tcp", keys=str(theirs.directory), hwm=5), inc=5,
                       clock=time.monotonic)

    def send_all():
        for k in range(50):
            tx.send("ctl", _cmd(first=k), heartbeat=False)
            tx.poll()
        tx.end("ctl", 50)

    _in_thread(send_all)
    assert tx.stats.blocked > 0
    rx.socket.poll(100)
    assert rx.drain() == []
    tx.close()
    rx.close()


# -- stream time: discontinuities are counted, messages still delivered -------------------

def test_stream_time_that_jumps_or_goes_back_is_counted_as_a_discontinuity(pubsub):
    pub, sub = pubsub
    t0s = [0.0, 0.04, 0.08, 300.0, 0.16, 0.20]  # a jump of 300 s, then back
    for k, t0 in enumerate(t0s):
        pub.publish("sig", "eeg", META.topic, Chunk(np.zeros((4, 2)), 4 * k, t0, 100.0, []))
    got = _receive(sub, lambda g: len(g) == len(t0s))
    st = sub.stats(META.topic)
    assert [m.data.t0 for m in got] == t0s  # delivered all the same
    assert st.discontinuities == 2 and st.as_dict()["discontinuities"] == 2 and st.gaps == 0
    assert sub.log.totals["discontinuity"] == 2


def test_a_command_heartbeat_far_in_the_future_or_back_in_time_is_counted(tmp_path, ctx):
    rx = CommandReceiver(ctx, f"ipc://{tmp_path}/rx", TransportParams(), inc=1)
    rx.expect("ctl", publisher="control")
    tx = CommandSender(ctx, rx.endpoint, TransportParams(), inc=5, clock=time.monotonic, identity=b"control:5")
    # irregular stream: forward steps of any size are fine, only going back is counted
    for k, t0 in enumerate([1.0, 2.0, 50.0, 49.0, 51.0]):
        tx.send("ctl", _cmd(t0=t0, first=k, kind=CMD_HOLD), heartbeat=True)
    # a regular one (sfreq 10 Hz, first = frame index): a heartbeat 300 s ahead of its frame
    for k, t0 in enumerate([60.0, 60.1, 360.2, 360.3]):
        tx.send("ctl", _cmd(t0=t0, first=100 + k, kind=CMD_HOLD, sfreq=10.0), heartbeat=True)
    got = _drain_until(rx, lambda g: len(g) == 9, "every heartbeat")
    assert len(got) == 9 and rx.streams["ctl"].stats.discontinuities == 2
