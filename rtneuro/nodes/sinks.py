"""Sinks: console, JSON lines, per-segment summaries, and a fault injector for drills."""

from __future__ import annotations

import fnmatch
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TextIO

import numpy as np

from ..errors import ConfigError, did_you_mean
from ..messages import CMD_LEVEL, CMD_OFF, Chunk, StreamMeta, event_label
from .base import Node, NodeContext, param

__all__ = ["Console", "JsonLines", "SegmentSummary", "Fault"]

_ANY = "sig|feat|evt|cmd"


def _rows(chunk: Chunk, meta: StreamMeta) -> list[dict]:
    """JSON-able rows of a chunk, whatever its kind."""
    dt = 1.0 / chunk.sfreq if chunk.sfreq > 0 else 0.0
    data = chunk.data
    if meta.kind == "evt":
        return [{"index": int(e["index"]), "t": float(e["time"]), "label": event_label(e["label"]), "code": int(e["code"]),
                 "duration": float(e["duration"]), "channel": int(e["channel"]), "value": float(e["value"])} for e in data]
    if meta.kind == "cmd":
        names = data.dtype.names or ()
        return [{"index": chunk.first + i, "t": chunk.t0 + i * dt,
                 **{k: (v.decode("utf-8", "replace") if isinstance(v := rec[k].item(), bytes) else v) for k in names}}
                for i, rec in enumerate(data)]
    return [{"index": chunk.first + i, "t": chunk.t0 + i * dt,
             "values": {n: float(v) for n, v in zip(meta.ch_names, row, strict=True)}} for i, row in enumerate(data)]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsoleParams:
    every_s: float = param(1.0, ge=0, doc="print at most one line per stream every every_s seconds of stream time")
    max_channels: int = param(6, ge=1)


