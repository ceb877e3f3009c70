"""The command line as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, synthetic_chain


def _rtneuro(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "rtneuro", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_validate_describes_a_valid_graph():
    r = _rtneuro("validate", "configs/demo.yaml")
    assert r.returncode == 0, r.stderr
    assert "valid graph 'demo' with 7 nodes in 4 processes" in r.stdout
    assert "stream sig.eeg: 64 ch, 160 Hz, from eeg" in r.stdout


def test_an_invalid_graph_exits_2_with_one_line_per_problem(write_graph):
    graph = synthetic_chain()
    graph["nodes"][1]["params"]["l_freqq"] = 1.0
    graph["nodes"][2]["type"] = "bandpowr"
    path = write_graph(graph)
    for cmd in ("validate", "run"):
        r = _rtneuro(cmd, str(path))
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 2, lines
        assert lines[0].startswith(f"error: {path}:") and "did you mean 'l_freq'" in lines[0]
        assert "did you mean 'bandpower'" in lines[1]


def test_run_writes_the_report(write_graph, tmp_path):
    path = write_graph(synthetic_chain(speed="max", duration_s=5.0))
    r = _rtneuro("run", str(path), "--report", str(tmp_path / "r.json"), "--quiet")
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    for key in ("streams", "latency_us", "commands", "restarts", "errors"):
        assert key in rep
    for row in rep["streams"].values():
        assert {"chunks", "samples", "gaps", "invalid"} <= set(row)
    assert {"p50", "p99", "max", "n"} <= set(rep["latency_us"])
    assert {"sent", "accepted", "clipped", "refused"} <= set(rep["commands"])
    assert "finished" in r.stderr and "latency" in r.stderr


def test_duration_and_speed_options_override_the_file(write_graph, tmp_path):
    path = write_graph(synthetic_chain(speed="realtime", duration_s=60.0))
    r = _rtneuro("run", str(path), "--duration", "3", "--speed", "2", "--report", str(tmp_path / "r.json"), "--quiet")
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["speed"] == 2.0
    assert rep["wall_s"] >= 3.0  # the run lasted its duration (start-up time on a busy machine varies)
    # 3 s at 2x: about 6 s of signal (after start-up), far from the 60 s in the file
    assert 500 < rep["streams"]["src"]["samples"] < 2000


def test_nodes_lists_every_registered_type():
    r = _rtneuro("nodes")
    assert r.returncode == 0
    for name in ("synthetic", "file_replay", "bandpass", "bandpower", "threshold", "stimulator", "jsonl"):
        assert f"\n{name}  (" in "\n" + r.stdout
    assert "l_freq: float | None = None  # lower pass-band edge in Hz" in r.stdout


@pytest.mark.slow
def test_bench_latency_writes_the_documented_json(tmp_path):
    out = tmp_path / "b.json"
    r = _rtneuro("bench", "latency", "--duration", "2", "--variants", "rtneuro_inproc,ezmsg_inproc", "--json", str(out), timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["bench"] == "latency" and "cpu_count" in res["machine"]
    v = res["variants"]["rtneuro_inproc"]
    assert {"p50_us", "p99_us", "max_us", "n"} <= set(v) and v["n"] >= 50 and v["p50_us"] > 0
    ez = res["variants"]["ezmsg_inproc"]
    assert ("error" in ez) or ez["n"] > 0  # a peer that cannot run is reported, never dropped
    assert "| rtneuro_inproc | 0 |" in r.stdout
