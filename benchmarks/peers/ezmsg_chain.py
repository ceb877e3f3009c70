"""Latency peer: the rtneuro reference chain built with ezmsg + ezmsg-sigproc.

What is measured
----------------
End-to-end latency of a closed-loop chain of five ezmsg Units:

    SyntheticSource  64 ch, 1000 Hz, 32-sample chunks, paced in real time
      -> ButterworthFilter   stock ezmsg-sigproc unit, band-pass 1-40 Hz,
                             order 4, SOS, causal and stateful
      -> BandPowerSync       ezmsg-sigproc BandPowerTransformer: 5 bands (mean
                             of the power spectrum over each band) from a
                             256-sample Hann window advancing by 32 samples,
                             so one (1, 5, 64) output per input chunk
      -> AlphaThreshold      alpha power of channel 0 vs. a fixed value
      -> LatencySink         records the latency

For each chunk, the source sleeps until the chunk's last sample is due, at
``t_acq = t_start + (first_index + chunk) / sfreq`` on ``time.monotonic()``.
That is the scheduled acquisition time of the last sample, and it is the
stamp that gets published (the acquisition time of sample k is
t_start + (k + 1) / sfreq). When the decision for the chunk reaches the sink,
it records ``latency_us = (time.monotonic() - t_acq) * 1e6``. The first
``WARMUP_S`` seconds of chunks are discarded, so that first-call costs
(filter design, FFT planning, SHM setup) are not counted. The rtneuro side
uses the same clock (``time.monotonic()``, CLOCK_MONOTONIC, as
pylsl.local_clock does) and the same pacing: time.sleep until 0.2 ms before the
due time, then a spin-wait.

How t_acq travels: the source stores it in ``AxisArray.attrs["t_acq"]``
together with the chunk's sequence number (``attrs["seq"]``). Both the
Butterworth transformer and the band-power transformer copy ``attrs`` onto
their outputs (through ``replace``), and ``attrs`` is pickled with the message
when it crosses a process boundary. The band-power output's ``attrs``
therefore hold the stamp of the chunk that completed the window. The
threshold unit copies the stamp into its small ``Decision`` message. The
time axis is also correct (its offset is the acquisition time of the chunk's
first sample), but it is not used as the carrier: the band-power time axis
gives the *start* of the 256-sample window, not the newest sample.

Modes
-----
``--mode inproc``    every unit in one process, which is ezmsg's default. Messages
                     use ezmsg's in-process fast path, passed by reference.
``--mode multiproc`` each of the five units in its own process, via
                     ``Collection.process_components()``. ezmsg runs the first
                     group (the source) in the launching process and forks
                     one ``BackendProcess`` for each of the other four
                     (multiprocessing's default start method on Linux, fork).
                     Messages go over ezmsg's default transport, shared memory.

Workaround (documented, not hidden)
-----------------------------------
In this version pair (ezmsg 3.9.0 / ezmsg-sigproc 3.6.0), the stock
``ezmsg.sigproc.bandpower.BandPower`` *unit* fails on every message with
"'ModifyAxisTransformer' object has no attribute 'asend'". The unit awaits
``processor.__acall__``, and ``CompositeProcessor._aprocess`` calls ``.asend()``
on each sub-processor. The spectrogram's ``ModifyAxisTransformer`` comes from
ezmsg.util (part of the ezmsg 3.9.0 package) and has no ``asend``. The *same*
``BandPowerTransformer`` works when called synchronously, because the sync path
uses ``__call__``. ``BandPowerSync`` below is therefore a minimal ezmsg Unit of
our own. It owns a stock ``BandPowerTransformer`` and calls it synchronously
on each message. The DSP is the library's own; only the async glue is
replaced. The stock ``ButterworthFilter`` unit works and is used unchanged.

Process hygiene
---------------
The command-line process is a stdlib-only *driver*. It re-runs this file as a
*worker* in a new session (process group), and the worker runs the ezmsg
graph. The worker starts its own GraphServer, a thread inside the worker, on a
free port. That keeps the run isolated from any other ezmsg graph on the
machine. The sink ends the run by raising ``ez.NormalTermination``, and ezmsg
then shuts down every process and unit. If instead a unit raises (ezmsg only
logs that and the chain stalls), the driver sees it in the worker's stderr
and fails fast. A hard wall-clock guard (warm-up + duration + 60 s) makes a
hang impossible. The driver then ends the worker's process group by its id:
first SIGINT, which ezmsg treats as a graceful Ctrl-C and releases its shared
memory, then SIGKILL for anything still alive. Even after a normal run it
SIGKILLs whatever is left after a grace period, so no forked backend process
can outlive the run. In every case the driver writes the JSON, with an
``error`` string on failure, and exits non-zero on failure.

Usage::

    python benchmarks/peers/ezmsg_chain.py --mode inproc|multiproc \
        --duration SECONDS --json OUT.json [--n-ch 64] [--sfreq 1000] [--chunk 32]
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

from peer_common import (  # this folder
    TASK_EXCEPTION_MARK,
    _end_worker_group,
    _percentile,
    _task_error_summary,
)

# --------------------------------------------------------------------------
# Constants shared by driver and worker
# --------------------------------------------------------------------------

WARMUP_S = 2.0  # latencies of the first 2 s of chunks are discarded
HARD_GUARD_S = 60.0  # driver kills everything after warm-up + duration + this
SPIN_S = 0.0002  # time.sleep until 0.2 ms before due, then spin (as rtneuro)
# In inproc mode the source shares its asyncio loop with the other units. So it
# first waits with asyncio.sleep, which leaves the loop free for the downstream
# units, until ASYNC_MARGIN_S before the due time. Only then does it do the
# blocking time.sleep + spin described above. On this VM asyncio.sleep wakes
# up about 1 ms late (epoll rounds its timeout up to whole milliseconds; we
# measured 0.4-1.6 ms). A 3 ms margin therefore almost always leaves the final
# approach to time.sleep + spin, and the publish moment lands within a few us
# of the due time (p50 2-3 us). The loop is blocked for at most ~3 ms per
# 32 ms period, long after the previous chunk has left the chain.
ASYNC_MARGIN_S = 0.003
START_LEAD_S = 0.1  # t_start is this far after the source starts

BANDS_HZ = [(1.0, 4.0), (4.0, 8.0), (8.0, 12.0), (13.0, 30.0), (30.0, 45.0)]
BAND_NAMES = ["delta", "theta", "alpha", "beta", "gamma"]
ALPHA_BAND_INDEX = 2
WINDOW_SAMPLES = 256
THRESHOLD_CHANNEL = 0
ALPHA_THRESHOLD = 1.0  # fixed decision threshold on channel-0 alpha power

# Synthetic signal: unit-variance white noise, a 10 Hz (alpha) sine, and a
# large DC offset. The DC offset is there so the sanity summary shows the
# band-pass really ran: without the 1 Hz high-pass, the Hann window leaks the
# DC into the delta band (the 3.9 Hz bin), and mean channel-0 delta power would
# be ~6.6e3 instead of ~0.35 (checked offline with the same transformers).
NOISE_STD = 1.0
ALPHA_AMP = 5.0
ALPHA_HZ = 10.0
DC_OFFSET = 100.0


# ==========================================================================
# Driver (standard library only, so that it can always write the JSON)
# ==========================================================================


def _versions() -> dict:
    out = {}
    for dist in ("ezmsg", "ezmsg-sigproc"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=("inproc", "multiproc"), required=True)
    p.add_argument("--duration", type=float, required=True,
                   help=f"seconds to record, after the {WARMUP_S:.0f} s warm-up")
    p.add_argument("--json", required=True, help="output JSON path")
    p.add_argument("--n-ch", type=int, default=64)
    p.add_argument("--sfreq", type=float, default=1000.0)
    p.add_argument("--chunk", type=int, default=32)
    # Internal: set by the driver when it re-runs this file as the worker.
    p.add_argument("--_worker-result", dest="worker_result", default=None,
                   help=argparse.SUPPRESS)
    return p.parse_args(argv)


def driver_main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    report = {
        "peer": "ezmsg",
        "mode": args.mode,
        "versions": _versions(),
        "n_ch": args.n_ch,
        "sfreq": args.sfreq,
        "chunk": args.chunk,
        "latencies_us": [],
        "n": 0,
        "error": None,
    }
    worker: subprocess.Popen | None = None

    def on_signal(signum, _frame):
        # If the harness stops us, take the worker group down with us.
        if worker is not None:
            _end_worker_group(worker, graceful=True)
        raise SystemExit(f"driver received signal {signum}")

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if None in report["versions"].values():
            raise RuntimeError(f"peer not installed: versions={report['versions']}")
        if args.duration <= 0 or args.n_ch <= 0 or args.sfreq <= 0 or args.chunk <= 0:
            raise ValueError("--duration, --n-ch, --sfreq and --chunk must be positive")
        if args.chunk > WINDOW_SAMPLES:
            raise ValueError(f"--chunk must be <= the {WINDOW_SAMPLES}-sample window")

        with tempfile.TemporaryDirectory(prefix="ezmsg_chain_") as tmp:
            result_path = os.path.join(tmp, "result.json")
            cmd = [
                sys.executable, os.path.abspath(__file__),
                "--mode", args.mode, "--duration", repr(args.duration),
                "--json", args.json, "--n-ch", str(args.n_ch),
                "--sfreq", repr(args.sfreq), "--chunk", str(args.chunk),
                "--_worker-result", result_path,
            ]
            # New session => the worker and everything ezmsg forks share one
            # process group (pgid == worker.pid) that we can kill by id.
            worker = subprocess.Popen(cmd, start_new_session=True,
                                      stdin=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True)
            tail: collections.deque[str] = collections.deque(maxlen=200)
            # ezmsg logs an exception raised inside a unit's task ("Exception in
            # Task: <address>" plus the traceback) and keeps running, so the
            # chain would just stall. Spot that line and fail fast instead of
            # waiting for the hard guard.
            task_failed = threading.Event()

            def pump() -> None:  # forward worker stderr, keep the tail for errors
                for line in worker.stderr:
                    tail.append(line.rstrip("\n"))
                    sys.stderr.write(line)
                    sys.stderr.flush()
                    if TASK_EXCEPTION_MARK in line:
                        task_failed.set()

            pump_thread = threading.Thread(target=pump, daemon=True)
            pump_thread.start()

            guard_s = WARMUP_S + args.duration + HARD_GUARD_S
            deadline = time.monotonic() + guard_s
            try:
                while (worker.poll() is None and not task_failed.is_set()
                       and time.monotonic() < deadline):
                    task_failed.wait(0.1)
                if task_failed.is_set():
                    time.sleep(0.5)  # let the traceback reach the tail
            finally:
                # Always: nothing the worker started may survive the run.
                rc = worker.poll()
                _end_worker_group(worker, graceful=rc is None)
                pump_thread.join(timeout=5.0)

            if task_failed.is_set():
                raise RuntimeError(_task_error_summary(list(tail)))
            if rc is None:
                raise RuntimeError(
                    f"hard wall-clock guard: no result after {guard_s:.0f} s; "
                    f"stopped the worker process group")
            if not os.path.exists(result_path):
                hint = next((ln for ln in reversed(tail)
                             if "Error" in ln or "Exception" in ln), "")
                raise RuntimeError(f"worker exited with rc={rc} and no result. {hint}".strip())
            with open(result_path) as f:
                result = json.load(f)

        if result.get("error"):
            raise RuntimeError(result["error"])
        lat = [float(x) for x in result["latencies_us"]]
        if not lat:
            raise RuntimeError("no latencies recorded")
        report["latencies_us"] = lat
        report["n"] = len(lat)
        s = sorted(lat)
        print(f"ezmsg {args.mode}: n={len(s)} p50={_percentile(s, 50):.0f} us "
              f"p99={_percentile(s, 99):.0f} us max={s[-1]:.0f} us",
              file=sys.stderr)
        rc_out = 0
    except BaseException as exc:  # noqa: BLE001 - always write the JSON
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
        report["latencies_us"] = []
        report["n"] = 0
        report["error"] = msg
        print(f"ezmsg_chain: error: {msg}", file=sys.stderr)
        rc_out = 1
    finally:
        for s_, h in old_handlers.items():
            signal.signal(s_, h)

    out_dir = os.path.dirname(os.path.abspath(args.json))
    os.makedirs(out_dir, exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f)
    return rc_out


if __name__ == "__main__" and "--_worker-result" not in sys.argv:
    # Driver entry point. Everything below needs numpy/ezmsg and only runs
    # in the worker process (or when imported), so a missing or broken peer
    # install is still reported in the JSON.
    sys.exit(driver_main())


# ==========================================================================
# Worker: the ezmsg graph
# ==========================================================================

import asyncio  # noqa: E402
import dataclasses  # noqa: E402
import traceback  # noqa: E402
from collections.abc import AsyncGenerator  # noqa: E402

import ezmsg.core as ez  # noqa: E402
import numpy as np  # noqa: E402
from ezmsg.sigproc.bandpower import BandPowerSettings, BandPowerTransformer  # noqa: E402
from ezmsg.sigproc.butterworthfilter import (  # noqa: E402
    ButterworthFilter,
    ButterworthFilterSettings,
)
from ezmsg.sigproc.spectrogram import SpectrogramSettings  # noqa: E402
from ezmsg.sigproc.spectrum import SpectralTransform, WindowFunction  # noqa: E402
from ezmsg.util.messages.axisarray import AxisArray  # noqa: E402


def _write_result(path: str, latencies_us: list[float], error: str | None,
                  diag: dict | None = None) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"latencies_us": latencies_us, "error": error, "diag": diag or {}}, f)
    os.replace(tmp, path)  # atomic: the driver never sees a partial file


async def _wait_until(due: float) -> None:
    """Return as close as possible after ``due`` (time.monotonic seconds)."""
    remaining = due - time.monotonic()
    if remaining > ASYNC_MARGIN_S:
        # Let the event loop (other units, in inproc mode) run meanwhile.
        await asyncio.sleep(remaining - ASYNC_MARGIN_S)
    remaining = due - time.monotonic() - SPIN_S
    if remaining > 0:
        time.sleep(remaining)
    while time.monotonic() < due:
        pass


# --- messages ---------------------------------------------------------------


@dataclasses.dataclass
class Decision:
    """Output of the threshold unit: tiny, and carries the source stamp."""

    seq: int
    t_acq: float  # scheduled acquisition time of the chunk's last sample
    alpha_power: float  # channel-0 alpha power that was compared
    above: bool
    # Sanity information (cheap), used only for the end-of-run summary:
    band_powers_ch0: tuple[float, ...]
    bp_shape: tuple[int, ...]
    bp_finite: bool


# --- settings ---------------------------------------------------------------


class SourceSettings(ez.Settings):
    n_ch: int = 64
    sfreq: float = 1000.0
    chunk: int = 32
    seed: int = 0


class ThresholdSettings(ez.Settings):
    band_index: int = ALPHA_BAND_INDEX
    channel: int = THRESHOLD_CHANNEL
    threshold: float = ALPHA_THRESHOLD
    result_path: str = ""  # fatal errors are reported here


class SinkSettings(ez.Settings):
    warmup_chunks: int = 0
    record_chunks: int = 1
    result_path: str = ""


class ChainSettings(ez.Settings):
    mode: str = "inproc"
    n_ch: int = 64
    sfreq: float = 1000.0
    chunk: int = 32
    warmup_chunks: int = 0
    record_chunks: int = 1
    result_path: str = ""


# --- units ------------------------------------------------------------------


class SyntheticSource(ez.Unit):
    """Real-time paced synthetic EEG-like source (float64, dims [time, ch])."""

    SETTINGS = SourceSettings
    OUTPUT_SIGNAL = ez.OutputStream(AxisArray)

    @ez.publisher(OUTPUT_SIGNAL)
    async def produce(self) -> AsyncGenerator:
        s = self.SETTINGS
        rng = np.random.default_rng(s.seed)
        n, fs = s.chunk, s.sfreq
        phases = np.linspace(0.0, np.pi, s.n_ch)  # a different phase per channel
        t_start = time.monotonic() + START_LEAD_S
        first = 0  # index of the chunk's first sample
        seq = 0
        while True:
            # The chunk's samples are generated *before* its due time, as a real
            # amplifier's would already exist when the last one is acquired.
            t_rel = (first + np.arange(n))[:, None] / fs
            data = (NOISE_STD * rng.standard_normal((n, s.n_ch))
                    + ALPHA_AMP * np.sin(2 * np.pi * ALPHA_HZ * t_rel + phases)
                    + DC_OFFSET)
            t_acq = t_start + (first + n) / fs  # last sample complete
            await _wait_until(t_acq)
            msg = AxisArray(
                data,
                dims=["time", "ch"],
                axes={"time": AxisArray.TimeAxis(fs=fs, offset=t_start + (first + 1) / fs)},
                key="synth",
                attrs={"t_acq": t_acq, "seq": seq},
            )
            yield self.OUTPUT_SIGNAL, msg
            first += n
            seq += 1


class BandPowerSync(ez.Unit):
    """Stock ezmsg-sigproc BandPowerTransformer, called synchronously.

    WORKAROUND: the stock ``ezmsg.sigproc.bandpower.BandPower`` unit awaits
    ``processor.__acall__``, which fails in ezmsg 3.9.0 / ezmsg-sigproc 3.6.0
    with "'ModifyAxisTransformer' object has no attribute 'asend'". The
    transformer itself works when called directly, so this unit does what the
    stock unit does (one transformer call per message, publish the result if
    not None), but through the synchronous ``__call__``.
    """

    SETTINGS = BandPowerSettings
    INPUT_SIGNAL = ez.InputStream(AxisArray)
    OUTPUT_SIGNAL = ez.OutputStream(AxisArray)

    async def initialize(self) -> None:
        self.processor = BandPowerTransformer(settings=self.SETTINGS)

    @ez.subscriber(INPUT_SIGNAL)
    @ez.publisher(OUTPUT_SIGNAL)
    async def on_signal(self, message: AxisArray) -> AsyncGenerator:
        result = self.processor(message)
        if result is not None:
            yield self.OUTPUT_SIGNAL, result


class AlphaThreshold(ez.Unit):
    """Compare channel-0 alpha power with a fixed value; emit a Decision."""

    SETTINGS = ThresholdSettings
    INPUT_SIGNAL = ez.InputStream(AxisArray)
    OUTPUT_DECISION = ez.OutputStream(Decision)

    @ez.subscriber(INPUT_SIGNAL)
    @ez.publisher(OUTPUT_DECISION)
    async def on_power(self, msg: AxisArray) -> AsyncGenerator:
        s = self.SETTINGS
        if list(msg.dims) != ["time", "freq", "ch"] or "t_acq" not in msg.attrs:
            # The stamp (or the layout) did not survive the chain: the
            # measurement would be meaningless, so stop the run with an error.
            _write_result(s.result_path, [], (
                f"unexpected band-power message: dims={msg.dims}, "
                f"attrs keys={sorted(msg.attrs)}"))
            raise ez.NormalTermination
        if msg.data.shape[0] == 0:
            return  # no complete window (not expected with a 32-sample shift)
        powers = msg.data[-1, :, s.channel]  # newest window, all bands, channel 0
        alpha = float(powers[s.band_index])
        yield self.OUTPUT_DECISION, Decision(
            seq=int(msg.attrs["seq"]),
            t_acq=float(msg.attrs["t_acq"]),
            alpha_power=alpha,
            above=alpha > s.threshold,
            band_powers_ch0=tuple(float(p) for p in powers),
            bp_shape=tuple(msg.data.shape),
            bp_finite=bool(np.isfinite(msg.data).all()),
        )


class LatencySink(ez.Unit):
    """Record latency per decision; end the run after warm-up + duration."""

    SETTINGS = SinkSettings
    INPUT_DECISION = ez.InputStream(Decision)

    async def initialize(self) -> None:
        self.latencies_us: list[float] = []
        self.last_seq = -1
        self.missing = 0
        self.n_above = 0
        self.not_finite = 0
        self.band_sums = np.zeros(len(BANDS_HZ))
        self.bp_shapes: set[tuple[int, ...]] = set()

    @ez.subscriber(INPUT_DECISION)
    async def on_decision(self, d: Decision) -> None:
        now = time.monotonic()  # first thing: the latency end point
        s = self.SETTINGS
        self.missing += d.seq - self.last_seq - 1
        self.last_seq = d.seq
        if d.seq < s.warmup_chunks:
            return
        self.latencies_us.append((now - d.t_acq) * 1e6)
        self.n_above += d.above
        self.not_finite += not d.bp_finite
        self.band_sums += d.band_powers_ch0
        self.bp_shapes.add(d.bp_shape)
        if d.seq >= s.warmup_chunks + s.record_chunks - 1:
            n = len(self.latencies_us)
            diag = {
                "decisions_recorded": n,
                "missing_decisions": self.missing,
                "band_power_shapes": sorted(self.bp_shapes),
                "non_finite_outputs": self.not_finite,
                "mean_band_power_ch0": dict(zip(BAND_NAMES, (self.band_sums / n).tolist(), strict=True)),
                "decisions_above_threshold": self.n_above,
            }
            _write_result(s.result_path, self.latencies_us, None, diag)
            raise ez.NormalTermination  # ezmsg stops every unit and process


class LatencyChain(ez.Collection):
    SETTINGS = ChainSettings

    SOURCE = SyntheticSource()
    BPF = ButterworthFilter()  # stock ezmsg-sigproc unit
    BANDPOWER = BandPowerSync()  # stock transformer, sync call (see above)
    THRESHOLD = AlphaThreshold()
    SINK = LatencySink()

    def configure(self) -> None:
        s = self.SETTINGS
        self.SOURCE.apply_settings(SourceSettings(n_ch=s.n_ch, sfreq=s.sfreq, chunk=s.chunk))
        self.BPF.apply_settings(ButterworthFilterSettings(
            axis="time", order=4, cuton=1.0, cutoff=40.0, coef_type="sos"))
        self.BANDPOWER.apply_settings(BandPowerSettings(
            spectrogram_settings=SpectrogramSettings(
                window_dur=WINDOW_SAMPLES / s.sfreq,  # 256 samples
                window_shift=s.chunk / s.sfreq,  # advance one chunk => one output per chunk
                window=WindowFunction.HANNING,
                transform=SpectralTransform.REL_POWER,  # power, not dB
            ),
            bands=list(BANDS_HZ),
        ))
        self.THRESHOLD.apply_settings(ThresholdSettings(result_path=s.result_path))
        self.SINK.apply_settings(SinkSettings(
            warmup_chunks=s.warmup_chunks, record_chunks=s.record_chunks,
            result_path=s.result_path))

    def network(self) -> ez.NetworkDefinition:
        return (
            (self.SOURCE.OUTPUT_SIGNAL, self.BPF.INPUT_SIGNAL),
            (self.BPF.OUTPUT_SIGNAL, self.BANDPOWER.INPUT_SIGNAL),
            (self.BANDPOWER.OUTPUT_SIGNAL, self.THRESHOLD.INPUT_SIGNAL),
            (self.THRESHOLD.OUTPUT_DECISION, self.SINK.INPUT_DECISION),
        )

    def process_components(self) -> tuple[ez.Component, ...]:
        # ezmsg's process placement: each listed component gets its own
        # process. An empty tuple keeps every unit in the launching process.
        if self.SETTINGS.mode == "multiproc":
            return (self.SOURCE, self.BPF, self.BANDPOWER, self.THRESHOLD, self.SINK)
        return ()


def worker_main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    result_path = args.worker_result
    chunks_per_s = args.sfreq / args.chunk
    chain = LatencyChain(ChainSettings(
        mode=args.mode, n_ch=args.n_ch, sfreq=args.sfreq, chunk=args.chunk,
        warmup_chunks=math.ceil(WARMUP_S * chunks_per_s),
        record_chunks=max(1, round(args.duration * chunks_per_s)),
        result_path=result_path,
    ))
    # A private GraphServer (a thread in this process, as ezmsg would start by
    # default) on a free port, so that we never attach to someone else's graph.
    server = ez.GraphServer()
    server.start()
    try:
        ez.run(components={"CHAIN": chain}, graph_address=server.address)
    except Exception:
        if not os.path.exists(result_path):
            _write_result(result_path, [], traceback.format_exc().strip().splitlines()[-1])
        raise
    finally:
        server.stop()
    if os.path.exists(result_path):
        with open(result_path) as f:
            diag = json.load(f).get("diag")
        if diag:
            print("ezmsg_chain sanity: " + json.dumps(diag), file=sys.stderr)
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(worker_main())
