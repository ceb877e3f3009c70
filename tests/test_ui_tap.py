"""The pages' tap: trace envelopes, spectra, events, feedback and paint reports, against references.

The envelope is checked against a naive per-bin loop (min and max of each
bin of ``bin_len`` samples aligned on absolute indices), under any chunking of
the input and any pace of the client; the spectrum against scipy's ``welch``;
the frames' bytes against their documented layout (docs/ui.md). Views and
paint reports are untrusted input: every malformed one is refused with one
line, nothing else changes.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import welch

from rtneuro.control.tap import MAX_EVENTS_PER_FRAME, Tap, ViewError, encode_frame, encode_frames
from rtneuro.messages import DECISION_DTYPE, Chunk, Message, StreamMeta, make_events
from rtneuro.runtime.clock import lsl_clock
from rtneuro.transport import TransportParams

FS = 250.0
N_CH = 4
STREAMS = {
    "eeg": StreamMeta(name="eeg", kind="sig", sfreq=FS, ch_names=tuple(f"c{i}" for i in range(N_CH)), ch_types=("eeg",) * N_CH),
    "feat": StreamMeta(name="feat", kind="feat", sfreq=10.0, ch_names=("alpha",)),
    "spk": StreamMeta(name="spk", kind="evt", sfreq=0.0, dtype="event"),
    "stim.decisions": StreamMeta(name="stim.decisions", kind="cmd", sfreq=0.0, dtype="decision"),
    "ctl": StreamMeta(name="ctl", kind="cmd", sfreq=0.0, dtype="command"),
}
ENDPOINTS = {n: "ipc:///nowhere" for n in STREAMS if n != "ctl"}


def _tap(feedback: str | None = "feat", history_s: float = 30.0) -> Tap:
    return Tap(STREAMS, ENDPOINTS, TransportParams(), history_s, feedback=feedback)


def _msg(stream: str, data: np.ndarray, first: int, t0: float, trace: list | None = None) -> Message:
    meta = STREAMS[stream]
    chunk = Chunk(data, first, t0, meta.sfreq, trace if trace is not None else [("src", lsl_clock())])
    return Message(topic=f"{meta.kind}.{stream}", kind=meta.kind, type="data", stream=stream, seq=0, inc=1, header={},
                   arrays=[data], nbytes=data.nbytes, data=chunk)


def _feed(tap: Tap, x: np.ndarray, cuts: list[int], start: int = 0, stream: str = "eeg") -> None:
    edges = [0, *sorted(set(c for c in cuts if 0 < c < len(x))), len(x)]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        tap._absorb([_msg(stream, x[a:b], start + a, (start + a) / FS)])


def _naive_envelope(x: np.ndarray, start: int, b: int, first_bin: int, n_bins: int) -> np.ndarray:
    """Min and max of each bin [k*b, (k+1)*b) of absolute indices, one sample at a time (x[i] is index start + i)."""
    out = np.full((n_bins, x.shape[1], 2), np.nan)
    for k in range(n_bins):
        for c in range(x.shape[1]):
            lo, hi = math.inf, -math.inf
            for idx in range((first_bin + k) * b, (first_bin + k + 1) * b):
                v = x[idx - start, c]
                if not math.isnan(v):
                    lo, hi = min(lo, v), max(hi, v)
            if lo <= hi:
                out[k, c] = lo, hi
    return out


def _collect_trace(tap: Tap, view, rounds: list[list[int]], x: np.ndarray, start: int) -> tuple[dict[int, np.ndarray], int]:
    """Feed ``x`` in rounds (each a list of cuts within its slice), asking for frames after each.

    Returns the bins received by index, and the most bins one round completed.
    """
    got: dict[int, np.ndarray] = {}
    most = 0
    pos = 0
    n_round = len(rounds)
    for i, cuts in enumerate(rounds):
        end = len(x) if i == n_round - 1 else min(len(x), pos + (len(x) - pos) // (n_round - i))
        _feed(tap, x[pos:end], [c - pos for c in cuts if pos < c < end], start + pos)
        most = max(most, (start + end) // view.bin_len - (start + pos) // view.bin_len)
        pos = end
        for header, arrays in tap.frames([view], lsl_clock()):
            env = arrays[0][1]
            for k in range(env.shape[0]):
                assert header["first_bin"] + k not in got, "a bin was sent twice"
                got[header["first_bin"] + k] = env[k]
    return got, most


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3000), start=st.integers(0, 10_000), points=st.integers(8, 400), span_s=st.sampled_from([1.0, 4.0, 10.0]),
       cuts=st.lists(st.integers(1, 2999), max_size=12), rounds=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_the_trace_envelope_is_the_naive_min_and_max_of_each_bin_whatever_the_chunking_and_the_pace(n, start, points, span_s, cuts, rounds, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, N_CH)).astype(np.float32)
    x[rng.random(n) < 0.01] = np.nan  # a non-finite sample is skipped, never spread over its bin
    x[rng.integers(0, n)] = 1e4  # a spike: always in the envelope
    tap = _tap()
    view = tap.make_view({"id": "t", "kind": "trace", "stream": "eeg", "span_s": span_s, "points": points})
    b = view.bin_len
    assert b == max(1, int(FS * span_s / points))
    per_round = [sorted(cuts)[i::rounds] for i in range(rounds)]
    got, most = _collect_trace(tap, view, per_round, x, start)
    end_bin = (start + n) // b
    if end_bin <= -(-start // b):  # no bin lies wholly in the stream (a partial first bin is never sent)
        assert not got  # no complete bin yet
        return
    assert max(got) + 1 == end_bin  # the last complete bin is sent
    assert got, "a stream of at least one bin gives a frame"
    keys = sorted(got)
    for k in keys:  # every bin sent is the naive one at its index
        ref = _naive_envelope(x, start, b, k, 1)[0]
        np.testing.assert_array_equal(np.isnan(got[k]), np.isnan(ref))
        np.testing.assert_array_equal(got[k][~np.isnan(got[k])], ref[~np.isnan(ref)])
    if most <= view.points:  # a client that keeps up misses nothing
        assert keys == list(range(keys[0], keys[-1] + 1))
        assert keys[0] == max(-(-start // b), ((start + len(x) // len(per_round)) // b) - view.points, 0) or len(per_round) > 1


def test_a_client_that_fell_behind_gets_the_newest_bins_and_a_gap_not_a_backlog():
    tap = _tap(history_s=4.0)
    view = tap.make_view({"id": "t", "kind": "trace", "stream": "eeg", "span_s": 2.0, "points": 100})
    x = np.arange(20 * int(FS), dtype=np.float32)[:, None].repeat(N_CH, 1)
    _feed(tap, x[: int(FS)], [])
    (h1, a1), = tap.frames([view], lsl_clock())
    _feed(tap, x[int(FS):], list(range(0, len(x), 25)), int(FS))  # 19 s later: far more than the view's width
    (h2, a2), = tap.frames([view], lsl_clock())
    b = view.bin_len
    end_bin = len(x) // b
    assert h2["first_bin"] == end_bin - view.points  # the newest screen, nothing older
    assert a2[0][1].shape == (view.points, N_CH, 2)
    np.testing.assert_array_equal(a2[0][1][-1, 0], [(end_bin - 1) * b, end_bin * b - 1])
    assert h2["t_first"] == pytest.approx(h2["first_bin"] * b / FS)


def test_a_gap_in_the_stream_is_blank_and_a_restart_below_the_head_starts_the_ring_again():
    tap = _tap()
    view = tap.make_view({"id": "t", "kind": "trace", "stream": "eeg", "span_s": 1.0, "points": 50})  # bin_len 5
    x = np.ones((100, N_CH), dtype=np.float32)
    tap._absorb([_msg("eeg", x[:50], 0, 0.0), _msg("eeg", x[50:], 150, 0.6)])  # samples 50..149 never came
    (h, a), = tap.frames([view], lsl_clock())
    env = a[0][1]
    assert h["first_bin"] == 0 and env.shape[0] == 40  # 200 samples: 40 bins of 5
    assert np.isnan(env[10:30]).all() and not np.isnan(env[:10]).any() and not np.isnan(env[30:]).any()
    tap._absorb([_msg("eeg", 2 * x, 0, 10.0)])  # a restarted source: index 0 again
    (h, a), = tap.frames([view], lsl_clock())
    assert h["first_bin"] == 0 and np.all(a[0][1] == 2.0)


def test_the_ring_is_bounded_by_history_and_by_bytes():
    wide = {"wide": StreamMeta(name="wide", kind="sig", sfreq=30_000.0, ch_names=tuple(f"c{i}" for i in range(384)))}
    tap = Tap(wide, {"wide": "ipc:///x"}, TransportParams(), history_s=600.0)
    data = np.zeros((3000, 384), dtype=np.float32)
    chunk = Chunk(data, 0, 0.0, 30_000.0, [])
    tap._absorb([Message("sig.wide", "sig", "data", "wide", 0, 1, {}, [data], data.nbytes, chunk)])
    assert tap.rings["wide"].buf.nbytes <= 32 * 1024 * 1024
    small = _tap(history_s=2.0)
    _feed(small, np.zeros((10_000, N_CH), dtype=np.float32), [1000, 5000])
    assert small.rings["eeg"].cap == int(2.0 * FS)


def test_the_spectrum_is_scipys_welch_in_db_up_to_the_newest_segment_boundary():
    # Welch over the last `seconds` that end at a multiple of the half-overlap step (absolute sample index): each
    # segment is computed once and kept while it is in the window; however the data came in, every spectrum sent
    # equals scipy's welch on exactly that stretch
    tap = _tap()
    rng = np.random.default_rng(3)
    t = np.arange(int(9 * FS)) / FS
    x = (np.sin(2 * np.pi * 10 * t)[:, None] * [1, 2, 3, 4] + 0.1 * rng.standard_normal((t.size, N_CH))).astype(np.float32)
    view = tap.make_view({"id": "s", "kind": "spectrum", "stream": "eeg", "channels": [1, 3], "fmax": 40, "seconds": 2})
    nper, step, fed, sent, last = 256, 128, 0, 0, None
    for upto in (int(4 * FS) + 37, int(4 * FS) + 90, int(5 * FS) + 3, int(7 * FS) + 129, len(x)):
        _feed(tap, x[fed:upto], [11, 100, 333], start=fed)
        fed = upto
        got = tap.frames([view], lsl_clock() + 10.0 * (fed + 1))  # later than 1/SPECTRUM_HZ each time
        end = fed - fed % step
        if end == last:
            assert got == []  # no new segment since the last spectrum sent
            continue
        last = end
        (h, arrays), = got
        sent += 1
        freqs, psd_db = arrays[0][1], arrays[1][1]
        k = (int(2 * FS) - nper) // step + 1
        seg = x[end - nper - (k - 1) * step:end, [1, 3]].astype(np.float64)
        f, p = welch(seg, fs=FS, nperseg=nper, noverlap=nper - step, axis=0)
        keep = f <= 40
        np.testing.assert_allclose(freqs, f[keep], rtol=1e-6)
        np.testing.assert_allclose(psd_db, 10 * np.log10(p[keep].T), atol=1e-3)  # float32 dB
        assert freqs[np.argmax(psd_db[1])] == pytest.approx(10.0, abs=1.0)
        assert h["t"] == pytest.approx(end / FS)
        assert set(next(iter(view.segs.values()))) == set(range(end - nper - (k - 1) * step, end - nper + 1, step))
    assert sent == 4  # 4 s + 37 and 4 s + 90 samples end at the same boundary
    assert tap.frames([view], lsl_clock() + 100.0) == []  # no new segment: nothing to send


def test_events_and_gate_decisions_arrive_once_each_and_bounded_per_frame():
    tap = _tap()
    view = tap.make_view({"id": "e", "kind": "events", "stream": "spk"})
    ev = make_events([(i, i / FS, 1, i % 3, 0.0, float(i), f"u{i % 3}") for i in range(600)])
    tap._absorb([_msg("spk", ev[:10], 0, 0.0)])
    (h, a), = tap.frames([view], lsl_clock())
    assert h["labels"] == [f"u{i % 3}" for i in range(10)]
    np.testing.assert_array_equal(dict(a)["channel"], [i % 3 for i in range(10)])
    tap._absorb([_msg("spk", ev[10:], 10, 0.0)])
    (h, a), = tap.frames([view], lsl_clock())
    assert len(h["labels"]) == MAX_EVENTS_PER_FRAME and h["labels"][-1] == "u2"  # the newest, bounded
    assert tap.frames([view], lsl_clock()) == []
    dec = np.zeros(2, dtype=DECISION_DTYPE)
    dec["status"] = [0, 2]
    dec["amplitude_ma"] = [1.0, 9.0]
    dec["reason"] = [b"", b"amplitude 9 mA above the profile's 5 mA"]
    dview = tap.make_view({"id": "d", "kind": "events", "stream": "stim.decisions"})
    tap._absorb([_msg("stim.decisions", dec, 0, 0.0)])
    (h, a), = tap.frames([dview], lsl_clock())
    assert h["type"] == "decisions" and h["status"] == ["accepted", "refused"] and "profile" in h["reason"][1]
    np.testing.assert_array_equal(dict(a)["amplitude_ma"], [1.0, 9.0])


@pytest.mark.parametrize("spec, fragment", [
    ("eeg", "JSON object"),
    ({"id": "", "kind": "trace", "stream": "eeg"}, "'id'"),
    ({"id": "x" * 65, "kind": "trace", "stream": "eeg"}, "'id'"),
    ({"id": "v", "kind": "video", "stream": "eeg"}, "kind must be"),
    ({"id": "v", "kind": "trace", "stream": "nope"}, "no stream 'nope'"),
    ({"id": "v", "kind": "trace", "stream": ["eeg"]}, "no stream"),
    ({"id": "v", "kind": "trace", "stream": "spk"}, "needs a signal or feature stream"),
    ({"id": "v", "kind": "events", "stream": "eeg"}, "needs an event or decision stream"),
    ({"id": "v", "kind": "events", "stream": "ctl"}, "command socket"),
    ({"id": "v", "kind": "spectrum", "stream": "feat", "channels": [0], "fmax": 1e9}, "fmax"),
    ({"id": "v", "kind": "feedback", "stream": "eeg"}, "participant display's stream"),
    ({"id": "v", "kind": "trace", "stream": "eeg", "channels": [0, 4]}, "channels"),
    ({"id": "v", "kind": "trace", "stream": "eeg", "channels": [-1]}, "channels"),
    ({"id": "v", "kind": "trace", "stream": "eeg", "channels": [True]}, "channels"),
    ({"id": "v", "kind": "trace", "stream": "eeg", "channels": list(range(300))}, "channels"),
    ({"id": "v", "kind": "trace", "stream": "eeg", "points": 10**9}, "points"),
    ({"id": "v", "kind": "trace", "stream": "eeg", "span_s": float("nan")}, "span_s"),
    ({"id": "v", "kind": "trace", "stream": "eeg", "span_s": "10"}, "span_s"),
])
def test_a_malformed_view_is_refused_with_one_line(spec, fragment):
    with pytest.raises(ViewError) as exc:
        _tap().make_view(spec)
    text = str(exc.value)
    assert fragment in text and "\n" not in text


def test_feedback_sends_the_newest_value_once_and_paints_give_decision_to_paint_latency():
    tap = _tap()
    view = tap.make_view({"id": "f", "kind": "feedback", "stream": "feat"})
    t = lsl_clock()
    for i in range(3):
        tap._absorb([_msg("feat", np.array([[float(i)]]), i, i / 10, trace=[("eeg", t - 0.010), ("alpha", t - 0.004)])])
    (h, a), = tap.frames([view], t)
    assert h["key"] == 3 and float(a[0][1][0, 0]) == 2.0  # the newest only: the others would never be seen
    assert tap.frames([view], t) == []
    ok = tap.paint("display#1", [[3, t + 0.006], [3, t - 1.0], [99, t], [3, float("nan")], ["3", t], [3], "x", [3, t + 100.0]])
    assert ok == 1 and tap.stats["paints_refused"] == 7
    rep = tap.report()
    d = rep["displays"]["display#1"]
    assert d["paints"] == 1
    assert d["decision_to_paint_ms"]["p50"] == pytest.approx(10.0, abs=0.01)
    assert d["acquisition_to_paint_ms"]["p50"] == pytest.approx(16.0, abs=0.01)
    rows = tap.take_paint_rows()
    assert rows == [[pytest.approx(0.2), t + 0.006, 2.0, pytest.approx(16.0), pytest.approx(10.0)]]
    assert tap.take_paint_rows() == []
    assert tap.paint("display#1", "not a list") == 0


def test_displays_and_paint_rows_are_bounded():
    tap = _tap()
    t = lsl_clock()
    tap._absorb([_msg("feat", np.array([[1.0]]), 0, 0.0, trace=[("eeg", t - 0.01)])])
    for i in range(40):
        tap.paint(f"page#{i}", [[1, t]])
    assert len(tap.displays) <= 17 and tap.displays["other"].paints == 40 - 16


def test_a_frame_has_the_documented_layout():
    env = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    ids = np.array([7, -1], dtype=np.int32)
    buf = encode_frame({"type": "trace", "seq": 5, "t_first": 1.5}, [("env", env), ("ids", ids)])
    h = struct.unpack("<I", buf[:4])[0]
    header = json.loads(buf[4:4 + h])
    assert header["arrays"] == [["env", "f4", [2, 3, 2]], ["ids", "i4", [2]]] and header["seq"] == 5
    off = (4 + h + 7) & ~7
    np.testing.assert_array_equal(np.frombuffer(buf, "<f4", 12, off).reshape(2, 3, 2), env)
    off = (off + 48 + 7) & ~7
    np.testing.assert_array_equal(np.frombuffer(buf, "<i4", 2, off), ids)
    assert len(buf) == off + 8
    # a tick's frames in one message: each frame starts at a multiple of 8 and carries the message's seq
    odd = np.arange(3, dtype="<f4")  # 12 bytes: the frame is padded to 16
    msg = encode_frames([({"type": "a"}, [("x", odd)]), ({"type": "b"}, [("env", env)])], seq=9)
    h1 = struct.unpack_from("<I", msg, 0)[0]
    first = json.loads(msg[4:4 + h1])
    start2 = (((4 + h1 + 7) & ~7) + 12 + 7) & ~7
    h2 = struct.unpack_from("<I", msg, start2)[0]
    second = json.loads(msg[start2 + 4:start2 + 4 + h2])
    assert (first["type"], first["seq"], second["type"], second["seq"]) == ("a", 9, "b", 9)
    off2 = (start2 + 4 + h2 + 7) & ~7
    np.testing.assert_array_equal(np.frombuffer(msg, "<f4", 12, off2).reshape(2, 3, 2), env)
    assert len(msg) == off2 + 48 and len(msg) % 8 == 0
