"""Spike-train statistics of a spike event stream on sliding windows: rates, ISI CV, Fano factor, synchrony."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..messages import Chunk, StreamMeta
from .base import Node, NodeContext, param

__all__ = ["SpikeStats", "SpikeStatsParams"]

#: spikes kept per channel at most (a window's worth; beyond, the oldest are dropped and counted)
MAX_SPIKES_PER_CHANNEL = 100_000


@dataclass(frozen=True, slots=True, kw_only=True)
class SpikeStatsParams:
    """Parameters of :class:`SpikeStats`."""

    channels: int | list[str] = param(doc="the channels the events' 'channel' field indexes: a count, or their names")
    window_s: float = param(10.0, gt=0, doc="statistics over the last window_s seconds")
    step_s: float = param(1.0, gt=0, doc="one frame every step_s seconds of stream time")
    fano_bin_s: float = param(0.1, gt=0, doc="count windows of the Fano factor (and the synchrony's bins)")

    def __post_init__(self) -> None:
        if self.fano_bin_s * 2 > self.window_s:
            raise ConfigError(f"fano_bin_s={self.fano_bin_s} leaves fewer than two count windows in window_s={self.window_s}")


class SpikeStats(Node):
    """Per channel and for the population, the statistics of the spikes of the last ``window_s`` seconds.

    Frames fall on a fixed grid of the stream clock, ``T_k = k step_s``; frame
    ``k`` covers the spikes with ``T_k - window_s < t <= T_k`` and is emitted
    as soon as an event later than ``T_k`` arrives (events come in time
    order, so the window is then complete) or the stream ends. Columns, per
    channel ``c``: ``c:rate`` (Hz), ``c:cv`` (the ISI coefficient of
    variation, NaN below 3 spikes), ``c:fano`` (variance over mean of the
    counts in ``fano_bin_s`` windows, NaN without spikes); then the means
    over the channels (``rate``, ``cv``, ``fano``, ignoring NaN) and
    ``synchrony`` (Golomb's chi over ``fano_bin_s`` bins). The same numbers as
    :func:`rtneuro.analysis.circuits.spike_statistics` on that window
    (tested), and any split of the events gives the same frames.
    """

    Params = SpikeStatsParams
    input_kinds = ("evt",)

    def __init__(self, params: SpikeStatsParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        ch = params.channels
        names = [f"ch{i}" for i in range(ch)] if isinstance(ch, int) else [str(c) for c in ch]
        if not names:
            raise ConfigError("channels: give a count >= 1 or a list of names")
        self.names = names
        self.n_ch = len(names)
        self.n_bins = int(math.floor(params.window_s / params.fano_bin_s + 1e-9))
        cols = [f"{c}:{m}" for c in names for m in ("rate", "cv", "fano")] + ["rate", "cv", "fano", "synchrony"]
        self.outputs = {"": StreamMeta(
            name=ctx.stream_name(), kind="feat", sfreq=1.0 / params.step_s, ch_names=tuple(cols),
            ch_types=("misc",) * len(cols), units=tuple("Hz" if c.endswith("rate") else "1" for c in cols), dtype="<f8",
            source=f"spike statistics of {inputs[0].name}", desc={"window_s": params.window_s, "step_s": params.step_s})}
        self.reset()

    def reset(self) -> None:
        self._spikes: list[deque] = [deque() for _ in range(self.n_ch)]
        self._next: int | None = None  # index k of the next frame due
        self._frames = 0
        self.n_out_of_range = 0  # events on a channel outside the declared ones
        self.n_dropped = 0  # spikes dropped beyond MAX_SPIKES_PER_CHANNEL

    def _frame(self, k: int) -> np.ndarray:
        p = self.params
        t_end = k * p.step_s
        t_lo = t_end - p.window_s
        out = np.full(3 * self.n_ch + 4, np.nan)
        edges = t_lo + p.fano_bin_s * np.arange(self.n_bins + 1)
        binned = np.empty((self.n_ch, self.n_bins))
        for c, dq in enumerate(self._spikes):
            t = np.fromiter((x for x in dq if t_lo < x <= t_end), dtype=float)
            out[3 * c] = t.size / p.window_s
            if t.size >= 3:
                isi = np.diff(t)
                out[3 * c + 1] = isi.std() / isi.mean() if isi.mean() > 0 else np.nan
            counts = np.histogram(t, edges)[0] if t.size else np.zeros(self.n_bins)
            binned[c] = counts
            if counts.mean() > 0:
                out[3 * c + 2] = counts.var() / counts.mean()
        per = out[: 3 * self.n_ch].reshape(self.n_ch, 3)
        out[-4] = per[:, 0].mean()
        for j in (1, 2):
            col = per[:, j]
            if np.isfinite(col).any():
                out[-4 + j] = np.nanmean(col)
        rates = binned / p.fano_bin_s
        indiv = rates.var(axis=1).mean()
        if indiv > 0:
            out[-1] = math.sqrt(rates.mean(axis=0).var() / indiv)
        return out

    def process(self, chunk: Chunk, port: int = 0) -> Chunk | None:
        ev = chunk.data
        if len(ev) == 0:
            return None
        p = self.params
        rows, ends = [], []
        for t, c in zip(ev["time"].tolist(), ev["channel"].tolist(), strict=True):
            k = self._next if self._next is not None else max(1, math.ceil(t / p.step_s))  # the first frame not before it
            while t > k * p.step_s:  # every spike up to this frame's end has arrived
                rows.append(self._frame(k))
                ends.append(k * p.step_s)
                self._prune(k * p.step_s)
                k += 1
            self._next = k
            if not 0 <= c < self.n_ch:
                self.n_out_of_range += 1
                continue
            dq = self._spikes[c]
            dq.append(float(t))
            if len(dq) > MAX_SPIKES_PER_CHANNEL:
                dq.popleft()
                self.n_dropped += 1
        if not rows:
            return None
        first = self._frames
        self._frames += len(rows)
        return Chunk(np.asarray(rows), first, ends[0], 1.0 / p.step_s, chunk.trace, {"of": self.inputs[0].name})

    def _prune(self, t_end: float) -> None:
        """Forget spikes no later frame can see (at or before the next frame's window start)."""
        keep_after = t_end + self.params.step_s - self.params.window_s
        for dq in self._spikes:
            while dq and dq[0] <= keep_after:
                dq.popleft()

    def report(self) -> dict:
        return {"frames": self._frames, "out_of_range": self.n_out_of_range, "dropped": self.n_dropped}
