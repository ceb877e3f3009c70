"""``rtneuro bench ui``: the browser pages on the reference chain, in headless Chromium, in one run.

The chain is the latency benchmark's reference chain (64 channels at 1 kHz in
32-sample chunks -> band-pass -> band power -> threshold -> stimulator,
``benchmarks/latency.py``) in its recommended layout, run as a user runs it
(``rtneuro run CONFIG --ui``) in a child process at real-time speed, with the
participant display on the band power of channel 0 (31 values per second)
and the dashboard showing the 64 raw channels.

Variants (in this order):

``pages``  the dashboard (64 channels at 1 kHz, 10 s wide) and the
           participant display open in one headless Chromium (Debian's
           ``chromium`` through Playwright) for ``--duration`` seconds:
           decision-to-paint and acquisition-to-paint latency (the run
           report's ``display``: from the time the deciding node published
           the value, and from the acquisition of the chunk, to the
           animation frame that painted it, on the LSL clock through the
           page's clock exchange); the dashboard's frame times (its
           ``requestAnimationFrame`` intervals: 60 frames per second is
           16.7 ms); the supervisor process's CPU (the control server and
           the tap live there) as a fraction of one core over the measured
           window. Targets (issue 16): paint p50 <= 16.7 ms and p99 <=
           33.3 ms; supervisor CPU <= 10 %; the dashboard at 60 frames
           per second.
``loop``   the chain's end-to-end latency at the stimulator (the report's
           ``latency_us``) in runs of ``--duration`` seconds, alternately
           without the pages (``no_ui``: no ``--ui``) and with both pages
           open (``ui``): no_ui, ui, no_ui, ui; the medians of the runs' p50
           are compared. Target: ui / no_ui p50 at most 1.05.
``loop_served`` ``loop`` with ``--ui`` in the second arm but no browser
           (``served``): what serving the pages costs the loop by itself.
``loop_rt`` the same with ``runtime.realtime_priority: 50`` in both arms
           (the graph's processes on SCHED_FIFO, the supervisor and the
           browser not): how a lab machine that runs the pages next to the
           loop should be set up. Skipped (with the reason) where this user
           may not use real-time scheduling.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import pick_variants, run_variants, stats
from benchmarks.control import TARGET_RATIO, ChainRun, _loop_summary, alternate
from benchmarks.latency import WARMUP_S
from rtneuro.runtime.supervisor import machine_info

VARIANTS = ("pages", "loop", "loop_rt", "loop_served")
RT_PRIORITY = 50
LOOP_ORDER = ("no_ui", "ui", "no_ui", "ui")
TARGET_PAINT_P50_MS = 1000 / 60
TARGET_PAINT_P99_MS = 2000 / 60
TARGET_CPU = 0.10

ROOT = Path(__file__).resolve().parent.parent
UI = {"traces": ["src"], "participant": {"stream": "bpow", "channel": "ch00:alpha", "display": "bar", "min": 0.0, "max": 100.0}}


class UiChainRun(ChainRun):
    """The reference chain with (or without) ``--ui``."""

    def __init__(self, duration_s: float, folder: Path, ui: bool, realtime: bool = False) -> None:
        self.ui = ui
        self.realtime = realtime
        super().__init__(duration_s, folder)

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "rtneuro", "run", str(self.config), "--report", str(self.report_path), "--quiet",
                *(["--ui"] if self.ui else [])]

    def _config(self, duration_s: float) -> dict:
        cfg = super()._config(duration_s)
        if self.ui:
            cfg["ui"] = UI
        if self.realtime:
            cfg["runtime"] = {**cfg.get("runtime", {}), "realtime_priority": RT_PRIORITY}
        return cfg


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _open_pages(browser, entry: dict) -> tuple:
    sys.path.insert(0, str(ROOT / "tests"))
    from browser_helpers import new_page

    base, token = entry["api"], entry["api_token"]
    dash = new_page(browser, width=1600, height=1000)
    dash.goto(f"{base}/#token={token}")
    part = new_page(browser, width=800, height=600)
    part.goto(f"{base}/participant#token={token}")
    part.wait_for_function("window.rtParticipant && window.rtParticipant.painted > 3", timeout=60_000)
    return dash, part


def run_pages(duration_s: float) -> dict:
    import tempfile

    sys.path.insert(0, str(ROOT / "tests"))
    from browser_helpers import open_browser

    with tempfile.TemporaryDirectory(prefix="rtn-bench-ui-") as d:
        run = UiChainRun(duration_s + 15.0, Path(d), ui=True)
        try:
            entry = run.entry()
            with open_browser() as browser:
                dash, part = _open_pages(browser, entry)
                time.sleep(3.0)  # the views settle
                t0, c0 = time.monotonic(), _cpu_s(run.proc.pid)
                frames = dash.raf_intervals(frames=int(duration_s * 60))
                cpu = (_cpu_s(run.proc.pid) - c0) / (time.monotonic() - t0)
                errors = list(dash.errors) + list(part.errors)
                run.stop()
                report = run.finish(timeout_s=120.0)
        finally:
            run.kill()
    disp = report.get("display") or {}
    d2p, a2p = disp.get("decision_to_paint_ms") or {}, disp.get("acquisition_to_paint_ms") or {}
    fr = stats(np.asarray(frames) * 1e3)
    fps = 1000.0 / float(np.mean(frames)) if len(frames) else None
    return {"decision_to_paint_ms": d2p, "acquisition_to_paint_ms": a2p, "frame_interval_us": fr, "fps": round(fps, 1) if fps else None,
            "supervisor_cpu": round(cpu, 4), "frames_held": disp.get("frames_held"), "page_errors": errors[:10],
            "targets": {"paint_p50_ms": TARGET_PAINT_P50_MS, "paint_p99_ms": TARGET_PAINT_P99_MS, "cpu": TARGET_CPU, "fps": 60},
            "met": {"paint_p50": bool(d2p.get("p50") is not None and d2p["p50"] <= TARGET_PAINT_P50_MS),
                    "paint_p99": bool(d2p.get("p99") is not None and d2p["p99"] <= TARGET_PAINT_P99_MS),
                    "cpu": cpu <= TARGET_CPU, "fps": bool(fps and fps >= 59.0)}}


def run_loop_once(arm: str, duration_s: float, realtime: bool = False) -> dict:
    import tempfile

    sys.path.insert(0, str(ROOT / "tests"))
    from browser_helpers import open_browser

    with tempfile.TemporaryDirectory(prefix="rtn-bench-ui-") as d:
        run = UiChainRun(duration_s, Path(d), ui=arm in ("ui", "served"), realtime=realtime)
        try:
            if arm == "ui":
                entry = run.entry()
                with open_browser() as browser:
                    _open_pages(browser, entry)
                    report = run.finish(timeout_s=duration_s + WARMUP_S + 120.0)
            else:
                report = run.finish(timeout_s=duration_s + WARMUP_S + 120.0)
        finally:
            run.kill()
    return {"arm": arm, **_loop_summary(report)}


def run_loop(duration_s: float) -> dict:
    """The loop latency without and with the pages open, alternately; medians per arm and their ratio."""
    return alternate(LOOP_ORDER, run_loop_once, duration_s, "ui")


def run_loop_served(duration_s: float) -> dict:
    """The loop latency without ``--ui`` and with it but no page open, alternately."""
    return alternate(("no_ui", "served", "no_ui", "served"), run_loop_once, duration_s, "ui")


def realtime_refused() -> str | None:
    """Why this user may not use SCHED_FIFO (what ``runtime.realtime_priority`` needs), or None."""
    import subprocess

    probe = "import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    return None if out.returncode == 0 else (out.stderr.strip().splitlines() or ["refused"])[-1]


def run_loop_rt(duration_s: float) -> dict:
    """As :func:`run_loop`, with the graph's processes on SCHED_FIFO in both arms."""
    why = realtime_refused()
    if why is not None:
        return {"skipped": f"real-time scheduling is not allowed here ({why})"}
    return alternate(LOOP_ORDER, lambda arm, d: run_loop_once(arm, d, realtime=True), duration_s, "ui")


