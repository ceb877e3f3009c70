"""Bayesian population decoder for independent Poisson units on a grid of stimuli.

Tuning curves ``f_i(s)`` (Hz) are tabulated on ``n_grid`` stimulus values
(directions on a circle, binned positions...). Online, :func:`poisson_infer`
turns one vector of spike counts into the normalized log posterior over the
grid, the posterior and the MAP index, without allocating.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray

from rtneuro.errors import ConfigError, RtneuroError

from .io import ArrayFile, checked, require, require_arrays
from .linear import training_hash

__all__ = ["PoissonDecoder", "poisson_infer", "poisson_infer_batch"]

_FORMAT = "rtneuro.poisson_decoder"
_ARRAYS = ("rates_hz", "log_prior", "grid")


# --------------------------------------------------------------------------- kernels


@njit(inline="always", cache=True, nogil=True)
def _infer_row(log_rates, base, counts, logpost, post):  # pragma: no cover - compiled
    n_grid, n_units = log_rates.shape
    ok = True
    for i in range(n_units):
        c = counts[i]
        if not (math.isfinite(c) and c >= 0.0):
            ok = False
            break
    if not ok:
        for g in range(n_grid):
            logpost[g] = np.nan
            post[g] = np.nan
        return -1
    best = 0
    top = -np.inf
    for g in range(n_grid):
        acc = 0.0
        for i in range(n_units):
            acc += counts[i] * log_rates[g, i]
        acc += base[g]
        logpost[g] = acc
        if acc > top:
            top = acc
            best = g
    total = 0.0
    for g in range(n_grid):
        total += math.exp(logpost[g] - top)
    lse = top + math.log(total)
    for g in range(n_grid):
        v = logpost[g] - lse
        logpost[g] = v
        post[g] = math.exp(v)
    return best


@njit(cache=True, nogil=True)
def poisson_infer(log_rates, base, counts, logpost, post):  # pragma: no cover - compiled
    """Posterior over the stimulus grid for one vector of counts.

    Parameters
    ----------
    log_rates : ndarray, shape (n_grid, n_units)
        ``log f_i(s_g)`` (rates in Hz).
    base : ndarray, shape (n_grid,)
        ``log prior(s_g) - bin_s * sum_i f_i(s_g)``.
    counts : ndarray, shape (n_units,)
        Spike counts in one bin of ``bin_s`` seconds.
    logpost : ndarray, shape (n_grid,)
        Output: normalized log posterior.
    post : ndarray, shape (n_grid,)
        Output: posterior (sums to 1).

    Returns
    -------
    index : int
        MAP grid index (first maximum); -1 when a count is not finite or
        negative (outputs are then NaN).

    Notes
    -----
    ``log p(s | n) = sum_i n_i log f_i(s) - dt sum_i f_i(s) + log p(s) + const``
    for independent Poisson units (Zhang, Ginzburg, McNaughton & Sejnowski
    1998, J Neurophysiol 79:1017, eq. 36; Dayan & Abbott 2001, ch. 3),
    normalized by log-sum-exp.
    """
    return _infer_row(log_rates, base, counts, logpost, post)


@njit(cache=True, nogil=True)
def poisson_infer_batch(log_rates, base, counts, logpost, post, index):  # pragma: no cover
    """:func:`poisson_infer` on each row of ``counts`` (n, n_units); rows bit-identical."""
    for r in range(counts.shape[0]):
        index[r] = _infer_row(log_rates, base, counts[r], logpost[r], post[r])


# --------------------------------------------------------------------------- decoder


class PoissonDecoder(ArrayFile):
    """Independent-Poisson Bayesian decoder on a discrete stimulus grid.

    Parameters
    ----------
    rates_hz : ndarray, shape (n_units, n_grid)
        Tuning curves ``f_i(s_g)`` in Hz, all > 0.
    bin_s : float
        Width (s) of the count bins decoded online.
    log_prior : ndarray, shape (n_grid,) | None
        Log prior over the grid (normalized here); uniform when None.
    grid : ndarray, shape (n_grid,) or (n_grid, n_stim) | None
        Stimulus value of each grid point (informative); ``arange(n_grid)`` when None.
    train_hash : str | None
        Hash of the training data.

    Notes
    -----
    Zhang et al. (1998) J Neurophysiol 79:1017; Dayan & Abbott (2001)
    Theoretical Neuroscience, ch. 3.
    """

    def __init__(
        self,
        *,
        rates_hz: ArrayLike,
        bin_s: float,
        log_prior: ArrayLike | None = None,
        grid: ArrayLike | None = None,
        train_hash: str | None = None,
    ) -> None:
        f = np.ascontiguousarray(rates_hz, dtype=np.float64)
        if f.ndim != 2 or f.shape[0] < 1 or f.shape[1] < 2:
            raise ConfigError(f"rates_hz must have shape (n_units, n_grid >= 2), got {f.shape}")
        if not (np.isfinite(f).all() and (f > 0).all()):
            raise ConfigError("rates_hz must be finite and > 0 (fit with a rate floor)")
        if not (isinstance(bin_s, int | float) and math.isfinite(bin_s) and bin_s > 0):
            raise ConfigError(f"bin_s must be a finite number > 0, got {bin_s!r}")
        n_units, n_grid = f.shape
        if log_prior is None:
            lp = np.full(n_grid, -math.log(n_grid))
        else:
            lp = np.ascontiguousarray(log_prior, dtype=np.float64)
            if lp.shape != (n_grid,):
                raise ConfigError(f"log_prior must have shape ({n_grid},), got {lp.shape}")
            if np.isnan(lp).any() or np.isposinf(lp).any() or not np.isfinite(lp).any():
                raise ConfigError("log_prior must be finite or -inf, with one finite value")
            top = lp.max()
            norm = top + math.log(np.exp(lp - top).sum())
            if abs(norm) > 1e-12:  # normalized already: keep bit for bit (file round trip)
                lp = lp - norm
        g = np.arange(n_grid, dtype=np.float64) if grid is None else np.asarray(grid)
        if g.shape[:1] != (n_grid,) or g.dtype.kind not in "iuf":
            raise ConfigError(f"grid must be numeric with {n_grid} rows, got shape {g.shape}")
        self.rates_hz = f
        self.bin_s = float(bin_s)
        self.log_prior = np.ascontiguousarray(lp)
        self.grid = g
        self.train_hash = train_hash
        self.log_rates = np.ascontiguousarray(np.log(f).T)
        self.base = np.ascontiguousarray(self.log_prior - self.bin_s * f.sum(axis=0))

    @property
    def n_units(self) -> int:
        """Number of units."""
        return int(self.rates_hz.shape[0])

    @property
    def n_grid(self) -> int:
        """Number of grid points."""
        return int(self.rates_hz.shape[1])

    @classmethod
    def fit(
        cls,
        counts: ArrayLike,
        stimulus: ArrayLike,
        n_grid: int,
        *,
        bin_s: float,
        rate_floor_hz: float = 0.1,
        prior: str = "uniform",
        grid: ArrayLike | None = None,
    ) -> PoissonDecoder:
        """Tuning curves from counts: the mean count per grid point over ``bin_s``, floored.

        Parameters
        ----------
        counts : array-like, shape (n_bins, n_units)
            Spike counts per bin.
        stimulus : array-like of int, shape (n_bins,)
            Grid index of the stimulus in each bin (0 <= s < n_grid).
        n_grid : int
            Number of grid points.
        bin_s : float
            Bin width (s), the same online.
        rate_floor_hz : float
            Lowest tuning value (Hz): a unit silent at a grid point must not
            rule it out with ``log 0``.
        prior : {"uniform", "fitted"}
            Uniform prior, or the occupancy of the grid points in training
            (with one pseudo-count per point).
        grid : array-like, shape (n_grid,) or (n_grid, n_stim) | None
            Stimulus values of the grid points.

        Raises
        ------
        ConfigError
            When a grid point has no training bin, or on bad shapes.
        """
        n = np.asarray(counts, dtype=np.float64)
        s = np.asarray(stimulus)
        if n.ndim != 2 or s.shape != (n.shape[0],):
            raise ConfigError(
                f"counts (n_bins, n_units) and stimulus (n_bins,) must match, got {n.shape}, {s.shape}"
            )
        if s.dtype.kind not in "iu" or (s < 0).any() or (s >= n_grid).any():
            raise ConfigError(f"stimulus must hold integer grid indices in [0, {n_grid})")
        if not (np.isfinite(n).all() and (n >= 0).all()):
            raise ConfigError("training counts must be finite and >= 0")
        if prior not in ("uniform", "fitted"):
            raise ConfigError(f"prior={prior!r} is not one of ['uniform', 'fitted']")
        if not rate_floor_hz > 0:
            raise ConfigError(f"rate_floor_hz must be > 0, got {rate_floor_hz}")
        occ = np.bincount(s, minlength=n_grid).astype(np.float64)
        if (occ == 0).any():
            raise ConfigError(
                f"grid points {np.flatnonzero(occ == 0)[:5].tolist()} have no training bin; "
                "use a coarser grid or more data"
            )
        sums = np.zeros((n_grid, n.shape[1]))
        np.add.at(sums, s, n)
        rates = np.maximum(sums / occ[:, None] / bin_s, rate_floor_hz).T
        lp = None if prior == "uniform" else np.log((occ + 1.0) / (occ.sum() + n_grid))
        return cls(
            rates_hz=rates, bin_s=bin_s, log_prior=lp, grid=grid, train_hash=training_hash(n, s)
        )

    # ---------------------------------------------------------------- inference

    def buffers(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Preallocated ``(logpost, post)`` buffers for :meth:`infer`."""
        return np.zeros(self.n_grid), np.zeros(self.n_grid)

    def infer(
        self, counts: NDArray[np.float64], logpost: NDArray[np.float64], post: NDArray[np.float64]
    ) -> int:
        """Decode one count vector (float64, shape (n_units,)) into the buffers; MAP index or -1."""
        return int(poisson_infer(self.log_rates, self.base, counts, logpost, post))

    def _run(self, counts: ArrayLike) -> tuple[Any, Any, Any]:
        c = np.ascontiguousarray(counts, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] != self.n_units:
            raise ConfigError(f"counts must have shape (n_bins, {self.n_units}), got {c.shape}")
        lp = np.empty((c.shape[0], self.n_grid))
        post = np.empty((c.shape[0], self.n_grid))
        index = np.empty(c.shape[0], dtype=np.int64)
        poisson_infer_batch(self.log_rates, self.base, c, lp, post, index)
        return lp, post, index

    def predict(self, counts: ArrayLike) -> NDArray[np.int64]:
        """MAP grid index of each row of ``counts`` (n_bins, n_units); -1 for invalid rows."""
        return self._run(counts)[2]

    def predict_proba(self, counts: ArrayLike) -> NDArray[np.float64]:
        """Posterior over the grid, shape (n_bins, n_grid); NaN rows for invalid counts."""
        return self._run(counts)[1]

    def predict_log_proba(self, counts: ArrayLike) -> NDArray[np.float64]:
        """Normalized log posterior, shape (n_bins, n_grid)."""
        return self._run(counts)[0]

    def predict_stimulus(self, counts: ArrayLike) -> NDArray[Any]:
        """Grid values of the MAP estimates; raises on an invalid row."""
        index = self.predict(counts)
        if (index < 0).any():
            raise RtneuroError(
                f"non-finite or negative counts in row {int(np.flatnonzero(index < 0)[0])}"
            )
        return self.grid[index]

    def warmup(self) -> None:
        """Compile the kernels and run them once."""
        lp, post = self.buffers()
        self.infer(np.zeros(self.n_units), lp, post)
        self._run(np.zeros((1, self.n_units)))

    # ---------------------------------------------------------------- files

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
        """The decoder as a JSON-able header and plain arrays (see :mod:`.io`)."""
        meta = {
            "bin_s": self.bin_s,
            "n_units": self.n_units,
            "n_grid": self.n_grid,
            "train_hash": self.train_hash,
        }
        return meta, {"rates_hz": self.rates_hz, "log_prior": self.log_prior, "grid": self.grid}

    @classmethod
    def from_arrays(
        cls, meta: dict[str, Any], arrays: dict[str, NDArray[Any]], where: str = "decoder"
    ) -> PoissonDecoder:
        """Rebuild a decoder from :meth:`to_arrays` output, checking every field.

        Raises
        ------
        ConfigError
            ``"<where>: <problem>"`` on a missing field or inconsistent arrays.
        """
        require(where, meta, ("bin_s", "n_units", "n_grid", "train_hash"))
        require_arrays(where, arrays, _ARRAYS)
        require_arrays(where, arrays, ("rates_hz", "log_prior"), floating=True)
        dec = checked(where, lambda: cls(
            rates_hz=arrays["rates_hz"], bin_s=meta["bin_s"], log_prior=arrays["log_prior"],
            grid=arrays["grid"], train_hash=meta["train_hash"],
        ))
        if (dec.n_units, dec.n_grid) != (meta["n_units"], meta["n_grid"]):
            raise ConfigError(
                f"{where}: header says {meta['n_units']} units x {meta['n_grid']} grid points, "
                f"arrays have {dec.n_units} x {dec.n_grid}"
            )
        return dec

    file_format: ClassVar[str] = _FORMAT
    file_arrays: ClassVar[tuple[str, ...]] = _ARRAYS
