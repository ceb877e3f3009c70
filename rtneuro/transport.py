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

Stream time
    A data message whose ``t0`` goes backwards from the previous one, or
    (regular streams) lies more than ``max_jump_s`` away from where the
    previous message and the sample index put it (``t0 + (first -
    first_prev) / sfreq``), is a discontinuity: counted like a gap
    (``RecvStats.discontinuities``) and logged at a bounded rate; the
    message is still delivered (the stimulator's gate judges command times
    itself).

Untrusted peers
    Every message is decoded by :func:`~rtneuro.messages.decode`, which can
    only fail into a :class:`SchemaError` counted by kind. Control messages
    are honoured only from the stream's publisher: on a ``SUB`` socket an
    ``eos`` counts only with the incarnation (``inc``) that sent the
    stream's data (or before any data), and a ``meta`` from a new
    incarnation is applied only once data from that incarnation arrives (a
    genuine restart sends data; a forger's ``meta`` is never applied
    otherwise). On the command ``ROUTER``, see :class:`CommandReceiver`.
    Refused control messages are counted as ``forged``. Per-peer state is
    bounded: a publisher tracks (and lets libzmq match) only the topics it
    publishes (``XPUB_MANUAL``), the receiver's de-duplication tables keep
    the most recent ``max_peers`` senders. Logs about input go through
    :class:`~rtneuro.ratelog.RateLog` by reason.

Nothing blocks without a bound
    Every send is ``NOBLOCK``: a command that cannot be queued stays in
    ``CommandSender.pending`` and is tried again by ``poll()`` until its
    deadline (counted as ``blocked``); only the ``lossless`` publisher
    waits for room, and asks ``on_stall`` between tries.

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

import ctypes
import ctypes.util
import functools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import msgpack
import zmq

from .errors import ConfigError, SchemaError
from .messages import (
    DECISION_STATUS,
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
from .ratelog import RateLog
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

#: A regular stream's ``t0`` further than this from where its sample index puts it is a discontinuity.
MAX_TIME_JUMP_S = 1.0
#: Senders (routing id, stream, incarnation) whose sequence numbers a command receiver remembers.
MAX_PEERS = 64
#: Without declared topics, the most distinct topics a publisher lets peers subscribe to.
MAX_OPEN_TOPICS = 256
#: Once this many refused subscriptions have been released, the heap is trimmed (libzmq's
#: per-peer subscription trie grew with them; glibc keeps freed memory otherwise).
TRIM_AFTER = 1000
#: Most commands a sender keeps for re-sending (the oldest beyond are given up as unacknowledged).
MAX_PENDING = 4096
#: Without a (finite) deadline, an unacknowledged command is re-sent for this long.
DEFAULT_RESEND_S = 10.0
_ACK_STATUSES = frozenset(DECISION_STATUS.values())


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
    #: stream time that went backwards or jumped (see the module documentation)
    discontinuities: int = 0
    #: control messages refused: not from the stream's publisher
    forged: int = 0
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
            "discontinuities": self.discontinuities,
            "forged": self.forged,
        }


def _ratelog() -> RateLog:
    return RateLog(log)


@dataclass(slots=True)
class Rejections:
    """Rejected messages by reason (the SchemaError's ``kind``), logged at a bounded rate by reason.

    ``stream`` may come from the input: it only appears in the text of a
    line (shortened), never as a key.
    """

    counts: dict = field(default_factory=dict)
    log: RateLog = field(default_factory=_ratelog)

    def add(self, stream: str, exc: SchemaError) -> None:
        kind = exc.kind if isinstance(exc.kind, str) else "other"
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.log.warning(kind, "dropped a message on %s: %s", str(stream)[:40], str(exc)[:200])

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class _StreamState:
    __slots__ = ("stats", "inc", "next_seq", "next_index", "meta", "topic", "n_channels", "dtype",
                 "last_t0", "last_first", "pending_meta", "publisher", "peer", "peer_inc")

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
        self.last_t0: float | None = None  # t0 and first of the last data message (this incarnation)
        self.last_first = 0
        self.pending_meta: tuple[int, StreamMeta] | None = None  # from a new incarnation, not yet applied
        self.publisher: str | None = None  # commands: the process that sends this stream
        self.peer: bytes | None = None  # commands: routing id and inc of the last accepted command
        self.peer_inc: int | None = None


