"""Dynamical systems: phase planes, equilibria and their stability, continuation with bifurcations, Lyapunov exponents.

A system is a vector field ``f(x, p) -> dx/dt`` on ``numpy`` arrays (``p`` a
dict of parameters), with an optional Jacobian ``jac(x, p)``; without one,
central differences are used. Built-in planar models: FitzHugh-Nagumo,
the Izhikevich model's continuous part, Wilson-Cowan (:data:`MODELS`).

References: Strogatz, *Nonlinear Dynamics and Chaos* (2015), ch. 5-8
(classification by trace and determinant, limit cycles, bifurcations);
Izhikevich, *Dynamical Systems in Neuroscience* (2007), ch. 4-6; Kuznetsov,
*Elements of Applied Bifurcation Theory* (2004), ch. 10 (pseudo-arclength
continuation, test functions for fold and Hopf points); Benettin et al.
(1980, Meccanica 15:9) for the largest Lyapunov exponent of a flow from its
tangent dynamics; Rosenstein, Collins & De Luca (1993, Physica D 65:117)
for that of a recorded series.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["MODELS", "System", "jacobian", "classify", "fixed_points", "nullclines", "limit_cycle", "continuation",
           "lyapunov_flow", "lyapunov_map", "lyapunov_rosenstein", "FixedPoint"]

Field = Callable[[np.ndarray, dict], np.ndarray]


@dataclass(frozen=True)
class System:
    """A vector field with its default parameters (and Jacobian, when known in closed form)."""

    name: str
    f: Field
    params: dict
    jac: Callable[[np.ndarray, dict], np.ndarray] | None = None
    variables: tuple[str, ...] = ("x", "y")


def _fhn(x: np.ndarray, p: dict) -> np.ndarray:
    v, w = x[0], x[1]
    return np.array([v - v ** 3 / 3.0 - w + p["I"], (v + p["a"] - p["b"] * w) / p["tau"]])


def _fhn_jac(x: np.ndarray, p: dict) -> np.ndarray:
    return np.array([[1.0 - x[0] ** 2, -1.0], [1.0 / p["tau"], -p["b"] / p["tau"]]])


def _izh(x: np.ndarray, p: dict) -> np.ndarray:
    v, u = x[0], x[1]
    return np.array([0.04 * v * v + 5.0 * v + 140.0 - u + p["I"], p["a"] * (p["b"] * v - u)])


def _izh_jac(x: np.ndarray, p: dict) -> np.ndarray:
    return np.array([[0.08 * x[0] + 5.0, -1.0], [p["a"] * p["b"], -p["a"]]])


def _sig(x: Any, a: float, theta: float) -> Any:
    return 1.0 / (1.0 + np.exp(-a * (x - theta))) - 1.0 / (1.0 + math.exp(a * theta))


def _wc(x: np.ndarray, p: dict) -> np.ndarray:
    e, i = x[0], x[1]
    se = _sig(p["wee"] * e - p["wei"] * i + p["P"], p["ae"], p["te"])
    si = _sig(p["wie"] * e - p["wii"] * i + p["Q"], p["ai"], p["ti"])
    return np.array([(-e + (1.0 - p["r"] * e) * se) / p["tau_e"], (-i + (1.0 - p["r"] * i) * si) / p["tau_i"]])


#: planar models: FitzHugh-Nagumo (Izhikevich 2007, sec. 4.2.4), the Izhikevich model's subthreshold part
#: (Izhikevich 2003; no reset, so a phase plane of its continuous flow), Wilson-Cowan (Wilson & Cowan 1972,
#: the limit-cycle parameters of their fig. 8 as in Dayan & Abbott sec. 7.5)
MODELS: dict[str, System] = {
    "fitzhugh_nagumo": System("fitzhugh_nagumo", _fhn, {"a": 0.7, "b": 0.8, "tau": 12.5, "I": 0.5}, _fhn_jac, ("v", "w")),
    "izhikevich": System("izhikevich", _izh, {"a": 0.02, "b": 0.2, "I": 0.0}, _izh_jac, ("v", "u")),
    "wilson_cowan": System("wilson_cowan", _wc, {"wee": 16.0, "wei": 12.0, "wie": 15.0, "wii": 3.0, "P": 1.25, "Q": 0.0,
                                                 "ae": 1.3, "te": 4.0, "ai": 2.0, "ti": 3.7, "r": 1.0, "tau_e": 1.0,
                                                 "tau_i": 1.0}, None, ("E", "I")),
}


def _system(system: System | str) -> System:
    if isinstance(system, System):
        return system
    if system not in MODELS:
        raise ConfigError(f"unknown model {system!r}; built in: {', '.join(MODELS)} (or give a System)")
    return MODELS[system]


def jacobian(system: System | str, x: Any, params: dict | None = None, h: float = 1e-6) -> np.ndarray:
    """The Jacobian at ``x``: the system's own, else central differences with relative step ``h``."""
    s = _system(system)
    p = {**s.params, **(params or {})}
    x = np.asarray(x, dtype=float)
    if s.jac is not None:
        return np.asarray(s.jac(x, p), dtype=float)
    n = x.size
    out = np.empty((n, n))
    for j in range(n):
        d = h * max(1.0, abs(x[j]))
        e = np.zeros(n)
        e[j] = d
        out[:, j] = (s.f(x + e, p) - s.f(x - e, p)) / (2 * d)
    return out


