"""The pages' server side on a running graph: real HTTP, real WebSockets, a real tap on real ZeroMQ streams.

One module-scoped run (64 channels at 1 kHz, a bandpower feature, a
threshold controller and a simulated stimulator, the participant display on
the feature) serves every test here; each test is a client of it:

* the pages and their assets are served (no token; a Content-Security-Policy
  that allows nothing from elsewhere), a path outside the assets is not;
* the data socket needs a token; an observer token reads;
* a client that stops reading (no acks, no reads) holds at most its window
  of frames, the server's memory does not grow with it, and the other
  clients go on receiving;
* hostile messages are answered with one line, counted, and the socket
  stays usable;
* paints reported by a client give the report's display latency and the
  recorded session's ``rtneuro.display`` stream.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
import websockets.exceptions
from websockets.exceptions import InvalidStatus

from rtneuro.control.auth import create_token
from rtneuro.runtime.clock import lsl_clock

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ui_server")]

CONFIG = """
name: ui-test
runtime: {speed: 1, status_interval_s: 0.5}
transport: {scheme: ipc, policy: latest}
control: {tokens: TOKENS}
ui:
  traces: [lfp]
  participant: {stream: beta, display: bar, min: 0.0, max: 60.0, target: [30.0, 60.0]}
nodes:
  - id: lfp
    type: synthetic
    process: acquire
    params: {n_channels: 64, sfreq: 1000.0, chunk_size: 20, seed: 4, oscillations: [[20.0, 8.0]]}
  - id: beta
    type: bandpower
    inputs: [lfp]
    process: process
    params: {bands: {beta: [15.0, 25.0]}, picks: [ch00, ch01], average: true, window_s: 0.5, step_s: 0.05, mode: db}
  - id: ctl
    type: threshold
    inputs: [beta]
    process: control
    params: {threshold: 1000.0, hysteresis: 1.0, channel: 0, amplitude_ma: 1.0, pulse_width_us: 60, frequency_hz: 130}
  - id: stim
    type: stimulator
    inputs: [ctl]
    process: stimulate
    params: {driver: simulated, profile: simulated}
