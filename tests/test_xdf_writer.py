"""The crash-safe XDF writer and the tolerant session reader, checked against pyxdf.load_xdf."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import pyxdf

from rtneuro.errors import ConfigError, RtneuroError
from rtneuro.recording import RecordingError, XdfWriter, check_writable, read_session, scan_chunks
from rtneuro.recording import xdf_writer as xw

NUMERIC = ["float32", "double64", "int8", "int16", "int32", "int64"]
NP = {"float32": np.float32, "double64": np.float64, "int8": np.int8, "int16": np.int16, "int32": np.int32,
      "int64": np.int64}


def _load(path) -> tuple[dict[int, dict], dict]:
    """pyxdf's reading, streams by id, timestamps as written."""
    streams, header = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
    return {s["info"]["stream_id"]: s for s in streams}, header


def _values(fmt: str, n: int, n_ch: int, rng) -> np.ndarray:
    dt = NP[fmt]
    if fmt in ("float32", "double64"):
        x = rng.standard_normal((n, n_ch)).astype(dt) * dt(1e3)
        if n >= 2:
            x[0, :4] = [np.nan, np.inf, -np.inf, -0.0][: n_ch]
            x[1, 0] = np.finfo(dt).tiny
    else:
        info = np.iinfo(dt)
        x = rng.integers(info.min, info.max, size=(n, n_ch), dtype=dt, endpoint=True)
        if n >= 1:
            x[0, 0], x[-1, -1] = info.min, info.max
    return x


def _write_session(path, rng, *, chunks=(0, 1, 7, 300, 3), srate=250.0):
    """Every channel format, a unicode string stream, an irregular stream, a late stream; returns what was written."""
    written: dict[int, dict] = {}
    w = XdfWriter(path, flush_s=0.0, fsync=False, file_header={"rtneuro": {"session": "s1", "n": 3}})
    for k, fmt in enumerate(NUMERIC):
        desc = {"channels": {"channel": [{"label": f"C{i}", "unit": "microvolts", "type": "EEG"} for i in range(4)]},
                "acquisition": {"manufacturer": "rtneuro", "gain": 0.5, "enabled": True, "note": None}}
        w.add_stream(k, name=f"sig-{fmt}", type="EEG", channel_count=4, nominal_srate=srate, channel_format=fmt,
                     source_id=f"src{k}", desc=desc)
        written[k] = {"ts": [], "x": []}
    w.add_stream(10, name="markers", type="Markers", channel_count=2, nominal_srate=0.0, channel_format="string")
    written[10] = {"ts": [], "x": []}
    t = 1000.0
    for i, n in enumerate(chunks):
        for k, fmt in enumerate(NUMERIC):
            ts = t + np.arange(n) / srate + rng.uniform(-1e-4, 1e-4, n)
            x = _values(fmt, n, 4, rng)
            w.write_samples(k, ts, x)
            written[k]["ts"].append(ts)
            written[k]["x"].append(x)
        labels = [[f"ev{i}-{j} é ∑ 🧠", "x" * (300 if j == 0 else 0)] for j in range(min(n, 2))]
        ts = t + rng.uniform(0, 1, len(labels))
        w.write_samples(10, ts, labels)
        written[10]["ts"].append(ts)
        written[10]["x"].extend(labels)
        w.write_clock_offset(0, t, -0.25 + i * 1e-6)
        if i == 1:  # a stream that appears in the middle of the recording
            w.add_stream(20, name="late", type="Misc", channel_count=1, nominal_srate=0.0, channel_format="double64")
            written[20] = {"ts": [], "x": []}
        if 20 in written:
            ts = np.array([t + 0.5])
            w.write_samples(20, ts, np.array([[float(i)]]))
            written[20]["ts"].append(ts)
            written[20]["x"].append(np.array([[float(i)]]))
        w.write_boundary()
        t += 10.0
    w.close({0: {"rtneuro": {"config": "graph:\n  - id: <src> & 'x'", "versions": {"numpy": np.__version__},
                             "latency_ms": {"bin": [{"lo": 0.0, "count": 3}, {"lo": 0.5, "count": 1}]}}}})
    for k, v in written.items():
        v["ts"] = np.concatenate(v["ts"]) if v["ts"] else np.zeros(0)
        if k != 10:
            v["x"] = np.concatenate(v["x"])
    return written


