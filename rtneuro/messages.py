"""The wire schema: what travels between rtneuro processes, and nothing else.

A message is a multipart ZeroMQ message::

    [topic, header, payload_0, payload_1, ...]

``topic``
    ASCII ``"<kind>.<stream>"`` where kind is one of ``sig`` (signals),
    ``feat`` (features), ``evt`` (events), ``cmd`` (commands) and ``ctl``
    (control). Subscribers match it exactly.
``header``
    msgpack map. Keys (schema version 1):

    ========  =========================================================
    ``v``     schema version (int); receivers refuse newer versions
    ``type``  ``"data"``, ``"meta"`` (stream metadata), ``"eos"`` (end of
              stream) or ``"ack"`` (command acknowledgement)
    ``stream`` stream name (the topic without its kind prefix)
    ``seq``   per-stream message counter, from 0 for each publisher
              incarnation; receivers detect gaps from it
    ``inc``   publisher incarnation (random 31-bit int chosen at start);
              a new value means the publisher restarted
    ``first`` index of the first sample in the stream (int)
    ``sfreq`` nominal sampling rate in Hz, 0.0 for irregular streams
    ``t0``    stream-clock time of the first sample (LSL clock live,
              virtual clock in replay)
    ``arrays`` list of ``[dtype, shape]``, one per payload frame
    ``trace`` list of ``[node, time]`` stamps on the LSL clock, one per
              hop; the first is the acquisition time of the newest sample
    ``x``     optional map of extras (command deadline and cause, ack
              status); msgpack scalars, lists and maps only
    ========  =========================================================

payload
    raw C-contiguous little-endian array buffers, sent without copying
    above pyzmq's copy threshold. ``dtype`` is a numpy type string such as
    ``"<f8"`` or the name of a registered structured dtype (``"event"``,
    ``"command"``).

Stream metadata (:class:`StreamMeta`: channel names, types, units, source) is
announced once in a ``"meta"`` message and re-announced whenever a subscriber
joins, never repeated in data messages.

Nothing here unpickles, evaluates or imports anything that came over a
socket: :func:`decode` checks every field and raises :class:`SchemaError` with
a short ``kind`` used for counting.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from .errors import SchemaError

__all__ = [
    "SCHEMA_VERSION",
    "KINDS",
    "MAX_MESSAGE_BYTES",
    "EVENT_DTYPE",
    "EVENT_LABEL_BYTES",
    "event_label",
    "make_events",
    "COMMAND_DTYPE",
    "CMD_HOLD",
    "CMD_LEVEL",
    "CMD_OFF",
    "CMD_PULSE",
    "CMD_TRAIN",
    "SHAPE_BIPHASIC_CATHODIC_FIRST",
    "SHAPE_BIPHASIC_ANODIC_FIRST",
    "SHAPE_MONOPHASIC_CATHODIC",
    "SHAPE_MONOPHASIC_ANODIC",
    "SHAPE_NAMES",
    "DECISION_DTYPE",
    "DECISION_STATUS",
    "Chunk",
    "Message",
    "StreamMeta",
    "encode",
    "encode_meta",
    "encode_eos",
    "encode_ack",
    "decode",
    "topic_for",
    "pack_control",
    "unpack_control",
]

SCHEMA_VERSION = 2  # 2: commands carry phase_shape and ramp_s
KINDS = ("sig", "feat", "evt", "cmd", "ctl")
MESSAGE_TYPES = ("data", "meta", "eos", "ack")
#: Default upper bound on the total size of one message (all frames).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_TRACE = 64
MAX_NDIM = 3
#: Most channel names (types, units) a stream's metadata may list.
MAX_CHANNELS = 65536

#: Longest event label kept, in UTF-8 bytes (longer ones are truncated).
EVENT_LABEL_BYTES = 64

#: One event (a marker, an annotation, a detected spike).
#: ``index`` is the sample index in the parent signal stream (or -1),
#: ``time`` its stream-clock time, ``code`` an integer (the stream's
#: ``event_id`` maps labels to codes), ``channel`` a channel index (or -1),
#: ``duration`` in seconds, ``value`` a free numeric payload (amplitude...),
#: ``label`` the text (UTF-8, at most 64 bytes): markers carry their string.
EVENT_DTYPE = np.dtype(
    [
        ("index", "<i8"),
        ("time", "<f8"),
        ("code", "<i4"),
        ("channel", "<i4"),
        ("duration", "<f8"),
        ("value", "<f8"),
        ("label", f"S{EVENT_LABEL_BYTES}"),
    ]
)


def event_label(raw: bytes) -> str:
    """The text of an event's ``label`` field."""
    return raw.decode("utf-8", "replace")


