"""Decoding is total: whatever the bytes, only a SchemaError (with a kind) can come out.

Issue 13, finding 2: a header declaring the shape ``[2**63, 0]`` made
``decode`` raise ValueError, and the service died. These tests feed
arbitrary frames (random bytes, random msgpack maps, valid headers with one
field replaced by an adversarial value) to every decoder of bytes from
outside: ``decode``, ``unpack_control`` and ``StreamMeta.from_dict``.
"""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtneuro.errors import SchemaError
from rtneuro.messages import (
    COMMAND_DTYPE,
    Chunk,
    StreamMeta,
    decode,
    encode,
    encode_eos,
    encode_meta,
    unpack_control,
)

#: Integers msgpack can carry, with the edges an attacker would try.
EDGE_INTS = st.sampled_from([0, 1, -1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)])
INTS = st.one_of(EDGE_INTS, st.integers(min_value=-(2**63), max_value=2**64 - 1))
FLOATS = st.one_of(st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -0.0, 5e-324]), st.floats())
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, st.text(max_size=20), st.binary(max_size=20))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
SHAPES = st.lists(st.one_of(EDGE_INTS, st.integers(-3, 8), FLOATS, st.text(max_size=3)), min_size=0, max_size=4)
DTYPES = st.sampled_from(["<f8", "<f4", "|u1", "command", "event", "decision", "object", "<c16", "O"])
KEYS = ["v", "type", "stream", "seq", "inc", "first", "sfreq", "t0", "arrays", "trace", "x", "meta"]


def _valid_headers() -> list[tuple[bytes, dict, list]]:
    """(topic, header, payloads) of one valid message of each type."""
    out = []
    x = np.zeros((4, 2))
    frames = encode("sig", "eeg", 3, 7, Chunk(x, 0, 1.0, 100.0, [["src", 1.0]], {"deadline": 2.0}))
    out.append((frames[0], msgpack.unpackb(frames[1]), [x.tobytes()]))
    cmd = np.zeros(1, dtype=COMMAND_DTYPE)
    frames = encode("cmd", "ctl", 0, 7, Chunk(cmd, 0, 1.0, 10.0, []))
    out.append((frames[0], msgpack.unpackb(frames[1]), [cmd.tobytes()]))
    meta = StreamMeta(name="eeg", kind="sig", sfreq=100.0, ch_names=("a", "b"), event_id={"x": 1})
    frames = encode_meta(meta, 7)
    out.append((frames[0], msgpack.unpackb(frames[1]), []))
    frames = encode_eos("sig", "eeg", 4, 7, 8)
    out.append((frames[0], msgpack.unpackb(frames[1]), []))
    return out


VALID = _valid_headers()


def _only_schema_errors(frames: list) -> None:
    try:
        decode(frames, max_bytes=1 << 20)
    except SchemaError as exc:
        assert isinstance(exc.kind, str) and exc.kind
        assert "\n" not in str(exc)


def _packb(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


@pytest.mark.parametrize("shape", [[2**63, 0], [0, 2**63], [2**64 - 1, 0], [2**62, 2**62, 0], [-1, 0]])
def test_a_huge_declared_shape_is_a_schema_error(shape):
    topic, header, _ = VALID[0]
    header = dict(header, arrays=[["<f8", shape]])
    with pytest.raises(SchemaError) as exc:
        decode([topic, _packb(header), b""])
    assert exc.value.kind == "shape" and "[0, " in str(exc.value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(st.binary(max_size=64), max_size=5))
def test_random_bytes_only_give_schema_errors(frames):
    _only_schema_errors(frames)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=st.sampled_from([b"sig.eeg", b"cmd.ctl", b"ctl.x", b"evt.e", b"x"]),
       header=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=12),
       payloads=st.lists(st.binary(max_size=32), max_size=3))
def test_random_msgpack_maps_only_give_schema_errors(topic, header, payloads):
    _only_schema_errors([topic, _packb(header), *payloads])


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(VALID) - 1), key=st.sampled_from(KEYS), value=VALUES,
       shape=SHAPES, dtype=DTYPES, mutate=st.sampled_from(["field", "array", "meta"]))
def test_a_valid_header_with_one_adversarial_field_only_gives_schema_errors(which, key, value, shape, dtype, mutate):
    topic, header, payloads = VALID[which]
    header = dict(header)
    if mutate == "field":
        header[key] = value
    elif mutate == "array":
        header["arrays"] = [[dtype, shape]] + header["arrays"][1:] if header["arrays"] else [[dtype, shape]]
        payloads = payloads or [b""]
    else:
        meta = dict(VALID[2][1]["meta"])
        meta[key if key in meta else "event_id"] = value
        header = dict(VALID[2][1], meta=meta)
        topic, payloads = VALID[2][0], []
    _only_schema_errors([topic, _packb(header), *payloads])


@settings(max_examples=300, deadline=None)
@given(d=st.one_of(VALUES, st.dictionaries(st.sampled_from(["name", "kind", "sfreq", "ch_names", "ch_types", "units",
                                                             "dtype", "source", "event_id", "desc"]), VALUES)))
def test_stream_meta_from_any_map_only_gives_schema_errors(d):
    base = StreamMeta(name="eeg", kind="sig", sfreq=100.0).to_dict()
    for candidate in (d, {**base, **d} if isinstance(d, dict) else d):
        try:
            StreamMeta.from_dict(candidate)
        except SchemaError as exc:
            assert exc.kind == "meta"


def test_stream_meta_with_an_infinite_event_code_is_a_schema_error():
    d = StreamMeta(name="e", kind="evt", sfreq=0.0).to_dict()
    d["event_id"] = {"x": float("inf")}
    with pytest.raises(SchemaError) as exc:
        StreamMeta.from_dict(d)
    assert exc.value.kind == "meta"


@settings(max_examples=300, deadline=None)
@given(buf=st.one_of(st.binary(max_size=64), VALUES.map(_packb)))
def test_control_messages_only_give_schema_errors(buf):
    try:
        msg = unpack_control(buf)
    except SchemaError as exc:
        assert exc.kind in ("header", "field")
    else:
        assert type(msg) is dict and type(msg["op"]) is str
