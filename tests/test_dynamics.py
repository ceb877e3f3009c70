"""Dynamical systems (rtneuro.analysis.dynamics) against analytic results, nolds and known constants."""

from __future__ import annotations

import math

import nolds
import numpy as np
import pytest

from rtneuro.analysis.dynamics import (
    MODELS,
    System,
    classify,
    continuation,
    fixed_points,
    jacobian,
    limit_cycle,
    lyapunov_flow,
    lyapunov_map,
    lyapunov_rosenstein,
    nullclines,
)
from rtneuro.errors import ConfigError

VDP = System("van_der_pol", lambda x, p: np.array([x[1], p["mu"] * (1 - x[0] ** 2) * x[1] - x[0]]), {"mu": 1.0})
LORENZ = System("lorenz", lambda x, p: np.array([p["s"] * (x[1] - x[0]), x[0] * (p["r"] - x[2]) - x[1], x[0] * x[1] - p["b"] * x[2]]),
                {"s": 10.0, "r": 28.0, "b": 8.0 / 3.0},
                lambda x, p: np.array([[-p["s"], p["s"], 0.0], [p["r"] - x[2], -1.0, -x[0]], [x[1], x[0], -p["b"]]]),
                variables=("x", "y", "z"))


def _fhn_hopf(a: float = 0.7, b: float = 0.8, tau: float = 12.5) -> tuple[float, float, float]:
    """FitzHugh-Nagumo's Hopf point: trace J = 1 - v^2 - b/tau = 0 on the branch v - v^3/3 - (v + a)/b + I = 0."""
    v = -math.sqrt(1 - b / tau)
    current = -(v - v ** 3 / 3) + (v + a) / b
    omega = math.sqrt((1 - b * (1 - v * v)) / tau)  # sqrt(det J) at trace 0
    return current, v, omega


def test_classification_follows_trace_and_determinant():
    assert classify([[-1, 0], [0, -2]]) == "stable node"
    assert classify([[1, 0], [0, 2]]) == "unstable node"
    assert classify([[1, 0], [0, -2]]) == "saddle"
    assert classify([[-0.1, -1], [1, -0.1]]) == "stable focus"
    assert classify([[0.1, -1], [1, 0.1]]) == "unstable focus"
    assert classify([[0, -1], [1, 0]]) == "center"
    assert classify([[0, 1], [0, -1]]) == "degenerate"


def test_fitzhugh_nagumo_equilibria_on_both_sides_of_its_hopf_point():
    i_h, _, _ = _fhn_hopf()
    below = fixed_points("fitzhugh_nagumo", [(-3, 3), (-3, 3)], {"I": i_h - 0.05})
    above = fixed_points("fitzhugh_nagumo", [(-3, 3), (-3, 3)], {"I": i_h + 0.05})
    assert len(below) == len(above) == 1  # one equilibrium for these a, b
    assert below[0].kind == "stable focus" and above[0].kind == "unstable focus"
    p = {**MODELS["fitzhugh_nagumo"].params, "I": 0.5}
    x = above[0].x
    assert np.abs(MODELS["fitzhugh_nagumo"].f(fixed_points("fitzhugh_nagumo", [(-3, 3), (-3, 3)])[0].x, p)).max() < 1e-10
    # the closed-form Jacobian equals central differences
    no_jac = System("fhn_fd", MODELS["fitzhugh_nagumo"].f, MODELS["fitzhugh_nagumo"].params)
    np.testing.assert_allclose(jacobian(no_jac, x), jacobian("fitzhugh_nagumo", x), atol=1e-8)


def test_nullclines_of_fitzhugh_nagumo_are_its_cubic_and_its_line():
    nc = nullclines("fitzhugh_nagumo", [(-2.5, 2.5), (-2, 3)], n=60)
    v, w = nc["x_nullcline"].T
    np.testing.assert_allclose(w, v - v ** 3 / 3 + 0.5, atol=1e-10)  # dv/dt = 0: w = v - v^3/3 + I
    v, w = nc["y_nullcline"].T
    np.testing.assert_allclose(w, (v + 0.7) / 0.8, atol=1e-10)  # dw/dt = 0: w = (v + a)/b
    assert len(nc["x_nullcline"]) >= 40 and len(nc["y_nullcline"]) >= 40


