"""Synapses: exponential current/conductance synapses, delayed delivery, Tsodyks-Markram STP.

Same conventions as :mod:`rtneuro.models.neurons`: time in ms, state in a
dataclass of arrays updated in place, any chunking of the steps gives the
same bits as one long run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from ..errors import ConfigError
from .neurons import NEVER, as_input, bind_dt, check_finite, check_n, check_positive, n_rows

__all__ = [
    "ExpSynapseParams",
    "ExpSynapseState",
    "ExpSynapse",
    "DelayLineState",
    "DelayLine",
    "TsodyksMarkramParams",
    "TsodyksMarkramState",
    "TsodyksMarkram",
]


# -- exponential synapses ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpSynapseParams:
    """Exponentially decaying synapse: time constant, and the reversal potential for a
    conductance-based synapse (``None``: current-based)."""

    tau_ms: float = 5.0
    e_rev_mv: float | None = None

    def __post_init__(self) -> None:
        check_positive(self.tau_ms, "tau_ms")
        if self.e_rev_mv is not None:
            check_finite(self.e_rev_mv, "e_rev_mv")


@dataclass(slots=True)
class ExpSynapseState:
    """Synaptic variable ``g`` ``(n,)``: a current (e.g. nA) or a conductance (e.g. nS)."""

    g: np.ndarray
    step: int = 0
    dt_ms: float = 0.0


@njit(cache=True, nogil=True)
def exp_synapse_kernel(g, inc, decay, out):  # pragma: no cover - compiled
    """``g <- g * decay + inc[k]`` for every step ``k``; ``out[k] = g`` after the step."""
    n_steps, n = out.shape
    held = inc.shape[0] == 1
    for k in range(n_steps):
        row = 0 if held else k
        for j in range(n):
            g[j] = g[j] * decay + inc[row, j]
            out[k, j] = g[j]


class ExpSynapse:
    """Current- or conductance-based synapse with exponential decay.

    ``tau dg/dt = -g + tau sum_k w_k delta(t - t_k)``: ``g`` jumps by the weight
    ``w`` at each arriving spike and decays with ``tau`` between them. A
    current-based synapse gives ``I_syn = g``; a conductance-based one
    ``I_syn = g (E_rev - V)`` (:meth:`current`).

    Notes
    -----
    Dayan & Abbott (2001), ch. 5.8; Gerstner et al., *Neuronal Dynamics*
    (2014), ch. 3.1.

    Integrator: exact, ``g <- g exp(-dt/tau) + increments`` (the increments
    of step ``k`` are the spikes arriving during that step, added after the
    decay, as Brian2's ``on_pre`` does).
    """

    Params = ExpSynapseParams
    State = ExpSynapseState

    @staticmethod
    def init_state(params: ExpSynapseParams, n: int, g0: float = 0.0) -> ExpSynapseState:
        check_n(n)
        return ExpSynapseState(g=np.full(n, float(g0)))

    @staticmethod
    def step(state: ExpSynapseState, params: ExpSynapseParams, increments, dt_ms: float,
             n_steps: int | None = None) -> np.ndarray:
        """Advance the state; return ``g`` at the end of each step, ``(n_steps, n)``.

        ``increments`` ``(n_steps, n)`` (or held ``(n,)``): the summed weights
        of the spikes arriving in each step, e.g. from :class:`DelayLine`.
        """
        n = state.g.shape[0]
        bind_dt(state, dt_ms)
        inc = as_input(increments, n, n_steps, "increments")
        T = n_rows(inc, n_steps)
        out = np.empty((T, n))
        exp_synapse_kernel(state.g, inc, math.exp(-dt_ms / params.tau_ms), out)
        state.step += T
        return out

    @staticmethod
    def current(params: ExpSynapseParams, g: np.ndarray, v_mv: np.ndarray | None = None) -> np.ndarray:
        """Synaptic current: ``g`` (current-based) or ``g (E_rev - V)`` (conductance-based: give ``v_mv``)."""
        if params.e_rev_mv is None:
            return np.asarray(g, dtype=np.float64)
        if v_mv is None:
            raise ConfigError("a conductance-based synapse needs the membrane potential v_mv to give a current")
        return np.asarray(g, dtype=np.float64) * (params.e_rev_mv - np.asarray(v_mv, dtype=np.float64))

    @classmethod
    def warmup(cls) -> None:
        p = ExpSynapseParams()
        cls.step(cls.init_state(p, 2), p, np.ones((3, 2)), 0.1)


# -- delayed delivery through sparse connectivity -------------------------------------------


@dataclass(slots=True)
class DelayLineState:
    """Ring buffer ``ring`` ``(max_delay + 1, n_post)`` of weights still in flight."""

    ring: np.ndarray
    step: int = 0


@njit(cache=True, nogil=True)
def deliver_kernel(spikes, indptr, indices, weights, delays, ring, step0, out):  # pragma: no cover - compiled
    """Push each step's presynaptic spikes into the ring at ``step + delay``; pop this step's arrivals into ``out``."""
    n_steps, n_pre = spikes.shape
    D, n_post = ring.shape
    for k in range(n_steps):
        s = step0 + k
        for i in range(n_pre):
            if spikes[k, i]:
                for syn in range(indptr[i], indptr[i + 1]):
                    ring[(s + delays[syn]) % D, indices[syn]] += weights[syn]
        pos = s % D
        for j in range(n_post):
            out[k, j] = ring[pos, j]
            ring[pos, j] = 0.0


class DelayLine:
    """Delivers presynaptic spikes to postsynaptic targets through a
    :class:`~rtneuro.models.network.Connectivity`, each synapse with its own
    integer delay in steps. A spike in step ``s`` over a synapse of delay
    ``d`` arrives in step ``s + d`` (delay 0: the same step), as Brian2's
    ``Synapses(..., delay=d*dt)`` delivers it."""

    @staticmethod
    def init_state(conn) -> DelayLineState:
        return DelayLineState(ring=np.zeros((conn.max_delay + 1, conn.n_post)))

    @staticmethod
    def step(state: DelayLineState, conn, spikes: np.ndarray) -> np.ndarray:
        """Summed arriving weights per step and target, ``(n_steps, n_post)``, from ``spikes`` ``(n_steps, n_pre)``."""
        spikes = np.ascontiguousarray(spikes, dtype=np.bool_)
        if spikes.ndim != 2 or spikes.shape[1] != conn.n_pre:
            raise ConfigError(f"spikes has shape {spikes.shape}, expected (n_steps, {conn.n_pre})")
        out = np.empty((spikes.shape[0], conn.n_post))
        deliver_kernel(spikes, conn.indptr, conn.indices, conn.weights, conn.delays, state.ring, state.step, out)
        state.step += spikes.shape[0]
        return out


# -- Tsodyks-Markram short-term plasticity ----------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TsodyksMarkramParams:
    """Utilisation increment ``U`` (0 < U <= 1), recovery (depression) time constant
    ``tau_rec_ms`` and facilitation time constant ``tau_facil_ms`` (0: no facilitation,
    the depressing synapse of Tsodyks & Markram 1997)."""

    U: float = 0.5
    tau_rec_ms: float = 800.0
    tau_facil_ms: float = 0.0

    def __post_init__(self) -> None:
        if not (0.0 < self.U <= 1.0):
            raise ConfigError(f"U must be in (0, 1], got {self.U!r}")
        check_positive(self.tau_rec_ms, "tau_rec_ms")
        check_positive(self.tau_facil_ms, "tau_facil_ms", allow_zero=True)

    @classmethod
    def depressing(cls) -> TsodyksMarkramParams:
        """A depressing cortical synapse (Tsodyks & Markram 1997): U 0.5, tau_rec 800 ms."""
        return cls(U=0.5, tau_rec_ms=800.0, tau_facil_ms=0.0)

    @classmethod
    def facilitating(cls) -> TsodyksMarkramParams:
        """A facilitating synapse (Markram, Wang & Tsodyks 1998): U 0.15, tau_rec 130 ms, tau_facil 530 ms."""
        return cls(U=0.15, tau_rec_ms=130.0, tau_facil_ms=530.0)


@dataclass(slots=True)
class TsodyksMarkramState:
    """Per synapse (or presynaptic neuron), just after its last spike: utilisation ``u``,
    available resources ``x``, and the step of that spike ``lastspike``, all ``(n,)``."""

    u: np.ndarray
    x: np.ndarray
    lastspike: np.ndarray
    step: int = 0
    dt_ms: float = 0.0


@njit(cache=True, nogil=True)
def tm_kernel(u, x, lastspike, step0, spikes, U, tau_rec, tau_facil, dt, out):  # pragma: no cover - compiled
    """Event-driven Tsodyks-Markram update; ``out[k, j]`` = released fraction ``u+ x-`` (0 without a spike)."""
    n_steps, n = spikes.shape
    for k in range(n_steps):
        s = step0 + k
        for j in range(n):
            if not spikes[k, j]:
                out[k, j] = 0.0
                continue
            elapsed = (s - lastspike[j]) * dt
            if tau_facil > 0.0:
                um = u[j] * np.exp(-elapsed / tau_facil)
            else:
                um = 0.0
            xm = 1.0 - (1.0 - x[j]) * np.exp(-elapsed / tau_rec)
            up = um + U * (1.0 - um)
            r = up * xm
            u[j] = up
            x[j] = xm - r
            lastspike[j] = s
            out[k, j] = r


class TsodyksMarkram:
    """Tsodyks-Markram short-term plasticity (depression and facilitation).

    ``dx/dt = (1 - x)/tau_rec - u+ x- delta(t - t_sp)``,
    ``du/dt = -u/tau_facil + U (1 - u-) delta(t - t_sp)``: at a spike ``u``
    first jumps to ``u+ = u- + U (1 - u-)``, then the fraction ``r = u+ x-``
    of the resources is released (the PSC amplitude is ``w r``) and ``x``
    drops to ``x- - r``. Without facilitation (``tau_facil = 0``) ``u+ = U``.

    Notes
    -----
    Tsodyks & Markram, PNAS 94:719 (1997); Tsodyks, Pawelzik & Markram,
    Neural Comput. 10:821 (1998); Markram, Wang & Tsodyks, PNAS 95:5323 (1998).

    Integrator: event-driven and exact: between spikes ``u`` and ``x``
    relax in closed form over the elapsed whole steps. For a regular train
    of interval ``D`` the steady state is ``u+ = U / (1 - (1 - U) exp(-D/tau_facil))``
    and ``x- = (1 - exp(-D/tau_rec)) / (1 - (1 - u+) exp(-D/tau_rec))``.
    """

    Params = TsodyksMarkramParams
    State = TsodyksMarkramState

    @staticmethod
    def init_state(params: TsodyksMarkramParams, n: int) -> TsodyksMarkramState:
        """Fully recovered synapses: ``u = 0``, ``x = 1``."""
        check_n(n)
        return TsodyksMarkramState(u=np.zeros(n), x=np.ones(n), lastspike=np.full(n, NEVER, dtype=np.int64))

    @staticmethod
    def step(state: TsodyksMarkramState, params: TsodyksMarkramParams, spikes: np.ndarray, dt_ms: float) -> np.ndarray:
        """Released fraction per step, ``(n_steps, n)``, for the presynaptic ``spikes`` ``(n_steps, n)``."""
        n = state.u.shape[0]
        bind_dt(state, dt_ms)
        spikes = np.ascontiguousarray(spikes, dtype=np.bool_)
        if spikes.ndim != 2 or spikes.shape[1] != n:
            raise ConfigError(f"spikes has shape {spikes.shape}, expected (n_steps, {n})")
        out = np.empty(spikes.shape)
        p = params
        tm_kernel(state.u, state.x, state.lastspike, state.step, spikes, p.U, p.tau_rec_ms, p.tau_facil_ms,
                  float(dt_ms), out)
        state.step += spikes.shape[0]
        return out

    @staticmethod
    def steady_state(params: TsodyksMarkramParams, interval_ms: float) -> tuple[float, float, float]:
        """``(u+, x-, r)`` at the steady state of a regular train of period ``interval_ms``."""
        p = params
        ef = math.exp(-interval_ms / p.tau_facil_ms) if p.tau_facil_ms > 0 else 0.0
        ed = math.exp(-interval_ms / p.tau_rec_ms)
        up = p.U / (1.0 - (1.0 - p.U) * ef)
        xm = (1.0 - ed) / (1.0 - (1.0 - up) * ed)
        return up, xm, up * xm

    @classmethod
    def warmup(cls) -> None:
        p = TsodyksMarkramParams()
        cls.step(cls.init_state(p, 2), p, np.ones((3, 2), dtype=bool), 0.1)
