"""``rtneuro bench adbs``: controllers closing the loop on the simulated brain, side by side.

Every variant runs the same graph for the same simulated time with the same
seed (so the same cortical noise): ``sim_brain`` -> 13-30 Hz band-pass ->
beta power (0.5 s windows every 0.1 s, dB) -> controller -> stimulator
(simulated driver, ``timebase: stream``, 130 Hz, 60 us) -> the delivered
waveform back into the brain; all in one process on the virtual clock,
recorded to a session. Variants:

``off``          no stimulation
``cdbs``         continuous 3 mA
``adbs_single``  single threshold (Little et al. 2013): 3 mA while beta stays above 11 dB
``adbs_dual``    dual threshold (Velisar et al. 2019): 0.5 mA steps between 0 and 3 mA,
                 up above 11 dB, down below 9 dB
``model``        a plastic rate network (rate_adaptive) learning to hold beta at 10 dB
``pid``          PID on beta toward 10 dB
``model_lif``    an LIF neuron integrating beta above 11 dB; 0.5 s of 3 mA per spike

``beta_power`` is the 13-30 Hz power of the simulated LFP (Welch, after the
first 5 s), ``beta_reduction`` relative to ``off``; ``energy`` is the
electrical energy delivered (into 1 kOhm, from the delivered waveform)
relative to ``cdbs``; ``on_fraction`` the share of time stimulation was on.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.signal as ss
import yaml

from benchmarks.common import pick_variants, save_json
from rtneuro.runtime.supervisor import machine_info

CONTROLLERS: dict[str, dict | None] = {
    "off": None,
    "cdbs": {"type": "threshold", "params": {"threshold": -1.0e9, "amplitude_ma": 3.0}},
    "adbs_single": {"type": "adbs", "params": {"mode": "single", "threshold": 11.0, "amplitude_ma": 3.0,
                                               "onset_s": 0.1, "termination_s": 0.3}},
    "adbs_dual": {"type": "adbs", "params": {"mode": "dual", "lower": 9.0, "upper": 11.0, "amplitude_ma": 3.0,
                                             "step_ma": 0.5, "onset_s": 0.2, "termination_s": 0.4}},
    "model": {"type": "rate_adaptive", "params": {"target": 10.0, "scale": 3.0, "max_amplitude_ma": 3.0}},
    "pid": {"type": "pid", "params": {"target": 10.0, "kp": 0.2, "ki": 0.5, "max_amplitude_ma": 3.0}},
    "model_lif": {"type": "lif_trigger", "params": {"offset": 11.0, "gain_na": 5.0, "amplitude_ma": 3.0, "train_s": 0.5}},
}
VARIANTS = tuple(CONTROLLERS)
SETTLE_S = 5.0


def graph(controller: dict | None, duration_s: float, seed: int = 1) -> dict:
    """The closed loop of ``configs/adbs_sim.yaml`` with another controller (None: no stimulation)."""
    nodes: list[dict] = [
        {"id": "brain", "type": "sim_brain", "process": "loop", "params": {"duration_s": duration_s, "seed": seed}},
        {"id": "beta_band", "type": "bandpass", "inputs": ["brain"], "process": "loop",
         "params": {"l_freq": 13.0, "h_freq": 30.0, "order": 4}},
        {"id": "beta", "type": "bandpower", "inputs": ["beta_band"], "process": "loop",
         "params": {"bands": {"beta": [13.0, 30.0]}, "window_s": 0.5, "step_s": 0.1, "average": True, "mode": "db"}},
    ]
    if controller is not None:
        nodes[0]["feedback"] = ["stim.delivered"]
        nodes.append({"id": "ctl", "inputs": ["beta"], "process": "loop", **controller})
        nodes.append({"id": "stim", "type": "stimulator", "inputs": ["ctl"], "process": "loop", "params": {"timebase": "stream"}})
    return {"name": "adbs-bench", "runtime": {"speed": "max"}, "nodes": nodes}


def run_variant(name: str, duration_s: float, folder: Path) -> dict:
    from rtneuro.recording.session import recording_graph
    from rtneuro.recording.xdf_read import read_session
    from rtneuro.runtime.supervisor import Supervisor

    sub = folder / name
    sub.mkdir()
    cfg = sub / "graph.yaml"
    cfg.write_text(yaml.safe_dump(graph(CONTROLLERS[name], duration_s), sort_keys=False))
    g, session = recording_graph(cfg, sub, process="loop", fsync=False, min_free_mb=0)
    t0 = time.perf_counter()
    sup = Supervisor(g, out=io.StringIO(), quiet=True)
    code = sup.run()
    wall = time.perf_counter() - t0
    s = read_session(session, names=["brain", "stim.delivered"])
    fs = float(s.stream("brain").nominal_srate)
    x = np.asarray(s.stream("brain").time_series)[int(SETTLE_S * fs):, 0]
    f, pxx = ss.welch(x, fs=fs, nperseg=2048)
    beta = float(pxx[(f >= 13) & (f <= 30)].sum() * (f[1] - f[0]))
    energy = on = 0.0
    if CONTROLLERS[name] is not None:
        d = np.asarray(s.stream("stim.delivered").time_series)
        energy = float(d[:, 4].sum())  # uJ into 1 kOhm, channel 0
        on = float(np.mean(d[:, 0] > 0)) if d.size else 0.0
    rep = sup.report
    return {"beta_power": round(beta, 4), "energy_uj": round(energy, 1), "on_fraction": round(on, 4),
            "wall_s": round(wall, 2), "simulated_s": duration_s, "exit_code": code, "errors": rep["errors"][:3],
            "late_feedback": rep["nodes"].get("brain", {}).get("late_feedback"),
            "controller": rep["nodes"].get("ctl", {})}


def format_table(out: dict) -> str:
    v = out["variants"]
    lines = ["| variant | beta power (uV^2) | beta reduction vs off | energy vs cDBS | stimulation on |",
             "|---|---|---|---|---|"]
    for name, r in v.items():
        if "beta_power" not in r:
            lines.append(f"| {name} | error: {r.get('error')} | | | |")
            continue
        lines.append(f"| {name} | {r['beta_power']:.2f} | {100 * r.get('beta_reduction', 0):.1f} % | "
                     f"{100 * r.get('energy', 0):.1f} % | {100 * r['on_fraction']:.0f} % |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    names = pick_variants(args.variants, VARIANTS)
    if names is None:
        return 2
    need = list(dict.fromkeys(["off", "cdbs", *names]))  # the references the ratios need
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="rtn-bench-adbs-") as d:
        for name in need:
            print(f"[bench adbs] {name}: {args.duration:g} s simulated ...", file=sys.stderr, flush=True)
            try:
                results[name] = run_variant(name, args.duration, Path(d))
            except Exception as exc:  # a failing variant is reported, never dropped
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    off = results.get("off", {}).get("beta_power")
    cdbs = results.get("cdbs", {}).get("energy_uj")
    for r in results.values():
        if "beta_power" in r and off:
            r["beta_reduction"] = round(1.0 - r["beta_power"] / off, 4)
        if "energy_uj" in r and cdbs:
            r["energy"] = round(r["energy_uj"] / cdbs, 4)
    out = {"bench": "adbs", "machine": machine_info(), "duration_s": args.duration,
           "variants": {n: results[n] for n in need if n in names or n in ("off", "cdbs")}}
    cd, dual = out["variants"].get("cdbs", {}), out["variants"].get("adbs_dual", {})
    if "beta_reduction" in cd and "beta_reduction" in dual:
        out["target"] = {"dual_keeps_of_cdbs_suppression": round(dual["beta_reduction"] / cd["beta_reduction"], 3),
                         "dual_energy_of_cdbs": dual.get("energy"),
                         "met": dual["beta_reduction"] >= 0.8 * cd["beta_reduction"] and dual.get("energy", 1.0) <= 0.5}
    print(format_table(out))
    if "target" in out:
        t = out["target"]
        print(f"dual-threshold aDBS keeps {100 * t['dual_keeps_of_cdbs_suppression']:.0f} % of cDBS's beta suppression "
              f"with {100 * (t['dual_energy_of_cdbs'] or 0):.0f} % of its energy (target >= 80 % with <= 50 %: "
              f"{'met' if t['met'] else 'NOT met'})")
    save_json(out, args.json)
    return 0
