"""``rtneuro bench bursts``: the ``bursts`` node against known spindles on real sleep EEG, and against YASA.

Background: YASA's N3 extract (``replay_data/yasa/data_N3_no-spindles_30sec_100Hz.txt``, 30 s at 100 Hz,
one channel, uV; slow oscillations, no spindles). 30 s is short for a 30 s running baseline, so the
background is *mirror-tiled* (the extract, then it time-reversed, and so on: continuous at every seam, the
same spectrum) to ``TILE_S`` seconds; every figure below says so. Ground truth: spindles injected into it
(``inject``): 12-15 Hz sinusoids (frequency, phase and duration drawn per spindle), 0.6-1.8 s long, under a
Tukey window (alpha 0.5), with a peak amplitude of 4-8 times the median 12-15 Hz envelope of the background
(Hilbert of a zero-phase band-pass), at random times at least 3 s apart, one seed per draw.

Figures (``run``):

* negative control: false positives per minute on the tiled background with nothing injected (and on the
  original 30 s alone with a calibrated baseline);
* per seed: precision and recall of the completed bursts (``burst_offset``) against the injected spindles
  (a detection matches a spindle when their spans overlap, one to one), onset error (the estimated onset
  the events carry minus the true onset), detection latency (the sample at which ``burst_onset`` is
  emitted minus the true onset), duration error, frequency error;
* YASA's ``spindles_detect`` (defaults) on the same signals: its own precision and recall, and agreement:
  the fraction of YASA's spindles one of ours overlaps and the reverse, and the median onset difference.

The node runs on chunks of random sizes (a different split from the whole-signal call gives identical
events: asserted here too).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import butter, hilbert, sosfiltfilt
from scipy.signal.windows import tukey

from benchmarks.common import save_json
from rtneuro.messages import Chunk, StreamMeta, event_label
from rtneuro.nodes import NodeContext, build_params
from rtneuro.nodes.bursts import Bursts

__all__ = ["BACKGROUND", "SFREQ", "NODE_PARAMS", "load_background", "tile", "inject", "detect", "detect_yasa", "match",
           "evaluate", "same_events", "run"]

ROOT = Path(__file__).resolve().parent.parent
BACKGROUND = ROOT / "replay_data" / "yasa" / "data_N3_no-spindles_30sec_100Hz.txt"
SFREQ = 100.0
TILE_S = 300.0
#: The node's parameters for spindles: YASA's band and durations, a running median baseline.
NODE_PARAMS: dict[str, Any] = {"band": [12.0, 15.0], "order": 2, "threshold": 3.5, "lower": 2.0, "statistic": "median", "baseline": "running",
               "baseline_s": 30.0, "baseline_min_s": 10.0, "min_duration_s": 0.5, "max_duration_s": 2.0,
               "gap_s": 0.1}
#: Detection starts once the baseline exists; spindles are injected after this.
FIRST_S = 12.0


def load_background() -> np.ndarray:
    """The N3 extract, uV, shape (n_times,)."""
    return np.loadtxt(BACKGROUND)


def tile(x: np.ndarray, seconds: float, fs: float = SFREQ) -> np.ndarray:
    """``x``, ``x[::-1]``, ``x``, ... (continuous at the seams) cut to ``seconds``."""
    n = int(round(seconds * fs))
    reps = -(-n // x.size)
    return np.concatenate([x if i % 2 == 0 else x[::-1] for i in range(reps)])[:n].copy()


def sigma_envelope_median(x: np.ndarray, fs: float = SFREQ, band=(12.0, 15.0)) -> float:
    sos = butter(3, band, "bandpass", fs=fs, output="sos")
    return float(np.median(np.abs(hilbert(sosfiltfilt(sos, x)))))


def inject(x: np.ndarray, seed: int, *, fs: float = SFREQ, amp=(4.0, 8.0), dur=(0.6, 1.8), freq=(12.0, 15.0),
           spacing_s: float = 3.0, first_s: float = FIRST_S) -> tuple[np.ndarray, np.ndarray]:
    """Spindles added to ``x``: the signal and the truth, rows ``(onset_s, duration_s, freq_hz, peak_uv)``."""
    rng = np.random.default_rng(seed)
    ref = sigma_envelope_median(x, fs)
    y = x.copy()
    truth = []
    t = first_s + rng.uniform(0, spacing_s)
    end = x.size / fs - dur[1] - 1.0
    while t < end:
        d = rng.uniform(*dur)
        f = rng.uniform(freq[0] + 0.5, freq[1] - 0.5)
        a = rng.uniform(*amp) * ref
        n = int(round(d * fs))
        i0 = int(round(t * fs))
        tt = np.arange(n) / fs
        y[i0:i0 + n] += a * tukey(n, 0.5) * np.sin(2 * np.pi * f * tt + rng.uniform(0, 2 * np.pi))
        truth.append((i0 / fs, n / fs, f, a))
        t += d + spacing_s + rng.exponential(2.0)
    return y, np.array(truth).reshape(-1, 4)


def _node(params: dict, fs: float) -> Bursts:
    meta = StreamMeta(name="eeg", kind="sig", sfreq=fs, ch_names=("EEG",), ch_types=("eeg",), units=("uV",))
    return Bursts(build_params(Bursts.Params, params, "bursts"), [meta], NodeContext("sp"))


def detect(x: np.ndarray, params: dict | None = None, *, fs: float = SFREQ, chunks: np.ndarray | None = None) -> dict:
    """Run the node on ``x`` (shape (n_times,)), in ``chunks`` (sizes; default one call).

    Returns ``bursts`` rows ``(onset_s, duration_s, freq_hz, peak, offset_emitted_s)``, ``onsets`` rows
    ``(emitted_s, onset_s)``, the raw events and the node's report.
    """
    node = _node({**NODE_PARAMS, **(params or {})}, fs)
    sizes = [x.size] if chunks is None else list(chunks)
    events = []
    pos = 0
    for n in sizes:
        if pos >= x.size:
            break
        n = min(n, x.size - pos)
        out = node.process(Chunk(x[pos:pos + n, None], pos, pos / fs, fs, [])) or []
        events += [c.data for port, c in out if port == "events"]
        pos += n
    ev = np.concatenate(events) if events else np.zeros(0, dtype=np.dtype([("index", "<i8")]))
    bursts, onsets = [], []
    labels = [event_label(lb) for lb in ev["label"]] if len(ev) else []
    for j, lb in enumerate(labels):
        if lb == "burst_onset":
            onsets.append((ev["time"][j], ev["time"][j] - ev["duration"][j]))
        elif lb == "burst_offset":
            fj = ev[j + 1]
            assert event_label(fj["label"]) == "burst_frequency" and fj["index"] == ev["index"][j]
            bursts.append((fj["time"] - fj["duration"], ev["duration"][j], fj["value"], ev["value"][j], ev["time"][j]))
    return {"bursts": np.array(bursts).reshape(-1, 5), "onsets": np.array(onsets).reshape(-1, 2), "events": ev,
            "report": node.report()}


def detect_yasa(x: np.ndarray, fs: float = SFREQ) -> np.ndarray:
    """YASA's ``spindles_detect`` with its defaults: rows ``(onset_s, duration_s, freq_hz)``."""
    import logging

    import yasa

    logging.getLogger("yasa").setLevel(logging.ERROR)
    sp = yasa.spindles_detect(x, sf=fs, verbose=False)
    if sp is None:
        return np.zeros((0, 3))
    df = sp.summary()
    return df[["Start", "Duration", "Frequency"]].to_numpy(dtype=float)


