"""Small electrophysiology files written byte by byte from the manufacturers' published layouts.

No sample recording of these formats can be fetched here and no Python
writer exists for them, so the tests write their own. Each layout is the
manufacturer's, and ``neo.rawio`` (the field's reference reader) reads every
file written here: the tests open each with neo directly before comparing
rtneuro's reader with it.

Neuralynx ``.ncs``
    Neuralynx, "Neuralynx Data File Formats" (Cheetah/Pegasus file format
    reference): a 16 kB (16384-byte) text header, latin-1, starting with
    ``######## Neuralynx Data File Header``, one ``-Key value`` property a
    line, NUL-padded; then 1044-byte CSC records, little-endian: uint64
    timestamp (microseconds), uint32 channel number, uint32 sampling
    frequency, uint32 number of valid samples, 512 int16 samples. A sample
    in volts is ``int * ADBitVolts`` (negated when ``InputInverted`` is
    True). The properties written are those neo's ``NlxHeader`` parses
    (``neo/rawio/neuralynxrawio/nlxheader.py``): the ``-ApplicationName``
    and ``-TimeCreated`` lines of Cheetah 6, ``-HardwareSubSystemType
    DigitalLynxSX`` (which record-time model applies).

Intan ``.rhd`` (one file, header attached)
    Intan Technologies, "RHD2000 Application Note: Data File Format"
    (RHD data file format, version 1.3 written here): magic number
    ``0xC6912702`` (uint32), version (int16 major, minor), sample rate
    (float32), the DSP/bandwidth/notch/impedance settings, three notes
    (QStrings: uint32 byte length, then UTF-16LE), temperature sensor count
    (int16, >= 1.1), board mode (int16, >= 1.3), the signal groups (name,
    prefix, enabled, channel count, amplifier count; then each channel's
    names, orders, signal type, enabled, chip channel, board stream, spike
    scope settings, impedance); then data blocks of 60 samples (>= 1.2: 60
    int32 timestamps, then each amplifier channel's 60 uint16). An amplifier
    sample is ``0.195 * (int - 32768)`` uV. neo's ``read_rhd``
    (``neo/rawio/intanrawio.py``) parses this layout and checks that the
    timestamps run on by one.

Plexon ``.plx`` (version 106)
    Plexon Inc., ``Plexon.h`` of the Plexon SDK (OmniPlex and MAP Offline SDK
    Bundle), little-endian, packed: the file header ``PL_FileHeader`` (7504
    bytes: magic ``0x58454c50`` ``"PLXE"``, version, 128-byte comment,
    ADFrequency (timestamp ticks a second), the numbers of DSP, event and slow
    channels, waveform points, date, FastRead, WaveformFreq, LastTimestamp
    (double), trodalness, bits per spike / slow sample, spike / slow maximum
    magnitude (mV), spike preamp gain (>= 105), acquiring / processing
    software (>= 106), padding, then the int32 counts TSCounts[130][5],
    WFCounts[130][5], EVCounts[512]); one ``PL_ChanHeader`` (1020 bytes) a DSP
    channel, one ``PL_EventHeader`` (296 bytes) an event channel, one
    ``PL_SlowChannelHeader`` (296 bytes: name, channel, ADFreq, Gain, Enabled,
    PreAmpGain, SpikeChannel, comment, SrcId, ChanId, padding) a slow
    (continuous) channel; then data blocks, each a 16-byte
    ``PL_DataBlockHeader`` (int16 type, uint16 upper byte of the 5-byte
    timestamp, uint32 timestamp in ADFrequency ticks, int16 channel, unit,
    number of waveforms, words a waveform) and its int16 words. A continuous
    block is type 5: one waveform of ``n`` samples of one slow channel
    (0-based), starting at its timestamp. A slow sample (version >= 103) is
    ``int * SlowMaxMagnitudeMV / (0.5 * 2**BitsPerSlowSample * Gain *
    PreAmpGain)`` mV. neo's ``PlexonRawIO`` (``neo/rawio/plexonrawio.py``)
    parses this layout (with numpy dtypes of the same structs); it takes the
    bits from BitsPerSpikeSample, written equal here, and reports the unit as
    unknown ("").
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

NCS_HEADER = 16384
NCS_RECORD = 1044
NCS_PER_RECORD = 512

#: one CSC record, packed little-endian (8 + 4 + 4 + 4 + 512 * 2 = 1044 bytes)
NCS_DTYPE = np.dtype([("timestamp", "<u8"), ("channel", "<u4"), ("sfreq", "<u4"), ("n_valid", "<u4"),
                      ("samples", "<i2", (NCS_PER_RECORD,))])
assert NCS_DTYPE.itemsize == NCS_RECORD


def ncs_header(name: str, ad_channel: int, sfreq: float, ad_bit_volts: float, inverted: bool,
               input_range_uv: int = 1000) -> bytes:
    """The 16 kB text header of one ``.ncs`` channel, as Cheetah 6 writes it."""
    lines = [
        "######## Neuralynx Data File Header",
        "-FileType NCS",
        "-FileVersion 3.4",
        "-RecordSize 1044",
        "",
        '-ApplicationName Cheetah "6.4.1"',
        "-AcquisitionSystem AcqSystem1 DigitalLynxSX",
        "-ReferenceChannel \"Source 01 Reference 1\"",
        f'-OriginalFileName "C:\\CheetahData\\2021-02-26_15-46-33\\{name}.ncs"',
        "-TimeCreated 2021/02/26 15:46:52",
        "-TimeClosed 2021/02/26 15:50:02",
        "",
        "-HardwareSubSystemName AcqSystem1",
        "-HardwareSubSystemType DigitalLynxSX",
        f"-SamplingFrequency {sfreq:g}",
        "-ADMaxValue 32767",
        f"-ADBitVolts {ad_bit_volts:.24f}".rstrip("0"),
        "",
        f"-AcqEntName {name}",
        "-NumADChannels 1",
        f"-ADChannel {ad_channel}",
        f"-InputRange {input_range_uv}",
        f"-InputInverted {'True' if inverted else 'False'}",
        "",
        "-DSPLowCutFilterEnabled True",
        "-DspLowCutFrequency 0.1",
        "-DspLowCutNumTaps 0",
        "-DspLowCutFilterType DCO",
        "-DSPHighCutFilterEnabled True",
        "-DspHighCutFrequency 9000",
        "-DspHighCutNumTaps 64",
        "-DspHighCutFilterType FIR",
        "-DspDelayCompensation Enabled",
        "-DspFilterDelay_\u00b5s 984",
    ]
    text = ("\r\n".join(lines) + "\r\n").encode("latin-1")
    assert len(text) < NCS_HEADER
    return text + b"\0" * (NCS_HEADER - len(text))


def ncs_records(samples: np.ndarray, ad_channel: int, sfreq: float, t0_us: int) -> bytes:
    """CSC records of ``samples`` (int16, 1-D): 512 a record, the last one padded with zeros.

    A record's timestamp is its first sample's time in whole microseconds.
    """
    samples = np.asarray(samples, dtype="<i2")
    n_rec = -(-len(samples) // NCS_PER_RECORD)
    rec = np.zeros(n_rec, NCS_DTYPE)
    starts = np.arange(n_rec) * NCS_PER_RECORD
    rec["timestamp"] = t0_us + np.round(starts * 1e6 / sfreq).astype(np.uint64)
    rec["channel"] = ad_channel
    rec["sfreq"] = round(sfreq)
    rec["n_valid"] = np.minimum(NCS_PER_RECORD, len(samples) - starts)
    padded = np.zeros(n_rec * NCS_PER_RECORD, "<i2")
    padded[:len(samples)] = samples
    rec["samples"] = padded.reshape(n_rec, NCS_PER_RECORD)
    return rec.tobytes()


def write_ncs(path: Path, samples: np.ndarray, *, name: str, ad_channel: int, sfreq: float = 32000.0,
              ad_bit_volts: float = 1000e-6 / 32768, inverted: bool = False, t0_us: int = 1_000_000) -> Path:
    """One Neuralynx continuous channel: header, then the CSC records of ``samples``."""
    path.write_bytes(ncs_header(name, ad_channel, sfreq, ad_bit_volts, inverted)
                     + ncs_records(samples, ad_channel, sfreq, t0_us))
    return path


RHD_MAGIC = 0xC6912702
RHD_BLOCK = 60  # samples a data block, RHD versions 1.2 to 1.x


def _qstring(text: str) -> bytes:
    """Intan's QString: uint32 length in bytes, then UTF-16 little-endian (no terminator)."""
    raw = text.encode("utf-16-le")
    return struct.pack("<I", len(raw)) + raw


