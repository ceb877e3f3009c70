"""The domain notes' simulators, done right: thin over the model kernels, chunk-invariant and deterministic.

- :class:`NeuralDynamics` (the notes' ``simulate_dynamics``): any of rtneuro's
  spiking models (``hh``, ``lif``, ``adex``, ``izhikevich``,
  ``fitzhugh_nagumo``) driven by an external current and by presynaptic
  spike trains through exponential synapses (current- or
  conductance-based); returns the trajectories of the membrane potential,
  the model's recovery or gating variables and the synaptic variable, and
  the spikes. The model's own kernel advances it (the same integrator as
  everywhere in rtneuro); the synapse is advanced one step ahead of the
  neuron, so a spike at step k acts from step k on.
- :class:`SynapticPlasticity` (the notes' ``simulate_plasticity``): STDP
  (pair-based, Song et al. 2000), short-term plasticity (Tsodyks-Markram)
  and homeostatic synaptic scaling (Turrigiano 2008; van Rossum et al. 2000)
  on given pre- and postsynaptic rasters, returning the weight history, the
  efficacy (weight x released fraction) history, and statistics.

Both keep their state between calls: a run cut into pieces is the same run
(tested bit for bit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..models import MODELS, Connectivity, ExpSynapse, ExpSynapseParams

__all__ = ["NeuralDynamics", "SynapticPlasticity"]

#: per model, the state variables recorded beside v ("recovery": the notes' w)
_RECOVERY = {"hh": ("m", "h", "n"), "lif": (), "adex": ("w",), "izhikevich": ("u",), "fitzhugh_nagumo": ("w",)}


@dataclass
class _Synapses:
    params: ExpSynapseParams
    weights: np.ndarray  # (n_inputs, n_neurons)


class NeuralDynamics:
    """A population of ``n`` identical neurons of one of rtneuro's models, with synaptic and external input.

    Parameters
    ----------
    model : str
        ``hh``, ``lif``, ``adex``, ``izhikevich`` or ``fitzhugh_nagumo``.
    neuron_params : dict
        The model's parameters (its ``Params`` fields; defaults otherwise).
    synapse_params : dict, optional
        ``tau_ms`` and ``e_rev_mv`` (omit for a current-based synapse) of the exponential synapses.
    weights : array, optional
        ``(n_inputs, n)``: the increment of each neuron's synaptic variable per spike of each input train.
    n : int
        Number of neurons.
    """

    def __init__(self, model: str, neuron_params: dict | None = None, synapse_params: dict | None = None, *,
                 weights: Any = None, n: int = 1) -> None:
        if model not in _RECOVERY:
            raise ConfigError(f"model {model!r}: use one of {', '.join(_RECOVERY)}")
        self.model_name = model
        cls: Any = MODELS[model]
        self.model = cls
        try:
            self.params = cls.Params(**(neuron_params or {}))
        except TypeError as exc:
            raise ConfigError(f"{model} parameters: {exc}") from None
        self.n = int(n)
        self.syn: _Synapses | None = None
        if weights is not None:
            w = np.atleast_2d(np.asarray(weights, dtype=float))
            if w.shape[1] != self.n:
                raise ConfigError(f"weights must be (n_inputs, {self.n}), got {w.shape}")
            self.syn = _Synapses(ExpSynapseParams(**(synapse_params or {})), w)
        self.state: Any = None
        self.syn_state: Any = None

    def initialize(self, initial_state: dict | None = None) -> None:
        """A fresh state: ``{"voltage": mV}`` (scalar or per neuron) and the model's defaults otherwise."""
        init = initial_state or {}
        kw = {"v_mv": init["voltage"]} if "voltage" in init else {}
        self.state = self.model.init_state(self.params, self.n, **kw)
        for name in _RECOVERY[self.model_name]:
            if name in init or (name in ("u", "w") and "recovery" in init):
                getattr(self.state, name)[:] = init.get(name, init.get("recovery"))
        if self.syn is not None:
            self.syn_state = ExpSynapse.init_state(self.syn.params, self.n, float(init.get("synaptic", 0.0)))

    def simulate_dynamics(self, initial_state: dict | None = None, inputs: dict | None = None, *, time_span_ms: float,
                          dt_ms: float) -> dict[str, np.ndarray]:
        """Advance ``time_span_ms`` (from ``initial_state``, else from where the last call ended).

        ``inputs``: ``current`` (held value, ``(n,)``, or ``(n_steps, n)``: the external current in the
        model's units) and ``spikes`` (``(n_steps, n_inputs)`` booleans: presynaptic trains through the
        synapses). Returns ``t`` (ms, end of each step), ``V`` ``(n_steps, n)``, the model's variables
        (``u``, ``w``, ``m``/``h``/``n``; ``recovery`` is ``u`` or ``w`` where the model has one), ``s`` (the
        synaptic variable) and ``spikes``.
        """
        if initial_state is not None or self.state is None:
            self.initialize(initial_state)
        n_steps = int(round(time_span_ms / dt_ms))
        if n_steps < 1:
            raise ConfigError("time_span_ms must cover at least one step")
        inputs = inputs or {}
        i_ext = np.zeros((n_steps, self.n))
        cur = inputs.get("current", 0.0)
        i_ext += np.broadcast_to(np.asarray(cur, dtype=float), (n_steps, self.n)) if np.ndim(cur) < 2 else np.asarray(cur, float)[:n_steps]
        spikes_in = inputs.get("spikes")
        if spikes_in is not None and self.syn is None:
            raise ConfigError("input spikes need synapses: give weights (n_inputs x n)")
        t0 = self.state.step * dt_ms
        rec = _RECOVERY[self.model_name]
        out = {"V": np.empty((n_steps, self.n)), "s": np.zeros((n_steps, self.n)), "spikes": np.zeros((n_steps, self.n), bool)}
        for name in rec:
            out[name] = np.empty((n_steps, self.n))
        inc = None
        if spikes_in is not None:
            sp = np.asarray(spikes_in, dtype=bool)
            if sp.shape != (n_steps, self.syn.weights.shape[0]):  # type: ignore[union-attr]
                raise ConfigError(f"spikes must be (n_steps={n_steps}, n_inputs={self.syn.weights.shape[0]})")  # type: ignore[union-attr]
            inc = sp.astype(float) @ self.syn.weights  # type: ignore[union-attr]
        v_row = np.empty((1, self.n))
        for k in range(n_steps):
            i_row = i_ext[k].copy()
            if self.syn is not None:
                g = ExpSynapse.step(self.syn_state, self.syn.params, inc[k] if inc is not None else np.zeros(self.n), dt_ms, 1)[0]
                out["s"][k] = g
                i_row += ExpSynapse.current(self.syn.params, g, self.state.v if self.syn.params.e_rev_mv is not None else None)
            out["spikes"][k] = self.model.step(self.state, self.params, i_row[None, :], dt_ms, 1, v_out=v_row)[0]
            out["V"][k] = v_row[0]
            for name in rec:
                out[name][k] = getattr(self.state, name)
        out["t"] = t0 + dt_ms * np.arange(1, n_steps + 1)
        for alias in ("u", "w"):
            if alias in out:
                out["recovery"] = out[alias]
        return out


