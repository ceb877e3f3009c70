"""Rate-model motifs (rtneuro.analysis.motifs) against their analytic steady states and the WTA selection condition."""

from __future__ import annotations

import numpy as np
import pytest

from rtneuro.analysis.motifs import (
    feedforward,
    recurrent,
    recurrent_steady_state,
    winner_take_all,
    wta_condition,
)
from rtneuro.errors import ConfigError


def test_a_feedforward_layer_relaxes_to_f_of_its_weighted_input_with_its_time_constant():
    rng = np.random.default_rng(0)
    w, x = rng.standard_normal((5, 8)), rng.standard_normal(8)
    out = feedforward(w, x, tau=10.0, dt=0.1, t=200.0)
    np.testing.assert_allclose(out["rates"][-1], np.maximum(w @ x, 0), atol=1e-8)
    # one time constant in: 1 - 1/e of the way (exponential Euler is exact for a held input)
    np.testing.assert_allclose(out["rates"][100], np.maximum(w @ x, 0) * (1 - np.exp(-1)), atol=1e-12)
    sig = feedforward(w, x, f="sigmoid", gain=2.0, theta=0.5, r_max=30.0, t=200.0)
    np.testing.assert_allclose(sig["rates"][-1], 30 / (1 + np.exp(-2 * (w @ x - 0.5))), atol=1e-7)


def test_a_recurrent_network_amplifies_along_its_eigenvectors_and_is_deterministic_in_pieces():
    e = np.ones(4) / 2.0  # unit vector
    lam = 0.8
    m = lam * np.outer(e, e)
    out = recurrent(m, e, tau=10.0, t=1000.0)
    np.testing.assert_allclose(out["steady"], e / (1 - lam), rtol=1e-12)  # selective amplification: 1 / (1 - lambda)
    np.testing.assert_allclose(out["rates"][-1], out["steady"], atol=1e-8)
    orth = np.array([0.5, -0.5, 0.5, -0.5])
    np.testing.assert_allclose(recurrent_steady_state(m, orth), orth, atol=1e-12)  # eigenvalue 0: not amplified
    first = recurrent(m, e, t=300.0)
    rest = recurrent(m, e, t=700.0, r0=first["rates"][-1])
    np.testing.assert_array_equal(rest["rates"][-1], out["rates"][-1])  # a run split in two is the same run
    with pytest.raises(ConfigError, match=">= 1"):
        recurrent_steady_state(1.2 * np.outer(e, e), e)


@pytest.mark.parametrize("include_self", [False, True])
def test_winner_take_all_selects_exactly_when_its_analytic_condition_holds(include_self):
    rng = np.random.default_rng(1 + include_self)
    for case in range(24):
        n = int(rng.integers(2, 6))
        alpha = float(rng.uniform(0.1, 0.9))
        top = float(rng.uniform(1.0, 2.0))
        r_w = top / (1 + alpha) if include_self else top
        want = case % 2 == 0  # alternately on each side of the condition, at least 0.05 from its boundary
        others = rng.uniform(0.05, alpha * r_w - 0.05, n - 1) if want else rng.uniform(alpha * r_w + 0.05, top - 0.01, n - 1)
        inputs = rng.permutation(np.append(others, top))
        w = int(np.argmax(inputs))
        cond = wta_condition(inputs, alpha, include_self=include_self)
        assert cond == want
        out = winner_take_all(inputs, alpha, include_self=include_self, dt=0.5, t=3000.0)
        assert out["condition"] == cond and (out["winner"] == w) == cond, (inputs, alpha, out["final"])
        if cond:
            assert out["final"][w] == pytest.approx(r_w, rel=1e-6)
        else:
            assert len(out["active"]) >= 2


def test_strong_inhibition_keeps_the_first_winner():
    # alpha > 1: the winner-only states are all stable; the one reached depends on the start (hysteresis)
    inputs = np.array([1.0, 0.9])
    assert winner_take_all(inputs, 1.5)["winner"] == 0
    assert winner_take_all(inputs, 1.5, r0=[0.0, 0.9])["winner"] == 1
    with pytest.raises(ConfigError, match="alpha"):
        winner_take_all(inputs, -0.1)
