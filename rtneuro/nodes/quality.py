"""Signal-quality node: flags that controllers can gate on."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..kernels.quality import FLAG_NAMES, quality_flags
from ..messages import Chunk, StreamMeta, make_events
from .base import Node, NodeContext, param, regular_rate, resolve_picks

__all__ = ["Quality", "QualityParams", "GATE_COLUMN"]

#: The column of a quality stream that controllers gate on.
GATE_COLUMN = "any"


@dataclass(frozen=True, slots=True, kw_only=True)
class QualityParams:
    """Parameters of :class:`Quality` (amplitudes in the stream's unit, usually uV)."""

    flat_s: float | None = param(0.25, gt=0, doc="flat line: the signal moves by at most flat_tol per sample for this long (null: off)")
    flat_tol: float = param(0.01, ge=0, doc="largest sample-to-sample step that still counts as flat")
    clip: float | None = param(None, gt=0, doc="clipping: |x| at or above this (the amplifier's range; null: off)")
    jump: float | None = param(500.0, gt=0, doc="amplitude jump: a sample-to-sample step above this (null: off)")
    hold_s: float = param(0.5, ge=0, doc="a flag stays raised this long after its condition ends")
    step_s: float = param(0.1, gt=0, doc="one row of flags every step_s seconds")
    picks: list[str] | None = param(None, doc="channels to check (default: all)")
    min_bad_channels: int = param(1, ge=1, doc="the 'any' column is raised when at least this many channels are flagged")


class Quality(Node):
    """Artifact and signal-quality flags: flat line, clipping, amplitude jumps, non-finite runs.

    Each sample of each channel is checked against carried state (the last
    finite sample, the length of the current flat run), so any split of the
    input gives the same flags. Every ``step_s`` seconds the node emits one
    row: per channel, the bitmask of the flags raised during that frame
    (1 flat, 2 clip, 4 jump, 8 non-finite), then ``n_bad`` (channels
    flagged) and ``any`` (1 when at least ``min_bad_channels`` were
    flagged). A flag stays raised ``hold_s`` after its condition ends, so a
    decision made just after an artifact still sees it.

    Outputs: the flags (``feat``) on the main port, and flag onsets and
    offsets on ``<id>.events`` (label ``"flat:O1"`` / ``"flat:O1:end"``,
    channel index, code the flag bit). Controllers take the main output as
    a second input and do not stimulate on flagged windows (see
    :class:`rtneuro.nodes.controllers.Threshold`).

    Notes
    -----
    The flat and jump criteria follow the usual amplitude rules of EEG
    artifact rejection (e.g. ``mne.preprocessing.annotate_amplitude``'s
    ``flat`` and peak criteria), applied causally sample by sample.

    Live parameters: ``flat_s``, ``clip``, ``jump`` (each may be switched
    off with null and on again), ``hold_s`` and ``min_bad_channels``.
    :meth:`update` keeps the carried state: the last sample, the current
    flat run (judged against the new ``flat_s`` from the next sample), the
    flags raised and the holds already counting down (a hold started
    before the change runs its old length; the next one the new length).
    ``flat_tol`` (announced in the stream's desc), ``step_s`` and
    ``picks`` are fixed while running.
    """

    Params = QualityParams
    input_kinds = ("sig",)
    live = ("flat_s", "clip", "jump", "hold_s", "min_bad_channels")

    def __init__(self, params: QualityParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        src = inputs[0]
        fs = regular_rate(src, "quality flags")
        picks = resolve_picks(params.picks, src)
        if params.min_bad_channels > len(picks):
            raise ConfigError(f"min_bad_channels={params.min_bad_channels} exceeds the {len(picks)} channels checked; lower it")
        self.picks = np.array(picks, dtype=np.int64)
        self.names = [src.ch_names[i] for i in picks]
        self.step = max(1, int(round(params.step_s * fs)))
        self.flat_n = math.inf if params.flat_s is None else max(1, int(round(params.flat_s * fs)))
        self.hold_n = int(round(params.hold_s * fs))
        self.sfreq_in = fs
        unit = src.units[0] if src.units else ""
        names = (*self.names, "n_bad", GATE_COLUMN)
        self.outputs = {
            "": StreamMeta(
                name=ctx.stream_name(), kind="feat", sfreq=fs / self.step, ch_names=names,
                ch_types=("misc",) * len(names), units=("bitmask",) * len(self.names) + ("channels", "1"), dtype="<f8",
                source=f"quality flags of {src.name}",
                desc={"step": self.step, "of": src.name, "bits": {str(k): v for k, v in FLAG_NAMES.items()},
                      "flat_tol": params.flat_tol, "unit": unit},
            ),
            "events": StreamMeta(name=ctx.stream_name("events"), kind="evt", sfreq=0.0, dtype="event",
                                 source=f"quality flag changes of {src.name}"),
        }
        self.reset()

    def update(self, params: QualityParams) -> None:
        """New criteria between two chunks; the carried state stays (see the class docstring)."""
        self.params = params
        self.flat_n = math.inf if params.flat_s is None else max(1, int(round(params.flat_s * self.sfreq_in)))
        self.hold_n = int(round(params.hold_s * self.sfreq_in))

    def reset(self) -> None:
        c = len(self.picks)
        self._prev = np.full(c, np.nan)
        self._run = np.zeros(c, dtype=np.int64)
        self._hold = np.zeros((4, c), dtype=np.int64)
        self._active = np.zeros((4, c), dtype=np.int64)
        self._acc = np.zeros(c, dtype=np.int64)
        self._state = np.array([0, self.step, 0], dtype=np.int64)
        self._origin: int | None = None
        self.onsets = {name: 0 for name in FLAG_NAMES.values()}
        self.bad_frames = 0
        self.events_dropped = 0

    def warmup(self) -> None:
        x = np.zeros((self.step + 1, int(self.picks.max()) + 1))
        self._run_kernel(x)
        self.reset()

    def _run_kernel(self, x: np.ndarray):
        p = self.params
        n = x.shape[0]
        c = len(self.picks)
        frames = np.empty((n // self.step + 1, c), dtype=np.int64)
        ends = np.empty(n // self.step + 1, dtype=np.int64)
        cap = min(n * c * 4, 1 << 16)
        ev = [np.empty(cap, dtype=np.int64) for _ in range(4)]
        xp = x if c == x.shape[1] and np.array_equal(self.picks, np.arange(c)) else x[:, self.picks]
        flat_n = np.iinfo(np.int64).max if self.flat_n == math.inf else int(self.flat_n)
        nf, ne = quality_flags(
            np.ascontiguousarray(xp), self._prev, self._run, self._hold, self._active, self._acc, self._state,
            float(p.flat_tol), flat_n, math.inf if p.clip is None else float(p.clip),
            math.inf if p.jump is None else float(p.jump), self.hold_n, self.step, frames, ends, *ev)
        if ne > cap:
            self.events_dropped += ne - cap
            ne = cap
        return frames[:nf], ends[:nf], [e[:ne] for e in ev]

    def process(self, chunk: Chunk, port: int = 0) -> list | None:
        x = chunk.data
        if x.shape[0] == 0:
            return None
        if self._origin is None:
            self._origin = chunk.first
        origin = self._origin
        frames, ends, (ev_index, ev_chan, ev_code, ev_on) = self._run_kernel(x)
        out: list = []
        if len(ev_index):
            rows = []
            for k, c, code, on in zip(ev_index.tolist(), ev_chan.tolist(), ev_code.tolist(), ev_on.tolist(), strict=True):
                name = FLAG_NAMES[code]
                if on:
                    self.onsets[name] += 1
                idx = origin + k
                t = chunk.t0 + (idx - chunk.first) / self.sfreq_in
                rows.append((idx, t, code, int(self.picks[c]), 0.0, float(on),
                             f"{name}:{self.names[c]}" + ("" if on else ":end")))
            out.append(("events", Chunk(make_events(rows), chunk.first, chunk.t0, 0.0, chunk.trace)))
        if len(frames):
            n_bad = (frames != 0).sum(axis=1)
            gate = (n_bad >= self.params.min_bad_channels).astype(np.float64)
            self.bad_frames += int(gate.sum())
            rows_f = np.column_stack([frames.astype(np.float64), n_bad.astype(np.float64), gate])
            first_frame = int(self._state[2]) - len(frames)
            last_idx = origin + int(ends[-1]) - 1
            t_first = chunk.t0 + (origin + int(ends[0]) - 1 - chunk.first) / self.sfreq_in
            extra = {"window": [origin + int(ends[0]) - self.step, last_idx], "of": self.inputs[0].name}
            out.append(("", Chunk(rows_f, first_frame, t_first, self.sfreq_in / self.step, chunk.trace, extra)))
        return out or None

    def status(self) -> str:
        raised = [name for name, n in self.onsets.items() if n]
        return "flags " + ",".join(f"{k}={self.onsets[k]}" for k in raised) if raised else ""

    def report(self) -> dict:
        return {"onsets": dict(self.onsets), "bad_frames": self.bad_frames, "events_dropped": self.events_dropped}
