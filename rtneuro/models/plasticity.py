"""Long-term plasticity: pair-based STDP with traces, homeostatic synaptic scaling, Hebb and Oja rules.

The spiking rules act on the weights of a
:class:`~rtneuro.models.network.Connectivity` in place, driven by spike
rasters ``(n_steps, n)``; the rate rules on a dense weight matrix
``(n_out, n_in)`` driven by rates ``(n_steps, n)``. State (traces, rate
estimates) is carried across calls, so any chunking gives the same bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numba import njit

from ..errors import ConfigError
from .network import Connectivity
from .neurons import bind_dt, check_finite, check_positive

__all__ = [
    "STDPParams",
    "STDPState",
    "STDP",
    "ScalingParams",
    "ScalingState",
    "SynapticScaling",
    "hebb",
    "oja",
]


def _rasters(pre, post, conn: Connectivity) -> tuple[np.ndarray, np.ndarray]:
    pre = np.ascontiguousarray(pre, dtype=np.bool_)
    post = np.ascontiguousarray(post, dtype=np.bool_)
    if pre.ndim != 2 or pre.shape[1] != conn.n_pre:
        raise ConfigError(f"pre_spikes has shape {pre.shape}, expected (n_steps, {conn.n_pre})")
    if post.shape != (pre.shape[0], conn.n_post):
        raise ConfigError(f"post_spikes has shape {post.shape}, expected ({pre.shape[0]}, {conn.n_post})")
    return pre, post


# -- STDP ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class STDPParams:
    """Pair-based STDP window amplitudes and time constants, hard weight bounds, and the
    pairing scheme: ``"all_to_all"`` (traces add up) or ``"nearest"`` (symmetric
    nearest-spike: a trace is reset to 1 at each spike). Defaults: Song, Miller & Abbott
    (2000), ``A- / A+ = 1.05``, ``tau = 20 ms``."""

    a_plus: float = 0.005
    a_minus: float = 0.00525
    tau_plus_ms: float = 20.0
    tau_minus_ms: float = 20.0
    w_min: float = 0.0
    w_max: float = 1.0
    pairing: Literal["all_to_all", "nearest"] = "all_to_all"

    def __post_init__(self) -> None:
        check_positive(self.a_plus, "a_plus", allow_zero=True)
        check_positive(self.a_minus, "a_minus", allow_zero=True)
        check_positive(self.tau_plus_ms, "tau_plus_ms")
        check_positive(self.tau_minus_ms, "tau_minus_ms")
        check_finite(self.w_min, "w_min")
        check_finite(self.w_max, "w_max")
        if self.w_max < self.w_min:
            raise ConfigError(f"w_max ({self.w_max}) must be >= w_min ({self.w_min})")
        if self.pairing not in ("all_to_all", "nearest"):
            raise ConfigError(f"pairing must be 'all_to_all' or 'nearest', got {self.pairing!r}")


@dataclass(slots=True)
class STDPState:
    """Presynaptic traces ``pre_trace`` ``(n_pre,)`` (decay ``tau_plus``) and postsynaptic
    traces ``post_trace`` ``(n_post,)`` (decay ``tau_minus``), in units of one spike."""

    pre_trace: np.ndarray
    post_trace: np.ndarray
    step: int = 0
    dt_ms: float = 0.0


@njit(cache=True, nogil=True)
def stdp_kernel(weights, indptr, indices, post_ptr, post_syn, syn_pre, pre_trace, post_trace, pre_spikes,
                post_spikes, dec_pre, dec_post, a_plus, a_minus, w_min, w_max, nearest):  # pragma: no cover - compiled
    n_steps, n_pre = pre_spikes.shape
    n_post = post_spikes.shape[1]
    for k in range(n_steps):
        for i in range(n_pre):
            pre_trace[i] *= dec_pre
        for j in range(n_post):
            post_trace[j] *= dec_post
        for i in range(n_pre):  # presynaptic spikes: depression by the post traces
            if pre_spikes[k, i]:
                for syn in range(indptr[i], indptr[i + 1]):
                    w = weights[syn] - a_minus * post_trace[indices[syn]]
                    weights[syn] = w if w > w_min else w_min
                pre_trace[i] = 1.0 if nearest else pre_trace[i] + 1.0
        for j in range(n_post):  # postsynaptic spikes: potentiation by the pre traces
            if post_spikes[k, j]:
                for q in range(post_ptr[j], post_ptr[j + 1]):
                    syn = post_syn[q]
                    w = weights[syn] + a_plus * pre_trace[syn_pre[syn]]
                    weights[syn] = w if w < w_max else w_max
                post_trace[j] = 1.0 if nearest else post_trace[j] + 1.0


class STDP:
    """Pair-based spike-timing-dependent plasticity with exponential traces.

    For a pair with ``dt = t_post - t_pre``: ``dw = +A+ exp(-dt/tau+)`` if
    ``dt >= 0``, ``dw = -A- exp(dt/tau-)`` if ``dt < 0``; weights clipped to
    ``[w_min, w_max]`` after each update (additive rule, hard bounds).

    Notes
    -----
    Song, Miller & Abbott, Nat. Neurosci. 3:919 (2000); trace formulation and
    pairing schemes: Morrison, Diesmann & Gerstner, Biol. Cybern. 98:459 (2008).

    Per step: both traces decay exactly (``x <- x exp(-dt/tau)``); then every
    presynaptic spike depresses its synapses by ``A- x_post`` and bumps its
    trace; then every postsynaptic spike potentiates the synapses onto it by
    ``A+ x_pre`` and bumps its trace. Simultaneous spikes (``dt = 0``) count as
    causal (``+A+``). ``"all_to_all"``: a bump adds 1 (every earlier spike
    pairs); ``"nearest"``: a bump sets the trace to 1 (only the nearest one).
    """

    Params = STDPParams
    State = STDPState

    @staticmethod
    def init_state(params: STDPParams, conn: Connectivity) -> STDPState:
        return STDPState(pre_trace=np.zeros(conn.n_pre), post_trace=np.zeros(conn.n_post))

    @staticmethod
    def step(state: STDPState, params: STDPParams, conn: Connectivity, pre_spikes, post_spikes, dt_ms: float) -> None:
        """Update ``conn.weights`` in place from the rasters ``(n_steps, n_pre)`` and ``(n_steps, n_post)``."""
        bind_dt(state, dt_ms)
        pre, post = _rasters(pre_spikes, post_spikes, conn)
        ptr, syn = conn.post_index()
        syn_pre = conn.presynaptic()
        p = params
        stdp_kernel(conn.weights, conn.indptr, conn.indices, ptr, syn, syn_pre, state.pre_trace, state.post_trace,
                    pre, post, math.exp(-dt_ms / p.tau_plus_ms), math.exp(-dt_ms / p.tau_minus_ms), p.a_plus,
                    p.a_minus, p.w_min, p.w_max, p.pairing == "nearest")
        state.step += pre.shape[0]

    @staticmethod
    def window(params: STDPParams, lag_ms: np.ndarray | float) -> np.ndarray:
        """The analytic window ``dw(t_post - t_pre)`` for one pair (no bounds)."""
        lag = np.asarray(lag_ms, dtype=np.float64)
        return np.where(lag >= 0, params.a_plus * np.exp(-lag / params.tau_plus_ms),
                        -params.a_minus * np.exp(lag / params.tau_minus_ms))

    @classmethod
    def warmup(cls) -> None:
        conn = Connectivity.random(3, 3, 0.5, weight=0.5, seed=0)
        p = STDPParams()
        cls.step(cls.init_state(p, conn), p, conn, np.ones((3, 3), bool), np.ones((3, 3), bool), 0.1)


# -- homeostatic synaptic scaling -----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalingParams:
    """Target rate (Hz), time constant of the rate estimate, scaling rate ``eta``
    (1/(Hz s): a neuron 1 Hz off target changes its input weights by ``eta`` per
    second, relative), and how often the weights are rescaled (in steps)."""

    target_hz: float = 5.0
    tau_rate_ms: float = 1000.0
    eta: float = 0.01
    interval_steps: int = 100

    def __post_init__(self) -> None:
        check_positive(self.target_hz, "target_hz", allow_zero=True)
        check_positive(self.tau_rate_ms, "tau_rate_ms")
        check_positive(self.eta, "eta", allow_zero=True)
        if int(self.interval_steps) != self.interval_steps or self.interval_steps < 1:
            raise ConfigError(f"interval_steps must be a positive integer, got {self.interval_steps!r}")


@dataclass(slots=True)
class ScalingState:
    """Running rate estimate per postsynaptic neuron ``rate_hz`` ``(n_post,)``."""

    rate_hz: np.ndarray
    step: int = 0
    dt_ms: float = 0.0


@njit(cache=True, nogil=True)
def scaling_kernel(weights, post_ptr, post_syn, rate, post_spikes, step0, dec, bump, coef, target,
                   interval):  # pragma: no cover - compiled
    n_steps, n_post = post_spikes.shape
    for k in range(n_steps):
        for j in range(n_post):
            rate[j] = rate[j] * dec + (bump if post_spikes[k, j] else 0.0)
        if (step0 + k + 1) % interval == 0:
            for j in range(n_post):
                f = np.exp(coef * (target - rate[j]))
                for q in range(post_ptr[j], post_ptr[j + 1]):
                    weights[post_syn[q]] *= f


class SynapticScaling:
    """Multiplicative homeostatic scaling of each neuron's input weights toward a target rate.

    ``tau_r dnu/dt = -nu + sum_k delta(t - t_k)`` (in Hz) estimates the rate;
    every ``interval_steps`` steps each input weight of neuron ``j`` is
    multiplied by ``exp(eta (nu_target - nu_j) T)``, ``T`` the interval in
    seconds, i.e. ``dw/dt = eta (nu_target - nu) w``. Signs and ratios of the
    weights are kept.

    Notes
    -----
    Turrigiano et al., Nature 391:892 (1998); van Rossum, Bi & Turrigiano,
    J. Neurosci. 20:8812 (2000). Integrator: exact decay of the estimate per
    step; the weight ODE integrated exactly at the frozen estimate over each
    interval (the scaling is slow compared with it).
    """

    Params = ScalingParams
    State = ScalingState

    @staticmethod
    def init_state(params: ScalingParams, conn: Connectivity, rate_hz: float | None = None) -> ScalingState:
        """Rate estimates start at ``rate_hz`` (default: the target)."""
        r = params.target_hz if rate_hz is None else rate_hz
        return ScalingState(rate_hz=np.full(conn.n_post, float(r)))

    @staticmethod
    def step(state: ScalingState, params: ScalingParams, conn: Connectivity, post_spikes, dt_ms: float) -> None:
        """Update the rate estimates and ``conn.weights`` in place from ``post_spikes`` ``(n_steps, n_post)``."""
        bind_dt(state, dt_ms)
        post = np.ascontiguousarray(post_spikes, dtype=np.bool_)
        if post.ndim != 2 or post.shape[1] != conn.n_post:
            raise ConfigError(f"post_spikes has shape {post.shape}, expected (n_steps, {conn.n_post})")
        ptr, syn = conn.post_index()
        p = params
        scaling_kernel(conn.weights, ptr, syn, state.rate_hz, post, state.step, math.exp(-dt_ms / p.tau_rate_ms),
                       1e3 / p.tau_rate_ms, p.eta * p.interval_steps * dt_ms * 1e-3, p.target_hz,
                       int(p.interval_steps))
        state.step += post.shape[0]

    @classmethod
    def warmup(cls) -> None:
        conn = Connectivity.random(3, 3, 0.5, weight=0.5, seed=0)
        p = ScalingParams(interval_steps=2)
        cls.step(cls.init_state(p, conn), p, conn, np.ones((3, 3), bool), 0.1)


# -- rate-based rules -------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def hebb_kernel(W, x, y, eta, decay):  # pragma: no cover - compiled
    n_steps, n_in = x.shape
    n_out = y.shape[1]
    keep = 1.0 - eta * decay
    for k in range(n_steps):
        for o in range(n_out):
            g = eta * y[k, o]
            for i in range(n_in):
                W[o, i] = W[o, i] * keep + g * x[k, i]


@njit(cache=True, nogil=True)
def oja_kernel(W, x, eta, y):  # pragma: no cover - compiled
    n_steps, n_in = x.shape
    n_out = W.shape[0]
    back = np.empty(n_in)
    for k in range(n_steps):
        for o in range(n_out):
            acc = 0.0
            for i in range(n_in):
                acc += W[o, i] * x[k, i]
            y[k, o] = acc
        for i in range(n_in):  # y^T W, from the weights before this step's update
            acc = 0.0
            for o in range(n_out):
                acc += y[k, o] * W[o, i]
            back[i] = acc
        for o in range(n_out):
            g = eta * y[k, o]
            for i in range(n_in):
                W[o, i] += g * (x[k, i] - back[i])


def _rates2d(a, name: str, n: int | None = None) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    if a.ndim != 2 or (n is not None and a.shape[1] != n):
        raise ConfigError(f"{name} has shape {a.shape}, expected (n_steps, {n if n is not None else 'n'})")
    return a


def hebb(W: np.ndarray, x, y, eta: float, decay: float = 0.0) -> None:
    """Hebbian learning with decay, one update per step (sample): ``W <- W + eta (y x^T - decay W)``.

    Parameters
    ----------
    W : ndarray, shape (n_out, n_in)
        Weights, updated in place.
    x : array_like, shape (n_steps, n_in)
        Presynaptic rates.
    y : array_like, shape (n_steps, n_out)
        Postsynaptic rates.
    eta : float
        Learning rate per step.
    decay : float
        Weight decay (the ``alpha`` of ``dW/dt = eta (r_i r_j - alpha W)``).

    Notes
    -----
    Hebb (1949); Dayan & Abbott (2001), ch. 8.2. Forward Euler with one
    sample per step; the plain rule (``decay = 0``) grows without bound.
    """
    check_finite(eta, "eta")
    check_finite(decay, "decay")
    if W.dtype != np.float64 or not W.flags.c_contiguous or W.ndim != 2:
        raise ConfigError("W must be a C-contiguous float64 array (n_out, n_in)")
    xs = _rates2d(x, "x", W.shape[1])
    ys = _rates2d(y, "y", W.shape[0])
    if ys.shape[0] != xs.shape[0]:
        raise ConfigError(f"x and y must have the same number of steps, got {xs.shape[0]} and {ys.shape[0]}")
    hebb_kernel(W, xs, ys, float(eta), float(decay))


def oja(W: np.ndarray, x, eta: float) -> np.ndarray:
    """Oja's rule for linear units ``y = W x``: ``W <- W + eta (y x^T - y y^T W)`` per step.

    With one output this is Oja's (1982) rule, whose weight vector converges
    to the unit-norm principal eigenvector of the input covariance; with
    several it is Oja's (1989) subspace rule, whose rows converge to an
    orthonormal basis of the principal subspace.

    Parameters
    ----------
    W : ndarray, shape (n_out, n_in)
        Weights, updated in place.
    x : array_like, shape (n_steps, n_in)
        Input samples (zero mean for PCA).
    eta : float
        Learning rate per step.

    Returns
    -------
    y : ndarray, shape (n_steps, n_out)
        The outputs, each computed with the weights before that step's update.

    Notes
    -----
    Oja, J. Math. Biol. 15:267 (1982); Oja, Int. J. Neural Syst. 1:61 (1989);
    Dayan & Abbott (2001), ch. 8.2.
    """
    check_finite(eta, "eta")
    if W.dtype != np.float64 or not W.flags.c_contiguous or W.ndim != 2:
        raise ConfigError("W must be a C-contiguous float64 array (n_out, n_in)")
    xs = _rates2d(x, "x", W.shape[1])
    y = np.empty((xs.shape[0], W.shape[0]))
    oja_kernel(W, xs, float(eta), y)
    return y
