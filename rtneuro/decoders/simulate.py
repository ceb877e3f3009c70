"""A cosine-tuned population for testing cursor-control decoders offline.

:class:`CosinePopulation` maps a 2-D velocity to firing rates (Georgopoulos et
al. 1986) and draws Poisson counts; :func:`simulate_cosine_session` generates
a seeded session of smooth cursor movements (center-out-and-back reaches or an
Ornstein-Uhlenbeck velocity) with the binned counts it would evoke.
Everything is deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from rtneuro.errors import ConfigError, did_you_mean

__all__ = ["CosinePopulation", "SimulatedSession", "simulate_cosine_session"]

_MODES = ("center_out", "ou")


@dataclass(frozen=True, slots=True, kw_only=True)
class CosinePopulation:
    """Units whose rate is linear in the velocity along a preferred direction.

    Parameters
    ----------
    baseline_hz : ndarray, shape (n_units,)
        Rate at rest (Hz).
    depth_hz : ndarray, shape (n_units,)
        Rate change (Hz) for a movement at ``ref_speed`` along the preferred
        direction.
    preferred : ndarray, shape (n_units, 2)
        Unit vectors of the preferred directions.
    ref_speed : float
        Speed (workspace units per second) at which the modulation is ``depth_hz``.

    Notes
    -----
    ``rate_i(v) = max(0, baseline_i + depth_i * (v . p_i) / ref_speed)``: the
    cosine tuning of Georgopoulos, Schwartz & Kettner (1986) Science 233:1416,
    scaled by speed (Moran & Schwartz 1999), as used for the Kalman decoder of
    Wu et al. (2006) Neural Comput 18:80.
    """

    baseline_hz: NDArray[np.float64]
    depth_hz: NDArray[np.float64]
    preferred: NDArray[np.float64]
    ref_speed: float = 0.2

    @classmethod
    def random(
        cls,
        n_units: int,
        rng: np.random.Generator,
        *,
        baseline_hz: tuple[float, float] = (5.0, 25.0),
        depth_hz: tuple[float, float] = (5.0, 20.0),
        ref_speed: float = 0.2,
    ) -> CosinePopulation:
        """Draw baselines, depths (uniform in the given ranges) and preferred directions."""
        if n_units < 1:
            raise ConfigError(f"n_units must be >= 1, got {n_units}")
        base = rng.uniform(*baseline_hz, n_units)
        depth = rng.uniform(*depth_hz, n_units)
        theta = rng.uniform(0.0, 2.0 * np.pi, n_units)
        pref = np.column_stack([np.cos(theta), np.sin(theta)])
        return cls(baseline_hz=base, depth_hz=depth, preferred=pref, ref_speed=ref_speed)

    @property
    def n_units(self) -> int:
        """Number of units."""
        return int(self.baseline_hz.shape[0])

    def rotated(self, angle_rad: float) -> CosinePopulation:
        """The same population with every preferred direction rotated by ``angle_rad``."""
        c, s = np.cos(angle_rad), np.sin(angle_rad)
        rot = np.array([[c, -s], [s, c]])
        return CosinePopulation(
            baseline_hz=self.baseline_hz,
            depth_hz=self.depth_hz,
            preferred=self.preferred @ rot.T,
            ref_speed=self.ref_speed,
        )

    def rates(self, velocity: NDArray[np.float64]) -> NDArray[np.float64]:
        """Firing rates (Hz), shape (n_bins, n_units), for velocities of shape (n_bins, 2)."""
        v = np.atleast_2d(np.asarray(velocity, dtype=np.float64))
        drive = (v @ self.preferred.T) / self.ref_speed
        return np.maximum(self.baseline_hz + self.depth_hz * drive, 0.0)

    def counts(
        self, velocity: NDArray[np.float64], bin_s: float, rng: np.random.Generator
    ) -> NDArray[np.float64]:
        """Poisson spike counts per bin, shape (n_bins, n_units), as float64."""
        return rng.poisson(self.rates(velocity) * bin_s).astype(np.float64)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatedSession:
    """Output of :func:`simulate_cosine_session`; every array has ``n_bins`` rows.

    Attributes
    ----------
    counts : ndarray, shape (n_bins, n_units)
        Spike counts per bin.
    velocity : ndarray, shape (n_bins, 2)
        Cursor velocity (workspace units per second) during each bin.
    position : ndarray, shape (n_bins, 2)
        Cursor position at the start of each bin.
    target : ndarray, shape (n_bins, 2)
        Position of the current target (NaN in ``"ou"`` mode, which has none).
    population : CosinePopulation
        The tuning parameters.
    bin_s : float
        Bin width (s).
    """

    counts: NDArray[np.float64]
    velocity: NDArray[np.float64]
    position: NDArray[np.float64]
    target: NDArray[np.float64]
    population: CosinePopulation
    bin_s: float


def _center_out(
    n_bins: int, bin_s: float, rng: np.random.Generator, radius: float, reach_s: float, hold_s: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Minimum-jerk reaches centre -> random target on a circle -> centre, with holds."""
    vel = np.zeros((n_bins, 2))
    tgt = np.zeros((n_bins, 2))
    n_reach = max(int(round(reach_s / bin_s)), 2)
    n_hold = max(int(round(hold_s / bin_s)), 0)
    pos = np.zeros(2)
    i = 0
    outward = True
    # bin-averaged minimum-jerk speed profile: the position increments sum to 1
    edges = np.linspace(0.0, 1.0, n_reach + 1)
    s = 10 * edges**3 - 15 * edges**4 + 6 * edges**5
    frac = np.diff(s)
    while i < n_bins:
        if outward:
            theta = rng.uniform(0.0, 2.0 * np.pi)
            goal = radius * np.array([np.cos(theta), np.sin(theta)])
        else:
            goal = np.zeros(2)
        step = goal - pos
        for k in range(n_reach):
            if i >= n_bins:
                break
            vel[i] = step * frac[k] / bin_s
            tgt[i] = goal
            i += 1
        pos = goal
        for _ in range(n_hold):
            if i >= n_bins:
                break
            tgt[i] = goal
            i += 1
        outward = not outward
    return vel, tgt


