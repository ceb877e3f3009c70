"""A closed-loop cursor brain-machine interface in the graph.

Three nodes:

``cursor_task``
    A simulated participant doing a center-out task: a cosine-tuned
    population (:class:`rtneuro.decoders.simulate.CosinePopulation`) fires
    for the velocity the participant intends (toward the current target),
    and the cursor moves by the velocity the decoder sends back on the
    node's ``feedback`` input.
``kalman``
    A velocity Kalman filter (:class:`rtneuro.decoders.kalman.KalmanDecoder`)
    from a model file or calibrated in the graph, with closed-loop decoder
    adaptation (CLDA).
``poisson_decoder``
    A Bayesian decoder of the movement direction
    (:class:`rtneuro.decoders.poisson.PoissonDecoder`).

The decoders join their two inputs (the counts and the task's kinematics)
by bin index, so what they compute does not depend on the order or the
chunking in which the two streams arrive: a recorded session replays to the
same output bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..decoders.kalman import CLDAParams, KalmanDecoder
from ..decoders.poisson import PoissonDecoder
from ..decoders.simulate import CosinePopulation
from ..errors import ConfigError
from ..messages import EVENT_DTYPE, Chunk, StreamMeta
from .base import GeneratorSource, Node, NodeContext, build_params, param, regular_rate

__all__ = [
    "CursorTask", "CursorTaskParams", "Kalman", "KalmanParams", "CldaBlock", "PoissonDirection",
    "PoissonDirectionParams", "KINEMATICS", "TASK_EVENTS", "ADAPT_REASONS",
]

#: Columns of ``<task>.kinematics``.
KINEMATICS = ("cursor_x", "cursor_y", "target_x", "target_y", "intended_vx", "intended_vy", "dist")
#: Event codes of ``<task>.events``.
TASK_EVENTS = {"target_onset": 1, "hit": 2, "timeout": 3}
#: ``reason`` codes of the ``<kalman>.adapt`` stream (:class:`rtneuro.decoders.kalman.AdaptRecord`).
ADAPT_REASONS = {"ok": 0, "too_short": 1, "non_finite": 2, "too_large": 3, "singular": 4}
_ADAPT_COLUMNS = ("accepted", "reason", "rel_change", "n_bins", "r2", "alpha", "last_bin")


# -- the task ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CursorTaskParams:
    """Parameters of :class:`CursorTask`."""

    bin_s: float = param(0.05, ge=0.001, le=1.0, doc="count bin width (the output rate is 1 / bin_s)")
    chunk_size: int = param(1, ge=1, le=10000, doc="bins per chunk; 1 closes the loop on every bin")
    duration_s: float | None = param(None, gt=0, doc="stop after this long (default: never)")
    seed: int = param(0, ge=0)
    n_units: int = param(40, ge=1, le=10000)
    baseline_hz: tuple[float, float] = param((5.0, 25.0), ge=0, doc="range of the units' rates at rest")
    depth_hz: tuple[float, float] = param((5.0, 20.0), ge=0, doc="range of the rate modulation at the intended speed")
    radius: float = param(0.1, gt=0, doc="distance of the outer targets from the centre (workspace units)")
    n_targets: int = param(8, ge=1, le=360, doc="outer targets, evenly spaced on the circle, presented in a seeded random order")
    target_radius: float = param(0.015, gt=0, doc="the cursor is on target within this distance")
    hold_s: float = param(0.25, ge=0, doc="time on target that counts as a hit")
    timeout_s: float = param(4.0, gt=0, doc="a target not hit within this long times out")
    speed: float = param(0.1, gt=0, doc="intended speed (workspace units per second)")
    workspace: float = param(0.2, gt=0, doc="the cursor stays within +-workspace on each axis")

    def __post_init__(self) -> None:
        for name in ("baseline_hz", "depth_hz"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ConfigError(f"{name}={[lo, hi]} must be [low, high]")
        if self.target_radius >= self.radius:
            raise ConfigError(f"target_radius={self.target_radius} must be < radius={self.radius}")


class CursorTask(GeneratorSource):
    """A simulated participant doing a center-out cursor task with a cosine-tuned population.

    Each bin ``k`` (of ``bin_s``):

    1. the cursor moves by the velocity the decoder decoded for bin ``k - 1``
       (the ``feedback`` input, e.g. ``feedback: [kf]``), clipped to the
       workspace; before any feedback arrived, with no feedback edge, or on
       a NaN row (the decoder is calibrating), it moves by the intended
       velocity of bin ``k - 1`` instead (open-loop calibration: the
       participant watches the cursor move to the targets);
    2. the task: the cursor within ``target_radius`` of the target for
       ``hold_s`` is a hit; ``timeout_s`` without a hit is a timeout; either
       presents the next target (the centre after an outer target, the next
       outer target after the centre);
    3. the participant intends to move toward the target at ``speed`` (zero
       on target), and the units fire Poisson counts for that velocity.

    Outputs
    -------
    ``<id>``
        Spike counts per bin, one column per unit (``feat`` at ``1 / bin_s``).
    ``<id>.kinematics``
        Per bin: cursor position, target position, intended velocity, and
        the cursor-target distance ``dist`` (columns :data:`KINEMATICS`).
        The cursor position is the one the counts of the bin were fired at.
    ``<id>.events``
        ``target_onset`` (value: target number, 0 the centre), ``hit`` and
        ``timeout`` (value: trial length in s), indexed by bin.

    Everything is determined by ``seed`` and the feedback; the output does
    not depend on ``chunk_size`` without feedback. With the whole loop in
    one process and ``chunk_size: 1``, the decoder's output for bin ``k - 1``
    has arrived when bin ``k`` is computed, so the loop replays bit for bit.
    When it has not (larger chunks, other layouts, live runs), the last
    decoded velocity is held (``held_bins``), and a decoded velocity that
    arrives after the cursor moved on with a different assumption is counted
    in ``late_feedback``.

    Notes
    -----
    Cosine tuning (Georgopoulos, Schwartz & Kettner 1986 Science 233:1416)
    scaled by speed, the center-out task and the intention model of ReFIT
    (Gilja et al. 2012 Nat Neurosci 15:1752).
    """

    Params = CursorTaskParams
    feedback_kinds = ("feat",)

    def __init__(self, params: CursorTaskParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        p = params
        self.sfreq = 1.0 / p.bin_s
        self._end = None if p.duration_s is None else int(round(p.duration_s * self.sfreq))
        rng = np.random.default_rng([p.seed, 0])
        self.population = CosinePopulation.random(p.n_units, rng, baseline_hz=p.baseline_hz, depth_hz=p.depth_hz,
                                                  ref_speed=p.speed)
        theta = 2.0 * np.pi * np.arange(p.n_targets) / p.n_targets
        self.targets = np.vstack([np.zeros((1, 2)), p.radius * np.column_stack([np.cos(theta), np.sin(theta)])])
        names = tuple(f"u{i}" for i in range(p.n_units))
        src = f"cursor_task seed={p.seed}"
        desc = {"bin_s": p.bin_s, "model": "cosine-tuned Poisson population (Georgopoulos et al. 1986)",
                "preferred": self.population.preferred.tolist(), "baseline_hz": self.population.baseline_hz.tolist(),
                "depth_hz": self.population.depth_hz.tolist(), "ref_speed": p.speed}
        self.outputs = {
            "": StreamMeta(name=ctx.stream_name(), kind="feat", sfreq=self.sfreq, ch_names=names,
                           ch_types=("misc",) * p.n_units, units=("count",) * p.n_units, dtype="<f8", source=src,
                           desc=desc),
            "kinematics": StreamMeta(name=ctx.stream_name("kinematics"), kind="feat", sfreq=self.sfreq,
                                     ch_names=KINEMATICS, ch_types=("misc",) * len(KINEMATICS),
                                     units=("", "", "", "", "1/s", "1/s", ""), dtype="<f8",
                                     source=f"{src} task state"),
            "events": StreamMeta(name=ctx.stream_name("events"), kind="evt", sfreq=0.0, dtype="event",
                                 source=f"{src} task events", event_id=dict(TASK_EVENTS)),
        }
        self.reset()

    @staticmethod
    def check_feedback(params: CursorTaskParams, port: int, meta: StreamMeta) -> None:
        if meta.n_channels != 2:
            raise ConfigError(f"has {meta.n_channels} columns {list(meta.ch_names)[:4]}; feed back a decoded 2-D velocity (a 'kalman' node's output)")
        if not math.isclose(meta.sfreq, 1.0 / params.bin_s, rel_tol=1e-9):
            raise ConfigError(f"runs at {meta.sfreq:g} Hz, the task's bins at {1.0 / params.bin_s:g} Hz; decode the task's own counts")

    def reset(self) -> None:
        p = self.params
        self._index = 0
        self._origin = 0.0
        self._rng_counts = np.random.default_rng([p.seed, 1])
        self._rng_targets = np.random.default_rng([p.seed, 2])
        self._order: list[int] = []
        self._pos = np.zeros(2)
        self._target = 0  # index into self.targets (0: the centre)
        self._vi = np.zeros(2)  # intended velocity of the last bin
        self._trial_bins = 0
        self._hold_bins = 0
        self._fb: dict[int, tuple[float, float]] = {}  # decoded velocity by bin
        self._fb_seen = False
        self._held = (math.nan, math.nan)  # last decoded velocity received
        self._assumed: dict[int, tuple[float, float]] = {}  # feedback assumed for bins not yet received
        self._n_events = 0
        self.hits = 0
        self.timeouts = 0
        self.trials = 0
        self.held_bins = 0
        self.late_feedback = 0
        self.feedback_bins = 0
        self.open_loop_bins = 0
        self._target = self._next_outer()
        self.trials = 1
        self._onset_due = True  # the first target's onset: published with bin 0

    def prefetch(self) -> None:
        """Nothing ahead of time: the next bin depends on the feedback still to come."""

    def _next_outer(self) -> int:
        if not self._order:
            self._order = (1 + self._rng_targets.permutation(self.params.n_targets)).tolist()
        return self._order.pop(0)

    def _new_target(self, k: int, t: float, events: list) -> None:
        self._target = self._next_outer() if self._target == 0 else 0
        self._trial_bins = 0
        self._hold_bins = 0
        self.trials += 1
        events.append((k, t, TASK_EVENTS["target_onset"], -1, 0.0, float(self._target), b"target_onset"))

    # -- feedback ---------------------------------------------------------------------------------

    def process(self, chunk: Chunk, port: int = 0) -> None:
        """Decoded velocity rows (``vx, vy``) for bins ``chunk.first ...``."""
        for j, (vx, vy) in enumerate(chunk.data.tolist()):
            k = chunk.first + j
            assumed = self._assumed.pop(k, None)
            if assumed is not None:  # the cursor moved on without it
                if not _same(assumed, (vx, vy)):
                    self.late_feedback += 1
                continue
            if k >= self._index - 1:
                self._fb[k] = (vx, vy)
            if math.isfinite(vx) and math.isfinite(vy):
                self._held = (vx, vy)
            self._fb_seen = True
            self.feedback_bins += 1
        return None

    def _velocity_of(self, k: int) -> NDArray[np.float64]:
        """The velocity the cursor moves by after bin ``k``."""
        fb = self._fb.pop(k, None)
        if fb is None and self._fb_seen:  # not there yet: hold the last one
            fb = self._held
            self._assumed[k] = fb
            self.held_bins += 1
        if fb is None or not (math.isfinite(fb[0]) and math.isfinite(fb[1])):
            self.open_loop_bins += 1
            return self._vi
        return np.array(fb)

    # -- output -----------------------------------------------------------------------------------

    def read(self) -> list[tuple[str, Chunk]]:
        p = self.params
        n = self._remaining()
        a = self._index
        t0 = self._origin + a / self.sfreq
        counts = np.empty((n, p.n_units))
        kin = np.empty((n, len(KINEMATICS)))
        events: list = []
        hold_bins = int(round(p.hold_s / p.bin_s))
        timeout_bins = int(round(p.timeout_s / p.bin_s))
        for j in range(n):
            k = a + j
            t = self._origin + k / self.sfreq  # as the chunk of any split starting here would time it
            if k > 0:
                self._pos = np.clip(self._pos + self._velocity_of(k - 1) * p.bin_s, -p.workspace, p.workspace)
            if self._onset_due:
                events.append((k, t, TASK_EVENTS["target_onset"], -1, 0.0, float(self._target), b"target_onset"))
                self._onset_due = False
            goal = self.targets[self._target]
            dist = float(np.hypot(*(goal - self._pos)))
            self._trial_bins += 1
            self._hold_bins = self._hold_bins + 1 if dist <= p.target_radius else 0
            if self._hold_bins >= max(hold_bins, 1):
                self.hits += 1
                events.append((k, t, TASK_EVENTS["hit"], -1, 0.0, self._trial_bins * p.bin_s, b"hit"))
                self._new_target(k, t, events)
            elif self._trial_bins >= timeout_bins:
                self.timeouts += 1
                events.append((k, t, TASK_EVENTS["timeout"], -1, 0.0, self._trial_bins * p.bin_s, b"timeout"))
                self._new_target(k, t, events)
            goal = self.targets[self._target]
            to = goal - self._pos
            dist = float(np.hypot(*to))
            self._vi = np.zeros(2) if dist <= p.target_radius else to * (p.speed / dist)
            counts[j] = self._rng_counts.poisson(self.population.rates(self._vi[None])[0] * p.bin_s)
            kin[j, 0:2] = self._pos
            kin[j, 2:4] = goal
            kin[j, 4:6] = self._vi
            kin[j, 6] = dist
        self._index = a + n
        for k in [k for k in self._fb if k < a + n - 1]:
            del self._fb[k]  # stale: bins the cursor has passed
        out = [("", Chunk(counts, a, t0, self.sfreq, [])), ("kinematics", Chunk(kin, a, t0, self.sfreq, []))]
        if events:
            ev = np.array(events, dtype=EVENT_DTYPE)
            out.append(("events", Chunk(ev, self._n_events, float(ev["time"][0]), 0.0, [])))
            self._n_events += len(events)
        return out

    def report(self) -> dict[str, Any]:
        return {"bins": self._index, "trials": self.trials, "hits": self.hits, "timeouts": self.timeouts,
                "feedback_bins": self.feedback_bins, "open_loop_bins": self.open_loop_bins,
                "held_bins": self.held_bins, "late_feedback": self.late_feedback}


def _same(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


# -- joining the counts with the kinematics ------------------------------------------------------


class _Join:
    """Rows of two regular streams paired by index, whatever order and chunking they arrive in."""

    def __init__(self, widths: tuple[int, ...], sfreq: float) -> None:
        self.sfreq = sfreq
        self.next = 0  # first index not yet handed out
        self._rows = [np.empty((0, w)) for w in widths]
        self._t = np.empty(0)  # times of port 0's pending rows
        self._end = [0] * len(widths)  # next index expected per port
        self._started = False

    def push(self, chunk: Chunk, port: int) -> tuple[int, NDArray[np.float64], list[NDArray[np.float64]]] | None:
        """Add a chunk; return ``(first, times, [rows per port])`` of the rows now complete, or None."""
        n = chunk.data.shape[0]
        if n == 0:
            return None
        if not self._started:
            self.next = int(chunk.first)
            self._end = [self.next] * len(self._rows)
            self._started = True
        if int(chunk.first) != self._end[port]:
            raise ConfigError(f"input {port} jumped from row {self._end[port]} to {chunk.first}: the inputs must be gapless streams of one source")
        self._rows[port] = np.concatenate([self._rows[port], np.asarray(chunk.data, dtype=np.float64)])
        if port == 0:
            self._t = np.concatenate([self._t, chunk.t0 + np.arange(n) / self.sfreq])
        self._end[port] += n
        ready = min(self._end) - self.next
        if ready <= 0:
            return None
        first = self.next
        rows = [r[:ready] for r in self._rows]
        times = self._t[:ready]
        self._rows = [r[ready:] for r in self._rows]
        self._t = self._t[ready:]
        self.next += ready
        return first, times, rows


def _check_kinematics(meta: StreamMeta, fs: float, what: str) -> list[int]:
    need = KINEMATICS[:6]
    missing = [c for c in need if c not in meta.ch_names]
    if missing:
        raise ConfigError(f"second input '{meta.name}' has no {missing}; {what} needs a 'cursor_task' node's '<id>.kinematics'")
    if meta.sfreq != fs:
        raise ConfigError(f"second input '{meta.name}' runs at {meta.sfreq:g} Hz, the counts at {fs:g} Hz; use the same task's streams")
    return [meta.ch_names.index(c) for c in need]


def _load_checked(cls: Any, path_str: str, ctx: NodeContext, n_units: int, bin_s: float, src: str) -> Any:
    path = ctx.resolve(path_str)
    if not path.is_file():
        raise ConfigError(f"model file {str(path)!r} not found; calibrate in the graph (calibrate_s) with save_model, or fit and save one")
    dec = cls.load(path)
    if dec.n_units != n_units:
        raise ConfigError(f"model file {str(path)!r} has {dec.n_units} units but stream '{src}' has {n_units} columns; use a model fitted on this population")
    if not math.isclose(dec.bin_s, bin_s, rel_tol=1e-9):
        raise ConfigError(f"model file {str(path)!r} was fitted on {dec.bin_s:g} s bins but stream '{src}' has {bin_s:g} s bins")
    return dec


# -- the Kalman decoder node --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CldaBlock:
    """The ``clda`` block of a ``kalman`` node (see :class:`rtneuro.decoders.kalman.CLDAParams`)."""

    batch_s: float = param(10.0, gt=0, doc="refit every this long of valid bins")
    half_life_s: float = param(60.0, gt=0, doc="half-life of the old decoder in the SmoothBatch blend")
    alpha_floor: float = param(0.5, ge=0, lt=1, doc="the old decoder always keeps this weight")
    max_change: float = param(0.5, gt=0, doc="reject a batch that would move C by more than this (relative)")
    min_bins: int = param(50, ge=2, doc="reject shorter batches")
    target_radius: float = param(0.0, ge=0, doc="intended velocity is zero within this distance of the target")
    q_floor: float = param(1e-2, gt=0, doc="floor of the refitted Q's diagonal, relative to its mean")


@dataclass(frozen=True, slots=True, kw_only=True)
class KalmanParams:
    """Parameters of :class:`Kalman`."""

    model: str | None = param(None, doc="decoder file written by KalmanDecoder.save (relative to the config's folder)")
    calibrate_s: float | None = param(None, gt=0, doc="fit on this much of the first counts against the intended velocity, then decode")
    gain: Literal["adaptive", "steady"] = param("adaptive", doc="full covariance recursion, or the steady-state gain")
    clda: dict[str, Any] | None = param(None, doc="closed-loop decoder adaptation: {batch_s, half_life_s, max_change, ...}")
    adapting: bool = param(True, doc="with clda: collect batches and adapt (false: pause; the decoder keeps what it learnt)")
    q_floor: float = param(1e-2, gt=0, doc="calibration: floor of Q's diagonal relative to its mean")
    save_model: str | None = param(None, doc="write the calibrated / adapted decoder here at the end of the run")

    def __post_init__(self) -> None:
        if (self.model is None) == (self.calibrate_s is None):
            raise ConfigError("give exactly one of 'model' (a decoder file) and 'calibrate_s' (fit in the graph)")


class Kalman(Node):
    """Decode a 2-D velocity from binned counts with a Kalman filter; calibrate and adapt it in the graph.

    Inputs: the counts (``feat``, one column per unit, e.g. a ``cursor_task``
    node's main output) and, for calibration and CLDA, the task's
    ``<id>.kinematics`` (intended velocity, cursor and target). With both,
    the node pairs them by bin, so its output is the same whatever order
    and chunking they arrive in.

    With ``calibrate_s``, the first ``calibrate_s`` of bins fit the decoder
    (:meth:`KalmanDecoder.fit` of the counts on the intended velocity, open
    loop) and the output is NaN meanwhile ("not decoding"; a ``cursor_task``
    then moves the cursor by the intended velocity). With ``clda``, every
    ``batch_s`` of valid decoded bins refits ``C, c0, Q`` on the ReFIT
    intention estimate and blends (:meth:`KalmanDecoder.adapt`, bounded);
    each batch's :class:`~rtneuro.decoders.kalman.AdaptRecord` is published
    on ``<id>.adapt``. Non-finite counts are skipped (the filter predicts
    only), counted, and kept out of calibration and CLDA batches.

    Live parameters: ``adapting`` (pause or resume CLDA). :meth:`update`
    keeps the decoder as adapted so far and the filter state; pausing drops
    the batch being collected (a batch never spans a pause), so the first
    batch after resuming holds ``batch_s`` of bins decoded from then on.
    The ``clda`` settings (announced in the stream's desc), the model and
    the calibration are fixed while running.

    Outputs
    -------
    ``<id>``
        ``vx, vy``: the decoded velocity of each bin (a control command for
        an application, e.g. a cursor); NaN while calibrating.
    ``<id>.adapt``
        With ``clda``: one row per batch, columns ``accepted`` (0/1),
        ``reason`` (:data:`ADAPT_REASONS`), ``rel_change``, ``n_bins``,
        ``r2``, ``alpha``, ``last_bin`` (irregular stream).

    Notes
    -----
    Wu et al. (2006) Neural Comput 18:80 (Kalman decoding); Gilja et al.
    (2012) Nat Neurosci 15:1752 (velocity state, ReFIT intention); Orsborn
    et al. (2012) IEEE TNSRE 20:468 (SmoothBatch CLDA).
    """

    Params = KalmanParams
    input_kinds = ("feat", "feat")
    max_inputs = 2
    live = ("adapting",)

    def __init__(self, params: KalmanParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        src = inputs[0]
        self.fs = regular_rate(src, "Kalman decoding")
        self.bin_s = 1.0 / self.fs
        self.n_units = src.n_channels
        self.clda: CLDAParams | None = None
        self.batch = 0
        if params.clda is not None:
            blk = build_params(CldaBlock, params.clda, f"node '{ctx.node_id}' clda")
            self.batch = max(int(round(blk.batch_s * self.fs)), 2)
            try:
                self.clda = CLDAParams(half_life_s=blk.half_life_s, alpha_floor=blk.alpha_floor, max_change=blk.max_change,
                                       min_bins=blk.min_bins, target_radius=blk.target_radius, q_floor=blk.q_floor)
            except ConfigError as exc:
                raise ConfigError(f"clda: {exc}") from None
        self.kin_cols: list[int] | None = None
        if len(inputs) > 1:
            self.kin_cols = _check_kinematics(inputs[1], self.fs, "a kalman node")
        elif params.calibrate_s is not None or self.clda is not None:
            raise ConfigError("calibrate_s and clda need the task's kinematics as second input, e.g. inputs: [task, task.kinematics]")
        self.model: KalmanDecoder | None = None
        if params.model is not None:
            self.model = _load_checked(KalmanDecoder, params.model, ctx, self.n_units, self.bin_s, src.name)
            if self.model.n_dims != 2:
                raise ConfigError(f"model file {params.model!r} decodes {self.model.n_dims} dimensions; this node decodes a 2-D velocity")
        self.n_cal = 0 if params.calibrate_s is None else int(round(params.calibrate_s * self.fs))
        if params.calibrate_s is not None and self.n_cal < self.n_units + 4:
            raise ConfigError(f"calibrate_s={params.calibrate_s} gives {self.n_cal} bins; need more than {self.n_units + 4}")
        self.outputs = {
            "": StreamMeta(name=ctx.stream_name(), kind="feat", sfreq=self.fs, ch_names=("vx", "vy"), ch_types=("misc", "misc"),
                           units=("1/s", "1/s"), dtype="<f8", source=f"kalman velocity decoder of {src.name}",
                           desc={"gain": params.gain, "model": params.model or f"calibrated on {params.calibrate_s} s",
                                 "clda": params.clda}),
        }
        if self.clda is not None:
            self.outputs["adapt"] = StreamMeta(name=ctx.stream_name("adapt"), kind="feat", sfreq=0.0, ch_names=_ADAPT_COLUMNS,
                                               ch_types=("misc",) * len(_ADAPT_COLUMNS), units=("1",) * len(_ADAPT_COLUMNS),
                                               dtype="<f8", source=f"CLDA of {ctx.stream_name()}",
                                               desc={"reasons": dict(ADAPT_REASONS)})
        self.reset()

    def reset(self) -> None:
        p = self.params
        self.dec: KalmanDecoder | None = None
        if self.model is not None:
            self.dec = KalmanDecoder.from_arrays(*self._model_arrays())
        self._x, self._P = (self.dec.initial_state() if self.dec is not None else (np.zeros(2), np.zeros((2, 2))))
        self._join = _Join((self.n_units, self.inputs[1].n_channels) if self.kin_cols is not None else (self.n_units,), self.fs)
        self._cal_z = np.empty((self.n_cal, self.n_units))
        self._cal_v = np.empty((self.n_cal, 2))
        self._n_cal_seen = 0  # calibration bins seen (valid or not)
        self._n_cal_valid = 0
        self._bd = np.empty((self.batch, 2))
        self._bpos = np.empty((self.batch, 2))
        self._btgt = np.empty((self.batch, 2))
        self._bz = np.empty((self.batch, self.n_units))
        self._nb = 0
        self.bins = 0
        self.decoded = 0
        self.nonfinite = 0
        self.records: list[dict[str, Any]] = []
        self.calibrated = p.calibrate_s is None

    def update(self, params: KalmanParams) -> None:
        """Pause or resume CLDA; the decoder and its state stay (see the class docstring)."""
        if self.params.adapting and not params.adapting:
            self._nb = 0  # the batch being collected is dropped: a batch never spans a pause
        self.params = params

    def _model_arrays(self) -> tuple[dict[str, Any], dict[str, Any]]:
        assert self.model is not None
        meta, arrays = self.model.to_arrays()
        return {**meta, "gain": self.params.gain}, arrays

    def warmup(self) -> None:
        if self.dec is not None:
            self.dec.warmup()
        else:  # the kernels compile for the types, not the shapes: any decoder of this size will do
            d = KalmanDecoder(A=0.5 * np.eye(2), W=np.eye(2), C=np.ones((self.n_units, 2)), c0=np.ones(self.n_units),
                              Q=np.eye(self.n_units), bin_s=self.bin_s)
            d.warmup()

    def process(self, chunk: Chunk, port: int = 0) -> list | None:
        got = self._join.push(chunk, port)
        if got is None:
            return None
        first, times, rows = got
        Z = rows[0]
        n = Z.shape[0]
        out = np.empty((n, 2))
        kin = rows[1] if len(rows) > 1 else None
        adapt_rows: list[list[float]] = []
        for j in range(n):
            z = np.ascontiguousarray(Z[j])
            ok = bool(np.isfinite(z).all())
            self.bins += 1
            if not ok:
                self.nonfinite += 1
            if self.dec is None:  # calibrating
                assert kin is not None and self.kin_cols is not None
                if ok:
                    self._cal_z[self._n_cal_valid] = z
                    self._cal_v[self._n_cal_valid] = kin[j, self.kin_cols[4:6]]
                    self._n_cal_valid += 1
                self._n_cal_seen += 1
                out[j] = np.nan
                if self._n_cal_seen >= self.n_cal:
                    self._calibrate()
                continue
            self.dec.infer(z, self._x, self._P)
            out[j] = self._x
            self.decoded += 1
            if self.clda is not None and ok and self.params.adapting:
                assert kin is not None and self.kin_cols is not None
                b = self._nb
                self._bd[b] = self._x
                self._bpos[b] = kin[j, self.kin_cols[0:2]]
                self._btgt[b] = kin[j, self.kin_cols[2:4]]
                self._bz[b] = z
                self._nb += 1
                if self._nb == self.batch:
                    rec = self.dec.adapt(self._bd, self._bpos, self._btgt, self._bz, self.clda)
                    self._nb = 0
                    self.records.append(rec.to_dict())
                    adapt_rows.append([float(rec.accepted), float(ADAPT_REASONS[rec.reason]), rec.rel_change,
                                       float(rec.n_bins), rec.r2, rec.alpha, float(first + j)])
        trace = chunk.trace
        res: list = [("", Chunk(out, first, float(times[0]), self.fs, trace))]
        if adapt_rows:
            res.append(("adapt", Chunk(np.array(adapt_rows), len(self.records) - len(adapt_rows),
                                       float(times[-1]), 0.0, trace)))
        return res

    def _calibrate(self) -> None:
        m = self._n_cal_valid
        try:
            dec = KalmanDecoder.fit(self._cal_v[:m], self._cal_z[:m], bin_s=self.bin_s, gain=self.params.gain,
                                    q_floor=self.params.q_floor)
        except ConfigError as exc:
            raise ConfigError(f"calibration on {m} valid bins failed: {exc}") from None
        self.dec = dec
        self._x, self._P = dec.initial_state()
        self.calibrated = True

    def end(self) -> None:
        if self.params.save_model is not None and self.dec is not None:
            self.dec.save(self.ctx.resolve(self.params.save_model))

    def report(self) -> dict[str, Any]:
        acc = sum(1 for r in self.records if r["accepted"])
        return {"bins": self.bins, "decoded": self.decoded, "nonfinite": self.nonfinite,
                "skipped": self.dec.n_skipped if self.dec is not None else 0, "calibrated": self.calibrated,
                "calibration_bins": self._n_cal_valid, "adapt_accepted": acc, "adapt_rejected": len(self.records) - acc}


# -- the Poisson direction decoder node ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PoissonDirectionParams:
    """Parameters of :class:`PoissonDirection`."""

    model: str | None = param(None, doc="decoder file written by PoissonDecoder.save")
    calibrate_s: float | None = param(None, gt=0, doc="fit on this much of the first counts against the intended direction")
    n_directions: int = param(8, ge=2, le=360, doc="calibration: directions on the circle (0 deg along +x)")
    rest: bool = param(True, doc="calibration: a 'rest' grid point for bins with no intended movement")
    rate_floor_hz: float = param(0.1, gt=0)
    prior: Literal["uniform", "fitted"] = param("uniform")
    save_model: str | None = param(None, doc="write the calibrated decoder here at the end of the run")

    def __post_init__(self) -> None:
        if (self.model is None) == (self.calibrate_s is None):
            raise ConfigError("give exactly one of 'model' (a decoder file) and 'calibrate_s' (fit in the graph)")


def _grid_labels(grid: NDArray[Any]) -> tuple[str, ...]:
    if grid.ndim == 2 and grid.shape[1] == 2:
        return tuple("rest" if x == 0 and y == 0 else f"{math.degrees(math.atan2(y, x)) % 360:g}" for x, y in grid.tolist())
    return tuple(f"{v:g}" for v in np.asarray(grid).reshape(len(grid), -1)[:, 0].tolist())


class PoissonDirection(Node):
    """Decode the intended movement direction from binned counts with a Bayesian Poisson decoder.

    The grid: ``n_directions`` directions on the circle (grid values are unit
    vectors, labelled in degrees) plus, with ``rest``, a ``rest`` point
    (the zero vector). Calibration (``calibrate_s``) labels each bin with the
    direction nearest to the task's intended velocity (``rest`` when it is
    zero) and fits :meth:`PoissonDecoder.fit`; NaN rows meanwhile. A model
    file may use any grid.

    Outputs
    -------
    ``<id>``
        Per bin: ``p:<label>`` the posterior of each grid point, ``map`` the
        MAP grid index (-1 while calibrating or for non-finite or negative
        counts, whose posterior is NaN), ``p_max`` its posterior. An
        application wanting a discrete command (e.g. "move left") takes
        ``map`` when ``p_max`` is high enough; one wanting a continuous
        command takes the posterior-weighted direction from the ``p:`` columns.

    Notes
    -----
    Zhang, Ginzburg, McNaughton & Sejnowski (1998) J Neurophysiol 79:1017;
    Dayan & Abbott (2001) Theoretical Neuroscience, ch. 3.
    """

    Params = PoissonDirectionParams
    input_kinds = ("feat", "feat")
    max_inputs = 2

    def __init__(self, params: PoissonDirectionParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        src = inputs[0]
        self.fs = regular_rate(src, "Poisson decoding")
        self.bin_s = 1.0 / self.fs
        self.n_units = src.n_channels
        self.kin_cols: list[int] | None = None
        if len(inputs) > 1:
            self.kin_cols = _check_kinematics(inputs[1], self.fs, "a poisson_decoder node")
        elif params.calibrate_s is not None:
            raise ConfigError("calibrate_s needs the task's kinematics as second input, e.g. inputs: [task, task.kinematics]")
        self.model: PoissonDecoder | None = None
        if params.model is not None:
            self.model = _load_checked(PoissonDecoder, params.model, ctx, self.n_units, self.bin_s, src.name)
            grid = self.model.grid
        else:
            th = 2.0 * np.pi * np.arange(params.n_directions) / params.n_directions
            grid = np.column_stack([np.cos(th), np.sin(th)])
            if params.rest:
                grid = np.vstack([grid, np.zeros((1, 2))])
        self.grid = grid
        self.n_grid = len(grid)
        self.n_cal = 0 if params.calibrate_s is None else int(round(params.calibrate_s * self.fs))
        names = tuple(f"p:{lab}" for lab in _grid_labels(grid)) + ("map", "p_max")
        self.outputs = {
            "": StreamMeta(name=ctx.stream_name(), kind="feat", sfreq=self.fs, ch_names=names, ch_types=("misc",) * len(names),
                           units=("1",) * len(names), dtype="<f8", source=f"poisson direction decoder of {src.name}",
                           desc={"grid": np.asarray(grid, dtype=float).tolist()}),
        }
        self.reset()

    def reset(self) -> None:
        self.dec = self.model
        self._join = _Join((self.n_units, self.inputs[1].n_channels) if self.kin_cols is not None else (self.n_units,), self.fs)
        self._cal_z = np.empty((self.n_cal, self.n_units))
        self._cal_s = np.empty(self.n_cal, dtype=np.int64)
        self._n_cal_seen = 0
        self._n_cal_valid = 0
        self._lp = np.zeros(self.n_grid)
        self._post = np.zeros(self.n_grid)
        self.bins = 0
        self.nonfinite = 0

    def warmup(self) -> None:
        d = self.dec if self.dec is not None else PoissonDecoder(rates_hz=np.ones((self.n_units, self.n_grid)), bin_s=self.bin_s)
        d.warmup()

    def _label(self, v: NDArray[np.float64]) -> int:
        p = self.params
        if v[0] == 0.0 and v[1] == 0.0:
            return p.n_directions if p.rest else -1
        ang = math.atan2(v[1], v[0]) % (2.0 * math.pi)
        return int(round(ang / (2.0 * math.pi / p.n_directions))) % p.n_directions

    def process(self, chunk: Chunk, port: int = 0) -> Chunk | None:
        got = self._join.push(chunk, port)
        if got is None:
            return None
        first, times, rows = got
        Z = rows[0]
        n = Z.shape[0]
        G = self.n_grid
        out = np.empty((n, G + 2))
        for j in range(n):
            z = np.ascontiguousarray(Z[j])
            self.bins += 1
            if self.dec is None:
                assert self.kin_cols is not None
                ok = bool(np.isfinite(z).all() and (z >= 0).all())
                lab = self._label(rows[1][j, self.kin_cols[4:6]])
                if ok and lab >= 0:
                    self._cal_z[self._n_cal_valid] = z
                    self._cal_s[self._n_cal_valid] = lab
                    self._n_cal_valid += 1
                elif not ok:
                    self.nonfinite += 1
                self._n_cal_seen += 1
                out[j, :G] = np.nan
                out[j, G] = -1.0
                out[j, G + 1] = np.nan
                if self._n_cal_seen >= self.n_cal:
                    self._calibrate()
                continue
            k = self.dec.infer(z, self._lp, self._post)
            if k < 0:
                self.nonfinite += 1
            out[j, :G] = self._post
            out[j, G] = k
            out[j, G + 1] = self._post[k] if k >= 0 else np.nan
        return Chunk(out, first, float(times[0]), self.fs, chunk.trace)

    def _calibrate(self) -> None:
        m = self._n_cal_valid
        try:
            self.dec = PoissonDecoder.fit(self._cal_z[:m], self._cal_s[:m], self.n_grid, bin_s=self.bin_s,
                                          rate_floor_hz=self.params.rate_floor_hz, prior=self.params.prior, grid=self.grid)
        except ConfigError as exc:
            raise ConfigError(f"calibration on {m} valid bins failed: {exc}") from None

    def end(self) -> None:
        if self.params.save_model is not None and self.dec is not None:
            self.dec.save(self.ctx.resolve(self.params.save_model))

    def report(self) -> dict[str, Any]:
        return {"bins": self.bins, "nonfinite": self.nonfinite, "calibrated": self.dec is not None,
                "calibration_bins": self._n_cal_valid}
