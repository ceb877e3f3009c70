"""Circuit analysis: the connectivity of a network, the statistics of its spiking, information between populations.

Connectivity is directed and binary (a synapse or none; weights ignored
unless stated): an rtneuro :class:`~rtneuro.models.network.Connectivity`
(square), a dense adjacency matrix (``A[i, j]``: ``i -> j``), or a SciPy
sparse matrix. References: Newman, *Networks* (2nd ed., 2018), ch. 6-7 and
14 (degrees, reciprocity, path lengths, modularity; the directed modularity
of Leicht & Newman 2008); Fagiolo (2007, Phys. Rev. E 76:026107) for the
clustering of directed graphs; Holland & Leinhardt (1976) for the triad
census (the 16 three-node motifs; Milo et al. 2002); Softky & Koch (1993)
for the ISI coefficient of variation; Golomb (2007, Scholarpedia 2:1347) for
the synchrony measure chi.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from ..errors import ConfigError

__all__ = ["adjacency", "degrees", "reciprocity", "clustering", "path_lengths", "triad_census", "TRIAD_NAMES",
           "modularity", "graph_measures", "spike_statistics", "population_transfer_entropy", "analyze_circuit"]

#: the 16 isomorphism classes of directed triads, in the order of the census (Holland & Leinhardt 1976)
TRIAD_NAMES = ("003", "012", "102", "021D", "021U", "021C", "111D", "111U", "030T", "030C", "201", "120D", "120U",
               "120C", "210", "300")

#: one representative of each class (nodes 0, 1, 2; edges i -> j)
_TRIAD_EXAMPLES = {
    "003": [], "012": [(0, 1)], "102": [(0, 1), (1, 0)], "021D": [(2, 0), (2, 1)], "021U": [(0, 2), (1, 2)],
    "021C": [(0, 2), (2, 1)], "111D": [(0, 1), (1, 0), (2, 0)], "111U": [(0, 1), (1, 0), (0, 2)],
    "030T": [(0, 1), (2, 1), (0, 2)], "030C": [(0, 2), (2, 1), (1, 0)], "201": [(0, 1), (1, 0), (2, 0), (0, 2)],
    "120D": [(0, 1), (1, 0), (2, 0), (2, 1)], "120U": [(0, 1), (1, 0), (0, 2), (1, 2)],
    "120C": [(0, 1), (1, 0), (0, 2), (2, 1)], "210": [(0, 1), (1, 0), (0, 2), (2, 1), (1, 2)],
    "300": [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)],
}
#: bit of each possible edge of a triad (a, b, c): a->b, b->a, a->c, c->a, b->c, c->b
_BITS = {(0, 1): 1, (1, 0): 2, (0, 2): 4, (2, 0): 8, (1, 2): 16, (2, 1): 32}


def _code_table() -> np.ndarray:
    """Class index of each of the 64 edge patterns: the class of the representative it is isomorphic to."""
    import itertools

    table = np.full(64, -1, dtype=np.int64)
    for k, name in enumerate(TRIAD_NAMES):
        for perm in itertools.permutations(range(3)):
            code = sum(_BITS[(perm[i], perm[j])] for i, j in _TRIAD_EXAMPLES[name])
            table[code] = k
    assert (table >= 0).all()
    return table


_CODE_TO_CLASS = _code_table()


def adjacency(net: Any) -> np.ndarray:
    """A dense boolean adjacency matrix (``A[i, j]``: ``i -> j``; self-connections dropped)."""
    from ..models.network import Connectivity

    if isinstance(net, Connectivity):
        if net.n_pre != net.n_post:
            raise ConfigError(f"a circuit is one population: this connectivity is {net.n_pre} x {net.n_post}")
        a = np.zeros((net.n_pre, net.n_post), dtype=bool)
        pre, post = net.pairs()
        a[pre, post] = True
    elif hasattr(net, "toarray"):
        a = np.asarray(net.toarray()) != 0
    else:
        a = np.asarray(net) != 0
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ConfigError("the adjacency matrix must be square (neurons x neurons)")
    a = a.copy()
    np.fill_diagonal(a, False)
    return a


def degrees(net: Any) -> dict[str, np.ndarray]:
    """In-, out- and total degree of each neuron."""
    a = adjacency(net)
    k_in, k_out = a.sum(axis=0), a.sum(axis=1)
    return {"in": k_in, "out": k_out, "total": k_in + k_out}


def reciprocity(net: Any) -> float:
    """The fraction of connections whose reverse also exists (Newman sec. 7.5)."""
    a = adjacency(net)
    m = a.sum()
    return float((a & a.T).sum() / m) if m else math.nan


def clustering(net: Any) -> np.ndarray:
    """Fagiolo's clustering of each neuron of a directed graph: ``[(A + A^T)^3]_ii / (2 [d_i (d_i - 1) - 2 d<->_i])``
    (``d``: total degree, ``d<->``: reciprocated pairs); 0 where the denominator is 0."""
    a = adjacency(net).astype(np.float64)
    s = a + a.T
    num = np.einsum("ij,jk,ki->i", s, s, s)
    d = a.sum(axis=0) + a.sum(axis=1)
    recip = np.einsum("ij,ji->i", a, a)
    den = 2.0 * (d * (d - 1) - 2 * recip)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def path_lengths(net: Any) -> dict[str, float]:
    """Shortest directed paths (breadth-first, ``scipy.sparse.csgraph``): the mean over the ordered pairs that
    are connected, the fraction of pairs that are, the diameter, and the global efficiency (mean of ``1/d``
    over all ordered pairs, 0 where unreachable; Latora & Marchiori 2001)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import shortest_path

    a = adjacency(net)
    n = a.shape[0]
    if n < 2:
        raise ConfigError("path lengths need at least two neurons")
    d = shortest_path(csr_matrix(a.astype(np.float64)), method="D", unweighted=True, directed=True)
    off = ~np.eye(n, dtype=bool)
    reach = np.isfinite(d) & off
    return {"mean": float(d[reach].mean()) if reach.any() else math.nan, "reachable": float(reach.sum() / off.sum()),
            "diameter": float(d[reach].max()) if reach.any() else math.nan,
            "efficiency": float(np.where(reach, 1.0 / np.where(reach, d, 1.0), 0.0)[off].mean())}


