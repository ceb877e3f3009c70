"""``rtneuro bench safety --variants hostile``: the reference chain under attack.

The reference chain of ``rtneuro bench latency`` (64 channels at 1 kHz,
band-pass, band power, threshold, and a stimulator in a ``stimulate``
process of its own, the recommended layout) runs twice, each time with an
:class:`benchmarks.attacker.Attacker` process sending 10,000 messages per
second at its command, data and control sockets:

``control``   every message well formed, on a topic nobody reads
``hostile``   random, truncated, huge-shape and oversized messages, forged
              ends of stream and commands, fresh identities, subscription
              floods and malformed control messages

The attacker is the same process, sending as many messages from the same
sockets in both runs, so its own CPU use weighs the same on the graph; the
latency ratio is the cost of the hostility alone. Figures:

``crashes``        services that exited abnormally or were restarted
``rss_growth_mb``  the largest growth of a service's resident memory from
                   the start of the attack to its end
``violations``     delivered pulses beyond the stimulator's profile, judged
                   on the driver's pulse log by
                   :func:`rtneuro.safety.delivered_violations`
``p99_ratio``      loop latency p99 under attack over the control run's
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import proc_status_kb, stats
from benchmarks.latency import WARMUP_S, chain_config

ROOT = Path(__file__).resolve().parent.parent
MAX_MESSAGE_BYTES = 1 << 20  # the graph's limit: oversized messages stay cheap to send


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MB (None when it is gone)."""
    kb = proc_status_kb(pid, "VmRSS")
    return None if kb is None else kb / 1024.0


def _service_pids(sup) -> dict[str, int]:
    return {name: p.current.popen.pid for name, p in sup.procs.items() if p.incs and p.current.popen is not None}


def run_attacked(mode: str, attack_s: float, rate_hz: float, seed: int = 0) -> dict:
    """One run of the reference chain with the attacker in ``mode`` for ``attack_s`` seconds."""
    from rtneuro.config import load_graph
    from rtneuro.hardware.simulated import read_pulse_log
    from rtneuro.runtime.supervisor import Supervisor
    from rtneuro.safety import delivered_violations, load_profile

    with tempfile.TemporaryDirectory(prefix="rtn-bench-") as d:
        graph = chain_config("deploy", attack_s + 2.0)
        graph["name"] = f"bench-hostile-{mode}"
        graph["transport"]["max_message_bytes"] = MAX_MESSAGE_BYTES
        pulses = Path(d) / "pulses.csv"
        stim = next(n for n in graph["nodes"] if n["type"] == "stimulator")
        stim["params"]["driver_args"] = {"pulse_log_path": str(pulses)}
        # the loop stimulates: a level, then a heartbeat every 32 ms, against the profile's rate limit
        ctl = next(n for n in graph["nodes"] if n["type"] == "threshold")
        ctl["params"]["threshold"] = -1e12
        path = Path(d) / "chain.yaml"
        import yaml

        path.write_text(yaml.safe_dump(graph))
        sup = Supervisor(load_graph(path), quiet=True, out=open("/dev/null", "w"))  # noqa: SIM115
        box: dict = {}
        th = threading.Thread(target=lambda: box.setdefault("code", sup.run()), daemon=True)
        th.start()
        t_end = time.monotonic() + 120
        while getattr(sup, "origin", None) is None and th.is_alive() and time.monotonic() < t_end:
            time.sleep(0.05)
        time.sleep(WARMUP_S)
        pids = _service_pids(sup)
        rss0 = {n: rss_mb(p) for n, p in pids.items()}
        atk_json = Path(d) / "attacker.json"
        atk = subprocess.run([sys.executable, "-m", "benchmarks.attacker", str(sup.run_dir), "--duration", str(attack_s),
                              "--rate", str(rate_hz), "--mode", mode, "--seed", str(seed),
                              "--max-message-bytes", str(MAX_MESSAGE_BYTES), "--json", str(atk_json)],
                             cwd=ROOT, capture_output=True, text=True, timeout=attack_s + 120)
        rss1 = {n: rss_mb(p) for n, p in pids.items()}
        th.join(120)
        rep = sup.report
        attack = json.loads(atk_json.read_text()) if atk_json.exists() else {"error": atk.stderr.strip()[-300:]}
        profile = load_profile("simulated")
        log = read_pulse_log(pulses) if pulses.exists() else np.empty((0, 4))
        violations = delivered_violations(profile, log)
    values = sup.e2e._values
    skip = int(WARMUP_S * 31.25)
    window = values[skip: skip + int(attack_s * 31.25)]
    crashes = sum(1 for p in rep["processes"].values() if p["restarts"] or any(c != 0 for c in p["exit_codes"]))
    growth = [rss1[n] - rss0[n] for n in pids if rss0.get(n) is not None and rss1.get(n) is not None]
    return stats(window, mode=mode, exit_code=box.get("code"), crashes=crashes,
                 rss_mb_start={n: round(v, 1) for n, v in rss0.items() if v is not None},
                 rss_growth_mb=round(max(growth), 2) if growth else None, violations=len(violations),
                 violation_lines=violations[:5], pulses=len(log), attacker=attack,
                 rejections=rep.get("invalid_messages", {}), log_lines=rep.get("log_totals", {}),
                 errors=rep.get("errors", [])[:5])


def run_hostile(attack_s: float = 10.0, rate_hz: float = 10_000.0) -> dict:
    """The control run and the hostile run, in this order, and the issue's four figures."""
    control = run_attacked("control", attack_s, rate_hz)
    hostile = run_attacked("hostile", attack_s, rate_hz)
    ratio = (hostile["p99_us"] / control["p99_us"]) if hostile.get("p99_us") and control.get("p99_us") else None
    return {"crashes": hostile["crashes"], "rss_growth_mb": hostile["rss_growth_mb"], "violations": hostile["violations"],
            "p99_ratio": None if ratio is None else round(ratio, 3), "rate_hz": rate_hz, "attack_s": attack_s,
            "targets": {"crashes": 0, "rss_growth_mb": 20.0, "violations": 0, "p99_ratio": 1.2},
            "control": control, "hostile": hostile}