def _track(state: _StreamState, msg: Message, ratelog: RateLog, max_jump_s: float) -> bool:
    """Gap, restart and stream-time accounting; False for a repeated (stale) message."""
    st = state.stats
    if msg.inc != state.inc:
        if state.inc is not None:
            st.restarts += 1
            ratelog.warning("restart", "%s: publisher restarted (incarnation %d)", msg.topic, msg.inc)
        state.inc = msg.inc
        state.last_t0 = None  # a new incarnation's time is not compared with the old one's
        pending = state.pending_meta
        if pending is not None and pending[0] == msg.inc:
            state.meta = pending[1]
        state.pending_meta = None
        if msg.seq > 0 and state.next_index is not None:
            st.gaps += 1
            st.lost += msg.seq
    elif msg.seq != state.next_seq:
        if msg.seq < state.next_seq:
            st.invalid += 1  # a repeated seq: cannot happen on one pipe
            return False
        ratelog.warning("gap", "%s: gap of %d message(s) before seq %d", msg.topic, msg.seq - state.next_seq, msg.seq)
        st.gaps += 1
        st.lost += msg.seq - state.next_seq
    state.next_seq = msg.seq + 1
    if msg.type == "eos":
        st.eos = True
        return True
    st.messages += 1
    n = msg.arrays[0].shape[0]
    st.samples += n
    first = msg.header["first"]
    state.next_index = first + n
    chunk = msg.data
    if chunk is not None:
        t0, last = chunk.t0, state.last_t0
        if last is not None:
            if t0 < last:
                _discontinuity(st, ratelog, msg, f"went back {last - t0:.6g} s")
            elif chunk.sfreq > 0:
                off = t0 - (last + (first - state.last_first) / chunk.sfreq)
                if abs(off) > max_jump_s:
                    _discontinuity(st, ratelog, msg, f"is {off:+.6g} s from where sample {first} belongs")
        state.last_t0 = t0
        state.last_first = first
    return True


def _discontinuity(st: RecvStats, ratelog: RateLog, msg: Message, what: str) -> None:
    st.discontinuities += 1
    ratelog.warning("discontinuity", "%s: stream time t0=%.6f %s (seq %d); counted as a discontinuity",
                    msg.topic, msg.data.t0 if msg.data is not None else math.nan, what, msg.seq)


def _forged(state: _StreamState | None, rejections: Rejections, msg: Message, why: str) -> None:
    if state is not None:
        state.stats.forged += 1
    rejections.add(msg.topic, SchemaError("forged", f"{msg.topic!r}: refused a {msg.type!r} message {why}"))


_malloc_trim: Callable[[int], int] | None = None


