"""Export: the operator's control records (rtneuro.control) become annotations (FIF, EDF) and an NWB table.

The session is written by the recorder node itself (``Recorder.control_record``
as the supervisor calls it), into a real XDF file: 5 s of a 2-channel signal
from stream time 100 s, every kind of control record, a recording segment, a
segment whose start is not in the file, a segment still open at the end, and
three samples that are no control record.
"""

from __future__ import annotations

import json
import logging
import math

import mne
import numpy as np
import pytest

from rtneuro.errors import ConfigError
from rtneuro.messages import Chunk, StreamMeta
from rtneuro.nodes.base import NodeContext
from rtneuro.nodes.recorder import Recorder, RecorderParams
from rtneuro.recording.export import export_session

pytest.importorskip("edfio")
NWBHDF5IO = pytest.importorskip("pynwb").NWBHDF5IO

T0 = 100.0  # stream time of the first sample
SFREQ = 100.0
N_TIMES = 500  # 5 s: the data ends at stream time 105.0
CREATED = "2025-03-04T05:06:07+00:00"


def _rec(seq, op, t_stream, args=None, who="local", **more):
    return {"seq": seq, "id": seq, "op": op, "who": who, "t_lsl": 5000.0 + seq, "t_stream": t_stream,
            "args": args or {}, **more}


#: (record, its stream time in the file) in the order the supervisor made them
RECORDS = [
    (_rec(1, "record_stop", 100.4, {"label": "warmup", "duration_s": 0.25, "t_stream_start": 100.2}), 100.4),
    (_rec(2, "annotate", 100.5, {"text": "block 2\n  starts"}), 100.5),
    (_rec(3, "set", 100.7, {"changes": {"ctl.threshold": 1}}, values={"ctl": {"threshold": 1.0}},
          applied={"ctl": {"stream": "eeg", "index": 75, "at": {"eeg": 75}, "t_lsl": 5003.1, "t_stream": 100.75}},
          errors={}), 100.7),
    (_rec(4, "record_start", 101.0, {"label": "block 2"}), 101.0),
    (_rec(5, "disarm", 101.5, {"reason": "participant moves"}, who="alice", applied={}, errors={}), 101.5),
    (_rec(6, "estop", 101.8, {"reason": "test"}, who="rtneuro stop", applied={}, errors={}), 101.8),
    (_rec(7, "estop_clear", 102.0, {"reason": "operator"}), 102.0),
    (_rec(8, "arm", 102.2, {"reason": "operator"}), 102.2),
    (_rec(9, "pause", 102.5, {"stimulation": "disarm"}), 102.5),
    (_rec(10, "resume", 102.5, {"stimulation": "arm", "paused_s": 3.0}), 102.5),  # stream time stood still
    # the segment lasted 2 s of stream time (5 s of real time, paused 3 s of it)
    (_rec(11, "record_stop", 103.0, {"label": "block 2", "duration_s": 5.0, "t_stream_start": 101.0}), 103.0),
    # requested before the stream time was known: timed where it took effect; one node failed
    (_rec(12, "set", None, {"changes": {"bp.l_freq": 2.0, "bp.h_freq": 30.0}},
          values={"bp": {"l_freq": 2.0, "h_freq": 30.0}},
          applied={"bp": {"stream": "eeg", "index": 350, "at": {"eeg": 350}, "t_lsl": 5012.1, "t_stream": 103.5}},
          errors={"bp2": "process 'p2' ended before applying it"}), 103.5),
    (_rec(13, "record_start", 104.0, {"label": "block 3"}), 104.0),  # still recording at the end
]

#: (description, onset after the first sample, duration) of each annotation the records make
EXPECTED = [
    ("segment: warmup", 0.2, 0.2),
    ("annotation: block 2 starts", 0.5, 0.0),
    ("set ctl.threshold=1.0 (by local)", 0.7, 0.0),
    ("segment: block 2", 1.0, 2.0),
    ("disarm: participant moves (by alice)", 1.5, 0.0),
    ("estop: test (by rtneuro stop)", 1.8, 0.0),
    ("estop_clear (by local)", 2.0, 0.0),
    ("arm (by local)", 2.2, 0.0),
    ("pause", 2.5, 0.0),
    ("resume", 2.5, 0.0),
    ("set bp.l_freq=2.0, bp.h_freq=30.0 (by local; not applied to bp2)", 3.5, 0.0),
    ("segment: block 3", 4.0, 1.0),
]

#: FIF stores onsets and durations as float32: within 1 us below 8 s
FIF_TOL = 1e-6


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    path = tmp_path_factory.mktemp("ctl") / "ctl.xdf"
    eeg = StreamMeta(name="eeg", kind="sig", sfreq=SFREQ, ch_names=("Cz", "Pz"), ch_types=("eeg", "eeg"),
                     units=("uV", "uV"), source="test")
    info = {"graph": "ctl", "created_utc": CREATED, "config": "name: ctl\nnodes: []\n", "versions": {"rtneuro": "0.1.0"}}
    rec = Recorder(RecorderParams(path=str(path), session=info, fsync=False, min_free_mb=0), [eeg],
                   NodeContext(node_id="recorder"))
    rec.open()
    x = np.random.default_rng(0).standard_normal((N_TIMES, 2)) * 10.0
    records = iter(RECORDS)
    pending = next(records)
    for k in range(0, N_TIMES, 50):
        rec.process(Chunk(x[k:k + 50], k, T0 + k / SFREQ, SFREQ, []), 0)
        while pending is not None and pending[1] < T0 + (k + 50) / SFREQ:
            rec.control_record(pending[0])
            pending = next(records, None)
        if k == 200:  # samples that are no control record: not JSON, not an object, no op
            for bad in ("{not json", "[1, 2]", '{"seq": 99, "who": "x"}'):
                rec.writer.write_samples(rec.ctl_sid, np.array([T0 + 2.05]), [[bad]])
    rec.close()
    return path


