"""Single-neuron models: Hodgkin-Huxley, LIF, AdEx, Izhikevich, FitzHugh-Nagumo.

Every model is a class with three class methods and no instances:

``Model.init_state(params, n, ...)``
    A fresh state for ``n`` independent neurons (a small dataclass of arrays).
``Model.step(state, params, i_ext, dt_ms, n_steps=None, *, v_out=None)``
    Advance ``n_steps`` time steps in place and return the spike raster, a
    boolean array of shape ``(n_steps, n)``. ``i_ext`` is the input current,
    shape ``(n_steps, n)``, or ``(n,)`` / a scalar held for every step; it is
    constant over each step. ``v_out``, if given, shape ``(n_steps, n)``,
    receives the membrane potential at the end of each step (after a reset).
``Model.warmup()``
    Compile the kernels before the service goes live.

Time is in ms and potentials in mV everywhere. A spike in row ``k`` of a
call that started at ``state.step == s`` happened during step ``s + k``,
i.e. between ``t = (s + k) dt`` and ``(s + k + 1) dt``; like Brian2, it is
labelled with the step's start ``(s + k) dt``. The whole state is in the
dataclass, so stepping in chunks gives the same bits as one long run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ..errors import ConfigError, RtneuroError

__all__ = [
    "DivergenceError",
    "HHParams",
    "HHState",
    "HodgkinHuxley",
    "LIFParams",
    "LIFState",
    "LIF",
    "AdExParams",
    "AdExState",
    "AdEx",
    "IzhikevichParams",
    "IzhikevichState",
    "Izhikevich",
    "FHNParams",
    "FHNState",
    "FitzHughNagumo",
    "refractory_steps",
]

NEVER = -(2**40)  # ``lastspike`` of a neuron that never spiked: far in the past, no int64 overflow


class DivergenceError(RtneuroError):
    """A numerical integration blew up (NaN, inf or an impossible potential): the time step is too large."""


# -- shared helpers ---------------------------------------------------------------


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> None:
    """Raise ConfigError unless ``value`` is a finite number > 0 (>= 0 with ``allow_zero``)."""
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")


def check_finite(value: float, name: str) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")


def as_input(i_ext, n: int, n_steps: int | None, name: str = "i_ext") -> np.ndarray:
    """``i_ext`` as a float64 array of shape ``(n_steps, n)`` or ``(1, n)`` (held for every step).

    A scalar or an ``(n,)`` array is held; it needs ``n_steps``. A 2-D
    array gives ``n_steps`` itself (and must agree with it if both are given).
    """
    a = np.asarray(i_ext, dtype=np.float64)
    if a.ndim == 2:
        if a.shape[1] != n or (n_steps is not None and a.shape[0] != n_steps):
            want = f"({n_steps if n_steps is not None else 'n_steps'}, {n})"
            raise ConfigError(f"{name} has shape {a.shape}, expected {want} or ({n},)")
        return np.ascontiguousarray(a)
    if n_steps is None:
        raise ConfigError(f"{name} of shape {a.shape} is held for every step: give n_steps")
    if a.ndim == 0:
        a = np.full(n, float(a))
    if a.shape != (n,):
        raise ConfigError(f"{name} has shape {a.shape}, expected ({n_steps}, {n}) or ({n},)")
    return np.ascontiguousarray(a.reshape(1, n))


def n_rows(i: np.ndarray, n_steps: int | None) -> int:
    return i.shape[0] if n_steps is None else n_steps


def out_arrays(n_steps: int, n: int, v_out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """A zeroed spike raster and the ``v_out`` buffer (an empty one when not recording)."""
    spikes = np.zeros((n_steps, n), dtype=np.bool_)
    if v_out is None:
        return spikes, np.empty((0, n))
    if v_out.shape != (n_steps, n) or v_out.dtype != np.float64 or not v_out.flags.c_contiguous:
        raise ConfigError(f"v_out must be a C-contiguous float64 array of shape ({n_steps}, {n}), got {v_out.dtype} {v_out.shape}")
    return spikes, v_out


def refractory_steps(t_ref_ms: float, dt_ms: float) -> int:
    """Whole steps in a refractory period, rounded the way Brian2 does (``timestep(t_ref, dt)``)."""
    return int((t_ref_ms + 1e-3 * dt_ms) / dt_ms)


def bind_dt(state, dt_ms: float) -> None:
    """Record the state's time step on first use; refuse another one later (steps are counted in it)."""
    check_positive(dt_ms, "dt_ms")
    if state.dt_ms == 0.0:
        state.dt_ms = float(dt_ms)
    elif state.dt_ms != dt_ms:
        raise ConfigError(f"this state was advanced with dt_ms={state.dt_ms}; got dt_ms={dt_ms} (make a new state to change the step)")


def filled(n: int, value, name: str) -> np.ndarray:
    """A float64 ``(n,)`` array from a scalar or an ``(n,)`` sequence."""
    a = np.asarray(value, dtype=np.float64)
    if a.ndim == 0:
        return np.full(n, float(a))
    if a.shape != (n,):
        raise ConfigError(f"{name} has shape {a.shape}, expected a scalar or ({n},)")
    return a.copy()


def check_n(n: int) -> None:
    if int(n) != n or n < 1:
        raise ConfigError(f"n (number of neurons) must be a positive integer, got {n!r}")