def write_rhd(path: Path, amplifier: np.ndarray, *, sfreq: float = 20000.0, names: list[str] | None = None,
              t0: int = 0) -> Path:
    """An RHD 1.3 file of amplifier channels only: ``amplifier`` is uint16 (n_samples, n_channels), n_samples a
    multiple of 60 (whole data blocks, as the acquisition software writes them)."""
    amplifier = np.asarray(amplifier, dtype="<u2")
    n, n_ch = amplifier.shape
    assert n % RHD_BLOCK == 0
    names = names or [f"A-{c:03d}" for c in range(n_ch)]
    # magic, version 1.3, rate, DSP on, actual DSP cutoff / lower / upper bandwidth (Hz), the desired ones,
    # notch off, desired / actual impedance test frequency
    head = struct.pack("<Ihhfhffffffhff", RHD_MAGIC, 1, 3, sfreq, 1, 1.0, 0.1, 7500.0, 1.0, 0.1, 7500.0, 0,
                       1000.0, 1000.0)
    head += _qstring("") + _qstring("rtneuro test") + _qstring("")
    head += struct.pack("<hh", 0, 0)  # no temperature sensors; board mode 0
    head += struct.pack("<h", 1)  # one signal group: port A
    head += _qstring("Port A") + _qstring("A") + struct.pack("<hhh", 1, n_ch, n_ch)
    for c in range(n_ch):
        head += _qstring(f"A-{c:03d}") + _qstring(names[c])
        # native order, custom order, signal type 0 (amplifier), enabled, chip channel, board stream,
        # spike scope trigger mode, threshold (uV), digital trigger channel, edge polarity; impedance (ohm, degrees)
        head += struct.pack("<hhhhhhhhhhff", c, c, 0, 1, c, 0, 0, -70, 0, 1, 1e5, -45.0)
    n_blocks = n // RHD_BLOCK
    block = np.dtype([("timestamp", "<i4", (RHD_BLOCK,)), ("amplifier", "<u2", (n_ch, RHD_BLOCK))])
    data = np.zeros(n_blocks, block)
    data["timestamp"] = (t0 + np.arange(n)).reshape(n_blocks, RHD_BLOCK)
    data["amplifier"] = amplifier.reshape(n_blocks, RHD_BLOCK, n_ch).transpose(0, 2, 1)
    path.write_bytes(head + data.tobytes())
    return path