def make_events(rows: list[tuple]) -> np.ndarray:
    """Events from ``(index, time, code, channel, duration, value, label)`` tuples (label a str)."""
    out = np.zeros(len(rows), dtype=EVENT_DTYPE)
    for i, (index, t, code, channel, duration, value, label) in enumerate(rows):
        out[i] = (index, t, code, channel, duration, value, label.encode("utf-8")[:EVENT_LABEL_BYTES])
    return out

#: Command kinds.
CMD_HOLD = 0  # decision "no change": heartbeat that keeps the watchdog fed
CMD_LEVEL = 1  # continuous stimulation at the given waveform (on / change level)
CMD_OFF = 2  # stop continuous stimulation
CMD_PULSE = 3  # one pulse or trigger (TMS / TTL style)
CMD_TRAIN = 4  # a finite train of pulses

#: Pulse shapes (``phase_shape``). Biphasic pulses are charge-balanced (two equal phases).
SHAPE_BIPHASIC_CATHODIC_FIRST = 0
SHAPE_BIPHASIC_ANODIC_FIRST = 1
SHAPE_MONOPHASIC_CATHODIC = 2
SHAPE_MONOPHASIC_ANODIC = 3
SHAPE_NAMES = {0: "biphasic cathodic-first", 1: "biphasic anodic-first", 2: "monophasic cathodic", 3: "monophasic anodic"}

#: One stimulation command. Units are in the field names; ``pulse_width_us``
#: is per phase; ``ramp_s`` asks the gate to reach a new level over that long
#: (the profile's ramp rates apply in any case).
COMMAND_DTYPE = np.dtype(
    [
        ("kind", "u1"),
        ("channel", "<i2"),
        ("amplitude_ma", "<f8"),
        ("pulse_width_us", "<f8"),
        ("frequency_hz", "<f8"),
        ("duration_s", "<f8"),
        ("phase_shape", "u1"),
        ("ramp_s", "<f8"),
    ]
)

#: What the safety gate decided (``status`` of a :data:`DECISION_DTYPE` record).
DECISION_STATUS = {0: "accepted", 1: "clipped", 2: "refused", 3: "ramp", 4: "watchdog", 5: "estop", 6: "safe",
                   7: "device", 8: "estop_clear", 9: "disarm", 10: "arm", 11: "limit"}
DECISION_REASON_BYTES = 96

#: One decision of the safety gate: what it did, to which command (as delivered,
#: or as requested when refused), when, and why. ``cause_index`` is the index of
#: the command in its stream (-1 for the gate's own actions: ramp steps,
#: watchdog, safe state, emergency stop).
DECISION_DTYPE = np.dtype(
    [
        ("index", "<i8"),
        ("time", "<f8"),
        ("t_stream", "<f8"),
        ("status", "u1"),
        *[(n, COMMAND_DTYPE[n].str) for n in COMMAND_DTYPE.names or ()],
        ("cause_index", "<i8"),
        ("reason", f"S{DECISION_REASON_BYTES}"),
    ]
)

NAMED_DTYPES: dict[str, np.dtype] = {"event": EVENT_DTYPE, "command": COMMAND_DTYPE, "decision": DECISION_DTYPE}
SIMPLE_DTYPES = frozenset(
    ["<f4", "<f8", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "|b1"]
)
_DTYPE_CACHE: dict[str, np.dtype] = {s: np.dtype(s) for s in SIMPLE_DTYPES}
_DTYPE_CACHE.update(NAMED_DTYPES)
_NAME_OF_DTYPE: dict[np.dtype, str] = {d: n for n, d in NAMED_DTYPES.items()}
_NAME_OF_DTYPE.update({np.dtype(s): s for s in SIMPLE_DTYPES})


def topic_for(kind: str, stream: str) -> bytes:
    """Return the topic frame for ``stream`` of ``kind``."""
    return f"{kind}.{stream}".encode("ascii")