# -- Hodgkin-Huxley ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class HHParams:
    """Squid giant axon at 6.3 degC in the modern convention (V in mV, rest near -65 mV).

    Conductances in mS/cm^2, potentials in mV, capacitance in uF/cm^2, so an
    input current is a density in uA/cm^2. ``v_spike_mv`` is the level whose
    upward crossing counts as a spike. ``method`` is ``"exponential_euler"``
    (every variable, the default) or ``"rk4"``.
    """

    g_na: float = 120.0
    g_k: float = 36.0
    g_l: float = 0.3
    e_na_mv: float = 50.0
    e_k_mv: float = -77.0
    e_l_mv: float = -54.387
    c_m: float = 1.0
    v_spike_mv: float = 0.0
    method: Literal["exponential_euler", "rk4"] = "exponential_euler"

    def __post_init__(self) -> None:
        for name in ("g_na", "g_k", "g_l", "c_m"):
            check_positive(getattr(self, name), name, allow_zero=name != "c_m")
        for name in ("e_na_mv", "e_k_mv", "e_l_mv", "v_spike_mv"):
            check_finite(getattr(self, name), name)
        if self.method not in ("exponential_euler", "rk4"):
            raise ConfigError(f"method must be 'exponential_euler' or 'rk4', got {self.method!r}")


@dataclass(slots=True)
class HHState:
    """Membrane potential ``v`` (mV), gates ``m``, ``h``, ``n``, and ``armed``
    (the neuron has been below ``v_spike_mv`` since its last spike), all ``(n,)``."""

    v: np.ndarray
    m: np.ndarray
    h: np.ndarray
    n: np.ndarray
    armed: np.ndarray
    step: int = 0
    dt_ms: float = 0.0


# -- an exp() the compiler can vectorise ---------------------------------------------------
# Without Intel's SVML, LLVM calls libm's scalar exp() element by element. The HH kernels spend
# most of their time in ten exponentials per neuron and step, so they use this one instead:
# Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2, a degree-13 Taylor polynomial for exp(r)
# (truncation < 5e-18), and 2^k assembled from its bits -- straight-line code, so a loop over
# neurons becomes SIMD code. Accurate to about 1 ulp; plain IEEE operations in a fixed order,
# so the scalar and vector paths give the same bits.


