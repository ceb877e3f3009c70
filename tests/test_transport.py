"""ZeroMQ transport on real sockets: gaps, policies, late joiners, the command channel."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from rtneuro.errors import ConfigError
from rtneuro.messages import CMD_HOLD, CMD_LEVEL, Chunk, StreamMeta
from rtneuro.runtime.clock import lsl_clock
from rtneuro.safety import make_command
from rtneuro.transport import CommandReceiver, CommandSender, Publisher, Subscriber, TransportParams

META = StreamMeta(name="eeg", kind="sig", sfreq=100.0, ch_names=("a", "b"), units=("uV", "uV"))


def _chunk(k: int, n: int = 4) -> Chunk:
    return Chunk(np.full((n, 2), float(k)), k * n, k * n / 100.0, 100.0, [["src", lsl_clock()]])


def _connect(tmp_path, scheme="ipc", **params):
    ctx = zmq.Context.instance()
    tp = TransportParams(**params)
    ep = f"ipc://{tmp_path}/p.pub" if scheme == "ipc" else "tcp://127.0.0.1:0"
    pub = Publisher(ctx, ep, tp, inc=1)
    pub.announce(META)
    sub = Subscriber(ctx, tp)
    sub.subscribe(META.topic, META)
    sub.connect(pub.endpoint)
    _wait(lambda: pub.poll_subscriptions() or pub.subscriptions.get(META.topic, 0) >= 1)
    return pub, sub


def _wait(cond, timeout=5.0):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if cond():
            return True
        time.sleep(0.005)
    raise AssertionError("condition not met in time")


def _collect(sub, n, timeout=5.0):
    got = []

    def enough():
        if sub.socket.poll(10):
            got.extend(m for m in sub.drain() if m.type == "data")
        return len(got) >= n

    _wait(enough, timeout)
    return got


def test_a_subscriber_of_two_publishers_is_no_hostile_peer_to_either(tmp_path, caplog):
    # one SUB socket connected to two processes' publishers asks each of them for every topic it wants: a topic
    # the graph publishes elsewhere is refused quietly (counted), a topic nobody publishes is refused and logged
    ctx = zmq.Context.instance()
    other = StreamMeta(name="ctl", kind="cmd", sfreq=0.0, dtype="command")
    pub = Publisher(ctx, f"ipc://{tmp_path}/a.pub", TransportParams(), inc=1, topics=[META.topic], elsewhere=[META.topic, other.topic])
    pub.announce(META)
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    for t in (META.topic, other.topic, b"sig.nobody"):
        sub.setsockopt(zmq.SUBSCRIBE, t)
    sub.connect(pub.endpoint)
    with caplog.at_level("WARNING", logger="rtneuro.transport"):
        _wait(lambda: pub.poll_subscriptions() + 1 and pub.stats["subscriptions_refused"] >= 1 and pub.stats["subscriptions_elsewhere"] >= 1)
    assert pub.subscriptions == {META.topic: 1}
    assert pub.stats["subscriptions_elsewhere"] == 1 and pub.stats["subscriptions_refused"] == 1
    logged = [r.getMessage() for r in caplog.records if "refused a subscription" in r.getMessage()]
    assert len(logged) == 1 and "sig.nobody" in logged[0], logged
    sub.close()
    pub.close()


@pytest.mark.parametrize("scheme", ["ipc", "tcp"])
def test_data_flows_and_metadata_reaches_the_subscriber(tmp_path, scheme):
    pub, sub = _connect(tmp_path, scheme)
    for k in range(5):
        pub.publish("sig", "eeg", META.topic, _chunk(k))
    got = _collect(sub, 5)
    assert [m.seq for m in got] == [0, 1, 2, 3, 4]
    assert sub.streams[META.topic].meta == META  # re-announced to the new subscriber
    st = sub.stats(META.topic)
    assert (st.messages, st.samples, st.gaps, st.invalid) == (5, 20, 0, 0)
    pub.close()
    sub.close()


def test_a_stream_nobody_subscribes_is_not_encoded_and_a_later_subscriber_sees_no_gap(tmp_path):
    ctx = zmq.Context.instance()
    pub = Publisher(ctx, f"ipc://{tmp_path}/u.pub", TransportParams(), inc=1)
    pub.announce(META)
    for k in range(5):
        pub.publish("sig", "eeg", META.topic, _chunk(k))
    assert pub.stats["unsubscribed"] == 5  # nobody listens: not encoded, not sent
    sub = Subscriber(ctx, TransportParams())
    sub.subscribe(META.topic, META)
    sub.connect(pub.endpoint)
    _wait(lambda: pub.poll_subscriptions() or pub.subscriptions.get(META.topic, 0) >= 1)
    for k in range(5, 8):
        pub.publish("sig", "eeg", META.topic, _chunk(k))
    got = _collect(sub, 3)
    assert [m.seq for m in got] == [5, 6, 7] and pub.stats["unsubscribed"] == 5
    assert sub.stats(META.topic).gaps == 0 and sub.stats(META.topic).samples == 12  # it joined at seq 5: no gap
    pub.close()
    sub.close()


def test_a_late_joiner_gets_the_metadata_without_asking(tmp_path):
    pub, sub = _connect(tmp_path)
    ctx = zmq.Context.instance()
    late = Subscriber(ctx, TransportParams())
    late.subscribe(META.topic, META)
    late.connect(pub.endpoint)
    _wait(lambda: pub.poll_subscriptions() or pub.subscriptions.get(META.topic, 0) >= 2)
    pub.publish("sig", "eeg", META.topic, _chunk(0))
    _collect(late, 1)
    assert late.streams[META.topic].meta == META
    for s in (pub, sub, late):
        s.close()


def test_gaps_are_detected_from_seq_and_counted(tmp_path):
    pub, sub = _connect(tmp_path)
    pub.publish("sig", "eeg", META.topic, _chunk(0))
    pub._seq[META.topic] += 3  # three messages lost on the way
    pub.publish("sig", "eeg", META.topic, _chunk(4))
    _collect(sub, 2)
    st = sub.stats(META.topic)
    assert (st.gaps, st.lost, st.messages) == (1, 3, 2)
    pub.close()
    sub.close()


def test_a_restarted_publisher_is_recognised_not_counted_as_a_gap(tmp_path):
    pub, sub = _connect(tmp_path)
    pub.publish("sig", "eeg", META.topic, _chunk(0))
    _collect(sub, 1)
    pub.close()
    ctx = zmq.Context.instance()
    pub2 = Publisher(ctx, f"ipc://{tmp_path}/p.pub", TransportParams(), inc=2)
    pub2.announce(META)
    # (a SUB socket attaches the new connection when its owner next uses it)
    _wait(lambda: sub.socket.poll(0) is not None and (pub2.poll_subscriptions() or pub2.subscriptions.get(META.topic, 0) >= 1))
    pub2.publish("sig", "eeg", META.topic, _chunk(1))
    _collect(sub, 1)
    st = sub.stats(META.topic)
    assert st.restarts == 1 and st.gaps == 0
    pub2.close()
    sub.close()


def test_latest_policy_keeps_the_newest_and_counts_what_it_dropped(tmp_path):
    pub, sub = _connect(tmp_path, policy="latest", max_backlog=10, hwm=1000)
    for k in range(100):
        pub.publish("sig", "eeg", META.topic, _chunk(k))
    time.sleep(0.3)  # let everything queue up: a consumer that fell behind
    got = [m for m in sub.drain() if m.type == "data"]
    assert [m.seq for m in got] == list(range(90, 100))
    st = sub.stats(META.topic)
    assert st.dropped == 90 and st.gaps == 1 and st.messages == 10
    pub.close()
    sub.close()


def test_lossless_policy_blocks_the_publisher_instead_of_losing_data(tmp_path):
    pub, sub = _connect(tmp_path, policy="lossless", hwm=5)
    stalls = []

    def on_stall():
        stalls.append(1)
        if len(stalls) % 20 == 0:  # the consumer catches up now and then
            received.extend(m for m in sub.drain() if m.type == "data")
        return False

    received: list = []
    pub.on_stall = on_stall
    for k in range(200):
        pub.publish("sig", "eeg", META.topic, _chunk(k))
    received.extend(_collect(sub, 200 - len(received)))
    assert stalls, "a full queue must make the publisher wait"
    assert [m.seq for m in received] == list(range(200))
    st = sub.stats(META.topic)
    assert st.gaps == 0 and st.dropped == 0
    pub.close()
    sub.close()


def test_transport_params_are_checked():
    with pytest.raises(ConfigError, match="policy"):
        TransportParams(policy="fastest").check()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="hwm"):
        TransportParams(hwm=0).check()


# -- command channel ----------------------------------------------------------


def _cmd(kind=CMD_LEVEL, deadline_s=1.0):
    return Chunk(make_command(kind, 0, 1.0, 60.0, 130.0), 0, 0.0, 10.0, [["ctl", lsl_clock()]],
                 {"deadline": lsl_clock() + deadline_s})


def _channel(tmp_path, **params):
    ctx = zmq.Context.instance()
    tp = TransportParams(**params)
    rx = CommandReceiver(ctx, f"ipc://{tmp_path}/s.cmd", tp, inc=9)
    rx.expect("ctl")
    tx = CommandSender(ctx, rx.endpoint, tp, inc=5, clock=lsl_clock)
    return tx, rx


def _receive(rx, n, timeout=5.0):
    got = []

    def enough():
        if rx.socket.poll(10):
            got.extend(rx.drain())
        return len(got) >= n

    _wait(enough, timeout)
    return got


def test_each_command_is_acknowledged_with_the_decision(tmp_path):
    tx, rx = _channel(tmp_path)
    tx.send("ctl", _cmd(), heartbeat=False)
    tx.send("ctl", _cmd(CMD_HOLD), heartbeat=True)
    got = _receive(rx, 2)
    assert [m.seq for _, m in got] == [0, 1]
    for peer, m in got:
        rx.ack(peer, m, ["accepted"], [""], lsl_clock())
    _wait(lambda: tx.poll() is not None and not tx.pending)
    assert tx.stats.acked == 2 and tx.stats.sent == 1 and tx.stats.heartbeats == 1
    assert tx.stats.statuses == {"accepted": 2}
    tx.close()
    rx.close()


def test_a_command_without_ack_is_resent_and_never_applied_twice(tmp_path):
    tx, rx = _channel(tmp_path, ack_timeout_ms=20)
    tx.send("ctl", _cmd(deadline_s=5.0), heartbeat=False)
    first = _receive(rx, 1)
    time.sleep(0.05)
    tx.poll()  # overdue: re-sent
    assert tx.stats.resent >= 1
    time.sleep(0.05)
    assert rx.drain() == []  # the re-sent copy is recognised...
    assert rx.duplicates >= 1
    peer, m = first[0]
    rx.ack(peer, m, ["clipped"], ["amplitude: clipped"], lsl_clock())
    tx.send("ctl", _cmd(deadline_s=5.0), heartbeat=False)  # a new command still goes through
    assert [mm.seq for _, mm in _receive(rx, 1)] == [1]
    _wait(lambda: tx.poll() is not None and tx.stats.acked >= 1)
    assert tx.stats.statuses == {"clipped": 1}
    tx.close()
    rx.close()


def test_a_duplicate_of_an_acknowledged_command_is_answered_again(tmp_path):
    tx, rx = _channel(tmp_path, ack_timeout_ms=5000)  # no re-send of its own before the ack, however loaded the machine
    tx.send("ctl", _cmd(deadline_s=5.0), heartbeat=False)
    peer, m = _receive(rx, 1)[0]
    frames = tx.pending[("ctl", 0)][0]
    rx.ack(peer, m, ["refused"], ["lockout: too soon"], lsl_clock())
    _wait(lambda: tx.poll() is not None and not tx.pending)
    tx.socket.send_multipart(frames, copy=False)  # the same command again, as a re-send would
    time.sleep(0.05)
    assert rx.drain() == [] and rx.duplicates == 1
    acks = []
    _wait(lambda: bool(tx.socket.poll(10)) and (acks.append(tx.socket.recv_multipart()) or True))
    assert b"refused" in acks[0][1]


def test_a_command_nobody_acknowledges_is_reported_after_its_deadline(tmp_path):
    ctx = zmq.Context.instance()
    tx = CommandSender(ctx, f"ipc://{tmp_path}/nobody.cmd", TransportParams(ack_timeout_ms=10), inc=5, clock=lsl_clock)
    tx.send("ctl", _cmd(deadline_s=0.02), heartbeat=False)
    time.sleep(0.1)
    tx.poll()
    assert tx.stats.unacked == 1 and not tx.pending
    tx.close()


def test_the_command_receiver_refuses_data_that_is_not_a_command(tmp_path):
    tx, rx = _channel(tmp_path)
    from rtneuro.messages import encode

    frames = encode("cmd", "ctl", 0, 5, Chunk(np.zeros((2, 2)), 0, 0.0, 1.0, []))
    tx.socket.send_multipart(frames, copy=False)
    tx.socket.send_multipart([b"garbage"])
    time.sleep(0.1)
    assert rx.drain() == []
    assert rx.rejections.counts.get("dtype") == 1 and rx.rejections.total == 2
    assert rx.streams["ctl"].stats.invalid == 1
