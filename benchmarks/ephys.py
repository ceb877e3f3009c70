"""``rtneuro bench ephys``: a Neuropixels recording replayed through spike detection, as fast as possible.

A 384-channel (plus sync) 30 kHz SpikeGLX recording of ``--duration``
seconds is written to a temporary folder: its ``.meta`` is the shipped
Neuropixels 1.0 header (``replay_data/ephys/spikeglx``, a real SpikeGLX
meta with its probe geometry), its ``.bin`` int16 samples of
:class:`~rtneuro.nodes.spikes.SyntheticSpikes` (150 units, 8 uV noise; a
2 s stretch repeated). The graph — ``file_replay`` of the folder (format
detected, positions from the meta) -> ``spike_detect`` (300-6000 Hz, 5
noise levels, de-duplication within 50 um) — runs in one process with
``rtneuro run --speed max``.

``spikeglx``        the whole recording: ``realtime_x`` is recorded seconds
                    per wall second of the run (``run_s``, start-up
                    excluded; ``realtime_x_total`` includes it);
                    ``peak_rss_mb`` is the largest peak resident size
                    (``VmHWM``, polled every 20 ms) of the run's processes,
                    beside ``file_mb``; ``peak_rss_mb_per_process`` each.
``spikeglx_short``  the same graph on the first tenth of the file
                    (``stop_s``): the peak RSS that does not depend on the
                    file's length. Their difference, ``rss_growth_mb``, shows
                    that memory is bounded by the chunk and read-ahead
                    block, not by the file (memory-mapped reads).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from benchmarks.common import pick_variants, proc_status_kb, processes_below, save_json
from rtneuro.runtime.supervisor import machine_info

VARIANTS = ("spikeglx", "spikeglx_short")

ROOT = Path(__file__).resolve().parent.parent
META_TEMPLATE = ROOT / "replay_data" / "ephys" / "spikeglx" / "sample_g0_t0.imec0.ap.meta"
FS = 30000.0
N_CH = 384


def write_spikeglx(folder: Path, stem: str, n_samples: int, fill: Callable[[int, int], np.ndarray],
                   template: Path = META_TEMPLATE, block: int = 30000) -> Path:
    """Write ``<stem>.imec0.ap.bin`` and its ``.meta`` (from ``template``) in ``folder``.

    ``fill(a, n)`` returns the int16 samples ``[a, a + n)``, shape
    ``(n, nSavedChans)``. The meta's ``fileSizeBytes``, ``fileTimeSecs``,
    ``fileSHA1`` and ``fileName`` are those of the written file; every other
    field is the template's. Writes block by block (memory bounded).
    """
    from rtneuro.recording.ephys import read_meta

    meta = read_meta(template)
    n_chan = int(meta["nSavedChans"])
    rate = float(meta["imSampRate"])
    folder.mkdir(parents=True, exist_ok=True)
    bin_path = folder / f"{stem}.imec0.ap.bin"
    sha = hashlib.sha1()
    with open(bin_path, "wb") as f:
        for a in range(0, n_samples, block):
            x = np.ascontiguousarray(fill(a, min(block, n_samples - a)), dtype="<i2")
            assert x.shape[1] == n_chan
            sha.update(x.tobytes())
            f.write(x.tobytes())
    meta.update({"fileSizeBytes": str(bin_path.stat().st_size), "fileTimeSecs": repr(n_samples / rate),
                 "fileSHA1": sha.hexdigest().upper(), "fileName": bin_path.name})
    lines = [f"{k}={v}" for k, v in meta.items()]
    bin_path.with_suffix(".meta").write_text("\n".join(lines) + "\n")
    return bin_path


def uv_per_bit(meta: dict) -> float:
    """Neuropixels 1.0 AP gain: imAiRangeMax / imMaxInt / imChan0apGain, in microvolts."""
    return float(meta["imAiRangeMax"]) / float(meta.get("imMaxInt", 512)) / float(meta.get("imChan0apGain", 500)) * 1e6


def synthetic_fill(seconds: float = 2.0, seed: int = 1) -> Callable[[int, int], np.ndarray]:
    """int16 samples of :class:`SyntheticSpikes` (384 ch, 150 units) and a sync word, repeating every ``seconds``."""
    from rtneuro.nodes import NodeContext
    from rtneuro.nodes.spikes import SyntheticSpikes, SyntheticSpikesParams
    from rtneuro.recording.ephys import read_meta

    src = SyntheticSpikes(SyntheticSpikesParams(n_channels=N_CH, sfreq=FS, n_units=150, rate_hz=10.0, seed=seed), [],
                          NodeContext(node_id="probe"))
    period = int(seconds * FS)
    x, _, _ = src.generate(0, period)
    scale = uv_per_bit(read_meta(META_TEMPLATE))
    q = np.empty((period, N_CH + 1), dtype="<i2")
    q[:, :N_CH] = np.clip(np.round(x / scale), -32768, 32767)
    q[:, N_CH] = (np.arange(period) // 15000) % 2  # a 1 Hz square wave on the sync word

    def fill(a: int, n: int) -> np.ndarray:
        idx = (a + np.arange(n)) % period
        return q[idx]

    return fill


def graph(folder: Path, stop_s: float | None) -> dict:
    src: dict = {"path": str(folder), "chunk_size": 300}
    if stop_s is not None:
        src["stop_s"] = stop_s
    return {
        "name": "bench-ephys",
        "runtime": {"speed": "max", "status_interval_s": 5.0},
        "nodes": [
            {"id": "npx", "type": "file_replay", "process": "main", "params": src},
            {"id": "spk", "type": "spike_detect", "inputs": ["npx"], "process": "main",
             "params": {"noise_init_s": 0.5, "dedup_radius_um": 50.0}},
        ],
    }


def run_graph(folder: Path, stop_s: float | None, work: Path) -> dict:
    """``rtneuro run --speed max`` of the graph in a child process; its report and peak RSS."""
    cfg = work / f"bench-ephys-{'short' if stop_s else 'full'}.yaml"
    cfg.write_text(yaml.safe_dump(graph(folder, stop_s), sort_keys=False))
    report = cfg.with_suffix(".json")
    log = cfg.with_suffix(".log")
    t0 = time.monotonic()
    with open(log, "w") as out:  # a file, not a pipe: a chatty run never blocks on a full pipe while polled
        proc = subprocess.Popen([sys.executable, "-m", "rtneuro", "run", str(cfg), "--report", str(report), "--quiet"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        peaks: dict[int, tuple[str, int]] = {}  # pid: (command, its own peak VmHWM in kB), read until it is gone
        while proc.poll() is None:
            for pid, cmd in {proc.pid: "rtneuro run", **processes_below(proc.pid)}.items():
                hwm = proc_status_kb(pid, "VmHWM")
                if hwm is not None:
                    peaks[pid] = (cmd, max(hwm, peaks.get(pid, (cmd, 0))[1]))
            time.sleep(0.02)
    output = log.read_text()
    wall = time.monotonic() - t0
    if proc.returncode != 0 or not report.exists():
        tail = output.strip().splitlines()[-3:]
        raise RuntimeError(f"rtneuro run exited {proc.returncode}: {' | '.join(tail)}")
    per_process = {f"{cmd.split(' -m ')[-1][:40]} ({pid})": round(kb / 1024, 1) for pid, (cmd, kb) in peaks.items()}
    peak_kb = max((kb for _, kb in peaks.values()), default=0)
    rep = json.loads(report.read_text())
    spk = rep.get("nodes", {}).get("spk", {})
    return {"run_s": rep["run_s"], "wall_s_total": round(wall, 2), "exit_code": rep["exit_code"],
            "peak_rss_mb": round(peak_kb / 1024, 1), "peak_rss_mb_per_process": per_process,
            "detections": spk.get("detections"), "dedup_removed": spk.get("dedup_removed", spk.get("removed"))}


def run(args: argparse.Namespace) -> int:
    names = pick_variants(args.variants, VARIANTS)
    if names is None:
        return 2
    duration = float(args.duration)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="rtn-bench-ephys-") as d:
        work = Path(d)
        folder = work / "npx_g0"
        n = int(duration * FS)
        print(f"[bench ephys] writing {duration:g} s of 385 ch at 30 kHz ...", file=sys.stderr, flush=True)
        bin_path = write_spikeglx(folder, "npx_g0_t0", n, synthetic_fill())
        file_mb = bin_path.stat().st_size / 1e6
        for name, stop in (("spikeglx_short", duration / 10), ("spikeglx", None)):
            if name not in names:
                continue
            print(f"[bench ephys] {name} ...", file=sys.stderr, flush=True)
            try:
                res = run_graph(folder, stop, work)
                seconds = duration if stop is None else stop
                res.update(recorded_s=seconds, file_mb=round(file_mb, 1), read_mb=round(file_mb * seconds / duration, 1),
                           realtime_x=round(seconds / res["run_s"], 2) if res["run_s"] else None,
                           realtime_x_total=round(seconds / res["wall_s_total"], 2))
            except Exception as exc:  # a failing variant is reported, never dropped
                res = {"error": f"{type(exc).__name__}: {exc}"}
            results[name] = res
    full, short = results.get("spikeglx", {}), results.get("spikeglx_short", {})
    if "peak_rss_mb" in full and "peak_rss_mb" in short:
        full["rss_growth_mb"] = round(full["peak_rss_mb"] - short["peak_rss_mb"], 1)
    out = {"bench": "ephys", "machine": machine_info(), "duration_s": duration, "variants": results}
    print(format_table(out))
    save_json(out, args.json)
    return 0 if all("error" not in r for r in results.values()) else 1


def format_table(out: dict) -> str:
    lines = ["| variant | result | target |", "|---|---|---|"]
    for name, r in out["variants"].items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error']} | |")
            continue
        growth = f", RSS growth vs short run {r['rss_growth_mb']} MB" if "rss_growth_mb" in r else ""
        lines.append(f"| {name} | {r['realtime_x']}x real time ({r['recorded_s']:g} s of 384 ch at 30 kHz in {r['run_s']:.1f} s; "
                     f"{r['realtime_x_total']}x with start-up), {r['detections']} detections; peak RSS {r['peak_rss_mb']} MB "
                     f"for {r['read_mb']} MB read of a {r['file_mb']} MB file{growth} | >= 10x, memory bounded by the chunk |")
    return "\n".join(lines)
