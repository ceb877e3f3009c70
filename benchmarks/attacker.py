"""Hostile traffic against a running graph: every socket kind of every service.

:class:`Attacker` reads a run's plan (``plan.json`` in the run folder, which
names every endpoint) and sends, at a fixed rate, a mix of what an attacker
or a broken peer sends:

``garbage``     random frames (random count and sizes) to command, data and
                control sockets
``truncated``   a well-formed command message cut short
``shape``       a header declaring a shape such as ``[2**63, 0]``
``oversized``   a message larger than the graph's ``max_message_bytes``
``forged_eos``  end of stream of the stimulator's command stream, from a
                sender that is not its controller
``forged_cmd``  well-formed stimulation commands from strangers: pulses at
                1 kHz, far-future times, NaN deadlines, replayed sequence
                numbers
``identity``    each of these from a fresh sender identity
``subscribe``   distinct subscriptions (and garbage subscription frames) to
                every data publisher
``control``     malformed and unknown operations to the supervisor's
                control socket

With ``mode="control"`` it sends the same number of messages, from the same
sockets at the same rate, but each one well formed, on a topic nobody reads:
the attacker's own CPU use is then the same in both runs, and the difference
in the graph's latency is the cost of the hostility alone.

Run it as a process: ``python -m benchmarks.attacker RUN_DIR --duration 10``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import zmq

from rtneuro.messages import CMD_PULSE, COMMAND_DTYPE, SCHEMA_VERSION, Chunk, encode, encode_eos

__all__ = ["Attacker", "KINDS"]

KINDS = ("garbage", "truncated", "shape", "oversized", "forged_eos", "forged_cmd", "identity", "subscribe", "control")


def _pulse(n: int) -> np.ndarray:
    rec = np.zeros(n, dtype=COMMAND_DTYPE)
    rec["kind"] = CMD_PULSE
    rec["amplitude_ma"] = 4.0
    rec["pulse_width_us"] = 300.0
    return rec


class Attacker:
    """Sends hostile (or, ``mode="control"``, harmless) traffic to a run's sockets.

    Parameters
    ----------
    plan : dict
        The run's plan (``plan.json``): ``endpoints`` and ``control``.
    mode : {"hostile", "control"}
    seed : int
    max_message_bytes : int
        The graph's limit; ``oversized`` messages exceed it by half.
    """

    def __init__(self, plan: dict, mode: str = "hostile", seed: int = 0,
                 max_message_bytes: int = 1 << 20) -> None:
        if mode not in ("hostile", "control"):
            raise ValueError(f"mode must be 'hostile' or 'control', got {mode!r}")
        self.mode = mode
        self.rng = np.random.default_rng(seed)
        self.ctx = zmq.Context()
        eps = plan["endpoints"]
        self.cmd_streams = sorted({s["name"] for s in plan.get("streams", {}).values()
                                   if isinstance(s, dict) and s.get("kind") == "cmd"}) or ["ctl"]
        home = {n["id"]: n["process"] for n in plan.get("nodes", [])}
        # command sockets of the processes that take commands (stimulators); data sockets of every process
        takers = {n["process"] for n in plan.get("nodes", []) if set(n.get("inputs", ())) & set(self.cmd_streams)}
        self.cmd_eps = [e["cmd"] for name, e in eps.items() if name in takers] or [e["cmd"] for e in eps.values()]
        self.pub_eps = [e["pub"] for e in eps.values()]
        self.ctl_ep = plan["control"]
        #: the processes that send commands: forged identities take their names
        self.senders = sorted({home.get(plan.get("producer", {}).get(s), "control") for s in self.cmd_streams}) or ["control"]
        self.max_bytes = int(max_message_bytes)
        self._dealers = [self._dealer(ep) for ep in self.cmd_eps]
        self._xsubs = []
        for ep in self.pub_eps:
            s = self.ctx.socket(zmq.XSUB)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 100_000)
            s.connect(ep)
            self._xsubs.append(s)
        self._ctl = self._dealer(self.ctl_ep)
        # oversized messages on connections of their own: libzmq drops the connection that carries one
        # (MAXMSGSIZE), and the other kinds must keep theirs
        self._big = [self._dealer(ep) for ep in self.cmd_eps]
        self.sent = dict.fromkeys(KINDS, 0)
        self._pools: dict[str, list] = {}
        self._i = 0
        self._oversized = b"\0" * (self.max_bytes + self.max_bytes // 2)
        self.dropped = 0  # sends that would have blocked (the target's queue was full)
        self._seq = 0

    def _dealer(self, ep: str, identity: bytes | None = None) -> zmq.Socket:
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 100_000)
        s.setsockopt(zmq.RCVHWM, 10)
        if identity is not None:
            s.setsockopt(zmq.ROUTING_ID, identity)
        s.connect(ep)
        return s

    def _send(self, sock: zmq.Socket, frames: list) -> None:
        try:
            sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.dropped += 1

    def _rand(self, lo: int, hi: int) -> bytes:
        return self.rng.bytes(int(self.rng.integers(lo, hi)))

    def _cmd_msg(self, stream: str, n: int = 1, t0: float = 0.0, deadline: float | None = math.nan) -> list:
        self._seq += 1
        extra = {} if deadline is None else {"deadline": deadline}
        return encode("cmd", stream, self._seq, int(self.rng.integers(1, 2**31)),
                      Chunk(_pulse(n), self._seq, t0, 1000.0, [["attacker", time.time()]], extra))

    def _harmless(self) -> list:
        """A well-formed message on a topic no one reads."""
        self._seq += 1
        return encode("sig", "nobody-reads-this", self._seq, 1, Chunk(np.zeros((4, 2)), 0, 0.0, 100.0, []))

    def one(self, kind: str) -> None:
        """Send one message of ``kind`` (its harmless twin in control mode).

        Messages are drawn from a pool made once per kind (256 random
        variants), so that the attacker's own cost per message stays small
        and it can keep its rate; a fresh identity is a new socket each time.
        """
        self.sent[kind] += 1
        if kind == "identity" and self.mode == "hostile":
            r = self.rng
            name = self.senders[int(r.integers(len(self.senders)))].encode()
            ident = name + b":" + str(int(r.integers(0, 2**31))).encode() if r.random() < 0.5 else self._rand(1, 32)
            s = self._dealer(self.cmd_eps[int(r.integers(len(self.cmd_eps)))], ident.replace(b"\0", b"x") or b"x")
            self._send(s, self._cmd_msg(self.cmd_streams[0]))
            s.close(linger=0)
            return
        pool = self._pools.get(kind)
        if pool is None:
            pool = self._pools[kind] = [self._make(kind) for _ in range(256)]
        self._i += 1
        for sock, frames in pool[self._i % len(pool)]:
            self._send(sock, frames)

    def _make(self, kind: str) -> list[tuple[zmq.Socket, list]]:
        """One message of ``kind``: ``[(socket, frames), ...]`` (a replay is two sends)."""
        r = self.rng
        dealer = self._dealers[int(r.integers(len(self._dealers)))]
        if self.mode == "control":
            target = self._xsubs[int(r.integers(len(self._xsubs)))] if kind == "subscribe" else (
                self._ctl if kind == "control" else self._big[0] if kind == "oversized" else dealer)
            frames = self._harmless()
            if kind == "subscribe":
                frames = [b"\x02" + frames[0], *frames[1:]]  # not a (un)subscription: a plain message, ignored
            return [(target, frames)] * (2 if kind == "forged_cmd" else 1)  # as many as the hostile twin
        stream = self.cmd_streams[int(r.integers(len(self.cmd_streams)))]
        if kind == "garbage":
            return [(dealer, [self._rand(0, 64) for _ in range(int(r.integers(1, 5)))])]
        if kind == "truncated":
            frames = self._cmd_msg(stream)
            cut = int(r.integers(0, 3))
            buf = bytes(frames[cut]) if cut < 2 else frames[2].tobytes()
            frames[cut] = buf[: int(r.integers(0, max(1, len(buf))))]
            return [(dealer, frames)]
        if kind == "shape":
            header = {"v": SCHEMA_VERSION, "type": "data", "stream": stream, "seq": 1, "inc": 1, "first": 0,
                      "sfreq": 0.0, "t0": 0.0, "arrays": [["command", [2**63, 0]]], "trace": []}
            return [(dealer, [f"cmd.{stream}".encode(), msgpack.packb(header), b""])]
        if kind == "oversized":
            big = self._big[int(r.integers(len(self._big)))]
            return [(big, [f"cmd.{stream}".encode(), b"\x80", self._oversized])]
        if kind == "forged_eos":
            return [(dealer, encode_eos("cmd", stream, int(r.integers(0, 1000)), int(r.integers(1, 2**31)), 0))]
        if kind in ("forged_cmd", "identity"):
            t0 = [time.time() + 300.0, -1e9, math.nan, 0.0][int(r.integers(4))]
            frames = self._cmd_msg(stream, n=int(r.integers(1, 50)), t0=t0 if math.isfinite(t0) else 0.0,
                                   deadline=[math.nan, None, 1e18][int(r.integers(3))])
            return [(dealer, frames), (dealer, frames)]  # and replayed
        if kind == "subscribe":
            x = self._xsubs[int(r.integers(len(self._xsubs)))]
            return [(x, [b"\x01sig." + self._rand(1, 24)] if r.random() < 0.8 else [self._rand(0, 32)])]
        if kind == "control":
            if r.random() < 0.5:
                return [(self._ctl, [self._rand(0, 64)])]
            # operations a local client may not send, or with arguments of the wrong type (a real
            # 'stop' or 'estop' is an authorised operator action, not an attack on this socket)
            op = ["ready", "status", "final", "bogus", 7, None][int(r.integers(6))]
            return [(self._ctl, [msgpack.packb({"op": op, "positions": self._rand(0, 16), "counts": [1, {}]})])]
        raise ValueError(f"unknown kind {kind!r}; known: {KINDS}")

    def run(self, duration_s: float, rate_hz: float = 10_000.0, kinds: tuple[str, ...] = KINDS) -> dict:
        """Send ``rate_hz`` messages per second for ``duration_s``, round robin over ``kinds``; returns counts."""
        period = 1.0 / rate_hz
        t_start = time.monotonic()
        n = 0
        weights = np.array([0.05 if k == "identity" else 0.2 if k == "oversized" else 1.0 for k in kinds])
        order = self.rng.choice(len(kinds), size=65536, p=weights / weights.sum())
        while True:
            now = time.monotonic()
            if now - t_start >= duration_s:
                break
            due = int((now - t_start) / period) + 1
            while n < due and (n & 255 or time.monotonic() - t_start < duration_s):
                self.one(kinds[order[n & 0xFFFF]])
                n += 1
            time.sleep(max(0.0, t_start + n * period - time.monotonic()))
        return {"mode": self.mode, "sent": dict(self.sent), "total": n, "would_block": self.dropped,
                "rate_hz": round(n / max(1e-9, time.monotonic() - t_start), 1)}

    def close(self) -> None:
        self.ctx.destroy(linger=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", help="the run folder holding plan.json")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=10_000.0)
    ap.add_argument("--mode", choices=("hostile", "control"), default="hostile")
    ap.add_argument("--max-message-bytes", type=int, default=1 << 20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    plan = json.loads((Path(args.run_dir) / "plan.json").read_text())
    atk = Attacker(plan, args.mode, args.seed, args.max_message_bytes)
    try:
        res = atk.run(args.duration, args.rate)
    finally:
        atk.close()
    res["pid"] = os.getpid()
    text = json.dumps(res)
    if args.json:
        Path(args.json).write_text(text)
    else:
        print(text, file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
