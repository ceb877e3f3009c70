"""A sweep's results: one tidy table (Parquet and CSV), a timing table, and an HTML report with plots.

One row per job, in the jobs' order: ``job``, ``recording``, one column per
grid parameter, ``status``, ``error``, then the metrics the spec keeps. Only
what the data decides is in it (no wall times, no host names: those are in
``timings.csv``), so the same sweep twice gives the same table.
"""

from __future__ import annotations

import fnmatch
import html
import json
import math
from pathlib import Path
from typing import Any

from .job import is_timing
from .spec import Job, Spec

__all__ = ["write_results", "table", "summary", "best"]

PLOTTED = 4


def _keep(name: str, patterns: tuple[str, ...]) -> bool:
    for pat in patterns:
        if fnmatch.fnmatchcase(name, pat):
            return not is_timing(name) or is_timing(pat.rstrip("*") or "-")
    return False


def table(spec: Spec | dict, jobs: list[Job] | None, rows: dict[str, dict]):
    """The tidy table (a pandas DataFrame)."""
    import pandas as pd

    grid = [*spec.grid, *spec.seeds] if isinstance(spec, Spec) else [*spec["grid"], *(spec.get("seeds") or {})]
    patterns = spec.metrics if isinstance(spec, Spec) else tuple(spec["metrics"])
    order = [(j.index, j.key) for j in jobs] if jobs is not None else sorted((r["index"], k) for k, r in rows.items())
    by_key: dict[str, Job] = {}
    for j in jobs or []:
        by_key.setdefault(j.key, j)  # the first job of a key
    names: set[str] = set()
    for _, key in order:
        names.update(n for n in (rows.get(key) or {}).get("metrics", {}) if _keep(n, patterns))
    metrics = sorted(names)
    records = []
    for index, key in order:
        r = rows.get(key) or {"status": "missing", "error": "not run yet", "metrics": {}, "params": {}, "recording": ""}
        job = by_key.get(key)
        params = job.params if job is not None else r.get("params", {})
        rec = (job.recording.label if job.recording else "") if job is not None else r.get("recording", "")
        m = r.get("metrics") or {}
        records.append({"job": index, "recording": rec, **{g: params.get(g) for g in grid},
                        "baseline": bool(job.baseline) if job is not None else bool(r.get("baseline", False)),
                        "status": r.get("status", ""), "error": r.get("error", ""), **{n: m.get(n, math.nan) for n in metrics}})
    cols = ["job", "recording", *grid, "baseline", "status", "error", *metrics]
    df = pd.DataFrame.from_records(records, columns=cols)
    base = spec.baseline if isinstance(spec, Spec) else spec.get("baseline")
    if base and df["baseline"].any():
        seeds = list(spec.seeds) if isinstance(spec, Spec) else list(spec.get("seeds") or {})
        refs = df[df["baseline"] & (df["status"] == "ok")].set_index(["recording", *seeds])
        for m in base["relative"]:
            if m not in df.columns:
                continue
            ref = refs[m]
            keys = list(zip(df["recording"], *(df[x] for x in seeds), strict=True)) if seeds else list(df["recording"])
            df[f"{m}.vs_baseline"] = [v - float(ref.get(k, math.nan)) if k in ref.index else math.nan
                                      for v, k in zip(df[m], keys, strict=True)]
    return df


def axes(spec: Spec) -> list[str]:
    """The grid parameters that take more than one value (seeds and fixed values are averaged over)."""
    return [g for g, v in spec.grid.items() if len(v) > 1]