def classify(jac: np.ndarray, tol: float = 1e-9) -> str:
    """The kind of an equilibrium from its Jacobian's eigenvalues (Strogatz sec. 5.2 and 6.3).

    Planar: ``saddle``, ``stable node``, ``unstable node``, ``stable focus``, ``unstable focus``,
    ``center`` (purely imaginary), ``degenerate`` (a zero eigenvalue). Higher dimensions: ``stable``,
    ``unstable`` or ``saddle`` (with ``focus`` when complex eigenvalues lead).
    """
    ev = np.linalg.eigvals(np.asarray(jac, dtype=float))
    re = ev.real
    if np.any(np.abs(ev) < tol):
        return "degenerate"
    if np.any(re > tol) and np.any(re < -tol):
        return "saddle"
    complex_ = np.any(np.abs(ev.imag) > tol)
    if np.all(np.abs(re) <= tol):
        return "center"
    kind = "focus" if complex_ else "node"
    return f"{'stable' if np.all(re < 0) else 'unstable'} {kind}"


@dataclass(frozen=True)
class FixedPoint:
    x: np.ndarray
    eigenvalues: np.ndarray
    kind: str


def fixed_points(system: System | str, bounds: list[tuple[float, float]], params: dict | None = None,
                 seeds_per_dim: int = 12, tol: float = 1e-10) -> list[FixedPoint]:
    """Equilibria inside ``bounds`` (one ``(low, high)`` per variable): Newton's method (``scipy.optimize.root``,
    hybrid Powell) from a grid of seeds, the distinct converged roots, each with its eigenvalues and kind."""
    from scipy.optimize import root

    s = _system(system)
    p = {**s.params, **(params or {})}
    axes = [np.linspace(lo, hi, seeds_per_dim) for lo, hi in bounds]
    found: list[np.ndarray] = []
    scale = np.array([hi - lo for lo, hi in bounds], dtype=float)
    for seed in np.array(np.meshgrid(*axes, indexing="ij")).reshape(len(bounds), -1).T:
        sol = root(lambda x: s.f(x, p), seed, jac=(lambda x: jacobian(s, x, p)), tol=tol)
        x = sol.x
        if not sol.success or np.max(np.abs(s.f(x, p))) > 1e-8:
            continue
        if any(not lo - 1e-9 <= v <= hi + 1e-9 for v, (lo, hi) in zip(x, bounds, strict=True)):
            continue
        if all(np.max(np.abs(x - y) / scale) > 1e-6 for y in found):
            found.append(x)
    out = []
    for x in sorted(found, key=lambda v: tuple(v)):
        j = jacobian(s, x, p)
        out.append(FixedPoint(x, np.linalg.eigvals(j), classify(j)))
    return out


def nullclines(system: System | str, bounds: list[tuple[float, float]], params: dict | None = None,
               n: int = 400) -> dict[str, np.ndarray]:
    """Points of the two nullclines of a planar system: for each of ``n`` values of the first variable, every
    value of the second where ``dx/dt = 0`` (``x_nullcline``) or ``dy/dt = 0`` (``y_nullcline``), found by a sign
    change on a fine grid refined by Brent's method. Arrays of ``(x, y)`` rows."""
    from scipy.optimize import brentq

    s = _system(system)
    if len(bounds) != 2:
        raise ConfigError("nullclines are for planar systems: give two (low, high) bounds")
    p = {**s.params, **(params or {})}
    xs = np.linspace(*bounds[0], n)
    ys = np.linspace(*bounds[1], 4 * n)
    out: dict[str, list] = {"x_nullcline": [], "y_nullcline": []}
    for comp, key in ((0, "x_nullcline"), (1, "y_nullcline")):
        for xv in xs:
            vals = np.array([s.f(np.array([xv, yv]), p)[comp] for yv in ys])
            for k in np.nonzero(np.sign(vals[:-1]) * np.sign(vals[1:]) < 0)[0]:
                yv = brentq(lambda y, xv=xv, comp=comp: float(s.f(np.array([xv, y]), p)[comp]), ys[k], ys[k + 1], xtol=1e-12)
                out[key].append((xv, yv))
            out[key].extend((xv, ys[k]) for k in np.nonzero(vals == 0)[0])
    return {k: np.array(v).reshape(-1, 2) for k, v in out.items()}


