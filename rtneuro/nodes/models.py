"""A node that runs any neuron or rate model of :mod:`rtneuro.models` on an input stream."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError, did_you_mean
from ..messages import Chunk, StreamMeta, make_events
from .base import Node, NodeContext, param, regular_rate, resolve_picks

__all__ = ["NeuronModel", "NeuronModelParams"]

log = logging.getLogger(__name__)

#: What each model's output stream holds, and its unit.
_OUTPUT = {"hh": ("v", "mV"), "lif": ("v", "mV"), "adex": ("v", "mV"), "izhikevich": ("v", "mV"),
           "fitzhugh_nagumo": ("v", ""), "rate": ("r", ""), "wilson_cowan": ("e", "")}
_SPIKING = ("hh", "lif", "adex", "izhikevich", "fitzhugh_nagumo")


@dataclass(frozen=True, slots=True, kw_only=True)
class NeuronModelParams:
    """Parameters of :class:`NeuronModel`."""

    model: Literal["hh", "lif", "adex", "izhikevich", "fitzhugh_nagumo", "rate", "wilson_cowan"] = param(doc="which model")
    params: dict[str, Any] = param({}, doc="model parameters that differ from its defaults (izhikevich: also 'preset')")
    dt_ms: float = param(0.1, gt=0, le=10, doc="integration step; the input's sample period must be a whole number of it")
    gain: float = param(1.0, doc="model input per input unit above offset (HH: uA/cm^2; LIF: nA; AdEx: pA; rate and WC: drive)")
    offset: float = param(0.0, doc="input level that gives no model input")
    picks: list[str] | None = param(None, doc="input channels, one model unit each (default: all)")


class NeuronModel(Node):
    """Runs one unit of a model per picked input channel, driven by that channel.

    The input, held over each of its samples, drives ``gain * (x - offset)``
    into the model (:mod:`rtneuro.models`), stepped at ``dt_ms``. Outputs
    ``<id>``: the model's main variable at the end of each input sample (the
    membrane potential, the rate, or E for Wilson-Cowan), and for spiking
    models ``<id>.spikes``: one event per spike (label ``spike``, the unit's
    channel, the sample it fell in). Any split of the input gives the same
    output (the model state is carried).

    A model that blows up (a time step too large for it: HH with RK4 above
    about 0.05 ms) is stopped: from then on its output is NaN, which
    controllers hold and then answer with the safe state, and the report says
    when and how to fix it.

    Live parameters: ``gain`` and ``offset`` (the drive), read on every
    chunk; the model's state carries on. The model, its parameters,
    ``dt_ms`` and ``picks`` are fixed while running.
    """

    category = "transform"
    Params = NeuronModelParams
    input_kinds = ("sig|feat",)
    live = ("gain", "offset")

    def __init__(self, params: NeuronModelParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        from ..models import MODELS, IzhikevichParams

        src = inputs[0]
        fs = regular_rate(src, "a neuron model")
        self.picks = resolve_picks(params.picks, src)
        sub = 1000.0 / fs / params.dt_ms
        if abs(sub - round(sub)) > 1e-6 or round(sub) < 1:
            raise ConfigError(f"the input's sample period ({1000 / fs:g} ms) is not a whole number of dt_ms={params.dt_ms}")
        self.sub = int(round(sub))
        cls: Any = MODELS[params.model]
        self.cls = cls
        pcls = cls.Params
        raw = dict(params.params)
        if params.model == "izhikevich" and "preset" in raw:
            base = IzhikevichParams.preset(str(raw.pop("preset")))
            raw = {**{f.name: getattr(base, f.name) for f in fields(base)}, **raw}
        names = [f.name for f in fields(pcls)]
        for k in raw:
            if k not in names:
                raise ConfigError(f"params: {k!r} is not a parameter of model '{params.model}'{did_you_mean(k, names)}; it has {names}")
        try:
            self.model_params = pcls(**raw)
        except TypeError as exc:
            raise ConfigError(f"params: {exc}") from None
        name, unit = _OUTPUT[params.model]
        chans = tuple(f"{src.ch_names[i]}.{name}" for i in self.picks)
        self.outputs = {"": StreamMeta(name=ctx.stream_name(), kind="sig", sfreq=fs, ch_names=chans, ch_types=("misc",) * len(chans),
                                       units=(unit,) * len(chans), source=f"{params.model} model on {src.name}",
                                       desc={"model": params.model, "dt_ms": params.dt_ms})}
        if params.model in _SPIKING:
            self.outputs["spikes"] = StreamMeta(name=ctx.stream_name("spikes"), kind="evt", sfreq=0.0, dtype="event",
                                                source=f"spikes of the {params.model} model on {src.name}", event_id={"spike": 1})
        self.fs = fs
        self.reset()

    def reset(self) -> None:
        self.state = self.cls.init_state(self.model_params, len(self.picks))
        self.diverged: str | None = None
        self.spikes = 0
        self._events = 0

    def warmup(self) -> None:
        st = self.cls.init_state(self.model_params, 1)
        if self.params.model == "wilson_cowan":
            self.cls.step(st, self.model_params, np.zeros((1, 1)), np.zeros((1, 1)), self.params.dt_ms, 1)
        else:
            self.cls.step(st, self.model_params, np.zeros((1, 1)), self.params.dt_ms, 1)

    def process(self, chunk: Chunk, port: int = 0) -> list[tuple[str, Chunk]] | None:
        from ..models import DivergenceError

        n = chunk.data.shape[0]
        if n == 0:
            return None
        p = self.params
        k = len(self.picks)
        out = np.full((n, k), np.nan)
        spikes = None
        if self.diverged is None:
            drive = p.gain * (np.asarray(chunk.data[:, self.picks], dtype=np.float64) - p.offset)
            drive = np.repeat(np.nan_to_num(drive, nan=0.0, posinf=0.0, neginf=0.0), self.sub, axis=0)
            try:
                if p.model == "wilson_cowan":
                    e, _i = self.cls.step(self.state, self.model_params, drive, np.zeros_like(drive), p.dt_ms, n * self.sub)
                    out = np.ascontiguousarray(e[self.sub - 1::self.sub])
                elif p.model == "rate":
                    r = self.cls.step(self.state, self.model_params, drive, p.dt_ms, n * self.sub)
                    out = np.ascontiguousarray(r[self.sub - 1::self.sub])
                else:
                    v = np.empty((n * self.sub, k))
                    raster = self.cls.step(self.state, self.model_params, drive, p.dt_ms, n * self.sub, v_out=v)
                    out = np.ascontiguousarray(v[self.sub - 1::self.sub])
                    spikes = np.argwhere(raster)
            except DivergenceError as exc:
                self.diverged = (f"{p.model} diverged near sample {chunk.first} ({exc}); the model is stopped and "
                                 f"outputs NaN; reduce dt_ms (now {p.dt_ms})")
                log.error("node '%s': %s", self.ctx.node_id, self.diverged)
                out = np.full((n, k), np.nan)
                spikes = None
        res: list[tuple[str, Chunk]] = [("", Chunk(out, chunk.first, chunk.t0, chunk.sfreq, list(chunk.trace)))]
        if "spikes" in self.outputs and spikes is not None and len(spikes):
            step, unit = spikes[:, 0], spikes[:, 1]
            sample = chunk.first + step // self.sub
            t = chunk.t0 + (step + 1) * p.dt_ms / 1000.0  # the end of the step it crossed in
            rows = [(int(si), float(ti), 1, int(ci), 0.0, 0.0, "spike") for si, ti, ci in zip(sample, t, unit, strict=True)]
            self.spikes += len(rows)
            res.append(("spikes", Chunk(make_events(rows), int(sample[0]), float(t[0]), 0.0, list(chunk.trace))))
        return res

    def report(self) -> dict:
        return {"model": self.params.model, "spikes": self.spikes, "diverged": self.diverged}