def _trim_heap() -> bool:
    """Give freed heap memory back to the system (glibc), after a flood of peer state was released."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = lambda pad: 0  # noqa: E731 - not glibc: nothing to do
    return bool(_malloc_trim(0))


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
    topics : iterable of bytes or None
        The topics this publisher will publish. Subscriptions to other
        topics are refused (counted in ``stats["subscriptions_refused"]``)
        and never enter libzmq's matching trie (``XPUB_MANUAL``). None:
        topics become known when announced or first published, and up to
        ``MAX_OPEN_TOPICS`` others are let in meanwhile.

    Notes
    -----
    libzmq still parses every subscription a peer sends into a per-peer
    trie while that peer is connected (about 1.5 kB each); when refused
    ones are released (the peer unsubscribes or leaves) the heap is
    trimmed, so a flood does not keep its memory. Who may connect at all
    is bounded by :mod:`rtneuro.security` (``0600`` ipc files, CURVE).
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, params: TransportParams, inc: int,
                 topics: Iterable[bytes] | None = None, elsewhere: Iterable[bytes] = ()) -> None:
        self.params = params
        self.inc = inc
        self.lossless = params.policy == "lossless"
        sock = ctx.socket(zmq.XPUB)
        _configure(sock, params)
        sock.setsockopt(zmq.SNDHWM, params.hwm)
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        # subscriptions reach libzmq's matching trie only when poll_subscriptions() accepts them
        sock.setsockopt(zmq.XPUB_MANUAL, 1)
        if self.lossless:
            sock.setsockopt(zmq.XPUB_NODROP, 1)
        self._keys = _server_keys(params, endpoint)
        #: CURVE handshakes this socket refused, by reason (empty without CURVE)
        self.security: dict[str, int] = {}
        if self._keys is not None:
            self.security = curve_server(sock, self._keys)
        sock.bind(endpoint)
        self.socket = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        secure_ipc(self.endpoint)
        self._meta_frames: dict[bytes, list] = {}
        self._seq: dict[bytes, int] = {}
        self._declared = topics is not None
        self._known: set[bytes] = set(topics or ())
        #: topics the graph publishes from other processes: a subscriber connected to several publishers asks
        #: each of them for all its topics, so these are refused quietly (counted), never logged as hostile
        self._elsewhere: frozenset[bytes] = frozenset(elsewhere) - self._known
        #: subscriptions per accepted topic (one per subscribing socket)
        self.subscriptions: dict[bytes, int] = {}
        #: what peers were refused and what was done about it
        self.stats: dict[str, int] = {"subscriptions_refused": 0, "subscriptions_elsewhere": 0, "not_subscriptions": 0, "subscriptions_released": 0, "blocked": 0,
                                      "unsubscribed": 0,
                                      "heap_trims": 0}
        self._released = 0  # refused subscriptions released since the last heap trim
        self.log = RateLog(log)
        self.stalls = 0
        #: Called while a lossless send waits for room; returning True drops the message.
        self.on_stall: Callable[[], bool] | None = None
        self._packer = msgpack.Packer()

    def announce(self, meta: StreamMeta) -> None:
        """Send ``meta`` now and to every later subscriber of its topic."""
        frames = encode_meta(meta, self.inc)
        self._meta_frames[meta.topic] = frames
        self._seq.setdefault(meta.topic, 0)
        self._known.add(meta.topic)
        self._send(frames)

    def publish(self, kind: str, stream: str, topic: bytes, chunk: Chunk) -> None:
        seq = self._seq.get(topic)
        if seq is None:
            seq = 0
            self._known.add(topic)
        self._seq[topic] = seq + 1
        if not self.subscriptions.get(topic):
            # nobody subscribes (yet): the socket would match no peer and drop it, so it is not even encoded (a
            # stream published only in case a browser page views it costs its process nothing until one does)
            self.stats["unsubscribed"] += 1
            return
        self._send(encode(kind, stream, seq, self.inc, chunk, topic, self._packer))

    def end(self, kind: str, stream: str, topic: bytes, next_index: int) -> None:
        """Announce the end of ``stream``."""
        seq = self._seq.get(topic, 0)
        self._seq[topic] = seq + 1
        self._send(encode_eos(kind, stream, seq, self.inc, next_index))

    def _send(self, frames: list) -> None:
        sock = self.socket
        if not self.lossless:
            try:  # policy 'latest': never wait (XPUB drops at the high-water mark rather than block)
                sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self.stats["blocked"] += 1
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

    def _accepts(self, topic: bytes) -> bool:
        if topic in self._known:
            return True
        if self._declared or len(self.subscriptions) >= MAX_OPEN_TOPICS:
            return False
        try:  # not declared: a well-formed topic may be one this process will publish
            kind, dot, stream = topic.decode("ascii").partition(".")
        except UnicodeDecodeError:
            return False
        return bool(dot and stream) and kind in ("sig", "feat", "evt", "cmd")

    def poll_subscriptions(self, max_messages: int = 256) -> int:
        """Handle pending (un)subscriptions; re-announce metadata to newcomers.

        Only topics this publisher publishes are accepted (and let into
        libzmq's trie, which applies ``setsockopt(SUBSCRIBE)`` to the peer
        whose message was read last); others are counted and logged by
        reason, never kept. At most ``max_messages`` are read per call, so
        that a flood costs the caller a bounded time; the rest wait for the
        next call (the socket stays readable).
        """
        n = 0
        sock = self.socket
        for _ in range(max_messages):
            try:
                msg = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if not msg or msg[0] not in (0, 1):
                self.stats["not_subscriptions"] += 1  # a peer's message that is no (un)subscription
                continue
            topic = msg[1:]
            count = self.subscriptions.get(topic)
            if msg[0] == 1:
                if count is None and topic in self._elsewhere:
                    self.stats["subscriptions_elsewhere"] += 1
                    continue
                if count is None and not self._accepts(topic):
                    self.stats["subscriptions_refused"] += 1
                    self.log.warning("unknown_topic", "refused a subscription to %r: this process does not publish it",
                                     topic[:40])
                    continue
                sock.setsockopt(zmq.SUBSCRIBE, topic)
                n += 1
                self.subscriptions[topic] = (count or 0) + 1
                frames = self._meta_frames.get(topic)
                if frames is not None:
                    try:  # best effort: a full lossless queue must not stop the publisher
                        sock.send_multipart(frames, flags=zmq.NOBLOCK)
                    except zmq.Again:
                        pass
            elif count is None:
                self._released += 1  # a refused subscription, released by its peer (or its leaving)
                self.stats["subscriptions_released"] += 1
            else:
                sock.setsockopt(zmq.UNSUBSCRIBE, topic)
                if count > 1 or topic in self._known:
                    self.subscriptions[topic] = max(0, count - 1)
                else:
                    del self.subscriptions[topic]  # an open slot is free again
        if self._released >= TRIM_AFTER:
            self._released = 0
            self.stats["heap_trims"] += 1
            _trim_heap()
        return n

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
        self.log = RateLog(log)
        #: a regular stream's t0 further than this from its expected time is a discontinuity
        self.max_jump_s = MAX_TIME_JUMP_S

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
            # the incarnation that sends the data (or, before any data, anyone) sets the metadata;
            # a new incarnation's is kept aside and applied when its data arrives (a genuine restart)
            if state.inc is None or msg.inc == state.inc:
                state.meta = msg.header["meta"]
            else:
                state.pending_meta = (msg.inc, msg.header["meta"])
            return None
        if msg.type == "ack":
            return None
        if msg.type == "eos" and state.inc is not None and msg.inc != state.inc:
            _forged(state, self.rejections, msg, f"from incarnation {msg.inc}, not the one that sends the stream")
            return None
        return msg if _track(state, msg, self.log, self.max_jump_s) else None

    @staticmethod
    def _check_data(state: _StreamState, msg: Message) -> None:
        n = state.n_channels
        if n is not None:
            shape = msg.arrays[0].shape
            if len(shape) != 2 or shape[1] != n:
                raise SchemaError("shape", f"{msg.topic!r}: chunk of shape {shape} but the stream has {n} channels; check the producer's channel count")
        if state.dtype is not None and msg.header["arrays"][0][0] != state.dtype:
            raise SchemaError("dtype", f"{msg.topic!r}: dtype {msg.header['arrays'][0][0]} but the stream was announced as {state.dtype}")

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
                self.log.warning("backlog", "%s: consumer behind by %d messages; dropped the oldest %d (policy 'latest')",
                                 t, c, c - keep)
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
    #: sends the socket could not take at once (no peer, queue full): kept and tried again by poll()
    blocked: int = 0
    statuses: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "sent": self.sent,
            "heartbeats": self.heartbeats,
            "acked": self.acked,
            "resent": self.resent,
            "unacked": self.unacked,
            "blocked": self.blocked,
            "statuses": dict(self.statuses),
        }


def _resend_until(deadline: object, now: float) -> float:
    """Until when a command is re-sent: its deadline, or ``DEFAULT_RESEND_S`` without a finite one."""
    if (type(deadline) is float or type(deadline) is int) and math.isfinite(deadline):
        return float(deadline)
    return now + DEFAULT_RESEND_S


class CommandSender:
    """Controller side of the command channel (``DEALER``).

    No call blocks: a command the socket cannot take at once (the
    stimulator unreachable, a CURVE handshake that never completes, a full
    queue) stays in :attr:`pending` and is tried again by :meth:`poll`
    until its deadline, then counted as unacknowledged.

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
    identity : bytes or None
        The socket's routing id, ``b"<process>:<inc>"``: a receiver that
        knows the stream's publisher accepts commands only from it.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, params: TransportParams, inc: int, clock,
                 identity: bytes | None = None) -> None:
        sock = ctx.socket(zmq.DEALER)
        _configure(sock, params)
        sock.setsockopt(zmq.SNDHWM, params.hwm)
        sock.setsockopt(zmq.RCVHWM, params.hwm)
        if identity is not None:
            sock.setsockopt(zmq.ROUTING_ID, identity)
        keys = params.curve_keys() if endpoint.startswith("tcp://") else None
        if keys is not None:
            curve_client(sock, keys)
        sock.connect(endpoint)
        self.socket = sock
        self.inc = inc
        self.identity = identity
        self.clock = clock
        self.ack_timeout = params.ack_timeout_ms / 1000.0
        self.max_bytes = params.max_message_bytes
        self.max_pending = MAX_PENDING
        self._seq: dict[str, int] = {}
        #: (stream, seq) -> [frames, t_sent (None: not sent yet), re-sent until]
        self.pending: OrderedDict[tuple[str, int], list] = OrderedDict()
        self._eos: list[list] = []  # [frames, until] of end-of-stream marks not sent yet
        self.stats = CommandStats()
        self.rejections = Rejections()
        self.log = RateLog(log)

    def _try_send(self, frames: list) -> bool:
        try:
            self.socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            self.stats.blocked += 1
            self.log.warning("blocked", "a command could not be sent at once (is the stimulate service reachable?); "
                             "it is kept and tried again until its deadline")
            return False

    def send(self, stream: str, chunk: Chunk, heartbeat: bool) -> int:
        seq = self._seq.get(stream, 0)
        self._seq[stream] = seq + 1
        frames = encode("cmd", stream, seq, self.inc, chunk)
        now = self.clock()
        until = _resend_until((chunk.extra or {}).get("deadline"), now)  # no deadline (virtual clock): 10 s
        sent = self._try_send(frames)
        self.pending[(stream, seq)] = [frames, now if sent else None, until]
        while len(self.pending) > self.max_pending:  # bounded: the oldest is given up
            (s, q), _ = self.pending.popitem(last=False)
            self._give_up(s, q)
        if heartbeat:
            self.stats.heartbeats += 1
        else:
            self.stats.sent += 1
        return seq

    def end(self, stream: str, next_index: int) -> None:
        """Tell the receiver that ``stream`` is over (not acknowledged; tried again by poll() if need be)."""
        seq = self._seq.get(stream, 0)
        self._seq[stream] = seq + 1
        frames = encode_eos("cmd", stream, seq, self.inc, next_index)
        if not self._try_send(frames):
            self._eos.append([frames, self.clock() + DEFAULT_RESEND_S])

    def poll(self) -> list[dict]:
        """Read acknowledgements; send what is waiting, re-send or give up on overdue commands.

        Returns
        -------
        list of dict
            One ``{"stream", "seq", "statuses", "reasons"}`` per ack received.
        """
        acks = []
        sock = self.socket
        while sock.get(zmq.EVENTS) & zmq.POLLIN:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            try:
                msg = decode(frames, self.max_bytes)
                if msg.type != "ack":
                    raise SchemaError("field", f"expected an ack, got a {msg.type!r} message")
                x = msg.header.get("x") or {}
                statuses, reasons = x.get("status") or [], x.get("reason") or []
                if not (type(statuses) is list and type(reasons) is list
                        and all(type(v) is str for v in statuses) and all(type(v) is str for v in reasons)):
                    raise SchemaError("field", f"{msg.topic!r}: an ack's status and reason must be lists of strings")
            except SchemaError as exc:
                self.rejections.add("ack", exc)
                continue
            if self.pending.pop((msg.stream, msg.seq), None) is None:
                continue  # ack of a re-sent command already acknowledged
            self.stats.acked += 1
            for st in statuses:
                key = st if st in _ACK_STATUSES else "other"  # a fixed vocabulary, whatever the peer says
                self.stats.statuses[key] = self.stats.statuses.get(key, 0) + 1
            acks.append({"stream": msg.stream, "seq": msg.seq, "statuses": statuses, "reasons": reasons})
        if self._eos:
            now = self.clock()
            self._eos = [e for e in self._eos if now < e[1] and not self._try_send(e[0])]
        if self.pending:
            self._overdue()
        return acks

    def _give_up(self, stream: str, seq: int) -> None:
        self.stats.unacked += 1
        self.log.error("unacked", "command %s seq %d was not acknowledged before its deadline; "
                       "is the stimulate service running?", stream[:40], seq)

    def _overdue(self) -> None:
        now = self.clock()
        for key in list(self.pending):
            entry = self.pending[key]
            frames, t_sent, until = entry
            if now > until + self.ack_timeout:
                del self.pending[key]
                self._give_up(*key)
            elif now < until and (t_sent is None or now - t_sent > self.ack_timeout):
                if not self._try_send(frames):
                    break  # the socket takes nothing now: the next poll tries again
                entry[1] = now
                if t_sent is not None:
                    self.stats.resent += 1

    def close(self, linger_ms: int = 0) -> None:
        """Close; with ``linger_ms`` > 0, first try that long to deliver what is queued."""
        self.socket.close(linger=linger_ms)


