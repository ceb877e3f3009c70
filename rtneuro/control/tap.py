"""The tap: what the browser pages see of the running graph's streams.

The control server's event loop (no thread of its own) subscribes to the
streams that some page views (and only to those), like any other subscriber
of the graph, and keeps for each a bounded ring of its latest samples (signal and feature
streams) or events (event streams, the gate's decisions). The pages' data
WebSocket (:mod:`rtneuro.control.ui_routes`) computes its frames from the
rings at its own pace: a min/max envelope per pixel column for traces
(spikes and artefacts are never averaged away), a Welch spectrum, the new
events, the feedback values. Nothing is queued per browser, so a slow or
frozen one costs nothing; nothing here runs in a node's process.

The tap also matches the participant display's paint reports to the chunks
it sent, for the decision-to-paint latency (docs/ui.md).

Wake-ups are what the pages cost the supervisor (a thread woken 30 times a
second costs more than the work it does), so the feedback stream has a
socket of its own that the event loop watches: a value wakes the loop once
and goes out at once. Every other stream's socket is read when the pages'
frames are computed (at most ``frame_rate`` times a second) or every
``COLD_DRAIN_S``, whichever comes first; nothing wakes the loop for it.

Untrusted input: the pages' messages are decoded by ``ui_routes``; what
reaches the tap is checked here again (view shapes, keys, times), bounded
and counted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.fft
import zmq

from ..errors import RtneuroError
from ..messages import DECISION_STATUS, Message, StreamMeta, event_label, topic_for
from ..ratelog import RateLog
from ..runtime.clock import lsl_clock
from ..runtime.latency import LatencyStats
from ..transport import Subscriber, TransportParams

__all__ = ["Tap", "View", "ViewError", "encode_frame", "encode_frames", "MAX_VIEWS", "MAX_VIEW_CHANNELS", "MAX_RING_BYTES"]

log = logging.getLogger("rtneuro.tap")

#: Views per client.
MAX_VIEWS = 32
#: Channels per view.
MAX_VIEW_CHANNELS = 256
#: Bins per trace view.
MAX_POINTS = 4096
#: A ring holds at most this many bytes (its history is shortened for wide, fast streams).
MAX_RING_BYTES = 32 * 1024 * 1024
#: Events kept per event stream.
MAX_EVENTS = 4096
#: Events per frame.
MAX_EVENTS_PER_FRAME = 256
#: Feedback chunks kept (for sending and for matching paint reports).
MAX_FEEDBACK_CHUNKS = 512
#: Displays whose latency is kept apart in the report (then: one 'other' entry).
MAX_DISPLAYS = 16
#: Paint records waiting for the recorder (beyond: counted, not kept).
MAX_PAINT_ROWS = 20_000
#: A paint reported later than this after the decision is refused (a clock gone wrong, or a forged report).
MAX_PAINT_LATENCY_S = 10.0
#: A stream no view wants is unsubscribed after this long (a page reloading keeps its stream).
RELEASE_AFTER_S = 5.0
#: Spectrum frames per second per view.
SPECTRUM_HZ = 4.0
#: The streams other than the feedback are read at least this often (seconds), pages or not.
COLD_DRAIN_S = 0.1


class ViewError(RtneuroError):
    """A view a page asked for that cannot be served (one line, sent back to the page)."""


@dataclass
class View:
    """One thing a page shows from one stream, and how far it has been sent."""

    id: str
    kind: str
    stream: str
    channels: list[int]
    span_s: float = 10.0
    points: int = 1000
    fmax: float = 60.0
    seconds: float = 2.0
    bin_len: int = 1
    #: next bin (trace), event counter (events), feedback key (feedback) to send
    next: int | None = None
    #: LSL time of the last spectrum sent
    last_t: float = 0.0
    #: the ring start this view's ``next`` belongs to
    gen: int = 0
    #: spectrum: (ring start, segment length) -> {segment start: its periodogram}; each segment is computed once
    segs: dict = field(default_factory=dict)


@dataclass
class _Ring:
    meta: StreamMeta
    cap: int
    buf: np.ndarray
    head: int | None = None  # absolute index of the next sample
    valid_from: int = 0  # oldest absolute index whose sample is in the ring
    t_index0: float = 0.0  # stream time of absolute index 0 (from the latest chunk)
    sfreq: float = 0.0
    chunks: int = 0
    gen: int = 0  # starts of the ring (a restarted source starts it again)


@dataclass
class _Events:
    meta: StreamMeta
    rows: collections.deque = field(default_factory=lambda: collections.deque(maxlen=MAX_EVENTS))
    count: int = 0  # events received so far (the counter a view resumes from)


@dataclass
class _Display:
    name: str
    d2p: LatencyStats = field(default_factory=LatencyStats)
    a2p: LatencyStats = field(default_factory=LatencyStats)
    paints: int = 0


class Tap:
    """Subscribes to viewed streams and keeps their recent data for the pages.

    Parameters
    ----------
    streams : dict of str -> StreamMeta
        The graph's streams.
    endpoints : dict of str -> str
        Each stream's publisher endpoint (its producing process's).
    transport : TransportParams
        The graph's transport (security, limits).
    history_s : float
        Seconds kept per stream (``ui.history_s``).
    feedback : str or None
        The participant display's stream: its chunks are keyed (for the paint reports) and it has a socket of its own.
    """

    def __init__(self, streams: dict[str, StreamMeta], endpoints: dict[str, str], transport: TransportParams,
                 history_s: float = 30.0, feedback: str | None = None) -> None:
        self.metas = dict(streams)
        #: each stream's publisher endpoint (the tap subscribes there only: no other publisher hears of it)
        self.endpoints = dict(endpoints)
        # the tap keeps up by itself (rings, not queues): 'latest' on its side, whatever the graph's policy
        self.params = dataclasses.replace(transport, policy="latest")
        self.history_s = float(history_s)
        self.feedback = feedback
        self.lock = threading.Lock()
        self.rings: dict[str, _Ring] = {}
        self.events: dict[str, _Events] = {}
        self._want: dict[str, int] = {}
        self._unwanted_since: dict[str, float] = {}
        self._subscribed: set[str] = set()
        self._feedback: collections.deque = collections.deque(maxlen=MAX_FEEDBACK_CHUNKS)
        self._key = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ctx: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False
        self._cold_at = 0.0
        self.displays: dict[str, _Display] = {}
        #: every display's paints together
        self.all_displays = _Display("all")
        self.paint_rows: list[list[float]] = []
        self.stats: dict[str, int] = {"messages": 0, "invalid": 0, "paints": 0, "paints_refused": 0, "paint_rows_dropped": 0,
                                      "views_refused": 0, "frames": 0, "messages_sent": 0, "frames_held": 0}
        self.ratelog = RateLog(log)
        #: (publisher endpoint, feedback socket?) -> subscriber (the loop's thread only)
        self.subs: dict[tuple[str, bool], Subscriber] = {}
        #: (event loop, asyncio.Event) of the pages' pumps: set when a feedback value arrives
        self._listeners: set[tuple[Any, Any]] = set()

    # -- life cycle (the control server's event loop) --------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Run in ``loop`` (the control server's; by default the running one); idempotent."""
        if self._loop is not None or self._stopped:
            return
        self._loop = loop or asyncio.get_running_loop()
        self._ctx = zmq.Context.instance()
        self._subscriptions()
        self._timer = self._loop.call_later(COLD_DRAIN_S, self._maintain)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Close the sockets (from any thread; waits at most ``timeout_s`` for the loop to do it)."""
        self._stopped = True
        loop = self._loop
        if loop is None:
            return
        done = threading.Event()

        def close() -> None:
            self._close()
            done.set()

        try:
            if loop.is_closed():
                raise RuntimeError("closed")
            loop.call_soon_threadsafe(close)
        except RuntimeError:  # the loop is gone: nothing runs there any more, close here
            self._close()
            return
        done.wait(timeout_s)

    def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for (_, hot), sub in self.subs.items():
            if hot and self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(sub.socket.FD)
            sub.close()
        self.subs.clear()
        self._subscribed.clear()
        self._loop = None

    def _maintain(self) -> None:
        """Every COLD_DRAIN_S: read the other streams if no page did, release what no view wants any more."""
        try:
            if lsl_clock() - self._cold_at >= COLD_DRAIN_S:
                self._drain_cold()
            self._subscriptions()
        except Exception as exc:  # a bug here must not take the server down; the pages stop updating
            self.ratelog.error("tap", "the UI's tap failed: %r", exc)
        if self._loop is not None and not self._stopped:
            self._timer = self._loop.call_later(COLD_DRAIN_S, self._maintain)

    def _sub(self, ep: str, hot: bool) -> Subscriber | None:
        sub = self.subs.get((ep, hot))
        if sub is None:
            try:
                sub = Subscriber(self._ctx, self.params)
                sub.connect(ep)
            except Exception as exc:  # the pages show no data for it; the run goes on
                self.ratelog.error("subscribe", "the UI's tap cannot subscribe to %s (%s)", ep, exc)
                return None
            self.subs[(ep, hot)] = sub
            if hot:
                assert self._loop is not None
                self._loop.add_reader(sub.socket.FD, self._on_hot, sub)
        return sub

    def _subscriptions(self) -> None:
        """Subscribe to streams newly wanted, unsubscribe those unwanted for a while (in the loop).

        One SUB socket per publisher (two for the feedback stream's: the
        feedback alone on one the loop watches): a subscription reaches only
        the process that publishes the stream.
        """
        if self._loop is None:
            return
        now = lsl_clock()
        with self.lock:
            wanted = {s for s, n in self._want.items() if n > 0}
            stale = [s for s in self._subscribed - wanted if now - self._unwanted_since.get(s, now) >= RELEASE_AFTER_S]
        for s in wanted - self._subscribed:
            hot = s == self.feedback
            sub = self._sub(self.endpoints[s], hot)
            if sub is None:
                continue
            meta = self.metas[s]
            sub.subscribe(topic_for(meta.kind, s), meta)
            self._subscribed.add(s)
            if hot:
                self._on_hot(sub)  # the FD signals edges: read what may have come already
        for s in stale:
            sub = self.subs[(self.endpoints[s], s == self.feedback)]
            topic = topic_for(self.metas[s].kind, s)
            sub.socket.setsockopt(zmq.UNSUBSCRIBE, topic)
            sub.streams.pop(topic, None)
            self._subscribed.discard(s)
            with self.lock:
                self.rings.pop(s, None)
                self.events.pop(s, None)

    def _on_hot(self, sub: Subscriber) -> None:
        """The feedback socket is readable (ZeroMQ's FD signals edges: read until it says nothing is left)."""
        try:
            while sub.socket.get(zmq.EVENTS) & zmq.POLLIN:
                msgs = sub.drain(10_000)
                if msgs:
                    self._absorb(msgs)
        except zmq.ZMQError as exc:  # the socket closed under us at the end of the run
            log.debug("tap feedback socket: %r", exc)

    def _drain_cold(self) -> None:
        """Read every other subscribed stream's socket (the loop's thread)."""
        self._cold_at = lsl_clock()
        for (_, hot), sub in list(self.subs.items()):
            if not hot and sub.streams:
                msgs = sub.drain(100_000)
                if msgs:
                    self._absorb(msgs)

    # -- data in --------------------------------------------------------------

    def _absorb(self, msgs: list[Message]) -> None:
        with self.lock:
            for m in msgs:
                if m.type != "data" or m.data is None:
                    continue
                self.stats["messages"] += 1
                meta = self.metas.get(m.stream)
                if meta is None:
                    continue
                if meta.kind in ("sig", "feat"):
                    self._ring_add(meta, m)
                else:
                    self._events_add(meta, m)

    def _ring_add(self, meta: StreamMeta, m: Message) -> None:
        ch = m.data
        assert ch is not None
        data = ch.data
        if data.ndim != 2 or data.shape[0] == 0:
            return
        ring = self.rings.get(meta.name)
        if ring is None:
            n_ch = data.shape[1]
            fs = meta.sfreq if meta.sfreq > 0 else 10.0
            cap = int(max(64, min(self.history_s * fs, MAX_RING_BYTES // (4 * max(n_ch, 1)))))
            ring = self.rings[meta.name] = _Ring(meta, cap, np.full((cap, n_ch), np.nan, dtype=np.float32))
        if data.shape[1] != ring.buf.shape[1]:
            return  # counted by the subscriber's shape check; never here
        first, n = int(ch.first), data.shape[0]
        if ring.head is None or first < ring.head or first - ring.head > ring.cap:  # start, restart, or a gap wider than the ring
            ring.head = first
            ring.valid_from = first
            ring.buf[:] = np.nan
            ring.gen += 1
        elif first > ring.head:  # a gap: blank it
            self._ring_write(ring, ring.head, np.full((first - ring.head, ring.buf.shape[1]), np.nan, dtype=np.float32))
        self._ring_write(ring, first, np.asarray(data, dtype=np.float32))
        ring.head = first + n
        ring.valid_from = max(ring.valid_from, ring.head - ring.cap)
        ring.sfreq = float(ch.sfreq or meta.sfreq)
        if ring.sfreq > 0:
            ring.t_index0 = float(ch.t0) - first / ring.sfreq
        ring.chunks += 1
        if meta.name == self.feedback:
            trace = ch.trace or []
            t_acq = float(trace[0][1]) if trace else math.nan
            t_dec = float(trace[-1][1]) if trace else math.nan
            self._key += 1
            self._feedback.append((self._key, first, float(ch.t0), np.array(data[-1:], dtype=np.float32), t_acq, t_dec, n))
            self._notify()

    @staticmethod
    def _ring_write(ring: _Ring, start: int, block: np.ndarray) -> None:
        if block.shape[0] > ring.cap:
            start += block.shape[0] - ring.cap
            block = block[-ring.cap:]
        i = start % ring.cap
        k = min(block.shape[0], ring.cap - i)
        ring.buf[i:i + k] = block[:k]
        if k < block.shape[0]:
            ring.buf[: block.shape[0] - k] = block[k:]

    def _events_add(self, meta: StreamMeta, m: Message) -> None:
        assert m.data is not None
        arr = m.data.data
        if arr.dtype.names is None or arr.ndim != 1:
            return
        ev = self.events.get(meta.name)
        if ev is None:
            ev = self.events[meta.name] = _Events(meta)
        for row in arr[-MAX_EVENTS:]:
            ev.rows.append(row.copy())
        ev.count += len(arr)

    def listen(self, listener: tuple[Any, Any]) -> None:
        """``(loop, event)``: ``event`` is set (in ``loop``) whenever a feedback value arrives."""
        with self.lock:
            self._listeners.add(listener)

    def unlisten(self, listener: tuple[Any, Any]) -> None:
        with self.lock:
            self._listeners.discard(listener)

    def _notify(self) -> None:
        """A feedback value arrived (in the loop's thread, where the pumps wait): wake them."""
        for _, event in list(self._listeners):
            event.set()

    # -- views ----------------------------------------------------------------

    def make_view(self, spec: Any) -> View:
        """A validated :class:`View` from a page's JSON, or a ViewError (one line)."""
        if not isinstance(spec, dict):
            raise ViewError("a view is a JSON object such as {\"id\": \"t1\", \"kind\": \"trace\", \"stream\": \"eeg\"}")
        vid = spec.get("id")
        if not isinstance(vid, str) or not 0 < len(vid) <= 64:
            raise ViewError("view 'id' must be a string of 1 to 64 characters")
        kind = spec.get("kind")
        if kind not in ("trace", "spectrum", "events", "feedback"):
            raise ViewError(f"view '{vid}': kind must be trace, spectrum, events or feedback, not {str(kind)[:20]!r}")
        stream = spec.get("stream")
        meta = self.metas.get(stream) if isinstance(stream, str) else None
        if meta is None:
            raise ViewError(f"view '{vid}': no stream {str(stream)[:60]!r}; the streams are in GET /api/graph")
        if kind in ("trace", "spectrum", "feedback") and meta.kind not in ("sig", "feat"):
            raise ViewError(f"view '{vid}': stream '{stream}' holds {meta.kind} records; a {kind} view needs a signal or feature stream")
        if meta.dtype == "command":
            raise ViewError(f"view '{vid}': commands travel on the stimulator's command socket, not to the pages; "
                            "view the stimulator's '<id>.decisions' stream")
        if stream not in self.endpoints:
            raise ViewError(f"view '{vid}': stream '{stream}' is not published where the pages can see it")
        if kind == "events" and meta.kind in ("sig", "feat"):
            raise ViewError(f"view '{vid}': stream '{stream}' is a {meta.kind} stream; an events view needs an event or decision stream")
        if kind == "spectrum" and not meta.sfreq > 0:
            raise ViewError(f"view '{vid}': stream '{stream}' has no regular rate; a spectrum needs one")
        if kind == "feedback" and stream != self.feedback:
            raise ViewError(f"view '{vid}': feedback comes from the participant display's stream ({self.feedback}), not '{stream}'")
        n_ch = meta.n_channels if meta.kind in ("sig", "feat") else 0
        chans = spec.get("channels")
        if chans is None:
            chans = list(range(min(n_ch, MAX_VIEW_CHANNELS)))
        if (not isinstance(chans, list) or len(chans) > MAX_VIEW_CHANNELS
                or not all(type(c) is int and 0 <= c < max(n_ch, 1) for c in chans)):
            raise ViewError(f"view '{vid}': channels must be a list of at most {MAX_VIEW_CHANNELS} column indices from 0 to {max(n_ch - 1, 0)}")
        v = View(vid, kind, stream, chans)
        for key, lo, hi in (("span_s", 0.1, 600.0), ("points", 8, MAX_POINTS), ("fmax", 0.1, 1e6), ("seconds", 0.1, 60.0)):
            if key in spec:
                x = spec[key]
                if type(x) not in (int, float) or not lo <= x <= hi:
                    raise ViewError(f"view '{vid}': {key} must be a number from {lo:g} to {hi:g}")
                setattr(v, key, int(x) if key == "points" else float(x))
        fs = meta.sfreq if meta.sfreq > 0 else 10.0
        v.bin_len = max(1, int(fs * v.span_s / v.points))
        return v

    def want(self, views: list[View]) -> None:
        with self.lock:
            for v in views:
                self._want[v.stream] = self._want.get(v.stream, 0) + 1
                self._unwanted_since.pop(v.stream, None)
        self._subscriptions()

    def unwant(self, views: list[View]) -> None:
        now = lsl_clock()
        with self.lock:
            for v in views:
                n = self._want.get(v.stream, 0) - 1
                self._want[v.stream] = max(n, 0)
                if n <= 0:
                    self._unwanted_since[v.stream] = now

    # -- frames out -----------------------------------------------------------

    def frames(self, views: list[View], now: float) -> list[tuple[dict, list[tuple[str, np.ndarray]]]]:
        """The frames due for ``views`` (each ``(header, [(name, array), ...])``), advancing each view."""
        out: list[tuple[dict, list[tuple[str, np.ndarray]]]] = []
        if self._loop is not None and any(v.kind != "feedback" for v in views) and lsl_clock() - self._cold_at >= 0.005:
            self._drain_cold()  # one read per tick, however many pages
        with self.lock:
            for v in views:
                if v.kind == "trace":
                    f = self._trace(v)
                elif v.kind == "spectrum":
                    f = self._spectrum(v, now)
                elif v.kind == "events":
                    f = self._events(v)
                else:
                    f = self._feedback_frame(v)
                if f is not None:
                    out.append(f)
        return out

    def _read(self, ring: _Ring, start: int, n: int, chans: list[int]) -> np.ndarray:
        """Samples ``start .. start + n`` of the channels ``chans`` (one copy of just those)."""
        i = start % ring.cap
        if i + n <= ring.cap:
            return ring.buf[i:i + n, chans]
        return np.concatenate([ring.buf[i:, chans], ring.buf[: i + n - ring.cap, chans]])

    def _trace(self, v: View) -> tuple[dict, list] | None:
        ring = self.rings.get(v.stream)
        if ring is None or ring.head is None:
            return None
        b = v.bin_len
        if v.gen != ring.gen:  # the stream (re)started since: from its first bins again
            v.next, v.gen = None, ring.gen
        end_bin = ring.head // b
        oldest = -(-ring.valid_from // b)
        start = v.next if v.next is not None else end_bin - v.points
        start = max(start, end_bin - v.points, oldest)  # a client that fell behind starts at the newest bins
        n_bins = end_bin - start
        if n_bins <= 0:
            return None
        x = self._read(ring, start * b, n_bins * b, v.channels).reshape(n_bins, b, len(v.channels))
        env = np.empty((n_bins, len(v.channels), 2), dtype=np.float32)
        env[..., 0] = np.fmin.reduce(x, axis=1)
        env[..., 1] = np.fmax.reduce(x, axis=1)
        v.next = end_bin
        header = {"type": "trace", "view": v.id, "stream": v.stream, "sfreq": ring.sfreq, "bin_len": b, "first_bin": start,
                  "t_first": _finite(ring.t_index0 + start * b / ring.sfreq) if ring.sfreq > 0 else None, "channels": v.channels}
        return header, [("env", env)]

    def _spectrum(self, v: View, now: float) -> tuple[dict, list] | None:
        """Welch's estimate over the last ``seconds`` up to the newest segment boundary (absolute multiples of the
        half-overlap step), so that each segment's periodogram is computed once and kept while it is in the window."""
        ring = self.rings.get(v.stream)
        if ring is None or ring.head is None or now - v.last_t < 1.0 / SPECTRUM_HZ:
            return None
        fs = ring.sfreq
        avail = min(int(v.seconds * fs), ring.head - ring.valid_from)
        if avail < 8:
            return None
        nper = int(2 ** round(math.log2(max(fs, 8.0))))
        nper = min(nper, 1 << int(math.log2(avail)))
        step = nper - nper // 2
        end = ring.head - ring.head % step
        k = (min(int(v.seconds * fs), end - ring.valid_from) - nper) // step + 1
        if k < 1 or end == v.next:
            return None
        starts = range(end - nper - (k - 1) * step, end - nper + 1, step)
        cache = v.segs.setdefault((ring.gen, nper), {})
        if len(v.segs) > 1:  # the stream restarted or the segment length grew: the old ones no longer apply
            v.segs = {(ring.gen, nper): cache}
        new = [a for a in starts if a not in cache]
        if new:
            segs = np.stack([np.nan_to_num(self._read(ring, a, nper, v.channels), nan=0.0) for a in new])
            f, pxx = _periodograms(segs, fs, nper)
            keep = f <= v.fmax
            for a, p in zip(new, pxx[:, keep], strict=True):
                cache[a] = p
        for a in [a for a in cache if a < starts[0]]:
            del cache[a]
        f = np.fft.rfftfreq(nper, 1.0 / fs)
        f = f[f <= v.fmax]
        pxx = np.mean([cache[a] for a in starts], axis=0)
        psd_db = (10.0 * np.log10(pxx.T + 1e-30)).astype(np.float32)
        v.last_t, v.next = now, end
        header = {"type": "spectrum", "view": v.id, "stream": v.stream, "channels": v.channels,
                  "t": _finite(ring.t_index0 + end / fs)}
        return header, [("freqs", f.astype(np.float32)), ("psd_db", psd_db)]

    def _events(self, v: View) -> tuple[dict, list] | None:
        ev = self.events.get(v.stream)
        if ev is None:
            return None
        start = ev.count - len(ev.rows)
        nxt = v.next if v.next is not None else ev.count - MAX_EVENTS_PER_FRAME
        nxt = max(nxt, start, ev.count - MAX_EVENTS_PER_FRAME)
        if nxt >= ev.count:
            v.next = ev.count
            return None
        rows = np.array(list(ev.rows)[nxt - start:], dtype=ev.rows[0].dtype)
        v.next = ev.count
        names = rows.dtype.names or ()
        if "status" in names:  # the gate's decisions
            status = rows["status"].astype(np.int32)
            header = {"type": "decisions", "view": v.id, "stream": v.stream,
                      "status": [DECISION_STATUS.get(int(s), str(int(s))) for s in status],
                      "reason": [event_label(r) for r in rows["reason"]]}
            arrays = [("time", rows["time"].astype(np.float64)), ("t_stream", rows["t_stream"].astype(np.float64)),
                      ("amplitude_ma", rows["amplitude_ma"].astype(np.float64)),
                      ("frequency_hz", rows["frequency_hz"].astype(np.float64)),
                      ("channel", rows["channel"].astype(np.int32)), ("status", status)]
            return header, arrays
        if "label" not in names:
            return None
        header = {"type": "events", "view": v.id, "stream": v.stream, "labels": [event_label(r) for r in rows["label"]]}
        arrays = [("time", rows["time"].astype(np.float64)), ("channel", rows["channel"].astype(np.int32)),
                  ("code", rows["code"].astype(np.int32)), ("value", rows["value"].astype(np.float64))]
        return header, arrays

    def _feedback_frame(self, v: View) -> tuple[dict, list] | None:
        if not self._feedback:
            return None
        key, first, t0, values, _, _, n = self._feedback[-1]  # newest wins: the display shows the latest value only
        if v.next is not None and key <= v.next:
            return None
        v.next = key
        meta = self.metas[v.stream]
        header = {"type": "feedback", "view": v.id, "stream": v.stream, "key": key, "index": first, "n": n,
                  "t_first": _finite(t0), "channels": list(meta.ch_names)}
        return header, [("values", values)]

    # -- paint reports --------------------------------------------------------

    def paint(self, who: str, items: Any) -> int:
        """The participant display painted the feedback chunks ``items`` (``[[key, t_lsl], ...]``); returns how many counted."""
        if not isinstance(items, list):
            return 0
        now = lsl_clock()
        ok = 0
        with self.lock:
            by_key = {c[0]: c for c in self._feedback}
            disp = self.displays.get(who)
            if disp is None:
                if len(self.displays) >= MAX_DISPLAYS:
                    who = "other"
                disp = self.displays.setdefault(who, _Display(who))
            d2ps: list[float] = []
            a2ps: list[float] = []
            for item in items[:256]:
                if (not isinstance(item, list) or len(item) != 2 or type(item[0]) is not int
                        or type(item[1]) not in (int, float) or not math.isfinite(item[1])):
                    self.stats["paints_refused"] += 1
                    continue
                c = by_key.get(item[0])
                t_paint = float(item[1])
                if c is None or not c[5] <= t_paint <= min(now + 0.5, c[5] + MAX_PAINT_LATENCY_S):
                    self.stats["paints_refused"] += 1  # unknown key, a paint before the decision, or from the future
                    continue
                key, first, t0, _, t_acq, t_dec, _ = c
                d2p, a2p = (t_paint - t_dec) * 1e6, (t_paint - t_acq) * 1e6
                d2ps.append(d2p)
                a2ps.append(a2p)
                ok += 1
                if len(self.paint_rows) < MAX_PAINT_ROWS:
                    self.paint_rows.append([t0, t_paint, float(first), a2p / 1e3, d2p / 1e3])
                else:
                    self.stats["paint_rows_dropped"] += 1
            for dd in (disp, self.all_displays):  # one update per message, not per item
                dd.d2p.extend(d2ps)
                dd.a2p.extend(a2ps)
                dd.paints += ok
            self.stats["paints"] += ok
        if len(items) > ok:
            self.ratelog.warning("paint", "participant display '%s': %d paint report items refused (unknown key, or a "
                                 "time before the decision or in the future: is the page's clock exchange working?)", who, len(items) - ok)
        return ok

    def take_paint_rows(self) -> list[list[float]]:
        with self.lock:
            rows, self.paint_rows = self.paint_rows, []
        return rows

    def report(self) -> dict:
        """The run report's ``display`` section: decision-to-paint and acquisition-to-paint latency per display (ms)."""
        def ms(s: LatencyStats) -> dict:
            d = s.summary()
            return {k: (round(v / 1e3, 3) if k in ("p50", "p99", "max", "mean") and v is not None else v) for k, v in d.items()}

        with self.lock:
            displays = {d.name: {"paints": d.paints, "decision_to_paint_ms": ms(d.d2p), "acquisition_to_paint_ms": ms(d.a2p)}
                        for d in self.displays.values()}
            return {"stream": self.feedback, "displays": displays, "decision_to_paint_ms": ms(self.all_displays.d2p),
                    "acquisition_to_paint_ms": ms(self.all_displays.a2p), **self.stats}


def _periodograms(segs: np.ndarray, fs: float, nper: int) -> tuple[np.ndarray, np.ndarray]:
    """Each segment's one-sided periodogram as scipy.signal.welch makes it (Hann, constant detrend, density):
    ``segs`` is (segments, nper, channels); returns the frequencies and (segments, freqs, channels)."""
    w = np.hanning(nper + 1)[:-1]  # periodic Hann, as scipy's get_window("hann", nper)
    segs = (segs - segs.mean(axis=1, keepdims=True)) * w.astype(segs.dtype)[None, :, None]
    spec = scipy.fft.rfft(segs, axis=1)  # in the segments' precision (float32 from the rings)
    pxx = (spec.real.astype(np.float64) ** 2 + spec.imag.astype(np.float64) ** 2) / (fs * (w ** 2).sum())
    pxx[:, 1:-1 if nper % 2 == 0 else None] *= 2.0
    return np.fft.rfftfreq(nper, 1.0 / fs), pxx


_CODES = {np.dtype("<f4"): "f4", np.dtype("<f8"): "f8", np.dtype("<i4"): "i4"}


def encode_frame(header: dict, arrays: list[tuple[str, np.ndarray]]) -> bytes:
    """A binary frame (docs/ui.md): u32 header length, JSON header, arrays each at a multiple of 8 bytes;
    its length is a multiple of 8, so frames put end to end (:func:`encode_frames`) stay aligned."""
    blobs = [np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")) for _, a in arrays]
    header = {**header, "arrays": [[name, _CODES[b.dtype], list(b.shape)] for (name, _), b in zip(arrays, blobs, strict=True)]}
    h = _dumps(header).encode()
    parts: list[bytes | memoryview] = [len(h).to_bytes(4, "little"), h]
    size = 4 + len(h)
    for b in blobs:
        pad = -size % 8
        parts.append(b"\0" * pad)
        parts.append(b.data)
        size += pad + b.nbytes
    parts.append(b"\0" * (-size % 8))
    return b"".join(parts)


def encode_frames(frames: list[tuple[dict, list[tuple[str, np.ndarray]]]], seq: int) -> bytes:
    """One WebSocket message: the frames of one tick end to end, each with the message's ``seq`` (acknowledged once)."""
    return b"".join(encode_frame({**header, "seq": seq}, arrays) for header, arrays in frames)


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _nan_none(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"{type(o).__name__} in a frame header")


#: one encoder for every header (json.dumps with options builds a new one per call)
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_nan_none).encode
