"""Network motifs as firing-rate models: feed-forward, recurrent and winner-take-all.

``tau dr/dt = -r + f(input)`` with a rate function ``f`` (Dayan & Abbott,
*Theoretical Neuroscience*, sec. 7.2-7.5): ``linear``, ``relu`` (threshold
linear, ``[x]_+``) or ``sigmoid`` (``r_max / (1 + exp(-gain (x - theta)))``).
Integration is the exponential Euler step ``r <- f(u) + (r - f(u)) e^{-dt/tau}``
(exact for an input held over the step), deterministic and independent of
how a run is split into calls.

- feed-forward: ``u = W x`` (steady state ``f(W x)``);
- recurrent: ``u = h + M r`` (linear: steady state ``(I - M)^{-1} h`` when the
  eigenvalues of ``M`` have real parts below 1; an eigenvector of
  eigenvalue ``lambda`` is amplified by ``1 / (1 - lambda)``: selective
  amplification, sec. 7.4);
- winner-take-all: ``u_i = I_i - alpha sum_{j != i} r_j`` (the notes' form,
  with ``include_self`` also ``j = i``). With threshold-linear units the state
  in which only the unit of the largest input ``I_w`` is active (``r_w = I_w``,
  or ``I_w / (1 + alpha)`` with self-inhibition) exists exactly when every
  other input satisfies ``I_j <= alpha r_w`` (:func:`wta_condition`); for
  ``alpha < 1`` it is then the only stable state, so the network selects.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["rate_function", "simulate", "feedforward", "recurrent", "winner_take_all", "wta_condition",
           "recurrent_steady_state"]


def rate_function(kind: str = "relu", *, gain: float = 1.0, theta: float = 0.0, r_max: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    """``linear``, ``relu`` (``[x]_+``) or ``sigmoid`` (``r_max / (1 + exp(-gain (x - theta)))``)."""
    if kind == "linear":
        return lambda x: np.asarray(x, dtype=float)
    if kind == "relu":
        return lambda x: np.maximum(np.asarray(x, dtype=float), 0.0)
    if kind == "sigmoid":
        return lambda x: r_max / (1.0 + np.exp(-gain * (np.asarray(x, dtype=float) - theta)))
    raise ConfigError(f"rate function {kind!r}: use linear, relu or sigmoid")


def simulate(drive: Callable[[np.ndarray, int], np.ndarray], r0: Any, *, tau: float, dt: float, n_steps: int,
             f: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``tau dr/dt = -r + f(drive(r, k))`` by exponential Euler; returns the trajectory (n_steps + 1, n)."""
    if not tau > 0 or not dt > 0:
        raise ConfigError("tau and dt must be > 0")
    decay = math.exp(-dt / tau)
    r = np.array(r0, dtype=float, copy=True).ravel()
    out = np.empty((n_steps + 1, r.size))
    out[0] = r
    for k in range(n_steps):
        target = f(drive(r, k))
        r = target + (r - target) * decay
        if not np.isfinite(r).all():
            raise ConfigError(f"the rates diverged at step {k + 1} (an unstable recurrent network with a linear f?)")
        out[k + 1] = r
    return out


def feedforward(W: Any, x: Any, *, tau: float = 10.0, dt: float = 0.1, t: float = 100.0, f: str = "relu",
                r0: Any = None, **fkw: Any) -> dict[str, np.ndarray]:
    """A feed-forward layer ``tau dr/dt = -r + f(W x(t))``; ``x`` is one input vector (held) or a time course
    (n_steps x inputs). Returns ``rates`` (the trajectory) and ``steady`` (``f(W x)`` of the last input)."""
    w = np.atleast_2d(np.asarray(W, dtype=float))
    xs = np.asarray(x, dtype=float)
    n_steps = int(round(t / dt))
    fn = rate_function(f, **fkw)
    if xs.ndim == 1:
        drive = lambda r, k: w @ xs  # noqa: E731
        last = xs
    else:
        if xs.shape[0] < n_steps:
            raise ConfigError(f"the input time course has {xs.shape[0]} steps, the run {n_steps}")
        drive = lambda r, k: w @ xs[k]  # noqa: E731
        last = xs[n_steps - 1]
    traj = simulate(drive, np.zeros(w.shape[0]) if r0 is None else r0, tau=tau, dt=dt, n_steps=n_steps, f=fn)
    return {"rates": traj, "steady": fn(w @ last)}


