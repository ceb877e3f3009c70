"""A sweep's specification: one graph, the recordings it replays, a parameter grid, the metrics to keep.

```yaml
name: adbs-thresholds
config: ../configs/adbs_sim.yaml      # relative to this file
recordings:                            # optional: the graph's own sources otherwise
  node: eeg                            # the source that reads each recording (default: the only one that reads files)
  files: [../replay_data/*.edf]        # globs, files, folders
  bids: {root: /data/bids, subjects: ["01", "02"], tasks: [rest], datatypes: [eeg]}
grid:                                  # node.param: values (their product); a single value is fixed
  ctl.upper: [10.0, 11.0, 12.0]
seeds:                                 # replicates: in the product, averaged over like recordings
  brain.seed: [1, 2, 3]
search:                                # for --optimize METRIC: ranges Optuna samples (or a list of choices)
  ctl.lower: {low: 7.0, high: 10.0}
metrics: ["stimulation.*", "summary.*"]   # patterns over the report's names (default: everything but timings)
plots: [stimulation.stim.energy_uj, summary.labels.all.mean.beta]   # default: the objective and metrics that vary
user_metrics: [mylab.metrics:accuracy]    # module:function(report, streams) -> {name: number}
objective: {metric: stimulation.stim.energy_uj, goal: min}   # the best parameters, per recording and overall
baseline:                              # a reference arm per recording and seed (here: never stimulating)
  params: {ctl.upper: 1.0e+9, ctl.lower: 1.0e+8}
  relative: [summary.labels.all.mean.beta]   # adds <metric>.vs_baseline: the job's value minus its reference's
out: results/adbs-thresholds          # default: <spec name>-results next to this file
```
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, did_you_mean

__all__ = ["Recording", "Spec", "Job", "load_spec", "expand"]

#: files a recording folder is searched for (other folders are recordings themselves: Open Ephys, SpikeGLX...)
RECORDING_SUFFIXES = (".edf", ".bdf", ".gdf", ".fif", ".fif.gz", ".vhdr", ".set", ".cnt", ".mff", ".xdf", ".nwb", ".npy")
KEYS = ("name", "config", "recordings", "grid", "seeds", "search", "baseline", "metrics", "plots", "user_metrics", "objective", "out", "workers")
REC_KEYS = ("node", "files", "bids")
BIDS_KEYS = ("root", "subjects", "sessions", "tasks", "runs", "datatypes", "suffixes", "extensions")
#: source node types a recording can replace (a live inlet is replaced by a file replay)
FILE_SOURCES = ("file_replay", "xdf_replay", "session_replay")
LIVE_SOURCES = ("lsl_inlet",)
#: report names that measure the machine, not the data: kept per job, out of the default table
TIMING_PREFIXES = ("compute_us.",)


@dataclass(frozen=True, slots=True)
class Recording:
    """One recording a job replays: its absolute path and the label the table shows."""

    path: str
    label: str


@dataclass(frozen=True, slots=True)
class Job:
    """One replay: a recording (None: the graph's own sources) and one point of the grid."""

    index: int
    recording: Recording | None
    params: dict[str, Any]
    key: str
    #: a job of the spec's baseline arm (the reference of the ``relative`` metrics)
    baseline: bool = False


@dataclass(frozen=True, slots=True)
class Spec:
    path: Path
    name: str
    config_path: Path
    config_text: str
    config: dict
    node: str | None
    recordings: tuple[Recording, ...]
    grid: dict[str, list]
    seeds: dict[str, list]
    search: dict[str, Any]
    baseline: dict | None
    metrics: tuple[str, ...]
    plots: tuple[str, ...]
    user_metrics: tuple[str, ...]
    objective: dict | None
    out: Path
    workers: int | None

    def to_dict(self) -> dict:
        """What the results folder keeps of the spec (``sweep.json``)."""
        return {"spec": str(self.path), "name": self.name, "config": str(self.config_path), "node": self.node,
                "recordings": [dataclasses.asdict(r) for r in self.recordings], "grid": self.grid, "seeds": self.seeds, "search": self.search, "baseline": self.baseline,
                "metrics": list(self.metrics), "plots": list(self.plots), "user_metrics": list(self.user_metrics), "objective": self.objective}


def _list(v: Any, what: str) -> list:
    if v is None:
        return []
    if isinstance(v, (str, int, float)):
        return [v]
    if isinstance(v, list):
        return v
    raise ConfigError(f"{what}: give a list, not {type(v).__name__}")


def _check_keys(d: Any, allowed: tuple[str, ...], where: str) -> dict:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: give a mapping, not {type(d).__name__}")
    for k in d:
        if k not in allowed:
            raise ConfigError(f"{where}: unknown key {k!r}{did_you_mean(str(k), allowed)}; known: {', '.join(allowed)}")
    return d


def _files(patterns: list, base: Path) -> list[Path]:
    out: list[Path] = []
    for pat in patterns:
        if not isinstance(pat, str) or not pat:
            raise ConfigError(f"recordings.files: {pat!r} is not a path or a glob")
        full = Path(pat).expanduser()
        full = full if full.is_absolute() else base / full
        if any(c in pat for c in "*?["):
            hits = sorted(Path(p) for p in glob.glob(str(full), recursive=True))
            if not hits:
                raise ConfigError(f"recordings.files: {pat!r} matches no file (searched from {base})")
            out.extend(hits)
        elif full.is_dir():
            inside = sorted(p for p in full.iterdir() if p.is_file() and p.name.lower().endswith(RECORDING_SUFFIXES))
            out.extend(inside or [full])  # a folder without recordings in it is one (Open Ephys, SpikeGLX...)
        elif full.exists():
            out.append(full)
        else:
            raise ConfigError(f"recordings.files: {pat!r} does not exist (looked for {full})")
    return out


def _bids(spec: dict, base: Path) -> list[tuple[Path, str]]:
    _check_keys(spec, BIDS_KEYS, "recordings.bids")
    if "root" not in spec:
        raise ConfigError("recordings.bids: give root: (the dataset's folder)")
    try:
        from mne_bids import find_matching_paths
    except ImportError:
        raise ConfigError("recordings.bids needs mne-bids: pip install mne-bids") from None
    root = Path(str(spec["root"])).expanduser()
    root = root if root.is_absolute() else base / root
    if not root.is_dir():
        raise ConfigError(f"recordings.bids.root {root} is not a folder")
    kw = {k: [str(x) for x in _list(spec.get(k), f"recordings.bids.{k}")] or None for k in BIDS_KEYS if k != "root"}
    exts = kw.pop("extensions") or [".edf", ".bdf", ".fif", ".vhdr", ".set", ".gdf", ".cnt"]
    paths = find_matching_paths(root, subjects=kw["subjects"], sessions=kw["sessions"], tasks=kw["tasks"], runs=kw["runs"],
                                datatypes=kw["datatypes"], suffixes=kw["suffixes"], extensions=exts)
    out = []
    for bp in sorted(paths, key=lambda p: str(p.fpath)):
        label = "_".join(f"{k}-{v}" for k, v in (("sub", bp.subject), ("ses", bp.session), ("task", bp.task), ("run", bp.run)) if v)
        out.append((Path(bp.fpath), label))
    if not out:
        raise ConfigError(f"recordings.bids: no recording in {root} matches {json.dumps({k: v for k, v in spec.items() if k != 'root'})}")
    return out


def _source_node(config: dict, node: str | None) -> str:
    from ..nodes import node_class

    sources = []
    for n in config["nodes"]:
        try:
            cat = node_class(str(n.get("type", ""))).category
        except ConfigError:
            continue
        if cat == "source":
            sources.append(n)
    if node is not None:
        ids = [str(n.get("id")) for n in sources]
        if node not in ids:
            raise ConfigError(f"recordings.node: {node!r} is not a source of the graph{did_you_mean(node, ids)}; its sources: {ids}")
        return node
    readers = [n for n in sources if n.get("type") in FILE_SOURCES + LIVE_SOURCES]
    if len(readers) != 1:
        raise ConfigError("recordings.node: name the source that reads each recording "
                          f"(the graph has {len(readers)} that read files or LSL: {[n.get('id') for n in readers]})")
    return str(readers[0]["id"])


def _check_grid(config: dict, grid: Any, where: str = "grid") -> dict[str, list]:
    from ..nodes import node_class

    grid = _check_keys(grid, tuple(str(k) for k in (grid or {})), where)
    nodes = {str(n.get("id")): n for n in config["nodes"]}
    out: dict[str, list] = {}
    for name, values in grid.items():
        nid, dot, par = str(name).partition(".")
        if not dot or not par:
            raise ConfigError(f"{where}: {name!r} is not node.parameter (for example ctl.threshold)")
        if nid not in nodes:
            raise ConfigError(f"{where}: {name!r}: the graph has no node {nid!r}{did_you_mean(nid, nodes)}")
        try:
            cls = node_class(str(nodes[nid].get("type", "")))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {name!r}: {exc}") from None
        fields = [f.name for f in dataclasses.fields(cls.Params)]
        top = par.split(".")[0]
        if top not in fields:
            raise ConfigError(f"{where}: {name!r}: a {nodes[nid]['type']} has no parameter {top!r}{did_you_mean(top, fields)}")
        vals = _list(values, f"{where}.{name}")
        if not vals:
            raise ConfigError(f"{where}.{name}: give at least one value")
        out[str(name)] = vals
    return out


def _check_search(config: dict, search: Any) -> dict[str, Any]:
    """``node.param: {low, high[, log, step]}`` (a number range) or ``[choices]``, each parameter checked as in grid."""
    raw = _check_keys(search, tuple(str(k) for k in (search or {})), "search")
    _check_grid(config, {k: (v if isinstance(v, list) else [0]) for k, v in raw.items()}, "search")
    out: dict[str, Any] = {}
    for name, space in raw.items():
        if isinstance(space, list):
            if not space:
                raise ConfigError(f"search.{name}: give at least one choice")
            out[str(name)] = list(space)
            continue
        space = _check_keys(space, ("low", "high", "log", "step"), f"search.{name}")
        lo, hi = space.get("low"), space.get("high")
        if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float))) or isinstance(lo, bool) or isinstance(hi, bool) or not lo < hi:
            raise ConfigError(f"search.{name}: give low: and high: numbers with low < high (or a list of choices)")
        if space.get("log") and lo <= 0:
            raise ConfigError(f"search.{name}: a log range needs low > 0")
        out[str(name)] = {"low": lo, "high": hi, "log": bool(space.get("log", False)), "step": space.get("step")}
    return out