class SynapticPlasticity:
    """STDP, short-term plasticity and homeostatic scaling on one connectivity, combined.

    ``stdp``, ``stp`` and ``homeostasis`` are the parameters of :class:`~rtneuro.models.STDP`,
    :class:`~rtneuro.models.TsodyksMarkram` and :class:`~rtneuro.models.SynapticScaling` (dicts), each
    optional (None: that mechanism is off). The long-term weights change by STDP and scaling; the
    short-term state scales what each presynaptic spike delivers (efficacy = weight x released fraction).
    """

    def __init__(self, conn: Connectivity, *, stdp: dict | None = None, stp: dict | None = None,
                 homeostasis: dict | None = None) -> None:
        from ..models import (
            STDP,
            ScalingParams,
            STDPParams,
            SynapticScaling,
            TsodyksMarkram,
            TsodyksMarkramParams,
        )

        self.conn = conn
        self.initial = conn.weights.copy()
        self._stdp = (STDP, STDPParams(**stdp)) if stdp is not None else None
        self._stp = (TsodyksMarkram, TsodyksMarkramParams(**stp)) if stp is not None else None
        self._homeo = (SynapticScaling, ScalingParams(**homeostasis)) if homeostasis is not None else None
        self.stdp_state: Any = self._stdp[0].init_state(self._stdp[1], conn) if self._stdp else None
        self.stp_state: Any = self._stp[0].init_state(self._stp[1], conn.n_pre) if self._stp else None
        self.homeo_state: Any = self._homeo[0].init_state(self._homeo[1], conn) if self._homeo else None
        self.steps = 0  # steps simulated so far

    def simulate_plasticity(self, pre_spikes: Any, post_spikes: Any, dt_ms: float, *, record_every: int = 1) -> dict[str, Any]:
        """Advance over the rasters ``(n_steps, n_pre)`` and ``(n_steps, n_post)``; the weights change in place.

        Returns ``t`` (ms) and ``weights`` ``(n_records, n_syn)`` every ``record_every`` steps, ``released``
        (the short-term released fraction per presynaptic spike, ``(n_steps, n_pre)``; ones without STP),
        ``efficacy`` (weight x released fraction of each synapse at each presynaptic spike, summed per
        step: ``(n_steps, n_post)`` drive; the weights as they were at the start of each recorded block, i.e.
        before that step's long-term update with ``record_every=1``), and ``stats``: mean, SD, min and max of the weights, their
        total change, the synapses potentiated and depressed, and the postsynaptic rates the scaling saw.
        """
        pre = np.ascontiguousarray(pre_spikes, dtype=bool)
        post = np.ascontiguousarray(post_spikes, dtype=bool)
        if pre.ndim != 2 or post.ndim != 2 or pre.shape[0] != post.shape[0]:
            raise ConfigError("pre_spikes and post_spikes must be (n_steps, n_pre) and (n_steps, n_post)")
        if pre.shape[1] != self.conn.n_pre or post.shape[1] != self.conn.n_post:
            raise ConfigError(f"the rasters must have {self.conn.n_pre} and {self.conn.n_post} columns")
        if record_every < 1:
            raise ConfigError("record_every must be >= 1")
        n_steps = pre.shape[0]
        released = (self._stp[0].step(self.stp_state, self._stp[1], pre, dt_ms) if self._stp else pre.astype(float))
        syn_pre = self.conn.presynaptic()
        weights, times = [], []
        efficacy = np.zeros((n_steps, self.conn.n_post))
        for a in range(0, n_steps, record_every):
            b = min(n_steps, a + record_every)
            # what the presynaptic spikes of these steps deliver, with the weights they met
            contrib = released[a:b][:, syn_pre] * self.conn.weights[None, :]
            for k in range(b - a):
                np.add.at(efficacy[a + k], self.conn.indices, contrib[k])
            if self._stdp:
                self._stdp[0].step(self.stdp_state, self._stdp[1], self.conn, pre[a:b], post[a:b], dt_ms)
            if self._homeo:
                self._homeo[0].step(self.homeo_state, self._homeo[1], self.conn, post[a:b], dt_ms)
            weights.append(self.conn.weights.copy())
            times.append((self.steps + b) * dt_ms)
        self.steps += n_steps
        w = self.conn.weights
        change = w - self.initial
        stats: dict[str, Any] = {"mean": float(w.mean()) if w.size else float("nan"), "sd": float(w.std()) if w.size else float("nan"),
                 "min": float(w.min()) if w.size else float("nan"), "max": float(w.max()) if w.size else float("nan"),
                 "total_change": float(change.sum()), "potentiated": int((change > 0).sum()),
                 "depressed": int((change < 0).sum())}
        if self.homeo_state is not None:
            stats["post_rate_hz"] = self.homeo_state.rate_hz.copy()
        return {"t": np.array(times), "weights": np.array(weights), "released": released, "efficacy": efficacy, "stats": stats}