def recurrent_steady_state(M: Any, h: Any) -> np.ndarray:
    """The fixed point ``(I - M)^{-1} h`` of a linear recurrent network (a ConfigError when it is unstable)."""
    m = np.asarray(M, dtype=float)
    ev = np.linalg.eigvals(m)
    if np.any(ev.real >= 1.0):
        raise ConfigError(f"the recurrent weights have an eigenvalue with real part {ev.real.max():.3g} >= 1: no stable state")
    return np.linalg.solve(np.eye(m.shape[0]) - m, np.asarray(h, dtype=float))


def recurrent(M: Any, h: Any, *, tau: float = 10.0, dt: float = 0.1, t: float = 500.0, f: str = "linear",
              r0: Any = None, **fkw: Any) -> dict[str, np.ndarray]:
    """A recurrent network ``tau dr/dt = -r + f(h + M r)`` with constant input ``h``. Returns ``rates``
    and, for a linear ``f``, the analytic ``steady`` state."""
    m = np.asarray(M, dtype=float)
    hv = np.asarray(h, dtype=float)
    fn = rate_function(f, **fkw)
    traj = simulate(lambda r, k: hv + m @ r, np.zeros(m.shape[0]) if r0 is None else r0, tau=tau, dt=dt,
                    n_steps=int(round(t / dt)), f=fn)
    out = {"rates": traj}
    if f == "linear":
        out["steady"] = recurrent_steady_state(m, hv)
    return out


def wta_condition(inputs: Any, alpha: float, *, include_self: bool = False) -> bool:
    """Whether the winner-only state exists for threshold-linear units: ``I_j <= alpha r_w`` for every ``j``
    but the largest input's ``w`` (``r_w = I_w``, or ``I_w / (1 + alpha)`` with self-inhibition)."""
    i = np.asarray(inputs, dtype=float)
    w = int(np.argmax(i))
    r_w = i[w] / (1.0 + alpha) if include_self else i[w]
    return bool(np.all(np.delete(i, w) <= alpha * r_w))


def winner_take_all(inputs: Any, alpha: float, *, tau: float = 10.0, dt: float = 0.1, t: float = 1000.0,
                    f: str = "relu", include_self: bool = False, r0: Any = None, active_tol: float = 1e-6,
                    **fkw: Any) -> dict[str, Any]:
    """``tau dr_i/dt = -r_i + f(I_i - alpha sum_{j != i} r_j)`` (the notes' winner-take-all; with
    ``include_self`` the sum includes ``i``). Returns ``rates`` (trajectory), ``final``, the ``active`` units
    (rate above ``active_tol``), ``winner`` (the one active unit, or None) and ``condition``
    (:func:`wta_condition`, for threshold-linear units)."""
    i = np.asarray(inputs, dtype=float)
    if alpha < 0:
        raise ConfigError("alpha (the lateral inhibition) must be >= 0")
    fn = rate_function(f, **fkw)

    def drive(r: np.ndarray, k: int) -> np.ndarray:
        total = r.sum()
        return i - alpha * (total if include_self else total - r)

    traj = simulate(drive, np.zeros(i.size) if r0 is None else r0, tau=tau, dt=dt, n_steps=int(round(t / dt)), f=fn)
    final = traj[-1]
    active = np.nonzero(final > active_tol)[0]
    return {"rates": traj, "final": final, "active": active, "winner": int(active[0]) if active.size == 1 else None,
            "condition": wta_condition(i, alpha, include_self=include_self)}
