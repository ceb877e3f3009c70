"""References for the model kernels: Brian2 on the same equations, and slow obvious loops.

Brian2 runs with its ``numpy`` code generation target (no compile step).
Inputs enter as a 2-D ``TimedArray`` copied into a parameter ``I`` at the
start of every step (``run_regularly(..., when='start')``), so each step sees
the same held input as the rtneuro kernel. Spikes come back as ``(step,
neuron)`` events, sorted.
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks.models import import_brian2
from rtneuro.models import (
    AdExParams,
    HHParams,
    IzhikevichParams,
    LIFParams,
    STDPParams,
    TsodyksMarkramParams,
)

HH_EQS = """
dv/dt = (gL*(EL - v) + gNa*m**3*h*(ENa - v) + gK*n**4*(EK - v) + I)/C : volt
dm/dt = alpham*(1 - m) - betam*m : 1
dh/dt = alphah*(1 - h) - betah*h : 1
dn/dt = alphan*(1 - n) - betan*n : 1
alpham = 0.1*(v/mV + 40)/(1 - exp(-(v/mV + 40)/10))/ms : Hz
betam = 4*exp(-(v/mV + 65)/18)/ms : Hz
alphah = 0.07*exp(-(v/mV + 65)/20)/ms : Hz
betah = 1/(1 + exp(-(v/mV + 35)/10))/ms : Hz
alphan = 0.01*(v/mV + 55)/(1 - exp(-(v/mV + 55)/10))/ms : Hz
betan = 0.125*exp(-(v/mV + 65)/80)/ms : Hz
I : amp/meter**2
"""
# The exprel() form of alpha_m, alpha_n is 25x slower in Brian2's numpy target (a Python
# unit check per call); the explicit quotient differs only at exactly V = -40 or -55 mV.

LIF_EQS = """
dv/dt = (E_L - v + R*I)/tau : volt (unless refractory)
I : amp
"""

ADEX_EQS = """
dv/dt = (-gL*(v - EL) + gL*DeltaT*exp((v - VT)/DeltaT) - w + I)/C : volt (unless refractory)
dw/dt = (a*(v - EL) - w)/tau_w : amp
I : amp
"""

IZH_EQS = """
dv/dt = (0.04*v**2 + 5*v + 140 - u + I)/ms : 1
du/dt = a*(b*v - u)/ms : 1
I : 1
a : 1 (constant)
b : 1 (constant)
c : 1 (constant)
d : 1 (constant)
"""


def brian2_spikes(model: str, params, inputs: np.ndarray, dt_ms: float, init: dict[str, np.ndarray]) -> np.ndarray:
    """Spike events ``(step, neuron)`` of Brian2 on ``inputs`` ``(n_steps, n)``.

    ``model`` is ``"lif"``, ``"hh"``, ``"adex"`` (``params`` one Params) or
    ``"izhikevich"`` (``params`` a list of one IzhikevichParams per neuron).
    ``init`` gives the initial state variables (plain floats in mV, pA, ...).
    """
    b2 = import_brian2()
    from brian2 import (
        Network,
        NeuronGroup,
        SpikeMonitor,
        TimedArray,
        amp,
        cm,
        defaultclock,
        ms,
        msiemens,
        mV,
        nA,
        nS,
        pA,
        pF,
        prefs,
        start_scope,
        uA,
        uF,
    )

    b2.BrianLogger.log_level_warn()
    start_scope()
    prefs.codegen.target = "numpy"
    defaultclock.dt = dt_ms * ms
    n_steps, n = inputs.shape
    if model == "lif":
        p: LIFParams = params
        ns = {"E_L": p.e_l_mv * mV, "tau": p.tau_m_ms * ms, "R": p.r_m_mohm * b2.Mohm}
        G = NeuronGroup(n, LIF_EQS, threshold=f"v > {p.v_th_mv}*mV", reset=f"v = {p.v_reset_mv}*mV",
                        refractory=p.t_ref_ms * ms, method="exact", namespace=ns)
        G.v = init["v"] * mV
        unit = nA
    elif model == "hh":
        q: HHParams = params
        ns = {"gL": q.g_l * msiemens / cm**2, "gNa": q.g_na * msiemens / cm**2, "gK": q.g_k * msiemens / cm**2,
              "EL": q.e_l_mv * mV, "ENa": q.e_na_mv * mV, "EK": q.e_k_mv * mV, "C": q.c_m * uF / cm**2}
        cond = f"v > {q.v_spike_mv}*mV"
        G = NeuronGroup(n, HH_EQS, threshold=cond, refractory=cond, method="exponential_euler", namespace=ns)
        for name in ("m", "h", "n"):
            setattr(G, name, init[name])
        G.v = init["v"] * mV
        unit = uA / cm**2
    elif model == "adex":
        x: AdExParams = params
        ns = {"C": x.c_pf * pF, "gL": x.g_l_ns * nS, "EL": x.e_l_mv * mV, "VT": x.v_t_mv * mV,
              "DeltaT": x.delta_t_mv * mV, "tau_w": x.tau_w_ms * ms, "a": x.a_ns * nS}
        G = NeuronGroup(n, ADEX_EQS, threshold=f"v > {x.v_peak_mv}*mV",
                        reset=f"v = {x.v_reset_mv}*mV; w += {x.b_pa}*pA", refractory=x.t_ref_ms * ms,
                        method="euler", namespace=ns)
        G.v = init["v"] * mV
        G.w = init["w"] * pA
        unit = pA
    elif model == "izhikevich":
        ps: list[IzhikevichParams] = params
        G = NeuronGroup(n, IZH_EQS, threshold=f"v >= {ps[0].v_peak_mv}", reset="v = c; u += d", method="euler")
        for name in ("a", "b", "c", "d"):
            setattr(G, name, np.array([getattr(z, name) for z in ps]))
        G.v = init["v"]
        G.u = init["u"]
        unit = None
    else:
        raise ValueError(model)
    ta = TimedArray(inputs if unit is None else inputs * unit, dt=dt_ms * ms)
    G.run_regularly("I = ta(t, i)", when="start")
    M = SpikeMonitor(G)
    net = Network(G, M)
    net.run(n_steps * dt_ms * ms, namespace={"ta": ta, "amp": amp})
    steps = np.round(np.asarray(M.t / ms) / dt_ms).astype(np.int64)
    ev = np.stack([steps, np.asarray(M.i, dtype=np.int64)], axis=1)
    return ev[np.lexsort((ev[:, 1], ev[:, 0]))]


# -- slow, obvious loops ----------------------------------------------------------------------


def lif_naive(p: LIFParams, i_na: np.ndarray, dt_ms: float, v0: float) -> list[int]:
    """Spike steps of one LIF neuron, one Python step at a time (``i_na`` per step)."""
    v = v0
    n_ref = int((p.t_ref_ms + 1e-3 * dt_ms) / dt_ms)
    last = -(10**9)
    out = []
    for s, i in enumerate(i_na):
        if s - last < n_ref:
            continue  # clamped at reset, input ignored
        v_inf = p.e_l_mv + p.r_m_mohm * i
        v = v_inf + (v - v_inf) * math.exp(-dt_ms / p.tau_m_ms)
        if v > p.v_th_mv:
            out.append(s)
            last = s
            v = p.v_reset_mv
    return out


def stdp_pair_naive(p: STDPParams, pre_steps: list[int], post_steps: list[int], dt_ms: float, w0: float) -> float:
    """Weight after all pairs, summing the window over every (or the nearest) pair in time order."""
    events = sorted([(s, 0) for s in pre_steps] + [(s, 1) for s in post_steps])
    w = w0
    for s, kind in events:
        if kind == 0:  # pre: pairs with earlier post spikes (strictly earlier: same-step posts come after)
            earlier = [t for t in post_steps if t < s]
            if p.pairing == "nearest":
                earlier = earlier[-1:]
            w -= sum(p.a_minus * math.exp(-(s - t) * dt_ms / p.tau_minus_ms) for t in earlier)
            w = max(w, p.w_min)
        else:  # post: pairs with earlier or simultaneous pre spikes
            earlier = [t for t in pre_steps if t <= s]
            if p.pairing == "nearest":
                earlier = earlier[-1:]
            w += sum(p.a_plus * math.exp(-(s - t) * dt_ms / p.tau_plus_ms) for t in earlier)
            w = min(w, p.w_max)
    return w


def tm_recursion(p: TsodyksMarkramParams, spike_times_ms: list[float]) -> list[float]:
    """Released fraction at each spike by the closed-form recursion between spikes."""
    u, x, last = 0.0, 1.0, None
    out = []
    for t in spike_times_ms:
        if last is not None:
            d = t - last
            u = u * math.exp(-d / p.tau_facil_ms) if p.tau_facil_ms > 0 else 0.0
            x = 1.0 - (1.0 - x) * math.exp(-d / p.tau_rec_ms)
        u = u + p.U * (1.0 - u)
        r = u * x
        x -= r
        last = t
        out.append(r)
    return out


def scaling_naive(weights: np.ndarray, post_of_syn: np.ndarray, post_spikes: np.ndarray, dt_ms: float,
                  target_hz: float, tau_rate_ms: float, eta: float, interval: int, rate0: float) -> np.ndarray:
    """Synaptic scaling one step and one synapse at a time."""
    w = weights.copy()
    rate = np.full(post_spikes.shape[1], rate0)
    for k in range(post_spikes.shape[0]):
        for j in range(rate.size):
            rate[j] = rate[j] * math.exp(-dt_ms / tau_rate_ms) + (1e3 / tau_rate_ms if post_spikes[k, j] else 0.0)
        if (k + 1) % interval == 0:
            for s in range(w.size):
                j = post_of_syn[s]
                w[s] *= math.exp(eta * interval * dt_ms * 1e-3 * (target_hz - rate[j]))
    return w
