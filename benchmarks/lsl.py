"""``rtneuro bench lsl``: from an LSL push to a decision, rtneuro beside ezmsg-lsl and MNE-LSL; replay speed.

A probe outlet (``rtneuro.probe``, in a process of its own) pushes 64
channels at 1 kHz in 32-sample chunks, each chunk's newest sample stamped
with the moment it was pushed. The chain reads it and decides: LSL inlet ->
4th-order Butterworth band-pass 1-40 Hz -> band power (5 bands, 256-sample
window, one frame per chunk) -> threshold -> sink. Latency: from the push of
the newest sample of the deciding window to the decision.

Variants (measured in this order, in one run):

``rtneuro``           the chain in one rtneuro process (lsl_inlet ... stimulator);
                      latency measured at the stimulator, after the gate
``rtneuro_loopback``  the same run, timed from outside: the decisions go out
                      through an lsl_outlet and the probe's own inlet measures
                      push -> graph -> LSL -> probe
``ezmsg``             ezmsg-lsl's inlet + ezmsg-sigproc, one process
``mnelsl``            MNE-LSL's StreamLSL, polled with get_data, NumPy/SciPy processing
``replay_max``        the demo graph (64 ch, 160 Hz, 122 s) at --speed max:
                      ``speed_x`` = recording seconds / seconds until every
                      service had processed all of it
``replay_max_1khz``   the same on the demo recordings resampled to 1 kHz

The first 2 s of each latency variant are warm-up. A peer that cannot run
is reported with an ``"error"`` field.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

from benchmarks.common import pick_variants, save_json, stats
from rtneuro.config import load_graph
from rtneuro.probe import ProbeOutlet, listen
from rtneuro.runtime.supervisor import Supervisor, machine_info

WARMUP_S = 2.0
VARIANTS = ("rtneuro", "rtneuro_loopback", "ezmsg", "mnelsl", "replay_max", "replay_max_1khz")
ROOT = Path(__file__).resolve().parent.parent
N_CH, SFREQ, CHUNK = 64, 1000.0, 32



def chain_graph(probe: str, decisions: str, duration_s: float) -> dict:
    return {
        "name": "bench-lsl",
        "runtime": {"duration_s": duration_s, "status_interval_s": 1.0},
        "nodes": [
            {"id": "eeg", "type": "lsl_inlet", "process": "main", "params": {"name": probe, "n_channels": N_CH}},
            {"id": "bp", "type": "bandpass", "inputs": ["eeg"], "process": "main", "params": {"l_freq": 1.0, "h_freq": 40.0, "order": 4}},
            {"id": "bpow", "type": "bandpower", "inputs": ["bp"], "process": "main",
             "params": {"window_s": 256 / SFREQ, "step_s": CHUNK / SFREQ, "mode": "abs"}},
            {"id": "ctl", "type": "threshold", "inputs": ["bpow"], "process": "main",
             "params": {"feature": "P00:alpha", "threshold": 1e12}},
            {"id": "stim", "type": "stimulator", "inputs": ["ctl"], "process": "main"},
            {"id": "out", "type": "lsl_outlet", "inputs": ["ctl"], "process": "main", "params": {"name": decisions}},
        ],
    }


def run_rtneuro(duration_s: float) -> tuple[dict, dict]:
    probe, decisions = f"rtneuro-probe-{uuid.uuid4().hex[:6]}", f"rtneuro-decisions-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="rtn-bench-") as d, \
            ProbeOutlet(probe, n_channels=N_CH, sfreq=SFREQ, chunk=CHUNK, duration_s=duration_s + 30):
        path = Path(d) / "chain.yaml"
        path.write_text(yaml.safe_dump(chain_graph(probe, decisions, WARMUP_S + duration_s + 2.0)))
        sup = Supervisor(load_graph(path), quiet=True, out=io.StringIO())
        import threading

        box: dict = {}
        t = threading.Thread(target=lambda: box.setdefault("code", sup.run()), daemon=True)
        t.start()
        try:
            ages = listen(decisions, duration_s, warmup_s=WARMUP_S)
        except RuntimeError as exc:
            ages, err = [], str(exc)
        else:
            err = None
        t.join(120)
    rep = sup.report
    values = sup.e2e._values
    skip = int(WARMUP_S * SFREQ / CHUNK)
    code = box.get("code")
    inner = stats(values[skip:], hops=0, chunk_rate_hz=SFREQ / CHUNK, exit_code=code,
                   clock_offset_ms=rep["nodes"].get("eeg", {}).get("clock_offset_ms"),
                   gaps=rep["nodes"].get("eeg", {}).get("gaps"), stale_chunks=rep["nodes"].get("eeg", {}).get("stale_chunks"))
    if code != 0:
        inner["error"] = "; ".join(rep.get("errors", [])) or f"exit code {code}"
    outer = stats(ages, what="push -> graph -> lsl_outlet -> probe inlet")
    if err:
        outer["error"] = err
    return inner, outer


def run_peer(mode: str, duration_s: float) -> dict:
    peer = ROOT / "benchmarks" / "peers" / "lsl_chain.py"
    if not peer.exists():
        return {"error": "benchmarks/peers/lsl_chain.py is missing", "n": 0}
    name = f"rtneuro-probe-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="rtn-bench-") as d, \
            ProbeOutlet(name, n_channels=N_CH, sfreq=SFREQ, chunk=CHUNK, duration_s=duration_s + 60):
        out = Path(d) / "peer.json"
        proc = subprocess.run([sys.executable, str(peer), "--mode", mode, "--stream", name, "--duration", str(duration_s),
                               "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=duration_s + 180)
        if not out.exists():
            tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            return {"error": f"{mode} peer failed: {tail}", "n": 0}
        res = json.loads(out.read_text())
    if res.get("error"):
        return {"error": res["error"], "n": 0, "versions": res.get("versions")}
    return stats(res["latencies_us"], peer=res.get("peer"), versions=res.get("versions"))


def _demo_1khz(folder: Path) -> Path:
    import mne

    paths = []
    for f in ("S003R01", "S003R02"):
        raw = mne.io.read_raw(ROOT / "replay_data" / f"{f}.edf", preload=True, verbose="error")
        raw.resample(1000.0, verbose="error")
        paths.append(folder / f"{f}_1khz_raw.fif")
        raw.save(paths[-1], overwrite=True, verbose="error")
    g = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    g["nodes"][0]["params"]["path"] = [str(p) for p in paths]
    out = folder / "demo_1khz.yaml"
    out.write_text(yaml.safe_dump(g))
    return out


def run_replay(one_khz: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="rtn-bench-") as d:
        cfg = _demo_1khz(Path(d)) if one_khz else ROOT / "configs" / "demo.yaml"
        graph = load_graph(cfg, overrides={"speed": "max"}, base_dir=(ROOT / "configs") if not one_khz else None)
        sup = Supervisor(graph, quiet=True, out=io.StringIO())
        code = sup.run()
        rep = sup.report
    eeg = rep["streams"]["eeg"]
    seconds = eeg["samples"] / eeg["sfreq"]
    done = rep.get("data_done_s") or rep["run_s"]
    res = {"speed_x": round(seconds / done, 1), "recording_s": round(seconds, 1), "data_done_s": done,
           "run_s": rep["run_s"], "wall_s": rep["wall_s"], "sfreq": eeg["sfreq"], "n_channels": eeg["n_channels"],
           "gaps": sum(s["gaps"] for s in rep["streams"].values()), "exit_code": code,
           "p50_us": None, "p99_us": None, "max_us": None, "n": eeg["chunks"]}
    if code != 0:
        res["error"] = "; ".join(rep["errors"])
    return res


def run(args: argparse.Namespace) -> int:
    wanted = pick_variants(args.variants, VARIANTS)
    if wanted is None:
        return 2
    d = args.duration
    if getattr(args, "cpu_dma_latency", None) is not None:
        print("--cpu-dma-latency applies to the latency benchmark only", file=sys.stderr)
        return 2
    results: dict[str, dict] = {}
    inner_outer = None
    for name in wanted:
        t0 = time.monotonic()
        print(f"[bench lsl] {name} ...", file=sys.stderr, flush=True)
        try:
            if name in ("rtneuro", "rtneuro_loopback"):
                if inner_outer is None:
                    inner_outer = run_rtneuro(d)
                res = dict(inner_outer[0] if name == "rtneuro" else inner_outer[1])
            elif name in ("ezmsg", "mnelsl"):
                res = run_peer(name, d)
            else:
                res = run_replay(name.endswith("1khz"))
        except Exception as exc:  # a failing variant is reported, never dropped
            res = {"error": f"{type(exc).__name__}: {exc}", "n": 0}
        res["wall_s_variant"] = round(time.monotonic() - t0, 1)
        results[name] = res
        if res.get("error"):
            line = f"error: {res['error']}"
        elif "speed_x" in res:
            line = f"{res['speed_x']}x real time ({res['recording_s']} s of {res['n_channels']} ch at {res['sfreq']:g} Hz)"
        else:
            line = f"p50 {res['p50_us']:.0f} us  p99 {res['p99_us']:.0f} us  max {res['max_us']:.0f} us  n={res['n']}"
        print(f"[bench lsl] {name}: {line}", file=sys.stderr, flush=True)
    ratios = {}
    r = results.get("rtneuro", {})
    for peer in ("ezmsg", "mnelsl"):
        p = results.get(peer, {})
        if r.get("p50_us") and p.get("p50_us"):
            ratios[f"{peer} / rtneuro"] = round(p["p50_us"] / r["p50_us"], 2)
    out = {"bench": "lsl", "machine": machine_info(), "duration_s": d, "warmup_s": WARMUP_S,
           "variants": results, "ratios": ratios}
    print(format_table(out))
    save_json(out, args.json)
    return 0


def format_table(res: dict) -> str:
    lines = ["| variant | p50 (ms) | p99 (ms) | max (ms) | n | notes |", "|---|---|---|---|---|---|"]
    for name, v in res["variants"].items():
        if v.get("error"):
            lines.append(f"| {name} | | | | | error: {v['error']} |")
        elif "speed_x" in v:
            lines.append(f"| {name} | | | | | {v['speed_x']}x real time ({v['n_channels']} ch, {v['sfreq']:g} Hz, gaps {v['gaps']}) |")
        else:
            lines.append(f"| {name} | {v['p50_us'] / 1e3:.3f} | {v['p99_us'] / 1e3:.3f} | {v['max_us'] / 1e3:.3f} | {v['n']} | |")
    for label, ratio in res.get("ratios", {}).items():
        lines.append(f"\nratio {label} (p50): {ratio}")
    return "\n".join(lines)
