"""Electrophysiology formats through file_replay, against the field's own readers on the same files.

Each shipped recording (replay_data/ephys/) is replayed by ``file_replay``
and compared with neo, SpikeInterface or pynwb reading it directly, in
microvolts. Our reader computes ``int * gain + offset`` in float32 (neo's
own ``rescale_signal_raw_to_float`` default), so values agree to float32
precision: ``atol=1e-3 uV`` plus ``rtol=1e-6``. Any chunk size gives the
same samples bit for bit.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from rtneuro.errors import ConfigError, DamagedFileError
from rtneuro.nodes import NodeContext, build_params
from rtneuro.nodes.sources import FileReplay, FileReplayParams
from rtneuro.recording import ephys

EPHYS = Path(__file__).resolve().parent.parent / "replay_data" / "ephys"
SGLX = EPHYS / "spikeglx"
OEB = EPHYS / "openephys_binary"
OEL = EPHYS / "openephys_legacy"
NS2 = EPHYS / "blackrock" / "example_2.ns2"
NWB = EPHYS / "nwb" / "sample_ecephys.nwb"
TOL = {"atol": 1e-3, "rtol": 1e-6}


def _node(**kw) -> FileReplay:
    node = FileReplay(build_params(FileReplayParams, kw, "params"), [], NodeContext(node_id="rec"))
    node.open()
    node.reset()
    node.start(0.0)
    return node


def _play(**kw) -> tuple[np.ndarray, list, FileReplay]:
    node = _node(**kw)
    data, events = [], []
    while node.next_due() is not None:
        for port, chunk in node.read():
            (data if port == "" else events).append(chunk.data)
    ev = np.concatenate(events) if events else []
    return np.concatenate(data), ev, node


def _neo_uv(rawio_cls, stream_index: int = 0, **kw) -> np.ndarray:
    io = rawio_cls(**kw)
    io.parse_header()
    raw = io.get_analogsignal_chunk(0, 0, None, None, stream_index)
    x = io.rescale_signal_raw_to_float(raw, dtype="float64", stream_index=stream_index)
    units = io.header["signal_channels"][io.header["signal_channels"]["stream_id"] == io.header["signal_streams"][stream_index]["id"]]["units"]
    factor = np.array([{"uV": 1.0, "mV": 1e3, "V": 1e6}.get(str(u), 1.0) for u in units])
    return x * factor


# -- each format against its own reader ---------------------------------------------


def test_spikeglx_matches_spikeinterface_in_microvolts_with_the_probe_geometry():
    from spikeinterface.extractors import read_spikeglx

    x, _, node = _play(path=str(SGLX), chunk_size=333)
    rec = read_spikeglx(SGLX, stream_id="imec0.ap")
    ref = rec.get_traces(return_in_uV=True).astype(np.float64)
    assert x.shape == ref.shape == (2000, 384)
    np.testing.assert_allclose(x, ref, **TOL)
    meta = node.outputs[""]
    assert meta.sfreq == 30000.0 and meta.units == ("uV",) * 384 and meta.ch_names[:2] == ("AP0", "AP1")
    # the .meta's ~snsGeomMap measures x from the shank's edge, probeinterface from the first column: same layout
    pos, ref_pos = np.asarray(meta.desc["positions_um"]), rec.get_channel_locations()
    np.testing.assert_allclose(pos - pos[2], ref_pos - ref_pos[2])
    assert meta.desc["format"] == "spikeglx" and meta.desc["stream"] == "imec0.ap"


def test_openephys_binary_matches_neo_and_publishes_its_ttl_events():
    import neo.rawio

    x, ev, node = _play(path=str(OEB), chunk_size=1000)
    np.testing.assert_allclose(x, _neo_uv(neo.rawio.OpenEphysBinaryRawIO, dirname=str(OEB)), **TOL)
    assert x.shape == (12000, 16) and node.outputs[""].sfreq == 40000.0
    labels = [lab.decode() for lab in ev["label"]]
    # published sample numbers: TTL line 2 rose at 40944, 853 samples after the first sample (40091)
    assert labels[0] == "file:openephys_binary"
    assert ("Messages:TTL Line=2 State=1", 853) in list(zip(labels, ev["index"].tolist(), strict=True))
    # neo pairs the 128 TTL state changes (rise, fall) into 64 events with durations
    net = np.array([lab.startswith("Network Events output:") for lab in labels])
    assert net.sum() == 64 and np.all(ev["duration"][net] >= 0) and np.any(ev["duration"][net] > 0)


def test_openephys_binary_oebin_file_is_the_same_recording():
    oebin = next(OEB.rglob("structure.oebin"))
    a, _, _ = _play(path=str(oebin), events=False)
    b, _, _ = _play(path=str(OEB), events=False)
    np.testing.assert_array_equal(a, b)


def test_openephys_legacy_matches_neo():
    import neo.rawio

    x, _, node = _play(path=str(OEL), chunk_size=4096, stop_s=1.0)
    ref = _neo_uv(neo.rawio.OpenEphysRawIO, dirname=str(OEL))[:40000]
    np.testing.assert_allclose(x, ref, **TOL)
    assert node.outputs[""].ch_names == ("CH1", "CH2", "CH3", "CH4")


def test_blackrock_ns2_matches_neo_and_keeps_its_unscaled_unit():
    import neo.rawio

    x, _, node = _play(path=str(NS2), chunk_size=100)
    with pytest.warns(UserWarning):  # this file's analog inputs carry no voltage scaling (neo says so too)
        ref = _neo_uv(neo.rawio.BlackrockRawIO, filename=str(NS2))
    np.testing.assert_allclose(x, ref, **TOL)
    meta = node.outputs[""]
    assert meta.units == ("au",) * 6 and meta.ch_types == ("misc",) * 6 and meta.sfreq == 1000.0


def test_nwb_electrical_series_matches_pynwb_with_electrode_positions():
    from pynwb import NWBHDF5IO

    x, _, node = _play(path=str(NWB), chunk_size=250)
    with NWBHDF5IO(str(NWB), "r") as io:
        f = io.read()
        es = f.acquisition["ElectricalSeries"]
        ref = es.data[:] * es.conversion * 1e6 + es.offset * 1e6
        table = f.electrodes.to_dataframe()
        pos = np.stack([table["rel_x"], table["rel_y"]], axis=1)
        labels = tuple(table["label"])
    np.testing.assert_allclose(x, ref, **TOL)
    meta = node.outputs[""]
    assert meta.ch_names == labels and meta.ch_types == ("seeg",) * 16
    np.testing.assert_allclose(meta.desc["positions_um"], pos)


def test_raw_binary_matches_spikeinterface_with_declared_gain_and_offset(tmp_path):
    from spikeinterface.core import read_binary

    rng = np.random.default_rng(0)
    arr = rng.integers(-2000, 2000, (5000, 6)).astype("<i2")
    path = tmp_path / "probe.dat"
    arr.tofile(path)
    x, _, node = _play(path=str(path), dtype="int16", n_channels=6, sfreq=20000.0, gain=0.195, offset=-3.0, chunk_size=64)
    rec = read_binary(path, sampling_frequency=20000.0, dtype="int16", num_channels=6, gain_to_uV=0.195, offset_to_uV=-3.0)
    np.testing.assert_allclose(x, rec.get_traces(return_in_uV=True), **TOL)
    assert node.outputs[""].units == ("uV",) * 6
    mv, _, _ = _play(path=str(path), dtype="int16", n_channels=6, sfreq=20000.0, gain=0.000195, data_unit="mV")
    np.testing.assert_allclose(mv, arr * 0.195, **TOL)


def test_npy_with_declared_rate_and_gain(tmp_path):
    arr = np.random.default_rng(1).normal(0, 1, (3000, 3)).astype(np.float32)
    np.save(tmp_path / "lfp.npy", arr)
    x, _, node = _play(path=str(tmp_path / "lfp.npy"), sfreq=1000.0, gain=2.0, data_unit="V", unit="V")
    np.testing.assert_allclose(x, arr.astype(np.float64) * 2.0, rtol=1e-6)
    assert node.outputs[""].units == ("V",) * 3 and node.n_total == 3000
    with pytest.raises(ConfigError, match="set sfreq"):
        _node(path=str(tmp_path / "lfp.npy"))
    with pytest.raises(ConfigError, match="3 columns, not n_channels=5"):
        _node(path=str(tmp_path / "lfp.npy"), sfreq=1000.0, n_channels=5)


# -- replay properties ----------------------------------------------------------------


@pytest.mark.parametrize("path", [SGLX, OEB, NWB], ids=["spikeglx", "openephys_binary", "nwb"])
def test_any_chunk_size_gives_the_same_samples(path):
    whole, _, _ = _play(path=str(path), chunk_size=100_000, events=False)
    for size in (1, 37, 1000):
        if size == 1 and whole.shape[0] > 3000:
            part, _, _ = _play(path=str(path), chunk_size=size, events=False, stop_s=100 / _node(path=str(path)).sfreq)
            np.testing.assert_array_equal(part, whole[:100])
            continue
        part, _, _ = _play(path=str(path), chunk_size=size, events=False)
        np.testing.assert_array_equal(part, whole)


def test_positions_follow_picks_and_reach_spike_deduplication():
    from rtneuro.nodes.spikes import SpikeDetect, SpikeDetectParams

    node = _node(path=str(SGLX), picks=["AP10", "AP2", "AP3"])
    meta = node.outputs[""]
    assert meta.desc["positions_um"] == [[11.0, 100.0], [11.0, 20.0], [43.0, 20.0]]
    spk = SpikeDetect(build_params(SpikeDetectParams, {"dedup_radius_um": 40.0, "noise_init_s": 0.01}, "p"), [meta],
                      NodeContext(node_id="spk"))
    # AP2 and AP3 are 32 um apart, AP10 is 80 um from both
    np.testing.assert_array_equal(spk._neigh, [[1, 0, 0], [0, 1, 1], [0, 1, 1]])


def test_a_multi_stream_recording_names_its_streams():
    node = _node(path=str(SGLX), stream="imec0.ap-SYNC")
    assert node.outputs[""].ch_names == ("SY0",) and "positions_um" not in node.outputs[""].desc
    with pytest.raises(ConfigError, match=r"no signal stream 'imec0.lf'.*streams: imec0.ap, imec0.ap-SYNC"):
        _node(path=str(SGLX), stream="imec0.lf")


# -- damaged and unknown files -----------------------------------------------------------


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def _cut(path: Path, keep: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(keep)


@pytest.mark.parametrize("fraction", [0.0005, 0.5, 0.999])
def test_a_truncated_spikeglx_bin_is_refused_in_one_line_then_accepted_knowingly(tmp_path, fraction):
    folder = _copy(SGLX, tmp_path)
    b = next(folder.glob("*.bin"))
    size = b.stat().st_size
    keep = int(size * fraction)
    _cut(b, keep)
    with pytest.raises(DamagedFileError) as err:
        _node(path=str(folder))
    msg = str(err.value)
    assert "\n" not in msg and b.name in msg and f"holds {keep} of the {size} bytes" in msg and "accept_damaged" in msg
    readable = keep // (385 * 2)
    if readable == 0:
        return
    x, ev, node = _play(path=str(folder), accept_damaged=True, chunk_size=256)
    assert x.shape == (readable, 384)
    whole, _, _ = _play(path=str(SGLX), events=False)
    np.testing.assert_array_equal(x, whole[:readable])
    assert "gap" in [lab.decode() for lab in ev["label"]]
    assert node.report()["damaged_files"][0]["missing"] == [[readable, 2000]]


def test_a_truncated_openephys_binary_dat_is_refused(tmp_path):
    folder = _copy(OEB, tmp_path)
    dat = next(folder.rglob("continuous.dat"))
    _cut(dat, 16 * 2 * 5000)
    with pytest.raises(DamagedFileError, match=r"holds 5000 samples of 16 channels but sample_numbers.npy has 12000"):
        _node(path=str(folder))
    _cut(dat, 16 * 2 * 12000 + 3)
    with pytest.raises(DamagedFileError, match="3 bytes over"):
        _node(path=str(folder))


def test_a_truncated_openephys_legacy_record_is_refused(tmp_path):
    folder = _copy(OEL, tmp_path)
    f = folder / "100_example-data_CH3.continuous"
    _cut(f, 1024 + 2070 * 10 + 500)
    with pytest.raises(DamagedFileError, match=r"CH3.continuous: damaged Open Ephys legacy file: its last record .* is cut after 500 bytes"):
        _node(path=str(folder))


def test_a_raw_binary_whose_size_is_not_whole_samples_is_refused(tmp_path):
    path = tmp_path / "x.bin"
    np.zeros((100, 4), "<i2").tofile(path)
    with open(path, "ab") as f:
        f.write(b"\0" * 5)
    with pytest.raises(DamagedFileError, match=r"not whole samples of 4 channels x 2 bytes \(5 bytes over 100 samples"):
        _node(path=str(path), dtype="int16", n_channels=4, sfreq=1000.0)
    x, _, _ = _play(path=str(path), dtype="int16", n_channels=4, sfreq=1000.0, accept_damaged=True)
    assert x.shape == (100, 4)
    with pytest.raises(ConfigError, match="needs dtype"):
        _node(path=str(path), sfreq=1000.0)


def test_a_truncated_npy_is_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((1000, 2)))
    _cut(tmp_path / "a.npy", 4000)
    with pytest.raises(DamagedFileError, match="a.npy: damaged npy file: the array its header declares is not all there"):
        _node(path=str(tmp_path / "a.npy"), sfreq=100.0)


def test_unknown_formats_and_folders_say_what_is_supported(tmp_path):
    with pytest.raises(ConfigError, match=r"format='spikeglxx' is not supported \(did you mean 'spikeglx'\?\); supported: openephys_binary, .*npy"):
        _node(path=str(SGLX), format="spikeglxx")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="is a folder with no recording rtneuro recognises .* set format: one of"):
        _node(path=str(tmp_path))
    assert ephys.detect_format(SGLX / "sample_g0_t0.imec0.ap.bin") == "spikeglx"
    assert ephys.detect_format(Path("x.edf")) is None and ephys.detect_format(Path("x.ns5")) == "blackrock"


# -- as a new user meets a damaged file: rtneuro validate ------------------------------

def _ephys_cases() -> list[tuple[str, str, str, dict]]:
    """(name, file inside the copy to cut, path given to file_replay relative to the copy, extra params)."""
    return [
        ("spikeglx", "*.ap.bin", ".", {}),
        ("openephys_binary", "**/continuous.dat", ".", {}),
        ("openephys_legacy", "*CH3.continuous", ".", {}),
        ("blackrock", "example_2.ns2", "example_2.ns2", {}),
        ("nwb", "sample_ecephys.nwb", "sample_ecephys.nwb", {}),
    ]


@pytest.mark.parametrize("name, target, given, extra", _ephys_cases(), ids=[c[0] for c in _ephys_cases()])
def test_validate_of_a_cut_recording_of_each_format_is_one_line_exit_2(tmp_path, write_graph, capsys, name, target, given, extra):
    """Cut inside the header, in the middle and one byte short: one line naming the file, exit 2, no traceback."""
    from rtneuro.cli import main as cli_main

    src = EPHYS / name
    for k, fraction in enumerate((0.001, 0.5, None)):
        copy = tmp_path / f"cut{k}"
        shutil.copytree(src, copy)
        victim = next(iter(sorted(copy.glob(target))))
        size = victim.stat().st_size
        _cut(victim, size - 1 if fraction is None else max(1, int(size * fraction)))
        graph = {"name": "cut", "runtime": {"speed": "max"},
                 "nodes": [{"id": "src", "type": "file_replay", "process": "acquire",
                            "params": {"path": str(copy / given), **extra}}]}
        code = cli_main(["validate", str(write_graph(graph, f"g{k}.yaml"))])
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2, (name, fraction, err)
        assert len(lines) == 1 and "Traceback" not in err, (name, fraction, err)
        assert str(copy) in lines[0] and ("damaged" in lines[0] or "not a recording" in lines[0]), lines[0]


def test_a_blackrock_nsx_2_3_packet_cut_short_is_found(tmp_path):
    """A 2.3 file (headers, then packets of 0x01, a 4-byte timestamp, a count, samples) written by the spec's layout."""
    import struct

    cc, n = 3, 100
    head = bytearray(314)
    head[:8], head[8:10] = b"NEURALCD", bytes([2, 3])
    start = 314 + 66 * cc
    struct.pack_into("<I", head, 10, start)
    struct.pack_into("<I", head, 310, cc)
    packet = b"\x01" + struct.pack("<II", 0, n) + np.arange(n * cc, dtype="<i2").tobytes()
    path = tmp_path / "x.ns5"
    path.write_bytes(bytes(head) + bytes(66 * cc) + packet + packet)
    res = ephys.check(path)
    assert res.ok and res.readable_samples == 2 * n, res
    _cut(path, start + len(packet) + 9 + 2 * cc * 40 + 3)  # the second packet's 41st sample cut
    res = ephys.check(path)
    assert not res.ok and res.readable_samples == n + 40 and res.missing == ((n + 40, 2 * n),), res
    assert "data packet 2 declares 100 samples of 3 channels but the file ends after 40" in res.reason
    _cut(path, start + len(packet) + 4)
    assert "data packet header cut short" in ephys.check(path).reason


