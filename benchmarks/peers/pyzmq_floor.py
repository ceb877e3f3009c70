"""Latency floor: the bytes of the rtneuro chain over raw pyzmq, no framework.

Five processes, four hops, the same socket types and the same bytes as the
one-process-per-node rtneuro chain (source -> band-pass -> band power ->
threshold -> stimulator):

    source  --PUB/SUB-->  relay1  --PUB/SUB-->  relay2  --PUB/SUB-->  relay3  --DEALER/ROUTER-->  sink

Each message is ``[topic, msgpack header, payload]`` with the payload sizes of
the real chain: 32 x 64 float64 (16 kB) for the first two hops, 320 float64
features for the third, one 35-byte command record for the last. The sink
acknowledges each command as rtneuro's stimulate service does. Relays forward
without decoding the header or touching the payload: no validation, no
processing. The source paces exactly as rtneuro's (``sleep_until``) and stamps
the due time of each chunk's last sample; the sink records
``time.monotonic() - t_acq``.

Usage (driven by benchmarks/latency.py)::

    python -m benchmarks.peers.pyzmq_floor --duration 20 --json out.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import numpy as np
import zmq

from rtneuro.runtime.clock import sleep_until

WARMUP_S = 2.0
PAYLOAD_BYTES = [32 * 64 * 8, 32 * 64 * 8, 320 * 8, 35]


def _source(ep_out: str, sfreq: float, chunk: int, duration: float) -> None:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.bind(ep_out)
    # wait for the subscriber (as rtneuro does)
    pub.recv()
    data = np.random.default_rng(0).standard_normal((chunk, 64))
    n_chunks = int((WARMUP_S + duration) * sfreq / chunk)
    t_start = time.monotonic() + 0.1
    for k in range(n_chunks + 1):
        due = t_start + ((k + 1) * chunk - 1) / sfreq
        sleep_until(due)
        header = msgpack.packb({"v": 1, "type": "data", "stream": "x", "seq": k, "inc": 1, "first": k * chunk,
                                "sfreq": sfreq, "t0": due, "arrays": [["<f8", [chunk, 64]]], "trace": [["src", due]]})
        pub.send_multipart([b"sig.x", header, data], copy=False)
    pub.send_multipart([b"sig.x", b"end", b""])
    time.sleep(0.5)


def _relay(ep_in: str, ep_out: str, hop: int, last: bool) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.connect(ep_in)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    if last:
        out = ctx.socket(zmq.DEALER)
        out.connect(ep_out)
    else:
        out = ctx.socket(zmq.XPUB)
        out.bind(ep_out)
        out.recv()  # subscriber connected
    payload = np.zeros(PAYLOAD_BYTES[hop + 1], dtype=np.uint8)
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    if last:
        poller.register(out, zmq.POLLIN)
    while True:
        for sock, _ in poller.poll(1000):
            if sock is out:
                out.recv_multipart()  # ack
                continue
            frames = sub.recv_multipart(copy=False)
            if frames[1].bytes == b"end":
                out.send_multipart([b"cmd.x", b"end", b""])
                time.sleep(0.3)
                return
            out.send_multipart([b"cmd.x" if last else b"sig.x", frames[1], payload], copy=False)


def _sink(ep_in: str, json_path: str, sfreq: float, chunk: int) -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind(ep_in)
    lat = []
    while True:
        frames = router.recv_multipart(copy=False)
        now = time.monotonic()
        if frames[2].bytes == b"end":
            break
        h = msgpack.unpackb(frames[2].buffer)
        router.send_multipart([frames[0], b"ctl.x", msgpack.packb({"v": 1, "type": "ack", "seq": h["seq"]})])
        if h["first"] >= WARMUP_S * sfreq:
            lat.append((now - h["trace"][0][1]) * 1e6)
    Path(json_path).write_text(json.dumps({"latencies_us": lat, "n": len(lat), "error": None}))


def run(duration: float, json_path: str, sfreq: float = 1000.0, chunk: int = 32) -> dict:
    """Start the five processes, wait for them, return the sink's result."""
    with tempfile.TemporaryDirectory(prefix="rtn-floor-") as d:
        eps = [f"ipc://{d}/h{i}" for i in range(4)]
        py = [sys.executable, "-m", "benchmarks.peers.pyzmq_floor", "--role"]
        common = ["--sfreq", str(sfreq), "--chunk", str(chunk), "--duration", str(duration)]
        procs = [
            subprocess.Popen([*py, "sink", "--ep-in", eps[3], "--json", json_path, *common]),
            subprocess.Popen([*py, "relay", "--ep-in", eps[2], "--ep-out", eps[3], "--hop", "2", "--last", *common]),
            subprocess.Popen([*py, "relay", "--ep-in", eps[1], "--ep-out", eps[2], "--hop", "1", *common]),
            subprocess.Popen([*py, "relay", "--ep-in", eps[0], "--ep-out", eps[1], "--hop", "0", *common]),
            subprocess.Popen([*py, "source", "--ep-out", eps[0], *common]),
        ]
        try:
            deadline = time.monotonic() + WARMUP_S + duration + 60
            for p in procs:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            return {"error": "pyzmq floor timed out", "latencies_us": []}
        try:
            return json.loads(Path(json_path).read_text())
        except (OSError, ValueError) as exc:
            return {"error": f"pyzmq floor produced no result ({exc})", "latencies_us": []}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", choices=["source", "relay", "sink"], default=None)
    ap.add_argument("--ep-in")
    ap.add_argument("--ep-out")
    ap.add_argument("--hop", type=int, default=0)
    ap.add_argument("--last", action="store_true")
    ap.add_argument("--json", default="pyzmq_floor.json")
    ap.add_argument("--sfreq", type=float, default=1000.0)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--duration", type=float, default=20.0)
    a = ap.parse_args()
    if a.role == "source":
        _source(a.ep_out, a.sfreq, a.chunk, a.duration)
    elif a.role == "relay":
        _relay(a.ep_in, a.ep_out, a.hop, a.last)
    elif a.role == "sink":
        _sink(a.ep_in, a.json, a.sfreq, a.chunk)
    else:
        res = run(a.duration, a.json, a.sfreq, a.chunk)
        v = np.array(res["latencies_us"])
        print(f"n={v.size} p50={np.median(v):.0f} us p99={np.percentile(v, 99):.0f} us max={v.max():.0f} us")


if __name__ == "__main__":
    main()