def match(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
    """One-to-one pairs ``(i, j)`` of spans ``a[i]`` and ``b[j]`` (rows ``(onset_s, duration_s, ...)``) that overlap,
    greedily by overlap length."""
    cand = []
    for i, (a0, ad) in enumerate(a[:, :2]):
        for j, (b0, bd) in enumerate(b[:, :2]):
            ov = min(a0 + ad, b0 + bd) - max(a0, b0)
            if ov > 0:
                cand.append((ov, i, j))
    used_a: set[int] = set()
    used_b: set[int] = set()
    pairs = []
    for _, i, j in sorted(cand, reverse=True):
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j))
    return sorted(pairs)


def _pr(truth: np.ndarray, found: np.ndarray) -> tuple[float, float, list[tuple[int, int]]]:
    pairs = match(truth, found)
    precision = len(pairs) / len(found) if len(found) else 1.0
    recall = len(pairs) / len(truth) if len(truth) else 1.0
    return precision, recall, pairs


def _med(v) -> float | None:
    v = [x for x in v if np.isfinite(x)]
    return round(float(np.median(v)), 4) if v else None


def evaluate(seed: int, *, seconds: float = TILE_S, params: dict | None = None, yasa: bool = True,
             chunks_seed: int | None = None) -> dict:
    """Inject spindles with ``seed`` into the tiled background; our figures, YASA's and their agreement."""
    x, truth = inject(tile(load_background(), seconds), seed)
    chunks = None
    if chunks_seed is not None:
        chunks = np.random.default_rng(chunks_seed).integers(1, 40, size=x.size)
    det = detect(x, params, chunks=chunks)
    ours = det["bursts"]
    precision, recall, pairs = _pr(truth, ours)
    on = {round(o, 6): e for e, o in det["onsets"]}
    res: dict[str, Any] = {
        "seed": seed, "seconds": seconds, "injected": len(truth), "detected": len(ours), "matched": len(pairs),
        "precision": round(precision, 4), "recall": round(recall, 4),
        "median_onset_error_s": _med([ours[j, 0] - truth[i, 0] for i, j in pairs]),
        "median_detection_latency_s": _med([on.get(round(ours[j, 0], 6), np.nan) - truth[i, 0] for i, j in pairs]),
        "median_offset_latency_s": _med([ours[j, 4] - (truth[i, 0] + truth[i, 1]) for i, j in pairs]),
        "median_duration_error_s": _med([ours[j, 1] - truth[i, 1] for i, j in pairs]),
        "median_abs_frequency_error_hz": _med([abs(ours[j, 2] - truth[i, 2]) for i, j in pairs]),
    }
    if yasa:
        ya = detect_yasa(x)
        yp, yr, ypairs = _pr(truth, ya)
        agree = match(ya, ours)
        res["yasa"] = {"detected": len(ya), "precision": round(yp, 4), "recall": round(yr, 4),
                       "median_onset_error_s": _med([ya[j, 0] - truth[i, 0] for i, j in ypairs]),
                       "ours_matching_yasa": round(len(agree) / len(ya), 4) if len(ya) else None,
                       "yasa_matching_ours": round(len(agree) / len(ours), 4) if len(ours) else None,
                       "median_onset_ours_minus_yasa_s": _med([ours[j, 0] - ya[i, 0] for i, j in agree]),
                       "median_abs_onset_ours_minus_yasa_s": _med([abs(ours[j, 0] - ya[i, 0]) for i, j in agree])}
    return res