def test_round_trip_through_pyxdf_is_bit_exact(tmp_path):
    path = tmp_path / "s.xdf"
    written = _write_session(path, np.random.default_rng(0))
    streams, header = _load(path)
    assert header["info"]["version"] == ["1.0"]
    assert header["info"]["rtneuro"][0]["session"] == ["s1"]
    assert sorted(streams) == sorted(written)
    for k, fmt in enumerate(NUMERIC):
        s = streams[k]
        assert s["info"]["channel_format"] == [fmt]
        assert s["time_series"].dtype == NP[fmt]
        assert s["time_series"].tobytes() == written[k]["x"].tobytes()  # bit-identical, NaN and -0.0 included
        assert s["time_stamps"].tobytes() == written[k]["ts"].tobytes()
        foot = s["footer"]["info"]
        assert int(foot["sample_count"][0]) == len(written[k]["ts"])
        assert float(foot["first_timestamp"][0]) == written[k]["ts"][0]
        assert float(foot["last_timestamp"][0]) == written[k]["ts"][-1]
    marks = streams[10]
    assert marks["time_series"] == written[10]["x"]
    assert marks["time_stamps"].tobytes() == written[10]["ts"].tobytes()
    assert marks["info"]["nominal_srate"] == ["0.0"]
    late = streams[20]
    assert late["time_series"].tobytes() == written[20]["x"].tobytes()
    # clock offsets, as chunks and in the footer (as LabRecorder writes them)
    assert streams[0]["clock_times"] == [1000.0 + 10 * i for i in range(5)]
    assert streams[0]["clock_values"] == [-0.25 + i * 1e-6 for i in range(5)]
    offs = streams[0]["footer"]["info"]["clock_offsets"][0]["offset"]
    assert [float(o["value"][0]) for o in offs] == streams[0]["clock_values"]


def test_metadata_reads_back_as_pyxdf_represents_it(tmp_path):
    path = tmp_path / "s.xdf"
    _write_session(path, np.random.default_rng(1))
    streams, _ = _load(path)
    info = streams[3]["info"]
    assert info["name"] == ["sig-int16"] and info["type"] == ["EEG"] and info["source_id"] == ["src3"]
    assert info["channel_count"] == ["4"] and float(info["nominal_srate"][0]) == 250.0
    assert float(info["created_at"][0]) > 0 and info["uid"][0] and info["hostname"][0]
    desc = info["desc"][0]
    chans = desc["channels"][0]["channel"]
    assert [c["label"][0] for c in chans] == ["C0", "C1", "C2", "C3"]
    assert chans[0]["unit"] == ["microvolts"] and chans[0]["type"] == ["EEG"]
    acq = desc["acquisition"][0]
    assert acq["gain"] == ["0.5"] and acq["enabled"] == ["true"] and acq["note"] == [None]
    extra = streams[0]["footer"]["info"]["rtneuro"][0]
    assert extra["config"] == ["graph:\n  - id: <src> & 'x'"]
    assert extra["versions"][0]["numpy"] == [np.__version__]
    assert [b["count"][0] for b in extra["latency_ms"][0]["bin"]] == ["3", "1"]
    assert "rtneuro" not in streams[1]["footer"]["info"]


def test_read_session_matches_pyxdf_and_reports_a_whole_file(tmp_path):
    path = tmp_path / "s.xdf"
    _write_session(path, np.random.default_rng(2))
    ref, header = _load(path)
    ses = read_session(path)
    assert ses.damage is None and ses.bytes_read == ses.size == path.stat().st_size
    assert ses.file_header == header
    assert [s.stream_id for s in ses.streams] == list(ref)
    for s in ses.streams:
        r = ref[s.stream_id]
        assert s.info == r["info"] and s.footer == r["footer"]
        assert s.time_stamps.tobytes() == r["time_stamps"].tobytes()
        if s.channel_format == "string":
            assert s.time_series == r["time_series"]
        else:
            assert s.time_series.tobytes() == r["time_series"].tobytes()
    assert ses.stream("markers").n_channels == 2
    assert ses.stream(0).clock_offsets.shape == (5, 2)
    # pyxdf's own defaults (clock synchronisation, dejittering) read our files too
    pyxdf.load_xdf(str(path))


