"""Neural coding: firing-rate estimation, tuning curves, Bayesian population decoding, phase of firing.

References: Dayan & Abbott, *Theoretical Neuroscience* (2001), sec. 1.2
(rates from spike trains: binning, kernels), sec. 3.3 (population decoding,
Bayesian inference and the maximum a posteriori estimate with Poisson
spike counts); Shimazaki & Shinomoto (2007, Neural Comput. 19:1503) for
the bin width that minimises the mean integrated squared error; Abramson
(1982, Ann. Stat. 10:1217) for the adaptive (variable-bandwidth) kernel;
Fisher, *Statistical Analysis of Circular Data* (1993), sec. 4.3 for the
Rayleigh test; Lachaux et al. (1999) for the phase-locking value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["rate_binned", "optimal_bin_width", "rate_kernel", "rate_adaptive", "tuning_curves",
           "bayesian_decode", "phase_of_firing"]


def _spikes(spike_times: Any) -> np.ndarray:
    s = np.sort(np.asarray(spike_times, dtype=float).ravel())
    if not np.isfinite(s).all():
        raise ConfigError("spike times must be finite")
    return s


def rate_binned(spike_times: Any, t_start: float, t_stop: float, bin_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Spike counts in consecutive bins of ``bin_s`` over ``[t_start, t_stop)``, divided by ``bin_s`` (Hz).
    Returns ``(bin centres, rates)``; a last partial bin is dropped."""
    if not bin_s > 0 or not t_stop > t_start:
        raise ConfigError("need bin_s > 0 and t_stop > t_start")
    n = int(math.floor((t_stop - t_start) / bin_s + 1e-9))
    if n < 1:
        raise ConfigError(f"bin_s={bin_s} is longer than the interval [{t_start}, {t_stop})")
    edges = t_start + bin_s * np.arange(n + 1)
    counts, _ = np.histogram(_spikes(spike_times), bins=edges)
    return 0.5 * (edges[:-1] + edges[1:]), counts / bin_s


def optimal_bin_width(spike_trains: list[Any], t_start: float, t_stop: float, *,
                      candidates: Any = None) -> dict[str, Any]:
    """The bin width minimising Shimazaki & Shinomoto's cost ``C(D) = (2 k - v) / (n D)^2`` (``k``, ``v``: mean
    and biased variance of the counts per bin summed over the ``n`` trials), an estimate of the mean
    integrated squared error of the PSTH against the unknown rate. Returns ``bin_s`` and the ``costs``."""
    trials = [_spikes(t) for t in spike_trains]
    span = t_stop - t_start
    if candidates is None:
        n_spikes = sum(len(t) for t in trials)
        candidates = span / np.unique(np.round(np.geomspace(2, max(3, min(n_spikes, 2000)), 80)).astype(int))
    cands = np.asarray(candidates, dtype=float)
    costs = np.empty(cands.size)
    for i, d in enumerate(cands):
        n_bins = int(math.floor(span / d + 1e-9))
        edges = t_start + d * np.arange(n_bins + 1)
        k = np.sum([np.histogram(t, bins=edges)[0] for t in trials], axis=0)
        costs[i] = (2 * k.mean() - k.var()) / (len(trials) * d) ** 2
    best = int(np.argmin(costs))
    return {"bin_s": float(cands[best]), "candidates": cands, "costs": costs}


def _kernel(u: np.ndarray, kind: str) -> np.ndarray:
    """Unit-area kernels of unit scale (Dayan & Abbott sec. 1.2)."""
    if kind == "gaussian":
        return np.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)
    if kind == "exponential":  # causal
        return np.where(u >= 0, np.exp(-np.maximum(u, 0.0)), 0.0)
    if kind == "alpha":  # causal, peak at 1
        return np.where(u >= 0, np.maximum(u, 0.0) * np.exp(-np.maximum(u, 0.0)), 0.0)
    if kind == "boxcar":
        return np.where(np.abs(u) < math.sqrt(3.0), 1.0 / (2 * math.sqrt(3.0)), 0.0)  # unit SD
    raise ConfigError(f"kernel={kind!r}: use gaussian, exponential, alpha or boxcar")


def rate_kernel(spike_times: Any, t: Any, sigma_s: float, *, kernel: str = "gaussian") -> np.ndarray:
    """``r(t) = sum_i w(t - t_i)`` with a unit-area kernel ``w`` of scale ``sigma_s`` (the Gaussian's and the
    boxcar's SD, the exponential's and the alpha function's time constant), in Hz. The exponential and
    alpha kernels are causal: an online estimate."""
    if not sigma_s > 0:
        raise ConfigError("sigma_s must be > 0")
    s = _spikes(spike_times)
    tt = np.asarray(t, dtype=float)
    flat = tt.ravel()
    out = np.zeros(flat.shape)
    reach = 8.0 * sigma_s if kernel in ("gaussian", "boxcar") else 40.0 * sigma_s
    order = np.argsort(flat, kind="stable")
    ts = flat[order]
    block = 2048
    for a in range(0, ts.size, block):  # blocks of sorted times, each against the spikes within reach of it
        tb = ts[a:a + block]
        lo, hi = np.searchsorted(s, tb[0] - reach), np.searchsorted(s, tb[-1] + reach)
        u = (tb[:, None] - s[None, lo:hi]) / sigma_s
        u[np.abs(u) * sigma_s > reach] = np.inf  # each time only sees the spikes within its own reach
        k = _kernel(np.where(np.isfinite(u), u, 1e6), kernel)  # out of reach: a place where every kernel is 0
        out[order[a:a + block]] = np.where(np.isfinite(u), k, 0.0).sum(axis=1) / sigma_s
    return out.reshape(tt.shape)


