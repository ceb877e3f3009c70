"""``rtneuro bench dsp``: the signal-processing kernels beside the tools people use today.

Each part lives in its own module and exposes ``VARIANTS`` (names) and
``run_variant(name, duration_s) -> dict``; every variant is measured in
this one run, in the order below, on the same machine.

``filter_rtneuro`` / ``filter_scipy``
    4-section (order-4 band-pass) IIR on 64 ch at 1 kHz, 32-sample chunks;
    also ``notch_rtneuro``, ``fir_rtneuro`` / ``fir_scipy``, ``decimate_rtneuro``,
    ``reref_rtneuro`` (see ``benchmarks/dsp_filters.py``).
``bandpower_rtneuro`` / ``bandpower_scipy_welch`` / ``bandpower_mne_multitaper``
    64 ch at 1 kHz, 1 s window, one update every 32 samples; p50/p99 per
    update; also ``bandpower_rtneuro_multitaper``.
``coherence_rtneuro`` / ``coherence_rtneuro_5measures`` / ``coherence_mne_connectivity``
    all 2016 pairs of 64 ch, 5 bands, 1 s window, one update every 100 ms;
    ``core_fraction`` (CPU s per s of signal).
``spikes_rtneuro`` / ``spikes_spikeinterface``
    384 ch at 30 kHz in 1 ms chunks: band-pass + threshold detection;
    ``core_fraction``.
``phase_echt_rtneuro`` / ``phase_echt_numpy`` / ``phase_ar_rtneuro`` / ``phase_ar_scipy``
    one channel at 1 kHz, a phase estimate per sample (ecHT) or every 4
    samples (AR), triggers and scoring included; p50/p99 per call.

Latency variants report ``p50_us``, ``p99_us``, ``max_us``, ``n``;
throughput variants report ``core_fraction`` (best of three passes, CPU
time of the measuring thread) with per-chunk percentiles. A variant that
cannot run is reported with an ``"error"`` field.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

from benchmarks.common import pick_variants, save_json
from rtneuro.runtime.supervisor import machine_info

PARTS = {
    "benchmarks.dsp_filters": ("filter_rtneuro", "filter_scipy", "notch_rtneuro", "fir_rtneuro", "fir_scipy",
                               "decimate_rtneuro", "reref_rtneuro"),
    "benchmarks.dsp_spectral": ("bandpower_rtneuro", "bandpower_scipy_welch", "bandpower_mne_multitaper", "bandpower_rtneuro_multitaper"),
    "benchmarks.dsp_connectivity": ("coherence_rtneuro", "coherence_rtneuro_5measures", "coherence_mne_connectivity"),
    "benchmarks.dsp_spikes": ("spikes_rtneuro", "spikes_spikeinterface"),
    "benchmarks.dsp_phase": ("phase_echt_rtneuro", "phase_echt_numpy", "phase_ar_rtneuro", "phase_ar_scipy"),
}
VARIANTS = tuple(v for names in PARTS.values() for v in names)
#: (peer, rtneuro, metric): the ratios reported (peer / rtneuro, > 1 means rtneuro is faster)
RATIOS = (
    ("filter_scipy", "filter_rtneuro", "core_fraction"),
    ("fir_scipy", "fir_rtneuro", "core_fraction"),
    ("bandpower_scipy_welch", "bandpower_rtneuro", "p50_us"),
    ("bandpower_mne_multitaper", "bandpower_rtneuro", "p50_us"),
    ("coherence_mne_connectivity", "coherence_rtneuro", "core_fraction"),
    ("spikes_spikeinterface", "spikes_rtneuro", "core_fraction"),
    ("phase_echt_numpy", "phase_echt_rtneuro", "p50_us"),
    ("phase_ar_scipy", "phase_ar_rtneuro", "p50_us"),
)


def _module_of(variant: str) -> str:
    return next(m for m, names in PARTS.items() if variant in names)


def format_table(res: dict) -> str:
    lines = ["| variant | p50 (ms) | p99 (ms) | core fraction | n | notes |", "|---|---|---|---|---|---|"]
    for name, v in res["variants"].items():
        if v.get("error"):
            lines.append(f"| {name} | | | | | error: {v['error']} |")
            continue
        p50 = f"{v['p50_us'] / 1e3:.4f}" if v.get("p50_us") is not None else ""
        p99 = f"{v['p99_us'] / 1e3:.4f}" if v.get("p99_us") is not None else ""
        frac = f"{v['core_fraction']:.4f}" if v.get("core_fraction") is not None else ""
        lines.append(f"| {name} | {p50} | {p99} | {frac} | {v.get('n', '')} | {v.get('notes', '')} |")
    for label, ratio in res.get("ratios", {}).items():
        lines.append(f"\nratio {label}: {ratio}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    names = pick_variants(args.variants, VARIANTS)
    if names is None:
        return 2
    d = float(args.duration)
    results: dict[str, dict] = {}
    for name in names:
        t0 = time.monotonic()
        print(f"[bench dsp] {name} ...", file=sys.stderr, flush=True)
        try:
            res = importlib.import_module(_module_of(name)).run_variant(name, d)
        except Exception as exc:  # a failing variant is reported, never dropped
            res = {"error": f"{type(exc).__name__}: {exc}", "n": 0}
        res["wall_s_variant"] = round(time.monotonic() - t0, 1)
        results[name] = res
        print(f"[bench dsp] {name}: {json.dumps({k: v for k, v in res.items() if not isinstance(v, (list, dict))})}",
              file=sys.stderr, flush=True)
    ratios = {}
    for peer, ours, metric in RATIOS:
        p, r = results.get(peer, {}), results.get(ours, {})
        if p.get(metric) and r.get(metric):
            ratios[f"{peer} / {ours} ({metric})"] = round(p[metric] / r[metric], 2)
    out = {"bench": "dsp", "machine": machine_info(), "duration_s": d, "variants": results, "ratios": ratios}
    print(format_table(out))
    save_json(out, args.json)
    return 0
