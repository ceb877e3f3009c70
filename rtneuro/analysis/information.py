"""Information theory for neural data: entropy, mutual information, channel capacity, transfer entropy.

Every quantity is in nats (``base=2`` gives bits). Estimators, with their
references:

- discrete variables: plug-in (maximum-likelihood) entropy and mutual
  information, optionally with the Miller-Madow bias correction
  ``(m - 1) / (2 N)`` per entropy (Miller 1955; Panzeri et al. 2007,
  J. Neurophysiol. 98:1064, sec. "Bias correction");
- continuous variables: Kraskov, Stoegbauer & Grassberger (2004, Phys. Rev.
  E 69:066138), algorithm 1 in the maximum norm; conditional mutual
  information by Frenzel & Pompe (2007, Phys. Rev. Lett. 99:204101);
- Gaussian and Gaussian-copula mutual information (Ince et al. 2017, Hum.
  Brain Mapp. 38:1541), with their analytic bias correction;
- channel capacity by the Blahut-Arimoto algorithm (Blahut 1972; Arimoto
  1972; Cover & Thomas, Elements of Information Theory, sec. 10.8), and the
  coding efficiency ``I(S;R) / C`` of the notes (Dayan & Abbott, ch. 4);
- transfer entropy ``T_{Y->X} = I(X_t ; Y_{t-lag..} | X_{t-1..})`` (Schreiber
  2000, Phys. Rev. Lett. 85:461): discrete (plug-in), Gaussian (half the
  Granger causality, Barnett, Barrett & Seth 2009, Phys. Rev. Lett.
  103:238701), and KSG (Frenzel-Pompe conditional MI);
- significance against surrogates (circular shifts or shuffles of the
  source).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..kernels.information import count_within, knn_radius

__all__ = ["entropy_discrete", "mutual_info_discrete", "conditional_mutual_info_discrete", "mutual_info_ksg",
           "conditional_mutual_info_ksg", "mutual_info_gaussian", "mutual_info_gcmi", "copula_normalize",
           "channel_capacity", "coding_efficiency", "transfer_entropy_discrete", "transfer_entropy_gaussian",
           "transfer_entropy_ksg", "delay_embed", "surrogate_test"]

#: the jitter added to continuous data before a KSG estimate, in units of each variable's standard deviation
#: (breaks the ties of quantised data, Kraskov et al. 2004 sec. II; seeded, so results are reproducible)
JITTER = 1e-10


def _to_base(x: float, base: float | None) -> float:
    return x / math.log(base) if base else x


# -- discrete -------------------------------------------------------------------


def _labels(x: Any) -> np.ndarray:
    """Integer labels of the rows of ``x`` (a 1-D sequence of symbols or a 2-D array of joint symbols)."""
    a = np.asarray(x)
    if a.ndim == 0 or a.shape[0] == 0:
        raise ConfigError("discrete estimators need at least one observation")
    if a.ndim == 1:
        return np.unique(a, return_inverse=True)[1].ravel()
    return np.unique(a.reshape(a.shape[0], -1), axis=0, return_inverse=True)[1].ravel()


def _joint(*labels: np.ndarray) -> np.ndarray:
    return _labels(np.column_stack(labels))


def _h(labels: np.ndarray, bias: str) -> float:
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    n = counts.sum()
    p = counts / n
    h = float(-(p * np.log(p)).sum())
    if bias == "miller_madow":
        h += (len(counts) - 1) / (2.0 * n)
    elif bias != "none":
        raise ConfigError(f"bias={bias!r}: use 'none' (plug-in) or 'miller_madow'")
    return h


def entropy_discrete(x: Any, *, bias: str = "none", base: float | None = None) -> float:
    """Entropy ``H(X) = -sum_x p(x) ln p(x)`` of observed symbols (rows of a 2-D ``x`` are joint symbols).

    ``bias="miller_madow"`` adds ``(m - 1) / (2 N)`` (``m`` symbols seen, ``N`` observations).
    """
    return _to_base(_h(_labels(x), bias), base)


def mutual_info_discrete(s: Any, r: Any, *, bias: str = "none", base: float | None = None) -> float:
    """``I(S;R) = sum_{s,r} p(s,r) ln[p(s,r) / (p(s) p(r))] = H(S) + H(R) - H(S,R)`` of paired observations.

    Plug-in by default (equal to scikit-learn's ``mutual_info_score``); ``bias="miller_madow"`` corrects
    each entropy, which removes the first-order bias ``(m_SR - m_S - m_R + 1) / (2 N)``.
    """
    ls, lr = _labels(s), _labels(r)
    if len(ls) != len(lr):
        raise ConfigError(f"S has {len(ls)} observations and R {len(lr)}: they must be paired")
    return _to_base(_h(ls, bias) + _h(lr, bias) - _h(_joint(ls, lr), bias), base)


def conditional_mutual_info_discrete(x: Any, y: Any, z: Any, *, bias: str = "none", base: float | None = None) -> float:
    """``I(X;Y|Z) = H(X,Z) + H(Y,Z) - H(X,Y,Z) - H(Z)`` of paired observations."""
    lx, ly, lz = _labels(x), _labels(y), _labels(z)
    if not len(lx) == len(ly) == len(lz):
        raise ConfigError("X, Y and Z must have the same number of observations")
    return _to_base(_h(_joint(lx, lz), bias) + _h(_joint(ly, lz), bias) - _h(_joint(lx, ly, lz), bias) - _h(lz, bias), base)


# -- continuous: KSG -------------------------------------------------------------


def _continuous(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ConfigError(f"{name}: give samples as a 1-D array or a 2-D array (samples x dimensions)")
    if not np.isfinite(a).all():
        raise ConfigError(f"{name}: holds NaN or infinite values; drop or fill them first")
    return a


def _prepare(parts: list[np.ndarray], standardize: bool, jitter: float, seed: int) -> np.ndarray:
    data = np.hstack(parts)
    if standardize:
        sd = data.std(axis=0)
        data = (data - data.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    if jitter > 0:
        sd = data.std(axis=0)
        data = data + jitter * np.where(sd > 0, sd, 1.0) * np.random.default_rng(seed).standard_normal(data.shape)
    return np.ascontiguousarray(data)


def _digamma(n: np.ndarray) -> np.ndarray:
    from scipy.special import digamma

    return digamma(n.astype(np.float64))


def _ksg_counts(data: np.ndarray, k: int, spaces: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The joint space's k-th neighbour radius and, in each marginal space, the points strictly within it."""
    n = data.shape[0]
    if not 1 <= k < n:
        raise ConfigError(f"k={k}: needs 1 <= k < the number of samples ({n})")
    joint = np.arange(data.shape[1])
    eps = knn_radius(data, joint, np.argsort(data[:, 0], kind="stable"), k)
    if not (eps > 0).all():
        raise ConfigError("some samples repeat exactly, so the neighbour distances are 0: give jitter > 0 "
                          "(the default adds 1e-10 of each standard deviation)")
    counts = [count_within(data, cols, np.argsort(data[:, cols[0]], kind="stable"), eps) for cols in spaces]
    return eps, counts


def mutual_info_ksg(x: Any, y: Any, *, k: int = 4, standardize: bool = True, jitter: float = JITTER, seed: int = 0,
                    base: float | None = None) -> float:
    """Kraskov-Stoegbauer-Grassberger estimate of ``I(X;Y)`` for continuous ``x`` and ``y`` (1-D or samples x dims).

    Algorithm 1 of Kraskov et al. (2004): ``I = psi(k) + psi(N) - < psi(n_x + 1) + psi(n_y + 1) >``, with
    ``eps_i`` the max-norm distance from sample ``i`` to its ``k``-th neighbour in the joint space and
    ``n_x`` (``n_y``) the samples strictly within ``eps_i`` in the marginal space. Each variable is scaled to
    unit variance first (``standardize``) and ``jitter`` (in standard deviations, seeded) breaks ties.
    Its bias is small for ``k`` of 3 to 10; it can be slightly negative for independent variables.
    """
    a, b = _continuous(x, "x"), _continuous(y, "y")
    if len(a) != len(b):
        raise ConfigError(f"x has {len(a)} samples and y {len(b)}: they must be paired")
    data = _prepare([a, b], standardize, jitter, seed)
    dx = a.shape[1]
    _, (nx, ny) = _ksg_counts(data, k, [np.arange(dx), np.arange(dx, data.shape[1])])
    n = len(data)
    val = float(_digamma(np.array([k]))[0] + _digamma(np.array([n]))[0] - np.mean(_digamma(nx + 1) + _digamma(ny + 1)))
    return _to_base(val, base)


def conditional_mutual_info_ksg(x: Any, y: Any, z: Any, *, k: int = 4, standardize: bool = True, jitter: float = JITTER,
                                seed: int = 0, base: float | None = None) -> float:
    """``I(X;Y|Z)`` by Frenzel & Pompe (2007): ``psi(k) - < psi(n_xz + 1) + psi(n_yz + 1) - psi(n_z + 1) >``.

    Radii from the joint space (X, Y, Z) in the max norm; counts strictly within them in (X, Z), (Y, Z)
    and Z. Scaling and jitter as :func:`mutual_info_ksg`.
    """
    a, b, c = _continuous(x, "x"), _continuous(y, "y"), _continuous(z, "z")
    if not len(a) == len(b) == len(c):
        raise ConfigError("x, y and z must have the same number of samples")
    data = _prepare([a, b, c], standardize, jitter, seed)
    dx, dy, dz = a.shape[1], b.shape[1], c.shape[1]
    zc = np.arange(dx + dy, dx + dy + dz)
    xz = np.concatenate([zc, np.arange(dx)])  # the first column sorts: Z's, shared by the three searches
    yz = np.concatenate([zc, np.arange(dx, dx + dy)])
    _, (nxz, nyz, nz) = _ksg_counts(data, k, [xz, yz, zc])
    val = float(_digamma(np.array([k]))[0] - np.mean(_digamma(nxz + 1) + _digamma(nyz + 1) - _digamma(nz + 1)))
    return _to_base(val, base)


# -- Gaussian and Gaussian copula ---------------------------------------------------


def _gauss_entropy_terms(c: np.ndarray) -> float:
    """``1/2 ln det(2 pi e C)``."""
    sign, logdet = np.linalg.slogdet(c)
    if sign <= 0:
        raise ConfigError("the covariance is singular (a constant or linearly dependent variable): drop it")
    return 0.5 * (logdet + c.shape[0] * (math.log(2 * math.pi) + 1.0))


def mutual_info_gaussian(x: Any, y: Any, *, bias_correct: bool = True, base: float | None = None) -> float:
    """``I(X;Y) = 1/2 ln[det C_X det C_Y / det C_XY]`` of jointly Gaussian variables (sample covariance).

    For one dimension each this is ``-1/2 ln(1 - rho^2)``. ``bias_correct`` removes the entropies' bias
    under Gaussianity (Ince et al. 2017, eq. 4; Oyman et al.): each ``d``-dimensional entropy loses
    ``d (ln 2 - ln(N - 1)) / 2 + sum_{i=1..d} psi((N - i) / 2) / 2``.
    """
    a, b = _continuous(x, "x"), _continuous(y, "y")
    if len(a) != len(b):
        raise ConfigError(f"x has {len(a)} samples and y {len(b)}: they must be paired")
    n, dx, dy = len(a), a.shape[1], b.shape[1]
    if n <= dx + dy + 1:
        raise ConfigError(f"{n} samples for {dx + dy} dimensions: too few for a covariance")
    c = np.cov(np.hstack([a, b]), rowvar=False).reshape(dx + dy, dx + dy)
    hx, hy, hxy = _gauss_entropy_terms(c[:dx, :dx]), _gauss_entropy_terms(c[dx:, dx:]), _gauss_entropy_terms(c)
    if bias_correct:
        from scipy.special import digamma

        psi = digamma((n - np.arange(1, dx + dy + 1)) / 2.0) / 2.0
        dterm = (math.log(2.0) - math.log(n - 1.0)) / 2.0
        hx -= dx * dterm + psi[:dx].sum()
        hy -= dy * dterm + psi[:dy].sum()
        hxy -= (dx + dy) * dterm + psi.sum()
    return _to_base(hx + hy - hxy, base)


def copula_normalize(x: Any) -> np.ndarray:
    """Each column's ranks mapped to standard normal quantiles, ``Phi^-1(rank / (N + 1))`` (ties: by order)."""
    from scipy.special import ndtri

    a = _continuous(x, "x")
    ranks = np.argsort(np.argsort(a, axis=0, kind="stable"), axis=0, kind="stable") + 1
    return ndtri(ranks / (a.shape[0] + 1.0))


def mutual_info_gcmi(x: Any, y: Any, *, bias_correct: bool = True, base: float | None = None) -> float:
    """Gaussian-copula mutual information (Ince et al. 2017): :func:`mutual_info_gaussian` of the
    copula-normalised variables. A lower bound on the true MI, invariant to any monotonic transform of
    either variable, and robust for small samples."""
    return mutual_info_gaussian(copula_normalize(x), copula_normalize(y), bias_correct=bias_correct, base=base)


# -- channels --------------------------------------------------------------------


def channel_capacity(p_r_given_s: Any, *, tol: float = 1e-12, max_iter: int = 100_000,
                     base: float | None = None) -> tuple[float, np.ndarray]:
    """Capacity ``C = max_{p(s)} I(S;R)`` of a discrete memoryless channel, by Blahut-Arimoto.

    ``p_r_given_s[s, r]``: each row a distribution over responses. Returns ``(C, p*(s))``. Iterates
    ``p(s) <- p(s) exp D(p(r|s) || p(r)) / Z`` until the upper bound ``max_s D`` and the lower bound
    ``ln Z`` differ by less than ``tol`` (Cover & Thomas, sec. 10.8).
    """
    q = np.asarray(p_r_given_s, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] < 1 or q.shape[1] < 1:
        raise ConfigError("p_r_given_s must be a 2-D array: stimuli x responses")
    if (q < 0).any() or not np.allclose(q.sum(axis=1), 1.0, atol=1e-9):
        raise ConfigError("each row of p_r_given_s must be a probability distribution (non-negative, summing to 1)")
    logq = np.where(q > 0, np.log(np.where(q > 0, q, 1.0)), 0.0)
    p = np.full(q.shape[0], 1.0 / q.shape[0])
    lower = 0.0
    for _ in range(max_iter):
        r = p @ q
        logr = np.where(r > 0, np.log(np.where(r > 0, r, 1.0)), 0.0)
        d = (q * (logq - logr)).sum(axis=1)  # D(p(r|s) || p(r)) per stimulus
        w = p * np.exp(d - d.max())
        z = w.sum()
        lower = math.log(z) + float(d.max())
        upper = float(d.max())
        p = w / z
        if upper - lower < tol:
            break
    return _to_base(lower, base), p


def coding_efficiency(s: Any, r: Any, *, bias: str = "none") -> dict[str, float]:
    """The notes' coding efficiency ``eta = I(S;R) / C``: the information the observed stimulus distribution
    gets through the observed channel ``p(r|s)``, over the channel's capacity. Returns ``mi``, ``capacity``
    (nats) and ``efficiency``."""
    ls, lr = _labels(s), _labels(r)
    if len(ls) != len(lr):
        raise ConfigError(f"S has {len(ls)} observations and R {len(lr)}: they must be paired")
    table = np.zeros((ls.max() + 1, lr.max() + 1))
    np.add.at(table, (ls, lr), 1.0)
    cap, _ = channel_capacity(table / table.sum(axis=1, keepdims=True))
    mi = mutual_info_discrete(ls, lr, bias=bias)
    return {"mi": mi, "capacity": cap, "efficiency": mi / cap if cap > 0 else math.nan}


# -- transfer entropy ------------------------------------------------------------


def delay_embed(source: Any, target: Any, *, k: int = 1, l: int = 1, lag: int = 1,  # noqa: E741 - the literature's name
                tau: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(future, target_past, source_past)`` rows for ``T_{Y->X}`` with ``Y = source``, ``X = target``.

    At each time ``t``: ``future = X_t``; ``target_past = X_{t-1}, X_{t-1-tau}, ..., k values``;
    ``source_past = Y_{t-lag}, Y_{t-lag-tau}, ..., l values``.
    """
    x, y = np.asarray(target), np.asarray(source)
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"source has {y.shape[0]} samples and target {x.shape[0]}: they must be simultaneous")
    if min(k, l, lag, tau) < 1:
        raise ConfigError("k, l, lag and tau must be at least 1")
    start = max(1 + (k - 1) * tau, lag + (l - 1) * tau)
    n = x.shape[0] - start
    if n < 2:
        raise ConfigError(f"{x.shape[0]} samples are too few for k={k}, l={l}, lag={lag}, tau={tau}")
    t = np.arange(start, x.shape[0])
    fut = x[t]
    xp = np.stack([x[t - 1 - i * tau] for i in range(k)], axis=1)
    yp = np.stack([y[t - lag - i * tau] for i in range(l)], axis=1)
    return fut, xp.reshape(n, -1), yp.reshape(n, -1)


def transfer_entropy_discrete(source: Any, target: Any, *, k: int = 1, l: int = 1, lag: int = 1,  # noqa: E741
                              bias: str = "none", base: float | None = None) -> float:
    """``T_{Y->X} = I(X_t ; Y_past | X_past)`` of symbol sequences, by plug-in counts (Schreiber 2000)."""
    fut, xp, yp = delay_embed(source, target, k=k, l=l, lag=lag)
    return conditional_mutual_info_discrete(fut, yp, xp, bias=bias, base=base)


def _residual_var(y: np.ndarray, x: np.ndarray) -> float:
    design = np.column_stack([np.ones(len(y)), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    res = y - design @ coef
    return float(res @ res) / len(y)


def transfer_entropy_gaussian(source: Any, target: Any, *, k: int = 1, l: int = 1, lag: int = 1,  # noqa: E741
                              base: float | None = None) -> float:
    """Transfer entropy under Gaussianity: ``1/2 ln(sigma^2(X_t | X_past) / sigma^2(X_t | X_past, Y_past))`` with
    the residual variances of least-squares regressions (with intercept). Equal to half of Granger's
    log-ratio causality (Barnett, Barrett & Seth 2009)."""
    fut, xp, yp = delay_embed(np.asarray(source, dtype=float), np.asarray(target, dtype=float), k=k, l=l, lag=lag)
    if fut.ndim != 1:
        raise ConfigError("transfer_entropy_gaussian takes a 1-D target")
    restricted, full = _residual_var(fut, xp), _residual_var(fut, np.hstack([xp, yp]))
    if full <= 0:
        raise ConfigError("the target is predicted exactly: the transfer entropy is unbounded")
    return _to_base(0.5 * math.log(restricted / full), base)


def transfer_entropy_ksg(source: Any, target: Any, *, k: int = 1, l: int = 1, lag: int = 1,  # noqa: E741
                         knn: int = 4, standardize: bool = True, jitter: float = JITTER, seed: int = 0,
                         base: float | None = None) -> float:
    """``T_{Y->X} = I(X_t ; Y_past | X_past)`` of continuous series by the Frenzel-Pompe KSG estimator
    (:func:`conditional_mutual_info_ksg` with ``knn`` neighbours)."""
    fut, xp, yp = delay_embed(np.asarray(source, dtype=float), np.asarray(target, dtype=float), k=k, l=l, lag=lag)
    return conditional_mutual_info_ksg(fut, yp, xp, k=knn, standardize=standardize, jitter=jitter, seed=seed, base=base)


# -- significance -----------------------------------------------------------------


def surrogate_test(estimator: Callable[[np.ndarray, np.ndarray], float], source: Any, target: Any, *,
                   n_surrogates: int = 200, method: str = "circular_shift", min_shift: int | None = None,
                   seed: int = 0) -> dict[str, Any]:
    """The estimate ``estimator(source, target)`` against its null distribution on surrogate sources.

    ``circular_shift`` rotates the source by a random offset (at least ``min_shift``, default a tenth of
    the series): its own dynamics are kept, its timing with the target destroyed (the usual null for
    transfer entropy between time series). ``shuffle`` permutes it (independence of samples). Returns
    ``value``, ``p_value = (1 + #{null >= value}) / (n + 1)``, the ``null`` values, their mean and SD.
    """
    src = np.asarray(source)
    n = src.shape[0]
    if n_surrogates < 1:
        raise ConfigError("n_surrogates must be at least 1")
    if method not in ("circular_shift", "shuffle"):
        raise ConfigError(f"method={method!r}: use 'circular_shift' or 'shuffle'")
    rng = np.random.default_rng(seed)
    value = float(estimator(src, np.asarray(target)))
    lo = max(1, n // 10 if min_shift is None else int(min_shift))
    if method == "circular_shift" and lo >= n - lo:
        raise ConfigError(f"min_shift={lo} leaves no shift for {n} samples")
    null = np.empty(n_surrogates)
    for i in range(n_surrogates):
        sur = np.roll(src, int(rng.integers(lo, n - lo + 1)), axis=0) if method == "circular_shift" else src[rng.permutation(n)]
        null[i] = estimator(sur, np.asarray(target))
    return {"value": value, "p_value": float((1 + np.sum(null >= value)) / (n_surrogates + 1)), "null": null,
            "null_mean": float(null.mean()), "null_sd": float(null.std(ddof=1)) if n_surrogates > 1 else 0.0}
