"""A simulated basal-ganglia beta generator that responds to deep brain stimulation.

The subthalamic nucleus (STN) and the external globus pallidus (GPe) form a
delayed excitatory-inhibitory loop; with strong enough coupling it
oscillates in the beta band, as in Parkinson's disease (Plenz & Kital 1999;
Holgado, Terry & Bogacz 2010, "Conditions for the generation of beta
oscillations in the subthalamic nucleus-globus pallidus network", J
Neurosci 30:12340). The rate model is theirs:

    tau_S dS/dt = -S + Z_S(w_CS C(t) - w_GS G(t - d_GS))
    tau_G dG/dt = -G + Z_G(w_SG (1 - b(t)) S(t - d_SG) - w_GG G(t - d_GG) - Str)
    Z_X(x) = M_X / (1 + (M_X - B_X) / B_X exp(-4 x / M_X))

with their sigmoid constants (M_S 300, B_S 17, M_G 400, B_G 75 spikes/s),
time constants (12.8 and 20 ms) and delays (6, 6 and 4 ms), and coupling
and drive chosen here so that the loop sits just past its Hopf bifurcation:
a beta rhythm near 18 Hz that waxes and wanes with the noisy cortical drive
C(t) (an Ornstein-Uhlenbeck process), as beta bursts do in patients.

High-frequency stimulation is modelled as an "informational lesion": it
blocks a fraction b(t) of the STN -> GPe transmission (Hashimoto et al.
2003; Rosenbaum et al. 2014). b follows the delivered stimulation with a
first-order lag (``tau_dbs_ms``) towards ``b_max * d / (d + d50)``, where the
dose ``d`` is the amplitude in mA weighted by frequency (0 below 60 Hz,
rising linearly to 1 at 130 Hz and above). Blocking enough of the loop
gain takes the network below its bifurcation: beta then decays over a few
hundred milliseconds, and grows back over a similar time after
stimulation stops.

Integrated by forward Euler at ``dt_ms`` (0.1 ms: the delays are whole
steps), in stream-time order; the state (delay lines, noise, lag) is
carried across calls, so any chunking gives the same output bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from ..errors import ConfigError
from .neurons import check_positive

__all__ = ["StnGpeParams", "StnGpeState", "stn_gpe_init", "stn_gpe_step", "hfs_dose"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StnGpeParams:
    """Parameters of the STN-GPe loop (rates in spikes/s, times in ms)."""

    tau_s_ms: float = 12.8
    tau_g_ms: float = 20.0
    d_sg_ms: float = 6.0
    d_gs_ms: float = 6.0
    d_gg_ms: float = 4.0
    m_s: float = 300.0
    b_s: float = 17.0
    m_g: float = 400.0
    b_g: float = 75.0
    w_sg: float = 8.0
    w_gs: float = 1.0
    w_gg: float = 1.0
    w_cs: float = 1.0
    drive: float = 400.0
    drive_sd: float = 40.0
    drive_tau_ms: float = 20.0
    striatum: float = 50.0
    s_tonic: float = 60.0
    b_max: float = 0.8
    d50_ma: float = 1.0
    tau_dbs_ms: float = 50.0
    dt_ms: float = 0.1

    def __post_init__(self) -> None:
        for name in ("tau_s_ms", "tau_g_ms", "m_s", "b_s", "m_g", "b_g", "drive_tau_ms", "d50_ma", "tau_dbs_ms", "dt_ms"):
            check_positive(getattr(self, name), name)
        for name in ("d_sg_ms", "d_gs_ms", "d_gg_ms", "w_sg", "w_gs", "w_gg", "w_cs", "drive", "drive_sd", "striatum", "s_tonic"):
            check_positive(getattr(self, name), name, allow_zero=True)
        if not 0 <= self.b_max <= 1:
            raise ConfigError(f"b_max={self.b_max} must be in [0, 1] (the fraction of STN -> GPe transmission DBS can block)")
        if self.dt_ms > min(self.tau_s_ms, self.tau_g_ms) / 10:
            raise ConfigError(f"dt_ms={self.dt_ms} is too large for time constants of {min(self.tau_s_ms, self.tau_g_ms)} ms "
                              "(forward Euler needs dt <= tau / 10)")
        for name in ("d_sg_ms", "d_gs_ms", "d_gg_ms"):
            steps = getattr(self, name) / self.dt_ms
            if abs(steps - round(steps)) > 1e-9:
                raise ConfigError(f"{name}={getattr(self, name)} must be a whole number of dt_ms={self.dt_ms} steps")


@dataclass(slots=True)
class StnGpeState:
    """Delay lines of S and G (rings), the cortical noise and the DBS block; ``step`` counts Euler steps."""

    s_ring: np.ndarray
    g_ring: np.ndarray
    pos: np.ndarray  # (1,) int64: ring index of the newest value
    ou: np.ndarray  # (1,) drive noise
    block: np.ndarray  # (1,) b(t)
    step: int = 0


def _ring_len(p: StnGpeParams) -> int:
    return int(round(max(p.d_sg_ms, p.d_gs_ms, p.d_gg_ms) / p.dt_ms)) + 2


def stn_gpe_init(p: StnGpeParams) -> StnGpeState:
    """The state at the fixed point's neighbourhood: S = B_S, G = B_G (the sigmoids' values at 0)."""
    n = _ring_len(p)
    return StnGpeState(np.full(n, p.b_s), np.full(n, p.b_g), np.zeros(1, np.int64), np.zeros(1), np.zeros(1))


def hfs_dose(amplitude_ma: np.ndarray, frequency_hz: np.ndarray) -> np.ndarray:
    """Stimulation dose: amplitude (mA) weighted by frequency (0 below 60 Hz, 1 at 130 Hz and above)."""
    w = np.clip((np.asarray(frequency_hz, dtype=float) - 60.0) / 70.0, 0.0, 1.0)
    return np.asarray(amplitude_ma, dtype=float) * w


@njit(cache=True, nogil=True)
def _kernel(s_ring, g_ring, pos, ou, block, noise, dose, sub, dt, tau_s, tau_g, k_sg, k_gs, k_gg, m_s, b_s, m_g, b_g,
            w_sg, w_gs, w_gg, w_cs, drive, drive_sd, drive_tau, striatum, s_tonic, b_max, d50, tau_dbs,
            out_s, out_g, out_b):  # pragma: no cover - compiled
    n_ring = s_ring.shape[0]
    a_s = (m_s - b_s) / b_s
    a_g = (m_g - b_g) / b_g
    ou_decay = math.exp(-dt / drive_tau)
    ou_kick = drive_sd * math.sqrt(1.0 - ou_decay * ou_decay)
    b_decay = math.exp(-dt / tau_dbs)
    p = pos[0]
    x_ou = ou[0]
    b = block[0]
    for i in range(out_s.shape[0]):
        target = b_max * dose[i] / (dose[i] + d50) if dose[i] > 0 else 0.0
        for j in range(sub):
            x_ou = x_ou * ou_decay + ou_kick * noise[i * sub + j]
            b = target + (b - target) * b_decay
            s_now = s_ring[p]
            g_now = g_ring[p]
            s_del = s_ring[(p - k_sg) % n_ring]
            g_del = g_ring[(p - k_gs) % n_ring]
            g_self = g_ring[(p - k_gg) % n_ring]
            x_s = w_cs * (drive + x_ou) - w_gs * g_del
            x_g = w_sg * ((1.0 - b) * s_del + b * s_tonic) - w_gg * g_self - striatum
            z_s = m_s / (1.0 + a_s * math.exp(-4.0 * x_s / m_s))
            z_g = m_g / (1.0 + a_g * math.exp(-4.0 * x_g / m_g))
            p = (p + 1) % n_ring
            s_ring[p] = s_now + dt / tau_s * (z_s - s_now)
            g_ring[p] = g_now + dt / tau_g * (z_g - g_now)
        out_s[i] = s_ring[p]
        out_g[i] = g_ring[p]
        out_b[i] = b
    pos[0] = p
    ou[0] = x_ou
    block[0] = b


def stn_gpe_step(state: StnGpeState, p: StnGpeParams, noise: np.ndarray, dose: np.ndarray, sub: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Advance ``len(dose)`` output samples of ``sub`` Euler steps each.

    ``noise`` holds ``len(dose) * sub`` standard normal draws (the cortical
    drive's), ``dose`` the stimulation dose (:func:`hfs_dose`) held over each
    sample. Returns the STN and GPe rates and the DBS block ``b`` at the end
    of each sample.
    """
    n = dose.shape[0]
    if noise.shape[0] != n * sub:
        raise ValueError(f"noise has {noise.shape[0]} draws for {n} samples of {sub} steps")
    out_s, out_g, out_b = np.empty(n), np.empty(n), np.empty(n)
    k = [int(round(d / p.dt_ms)) for d in (p.d_sg_ms, p.d_gs_ms, p.d_gg_ms)]
    _kernel(state.s_ring, state.g_ring, state.pos, state.ou, state.block, np.ascontiguousarray(noise, dtype=np.float64),
            np.ascontiguousarray(dose, dtype=np.float64), sub, p.dt_ms, p.tau_s_ms, p.tau_g_ms, k[0], k[1], k[2],
            p.m_s, p.b_s, p.m_g, p.b_g, p.w_sg, p.w_gs, p.w_gg, p.w_cs, p.drive, p.drive_sd, p.drive_tau_ms,
            p.striatum, p.s_tonic, p.b_max, p.d50_ma, p.tau_dbs_ms, out_s, out_g, out_b)
    state.step += n * sub
    return out_s, out_g, out_b
