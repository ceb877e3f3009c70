"""What the ezmsg peer harnesses share: ending a worker's process group, reading ezmsg's task errors, percentiles.

Imported by ``ezmsg_chain.py`` and ``lsl_chain.py``, which run as scripts
(this folder is on their ``sys.path``).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time

GRACE_S = 5.0  # time given to the worker's process group to exit by itself
TASK_EXCEPTION_MARK = "Exception in Task:"  # ezmsg's log line for a unit error


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to our worker's process group; False if it is empty."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def _end_worker_group(worker: subprocess.Popen, graceful: bool) -> None:
    """Make sure nothing the worker started outlives the run.

    The worker and everything it forks (ezmsg backend processes,
    multiprocessing's resource tracker) share one process group whose id is
    the worker's pid. If ``graceful``, the group first gets a SIGINT, which
    ezmsg handles like Ctrl-C (units shut down, shared memory is released).
    In all cases, whatever is still alive after ``GRACE_S`` is SIGKILLed.
    """
    pgid = worker.pid
    if graceful:
        _signal_group(pgid, signal.SIGINT)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline:
        worker.poll()  # reap the worker so a zombie does not count as alive
        if not _signal_group(pgid, 0):
            break
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)
    worker.wait()


def _task_error_summary(lines: list[str]) -> str:
    """One line from ezmsg's "Exception in Task" log and its traceback."""
    idx = max(i for i, ln in enumerate(lines) if TASK_EXCEPTION_MARK in ln)
    task = lines[idx].split(TASK_EXCEPTION_MARK, 1)[1].strip()
    # The traceback's last line ("ValueError: ...") is neither indented nor
    # prefixed by the logger.
    exc_lines = [ln for ln in lines[idx + 1:]
                 if ln and not ln[0].isspace() and " - pid: " not in ln
                 and not ln.startswith(("Traceback", "During handling", "The above"))]
    cause = exc_lines[-1] if exc_lines else "see stderr"
    return f"exception in ezmsg task {task}: {cause}"


def _percentile(sorted_vals: list[float], q: float) -> float:
    # Linear interpolation, the same as numpy's default.
    if not sorted_vals:
        return float("nan")
    pos = (len(sorted_vals) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)
