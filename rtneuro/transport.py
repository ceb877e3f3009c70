"""ZeroMQ transport: data over PUB/SUB, commands over DEALER/ROUTER.

Data streams
    Each process binds one ``XPUB`` socket and publishes every stream that
    another process (or the recorder) consumes. ``XPUB`` rather than ``PUB``
    so that the publisher *sees* subscriptions: it re-announces a stream's
    metadata to each new subscriber (late joiners get it without asking), and
    the runtime starts data only once every expected subscriber is connected
    (no slow-joiner loss at start). Consumers connect one ``SUB`` socket to
    the publishers they need and subscribe to exact topics.

High-water-mark policy (``transport.policy``)
    ``latest`` (default, for real-time loops): bounded queues. A consumer that
    falls behind drains its queue and keeps only the newest
    ``max_backlog`` messages per stream; the older ones are dropped and
    counted as a gap. ZeroMQ's own ``hwm`` bounds memory; messages it drops
    also show as gaps. Decisions are made on fresh data, never on a backlog.
    ``lossless`` (recording, replay as fast as possible): the publisher sets
    ``XPUB_NODROP`` and blocks when a subscriber's queue is full, so a slow
    consumer slows the producer down instead of losing data.

Gap detection
    ``seq`` counts messages per stream and publisher incarnation (``inc``).
    A jump is a gap; a new ``inc`` is a publisher restart.

Commands
    Not PUB/SUB: a controller's ``DEALER`` sends each command with a sequence
    number and a deadline to the stimulate service's ``ROUTER``, which answers
    every command with an acknowledgement (accepted, clipped, refused or
    expired, and why). Unacknowledged commands are re-sent until their
    deadline; the receiver recognises re-sent sequence numbers and answers
    them again without applying them twice.

Endpoints
    ``ipc://`` on one host (files in the run directory, removed at exit) and
    ``tcp://`` across hosts.

Security (see :mod:`rtneuro.security`)
    ``ipc://`` socket files are made ``0600`` when bound, in a ``0700`` run
    folder. Over ``tcp://`` with ``transport.keys``, every bound socket is a
    CURVE server accepting only the keys of the folder's ``authorized`` file
    and every connecting socket a CURVE client. Without keys, tcp is refused
    at validation unless every address is a loopback one (then a warning:
    any local user can connect) or ``transport.insecure: true`` says the
    network is an isolated lab network.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import msgpack
import zmq

from .errors import ConfigError, SchemaError
from .messages import (
    MAX_MESSAGE_BYTES,
    Chunk,
    Message,
    StreamMeta,
    decode,
    encode,
    encode_ack,
    encode_eos,
    encode_meta,
)
from .security import (
    Keys,
    curve_client,
    curve_server,
    is_loopback,
    keys_problem,
    load_keys,
    release_server,
    secure_ipc,
)

__all__ = [
    "TransportParams",
    "RecvStats",
    "Rejections",
    "Publisher",
    "Subscriber",
    "CommandSender",
    "CommandReceiver",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportParams:
    """The ``transport:`` section of a graph configuration.

    Parameters
    ----------
    scheme : {"ipc", "tcp"}
        ``ipc`` between processes of one host, ``tcp`` across hosts.
    host : str
        Address tcp sockets bind to and connect to.
    base_port : int
        First tcp port; each process uses two consecutive ports. 0 picks
        free ports.
    policy : {"latest", "lossless"}
        High-water-mark policy, see the module documentation. Replays run
        as fast as possible (``--speed max``) always use ``lossless``.
    hwm : int
        ZeroMQ high-water mark (messages) of every data socket.
    max_backlog : int
        With ``latest``: the most messages per stream a consumer keeps when
        it finds a backlog; older ones are dropped and counted.
    max_message_bytes : int
        Larger messages are refused by receivers (and by ZeroMQ).
    copy_threshold : int
        Frames smaller than this are copied when sent (cheaper for small
        payloads); larger ones are sent without copying.
    ack_timeout_ms : float
        A command without acknowledgement after this long is re-sent (until
        its deadline).
    keys : str or None
        tcp: folder made by ``rtneuro keys DIR``; every socket then uses
        CURVE authentication and encryption (ignored with ipc, whose socket
        files are owner-only). Relative to the graph file.
    insecure : bool
        tcp without keys on addresses other hosts can reach: anyone on the
        network could send stimulation commands. Only for an isolated lab
        network; refused at validation unless set.
    """

    scheme: Literal["ipc", "tcp"] = "ipc"
    host: str = "127.0.0.1"
    base_port: int = 0
    policy: Literal["latest", "lossless"] = "latest"
    hwm: int = 1000
    max_backlog: int = 64
    max_message_bytes: int = MAX_MESSAGE_BYTES
    copy_threshold: int = 65536
    ack_timeout_ms: float = 100.0
    keys: str | None = None
    insecure: bool = False

    def check(self) -> None:
        if self.scheme not in ("ipc", "tcp"):
            raise ConfigError(f"transport.scheme={self.scheme!r}; use 'ipc' or 'tcp'")
        if self.policy not in ("latest", "lossless"):
            raise ConfigError(f"transport.policy={self.policy!r}; use 'latest' or 'lossless'")
        for name in ("hwm", "max_backlog", "max_message_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"transport.{name}={getattr(self, name)} must be >= 1")
        if not 0 <= self.base_port <= 65000:
            raise ConfigError(f"transport.base_port={self.base_port} must be in [0, 65000]")
        if self.ack_timeout_ms <= 0:
            raise ConfigError(f"transport.ack_timeout_ms={self.ack_timeout_ms} must be > 0")
        if self.keys is not None and not str(self.keys).strip():
            raise ConfigError("transport.keys is empty; name the folder made by 'rtneuro keys DIR'")

    def security_problem(self, hosts: Iterable[str] = ()) -> str | None:
        """Why this transport may not carry commands (one line naming the fix), or None.

        Parameters
        ----------
        hosts : iterable of str
            The addresses processes bind to besides ``host``.
        """
        if self.scheme != "tcp":
            return None
        if self.keys is not None:
            return keys_problem(self.keys)
        if self.insecure:
            return None
        exposed = [h for h in (self.host, *hosts) if not is_loopback(h)]
        if not exposed:
            return None
        return (f"transport.scheme: tcp on {exposed[0]} without keys would let anyone on that network send stimulation "
                "commands; create keys with 'rtneuro keys DIR' and set transport.keys: DIR "
                "(or transport.insecure: true, on an isolated lab network only)")

    def security_warning(self) -> str | None:
        """A one-line warning for tcp without keys (loopback, or ``insecure``), or None."""
        if self.scheme != "tcp" or self.keys is not None:
            return None
        if self.insecure:
            return ("transport.insecure: tcp sockets accept commands from anyone who can reach them; "
                    "use transport.keys unless this network is isolated")
        return ("transport.scheme: tcp on loopback without keys: any user of this machine can send commands; "
                "use ipc, or transport.keys (rtneuro keys DIR)")

    def curve_keys(self) -> Keys | None:
        """The CURVE keys tcp sockets use (None: ipc, or no keys configured)."""
        if self.scheme != "tcp" or self.keys is None:
            return None
        return _load_keys(str(self.keys))


@functools.lru_cache(maxsize=8)
def _load_keys(directory: str) -> Keys:
    return load_keys(directory)


def _server_keys(params: TransportParams, endpoint: str) -> Keys | None:
    return params.curve_keys() if endpoint.startswith("tcp://") else None


@dataclass(slots=True)
class RecvStats:
    """What a consumer saw of one stream."""

    messages: int = 0
    samples: int = 0
    gaps: int = 0
    lost: int = 0
    dropped: int = 0
    invalid: int = 0
    restarts: int = 0
    eos: bool = False

    def as_dict(self) -> dict:
        return {
            "messages": self.messages,
            "samples": self.samples,
            "gaps": self.gaps,
            "lost": self.lost,
            "dropped": self.dropped,
            "invalid": self.invalid,
            "restarts": self.restarts,
        }


@dataclass(slots=True)
class Rejections:
    """Rejected messages, by reason, with a one-line log per (stream, reason)."""

    counts: dict = field(default_factory=dict)
    _logged: set = field(default_factory=set)

    def add(self, stream: str, exc: SchemaError) -> None:
        self.counts[exc.kind] = self.counts.get(exc.kind, 0) + 1
        key = (stream, exc.kind)
        if key not in self._logged:
            self._logged.add(key)
            log.warning("dropped a malformed message on %s: %s (further ones of this kind are only counted)", stream, exc)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class _StreamState:
    __slots__ = ("stats", "inc", "next_seq", "next_index", "meta", "topic", "n_channels", "dtype")

    def __init__(self, expected: StreamMeta | None, topic: str | None = None) -> None:
        self.topic = topic
        # what every data message is checked against (None: not checked)
        self.n_channels = expected.n_channels if expected is not None and expected.kind in ("sig", "feat") else None
        self.dtype = expected.dtype if expected is not None else None
        self.stats = RecvStats()
        self.inc: int | None = None
        self.next_seq = 0
        self.next_index: int | None = None
        self.meta: StreamMeta | None = None  # as announced by the publisher


def _configure(sock: zmq.Socket, params: TransportParams) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, params.max_message_bytes)
    sock.copy_threshold = params.copy_threshold


class Publisher:
    """Publishes data streams of one process on a bound ``XPUB`` socket.

    Parameters
    ----------
    ctx : zmq.Context
    endpoint : str
        Where to bind (``ipc://...`` or ``tcp://host:port``).
    params : TransportParams
    inc : int
        This process incarnation's id, stamped on every message.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, params: TransportParams, inc: int) -> None:
        self.params = params
        self.inc = inc
        self.lossless = params.policy == "lossless"
        sock = ctx.socket(zmq.XPUB)
        _configure(sock, params)
        sock.setsockopt(zmq.SNDHWM, params.hwm)
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        if self.lossless:
            sock.setsockopt(zmq.XPUB_NODROP, 1)
        self._keys = _server_keys(params, endpoint)
        if self._keys is not None:
            curve_server(sock, self._keys)
        sock.bind(endpoint)
        self.socket = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        secure_ipc(self.endpoint)
        self._meta_frames: dict[bytes, list] = {}
        self._seq: dict[bytes, int] = {}
        #: subscription messages seen per topic (one per subscribing socket)
        self.subscriptions: dict[bytes, int] = {}
        self.stalls = 0
        #: Called while a lossless send waits for room; returning True drops the message.
        self.on_stall: Callable[[], bool] | None = None
        self._packer = msgpack.Packer()

    def announce(self, meta: StreamMeta) -> None:
        """Send ``meta`` now and to every later subscriber of its topic."""
        frames = encode_meta(meta, self.inc)
        self._meta_frames[meta.topic] = frames
        self._seq.setdefault(meta.topic, 0)
        self._send(frames)

    def publish(self, kind: str, stream: str, topic: bytes, chunk: Chunk) -> None:
        seq = self._seq.get(topic, 0)
        self._seq[topic] = seq + 1
        self._send(encode(kind, stream, seq, self.inc, chunk, topic, self._packer))

    def end(self, kind: str, stream: str, topic: bytes, next_index: int) -> None:
        """Announce the end of ``stream``."""
        seq = self._seq.get(topic, 0)
        self._seq[topic] = seq + 1
        self._send(encode_eos(kind, stream, seq, self.inc, next_index))

    def _send(self, frames: list) -> None:
        sock = self.socket
        if not self.lossless:
            sock.send_multipart(frames, copy=False)
            return
        while True:
            try:
                sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                return
            except zmq.Again:
                # A subscriber's queue is full: wait for room (back-pressure).
                # (XPUB always reports POLLOUT, so poll would not wait.)
                self.stalls += 1
                time.sleep(0.0005)
                self.poll_subscriptions()
                if self.on_stall is not None and self.on_stall():
                    return

    def poll_subscriptions(self) -> int:
        """Handle pending (un)subscriptions; re-announce metadata to newcomers."""
        n = 0
        sock = self.socket
        while True:
            try:
                msg = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return n
            if not msg:
                continue
            topic = msg[1:]
            if msg[0] == 1:
                n += 1
                self.subscriptions[topic] = self.subscriptions.get(topic, 0) + 1
                frames = self._meta_frames.get(topic)
                if frames is not None:
                    try:  # best effort: a full lossless queue must not stop the publisher
                        sock.send_multipart(frames, flags=zmq.NOBLOCK)
                    except zmq.Again:
                        pass
            elif msg[0] == 0:
                self.subscriptions[topic] = max(0, self.subscriptions.get(topic, 0) - 1)

    def close(self, linger_ms: int = 0) -> None:
        """Close; with ``linger_ms`` > 0, first try that long to deliver what is queued."""
        ctx = self.socket.context
        self.socket.close(linger=linger_ms)
        if self._keys is not None:
            release_server(ctx, self._keys)
            self._keys = None


class Subscriber:
    """Receives data streams on one ``SUB`` socket, validating every message.

    Parameters
    ----------
    ctx : zmq.Context
    params : TransportParams
    """

    def __init__(self, ctx: zmq.Context, params: TransportParams) -> None:
        self.params = params
        self.latest = params.policy == "latest"
        sock = ctx.socket(zmq.SUB)
        _configure(sock, params)
        sock.setsockopt(zmq.RCVHWM, params.hwm)
        keys = params.curve_keys()
        if keys is not None:
            curve_client(sock, keys)
        self.socket = sock
        self.streams: dict[bytes, _StreamState] = {}
        self.rejections = Rejections()

    def connect(self, endpoint: str) -> None:
        self.socket.connect(endpoint)

    def subscribe(self, topic: bytes, expected: StreamMeta | None = None) -> None:
        """Subscribe to exactly ``topic``; check data against ``expected``."""
        self.streams[topic] = _StreamState(expected, topic.decode("ascii"))
        self.socket.setsockopt(zmq.SUBSCRIBE, topic)

    def stats(self, topic: bytes) -> RecvStats:
        return self.streams[topic].stats

    def drain(self, max_messages: int = 100_000) -> list[Message]:
        """Receive everything pending, without blocking.

        Returns
        -------
        list of Message
            Valid data and end-of-stream messages, in arrival order, after
            the backlog policy has been applied. Metadata is applied here
            and not returned. Invalid messages are counted and dropped.
        """
        out: list[Message] = []
        sock = self.socket
        recv = sock.recv_multipart
        for _ in range(max_messages):
            try:
                frames = recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            msg = self._accept(frames)
            if msg is not None:
                out.append(msg)
            # Ask before receiving again: a receive that raises Again costs
            # more than this flag read on a core that has just woken up.
            if not sock.get(zmq.EVENTS) & zmq.POLLIN:
                break
        if self.latest and len(out) > self.params.max_backlog:
            out = self._trim(out)
        return out

    def _accept(self, frames: list) -> Message | None:
        topic = frames[0].bytes if frames else b""
        state = self.streams.get(topic)
        if state is None:
            if frames and any(topic.startswith(t) for t in self.streams):
                return None  # another stream whose name extends a subscribed one
            self.rejections.add("?", SchemaError("topic", f"unexpected topic {topic[:40]!r}"))
            return None
        try:
            msg = decode(frames, self.params.max_message_bytes, state.topic)
            if msg.type == "data":
                self._check_data(state, msg)
        except SchemaError as exc:
            state.stats.invalid += 1
            self.rejections.add(topic.decode("ascii", "replace"), exc)
            return None
        if msg.type == "meta":
            state.meta = msg.header["meta"]
            return None
        if msg.type == "ack":
            return None
        return msg if self._track(state, msg) else None

    @staticmethod
    def _check_data(state: _StreamState, msg: Message) -> None:
        n = state.n_channels
        if n is not None:
            shape = msg.arrays[0].shape
            if len(shape) != 2 or shape[1] != n:
                raise SchemaError("shape", f"{msg.topic!r}: chunk of shape {shape} but the stream has {n} channels; check the producer's channel count")
        if state.dtype is not None and msg.header["arrays"][0][0] != state.dtype:
            raise SchemaError("dtype", f"{msg.topic!r}: dtype {msg.header['arrays'][0][0]} but the stream was announced as {state.dtype}")

    @staticmethod
    def _track(state: _StreamState, msg: Message) -> bool:
        """Gap and restart accounting; False for a repeated (stale) message."""
        st = state.stats
        if msg.inc != state.inc:
            if state.inc is not None:
                st.restarts += 1
                log.warning("%s: publisher restarted", msg.topic)
            state.inc = msg.inc
            if msg.seq > 0 and state.next_index is not None:
                st.gaps += 1
                st.lost += msg.seq
        elif msg.seq != state.next_seq:
            if msg.seq < state.next_seq:
                st.invalid += 1  # a repeated seq: cannot happen on one pipe
                return False
            if not st.gaps:
                log.warning("%s: gap of %d message(s) before seq %d (further gaps are only counted)",
                            msg.topic, msg.seq - state.next_seq, msg.seq)
            st.gaps += 1
            st.lost += msg.seq - state.next_seq
        state.next_seq = msg.seq + 1
        if msg.type == "eos":
            st.eos = True
            return True
        st.messages += 1
        n = msg.arrays[0].shape[0]
        st.samples += n
        state.next_index = msg.header["first"] + n
        return True

    def _trim(self, msgs: list[Message]) -> list[Message]:
        """``latest`` policy: keep the newest ``max_backlog`` data messages per stream."""
        keep = self.params.max_backlog
        counts: dict[str, int] = {}
        for m in msgs:
            if m.type == "data":
                counts[m.topic] = counts.get(m.topic, 0) + 1
        excess = {t: c - keep for t, c in counts.items() if c > keep}
        if not excess:
            return msgs
        out = []
        for m in msgs:
            n = excess.get(m.topic, 0)
            if m.type == "data" and n > 0:
                excess[m.topic] = n - 1
                st = self.streams[m.topic.encode("ascii")].stats
                st.dropped += 1
                st.messages -= 1
                st.samples -= m.arrays[0].shape[0]
                continue
            out.append(m)
        for t, c in counts.items():
            if c > keep:
                st = self.streams[t.encode("ascii")].stats
                st.gaps += 1
                log.warning("%s: consumer behind by %d messages; dropped the oldest %d (policy 'latest')", t, c, c - keep)
        return out

    def close(self, linger_ms: int = 0) -> None:
        """Close; with ``linger_ms`` > 0, first try that long to deliver what is queued."""
        self.socket.close(linger=linger_ms)


@dataclass(slots=True)
class CommandStats:
    sent: int = 0
    heartbeats: int = 0
    acked: int = 0
    resent: int = 0
    unacked: int = 0
    statuses: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "sent": self.sent,
            "heartbeats": self.heartbeats,
            "acked": self.acked,
            "resent": self.resent,
            "unacked": self.unacked,
            "statuses": dict(self.statuses),
        }


