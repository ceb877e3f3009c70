"""``rtneuro bench analysis``: KSG mutual information and transfer entropy beside ennemi; the online information node.

Variants:

``mi_ksg``      KSG mutual information (k = 4) of a correlated Gaussian pair,
                1,000-sample windows: ``rtneuro.analysis.mutual_info_ksg``
                (numba sweep search) and ``ennemi.estimate_mi`` (SciPy
                k-d trees) on the same standardised data, each call timed;
                medians, p99, the ratio, and the largest difference between
                the two estimates. Target (issue 18): aim for >= 10x.
``te_ksg``      the same for transfer entropy (1-sample histories): the
                Frenzel-Pompe conditional MI of the delay embedding, beside
                ennemi's conditional MI on the same embedding.
``online_te``   the ``information`` node on 16 channels (120 pairs, both
                directions: 240 columns) of a simulated 250 Hz stream, 4 s
                windows every 0.5 s: the CPU time of a frame against its
                0.5 s step (the fraction of one core), for ``te_gaussian``
                and for ``te_ksg``. Target: within one core in real time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import pick_variants, run_variants, stats
from rtneuro.runtime.supervisor import machine_info

VARIANTS = ("mi_ksg", "te_ksg", "online_te")
N = 1000
REPEATS = 40


def _pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(N)
    return x, 0.6 * x + 0.8 * rng.standard_normal(N)


def _z(a: np.ndarray) -> np.ndarray:
    return (a - a.mean(axis=0)) / a.std(axis=0)


def _time(fn, args_list) -> tuple[list[float], list[float]]:
    values, times = [], []
    for args in args_list:
        t0 = time.perf_counter_ns()
        values.append(float(fn(*args)))
        times.append((time.perf_counter_ns() - t0) / 1e3)
    return values, times


def _compare(mine, theirs, cases) -> dict:
    mine(*cases[0])  # compile / import once
    theirs(*cases[0])
    v_m, t_m = _time(mine, cases)
    v_t, t_t = _time(theirs, cases)
    a, b = stats(t_m), stats(t_t)
    return {"samples": N, "calls": len(cases), "rtneuro": a, "ennemi": b, "ratio_p50": round(b["p50_us"] / a["p50_us"], 2),
            "max_abs_difference": float(np.max(np.abs(np.subtract(v_m, v_t)))), "target_ratio": 10.0,
            "met": b["p50_us"] / a["p50_us"] >= 10.0}


def run_mi() -> dict:
    import ennemi

    from rtneuro.analysis import mutual_info_ksg

    cases = [tuple(_z(v) for v in _pair(s)) for s in range(REPEATS)]
    return _compare(lambda x, y: mutual_info_ksg(x, y, k=4, jitter=0.0),
                    lambda x, y: np.ravel(ennemi.estimate_mi(y, x, k=4, preprocess=False))[0], cases)


def run_te() -> dict:
    import ennemi

    from rtneuro.analysis import delay_embed, transfer_entropy_ksg

    cases = []
    for s in range(REPEATS):
        rng = np.random.default_rng(s)
        e, u = rng.standard_normal((2, N + 1))
        y, x = np.zeros(N + 1), np.zeros(N + 1)
        for t in range(1, N + 1):
            y[t] = 0.7 * y[t - 1] + u[t]
            x[t] = 0.5 * x[t - 1] + 0.4 * y[t - 1] + e[t]
        fut, xp, yp = delay_embed(y, x)
        cases.append((_z(fut), _z(yp[:, 0]), _z(xp[:, 0]), y, x))

    def mine(fut, yp, xp, y, x):
        return transfer_entropy_ksg(y, x, knn=4, jitter=0.0)

    def theirs(fut, yp, xp, y, x):
        return np.ravel(ennemi.estimate_mi(fut, yp, k=4, cond=xp, preprocess=False))[0]

    return _compare(mine, theirs, cases)


def run_online() -> dict:
    from rtneuro.messages import Chunk, StreamMeta
    from rtneuro.nodes import NodeContext, build_params, node_class

    fs, n_ch = 250.0, 16
    rng = np.random.default_rng(0)
    x = rng.standard_normal((int(fs * 24), n_ch))
    for t in range(1, x.shape[0]):  # each channel driven by the previous one
        x[t, 1:] += 0.4 * x[t - 1, :-1]
    out: dict = {"channels": n_ch, "pairs": n_ch * (n_ch - 1) // 2, "sfreq": fs, "window_s": 4.0, "step_s": 0.5}
    cls = node_class("information")
    meta = StreamMeta(name="eeg", kind="sig", sfreq=fs, ch_names=tuple(f"c{i}" for i in range(n_ch)), ch_types=("eeg",) * n_ch,
                      units=("uV",) * n_ch, dtype="<f8")
    for measure in ("te_gaussian", "te_ksg"):
        node = cls(build_params(cls.Params, {"measures": [measure], "window_s": 4.0, "step_s": 0.5}, "bench"), [meta],
                   NodeContext(node_id="info"))
        node.warmup()
        node.reset()
        step = int(fs * 0.5)
        frame_cpu = []
        for a in range(0, x.shape[0], step):
            t0 = time.thread_time_ns()
            got = node.process(Chunk(x[a:a + step], a, a / fs, fs, []))
            if got is not None:
                frame_cpu.append((time.thread_time_ns() - t0) / 1e3)
        s = stats(frame_cpu)
        out[measure] = {**s, "columns": len(node.outputs[""].ch_names), "core_fraction_p50": round(s["p50_us"] / 0.5e6, 4),
                        "core_fraction_p99": round(s["p99_us"] / 0.5e6, 4), "real_time": s["p99_us"] < 0.5e6}
    return out


def format_table(res: dict) -> str:
    lines = ["| variant | rtneuro p50 / p99 | reference p50 / p99 | ratio (p50) | target | met |", "|---|---|---|---|---|---|"]
    for name in ("mi_ksg", "te_ksg"):
        r = res.get(name) or {}
        if "ratio_p50" in r:
            lines.append(f"| {name}, {r['samples']} samples | {r['rtneuro']['p50_us'] / 1e3:.2f} / {r['rtneuro']['p99_us'] / 1e3:.2f} ms | "
                         f"{r['ennemi']['p50_us'] / 1e3:.2f} / {r['ennemi']['p99_us'] / 1e3:.2f} ms (ennemi) | {r['ratio_p50']:.1f}x | "
                         f">= 10x | {'yes' if r['met'] else 'no'} (estimates differ by {r['max_abs_difference']:.1e}) |")
    o = res.get("online_te") or {}
    for m in ("te_gaussian", "te_ksg"):
        if m in o:
            r = o[m]
            lines.append(f"| online `information` {m}, {o['channels']} ch ({r['columns']} columns), 4 s windows every 0.5 s | "
                         f"{r['p50_us'] / 1e3:.1f} / {r['p99_us'] / 1e3:.1f} ms a frame | | core {r['core_fraction_p50']:.3f} / "
                         f"{r['core_fraction_p99']:.3f} | < 1 core | {'yes' if r['real_time'] else 'no'} |")
    for name in VARIANTS:
        if "error" in (res.get(name) or {}):
            lines.append(f"| {name} | error: {res[name]['error']} | | | | |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    wanted = pick_variants(args.variants, VARIANTS)
    if wanted is None:
        return 2
    out: dict = {"bench": "analysis", "machine": machine_info()}
    return run_variants("analysis", wanted, {"mi_ksg": run_mi, "te_ksg": run_te, "online_te": run_online}, out, format_table,
                        args.json)
