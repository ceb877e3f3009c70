"""``rtneuro bench record``: the recorder's cost and losses live, and the replay check's speed.

``recorder``      a real-time graph — 64 ch at 1 kHz (synthetic EEG, 32-sample
                  chunks) -> band-pass -> band power (0.5 s windows every
                  0.1 s) -> threshold controller -> simulated stimulator (with
                  its 1 kHz delivered-waveform stream), four processes —
                  recorded by ``rtneuro run --record`` for ``--duration``
                  seconds (the issue's target: 600). ``core_fraction`` is the
                  recorder process's CPU time (all threads, from
                  ``/proc/PID/stat``) per wall second; ``gaps`` counts every
                  gap or restart the session records plus the transport's;
                  ``minutes`` is what the session holds.
``replay_check``  ``rtneuro replay SESSION --check`` on that session: ``speed_x``
                  (session seconds per wall second, start-up included),
                  ``decisions`` compared and ``differing``.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from benchmarks.common import pick_variants, save_json
from rtneuro.runtime.supervisor import machine_info

VARIANTS = ("recorder", "replay_check")


def graph(duration_s: float) -> dict:
    return {
        "name": "bench-record",
        "runtime": {"speed": "realtime", "status_interval_s": 2.0},
        "nodes": [
            {"id": "eeg", "type": "synthetic", "process": "acquire",
             "params": {"n_channels": 64, "sfreq": 1000.0, "chunk_size": 32, "seed": 1, "duration_s": duration_s,
                        "oscillations": [], "burst_rate_hz": 0.3, "burst_freq_hz": 10.0, "burst_amplitude": 30.0,
                        "burst_duration_s": 1.5}},
            {"id": "bp", "type": "bandpass", "inputs": ["eeg"], "process": "process", "params": {"l_freq": 1.0, "h_freq": 40.0}},
            {"id": "alpha", "type": "bandpower", "inputs": ["bp"], "process": "process",
             "params": {"bands": {"alpha": [8.0, 12.0]}, "window_s": 0.5, "step_s": 0.1, "average": True, "mode": "db"}},
            {"id": "ctl", "type": "threshold", "inputs": ["alpha"], "process": "process",
             "params": {"threshold": 12.0, "hysteresis": 2.0, "amplitude_ma": 1.0, "deadline_ms": 100.0}},
            {"id": "stim", "type": "stimulator", "inputs": ["ctl"], "process": "stimulate"},
        ],
    }


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, every thread


def run_recorder(duration_s: float, folder: Path) -> tuple[dict, Path]:
    from rtneuro.recording.session import append_report, recording_graph
    from rtneuro.recording.xdf_read import read_session
    from rtneuro.runtime.supervisor import Supervisor

    cfg = folder / "bench-record.yaml"
    cfg.write_text(yaml.safe_dump(graph(duration_s), sort_keys=False))
    g, session = recording_graph(cfg, folder)
    sup = Supervisor(g, out=io.StringIO(), quiet=True)
    box: dict = {}
    th = threading.Thread(target=lambda: box.setdefault("code", sup.run()), daemon=True)
    th.start()
    t_end = time.monotonic() + 120
    while getattr(sup, "origin", None) is None and time.monotonic() < t_end:
        time.sleep(0.05)
    time.sleep(2.0)  # past start-up (imports, numba caches): measure the steady state
    pid = sup.procs["record"].current.pid
    cpu0, wall0 = _cpu_s(pid), time.monotonic()
    samples = []
    while th.is_alive():
        try:
            samples.append((_cpu_s(pid), time.monotonic()))
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.5)
    th.join()
    # the last sample before the process ended (its final flush and close included)
    cpu1, wall1 = samples[-1] if samples else (cpu0, wall0)
    append_report(session, sup.report)
    s = read_session(session)
    rep = sup.report
    gaps_session = len(s.stream("rtneuro.gaps").time_stamps)
    gaps_transport = sum(int(r.get("gaps", 0)) for r in rep["streams"].values())
    eeg = s.stream("eeg")
    minutes = (float(eeg.time_stamps[-1]) - float(eeg.time_stamps[0])) / 60.0 if len(eeg.time_stamps) else 0.0
    res = {
        "core_fraction": round((cpu1 - cpu0) / max(1e-9, wall1 - wall0), 4),
        "gaps": gaps_session + gaps_transport, "gaps_session": gaps_session, "gaps_transport": gaps_transport,
        "minutes": round(minutes, 3), "exit_code": box.get("code"), "errors": rep["errors"],
        "session_mb": round(session.stat().st_size / 1e6, 1), "damage": s.damage,
        "streams": {n: len(s.stream(n).time_stamps) for n in rep["streams"]},
        "expected_eeg_samples": int(round(duration_s * 1000)),
        "provenance_records": len(s.stream("rtneuro.provenance").time_stamps),
    }
    return res, session


def run_replay_check(session: Path) -> dict:
    from rtneuro.recording.replay import replay_check

    r = replay_check(session, out=None)
    return {"speed_x": r["speed_x"], "decisions": r["decisions"], "differing": r["differing"], "wall_s": r["wall_s"],
            "recorded_s": r["recorded_s"], "exit_code": r["exit_code"],
            "streams": {k: {"compared": v["compared"], "differing": v["differing"]} for k, v in r["streams"].items()}}


def format_table(out: dict) -> str:
    v = out["variants"]
    lines = ["| variant | result | target |", "|---|---|---|"]
    r = v.get("recorder", {})
    if "core_fraction" in r:
        lines.append(f"| recorder | {100 * r['core_fraction']:.1f} % of one core, {r['gaps']} gaps, {r['minutes']:.1f} min "
                     f"(64 ch at 1 kHz + features, commands, decisions, 1 kHz waveform; {r['session_mb']} MB) | < 10 %, 0 gaps, 10 min |")
    elif r:
        lines.append(f"| recorder | error: {r.get('error')} | |")
    c = v.get("replay_check", {})
    if "speed_x" in c:
        lines.append(f"| replay_check | {c['speed_x']}x real time, {c['differing']} of {c['decisions']} decisions differ | >= 50x, 0 |")
    elif c:
        lines.append(f"| replay_check | error: {c.get('error')} | |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    names = pick_variants(args.variants, VARIANTS)
    if names is None:
        return 2
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="rtn-bench-record-") as d:
        session: Path | None = None
        if "recorder" in names or "replay_check" in names:
            print(f"[bench record] recorder: {args.duration:g} s in real time ...", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            try:
                res, session = run_recorder(args.duration, Path(d))
            except Exception as exc:  # a failing variant is reported, never dropped
                res = {"error": f"{type(exc).__name__}: {exc}"}
            res["wall_s_variant"] = round(time.monotonic() - t0, 1)
            if "recorder" in names:
                results["recorder"] = res
        if "replay_check" in names:
            print("[bench record] replay_check ...", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            try:
                if session is None:
                    raise RuntimeError("no session was recorded")
                res = run_replay_check(session)
            except Exception as exc:
                res = {"error": f"{type(exc).__name__}: {exc}"}
            res["wall_s_variant"] = round(time.monotonic() - t0, 1)
            results["replay_check"] = res
    out = {"bench": "record", "machine": machine_info(), "duration_s": args.duration, "variants": results}
    print(format_table(out))
    save_json(out, args.json)
    return 0
