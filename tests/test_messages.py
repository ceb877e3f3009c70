"""The wire schema: round trips, and every kind of malformed message refused."""

from __future__ import annotations

import itertools

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtneuro.errors import SchemaError
from rtneuro.messages import (
    COMMAND_DTYPE,
    EVENT_DTYPE,
    SCHEMA_VERSION,
    Chunk,
    StreamMeta,
    decode,
    encode,
    encode_ack,
    encode_eos,
    encode_meta,
)
from rtneuro.transport import Subscriber, TransportParams


def _frames(arr=None, **header_changes):
    arr = np.arange(12, dtype="<f8").reshape(4, 3) if arr is None else arr
    frames = encode("sig", "eeg", 7, 99, Chunk(arr, 100, 12.5, 250.0, [["src", 1.0]]))
    if header_changes:
        h = msgpack.unpackb(frames[1])
        for k, v in header_changes.items():
            if v is KeyError:
                h.pop(k)
            else:
                h[k] = v
        frames[1] = msgpack.packb(h)
    return [bytes(memoryview(f)) if isinstance(f, np.ndarray) else f for f in frames]


def test_data_round_trip_keeps_every_field():
    x = np.random.default_rng(0).standard_normal((32, 8))
    frames = encode("sig", "eeg", 5, 1234, Chunk(x, 640, 100.25, 1000.0, [["src", 3.5]], {"k": [1, 2]}))
    assert frames[0] == b"sig.eeg"
    assert frames[2] is x  # zero-copy: the array itself goes to send_multipart
    msg = decode([bytes(memoryview(f)) if isinstance(f, np.ndarray) else f for f in frames])
    assert (msg.kind, msg.type, msg.stream, msg.seq, msg.inc) == ("sig", "data", "eeg", 5, 1234)
    assert msg.header["v"] == SCHEMA_VERSION
    ch = msg.chunk()
    np.testing.assert_array_equal(ch.data, x)
    assert (ch.first, ch.t0, ch.sfreq, ch.trace, ch.extra) == (640, 100.25, 1000.0, [["src", 3.5]], {"k": [1, 2]})
    assert not ch.data.flags.writeable  # a view on the received buffer


def test_non_contiguous_and_big_endian_payloads_are_sent_as_little_endian_c_arrays():
    x = np.arange(20, dtype=">f4").reshape(4, 5)[:, ::2]
    frames = encode("sig", "x", 0, 1, Chunk(x, 0, 0.0, 10.0, []))
    assert frames[2].flags.c_contiguous and frames[2].dtype.str == "<f4"
    np.testing.assert_array_equal(decode(_as_bytes(frames)).arrays[0], x)


def _as_bytes(frames):
    return [bytes(memoryview(f)) if isinstance(f, np.ndarray) else f for f in frames]


@pytest.mark.parametrize("dtype, name", [(EVENT_DTYPE, "event"), (COMMAND_DTYPE, "command")])
def test_structured_dtypes_travel_by_name(dtype, name):
    x = np.zeros(3, dtype=dtype)
    frames = encode("evt", "e", 0, 1, Chunk(x, 0, 0.0, 0.0, []))
    assert msgpack.unpackb(frames[1])["arrays"] == [[name, [3]]]
    assert decode(_as_bytes(frames)).arrays[0].dtype == dtype


def test_object_and_unknown_dtypes_cannot_be_sent():
    with pytest.raises(SchemaError):
        encode("sig", "x", 0, 1, Chunk(np.array([object()]), 0, 0.0, 1.0, []))


def test_meta_eos_and_ack_messages():
    meta = StreamMeta(name="eeg", kind="sig", sfreq=160.0, ch_names=("Oz", "Pz"), ch_types=("eeg", "eeg"),
                      units=("uV", "uV"), source="file", desc={"a": 1})
    m = decode(encode_meta(meta, 3))
    assert m.type == "meta" and m.header["meta"] == meta
    e = decode(encode_eos("sig", "eeg", 10, 3, 1600))
    assert e.type == "eos" and e.header["first"] == 1600 and e.seq == 10
    a = decode(encode_ack("ctl", 4, 3, ["accepted"], [""], 1.0))
    assert a.type == "ack" and a.header["x"]["status"] == ["accepted"]


