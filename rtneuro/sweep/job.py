"""One sweep job: the graph with a recording and a point of the grid, replayed on the virtual clock.

What travels to a worker is plain data (:func:`payload`): the graph's text,
the folder its relative paths start from, the recording's path, the
parameters; the worker builds and runs the graph with the same code as
``rtneuro run --speed max`` (a :class:`~rtneuro.runtime.supervisor.Supervisor`,
its nodes in one process), and returns one row: the metrics flattened from
the run report, or the one-line error.
"""

from __future__ import annotations

import copy
import importlib
import io
import math
import socket
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, RtneuroError
from .spec import FILE_SOURCES, LIVE_SOURCES, TIMING_PREFIXES, Job, Spec

__all__ = ["payload", "apply_params", "job_config", "run_job", "flatten_report"]

#: the job's nodes all run in this process (one core per job; a worker runs one job at a time)
JOB_PROCESS = "job"
#: sinks that write or send something: a sweep job has no side effect
SIDE_EFFECT_SINKS = ("console", "jsonl", "lsl_outlet", "recorder")


def payload(spec: Spec, job: Job) -> dict:
    """What a worker needs for ``job``: text, paths and numbers (no code)."""
    return {"index": job.index, "key": job.key, "config_text": spec.config_text, "config_dir": str(spec.config_path.parent),
            "node": spec.node, "recording": job.recording.path if job.recording else None,
            "label": job.recording.label if job.recording else "", "params": job.params, "user_metrics": list(spec.user_metrics)}


def _set(params: dict, path: list[str], value: Any) -> None:
    d = params
    for k in path[:-1]:
        nxt = d.get(k)
        if not isinstance(nxt, dict):
            nxt = d[k] = {} if nxt is None else nxt
            if not isinstance(nxt, dict):
                raise ConfigError(f"{'.'.join(path)}: {k} is not a mapping")
        d = nxt
    d[path[-1]] = value


def apply_params(doc: dict, params: dict[str, Any]) -> dict:
    """Set ``node.param`` (or ``node.param.key`` inside a mapping) values in a graph document, in place."""
    by_id = {str(n.get("id")): n for n in doc["nodes"]}
    for name, value in params.items():
        nid, _, par = name.partition(".")
        n = by_id[nid]
        n["params"] = dict(n.get("params") or {})
        _set(n["params"], par.split("."), value)
    return doc


def job_config(config: dict, node: str | None, recording: str | None, params: dict[str, Any]) -> dict:
    """The graph a job runs: ``config`` with the recording bound to ``node``, the parameters set, as fast as
    possible, every node in one process, no control server, no pages, and no sink with a side effect."""
    from ..nodes import node_class

    doc = copy.deepcopy(config)
    nodes = doc["nodes"]
    by_id = {str(n.get("id")): n for n in nodes}
    if recording is not None and node is not None:
        src = by_id[node]
        kind = src.get("type")
        mine = _session_streams(recording, node) if str(recording).lower().endswith(".xdf") else None
        if mine is not None:  # an rtneuro session: what this source produced, as the replay check plays it
            src["type"] = "session_replay"
            src["params"] = {"path": recording, "streams": mine}
        elif str(recording).lower().endswith(".xdf") and kind != "xdf_replay":
            src["type"] = "xdf_replay"
            src["params"] = {"path": recording}
        elif kind in FILE_SOURCES:
            src["params"] = {**(src.get("params") or {}), "path": recording}
        elif kind in LIVE_SOURCES:
            src["type"] = "file_replay"
            src["params"] = {"path": recording}
        else:
            raise ConfigError(f"recordings.node: source {node!r} is a {kind}, which reads no file")
    apply_params(doc, params)
    kept = []
    for n in nodes:
        try:
            cls = node_class(str(n.get("type", "")))
        except ConfigError:
            kept.append(n)  # load_graph says what is wrong with it
            continue
        if cls.category == "sink" and n.get("type") in SIDE_EFFECT_SINKS:
            continue
        if cls.category == "source" and n.get("type") in LIVE_SOURCES:
            raise ConfigError(f"source {n.get('id')!r} reads LSL live: a sweep replays recordings (name it in recordings.node)")
        if cls.category == "stimulator":
            driver = (n.get("params") or {}).get("driver", "simulated")
            if driver != "simulated":
                raise ConfigError(f"stimulator {n.get('id')!r} drives {driver!r}: a sweep never drives hardware; "
                                  "use driver: simulated (and its profile) in the sweep's config")
            n["params"] = {k: v for k, v in (n.get("params") or {}).items() if k != "log_path"}
        kept.append({**n, "process": JOB_PROCESS})
    doc["nodes"] = kept
    runtime = {k: v for k, v in (doc.get("runtime") or {}).items() if k not in ("realtime_priority",)}
    doc["runtime"] = {**runtime, "speed": "max"}
    doc["processes"] = {JOB_PROCESS: {"restart": "never"}}
    doc.pop("transport", None)
    doc.pop("ui", None)
    doc["control"] = {"enabled": False}
    return doc


