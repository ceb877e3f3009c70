"""Latency peer: the rtneuro reference chain fed by a live LSL stream (ezmsg-lsl or MNE-LSL).

What is measured
----------------
How long it takes from an LSL push to a decision, for this chain, which consumes an
LSL stream that someone else pushes (``--mode push`` is a test pusher):

    LSL inlet        64 ch float32, 1000 Hz, pushed in 32-sample chunks
      -> band-pass   4th-order Butterworth, 1-40 Hz, SOS, causal, stateful
      -> band power  5 bands from a 256-sample Hann window, one output per
                     32-sample chunk
      -> threshold   channel-0 alpha power against a fixed value -> decision

The latency of a decision is ``local_clock()`` at the moment the decision is
made, minus the LSL timestamp of the newest sample of the chunk that produced
the decision. That timestamp is on the consumer's local clock, i.e. after LSL
time correction. The pusher stamps each chunk's last sample with
``local_clock()`` at the moment of the push, so the latency runs from push to
decision. Decisions of the first ``WARMUP_S`` seconds (from the first decision)
are discarded. Then ``--duration`` seconds are recorded.

All the clocks involved are one clock. pylsl's liblsl (1.18), MNE-LSL's bundled
liblsl (1.17) and ``time.monotonic()`` all read CLOCK_MONOTONIC on Linux (checked
side by side: they agree to within the ~1 us between the calls). The pusher and
the consumer run on the same host, so the true clock offset between them is 0.
liblsl's time-correction *estimate* is not exactly 0, though: it measured
-30 to -50 us here (round-trip asymmetry of its probes). That error shifts every
corrected stamp a little earlier, and so makes the latencies tens of microseconds
*larger*. Both modes apply the correction, so they carry the same error.

``--mode ezmsg``: every unit in ONE process (ezmsg's default)
-------------------------------------------------------------
    LSLInletUnit (ezmsg-lsl) -> ButterworthFilter (stock ezmsg-sigproc unit)
      -> BandPowerSync (ours, see below) -> AlphaThreshold -> LatencySink

* Inlet: ``ezmsg.lsl.inlet.LSLInletUnit`` with
  ``LSLInletSettings(info=LSLInfo(name=--stream))``. Every other setting is
  left at its default. That means ``processing_flags=pylsl.proc_ALL``
  (clocksync + dejitter + monotonize + threadsafe), ``use_arrival_time=False``
  (the sender's stamps are kept) and ``use_lsl_clock=False``, so ezmsg-lsl
  converts the stamps to the "system" clock with its ``ClockSync``:
  ``system = lsl + offset``. In ezmsg-lsl 1.13 that system clock is
  ``time.monotonic()``, so the offset only holds ClockSync's estimation error
  (measured |offset| of 1-3 us). The
  unit pulls on a worker thread (``pull_chunk(timeout=0.1, min_samples=1)``),
  so it publishes whatever has arrived. Often that is only part of a chunk:
  liblsl hands the received samples to the inlet one at a time, so a 32-sample
  chunk usually reaches the graph as 2-3 messages.
* How ezmsg-lsl stamps the data (checked in its source and on pushed stamps):
  for a regular-rate stream the time axis is a ``LinearAxis`` whose ``offset``
  is the (corrected, dejittered, clock-converted) stamp of the message's FIRST
  sample, and ``gain = 1/fs``. So the newest sample of a message is
  ``offset + (n - 1) * gain``. The band-power wrapper takes the stamp of the last
  sample of the window that produced the decision. In normal operation that is
  exactly the newest sample of the message (see ``BandPowerSync``). It carries
  the stamp in ``attrs["t_newest"]``. The sink converts it back to the LSL clock
  with the same ``ClockSync`` (``system2lsl``) and subtracts it from
  ``pylsl.local_clock()``. These stamps were compared with the ones the pusher
  logged (hidden ``--stamps-out``). The dejitter filter (default on) moves them
  by a few tens of microseconds (median |error| 20-35 us). For a chunk that the
  pusher pushed late, dejitter puts the stamp back on the regular grid, so that
  chunk's latency is counted from when it was due, not from when it was pushed.
  That happened to 3 of 626 chunks, which were 0.7-3.3 ms late. p50 and p99 moved
  by less than 50 us.
* One output per 32-sample chunk. The stock ``BandPowerTransformer`` uses a
  256-sample Hann window and shifts it by ``--chunk`` samples
  (``zero_pad_until="shift"``), so windows end every 32 samples, counted from
  the first received sample, whatever the message sizes are. The pusher pushes
  whole chunks, so each window ends on a chunk's last sample. That holds unless
  the inlet happened to connect in the middle of a push (a ~10-50 us window
  every 32 ms). The run checks the alignment: see ``MAX_SUSPECT_FRACTION``.

Workaround (as in ezmsg_chain.py): with ezmsg 3.9.0 and ezmsg-sigproc 3.6.0 the
stock ``BandPower`` unit fails with "'ModifyAxisTransformer' object has no
attribute 'asend'" in its async path. ``BandPowerSync`` owns the stock
``BandPowerTransformer`` and calls it synchronously. The DSP is the library's
own.

``--mode mnelsl``: MNE-LSL's StreamLSL, polled from the main thread
--------------------------------------------------------------------
``mne_lsl.stream.StreamLSL(bufsize, name=--stream)``, then
``connect(processing_flags=["clocksync"], timeout=--resolve-timeout)``, with the
default ``acquisition_delay`` of 1 ms: a background thread pulls from the inlet
every ~1 ms into a ring buffer. MNE-LSL's own default is no post-processing at
all, which would leave the timestamps on the *pusher's* clock. The
``"clocksync"`` flag is MNE-LSL's documented way to have liblsl add its
time-correction estimate, the same correction that ezmsg-lsl's default applies.
That puts the stamps on our ``local_clock()``. On this host the correction only
moves them by the estimate's error (see above). The main thread polls as the
MNE-LSL docs show. While ``stream.n_new_samples < chunk`` it sleeps with
``time.sleep(0.001)`` between checks. It then calls
``get_data(winsize=...)`` and keeps the samples after the last one it processed,
which it finds in the window by its exact stamp. That is race-free even if
samples land between the check and the call. It is also correct when the stamps
are not monotonic, which happens without dejitter after a late push (see
``mnelsl_main``). After that come plain SciPy/NumPy steps: ``sosfilt`` with
carried ``zi`` (``butter(4, [1, 40], "bandpass", fs, output="sos")``), a
periodic Hann window over the last 256 filtered samples, ``rfft``, one-sided
density scaling ``2 / (fs * sum(w**2))``, and the sum over each band's bins
(inclusive ``[lo, hi]``, times the bin width, as rtneuro's band power does).
Then the threshold and the latency against ``mne_lsl.lsl.local_clock()``.

``--mode push``: test pusher
----------------------------
A pylsl ``StreamOutlet`` named ``--stream`` (type EEG, float32, nominal
``--sfreq``, ``source_id`` set), pushing chunks of unit-variance random data
in real time. It sleeps until 0.2 ms before each chunk's due time, spins, and then
calls ``push_chunk(data, timestamp=local_clock())``. liblsl stamps the LAST
sample with that time and back-computes the earlier ones (first = ts - (n-1)/fs).
It runs for ``--duration`` + 2 s (consumer warm-up) + 1 s.

Process hygiene (as ezmsg_chain.py)
-----------------------------------
For ``ezmsg`` and ``mnelsl`` the command-line process is a stdlib-only driver. It
re-runs this file as a worker in a new session (process group) and always writes
the JSON. The ezmsg worker runs its own GraphServer (a thread) on a free port, so
it never attaches to someone else's graph. The sink ends the run with
``ez.NormalTermination``, or the driver fails fast on ezmsg's "Exception in Task"
log line. A hard wall-clock guard (warm-up + resolve timeout + duration + 60 s)
makes a hang impossible. At the end the driver signals the worker's process group
by its id: SIGINT first (ezmsg's graceful Ctrl-C, which releases shared memory),
then SIGKILL for anything still alive. If the stream is not found within
``--resolve-timeout``, or stalls for ``STALL_S``, the run ends with a one-line
error.

Usage::

    python benchmarks/peers/lsl_chain.py --mode push --stream NAME --duration 30 &
    python benchmarks/peers/lsl_chain.py --mode ezmsg|mnelsl --stream NAME \
        --duration SECONDS [--json OUT.json] [--n-ch 64] [--sfreq 1000] \
        [--chunk 32] [--resolve-timeout 10]
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import json
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
# Constants shared by driver and workers
# --------------------------------------------------------------------------

WARMUP_S = 2.0  # decisions of the first 2 s (from the first decision) are discarded
PUSH_EXTRA_S = WARMUP_S + 1.0  # the pusher runs for duration + this
HARD_GUARD_S = 60.0  # driver kills everything after warm-up + resolve + duration + this
STALL_S = 5.0  # no decision for this long once data flowed => error
SPIN_S = 0.0002  # pusher: time.sleep until 0.2 ms before due, then spin
POLL_S = 0.001  # mnelsl: time.sleep between n_new_samples checks
PUSH_LEAD_S = 0.1  # the pusher's first chunk is due this long after start
# Chunk-alignment check. A decision is suspect if more samples followed it within
# a quarter of a chunk period ("mid-burst"), or (ezmsg) if its message ran past
# the window end ("straddling"). Windows that are not aligned with the pushed
# chunks make nearly every decision suspect. A backlog after a stall (of the
# pusher or of the consumer) makes a few suspect. So a run fails only above this
# fraction of the recorded decisions.
MAX_SUSPECT_FRACTION = 0.5
MNE_BUFSIZE_S = 2.0  # StreamLSL ring buffer (seconds)
MNE_WINSIZE_S = 1.0  # get_data window; new samples are picked from it by timestamp

BANDS_HZ = [(1.0, 4.0), (4.0, 8.0), (8.0, 12.0), (13.0, 30.0), (30.0, 45.0)]
BAND_NAMES = ["delta", "theta", "alpha", "beta", "gamma"]
ALPHA_BAND_INDEX = 2
WINDOW_SAMPLES = 256
THRESHOLD_CHANNEL = 0
# Fixed decision thresholds on channel-0 alpha power. The two modes scale power
# differently: ezmsg-sigproc gives the *mean* of its power spectrum over the
# band's bins, and mnelsl gives a density sum times the bin width. So each mode
# has its own value, set near the median for the pusher's unit-variance white
# noise so that the decision really flips. Only the latency is compared, not
# the decisions.
ALPHA_THRESHOLD = {"ezmsg": 0.011, "mnelsl": 0.0055}
PEER_NAME = {"ezmsg": "ezmsg-lsl", "mnelsl": "mne-lsl"}
VERSION_DISTS = {
    "ezmsg": ("ezmsg", "ezmsg-sigproc", "ezmsg-baseproc", "ezmsg-lsl", "pylsl", "numpy", "scipy"),
    "mnelsl": ("mne-lsl", "mne", "numpy", "scipy"),
}


# ==========================================================================
# Driver (standard library only, so that it can always write the JSON)
# ==========================================================================


def _versions(mode: str) -> dict:
    out = {}
    for dist in VERSION_DISTS[mode]:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=("ezmsg", "mnelsl", "push"), required=True)
    p.add_argument("--stream", required=True, help="LSL stream name")
    p.add_argument("--duration", type=float, required=True,
                   help=f"seconds to record after the {WARMUP_S:.0f} s warm-up "
                        f"(push: seconds to push, plus {PUSH_EXTRA_S:.0f} s)")
    p.add_argument("--json", default=None, help="output JSON path (ezmsg/mnelsl)")
    p.add_argument("--n-ch", type=int, default=64)
    p.add_argument("--sfreq", type=float, default=1000.0)
    p.add_argument("--chunk", type=int, default=32)
    p.add_argument("--resolve-timeout", type=float, default=10.0,
                   help="seconds to wait for the stream to appear")
    # Self-test aid: the pusher logs the stamp of every chunk's last sample and
    # the consumer logs, per recorded decision, [stamp of the newest sample on
    # the LSL clock, local_clock() at the decision], so the two can be
    # compared offline.
    p.add_argument("--stamps-out", default=None, help=argparse.SUPPRESS)
    # Internal: set by the driver when it re-runs this file as the worker.
    p.add_argument("--_worker-result", dest="worker_result", default=None,
                   help=argparse.SUPPRESS)
    return p.parse_args(argv)


class _Fatal(RuntimeError):
    """A run-ending condition whose message says it all (no type prefix)."""


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, _Fatal):
        return " ".join(str(exc).split())
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def driver_main(args: argparse.Namespace, argv: list[str]) -> int:
    peer = PEER_NAME[args.mode]
    report = {
        "peer": peer,
        "mode": args.mode,
        "versions": _versions(args.mode),
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
        if (args.duration <= 0 or args.n_ch <= 0 or args.sfreq <= 0 or args.chunk <= 0
                or args.resolve_timeout <= 0):
            raise ValueError("--duration, --n-ch, --sfreq, --chunk and --resolve-timeout "
                             "must be positive")
        if args.chunk > WINDOW_SAMPLES:
            raise ValueError(f"--chunk must be <= the {WINDOW_SAMPLES}-sample window")

        with tempfile.TemporaryDirectory(prefix="lsl_chain_") as tmp:
            result_path = os.path.join(tmp, "result.json")
            cmd = [sys.executable, os.path.abspath(__file__), *argv,
                   "--_worker-result", result_path]
            # New session => the worker and everything it starts share one
            # process group (pgid == worker.pid) that we can signal by id.
            worker = subprocess.Popen(cmd, start_new_session=True,
                                      stdin=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True)
            tail: collections.deque[str] = collections.deque(maxlen=200)
            # ezmsg logs an exception raised inside a unit's task and keeps
            # running, so the chain would just stall: fail fast instead.
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

            guard_s = WARMUP_S + args.resolve_timeout + args.duration + HARD_GUARD_S
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

            result = None
            if os.path.exists(result_path):
                with open(result_path) as f:
                    result = json.load(f)
            if result is not None and result.get("error"):
                raise RuntimeError(result["error"])
            if task_failed.is_set():
                raise RuntimeError(_task_error_summary(list(tail)))
            if rc is None:
                raise RuntimeError(
                    f"hard wall-clock guard: no result after {guard_s:.0f} s; "
                    f"stopped the worker process group")
            if result is None:
                hint = next((ln for ln in reversed(tail)
                             if "Error" in ln or "Exception" in ln), "")
                raise RuntimeError(f"worker exited with rc={rc} and no result. {hint}".strip())

        lat = [float(x) for x in result["latencies_us"]]
        if not lat:
            raise RuntimeError("no latencies recorded")
        report["versions"].update(result.get("extra_versions") or {})
        report["latencies_us"] = lat
        report["n"] = len(lat)
        s = sorted(lat)
        print(f"{peer} {args.mode}: n={len(s)} p50={_percentile(s, 50):.0f} us "
              f"p99={_percentile(s, 99):.0f} us max={s[-1]:.0f} us",
              file=sys.stderr)
        rc_out = 0
    except BaseException as exc:  # noqa: BLE001 - always write the JSON
        msg = _one_line(exc)
        report["latencies_us"] = []
        report["n"] = 0
        report["error"] = msg
        print(f"lsl_chain: error: {msg}", file=sys.stderr)
        rc_out = 1
    finally:
        for s_, h in old_handlers.items():
            signal.signal(s_, h)

    if args.json:
        out_dir = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(out_dir, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f)
    return rc_out


# ==========================================================================
# Helpers shared by the workers
# ==========================================================================


def _write_result(path: str, latencies_us: list[float], error: str | None,
                  diag: dict | None = None, extra_versions: dict | None = None) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"latencies_us": latencies_us, "error": error, "diag": diag or {},
                   "extra_versions": extra_versions or {}}, f)
    os.replace(tmp, path)  # atomic: the driver never sees a partial file


def _write_stamps(path: str | None, rows: list) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(rows, f)


def _liblsl_version(v: int) -> str:
    return f"{v // 100}.{v % 100}"


def _validate_latencies(latencies_us: list[float]) -> str | None:
    """A decision can never precede its push: a non-positive latency means the
    stamps or the clocks are wrong, and then the whole measurement is."""
    bad = sum(1 for x in latencies_us if not x > 0.0)
    if bad:
        return (f"measurement invalid: {bad} of {len(latencies_us)} latencies <= 0 "
                f"(min {min(latencies_us):.1f} us)")
    return None


# ==========================================================================
# --mode push: the test pusher (pylsl)
# ==========================================================================


def push_main(args: argparse.Namespace) -> int:
    import numpy as np
    import pylsl

    n, fs = args.chunk, args.sfreq
    info = pylsl.StreamInfo(args.stream, "EEG", args.n_ch, fs, pylsl.cf_float32,
                            f"rtneuro-bench-{args.stream}")
    chans = info.desc().append_child("channels")  # as an EEG amplifier would
    for i in range(args.n_ch):
        ch = chans.append_child("channel")
        ch.append_child_value("label", f"EEG{i + 1:03d}")
        ch.append_child_value("unit", "microvolts")
        ch.append_child_value("type", "EEG")
    outlet = pylsl.StreamOutlet(info)  # one transmitted chunk per push_chunk
    rng = np.random.default_rng(0)
    total_s = args.duration + PUSH_EXTRA_S
    n_chunks = max(1, round(total_s * fs / n))
    stamps: list[float] = []
    late_us: list[float] = []
    t_start = pylsl.local_clock() + PUSH_LEAD_S
    try:
        for k in range(n_chunks):
            # Random data exists before its due time, as an amplifier's would.
            data = rng.standard_normal((n, args.n_ch)).astype(np.float32)
            due = t_start + (k + 1) * n / fs
            remaining = due - pylsl.local_clock() - SPIN_S
            if remaining > 0:
                time.sleep(remaining)
            while pylsl.local_clock() < due:
                pass
            ts = pylsl.local_clock()
            # ts stamps the LAST sample; liblsl back-computes the earlier ones.
            outlet.push_chunk(data, timestamp=ts)
            stamps.append(ts)
            late_us.append((ts - due) * 1e6)
    except KeyboardInterrupt:
        pass
    finally:
        del outlet
    _write_stamps(args.stamps_out, stamps)
    s = sorted(late_us)
    print(f"lsl_chain push: {len(stamps)} chunks of {n}x{args.n_ch} to '{args.stream}'; "
          f"push lateness p50={_percentile(s, 50):.1f} us max={s[-1] if s else float('nan'):.1f} us",
          file=sys.stderr)
    return 0


# ==========================================================================
# --mode mnelsl: MNE-LSL StreamLSL + NumPy/SciPy
# ==========================================================================


def mnelsl_main(args: argparse.Namespace) -> int:
    import numpy as np
    from mne_lsl.lsl import library_version, local_clock
    from mne_lsl.stream import StreamLSL
    from scipy.fft import rfft, rfftfreq
    from scipy.signal import butter, get_window, sosfilt

    result_path = args.worker_result
    extra_versions = {"liblsl (mne-lsl)": _liblsl_version(library_version())}
    stream = None
    try:
        fs, n_ch, chunk = args.sfreq, args.n_ch, args.chunk
        stream = StreamLSL(MNE_BUFSIZE_S, name=args.stream)
        try:
            # Default acquisition_delay (1 ms). "clocksync": liblsl adds its
            # time-correction estimate, so stamps are on our local_clock().
            stream.connect(processing_flags=["clocksync"], timeout=args.resolve_timeout)
        except RuntimeError as exc:
            if "0 were found" in str(exc):
                raise _Fatal(f"LSL stream '{args.stream}' not found within "
                             f"{args.resolve_timeout:g} s") from None
            raise
        if stream.info["sfreq"] != fs or stream.info["nchan"] != n_ch:
            raise _Fatal(
                f"stream '{args.stream}' has {stream.info['nchan']} ch at "
                f"{stream.info['sfreq']:g} Hz; expected {n_ch} ch at {fs:g} Hz")

        # Processing state
        sos = butter(4, [1.0, 40.0], "bandpass", fs=fs, output="sos")
        zi = np.zeros((sos.shape[0], 2, n_ch))
        ring = np.zeros((WINDOW_SAMPLES, n_ch))  # last 256 filtered samples
        taper = get_window("hann", WINDOW_SAMPLES)[:, None]  # periodic Hann
        freqs = rfftfreq(WINDOW_SAMPLES, 1.0 / fs)
        df = fs / WINDOW_SAMPLES
        scale = np.full(freqs.size, 2.0 / (fs * float((taper ** 2).sum())))
        scale[0] /= 2  # one-sided density: DC and Nyquist are not doubled
        scale[-1] /= 2
        band_matrix = np.zeros((len(BANDS_HZ), freqs.size))
        for i, (lo, hi) in enumerate(BANDS_HZ):
            band_matrix[i, (freqs >= lo) & (freqs <= hi)] = df  # sum(psd) * df
        threshold = ALPHA_THRESHOLD["mnelsl"]

        latencies_us: list[float] = []
        stamps: list[list[float]] = []
        last_ts: float | None = None  # stamp of the last sample processed
        t_first = t_rec_end = None
        t_last_data = time.monotonic()
        t_connected = t_last_data
        n_new_hist: collections.Counter[int] = collections.Counter()
        overflow = not_finite = n_above = 0
        band_sums = np.zeros(len(BANDS_HZ))
        bp_shapes: set[tuple[int, ...]] = set()
        decisions_total = 0

        period = chunk / fs
        watch_until = 0.0  # see the mid-burst check below
        mid_burst = 0
        while True:
            n_new = stream.n_new_samples
            if watch_until and n_new:
                # New samples within a quarter of a chunk period after a
                # decision: that decision was made in the middle of a chunk.
                if time.monotonic() < watch_until and latencies_us:
                    mid_burst += 1
                watch_until = 0.0
            if n_new < chunk:
                # Polling loop as in the MNE-LSL docs: 1 ms sleep between checks.
                now_m = time.monotonic()
                if t_first is None and now_m - t_connected > args.resolve_timeout + STALL_S:
                    raise _Fatal(f"connected to '{args.stream}' but no data "
                                 f"for {args.resolve_timeout + STALL_S:g} s")
                if t_first is not None and now_m - t_last_data > STALL_S:
                    raise _Fatal(f"stream '{args.stream}' stalled: no data for "
                                 f"{STALL_S:g} s")
                time.sleep(POLL_S)
                continue
            data, ts = stream.get_data(winsize=MNE_WINSIZE_S)  # (n_ch, n), (n,)
            # The new samples are those after the last one processed, found by
            # its exact stamp. Not "ts > last_ts": stamps are not monotonic
            # (without dejitter, a chunk pushed late is back-computed from its
            # late stamp, so its first samples can be stamped after the next
            # chunk's first samples).
            if last_ts is None:
                first_new = int(np.argmax(ts > 0.0)) if (ts > 0.0).any() else ts.size
            else:
                hits = np.flatnonzero(ts == last_ts)
                if hits.size:
                    first_new = int(hits[-1]) + 1
                else:
                    overflow += 1  # fell behind by more than the get_data window
                    first_new = 0
            x = data[:, first_new:].T.astype(np.float64)  # (n_new, n_ch)
            ts_new = ts[first_new:]
            if ts_new.size == 0:
                continue
            y, zi = sosfilt(sos, x, axis=0, zi=zi)
            if y.shape[0] >= WINDOW_SAMPLES:
                ring[:] = y[-WINDOW_SAMPLES:]
            else:
                ring[:-y.shape[0]] = ring[y.shape[0]:]
                ring[-y.shape[0]:] = y
            spec = rfft(ring * taper, axis=0)  # (n_freqs, n_ch)
            psd = (spec.real ** 2 + spec.imag ** 2) * scale[:, None]
            band_power = band_matrix @ psd  # (n_bands, n_ch)
            alpha = float(band_power[ALPHA_BAND_INDEX, THRESHOLD_CHANNEL])
            above = alpha > threshold
            now = local_clock()  # the decision is made: latency end point
            t_newest = float(ts_new[-1])
            last_ts = t_newest
            t_last_data = time.monotonic()
            watch_until = t_last_data + period / 4
            decisions_total += 1
            if t_first is None:
                t_first = now
                t_rec_end = now + WARMUP_S + args.duration
            if now < t_first + WARMUP_S:
                continue
            latencies_us.append((now - t_newest) * 1e6)
            stamps.append([t_newest, now])
            n_new_hist[int(ts_new.size)] += 1
            n_above += above
            finite = bool(np.isfinite(band_power).all())
            not_finite += not finite
            band_sums += band_power[:, THRESHOLD_CHANNEL]
            bp_shapes.add(tuple(band_power.shape))
            if now >= t_rec_end:
                break

        n = len(latencies_us)
        diag = {
            "decisions_recorded": n,
            "decisions_total": decisions_total,
            "new_samples_per_decision": dict(sorted(n_new_hist.items())),
            "get_data_window_overflows": overflow,
            "decisions_mid_burst": mid_burst,
            "band_power_shapes": sorted(bp_shapes),
            "non_finite_outputs": not_finite,
            "mean_band_power_ch0": dict(zip(BAND_NAMES, (band_sums / n).tolist(), strict=True)),
            "decisions_above_threshold": n_above,
        }
        print("lsl_chain sanity: " + json.dumps(diag), file=sys.stderr)
        error = _validate_latencies(latencies_us)
        if not_finite:
            error = error or f"{not_finite} non-finite band-power outputs"
        if mid_burst > MAX_SUSPECT_FRACTION * n:
            # Decisions on partial chunks would be stamped mid-chunk.
            error = error or (f"decisions not at a chunk's last sample: {mid_burst} of "
                              f"{n} were followed by more samples within "
                              f"{period / 4 * 1e3:.0f} ms")
        _write_stamps(args.stamps_out, stamps)
        _write_result(result_path, [] if error else latencies_us, error, diag, extra_versions)
        return 0 if error is None else 1
    except BaseException as exc:  # noqa: BLE001 - always leave a result
        _write_result(result_path, [], _one_line(exc), None, extra_versions)
        return 1
    finally:
        if stream is not None:
            try:
                stream.disconnect()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass


# ==========================================================================
# Entry point. Everything below the guard needs ezmsg and only runs in the
# ezmsg worker, so a missing or broken peer install is still reported in the
# JSON, and the mnelsl/push modes never load ezmsg (or pylsl's liblsl).
# ==========================================================================

if __name__ == "__main__":
    _ARGS = _parse_args(sys.argv[1:])
    if _ARGS.mode == "push":
        sys.exit(push_main(_ARGS))
    if _ARGS.worker_result is None:
        sys.exit(driver_main(_ARGS, sys.argv[1:]))
    if _ARGS.mode == "mnelsl":
        sys.exit(mnelsl_main(_ARGS))


# ==========================================================================
# --mode ezmsg worker: the ezmsg graph
# ==========================================================================

import asyncio  # noqa: E402
import dataclasses  # noqa: E402
import traceback  # noqa: E402
from collections.abc import AsyncGenerator  # noqa: E402

import ezmsg.core as ez  # noqa: E402
import numpy as np  # noqa: E402
import pylsl  # noqa: E402
from ezmsg.lsl.inlet import LSLInfo, LSLInletSettings, LSLInletUnit  # noqa: E402
from ezmsg.lsl.util import ClockSync  # noqa: E402
from ezmsg.sigproc.bandpower import BandPowerSettings, BandPowerTransformer  # noqa: E402
from ezmsg.sigproc.butterworthfilter import (  # noqa: E402
    ButterworthFilter,
    ButterworthFilterSettings,
)
from ezmsg.sigproc.spectrogram import SpectrogramSettings  # noqa: E402
from ezmsg.sigproc.spectrum import SpectralTransform, WindowFunction  # noqa: E402
from ezmsg.util.messages.axisarray import AxisArray  # noqa: E402
from ezmsg.util.messages.util import replace  # noqa: E402

# --- messages ---------------------------------------------------------------


@dataclasses.dataclass
class Decision:
    """Output of the threshold unit: tiny, and carries the newest-sample stamp."""

    t_newest: float  # last sample of the deciding window, ezmsg-lsl's clock
    alpha_power: float  # channel-0 alpha power that was compared
    above: bool
    # Sanity information (cheap), used only for the end-of-run summary:
    band_powers_ch0: tuple[float, ...]
    bp_shape: tuple[int, ...]
    bp_finite: bool
    straddle_s: float  # how far the message ran past the window end (normally 0)
    mid_burst: int  # running count, see BandPowerSync
    n_msgs: int  # inlet messages that made up this window's last chunk


# --- settings ---------------------------------------------------------------


class BandPowerSyncSettings(ez.Settings):
    bandpower: BandPowerSettings = dataclasses.field(default_factory=BandPowerSettings)
    chunk_period_s: float = 0.032


class ThresholdSettings(ez.Settings):
    band_index: int = ALPHA_BAND_INDEX
    channel: int = THRESHOLD_CHANNEL
    threshold: float = ALPHA_THRESHOLD["ezmsg"]
    result_path: str = ""  # fatal errors are reported here


class SinkSettings(ez.Settings):
    duration: float = 1.0
    result_path: str = ""
    stamps_out: str | None = None
    no_data_s: float = 15.0
    sfreq: float = 1000.0


class ChainSettings(ez.Settings):
    stream: str = ""
    sfreq: float = 1000.0
    chunk: int = 32
    duration: float = 1.0
    resolve_timeout: float = 10.0
    result_path: str = ""
    stamps_out: str | None = None


# --- units ------------------------------------------------------------------


class BandPowerSync(ez.Unit):
    """Stock ezmsg-sigproc BandPowerTransformer, called synchronously.

    WORKAROUND: the stock ``ezmsg.sigproc.bandpower.BandPower`` unit awaits
    ``processor.__acall__``, which fails in ezmsg 3.9.0 / ezmsg-sigproc 3.6.0
    with "'ModifyAxisTransformer' object has no attribute 'asend'". This unit
    does what the stock unit does (one transformer call per message, publish
    the result if not None), but through the synchronous ``__call__``.

    It also carries the stamp. For an output holding at least one window, it
    puts into ``attrs["t_newest"]`` the stamp of the last sample of the newest
    window (``data[-1]``, the one the threshold uses). With chunk-aligned windows
    that sample is the newest sample of the chunk that produced the decision.
    The output's time axis is a LinearAxis: offset = start of the first window,
    gain = window shift. The windowing derives it from the current message's
    time axis (ezmsg-lsl: offset = stamp of the message's first sample,
    gain = 1/fs), so the window end is on exactly the same stamp scale:
    ``end = offset + (n_win - 1) * shift + (256 - 1) / fs``. Normally it equals
    the message's newest sample (``offset_msg + (n - 1) / fs``; measured
    difference 0.0). When the consumer catches up on a backlog, a message can run
    past the window end into the next chunk (``straddle``), and then the window
    end is the right stamp.
    """

    SETTINGS = BandPowerSyncSettings
    INPUT_SIGNAL = ez.InputStream(AxisArray)
    OUTPUT_SIGNAL = ez.OutputStream(AxisArray)

    async def initialize(self) -> None:
        self.processor = BandPowerTransformer(settings=self.SETTINGS.bandpower)
        self.prev_decided_at: float | None = None
        self.mid_burst = 0
        self.n_msgs = 0  # inlet messages since the last window completed

    @ez.subscriber(INPUT_SIGNAL)
    @ez.publisher(OUTPUT_SIGNAL)
    async def on_signal(self, message: AxisArray) -> AsyncGenerator:
        arrived = time.monotonic()
        if self.prev_decided_at is not None:
            # The previous message completed a window. If this one follows
            # within a quarter of a chunk period, the previous one was not the
            # end of the pusher's chunk (the window ended mid-chunk).
            if arrived - self.prev_decided_at < self.SETTINGS.chunk_period_s / 4:
                self.mid_burst += 1
            self.prev_decided_at = None
        self.n_msgs += 1
        result = self.processor(message)
        if result is None:
            return
        n_win = result.data.shape[0]
        if n_win > 0:
            ax = message.axes["time"]  # stamp of the message's first sample, 1/fs
            n = message.data.shape[message.get_axis_idx("time")]
            msg_newest = ax.offset + (n - 1) * ax.gain
            win_ax = result.axes["time"]  # first window's start, window shift
            win_end = win_ax.offset + (n_win - 1) * win_ax.gain + (WINDOW_SAMPLES - 1) * ax.gain
            result = replace(result, attrs={**result.attrs, "t_newest": win_end,
                                            "straddle_s": msg_newest - win_end,
                                            "mid_burst": self.mid_burst,
                                            "n_msgs": self.n_msgs})
            self.prev_decided_at = arrived
            self.n_msgs = 0
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
        if msg.data.shape[0] == 0:
            return  # no complete window in this (partial-chunk) message
        if list(msg.dims) != ["time", "freq", "ch"] or "t_newest" not in msg.attrs:
            # The stamp (or the layout) did not survive the chain: the
            # measurement would be meaningless, so stop the run with an error.
            _write_result(s.result_path, [], (
                f"unexpected band-power message: dims={msg.dims}, "
                f"attrs keys={sorted(msg.attrs)}"))
            raise ez.NormalTermination
        powers = msg.data[-1, :, s.channel]  # newest window, all bands, channel 0
        alpha = float(powers[s.band_index])
        yield self.OUTPUT_DECISION, Decision(
            t_newest=float(msg.attrs["t_newest"]),
            alpha_power=alpha,
            above=alpha > s.threshold,
            band_powers_ch0=tuple(float(p) for p in powers),
            bp_shape=tuple(msg.data.shape),
            bp_finite=bool(np.isfinite(msg.data).all()),
            straddle_s=float(msg.attrs["straddle_s"]),
            mid_burst=int(msg.attrs["mid_burst"]),
            n_msgs=int(msg.attrs["n_msgs"]),
        )


class LatencySink(ez.Unit):
    """Record latency per decision; end the run after warm-up + duration."""

    SETTINGS = SinkSettings
    INPUT_DECISION = ez.InputStream(Decision)

    async def initialize(self) -> None:
        self.clock_sync = ClockSync()  # the singleton ezmsg-lsl's inlet uses
        self.latencies_us: list[float] = []
        self.stamps: list[list[float]] = []
        self.t_first: float | None = None
        self.t_last_mono = time.monotonic()
        self.t_start_mono = self.t_last_mono
        self.decisions_total = 0
        self.n_above = 0
        self.not_finite = 0
        self.straddles = 0
        self.mid_burst = 0
        self.mid_burst_base: int | None = None  # running count at recording start
        self.band_sums = np.zeros(len(BANDS_HZ))
        self.bp_shapes: set[tuple[int, ...]] = set()
        self.msgs_hist: collections.Counter[int] = collections.Counter()
        self.done = False

    def _finish(self, error: str | None) -> None:
        if self.done:
            return
        self.done = True
        n = len(self.latencies_us)
        mid_burst = self.mid_burst - (self.mid_burst_base or 0)
        diag = {
            "decisions_recorded": n,
            "decisions_total": self.decisions_total,
            "band_power_shapes": sorted(self.bp_shapes),
            "non_finite_outputs": self.not_finite,
            "mean_band_power_ch0": dict(zip(BAND_NAMES, (self.band_sums / max(n, 1)).tolist(),
                                            strict=True)),
            "decisions_above_threshold": self.n_above,
            "inlet_messages_per_decision": dict(sorted(self.msgs_hist.items())),
            "decisions_straddling": self.straddles,
            "decisions_mid_burst": mid_burst,
            "clocksync_offset_us": round(self.clock_sync.offset * 1e6, 3),
        }
        print("lsl_chain sanity: " + json.dumps(diag), file=sys.stderr)
        if error is None and n:
            error = _validate_latencies(self.latencies_us)
        if error is None and self.not_finite:
            error = f"{self.not_finite} non-finite band-power outputs"
        suspect = self.straddles + mid_burst
        if error is None and suspect > MAX_SUSPECT_FRACTION * n:
            error = (f"windows not aligned with the pushed chunks: of {n} decisions, "
                     f"{self.straddles} straddling and {mid_burst} mid-burst")
        _write_stamps(self.SETTINGS.stamps_out, self.stamps)
        _write_result(self.SETTINGS.result_path, [] if error else self.latencies_us, error,
                      diag, {"liblsl (pylsl)": _liblsl_version(pylsl.library_version())})

    @ez.subscriber(INPUT_DECISION)
    async def on_decision(self, d: Decision) -> None:
        now = pylsl.local_clock()  # first thing: the latency end point
        if self.done:
            return
        s = self.SETTINGS
        self.t_last_mono = time.monotonic()
        self.decisions_total += 1
        if self.t_first is None:
            self.t_first = now
        if now < self.t_first + WARMUP_S:
            return
        # Back from ezmsg-lsl's system clock (time.monotonic) to the LSL clock.
        t_newest_lsl = float(self.clock_sync.system2lsl(d.t_newest))
        self.latencies_us.append((now - t_newest_lsl) * 1e6)
        self.stamps.append([t_newest_lsl, now])
        self.n_above += d.above
        self.not_finite += not d.bp_finite
        self.straddles += d.straddle_s > 0.5 / s.sfreq  # half a sample
        if self.mid_burst_base is None:
            self.mid_burst_base = d.mid_burst
        self.mid_burst = d.mid_burst
        self.band_sums += d.band_powers_ch0
        self.bp_shapes.add(d.bp_shape)
        self.msgs_hist[d.n_msgs] += 1
        if now >= self.t_first + WARMUP_S + s.duration:
            self._finish(None)
            raise ez.NormalTermination  # ezmsg stops every unit

    @ez.task
    async def watchdog(self) -> None:
        """End the run with an error if no data arrives or the stream stalls."""
        s = self.SETTINGS
        while not self.done:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            if self.t_first is None and now - self.t_start_mono > s.no_data_s:
                self._finish(f"connected, but no decision within {s.no_data_s:g} s")
                raise ez.NormalTermination
            if self.t_first is not None and now - self.t_last_mono > STALL_S:
                self._finish(f"stream stalled: no decision for {STALL_S:g} s")
                raise ez.NormalTermination


class LatencyChain(ez.Collection):
    SETTINGS = ChainSettings

    INLET = LSLInletUnit()  # ezmsg-lsl
    BPF = ButterworthFilter()  # stock ezmsg-sigproc unit
    BANDPOWER = BandPowerSync()  # stock transformer, sync call (see above)
    THRESHOLD = AlphaThreshold()
    SINK = LatencySink()

    def configure(self) -> None:
        s = self.SETTINGS
        # Select the stream by name; every other inlet setting at its default.
        self.INLET.apply_settings(LSLInletSettings(info=LSLInfo(name=s.stream)))
        self.BPF.apply_settings(ButterworthFilterSettings(
            axis="time", order=4, cuton=1.0, cutoff=40.0, coef_type="sos"))
        self.BANDPOWER.apply_settings(BandPowerSyncSettings(
            bandpower=BandPowerSettings(
                spectrogram_settings=SpectrogramSettings(
                    window_dur=WINDOW_SAMPLES / s.sfreq,  # 256 samples
                    window_shift=s.chunk / s.sfreq,  # one output per chunk
                    window=WindowFunction.HANNING,
                    transform=SpectralTransform.REL_POWER,  # power, not dB
                ),
                bands=list(BANDS_HZ),
            ),
            chunk_period_s=s.chunk / s.sfreq,
        ))
        self.THRESHOLD.apply_settings(ThresholdSettings(result_path=s.result_path))
        self.SINK.apply_settings(SinkSettings(
            duration=s.duration, result_path=s.result_path, stamps_out=s.stamps_out,
            sfreq=s.sfreq, no_data_s=s.resolve_timeout + STALL_S))

    def network(self) -> ez.NetworkDefinition:
        return (
            (self.INLET.OUTPUT_SIGNAL, self.BPF.INPUT_SIGNAL),
            (self.BPF.OUTPUT_SIGNAL, self.BANDPOWER.INPUT_SIGNAL),
            (self.BANDPOWER.OUTPUT_SIGNAL, self.THRESHOLD.INPUT_SIGNAL),
            (self.THRESHOLD.OUTPUT_DECISION, self.SINK.INPUT_DECISION),
        )


def ezmsg_main(args: argparse.Namespace) -> int:
    result_path = args.worker_result
    extra_versions = {"liblsl (pylsl)": _liblsl_version(pylsl.library_version())}
    # Fail with one line if the stream is not there, before starting the graph
    # (ezmsg-lsl's inlet itself would keep looking forever).
    found = pylsl.resolve_byprop("name", args.stream, 1, args.resolve_timeout)
    if not found:
        _write_result(result_path, [], f"LSL stream '{args.stream}' not found within "
                      f"{args.resolve_timeout:g} s", None, extra_versions)
        return 1
    info = found[0]
    if info.channel_count() != args.n_ch or info.nominal_srate() != args.sfreq:
        _write_result(result_path, [], (
            f"stream '{args.stream}' has {info.channel_count()} ch at "
            f"{info.nominal_srate():g} Hz; expected {args.n_ch} ch at {args.sfreq:g} Hz"),
            None, extra_versions)
        return 1
    del found, info
    chain = LatencyChain(ChainSettings(
        stream=args.stream, sfreq=args.sfreq, chunk=args.chunk, duration=args.duration,
        resolve_timeout=args.resolve_timeout, result_path=result_path,
        stamps_out=args.stamps_out,
    ))
    # A private GraphServer (a thread in this process) on a free port.
    server = ez.GraphServer()
    server.start()
    try:
        ez.run(components={"CHAIN": chain}, graph_address=server.address)
    except Exception:
        if not os.path.exists(result_path):
            _write_result(result_path, [], traceback.format_exc().strip().splitlines()[-1],
                          None, extra_versions)
        raise
    finally:
        server.stop()
    return 0 if os.path.exists(result_path) else 1


if __name__ == "__main__":
    sys.exit(ezmsg_main(_ARGS))
