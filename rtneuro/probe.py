"""Loop-back latency probe: the true end-to-end latency of a running graph over LSL.

The probe pushes a synthetic stream into an LSL outlet, each chunk's newest
sample stamped with the moment it was pushed; the graph reads it with an
``lsl_inlet`` and publishes what it decides with an ``lsl_outlet``; the probe
reads that output with an inlet of its own and measures, for each chunk it
receives, the LSL clock now minus the timestamp of the newest sample. rtneuro
stamps every output with the acquisition time of the newest input sample it
depends on, so that difference is the whole trip: push, LSL transport, the
graph, the outlet, LSL transport back.

Usage, with a graph running that reads ``rtneuro-probe`` and publishes its
decisions as ``decisions``::

    rtneuro probe --push rtneuro-probe --listen decisions --duration 30

Other tools work the same way as long as their outputs keep the timestamps
of their inputs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
from pathlib import Path

import numpy as np
import pylsl

from .runtime.clock import lsl_clock, sleep_until

__all__ = ["push", "listen", "ProbeOutlet", "main"]


def push(name: str, n_channels: int = 64, sfreq: float = 1000.0, chunk: int = 32, duration_s: float | None = None,
         source_id: str | None = None, seed: int = 0, stop=None) -> int:
    """Push ``chunk``-sample chunks of noise plus a 10 Hz rhythm in real time; returns the chunks pushed.

    Each chunk is pushed when its last sample is due, stamped with the LSL
    clock at that moment (LSL back-stamps the earlier samples at the nominal
    rate). Runs for ``duration_s`` or until ``stop`` (a multiprocessing Event)
    is set.
    """
    info = pylsl.StreamInfo(name, "EEG", n_channels, sfreq, pylsl.cf_float32, source_id or f"rtneuro-probe:{name}")
    chans = info.desc().append_child("channels")
    for i in range(n_channels):
        ch = chans.append_child("channel")
        ch.append_child_value("label", f"P{i:02d}")
        ch.append_child_value("unit", "uV")
        ch.append_child_value("type", "EEG")
    info.desc().append_child("acquisition").append_child_value("manufacturer", "rtneuro probe")
    outlet = pylsl.StreamOutlet(info, chunk_size=chunk, max_buffered=10)
    rng = np.random.default_rng(seed)
    phases = np.linspace(0, np.pi, n_channels)
    t0 = lsl_clock() + 0.05
    k = 0
    end = None if duration_s is None else t0 + duration_s
    while (end is None or lsl_clock() < end) and not (stop is not None and stop.is_set()):
        idx = np.arange(k * chunk, (k + 1) * chunk)[:, None]
        data = (rng.standard_normal((chunk, n_channels)) * 2.0
                + 10.0 * np.sin(2 * np.pi * 10.0 * idx / sfreq + phases)).astype(np.float32)
        due = t0 + ((k + 1) * chunk - 1) / sfreq
        sleep_until(due)
        outlet.push_chunk(data, lsl_clock())
        k += 1
    return k


class ProbeOutlet:
    """:func:`push` in a process of its own (so that measuring never delays it); a context manager."""

    def __init__(self, name: str, **kwargs) -> None:
        self.name = name
        self.kwargs = kwargs
        ctx = mp.get_context("spawn")
        self._stop = ctx.Event()
        self._proc = ctx.Process(target=_push_main, args=(name, kwargs, self._stop), daemon=True)

    def __enter__(self) -> ProbeOutlet:
        self._proc.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(2)


def _push_main(name: str, kwargs: dict, stop) -> None:
    push(name, stop=stop, **kwargs)


def listen(name: str, duration_s: float, warmup_s: float = 2.0, resolve_timeout_s: float = 30.0) -> list[float]:
    """Ages (us) of the newest sample of every chunk received from the stream ``name``.

    The first ``warmup_s`` seconds after the first chunk are not counted.
    """
    found = pylsl.resolve_byprop("name", name, 1, resolve_timeout_s)
    if not found:
        raise RuntimeError(f"the probe found no LSL stream named {name!r} within {resolve_timeout_s:g} s; is the graph running with an lsl_outlet of that name?")
    inlet = pylsl.StreamInlet(found[0], max_buflen=10, processing_flags=pylsl.proc_clocksync)
    inlet.open_stream(resolve_timeout_s)
    ages: list[float] = []
    t_start = None
    end = None
    try:
        while end is None or lsl_clock() < end:
            _, ts = inlet.pull_chunk(timeout=0.5, max_samples=4096, min_samples=1)
            now = lsl_clock()
            if not ts:
                continue
            if t_start is None:
                t_start = now
                end = now + warmup_s + duration_s
            if now - t_start >= warmup_s:
                ages.append((now - ts[-1]) * 1e6)
    finally:
        inlet.close_stream()
    return ages


def summary(values_us: list[float]) -> dict:
    v = np.asarray(values_us, dtype=float)
    if v.size == 0:
        return {"p50_us": None, "p99_us": None, "max_us": None, "n": 0}
    return {"p50_us": round(float(np.median(v)), 1), "p99_us": round(float(np.percentile(v, 99)), 1),
            "max_us": round(float(v.max()), 1), "n": int(v.size)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rtneuro probe", description=__doc__.splitlines()[0])
    ap.add_argument("--push", required=True, help="name of the probe's outlet (the graph's lsl_inlet reads it)")
    ap.add_argument("--listen", required=True, help="name of the graph's lsl_outlet to time")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds measured (after 2 s of warm-up)")
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--sfreq", type=float, default=1000.0)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    with ProbeOutlet(a.push, n_channels=a.channels, sfreq=a.sfreq, chunk=a.chunk):
        try:
            ages = listen(a.listen, a.duration)
        except RuntimeError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 1
    res = summary(ages)
    if res["n"]:
        print(f"loop-back latency (push -> graph -> LSL outlet -> probe): p50 {res['p50_us'] / 1e3:.3f} ms  "
              f"p99 {res['p99_us'] / 1e3:.3f} ms  max {res['max_us'] / 1e3:.3f} ms  (n={res['n']})")
    if a.json:
        Path(a.json).write_text(json.dumps({"probe": {"push": a.push, "listen": a.listen}, **res}, indent=2))
    return 0 if res["n"] else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