def best(df, grid: list[str], objective: dict | None) -> dict | None:
    """The grid point with the best mean of the objective over recordings and seeds, and per recording."""
    if not objective or objective["metric"] not in df.columns or df.empty:
        return None
    metric, goal = objective["metric"], objective.get("goal", "min")
    ok = df[(df["status"] == "ok") & ~df["baseline"].astype(bool)]
    if ok.empty:
        return None

    def pick(frame):
        if not grid:
            return {"params": {}, "value": float(frame[metric].mean())}
        means = frame.groupby(grid, dropna=False)[metric].mean()
        means = means.dropna()
        if means.empty:
            return None
        idx = means.idxmin() if goal == "min" else means.idxmax()
        idx = idx if isinstance(idx, tuple) else (idx,)
        return {"params": {g: _plain(v) for g, v in zip(grid, idx, strict=True)}, "value": float(means.loc[idx if len(grid) > 1 else idx[0]])}

    out = {"metric": metric, "goal": goal, "overall": pick(ok), "per_recording": {}}
    for rec, frame in ok.groupby("recording"):
        if rec:
            out["per_recording"][rec] = pick(frame)
    return out


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _plots(df, grid: list[str], metrics: list[str], folder: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    plots = folder / "plots"
    plots.mkdir(exist_ok=True)
    ok = df[(df["status"] == "ok") & ~df["baseline"].astype(bool)]
    out = []
    for i, metric in enumerate(metrics):
        if ok.empty or ok[metric].isna().all():
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        if len(grid) >= 2:
            piv = ok.groupby([grid[0], grid[1]])[metric].mean().unstack(grid[1])
            im = ax.imshow(piv.values, aspect="auto", origin="lower", cmap="viridis")
            ax.set_xticks(range(piv.shape[1]), [str(c) for c in piv.columns])
            ax.set_yticks(range(piv.shape[0]), [str(r) for r in piv.index])
            ax.set_xlabel(grid[1])
            ax.set_ylabel(grid[0])
            fig.colorbar(im, ax=ax, label=metric)
            for (r, c), v in np.ndenumerate(piv.values):
                ax.text(c, r, f"{v:.3g}", ha="center", va="center", color="w", fontsize=8)
            title = f"{metric}: mean over recordings and seeds" + (f" and {', '.join(grid[2:])}" if len(grid) > 2 else "")
        elif len(grid) == 1:
            g = grid[0]
            for rec, frame in ok.groupby("recording"):
                s = frame.groupby(g)[metric].mean()
                ax.plot([str(x) for x in s.index], s.values, marker="o", alpha=0.35, lw=1, label=str(rec) if rec else None)
            s = ok.groupby(g)[metric].mean()
            ax.plot([str(x) for x in s.index], s.values, marker="o", color="k", lw=2, label="mean")
            ax.set_xlabel(g)
            ax.set_ylabel(metric)
            if ok["recording"].nunique() <= 8:
                ax.legend(fontsize=7)
            title = f"{metric} over {g}"
        else:
            ax.bar(range(len(ok)), ok[metric].values)
            ax.set_xticks(range(len(ok)), [str(r) for r in ok["recording"]], rotation=60, ha="right", fontsize=7)
            ax.set_ylabel(metric)
            title = f"{metric} per recording"
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        name = f"metric{i}.png"
        fig.savefig(plots / name, dpi=90)
        plt.close(fig)
        out.append((f"plots/{name}", title))
        if ok["recording"].nunique() > 1 and grid:
            fig, ax = plt.subplots(figsize=(6.4, 3.6))
            recs = sorted(ok["recording"].unique())
            ax.boxplot([ok[ok["recording"] == r][metric].dropna().values for r in recs])
            ax.set_xticks(range(1, len(recs) + 1), recs, rotation=60, ha="right", fontsize=7)
            ax.set_ylabel(metric)
            ax.set_title(f"{metric}: distribution over the grid, per recording", fontsize=10)
            fig.tight_layout()
            name = f"metric{i}_recordings.png"
            fig.savefig(plots / name, dpi=90)
            plt.close(fig)
            out.append((f"plots/{name}", f"{metric} per recording"))
    return out


def _plotted(df, spec_metrics: list[str], objective: dict | None, asked: tuple[str, ...] = ()) -> list[str]:
    if asked:
        return [m for m in asked if m in df.columns]
    first = [objective["metric"]] if objective and objective["metric"] in df.columns else []
    varying = [c for c in spec_metrics if c not in first and df[c].nunique(dropna=True) > 1]
    return (first + varying)[:PLOTTED]


def write_results(spec: Spec, jobs: list[Job], rows: dict[str, dict], folder: Path) -> dict:
    """``results.parquet``, ``results.csv``, ``timings.csv``, ``best.json`` and ``report.html`` in ``folder``."""
    import pandas as pd

    df = table(spec, jobs, rows)
    df.to_csv(folder / "results.csv.tmp", index=False)
    (folder / "results.csv.tmp").replace(folder / "results.csv")
    try:
        df.to_parquet(folder / "results.parquet.tmp", index=False)
    except (TypeError, ValueError, ArithmeticError):  # a column of mixed types (a grid of numbers and text): as text
        mixed = {c: df[c].map(lambda v: None if v is None else str(v)) for c in df.columns if df[c].dtype == object}
        df.assign(**mixed).to_parquet(folder / "results.parquet.tmp", index=False)
    (folder / "results.parquet.tmp").replace(folder / "results.parquet")
    timing = pd.DataFrame.from_records([{"job": j.index, "key": j.key, "worker": (rows.get(j.key) or {}).get("worker", ""),
                                         "wall_s": (rows.get(j.key) or {}).get("wall_s"), "run_s": (rows.get(j.key) or {}).get("run_s"),
                                         **{k: v for k, v in ((rows.get(j.key) or {}).get("metrics") or {}).items() if is_timing(k)}}
                                        for j in jobs])
    timing.to_csv(folder / "timings.csv", index=False)
    grid = axes(spec)
    b = best(df, grid, spec.objective)
    (folder / "best.json").write_text(json.dumps(b, indent=1, default=str))
    metrics = [c for c in df.columns if c not in ("job", "recording", *spec.grid, *spec.seeds, "baseline", "status", "error")]
    images = _plots(df, grid, _plotted(df, metrics, spec.objective, spec.plots), folder)
    (folder / "report.html").write_text(_html(spec, df, grid, b, images))
    return {"table": df, "best": b}


def _html(spec: Spec, df, grid: list[str], b: dict | None, images: list[tuple[str, str]]) -> str:
    e = html.escape
    failed = df[df["status"] != "ok"]
    parts = [f"<!doctype html><meta charset='utf-8'><title>{e(spec.name)}: sweep</title>",
             "<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}img{max-width:100%}</style>",
             f"<h1>{e(spec.name)}</h1><p>graph <code>{e(str(spec.config_path))}</code>; {len(df)} jobs "
             f"({(df['status'] == 'ok').sum()} ok, {len(failed)} failed or not run); grid: "
             + (", ".join(f"<code>{e(g)}</code> {e(str(v))}" for g, v in spec.grid.items()) or "none")
             + (("; seeds: " + ", ".join(f"<code>{e(g)}</code> {e(str(v))}" for g, v in spec.seeds.items())) if spec.seeds else "")
             + f"; recordings: {df['recording'].nunique() if spec.recordings else 'the graph’s own sources'}</p>"]
    if b is not None and b.get("overall"):
        parts.append(f"<h2>Best parameters ({e(b['goal'])} of <code>{e(b['metric'])}</code>)</h2>"
                     f"<p>overall (mean over recordings): <b>{e(json.dumps(b['overall']['params']))}</b> = {b['overall']['value']:.6g}</p>")
        if b["per_recording"]:
            parts.append("<table><tr><th>recording</th><th>best parameters</th><th>value</th></tr>" + "".join(
                f"<tr><td>{e(r)}</td><td>{e(json.dumps(v['params']))}</td><td>{v['value']:.6g}</td></tr>"
                for r, v in b["per_recording"].items() if v) + "</table>")
    for src, title in images:
        parts.append(f"<h3>{e(title)}</h3><img src='{e(src)}' alt='{e(title)}'>")
    if len(failed):
        parts.append("<h2>Failed jobs</h2><table><tr><th>job</th><th>recording</th><th>error</th></tr>" + "".join(
            f"<tr><td>{r.job}</td><td>{e(str(r.recording))}</td><td>{e(str(r.error))}</td></tr>" for r in failed.itertuples()) + "</table>")
    parts.append("<h2>Table</h2><p>results.parquet and results.csv hold every column; this shows the first rows.</p>")
    parts.append(df.head(200).to_html(index=False, na_rep="", float_format=lambda x: f"{x:.6g}"))
    return "\n".join(parts)


def summary(folder: str | Path) -> str:
    """The results folder's summary in text (``rtneuro sweep --summary RESULTS``)."""
    import pandas as pd

    folder = Path(folder)
    if not (folder / "results.csv").exists():
        from ..errors import ConfigError

        raise ConfigError(f"{folder} holds no sweep results (no results.csv); give the folder 'rtneuro sweep' wrote")
    meta = json.loads((folder / "sweep.json").read_text()) if (folder / "sweep.json").exists() else {}
    df = pd.read_csv(folder / "results.csv", keep_default_na=False, na_values=[""])
    df[["recording", "error"]] = df[["recording", "error"]].fillna("")
    grid = [*(meta.get("grid") or {}), *(meta.get("seeds") or {})]
    lines = [f"sweep {meta.get('name', folder.name)}: {len(df)} jobs, {(df['status'] == 'ok').sum()} ok, "
             f"{(df['status'] == 'failed').sum()} failed, {(df['status'] == 'missing').sum()} not run"]
    b = json.loads((folder / "best.json").read_text()) if (folder / "best.json").exists() else None
    if b and b.get("overall"):
        lines.append(f"best ({b['goal']} of {b['metric']}): {json.dumps(b['overall']['params'])} = {b['overall']['value']:.6g}")
        for rec, v in (b.get("per_recording") or {}).items():
            if v:
                lines.append(f"  {rec}: {json.dumps(v['params'])} = {v['value']:.6g}")
    for r in df[df["status"] == "failed"].itertuples():
        lines.append(f"  job {r.job} ({r.recording or 'no recording'}) failed: {r.error}")
    metrics = [c for c in df.columns if c not in ("job", "recording", *grid, "baseline", "status", "error")]
    first = [b["metric"]] if b and b.get("metric") in metrics else []
    show = ["job", *(["recording"] if df["recording"].astype(bool).any() else []), *grid,
            *(first + [m for m in metrics if m not in first and df[m].nunique(dropna=True) > 1])[:4]]
    lines.append(df[show].head(20).to_string(index=False, float_format=lambda x: f"{x:.6g}"))
    lines.append(f"report: {folder / 'report.html'}")
    return "\n".join(lines)
