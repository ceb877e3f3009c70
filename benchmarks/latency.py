"""``rtneuro bench latency``: the reference chain, rtneuro against its peers, in one run.

The chain: 64 channels at 1 kHz in 32-sample chunks (one chunk every 32 ms,
31.25 Hz) -> 4th-order Butterworth band-pass 1-40 Hz -> band power (5 bands,
256-sample window, one frame per chunk) -> threshold -> stimulator (safety
gate + simulated driver). Latency: from the acquisition time of the newest
sample of the window that caused a decision to the moment the decision has
passed the gate and reached the driver.

Variants (all at 31.25 Hz, measured in the same run, in this order):

``rtneuro_inproc``    every node in one process
``rtneuro_multiproc`` one process per node (4 ZeroMQ hops)
``rtneuro_deploy``    the recommended layout: acquisition, processing and
                      control in one process, the stimulate service in its
                      own (1 hop)
``pyzmq_floor``       the same bytes over the same socket types, 4 hops, no
                      framework (benchmarks/peers/pyzmq_floor.py)
``ezmsg_inproc``      ezmsg + ezmsg-sigproc, same chain, one process
``ezmsg_multiproc``   ezmsg + ezmsg-sigproc, one process per unit
                      (benchmarks/peers/ezmsg_chain.py)
``rtneuro_multiproc_spin``  as rtneuro_multiproc with ``runtime.spin_ms: 2``:
                      each process polls without sleeping for 2 ms around
                      its predicted input (about 6 % of a core per process)
``rtneuro_throughput_30khz``  one process per node at 64 ch x 30 kHz in 1 ms
                      chunks (spike band 300-6000 Hz; band power in 3 bands):
                      reports gaps, which must be 0

The first 2 s of each variant are warm-up and not counted. A peer that cannot
run is reported with an ``"error"`` field.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import pick_variants, save_json, stats
from rtneuro.config import load_graph
from rtneuro.runtime.supervisor import Supervisor, machine_info

WARMUP_S = 2.0
VARIANTS = (
    "rtneuro_inproc",
    "rtneuro_multiproc",
    "rtneuro_deploy",
    "pyzmq_floor",
    "ezmsg_inproc",
    "ezmsg_multiproc",
    "rtneuro_multiproc_spin",
    "rtneuro_throughput_30khz",
)
ROOT = Path(__file__).resolve().parent.parent


def chain_config(layout: str, duration_s: float, *, sfreq: float = 1000.0, chunk: int = 32, spin_ms: float = 0.0) -> dict:
    """The reference chain as a graph; ``layout`` is inproc, multiproc or deploy."""
    spike = sfreq >= 10_000
    place = {
        "inproc": dict.fromkeys(("src", "bp", "bpow", "ctl", "stim"), "main"),
        "multiproc": {"src": "p_src", "bp": "p_bp", "bpow": "p_bpow", "ctl": "p_ctl", "stim": "p_stim"},
        "deploy": {"src": "main", "bp": "main", "bpow": "main", "ctl": "main", "stim": "stimulate"},
    }[layout]
    bands = ({"low": [300.0, 1000.0], "mid": [1000.0, 3000.0], "high": [3000.0, 6000.0]} if spike else
             {"delta": [1.0, 4.0], "theta": [4.0, 8.0], "alpha": [8.0, 12.0], "beta": [13.0, 30.0], "gamma": [30.0, 45.0]})
    nodes = [
        {"id": "src", "type": "synthetic", "process": place["src"],
         "params": {"n_channels": 64, "sfreq": sfreq, "chunk_size": chunk, "seed": 1,
                    "oscillations": [[10.0, 5.0]] if not spike else [[1000.0, 5.0]],
                    "duration_s": WARMUP_S + duration_s}},
        {"id": "bp", "type": "bandpass", "inputs": ["src"], "process": place["bp"],
         "params": {"l_freq": 300.0, "h_freq": 6000.0, "order": 4} if spike else {"l_freq": 1.0, "h_freq": 40.0, "order": 4}},
        {"id": "bpow", "type": "bandpower", "inputs": ["bp"], "process": place["bpow"],
         "params": {"bands": bands, "window_s": 256 / sfreq, "step_s": chunk / sfreq, "mode": "abs"}},
        {"id": "ctl", "type": "threshold", "inputs": ["bpow"], "process": place["ctl"],
         "params": {"feature": "ch00:mid" if spike else "ch00:alpha", "threshold": 1e12, "deadline_ms": 50.0}},
        {"id": "stim", "type": "stimulator", "inputs": ["ctl"], "process": place["stim"],
         "params": {"driver": "simulated", "profile": "simulated"}},
    ]
    return {
        "name": f"bench-{layout}" + ("-30khz" if spike else ""),
        "runtime": {"speed": "realtime", "status_interval_s": 1.0, "spin_ms": spin_ms},
        "transport": {"scheme": "ipc", "policy": "latest"},
        "nodes": nodes,
    }



def run_rtneuro(layout: str, duration_s: float, **kw) -> dict:
    with tempfile.TemporaryDirectory(prefix="rtn-bench-") as d:
        path = Path(d) / "chain.yaml"
        path.write_text(yaml.safe_dump(chain_config(layout, duration_s, **kw)))
        graph = load_graph(path)
        sup = Supervisor(graph, quiet=True, out=open("/dev/null", "w"))  # noqa: SIM115
        code = sup.run()
        rep = sup.report
    values = sup.e2e._values
    chunk_rate = kw.get("sfreq", 1000.0) / kw.get("chunk", 32)
    skip = int(WARMUP_S * chunk_rate)
    gaps = sum(s["gaps"] for s in rep["streams"].values())
    extra = {"hops": {"inproc": 0, "multiproc": 4, "deploy": 1}[layout], "chunk_rate_hz": round(chunk_rate, 2),
             "spin_ms": kw.get("spin_ms", 0.0),
             "gaps": gaps, "exit_code": code, "refused": rep["commands"]["refused"],
             "decisions": len(values)}
    extra["hops_p50_us"] = {h: v["p50"] for h, v in rep.get("hops_us", {}).items()}
    if code != 0:
        extra["error"] = "; ".join(rep["errors"]) or f"exit code {code}"
    return stats(values[skip:], **extra)


def run_floor(duration_s: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="rtn-bench-") as d:
        out = Path(d) / "floor.json"
        proc = subprocess.run([sys.executable, "-m", "benchmarks.peers.pyzmq_floor", "--duration", str(duration_s),
                               "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=duration_s + 120)
        if not out.exists():
            return {"error": f"pyzmq floor failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}", "n": 0}
        res = json.loads(out.read_text())
    return stats(res["latencies_us"], hops=4, chunk_rate_hz=31.25)


def run_ezmsg(mode: str, duration_s: float) -> dict:
    try:
        import ezmsg.core  # noqa: F401
        import ezmsg.sigproc  # noqa: F401
    except ImportError as exc:
        return {"error": f"ezmsg not installed ({exc}); install the bench extra: pip install -e '.[bench]'", "n": 0}
    with tempfile.TemporaryDirectory(prefix="rtn-bench-") as d:
        out = Path(d) / "ezmsg.json"
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "peers" / "ezmsg_chain.py"), "--mode", mode,
                               "--duration", str(duration_s), "--json", str(out)],
                              cwd=ROOT, capture_output=True, text=True, timeout=duration_s + 180)
        if not out.exists():
            tail = proc.stderr.strip().splitlines()[-1:] if proc.stderr else [f"exit code {proc.returncode}"]
            return {"error": f"ezmsg run failed: {tail[0]}", "n": 0}
        res = json.loads(out.read_text())
    if res.get("error"):
        return {"error": res["error"], "n": 0}
    return stats(res["latencies_us"], hops={"inproc": 0, "multiproc": 4}[mode], chunk_rate_hz=31.25,
                  versions=res.get("versions"))


def run(args: argparse.Namespace) -> int:
    wanted = pick_variants(args.variants, VARIANTS)
    if wanted is None:
        return 2
    d = args.duration
    results: dict[str, dict] = {}
    from contextlib import nullcontext

    from rtneuro.runtime.supervisor import CpuLatencyRequest

    qos = CpuLatencyRequest(args.cpu_dma_latency) if args.cpu_dma_latency is not None else nullcontext()
    with qos:
        if getattr(qos, "error", None):
            print(f"[bench latency] {qos.error}", file=sys.stderr)
            return 2
        results = _run_variants(wanted, d)
    ratios = _ratios(results)
    out = {"bench": "latency", "machine": machine_info(), "duration_s": d, "warmup_s": WARMUP_S,
           "cpu_dma_latency_us": args.cpu_dma_latency, "variants": results, "ratios": ratios}
    print(format_table(out))
    save_json(out, args.json)
    return 0


def _run_variants(wanted, d: float) -> dict:
    results: dict[str, dict] = {}
    for name in wanted:
        t0 = time.monotonic()
        print(f"[bench latency] {name} ({d:g} s + {WARMUP_S:g} s warm-up) ...", file=sys.stderr, flush=True)
        try:
            if name == "rtneuro_throughput_30khz":
                res = run_rtneuro("multiproc", d, sfreq=30000.0, chunk=30)
            elif name == "rtneuro_multiproc_spin":
                res = run_rtneuro("multiproc", d, spin_ms=2.0)
            elif name.startswith("rtneuro_"):
                res = run_rtneuro(name.split("_", 1)[1], d)
            elif name == "pyzmq_floor":
                res = run_floor(d)
            else:
                res = run_ezmsg(name.split("_", 1)[1], d)
        except Exception as exc:  # a failing variant is reported, never dropped
            res = {"error": f"{type(exc).__name__}: {exc}", "n": 0}
        res["wall_s"] = round(time.monotonic() - t0, 1)
        results[name] = res
        print(f"[bench latency] {name}: " + (f"error: {res['error']}" if res.get("error") else
              f"p50 {res['p50_us']:.0f} us  p99 {res['p99_us']:.0f} us  max {res['max_us']:.0f} us  n={res['n']}"),
              file=sys.stderr, flush=True)
    return results


def _ratios(r: dict) -> dict:
    def p50(name):
        v = r.get(name, {})
        return v.get("p50_us") if not v.get("error") else None

    pairs = {
        "rtneuro_multiproc / pyzmq_floor": ("rtneuro_multiproc", "pyzmq_floor"),
        "rtneuro_multiproc_spin / pyzmq_floor": ("rtneuro_multiproc_spin", "pyzmq_floor"),
        "ezmsg_multiproc / rtneuro_multiproc": ("ezmsg_multiproc", "rtneuro_multiproc"),
        "ezmsg_multiproc / rtneuro_multiproc_spin": ("ezmsg_multiproc", "rtneuro_multiproc_spin"),
        "ezmsg_inproc / rtneuro_inproc": ("ezmsg_inproc", "rtneuro_inproc"),
    }
    out = {}
    for label, (a, b) in pairs.items():
        if p50(a) and p50(b):
            out[label] = round(p50(a) / p50(b), 2)
    return out


def format_table(res: dict) -> str:
    lines = ["| variant | hops | p50 (ms) | p99 (ms) | max (ms) | n | notes |", "|---|---|---|---|---|---|---|"]
    for name, v in res["variants"].items():
        if v.get("error"):
            lines.append(f"| {name} | | | | | | error: {v['error']} |")
            continue
        note = f"gaps {v['gaps']}" if "gaps" in v else ""
        lines.append(f"| {name} | {v.get('hops', '')} | {v['p50_us'] / 1e3:.3f} | {v['p99_us'] / 1e3:.3f} | "
                     f"{v['max_us'] / 1e3:.3f} | {v['n']} | {note} |")
    for label, ratio in res.get("ratios", {}).items():
        lines.append(f"\nratio {label} (p50): {ratio}")
    return "\n".join(lines)