"""


def _decode(buf: bytes) -> list[tuple[dict, dict]]:
    """One binary message -> its frames (docs/ui.md): each at a multiple of 8 bytes, all with the message's seq."""
    frames = []
    off = 0
    while off < len(buf):
        h = struct.unpack_from("<I", buf, off)[0]
        header = json.loads(buf[off + 4:off + 4 + h])
        off = (off + 4 + h + 7) & ~7
        arrays = {}
        for name, dt, shape in header["arrays"]:
            t = np.dtype({"f4": "<f4", "f8": "<f8", "i4": "<i4"}[dt])
            n = int(np.prod(shape))
            assert off % t.itemsize == 0
            arrays[name] = np.frombuffer(buf, t, n, off).reshape(shape)
            off = (off + n * t.itemsize + 7) & ~7
        frames.append((header, arrays))
    assert off == len(buf) and frames and len({h["seq"] for h, _ in frames}) == 1
    return frames


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui")
    tokens = tmp / "tokens"
    observer = create_token(tokens, "watcher", "observer")
    cfg = tmp / "ui.yaml"
    cfg.write_text(CONFIG.replace("TOKENS", str(tokens)))
    session = tmp / "session"
    session.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "rtneuro", "run", str(cfg), "--ui", "--duration", "22", "--quiet",
                             "--report", str(tmp / "report.json"), "--record", str(session)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    url = token = None
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        m = re.search(r"dashboard: (https?://\S+)/#token=(\S+)", line)
        if m:
            url, token = m.group(1), m.group(2)
            break
        if time.monotonic() > deadline:
            break
    assert url, "".join(lines)
    rest: list[str] = []
    reader = threading.Thread(target=lambda: rest.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    info = {"url": url, "ws": url.replace("http", "ws", 1) + "/api/ui/ws", "token": token, "observer": observer,
            "proc": proc, "tmp": tmp, "session": session, "out": rest}
    yield info
    if proc.poll() is None:
        proc.wait(timeout=120)
    reader.join(10)


def _finish(run) -> dict:
    proc = run["proc"]
    proc.wait(timeout=120)
    assert proc.returncode == 0, "".join(run["out"])
    return json.loads((run["tmp"] / "report.json").read_text())


async def _hello(ws) -> dict:
    msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert msg["type"] == "hello"
    return msg


def test_the_pages_and_their_assets_are_served_without_a_token_and_nothing_else_is(run):
    with httpx.Client(base_url=run["url"], timeout=10) as c:
        for path, kind in (("/", "text/html"), ("/participant", "text/html"), ("/ui/static/common.js", "javascript")):
            r = c.get(path)
            assert r.status_code == 200 and kind in r.headers["content-type"], path
        csp = c.get("/").headers["content-security-policy"]
        assert "default-src 'self'" in csp and "http" not in csp.replace("'self'", "")  # nothing from elsewhere
        for bad in ("/ui/static/../../control/auth.py", "/ui/static/%2e%2e/__init__.py", "/ui/static/nope.js"):
            r = c.get(bad)
            assert r.status_code in (401, 404) and "import" not in r.text, bad
        assert c.get("/api/status").status_code == 401  # the API still needs the token


def test_the_data_socket_needs_a_token_and_an_observer_token_reads(run):
    async def go():
        with pytest.raises(InvalidStatus) as exc:
            await websockets.connect(run["ws"])
        assert exc.value.response.status_code == 401
        with pytest.raises(InvalidStatus):
            await websockets.connect(run["ws"] + "?token=rtn_forged")
        async with websockets.connect(run["ws"] + "?token=" + run["observer"]) as ws:
            hello = await _hello(ws)
            assert hello["role"] == "observer" and hello["ui"]["participant"]["stream"] == "beta"
            assert hello["ui"]["participant"]["channel"] == 0 and hello["window"] >= 1
            assert "lfp" in hello["graph"]["streams"]
            await ws.send(json.dumps({"type": "views", "views": [{"id": "t", "kind": "trace", "stream": "lfp", "channels": [0, 63], "points": 500}]}))
            ((header, arrays),) = _decode(await asyncio.wait_for(_next_binary(ws), 10))
            assert header["type"] == "trace" and arrays["env"].shape[1:] == (2, 2)
            assert np.all(arrays["env"][..., 0] <= arrays["env"][..., 1])

    asyncio.run(go())


async def _next_binary(ws) -> bytes:
    while True:
        m = await ws.recv()
        if isinstance(m, bytes):
            return m


def test_a_client_that_stops_reading_holds_its_window_only_and_the_others_go_on(run):
    """A frozen page: connected, views set, never reads or acks. The server neither queues for it nor slows others."""
    pid = run["proc"].pid

    async def go():
        frozen = await websockets.connect(run["ws"] + "?token=" + run["token"], max_size=2**24)
        await _hello(frozen)
        views = [{"id": f"t{i}", "kind": "trace", "stream": "lfp", "span_s": 1.0, "points": 1000} for i in range(4)]
        views.append({"id": "s", "kind": "spectrum", "stream": "lfp", "fmax": 400})
        await frozen.send(json.dumps({"type": "views", "views": views}))
        frozen.transport.pause_reading()  # from here on it reads nothing at all: the server's sends fill the socket buffers
        await asyncio.sleep(2.0)
        rss0 = _rss_kb(pid)
        async with websockets.connect(run["ws"] + "?token=" + run["token"], max_size=2**24) as live:
            await _hello(live)
            await live.send(json.dumps({"type": "views", "views": [{"id": "t", "kind": "trace", "stream": "lfp", "channels": [0], "points": 200, "span_s": 2.0},
                                                                   {"id": "f", "kind": "feedback", "stream": "beta"}]}))
            got = {"trace": 0, "feedback": 0}
            bins = []
            t_end = time.monotonic() + 6.0
            while time.monotonic() < t_end:
                m = await asyncio.wait_for(live.recv(), 5)
                if isinstance(m, bytes):
                    frames = _decode(m)
                    for h, a in frames:
                        got[h["type"]] += 1
                        if h["type"] == "trace":
                            bins.append((h["first_bin"], a["env"].shape[0]))
                    await live.send(json.dumps({"type": "ack", "seq": frames[0][0]["seq"]}))
        rss1 = _rss_kb(pid)
        frozen.transport.abort()
        return got, bins, rss0, rss1

    got, bins, rss0, rss1 = asyncio.run(go())
    assert got["trace"] >= 30 and got["feedback"] >= 30, got  # 6 s: ~30 frames/s of traces, 20 values/s
    for (a, n), (b, _) in zip(bins[1:], bins[2:], strict=False):
        assert b == a + n, "the live client missed no bin while the other one was frozen"
    assert rss1 - rss0 < 30_000, f"the supervisor grew by {(rss1 - rss0) / 1e3:.1f} MB while a client did not read"


def test_hostile_messages_are_answered_with_one_line_counted_and_the_socket_stays_usable(run):
    async def go():
        async with websockets.connect(run["ws"] + "?token=" + run["token"], max_size=2**24) as ws:
            window = (await _hello(ws))["window"]
            answers = []
            for bad in ["not json", "[]", json.dumps({"type": "nope"}), json.dumps({"type": "views", "views": "all"}),
                        json.dumps({"type": "views", "views": [{"id": "x"}] * 40}), "x" * 60_000, b"\x00\x01binary"]:
                await ws.send(bad)
                if not isinstance(bad, bytes):
                    answers.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
            # acknowledgements beyond what was sent (nothing yet), alone or carried by another message: clamped to
            # what was sent, not a blank cheque for what comes
            await ws.send(json.dumps({"type": "ack", "seq": 10**12}))
            await ws.send(json.dumps({"type": "ping", "ack": 10**12}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong"
            await ws.send(json.dumps({"type": "views", "views": [{"id": "ok", "kind": "trace", "stream": "lfp", "channels": [0]},
                                                                 {"id": "bad", "kind": "trace", "stream": "lfp", "channels": [64]}]}))
            err = json.loads(await asyncio.wait_for(ws.recv(), 5))
            await ws.send(json.dumps({"type": "clock", "c": 12.5}))
            clock = None
            frames = 0
            t_end = time.monotonic() + 2.0  # a trace view at 30 messages a second: three windows' worth, never acked
            while time.monotonic() < t_end:
                try:
                    m = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                if isinstance(m, bytes):
                    frames += 1
                else:
                    msg = json.loads(m)
                    if msg["type"] == "clock":
                        clock = msg
            assert 1 <= frames <= window, f"{frames} messages without a true acknowledgement (window {window}): a forged ack was believed"
        async with websockets.connect(run["ws"] + "?token=" + run["token"], max_size=2**24) as ws:
            await _hello(ws)
            await ws.send("x" * 100_000)  # beyond the socket's message limit: closed by the protocol (1009)
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd.code == 1009
        return answers, err, clock

    answers, err, clock = asyncio.run(go())
    assert all(a["type"] == "error" and "\n" not in a["error"] for a in answers), answers
    assert err == {"type": "error", "view": "bad", "error": err["error"]} and "channels" in err["error"]
    assert clock["c"] == 12.5 and abs(clock["s"] - lsl_clock()) < 5


def test_paints_give_the_display_latency_in_the_report_and_the_session(run):
    async def go():
        async with websockets.connect(run["ws"] + "?token=" + run["token"]) as ws:
            await _hello(ws)
            await ws.send(json.dumps({"type": "views", "views": [{"id": "f", "kind": "feedback", "stream": "beta"}]}))
            n = 0
            while n < 40:
                m = await asyncio.wait_for(ws.recv(), 5)
                if isinstance(m, bytes):
                    frames = _decode(m)
                    await ws.send(json.dumps({"type": "ack", "seq": frames[0][0]["seq"]}))
                    for h, a in frames:
                        assert h["type"] == "feedback" and a["values"].shape == (1, 1)
                        await ws.send(json.dumps({"type": "paint", "items": [[h["key"], lsl_clock() + 0.002]]}))
                        n += 1

    asyncio.run(go())
    rep = _finish(run)
    d = rep["display"]
    assert d["stream"] == "beta" and d["decision_to_paint_ms"]["n"] >= 40
    assert 0 < d["decision_to_paint_ms"]["p50"] < d["acquisition_to_paint_ms"]["p50"] < 1000
    assert d["views_refused"] >= 1 and d["frames_held"] >= 1  # the hostile and the frozen clients were seen
    assert rep["control"]["refused"].get("ui_message", 0) >= 5
    from rtneuro.recording.replay import load

    files = list(Path(run["session"]).glob("*.xdf"))
    assert files, os.listdir(run["session"])
    sess = load(files[0], ["rtneuro.display"])
    disp = next(s for s in sess.streams if s.name == "rtneuro.display")
    data = np.asarray(disp.time_series)
    assert data.shape == (d["decision_to_paint_ms"]["n"], 4)
    np.testing.assert_allclose(np.median(data[:, 3]), d["decision_to_paint_ms"]["p50"], rtol=0.05)