def load_spec(path: str | Path) -> Spec:
    """Read and check a sweep specification (every error is one line naming the key)."""
    path = Path(path).expanduser().resolve()
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the sweep spec {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    doc = _check_keys(doc, KEYS, str(path.name))
    base = path.parent
    if "config" not in doc:
        raise ConfigError(f"{path.name}: give config: (the graph file, relative to the spec)")
    config_path = (base / str(doc["config"])).resolve()
    try:
        config_text = config_path.read_text()
    except OSError as exc:
        raise ConfigError(f"config: cannot read {config_path}: {exc.strerror or exc}") from None
    config = yaml.safe_load(config_text)
    if not isinstance(config, dict) or not isinstance(config.get("nodes"), list):
        raise ConfigError(f"config: {config_path} has no 'nodes' list (not a graph file)")
    rec = _check_keys(doc.get("recordings"), REC_KEYS, "recordings")
    recordings: list[Recording] = []
    node = None
    if rec:
        node = _source_node(config, rec.get("node"))
        files = [p.resolve() for p in _files(_list(rec.get("files"), "recordings.files"), base)]
        top = Path(os.path.commonpath([str(p.parent) for p in files])) if files else base
        found: list[tuple[Path, str]] = [(p, str(p.relative_to(top))) for p in files]
        if rec.get("bids") is not None:
            found += _bids(rec["bids"], base)
        seen = set()
        for p, label in found:
            key = str(p.resolve())
            if key not in seen:
                seen.add(key)
                recordings.append(Recording(key, label))
        if not recordings:
            raise ConfigError("recordings: give files: or bids: (or leave recordings out to run the graph's own sources)")
    grid = _check_grid(config, doc.get("grid"))
    seeds = _check_grid(config, doc.get("seeds"), "seeds")
    for name in seeds:
        if name in grid:
            raise ConfigError(f"seeds: {name!r} is in grid: too; a parameter is either searched or replicated")
    search = _check_search(config, doc.get("search"))
    for name in search:
        if name in grid or name in seeds:
            raise ConfigError(f"search: {name!r} is in grid: or seeds: too; a parameter is searched one way")
    baseline = _check_keys(doc.get("baseline"), ("params", "relative"), "baseline") or None
    if baseline is not None:
        bparams = _check_grid(config, {k: [v] for k, v in _check_keys(baseline.get("params"), tuple(str(k) for k in (baseline.get("params") or {})), "baseline.params").items()}, "baseline.params")
        relative = [str(m) for m in _list(baseline.get("relative"), "baseline.relative")]
        if not bparams or not relative:
            raise ConfigError("baseline: give params: (the reference arm, e.g. the controller off) and relative: (metrics to compare with it)")
        baseline = {"params": {k: v[0] for k, v in bparams.items()}, "relative": relative}
    metrics = tuple(str(m) for m in _list(doc.get("metrics"), "metrics")) or ("*",)
    user = tuple(str(m) for m in _list(doc.get("user_metrics"), "user_metrics"))
    plots = tuple(str(m) for m in _list(doc.get("plots"), "plots"))
    for u in user:
        if ":" not in u:
            raise ConfigError(f"user_metrics: {u!r} is not module:function")
    objective = _check_keys(doc.get("objective"), ("metric", "goal"), "objective") or None
    if objective is not None and (not objective.get("metric") or objective.get("goal", "min") not in ("min", "max")):
        raise ConfigError("objective: give metric: NAME and goal: min or max")
    name = str(doc.get("name") or path.stem)
    out = Path(str(doc["out"])).expanduser() if doc.get("out") else Path(f"{name}-results")
    workers = doc.get("workers")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"workers: give a whole number >= 1, not {workers!r}")
    return Spec(path, name, config_path, config_text, config, node, tuple(recordings), grid, seeds, search, baseline, metrics, plots, user,
                dict(objective) if objective else None, out if out.is_absolute() else (base / out).resolve(), workers)


