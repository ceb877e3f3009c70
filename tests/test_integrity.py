"""Damaged recordings: refused in one line at validate and at start, or replayed knowingly with the gap marked.

Every format rtneuro reads through MNE, and XDF, is written small from a real
recording (PhysioNet EEGMMIDB S003R03: 8 channels, 10 s, with its
annotations) by the format's own writer where MNE has one (edfio for EDF and
BDF, eeglabio for EEGLAB, pybv for BrainVision, MNE for FIF; GDF by hand,
after the GDF 1.25 specification), then cut with the equivalent of
``head -c`` at several points: inside the header, mid-data, one byte short,
and on a record / sample / chunk boundary.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import mne
import numpy as np
import pytest
import scipy.io

from rtneuro.cli import main as cli_main
from rtneuro.errors import ConfigError, DamagedFileError
from rtneuro.nodes import NodeContext, build_params
from rtneuro.nodes.sources import FileReplay, FileReplayParams
from rtneuro.nodes.xdf import XdfReplay, XdfReplayParams
from rtneuro.recording.integrity import check, register, require

from conftest import REPLAY, ROOT

XDF = REPLAY / "xdf"


# -- writing small real files ----------------------------------------------------


def _write_gdf1(path: Path, data_uv: np.ndarray, sfreq: float, ch_names: list[str], events: list[tuple[int, int]]) -> None:
    """GDF 1.25 (Schloegl 2006): int16 samples at 0.1 uV, 1-s records, an event table of mode 1."""
    ns, n = data_uv.shape
    spr = int(sfreq)
    n_rec = -(-n // spr)
    x = np.zeros((ns, n_rec * spr))
    x[:, :n] = data_uv
    dig = np.clip(np.round(x * 10), -32768, 32767).astype("<i2")
    h = bytearray(256)
    h[0:8] = b"GDF 1.25"
    h[8:88] = b"X".ljust(80)
    h[88:168] = b"rtneuro test".ljust(80)
    h[168:184] = b"2024010112000000"
    struct.pack_into("<q", h, 184, 256 * (ns + 1))
    struct.pack_into("<q", h, 236, n_rec)
    struct.pack_into("<II", h, 244, 1, 1)
    struct.pack_into("<I", h, 252, ns)
    v = b"".join(c.encode().ljust(16) for c in ch_names) + b" " * 80 * ns + b"uV".ljust(8) * ns
    v += struct.pack(f"<{ns}d", *[-3276.8] * ns) + struct.pack(f"<{ns}d", *[3276.7] * ns)
    v += struct.pack(f"<{ns}q", *[-32768] * ns) + struct.pack(f"<{ns}q", *[32767] * ns)
    v += b" " * 80 * ns + struct.pack(f"<{ns}i", *[spr] * ns) + struct.pack(f"<{ns}i", *[3] * ns) + b"\0" * 32 * ns
    body = b"".join(dig[:, r * spr:(r + 1) * spr].tobytes() for r in range(n_rec))
    ev = bytes([1]) + int(sfreq).to_bytes(3, "little") + struct.pack("<I", len(events))
    ev += struct.pack(f"<{len(events)}I", *[p + 1 for p, _ in events]) + struct.pack(f"<{len(events)}H", *[t for _, t in events])
    path.write_bytes(bytes(h) + v + body + ev)


def _set_with_fdt(src: Path, dst: Path) -> None:
    """The EEGLAB .set ``src`` (samples inside) as ``dst`` + ``dst.fdt`` (float32, sample after sample), as EEGLAB saves."""
    m = {k: v for k, v in scipy.io.loadmat(str(src), appendmat=False).items() if not k.startswith("__")}
    np.asarray(m["data"], dtype="<f4").T.tofile(dst.with_suffix(".fdt"))
    m["data"] = m["datfile"] = dst.with_suffix(".fdt").name
    scipy.io.savemat(str(dst), m, appendmat=False, format="5", long_field_names=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One small intact file per format: name -> the path a user names."""
    d = tmp_path_factory.mktemp("intact")
    raw = mne.io.read_raw(REPLAY / "S003R03.edf", preload=True, verbose="error")
    raw.crop(0, 10).pick(raw.ch_names[:8]).rename_channels(lambda s: s.strip("."))
    out = {"EDF": d / "r.edf", "BDF": d / "r.bdf", "EEGLAB": d / "r.set", "BrainVision": d / "r.vhdr"}
    for fmt, path in out.items():
        mne.export.export_raw(path, raw, fmt={"EDF": "edf", "BDF": "bdf", "EEGLAB": "eeglab", "BrainVision": "brainvision"}[fmt],
                              overwrite=True, verbose="error")
    out["FIF"] = d / "r_raw.fif"
    raw.save(out["FIF"], verbose="error")
    out["EEGLAB.fdt"] = d / "rf.set"
    _set_with_fdt(out["EEGLAB"], out["EEGLAB.fdt"])
    out["GDF"] = d / "r.gdf"
    _write_gdf1(out["GDF"], raw.get_data() * 1e6, raw.info["sfreq"], raw.ch_names, [(10, 1), (700, 2)])
    out["XDF"] = XDF / "minimal.xdf"
    out["XDF.long"] = XDF / "clock_resets.xdf"
    return out