def limit_cycle(system: System | str, x0: Any, params: dict | None = None, *, t_settle: float = 500.0,
                t_max: float = 2000.0, rtol: float = 1e-10) -> dict[str, Any]:
    """A stable limit cycle reached from ``x0``: integrate (``solve_ivp``, DOP853) for ``t_settle``, then time
    successive upward crossings of the first variable through its mean (a Poincare section). Returns
    ``period``, the ``amplitude`` (peak to peak) of each variable, and one ``orbit`` (times and states);
    ``period`` is None when the trajectory settles on an equilibrium."""
    from scipy.integrate import solve_ivp

    s = _system(system)
    p = {**s.params, **(params or {})}
    fun = lambda t, x: s.f(x, p)  # noqa: E731
    pre = solve_ivp(fun, (0.0, t_settle), np.asarray(x0, float), method="DOP853", rtol=rtol, atol=rtol * 1e-2)
    x1 = pre.y[:, -1]
    run = solve_ivp(fun, (0.0, t_max - t_settle), x1, method="DOP853", rtol=rtol, atol=rtol * 1e-2, dense_output=True,
                    max_step=(t_max - t_settle) / 2000)
    v = run.y[0]
    level = 0.5 * (v.max() + v.min())
    if v.max() - v.min() < 1e-6 * max(1.0, abs(level)):
        return {"period": None, "amplitude": None, "orbit": None}
    from scipy.optimize import brentq

    ups = []
    for k in np.nonzero((v[:-1] < level) & (v[1:] >= level))[0]:
        ta, tb = run.t[k], run.t[k + 1]
        ups.append(brentq(lambda t: float(run.sol(t)[0] - level), ta, tb, xtol=1e-13))
    if len(ups) < 3:
        return {"period": None, "amplitude": None, "orbit": None}
    periods = np.diff(ups)
    t = np.linspace(ups[-2], ups[-1], 1000)
    orbit = run.sol(t)
    return {"period": float(np.median(periods)), "period_spread": float(periods.max() - periods.min()),
            "amplitude": (orbit.max(axis=1) - orbit.min(axis=1)).tolist(), "orbit": (t - t[0], orbit.T)}