#: this process's file hashes, by path, size and modification time
_HASHES: dict[tuple[str, int, int], str] = {}


def file_hash(path: str) -> str:
    """SHA-256 of a recording (a folder: of its files' names, sizes and contents)."""
    p = Path(path)
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key in _HASHES:
        return _HASHES[key]
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    for f in files:
        h.update(str(f.relative_to(p) if f != p else f.name).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _file_refs(doc: dict, base: Path) -> dict[str, str]:
    """Hashes of the files a graph's parameters name (trained models, profiles, recordings): a job's result
    depends on them, so its key does too."""
    out: dict[str, str] = {}

    def walk(v: Any) -> None:
        if isinstance(v, str) and v and len(v) < 4096 and ("/" in v or "." in v):
            p = Path(v).expanduser()
            p = p if p.is_absolute() else base / p
            try:
                if p.is_file():
                    out[str(p.resolve())] = file_hash(str(p))
            except OSError:
                pass
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    for n in doc.get("nodes") or []:
        if isinstance(n, dict):
            walk(n.get("params"))
    return out


def expand(spec: Spec) -> list[Job]:
    """Every job: each recording (or none) times each point of the grid and seed, in a fixed order, each with its key.

    The key is a hash of what decides the result: the graph's text, the
    recording's contents, the files its parameters name (models, profiles),
    the parameters, the user metrics and rtneuro's version. A job whose key has a result is done.
    """
    from .. import __version__

    base_files = _file_refs(spec.config, spec.config_path.parent)
    axes = {**spec.grid, **spec.seeds}
    names = list(axes)
    points = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(axes[n] for n in names))] or [{}]
    recs: list[Recording | None] = list(spec.recordings) or [None]
    jobs: list[Job] = []
    arms: list[tuple[dict, bool]] = [(p, False) for p in points]
    if spec.baseline is not None:
        # the reference arm: per recording and seed, the grid's first values with the baseline's on top
        seen = set()
        for p in points:
            ref = {**{n: (spec.grid[n][0] if n in spec.grid else v) for n, v in p.items()}, **spec.baseline["params"]}
            k = json.dumps(ref, sort_keys=True, default=str)
            if k not in seen:
                seen.add(k)
                arms.append((ref, True))
    for rec in recs:
        data = file_hash(rec.path) if rec is not None and Path(rec.path).exists() else (rec.path if rec else "")
        for params, is_base in arms:
            refs = {**base_files, **_file_refs({"nodes": [{"params": params}]}, spec.config_path.parent)}
            ident = json.dumps({"config": spec.config_text, "node": spec.node, "data": data, "params": params, "files": refs,
                                "user_metrics": list(spec.user_metrics), "rtneuro": __version__}, sort_keys=True, default=str)
            jobs.append(Job(len(jobs), rec, params, hashlib.sha256(ident.encode()).hexdigest()[:24], is_base))
    return jobs
