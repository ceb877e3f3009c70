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
"""

from __future__ import annotations

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
