"""``rtneuro bench sweep``: 40 replays of the aDBS loop on Dask, with 1 and 2 workers; per-job overhead.

The jobs are the shipped aDBS sweep's graph (``configs/adbs_sim.yaml``:
simulated basal ganglia -> beta power -> dual-threshold aDBS -> simulated
stimulator, on the virtual clock) with 30 s of simulated brain each (the shipped sweep's): 5 upper
thresholds times 8 seeds. Variants:

``workers``   the 40 jobs on an embedded ``LocalCluster`` of 1 worker, then of
              2 workers (one thread each), every job run (``force``): the
              jobs' wall time (from the first submission to the last row;
              each worker's first job loads the kernels) and the whole
              command's (with starting the cluster and writing the report),
              and the speed-up of the jobs' wall time. Target (issue 17):
              2 workers at least 1.8x faster than 1.
``overhead``  5 of the jobs as a sweep job (the row's ``wall_s``: the job in
              a worker, from its payload to its row; the worker's first,
              which loads the kernels, is one of the five) and as the user
              would run the same graph,
              ``rtneuro run CONFIG --speed max`` in a fresh process; medians
              and the ratio. Target: within 10 %.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import pick_variants, run_variants
from rtneuro.runtime.supervisor import machine_info

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("workers", "overhead")
UPPER = [10.0, 10.5, 11.0, 11.5, 12.0]
SEEDS = [1, 2, 3, 4, 5, 6, 7, 8]
DURATION_S = 30
TARGET_SPEEDUP = 1.8
TARGET_OVERHEAD = 1.10


def _spec(folder: Path, upper: list[float], seeds: list[int]):
    from rtneuro.sweep import load_spec

    p = folder / "bench.yaml"
    p.write_text(yaml.safe_dump({"name": "bench-sweep", "config": str(ROOT / "configs" / "adbs_sim.yaml"),
                                 "grid": {"ctl.upper": upper, "brain.duration_s": DURATION_S}, "seeds": {"brain.seed": seeds},
                                 "metrics": ["stimulation.*"], "objective": {"metric": "stimulation.stim.energy_uj", "goal": "min"}}))
    return load_spec(p)


def run_workers() -> dict:
    from rtneuro.sweep import run_sweep

    out: dict = {"jobs": len(UPPER) * len(SEEDS), "job_brain_s": DURATION_S}
    with tempfile.TemporaryDirectory(prefix="rtn-bench-sweep-") as d:
        spec = _spec(Path(d), UPPER, SEEDS)
        for n in (1, 2):
            s = dataclasses.replace(spec, out=Path(d) / f"w{n}")
            t0 = time.monotonic()
            res = run_sweep(s, workers=n, force=True, out=None)
            wall = time.monotonic() - t0
            print(f"[bench sweep] {n} worker(s): {res['jobs']} jobs in {res['jobs_wall_s']:.1f} s, {wall:.1f} s in all "
                  f"({res['failed']} failed)", file=sys.stderr)
            out[f"workers_{n}"] = {"jobs_wall_s": res["jobs_wall_s"], "wall_s": round(wall, 2), "failed": res["failed"],
                                   "jobs_per_s": round(res["jobs"] / res["jobs_wall_s"], 3)}
        same = (Path(d) / "w1" / "results.csv").read_bytes() == (Path(d) / "w2" / "results.csv").read_bytes()
    out["speedup"] = round(out["workers_1"]["jobs_wall_s"] / out["workers_2"]["jobs_wall_s"], 3)
    out["speedup_whole_command"] = round(out["workers_1"]["wall_s"] / out["workers_2"]["wall_s"], 3)
    out["same_table"] = same
    out["met"] = out["speedup"] >= TARGET_SPEEDUP and same
    return out


def run_overhead() -> dict:
    from rtneuro.sweep import expand, read_rows, run_sweep
    from rtneuro.sweep.job import apply_params

    with tempfile.TemporaryDirectory(prefix="rtn-bench-sweep-") as d:
        spec = dataclasses.replace(_spec(Path(d), UPPER[:1], SEEDS[:5]), out=Path(d) / "res")
        jobs = expand(spec)
        run_sweep(spec, workers=1, force=True, out=None)
        rows = read_rows(spec.out)
        job_s = [rows[j.key]["wall_s"] for j in jobs]
        plain_s = []
        for j in jobs:
            cfg = Path(d) / f"plain{j.index}.yaml"
            # the same graph and parameters as the user writes them (its processes as configured)
            cfg.write_text(yaml.safe_dump(apply_params(yaml.safe_load(spec.config_text), j.params), sort_keys=False))
            t0 = time.monotonic()
            r = subprocess.run([sys.executable, "-m", "rtneuro", "run", str(cfg), "--speed", "max", "--quiet"],
                               cwd=ROOT / "configs", capture_output=True, text=True, timeout=300)
            plain_s.append(time.monotonic() - t0)
            if r.returncode != 0:
                raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}")
    job, plain = statistics.median(job_s), statistics.median(plain_s)
    return {"jobs": len(jobs), "sweep_job_s": {"median": round(job, 3), "all": [round(x, 3) for x in job_s]},
            "rtneuro_run_s": {"median": round(plain, 3), "all": [round(x, 3) for x in plain_s]},
            "ratio": round(job / plain, 3), "met": job / plain <= TARGET_OVERHEAD}


def format_table(res: dict) -> str:
    lines = ["| measure | value | target | met |", "|---|---|---|---|"]
    w = res.get("workers") or {}
    if "speedup" in w:
        for n in (1, 2):
            r = w[f"workers_{n}"]
            lines.append(f"| {w['jobs']} jobs, {n} worker{'s' if n > 1 else ''}: jobs / whole command | "
                         f"{r['jobs_wall_s']:.1f} s / {r['wall_s']:.1f} s | | |")
        lines.append(f"| speed-up 2 workers / 1 (jobs) | {w['speedup']:.2f}x | >= {TARGET_SPEEDUP} | {'yes' if w['speedup'] >= TARGET_SPEEDUP else 'NO'} |")
        lines.append(f"| speed-up 2 workers / 1 (whole command) | {w['speedup_whole_command']:.2f}x | | |")
        lines.append(f"| same table with 1 and 2 workers | {w['same_table']} | True | {'yes' if w['same_table'] else 'NO'} |")
    o = res.get("overhead") or {}
    if "ratio" in o:
        lines.append(f"| sweep job (median of {o['jobs']}) | {o['sweep_job_s']['median']:.2f} s | | |")
        lines.append(f"| rtneuro run --speed max, same job (median) | {o['rtneuro_run_s']['median']:.2f} s | | |")
        lines.append(f"| ratio job / run | {o['ratio']:.3f} | <= {TARGET_OVERHEAD} | {'yes' if o['met'] else 'NO'} |")
    for name in VARIANTS:
        if "error" in (res.get(name) or {}):
            lines.append(f"| {name} | error: {res[name]['error']} | | |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    wanted = pick_variants(args.variants, VARIANTS)
    if wanted is None:
        return 2
    out: dict = {"bench": "sweep", "machine": machine_info()}
    return run_variants("sweep", wanted, {"workers": run_workers, "overhead": run_overhead}, out, format_table, args.json)
