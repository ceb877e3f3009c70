"""Firing-rate models: independent rate populations and Wilson-Cowan E/I pairs.

Same conventions as :mod:`rtneuro.models.neurons`: time in ms, the input
held over each step, the state in a dataclass of arrays, any chunking of the
steps giving the same bits as one long run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numba import njit

from ..errors import ConfigError
from .neurons import as_input, bind_dt, check_finite, check_n, check_positive, filled, n_rows

__all__ = [
    "RateParams",
    "RateState",
    "RatePopulation",
    "WilsonCowanParams",
    "WilsonCowanState",
    "WilsonCowan",
]

_TRANSFER = {"sigmoid": 0, "relu": 1, "linear": 2}


@dataclass(frozen=True, slots=True, kw_only=True)
class RateParams:
    """Rate population: time constant, transfer function and self-coupling.

    ``transfer``: ``"sigmoid"`` ``r_max / (1 + exp(-gain (x - theta)))``,
    ``"relu"`` ``gain max(x - theta, 0)`` or ``"linear"`` ``gain (x - theta)``.
    ``w_self`` feeds each population's own rate back into its input.
    """

    tau_ms: float = 10.0
    transfer: Literal["sigmoid", "relu", "linear"] = "sigmoid"
    gain: float = 1.0
    theta: float = 0.0
    r_max: float = 1.0
    w_self: float = 0.0

    def __post_init__(self) -> None:
        check_positive(self.tau_ms, "tau_ms")
        for name in ("gain", "theta", "r_max", "w_self"):
            check_finite(getattr(self, name), name)
        if self.transfer not in _TRANSFER:
            raise ConfigError(f"transfer must be one of {', '.join(_TRANSFER)}, got {self.transfer!r}")

    def f(self, x: np.ndarray | float) -> np.ndarray:
        """The transfer function."""
        x = np.asarray(x, dtype=np.float64)
        if self.transfer == "sigmoid":
            return self.r_max / (1.0 + np.exp(-self.gain * (x - self.theta)))
        if self.transfer == "relu":
            return self.gain * np.maximum(x - self.theta, 0.0)
        return self.gain * (x - self.theta)


@dataclass(slots=True)
class RateState:
    """Rates ``r`` ``(n,)``."""

    r: np.ndarray
    step: int = 0
    dt_ms: float = 0.0


@njit(cache=True, nogil=True)
def rate_kernel(r, i_ext, kind, gain, theta, r_max, w_self, decay, out):  # pragma: no cover - compiled
    n_steps, n = out.shape
    held = i_ext.shape[0] == 1
    for k in range(n_steps):
        row = 0 if held else k
        for j in range(n):
            x = i_ext[row, j] + w_self * r[j]
            if kind == 0:
                f = r_max / (1.0 + np.exp(-gain * (x - theta)))
            elif kind == 1:
                f = gain * (x - theta) if x > theta else 0.0
            else:
                f = gain * (x - theta)
            r[j] = f + (r[j] - f) * decay
            out[k, j] = r[j]


class RatePopulation:
    """Independent firing-rate units.

    ``tau dr/dt = -r + f(I + w_self r)``.

    Notes
    -----
    Dayan & Abbott (2001), ch. 7.2; Gerstner et al., *Neuronal Dynamics*
    (2014), ch. 15. Integrator: exponential Euler,
    ``r <- f + (r - f) exp(-dt/tau)`` with ``f`` evaluated at the start of the
    step: exact for a held input when ``w_self = 0``, first order otherwise
    (``dt_ms <= tau_ms / 10``).
    """

    Params = RateParams
    State = RateState

    @staticmethod
    def init_state(params: RateParams, n: int, r0: float | np.ndarray = 0.0) -> RateState:
        check_n(n)
        return RateState(r=filled(n, r0, "r0"))

    @staticmethod
    def step(state: RateState, params: RateParams, i_ext, dt_ms: float, n_steps: int | None = None) -> np.ndarray:
        """Advance; return the rates at the end of each step ``(n_steps, n)``."""
        n = state.r.shape[0]
        bind_dt(state, dt_ms)
        i = as_input(i_ext, n, n_steps)
        T = n_rows(i, n_steps)
        out = np.empty((T, n))
        p = params
        rate_kernel(state.r, i, _TRANSFER[p.transfer], p.gain, p.theta, p.r_max, p.w_self,
                    math.exp(-dt_ms / p.tau_ms), out)
        state.step += T
        return out

    @classmethod
    def warmup(cls) -> None:
        p = RateParams()
        cls.step(cls.init_state(p, 2), p, 1.0, 0.1, 3)
        cls.step(cls.init_state(p, 2), p, np.ones((3, 2)), 0.1)


@dataclass(frozen=True, slots=True, kw_only=True)
class WilsonCowanParams:
    """Wilson-Cowan (1972) E/I pair. Defaults: the limit-cycle set of the paper
    (c1..c4 = 16, 12, 15, 3; a_e 1.3, theta_e 4; a_i 2, theta_i 3.7; r = 1), with
    both time constants 10 ms. Oscillates for a constant drive ``P`` near 1.25 (``Q = 0``)."""

    c1: float = 16.0
    c2: float = 12.0
    c3: float = 15.0
    c4: float = 3.0
    a_e: float = 1.3
    theta_e: float = 4.0
    a_i: float = 2.0
    theta_i: float = 3.7
    r_e: float = 1.0
    r_i: float = 1.0
    tau_e_ms: float = 10.0
    tau_i_ms: float = 10.0

    def __post_init__(self) -> None:
        for name in ("c1", "c2", "c3", "c4", "theta_e", "theta_i", "r_e", "r_i"):
            check_finite(getattr(self, name), name)
        for name in ("a_e", "a_i", "tau_e_ms", "tau_i_ms"):
            check_positive(getattr(self, name), name)


@dataclass(slots=True)
class WilsonCowanState:
    """Fractions of active excitatory ``e`` and inhibitory ``i`` cells ``(n,)`` of ``n`` independent pairs."""

    e: np.ndarray
    i: np.ndarray
    step: int = 0
    dt_ms: float = 0.0


@njit(inline="always", cache=True, nogil=True)
def _wc_s(x, a, theta):  # pragma: no cover - compiled
    return 1.0 / (1.0 + np.exp(-a * (x - theta))) - 1.0 / (1.0 + np.exp(a * theta))


@njit(inline="always", cache=True, nogil=True)
def _wc(e, i, P, Q, c1, c2, c3, c4, a_e, th_e, a_i, th_i, k_e, k_i, r_e, r_i, tau_e, tau_i):  # pragma: no cover - compiled
    de = (-e + (k_e - r_e * e) * _wc_s(c1 * e - c2 * i + P, a_e, th_e)) / tau_e
    di = (-i + (k_i - r_i * i) * _wc_s(c3 * e - c4 * i + Q, a_i, th_i)) / tau_i
    return de, di


@njit(cache=True, nogil=True)
def wilson_cowan_kernel(e, i, p_ext, q_ext, c1, c2, c3, c4, a_e, th_e, a_i, th_i, r_e, r_i, tau_e, tau_i, dt,
                        e_out, i_out):  # pragma: no cover - compiled
    n_steps, n = e_out.shape
    held_p = p_ext.shape[0] == 1
    held_q = q_ext.shape[0] == 1
    k_e = 1.0 - 1.0 / (1.0 + np.exp(a_e * th_e))
    k_i = 1.0 - 1.0 / (1.0 + np.exp(a_i * th_i))
    hd = 0.5 * dt
    s6 = dt / 6.0
    for k in range(n_steps):
        rp = 0 if held_p else k
        rq = 0 if held_q else k
        for j in range(n):
            ee = e[j]
            ii = i[j]
            pp = p_ext[rp, j]
            qq = q_ext[rq, j]
            k1e, k1i = _wc(ee, ii, pp, qq, c1, c2, c3, c4, a_e, th_e, a_i, th_i, k_e, k_i, r_e, r_i, tau_e, tau_i)
            k2e, k2i = _wc(ee + hd * k1e, ii + hd * k1i, pp, qq, c1, c2, c3, c4, a_e, th_e, a_i, th_i, k_e, k_i, r_e,
                           r_i, tau_e, tau_i)
            k3e, k3i = _wc(ee + hd * k2e, ii + hd * k2i, pp, qq, c1, c2, c3, c4, a_e, th_e, a_i, th_i, k_e, k_i, r_e,
                           r_i, tau_e, tau_i)
            k4e, k4i = _wc(ee + dt * k3e, ii + dt * k3i, pp, qq, c1, c2, c3, c4, a_e, th_e, a_i, th_i, k_e, k_i, r_e,
                           r_i, tau_e, tau_i)
            e[j] = ee + s6 * (k1e + 2.0 * k2e + 2.0 * k3e + k4e)
            i[j] = ii + s6 * (k1i + 2.0 * k2i + 2.0 * k3i + k4i)
            e_out[k, j] = e[j]
            i_out[k, j] = i[j]


class WilsonCowan:
    """Wilson-Cowan excitatory/inhibitory population pair.

    ``tau_e dE/dt = -E + (k_e - r_e E) S_e(c1 E - c2 I + P)``,
    ``tau_i dI/dt = -I + (k_i - r_i I) S_i(c3 E - c4 I + Q)``, with the sigmoid
    ``S(x) = 1 / (1 + exp(-a (x - theta))) - 1 / (1 + exp(a theta))`` (so S(0) = 0)
    and ``k = S(inf)``.

    Notes
    -----
    Wilson & Cowan, Biophys. J. 12:1 (1972), eq. 13-14 and the limit-cycle
    parameters of their Fig. 8-9. Integrator: classical fourth-order
    Runge-Kutta, drives ``P``, ``Q`` held over each step; ``dt_ms <= 0.1``.
    """

    Params = WilsonCowanParams
    State = WilsonCowanState

    @staticmethod
    def init_state(params: WilsonCowanParams, n: int, e0: float | np.ndarray = 0.0,
                   i0: float | np.ndarray = 0.0) -> WilsonCowanState:
        check_n(n)
        return WilsonCowanState(e=filled(n, e0, "e0"), i=filled(n, i0, "i0"))

    @staticmethod
    def step(state: WilsonCowanState, params: WilsonCowanParams, p_ext, q_ext, dt_ms: float,
             n_steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Advance; return ``(E, I)`` at the end of each step, each ``(n_steps, n)``.

        ``p_ext`` and ``q_ext`` (external drives to E and I): ``(n_steps, n)`` or held.
        """
        n = state.e.shape[0]
        bind_dt(state, dt_ms)
        if n_steps is None:  # from whichever drive is given per step
            n_steps = next((np.shape(a)[0] for a in (p_ext, q_ext) if np.ndim(a) == 2), None)
        pe = as_input(p_ext, n, n_steps, "p_ext")
        qe = as_input(q_ext, n, n_steps, "q_ext")
        T = n_rows(pe, n_steps)
        e_out = np.empty((T, n))
        i_out = np.empty((T, n))
        p = params
        wilson_cowan_kernel(state.e, state.i, pe, qe, p.c1, p.c2, p.c3, p.c4, p.a_e, p.theta_e, p.a_i, p.theta_i,
                            p.r_e, p.r_i, p.tau_e_ms, p.tau_i_ms, float(dt_ms), e_out, i_out)
        state.step += T
        return e_out, i_out

    @classmethod
    def warmup(cls) -> None:
        p = WilsonCowanParams()
        cls.step(cls.init_state(p, 2), p, 1.25, 0.0, 0.1, 3)
        cls.step(cls.init_state(p, 2), p, np.ones((3, 2)), 0.0, 0.1)
