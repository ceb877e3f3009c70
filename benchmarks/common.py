"""What every benchmark shares: latency statistics, CPU-time measurement and the processes of a run (Linux /proc)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["stats", "core_fraction", "pick_variants", "run_variants", "proc_status_kb", "processes_below"]


def pick_variants(requested: str | None, known: tuple[str, ...]) -> tuple[str, ...] | None:
    """The variants named in ``--variants a,b`` (all when None); None, with a message, if one is unknown."""
    names = known if not requested else tuple(v.strip() for v in requested.split(",") if v.strip())
    unknown = [v for v in names if v not in known]
    if unknown:
        print(f"unknown variants {unknown}; choose from {list(known)}", file=sys.stderr)
        return None
    return names


def run_variants(bench: str, wanted: tuple[str, ...], runners: dict[str, Callable[[], dict]], out: dict,
                 format_table: Callable[[dict], str], json_path: str | None) -> int:
    """Run each wanted variant into ``out[name]`` (a failure is reported as its ``error``, never dropped), with its
    wall time; print the table, save the JSON; 1 when a variant failed."""
    for name in wanted:
        t0 = time.monotonic()
        print(f"[bench {bench}] {name} ...", file=sys.stderr, flush=True)
        try:
            res = runners[name]()
        except Exception as exc:  # a failing variant is reported, never dropped
            res = {"error": f"{type(exc).__name__}: {exc}"}
        res["wall_s"] = round(time.monotonic() - t0, 1)
        out[name] = res
    print(format_table(out))
    save_json(out, json_path)
    return 1 if any("error" in out.get(n, {}) for n in wanted) else 0


def save_json(out: dict, path: str | None) -> None:
    """Write a benchmark's results (the format of every ``rtneuro bench``) to ``path``, if given."""
    if path:
        Path(path).write_text(json.dumps(out, indent=2))
        print(f"wrote {path}", file=sys.stderr)


def stats(values_us, **extra) -> dict:
    """Median, 99th percentile, maximum and mean of latencies in microseconds."""
    v = np.asarray(values_us, dtype=float)
    if v.size == 0:
        return {"p50_us": None, "p99_us": None, "max_us": None, "n": 0, **extra}
    return {"p50_us": round(float(np.median(v)), 1), "p99_us": round(float(np.percentile(v, 99)), 1),
            "max_us": round(float(v.max()), 1), "mean_us": round(float(v.mean()), 1), "n": int(v.size), **extra}


def core_fraction(step: Callable[[int], None], n_steps: int, signal_s_per_step: float, repeats: int = 3) -> dict:
    """CPU seconds spent per second of signal, streaming ``n_steps`` chunks through ``step(i)``.

    ``step(i)`` processes chunk ``i``. The thread's CPU time (not the wall
    clock) is measured, so that time the scheduler gives other processes is
    not counted; the best of ``repeats`` passes is reported with all of them, and
    the per-chunk CPU times of that pass give the p50/p99 of one chunk.
    """
    fractions: list[float] = []
    per_chunk = np.empty(0)
    for _ in range(repeats):
        t_all = time.thread_time()
        times = np.empty(n_steps)
        for i in range(n_steps):
            t0 = time.thread_time_ns()
            step(i)
            times[i] = (time.thread_time_ns() - t0) / 1e3
        used = time.thread_time() - t_all
        fraction = used / (n_steps * signal_s_per_step)
        if not fractions or fraction < min(fractions):
            per_chunk = times
        fractions.append(fraction)
    best = min(fractions)
    out = stats(per_chunk)
    out.update({"core_fraction": round(best, 5), "core_fraction_runs": [round(f, 5) for f in fractions],
                "signal_s": round(n_steps * signal_s_per_step, 3)})
    return out


def proc_status_kb(pid: int, field: str) -> int | None:
    """A kB field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``...); None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def processes_below(pid: int, *, depth: int | None = None) -> dict[int, str]:
    """Live processes below ``pid`` (children only with ``depth=1``), each with its command line."""
    children: dict[int, list[tuple[int, str]]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append((int(d.name), cmd))
    out: dict[int, str] = {}
    level, steps = [pid], 0
    while level and (depth is None or steps < depth):
        below = [kid for parent in level for kid in children.get(parent, [])]
        out.update(below)
        level, steps = [c for c, _ in below], steps + 1
    return out
