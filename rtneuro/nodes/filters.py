"""Filter nodes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, sosfilt_zi

from ..errors import ConfigError
from ..kernels.iir import sosfilt_hold
from ..messages import Chunk, StreamMeta
from .base import Node, NodeContext, param

__all__ = ["Bandpass", "BandpassParams"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BandpassParams:
    """Parameters of :class:`Bandpass`.

    ``l_freq`` only is a high-pass, ``h_freq`` only a low-pass.
    """

    l_freq: float | None = param(None, gt=0, doc="lower pass-band edge in Hz")
    h_freq: float | None = param(None, gt=0, doc="upper pass-band edge in Hz")
    order: int = param(4, ge=1, le=10, doc="Butterworth order (band-pass: per edge)")

    def __post_init__(self) -> None:
        if self.l_freq is None and self.h_freq is None:
            raise ConfigError("set l_freq, h_freq or both")
        if self.l_freq is not None and self.h_freq is not None and self.l_freq >= self.h_freq:
            raise ConfigError(f"l_freq={self.l_freq} must be below h_freq={self.h_freq}")


class Bandpass(Node):
    """Causal Butterworth filter in second-order sections.

    The state starts from the step steady state of the first sample, so
    there is no start-up transient from a DC offset; any split of the
    input gives the same output. Non-finite input samples are replaced by
    the channel's last finite value (and counted) so that the recursive
    state is never poisoned.

    Notes
    -----
    Design: ``scipy.signal.butter(..., output="sos")``; filtering:
    :func:`rtneuro.kernels.iir.sosfilt_hold` (transposed direct form II,
    as ``scipy.signal.sosfilt``).
    """

    Params = BandpassParams
    input_kinds = ("sig",)

    def __init__(self, params: BandpassParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        src = inputs[0]
        nyq = src.sfreq / 2
        for name in ("l_freq", "h_freq"):
            f = getattr(params, name)
            if f is not None and f >= nyq:
                raise ConfigError(f"{name}={f} Hz must be below the Nyquist frequency {nyq:g} Hz of stream '{src.name}'")
        wn: float | tuple[float, float]
        if params.l_freq is not None and params.h_freq is not None:
            wn, btype = (params.l_freq, params.h_freq), "bandpass"
        elif params.l_freq is not None:
            wn, btype = params.l_freq, "highpass"
        else:
            assert params.h_freq is not None  # BandpassParams requires one edge
            wn, btype = params.h_freq, "lowpass"
        self._sos = np.ascontiguousarray(butter(params.order, wn, btype, fs=src.sfreq, output="sos"))
        self._zi0 = np.ascontiguousarray(sosfilt_zi(self._sos))  # (n_sections, 2)
        self.n_channels = src.n_channels
        self.outputs = {"": StreamMeta(
            name=ctx.stream_name(), kind="sig", sfreq=src.sfreq, ch_names=src.ch_names,
            ch_types=src.ch_types, units=src.units, dtype="<f8",
            source=f"bandpass {params.l_freq}-{params.h_freq} Hz order {params.order} of {src.name}",
        )}
        self.reset()

    def reset(self) -> None:
        self._zi: np.ndarray | None = None
        self._last = np.zeros(self.n_channels)
        self.n_replaced = 0
        self._r_x = np.zeros((1, self.n_channels))

    def warmup(self) -> None:
        x = np.zeros((4, self.n_channels))
        zi = np.zeros((self._sos.shape[0], 2, self.n_channels))
        sosfilt_hold(self._sos, x, zi, np.zeros(self.n_channels), np.empty_like(x))

    def rehearse(self) -> None:
        if self._zi is None:
            return
        sosfilt_hold(self._sos, self._r_x, self._zi.copy(), self._last.copy(), np.empty(self._r_x.shape))

    def _initial_state(self, x0: np.ndarray) -> None:
        x0 = np.where(np.isfinite(x0), x0, 0.0)
        self._last[:] = x0
        self._zi = np.ascontiguousarray(self._zi0[:, :, None] * x0[None, None, :])

    def process(self, chunk: Chunk, port: int = 0) -> Chunk | None:
        x = chunk.data
        if x.shape[0] == 0:
            return None
        if self._zi is None:
            self._initial_state(np.asarray(x[0], dtype=np.float64))
        if x.dtype != np.float64:
            x = x.astype(np.float64)
        out = np.empty(x.shape)
        self.n_replaced += sosfilt_hold(self._sos, x, self._zi, self._last, out)
        return Chunk(out, chunk.first, chunk.t0, chunk.sfreq, chunk.trace, chunk.extra)

    def report(self) -> dict:
        return {"replaced_nonfinite": self.n_replaced}