# -- formats with no sample file to fetch: written here from the manufacturer's layout ----------


def _ncs_folder(folder: Path) -> tuple[Path, np.ndarray]:
    """Two Neuralynx channels (CSC1 inverted, CSC2 at its own ADBitVolts), 1500 samples at 32 kHz: 3 records,
    the last holding 476 valid samples."""
    from reference.ephys_writers import write_ncs

    folder.mkdir()
    ints = np.random.default_rng(7).integers(-3000, 3000, (1500, 2)).astype("<i2")
    write_ncs(folder / "CSC1.ncs", ints[:, 0], name="CSC1", ad_channel=0, inverted=True)
    write_ncs(folder / "CSC2.ncs", ints[:, 1], name="CSC2", ad_channel=1, ad_bit_volts=2e-8)
    return folder, ints


def test_neuralynx_ncs_written_from_the_spec_is_read_by_neo_and_replayed_as_neo_reads_it(tmp_path):
    import neo.rawio

    from reference.ephys_writers import NCS_HEADER, NCS_RECORD

    folder, ints = _ncs_folder(tmp_path / "nlx")
    assert (folder / "CSC1.ncs").stat().st_size == NCS_HEADER + 3 * NCS_RECORD
    # the layout, proven by neo: the integers written, one stream, each channel's ADBitVolts (in uV, negated if inverted)
    io = neo.rawio.NeuralynxRawIO(dirname=str(folder))
    io.parse_header()
    chans = io.header["signal_channels"]
    assert list(chans["name"]) == ["CSC1", "CSC2"] and list(chans["units"]) == ["uV", "uV"]
    np.testing.assert_allclose(chans["gain"], [-1000 / 32768, 0.02])
    assert io.segment_count(0) == 1 and io.get_signal_size(0, 0, 0) == 1500
    np.testing.assert_array_equal(io.get_analogsignal_chunk(0, 0, None, None, 0), ints)
    assert io.get_signal_sampling_rate(0) == 32000.0

    x, _, node = _play(path=str(folder), chunk_size=100)
    ref = _neo_uv(neo.rawio.NeuralynxRawIO, dirname=str(folder))
    np.testing.assert_allclose(x, ref, **TOL)
    np.testing.assert_allclose(x, ints * np.array([-1000 / 32768, 0.02]), **TOL)
    meta = node.outputs[""]
    assert meta.ch_names == ("CSC1", "CSC2") and meta.sfreq == 32000.0 and meta.units == ("uV", "uV")
    for size in (1, 37, 512, 100_000):
        part, _, _ = _play(path=str(folder), chunk_size=size, events=False)
        np.testing.assert_array_equal(part, x)
    one, _, _ = _play(path=str(folder / "CSC2.ncs"), events=False)  # one .ncs on its own
    np.testing.assert_array_equal(one, x[:, 1:])