def simulate_cosine_session(
    n_units: int,
    n_bins: int,
    *,
    bin_s: float = 0.05,
    seed: int = 0,
    mode: str = "center_out",
    radius: float = 0.1,
    reach_s: float = 1.0,
    hold_s: float = 0.25,
    ou_tau_s: float = 0.5,
    ou_speed: float = 0.1,
    population: CosinePopulation | None = None,
) -> SimulatedSession:
    """Simulate smooth 2-D cursor movements and the counts of a cosine-tuned population.

    Parameters
    ----------
    n_units : int
        Number of units (ignored when ``population`` is given).
    n_bins : int
        Number of bins.
    bin_s : float
        Bin width (s).
    seed : int
        Seed of the ``numpy.random.Generator`` (same seed, same session).
    mode : {"center_out", "ou"}
        ``"center_out"``: minimum-jerk reaches of ``reach_s`` from the centre
        to a random target on a circle of ``radius`` and back, each followed
        by a ``hold_s`` hold. ``"ou"``: an Ornstein-Uhlenbeck velocity with
        time constant ``ou_tau_s`` and stationary s.d. ``ou_speed`` per axis.
    population : CosinePopulation | None
        Tuning to use; drawn with :meth:`CosinePopulation.random` when None.

    Returns
    -------
    session : SimulatedSession

    Notes
    -----
    Cosine tuning as in Georgopoulos et al. (1986) and the simulations of
    Wu et al. (2006) Neural Comput 18:80; minimum-jerk reaches after Flash &
    Hogan (1985) J Neurosci 5:1688.
    """
    if mode not in _MODES:
        raise ConfigError(f"mode={mode!r} is not one of {list(_MODES)}{did_you_mean(mode, _MODES)}")
    if n_bins < 1:
        raise ConfigError(f"n_bins must be >= 1, got {n_bins}")
    if not bin_s > 0:
        raise ConfigError(f"bin_s must be > 0, got {bin_s}")
    rng = np.random.default_rng(seed)
    pop = CosinePopulation.random(n_units, rng) if population is None else population
    if mode == "center_out":
        vel, tgt = _center_out(n_bins, bin_s, rng, radius, reach_s, hold_s)
    else:
        a = np.exp(-bin_s / ou_tau_s)
        noise = rng.standard_normal((n_bins, 2)) * ou_speed * np.sqrt(1.0 - a * a)
        vel = np.empty((n_bins, 2))
        v = rng.standard_normal(2) * ou_speed
        for i in range(n_bins):
            vel[i] = v
            v = a * v + noise[i]
        tgt = np.full((n_bins, 2), np.nan)
    pos = np.zeros((n_bins, 2))
    pos[1:] = np.cumsum(vel[:-1] * bin_s, axis=0)
    counts = pop.counts(vel, bin_s, rng)
    return SimulatedSession(
        counts=counts, velocity=vel, position=pos, target=tgt, population=pop, bin_s=float(bin_s)
    )
