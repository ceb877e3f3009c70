"""``rtneuro bench control``: steering the reference chain through its control API, in one run.

The chain is the latency benchmark's reference chain (64 channels at 1 kHz in
32-sample chunks -> band-pass -> band power -> threshold -> stimulator, see
``benchmarks/latency.py``) in its recommended layout (``deploy``: acquisition,
processing and control in one process, the stimulator in its own), run as a
user runs it: ``rtneuro run CONFIG --report REPORT`` in a child process, at
real-time speed, its control API found through the run's registry entry
(``$RTNEURO_RUNTIME_DIR`` points at a private folder, so the benchmark finds
its own run and no other).

Variants (in this order):

``changes``  ``--changes N`` live changes of the threshold controller's
             ``threshold``, alternating between two values that never fire
             (the loop keeps running unchanged), each posted as
             ``POST /api/params`` after a random pause of 0 to 1 chunk (so
             that calls do not lock to the chunk clock). ``apply``: from
             ``time.monotonic()`` just before the call to the ``t_lsl`` of the
             answer's ``applied`` entry (when the service applied it; the LSL
             clock, which is ``CLOCK_MONOTONIC`` on Linux, the same clock);
             ``to_sample``: from the call to the acquisition (LSL) time of the
             data the change first took effect on, the last sample of the
             first chunk computed with it (``t_sample``);
             ``round_trip``: the whole HTTP call. Target (issue 15): "from the
             API call to the sample at which a change takes effect", p99 at
             most one chunk plus 2 ms: ``to_sample``.
``loop``     the chain's end-to-end latency at the stimulator (the run
             report's ``latency_us``) in runs of ``--duration`` seconds
             (plus 2 s warm-up), alternately without any API client
             (``no_api``) and with ``GET /api/status`` polled at 10 Hz and a
             WebSocket client attached reading every event (``api``):
             no_api, api, no_api, api. The medians of the runs' p50 and p99
             are compared. Target: api / no_api p50 at most 1.05.

The clients run in this process (threads), the control server in the run's
supervisor process, the chain in its own processes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from benchmarks.common import pick_variants, save_json, stats
from benchmarks.latency import WARMUP_S, chain_config
from rtneuro.control.client import Client
from rtneuro.errors import RtneuroError
from rtneuro.runtime.clock import lsl_clock
from rtneuro.runtime.supervisor import machine_info

VARIANTS = ("changes", "loop")
LAYOUT = "deploy"
SFREQ, CHUNK = 1000.0, 32
#: The two threshold values the changes alternate between: both far above any band power, so never crossed.
THRESHOLDS = (1e12, 2e12)
PARAM = "ctl.threshold"
POLL_HZ = 10.0
#: Runs of the loop variant, alternately without and with API clients.
LOOP_ORDER = ("no_api", "api", "no_api", "api")
TARGET_RATIO = 1.05
TARGET_MARGIN_US = 2000.0
ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0


class ChainRun:
    """The reference chain run by ``rtneuro run`` in a child process, with its control API's registry entry.

    Parameters
    ----------
    duration_s : float
        Seconds of signal after the warm-up; the run ends with its data.
    folder : Path
        Empty folder for the graph, the report and the runtime folder.
    """

    def __init__(self, duration_s: float, folder: Path) -> None:
        self.folder = folder
        self.config = folder / "chain.yaml"
        self.config.write_text(yaml.safe_dump(self._config(duration_s)))
        self.report_path = folder / "report.json"
        self.runtime = folder / "runtime"
        self.runtime.mkdir(mode=0o700)
        self.log = folder / "run.log"
        env = {**os.environ, "RTNEURO_RUNTIME_DIR": str(self.runtime)}
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(self._command(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def _config(self, duration_s: float) -> dict:
        cfg = chain_config(LAYOUT, duration_s, sfreq=SFREQ, chunk=CHUNK)
        cfg["name"] = "bench-control"
        return cfg

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "rtneuro", "run", str(self.config), "--report", str(self.report_path), "--quiet"]

    def entry(self, timeout_s: float = START_TIMEOUT_S) -> dict:
        """The run's registry entry once it names the control API."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RtneuroError(f"rtneuro run exited with code {self.proc.returncode} before its control API "
                                   f"was listed: {self._stderr_tail()}")
            for f in self.runtime.glob("rtn-*.json"):
                try:
                    entry = json.loads(f.read_text())
                except (OSError, ValueError):
                    continue  # being written
                if entry.get("api") and entry.get("api_token"):
                    return entry
            time.sleep(0.02)
        raise RtneuroError(f"rtneuro run listed no control API within {timeout_s:g} s; is control.enabled false?")

    def client(self, entry: dict) -> Client:
        return Client(entry["api"], entry["api_token"], verify=entry.get("api_cafile") or True)

    def wait_running(self, client: Client, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until the run's state is ``running`` (every process started)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if client.status()["state"] == "running":
                    return
            except RtneuroError:
                pass  # 503 while starting
            if self.proc.poll() is not None:
                raise RtneuroError(f"rtneuro run exited with code {self.proc.returncode} while starting: "
                                   f"{self._stderr_tail()}")
            time.sleep(0.05)
        raise RtneuroError(f"the run was not running within {timeout_s:g} s of its start")

    def stop(self) -> None:
        """Stop the run as Ctrl-C does (it drains and writes its report)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def finish(self, timeout_s: float) -> dict:
        """Wait for the run to end; its report."""
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            self.proc.wait(timeout=30)
        if not self.report_path.exists():
            raise RtneuroError(f"rtneuro run (exit code {self.proc.returncode}) wrote no report: {self._stderr_tail()}")
        report: dict = json.loads(self.report_path.read_text())
        return report

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def _stderr_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return lines[-1] if lines else "(no message)"


def _loop_summary(report: dict) -> dict:
    lat = report["latency_us"]
    gaps = sum(s.get("gaps", 0) for s in report["streams"].values())
    out = {"p50_us": lat["p50"], "p99_us": lat["p99"], "max_us": lat["max"], "n": lat["n"], "gaps": gaps,
           "exit_code": report["exit_code"], "wall_s": report["wall_s"]}
    if report["errors"]:
        out["errors"] = report["errors"]
    return out


def run_changes(n: int, seed: int = 1) -> dict:
    """Time ``n`` live changes of the threshold through ``POST /api/params`` on a running chain."""
    chunk_s = CHUNK / SFREQ
    # Room for n calls of at most a chunk's pause plus two chunks each; the run is stopped when they are done.
    duration_s = 30.0 + n * 4 * chunk_s
    rng = random.Random(seed)
    apply_us: list[float] = []
    sample_us: list[float] = []
    rtt_us: list[float] = []
    pending, indices = 0, []
    calls: dict[int, tuple[float, float, float]] = {}
    legs: dict[str, list[float]] = {"call_to_supervisor": [], "supervisor_to_service": [], "service_to_applied": [],
                                    "applied_to_answer": []}
    with tempfile.TemporaryDirectory(prefix="rtn-bench-") as d:
        run = ChainRun(duration_s, Path(d))
        try:
            entry = run.entry()
            with run.client(entry) as api:
                run.wait_running(api)
                time.sleep(WARMUP_S)
                for i in range(n):
                    time.sleep(rng.uniform(0.0, chunk_s))
                    t_call = lsl_clock()
                    ack = api.set({PARAM: THRESHOLDS[(i + 1) % 2]})
                    t_back = lsl_clock()
                    rtt_us.append((t_back - t_call) * 1e6)
                    applied = ack.get("applied", {}).get("ctl")
                    if ack.get("status") != "applied" or not applied:
                        pending += 1
                        continue
                    apply_us.append((applied["t_lsl"] - t_call) * 1e6)
                    if isinstance(applied.get("t_sample"), (int, float)):
                        sample_us.append((applied["t_sample"] - t_call) * 1e6)
                    indices.append(applied.get("index"))
                    calls[int(ack["id"])] = (t_call, applied["t_lsl"], t_back, applied.get("t_received"))
                # where the time goes: the supervisor takes the request at its record's t_lsl
                for rec in api.changes(0):
                    if rec.get("id") in calls:
                        t_call, t_applied, t_back, t_received = calls[rec["id"]]
                        legs["call_to_supervisor"].append((rec["t_lsl"] - t_call) * 1e6)
                        if isinstance(t_received, (int, float)):  # the node waits for its next chunk in between
                            legs["supervisor_to_service"].append((t_received - rec["t_lsl"]) * 1e6)
                            legs["service_to_applied"].append((t_applied - t_received) * 1e6)
                        legs["applied_to_answer"].append((t_back - t_applied) * 1e6)
            run.stop()
            report = run.finish(timeout_s=60.0)
        finally:
            run.kill()
    target = chunk_s * 1e6 + TARGET_MARGIN_US
    apply = stats(apply_us)
    to_sample = stats(sample_us)
    out = {"n": n, "pending": pending, "chunk_us": round(chunk_s * 1e6, 1), "target_p99_us": round(target, 1),
           "target_met": to_sample["p99_us"] is not None and to_sample["p99_us"] <= target and pending == 0,
           "to_sample": to_sample, "apply": apply, "round_trip": stats(rtt_us), "legs": {k: stats(v) for k, v in legs.items()},
           "indices_increasing": all(a < b for a, b in zip(indices, indices[1:], strict=False) if a is not None and b is not None),
           "loop_during": _loop_summary(report),
           "control_report": {k: v for k, v in report.get("control", {}).items() if not isinstance(v, (list, dict))}}
    return out


class ApiLoad:
    """What an operator's tools put on a run: ``GET /api/status`` at 10 Hz and a WebSocket client reading every event."""

    def __init__(self, run: ChainRun, entry: dict) -> None:
        self.run, self.entry = run, entry
        self.stopped = threading.Event()
        self.poll_us: list[float] = []
        self.poll_errors: list[str] = []
        self.events: dict[str, int] = {}
        self.ws_error: str | None = None
        self._threads = [threading.Thread(target=self._poll, name="bench-poll", daemon=True),
                         threading.Thread(target=self._listen, name="bench-ws", daemon=True)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _poll(self) -> None:
        period = 1.0 / POLL_HZ
        with self.run.client(self.entry) as api:
            due = time.monotonic()
            while not self.stopped.is_set() and self.run.proc.poll() is None:
                t0 = time.monotonic()
                try:
                    api.status()
                    self.poll_us.append((time.monotonic() - t0) * 1e6)
                except RtneuroError as exc:  # 503 while starting or stopping; the run's end
                    self.poll_errors.append(str(exc))
                due += period
                self.stopped.wait(max(0.0, due - time.monotonic()))

    def _listen(self) -> None:
        with self.run.client(self.entry) as api:
            try:
                for event in api.events():
                    kind = str(event.get("type"))
                    self.events[kind] = self.events.get(kind, 0) + 1
                    if kind == "end":
                        break
            except RtneuroError as exc:
                self.ws_error = str(exc)

    def join(self, timeout_s: float = 10.0) -> dict:
        self.stopped.set()
        for t in self._threads:
            t.join(timeout_s)
        out = {"polls": len(self.poll_us), "poll_round_trip": stats(self.poll_us), "poll_errors": len(self.poll_errors),
               "ws_events": dict(sorted(self.events.items()))}
        if self.ws_error:
            out["ws_error"] = self.ws_error
        return out


def run_loop_once(arm: str, duration_s: float) -> dict:
    """One run of the chain of ``duration_s`` seconds (plus warm-up), with API clients when ``arm`` is ``"api"``."""
    with tempfile.TemporaryDirectory(prefix="rtn-bench-") as d:
        run = ChainRun(duration_s, Path(d))
        try:
            load = None
            if arm == "api":
                load = ApiLoad(run, run.entry())
                load.start()
            report = run.finish(timeout_s=duration_s + WARMUP_S + 120.0)
        finally:
            run.kill()
        out = {"arm": arm, **_loop_summary(report)}
        if load is not None:
            out["clients"] = load.join()
    return out


def alternate(order: tuple[str, ...], once: Callable[[str, float], dict], duration_s: float, tag: str) -> dict:
    """Runs of ``once(arm, duration_s)`` in ``order`` (the first arm is the baseline, the second the one compared);
    the medians of the runs' p50 and p99 per arm and their ratios."""
    runs = []
    for i, arm in enumerate(order):
        print(f"[bench {tag}] loop run {i + 1}/{len(order)} ({arm}, {duration_s:g} s + {WARMUP_S:g} s warm-up) ...",
              file=sys.stderr, flush=True)
        res = once(arm, duration_s)
        print(f"[bench {tag}]   p50 {res['p50_us']} us  p99 {res['p99_us']} us  n={res['n']}"
              + (f"  polls {res['clients']['polls']}, events {sum(res['clients']['ws_events'].values())}"
                 if "clients" in res else ""), file=sys.stderr, flush=True)
        runs.append(res)
    arms: dict[str, dict] = {}
    for arm in dict.fromkeys(order):
        mine = [r for r in runs if r["arm"] == arm and r["p50_us"] is not None]
        arms[arm] = {"p50_us": statistics.median(r["p50_us"] for r in mine) if mine else None,
                     "p99_us": statistics.median(r["p99_us"] for r in mine) if mine else None,
                     "runs": len(mine)}
    base, test = list(dict.fromkeys(order))[:2]
    a, b = arms[base]["p50_us"], arms[test]["p50_us"]
    ratio = round(b / a, 3) if a and b else None
    ratio99 = (round(arms[test]["p99_us"] / arms[base]["p99_us"], 3)
               if arms[test]["p99_us"] and arms[base]["p99_us"] else None)
    return {"duration_s": duration_s, "order": list(order), "runs": runs, **arms, "ratio_p50": ratio,
            "ratio_p99": ratio99, "target_ratio_p50": TARGET_RATIO,
            "target_met": ratio is not None and ratio <= TARGET_RATIO}


def run_loop(duration_s: float) -> dict:
    """The loop latency without and with API clients, alternately; medians per arm and their ratio."""
    return alternate(LOOP_ORDER, run_loop_once, duration_s, "control")


def run(args: argparse.Namespace) -> int:
    wanted = pick_variants(args.variants, VARIANTS)
    if wanted is None:
        return 2
    n = int(getattr(args, "changes", 200))
    if n < 1 or args.duration <= 0:
        print(f"--changes {n} and --duration {args.duration:g} must be positive", file=sys.stderr)
        return 2
    out: dict = {"bench": "control", "machine": machine_info(), "layout": LAYOUT, "sfreq": SFREQ, "chunk": CHUNK,
                 "chunk_ms": CHUNK / SFREQ * 1e3, "warmup_s": WARMUP_S, "param": PARAM, "values": list(THRESHOLDS)}
    t_all = time.monotonic()
    for name in wanted:
        t0 = time.monotonic()
        try:
            if name == "changes":
                print(f"[bench control] changes: {n} changes of {PARAM} ...", file=sys.stderr, flush=True)
                res = run_changes(n)
            else:
                res = run_loop(args.duration)
        except Exception as exc:  # a failing variant is reported, never dropped
            res = {"error": f"{type(exc).__name__}: {exc}"}
        res["wall_s"] = round(time.monotonic() - t0, 1)
        out[name] = res
    out["wall_s"] = round(time.monotonic() - t_all, 1)
    print(format_table(out))
    save_json(out, args.json)
    return 1 if any("error" in out.get(name, {}) for name in wanted) else 0


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1e3:.2f}"


def format_table(res: dict) -> str:
    lines = ["| measure | p50 (ms) | p99 (ms) | max (ms) | n | target | met |", "|---|---|---|---|---|---|---|"]
    ch = res.get("changes")
    if ch is not None and "error" in ch:
        lines.append(f"| changes | | | | | | error: {ch['error']} |")
    elif ch is not None:
        a, r, ts = ch["apply"], ch["round_trip"], ch["to_sample"]
        lines.append(f"| API call -> sample the change takes effect on | {_ms(ts['p50_us'])} | {_ms(ts['p99_us'])} | {_ms(ts['max_us'])} | "
                     f"{ts['n']} | p99 <= {_ms(ch['target_p99_us'])} (1 chunk + 2 ms) | {'yes' if ch['target_met'] else 'NO'} |")
        lines.append(f"| API call -> change applied (node) | {_ms(a['p50_us'])} | {_ms(a['p99_us'])} | {_ms(a['max_us'])} | {a['n']} | | |")
        lines.append(f"| API call round trip | {_ms(r['p50_us'])} | {_ms(r['p99_us'])} | {_ms(r['max_us'])} | {r['n']} | | |")
    lp = res.get("loop")
    if lp is not None and "error" in lp:
        lines.append(f"| loop | | | | | | error: {lp['error']} |")
    elif lp is not None:
        for arm in ("no_api", "api"):
            n = sum(r["n"] for r in lp["runs"] if r["arm"] == arm)
            label = "loop, no API client" if arm == "no_api" else "loop, status 10 Hz + WebSocket"
            lines.append(f"| {label} (median of {lp[arm]['runs']} runs) | {_ms(lp[arm]['p50_us'])} | "
                         f"{_ms(lp[arm]['p99_us'])} | | {n} | | |")
        lines.append(f"| loop ratio api / no_api | {lp['ratio_p50']} | {lp['ratio_p99']} | | | p50 <= {TARGET_RATIO} | "
                     f"{'yes' if lp['target_met'] else 'NO'} |")
    lines.append(f"\nchunk {res['chunk_ms']:g} ms ({res['chunk']} samples at {res['sfreq']:g} Hz), layout {res['layout']}")
    return "\n".join(lines)