def test_a_neuralynx_ncs_cut_mid_record_is_refused_by_validate_then_replayed_in_whole_records(tmp_path, write_graph, capsys):
    from rtneuro.cli import main as cli_main

    from reference.ephys_writers import NCS_HEADER, NCS_RECORD

    whole_dir, _ = _ncs_folder(tmp_path / "whole")
    whole, _, _ = _play(path=str(whole_dir), events=False)
    for k, keep in enumerate((NCS_HEADER - 100, NCS_HEADER + 500, NCS_HEADER + 2 * NCS_RECORD + 500)):
        folder, _ = _ncs_folder(tmp_path / f"cut{k}")
        _cut(folder / "CSC1.ncs", keep)
        graph = {"name": "cut", "runtime": {"speed": "max"},
                 "nodes": [{"id": "src", "type": "file_replay", "process": "acquire", "params": {"path": str(folder)}}]}
        code = cli_main(["validate", str(write_graph(graph, f"g{k}.yaml"))])
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert "CSC1.ncs" in lines[0] and "damaged Neuralynx file" in lines[0], lines[0]
    # two whole records of CSC1 are left: accepted knowingly, both channels play those 1024 samples, then a gap
    x, ev, node = _play(path=str(folder), accept_damaged=True, chunk_size=300)
    assert x.shape == (1024, 2)
    np.testing.assert_array_equal(x, whole[:1024])
    assert "gap" in [lab.decode() for lab in ev["label"]]
    assert node.report()["damaged_files"][0]["missing"] == [[1024, 1536]]
    with pytest.raises(DamagedFileError, match=r"CSC1.ncs: damaged Neuralynx file: its last record .* is cut after 500 bytes"):
        _node(path=str(folder))


