"""The notes' simulators (rtneuro.analysis.simulators) against the model kernels they wrap and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rtneuro.analysis.simulators import NeuralDynamics, SynapticPlasticity
from rtneuro.errors import ConfigError
from rtneuro.models import (
    STDP,
    Connectivity,
    Izhikevich,
    IzhikevichParams,
    STDPParams,
    TsodyksMarkram,
    TsodyksMarkramParams,
)


def test_dynamics_equal_the_model_kernel_and_a_run_in_pieces_is_the_same_run():
    rng = np.random.default_rng(0)
    cur = 8.0 + 4.0 * rng.standard_normal((3000, 2))
    sim = NeuralDynamics("izhikevich", {"a": 0.02, "b": 0.2, "c": -50.0, "d": 2.0}, n=2)
    whole = sim.simulate_dynamics({"voltage": -70.0}, {"current": cur}, time_span_ms=300.0, dt_ms=0.1)
    p = IzhikevichParams(a=0.02, b=0.2, c=-50.0, d=2.0)
    st = Izhikevich.init_state(p, 2, -70.0)
    v = np.empty((3000, 2))
    spikes = Izhikevich.step(st, p, cur, 0.1, v_out=v)
    np.testing.assert_array_equal(whole["V"], v)
    np.testing.assert_array_equal(whole["spikes"], spikes)
    np.testing.assert_array_equal(whole["recovery"][-1], st.u)
    assert whole["spikes"].sum() > 10 and whole["t"][-1] == pytest.approx(300.0)
    piece = NeuralDynamics("izhikevich", {"a": 0.02, "b": 0.2, "c": -50.0, "d": 2.0}, n=2)
    a = piece.simulate_dynamics({"voltage": -70.0}, {"current": cur[:1234]}, time_span_ms=123.4, dt_ms=0.1)
    b = piece.simulate_dynamics(None, {"current": cur[1234:]}, time_span_ms=176.6, dt_ms=0.1)
    np.testing.assert_array_equal(np.vstack([a["V"], b["V"]]), whole["V"])
    np.testing.assert_allclose(b["t"][0], 123.5)


def test_synaptic_input_decays_exponentially_and_conductances_pull_toward_their_reversal():
    spikes = np.zeros((2000, 1), bool)
    spikes[100, 0] = True
    lif = NeuralDynamics("lif", {}, {"tau_ms": 5.0}, weights=[[0.5]])
    out = lif.simulate_dynamics({}, {"spikes": spikes}, time_span_ms=200.0, dt_ms=0.1)
    s = out["s"][:, 0]
    assert s[99] == 0 and s[100] == pytest.approx(0.5)
    np.testing.assert_allclose(s[100:160], 0.5 * np.exp(-0.1 * np.arange(60) / 5.0), rtol=1e-12)
    assert out["V"][150, 0] > out["V"][99, 0]  # a current-based excitatory input depolarises
    inh = NeuralDynamics("lif", {}, {"tau_ms": 5.0, "e_rev_mv": -80.0}, weights=[[0.05]])
    rest = inh.simulate_dynamics({}, {"spikes": spikes}, time_span_ms=200.0, dt_ms=0.1)["V"][:, 0]
    assert rest[150] < rest[99]  # conductance-based with E_rev below rest: hyperpolarises
    hh = NeuralDynamics("hh", {}).simulate_dynamics({}, {"current": 15.0}, time_span_ms=50.0, dt_ms=0.01)
    assert set(("m", "h", "n")) <= set(hh) and hh["spikes"].sum() >= 2
    with pytest.raises(ConfigError, match="need synapses"):
        NeuralDynamics("lif").simulate_dynamics({}, {"spikes": spikes}, time_span_ms=200.0, dt_ms=0.1)
    with pytest.raises(ConfigError, match="model 'qif'"):
        NeuralDynamics("qif")


def _conn() -> Connectivity:
    return Connectivity.from_pairs([0, 1, 1], [0, 0, 1], [0.5, 0.4, 0.3], n_pre=2, n_post=2)


def test_stdp_in_the_plasticity_simulator_is_the_analytic_window_for_one_pair():
    conn = Connectivity.from_pairs([0], [0], [0.5], n_pre=1, n_post=1)
    pre, post = np.zeros((400, 1), bool), np.zeros((400, 1), bool)
    pre[100, 0], post[150, 0] = True, True  # post 5 ms after pre
    sim = SynapticPlasticity(conn, stdp={})
    out = sim.simulate_plasticity(pre, post, 0.1)
    expected = 0.5 + STDP.window(STDPParams(), 5.0)
    assert conn.weights[0] == pytest.approx(expected, abs=1e-15)
    assert out["weights"].shape == (400, 1) and out["weights"][149, 0] == 0.5 and out["weights"][150, 0] == pytest.approx(expected)
    assert out["stats"]["potentiated"] == 1 and out["stats"]["total_change"] == pytest.approx(expected - 0.5)


def test_short_term_plasticity_scales_what_each_spike_delivers():
    conn = _conn()
    rng = np.random.default_rng(1)
    pre = rng.random((3000, 2)) < 0.01
    post = np.zeros((3000, 2), bool)
    out = SynapticPlasticity(conn, stp={"U": 0.5, "tau_rec_ms": 800.0}).simulate_plasticity(pre, post, 0.1)
    ref = TsodyksMarkram.step(TsodyksMarkram.init_state(TsodyksMarkramParams(U=0.5, tau_rec_ms=800.0), 2),
                              TsodyksMarkramParams(U=0.5, tau_rec_ms=800.0), pre, 0.1)
    np.testing.assert_array_equal(out["released"], ref)
    # post 0 gets pre 0 (w 0.5) and pre 1 (w 0.4); post 1 gets pre 1 (w 0.3): weights unchanged without STDP
    np.testing.assert_allclose(out["efficacy"][:, 0], 0.5 * ref[:, 0] + 0.4 * ref[:, 1], rtol=1e-12)
    np.testing.assert_allclose(out["efficacy"][:, 1], 0.3 * ref[:, 1], rtol=1e-12)
    assert out["stats"]["total_change"] == 0.0


def test_homeostasis_scales_down_synapses_onto_overactive_neurons_and_all_together_run_in_pieces():
    rng = np.random.default_rng(2)
    pre = rng.random((20000, 2)) < 0.02
    post = rng.random((20000, 2)) < 0.005  # 50 Hz at dt 0.1 ms, above the 5 Hz target
    full = SynapticPlasticity(_conn(), stdp={}, stp={}, homeostasis={"target_hz": 5.0, "tau_rate_ms": 200.0, "eta": 0.05})
    whole = full.simulate_plasticity(pre, post, 0.1, record_every=100)
    assert whole["stats"]["depressed"] == 3 and whole["stats"]["post_rate_hz"].min() > 20
    conn = _conn()
    parts = SynapticPlasticity(conn, stdp={}, stp={}, homeostasis={"target_hz": 5.0, "tau_rate_ms": 200.0, "eta": 0.05})
    a = parts.simulate_plasticity(pre[:7000], post[:7000], 0.1, record_every=100)
    b = parts.simulate_plasticity(pre[7000:], post[7000:], 0.1, record_every=100)
    np.testing.assert_array_equal(conn.weights, full.conn.weights)
    np.testing.assert_array_equal(np.vstack([a["weights"], b["weights"]]), whole["weights"])
    np.testing.assert_allclose(np.concatenate([a["t"], b["t"]]), whole["t"])
    assert math.isclose(whole["t"][-1], 2000.0)
