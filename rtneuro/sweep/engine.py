"""Running a sweep's jobs on Dask: an embedded LocalCluster, or a cluster's scheduler.

Each job's row is written as soon as it finishes (``jobs/<key>.json``,
atomically), so an interrupted sweep loses only the jobs that were running;
a rerun skips every job whose key has a row (``force`` reruns them) and
reruns the failed ones. The tables and the report are made from the rows.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import RtneuroError
from .job import payload, run_job
from .spec import Job, Spec, expand

__all__ = ["run_sweep", "run_optimize", "read_rows", "write_row"]


def write_row(folder: Path, row: dict) -> None:
    """``jobs/<key>.json``, written whole or not at all."""
    jobs = folder / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    tmp = jobs / f".{row['key']}.json.tmp"
    tmp.write_text(json.dumps(row, sort_keys=True, default=str))
    os.replace(tmp, jobs / f"{row['key']}.json")


def read_rows(folder: Path) -> dict[str, dict]:
    """Every job row in a results folder, by key (a file that does not parse is not a row)."""
    out = {}
    for f in sorted((folder / "jobs").glob("*.json")):
        try:
            row = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(row, dict) and row.get("key") == f.stem:
            out[f.stem] = row
    return out


def _fmt_s(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """One line, rewritten: jobs done, failed, skipped, and the time left."""

    def __init__(self, total: int, skipped: int, workers: int, out: Callable[[str], Any] | None) -> None:
        self.total, self.skipped, self.workers, self.out = total, skipped, max(workers, 1), out
        self.done = self.failed = 0
        self.t0 = time.monotonic()
        self.tty = out is not None and sys.stderr.isatty()

    def update(self, final: bool = False) -> None:
        if self.out is None:
            return
        n = self.done + self.failed
        todo = self.total - self.skipped
        elapsed = time.monotonic() - self.t0
        left = elapsed / n * (todo - n) if n else float("nan")
        width = 24
        filled = int(width * (n + self.skipped) / max(self.total, 1))
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {n + self.skipped}/{self.total} jobs: {self.done} done, "
                f"{self.failed} failed" + (f", {self.skipped} already done" if self.skipped else "")
                + (f", {_fmt_s(left)} left" if n and not final else f", {_fmt_s(elapsed)}" if final else ""))
        if self.tty:
            self.out("\r" + line + ("\n" if final else ""))
        elif final or (n < todo and (n == 1 or n % max(1, todo // 10) == 0)):
            self.out(line + "\n")


@contextlib.contextmanager
def _dask(scheduler: str | None, workers: int) -> Iterator[Any]:
    """A Dask client (of an embedded LocalCluster without ``scheduler``), closed with its cluster on the way out."""
    client, cluster = _client(scheduler, workers)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _client(scheduler: str | None, workers: int) -> tuple[Any, Any]:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise RtneuroError("rtneuro sweep runs on Dask: pip install 'dask[distributed]'") from None
    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except (OSError, TimeoutError) as exc:
            raise RtneuroError(f"--scheduler {scheduler}: no Dask scheduler answers there ({exc}); start one "
                               "(dask scheduler) or leave --scheduler out to run here") from None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=40)
    return Client(cluster), cluster


def _run_jobs(client: Any, spec: Spec, todo: list[Job], folder: Path, progress: Progress) -> None:
    """Submit ``todo`` and write each row as its job finishes (KeyboardInterrupt cancels what is left)."""
    from distributed import as_completed

    by_future = {}
    futures = []
    try:
        for j in todo:
            f = client.submit(run_job, payload(spec, j), key=f"rtneuro-job-{j.key}", pure=False, retries=0)
            by_future[f] = j
            futures.append(f)
        for f in as_completed(futures):
            j = by_future[f]
            try:
                row = f.result()
            except Exception as exc:  # the worker died under it, or Dask could not run it
                row = {"index": j.index, "key": j.key, "recording": j.recording.label if j.recording else "",
                       "params": j.params, "status": "failed", "metrics": {}, "worker": "",
                       "error": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]} (the worker running it died or Dask refused it)"}
            write_row(folder, row)
            if row["status"] == "ok":
                progress.done += 1
            else:
                progress.failed += 1
            progress.update()
    except KeyboardInterrupt:
        for f in futures:
            f.cancel()
        raise


def _start(spec: Spec, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sweep.json").write_text(json.dumps(spec.to_dict(), indent=1, default=str))


def run_sweep(spec: Spec, *, scheduler: str | None = None, workers: int | None = None, force: bool = False,
              out: Callable[[str], Any] | None = sys.stderr.write, jobs: list[Job] | None = None) -> dict:
    """Run the jobs of ``spec`` that have no row yet (all with ``force``); write the tables and the report.

    Returns ``{"folder", "jobs", "ran", "skipped", "failed", "missing", "interrupted", "wall_s", "jobs_wall_s"}``
    (``jobs_wall_s``: from the first job's submission to the last row, without starting the cluster and writing
    the report).
    """
    from .report import write_results

    folder = spec.out
    _start(spec, folder)
    jobs = expand(spec) if jobs is None else jobs
    rows = read_rows(folder)
    todo = [j for j in jobs if force or rows.get(j.key, {}).get("status") != "ok"]
    n_workers = workers or spec.workers or os.cpu_count() or 1
    progress = Progress(len(jobs), len(jobs) - len(todo), n_workers, out)
    t0 = time.monotonic()
    interrupted = False
    jobs_wall = 0.0
    if todo:
        with _dask(scheduler, n_workers) as client:
            t_jobs = time.monotonic()
            try:
                _run_jobs(client, spec, todo, folder, progress)
            except KeyboardInterrupt:
                interrupted = True
            jobs_wall = time.monotonic() - t_jobs
    progress.update(final=True)
    rows = read_rows(folder)
    write_results(spec, jobs, rows, folder)
    failed = sum(1 for j in jobs if rows.get(j.key, {}).get("status") == "failed")
    missing = sum(1 for j in jobs if j.key not in rows)
    if interrupted and out is not None:
        out(f"interrupted: {missing} jobs have no result yet; run the same command again to go on\n")
    return {"folder": str(folder), "jobs": len(jobs), "ran": len(todo), "skipped": len(jobs) - len(todo), "failed": failed,
            "missing": missing, "interrupted": interrupted, "wall_s": round(time.monotonic() - t0, 3),
            "jobs_wall_s": round(jobs_wall, 3)}


def _suggest(trial: Any, name: str, space: Any) -> Any:
    if isinstance(space, list):
        return trial.suggest_categorical(name, space)
    lo, hi, step = space["low"], space["high"], space.get("step")
    if all(isinstance(x, int) for x in (lo, hi)) and (step is None or isinstance(step, int)):
        return trial.suggest_int(name, lo, hi, step=step or 1, log=space["log"])
    return trial.suggest_float(name, float(lo), float(hi), step=step, log=space["log"])


def run_optimize(spec: Spec, metric: str, trials: int, *, goal: str = "min", scheduler: str | None = None,
                 workers: int | None = None, out: Callable[[str], Any] | None = sys.stderr.write) -> dict:
    """Optuna's TPE sampler (seeded: the same study twice) over ``spec.search``; each trial is the jobs of one
    sampled point (every recording and seed, the grid's fixed values) on the same Dask cluster, its value the mean
    of ``metric`` over them. The rows join the sweep's table; ``best.json`` has the best trial."""
    try:
        import optuna
    except ImportError:
        raise RtneuroError("--optimize uses Optuna: pip install optuna") from None
    from dataclasses import replace

    from ..errors import ConfigError
    from .report import write_results

    if not spec.search:
        raise ConfigError("--optimize needs search: in the spec (node.param: {low: A, high: B} or a list of choices)")
    if any(len(v) > 1 for v in spec.grid.values()):
        raise ConfigError("--optimize: the grid may only fix values (one each); the search: ranges are what is searched")
    folder = spec.out
    _start(spec, folder)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize" if goal == "min" else "maximize",
                                sampler=optuna.samplers.TPESampler(seed=0))
    n_workers = workers or spec.workers or os.cpu_count() or 1
    t0 = time.monotonic()
    all_jobs: list[Job] = []
    sampled: dict[str, list] = {n: [] for n in spec.search}
    history = []
    interrupted = False
    with _dask(scheduler, n_workers) as client:
        try:
            for t in range(trials):
                trial = study.ask()
                point = {n: _suggest(trial, n, sp) for n, sp in spec.search.items()}
                for n, v in point.items():
                    sampled[n].append(v)
                sub = replace(spec, grid={**spec.grid, **{n: [v] for n, v in point.items()}})
                known = {j.key for j in all_jobs}  # the baseline arm is the same jobs in every trial: once
                fresh = [j for j in expand(sub) if not (j.baseline and j.key in known)]
                jobs = [replace(j, index=len(all_jobs) + i) for i, j in enumerate(fresh)]
                all_jobs += jobs
                rows = read_rows(folder)
                todo = [j for j in jobs if rows.get(j.key, {}).get("status") != "ok"]
                progress = Progress(len(jobs), len(jobs) - len(todo), n_workers, None)
                _run_jobs(client, sub, todo, folder, progress)
                rows = read_rows(folder)
                values = [rows[j.key]["metrics"].get(metric) for j in jobs if not j.baseline and rows.get(j.key, {}).get("status") == "ok"]
                values = [v for v in values if isinstance(v, (int, float)) and v == v]
                if values:
                    value = sum(values) / len(values)
                    study.tell(trial, value)
                else:
                    value = None
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                history.append({"trial": t, "params": point, "value": value, "jobs": len(jobs)})
                if out is not None:
                    shown = "failed" if value is None else f"{value:.6g}"
                    out(f"trial {t + 1}/{trials}: {json.dumps(point)} -> {metric} {shown}\n")
        except KeyboardInterrupt:
            interrupted = True
    (folder / "trials.json").write_text(json.dumps(history, indent=1, default=str))
    table_spec = replace(spec, grid={**spec.grid, **{n: sorted(set(v), key=str) for n, v in sampled.items()}},
                         objective={"metric": metric, "goal": goal})
    rows = read_rows(folder)
    write_results(table_spec, all_jobs, rows, folder)
    done = [h for h in history if h["value"] is not None]
    best = None
    if done:
        best = (min if goal == "min" else max)(done, key=lambda h: h["value"])
        (folder / "best.json").write_text(json.dumps({"metric": metric, "goal": goal, "overall": {"params": best["params"], "value": best["value"]},
                                                     "per_recording": {}, "trials": len(history)}, indent=1, default=str))
    failed = sum(1 for j in all_jobs if rows.get(j.key, {}).get("status") == "failed")
    return {"folder": str(folder), "jobs": len(all_jobs), "trials": len(history), "failed": failed, "missing": 0,
            "interrupted": interrupted, "best": best, "wall_s": round(time.monotonic() - t0, 3)}
