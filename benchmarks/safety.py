"""``rtneuro bench safety``: the gate's cost per command, the watchdog's and the emergency stop's timing.

``gate``      every command through :class:`rtneuro.safety.Gate` with the
              simulated driver, in process, with the delivery ledger: a
              realistic mix (heartbeats, level changes along a ramp, pulses,
              refusals) and, on a second channel, single pulses every 4 ms,
              the profile's rate limit (250 Hz), so that the ledger's windows
              stay full; p50/p99 of the thread CPU time per ``submit`` (plus
              ``tick``) call. Target: p99 <= 100 us.
``watchdog``  a real graph (synthetic source -> band power -> threshold in a
              ``control`` process -> stimulator in a ``stimulate`` process),
              stimulating; the control process is killed with SIGKILL and
              the stimulate service's gate measures the time from the last
              valid input to the safe state. ``over_deadline_ms`` is that
              time beyond the profile's deadline (watchdog_s plus the longest
              ramp-down), p50/max over repeated kills.
``hostile``   the reference chain under 10,000 hostile messages per second,
              against a control run (see :mod:`benchmarks.hostile`)
``estop``     ``rtneuro stop --now`` against a running graph: ``latency_ms``
              from the command to the stimulators' confirmation of their safe
              state, p50/max over repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks.common import pick_variants, processes_below, save_json, stats
from rtneuro.messages import CMD_HOLD, CMD_LEVEL, CMD_OFF, CMD_PULSE
from rtneuro.runtime.supervisor import machine_info

VARIANTS = ("gate", "watchdog", "estop", "hostile")
ROOT = Path(__file__).resolve().parent.parent


def run_gate(n: int = 20000) -> dict:
    from rtneuro.hardware.simulated import SimulatedDriver
    from rtneuro.safety import Gate, load_profile, make_command

    gate = Gate(load_profile("simulated"), SimulatedDriver())
    gate.open(0.0)
    rng = np.random.default_rng(0)
    mix = [make_command(CMD_HOLD, 0)[0]] * 5 + [
        make_command(CMD_LEVEL, 0, 1.5, 60.0, 130.0, 0.0, 0, 0.5)[0],
        make_command(CMD_OFF, 0)[0],
        make_command(CMD_LEVEL, 0, 9.0, 60.0, 130.0)[0],  # refused: amplitude
    ]
    at_limit = make_command(CMD_PULSE, 1, 1.0, 90.0)[0]  # channel 1, 250 Hz: the rate limit
    cmds = [mix[i] for i in rng.integers(0, len(mix), n)]
    times = np.empty(n)
    for i, cmd in enumerate(cmds):
        now = 1.0 + 0.002 * i
        if i % 2:  # every other command is a pulse at the rate limit: one every 4 ms
            cmd = at_limit
        t0 = time.thread_time_ns()
        if int(cmd["kind"]) == CMD_HOLD:
            gate.heartbeat(now, now + 0.05)
        else:
            gate.submit(cmd, now, now + 0.05, now)
        gate.tick(now)
        times[i] = (time.thread_time_ns() - t0) / 1e3
    pulses = gate.driver.report()["pulses"].get("1", 0)
    return stats(times[200:], per="command (submit + tick)", counts=dict(gate.counts),
                 refusals=dict(gate.reasons), pulses_at_limit=pulses,
                 mix="half heartbeats/levels/off/refused on ch0, half pulses every 4 ms (250 Hz, the limit) on ch1")


def _graph(run_dir: Path) -> dict:
    return {
        "name": "bench-watchdog",
        "runtime": {"speed": "realtime", "status_interval_s": 0.5, "restart": "never"},
        "nodes": [
            {"id": "src", "type": "synthetic", "process": "acquire",
             "params": {"n_channels": 4, "sfreq": 500.0, "chunk_size": 10, "seed": 1, "duration_s": 60.0}},
            {"id": "bpow", "type": "bandpower", "inputs": ["src"], "process": "acquire",
             "params": {"bands": {"alpha": [8.0, 12.0]}, "window_s": 0.5, "step_s": 0.02, "average": True}},
            {"id": "ctl", "type": "threshold", "inputs": ["bpow"], "process": "control",
             "params": {"threshold": -1e9, "amplitude_ma": 1.0, "deadline_ms": 200.0}},
            {"id": "stim", "type": "stimulator", "inputs": ["ctl"], "process": "stimulate",
             "params": {"log_path": str(run_dir / "delivered.jsonl")}},
        ],
    }


def _run_and_kill(victim: str, settle_s: float = 4.0) -> dict:
    with tempfile.TemporaryDirectory(prefix="rtn-bench-") as d:
        path = Path(d) / "g.yaml"
        path.write_text(yaml.safe_dump(_graph(Path(d)), sort_keys=False))
        report = Path(d) / "r.json"
        proc = subprocess.Popen([sys.executable, "-m", "rtneuro", "run", str(path), "--quiet", "--report", str(report)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            t_end = time.monotonic() + 60
            pid = None
            while time.monotonic() < t_end and pid is None:
                pid = next((p for p, c in processes_below(proc.pid, depth=1).items() if f"services.{victim}" in c), None)
                time.sleep(0.1)
            if pid is None:
                raise RuntimeError(f"no '{victim}' process appeared")
            # stimulating (the driver logged a level), however long the graph took to start, then settle
            delivered = Path(d) / "delivered.jsonl"
            while time.monotonic() < t_end + 60 and not (delivered.exists() and '"level"' in delivered.read_text()):
                time.sleep(0.05)
            time.sleep(settle_s)
            os.kill(pid, signal.SIGKILL)
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
        return json.loads(report.read_text())


def run_watchdog(repeats: int) -> dict:
    over, to_safe = [], []
    deadline = None
    for _ in range(repeats):
        rep = _run_and_kill("control")
        stim = rep["nodes"]["stim"]
        deadline = stim["safe_deadline_s"]
        over += stim["watchdog_over_deadline_ms"][:1]
        to_safe += stim["watchdog_to_safe_ms"][:1]
    o = np.asarray(over)
    return {"over_deadline_ms": {"p50": round(float(np.median(o)), 3), "max": round(float(o.max()), 3)} if o.size else None,
            "to_safe_ms": [round(v, 3) for v in to_safe], "deadline_ms": None if deadline is None else 1e3 * deadline,
            "n": int(o.size)}


def run_estop(repeats: int) -> dict:
    """``rtneuro stop --now --run RUN`` against a running graph, then ``--clear``; latency from its report."""
    import re

    from rtneuro.runtime.supervisor import running_supervisors

    send_to_confirm, cli_wall = [], []
    with tempfile.TemporaryDirectory(prefix="rtn-bench-") as d:
        path = Path(d) / "g.yaml"
        graph = _graph(Path(d))
        graph["runtime"]["duration_s"] = 30.0 + 2.0 * repeats
        path.write_text(yaml.safe_dump(graph, sort_keys=False))
        proc = subprocess.Popen([sys.executable, "-m", "rtneuro", "run", str(path), "--quiet"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            run = None
            t_end = time.monotonic() + 60
            while run is None and time.monotonic() < t_end:
                run = next((r for r in running_supervisors() if r.get("pid") == proc.pid), None)
                time.sleep(0.1)
            if run is None:
                raise RuntimeError("the benchmark graph did not register as a running supervisor")
            time.sleep(4.0)  # started and stimulating
            for _ in range(repeats):
                t0 = time.monotonic()
                r = subprocess.run([sys.executable, "-m", "rtneuro", "stop", "--now", "--run", run["run_dir"]],
                                   cwd=ROOT, capture_output=True, text=True, timeout=30)
                cli_wall.append(1e3 * (time.monotonic() - t0))
                m = re.search(r"confirmed in ([0-9.]+) ms", r.stdout + r.stderr)
                if r.returncode != 0 or m is None:
                    raise RuntimeError(f"rtneuro stop --now failed: {(r.stdout + r.stderr).strip()}")
                send_to_confirm.append(float(m.group(1)))
                subprocess.run([sys.executable, "-m", "rtneuro", "stop", "--clear", "--run", run["run_dir"]],
                               cwd=ROOT, capture_output=True, text=True, timeout=30)
                time.sleep(1.0)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    v = np.asarray(send_to_confirm)
    return {"latency_ms": {"p50": round(float(np.median(v)), 3), "max": round(float(v.max()), 3)},
            "latency_ms_all": [round(x, 3) for x in send_to_confirm], "n": int(v.size),
            "cli_wall_ms_p50": round(float(np.median(cli_wall)), 1),
            "measured": "from the stop request leaving the CLI to the stimulators' confirmation of their safe state"}


def format_table(res: dict) -> str:
    lines = ["| variant | result |", "|---|---|"]
    for name, v in res["variants"].items():
        if v.get("error"):
            lines.append(f"| {name} | error: {v['error']} |")
        elif name == "gate":
            lines.append(f"| gate | p50 {v['p50_us']:.1f} us, p99 {v['p99_us']:.1f} us per command (n={v['n']}) |")
        elif name == "watchdog":
            o = v["over_deadline_ms"]
            lines.append(f"| watchdog | to safe state beyond the deadline ({v['deadline_ms']:.0f} ms): p50 {o['p50']:.2f} ms, max {o['max']:.2f} ms over {v['n']} kills |")
        elif name == "hostile":
            lines.append(f"| hostile | {v['rate_hz']:.0f} msg/s for {v['attack_s']:.0f} s: crashes {v['crashes']}, "
                         f"rss_growth_mb {v['rss_growth_mb']}, violations {v['violations']}, p99_ratio {v['p99_ratio']} "
                         f"(p99 {v['hostile']['p99_us']} us vs {v['control']['p99_us']} us) |")
        else:
            e = v["latency_ms"]
            lines.append(f"| estop | request -> every stimulator safe and confirmed: p50 {e['p50']:.2f} ms, max {e['max']:.2f} ms over {v['n']} stops |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    names = pick_variants(args.variants, VARIANTS)
    if names is None:
        return 2
    repeats = max(3, int(args.duration // 5))
    results: dict[str, dict] = {}
    for name in names:
        t0 = time.monotonic()
        print(f"[bench safety] {name} ...", file=sys.stderr, flush=True)
        try:
            if name == "gate":
                res = run_gate()
            elif name == "watchdog":
                res = run_watchdog(repeats)
            elif name == "estop":
                res = run_estop(repeats)
            elif name == "hostile":
                from benchmarks.hostile import run_hostile

                res = run_hostile(attack_s=max(5.0, args.duration))
            else:
                raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
        except Exception as exc:  # a failing variant is reported, never dropped
            res = {"error": f"{type(exc).__name__}: {exc}", "n": 0}
        res["wall_s_variant"] = round(time.monotonic() - t0, 1)
        results[name] = res
    out = {"bench": "safety", "machine": machine_info(), "duration_s": args.duration, "variants": results}
    print(format_table(out))
    save_json(out, args.json)
    return 0