def rate_adaptive(spike_times: Any, t: Any, sigma_s: float, *, alpha: float = 0.5) -> np.ndarray:
    """Abramson's adaptive Gaussian kernel: a pilot estimate ``f`` with bandwidth ``sigma_s``, then each spike's
    own bandwidth ``sigma_s (f(t_i) / g)^-alpha`` (``g``: the geometric mean of ``f`` at the spikes), narrow
    where spikes are dense and wide where they are sparse."""
    s = _spikes(spike_times)
    if s.size == 0:
        return np.zeros(np.shape(t))
    pilot = rate_kernel(s, s, sigma_s)
    g = math.exp(float(np.mean(np.log(pilot))))
    bw = sigma_s * (pilot / g) ** (-alpha)
    tt = np.asarray(t, dtype=float)
    out = np.zeros(tt.shape)
    for j, tj in np.ndenumerate(tt):
        u = (tj - s) / bw
        out[j] = float(np.sum(np.exp(-0.5 * u * u) / (math.sqrt(2 * math.pi) * bw)))
    return out


def tuning_curves(stimuli: Any, counts: Any, window_s: float) -> dict[str, np.ndarray]:
    """Mean rate (Hz) of each neuron for each distinct stimulus value: ``counts`` is trials x neurons of spike
    counts in windows of ``window_s``; returns ``stimuli`` (sorted distinct values), ``rates`` (stimuli x
    neurons) and ``trials`` per stimulus."""
    st = np.asarray(stimuli)
    c = np.asarray(counts, dtype=float)
    if c.ndim != 2 or c.shape[0] != st.shape[0]:
        raise ConfigError("counts must be trials x neurons, one trial per stimulus value")
    values, inv, n = np.unique(st, return_inverse=True, return_counts=True)
    rates = np.zeros((values.size, c.shape[1]))
    np.add.at(rates, inv.ravel(), c)
    return {"stimuli": values, "rates": rates / (n[:, None] * window_s), "trials": n}


def bayesian_decode(counts: Any, rates: Any, window_s: float, *, prior: Any = None,
                    floor_hz: float = 1e-3) -> dict[str, np.ndarray]:
    """The posterior ``P(s | r)`` over the stimuli of a tuning table for each trial's spike counts, with
    independent Poisson neurons (Dayan & Abbott eq. 3.33): ``ln P(s|r) = sum_a [r_a ln(f_a(s) T) - f_a(s) T
    - ln r_a!] + ln P(s) - ln Z``. ``rates``: stimuli x neurons (Hz; floored at ``floor_hz`` so a silent
    neuron does not forbid a stimulus). Returns ``posterior`` (trials x stimuli), ``map`` (index of the
    most probable stimulus) and ``log_likelihood``."""
    from scipy.special import gammaln

    c = np.atleast_2d(np.asarray(counts, dtype=float))
    f = np.maximum(np.asarray(rates, dtype=float), floor_hz) * window_s
    if c.shape[1] != f.shape[1]:
        raise ConfigError(f"counts have {c.shape[1]} neurons and the tuning table {f.shape[1]}")
    loglik = c @ np.log(f).T - f.sum(axis=1)[None, :] - gammaln(c + 1).sum(axis=1)[:, None]
    logprior = np.log(np.full(f.shape[0], 1.0 / f.shape[0]) if prior is None else np.asarray(prior, dtype=float))
    lp = loglik + logprior[None, :]
    lp -= lp.max(axis=1, keepdims=True)
    post = np.exp(lp)
    post /= post.sum(axis=1, keepdims=True)
    return {"posterior": post, "map": np.argmax(post, axis=1), "log_likelihood": loglik}


def phase_of_firing(spike_times: Any, signal: Any, sfreq: float, band: tuple[float, float], *,
                    order: int = 4) -> dict[str, Any]:
    """The phase of an oscillation at each spike (the notes' temporal code): the signal band-passed with a
    zero-phase Butterworth filter (``sosfiltfilt``), its Hilbert phase (0 at the peak) read at the nearest
    sample of each spike. Returns the ``phases`` (rad), their circular ``mean_phase``, the resultant length
    ``plv``, and the Rayleigh test's ``p_value`` (Fisher 1993, eq. 4.17's approximation)."""
    from scipy import signal as sig

    x = np.asarray(signal, dtype=float).ravel()
    lo, hi = band
    if not 0 < lo < hi < sfreq / 2:
        raise ConfigError(f"band {band} must lie within (0, {sfreq / 2:g}) Hz")
    sos = sig.butter(order, [lo, hi], btype="bandpass", fs=sfreq, output="sos")
    phase = np.angle(sig.hilbert(sig.sosfiltfilt(sos, x)))
    s = _spikes(spike_times)
    idx = np.round(s * sfreq).astype(np.int64)
    idx = idx[(idx >= 0) & (idx < x.size)]
    ph = phase[idx]
    n = ph.size
    if n == 0:
        return {"phases": ph, "mean_phase": math.nan, "plv": math.nan, "p_value": math.nan, "n": 0}
    z = np.mean(np.exp(1j * ph))
    r = float(abs(z))
    rn = n * r
    p = math.exp(math.sqrt(1 + 4 * n + 4 * (n * n - rn * rn)) - (1 + 2 * n))
    return {"phases": ph, "mean_phase": float(np.angle(z)), "plv": r, "p_value": min(1.0, p), "n": n}