@njit(cache=True, nogil=True)
def _census(a: np.ndarray, table: np.ndarray) -> np.ndarray:
    n = a.shape[0]
    out = np.zeros(16, np.int64)
    for i in range(n):
        for j in range(i + 1, n):
            ij = (1 if a[i, j] else 0) + (2 if a[j, i] else 0)
            for k in range(j + 1, n):
                code = ij + (4 if a[i, k] else 0) + (8 if a[k, i] else 0) + (16 if a[j, k] else 0) + (32 if a[k, j] else 0)
                out[table[code]] += 1
    return out


def triad_census(net: Any) -> dict[str, int]:
    """How many of the graph's node triples fall in each of the 16 directed three-node motif classes
    (:data:`TRIAD_NAMES`), over all ``n (n-1) (n-2) / 6`` triples (a numba loop; n of a few thousand)."""
    a = adjacency(net)
    counts = _census(np.ascontiguousarray(a), _CODE_TO_CLASS)
    return {name: int(c) for name, c in zip(TRIAD_NAMES, counts, strict=True)}


def modularity(net: Any, communities: Any) -> float:
    """Directed modularity of a partition (Leicht & Newman 2008): ``Q = (1/m) sum_ij [A_ij - k_i^out k_j^in / m]
    delta(c_i, c_j)``; ``communities``: one label per neuron, or a list of sets of neurons."""
    a = adjacency(net).astype(np.float64)
    n = a.shape[0]
    if isinstance(communities, (list, tuple)) and communities and isinstance(communities[0], (set, frozenset, list, tuple)):
        labels = np.full(n, -1)
        for c, members in enumerate(communities):
            labels[list(members)] = c
        if (labels < 0).any():
            raise ConfigError("the communities must cover every neuron")
    else:
        labels = np.asarray(communities)
        if labels.shape != (n,):
            raise ConfigError(f"give one community label per neuron ({n})")
    m = a.sum()
    if m == 0:
        return math.nan
    same = labels[:, None] == labels[None, :]
    expected = np.outer(a.sum(axis=1), a.sum(axis=0)) / m
    return float(((a - expected) * same).sum() / m)


def graph_measures(net: Any, communities: Any = None, *, census: bool = True) -> dict[str, Any]:
    """The connectivity summary of a circuit: size, density, degree statistics, reciprocity, mean clustering,
    path lengths, the triad census (optional) and the modularity of ``communities`` (when given)."""
    a = adjacency(net)
    n = a.shape[0]
    deg = degrees(a)
    out: dict[str, Any] = {"neurons": n, "connections": int(a.sum()), "density": float(a.sum() / (n * (n - 1))) if n > 1 else math.nan,
                           "in_degree": {"mean": float(deg["in"].mean()), "sd": float(deg["in"].std())},
                           "out_degree": {"mean": float(deg["out"].mean()), "sd": float(deg["out"].std())},
                           "reciprocity": reciprocity(a), "clustering": float(clustering(a).mean()), "paths": path_lengths(a)}
    if census:
        out["triads"] = triad_census(a)
    if communities is not None:
        out["modularity"] = modularity(a, communities)
    return out


def _trains(spikes: Any, n: int | None) -> list[np.ndarray]:
    """A list of spike-time arrays, from such a list or from ``(times, neuron ids)``."""
    if isinstance(spikes, tuple) and len(spikes) == 2:
        times, ids = (np.asarray(x) for x in spikes)
        count = int(ids.max()) + 1 if n is None and ids.size else (n or 0)
        return [np.sort(times[ids == i].astype(float)) for i in range(count)]
    return [np.sort(np.asarray(t, dtype=float)) for t in spikes]