PLX_MAGIC = 0x58454C50
PLX_FILE_HEADER = 7504
PLX_DSP_HEADER = 1020
PLX_EVENT_HEADER = 296
PLX_SLOW_HEADER = 296
PLX_BLOCK_HEADER = 16


def _cstr(text: str, size: int) -> bytes:
    raw = text.encode("ascii")
    assert len(raw) < size
    return raw.ljust(size, b"\0")


def write_plx(path: Path, slow: np.ndarray, *, names: list[str], sfreq: int = 1000, block: int = 500,
              ad_frequency: int = 40000, gain: int = 2, preamp_gain: int = 1000, max_mv: int = 5000,
              bits: int = 12) -> Path:
    """A version-106 ``.plx`` file of continuous channels only: ``slow`` is int16 (n_samples, n_channels), written
    as type-5 blocks of ``block`` samples (the last one shorter), the channels' blocks interleaved in time order
    as the acquisition software writes them. No DSP (spike) or event channels."""
    slow = np.asarray(slow, dtype="<i2")
    n, n_ch = slow.shape
    assert ad_frequency % sfreq == 0
    head = struct.pack("<Ii", PLX_MAGIC, 106) + _cstr("rtneuro test", 128)
    # ADFrequency, DSP / event / slow channel counts, NumPointsWave, NumPointsPreThr
    head += struct.pack("<iiiiii", ad_frequency, 0, 0, n_ch, 32, 8)
    head += struct.pack("<iiiiii", 2024, 5, 17, 12, 30, 0)  # date and time
    last_ts = (n - 1) * (ad_frequency // sfreq)
    head += struct.pack("<iid", 0, ad_frequency, float(last_ts))  # FastRead, WaveformFreq, LastTimestamp
    # Trodalness, DataTrodalness, BitsPerSpikeSample, BitsPerSlowSample, SpikeMaxMagnitudeMV, SlowMaxMagnitudeMV,
    # SpikePreAmpGain
    head += struct.pack("<BBBBHHH", 1, 1, bits, bits, 3000, max_mv, preamp_gain)
    head += _cstr("rtneuro", 18) + _cstr("", 18) + bytes(10)
    head += np.zeros(130 * 5 + 130 * 5 + 512, "<i4").tobytes()  # TSCounts, WFCounts, EVCounts
    assert len(head) == PLX_FILE_HEADER
    for c in range(n_ch):
        # name, channel (0-based), ADFreq, Gain, Enabled, PreAmpGain, SpikeChannel, comment, SrcId, reserved, ChanId
        h = _cstr(names[c], 32) + struct.pack("<iiiiii", c, sfreq, gain, 1, preamp_gain, c + 1)
        h += _cstr("", 128) + struct.pack("<BBH", 1, 0, c) + bytes(4 * 27)
        assert len(h) == PLX_SLOW_HEADER
        head += h
    step = ad_frequency // sfreq
    data = bytearray()
    for start in range(0, n, block):
        stop = min(n, start + block)
        ts = start * step
        for c in range(n_ch):
            data += struct.pack("<hHIhhhh", 5, ts >> 32, ts & 0xFFFFFFFF, c, 0, 1, stop - start)
            data += slow[start:stop, c].tobytes()
    path.write_bytes(head + bytes(data))
    return path