def negative_control(seconds: float = TILE_S, params: dict | None = None) -> dict:
    """False positives per minute where there is no spindle: the tiled background, and the original 30 s
    (calibrated on its first 10 s, detecting over the remaining 20 s), ours and YASA's."""
    x = tile(load_background(), seconds)
    det = detect(x, params)
    ya = detect_yasa(x)
    searched_min = (seconds - float(NODE_PARAMS["baseline_min_s"])) / 60.0
    x30 = load_background()
    det30 = detect(x30, {**(params or {}), "baseline": "calibrated", "baseline_s": 10.0})
    return {"tiled_s": seconds, "fp": len(det["bursts"]), "fp_per_min": round(len(det["bursts"]) / searched_min, 3),
            "yasa_fp": len(ya), "yasa_fp_per_min": round(len(ya) / (seconds / 60.0), 3),
            "original_30s_fp": len(det30["bursts"]), "original_30s_yasa_fp": len(detect_yasa(x30)),
            "runs_too_short": det["report"]["too_short"], "runs_failing_peak_or_criteria": det["report"]["failed_criteria"]}


def same_events(a: np.ndarray, b: np.ndarray) -> bool:
    """Events equal field by field (NaN equal to NaN); times, computed from each chunk's start time, within 1 ns."""
    if len(a) != len(b):
        return False
    for f in a.dtype.names or ():
        if f == "time":
            if not np.allclose(a[f], b[f], rtol=0, atol=1e-9):
                return False
        elif a[f].dtype.kind == "f":
            if not np.array_equal(a[f], b[f], equal_nan=True):
                return False
        elif not np.array_equal(a[f], b[f]):
            return False
    return True


def chunking_invariant(seed: int = 0) -> bool:
    """Whole-signal events equal those of a random split (every field but the time identical)."""
    x, _ = inject(tile(load_background(), 120.0), seed)
    a = detect(x)["events"]
    b = detect(x, chunks=np.random.default_rng(seed + 1).integers(1, 50, size=x.size))["events"]
    return len(a) > 0 and same_events(a, b)


def throughput(seconds: float = 600.0) -> dict:
    """CPU seconds per second of signal, 100 Hz, one channel, chunks of 10 samples."""
    x = tile(load_background(), seconds)
    node = _node(NODE_PARAMS, SFREQ)
    node.warmup()
    t0 = time.thread_time()
    for pos in range(0, x.size, 10):
        node.process(Chunk(x[pos:pos + 10, None], pos, pos / SFREQ, SFREQ, []))
    used = time.thread_time() - t0
    return {"signal_s": seconds, "cpu_s": round(used, 4), "core_fraction": round(used / seconds, 6)}


