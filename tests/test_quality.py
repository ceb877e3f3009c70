"""Signal-quality flags: exact against a plain loop, chunk-invariant, quiet on real EEG, and gating a controller."""

from __future__ import annotations

import mne
import numpy as np
import pytest

from rtneuro.errors import ConfigError
from rtneuro.messages import CMD_HOLD, CMD_LEVEL, CMD_OFF, Chunk, StreamMeta, event_label
from rtneuro.nodes import NodeContext, build_params
from rtneuro.nodes.controllers import Threshold, ThresholdParams
from rtneuro.nodes.quality import Quality, QualityParams

from conftest import REPLAY
from reference.quality import quality_loop

FS = 250.0
RNG = np.random.default_rng(7)


def _meta(n=4, fs=FS):
    return StreamMeta(name="eeg", kind="sig", sfreq=fs, ch_names=tuple(f"c{i}" for i in range(n)), units=("uV",) * n)


def _quality(n=4, fs=FS, **params):
    return Quality(build_params(QualityParams, params, "node 'q' params"), [_meta(n, fs)], NodeContext(node_id="q"))


def _faulty(n_times=5000, n_ch=4):
    """EEG-like noise with a flat stretch, clipping, a jump and a NaN run on known channels."""
    x = RNG.standard_normal((n_times, n_ch)) * 10.0
    x[1000:1400, 0] = 3.25               # electrode off: flat for 1.6 s
    x[2000:2010, 1] = 1200.0             # clipped at the amplifier's range
    x[3000:, 2] += 600.0                 # DC jump
    x[4000:4020, 3] = np.nan             # dropped samples
    x[4500, 1] = np.inf
    return x


def _run(node, x, splits=()):
    frames, events = [], []
    edges = [0, *sorted(splits), x.shape[0]]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        for port, ch in node.process(Chunk(x[a:b], a, a / FS, FS, [])) or []:
            if port == "":
                frames.append(ch.data)
            else:
                events.extend((int(r["index"]), int(r["channel"]), int(r["code"]), int(r["value"]), event_label(r["label"]))
                              for r in ch.data)
    return np.concatenate(frames), events


PARAMS = dict(flat_s=0.2, flat_tol=0.01, clip=1000.0, jump=500.0, hold_s=0.1, step_s=0.1)


def test_flags_equal_a_plain_loop_exactly():
    x = _faulty()
    frames, events = _run(_quality(**PARAMS), x)
    ref_frames, ref_events = quality_loop(x, 0.01, 50, 1000.0, 500.0, 25, 25)
    assert np.array_equal(frames[:, :4].astype(np.int64), ref_frames)
    assert sorted(e[:4] for e in events) == ref_events
    # each injected fault is flagged on its channel, with its name
    labels = {e[4] for e in events if e[3] == 1}
    assert {"flat:c0", "clip:c1", "jump:c2", "nonfinite:c3", "nonfinite:c1"} <= labels
    assert not any(lbl.startswith(("flat:c1", "clip:c0", "jump:c0")) for lbl in labels)
    # the 'any' column follows the per-channel masks; n_bad counts them
    assert np.array_equal(frames[:, 5], (frames[:, :4] != 0).any(axis=1).astype(float))
    assert np.array_equal(frames[:, 4], (frames[:, :4] != 0).sum(axis=1).astype(float))


@pytest.mark.parametrize("trial", range(4))
def test_flags_are_identical_for_any_split(trial):
    x = _faulty()
    whole = _run(_quality(**PARAMS), x)
    cuts = sorted(RNG.choice(np.arange(1, x.shape[0]), size=3 + 20 * trial, replace=False).tolist())
    split = _run(_quality(**PARAMS), x, cuts)
    assert np.array_equal(whole[0], split[0]) and whole[1] == split[1]


def test_one_sample_chunks_give_the_same_flags():
    x = np.ascontiguousarray(_faulty()[900:2400])  # the flat stretch and the clipping
    assert np.array_equal(_run(_quality(**PARAMS), x)[0], _run(_quality(**PARAMS), x, range(1, 1500))[0])


def test_real_eeg_is_clean_with_the_defaults_until_the_files_zero_padding():
    """EEGMMIDB files end with 0.8 s of zeros after the 60.2 s recorded (its annotation): all 64 channels flat."""
    raw = mne.io.read_raw_edf(REPLAY / "S003R02.edf", verbose="error")
    x = raw.get_data().T * 1e6
    assert not x[9632:].any() and x[9631].all()
    node = Quality(QualityParams(), [_meta(64, raw.info["sfreq"])], NodeContext(node_id="q"))
    frames, events = _run(node, x)
    # flat from 9632 + 40 samples (0.25 s at 160 Hz): frame 604 (samples 9664..9679) onwards
    assert frames.shape[0] == x.shape[0] // 16
    assert not frames[:604].any()
    assert (frames[604:, :64] == 1).all() and (frames[604:, 64] == 64).all()
    assert sorted({e[0] for e in events}) == [9672] and {e[4] for e in events} == {f"flat:c{i}" for i in range(64)}
    assert node.report()["bad_frames"] == 6 and node.report()["onsets"]["flat"] == 64