class Console(Node):
    """Prints a short line per stream to standard output, rate-limited.

    Live parameters: ``every_s`` and ``max_channels``; :meth:`update` keeps
    each stream's next due time (set by the line printed last).
    """

    category = "sink"
    Params = ConsoleParams
    live = ("every_s", "max_channels")
    input_kinds = (_ANY,)
    max_inputs = 16

    def __init__(self, params: ConsoleParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        self.reset()

    def reset(self) -> None:
        self._next = [-math.inf] * len(self.inputs)
        self.lines = 0

    def process(self, chunk: Chunk, port: int = 0) -> None:
        if chunk.t0 < self._next[port] or chunk.data.shape[0] == 0:
            return None
        self._next[port] = chunk.t0 + self.params.every_s
        meta = self.inputs[port]
        row = _rows(chunk, meta)[-1]
        if "values" in row:
            vals = list(row["values"].items())[: self.params.max_channels]
            body = "  ".join(f"{k}={v:.4g}" for k, v in vals)
        else:
            body = "  ".join(f"{k}={v}" for k, v in row.items() if k not in ("index", "t"))
        sys.stdout.write(f"[{meta.kind}.{meta.name}] #{row['index']} t={row['t']:.3f}  {body}\n")
        sys.stdout.flush()
        self.lines += 1
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class JsonLinesParams:
    path: str = param(doc="output file; one JSON object per sample, frame, event or command")
    flush_every: int = param(1, ge=1, doc="flush after this many chunks")
    chunks: bool = param(False, doc="add the chunk each row came in: 'chunk': [first index, length]")


class JsonLines(Node):
    """Writes every row of its inputs as JSON lines (``{"stream", "index", "t", ...}``).

    Live parameters: ``flush_every``; :meth:`update` keeps the count of
    chunks written since the last flush. ``path`` and ``chunks`` (the rows'
    shape) are fixed while running.
    """

    category = "sink"
    Params = JsonLinesParams
    live = ("flush_every",)
    input_kinds = (_ANY,)
    max_inputs = 16

    def __init__(self, params: JsonLinesParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        self.path = ctx.resolve(params.path)
        if not self.path.parent.exists():
            raise ConfigError(f"folder {self.path.parent} for jsonl output does not exist; create it or change 'path'")
        self._fh: TextIO | None = None
        self.reset()

    def open(self) -> None:
        self._fh = self.path.open("a")

    def reset(self) -> None:
        self.rows = 0
        self._pending = 0

    def process(self, chunk: Chunk, port: int = 0) -> None:
        fh = self._fh
        if fh is None:
            raise RuntimeError("jsonl sink used before open()")
        meta = self.inputs[port]
        extra = {"chunk": [chunk.first, chunk.data.shape[0]]} if self.params.chunks else {}
        lines = [json.dumps({"stream": meta.name, **row, **extra}) for row in _rows(chunk, meta)]
        fh.write("\n".join(lines) + "\n" if lines else "")
        self.rows += len(lines)
        self._pending += 1
        if self._pending >= self.params.flush_every:
            fh.flush()
            self._pending = 0
        return None

    def report(self) -> dict:
        return {"path": str(self.path), "rows": self.rows}

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentSummaryParams:
    labels: list[str] = param(["file:*"], doc="event labels (shell patterns) that start a new segment")
    features: list[str] | None = param(None, doc="feature columns to summarise (default: all)")
    max_frames: int = param(10_000_000, ge=1)
    baseline: str | None = param(None, doc="label (shell pattern) of the segments every other label is compared with (default: the label of the first segment of at least min_frames frames)")
    min_frames: int = param(5, ge=1, doc="segments with fewer frames are left out of the per-label figures (and counted)")


class SegmentSummary(Node):
    """Mean of features per label of the segments delimited by events, against a stated baseline.

    Inputs: a feature stream, then optionally an event stream (segment
    boundaries) and a command stream (the fraction of decisions during
    which stimulation was on). Frames and events are matched by stream time
    when the report is made, so the order in which they arrive from
    different processes does not matter.

    The summary has one line per label: its segments (occurrences), frames,
    the mean of the segments' means and their SD across segments (across
    frames for a label seen once); then each label against the baseline (a
    difference for dB features, a ratio otherwise). Segments shorter than
    ``min_frames`` (an event a frame before the next one) are left out and
    counted. The frames before the first event are the label ``before``;
    they are never the baseline unless ``baseline`` names them.
    """

    category = "sink"
    Params = SegmentSummaryParams
    input_kinds = ("feat", "evt|cmd", "evt|cmd")
    max_inputs = 3

    def __init__(self, params: SegmentSummaryParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        feat = inputs[0]
        names = params.features or list(feat.ch_names)
        for n in names:
            if n not in feat.ch_names:
                raise ConfigError(f"feature {n!r} not in stream '{feat.name}'{did_you_mean(n, feat.ch_names)}")
        self.cols = [feat.ch_names.index(n) for n in names]
        self.names = names
        self.unit = feat.units[self.cols[0]] if feat.units else ""
        kinds = [m.kind for m in inputs[1:]]
        if len(set(kinds)) != len(kinds):
            raise ConfigError("give at most one event stream and one command stream")
        self.reset()

    def reset(self) -> None:
        self._t: list[np.ndarray] = []
        self._v: list[np.ndarray] = []
        self._n = 0
        self._bounds: list[tuple[float, str]] = []
        self._cmd_t: list[float] = []
        self._cmd_on: list[bool] = []
        self._on = False

    def process(self, chunk: Chunk, port: int = 0) -> None:
        meta = self.inputs[port]
        n = chunk.data.shape[0]
        dt = 1.0 / chunk.sfreq if chunk.sfreq > 0 else 0.0
        if meta.kind == "feat":
            if self._n + n <= self.params.max_frames:
                self._t.append(chunk.t0 + dt * np.arange(n))
                self._v.append(np.asarray(chunk.data[:, self.cols], dtype=float))
                self._n += n
        elif meta.kind == "evt":
            for e in chunk.data:
                lab = event_label(e["label"])
                if any(fnmatch.fnmatch(lab, pat) for pat in self.params.labels):
                    self._bounds.append((float(e["time"]), lab))
        elif meta.kind == "cmd":
            for i, rec in enumerate(chunk.data):
                k = int(rec["kind"])
                if k == CMD_LEVEL:
                    self._on = True
                elif k == CMD_OFF:
                    self._on = False
                self._cmd_t.append(chunk.t0 + i * dt)
                self._cmd_on.append(self._on)
        return None

    def segments(self) -> list[dict]:
        if not self._t:
            return []
        t = np.concatenate(self._t)
        v = np.concatenate(self._v)
        bounds = sorted(self._bounds) or [(-math.inf, "all")]
        if t[0] < bounds[0][0]:
            bounds.insert(0, (-math.inf, "before"))
        edges = [b[0] for b in bounds] + [math.inf]
        ct = np.array(self._cmd_t)
        con = np.array(self._cmd_on, dtype=bool)
        out = []
        for (start, label), stop in zip(bounds, edges[1:], strict=True):
            sel = (t >= start) & (t < stop)
            if not sel.any():
                continue
            seg = {"label": label, "t_start": float(t[sel][0]), "t_stop": float(t[sel][-1]), "frames": int(sel.sum()),
                   "mean": {n: float(np.nanmean(v[sel, j])) for j, n in enumerate(self.names)},
                   "median": {n: float(np.nanmedian(v[sel, j])) for j, n in enumerate(self.names)},
                   "sd": {n: float(np.nanstd(v[sel, j])) for j, n in enumerate(self.names)}}
            if ct.size:
                csel = (ct >= start) & (ct < stop)
                seg["stim_on_fraction"] = float(con[csel].mean()) if csel.any() else 0.0
            out.append(seg)
        return out

    def by_label(self, segs: list[dict] | None = None) -> dict[str, dict]:
        """Per label, in order of first appearance: segments, frames, mean of segment means, SD across segments."""
        segs = self.segments() if segs is None else segs
        out: dict[str, dict] = {}
        groups: dict[str, list[dict]] = {}
        for s in segs:
            groups.setdefault(s["label"], []).append(s)
        for label, group in groups.items():
            kept = [s for s in group if s["frames"] >= self.params.min_frames]
            row: dict = {"segments": len(kept), "frames": sum(s["frames"] for s in kept),
                         "short_segments": len(group) - len(kept)}
            if kept:
                means = {n: np.array([s["mean"][n] for s in kept]) for n in self.names}
                row["mean"] = {n: float(np.nanmean(m)) for n, m in means.items()}
                if len(kept) >= 2:
                    row["sd"] = {n: float(np.nanstd(m, ddof=1)) for n, m in means.items()}
                    row["sd_across"] = "segments"
                else:
                    row["sd"] = {n: kept[0]["sd"][n] for n in self.names}
                    row["sd_across"] = "frames"
                if all("stim_on_fraction" in s for s in kept):
                    weights = np.array([s["frames"] for s in kept], dtype=float)
                    row["stim_on_fraction"] = float(np.average([s["stim_on_fraction"] for s in kept], weights=weights))
            out[label] = row
        return out

    def _baseline(self, labels: dict[str, dict]) -> tuple[str | None, str]:
        """The baseline label and how it was chosen."""
        usable = [lab for lab, row in labels.items() if row["segments"]]
        pattern = self.params.baseline
        if pattern is not None:
            hits = [lab for lab in usable if fnmatch.fnmatch(lab, pattern)]
            if not hits:
                return None, (f"no segment of at least {self.params.min_frames} frames matches baseline "
                              f"{pattern!r} (labels: {', '.join(labels) or 'none'})")
            return hits[0], f"baseline: {pattern!r}"
        first = [lab for lab in usable if lab != "before"]
        if not first:
            return None, "no labelled segment to compare with"
        return first[0], f"the first label of at least {self.params.min_frames} frames; set baseline: to choose"

    def report(self) -> dict:
        segs = self.segments()
        labels = self.by_label(segs)
        base, why = self._baseline(labels)
        lines = []
        unit = f" {self.unit}" if self.unit else ""
        for label, row in labels.items():
            if not row["segments"]:
                continue
            vals = ", ".join(f"{n} {row['mean'][n]:.2f} sd {row['sd'][n]:.2f}" for n in self.names[:4])
            stim = (f", stimulation on {100 * row['stim_on_fraction']:.0f}% of decisions"
                    if "stim_on_fraction" in row else "")
            seg = "segment" if row["segments"] == 1 else "segments"
            lines.append(f"{label}: {row['segments']} {seg}, {row['frames']} frames: mean {vals}{unit} "
                         f"(sd across {row['sd_across']}){stim}")
        short = sum(row["short_segments"] for row in labels.values())
        if short:
            lines.append(f"{short} segment(s) shorter than {self.params.min_frames} frames left out")
        if base is not None:
            lines.append(f"baseline {base} ({why})")
            b = labels[base]
            for n in self.names[:4]:
                for label, row in labels.items():
                    if label == base or not row["segments"]:
                        continue
                    a, x = b["mean"][n], row["mean"][n]
                    change = f"{x - a:+.2f}{unit}" if "dB" in self.unit else f"x{x / a:.2f}" if a else "n/a (baseline 0)"
                    lines.append(f"{n}: {label} vs baseline {base}: {change}")
        elif len(labels) >= 2:
            lines.append(f"no baseline: {why}")
        return {"segments": segs, "labels": labels, "baseline": base, "baseline_rule": why, "summary": lines}


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultParams:
    after_chunks: int = param(10, ge=0, doc="behave normally for this many chunks")
    mode: Literal["raise", "exit", "nan", "slow"] = param(
        "raise", doc="raise an exception, kill the process, inject a NaN burst, or become a slow consumer")
    nan_samples: int = param(5, ge=1)
    slow_ms: float = param(1.0, ge=0, doc="mode 'slow': time spent on every chunk from then on")


class Fault(Node):
    """Passes its input through, then fails on purpose (supervision drills and tests).

    ``raise`` raises ``RuntimeError`` in ``process``; ``exit`` ends the
    process abruptly (as a segmentation fault would); ``nan`` replaces
    ``nan_samples`` samples of every channel by NaN once; ``slow`` spends
    ``slow_ms`` on every chunk from then on (a consumer that falls behind).
    """

    Params = FaultParams
    input_kinds = ("sig|feat",)

    def __init__(self, params: FaultParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        src = inputs[0]
        self.outputs = {"": StreamMeta(name=ctx.stream_name(), kind=src.kind, sfreq=src.sfreq, ch_names=src.ch_names,
                                       ch_types=src.ch_types, units=src.units, dtype=src.dtype, source=f"fault({params.mode}) of {src.name}")}
        self.reset()

    def reset(self) -> None:
        self.chunks = 0

    def process(self, chunk: Chunk, port: int = 0) -> Chunk:
        self.chunks += 1
        if self.params.mode == "slow":
            if self.chunks > self.params.after_chunks:
                time.sleep(self.params.slow_ms / 1000.0)
            return chunk
        if self.chunks == self.params.after_chunks + 1:
            if self.params.mode == "raise":
                raise RuntimeError(f"fault injected by node '{self.ctx.node_id}' after {self.params.after_chunks} chunks")
            if self.params.mode == "exit":
                os._exit(70)
            data = np.array(chunk.data, dtype=np.float64)
            data[: self.params.nan_samples] = np.nan
            return Chunk(data, chunk.first, chunk.t0, chunk.sfreq, chunk.trace, chunk.extra)
        return chunk