def spike_statistics(spikes: Any, t_start: float, t_stop: float, *, bin_s: float = 0.01, fano_bin_s: float = 0.1,
                     n_neurons: int | None = None) -> dict[str, Any]:
    """The spiking of a population over ``[t_start, t_stop)``: ``spikes`` is a list of spike-time arrays or
    ``(times, neuron ids)``.

    Per neuron: ``rates`` (Hz), ``cv`` (ISI SD / mean; NaN below 3 spikes), ``fano`` (variance over mean of
    the counts in windows of ``fano_bin_s``). Population: their means, ``synchrony`` (Golomb's chi: the SD
    of the population-mean binned rate over the root-mean-square of the neurons' SDs, 0 for independent
    neurons as N grows, 1 for identical ones), the population rate (Hz, bins of ``bin_s``) and its
    spectrum (Welch, Hann, 50 % overlap).
    """
    trains = [t[(t >= t_start) & (t < t_stop)] for t in _trains(spikes, n_neurons)]
    if not trains:
        raise ConfigError("no neurons")
    span = t_stop - t_start
    rates = np.array([t.size / span for t in trains])
    cv = np.array([np.std(np.diff(t)) / np.mean(np.diff(t)) if t.size >= 3 else np.nan for t in trains])
    fe = t_start + fano_bin_s * np.arange(int(span / fano_bin_s + 1e-9) + 1)
    counts = np.array([np.histogram(t, fe)[0] for t in trains], dtype=float)
    fano = np.divide(counts.var(axis=1), counts.mean(axis=1), out=np.full(len(trains), np.nan), where=counts.mean(axis=1) > 0)
    be = t_start + bin_s * np.arange(int(span / bin_s + 1e-9) + 1)
    binned = np.array([np.histogram(t, be)[0] for t in trains], dtype=float) / bin_s
    pop = binned.mean(axis=0)
    indiv = binned.var(axis=1)
    chi = float(math.sqrt(pop.var() / indiv.mean())) if indiv.mean() > 0 else math.nan
    from scipy.signal import welch

    nper = min(pop.size, 256)
    freqs, psd = welch(pop - pop.mean(), fs=1.0 / bin_s, nperseg=nper)
    return {"rates": rates, "cv": cv, "fano": fano, "mean_rate": float(rates.mean()), "mean_cv": float(np.nanmean(cv)) if np.isfinite(cv).any() else math.nan,
            "mean_fano": float(np.nanmean(fano)) if np.isfinite(fano).any() else math.nan, "synchrony": chi,
            "population_rate": (0.5 * (be[:-1] + be[1:]), pop), "spectrum": (freqs, psd)}


def population_transfer_entropy(source_rate: Any, target_rate: Any, *, method: str = "gaussian", **kw: Any) -> float:
    """Transfer entropy from one population's binned rate to another's (:mod:`rtneuro.analysis.information`,
    ``gaussian`` or ``ksg``)."""
    from . import information as it

    if method == "gaussian":
        return it.transfer_entropy_gaussian(source_rate, target_rate, **kw)
    if method == "ksg":
        return it.transfer_entropy_ksg(source_rate, target_rate, **kw)
    raise ConfigError(f"method={method!r}: use 'gaussian' or 'ksg'")


def analyze_circuit(circuit: Any, activity: dict, params: dict | None = None) -> dict[str, Any]:
    """The notes' circuit analyser: ``connectivity`` (:func:`graph_measures`), ``dynamics``
    (:func:`spike_statistics`) and ``information``.

    ``activity``: ``spikes`` (a list of trains or ``(times, ids)``), ``t_start``, ``t_stop``; optionally
    ``stimulus`` and ``counts`` (trials, and trials x neurons spike counts) for the stimulus-response
    mutual information of each neuron (plug-in with Miller-Madow correction, counts as symbols), and
    ``populations`` (a dict of name -> neuron indices) for the transfer entropy (Gaussian) between the
    binned population rates of every ordered pair. ``params``: ``communities`` (for the modularity),
    ``bin_s``, ``census``.
    """
    from . import information as it

    p = params or {}
    out: dict[str, Any] = {"connectivity": graph_measures(circuit, p.get("communities"), census=p.get("census", True))}
    n = adjacency(circuit).shape[0]
    t0, t1 = float(activity["t_start"]), float(activity["t_stop"])
    bin_s = float(p.get("bin_s", 0.01))
    stats = spike_statistics(activity["spikes"], t0, t1, bin_s=bin_s, n_neurons=n)
    out["dynamics"] = stats
    info: dict[str, Any] = {}
    if "stimulus" in activity and "counts" in activity:
        counts = np.asarray(activity["counts"])
        info["stimulus_mi"] = np.array([it.mutual_info_discrete(activity["stimulus"], counts[:, j], bias="miller_madow")
                                        for j in range(counts.shape[1])])
    if "populations" in activity:
        trains = _trains(activity["spikes"], n)
        edges = t0 + bin_s * np.arange(int((t1 - t0) / bin_s + 1e-9) + 1)
        rates = {name: np.mean([np.histogram(trains[i], edges)[0] for i in idx], axis=0) / bin_s
                 for name, idx in activity["populations"].items()}
        info["transfer_entropy"] = {f"{a}->{b}": population_transfer_entropy(rates[a], rates[b])
                                    for a in rates for b in rates if a != b}
    out["information"] = info
    return out