@intrinsic
def _f64_from_bits(typingctx, bits):  # pragma: no cover - compile-time
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@njit(inline="always", cache=True, nogil=True)
def fast_exp(x):  # pragma: no cover - compiled
    """``exp(x)`` for float64 ``x`` to about 1 ulp; arguments are clamped to [-708, 709]."""
    x = min(max(x, -708.0), 709.0)
    k = np.floor(x * 1.4426950408889634 + 0.5)
    r = (x - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10
    p = 1.6059043836821613e-10
    p = p * r + 2.08767569878681e-09
    p = p * r + 2.505210838544172e-08
    p = p * r + 2.755731922398589e-07
    p = p * r + 2.7557319223985893e-06
    p = p * r + 2.48015873015873e-05
    p = p * r + 0.0001984126984126984
    p = p * r + 0.001388888888888889
    p = p * r + 0.008333333333333333
    p = p * r + 0.041666666666666664
    p = p * r + 0.16666666666666666
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _f64_from_bits((np.int64(k) + 1023) << 52)


@njit(inline="always", cache=True, nogil=True)
def fast_exprel(x):  # pragma: no cover - compiled
    """``(exp(x) - 1) / x`` (1 at 0) without cancellation: a series for |x| < 0.5."""
    q = 7.647163731819816e-13
    q = q * x + 1.1470745597729725e-11
    q = q * x + 1.6059043836821613e-10
    q = q * x + 2.08767569878681e-09
    q = q * x + 2.505210838544172e-08
    q = q * x + 2.755731922398589e-07
    q = q * x + 2.7557319223985893e-06
    q = q * x + 2.48015873015873e-05
    q = q * x + 0.0001984126984126984
    q = q * x + 0.001388888888888889
    q = q * x + 0.008333333333333333
    q = q * x + 0.041666666666666664
    q = q * x + 0.16666666666666666
    q = q * x + 0.5
    q = q * x + 1.0
    big = (fast_exp(x) - 1.0) / (x if x != 0.0 else 1.0)
    return q if abs(x) < 0.5 else big


@njit(inline="always", cache=True, nogil=True)
def hh_rates(v):  # pragma: no cover - compiled
    """Opening and closing rates (1/ms) of m, h, n at ``v`` mV (Dayan & Abbott 2001, eq. 5.22-5.24)."""
    am = 1.0 / fast_exprel(-(v + 40.0) / 10.0)  # 0.1 (V + 40) / (1 - exp(-(V + 40) / 10))
    bm = 4.0 * fast_exp(-(v + 65.0) / 18.0)
    ah = 0.07 * fast_exp(-(v + 65.0) / 20.0)
    bh = 1.0 / (1.0 + fast_exp(-(v + 35.0) / 10.0))
    an = 0.1 / fast_exprel(-(v + 55.0) / 10.0)  # 0.01 (V + 55) / (1 - exp(-(V + 55) / 10))
    bn = 0.125 * fast_exp(-(v + 65.0) / 80.0)
    return am, bm, ah, bh, an, bn


@njit(inline="always", cache=True, nogil=True)
def _gate_expeuler(x, a, b, dt):  # pragma: no cover - compiled
    """Exact update of ``dx/dt = a (1 - x) - b x`` over ``dt`` at fixed rates."""
    s = a + b
    x_inf = a / s
    return x_inf + (x - x_inf) * fast_exp(-s * dt)


@njit(cache=True, nogil=True, error_model="numpy")
def hh_sweep_expeuler(v, m, h, n, ge, gi, i_row, g_na, g_k, g_l, e_na, e_k, e_l, c_m, e_e, e_i, dt,
                      v_prev):  # pragma: no cover - compiled
    """One exponential-Euler step of every neuron (branch-free, so it vectorises).

    V is advanced exactly for its linear ODE at the start-of-step conductances
    (including synaptic ``ge``, ``gi`` with reversal ``e_e``, ``e_i``), each
    gate exactly at the start-of-step V. ``v_prev`` receives V before the step.
    """
    for c in range(v.shape[0]):
        V = v[c]
        M = m[c]
        H = h[c]
        N = n[c]
        am, bm, ah, bh, an, bn = hh_rates(V)
        gna = g_na * (M * M * M * H)
        gk = g_k * (N * N * N * N)
        g = g_l + gna + gk + ge[c] + gi[c]
        v_inf = (g_l * e_l + gna * e_na + gk * e_k + ge[c] * e_e + gi[c] * e_i + i_row[c]) / g
        v[c] = v_inf + (V - v_inf) * fast_exp(-g * dt / c_m)
        m[c] = _gate_expeuler(M, am, bm, dt)
        h[c] = _gate_expeuler(H, ah, bh, dt)
        n[c] = _gate_expeuler(N, an, bn, dt)
        v_prev[c] = V


@njit(inline="always", cache=True, nogil=True)
def _hh_deriv(v, m, h, n, i, g_na, g_k, g_l, e_na, e_k, e_l, c_m):  # pragma: no cover - compiled
    am, bm, ah, bh, an, bn = hh_rates(v)
    m3h = m * m * m * h
    n4 = n * n * n * n
    dv = (g_l * (e_l - v) + g_na * m3h * (e_na - v) + g_k * n4 * (e_k - v) + i) / c_m
    return dv, am * (1.0 - m) - bm * m, ah * (1.0 - h) - bh * h, an * (1.0 - n) - bn * n


@njit(cache=True, nogil=True, error_model="numpy")
def hh_sweep_rk4(v, m, h, n, i_row, g_na, g_k, g_l, e_na, e_k, e_l, c_m, dt, v_prev):  # pragma: no cover - compiled
    """One classical Runge-Kutta step of every neuron."""
    hd = 0.5 * dt
    s6 = dt / 6.0
    for c in range(v.shape[0]):
        V = v[c]
        M = m[c]
        H = h[c]
        N = n[c]
        cur = i_row[c]
        k1v, k1m, k1h, k1n = _hh_deriv(V, M, H, N, cur, g_na, g_k, g_l, e_na, e_k, e_l, c_m)
        k2v, k2m, k2h, k2n = _hh_deriv(V + hd * k1v, M + hd * k1m, H + hd * k1h, N + hd * k1n, cur,
                                       g_na, g_k, g_l, e_na, e_k, e_l, c_m)
        k3v, k3m, k3h, k3n = _hh_deriv(V + hd * k2v, M + hd * k2m, H + hd * k2h, N + hd * k2n, cur,
                                       g_na, g_k, g_l, e_na, e_k, e_l, c_m)
        k4v, k4m, k4h, k4n = _hh_deriv(V + dt * k3v, M + dt * k3m, H + dt * k3h, N + dt * k3n, cur,
                                       g_na, g_k, g_l, e_na, e_k, e_l, c_m)
        v[c] = V + s6 * (k1v + 2.0 * k2v + 2.0 * k3v + k4v)
        m[c] = M + s6 * (k1m + 2.0 * k2m + 2.0 * k3m + k4m)
        h[c] = H + s6 * (k1h + 2.0 * k2h + 2.0 * k3h + k4h)
        n[c] = N + s6 * (k1n + 2.0 * k2n + 2.0 * k3n + k4n)
        v_prev[c] = V


@njit(inline="always", cache=True, nogil=True)
def hh_detect(v, v_prev, armed, v_spike, spikes, k):  # pragma: no cover - compiled
    """Spikes (upward crossings of ``v_spike`` once re-armed) of step ``k``; the first diverged neuron or -1."""
    for c in range(v.shape[0]):
        Vn = v[c]
        if not abs(Vn) <= 1000.0:  # also catches NaN
            return c
        if v_prev[c] <= v_spike:
            armed[c] = True
        if armed[c] and Vn > v_spike:
            spikes[k, c] = True
            armed[c] = False
    return -1


@njit(cache=True, nogil=True)
def hh_kernel(v, m, h, n, armed, i_ext, g_na, g_k, g_l, e_na, e_k, e_l, c_m, v_spike, dt, rk4,
              spikes, v_out):  # pragma: no cover - compiled
    """Advance HH neurons ``spikes.shape[0]`` steps; return ``(step, neuron)`` of a divergence or ``(-1, -1)``.

    ``i_ext`` is ``(n_steps, n)`` or ``(1, n)`` (held). On divergence the
    kernel stops at once, leaving that step's state in the arrays.
    """
    n_steps, n_cells = spikes.shape
    held = i_ext.shape[0] == 1
    rec = v_out.shape[0] > 0
    v_prev = np.empty(n_cells)
    zero = np.zeros(n_cells)
    for k in range(n_steps):
        i_row = i_ext[0] if held else i_ext[k]
        if rk4:
            hh_sweep_rk4(v, m, h, n, i_row, g_na, g_k, g_l, e_na, e_k, e_l, c_m, dt, v_prev)
        else:
            hh_sweep_expeuler(v, m, h, n, zero, zero, i_row, g_na, g_k, g_l, e_na, e_k, e_l, c_m, 0.0, 0.0, dt,
                              v_prev)
        bad = hh_detect(v, v_prev, armed, v_spike, spikes, k)
        if bad >= 0:
            return k, bad
        if rec:
            v_out[k] = v
    return -1, -1


class HodgkinHuxley:
    """Hodgkin-Huxley point neuron (squid axon), modern sign convention.

    ``C dV/dt = g_L (E_L - V) + g_Na m^3 h (E_Na - V) + g_K n^4 (E_K - V) + I``,
    ``dx/dt = a_x(V) (1 - x) - b_x(V) x`` for ``x`` in m, h, n, with
    ``a_m = 0.1 (V+40) / (1 - exp(-(V+40)/10))``, ``b_m = 4 exp(-(V+65)/18)``,
    ``a_h = 0.07 exp(-(V+65)/20)``, ``b_h = 1 / (1 + exp(-(V+35)/10))``,
    ``a_n = 0.01 (V+55) / (1 - exp(-(V+55)/10))``, ``b_n = 0.125 exp(-(V+65)/80)``
    (1/ms; V in mV). Units: mS/cm^2, uF/cm^2, uA/cm^2, mV, ms.

    Notes
    -----
    Hodgkin & Huxley (1952) in the convention of Dayan & Abbott (2001),
    ch. 5.6, with the same rate functions as Brian2's HH examples.

    Integrator, ``method="exponential_euler"`` (default): every variable is
    advanced exactly for its linear ODE with the others frozen at the start
    of the step, ``x <- x_inf + (x - x_inf) exp(-dt / tau_x)`` (Dayan & Abbott
    ch. 5.9; Brian2's ``exponential_euler``): the gates are exact at fixed
    V and V is exact at fixed conductances. It is unconditionally stable
    (V stays between the reversal potentials) but only first-order accurate:
    at I = 10 uA/cm^2 the firing period comes out about 1.3 % short at
    ``dt_ms = 0.025`` and 0.5 % at 0.01 (spike times drift by that much per
    cycle), while the f-I curve and rheobase keep their shape.
    ``method="rk4"``: classical Runge-Kutta, fourth order (spike times within
    1e-4 ms over 200 ms at ``dt_ms = 0.025``), but it blows up above
    ``dt_ms`` of about 0.05 -- which is detected and raised.

    The exponentials are evaluated by :func:`fast_exp` (a branch-free
    polynomial, within 1 ulp of libm) so that the loop over neurons runs as
    SIMD code.

    A spike is an upward crossing of ``v_spike_mv`` after having been below
    it (Brian2's ``threshold='v > v_spike', refractory='v > v_spike'``). A step that
    leaves |V| > 1000 mV or a non-finite value raises :class:`DivergenceError`.
    """

    Params = HHParams
    State = HHState

    @staticmethod
    def steady_gates(v_mv: float | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Steady-state ``m, h, n`` at ``v_mv``."""
        v = np.asarray(v_mv, dtype=np.float64)
        xm = -(v + 40.0) / 10.0
        xn = -(v + 55.0) / 10.0
        with np.errstate(invalid="ignore", divide="ignore"):
            am = np.where(np.abs(xm) < 1e-16, 1.0, xm / np.expm1(xm))
            an = np.where(np.abs(xn) < 1e-16, 0.1, 0.1 * xn / np.expm1(xn))
        bm = 4.0 * np.exp(-(v + 65.0) / 18.0)
        ah = 0.07 * np.exp(-(v + 65.0) / 20.0)
        bh = 1.0 / (1.0 + np.exp(-(v + 35.0) / 10.0))
        bn = 0.125 * np.exp(-(v + 65.0) / 80.0)
        return am / (am + bm), ah / (ah + bh), an / (an + bn)

    @classmethod
    def init_state(cls, params: HHParams, n: int, v_mv: float | np.ndarray = -65.0) -> HHState:
        """``n`` neurons at ``v_mv`` with the gates at their steady state there."""
        check_n(n)
        v = filled(n, v_mv, "v_mv")
        m, h, g = cls.steady_gates(v)
        return HHState(v=v, m=np.asarray(m, float).copy(), h=np.asarray(h, float).copy(),
                       n=np.asarray(g, float).copy(), armed=np.ones(n, dtype=np.bool_))

    @staticmethod
    def step(state: HHState, params: HHParams, i_ext, dt_ms: float, n_steps: int | None = None, *,
             v_out: np.ndarray | None = None) -> np.ndarray:
        """Advance the state; return the spike raster ``(n_steps, n)``.

        Parameters
        ----------
        state : HHState
            Updated in place.
        params : HHParams
        i_ext : array_like, shape (n_steps, n) or (n,) or scalar
            Injected current density in uA/cm^2, constant over each step.
        dt_ms : float
            Time step in ms (fixed for the life of ``state``).
        n_steps : int, optional
            Needed when ``i_ext`` is held.
        v_out : ndarray, shape (n_steps, n), optional
            Receives V (mV) at the end of each step.

        Raises
        ------
        DivergenceError
            If a step produced |V| > 1000 mV or a non-finite value; ``state``
            is then left at that step and should be discarded.
        """
        nc = state.v.shape[0]
        bind_dt(state, dt_ms)
        i = as_input(i_ext, nc, n_steps)
        T = n_rows(i, n_steps)
        spikes, vo = out_arrays(T, nc, v_out)
        p = params
        k, c = hh_kernel(state.v, state.m, state.h, state.n, state.armed, i, p.g_na, p.g_k, p.g_l,
                         p.e_na_mv, p.e_k_mv, p.e_l_mv, p.c_m, p.v_spike_mv, float(dt_ms), p.method == "rk4",
                         spikes, vo)
        if k >= 0:
            at = state.step + k
            state.step = at + 1
            raise DivergenceError(
                f"Hodgkin-Huxley integration diverged at step {at} (t = {at * dt_ms:.4f} ms), neuron {c}: "
                f"V = {float(state.v[c])!r} mV; dt_ms={dt_ms} is too large for method '{p.method}' "
                f"(use dt_ms <= 0.025, or method='exponential_euler')")
        state.step += T
        return spikes

    @classmethod
    def warmup(cls) -> None:
        p = HHParams()
        cls.step(cls.init_state(p, 2), p, 1.0, 0.01, 3)
        p = HHParams(method="rk4")
        cls.step(cls.init_state(p, 2), p, 1.0, 0.01, 3, v_out=np.empty((3, 2)))


# -- leaky integrate-and-fire ------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LIFParams:
    """Leaky integrate-and-fire: membrane time constant, rest, threshold, reset (mV),
    membrane resistance (MOhm, so input currents are in nA and R I in mV) and an
    absolute refractory period."""

    tau_m_ms: float = 10.0
    e_l_mv: float = -65.0
    v_th_mv: float = -50.0
    v_reset_mv: float = -65.0
    r_m_mohm: float = 10.0
    t_ref_ms: float = 2.0

    def __post_init__(self) -> None:
        check_positive(self.tau_m_ms, "tau_m_ms")
        check_positive(self.r_m_mohm, "r_m_mohm")
        check_positive(self.t_ref_ms, "t_ref_ms", allow_zero=True)
        for name in ("e_l_mv", "v_th_mv", "v_reset_mv"):
            check_finite(getattr(self, name), name)
        if self.v_reset_mv >= self.v_th_mv:
            raise ConfigError(f"v_reset_mv ({self.v_reset_mv}) must be below v_th_mv ({self.v_th_mv})")


@dataclass(slots=True)
class LIFState:
    """Membrane potential ``v`` (mV) and the step of each neuron's last spike ``lastspike``, both ``(n,)``."""

    v: np.ndarray
    lastspike: np.ndarray
    step: int = 0
    dt_ms: float = 0.0


@njit(cache=True, nogil=True)
def lif_kernel(v, lastspike, step0, i_ext, e_l, r_m, v_th, v_reset, decay, n_ref, spikes, v_out):  # pragma: no cover - compiled
    """Advance LIF neurons ``spikes.shape[0]`` steps from global step ``step0``."""
    n_steps, n_cells = spikes.shape
    held = i_ext.shape[0] == 1
    rec = v_out.shape[0] > 0
    for k in range(n_steps):
        s = step0 + k
        row = 0 if held else k
        for c in range(n_cells):
            if s - lastspike[c] >= n_ref:
                v_inf = e_l + r_m * i_ext[row, c]
                x = v_inf + (v[c] - v_inf) * decay
                if x > v_th:
                    spikes[k, c] = True
                    lastspike[c] = s
                    x = v_reset
                v[c] = x
            if rec:
                v_out[k, c] = v[c]


class LIF:
    """Leaky integrate-and-fire neuron with an absolute refractory period.

    ``tau_m dV/dt = -(V - E_L) + R I``; when ``V > V_th``: a spike, ``V <- V_reset``,
    and V stays clamped at ``V_reset``, input ignored, for ``t_ref``.

    Notes
    -----
    Gerstner, Kistler, Naud & Paninski, *Neuronal Dynamics* (2014), ch. 1.3;
    Dayan & Abbott (2001), ch. 5.4.

    Integrator: exact for an input constant over the step,
    ``V <- V_inf + (V - V_inf) exp(-dt/tau_m)`` with ``V_inf = E_L + R I``
    (any ``dt_ms``; 0.1 is typical). The threshold is tested at the end of
    every step. A spike in step ``s`` blocks integration in steps
    ``s + 1 ... s + n_ref - 1`` with ``n_ref = timestep(t_ref, dt)``, so V
    is held at the reset value from the end of the spike step until
    ``t_ref`` after the spike's time label, exactly as Brian2's
    ``refractory=t_ref`` with ``(unless refractory)``.

    For a constant input above rheobase the simulated inter-spike interval
    is ``t_ref + floor(T/dt) dt`` with ``T = tau_m ln((R I + E_L - V_reset) /
    (R I + E_L - V_th))``: within one step below the analytic value.
    """

    Params = LIFParams
    State = LIFState

    @staticmethod
    def init_state(params: LIFParams, n: int, v_mv: float | np.ndarray | None = None) -> LIFState:
        """``n`` neurons at ``v_mv`` (default: ``e_l_mv``), none refractory."""
        check_n(n)
        v = filled(n, params.e_l_mv if v_mv is None else v_mv, "v_mv")
        return LIFState(v=v, lastspike=np.full(n, NEVER, dtype=np.int64))

    @staticmethod
    def step(state: LIFState, params: LIFParams, i_ext, dt_ms: float, n_steps: int | None = None, *,
             v_out: np.ndarray | None = None) -> np.ndarray:
        """Advance the state; return the spike raster ``(n_steps, n)``.

        ``i_ext`` in nA, shape ``(n_steps, n)``, ``(n,)`` or scalar (held);
        ``v_out`` ``(n_steps, n)`` receives V (mV) at the end of each step.
        """
        nc = state.v.shape[0]
        bind_dt(state, dt_ms)
        i = as_input(i_ext, nc, n_steps)
        T = n_rows(i, n_steps)
        spikes, vo = out_arrays(T, nc, v_out)
        p = params
        lif_kernel(state.v, state.lastspike, state.step, i, p.e_l_mv, p.r_m_mohm, p.v_th_mv, p.v_reset_mv,
                   math.exp(-dt_ms / p.tau_m_ms), refractory_steps(p.t_ref_ms, dt_ms), spikes, vo)
        state.step += T
        return spikes

    @staticmethod
    def rate_hz(params: LIFParams, i_na: float | np.ndarray) -> np.ndarray:
        """Analytic firing rate for a constant current (continuous time):
        ``1 / (t_ref + tau_m ln((R I + E_L - V_reset) / (R I + E_L - V_th)))``, 0 below rheobase."""
        p = params
        drive = p.r_m_mohm * np.asarray(i_na, dtype=np.float64) + p.e_l_mv
        out = np.zeros_like(drive)
        ok = drive > p.v_th_mv
        t_to_th = p.tau_m_ms * np.log((drive[ok] - p.v_reset_mv) / (drive[ok] - p.v_th_mv))
        out[ok] = 1e3 / (p.t_ref_ms + t_to_th)
        return out

    @classmethod
    def warmup(cls) -> None:
        p = LIFParams()
        cls.step(cls.init_state(p, 2), p, 2.0, 0.1, 3)
        cls.step(cls.init_state(p, 2), p, np.full((3, 2), 2.0), 0.1, v_out=np.empty((3, 2)))


# -- adaptive exponential integrate-and-fire -------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AdExParams:
    """Adaptive exponential IF; defaults are Brette & Gerstner (2005), Table 1.

    Capacitance in pF, conductances in nS, currents (``b_pa``, the input, w) in pA.
    ``v_peak_mv`` is where the upswing is cut and counted as a spike.
    """

    c_pf: float = 281.0
    g_l_ns: float = 30.0
    e_l_mv: float = -70.6
    v_t_mv: float = -50.4
    delta_t_mv: float = 2.0
    tau_w_ms: float = 144.0
    a_ns: float = 4.0
    b_pa: float = 80.5
    v_reset_mv: float = -70.6
    v_peak_mv: float = 0.0
    t_ref_ms: float = 0.0

    def __post_init__(self) -> None:
        for name in ("c_pf", "g_l_ns", "delta_t_mv", "tau_w_ms"):
            check_positive(getattr(self, name), name)
        check_positive(self.t_ref_ms, "t_ref_ms", allow_zero=True)
        for name in ("e_l_mv", "v_t_mv", "a_ns", "b_pa", "v_reset_mv", "v_peak_mv"):
            check_finite(getattr(self, name), name)
        if self.v_peak_mv <= self.v_t_mv:
            raise ConfigError(f"v_peak_mv ({self.v_peak_mv}) must be above v_t_mv ({self.v_t_mv})")
        if self.v_peak_mv > self.v_t_mv + 60.0 * self.delta_t_mv:
            raise ConfigError(f"v_peak_mv ({self.v_peak_mv}) must be at most v_t_mv + 60 delta_t_mv "
                              f"({self.v_t_mv + 60.0 * self.delta_t_mv}) so that exp() cannot overflow")


@dataclass(slots=True)
class AdExState:
    """Membrane potential ``v`` (mV), adaptation current ``w`` (pA), last spike step, all ``(n,)``."""

    v: np.ndarray
    w: np.ndarray
    lastspike: np.ndarray
    step: int = 0
    dt_ms: float = 0.0


@njit(cache=True, nogil=True)
def adex_kernel(v, w, lastspike, step0, i_ext, c, g_l, e_l, v_t, d_t, tau_w, a, b, v_reset, v_peak, n_ref,
                dt, spikes, v_out):  # pragma: no cover - compiled
    n_steps, n_cells = spikes.shape
    held = i_ext.shape[0] == 1
    rec = v_out.shape[0] > 0
    for k in range(n_steps):
        s = step0 + k
        row = 0 if held else k
        for j in range(n_cells):
            V = v[j]
            W = w[j]
            active = s - lastspike[j] >= n_ref
            if active:
                dv = (-g_l * (V - e_l) + g_l * d_t * np.exp((V - v_t) / d_t) - W + i_ext[row, j]) / c
                v[j] = V + dt * dv
            w[j] = W + dt * (a * (V - e_l) - W) / tau_w
            if active and v[j] > v_peak:
                spikes[k, j] = True
                lastspike[j] = s
                v[j] = v_reset
                w[j] += b
            if rec:
                v_out[k, j] = v[j]


class AdEx:
    """Adaptive exponential integrate-and-fire neuron (Brette & Gerstner 2005).

    ``C dV/dt = -g_L (V - E_L) + g_L D_T exp((V - V_T)/D_T) - w + I``,
    ``tau_w dw/dt = a (V - E_L) - w``; when ``V > V_peak``: ``V <- V_r``, ``w <- w + b``
    (and V held at ``V_r`` for ``t_ref``, w still evolving). Units: mV, ms, pF, nS, pA.

    Notes
    -----
    Brette & Gerstner, J. Neurophysiol. 94:3637 (2005); Gerstner et al.,
    *Neuronal Dynamics* (2014), ch. 6.1.

    Integrator: forward Euler, both variables from the values at the start
    of the step (Brian2's ``euler``), ``dt_ms <= 0.1`` (0.01-0.05 for
    accurate spike times). The threshold is tested at the end of each
    step, with a cut at ``v_peak_mv``; since V starts every step at or below
    the cut, exp() stays finite. The adaptation jump uses V from the start
    of the step, never the overshoot.
    """

    Params = AdExParams
    State = AdExState

    @staticmethod
    def init_state(params: AdExParams, n: int, v_mv: float | np.ndarray | None = None,
                   w_pa: float | np.ndarray = 0.0) -> AdExState:
        check_n(n)
        v = filled(n, params.e_l_mv if v_mv is None else v_mv, "v_mv")
        return AdExState(v=v, w=filled(n, w_pa, "w_pa"), lastspike=np.full(n, NEVER, dtype=np.int64))

    @staticmethod
    def step(state: AdExState, params: AdExParams, i_ext, dt_ms: float, n_steps: int | None = None, *,
             v_out: np.ndarray | None = None) -> np.ndarray:
        """Advance the state; return the spike raster ``(n_steps, n)``. ``i_ext`` in pA."""
        nc = state.v.shape[0]
        bind_dt(state, dt_ms)
        i = as_input(i_ext, nc, n_steps)
        T = n_rows(i, n_steps)
        spikes, vo = out_arrays(T, nc, v_out)
        p = params
        adex_kernel(state.v, state.w, state.lastspike, state.step, i, p.c_pf, p.g_l_ns, p.e_l_mv, p.v_t_mv,
                    p.delta_t_mv, p.tau_w_ms, p.a_ns, p.b_pa, p.v_reset_mv, p.v_peak_mv,
                    refractory_steps(p.t_ref_ms, dt_ms), float(dt_ms), spikes, vo)
        state.step += T
        return spikes

    @classmethod
    def warmup(cls) -> None:
        p = AdExParams()
        cls.step(cls.init_state(p, 2), p, 500.0, 0.1, 3)
        cls.step(cls.init_state(p, 2), p, np.full((3, 2), 500.0), 0.1, v_out=np.empty((3, 2)))


# -- Izhikevich ---------------------------------------------------------------------------

IZHIKEVICH_PRESETS: dict[str, tuple[float, float, float, float]] = {
    "RS": (0.02, 0.2, -65.0, 8.0),  # regular spiking
    "IB": (0.02, 0.2, -55.0, 4.0),  # intrinsically bursting
    "CH": (0.02, 0.2, -50.0, 2.0),  # chattering
    "FS": (0.1, 0.2, -65.0, 2.0),  # fast spiking
    "LTS": (0.02, 0.25, -65.0, 2.0),  # low-threshold spiking
    "TC": (0.02, 0.25, -65.0, 0.05),  # thalamo-cortical
    "RZ": (0.1, 0.26, -65.0, 2.0),  # resonator
}


@dataclass(frozen=True, slots=True, kw_only=True)
class IzhikevichParams:
    """Izhikevich (2003) parameters; ``IzhikevichParams.preset("RS")`` for the named cell classes.

    v in mV, time in ms, the input in the model's own units (mV/ms).
    """

    a: float = 0.02
    b: float = 0.2
    c: float = -65.0
    d: float = 8.0
    v_peak_mv: float = 30.0

    def __post_init__(self) -> None:
        for name in ("a", "b", "c", "d", "v_peak_mv"):
            check_finite(getattr(self, name), name)
        check_positive(self.a, "a")

    @classmethod
    def preset(cls, name: str) -> IzhikevichParams:
        """One of ``RS``, ``IB``, ``CH``, ``FS`` (Izhikevich 2003, Fig. 2), ``LTS``, ``TC``, ``RZ``."""
        from ..errors import did_you_mean

        key = name.upper()
        if key not in IZHIKEVICH_PRESETS:
            raise ConfigError(f"unknown Izhikevich preset {name!r}{did_you_mean(key, IZHIKEVICH_PRESETS)}; "
                              f"known: {', '.join(IZHIKEVICH_PRESETS)}")
        a, b, c, d = IZHIKEVICH_PRESETS[key]
        return cls(a=a, b=b, c=c, d=d)


@dataclass(slots=True)
class IzhikevichState:
    """Membrane potential ``v`` (mV) and recovery ``u``, both ``(n,)``."""

    v: np.ndarray
    u: np.ndarray
    step: int = 0
    dt_ms: float = 0.0


@njit(cache=True, nogil=True)
def izhikevich_kernel(v, u, i_ext, a, b, c, d, v_peak, dt, spikes, v_out):  # pragma: no cover - compiled
    n_steps, n_cells = spikes.shape
    held = i_ext.shape[0] == 1
    rec = v_out.shape[0] > 0
    for k in range(n_steps):
        row = 0 if held else k
        for j in range(n_cells):
            V = v[j]
            U = u[j]
            v[j] = V + dt * (0.04 * V * V + 5.0 * V + 140.0 - U + i_ext[row, j])
            u[j] = U + dt * (a * (b * V - U))
            if v[j] >= v_peak:
                spikes[k, j] = True
                v[j] = c
                u[j] += d
            if rec:
                v_out[k, j] = v[j]


class Izhikevich:
    """Izhikevich's simple model (2003).

    ``dv/dt = 0.04 v^2 + 5 v + 140 - u + I``, ``du/dt = a (b v - u)``;
    when ``v >= 30``: ``v <- c``, ``u <- u + d``.

    Notes
    -----
    Izhikevich, IEEE Trans. Neural Networks 14:1569 (2003); presets RS, IB,
    CH, FS from its Fig. 2.

    Integrator: forward Euler on both variables from the start-of-step
    values (Brian2's ``euler``), ``dt_ms <= 0.1``. The paper's own code takes
    two 0.5 ms half steps for v and then one 1 ms step for u; with
    ``dt_ms=0.1`` the firing patterns are the same and the trajectories closer
    to the continuous model.
    """

    Params = IzhikevichParams
    State = IzhikevichState

    @staticmethod
    def init_state(params: IzhikevichParams, n: int, v_mv: float | np.ndarray = -65.0) -> IzhikevichState:
        """``v = v_mv`` and ``u = b v``."""
        check_n(n)
        v = filled(n, v_mv, "v_mv")
        return IzhikevichState(v=v, u=params.b * v)

    @staticmethod
    def step(state: IzhikevichState, params: IzhikevichParams, i_ext, dt_ms: float, n_steps: int | None = None, *,
             v_out: np.ndarray | None = None) -> np.ndarray:
        """Advance the state; return the spike raster ``(n_steps, n)``."""
        nc = state.v.shape[0]
        bind_dt(state, dt_ms)
        i = as_input(i_ext, nc, n_steps)
        T = n_rows(i, n_steps)
        spikes, vo = out_arrays(T, nc, v_out)
        p = params
        izhikevich_kernel(state.v, state.u, i, p.a, p.b, p.c, p.d, p.v_peak_mv, float(dt_ms), spikes, vo)
        state.step += T
        return spikes

    @classmethod
    def warmup(cls) -> None:
        p = IzhikevichParams()
        cls.step(cls.init_state(p, 2), p, 10.0, 0.1, 3)
        cls.step(cls.init_state(p, 2), p, np.full((3, 2), 10.0), 0.1, v_out=np.empty((3, 2)))


# -- FitzHugh-Nagumo ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FHNParams:
    """FitzHugh-Nagumo in FitzHugh's (1961) scaling: ``a = 0.7``, ``b = 0.8``, ``tau = 12.5``
    (``epsilon = 1 / tau = 0.08``). Dimensionless; time is counted in ms.
    ``v_spike`` is the level whose upward crossing counts as a spike."""

    a: float = 0.7
    b: float = 0.8
    tau: float = 12.5
    v_spike: float = 1.0

    def __post_init__(self) -> None:
        check_positive(self.tau, "tau")
        for name in ("a", "b", "v_spike"):
            check_finite(getattr(self, name), name)


@dataclass(slots=True)
class FHNState:
    v: np.ndarray
    w: np.ndarray
    armed: np.ndarray
    step: int = 0
    dt_ms: float = 0.0


@njit(inline="always", cache=True, nogil=True)
def _fhn(v, w, i, a, b, inv_tau):  # pragma: no cover - compiled
    return v - v * v * v / 3.0 - w + i, (v + a - b * w) * inv_tau


@njit(cache=True, nogil=True)
def fhn_kernel(v, w, armed, i_ext, a, b, tau, v_spike, dt, spikes, v_out):  # pragma: no cover - compiled
    n_steps, n_cells = spikes.shape
    held = i_ext.shape[0] == 1
    rec = v_out.shape[0] > 0
    inv_tau = 1.0 / tau
    hd = 0.5 * dt
    s6 = dt / 6.0
    for k in range(n_steps):
        row = 0 if held else k
        for j in range(n_cells):
            vj = v[j]
            wj = w[j]
            cur = i_ext[row, j]
            k1v, k1w = _fhn(vj, wj, cur, a, b, inv_tau)
            k2v, k2w = _fhn(vj + hd * k1v, wj + hd * k1w, cur, a, b, inv_tau)
            k3v, k3w = _fhn(vj + hd * k2v, wj + hd * k2w, cur, a, b, inv_tau)
            k4v, k4w = _fhn(vj + dt * k3v, wj + dt * k3w, cur, a, b, inv_tau)
            vn = vj + s6 * (k1v + 2.0 * k2v + 2.0 * k3v + k4v)
            v[j] = vn
            w[j] = wj + s6 * (k1w + 2.0 * k2w + 2.0 * k3w + k4w)
            if vj <= v_spike:
                armed[j] = True
            if armed[j] and vn > v_spike:
                spikes[k, j] = True
                armed[j] = False
            if rec:
                v_out[k, j] = vn


class FitzHughNagumo:
    """FitzHugh-Nagumo relaxation oscillator.

    ``dv/dt = v - v^3/3 - w + I``, ``tau dw/dt = v + a - b w``.

    Notes
    -----
    FitzHugh, Biophys. J. 1:445 (1961); Nagumo, Arimoto & Yoshizawa (1962);
    Gerstner et al., *Neuronal Dynamics* (2014), ch. 4.

    Integrator: classical fourth-order Runge-Kutta, input held over the step;
    ``dt_ms <= 0.1`` (the period is then within 1e-6 of the exact one).
    """

    Params = FHNParams
    State = FHNState

    @staticmethod
    def init_state(params: FHNParams, n: int, v: float | np.ndarray = -1.2, w: float | np.ndarray = -0.625) -> FHNState:
        """Defaults are near the resting point for ``I = 0``."""
        check_n(n)
        return FHNState(v=filled(n, v, "v"), w=filled(n, w, "w"), armed=np.ones(n, dtype=np.bool_))

    @staticmethod
    def step(state: FHNState, params: FHNParams, i_ext, dt_ms: float, n_steps: int | None = None, *,
             v_out: np.ndarray | None = None) -> np.ndarray:
        """Advance the state; return the raster of upward crossings of ``v_spike`` ``(n_steps, n)``."""
        nc = state.v.shape[0]
        bind_dt(state, dt_ms)
        i = as_input(i_ext, nc, n_steps)
        T = n_rows(i, n_steps)
        spikes, vo = out_arrays(T, nc, v_out)
        p = params
        fhn_kernel(state.v, state.w, state.armed, i, p.a, p.b, p.tau, p.v_spike, float(dt_ms), spikes, vo)
        if not np.all(np.isfinite(state.v)):
            raise DivergenceError(f"FitzHugh-Nagumo integration diverged: dt_ms={dt_ms} is too large for RK4 (use <= 0.1)")
        state.step += T
        return spikes

    @classmethod
    def warmup(cls) -> None:
        p = FHNParams()
        cls.step(cls.init_state(p, 2), p, 0.5, 0.1, 3)
        cls.step(cls.init_state(p, 2), p, np.full((3, 2), 0.5), 0.1, v_out=np.empty((3, 2)))