def test_intan_rhd_written_from_the_spec_is_read_by_neo_and_replayed_as_neo_reads_it(tmp_path):
    import neo.rawio

    from reference.ephys_writers import write_rhd

    ints = np.random.default_rng(3).integers(30000, 35000, (600, 3)).astype("<u2")  # 10 data blocks
    path = write_rhd(tmp_path / "x.rhd", ints, sfreq=20000.0, names=["ca1_a", "ca1_b", "ctx"])
    # the layout, proven by neo: one amplifier stream, the integers written, 0.195 uV a step about 32768
    io = neo.rawio.IntanRawIO(filename=str(path))
    io.parse_header()
    assert [str(s["name"]) for s in io.header["signal_streams"]] == ["RHD2000 amplifier channel"]
    chans = io.header["signal_channels"]
    assert list(chans["name"]) == ["ca1_a", "ca1_b", "ctx"] and list(chans["id"]) == ["A-000", "A-001", "A-002"]
    np.testing.assert_array_equal(io.get_analogsignal_chunk(0, 0, None, None, 0), ints)

    x, _, node = _play(path=str(path), chunk_size=100)
    np.testing.assert_allclose(x, _neo_uv(neo.rawio.IntanRawIO, filename=str(path)), **TOL)
    np.testing.assert_allclose(x, 0.195 * (ints.astype(np.float64) - 32768), **TOL)
    meta = node.outputs[""]
    assert meta.ch_names == ("ca1_a", "ca1_b", "ctx") and meta.sfreq == 20000.0 and meta.units == ("uV",) * 3
    for size in (1, 37, 60, 100_000):
        part, _, _ = _play(path=str(path), chunk_size=size, events=False)
        np.testing.assert_array_equal(part, x)


