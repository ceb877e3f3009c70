"""Circuit analysis (rtneuro.analysis.circuits) against networkx, closed forms for Poisson trains, and a simulated network."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest

from rtneuro.analysis.circuits import (
    TRIAD_NAMES,
    adjacency,
    clustering,
    graph_measures,
    modularity,
    path_lengths,
    population_transfer_entropy,
    reciprocity,
    spike_statistics,
    triad_census,
)
from rtneuro.errors import ConfigError
from rtneuro.models.network import Connectivity


def _random_digraph(n: int, p: float, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).random((n, n)) < p
    np.fill_diagonal(a, False)
    return a


@pytest.mark.parametrize("n, p, seed", [(12, 0.3, 0), (40, 0.1, 1), (60, 0.25, 2)])
def test_graph_measures_equal_networkx(n, p, seed):
    a = _random_digraph(n, p, seed)
    g = nx.DiGraph(a)
    assert reciprocity(a) == pytest.approx(nx.reciprocity(g), abs=1e-12)
    np.testing.assert_allclose(clustering(a), [nx.clustering(g)[i] for i in range(n)], atol=1e-12)
    census = triad_census(a)
    assert census == nx.triadic_census(g) and sum(census.values()) == n * (n - 1) * (n - 2) // 6
    pl = path_lengths(a)
    lengths = dict(nx.all_pairs_shortest_path_length(g))
    d = [lengths[i][j] for i in range(n) for j in lengths[i] if i != j]
    assert pl["mean"] == pytest.approx(np.mean(d), abs=1e-12) and pl["reachable"] == pytest.approx(len(d) / (n * (n - 1)))
    assert pl["diameter"] == max(d) and pl["efficiency"] == pytest.approx(sum(1 / x for x in d) / (n * (n - 1)), abs=1e-12)
    parts = [set(range(0, n // 2)), set(range(n // 2, n))]
    assert modularity(a, parts) == pytest.approx(nx.community.modularity(g, parts), abs=1e-12)


def test_every_triad_class_is_recognised_from_any_labelling():
    from rtneuro.analysis.circuits import _TRIAD_EXAMPLES

    rng = np.random.default_rng(3)
    for name, edges in _TRIAD_EXAMPLES.items():
        for _ in range(6):
            perm = rng.permutation(3)
            a = np.zeros((3, 3), dtype=bool)
            for i, j in edges:
                a[perm[i], perm[j]] = True
            census = triad_census(a)
            assert census[name] == 1 and sum(census.values()) == 1 and census == nx.triadic_census(nx.DiGraph(a))
    assert set(TRIAD_NAMES) == set(nx.triadic_census(nx.DiGraph()).keys())


def test_an_rtneuro_network_and_a_modular_one():
    conn = Connectivity.random(200, 200, 0.05, weight=0.5, seed=4)
    a = adjacency(conn)
    pre, post = conn.pairs()
    keep = pre != post
    assert a.sum() == len(set(zip(pre[keep].tolist(), post[keep].tolist(), strict=True)))
    m = graph_measures(conn)
    # Erdos-Renyi: density p, reciprocity p, clustering p (Fagiolo), mean path ~ ln n / ln(np)
    assert m["density"] == pytest.approx(0.05, abs=0.005) and m["reciprocity"] == pytest.approx(0.05, abs=0.02)
    assert m["clustering"] == pytest.approx(0.05, abs=0.01) and m["paths"]["reachable"] == 1.0
    assert m["paths"]["mean"] == pytest.approx(math.log(200) / math.log(200 * 0.05), rel=0.1)
    # two dense modules, sparsely linked: a high modularity for the true split, about 0 for a random one
    rng = np.random.default_rng(5)
    b = rng.random((100, 100)) < 0.02
    b[:50, :50] |= rng.random((50, 50)) < 0.3
    b[50:, 50:] |= rng.random((50, 50)) < 0.3
    labels = np.repeat([0, 1], 50)
    assert modularity(b, labels) > 0.35 > 0.05 > abs(modularity(b, rng.permutation(labels)))
    with pytest.raises(ConfigError, match="square"):
        adjacency(np.zeros((3, 4)))


def test_spike_statistics_of_poisson_regular_and_synchronous_populations():
    rng = np.random.default_rng(6)
    t_stop = 200.0
    poisson = [np.sort(rng.uniform(0, t_stop, rng.poisson(10 * t_stop))) for _ in range(50)]
    s = spike_statistics(poisson, 0.0, t_stop)
    assert s["mean_rate"] == pytest.approx(10.0, rel=0.02)
    assert s["mean_cv"] == pytest.approx(1.0, abs=0.03) and s["mean_fano"] == pytest.approx(1.0, abs=0.05)  # Poisson: 1 and 1
    assert s["synchrony"] == pytest.approx(1 / math.sqrt(50), abs=0.03)  # independent: chi ~ 1/sqrt(N)
    regular = [np.arange(0.05 + 0.01 * i, t_stop, 0.1) for i in range(10)]
    r = spike_statistics(regular, 0.0, t_stop)
    assert r["mean_cv"] < 1e-9 and r["mean_fano"] < 0.05 and r["mean_rate"] == pytest.approx(10.0, rel=0.01)
    shared = np.sort(rng.uniform(0, t_stop, 2000))
    sync = spike_statistics([shared] * 20, 0.0, t_stop)
    assert sync["synchrony"] == pytest.approx(1.0, abs=1e-9)
    # (times, ids) form: the same numbers
    times = np.concatenate(poisson[:5])
    ids = np.concatenate([np.full(len(t), i) for i, t in enumerate(poisson[:5])])
    np.testing.assert_array_equal(spike_statistics((times, ids), 0.0, t_stop)["rates"], spike_statistics(poisson[:5], 0.0, t_stop)["rates"])
    # an oscillating population: the spectrum of its rate peaks at the oscillation
    osc = []
    for _ in range(40):
        t = np.sort(rng.uniform(0, 20.0, 4000))
        osc.append(t[rng.random(t.size) < 0.5 * (1 + np.sin(2 * np.pi * 8.0 * t))])
    f, p = spike_statistics(osc, 0.0, 20.0, bin_s=0.005)["spectrum"]
    assert abs(f[np.argmax(p)] - 8.0) < 1.0


def test_transfer_entropy_between_two_coupled_populations():
    rng = np.random.default_rng(7)
    n = 4000
    a = np.zeros(n)
    e = rng.standard_normal(n)
    for t in range(1, n):
        a[t] = 0.8 * a[t - 1] + e[t]  # Markov of order 1: its own past says all that b's could
    b = 0.6 * np.roll(a, 1) + 0.8 * rng.standard_normal(n)
    assert population_transfer_entropy(a, b) > 0.1 > 0.01 > abs(population_transfer_entropy(b, a))
    with pytest.raises(ConfigError, match="gaussian"):
        population_transfer_entropy(a, b, method="binned")


def test_the_circuit_analyser_puts_connectivity_dynamics_and_information_together():
    from rtneuro.analysis.circuits import analyze_circuit

    rng = np.random.default_rng(8)
    n, t_stop, dt = 40, 50.0, 0.005
    a = _random_digraph(n, 0.1, 9)
    # population A (0-19) fires at a modulated rate; population B (20-39) follows A one bin later
    steps = int(t_stop / dt)
    drive = np.zeros(steps)
    for k in range(1, steps):
        drive[k] = 0.9 * drive[k - 1] + rng.standard_normal()
    ra = 20 * np.exp(0.3 * drive)
    rb = 20 * np.exp(0.3 * np.roll(drive, 1))
    spikes = [np.nonzero(rng.random(steps) < ra * dt)[0] * dt for _ in range(20)]
    spikes += [np.nonzero(rng.random(steps) < rb * dt)[0] * dt for _ in range(20)]
    # a stimulus that neuron 0's counts depend on
    stim = rng.integers(0, 4, 400)
    counts = np.column_stack([rng.poisson(2 + 3 * stim)] + [rng.poisson(3, 400) for _ in range(n - 1)])
    out = analyze_circuit(a, {"spikes": spikes, "t_start": 0.0, "t_stop": t_stop, "stimulus": stim, "counts": counts,
                              "populations": {"A": range(20), "B": range(20, 40)}}, {"bin_s": dt})
    assert out["connectivity"]["neurons"] == n and out["connectivity"]["triads"] == nx.triadic_census(nx.DiGraph(a))
    assert out["dynamics"]["mean_rate"] == pytest.approx(np.mean([len(s) for s in spikes]) / t_stop)
    mi = out["information"]["stimulus_mi"]
    assert mi[0] > 0.3 and np.max(np.abs(mi[1:])) < 0.05
    te = out["information"]["transfer_entropy"]
    # B follows A: more flows A -> B than back (not 0 back: both rates are noisy views of one hidden drive)
    assert te["A->B"] > 2 * abs(te["B->A"]) and te["A->B"] > 0.05
