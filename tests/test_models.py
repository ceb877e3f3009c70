"""Neuron, synapse, plasticity, network and rate models: against Brian2, closed forms, scipy and any chunking."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from benchmarks.models import brian2_lif_network, import_brian2, lif_network_setup, spike_events
from rtneuro.errors import ConfigError
from rtneuro.models import LIF as LIFModel
from rtneuro.models import (
    STDP,
    AdEx,
    AdExParams,
    Connectivity,
    DelayLine,
    DivergenceError,
    ExpSynapse,
    ExpSynapseParams,
    FHNParams,
    FitzHughNagumo,
    HHNetwork,
    HHNetworkParams,
    HHParams,
    HodgkinHuxley,
    Izhikevich,
    IzhikevichParams,
    LIFNetwork,
    LIFParams,
    RateParams,
    RatePopulation,
    ScalingParams,
    STDPParams,
    SynapticScaling,
    TsodyksMarkram,
    TsodyksMarkramParams,
    WilsonCowan,
    WilsonCowanParams,
    hebb,
    oja,
)

from reference.models import brian2_spikes, lif_naive, scaling_naive, stdp_pair_naive, tm_recursion

RNG = np.random.default_rng(11)
# Brian2 2.9 still calls pyparsing's camelCase API, deprecated in pyparsing 3.3: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated.*:DeprecationWarning")

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import_brian2()
    HAVE_BRIAN2 = True
except ImportError:  # pragma: no cover - brian2 is in the test extra
    HAVE_BRIAN2 = False
needs_brian2 = pytest.mark.skipif(not HAVE_BRIAN2, reason="the Brian2 comparisons need brian2 (test extra)")


def _splits(n: int, k: int, rng=RNG) -> list[int]:
    return sorted(rng.choice(np.arange(1, n), size=k, replace=False).tolist())


def _chunks(n: int, splits: list[int]) -> list[tuple[int, int]]:
    edges = [0, *splits, n]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _assert_same_spikes(ours: np.ndarray, ref: np.ndarray, n: int) -> None:
    """Same spike count per neuron, each spike within one step; report how many are exact."""
    for c in range(n):
        a = ours[ours[:, 1] == c, 0]
        b = ref[ref[:, 1] == c, 0]
        assert a.size == b.size, f"neuron {c}: {a.size} spikes, Brian2 {b.size}"
        if a.size:
            assert np.max(np.abs(a - b)) <= 1, f"neuron {c}: spike steps differ by {np.max(np.abs(a - b))}"


def _inputs(n_steps: int, constants: list[float], step: tuple[float, float, int, int], noise: tuple[float, float],
            seed: int = 0) -> np.ndarray:
    """Columns: each constant; a step (base -> high between two steps); held white noise (mean, sd)."""
    cols = [np.full(n_steps, c) for c in constants]
    base, high, a, b = step
    s = np.full(n_steps, base)
    s[a:b] = high
    cols.append(s)
    cols.append(noise[0] + noise[1] * np.random.default_rng(seed).standard_normal(n_steps))
    return np.ascontiguousarray(np.stack(cols, axis=1))


# -- spiking neurons against Brian2 ------------------------------------------------------------


@needs_brian2
def test_lif_matches_brian2_and_a_naive_loop():
    p = LIFParams()
    dt, T = 0.1, 10000
    i_in = _inputs(T, [1.0, 1.6, 2.0, 3.5], (0.0, 2.5, 3000, 7000), (1.8, 1.5))
    s = LIFModel.init_state(p, i_in.shape[1])
    ours = spike_events(LIFModel.step(s, p, i_in, dt))
    ref = brian2_spikes("lif", p, i_in, dt, {"v": np.full(i_in.shape[1], p.e_l_mv)})
    _assert_same_spikes(ours, ref, i_in.shape[1])
    assert ours.shape[0] > 300
    for c in range(i_in.shape[1]):
        assert ours[ours[:, 1] == c, 0].tolist() == lif_naive(p, i_in[:, c], dt, p.e_l_mv)


def test_lif_rate_matches_the_analytic_formula():
    p = LIFParams(tau_m_ms=20.0, e_l_mv=-70.0, v_th_mv=-54.0, v_reset_mv=-80.0, r_m_mohm=10.0, t_ref_ms=2.0)
    dt = 0.1
    currents = np.array([1.0, 1.7, 2.0, 3.0, 5.0, 10.0])  # nA; rheobase (v_th - E_L) / R = 1.6 nA
    s = LIFModel.init_state(p, currents.size, p.v_reset_mv)
    raster = LIFModel.step(s, p, currents, dt, 30000)
    for c, i in enumerate(currents):
        # r = 1 / (t_ref + tau ln((R I + E_L - V_reset) / (R I + E_L - V_th)))
        drive = p.r_m_mohm * i + p.e_l_mv
        if drive <= p.v_th_mv:
            assert not raster[:, c].any()
            assert LIFModel.rate_hz(p, i) == 0.0
            continue
        isi_exact = p.t_ref_ms + p.tau_m_ms * math.log((drive - p.v_reset_mv) / (drive - p.v_th_mv))
        assert LIFModel.rate_hz(p, i) == pytest.approx(1e3 / isi_exact, rel=1e-12)
        isis = np.diff(np.flatnonzero(raster[:, c])) * dt
        # the threshold is tested at step ends and a spike is labelled with its step's start:
        # every interval is t_ref + floor(T / dt) dt, within one step below the exact one
        assert np.all(isis <= isi_exact + 1e-9) and np.all(isis > isi_exact - dt)
        assert np.allclose(isis, p.t_ref_ms + math.floor((isi_exact - p.t_ref_ms) / dt) * dt)


def test_lif_refractory_period_clamps_v_and_ignores_input():
    p = LIFParams(t_ref_ms=2.0)
    dt, T = 0.1, 400
    i_in = np.full((T, 1), 3.0)
    v = np.empty((T, 1))
    spikes = LIFModel.step(LIFModel.init_state(p, 1), p, i_in, dt, v_out=v)
    first = int(np.flatnonzero(spikes[:, 0])[0])
    n_ref = 20
    assert np.all(v[first:first + n_ref, 0] == p.v_reset_mv)  # held at reset for t_ref
    assert v[first + n_ref, 0] > p.v_reset_mv  # integrates again after it
    kick = i_in.copy()
    kick[first + 1:first + n_ref] = 1e6  # an enormous input while refractory changes nothing
    v2 = np.empty((T, 1))
    spikes2 = LIFModel.step(LIFModel.init_state(p, 1), p, kick, dt, v_out=v2)
    assert np.array_equal(spikes, spikes2) and np.array_equal(v, v2)


@needs_brian2
def test_hh_matches_brian2_spikes_fi_curve_and_rheobase():
    q = HHParams()
    dt = 0.025
    T = int(round(1000.0 / dt))
    fi = np.arange(0.0, 21.0, 1.0)  # uA/cm^2
    fine = np.round(np.arange(6.0, 6.5, 0.02), 2)
    i_in = np.concatenate([np.tile(np.concatenate([fi, fine]), (T, 1)),
                        _inputs(T, [], (0.0, 10.0, T * 3 // 10, T * 7 // 10), (8.0, 20.0), seed=1)], axis=1)
    n = i_in.shape[1]
    s = HodgkinHuxley.init_state(q, n)
    init = {"v": s.v.copy(), "m": s.m.copy(), "h": s.h.copy(), "n": s.n.copy()}
    ours = spike_events(HodgkinHuxley.step(s, q, i_in, dt))
    ref = brian2_spikes("hh", q, i_in, dt, init)
    _assert_same_spikes(ours, ref, n)

    counts = np.bincount(ours[:, 1], minlength=n)
    f = counts[:fi.size]  # Hz over 1 s
    assert f[0] == 0 and np.all(np.diff(f[fi >= 7.0]) >= 0) and 80 <= f[-1] <= 95  # rises with I above onset
    assert counts[-2] > 10 and counts[-1] > 10  # the step and the noisy current make it fire
    # rheobase for repetitive firing (>= 10 spikes in 1 s): the same grid point in both simulators
    ref_counts = np.bincount(ref[:, 1], minlength=n)[fi.size:fi.size + fine.size]
    ours_fine = counts[fi.size:fi.size + fine.size]
    k = int(np.argmax(ours_fine >= 10))
    assert ours_fine[k] >= 10 and np.all(ours_fine[:k] < 10)
    assert int(np.argmax(ref_counts >= 10)) == k
    assert 6.1 <= fine[k] <= 6.4  # squid axon: class II onset near 6.3 uA/cm^2 at 6.3 degC


def test_hh_too_large_a_step_is_reported_not_returned():
    q = HHParams(method="rk4")
    s = HodgkinHuxley.init_state(q, 3)
    with pytest.raises(DivergenceError, match=r"dt_ms=0.1 is too large"):
        HodgkinHuxley.step(s, q, 10.0, 0.1, 2000)
    s = HodgkinHuxley.init_state(q, 3)
    HodgkinHuxley.step(s, q, 10.0, 0.01, 2000)  # fine at a small step
    assert np.all(np.abs(s.v) < 100)
    # exponential Euler cannot blow up: V stays between the reversal potentials even at a coarse step
    e = HHParams()
    s = HodgkinHuxley.init_state(e, 1)
    v = np.empty((4000, 1))
    HodgkinHuxley.step(s, e, 10.0, 0.1, 4000, v_out=v)
    assert v.min() >= e.e_k_mv and v.max() <= e.e_na_mv
    with pytest.raises(DivergenceError):  # a non-finite input is caught as well
        HodgkinHuxley.step(HodgkinHuxley.init_state(e, 1), e, np.nan, 0.01, 3)


@needs_brian2
def test_adex_matches_brian2():
    x = AdExParams()
    dt, T = 0.1, 10000
    i_in = _inputs(T, [400.0, 600.0, 800.0, 1500.0], (0.0, 1000.0, 2000, 8000), (700.0, 300.0))  # pA
    s = AdEx.init_state(x, i_in.shape[1])
    init = {"v": s.v.copy(), "w": s.w.copy()}
    ours = spike_events(AdEx.step(s, x, i_in, dt))
    ref = brian2_spikes("adex", x, i_in, dt, init)
    _assert_same_spikes(ours, ref, i_in.shape[1])
    counts = np.bincount(ours[:, 1], minlength=i_in.shape[1])
    assert counts[0] == 0 and np.all(counts[1:4] > 0) and np.all(np.diff(counts[1:4]) > 0)
    isi = np.diff(ours[ours[:, 1] == 3, 0])
    assert isi[-1] > 1.5 * isi[0]  # spike-frequency adaptation


@needs_brian2
def test_izhikevich_presets_match_brian2():
    names = ["RS", "IB", "CH", "FS"]
    # Inputs where every preset fires stably. The FS cell driven by 6-10 (and CH by 20) is
    # chaotic -- its spike-to-spike map of u expands -- so a 1e-12 change of the initial v
    # (or of the rounding) moves its spikes after ~40 of them, in any simulator and at any dt.
    dt, T = 0.1, 10000
    cols = _inputs(T, [4.0, 14.0], (0.0, 14.0, T // 5, T * 4 // 5), (14.0, 5.0))
    i_in = np.repeat(cols, len(names), axis=1)
    params = [IzhikevichParams.preset(nm) for nm in names] * cols.shape[1]
    ours = []
    for c, z in enumerate(params):
        s = Izhikevich.init_state(z, 1)
        ev = spike_events(Izhikevich.step(s, z, i_in[:, c:c + 1], dt))
        ev[:, 1] = c
        ours.append(ev)
    ours_ev = np.concatenate(ours)
    ours_ev = ours_ev[np.lexsort((ours_ev[:, 1], ours_ev[:, 0]))]
    v0 = np.full(len(params), -65.0)
    ref = brian2_spikes("izhikevich", params, i_in, dt, {"v": v0, "u": np.array([z.b for z in params]) * v0})
    _assert_same_spikes(ours_ev, ref, len(params))
    # Izhikevich 2003, Fig. 2, at I = 14 (neurons 4..7): RS adapts then fires tonically; IB opens with
    # a burst of >= 3 spikes; CH fires repeated high-frequency bursts; FS fires fastest, tonically
    isi = {nm: np.diff(ours_ev[ours_ev[:, 1] == 4 + c, 0]) * dt for c, nm in enumerate(names)}
    assert isi["RS"][0] < 10.0 < isi["RS"][1] and np.ptp(isi["RS"][3:]) < 0.5
    assert np.all(isi["IB"][:2] < 5.0) and isi["IB"][3] > 20.0
    assert np.sum(isi["CH"] < 5.0) > 50 and np.sum(isi["CH"] > 20.0) > 5
    assert isi["FS"].max() < 6.0 and np.ptp(isi["FS"][10:]) < 0.5


def test_izhikevich_preset_names_are_checked():
    with pytest.raises(ConfigError, match="did you mean 'FS'"):
        IzhikevichParams.preset("FSS")
    assert IzhikevichParams.preset("ch") == IzhikevichParams(a=0.02, b=0.2, c=-50.0, d=2.0)


# -- FitzHugh-Nagumo, rate models ---------------------------------------------------------------


def _upcrossings(t, v, level=0.0):
    i = np.flatnonzero((v[:-1] <= level) & (v[1:] > level))
    return t[i] + (level - v[i]) / (v[i + 1] - v[i]) * (t[i + 1] - t[i])


def test_fitzhugh_nagumo_period_matches_solve_ivp():
    f = FHNParams()
    i_in, dt, T = 0.5, 0.05, 60000
    s = FitzHughNagumo.init_state(f, 1)
    v = np.empty((T, 1))
    spikes = FitzHughNagumo.step(s, f, i_in, dt, T, v_out=v)
    t = np.arange(1, T + 1) * dt
    ours = _upcrossings(t, v[:, 0])[3:]

    def rhs(_t, y):
        return [y[0] - y[0] ** 3 / 3 - y[1] + i_in, (y[0] + f.a - f.b * y[1]) / f.tau]

    ev = lambda _t, y: y[0]  # noqa: E731
    ev.direction = 1
    sol = solve_ivp(rhs, (0, T * dt), [-1.2, -0.625], rtol=1e-9, atol=1e-12, events=ev, method="DOP853")
    ref = sol.t_events[0][3:]
    period_ours = (ours[-1] - ours[0]) / (ours.size - 1)
    period_ref = (ref[-1] - ref[0]) / (ref.size - 1)
    assert ours.size == ref.size
    assert period_ours == pytest.approx(period_ref, rel=1e-6)  # RK4 at dt 0.05 on a ~39 ms cycle
    assert 35.0 < period_ref < 42.0
    assert spikes.sum() == _upcrossings(t, v[:, 0], f.v_spike).size  # a spike per upward crossing


def test_wilson_cowan_matches_solve_ivp_through_a_step_in_the_drive():
    w = WilsonCowanParams()
    dt, T, on = 0.05, 8000, 1000
    P = np.zeros((T, 1))
    P[on:] = 1.25
    s = WilsonCowan.init_state(w, 1, 0.1, 0.05)
    e, i = WilsonCowan.step(s, w, P, 0.0, dt)
    k_e = 1 - 1 / (1 + math.exp(w.a_e * w.theta_e))
    k_i = 1 - 1 / (1 + math.exp(w.a_i * w.theta_i))

    def S(x, a, th):
        return 1 / (1 + np.exp(-a * (x - th))) - 1 / (1 + np.exp(a * th))

    def rhs(_t, y, p):
        ee, ii = y
        return [(-ee + (k_e - w.r_e * ee) * S(w.c1 * ee - w.c2 * ii + p, w.a_e, w.theta_e)) / w.tau_e_ms,
                (-ii + (k_i - w.r_i * ii) * S(w.c3 * ee - w.c4 * ii, w.a_i, w.theta_i)) / w.tau_i_ms]

    t1 = np.arange(1, on + 1) * dt
    t2 = np.arange(on + 1, T + 1) * dt
    a = solve_ivp(rhs, (0, on * dt), [0.1, 0.05], args=(0.0,), t_eval=t1, rtol=1e-11, atol=1e-13, method="DOP853")
    b = solve_ivp(rhs, (on * dt, T * dt), a.y[:, -1], args=(1.25,), t_eval=t2, rtol=1e-11, atol=1e-13,
                  method="DOP853")
    ref_e = np.concatenate([a.y[0], b.y[0]])
    ref_i = np.concatenate([a.y[1], b.y[1]])
    assert np.max(np.abs(e[:, 0] - ref_e)) < 1e-8 and np.max(np.abs(i[:, 0] - ref_i)) < 1e-8
    late = e[T // 2:, 0]
    assert late.max() - late.min() > 0.1  # the limit cycle of Wilson & Cowan's Fig. 8


def test_rate_population_is_exact_for_a_held_input():
    for transfer in ("sigmoid", "relu", "linear"):
        p = RateParams(tau_ms=8.0, transfer=transfer, gain=2.0, theta=0.5, r_max=40.0)
        dt, T = 0.1, 500
        drive = np.array([-1.0, 0.3, 1.0, 2.5])
        s = RatePopulation.init_state(p, drive.size, 3.0)
        r = RatePopulation.step(s, p, drive, dt, T)
        t = np.arange(1, T + 1)[:, None] * dt
        fx = p.f(drive)[None, :]
        np.testing.assert_allclose(r, fx + (3.0 - fx) * np.exp(-t / p.tau_ms), rtol=1e-12, atol=1e-12)


def test_rate_population_with_self_coupling_converges_to_solve_ivp():
    p = RateParams(tau_ms=10.0, transfer="sigmoid", gain=1.0, theta=2.0, r_max=5.0, w_self=0.8)
    T_ms = 100.0
    sol = solve_ivp(lambda _t, y: (-y + p.f(1.0 + p.w_self * y)) / p.tau_ms, (0, T_ms), [0.0], rtol=1e-11, atol=1e-13)
    errs = []
    for dt in (0.1, 0.05):
        r = RatePopulation.step(RatePopulation.init_state(p, 1), p, 1.0, dt, int(round(T_ms / dt)))
        errs.append(abs(r[-1, 0] - sol.y[0, -1]))
    assert errs[0] < 1e-2 and 1.8 < errs[0] / errs[1] < 2.2  # first order, as documented


# -- synapses ---------------------------------------------------------------------------------


def test_exp_synapse_decays_exactly_and_gives_conductance_currents():
    p = ExpSynapseParams(tau_ms=5.0, e_rev_mv=0.0)
    dt, T = 0.1, 300
    inc = np.zeros((T, 2))
    inc[10, 0] = 2.0
    inc[50, 1] = 1.0
    inc[60, 1] = 1.0
    g = ExpSynapse.step(ExpSynapse.init_state(p, 2), p, inc, dt)
    k = np.arange(T)
    np.testing.assert_allclose(g[:, 0], np.where(k >= 10, 2.0 * np.exp(-(k - 10) * dt / 5.0), 0.0), rtol=1e-12)
    ref1 = np.where(k >= 50, np.exp(-(k - 50) * dt / 5.0), 0.0) + np.where(k >= 60, np.exp(-(k - 60) * dt / 5.0), 0.0)
    np.testing.assert_allclose(g[:, 1], ref1, rtol=1e-12)
    np.testing.assert_allclose(ExpSynapse.current(p, g[20], np.array([-65.0, -65.0])), g[20] * 65.0)
    assert np.array_equal(ExpSynapse.current(ExpSynapseParams(), g[20]), g[20])
    with pytest.raises(ConfigError, match="membrane potential"):
        ExpSynapse.current(p, g[20])


def test_delay_line_delivers_each_spike_after_its_own_delay():
    conn = Connectivity.from_pairs([0, 0, 1, 2], [1, 2, 2, 0], [0.5, 1.0, 2.0, 4.0], [0, 3, 7, 2], n_pre=3, n_post=3)
    T = 40
    spikes = np.zeros((T, 3), dtype=bool)
    spikes[[5, 20], 0] = True
    spikes[6, 1] = True
    spikes[30, 2] = True
    out = DelayLine.step(DelayLine.init_state(conn), conn, spikes)
    ref = np.zeros((T, 3))
    pre, post = conn.pairs()
    for s_, i in zip(*np.nonzero(spikes), strict=True):
        for syn in np.flatnonzero(pre == i):
            if s_ + conn.delays[syn] < T:
                ref[s_ + conn.delays[syn], post[syn]] += conn.weights[syn]
    assert np.array_equal(out, ref)


def test_tsodyks_markram_matches_the_recursion_and_steady_state():
    dt = 0.1
    for p in (TsodyksMarkramParams.depressing(), TsodyksMarkramParams.facilitating()):
        interval = 500  # steps: 20 Hz
        T = 100 * interval
        spikes = np.zeros((T, 2), dtype=bool)
        spikes[::interval, 0] = True
        irregular = np.sort(RNG.choice(T, 60, replace=False))
        spikes[irregular, 1] = True
        r = TsodyksMarkram.step(TsodyksMarkram.init_state(p, 2), p, spikes, dt)
        for c in range(2):
            steps = np.flatnonzero(spikes[:, c])
            np.testing.assert_allclose(r[steps, c], tm_recursion(p, list(steps * dt)), rtol=1e-12)
            assert np.all(r[~spikes[:, c], c] == 0.0)
        u_ss, x_ss, r_ss = TsodyksMarkram.steady_state(p, interval * dt)
        assert r[0, 0] == pytest.approx(p.U, rel=1e-15)  # first release: u = U, x = 1
        assert r[np.flatnonzero(spikes[:, 0])[-1], 0] == pytest.approx(r_ss, rel=1e-9)
    dep = TsodyksMarkramParams.depressing()
    fac = TsodyksMarkramParams.facilitating()
    assert TsodyksMarkram.steady_state(dep, 50.0)[2] < dep.U  # depression
    assert TsodyksMarkram.steady_state(fac, 50.0)[0] > fac.U  # facilitation of u


# -- plasticity -------------------------------------------------------------------------------


def test_stdp_pair_at_each_lag_follows_the_analytic_window():
    p = STDPParams(a_plus=0.01, a_minus=0.012, tau_plus_ms=16.8, tau_minus_ms=33.7, w_min=0.0, w_max=1.0)
    dt = 0.1
    lags = np.unique(np.r_[np.arange(-800, 801, 9), -1, 0, 1])  # steps: -80..80 ms
    n = lags.size
    T = 2000
    pre = np.zeros((T, n), dtype=bool)
    post = np.zeros((T, n), dtype=bool)
    pre[1000, :] = True
    post[1000 + lags, np.arange(n)] = True
    for pairing in ("all_to_all", "nearest"):
        c = Connectivity.from_pairs(np.arange(n), np.arange(n), 0.5, n_pre=n, n_post=n)
        q = STDPParams(a_plus=p.a_plus, a_minus=p.a_minus, tau_plus_ms=p.tau_plus_ms, tau_minus_ms=p.tau_minus_ms,
                       pairing=pairing)
        STDP.step(STDP.init_state(q, c), q, c, pre, post, dt)
        # dt = t_post - t_pre: +A+ exp(-dt/tau+) for dt >= 0, -A- exp(dt/tau-) for dt < 0
        expect = np.where(lags >= 0, p.a_plus * np.exp(-lags * dt / p.tau_plus_ms),
                          -p.a_minus * np.exp(lags * dt / p.tau_minus_ms))
        np.testing.assert_allclose(c.weights - 0.5, expect, rtol=1e-11, atol=1e-17)
        np.testing.assert_allclose(STDP.window(p, lags * dt), expect, rtol=1e-15)


@pytest.mark.parametrize("pairing", ["all_to_all", "nearest"])
def test_stdp_spike_trains_match_the_pairwise_sum(pairing):
    p = STDPParams(a_plus=0.004, a_minus=0.005, tau_plus_ms=20.0, tau_minus_ms=25.0, w_min=0.2, w_max=0.8,
                   pairing=pairing)
    dt, T = 0.1, 6000
    rng = np.random.default_rng(5)
    pre = rng.random((T, 3)) < 0.002
    post = rng.random((T, 2)) < 0.002
    pairs_pre, pairs_post = np.meshgrid(np.arange(3), np.arange(2), indexing="ij")
    conn = Connectivity.from_pairs(pairs_pre.ravel(), pairs_post.ravel(), 0.5, n_pre=3, n_post=2)
    STDP.step(STDP.init_state(p, conn), p, conn, pre, post, dt)
    sp, so = conn.pairs()
    for syn in range(conn.n_syn):
        ref = stdp_pair_naive(p, list(np.flatnonzero(pre[:, sp[syn]])), list(np.flatnonzero(post[:, so[syn]])),
                              dt, 0.5)
        assert conn.weights[syn] == pytest.approx(ref, rel=1e-9)


def test_synaptic_scaling_matches_a_naive_loop_and_pulls_toward_the_target():
    p = ScalingParams(target_hz=10.0, tau_rate_ms=200.0, eta=0.05, interval_steps=50)
    dt, T = 0.1, 20000
    conn = Connectivity.random(6, 3, 0.7, weight=np.linspace(0.5, 1.5, 6), seed=2)
    post = np.zeros((T, 3), dtype=bool)
    post[::500, 0] = True  # 20 Hz: too active
    post[::1000, 1] = True  # 10 Hz: on target
    post[::4000, 2] = True  # 2.5 Hz: too quiet
    w0 = conn.weights.copy()
    SynapticScaling.step(SynapticScaling.init_state(p, conn), p, conn, post, dt)
    ref = scaling_naive(w0, conn.indices, post, dt, p.target_hz, p.tau_rate_ms, p.eta, p.interval_steps, p.target_hz)
    np.testing.assert_allclose(conn.weights, ref, rtol=1e-12)
    ratio = conn.weights / w0
    for j, sign in ((0, -1), (2, 1)):
        r = ratio[conn.indices == j]
        assert np.all(np.sign(r - 1) == sign) and np.allclose(r, r[0])  # one factor per neuron
    assert np.all(np.abs(ratio[conn.indices == 1] - 1) < 0.05)


def test_hebb_follows_its_closed_form():
    W = np.full((2, 3), 0.2)
    x = np.array([1.0, 0.5, 0.0])
    y = np.array([2.0, -1.0])
    eta, alpha, T = 0.01, 0.5, 300
    hebb(W, np.tile(x, (T, 1)), np.tile(y, (T, 1)), eta, alpha)
    keep = (1 - eta * alpha) ** T
    np.testing.assert_allclose(W, keep * 0.2 + (1 - keep) / alpha * np.outer(y, x), rtol=1e-10)


def test_oja_finds_the_principal_component_and_subspace():
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    C = Q @ np.diag([5.0, 2.0, 0.5, 0.3, 0.1]) @ Q.T
    x = rng.multivariate_normal(np.zeros(5), C, size=40000)
    W = 0.1 * rng.standard_normal((1, 5))
    oja(W, x, 1e-3)
    assert np.linalg.norm(W) == pytest.approx(1.0, abs=0.05)
    assert abs(W[0] @ Q[:, 0]) > 0.99
    W2 = 0.1 * rng.standard_normal((2, 5))
    y = oja(W2, x, 1e-3)
    np.testing.assert_allclose(W2 @ W2.T, np.eye(2), atol=0.05)
    P_ours = W2.T @ np.linalg.pinv(W2.T)
    P_true = Q[:, :2] @ Q[:, :2].T
    assert np.linalg.norm(P_ours - P_true) < 0.1
    assert y.shape == (40000, 2)


# -- networks ---------------------------------------------------------------------------------


@needs_brian2
def test_lif_network_of_1000_matches_brian2_spike_for_spike():
    n, dt, T = 1000, 0.1, 10000
    params, conn, i_bias, v0 = lif_network_setup(n)
    assert 90000 < conn.n_syn < 110000 and conn.max_delay == 30
    s = LIFNetwork.init_state(params, conn, v0)
    ours = spike_events(LIFNetwork.step(s, params, conn, i_bias, dt, T))
    ref = brian2_lif_network(n, T * dt, dt, "numpy")["events"]
    # Same equations, synapses, delays and update order; the two differ only in the rounding of
    # the exact update and of the summation order of simultaneous arrivals (1e-15 mV), which
    # would change a spike only if V ended a step within that distance of threshold.
    assert ours.shape[0] > 10000
    assert np.array_equal(ours, ref)


def test_lif_network_delays_and_refractory_inputs():
    p = LIFParams(t_ref_ms=1.0)
    conn = Connectivity.from_pairs([0, 0], [1, 2], [30.0, 5.0], [7, 0], n_pre=3, n_post=3)
    T = 100
    i = np.zeros((T, 3))
    i[0, 0] = 1000.0  # neuron 0 fires in step 0 only
    v = np.empty((T, 3))
    spikes = LIFNetwork.step(LIFNetwork.init_state(p, conn), p, conn, i, 0.1, v_out=v)
    assert np.flatnonzero(spikes[:, 0]).tolist() == [0]
    assert v[6, 1] == p.e_l_mv and v[7, 1] == pytest.approx(p.e_l_mv + 30.0)  # arrives in step 0 + 7
    assert spikes[8, 1]  # and fires at the next threshold test
    assert v[0, 2] == pytest.approx(p.e_l_mv + 5.0)  # delay 0: the same step
    # an input arriving while the target is refractory is dropped; one arriving after it is not
    conn2 = Connectivity.from_pairs([0, 0], [1, 1], [10.0, 10.0], [3, 12], n_pre=2, n_post=2)
    i2 = np.zeros((T, 2))
    i2[0, :] = 1000.0  # both fire in step 0; neuron 1 is refractory in steps 1..9 (t_ref 1 ms)
    v2 = np.empty((T, 2))
    LIFNetwork.step(LIFNetwork.init_state(p, conn2), p, conn2, i2, 0.1, v_out=v2)
    assert np.all(v2[:12, 1] == p.v_reset_mv)
    assert v2[12, 1] == pytest.approx(p.v_reset_mv + 10.0)


def test_hh_network_runs_and_is_deterministic():
    q = HHNetworkParams()
    conn = Connectivity.random(30, 30, 0.2, weight=np.where(np.arange(30) < 24, 0.05, -0.2), delay_steps=(40, 80),
                               seed=1)
    drive = np.random.default_rng(0).uniform(5.0, 12.0, 30)
    a = HHNetwork.step(HHNetwork.init_state(q, conn), q, conn, drive, 0.025, 8000)
    b = HHNetwork.step(HHNetwork.init_state(q, conn), q, conn, drive, 0.025, 8000)
    assert np.array_equal(a, b) and a.sum() > 50
    with pytest.raises(ConfigError, match="exponential Euler"):
        HHNetworkParams(hh=HHParams(method="rk4"))


def test_connectivity_construction():
    conn = Connectivity.random(200, 200, 0.1, weight=1.0, delay_steps=(2, 5), seed=0)
    pre, post = conn.pairs()
    assert not np.any(pre == post)  # no autapses
    assert 0.08 < conn.n_syn / (200 * 199) < 0.12
    assert conn.delays.min() >= 2 and conn.delays.max() <= 5
    ptr, syn = conn.post_index()
    assert np.array_equal(np.sort(conn.indices[syn]), conn.indices[syn])
    again = Connectivity.from_pairs(pre[::-1], post[::-1], conn.weights[::-1], conn.delays[::-1], n_pre=200,
                                    n_post=200)
    assert np.array_equal(again.indptr, conn.indptr)
    with pytest.raises(ConfigError, match="target indices"):
        Connectivity.from_pairs([0], [5], 1.0, n_pre=1, n_post=2)
    with pytest.raises(ConfigError, match="probability"):
        Connectivity.random(3, 3, 1.5)


# -- chunk invariance ----------------------------------------------------------------------------


def _neuron_case(model, params, n, i, dt, **init):
    def run(chunks):
        s = model.init_state(params, n, **init)
        out = []
        for a, b in chunks:
            v = np.empty((b - a, n))
            out.append((model.step(s, params, i[a:b], dt, v_out=v), v))
        return s, np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])

    return run


def _cases():
    T = 3000
    rng = np.random.default_rng(9)
    lif_i = 1.5 + 1.5 * rng.standard_normal((T, 4))
    yield "lif", _neuron_case(LIFModel, LIFParams(), 4, lif_i, 0.1), T
    hh_i = 8.0 + 10 * rng.standard_normal((T, 3))
    yield "hh", _neuron_case(HodgkinHuxley, HHParams(), 3, hh_i, 0.025), T
    yield "hh_rk4", _neuron_case(HodgkinHuxley, HHParams(method="rk4"), 3, hh_i, 0.01), T
    yield "adex", _neuron_case(AdEx, AdExParams(t_ref_ms=1.0), 3, 700 + 300 * rng.standard_normal((T, 3)), 0.1), T
    yield "izhikevich", _neuron_case(Izhikevich, IzhikevichParams.preset("CH"), 3,
                                     10 + 5 * rng.standard_normal((T, 3)), 0.1), T
    yield "fhn", _neuron_case(FitzHughNagumo, FHNParams(), 2, 0.5 + 0.2 * rng.standard_normal((T, 2)), 0.1), T

    params, conn, i_bias, v0 = lif_network_setup(100)

    def lif_net(chunks):
        s = LIFNetwork.init_state(params, conn, v0)
        return s, np.concatenate([LIFNetwork.step(s, params, conn, i_bias, 0.1, b - a) for a, b in chunks])

    yield "lif_network", lif_net, T
    q = HHNetworkParams()
    hconn = Connectivity.random(20, 20, 0.2, weight=np.where(np.arange(20) < 16, 0.05, -0.2), delay_steps=(4, 40),
                                seed=4)
    drive = np.random.default_rng(1).uniform(5, 12, 20)

    def hh_net(chunks):
        s = HHNetwork.init_state(q, hconn)
        return s, np.concatenate([HHNetwork.step(s, q, hconn, drive, 0.025, b - a) for a, b in chunks])

    yield "hh_network", hh_net, T
    wc = WilsonCowanParams()
    P = 1.25 + 0.1 * rng.standard_normal((T, 2))

    def wilson(chunks):
        s = WilsonCowan.init_state(wc, 2, 0.1, 0.05)
        out = [WilsonCowan.step(s, wc, P[a:b], 0.0, 0.1) for a, b in chunks]
        return s, np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])

    yield "wilson_cowan", wilson, T
    rp = RateParams(w_self=0.5)
    ri = rng.standard_normal((T, 3))

    def rate(chunks):
        s = RatePopulation.init_state(rp, 3)
        return s, np.concatenate([RatePopulation.step(s, rp, ri[a:b], 0.1) for a, b in chunks])

    yield "rate", rate, T
    sp = ExpSynapseParams(tau_ms=3.0)
    inc = (rng.random((T, 3)) < 0.01) * 1.0

    def syn(chunks):
        s = ExpSynapse.init_state(sp, 3)
        return s, np.concatenate([ExpSynapse.step(s, sp, inc[a:b], 0.1) for a, b in chunks])

    yield "exp_synapse", syn, T
    tm = TsodyksMarkramParams.facilitating()
    train = rng.random((T, 4)) < 0.01

    def tsodyks(chunks):
        s = TsodyksMarkram.init_state(tm, 4)
        return s, np.concatenate([TsodyksMarkram.step(s, tm, train[a:b], 0.1) for a, b in chunks])

    yield "tsodyks_markram", tsodyks, T
    dconn = Connectivity.random(4, 5, 0.6, weight=1.0, delay_steps=(0, 25), seed=8)

    def delay(chunks):
        s = DelayLine.init_state(dconn)
        return s, np.concatenate([DelayLine.step(s, dconn, train[a:b]) for a, b in chunks])

    yield "delay_line", delay, T
    post = rng.random((T, 5)) < 0.01

    def stdp(chunks):
        c = Connectivity.random(4, 5, 0.6, weight=0.5, seed=8)
        pp = STDPParams()
        s = STDP.init_state(pp, c)
        for a, b in chunks:
            STDP.step(s, pp, c, train[a:b], post[a:b], 0.1)
        return s, c.weights

    yield "stdp", stdp, T
    sc = ScalingParams(interval_steps=37)

    def scaling(chunks):
        c = Connectivity.random(4, 5, 0.6, weight=0.5, seed=8)
        s = SynapticScaling.init_state(sc, c, 0.0)
        for a, b in chunks:
            SynapticScaling.step(s, sc, c, post[a:b], 0.1)
        return s, c.weights

    yield "synaptic_scaling", scaling, T


def _state_arrays(state):
    return {name: getattr(state, name) for name in state.__slots__ if isinstance(getattr(state, name), np.ndarray)}


@pytest.mark.parametrize("name, run, T", list(_cases()), ids=lambda v: v if isinstance(v, str) else "")
def test_any_chunking_equals_one_long_run_bit_for_bit(name, run, T):
    whole = run([(0, T)])
    for k in (1, 7, 40):
        parts = run(_chunks(T, _splits(T, k)))
        for a, b in zip(whole[1:], parts[1:], strict=True):
            assert np.array_equal(a, b), name
        sa, sb = _state_arrays(whole[0]), _state_arrays(parts[0])
        for key in sa:
            assert np.array_equal(sa[key], sb[key]), (name, key)
        assert whole[0].step == parts[0].step == T


# -- validation ----------------------------------------------------------------------------------


def test_parameters_and_inputs_are_validated_with_the_fix_in_the_message():
    with pytest.raises(ConfigError, match="v_reset_mv .* must be below v_th_mv"):
        LIFParams(v_reset_mv=-40.0)
    with pytest.raises(ConfigError, match="method must be 'exponential_euler' or 'rk4'"):
        HHParams(method="euler")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="tau_m_ms must be a finite number > 0"):
        LIFParams(tau_m_ms=0.0)
    with pytest.raises(ConfigError, match="U must be in"):
        TsodyksMarkramParams(U=0.0)
    p = LIFParams()
    s = LIFModel.init_state(p, 3)
    LIFModel.step(s, p, 1.0, 0.1, 5)
    with pytest.raises(ConfigError, match="advanced with dt_ms=0.1"):
        LIFModel.step(s, p, 1.0, 0.05, 5)
    with pytest.raises(ConfigError, match=r"expected \(n_steps, 3\) or \(3,\)|expected"):
        LIFModel.step(s, p, np.ones((5, 2)), 0.1)
    with pytest.raises(ConfigError, match="give n_steps"):
        LIFModel.step(s, p, 1.0, 0.1)
