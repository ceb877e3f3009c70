"""Shared fixtures: graph files in a temporary folder, and running them for real."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
REPLAY = ROOT / "replay_data"


@pytest.fixture
def write_graph(tmp_path):
    """Write a graph (a dict) as YAML; returns its path."""

    def _write(graph: dict, name: str = "graph.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(graph, sort_keys=False))
        return path

    return _write


@pytest.fixture
def run_graph():
    """Run a graph file through the real supervisor; returns (exit code, report, output)."""
    from rtneuro.config import load_graph
    from rtneuro.runtime.supervisor import Supervisor

    def _run(path, **overrides):
        out = io.StringIO()
        graph = load_graph(path, overrides=overrides)
        sup = Supervisor(graph, out=out, quiet=True)
        code = sup.run()
        return code, sup.report, out.getvalue()

    return _run


def synthetic_chain(*, processes: dict[str, str] | None = None, duration_s: float = 2.0, extra_nodes=(),
                    speed="max", sfreq=250.0, n_channels=4, chunk=25, threshold=-1e9, runtime=None) -> dict:
    """A small source -> band-pass -> band power -> threshold -> stimulator graph."""
    place = {"src": "acquire", "bp": "process", "bpow": "process", "ctl": "control", "stim": "stimulate"}
    place.update(processes or {})
    nodes = [
        {"id": "src", "type": "synthetic", "process": place["src"],
         "params": {"n_channels": n_channels, "sfreq": sfreq, "chunk_size": chunk, "seed": 3, "duration_s": duration_s}},
        {"id": "bp", "type": "bandpass", "inputs": ["src"], "process": place["bp"], "params": {"l_freq": 1.0, "h_freq": 40.0}},
        {"id": "bpow", "type": "bandpower", "inputs": ["bp"], "process": place["bpow"],
         "params": {"bands": {"alpha": [8.0, 12.0]}, "window_s": 0.5, "step_s": 0.1, "average": True}},
        {"id": "ctl", "type": "threshold", "inputs": ["bpow"], "process": place["ctl"],
         "params": {"threshold": threshold, "amplitude_ma": 1.0, "deadline_ms": 2000.0}},
        {"id": "stim", "type": "stimulator", "inputs": ["ctl"], "process": place["stim"], "params": {}},
        *extra_nodes,
    ]
    return {"name": "test-chain", "runtime": {"speed": speed, "status_interval_s": 0.2, **(runtime or {})}, "nodes": nodes}


def feed_split(node, x, splits, fs):
    """Feed ``x`` to a single-output node in chunks cut at ``splits``; concatenate the output rows."""
    from rtneuro.messages import Chunk

    outs = []
    edges = [0, *sorted(splits), x.shape[0]]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        out = node.process(Chunk(x[a:b], a, a / fs, fs, []))
        if out is not None:
            outs.append(out.data)
    return np.concatenate(outs) if outs else np.empty((0,))


def run_folders(pid: int | None = None) -> list[str]:
    """Supervisors' run folders (plan and ipc socket files) present in /tmp; with ``pid``, only that supervisor's.

    Other tests' supervisors (another worker's) come and go meanwhile: a test asks about its own.
    """
    out = []
    for p in Path("/tmp").glob("rtn-*"):
        try:
            owner = (p / "supervisor.pid").read_text().strip()
        except OSError:
            owner = None
        if (owner is not None or (p / "plan.json").exists()) and (pid is None or owner == str(pid)):
            out.append(str(p))
    return sorted(out)


def children_of(pid: int) -> list[int]:
    """Live child processes of ``pid`` (Linux /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(d.name))
    return out


os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # each test worker lists its own running supervisors: `rtneuro status`/`stop` in one test never see
    # another worker's runs (tests that need their own folder still set RTNEURO_RUNTIME_DIR themselves)
    import tempfile

    os.environ.setdefault("RTNEURO_RUNTIME_DIR", tempfile.mkdtemp(prefix=f"rtneuro-runs-{os.environ['PYTEST_XDIST_WORKER']}-"))

#: test modules whose streams live on the machine-wide LSL network (resolved by name and type): they run
#: one after another on one worker (``--dist loadgroup``), so no test resolves another test's outlet
LSL_MODULES = frozenset({"test_lsl", "test_clock", "test_config", "test_drivers", "test_xdf_streams", "test_validate_live",
                         "test_waveform"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__ if item.module is not None else ""
        if module in LSL_MODULES or "lsl" in item.name.lower():
            item.add_marker(pytest.mark.xdist_group("lsl"))


def start_graph(path, **overrides):
    """Run a graph file with the real supervisor in a thread: (supervisor, thread, box with 'code')."""
    import io
    import threading

    from rtneuro.config import load_graph
    from rtneuro.runtime.supervisor import Supervisor

    graph = load_graph(path, overrides=overrides)
    sup = Supervisor(graph, out=io.StringIO(), quiet=True)
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("code", sup.run()), daemon=True)
    thread.start()
    return sup, thread, box


def wait_until(cond, timeout=120.0, what="condition", poll_s=0.05):
    """Poll ``cond()`` until true; a generous bound for a loaded machine, never a timing assertion."""
    import time

    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if cond():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")


def wait_running(sup, timeout=60.0):
    """Until every process of a supervisor's run has been started."""
    import time

    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if getattr(sup, "origin", None) is not None:
            return
        time.sleep(0.05)
    raise AssertionError("graph did not start")
