"""Neuron, synapse, plasticity, network and rate models as numba kernels with explicit state.

Every model follows one pattern, so that a node can wrap any of them:

- ``Params``: a frozen dataclass of scalars (units in the field names),
  validated on construction;
- ``Model.init_state(params, n, ...)``: a small dataclass of arrays;
- ``Model.step(state, params, input, dt_ms, n_steps=None)``: advances the
  state in place and returns the spike raster ``(n_steps, n)`` (spiking
  models) or the outputs per step (synapses, rate models);
- ``Model.warmup()``: compiles the kernels.

Time is in ms and potentials in mV; inputs are held constant over each step.
The whole state lives in the state object, so stepping in chunks of any size
gives the same bits as one long run. Each class docstring gives the
equations, the reference, the integrator and the time step it is good for.
"""

from __future__ import annotations

import numpy as np

from .network import (
    Connectivity,
    HHNetwork,
    HHNetworkParams,
    HHNetworkState,
    LIFNetwork,
    LIFNetworkState,
)
from .neurons import (
    LIF,
    AdEx,
    AdExParams,
    AdExState,
    DivergenceError,
    FHNParams,
    FHNState,
    FitzHughNagumo,
    HHParams,
    HHState,
    HodgkinHuxley,
    Izhikevich,
    IzhikevichParams,
    IzhikevichState,
    LIFParams,
    LIFState,
    refractory_steps,
)
from .plasticity import (
    STDP,
    ScalingParams,
    ScalingState,
    STDPParams,
    STDPState,
    SynapticScaling,
    hebb,
    oja,
)
from .rate import (
    RateParams,
    RatePopulation,
    RateState,
    WilsonCowan,
    WilsonCowanParams,
    WilsonCowanState,
)
from .synapses import (
    DelayLine,
    DelayLineState,
    ExpSynapse,
    ExpSynapseParams,
    ExpSynapseState,
    TsodyksMarkram,
    TsodyksMarkramParams,
    TsodyksMarkramState,
)

__all__ = [
    "AdEx", "AdExParams", "AdExState",
    "Connectivity",
    "DelayLine", "DelayLineState",
    "DivergenceError",
    "ExpSynapse", "ExpSynapseParams", "ExpSynapseState",
    "FHNParams", "FHNState", "FitzHughNagumo",
    "HHNetwork", "HHNetworkParams", "HHNetworkState",
    "HHParams", "HHState", "HodgkinHuxley",
    "Izhikevich", "IzhikevichParams", "IzhikevichState",
    "LIF", "LIFParams", "LIFState",
    "LIFNetwork", "LIFNetworkState",
    "RateParams", "RatePopulation", "RateState",
    "STDP", "STDPParams", "STDPState",
    "ScalingParams", "ScalingState", "SynapticScaling",
    "TsodyksMarkram", "TsodyksMarkramParams", "TsodyksMarkramState",
    "WilsonCowan", "WilsonCowanParams", "WilsonCowanState",
    "hebb", "oja", "refractory_steps",
    "MODELS", "warmup",
]

#: The spiking and rate models by the name a configuration would use.
MODELS = {
    "hh": HodgkinHuxley,
    "lif": LIF,
    "adex": AdEx,
    "izhikevich": Izhikevich,
    "fitzhugh_nagumo": FitzHughNagumo,
    "rate": RatePopulation,
    "wilson_cowan": WilsonCowan,
}


def warmup() -> None:
    """Compile every model kernel (a few seconds on first use; cached on disk afterwards)."""
    for model in (HodgkinHuxley, LIF, AdEx, Izhikevich, FitzHughNagumo, RatePopulation, WilsonCowan, ExpSynapse,
                  TsodyksMarkram, LIFNetwork, HHNetwork, STDP, SynapticScaling):
        model.warmup()
    w = np.zeros((1, 2))
    hebb(w, [[1.0, 0.0]], [[1.0]], 0.1)
    oja(w, [[1.0, 0.0]], 0.1)
    conn = Connectivity.random(2, 2, 1.0, delay_steps=1)
    DelayLine.step(DelayLine.init_state(conn), conn, np.ones((3, 2), dtype=bool))