def _by_description(annotations):
    return {a["description"]: a for a in annotations}


def test_fif_annotations_are_one_line_each_at_the_stream_time_with_the_record_in_extras(session, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="rtneuro.recording.export"):
        (path,) = export_session(session, "fif", out=tmp_path)
    bad = [r.getMessage() for r in caplog.records if "not control records" in r.getMessage()]
    assert bad == ["export: 3 samples of stream 'rtneuro.control' are not control records "
                   "(JSON objects with an 'op'); left out"]
    raw = mne.io.read_raw_fif(path, verbose=False)
    assert raw.first_samp == 0 and raw.n_times == N_TIMES
    got = [a for a in raw.annotations if a["extras"].get("stream") == "rtneuro.control"]
    assert sorted(a["description"] for a in got) == sorted(d for d, _, _ in EXPECTED)
    ann = _by_description(got)
    for desc, onset, duration in EXPECTED:
        a = ann[desc]
        assert abs(a["onset"] - onset) <= FIF_TOL, desc
        assert abs(a["duration"] - duration) <= FIF_TOL, desc
        assert a["extras"]["t"] == pytest.approx(T0 + onset, abs=1e-9), desc  # the exact stream time
        assert "\n" not in desc
    # each annotation keeps its record (JSON), op, who and sequence number
    sent = {r["seq"]: r for r, _ in RECORDS}
    for a in got:
        ex = a["extras"]
        rec = json.loads(ex["record"])
        assert rec == sent[rec["seq"]] and ex["seq"] == rec["seq"]
        assert ex["op"] == ("segment" if rec["op"].startswith("record_") else rec["op"])
    ex = ann["segment: block 2"]["extras"]
    assert json.loads(ex["record"]) == sent[4] and json.loads(ex["record_stop"]) == sent[11]
    assert ex["who"] == "local"
    assert ann["segment: block 3"]["extras"]["record_stop"] is None  # still open when the session ended
    assert json.loads(ann["segment: warmup"]["extras"]["record"]) == sent[1]  # only its stop is in the file
    assert ann["disarm: participant moves (by alice)"]["extras"]["who"] == "alice"
    assert "3 samples of rtneuro.control that are not control records left out" in raw.info["description"]
    # usable as MNE events: equal texts would share an event id
    events, event_id = mne.events_from_annotations(raw, regexp="^annotation: ", verbose=False)
    assert list(event_id) == ["annotation: block 2 starts"] and events[0, 0] == 50


def test_edf_annotations_count_from_the_first_sample(session, tmp_path):
    (path,) = export_session(session, "edf", out=tmp_path)
    raw = mne.io.read_raw_edf(path, verbose=False)
    got = [(a["description"], a["onset"], a["duration"]) for a in raw.annotations]
    for desc, onset, duration in EXPECTED:
        match = [g for g in got if g[0] == desc]
        assert len(match) == 1, desc
        assert match[0][1:] == pytest.approx((onset, duration), abs=1e-6), desc
    assert len(got) == len(EXPECTED)  # nothing else was recorded


def test_nwb_holds_one_row_per_record_and_segment(session, tmp_path):
    (path,) = export_session(session, "nwb", out=tmp_path)
    sent = {r["seq"]: r for r, _ in RECORDS}
    with NWBHDF5IO(str(path), "r") as io_:
        f = io_.read()
        table = f.get_events_table("rtneuro.control")
        assert "3 samples that were no control record left out" in table.description
        df = table.to_dataframe()
    assert list(df["text"]) == [d for d, _, _ in EXPECTED]  # in time order
    np.testing.assert_allclose(df["timestamp"], [o for _, o, _ in EXPECTED], rtol=0, atol=1e-9)  # time 0: first sample
    np.testing.assert_allclose(df["duration"], [d for _, _, d in EXPECTED], rtol=0, atol=1e-9)
    assert list(df["op"]) == ["segment", "annotate", "set", "segment", "disarm", "estop", "estop_clear", "arm",
                              "pause", "resume", "set", "segment"]
    assert list(df["who"]) == ["local", "local", "local", "local", "alice", "rtneuro stop", *["local"] * 6]
    assert list(df["seq"]) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13]
    assert [json.loads(r) for r in df["record"]] == [sent[s] for s in df["seq"]]
    assert [json.loads(a) for a in df["args"]] == [sent[s]["args"] for s in df["seq"]]
    stops = list(df["record_stop"])
    assert json.loads(stops[3]) == sent[11] and stops[11] == "" and stops[1] == ""
    assert math.isnan(df["t_stream"].iloc[10]) and df["t_stream"].iloc[2] == 100.7
    assert list(df["t_lsl"]) == [5000.0 + s for s in df["seq"]]


def test_the_control_stream_is_not_a_signal_to_export(session, tmp_path):
    with pytest.raises(ConfigError, match="operator's control records: in FIF they are annotations"):
        export_session(session, "fif", out=tmp_path, streams=["rtneuro.control"])
    (path,) = export_session(session, "nwb", out=tmp_path / "eeg.nwb", streams=["eeg"])
    with NWBHDF5IO(str(path), "r") as io_:
        assert len(io_.read().get_events_table("rtneuro.control")) == len(EXPECTED)  # always there, like provenance