def dtype_name(dtype: np.dtype) -> str:
    """Wire name of a dtype: a registered structured name or a numpy type string."""
    name = _NAME_OF_DTYPE.get(dtype)
    if name is not None:
        return name
    dtype = dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype
    if dtype.str not in SIMPLE_DTYPES:
        raise SchemaError("dtype", f"dtype {dtype} cannot be sent; use one of {sorted(SIMPLE_DTYPES)} or a registered structured dtype")
    return dtype.str


@dataclass(slots=True)
class Chunk:
    """A block of samples (or events) as nodes see it, in process.

    Parameters
    ----------
    data : ndarray, shape (n_times, n_channels) or (n_events,)
        C-contiguous samples, or a structured array of events/commands.
    first : int
        Stream index of the first sample (for features: of the first frame).
    t0 : float
        Stream-clock time of the first sample.
    sfreq : float
        Nominal rate of ``data`` rows in Hz (0 for irregular streams).
    trace : list of (str, float)
        Hop stamps on the LSL clock; ``trace[0][1]`` is when the newest
        sample this chunk depends on was acquired.
    extra : dict or None
        Extras carried in the header's ``x`` map (commands: deadline, cause).
    """

    data: np.ndarray
    first: int
    t0: float
    sfreq: float
    trace: list
    extra: dict | None = None

    @property
    def n_times(self) -> int:
        return self.data.shape[0]


@dataclass(slots=True)
class Message:
    """A decoded, validated message (``data``: the first payload as a :class:`Chunk`)."""

    topic: str
    kind: str
    type: str
    stream: str
    seq: int
    inc: int
    header: dict
    arrays: list[np.ndarray]
    nbytes: int
    data: Chunk | None = None

    def chunk(self) -> Chunk:
        if self.data is None:
            raise SchemaError("field", f"{self.topic!r}: a {self.type!r} message carries no data")
        return self.data


@dataclass(frozen=True, slots=True)
class StreamMeta:
    """What a stream is: announced once, served to late joiners.

    Parameters
    ----------
    name : str
        Stream name, unique in a graph (``"eeg"``, ``"eeg.events"``).
    kind : str
        ``"sig"``, ``"feat"``, ``"evt"`` or ``"cmd"``.
    sfreq : float
        Nominal rate of rows in Hz; 0.0 for irregular streams.
    ch_names : tuple of str
        One name per column (empty for event and command streams).
    ch_types : tuple of str
        One MNE channel type per column (``"eeg"``, ``"misc"``...).
    units : tuple of str
        One unit per column (``"uV"``, ``"dB"``...).
    dtype : str
        Wire dtype name of the payload.
    source : str
        Human-readable origin (file, device, node type).
    event_id : dict
        For event streams, label -> code.
    desc : dict
        Free-form extras (msgpack-able).
    """

    name: str
    kind: str
    sfreq: float
    ch_names: tuple[str, ...] = ()
    ch_types: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    dtype: str = "<f8"
    source: str = ""
    event_id: dict = field(default_factory=dict)
    desc: dict = field(default_factory=dict)

    @property
    def n_channels(self) -> int:
        return len(self.ch_names)

    @property
    def topic(self) -> bytes:
        return topic_for(self.kind, self.name)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "sfreq": float(self.sfreq),
            "ch_names": list(self.ch_names),
            "ch_types": list(self.ch_types),
            "units": list(self.units),
            "dtype": self.dtype,
            "source": self.source,
            "event_id": dict(self.event_id),
            "desc": dict(self.desc),
        }

    @classmethod
    def from_dict(cls, d: Any) -> StreamMeta:
        """Build from a received map, checking every field."""
        if not isinstance(d, dict):
            raise SchemaError("meta", f"stream metadata must be a map, got {type(d).__name__}")
        try:
            for key in ("ch_names", "ch_types", "units"):
                if len(d.get(key, ())) > MAX_CHANNELS:
                    raise ValueError(f"{key} lists more than {MAX_CHANNELS} entries")
            meta = cls(
                name=_str(d["name"]),
                kind=_str(d["kind"]),
                sfreq=float(d["sfreq"]),
                ch_names=tuple(_str(c) for c in d.get("ch_names", ())),
                ch_types=tuple(_str(c) for c in d.get("ch_types", ())),
                units=tuple(_str(c) for c in d.get("units", ())),
                dtype=_str(d.get("dtype", "<f8")),
                source=_str(d.get("source", "")),
                event_id={_str(k): int(v) for k, v in dict(d.get("event_id", {})).items()},
                desc=dict(d.get("desc", {})),
            )
        except Exception as exc:  # noqa: BLE001 - anything from outside: OverflowError, RecursionError...
            raise SchemaError("meta", f"stream metadata is malformed ({type(exc).__name__}: {str(exc)[:80]}); "
                              "check the sender's StreamMeta") from None
        if meta.kind not in KINDS[:4]:
            raise SchemaError("meta", f"stream metadata has unknown kind {meta.kind!r}")
        if meta.dtype not in _DTYPE_CACHE:
            raise SchemaError("meta", f"stream metadata has unsupported dtype {meta.dtype!r}")
        if not (math.isfinite(meta.sfreq) and meta.sfreq >= 0):
            raise SchemaError("meta", f"stream metadata has invalid sfreq {meta.sfreq!r}")
        return meta


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {type(v).__name__}")
    return v


