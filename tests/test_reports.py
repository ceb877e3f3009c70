"""Reports a user can read: per-label summaries against a stated baseline, phase scores, compute time on the
virtual clock (never a latency), path hints and channel suggestions."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from rtneuro.errors import ConfigError, did_you_mean
from rtneuro.messages import Chunk, StreamMeta, make_events
from rtneuro.nodes import NodeContext, build_params
from rtneuro.nodes.sinks import SegmentSummary, SegmentSummaryParams
from rtneuro.nodes.sources import FileReplay, FileReplayParams

from conftest import REPLAY, ROOT, synthetic_chain

FS = 10.0  # feature frames per second


def _summary(events: list[tuple[float, str]], values: np.ndarray, unit: str = "dB", **params) -> dict:
    feat = StreamMeta(name="bpow", kind="feat", sfreq=FS, ch_names=("alpha", "beta"), units=(unit, unit), dtype="<f8")
    evt = StreamMeta(name="eeg.events", kind="evt", sfreq=0.0, dtype="event")
    node = SegmentSummary(build_params(SegmentSummaryParams, {"labels": ["T*"], **params}, "p"), [feat, evt],
                          NodeContext(node_id="summary"))
    for a in range(0, len(values), 7):  # chunks of 7 frames, events in between: arrival order does not matter
        node.process(Chunk(values[a:a + 7], a, a / FS, FS, []), 0)
    rows = [(i, t, 1, -1, 0.0, 0.0, lab) for i, (t, lab) in enumerate(events)]
    node.process(Chunk(make_events(rows), 0, 0.0, 0.0, []), 1)
    return node.report()


def _trials():
    """A rest (T0), left (T1), right (T2) design: 4 s trials, 15 of them, alpha a known level per label plus noise."""
    rng = np.random.default_rng(1)
    level = {"T0": 20.0, "T1": 23.0, "T2": 26.0}
    labels = ["T0", "T1", "T0", "T2"] * 3 + ["T0", "T1", "T0"]
    events, blocks = [], []
    for k, lab in enumerate(labels):
        events.append((2.0 + 4.0 * k, lab))
        blocks.append(level[lab] + rng.normal(0, 1.0, int(4 * FS)))
    values = np.concatenate([np.full(int(2 * FS), 10.0), *blocks])  # 2 s before the first event
    return events, np.column_stack([values, values / 2]), labels


def test_a_summary_has_one_line_per_label_with_n_mean_and_sd_against_the_first_label():
    events, values, labels = _trials()
    rep = _summary(events, values)
    assert len(rep["segments"]) == len(labels) + 1  # every occurrence in the report's JSON, and 'before'
    lines = rep["summary"]
    per_label = [ln for ln in lines if re.match(r"(T\d|before): ", ln)]
    assert [ln.split(":")[0] for ln in per_label] == ["before", "T0", "T1", "T2"]
    # the figures: mean of the segments' means, SD across segments, as numpy gives them
    for lab in ("T0", "T1", "T2"):
        means = [values[int(t * FS):int(t * FS) + 40, 0].mean() for t, x in events if x == lab]
        row = rep["labels"][lab]
        assert row["segments"] == len(means) and row["frames"] == 40 * len(means)
        assert row["mean"]["alpha"] == pytest.approx(np.mean(means))
        assert row["sd"]["alpha"] == pytest.approx(np.std(means, ddof=1)) and row["sd_across"] == "segments"
    t0 = rep["labels"]["T0"]
    assert f"T0: 8 segments, 320 frames: mean alpha {t0['mean']['alpha']:.2f} sd {t0['sd']['alpha']:.2f}" in lines[1]
    # the baseline is stated, and it is the first label, not the 2 s before the first event
    assert rep["baseline"] == "T0"
    assert any(ln.startswith("baseline T0 (the first label of at least 5 frames") for ln in lines)
    diff = rep["labels"]["T2"]["mean"]["alpha"] - t0["mean"]["alpha"]
    assert f"alpha: T2 vs baseline T0: {diff:+.2f} dB" in lines
    assert 5.5 < diff < 6.5
    assert len(lines) == 4 + 1 + 2 * 3  # labels, baseline, (features x labels other than the baseline)


def test_a_one_frame_segment_is_never_the_baseline_and_is_counted():
    events, values, _ = _trials()
    events = [(1.9, "T9"), *events]  # a stray event one frame before the first trial
    rep = _summary(events, values)
    assert rep["labels"]["T9"] == {"segments": 0, "frames": 0, "short_segments": 1}
    assert rep["baseline"] == "T0"
    assert "1 segment(s) shorter than 5 frames left out" in rep["summary"]
    assert not any(ln.startswith("T9") or "vs baseline T9" in ln for ln in rep["summary"])


def test_a_chosen_baseline_and_a_ratio_for_linear_features():
    events, values, _ = _trials()
    rep = _summary(events, values, unit="uV^2", baseline="T2")
    assert rep["baseline"] == "T2" and rep["baseline_rule"] == "baseline: 'T2'"
    ratio = rep["labels"]["T1"]["mean"]["beta"] / rep["labels"]["T2"]["mean"]["beta"]
    assert f"beta: T1 vs baseline T2: x{ratio:.2f}" in rep["summary"]
    rep = _summary(events, values, baseline="rest")
    assert rep["baseline"] is None
    assert rep["summary"][-1].startswith("no baseline: no segment of at least 5 frames matches baseline 'rest'")
    # a label seen once: its SD is across its frames, and it says so
    rep = _summary([(2.0, "T0")], values)
    assert rep["labels"]["T0"]["sd_across"] == "frames"
    assert rep["labels"]["T0"]["sd"]["alpha"] == pytest.approx(np.std(values[20:, 0]))


def test_channel_suggestions_ignore_case():
    assert did_you_mean("FC3", ["F3", "Fc3", "C3"]) == " (did you mean 'Fc3'?)"
    assert did_you_mean("fcz", ["Fcz", "Fc3", "Cz"]) == " (did you mean 'Fcz'?)"
    assert did_you_mean("POO7", ["Po7", "Po8", "O1"]) == " (did you mean 'Po7'?)"
    assert did_you_mean("l_freqq", ["l_freq", "h_freq"]) == " (did you mean 'l_freq'?)"
    assert did_you_mean("xyz", ["Fc3"]) == ""
    with pytest.raises(ConfigError, match=r"channels \['FC3'\] not found \(did you mean 'Fc3'\?\)"):
        FileReplay(build_params(FileReplayParams, {"path": str(REPLAY / "S003R01.edf"), "picks": ["FC3"]}, "p"), [],
                   NodeContext(node_id="eeg"))


def test_a_path_typed_on_the_command_line_is_said_to_be_resolved_against_the_current_folder(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rtneuro", "train", str(ROOT / "configs" / "motor_imagery.yaml"),
                        "--data", "nothere.edf"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"error: recording not found: nothere.edf (a path typed on the command line is resolved "
                                f"against the current folder, {tmp_path}); check the path")
    r = subprocess.run([sys.executable, "-m", "rtneuro", "replay", "nothere.edf", "--lsl"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "resolved against the current folder" in r.stderr
    assert "configuration file's folder" not in r.stderr


def test_a_run_on_the_virtual_clock_prints_compute_per_chunk_and_no_latency(write_graph, run_graph):
    code, rep, out = run_graph(write_graph(synthetic_chain(speed="max", duration_s=3.0)))
    assert code == 0, out
    summary = out.split("rtneuro run:")[-1]
    assert "latency, newest sample" not in summary and "end-to-end" not in out
    line = next(ln for ln in out.splitlines() if "compute per chunk" in ln)
    assert line.strip().startswith("virtual clock (--speed max): no latency is measured; compute per chunk, p50 / p99 us:")
    for nid in ("bp", "bpow", "ctl", "stim"):
        assert rep["compute_us"][nid]["n"] > 0 and f" {nid} " in line + " "
    assert 0 < rep["compute_us"]["bp"]["n"] <= rep["streams"]["src"]["chunks"]  # at most one per chunk it processed
    assert "not a latency" in rep["latency_us"]["note"]


@pytest.mark.slow
def test_the_end_summary_has_the_phase_scores(run_graph):
    code, rep, out = run_graph(ROOT / "configs" / "phase_locked.yaml", speed="max", duration_s=20.0)
    assert code == 0, out
    acc = rep["nodes"]["alpha_phase"]
    assert acc["scored"] > 10
    want = (f"alpha_phase: phase scores: {acc['triggers']} triggers, {acc['scored']} scored against the true phase: "
            f"circular mean error {acc['mean_error_deg']:+.1f} deg, circular SD {acc['sd_deg']:.1f} deg, PLV {acc['plv']:.3f}")
    assert want in out
