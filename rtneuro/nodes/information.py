"""Information between channels on sliding windows: mutual information and transfer entropy as features."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..analysis import information as it
from ..errors import ConfigError
from ..messages import Chunk, StreamMeta
from .base import Node, NodeContext, frames_chunk, param, regular_rate, window_and_step
from .buffers import RingBuffer
from .connectivity import resolve_pairs

__all__ = ["Information", "InformationParams", "MEASURES"]

Measure = Literal["mi_ksg", "mi_gcmi", "mi_gaussian", "te_ksg", "te_gaussian"]
MEASURES = ("mi_ksg", "mi_gcmi", "mi_gaussian", "te_ksg", "te_gaussian")


@dataclass(frozen=True, slots=True, kw_only=True)
class InformationParams:
    """Parameters of :class:`Information`."""

    pairs: Literal["all"] | list[tuple[str, str]] = param(
        "all", doc="[[x, y], ...] by channel name (for transfer entropy: x drives y), or 'all' (every i < j)")
    measures: list[Measure] = param(["te_gaussian"], doc="any of mi_ksg, mi_gcmi, mi_gaussian, te_ksg, te_gaussian")
    both_directions: bool = param(True, doc="transfer entropy also from y to x for each pair")
    window_s: float = param(4.0, gt=0, doc="analysis window length")
    step_s: float = param(0.5, gt=0, doc="one frame every step_s seconds")
    knn: int = param(4, ge=1, le=50, doc="neighbours of the KSG estimators")
    history: int = param(1, ge=1, le=20, doc="past samples of the target (transfer entropy's k)")
    source_history: int = param(1, ge=1, le=20, doc="past samples of the source (transfer entropy's l)")
    lag: int = param(1, ge=1, le=10_000, doc="source-to-target delay in samples (transfer entropy)")
    base: Literal["e", "2"] = param("e", doc="nats (e) or bits (2)")

    def __post_init__(self) -> None:
        if not self.measures:
            raise ConfigError(f"measures must name at least one of {list(MEASURES)}")
        if len(set(self.measures)) != len(self.measures):
            raise ConfigError(f"measures {self.measures} lists a measure twice")


class Information(Node):
    """Mutual information and transfer entropy between channel pairs on sliding windows.

    Every ``step_s`` seconds of input, the last ``window_s`` seconds of each
    pair go through the estimators of :mod:`rtneuro.analysis.information`:
    ``mi_ksg`` (Kraskov et al. 2004, ``knn`` neighbours), ``mi_gcmi``
    (Gaussian copula, Ince et al. 2017), ``mi_gaussian``, and the transfer
    entropy ``T_{x->y} = I(y_t ; x_{t-lag..} | y_{t-1..})`` as ``te_ksg``
    (Frenzel-Pompe) or ``te_gaussian`` (half of Granger's log-ratio). Output:
    one row per frame, one column per pair and measure, named
    ``"<x>-<y>:<measure>"`` for mutual information and
    ``"<x>-><y>:<measure>"`` for transfer entropy (with ``both_directions``
    also ``"<y>-><x>:<measure>"``). Frames are due at fixed sample counts
    and each estimate depends on its window only (the KSG jitter is seeded),
    so any split of the input gives bit-identical output. A window with a
    non-finite sample in a pair's channels gives NaN for that pair (counted).

    Cost: the Gaussian estimators take microseconds a pair; the KSG ones
    about 4 ms (MI) and 10 to 40 ms (TE) a pair for 1,000-sample windows:
    choose pairs and steps so that a frame's work fits in its step.
    """

    Params = InformationParams
    input_kinds = ("sig",)

    def __init__(self, params: InformationParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        src = inputs[0]
        fs = regular_rate(src, "information")
        self.window, self.step = window_and_step(params.window_s, params.step_s, fs, 16)
        pairs = resolve_pairs(params.pairs, src)
        names = list(src.ch_names)
        base = 2.0 if params.base == "2" else None
        te_kw = {"k": params.history, "l": params.source_history, "lag": params.lag, "base": base}
        need = max(params.history, params.lag + params.source_history - 1) + params.knn + 2
        if self.window < need:
            raise ConfigError(f"window_s={params.window_s} gives {self.window} samples; history, lag and knn need at least {need}")
        self._jobs: list[tuple[int, int, Callable[[np.ndarray, np.ndarray], float]]] = []
        out_names: list[str] = []
        for m in params.measures:
            for x, y in pairs:
                i, j = names.index(x), names.index(y)
                if m.startswith("mi_"):
                    self._jobs.append((i, j, self._mi(m, params.knn, base)))
                    out_names.append(f"{x}-{y}:{m}")
                    continue
                for a, b, na, nb in ((i, j, x, y), (j, i, y, x))[: 2 if params.both_directions else 1]:
                    self._jobs.append((a, b, self._te(m, params.knn, te_kw)))
                    out_names.append(f"{na}->{nb}:{m}")
        self.n_in = len(names)
        self.n_features = len(out_names)
        self.sfreq_in = fs
        unit = "bit" if base else "nat"
        self.outputs = {"": StreamMeta(
            name=ctx.stream_name(), kind="feat", sfreq=fs / self.step, ch_names=tuple(out_names),
            ch_types=("misc",) * len(out_names), units=(unit,) * len(out_names), dtype="<f8",
            source=f"information of {src.name}",
            desc={"window": self.window, "step": self.step, "knn": params.knn, "history": params.history,
                  "source_history": params.source_history, "lag": params.lag},
        )}
        self.reset()

    @staticmethod
    def _mi(m: str, knn: int, base: float | None) -> Callable[[np.ndarray, np.ndarray], float]:
        if m == "mi_ksg":
            return lambda a, b: it.mutual_info_ksg(a, b, k=knn, base=base)
        if m == "mi_gcmi":
            return lambda a, b: it.mutual_info_gcmi(a, b, base=base)
        return lambda a, b: it.mutual_info_gaussian(a, b, base=base)

    @staticmethod
    def _te(m: str, knn: int, kw: dict) -> Callable[[np.ndarray, np.ndarray], float]:
        if m == "te_ksg":
            return lambda a, b: it.transfer_entropy_ksg(a, b, knn=knn, **kw)
        return lambda a, b: it.transfer_entropy_gaussian(a, b, **kw)

    def reset(self) -> None:
        self._ring = RingBuffer(self.window, self.n_in)
        self._win = np.empty((self.window, self.n_in))
        self._next_end = self.window
        self._frames = 0
        self._origin: int | None = None
        self.n_nan_values = 0  # pair values set to NaN because of non-finite input
        self.n_failed = 0  # estimates that could not be made (a constant channel in the window)

    def warmup(self) -> None:
        rng = np.random.default_rng(0)
        self._compute(rng.standard_normal((self.window, self.n_in)), np.empty(self.n_features))
        self.reset()

    def _compute(self, win: np.ndarray, out: np.ndarray) -> None:
        finite = np.isfinite(win).all(axis=0)
        for n, (a, b, f) in enumerate(self._jobs):
            if not (finite[a] and finite[b]):
                out[n] = np.nan
                self.n_nan_values += 1
                continue
            try:
                out[n] = f(win[:, a], win[:, b])
            except ConfigError:  # a flat channel: its covariance is singular, its neighbours all at 0
                out[n] = np.nan
                self.n_failed += 1

    def process(self, chunk: Chunk, port: int = 0) -> Chunk | None:
        x = chunk.data
        n = x.shape[0]
        if n == 0:
            return None
        if self._origin is None:
            self._origin = chunk.first
        n_frames = self._ring.frames_due(n, self._next_end, self.step)
        if n_frames == 0:
            self._ring.write(x)
            return None
        rows = np.empty((n_frames, self.n_features))
        ends, self._next_end = self._ring.write_windows(x, self._next_end, self.step, self._win,
                                                        lambda f, w: self._compute(w, rows[f]))
        origin = self._origin
        first_frame = self._frames
        self._frames += len(rows)
        return frames_chunk(chunk, rows, ends, origin=origin, first_frame=first_frame, window=self.window,
                            step=self.step, fs=self.sfreq_in, of=self.inputs[0].name)

    def report(self) -> dict:
        return {"frames": self._frames, "nan_values": self.n_nan_values, "failed": self.n_failed}