def test_bad_configurations_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="picks \\['Cz'\\] are not channels of stream 'eeg'"):
        _quality(picks=["Cz"])
    with pytest.raises(ConfigError, match="min_bad_channels=5 exceeds the 4 channels checked; lower it"):
        _quality(min_bad_channels=5)
    with pytest.raises(ConfigError, match="jump=-1.0 must be > 0"):
        _quality(jump=-1.0)


def _feat_meta():
    return StreamMeta(name="alpha", kind="feat", sfreq=FS / 25, ch_names=("alpha",), units=("dB",),
                      desc={"window": 250, "step": 25})


def test_a_controller_never_stimulates_on_a_flagged_window():
    q = _quality(**PARAMS)
    ctl = Threshold(ThresholdParams(threshold=0.0), [_feat_meta(), q.outputs[""]], NodeContext(node_id="ctl"))
    x = _faulty()
    kinds, flagged = [], []
    for a in range(0, x.shape[0], 25):  # the quality rows arrive first, as in one process
        for port, ch in q.process(Chunk(x[a:a + 25], a, a / FS, FS, [])) or []:
            if port == "":
                ctl.process(ch, port=1)
                flagged += [(a, a + 24)] if ch.data[0, -1] else []
        if a + 25 >= 250:
            last = a + 24
            cmd = ctl.process(Chunk(np.array([[1.0]]), (a + 25 - 250) // 25, last / FS, FS / 25, [],
                                    {"window": [last - 249, last], "of": "bp"}))
            kinds.append((last, int(cmd.data["kind"][0])))
    # the feature is always above threshold: on at the first clean window, then off while the
    # 1 s window overlaps the flat stretch (samples 1000..1399 flagged from 1050, held 25 more)
    first_on = next(last for last, k in kinds if k == CMD_LEVEL)
    assert first_on == 249
    off = [last for last, k in kinds if k == CMD_OFF]
    assert off and off[0] == 1074  # the first window whose flags row (1050..1074) is raised
    # flat 1050..1424 (held 0.1 s), clip 2000..2034, jump 3000..3024, non-finite 4000..4044 and 4500..4525,
    # at the granularity of the 0.1 s flag rows
    assert flagged == [(a, a + 24) for a in [*range(1050, 1425, 25), 2000, 2025, 3000, 3025, 4000, 4025, 4500, 4525]]
    for last, k in kinds:
        if k == CMD_LEVEL:
            assert not any(a <= last and b >= last - 249 for a, b in flagged)
    rep = ctl.report()
    assert rep["gated"] > 0 and rep["gate_ahead"] == 0 and rep["switches"] == len(off) + sum(k == CMD_LEVEL for _, k in kinds)
    assert all(k in (CMD_HOLD, CMD_LEVEL, CMD_OFF) for _, k in kinds)


def test_a_second_input_that_is_not_a_quality_stream_is_refused():
    with pytest.raises(ConfigError, match="is not a signal-quality stream .* connect a 'quality' node there"):
        Threshold(ThresholdParams(threshold=0.0), [_feat_meta(), _feat_meta()], NodeContext(node_id="ctl"))


def test_a_nan_burst_in_a_running_graph_is_flagged_contained_and_gates_the_controller(write_graph, run_graph):
    """file -> fault (NaN burst) -> quality + bandpass -> bandpower -> threshold gated by quality -> stimulator."""
    graph = {
        "runtime": {"speed": "max"},
        "nodes": [
            {"id": "eeg", "type": "file_replay", "process": "main",
             "params": {"path": str(REPLAY / "S003R02.edf"), "chunk_size": 16, "picks": ["O1", "Oz", "O2"], "stop_s": 20.0}},
            {"id": "bad", "type": "fault", "inputs": ["eeg"], "process": "main",
             "params": {"after_chunks": 60, "mode": "nan", "nan_samples": 8}},
            {"id": "q", "type": "quality", "inputs": ["bad"], "process": "main", "params": {"hold_s": 0.2}},
            {"id": "bp", "type": "bandpass", "inputs": ["bad"], "process": "main", "params": {"l_freq": 1.0, "h_freq": 40.0}},
            {"id": "alpha", "type": "bandpower", "inputs": ["bp"], "process": "main",
             "params": {"bands": {"alpha": [8, 12]}, "average": True, "window_s": 1.0, "step_s": 0.1}},
            {"id": "ctl", "type": "threshold", "inputs": ["alpha", "q"], "process": "main",
             "params": {"threshold": 10.0, "gate_action": "off"}},
            {"id": "stim", "type": "stimulator", "inputs": ["ctl"], "process": "main"},
        ],
    }
    code, rep, _ = run_graph(write_graph(graph))
    assert code == 0 and rep["errors"] == []
    assert rep["nodes"]["q"]["onsets"]["nonfinite"] == 3 and rep["nodes"]["bp"]["replaced_nonfinite"] == 24
    # eyes-closed alpha is far above 10 dB: on once the first window is full, off at the burst
    # (sample 960), back on once 1 s windows no longer overlap it (plus the 0.2 s hold)
    ctl = rep["nodes"]["ctl"]
    assert ctl["switches"] == 3 and ctl["on"] and ctl["gate_ahead"] == 0
    assert 10 <= ctl["gated"] <= 14  # frames whose window overlaps flagged rows 960..1007 (rows of 16 samples)
    assert rep["streams"]["alpha"]["gaps"] == 0 and rep["commands"]["refused"] == 0