def test_limit_cycles_have_their_known_periods():
    vdp = limit_cycle(VDP, [1.0, 0.0], t_settle=100.0, t_max=300.0)
    assert vdp["period"] == pytest.approx(6.663286859323130, abs=1e-6)  # van der Pol, mu = 1
    assert vdp["amplitude"][0] == pytest.approx(2 * 2.00861986, abs=1e-4)
    fhn = limit_cycle("fitzhugh_nagumo", [0.0, 0.0], t_settle=300.0, t_max=800.0)  # I = 0.5: past the Hopf point, a relaxation oscillation
    assert fhn["period"] is not None and 30 < fhn["period"] < 50 and fhn["period_spread"] < 1e-6
    assert limit_cycle("fitzhugh_nagumo", [0.0, 0.0], {"I": 0.0}, t_settle=300.0, t_max=500.0)["period"] is None  # a stable equilibrium


def test_continuation_finds_fitzhugh_nagumos_hopf_point_and_a_fold_at_their_closed_forms():
    i_h, v_h, omega = _fhn_hopf()
    c = continuation("fitzhugh_nagumo", "I", [-1.2, -0.6], 0.0, 0.6, step=0.01)
    (hopf,) = [b for b in c["bifurcations"] if b["kind"] == "hopf"]
    assert hopf["p"] == pytest.approx(i_h, abs=1e-9) and hopf["x"][0] == pytest.approx(v_h, abs=1e-8)
    assert hopf["frequency"] == pytest.approx(omega, abs=1e-8)
    assert c["stable"][0] and not c["stable"][-1]
    # x' = r - x^2: the two equilibria +-sqrt(r) meet at r = 0; the branch turns there and comes back
    fold = System("fold", lambda x, p: np.array([p["r"] - x[0] ** 2, -x[1]]), {"r": 1.0})
    c = continuation(fold, "r", [1.0, 0.0], 1.0, -1.0, step=0.02)
    (f,) = c["bifurcations"]
    assert f["kind"] == "fold" and abs(f["p"]) < 1e-9 and abs(f["x"][0]) < 1e-6
    assert c["branch"][0, 1] == pytest.approx(1.0) and c["branch"][-1, 1] < -0.9  # both halves of the branch
    assert c["stable"][0] and not c["stable"][-1]
    with pytest.raises(ConfigError, match="no parameter 'q'"):
        continuation("fitzhugh_nagumo", "q", [0, 0], 0, 1)


def test_largest_lyapunov_exponents_of_the_lorenz_flow_and_the_logistic_map():
    assert lyapunov_flow(LORENZ, [1.0, 1.0, 1.0], t_total=200.0) == pytest.approx(0.9056, abs=0.03)
    assert lyapunov_flow(VDP, [1.0, 0.0], t_total=100.0) == pytest.approx(0.0, abs=0.03)  # a limit cycle
    assert lyapunov_map(lambda x: 4 * x * (1 - x), lambda x: 4 - 8 * x, 0.3) == pytest.approx(math.log(2), abs=0.01)


def test_rosenstein_on_a_recorded_series_equals_nolds_and_the_known_exponent():
    x = np.empty(2000)
    x[0] = 0.3
    for i in range(1, 2000):
        x[i] = 4 * x[i - 1] * (1 - x[i - 1])
    mine = lyapunov_rosenstein(x, emb_dim=1, trajectory_len=6, min_tsep=10, fit_range=(0, 6))
    ref = nolds.lyap_r(x, emb_dim=1, lag=1, min_tsep=10, trajectory_len=6, fit="poly")
    assert mine["lyapunov"] == pytest.approx(ref, abs=0.01)
    assert mine["lyapunov"] == pytest.approx(math.log(2), abs=0.02)
    _, (_, div, _) = nolds.lyap_r(x, emb_dim=1, lag=1, min_tsep=10, trajectory_len=6, fit="poly", debug_data=True)
    np.testing.assert_allclose(mine["divergence"], div, atol=2e-3)
    with pytest.raises(ConfigError, match="too few"):
        lyapunov_rosenstein(x[:20], emb_dim=5, trajectory_len=20)