def _payload(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return np.ascontiguousarray(arr)


def encode(
    kind: str,
    stream: str,
    seq: int,
    inc: int,
    chunk: Chunk,
    topic: bytes | None = None,
    packer: msgpack.Packer | None = None,
) -> list:
    """Frames of a data message; send with ``send_multipart(frames, copy=False)``.

    The payload array is passed through (no copy) when it is already
    C-contiguous and little-endian. A long-lived ``packer`` (one per
    publisher) saves creating one per message.
    """
    data = chunk.data
    if not data.flags.c_contiguous or data.dtype.byteorder == ">":
        data = _payload(data)
    dname = _NAME_OF_DTYPE.get(data.dtype) or dtype_name(data.dtype)
    header = {
        "v": SCHEMA_VERSION,
        "type": "data",
        "stream": stream,
        "seq": seq,
        "inc": inc,
        "first": int(chunk.first),
        "sfreq": float(chunk.sfreq),
        "t0": float(chunk.t0),
        "arrays": [[dname, list(data.shape)]],
        "trace": chunk.trace,
    }
    if chunk.extra:
        header["x"] = chunk.extra
    return [topic or topic_for(kind, stream), packer.pack(header) if packer is not None else _packb(header), data]


def encode_meta(meta: StreamMeta, inc: int) -> list:
    header = {
        "v": SCHEMA_VERSION,
        "type": "meta",
        "stream": meta.name,
        "seq": -1,
        "inc": inc,
        "meta": meta.to_dict(),
        "arrays": [],
    }
    return [meta.topic, msgpack.packb(header)]


def encode_eos(kind: str, stream: str, seq: int, inc: int, next_index: int) -> list:
    """End of stream: no more data will follow; ``next_index`` samples were sent."""
    header = {
        "v": SCHEMA_VERSION,
        "type": "eos",
        "stream": stream,
        "seq": seq,
        "inc": inc,
        "first": int(next_index),
        "arrays": [],
    }
    return [topic_for(kind, stream), msgpack.packb(header)]


def encode_ack(stream: str, seq: int, inc: int, status: str, reason: str, t: float) -> list:
    """Acknowledgement of command ``seq`` of ``stream`` by the stimulate service."""
    header = {
        "v": SCHEMA_VERSION,
        "type": "ack",
        "stream": stream,
        "seq": seq,
        "inc": inc,
        "arrays": [],
        "x": {"status": status, "reason": reason, "t": t},
    }
    return [topic_for("ctl", stream), msgpack.packb(header)]


def _is_int(v: Any) -> bool:
    return type(v) is int


def _is_num(v: Any) -> bool:
    return (type(v) is float or type(v) is int) and math.isfinite(v)


_unpackb = msgpack.unpackb
_packb = msgpack.packb
_ndarray = np.ndarray


def decode(frames: list, max_bytes: int = MAX_MESSAGE_BYTES, topic: str | None = None) -> Message:
    """Validate and decode one received multipart message; only :class:`SchemaError` can come out.

    Parameters
    ----------
    frames : list of bytes or zmq.Frame
        As returned by ``recv_multipart`` (with or without ``copy=False``).
    max_bytes : int
        Messages larger than this (all frames together) are refused.
    topic : str or None
        The topic frame already decoded and matched by the caller (a
        subscriber that looked it up among its subscriptions); it is then
        not parsed again.

    Returns
    -------
    Message
        With payload arrays as read-only views on the received buffers.

    Raises
    ------
    SchemaError
        With ``kind`` one of ``frames``, ``topic``, ``header``, ``version``,
        ``field``, ``dtype``, ``shape``, ``size``, ``oversized``, ``meta``,
        or ``malformed`` for any other failure while decoding: decoding is
        total, whatever the bytes (a hypothesis fuzz test holds it to that).

    Notes
    -----
    This runs on every hop right after a process wakes up, when nothing is
    in the CPU caches, so it is written as straight-line checks on the
    common path, with the detailed wording only on the error paths.
    """
    try:
        return _decode(frames, max_bytes, topic)
    except SchemaError:
        raise
    except Exception as exc:  # noqa: BLE001 - every byte is untrusted: a counted rejection, never a crash
        raise SchemaError("malformed", f"message could not be decoded ({type(exc).__name__}: {str(exc)[:80]}); "
                          "the sender does not follow the rtneuro wire schema") from None


def _decode(frames: list, max_bytes: int, topic: str | None) -> Message:
    n = len(frames)
    if n < 2:
        raise SchemaError("frames", f"message has {n} frame(s); expected [topic, header, payload...]")
    nbytes = 0
    for f in frames:
        nbytes += len(f)
    if nbytes > max_bytes:
        raise SchemaError("oversized", f"message of {nbytes} bytes exceeds the limit of {max_bytes}; raise transport.max_message_bytes or send smaller chunks")
    if topic is None:
        try:
            topic = bytes(frames[0]).decode("ascii")
        except UnicodeDecodeError:
            raise SchemaError("topic", "topic frame is not ASCII") from None
    kind, dot, stream = topic.partition(".")
    if not dot or kind not in KINDS or not stream:
        raise SchemaError("topic", f"topic {topic[:40]!r} is not '<kind>.<stream>' with kind in {KINDS}")
    try:
        header = _unpackb(frames[1])  # msgpack >= 1.0: str keys, no raw bytes, map keys must be str/bytes
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise SchemaError("header", f"header of {topic!r} is not valid msgpack ({type(exc).__name__})") from None
    if type(header) is not dict:
        raise SchemaError("header", f"header of {topic!r} is not a map")
    get: Callable[[str], Any] = header.get  # values are checked one by one below
    v = get("v")
    if v != SCHEMA_VERSION or type(v) is not int:
        if not _is_int(v):
            raise SchemaError("header", f"header of {topic!r} has no schema version")
        if v > SCHEMA_VERSION:
            raise SchemaError("version", f"{topic!r} uses schema version {v}, newer than this rtneuro ({SCHEMA_VERSION}); upgrade rtneuro on this host")
        raise SchemaError("version", f"{topic!r} uses schema version {v}, older than supported ({SCHEMA_VERSION}); upgrade the sender")
    mtype = get("type")
    seq = get("seq")
    inc = get("inc")
    specs = get("arrays")
    if (get("stream") != stream or type(seq) is not int or type(inc) is not int
            or type(specs) is not list or mtype not in MESSAGE_TYPES):
        _header_problem(topic, stream, header)
    if len(specs) != n - 2:
        raise SchemaError("frames", f"{topic!r}: header announces {len(specs)} payload frame(s) but {n - 2} arrived")
    if mtype == "data":
        first = get("first")
        sfreq = get("sfreq")
        t0 = get("t0")
        trace = get("trace")
        if not (type(first) is int and first >= 0 and seq >= 0):
            raise SchemaError("field", f"{topic!r}: 'first' and 'seq' must be non-negative integers")
        if not (_is_num(sfreq) and sfreq >= 0 and _is_num(t0)):
            raise SchemaError("field", f"{topic!r}: 'sfreq' and 't0' must be finite numbers")
        if not specs:
            raise SchemaError("frames", f"{topic!r}: a data message needs at least one payload frame")
        if type(trace) is not list or len(trace) > MAX_TRACE:
            raise SchemaError("field", f"{topic!r}: 'trace' must be a list of at most {MAX_TRACE} stamps")
        for stamp in trace:
            if type(stamp) is not list or len(stamp) != 2 or type(stamp[0]) is not str or not _is_num(stamp[1]):
                raise SchemaError("field", f"{topic!r}: trace stamps must be [node, time]")
    elif mtype == "meta":
        header["meta"] = StreamMeta.from_dict(get("meta"))
    elif mtype == "eos" and not _is_int(get("first")):
        raise SchemaError("field", f"{topic!r}: end-of-stream needs 'first'")
    x = get("x")
    if x is not None and type(x) is not dict:
        raise SchemaError("field", f"{topic!r}: 'x' must be a map")
    arrays = []
    i = 2
    for spec in specs:
        if type(spec) is not list or len(spec) != 2:
            raise SchemaError("field", f"{topic!r}: array spec {i - 2} must be [dtype, shape]")
        dname, shape = spec
        dtype = _DTYPE_CACHE.get(dname) if type(dname) is str else None
        if dtype is None:
            raise SchemaError("dtype", f"{topic!r}: dtype {str(dname)[:40]!r} is not allowed; allowed: {sorted(_DTYPE_CACHE)}")
        if type(shape) is not list or not 1 <= len(shape) <= MAX_NDIM:
            raise SchemaError("shape", f"{topic!r}: shape {str(shape)[:40]} must be 1 to {MAX_NDIM} non-negative integers")
        expected = dtype.itemsize
        for d in shape:
            # each dimension bounded by the message limit: a shape such as [2**63, 0] has 0 bytes, but no array
            if type(d) is not int or not 0 <= d <= max_bytes:
                raise SchemaError("shape", f"{topic!r}: shape {str(shape)[:40]} must be 1 to {MAX_NDIM} integers in [0, {max_bytes}]")
            expected *= d
        buf = frames[i]
        if expected != len(buf):
            raise SchemaError("size", f"{topic!r}: payload {i - 2} has {len(buf)} bytes but dtype {dname} and shape {shape} need {expected}")
        arr = _ndarray(shape, dtype, buffer=buf)
        arrays.append(arr)
        i += 1
    if mtype == "data":
        data = Chunk(arrays[0], first, t0, sfreq, trace, x)
        return Message(topic, kind, mtype, stream, seq, inc, header, arrays, nbytes, data)
    return Message(topic, kind, mtype, stream, seq, inc, header, arrays, nbytes)


def _header_problem(topic: str, stream: str, header: dict) -> None:
    """Raise the precise error for a header whose common fields are wrong."""
    if header.get("type") not in MESSAGE_TYPES:
        raise SchemaError("field", f"{topic!r}: unknown message type {header.get('type')!r}")
    if header.get("stream") != stream:
        raise SchemaError("field", f"{topic!r}: header stream {header.get('stream')!r} does not match the topic")
    if not (_is_int(header.get("seq")) and _is_int(header.get("inc"))):
        raise SchemaError("field", f"{topic!r}: 'seq' and 'inc' must be integers")
    raise SchemaError("field", f"{topic!r}: 'arrays' must be a list")


# -- control channel (supervisor <-> services): msgpack maps, no arrays --------


def _plain_scalar(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def pack_control(msg: dict) -> bytes:
    """Encode a control-channel message (a msgpack map with an ``op`` key).

    NumPy scalars and arrays become plain numbers and lists; anything else
    msgpack cannot encode becomes its string: a status report never fails.
    """
    return msgpack.packb(msg, default=_plain_scalar)


def unpack_control(buf: Any) -> dict:
    """Decode a control-channel message; raise SchemaError if malformed."""
    try:
        msg = msgpack.unpackb(buf, raw=False, strict_map_key=True, max_bin_len=0, max_ext_len=0)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several unrelated types on garbage
        raise SchemaError("header", f"control message is not valid msgpack ({type(exc).__name__}); "
                          "send pack_control() output") from None
    if type(msg) is not dict or type(msg.get("op")) is not str:
        raise SchemaError("field", f"control message must be a map with a string 'op', got {type(msg).__name__}; "
                          "send pack_control() output")
    return msg
