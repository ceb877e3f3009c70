"""Sessions: ``rtneuro run CONFIG --record DIR`` adds a recorder to any graph; what goes in the header.

A session is one XDF file (see :class:`rtneuro.nodes.recorder.Recorder`):
every stream of the graph on its stream clock, the gate's decisions, gaps
and provenance, with the configuration, package versions, git revision,
device profiles and machine in the file header, per-stream counts and
latency histograms in the stream footers, and the run report (latency
percentiles, clock offsets and drift of LSL inputs, errors) appended as the
stream ``rtneuro.report`` when the run ends.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from ..config import Graph, load_graph
from ..errors import ConfigError

__all__ = ["session_metadata", "recording_graph", "PACKAGES", "RECORDER_PROCESS"]

#: Versions recorded in every session.
PACKAGES = ("rtneuro", "numpy", "scipy", "numba", "pyzmq", "msgpack", "pylsl", "mne", "pyxdf")
#: The recorder's own process: never restarted (a new incarnation would start a new file).
RECORDER_PROCESS = "record"


def _git_revision() -> str:
    root = Path(__file__).resolve().parent.parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _profiles(graph: Graph) -> dict[str, dict[str, str]]:
    """Each stimulator's device profile, as the text of its YAML file."""
    from ..safety import PROFILE_DIR

    out = {}
    for spec in graph.nodes.values():
        if spec.type != "stimulator":
            continue
        ref = str((spec.raw_params or {}).get("profile", "simulated"))
        path = Path(ref)
        if path.suffix not in (".yaml", ".yml"):
            path = PROFILE_DIR / f"{ref}.yaml"
        elif not path.is_absolute():
            path = graph.base_dir / path
        try:
            text = path.read_text()
        except OSError as exc:
            text = f"(could not read {path}: {exc})"
        out[spec.id] = {"profile": ref, "path": str(path), "text": text}
    return out


def session_metadata(graph: Graph, config_text: str) -> dict[str, Any]:
    """What the session file's header says about the run."""
    from ..runtime.supervisor import machine_info

    return {
        "format": "rtneuro session 1",
        "graph": graph.name,
        "config_path": str(graph.path),
        "config": config_text,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "git_revision": _git_revision(),
        "command": " ".join(sys.argv),
        "profiles": _profiles(graph),
        "machine": machine_info(),
        "clock": "timestamps are stream time (the graph's data clock: LSL time for live inputs, file time for replays)",
    }


def recording_graph(config: str | Path, folder: str | Path, *, overrides: dict | None = None,
                    flush_s: float = 1.0, min_free_mb: float = 50.0, base_dir: str | Path | None = None,
                    process: str = RECORDER_PROCESS, fsync: bool = True) -> tuple[Graph, Path]:
    """The graph of ``config`` with a recorder of every stream in its own process; and the session path.

    Refuses (ConfigError) when the folder cannot take a session: missing, not
    writable, or with less than ``min_free_mb`` free.
    """
    from .xdf_writer import RecordingError, check_writable

    config = Path(config)
    folder = Path(folder).expanduser().resolve()
    try:
        check_writable(folder, int(min_free_mb * 1e6))
    except RecordingError as exc:
        raise ConfigError(f"--record: {exc}") from None
    base = load_graph(config, overrides=overrides, base_dir=base_dir)
    taken = set(base.nodes)
    rid = next(n for n in ("recorder", *(f"recorder_{i}" for i in range(1, 100))) if n not in taken)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"{base.name}-{stamp}.xdf"
    k = 1
    while path.exists():
        path = folder / f"{base.name}-{stamp}-{k}.xdf"
        k += 1
    meta = session_metadata(base, config.read_text())
    node = {"id": rid, "type": "recorder", "process": process, "inputs": sorted(base.streams),
            "params": {"path": str(path), "flush_s": flush_s, "fsync": fsync, "min_free_mb": min_free_mb,
                       "session": json.loads(json.dumps(meta, default=str))}}
    extra = {process: {"restart": "never"}} if process not in base.processes else None
    graph = load_graph(config, overrides=overrides, base_dir=base_dir, extra_nodes=[node], extra_processes=extra)
    return graph, path


def append_report(path: str | Path, report: dict) -> str:
    """Append the run report as the stream ``rtneuro.report`` (one JSON sample) to a closed session; say what the session holds.

    Written as whole chunks at the end of the file (XDF allows a stream's
    header anywhere before its samples), so the session stays readable by
    pyxdf however the append ends.
    """
    import os
    import socket
    import struct
    import time
    import uuid

    from .xdf_read import read_session
    from .xdf_writer import (
        TAG_SAMPLES,
        TAG_STREAM_FOOTER,
        TAG_STREAM_HEADER,
        _chunk_head,
        _varlen,
        desc_to_xml,
    )

    path = Path(path)
    if not path.exists():
        return f"no session was written to {path} (the recorder did not start; see the errors above)"
    session = read_session(path)
    sid = max((s.stream_id for s in session.streams), default=0) + 1
    last = [float(s.time_stamps[-1]) for s in session.streams if len(s.time_stamps)]
    ts = max(last) if last else 0.0
    info = {"name": "rtneuro.report", "type": "Report", "channel_count": 1, "channel_format": "string",
            "source_id": "rtneuro:supervisor:report", "nominal_srate": 0.0, "version": 1.1,
            "created_at": time.monotonic(), "uid": str(uuid.uuid4()), "session_id": "default", "hostname": socket.gethostname()}
    head = desc_to_xml("info", info, {"desc": {"rtneuro": {"kind": "report", "about": "the run report (JSON): latency percentiles per hop and end to end, clock offsets and drift of LSL inputs, counters, errors"}}})
    text = json.dumps(report, default=str).encode("utf-8")
    content = _varlen(1) + b"\x08" + struct.pack("<d", ts) + _varlen(len(text)) + text
    foot = desc_to_xml("info", {"first_timestamp": ts, "last_timestamp": ts, "sample_count": 1})
    blob = (_chunk_head(TAG_STREAM_HEADER, len(head), sid) + head + _chunk_head(TAG_SAMPLES, len(content), sid) + content
            + _chunk_head(TAG_STREAM_FOOTER, len(foot), sid) + foot)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return f"session {path}: the run report could not be appended ({exc.strerror}); the recording itself is intact"
    data = [s for s in session.streams if not s.name.startswith("rtneuro.")]
    gaps = next((s for s in session.streams if s.name == "rtneuro.gaps"), None)
    n_gaps = len(gaps.time_stamps) if gaps is not None else 0
    size = path.stat().st_size
    line = (f"session {path}: {len(data)} streams, {size / 1e6:.1f} MB, "
            f"{'no gaps' if not n_gaps else f'{n_gaps} gaps or restarts (stream rtneuro.gaps)'}")
    if session.damage:
        line += f"; {session.damage}"
    return line