def test_a_cut_intan_rhd_is_a_damaged_file_in_one_line(tmp_path, write_graph, capsys):
    from rtneuro.cli import main as cli_main

    from reference.ephys_writers import write_rhd

    ints = np.full((600, 3), 32768, "<u2")
    path = write_rhd(tmp_path / "x.rhd", ints)
    _cut(path, path.stat().st_size - 7)  # the last data block cut short
    graph = {"name": "cut", "nodes": [{"id": "src", "type": "file_replay", "process": "acquire", "params": {"path": str(path)}}]}
    assert cli_main(["validate", str(write_graph(graph, "g.yaml"))]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "x.rhd: damaged intan file" in lines[0] and "replace it with an intact copy" in lines[0], lines


def test_plexon_plx_written_from_the_spec_is_read_by_neo_and_replayed_with_neos_scaling(tmp_path):
    import neo.rawio

    from reference import ephys_writers as w
    from reference.ephys_writers import write_plx

    ints = np.random.default_rng(11).integers(-2048, 2048, (3000, 2)).astype("<i2")
    path = write_plx(tmp_path / "x.plx", ints, names=["FP01", "FP02"], sfreq=1000, block=500)  # 6 blocks a channel
    assert path.stat().st_size == w.PLX_FILE_HEADER + 2 * w.PLX_SLOW_HEADER + 12 * w.PLX_BLOCK_HEADER + ints.nbytes
    step = 5000 / (0.5 * 2**12 * 2 * 1000)  # SlowMaxMagnitudeMV / (0.5 * 2**bits * Gain * PreAmpGain)
    # the layout, proven by neo: one stream named from the FP prefix, names, rate, gain, and the integers written
    io = neo.rawio.PlexonRawIO(filename=str(path), progress_bar=False)
    io.parse_header()
    assert [str(s["name"]) for s in io.header["signal_streams"]] == ["FPl-Low Pass Filtered"]
    chans = io.header["signal_channels"]
    assert list(chans["name"]) == ["FP01", "FP02"] and list(chans["id"]) == ["0", "1"] and list(chans["units"]) == ["", ""]
    np.testing.assert_allclose(chans["gain"], [step, step])
    assert io.get_signal_size(0, 0, 0) == 3000 and io.get_signal_sampling_rate(0) == 1000.0
    # neo 0.14 drops the last block when a read ends at the last sample (rtneuro reads the blocks itself),
    # so neo's own reads are checked up to there, across every block boundary
    np.testing.assert_array_equal(io.get_analogsignal_chunk(0, 0, 0, 2999, 0), ints[:2999])
    np.testing.assert_array_equal(io.get_analogsignal_chunk(0, 0, 480, 1730, 0), ints[480:1730])

    x, _, node = _play(path=str(path), chunk_size=100)
    ref = _neo_uv(neo.rawio.PlexonRawIO, filename=str(path), progress_bar=False)
    # neo names no unit; the SDK's formula gives mV a step: rtneuro replays microvolts, 1000 x neo's numbers
    np.testing.assert_allclose(x[:2500], 1000 * ref[:2500], **TOL)  # neo's whole read: its last block comes back as zeros
    np.testing.assert_allclose(x, 1000 * io.rescale_signal_raw_to_float(ints, dtype="float64", stream_index=0), **TOL)
    np.testing.assert_allclose(x, ints * step * 1000, **TOL)
    meta = node.outputs[""]
    assert meta.ch_names == ("FP01", "FP02") and meta.sfreq == 1000.0 and meta.units == ("uV", "uV")
    for size in (1, 37, 500, 100_000):
        part, _, _ = _play(path=str(path), chunk_size=size, events=False)
        np.testing.assert_array_equal(part, x)
    # blocks of 700: the last block (200 samples) is shorter, as when acquisition stops; every sample is in place
    short = write_plx(tmp_path / "y.plx", ints, names=["FP01", "FP02"], block=700)
    for size in (1, 37, 100_000):
        part, _, _ = _play(path=str(short), chunk_size=size, events=False)
        np.testing.assert_array_equal(part, x)