#: Variants: the node's parameters changed from NODE_PARAMS.
VARIANTS = {"default": {}, "cocriteria": {"corr_min": 0.65, "rel_power_min": 0.2}, "min_0.4s": {"min_duration_s": 0.4}}


def summarize(per_seed: list[dict]) -> dict:
    """Pooled precision and recall (over every injected spindle), medians of the per-seed medians."""
    def pool(key: str, sub: str | None = None) -> float | None:
        vals = [(r[sub] if sub else r).get(key) for r in per_seed]
        return _med([v for v in vals if v is not None])

    injected = sum(r["injected"] for r in per_seed)
    matched = sum(r["matched"] for r in per_seed)
    detected = sum(r["detected"] for r in per_seed)
    out: dict[str, Any] = {
        "seeds": len(per_seed), "injected": injected, "detected": detected, "matched": matched,
        "precision": round(matched / detected, 4) if detected else None, "recall": round(matched / injected, 4),
        "min_precision_of_a_seed": min(r["precision"] for r in per_seed),
        "min_recall_of_a_seed": min(r["recall"] for r in per_seed),
        "median_onset_error_s": pool("median_onset_error_s"),
        "median_detection_latency_s": pool("median_detection_latency_s"),
        "median_offset_latency_s": pool("median_offset_latency_s"),
        "median_duration_error_s": pool("median_duration_error_s"),
        "median_abs_frequency_error_hz": pool("median_abs_frequency_error_hz"),
    }
    if all("yasa" in r for r in per_seed):
        yd = sum(r["yasa"]["detected"] for r in per_seed)
        ym = sum(round(r["yasa"]["recall"] * r["injected"]) for r in per_seed)
        out["yasa"] = {"detected": yd, "precision": round(ym / yd, 4) if yd else None, "recall": round(ym / injected, 4),
                       "median_onset_error_s": pool("median_onset_error_s", "yasa"),
                       "ours_matching_yasa": pool("ours_matching_yasa", "yasa"),
                       "yasa_matching_ours": pool("yasa_matching_ours", "yasa"),
                       "median_onset_ours_minus_yasa_s": pool("median_onset_ours_minus_yasa_s", "yasa"),
                       "median_abs_onset_ours_minus_yasa_s": pool("median_abs_onset_ours_minus_yasa_s", "yasa")}
    return out


def run(args: argparse.Namespace) -> int:
    from benchmarks.common import pick_variants
    from rtneuro.runtime.supervisor import machine_info

    names = pick_variants(args.variants, tuple(VARIANTS))
    if names is None:
        return 2
    seeds = list(range(10))
    variants: dict[str, dict] = {}
    for name in names:
        print(f"[bench bursts] {name}: {len(seeds)} seeds, {TILE_S:g} s of mirror-tiled N3 each ...", file=sys.stderr,
              flush=True)
        params = {**NODE_PARAMS, **VARIANTS[name]}
        per_seed = [evaluate(s, params=params, yasa=name == "default", chunks_seed=1000 + s) for s in seeds]
        variants[name] = {"params": VARIANTS[name], "summary": summarize(per_seed), "per_seed": per_seed,
                          "negative_control": negative_control(params=params)}
    out: dict[str, Any] = {"bench": "bursts", "machine": machine_info(), "background": str(BACKGROUND.relative_to(ROOT)),
           "tiling": f"mirror-tiled to {TILE_S:g} s (x, x[::-1], ...)", "node_params": NODE_PARAMS,
           "injection": "12-15 Hz, 0.6-1.8 s, Tukey(0.5), peak 4-8 x the background's median 12-15 Hz envelope, >= 3 s apart",
           "variants": variants, "chunking_invariant": chunking_invariant(), "throughput": throughput()}
    for name, v in variants.items():
        s, neg = v["summary"], v["negative_control"]
        print(f"{name}: {s['injected']} injected spindles, {s['seeds']} seeds: precision {s['precision']}, recall {s['recall']}, "
              f"median onset error {s['median_onset_error_s']} s, detection latency {s['median_detection_latency_s']} s; "
              f"negative control {neg['fp_per_min']} false positives/min")
        if "yasa" in s:
            y = s["yasa"]
            print(f"  YASA: precision {y['precision']}, recall {y['recall']}; ours matching YASA's {y['ours_matching_yasa']}, "
                  f"YASA matching ours {y['yasa_matching_ours']}, onset ours - YASA {y['median_onset_ours_minus_yasa_s']} s; "
                  f"YASA negative control {neg['yasa_fp_per_min']} false positives/min")
    print(f"chunking invariant: {out['chunking_invariant']}; CPU per second of signal: {out['throughput']['core_fraction']}")
    save_json(out, args.json)
    return 0