def continuation(system: System | str, param: str, x0: Any, p0: float, p1: float, params: dict | None = None, *,
                 step: float = 0.01, max_steps: int = 20_000) -> dict[str, Any]:
    """Equilibria along ``param`` from ``p0`` towards ``p1`` by pseudo-arclength continuation (Kuznetsov ch. 10):
    an Euler predictor along the tangent of ``f(x, p) = 0`` and a Newton corrector on the arclength
    condition, so the branch is followed around folds. Bifurcations are located by bisection on test
    functions between steps: a fold (saddle-node) where ``det J`` changes sign, a Hopf point where the sum
    of the complex pair's real parts changes sign (the trace, in the plane) with ``det J > 0``.

    Returns ``branch`` (rows ``(p, x...)``), ``stable`` (per row), and ``bifurcations``: dicts with
    ``kind`` (``fold`` or ``hopf``), ``p``, ``x`` and, for a Hopf point, its ``frequency`` (rad per unit time).
    """
    from scipy.optimize import root

    s = _system(system)
    base = {**s.params, **(params or {})}
    if param not in base:
        raise ConfigError(f"{s.name} has no parameter {param!r}; its parameters: {', '.join(base)}")

    def F(z: np.ndarray) -> np.ndarray:
        return np.asarray(s.f(z[:-1], {**base, param: z[-1]}), float)

    def J(z: np.ndarray) -> np.ndarray:  # d F / d (x, p)
        jx = jacobian(s, z[:-1], {**base, param: z[-1]})
        hp = 1e-7 * max(1.0, abs(z[-1]))
        fp = (F(np.append(z[:-1], z[-1] + hp)) - F(np.append(z[:-1], z[-1] - hp))) / (2 * hp)
        return np.column_stack([jx, fp])

    sol = root(lambda x: s.f(x, {**base, param: p0}), np.asarray(x0, float), tol=1e-12)
    if not sol.success:
        raise ConfigError(f"no equilibrium near x0={list(x0)} at {param}={p0}: {sol.message}")
    z = np.append(sol.x, p0)
    direction = 1.0 if p1 >= p0 else -1.0
    n = z.size

    def tangent(zz: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
        a = J(zz)
        _, _, vt = np.linalg.svd(a)
        t = vt[-1]
        if prev is None:
            t = t * (np.sign(t[-1]) * direction if t[-1] != 0 else 1.0)
        elif t @ prev < 0:
            t = -t
        return t / np.linalg.norm(t)

    def tests(zz: np.ndarray) -> tuple[float, float, np.ndarray]:
        jx = jacobian(s, zz[:-1], {**base, param: zz[-1]})
        ev = np.linalg.eigvals(jx)
        cpx = ev[np.abs(ev.imag) > 1e-9]
        hopf = float(np.sum(cpx.real)) if cpx.size else math.nan
        return float(np.linalg.det(jx)), hopf, ev

    branch = [z.copy()]
    stable = [bool(np.all(tests(z)[2].real < 0))]
    bifs: list[dict] = []
    t = tangent(z, None)
    det0, hopf0, _ = tests(z)
    lo, hi = min(p0, p1), max(p0, p1)
    for _ in range(max_steps):
        pred = z + step * t

        def G(zz: np.ndarray, pred: np.ndarray = pred, t: np.ndarray = t) -> np.ndarray:
            return np.append(F(zz), (zz - pred) @ t)

        corr = root(G, pred, jac=lambda zz, t=t: np.vstack([J(zz), t]), tol=1e-12)
        if np.max(np.abs(G(corr.x))) > 1e-9:
            raise ConfigError(f"continuation stopped at {param}={z[-1]:.6g}: the corrector did not converge; lower step")
        znew = corr.x
        tnew = tangent(znew, t)
        det1, hopf1, ev1 = tests(znew)
        if det0 * det1 < 0:
            bifs.append(_locate(lambda zz: tests(zz)[0], z, znew, F, "fold", tests))
        if not math.isnan(hopf0) and not math.isnan(hopf1) and hopf0 * hopf1 < 0 and det1 > 0:
            bifs.append(_locate(lambda zz: tests(zz)[1], z, znew, F, "hopf", tests))
        z, t, det0, hopf0 = znew, tnew, det1, hopf1
        branch.append(z.copy())
        stable.append(bool(np.all(ev1.real < 0)))
        if not lo - 1e-12 <= z[-1] <= hi + 1e-12:
            break
    arr = np.array(branch)
    keep = (arr[:, -1] >= lo - 1e-12) & (arr[:, -1] <= hi + 1e-12)
    arr = arr[:, [n - 1, *range(n - 1)]]
    return {"branch": arr[keep], "stable": np.array(stable)[keep], "bifurcations": bifs, "param": param}


def _locate(test: Callable[[np.ndarray], float], za: np.ndarray, zb: np.ndarray, F: Callable, kind: str,
            tests: Callable) -> dict:
    """Bisection on a test function between two branch points (each midpoint corrected back onto the branch)."""
    from scipy.optimize import root

    ta = test(za)
    for _ in range(60):
        zm = 0.5 * (za + zb)
        d = zb - za
        sol = root(lambda zz, zm=zm, d=d: np.append(F(zz), (zz - zm) @ d), zm, tol=1e-13)
        zm = sol.x
        tm = test(zm)
        if ta * tm <= 0:
            zb = zm
        else:
            za, ta = zm, tm
        if np.linalg.norm(zb - za) < 1e-12:
            break
    z = 0.5 * (za + zb)
    out = {"kind": kind, "p": float(z[-1]), "x": z[:-1].tolist()}
    if kind == "hopf":
        ev = tests(z)[2]
        out["frequency"] = float(np.max(np.abs(ev.imag)))
    return out


def lyapunov_flow(system: System | str, x0: Any, params: dict | None = None, *, dt: float = 0.01,
                  t_total: float = 1000.0, t_transient: float = 50.0, renorm_every: int = 10) -> float:
    """Largest Lyapunov exponent of a flow (Benettin et al. 1980): the state and one tangent vector
    ``dv/dt = J(x) v`` integrated together (classical Runge-Kutta, step ``dt``), the vector renormalised every
    ``renorm_every`` steps; the exponent is the mean log growth per unit time after ``t_transient``."""
    s = _system(system)
    p = {**s.params, **(params or {})}
    x = np.asarray(x0, float).copy()
    n = x.size
    v = np.ones(n) / math.sqrt(n)

    def rhs(z: np.ndarray) -> np.ndarray:
        xx, vv = z[:n], z[n:]
        return np.concatenate([s.f(xx, p), jacobian(s, xx, p) @ vv])

    z = np.concatenate([x, v])
    steps_transient = int(round(t_transient / dt))
    steps = int(round(t_total / dt))
    total = 0.0
    for k in range(steps_transient + steps):
        k1 = rhs(z)
        k2 = rhs(z + 0.5 * dt * k1)
        k3 = rhs(z + 0.5 * dt * k2)
        k4 = rhs(z + dt * k3)
        z = z + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        if (k + 1) % renorm_every == 0:
            norm = float(np.linalg.norm(z[n:]))
            if k >= steps_transient:
                total += math.log(norm)
            z[n:] /= norm
    return total / (steps * dt)


def lyapunov_map(f: Callable[[float], float], df: Callable[[float], float], x0: float, *, n: int = 100_000,
                 transient: int = 1000) -> float:
    """Lyapunov exponent of a 1-D map ``x -> f(x)``: the mean of ``ln |f'(x_k)|`` along an orbit."""
    x = float(x0)
    for _ in range(transient):
        x = f(x)
    total = 0.0
    for _ in range(n):
        total += math.log(abs(df(x)))
        x = f(x)
    return total / n


def lyapunov_rosenstein(x: Any, *, emb_dim: int = 10, lag: int = 1, min_tsep: int | None = None,
                        trajectory_len: int = 20, fit_range: tuple[int, int] | None = None, dt: float = 1.0) -> dict:
    """Largest Lyapunov exponent of a recorded series (Rosenstein, Collins & De Luca 1993).

    Delay-embed (``emb_dim`` coordinates ``lag`` samples apart), pair each point with its nearest neighbour
    (Euclidean) at least ``min_tsep`` samples away in time (default: the mean period, from the power
    spectrum's mean frequency), follow each pair for ``trajectory_len`` steps, average the log distances,
    and fit a line over ``fit_range`` (default: all steps). Returns ``lyapunov`` (per unit of ``dt``),
    the ``divergence`` curve and the fit's range.
    """
    a = np.asarray(x, dtype=float).ravel()
    if not np.isfinite(a).all():
        raise ConfigError("the series holds NaN or infinite values")
    n_vec = a.size - (emb_dim - 1) * lag
    if n_vec < trajectory_len + 2 * (min_tsep or 1) + 2:
        raise ConfigError(f"{a.size} samples are too few for emb_dim={emb_dim}, lag={lag}, trajectory_len={trajectory_len}")
    if min_tsep is None:
        spec = np.abs(np.fft.rfft(a - a.mean())) ** 2
        freqs = np.fft.rfftfreq(a.size)
        mf = float(np.sum(freqs[1:] * spec[1:]) / np.sum(spec[1:]))
        min_tsep = int(math.ceil(1.0 / mf)) if mf > 0 else 1
    emb = np.stack([a[i * lag: i * lag + n_vec] for i in range(emb_dim)], axis=1)
    from scipy.spatial.distance import cdist

    usable = n_vec - trajectory_len + 1  # points that can be followed for trajectory_len - 1 steps
    d2 = cdist(emb[:usable], emb[:usable])
    idx = np.arange(usable)
    d2[np.abs(idx[:, None] - idx[None, :]) <= min_tsep] = np.inf
    nn = np.argmin(d2, axis=1)
    ok = np.isfinite(d2[idx, nn])
    div = np.empty(trajectory_len)
    for k in range(trajectory_len):
        d = np.linalg.norm(emb[idx[ok] + k] - emb[nn[ok] + k], axis=1)
        d = d[d > 0]
        div[k] = np.mean(np.log(d)) if d.size else -np.inf
    lo, hi = fit_range or (0, trajectory_len)
    steps = np.arange(trajectory_len)
    good = np.isfinite(div[lo:hi])
    slope = float(np.polyfit(steps[lo:hi][good], div[lo:hi][good], 1)[0])
    return {"lyapunov": slope / dt, "divergence": div, "fit_range": (lo, hi), "min_tsep": min_tsep}