def run(args: argparse.Namespace) -> int:
    wanted = pick_variants(args.variants, VARIANTS)
    if wanted is None:
        return 2
    out: dict = {"bench": "ui", "machine": machine_info(), "ui": UI}
    runners = {"pages": run_pages, "loop": run_loop, "loop_rt": run_loop_rt, "loop_served": run_loop_served}
    return run_variants("ui", wanted, {n: (lambda f=f: f(args.duration)) for n, f in runners.items()}, out, format_table, args.json)


def _f(x, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def format_table(res: dict) -> str:
    lines = ["| measure | p50 | p99 | n / value | target | met |", "|---|---|---|---|---|---|"]
    pg = res.get("pages")
    if pg is not None and "error" in pg:
        lines.append(f"| pages | | | | | error: {pg['error']} |")
    elif pg is not None:
        d, a, fr = pg["decision_to_paint_ms"], pg["acquisition_to_paint_ms"], pg["frame_interval_us"]
        lines.append(f"| decision -> paint (ms) | {_f(d.get('p50'))} | {_f(d.get('p99'))} | {d.get('n')} | "
                     f"p50 <= 16.7, p99 <= 33.3 | {'yes' if pg['met']['paint_p50'] and pg['met']['paint_p99'] else 'NO'} |")
        lines.append(f"| acquisition -> paint (ms) | {_f(a.get('p50'))} | {_f(a.get('p99'))} | {a.get('n')} | | |")
        lines.append(f"| dashboard frame interval (ms), 64 ch at 1 kHz | {_f((fr.get('p50_us') or 0) / 1e3)} | "
                     f"{_f((fr.get('p99_us') or 0) / 1e3)} | {pg['fps']} fps | 60 fps | {'yes' if pg['met']['fps'] else 'NO'} |")
        lines.append(f"| supervisor CPU (server + tap), fraction of a core | | | {pg['supervisor_cpu']:.3f} | <= 0.10 | "
                     f"{'yes' if pg['met']['cpu'] else 'NO'} |")
    for key, how, test in (("loop", "", "ui"), ("loop_rt", ", graph on SCHED_FIFO", "ui"), ("loop_served", "", "served")):
        lp = res.get(key)
        if lp is not None and ("error" in lp or "skipped" in lp):
            lines.append(f"| {key} | | | | | {'error: ' + lp['error'] if 'error' in lp else lp['skipped']} |")
        elif lp is not None:
            for arm in ("no_ui", test):
                lines.append(f"| loop latency (ms), {'no pages' if arm == 'no_ui' else 'both pages open' if arm == 'ui' else 'pages served, none open'}{how} (median of {lp[arm]['runs']} runs) | "
                             f"{_f((lp[arm]['p50_us'] or 0) / 1e3, 3)} | {_f((lp[arm]['p99_us'] or 0) / 1e3, 3)} | | | |")
            lines.append(f"| loop ratio ui / no_ui{how} | {lp['ratio_p50']} | {lp.get('ratio_p99')} | | p50 <= {TARGET_RATIO} | "
                         f"{'yes' if lp['target_met'] else 'NO'} |")
    return "\n".join(lines)