def _session_streams(path: str, node: str) -> list[str] | None:
    """The streams source ``node`` produced in an rtneuro session (None: another XDF file)."""
    from ..recording.replay import session_info
    from ..recording.xdf_read import read_session

    session = read_session(path, names=())
    if not session_info(session).get("config"):
        return None
    mine = [n for n in session.names if n == node or n.startswith(node + ".")]
    if not mine:
        raise ConfigError(f"session {path} holds no stream of source {node!r} (it holds {[n for n in session.names if not n.startswith('rtneuro.')]})")
    return mine


def _data_span(report: dict) -> float:
    spans = [s["samples"] / s["sfreq"] for s in (report.get("streams") or {}).values()
             if s.get("kind") == "sig" and (s.get("sfreq") or 0) > 0]
    return max(spans, default=0.0)


def flatten_report(report: dict) -> dict[str, float]:
    """The run report's numbers under dotted names: ``duration_s``, ``commands.*``, ``stimulation.<node>.*``
    (on fraction, pulses, charge, energy over the channels), ``<node>.*`` (each node's report), ``compute_us.*``."""
    out: dict[str, float] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, (int, float)):  # bools too
            out[prefix] = float(v)
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}", x)

    span = _data_span(report)
    out["duration_s"] = round(span, 9)
    walk("commands", report.get("commands") or {})
    for nid, rep in (report.get("nodes") or {}).items():
        walk(str(nid), rep)
        drv = rep.get("driver") if isinstance(rep, dict) else None
        if isinstance(drv, dict) and isinstance(drv.get("on_time_s"), dict):
            on = sum(float(x) for x in drv["on_time_s"].values())
            n_ch = max(len(drv["on_time_s"]), 1)
            out[f"stimulation.{nid}.on_fraction"] = on / (n_ch * span) if span > 0 else math.nan
            for field, name in (("pulses", "pulses"), ("charge_uc", "charge_uc"), ("energy_uj_1kohm", "energy_uj")):
                if isinstance(drv.get(field), dict):
                    out[f"stimulation.{nid}.{name}"] = sum(float(x) for x in drv[field].values())
    for nid, st in (report.get("compute_us") or {}).items():
        for q in ("p50", "p99"):
            if isinstance(st, dict) and isinstance(st.get(q), (int, float)):
                out[f"compute_us.{nid}.{q}"] = float(st[q])
    return out


def _user_metrics(names: list[str], report: dict, streams: dict) -> dict[str, float]:
    out = {}
    for name in names:
        module, _, fn = name.partition(":")
        func = getattr(importlib.import_module(module), fn, None)
        if not callable(func):
            raise ConfigError(f"user metric {name}: {module} has no function {fn!r}")
        got = func(report, streams)
        if not isinstance(got, dict):
            raise ConfigError(f"user metric {name} returned {type(got).__name__}, not a dict of name -> number")
        for k, v in got.items():
            out[f"user.{k}"] = float(v)
    return out


def _streams(session: Path) -> dict:
    from ..recording.xdf_read import read_session

    s = read_session(session)
    return {x.name: (x.time_series, x.time_stamps) for x in s.streams}


def _worker() -> str:
    """The Dask worker's address (the host name outside a worker)."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return socket.gethostname()


def run_job(p: dict) -> dict:
    """Run one job (in a worker); always returns its row, a failure as a one-line ``error``."""
    from ..config import load_graph
    from ..runtime.supervisor import Supervisor

    row = {"index": p["index"], "key": p["key"], "recording": p["label"], "params": p["params"], "status": "failed",
           "error": "", "metrics": {}, "worker": _worker(), "wall_s": 0.0}
    t0 = time.perf_counter()
    try:
        rec = p.get("recording")
        if rec is not None and not Path(rec).exists():
            raise RtneuroError(f"recording {rec} is not visible on worker {row['worker']}: "
                               "put it on a path every worker sees (a shared folder) or run the sweep where it is")
        doc = job_config(yaml.safe_load(p["config_text"]), p.get("node"), rec, p["params"])
        with tempfile.TemporaryDirectory(prefix="rtn-job-") as d:
            path = Path(d) / "job.yaml"
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
            session = None
            if p.get("user_metrics"):
                from ..recording.session import recording_graph

                graph, session = recording_graph(path, d, base_dir=p["config_dir"], process=JOB_PROCESS, fsync=False)
            else:
                graph = load_graph(path, base_dir=p["config_dir"])
            sup = Supervisor(graph, out=io.StringIO(), quiet=True, inline=True)
            code = sup.run()
            report = sup.report
            if code != 0:
                errors = report.get("errors") or [f"the graph exited with code {code}"]
                raise RtneuroError(str(errors[0]).splitlines()[0])
            metrics = flatten_report(report)
            if p.get("user_metrics"):
                metrics.update(_user_metrics(p["user_metrics"], report, _streams(session) if session else {}))
        row.update(status="ok", metrics=metrics, run_s=report.get("run_s"))
    except Exception as exc:  # a failing job is a row, never the end of the sweep
        first = (str(exc).strip().splitlines() or [""])[0]
        row["error"] = f"{type(exc).__name__}: {first}" if not isinstance(exc, RtneuroError) else first
        if not isinstance(exc, RtneuroError):
            row["traceback"] = traceback.format_exc(limit=8)
    row["wall_s"] = round(time.perf_counter() - t0, 3)
    return row


def is_timing(name: str) -> bool:
    return name.startswith(TIMING_PREFIXES)