#: format -> (the file that is cut, relative to the file a user names), where it is cut: a byte count
#: (negative: from the end) or a name for a boundary the test computes
CUTS = {
    "EDF": ("", [100, 0.5, -1, "record"]),
    "BDF": ("", [100, 0.5, -1, "record"]),
    "GDF": ("", [100, 0.5, -1, "record"]),
    "EEGLAB": ("", [100, 0.5, -1]),
    "EEGLAB.fdt": (".fdt", [100, 0.5, -1, "sample"]),
    "BrainVision": (".eeg", [100, 0.5, -1, "sample"]),
    "FIF": ("", [100, 0.5, -1, "tag"]),
    "XDF": ("", [100, 0.5, -1, "chunk"]),
}


def _boundary(path: Path, kind: str) -> int:
    """A cut that falls exactly between two records / samples / tags / chunks, in the middle of the data."""
    size = path.stat().st_size
    if kind == "record":  # EDF/BDF/GDF: header + 5 records
        res = check(path)
        return res.details.get("header_bytes", 0) + 5 * res.details.get("record_bytes", 0) if res.details else size // 2
    if kind == "sample":  # 8 channels of float32
        return 300 * 32
    if kind == "tag":  # FIF: the start of a data buffer tag
        pos = 0
        with open(path, "rb") as f:
            while pos < size:
                f.seek(pos)
                kind_, _, tsize, _ = struct.unpack(">iIii", f.read(16))
                if kind_ == 300 and pos > size // 3:
                    return pos
                pos += 16 + tsize
        raise AssertionError("no data buffer")
    if kind == "chunk":
        from rtneuro.recording.xdf_read import scan_chunks

        chunks, _ = scan_chunks(path)
        return chunks[len(chunks) // 2].offset
    raise AssertionError(kind)


def _damaged_copy(files: dict[str, Path], fmt: str, where, dest: Path) -> Path:
    """Copy the format's file(s) into ``dest`` and cut one of them at ``where``; returns the path a user names."""
    named = files[fmt]
    dest.mkdir(parents=True, exist_ok=True)
    for f in named.parent.glob(named.stem + ".*"):
        (dest / f.name).write_bytes(f.read_bytes())
    suffix = CUTS.get(fmt, ("", []))[0]
    victim = dest / (named.stem + suffix if suffix else named.name)
    data = victim.read_bytes()
    if isinstance(where, str):
        n = _boundary(victim, where)
    elif isinstance(where, float):
        n = int(len(data) * where)
    else:
        n = where if where >= 0 else len(data) + where
    assert 0 < n < len(data)
    victim.write_bytes(data[:n])
    return dest / named.name


def _graph(path: Path, node_type: str = "file_replay", **params) -> dict:
    return {"name": "damaged", "runtime": {"speed": "max", "status_interval_s": 0.2},
            "nodes": [{"id": "src", "type": node_type, "process": "acquire", "params": {"path": str(path), **params}}]}


# -- the check itself ------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["EDF", "BDF", "GDF", "EEGLAB", "EEGLAB.fdt", "BrainVision", "FIF"])
def test_an_intact_file_is_whole_and_its_count_is_what_mne_reads(files, fmt):
    res = check(files[fmt])
    assert res.ok and res.checked and res.reason is None, res
    raw = mne.io.read_raw(files[fmt], verbose="error")
    assert res.readable_samples == raw.n_times
    assert res.expected_samples in (None, raw.n_times)


@pytest.mark.parametrize("name", ["S003R01.edf", "S003R02.edf", "S003R03.edf", "xdf/clock_resets.xdf",
                                  "xdf/minimal.xdf", "xdf/empty_streams.xdf"])
def test_the_shipped_recordings_are_whole(name):
    res = check(REPLAY / name)
    assert res.ok, res.reason
    if name.endswith(".edf"):  # EDF+: an annotation channel beside 64 EEG channels at 160 Hz
        assert res.readable_samples == mne.io.read_raw(REPLAY / name, verbose="error").n_times


@pytest.mark.parametrize("fmt", list(CUTS))
def test_validate_refuses_a_cut_file_in_one_line_exit_2(files, fmt, tmp_path, write_graph, capsys):
    for k, where in enumerate(CUTS[fmt][1]):
        path = _damaged_copy(files, fmt, where, tmp_path / f"cut{k}")
        res = check(path)
        assert not res.ok and res.reason, (fmt, where)
        graph = write_graph(_graph(path, "xdf_replay" if fmt == "XDF" else "file_replay"), f"g{k}.yaml")
        assert cli_main(["validate", str(graph)]) == 2, (fmt, where)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1, (fmt, where, err)
        assert "Traceback" not in err and str(path) in lines[0] and f"damaged {res.format} file" in lines[0]
        assert "replace it with an intact copy" in lines[0], lines[0]


def test_an_edf_never_closed_is_refused_and_an_edf_padded_or_garbled_too(files, tmp_path):
    data = bytearray(files["EDF"].read_bytes())
    never = tmp_path / "never.edf"
    never.write_bytes(data[:236] + b"-1".ljust(8) + data[244:])
    res = check(never)
    assert not res.ok and "-1" in res.reason and res.expected_samples is None
    assert res.readable_samples == 1760 and res.missing == ((1760, None),)
    garbled = tmp_path / "garbled.edf"
    garbled.write_bytes(data[:236] + b"eleven".ljust(8) + data[244:])
    res = check(garbled)
    assert not res.ok and "not a number" in res.reason and res.readable_samples == 0


def test_a_gdf_whose_event_table_is_cut_is_damaged_with_its_samples_whole(files, tmp_path):
    path = tmp_path / "ev.gdf"
    path.write_bytes(files["GDF"].read_bytes()[:-3])
    res = check(path)
    assert not res.ok and "event table declares 2 events" in res.reason
    assert res.readable_samples == res.expected_samples == 1760 and res.missing == ()


def test_a_brainvision_marker_past_the_end_shows_a_cut_on_a_sample_boundary(files, tmp_path):
    path = _damaged_copy(files, "BrainVision", "sample", tmp_path)
    res = check(path)
    assert not res.ok and "has a marker at sample" in res.reason and res.readable_samples == 300


def test_formats_without_a_check_pass_unchecked_and_others_can_register_one(tmp_path):
    odd = tmp_path / "x.weird"
    odd.write_bytes(b"1234")
    res = check(odd)
    assert res.ok and not res.checked

    @register(".weird")
    def _check_weird(path: Path):
        from rtneuro.recording.integrity import Integrity

        return Integrity(path, "WEIRD", ok=False, reason="it is weird", expected_samples=10, readable_samples=4,
                         missing=((4, 10),), sfreq=2.0)

    try:
        with pytest.raises(DamagedFileError, match=r"x\.weird: damaged WEIRD file: it is weird; samples 4 to 10 are "
                                                   r"missing \(3\.000 s from 2\.000 s\); replace it"):
            require(odd)
        assert require(odd, accept=True).readable_samples == 4
    finally:
        from rtneuro.recording.integrity import CHECKS

        CHECKS.pop(".weird")


# -- accepting damage knowingly -------------------------------------------------------


def _replay(node) -> tuple[np.ndarray, list]:
    node.start(0.0)
    xs, evs = [], []
    while node.next_due() is not None:
        for port, chunk in node.read():
            (evs.extend(chunk.data.tolist()) if port == "events" else xs.append(chunk.data))
    return np.concatenate(xs), evs


def _file_replay(path: Path, **params) -> FileReplay:
    return FileReplay(build_params(FileReplayParams, {"path": str(path), **params}, "t"), [],
                      NodeContext(node_id="src", base_dir=path.parent))


@pytest.mark.parametrize("fmt", ["EDF", "BDF", "EEGLAB.fdt", "BrainVision", "FIF"])
def test_accept_damaged_replays_the_readable_part_and_marks_the_gap(files, fmt, tmp_path):
    intact, _ = _replay(_file_replay(files[fmt]))
    path = _damaged_copy(files, fmt, 0.5, tmp_path)
    with pytest.raises(DamagedFileError):
        _file_replay(path)
    node = _file_replay(path, accept_damaged=True)
    res = check(path)
    x, evs = _replay(node)
    n = res.readable_samples
    assert 0 < n < intact.shape[0] and x.shape[0] == n
    np.testing.assert_array_equal(x, intact[:n])  # the readable part, bit for bit
    gaps = [e for e in evs if e[-1] == b"gap"]
    assert len(gaps) == 1 and gaps[0][0] == n - 1  # on the last readable sample
    missing = res.missing_samples
    assert gaps[0][4] == pytest.approx((missing or 0) / node.sfreq)
    rep = node.report()["damaged_files"][0]
    assert rep["readable_samples"] == n and rep["missing"] == [list(s) for s in res.missing] and rep["reason"]
    notes = node.take_notes()
    assert len(notes) == 1 and "accept_damaged" in notes[0] and f"{n} samples replayed" in notes[0]


def test_accept_damaged_cannot_make_an_unreadable_file_readable(files, tmp_path):
    path = _damaged_copy(files, "EDF", 100, tmp_path)
    with pytest.raises(DamagedFileError, match="nothing in it can be replayed"):
        _file_replay(path, accept_damaged=True)


def test_a_file_damaged_while_it_is_replayed_fails_in_one_line(files, tmp_path):
    path = _damaged_copy(files, "EEGLAB.fdt", -1, tmp_path)
    (tmp_path / "rf.fdt").write_bytes(files["EEGLAB.fdt"].with_suffix(".fdt").read_bytes())  # whole again
    node = _file_replay(path)
    (tmp_path / "rf.fdt").write_bytes(b"\0" * 1000)  # cut after the node checked it
    node.start(0.0)
    with pytest.raises(DamagedFileError) as err:
        node.read()
    assert str(path.with_suffix(".fdt").name) in str(err.value) or str(path) in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_a_cut_xdf_replays_its_whole_chunks_when_accepted(files, tmp_path):
    path = _damaged_copy(files, "XDF.long", 0.5, tmp_path)

    def xdf(**p):
        return XdfReplay(build_params(XdfReplayParams, {"path": str(path), **p}, "t"), [],
                         NodeContext(node_id="x", base_dir=tmp_path))

    with pytest.raises(DamagedFileError, match=r"truncated at byte \d+ in a Samples chunk"):
        xdf()
    whole = XdfReplay(build_params(XdfReplayParams, {"path": str(files["XDF.long"])}, "t"), [],
                      NodeContext(node_id="x", base_dir=XDF))
    node = xdf(accept_damaged=True)
    main, ref = node.streams[0], whole.streams[0]
    assert 0 < len(main.ts) < len(ref.ts)
    np.testing.assert_array_equal(main.data, ref.data[:len(main.ts)])  # nothing salvaged from the cut chunk
    rep = node.report()["damaged_file"]
    assert rep["readable_until_s"] > 0 and "truncated at byte" in rep["reason"]
    assert len(node.take_notes()) == 1


def test_train_refuses_a_cut_edf_instead_of_training_on_half(files, tmp_path):
    from rtneuro.decoders.train import read_recording

    cut = tmp_path / "half.edf"
    cut.write_bytes((REPLAY / "S003R03.edf").read_bytes()[:1_300_000])
    with pytest.raises(DamagedFileError) as err:
        read_recording([cut])
    msg = str(err.value)
    assert "half.edf: damaged EDF file" in msg and "replace it with an intact copy" in msg
    assert "accept_damaged" not in msg  # no option: training on a cut file is never what one wants
    assert isinstance(err.value, ConfigError)


# -- the command line, as a user meets it ------------------------------------------------


def _rtneuro(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "rtneuro", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_run_of_a_truncated_eeglab_fdt_exits_2_in_one_line_without_restarts(files, tmp_path, write_graph):
    path = _damaged_copy(files, "EEGLAB.fdt", 0.5, tmp_path)
    graph = write_graph(_graph(path))
    r = _rtneuro("run", str(graph), "--quiet")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "rf.fdt has" in lines[0], r.stderr
    assert "restart" not in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_a_file_cut_between_validate_and_start_stops_the_run_without_restarts(files, tmp_path, write_graph, capfd):
    from rtneuro.config import load_graph
    from rtneuro.runtime.supervisor import Supervisor

    path = tmp_path / "rf.set"
    for f in files["EEGLAB.fdt"].parent.glob("rf.*"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    fdt = tmp_path / "rf.fdt"
    graph = load_graph(write_graph(_graph(path)))  # whole when the graph is loaded
    fdt.write_bytes(fdt.read_bytes()[:20000])  # cut before the acquire process opens it
    sup = Supervisor(graph, quiet=True)
    assert sup.run() != 0
    rep = sup.report
    assert rep["restarts"] == 0 and len(rep["errors"]) == 1, rep["errors"]
    err = capfd.readouterr().err
    assert err.count("damaged EEGLAB file: its data file rf.fdt has 20000 of the 51232 bytes") == 1, err
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_run_with_accept_damaged_reports_the_gap(files, tmp_path, write_graph, run_graph):
    path = _damaged_copy(files, "EDF", 0.5, tmp_path)
    code, rep, out = run_graph(write_graph(_graph(path, accept_damaged=True)))
    assert code == 0, out
    assert rep["streams"]["src"]["samples"] == check(path).readable_samples
    assert rep["streams"]["src.events"]["samples"] >= 2  # the file's start, the gap (and annotations)
    dmg = rep["nodes"]["src"]["damaged_files"][0]
    assert dmg["missing"] == [[800, 1760]] and dmg["missing_samples"] == 960
    assert any("damaged EDF file replayed as accept_damaged asks" in w for w in rep["warnings"])
    json.dumps(rep)


def test_an_xdf_corrupt_in_the_middle_is_replayed_around_the_damage_when_accepted(files, tmp_path):
    from rtneuro.recording.xdf_read import scan_chunks

    chunks, _ = scan_chunks(files["XDF.long"])
    bad = next(c for c in chunks if c.tag == 3 and c.offset > 500_000)  # a Samples chunk in the middle
    data = bytearray(files["XDF.long"].read_bytes())
    data[bad.offset] = 7  # an invalid length byte: the chunk's framing is lost
    path = tmp_path / "mid.xdf"
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedFileError, match=r"corrupt at byte \d+ in a chunk's header"):
        XdfReplay(build_params(XdfReplayParams, {"path": str(path)}, "t"), [], NodeContext(node_id="x", base_dir=tmp_path))
    node = XdfReplay(build_params(XdfReplayParams, {"path": str(path), "accept_damaged": True}, "t"), [],
                     NodeContext(node_id="x", base_dir=tmp_path))
    whole = XdfReplay(build_params(XdfReplayParams, {"path": str(files["XDF.long"])}, "t"), [],
                      NodeContext(node_id="x", base_dir=XDF))
    main, ref = node.streams[0], whole.streams[0]
    lost = len(ref.ts) - len(main.ts)
    assert 0 < lost < 1000  # the samples up to the next Boundary chunk, not the rest of the file
    assert main.ts[-1] == pytest.approx(ref.ts[-1], abs=0.5)  # to the end of the file (dejittered per segment)
    (note,) = node.take_notes()
    assert "the damaged chunks are skipped" in note


@pytest.mark.parametrize("name", ["junk.edf", "junk.bdf", "junk.gdf", "junk.set", "junk_raw.fif"])
def test_a_file_that_is_not_of_its_format_at_all_gets_the_reader_s_error_not_damaged(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"not a recording at all" * 20)
    assert not check(path).checked
    with pytest.raises(ConfigError) as err:
        _file_replay(path)
    assert "damaged" not in str(err.value) and "not a recording MNE can read" in str(err.value)