def _small_file(path) -> dict[int, dict]:
    rng = np.random.default_rng(5)
    w = XdfWriter(path, flush_s=0.0, fsync=False)
    w.add_stream(1, name="eeg", type="EEG", channel_count=3, nominal_srate=100.0, channel_format="float32")
    w.add_stream(2, name="mk", type="Markers", channel_count=1, nominal_srate=0.0, channel_format="string")
    out: dict[int, dict] = {1: {"ts": [], "x": []}, 2: {"ts": [], "x": []}}
    for i in range(4):
        ts = 5.0 + i * 0.04 + np.arange(4) / 100.0
        x = rng.standard_normal((4, 3)).astype(np.float32)
        w.write_samples(1, ts, x)
        out[1]["ts"].extend(ts)
        out[1]["x"].extend(x)
        w.write_samples(2, ts[:1], [[f"m{i} ü"]])
        out[2]["ts"].append(ts[0])
        out[2]["x"].append([f"m{i} ü"])
        w.write_clock_offset(1, float(ts[0]), 0.001)
        if i == 1:
            w.write_boundary()
    w.close({1: {"note": "done"}})
    return out


def test_a_file_cut_at_every_byte_reads_a_prefix_and_reports_damage(tmp_path):
    path = tmp_path / "full.xdf"
    written = _small_file(path)
    data = path.read_bytes()
    cut_path = tmp_path / "cut.xdf"
    previous = {1: 0, 2: 0}
    for cut in range(len(data) + 1):
        cut_path.write_bytes(data[:cut])
        ses = read_session(cut_path)  # never raises
        assert (ses.damage is None) == (cut == len(data)), (cut, ses.damage)
        if ses.damage is not None:
            assert f"byte {cut}" in ses.damage or "no footer" in ses.damage or "no stream" in ses.damage
        for s in ses.streams:
            n = len(s.time_stamps)
            assert n >= previous[s.stream_id]  # a longer file never reads fewer samples
            previous[s.stream_id] = n
            want = written[s.stream_id]
            assert s.time_stamps.tolist() == want["ts"][:n]
            if s.stream_id == 1:
                assert s.time_series.tobytes() == np.asarray(want["x"][:n]).tobytes()
            else:
                assert s.time_series == want["x"][:n]
    assert previous == {1: 16, 2: 4}


def test_pyxdf_alone_raises_or_returns_a_corrupt_sample_on_a_cut_file(tmp_path):
    """Why read_session checks chunks before pyxdf sees them (pyxdf 1.17)."""
    path = tmp_path / "full.xdf"
    written = _small_file(path)
    data = path.read_bytes()
    raised, corrupt, shortened = set(), 0, 0
    logging.getLogger("pyxdf.pyxdf").disabled = True
    try:
        for cut in range(4, len(data)):
            try:
                streams, _ = pyxdf.load_xdf(io.BytesIO(data[:cut]), synchronize_clocks=False,
                                            dejitter_timestamps=False)
            except Exception as exc:
                raised.add(type(exc).__name__)
                continue
            for s in streams:
                n = len(s["time_stamps"])
                if s["info"]["stream_id"] == 1:
                    corrupt += s["time_series"].tobytes() != np.asarray(written[1]["x"][:n]).tobytes()
                else:
                    shortened += s["time_series"] != written[2]["x"][:n]
    finally:
        logging.getLogger("pyxdf.pyxdf").disabled = False
    assert {"ParseError", "error"} <= raised  # cut in a header's XML; cut in a chunk's tag or a ClockOffset
    assert corrupt > 0  # cut in a chunk's last sample: returned with stale bytes, no error
    assert shortened > 0  # cut in a string: returned shortened, no error


def test_damage_in_the_middle_resumes_after_the_next_boundary(tmp_path):
    path = tmp_path / "s.xdf"
    w = XdfWriter(path, flush_s=0.0, fsync=False)
    w.add_stream(1, name="eeg", type="EEG", channel_count=2, nominal_srate=100.0, channel_format="double64")
    for i in range(6):
        w.write_samples(1, [float(i)], [[i, -i]])
        if i == 2:
            w.write_boundary()
    w.close()
    chunks, problems = scan_chunks(path)
    assert problems == []
    samples = [c for c in chunks if c.tag == 3]
    raw = bytearray(path.read_bytes())
    hit = samples[1]  # the second sample's chunk: zero its length byte
    raw[hit.offset] = 0
    path.write_bytes(bytes(raw))
    ses = read_session(path)
    assert ses.damage is not None and ses.damage.startswith(f"corrupt at byte {hit.offset}")
    assert "start again" in ses.damage
    # sample 0 before the damage, samples 3.. after the boundary; footer read
    assert ses.stream(1).time_stamps.tolist() == [0.0, 3.0, 4.0, 5.0]
    assert ses.stream(1).footer is not None


