"""Real LSL outlets for the tests, each in a process of its own (as an amplifier would be)."""

from __future__ import annotations

import multiprocessing as mp
import time
import uuid

import numpy as np
import pylsl

import rtneuro  # noqa: F401  (quiet liblsl logs in the child too)
from rtneuro.runtime.clock import lsl_clock, sleep_until


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def counter_outlet(name: str, source_id: str | None, duration_s: float, sfreq: float = 250.0, chunk: int = 10,
                   n_channels: int = 4, start_index: int | None = None, t_origin: float | None = None,
                   stamp_delay_s: float = 0.0, ready=None) -> None:
    """Channel 0 counts samples (the sample index since ``t_origin``); the others are a 10 Hz sine.

    With ``t_origin`` given, sample k is due at ``t_origin + k / sfreq`` (so a
    second outlet started later continues the count by time). Samples are
    stamped ``stamp_delay_s`` in the past (stale data) when asked.
    """
    info = pylsl.StreamInfo(name, "EEG", n_channels, sfreq, pylsl.cf_float32, source_id or "")
    chans = info.desc().append_child("channels")
    for i in range(n_channels):
        ch = chans.append_child("channel")
        ch.append_child_value("label", "counter" if i == 0 else f"C{i}")
        ch.append_child_value("unit", "count" if i == 0 else "uV")
        ch.append_child_value("type", "misc" if i == 0 else "EEG")
    outlet = pylsl.StreamOutlet(info, chunk_size=chunk)
    t0 = lsl_clock() if t_origin is None else t_origin
    k = int(np.ceil((lsl_clock() - t0) * sfreq / chunk)) if start_index is None else start_index // chunk
    end = lsl_clock() + duration_s
    if ready is not None:
        ready.set()
    while lsl_clock() < end:
        idx = np.arange(k * chunk, (k + 1) * chunk)
        data = np.empty((chunk, n_channels), dtype=np.float32)
        data[:, 0] = idx
        data[:, 1:] = 20.0 * np.sin(2 * np.pi * 10.0 * idx / sfreq)[:, None]
        due = t0 + ((k + 1) * chunk - 1) / sfreq
        sleep_until(due)
        outlet.push_chunk(data, due - stamp_delay_s)
        k += 1
    time.sleep(0.2)


def marker_outlet(name: str, markers: list[str], gap_s: float = 0.2, lead_s: float = 2.0, ready=None) -> None:
    """Push ``markers`` one by one, ``gap_s`` apart, after ``lead_s``."""
    info = pylsl.StreamInfo(name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, f"{name}-src")
    outlet = pylsl.StreamOutlet(info)
    if ready is not None:
        ready.set()
    time.sleep(lead_s)
    for m in markers:
        outlet.push_sample([m])
        time.sleep(gap_s)
    time.sleep(1.0)


class OutletProcess:
    """Run one of the outlets above in a spawned process; a context manager."""

    def __init__(self, target, *args, **kwargs) -> None:
        ctx = mp.get_context("spawn")
        self.ready = ctx.Event()
        self.proc = ctx.Process(target=target, args=args, kwargs={**kwargs, "ready": self.ready}, daemon=True)

    def __enter__(self) -> OutletProcess:
        self.proc.start()
        if not self.ready.wait(30):
            raise RuntimeError("the test outlet did not start")
        return self

    def wait(self, timeout: float = 60.0) -> None:
        self.proc.join(timeout)

    def __exit__(self, *exc) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(5)