def _is_peer_of(peer: bytes, publisher: str) -> bool:
    """True when the routing id ``peer`` is ``b"<publisher>:<decimal inc>"``."""
    name, colon, inc = peer.rpartition(b":")
    return bool(colon) and name == publisher.encode() and 0 < len(inc) <= 20 and inc.isdigit()


class CommandReceiver:
    """Stimulate-service side of the command channel (``ROUTER``).

    Who may send what
        With ``expect(stream, publisher=NAME)``, command data and
        end-of-stream are accepted only from a peer whose routing id is
        ``NAME:<inc>`` (the :class:`CommandSender` ``identity`` the runtime
        gives each controller), and once the supervisor has told the
        current incarnations (:meth:`set_incarnations`), only from
        ``NAME:<its current inc>``. In every case an ``eos`` is honoured only
        from the peer (routing id and header ``inc``) that sent the stream's
        most recent accepted command (before any command: only from the
        named publisher). Anything else is refused, counted as ``forged``
        (per stream in ``RecvStats.forged``, in :attr:`rejections` and in
        :attr:`stats`) and never returned.

    Bounded state
        The de-duplication tables keep the ``max_peers`` most recently
        active senders (routing id, stream, incarnation); older ones are
        evicted (``stats["evicted"]``): a flood of fresh identities costs
        no memory.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, params: TransportParams, inc: int,
                 max_peers: int = MAX_PEERS) -> None:
        sock = ctx.socket(zmq.ROUTER)
        _configure(sock, params)
        sock.setsockopt(zmq.RCVHWM, params.hwm)
        sock.setsockopt(zmq.SNDHWM, params.hwm)
        self._keys = _server_keys(params, endpoint)
        #: CURVE handshakes this socket refused, by reason (empty without CURVE)
        self.security: dict[str, int] = {}
        if self._keys is not None:
            self.security = curve_server(sock, self._keys)
        sock.bind(endpoint)
        self.socket = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        secure_ipc(self.endpoint)
        self.inc = inc
        self.max_bytes = params.max_message_bytes
        self.max_peers = max_peers
        self.rejections = Rejections()
        self.log = RateLog(log)
        self.duplicates = 0
        #: what was refused or evicted: forged control/data, evicted senders, acks the socket did not take
        self.stats: dict[str, int] = {"forged": 0, "evicted": 0, "blocked": 0}
        #: (peer, stream, sender inc) -> [highest seq received, {seq: (statuses, reasons)} of the last acks]
        self._peers: OrderedDict[tuple, list] = OrderedDict()
        self.streams: dict[str, _StreamState] = {}
        #: process name -> its current routing id (see set_incarnations)
        self._incs: dict[str, bytes] = {}
        #: a command's t0 further than this from its expected time is a discontinuity
        self.max_jump_s = MAX_TIME_JUMP_S

    def expect(self, stream: str, meta: StreamMeta | None = None, publisher: str | None = None) -> None:
        """Accept commands of ``stream``; with ``publisher``, only from that process (see the class notes)."""
        state = _StreamState(meta)
        state.publisher = publisher
        self.streams[stream] = state

    def set_incarnations(self, incs: dict) -> int:
        """The current incarnation of each process of the run (from the supervisor).

        From then on a stream whose publisher is ``NAME`` is accepted only
        from the routing id ``NAME:<its current inc>`` exactly, not from any
        ``NAME:<digits>``: a stranger must guess a random 31-bit number.
        Entries that are not ``{str: int}`` are ignored; returns how many
        were taken.
        """
        n = 0
        for name, inc in incs.items():
            if type(name) is str and type(inc) is int and len(self._incs) < self.max_peers:
                self._incs[name] = f"{name}:{inc}".encode()
                n += 1
        return n

    def _is_publisher(self, peer: bytes, publisher: str) -> bool:
        exact = self._incs.get(publisher)
        return peer == exact if exact is not None else _is_peer_of(peer, publisher)

    def current_publisher(self, stream: str) -> bytes | None:
        """Routing id of the peer whose command of ``stream`` was accepted last (None: none yet)."""
        return self.streams[stream].peer

    def _refuse(self, state: _StreamState, msg: Message, why: str) -> None:
        self.stats["forged"] += 1
        _forged(state, self.rejections, msg, why)

    def drain(self, max_messages: int = 10_000) -> list[tuple[bytes, Message]]:
        """Pending commands, validated and de-duplicated, in arrival order (accepted ones only)."""
        out = []
        sock = self.socket
        for _ in range(max_messages):
            if not sock.get(zmq.EVENTS) & zmq.POLLIN:
                break
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            peer = frames[0].bytes
            body = frames[1:]
            if len(body) > 1:
                # who sent it is known before a byte of it is decoded: a stranger's message costs no decoding
                topic = body[0].bytes
                state = self.streams.get(topic[4:].decode("ascii", "replace")) if topic[:4] == b"cmd." else None
                if state is not None and state.publisher is not None and not self._is_publisher(peer, state.publisher):
                    self.stats["forged"] += 1
                    state.stats.forged += 1
                    self.rejections.add(topic[:40].decode("ascii", "replace"), SchemaError(
                        "forged", f"{topic[:40]!r}: refused a message from a peer that is not its publisher '{state.publisher}'"))
                    continue
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
            if state.publisher is not None and not self._is_publisher(peer, state.publisher):
                self._refuse(state, msg, f"from a peer that is not its publisher '{state.publisher}'")
                continue
            if msg.type == "eos":
                if state.peer is None:  # before any command: only the named publisher (checked above)
                    honoured = state.publisher is not None
                else:
                    honoured = peer == state.peer and msg.inc == state.peer_inc
                if not honoured:
                    self._refuse(state, msg, "from a peer other than the one that sent its last command")
                    continue
                if _track(state, msg, self.log, self.max_jump_s):
                    out.append((peer, msg))
                continue
            key = (peer, msg.stream, msg.inc)
            entry = self._peers.get(key)
            if entry is None:
                entry = self._peers[key] = [-1, OrderedDict()]
                if len(self._peers) > self.max_peers:
                    self._peers.popitem(last=False)
                    self.stats["evicted"] += 1
            else:
                self._peers.move_to_end(key)
            if msg.seq <= entry[0]:
                # a re-sent command: never applied twice; answered again if known
                self.duplicates += 1
                done = entry[1].get(msg.seq)
                if done is not None:
                    self._send_ack(peer, msg, done[0], done[1])
                continue
            entry[0] = msg.seq
            state.peer, state.peer_inc = peer, msg.inc
            _track(state, msg, self.log, self.max_jump_s)
            out.append((peer, msg))
        return out

    def ack(self, peer: bytes, msg: Message, statuses: list[str], reasons: list[str], t: float) -> None:
        entry = self._peers.get((peer, msg.stream, msg.inc))
        if entry is not None:  # an evicted sender is answered, but not remembered
            acked = entry[1]
            acked[msg.seq] = (statuses, reasons)
            if len(acked) > 256:
                acked.popitem(last=False)
        self._send_ack(peer, msg, statuses, reasons, t)

    def _send_ack(self, peer: bytes, msg: Message, statuses, reasons, t: float = 0.0) -> None:
        frames = encode_ack(msg.stream, msg.seq, self.inc, statuses, reasons, t)
        try:
            self.socket.send_multipart([peer, *frames], flags=zmq.NOBLOCK)
        except zmq.Again:  # the peer's queue is full: it will re-send
            self.stats["blocked"] += 1

    def close(self, linger_ms: int = 0) -> None:
        """Close; with ``linger_ms`` > 0, first try that long to deliver what is queued."""
        ctx = self.socket.context
        self.socket.close(linger=linger_ms)
        if self._keys is not None:
            release_server(ctx, self._keys)
            self._keys = None