def test_a_killed_writer_leaves_everything_it_flushed(tmp_path):
    path = tmp_path / "killed.xdf"
    script = textwrap.dedent("""
        import sys, time
        import numpy as np
        from rtneuro.recording import XdfWriter
        w = XdfWriter(sys.argv[1], flush_s=0.2, fsync=True)
        w.add_stream(7, name="eeg", type="EEG", channel_count=64, nominal_srate=1000.0, channel_format="float32")
        print("start", flush=True)
        n, last = 0, -1
        while True:
            idx = np.arange(n, n + 10)
            w.write_samples(7, idx / 1000.0, (idx[:, None] * 64 + np.arange(64)).astype(np.float32))
            n += 10
            done = w.samples_on_disk[7]
            if done != last:
                print(done, flush=True)
                last = done
            time.sleep(0.002)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "start"
        t0, flushed = time.monotonic(), [0]
        while time.monotonic() - t0 < 1.0 or len(flushed) < 3:
            line = proc.stdout.readline()
            assert line, "the writer died"
            flushed.append(int(line))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        flushed += [int(x) for x in proc.stdout.read().split()]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    ses = read_session(path)
    assert ses.damage is not None and "no footer" in ses.damage
    s = ses.stream(7)
    n = len(s.time_stamps)
    assert flushed[-1] > 0 and n >= flushed[-1]  # all flushed samples are there
    idx = np.arange(n)
    assert s.time_stamps.tobytes() == (idx / 1000.0).tobytes()  # and none is corrupt
    assert s.time_series.tobytes() == (idx[:, None] * 64 + np.arange(64)).astype(np.float32).tobytes()


def test_a_full_disk_cuts_the_file_to_its_last_whole_chunk(tmp_path):
    """RLIMIT_FSIZE in a child process: write() gives EFBIG (SIGXFSZ ignored), handled as a full disk."""
    path = tmp_path / "full.xdf"
    script = textwrap.dedent("""
        import json, resource, signal, sys
        import numpy as np
        from rtneuro.recording import RecordingError, XdfWriter
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        w = XdfWriter(sys.argv[1], flush_s=1e9, fsync=False)
        w.add_stream(1, name="eeg", type="EEG", channel_count=64, nominal_srate=1000.0, channel_format="float32")
        msg = after = None
        n = 0
        try:
            while True:
                for _ in range(5):  # several chunks per flush: the cut falls inside one of them
                    idx = np.arange(n, n + 7)
                    w.write_samples(1, idx / 1000.0, (idx[:, None] + np.zeros(64)).astype(np.float32))
                    n += 7
                w.flush()
        except RecordingError as exc:
            msg = str(exc)
        try:
            w.write_samples(1, [0.0], np.zeros((1, 64), np.float32))
        except RecordingError as exc:
            after = str(exc)
        w.close()
        print(json.dumps({"msg": msg, "after": after, "on_disk": w.samples_on_disk[1], "sent": n}))
    """)
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert "disk full or file too large (EFBIG)" in res["msg"] and str(path) in res["msg"]
    assert "\n" not in res["msg"] and res["after"] == res["msg"]
    size = path.stat().st_size
    assert size <= 100_000 and f"up to byte {size}" in res["msg"]
    assert 0 < res["on_disk"] < res["sent"]
    chunks, problems = scan_chunks(path)
    assert problems == [] and chunks[-1].offset + chunks[-1].size == size  # ends on a whole chunk
    streams, _ = _load(path)  # plain pyxdf reads it
    assert len(streams[1]["time_stamps"]) == res["on_disk"]
    ses = read_session(path)
    assert "no footer" in ses.damage and len(ses.stream(1).time_stamps) == res["on_disk"]


class _FullDiskOs:
    """``os`` whose ``write`` fails with ENOSPC once ``budget`` bytes are written."""

    def __init__(self, budget: int) -> None:
        self.budget = budget

    def write(self, fd: int, data) -> int:
        if self.budget <= 0:
            raise OSError(28, "No space left on device")
        n = os.write(fd, bytes(data[: self.budget]))
        self.budget -= n
        return n

    def __getattr__(self, name):
        return getattr(os, name)


def test_enospc_keeps_whole_chunks_and_closes_the_writer(tmp_path, monkeypatch):
    path = tmp_path / "s.xdf"
    w = XdfWriter(path, flush_s=1e9, fsync=True)
    w.add_stream(1, name="x", type="Misc", channel_count=2, nominal_srate=10.0, channel_format="int16")
    w.flush()
    start = path.stat().st_size
    monkeypatch.setattr(xw, "os", _FullDiskOs(100))
    for i in range(20):
        w.write_samples(1, [float(i)], [[i, i]])  # 23-byte chunks: 4 fit in 100 bytes
    with pytest.raises(RecordingError, match="disk full or file too large \\(ENOSPC\\)"):
        w.flush()
    monkeypatch.undo()
    assert w.closed and w.samples_on_disk == {1: 4}
    assert path.stat().st_size == start + 4 * 23
    with pytest.raises(RecordingError, match="ENOSPC"):
        w.write_samples(1, [0.0], [[0, 0]])
    ses = read_session(path)
    assert ses.stream(1).time_stamps.tolist() == [0.0, 1.0, 2.0, 3.0] and "no footer" in ses.damage


class _InterruptedOs(_FullDiskOs):
    """``os`` whose ``write`` is interrupted (KeyboardInterrupt) once ``budget`` bytes are written."""

    def write(self, fd: int, data) -> int:
        if self.budget <= 0:
            self.budget = 10**9
            raise KeyboardInterrupt
        return super().write(fd, data)


def test_an_interrupted_flush_leaves_whole_chunks_and_keeps_the_rest(tmp_path, monkeypatch):
    path = tmp_path / "s.xdf"
    w = XdfWriter(path, flush_s=1e9, fsync=False)
    w.add_stream(1, name="x", type="Misc", channel_count=2, nominal_srate=10.0, channel_format="int16")
    w.flush()
    monkeypatch.setattr(xw, "os", _InterruptedOs(50))
    for i in range(10):
        w.write_samples(1, [float(i)], [[i, -i]])
    with pytest.raises(KeyboardInterrupt):
        w.flush()
    assert w.samples_on_disk == {1: 2}  # 2 whole 23-byte chunks; the third, cut, is out of the file again
    w.write_samples(1, [10.0], [[10, -10]])
    w.close()
    ses = read_session(path)
    assert ses.damage is None
    assert ses.stream(1).time_stamps.tolist() == [float(i) for i in range(11)]
    assert ses.stream(1).time_series[:, 1].tolist() == [-i for i in range(11)]


def test_folder_errors_name_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "nope" / "s.xdf"
    with pytest.raises(RecordingError, match=f"folder {missing.parent} does not exist; create it"):
        XdfWriter(missing)
    with pytest.raises(RecordingError, match="does not exist; create it"):
        check_writable(missing.parent)
    (tmp_path / "file").write_text("")
    with pytest.raises(RecordingError, match="is not a folder"):
        check_writable(tmp_path / "file")
    with pytest.raises(RecordingError, match="needs .* free space or choose another disk"):
        check_writable(tmp_path, min_free_bytes=2**62)
    assert check_writable(tmp_path, 1000) > 1000
    XdfWriter(tmp_path / "s.xdf").close()
    with pytest.raises(RecordingError, match="the file exists; choose a new name"):
        XdfWriter(tmp_path / "s.xdf")
    XdfWriter(tmp_path / "s.xdf", overwrite=True).close()
    assert issubclass(RecordingError, RtneuroError)


def test_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: a read-only folder is writable anyway")
        with pytest.raises(RecordingError, match="not writable"):
            check_writable(folder)
        with pytest.raises(RecordingError, match="not writable"):
            XdfWriter(folder / "s.xdf")
    finally:
        folder.chmod(0o700)


def test_invalid_arguments_raise_with_the_fix(tmp_path):
    with XdfWriter(tmp_path / "s.xdf", fsync=False) as w:
        with pytest.raises(ConfigError, match="did you mean 'float32'"):
            w.add_stream(1, name="x", type="EEG", channel_count=2, nominal_srate=1.0, channel_format="float")
        w.add_stream(1, name="x", type="EEG", channel_count=2, nominal_srate=1.0, channel_format="int16")
        with pytest.raises(ConfigError, match="already in this file"):
            w.add_stream(1, name="y", type="EEG", channel_count=2, nominal_srate=1.0, channel_format="int16")
        with pytest.raises(ConfigError, match="was not added"):
            w.write_samples(2, [0.0], [[0, 0]])
        with pytest.raises(ConfigError, match=r"shape \(n_times, n_channels\) = \(1, 2\), got \(1, 3\)"):
            w.write_samples(1, [0.0], [[0, 0, 0]])
        with pytest.raises(ConfigError, match="float64 data cannot be written as int16"):
            w.write_samples(1, [0.0], [[0.5, 1.0]])
        with pytest.raises(ConfigError, match="not a valid XML element name"):
            w.add_stream(3, name="x", type="EEG", channel_count=1, nominal_srate=1.0, channel_format="int8",
                         desc={"bad key": 1})
        with pytest.raises(ConfigError, match="never added"):
            w.close({9: {"a": 1}})
        assert not w.closed  # a bad footer leaves the writer open
    assert w.closed
    with pytest.raises(RecordingError, match="is closed"):
        w.write_samples(1, [0.0], [[0, 0]])
    with pytest.raises(RecordingError, match="not an XDF file"):
        (tmp_path / "t.txt").write_text("hello")
        read_session(tmp_path / "t.txt")
    with pytest.raises(RecordingError, match="not found"):
        read_session(tmp_path / "missing.xdf")


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def monotonic(self) -> float:
        return self.t

    def __getattr__(self, name):
        return getattr(time, name)


def test_flushes_and_boundaries_follow_the_wall_clock(tmp_path, monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(xw, "time", clock)
    path = tmp_path / "s.xdf"
    w = XdfWriter(path, flush_s=0.25, fsync=True, boundary_s=10.0)
    w.add_stream(1, name="x", type="EEG", channel_count=1, nominal_srate=100.0, channel_format="float32")
    for i in range(5):
        clock.t += 0.0625
        w.write_samples(1, [float(i)], [[1.0]])
    assert w.samples_on_disk == {1: 4}  # flushed by the write at +0.25 s
    assert w.flush_if_due() is False
    clock.t += 0.25
    assert w.flush_if_due() is True and w.samples_on_disk == {1: 5}
    for i in range(5, 30):
        clock.t += 1.0
        w.write_samples(1, [float(i)], [[1.0]])
    w.close()
    chunks, _ = scan_chunks(path)
    assert sum(c.tag == 5 for c in chunks) == 2  # every 10 s


def test_numeric_samples_are_encoded_without_python_per_sample(tmp_path):
    w = XdfWriter(tmp_path / "s.xdf", flush_s=1e9, fsync=False, boundary_s=1e9)
    w.add_stream(1, name="x", type="EEG", channel_count=64, nominal_srate=1000.0, channel_format="float32")

    def calls(n: int) -> int:
        ts, x = np.arange(n) / 1000.0, np.ones((n, 64), np.float32)
        count = 0

        def prof(frame, event, arg):
            nonlocal count
            count += event in ("call", "c_call")

        sys.setprofile(prof)
        try:
            w.write_samples(1, ts, x)
        finally:
            sys.setprofile(None)
        return count

    calls(300)  # warm up
    assert calls(10_000) == calls(300)  # (both > 255 samples: the same 4-byte sample count)
    w.close()
    chunks, _ = scan_chunks(tmp_path / "s.xdf")
    assert [c.n_samples for c in chunks if c.tag == 3] == [300, 10_000, 300]  # one chunk per call


def test_a_session_that_never_added_a_stream_is_reported(tmp_path):
    path = tmp_path / "s.xdf"
    w = XdfWriter(Path(path), fsync=False)
    w.close()
    ses = read_session(path)
    assert ses.streams == [] and "no stream" in ses.damage
    path.write_bytes(b"XD")
    assert "in the 'XDF:' magic" in read_session(path).damage
