"""Sparse spiking networks: CSR connectivity with per-synapse integer delays, LIF and HH networks.

A network step kernel runs, for every time step and in this order (Brian2's
default schedule): integrate every neuron; test the threshold; push each
spike into a ring buffer at ``step + delay`` of every target; apply the
inputs arriving in this step; reset the neurons that spiked. The ring holds
``max_delay + 1`` rows of summed weights, so a delay of 0 steps arrives in
the same step, after the threshold test, as in Brian2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from ..errors import ConfigError
from .neurons import (
    NEVER,
    DivergenceError,
    HHParams,
    HodgkinHuxley,
    LIFParams,
    as_input,
    bind_dt,
    check_finite,
    check_positive,
    filled,
    hh_detect,
    hh_sweep_expeuler,
    n_rows,
    out_arrays,
    refractory_steps,
)

__all__ = [
    "Connectivity",
    "LIFNetworkState",
    "LIFNetwork",
    "HHNetworkParams",
    "HHNetworkState",
    "HHNetwork",
]


@dataclass(frozen=True, slots=True, eq=False)
class Connectivity:
    """Sparse connections in compressed sparse row form, rows = presynaptic neurons.

    Attributes
    ----------
    n_pre, n_post : int
        Numbers of source and target neurons.
    indptr : ndarray of int64, shape (n_pre + 1,)
        Synapses of presynaptic neuron ``i`` are ``indptr[i]:indptr[i + 1]``.
    indices : ndarray of int32, shape (n_syn,)
        Target (postsynaptic) neuron of each synapse.
    weights : ndarray of float64, shape (n_syn,)
        Weight of each synapse (mutable in place, e.g. by plasticity).
    delays : ndarray of int32, shape (n_syn,)
        Delay of each synapse in whole time steps (>= 0).

    Arrays given with other integer or float types are converted on construction.
    """

    n_pre: int
    n_post: int
    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    delays: np.ndarray
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if max(self.n_pre, self.n_post) >= 2**31:
            raise ConfigError(f"at most 2**31 - 1 neurons per side, got {self.n_pre} x {self.n_post}")
        raw_idx, raw_d = np.asarray(self.indices), np.asarray(self.delays)
        if raw_idx.size and (raw_idx.min() < 0 or raw_idx.max() >= self.n_post):
            raise ConfigError(f"target indices must be in [0, {self.n_post})")
        if raw_d.size and (raw_d.min() < 0 or raw_d.max() >= 2**31 or np.any(raw_d != np.round(raw_d))):
            raise ConfigError("delays must be whole numbers of steps >= 0")
        for name, dtype in (("indptr", np.int64), ("indices", np.int32), ("weights", np.float64),
                            ("delays", np.int32)):
            a = getattr(self, name)
            if not (isinstance(a, np.ndarray) and a.dtype == dtype and a.flags.c_contiguous):
                object.__setattr__(self, name, np.ascontiguousarray(a, dtype=dtype))
        if self.indptr.shape != (self.n_pre + 1,) or self.indptr[0] != 0 or np.any(np.diff(self.indptr) < 0):
            raise ConfigError(f"indptr must be non-decreasing, start at 0 and have n_pre + 1 = {self.n_pre + 1} entries")
        n_syn = int(self.indptr[-1])
        for name in ("indices", "weights", "delays"):
            if getattr(self, name).shape != (n_syn,):
                raise ConfigError(f"{name} has shape {getattr(self, name).shape}, expected ({n_syn},)")
        if not np.all(np.isfinite(self.weights)):
            raise ConfigError("weights must be finite")

    @property
    def n_syn(self) -> int:
        return int(self.indptr[-1])

    @property
    def max_delay(self) -> int:
        return int(self.delays.max()) if self.n_syn else 0

    @classmethod
    def from_pairs(cls, pre, post, weights, delays=0, *, n_pre: int, n_post: int) -> Connectivity:
        """From synapse lists (any order; the order among one neuron's synapses is kept).

        ``weights`` and ``delays`` (steps) are scalars or one value per synapse.
        """
        pre = np.asarray(pre, dtype=np.int64)
        post = np.asarray(post, dtype=np.int64)
        if pre.shape != post.shape or pre.ndim != 1:
            raise ConfigError(f"pre and post must be 1-D and of equal length, got {pre.shape} and {post.shape}")
        if pre.size and (pre.min() < 0 or pre.max() >= n_pre):
            raise ConfigError(f"presynaptic indices must be in [0, {n_pre})")
        w = np.broadcast_to(np.asarray(weights, dtype=np.float64), pre.shape)
        d = np.broadcast_to(np.asarray(delays), pre.shape)
        order = np.argsort(pre, kind="stable")
        indptr = np.zeros(n_pre + 1, dtype=np.int64)
        np.cumsum(np.bincount(pre, minlength=n_pre), out=indptr[1:])
        return cls(n_pre, n_post, indptr, post[order], w[order], d[order])

    @classmethod
    def random(cls, n_pre: int, n_post: int, p: float, *, weight=1.0, delay_steps: int | tuple[int, int] = 0,
               seed: int | np.random.Generator = 0, autapses: bool = False) -> Connectivity:
        """Each pair connected independently with probability ``p`` (fixed-seed, reproducible).

        ``weight`` is a scalar or one value per presynaptic neuron (e.g. +J for
        excitatory, -g J for inhibitory cells); ``delay_steps`` a whole number
        of steps or an inclusive range ``(lo, hi)`` drawn uniformly per
        synapse. Without ``autapses`` (and ``n_pre == n_post``) no neuron
        connects to itself.
        """
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"connection probability p must be in [0, 1], got {p!r}")
        rng = np.random.default_rng(seed)
        w_pre = filled(n_pre, weight, "weight")
        self_ok = autapses or n_pre != n_post
        pools = n_post if self_ok else n_post - 1
        counts = rng.binomial(pools, p, size=n_pre)
        posts = []
        for i in range(n_pre):
            t = np.sort(rng.choice(pools, size=counts[i], replace=False))
            if not self_ok:
                t[t >= i] += 1
            posts.append(t)
        indptr = np.zeros(n_pre + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        indices = np.concatenate(posts) if posts else np.empty(0, np.int64)
        weights = np.repeat(w_pre, counts)
        if isinstance(delay_steps, tuple):
            lo, hi = delay_steps
            if lo < 0 or hi < lo:
                raise ConfigError(f"delay_steps range must satisfy 0 <= lo <= hi, got {delay_steps}")
            delays = rng.integers(lo, hi + 1, size=indices.size)
        else:
            if delay_steps < 0:
                raise ConfigError(f"delay_steps must be >= 0, got {delay_steps}")
            delays = np.full(indices.size, int(delay_steps))
        return cls(n_pre, n_post, indptr, indices, weights, delays)

    def presynaptic(self) -> np.ndarray:
        """Source neuron of every synapse ``(n_syn,)`` int32 (computed once; do not modify)."""
        if "pre" not in self._cache:
            self._cache["pre"] = np.repeat(np.arange(self.n_pre, dtype=np.int32), np.diff(self.indptr))
        return self._cache["pre"]

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """``(pre, post)`` of every synapse, in storage order (copies)."""
        return self.presynaptic().astype(np.int64), self.indices.astype(np.int64)

    def post_index(self) -> tuple[np.ndarray, np.ndarray]:
        """``(post_indptr, syn)``: the synapses onto neuron ``j`` are ``syn[post_indptr[j]:post_indptr[j + 1]]``
        (computed once; the topology of a Connectivity never changes, only its weights)."""
        if "post" not in self._cache:
            syn = np.argsort(self.indices, kind="stable").astype(np.int64)
            ptr = np.zeros(self.n_post + 1, dtype=np.int64)
            np.cumsum(np.bincount(self.indices, minlength=self.n_post), out=ptr[1:])
            self._cache["post"] = (ptr, syn)
        return self._cache["post"]


# -- LIF network --------------------------------------------------------------------------


@dataclass(slots=True)
class LIFNetworkState:
    """``v`` (mV), ``lastspike`` (step) ``(n,)`` and the ring of inputs in flight ``(max_delay + 1, n)``."""

    v: np.ndarray
    lastspike: np.ndarray
    ring: np.ndarray
    step: int = 0
    dt_ms: float = 0.0


@njit(cache=True, nogil=True)
def lif_network_kernel(v, lastspike, ring, step0, i_ext, indptr, indices, weights, delays,
                       e_l, r_m, v_th, v_reset, decay, n_ref, spikes, v_out, fired):  # pragma: no cover - compiled
    """Advance a LIF network with delta (voltage-jump) synapses ``spikes.shape[0]`` steps.

    ``fired`` is scratch ``(n,)`` int64. Inputs arriving at a refractory
    neuron are dropped (V stays clamped).
    """
    n_steps, n = spikes.shape
    D = ring.shape[0]
    held = i_ext.shape[0] == 1
    rec = v_out.shape[0] > 0
    for k in range(n_steps):
        s = step0 + k
        row = 0 if held else k
        pos = s % D
        for c in range(n):  # integrate (exact for the held input)
            v_inf = e_l + r_m * i_ext[row, c]
            x = v_inf + (v[c] - v_inf) * decay
            if s - lastspike[c] >= n_ref:
                v[c] = x
        n_fired = 0
        for c in range(n):  # threshold
            if v[c] > v_th and s - lastspike[c] >= n_ref:
                spikes[k, c] = True
                lastspike[c] = s
                fired[n_fired] = c
                n_fired += 1
        for f in range(n_fired):  # propagate into the delay ring
            i = fired[f]
            for syn in range(indptr[i], indptr[i + 1]):
                slot = pos + delays[syn]
                if slot >= D:
                    slot -= D
                ring[slot, indices[syn]] += weights[syn]
        for c in range(n):  # arrivals of this step
            x = ring[pos, c]
            ring[pos, c] = 0.0
            if s - lastspike[c] >= n_ref:
                v[c] += x
        for f in range(n_fired):  # reset
            v[fired[f]] = v_reset
        if rec:
            for c in range(n):
                v_out[k, c] = v[c]


class LIFNetwork:
    """A recurrent network of LIF neurons with delta synapses and per-synapse delays.

    Each neuron follows :class:`~rtneuro.models.neurons.LIF` (exact
    integration, absolute refractory period with V clamped); an arriving
    spike over a synapse of weight ``w`` (mV) makes ``V <- V + w`` at the end
    of its arrival step, unless the target is refractory (Brunel 2000's
    model; Brian2's ``on_pre='v_post += w*int(not_refractory_post)'``).

    Notes
    -----
    Brunel, J. Comput. Neurosci. 8:183 (2000); Gerstner et al., *Neuronal
    Dynamics* (2014), ch. 12-13. Integrator: exact per step for the held
    external current, ``dt_ms`` typically 0.1; delays in whole steps.
    """

    State = LIFNetworkState

    @staticmethod
    def init_state(params: LIFParams, conn: Connectivity, v_mv: float | np.ndarray | None = None) -> LIFNetworkState:
        """All ``conn.n_post`` neurons at ``v_mv`` (default ``e_l_mv``), nothing in flight."""
        if conn.n_pre != conn.n_post:
            raise ConfigError(f"a recurrent network needs n_pre == n_post, got {conn.n_pre} and {conn.n_post}")
        n = conn.n_post
        v = filled(n, params.e_l_mv if v_mv is None else v_mv, "v_mv")
        return LIFNetworkState(v=v, lastspike=np.full(n, NEVER, dtype=np.int64),
                               ring=np.zeros((conn.max_delay + 1, n)))

    @staticmethod
    def step(state: LIFNetworkState, params: LIFParams, conn: Connectivity, i_ext, dt_ms: float,
             n_steps: int | None = None, *, v_out: np.ndarray | None = None) -> np.ndarray:
        """Advance the network; return the spike raster ``(n_steps, n)``.

        ``i_ext`` (nA): ``(n_steps, n)``, or ``(n,)``/scalar held for ``n_steps``.
        """
        n = state.v.shape[0]
        if state.ring.shape[0] < conn.max_delay + 1:
            raise ConfigError(f"the state's ring holds {state.ring.shape[0] - 1} steps of delay; "
                              f"the connectivity needs {conn.max_delay}")
        bind_dt(state, dt_ms)
        i = as_input(i_ext, n, n_steps)
        T = n_rows(i, n_steps)
        spikes, vo = out_arrays(T, n, v_out)
        p = params
        lif_network_kernel(state.v, state.lastspike, state.ring, state.step, i, conn.indptr, conn.indices,
                           conn.weights, conn.delays, p.e_l_mv, p.r_m_mohm, p.v_th_mv, p.v_reset_mv,
                           math.exp(-dt_ms / p.tau_m_ms), refractory_steps(p.t_ref_ms, dt_ms), spikes, vo,
                           np.empty(n, dtype=np.int64))
        state.step += T
        return spikes

    @classmethod
    def warmup(cls) -> None:
        p = LIFParams()
        conn = Connectivity.random(4, 4, 0.5, weight=1.0, delay_steps=(0, 2), seed=0)
        cls.step(cls.init_state(p, conn), p, conn, 2.0, 0.1, 3)
        cls.step(cls.init_state(p, conn), p, conn, np.full((3, 4), 2.0), 0.1, v_out=np.empty((3, 4)))


# -- HH network -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class HHNetworkParams:
    """HH neurons plus exponential conductance synapses: a positive weight (mS/cm^2)
    increments the excitatory conductance, a negative one the inhibitory conductance by ``|w|``."""

    hh: HHParams = field(default_factory=HHParams)
    tau_e_ms: float = 5.0
    tau_i_ms: float = 10.0
    e_e_mv: float = 0.0
    e_i_mv: float = -80.0

    def __post_init__(self) -> None:
        check_positive(self.tau_e_ms, "tau_e_ms")
        check_positive(self.tau_i_ms, "tau_i_ms")
        check_finite(self.e_e_mv, "e_e_mv")
        check_finite(self.e_i_mv, "e_i_mv")
        if self.hh.method != "exponential_euler":
            raise ConfigError(f"HHNetwork integrates with exponential Euler only; got hh.method={self.hh.method!r}")


@dataclass(slots=True)
class HHNetworkState:
    """HH variables, synaptic conductances ``ge``, ``gi`` (mS/cm^2) ``(n,)`` and the rings in flight ``(max_delay + 1, n)``."""

    v: np.ndarray
    m: np.ndarray
    h: np.ndarray
    n: np.ndarray
    armed: np.ndarray
    ge: np.ndarray
    gi: np.ndarray
    ring_e: np.ndarray
    ring_i: np.ndarray
    step: int = 0
    dt_ms: float = 0.0


@njit(cache=True, nogil=True)
def hh_network_kernel(v, m, h, n, armed, ge, gi, ring_e, ring_i, step0, i_ext, indptr, indices, weights, delays,
                      g_na, g_k, g_l, e_na, e_k, e_l, c_m, v_spike, e_e, e_i, dec_e, dec_i, dt,
                      spikes, v_out, fired):  # pragma: no cover - compiled
    """Advance an HH network ``spikes.shape[0]`` steps; ``(step, neuron)`` of a divergence or ``(-1, -1)``."""
    n_steps, n_cells = spikes.shape
    D = ring_e.shape[0]
    held = i_ext.shape[0] == 1
    rec = v_out.shape[0] > 0
    v_prev = np.empty(n_cells)
    for k in range(n_steps):
        s = step0 + k
        pos = s % D
        i_row = i_ext[0] if held else i_ext[k]
        hh_sweep_expeuler(v, m, h, n, ge, gi, i_row, g_na, g_k, g_l, e_na, e_k, e_l, c_m, e_e, e_i, dt, v_prev)
        for c in range(n_cells):
            ge[c] *= dec_e
            gi[c] *= dec_i
        bad = hh_detect(v, v_prev, armed, v_spike, spikes, k)
        if bad >= 0:
            return k, bad
        n_fired = 0
        for c in range(n_cells):
            if spikes[k, c]:
                fired[n_fired] = c
                n_fired += 1
        for f in range(n_fired):
            i = fired[f]
            for syn in range(indptr[i], indptr[i + 1]):
                slot = pos + delays[syn]
                if slot >= D:
                    slot -= D
                w = weights[syn]
                if w >= 0.0:
                    ring_e[slot, indices[syn]] += w
                else:
                    ring_i[slot, indices[syn]] -= w
        for c in range(n_cells):
            ge[c] += ring_e[pos, c]
            gi[c] += ring_i[pos, c]
            ring_e[pos, c] = 0.0
            ring_i[pos, c] = 0.0
        if rec:
            v_out[k] = v
    return -1, -1


class HHNetwork:
    """A network of Hodgkin-Huxley neurons coupled by exponential conductance synapses.

    Each neuron: :class:`~rtneuro.models.neurons.HodgkinHuxley` plus
    ``g_e (E_e - V) + g_i (E_i - V)``, with ``tau_e dg_e/dt = -g_e``,
    ``tau_i dg_i/dt = -g_i``, and ``g_e += w`` (``g_i += -w`` for ``w < 0``)
    when a presynaptic spike arrives after its delay.

    Notes
    -----
    Integrator: exponential Euler for V (the synaptic conductances included
    in the linear part) and the gates, exact decay for the conductances;
    ``dt_ms`` 0.01-0.025 (NEURON's default is 0.025 ms); first-order accurate, see
    :class:`~rtneuro.models.neurons.HodgkinHuxley`.
    """

    Params = HHNetworkParams
    State = HHNetworkState

    @staticmethod
    def init_state(params: HHNetworkParams, conn: Connectivity, v_mv: float | np.ndarray = -65.0) -> HHNetworkState:
        if conn.n_pre != conn.n_post:
            raise ConfigError(f"a recurrent network needs n_pre == n_post, got {conn.n_pre} and {conn.n_post}")
        nc = conn.n_post
        s = HodgkinHuxley.init_state(params.hh, nc, v_mv)
        D = conn.max_delay + 1
        return HHNetworkState(v=s.v, m=s.m, h=s.h, n=s.n, armed=s.armed, ge=np.zeros(nc), gi=np.zeros(nc),
                              ring_e=np.zeros((D, nc)), ring_i=np.zeros((D, nc)))

    @staticmethod
    def step(state: HHNetworkState, params: HHNetworkParams, conn: Connectivity, i_ext, dt_ms: float,
             n_steps: int | None = None, *, v_out: np.ndarray | None = None) -> np.ndarray:
        """Advance the network; return the spike raster ``(n_steps, n)``. ``i_ext`` in uA/cm^2.

        Raises :class:`DivergenceError` if V leaves +-1000 mV or turns non-finite.
        """
        nc = state.v.shape[0]
        if state.ring_e.shape[0] < conn.max_delay + 1:
            raise ConfigError(f"the state's ring holds {state.ring_e.shape[0] - 1} steps of delay; "
                              f"the connectivity needs {conn.max_delay}")
        bind_dt(state, dt_ms)
        i = as_input(i_ext, nc, n_steps)
        T = n_rows(i, n_steps)
        spikes, vo = out_arrays(T, nc, v_out)
        p, q = params.hh, params
        k, c = hh_network_kernel(state.v, state.m, state.h, state.n, state.armed, state.ge, state.gi, state.ring_e,
                                 state.ring_i, state.step, i, conn.indptr, conn.indices, conn.weights, conn.delays,
                                 p.g_na, p.g_k, p.g_l, p.e_na_mv, p.e_k_mv, p.e_l_mv, p.c_m, p.v_spike_mv,
                                 q.e_e_mv, q.e_i_mv, math.exp(-dt_ms / q.tau_e_ms), math.exp(-dt_ms / q.tau_i_ms),
                                 float(dt_ms), spikes, vo, np.empty(nc, dtype=np.int64))
        if k >= 0:
            at = state.step + k
            state.step = at + 1
            raise DivergenceError(f"HH network diverged at step {at} (t = {at * dt_ms:.4f} ms), neuron {c}: "
                                  f"V = {float(state.v[c])!r} mV; reduce dt_ms={dt_ms} or the synaptic weights")
        state.step += T
        return spikes

    @classmethod
    def warmup(cls) -> None:
        q = HHNetworkParams()
        conn = Connectivity.random(4, 4, 0.5, weight=np.array([0.1, 0.1, -0.2, 0.1]), delay_steps=(0, 2), seed=0)
        cls.step(cls.init_state(q, conn), q, conn, 10.0, 0.025, 3)
        cls.step(cls.init_state(q, conn), q, conn, np.full((3, 4), 10.0), 0.025, v_out=np.empty((3, 4)))