BAD = {
    "one frame": ([b"sig.eeg"], "frames"),
    "no payload for announced array": (lambda f: f[:2], "frames"),
    "extra payload frame": (lambda f: [*f, b"x"], "frames"),
    "topic not ascii": (lambda f: [b"\xff\xfe", *f[1:]], "topic"),
    "topic without kind": (lambda f: [b"eeg", *f[1:]], "topic"),
    "unknown kind": (lambda f: [b"xyz.eeg", *f[1:]], "topic"),
    "garbage header": (lambda f: [f[0], b"\xc1\xc1\xc1", f[2]], "header"),
    "truncated header": (lambda f: [f[0], f[1][:-5], f[2]], "header"),
    "header not a map": (lambda f: [f[0], msgpack.packb([1, 2]), f[2]], "header"),
    "future schema": (lambda f: _frames(v=SCHEMA_VERSION + 1), "version"),
    "no schema": (lambda f: _frames(v=KeyError), "header"),
    "unknown type": (lambda f: _frames(type="pickle"), "field"),
    "stream mismatch": (lambda f: _frames(stream="other"), "field"),
    "seq not int": (lambda f: _frames(seq="7"), "field"),
    "negative first": (lambda f: _frames(first=-1), "field"),
    "nan t0": (lambda f: _frames(t0=float("nan")), "field"),
    "bad trace": (lambda f: _frames(trace=[["a"]]), "field"),
    "bad dtype": (lambda f: _frames(arrays=[["O", [4, 3]]]), "dtype"),
    "shape not list": (lambda f: _frames(arrays=[["<f8", 12]]), "shape"),
    "negative shape": (lambda f: _frames(arrays=[["<f8", [-4, -3]]]), "shape"),
    "size mismatch": (lambda f: _frames(arrays=[["<f8", [5, 3]]]), "size"),
    "truncated payload": (lambda f: [f[0], f[1], f[2][:-1]], "size"),
    "x not a map": (lambda f: _frames(x=[1]), "field"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_messages_are_refused_with_their_kind(case):
    make, kind = BAD[case]
    frames = make(_frames()) if callable(make) else make
    with pytest.raises(SchemaError) as err:
        decode(frames)
    assert err.value.kind == kind
    assert "\n" not in str(err.value)


def test_oversized_message_is_refused_before_parsing():
    frames = _frames(np.zeros((1000, 10)))
    with pytest.raises(SchemaError) as err:
        decode(frames, max_bytes=10_000)
    assert err.value.kind == "oversized"


def test_header_with_binary_blob_cannot_smuggle_objects():
    # msgpack ext types (which some libraries map to pickled objects) are refused
    h = msgpack.unpackb(_frames()[1])
    h["x"] = {"blob": msgpack.ExtType(42, b"\x80\x04")}
    frames = _frames()
    frames[1] = msgpack.packb(h)
    msg = decode(frames)  # ext types decode as inert ExtType values, never as objects
    assert isinstance(msg.header["x"]["blob"], msgpack.ExtType)


# -- a real receiver fed random frames never crashes and counts every rejection


@pytest.fixture(scope="module")
def socket_pair():
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = Subscriber(ctx, TransportParams(max_message_bytes=1 << 20))
    meta = StreamMeta(name="eeg", kind="sig", sfreq=250.0, ch_names=("a", "b", "c"), units=("uV",) * 3)
    sub.subscribe(meta.topic, meta)
    sub.connect(f"tcp://127.0.0.1:{port}")
    # wait for the subscription to reach the publisher
    import time

    for _ in range(200):
        pub.send_multipart(encode_eos("sig", "eeg", 0, 1, 0))
        time.sleep(0.01)
        if sub.socket.poll(0):
            sub.drain()
            break
    yield pub, sub
    pub.close(0)
    sub.close()


def _settle(sub, expect_total, timeout=2.0):
    import time

    t_end = time.monotonic() + timeout
    got = []
    while time.monotonic() < t_end:
        if sub.socket.poll(20):
            got.extend(sub.drain())
        counted = sub.streams[b"sig.eeg"].stats.invalid + sub.streams[b"sig.eeg"].stats.messages + len(
            [m for m in got if m.type == "eos"])
        if counted >= expect_total:
            break
    return got


frame_bytes = st.binary(min_size=0, max_size=64)
_marker_seq = itertools.count(1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tail=st.lists(frame_bytes, min_size=0, max_size=4),
    header=st.one_of(frame_bytes, st.dictionaries(st.sampled_from(["v", "type", "stream", "seq", "inc", "first", "sfreq", "t0", "arrays", "trace", "x"]),
                                                  st.one_of(st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=5),
                                                            st.lists(st.integers(-2, 4), max_size=3)), max_size=11).map(msgpack.packb)),
)
def test_random_frames_never_crash_a_receiver_and_every_rejection_is_counted(socket_pair, tail, header):
    pub, sub = socket_pair
    st_eeg = sub.streams[b"sig.eeg"].stats
    before_invalid, before_ok = st_eeg.invalid, st_eeg.messages
    pub.send_multipart([b"sig.eeg", header, *tail])
    # then one valid message as a marker that everything before it was handled
    valid = encode("sig", "eeg", next(_marker_seq), 12345, Chunk(np.zeros((2, 3)), 0, 0.0, 250.0, []))
    pub.send_multipart(_as_bytes(valid))
    _settle(sub, before_invalid + before_ok + 2)
    handled = (st_eeg.invalid - before_invalid) + (st_eeg.messages - before_ok)
    # the random message was either valid (counted as a message) or rejected (counted as invalid)
    assert handled == 2 or (handled == 1 and _is_harmless_eos(header, tail))
    assert st_eeg.messages - before_ok >= 1  # the valid marker still got through
    assert sum(sub.rejections.counts.values()) >= st_eeg.invalid


def _is_harmless_eos(header, tail):
    try:
        h = msgpack.unpackb(header)
    except Exception:
        return False
    return isinstance(h, dict) and h.get("type") in ("eos", "meta", "ack")


def test_wrong_channel_count_is_refused_and_counted(socket_pair):
    pub, sub = socket_pair
    stats = sub.streams[b"sig.eeg"].stats
    before = stats.invalid
    bad = encode("sig", "eeg", next(_marker_seq), 12345, Chunk(np.zeros((2, 5)), 2, 0.0, 250.0, []))
    pub.send_multipart(_as_bytes(bad))
    _settle(sub, stats.invalid + stats.messages + 1)
    assert stats.invalid == before + 1
    assert sub.rejections.counts.get("shape", 0) >= 1
