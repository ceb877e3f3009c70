"""Neural coding (rtneuro.analysis.coding) against simulated ground truth, scipy and naive loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import i0, i1
from scipy.stats import poisson

from rtneuro.analysis.coding import (
    bayesian_decode,
    optimal_bin_width,
    phase_of_firing,
    rate_adaptive,
    rate_binned,
    rate_kernel,
    tuning_curves,
)
from rtneuro.errors import ConfigError


def _inhomogeneous_poisson(rate, t_stop: float, rmax: float, rng) -> np.ndarray:
    """Spikes of a Poisson process with rate(t) <= rmax, by thinning (Dayan & Abbott sec. 1.4)."""
    t = np.cumsum(rng.exponential(1.0 / rmax, int(rmax * t_stop * 1.5) + 100))
    t = t[t < t_stop]
    return t[rng.random(t.size) < rate(t) / rmax]


def test_binned_rates_are_counts_over_the_bin_and_a_partial_bin_is_dropped():
    s = np.array([0.01, 0.02, 0.26, 0.5, 0.74, 0.99, 1.01])
    centres, rates = rate_binned(s, 0.0, 1.02, 0.25)
    np.testing.assert_allclose(centres, [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_array_equal(rates, np.histogram(s, bins=[0, 0.25, 0.5, 0.75, 1.0])[0] / 0.25)


def test_kernel_rates_equal_a_naive_sum_integrate_to_the_spike_count_and_causal_ones_never_look_ahead():
    rng = np.random.default_rng(0)
    s = np.sort(rng.uniform(1, 9, 60))
    t = np.linspace(0, 10, 2001)
    g = rate_kernel(s, t, 0.05)
    naive = np.array([sum(math.exp(-0.5 * ((tj - si) / 0.05) ** 2) / (math.sqrt(2 * math.pi) * 0.05) for si in s) for tj in t])
    np.testing.assert_allclose(g, naive, rtol=1e-10, atol=1e-12)
    assert np.trapezoid(g, t) == pytest.approx(60, rel=1e-6)  # unit-area kernel: one spike, one unit of area
    fine = np.linspace(0, 10, 200_001)  # the exponential jumps at each spike: a fine grid for the area
    for kind in ("exponential", "alpha"):
        r = rate_kernel(s, fine, 0.05, kernel=kind)
        assert np.all(r[fine < s[0]] == 0) and np.trapezoid(r, fine) == pytest.approx(60, rel=2e-4)
    with pytest.raises(ConfigError, match="gaussian, exponential"):
        rate_kernel(s, t, 0.05, kernel="triangle")


def test_rate_estimates_recover_a_known_modulated_rate():
    rng = np.random.default_rng(1)

    def rate(t):
        return 20.0 + 15.0 * np.sin(2 * np.pi * 0.5 * t)

    trials = [_inhomogeneous_poisson(rate, 20.0, 35.0, rng) for _ in range(30)]
    pooled = np.sort(np.concatenate(trials))
    t = np.linspace(2, 18, 400)
    est = rate_kernel(pooled, t, 0.1) / len(trials)
    assert np.sqrt(np.mean((est - rate(t)) ** 2)) < 2.5  # Hz, against 20 +- 15
    # Shimazaki-Shinomoto: the chosen bin is near the best one by the true integrated squared error
    opt = optimal_bin_width(trials, 0.0, 20.0)
    fine = np.linspace(0, 20, 20_001)[:-1]
    true_mise = []
    for d in opt["candidates"]:
        _, r = rate_binned(pooled, 0.0, 20.0, d)
        covered = fine[fine < d * len(r)]
        est = r[(covered / d).astype(int)] / len(trials)  # the histogram as a step function
        true_mise.append(np.mean((est - rate(covered)) ** 2))
    assert true_mise[int(np.argmin(opt["costs"]))] <= 1.5 * min(true_mise)


def test_the_adaptive_kernel_follows_a_burst_better_than_the_fixed_pilot():
    rng = np.random.default_rng(2)

    def rate(t):
        return 5.0 + 200.0 * np.exp(-0.5 * ((t - 5.0) / 0.05) ** 2)  # a sharp burst on a low background

    s = np.sort(np.concatenate([_inhomogeneous_poisson(rate, 10.0, 210.0, rng) for _ in range(10)]))
    t = np.linspace(1, 9, 1601)
    fixed = rate_kernel(s, t, 0.15) / 10
    adaptive = rate_adaptive(s, t, 0.15) / 10
    err_f, err_a = np.mean((fixed - rate(t)) ** 2), np.mean((adaptive - rate(t)) ** 2)
    assert err_a < 0.6 * err_f
    assert adaptive.max() > 0.6 * 205 > fixed.max()


def _population(rng, n_neurons: int = 24, n_stim: int = 8, window_s: float = 0.5, trials: int = 40):
    prefs = np.linspace(0, 2 * np.pi, n_neurons, endpoint=False)
    stims = np.linspace(0, 2 * np.pi, n_stim, endpoint=False)
    true = 2.0 + 30.0 * np.exp(2.0 * (np.cos(stims[:, None] - prefs[None, :]) - 1))  # von Mises tuning, Hz
    s_idx = np.repeat(np.arange(n_stim), trials)
    counts = rng.poisson(true[s_idx] * window_s)
    return stims, true, s_idx, counts


def test_tuning_curves_and_bayesian_decoding_recover_the_stimulus_of_a_simulated_population():
    rng = np.random.default_rng(3)
    stims, true, s_idx, counts = _population(rng)
    tc = tuning_curves(stims[s_idx], counts, 0.5)
    np.testing.assert_array_equal(tc["stimuli"], stims)
    assert np.abs(tc["rates"] - true).max() < 4.5  # Hz: 40 trials of 0.5 s
    _, _, s2, c2 = _population(np.random.default_rng(4))  # new trials, decoded with the estimated curves
    dec = bayesian_decode(c2, tc["rates"], 0.5)
    assert np.mean(dec["map"] == s2) > 0.9
    # the posterior, as a naive loop of scipy's Poisson pmf computes it
    f = np.maximum(tc["rates"], 1e-3) * 0.5
    for trial in (0, 17, 200):
        lp = np.array([poisson.logpmf(c2[trial], f[s]).sum() for s in range(len(stims))])
        ref = np.exp(lp - lp.max())
        np.testing.assert_allclose(dec["posterior"][trial], ref / ref.sum(), rtol=1e-9, atol=1e-15)
    # a prior multiplies in: the posterior ratio of two stimuli scales by the prior ratio
    prior = np.full(len(stims), 1.0)
    prior[0] = 5.0
    biased = bayesian_decode(c2[:5], tc["rates"], 0.5, prior=prior / prior.sum())["posterior"]
    base = dec["posterior"][:5]
    np.testing.assert_allclose(biased[:, 0] / biased[:, 1], 5.0 * base[:, 0] / base[:, 1], rtol=1e-9)


def test_phase_of_firing_recovers_the_locking_phase_and_strength():
    rng = np.random.default_rng(5)
    fs, f0, dur = 1000.0, 8.0, 60.0
    t = np.arange(int(fs * dur)) / fs
    lfp = np.cos(2 * np.pi * f0 * t) + 0.3 * rng.standard_normal(t.size)
    mu, kappa = math.pi / 3, 2.0
    cycles = rng.choice(int(f0 * dur) - 2, 300, replace=False) + 1
    phases = rng.vonmises(mu, kappa, cycles.size)
    spikes = (cycles + phases / (2 * np.pi)) / f0  # cos phase 0 at the peak: the spike at phase mu of its cycle
    out = phase_of_firing(spikes, lfp, fs, (6.0, 10.0))
    assert out["n"] == 300 and abs(np.angle(np.exp(1j * (out["mean_phase"] - mu)))) < 0.15
    assert out["plv"] == pytest.approx(i1(kappa) / i0(kappa), abs=0.06) and out["p_value"] < 1e-10
    rand = phase_of_firing(rng.uniform(0.5, dur - 0.5, 300), lfp, fs, (6.0, 10.0))
    assert rand["plv"] < 0.15 and rand["p_value"] > 0.01
    with pytest.raises(ConfigError, match="within"):
        phase_of_firing(spikes, lfp, fs, (6.0, 600.0))