class CommandSender:
    """Controller side of the command channel (``DEALER``).

    Parameters
    ----------
    ctx : zmq.Context
    endpoint : str
        The stimulate service's command endpoint.
    params : TransportParams
    inc : int
        Sender incarnation; with ``seq`` it identifies each command.
    clock : callable
        LSL clock, for ack timeouts.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, params: TransportParams, inc: int, clock) -> None:
        sock = ctx.socket(zmq.DEALER)
        _configure(sock, params)
        sock.setsockopt(zmq.SNDHWM, params.hwm)
        sock.setsockopt(zmq.RCVHWM, params.hwm)
        keys = params.curve_keys() if endpoint.startswith("tcp://") else None
        if keys is not None:
            curve_client(sock, keys)
        sock.connect(endpoint)
        self.socket = sock
        self.inc = inc
        self.clock = clock
        self.ack_timeout = params.ack_timeout_ms / 1000.0
        self.max_bytes = params.max_message_bytes
        self._seq: dict[str, int] = {}
        #: (stream, seq) -> [frames, t_sent, deadline]
        self.pending: OrderedDict[tuple[str, int], list] = OrderedDict()
        self.stats = CommandStats()
        self.rejections = Rejections()

    def send(self, stream: str, chunk: Chunk, heartbeat: bool) -> int:
        seq = self._seq.get(stream, 0)
        self._seq[stream] = seq + 1
        frames = encode("cmd", stream, seq, self.inc, chunk)
        self.socket.send_multipart(frames, copy=False)
        deadline = (chunk.extra or {}).get("deadline", self.clock() + 10.0)  # no deadline (virtual clock): re-sent for 10 s
        self.pending[(stream, seq)] = [frames, self.clock(), deadline]
        if heartbeat:
            self.stats.heartbeats += 1
        else:
            self.stats.sent += 1
        return seq

    def end(self, stream: str, next_index: int) -> None:
        """Tell the receiver that ``stream`` is over (not acknowledged)."""
        seq = self._seq.get(stream, 0)
        self._seq[stream] = seq + 1
        self.socket.send_multipart(encode_eos("cmd", stream, seq, self.inc, next_index))

    def poll(self) -> list[dict]:
        """Read acknowledgements; re-send or give up on overdue commands.

        Returns
        -------
        list of dict
            One ``{"stream", "seq", "statuses", "reasons"}`` per ack received.
        """
        acks = []
        sock = self.socket
        while True:
            if not sock.get(zmq.EVENTS) & zmq.POLLIN:
                break
            frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            try:
                msg = decode(frames, self.max_bytes)
                if msg.type != "ack":
                    raise SchemaError("field", f"expected an ack, got a {msg.type!r} message")
            except SchemaError as exc:
                self.rejections.add("ack", exc)
                continue
            if self.pending.pop((msg.stream, msg.seq), None) is None:
                continue  # ack of a re-sent command already acknowledged
            x = msg.header.get("x") or {}
            statuses = x.get("status") or []
            self.stats.acked += 1
            for s in statuses:
                self.stats.statuses[s] = self.stats.statuses.get(s, 0) + 1
            acks.append({"stream": msg.stream, "seq": msg.seq, "statuses": statuses, "reasons": x.get("reason") or []})
        if self.pending:
            self._overdue()
        return acks

    def _overdue(self) -> None:
        now = self.clock()
        for key in list(self.pending):
            entry = self.pending[key]
            frames, t_sent, deadline = entry
            if now > deadline + self.ack_timeout:
                del self.pending[key]
                self.stats.unacked += 1
                log.error("command %s seq %d was not acknowledged before its deadline; is the stimulate service running?", key[0], key[1])
            elif now - t_sent > self.ack_timeout and now < deadline:
                self.socket.send_multipart(frames, copy=False)
                entry[1] = now
                self.stats.resent += 1

    def close(self, linger_ms: int = 0) -> None:
        """Close; with ``linger_ms`` > 0, first try that long to deliver what is queued."""
        self.socket.close(linger=linger_ms)


class CommandReceiver:
    """Stimulate-service side of the command channel (``ROUTER``)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, params: TransportParams, inc: int) -> None:
        sock = ctx.socket(zmq.ROUTER)
        _configure(sock, params)
        sock.setsockopt(zmq.RCVHWM, params.hwm)
        sock.setsockopt(zmq.SNDHWM, params.hwm)
        self._keys = _server_keys(params, endpoint)
        if self._keys is not None:
            curve_server(sock, self._keys)
        sock.bind(endpoint)
        self.socket = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        secure_ipc(self.endpoint)
        self.inc = inc
        self.max_bytes = params.max_message_bytes
        self.rejections = Rejections()
        self.duplicates = 0
        #: (peer, stream, sender inc) -> highest seq received
        self._last_seq: dict[tuple, int] = {}
        #: (peer, stream, sender inc) -> {seq: (statuses, reasons)} of the last acks
        self._acked: dict[tuple, OrderedDict] = {}
        self.streams: dict[str, _StreamState] = {}

    def expect(self, stream: str, meta: StreamMeta | None = None) -> None:
        self.streams[stream] = _StreamState(meta)

    def drain(self, max_messages: int = 10_000) -> list[tuple[bytes, Message]]:
        """Pending commands, validated and de-duplicated, in arrival order."""
        out = []
        sock = self.socket
        for _ in range(max_messages):
            if not sock.get(zmq.EVENTS) & zmq.POLLIN:
                break
            frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            peer = frames[0].bytes
            body = frames[1:]
            try:
                msg = decode(body, self.max_bytes)
                if msg.kind != "cmd" or msg.type not in ("data", "eos"):
                    raise SchemaError("field", f"{msg.topic!r}: only command messages are accepted here")
                if msg.type == "data" and msg.header["arrays"][0][0] != "command":
                    raise SchemaError("dtype", f"{msg.topic!r}: command payload must have the 'command' dtype")
                state = self.streams.get(msg.stream)
                if state is None:
                    raise SchemaError("topic", f"{msg.topic!r}: no stimulator takes this command stream")
            except SchemaError as exc:
                name = body[0].bytes[:40].decode("ascii", "replace") if body else "?"
                if name[4:] in self.streams:
                    self.streams[name[4:]].stats.invalid += 1
                self.rejections.add(name, exc)
                continue
            if msg.type == "eos":
                if Subscriber._track(state, msg):
                    out.append((peer, msg))
                continue
            key = (peer, msg.stream, msg.inc)
            if msg.seq <= self._last_seq.get(key, -1):
                # a re-sent command: never applied twice; answered again if known
                self.duplicates += 1
                acked = self._acked.get(key)
                done = acked.get(msg.seq) if acked is not None else None
                if done is not None:
                    self._send_ack(peer, msg, done[0], done[1])
                continue
            self._last_seq[key] = msg.seq
            Subscriber._track(state, msg)
            out.append((peer, msg))
        return out

    def ack(self, peer: bytes, msg: Message, statuses: list[str], reasons: list[str], t: float) -> None:
        key = (peer, msg.stream, msg.inc)
        acked = self._acked.get(key)
        if acked is None:
            acked = self._acked[key] = OrderedDict()
        acked[msg.seq] = (statuses, reasons)
        if len(acked) > 256:
            acked.popitem(last=False)
        self._send_ack(peer, msg, statuses, reasons, t)

    def _send_ack(self, peer: bytes, msg: Message, statuses, reasons, t: float = 0.0) -> None:
        frames = encode_ack(msg.stream, msg.seq, self.inc, statuses, reasons, t)
        try:
            self.socket.send_multipart([peer, *frames], flags=zmq.NOBLOCK)
        except zmq.Again:  # pragma: no cover - peer's queue full; it will re-send
            pass

    def close(self, linger_ms: int = 0) -> None:
        """Close; with ``linger_ms`` > 0, first try that long to deliver what is queued."""
        ctx = self.socket.context
        self.socket.close(linger=linger_ms)
        if self._keys is not None:
            release_server(ctx, self._keys)
            self._keys = None
