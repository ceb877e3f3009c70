"""Analysis on top of the kernels (docs/analysis.md).

Information theory here (from ``information``); ``dynamics`` (phase planes, equilibria, continuation,
Lyapunov exponents), ``coding`` (rates, tuning curves, Bayesian decoding, phase of firing) and ``circuits``
(connectivity, three-node motifs, spiking statistics) and ``motifs`` (feed-forward, recurrent and
winner-take-all rate models) and ``simulators`` (the notes' dynamics and plasticity simulators) as submodules.
"""

from . import circuits, coding, dynamics, motifs, simulators
from .information import (
    channel_capacity,
    coding_efficiency,
    conditional_mutual_info_discrete,
    conditional_mutual_info_ksg,
    copula_normalize,
    delay_embed,
    entropy_discrete,
    mutual_info_discrete,
    mutual_info_gaussian,
    mutual_info_gcmi,
    mutual_info_ksg,
    surrogate_test,
    transfer_entropy_discrete,
    transfer_entropy_gaussian,
    transfer_entropy_ksg,
)

__all__ = ["circuits", "coding", "dynamics", "motifs", "simulators", "channel_capacity", "coding_efficiency", "conditional_mutual_info_discrete", "conditional_mutual_info_ksg",
           "copula_normalize", "delay_embed", "entropy_discrete", "mutual_info_discrete", "mutual_info_gaussian",
           "mutual_info_gcmi", "mutual_info_ksg", "surrogate_test", "transfer_entropy_discrete",
           "transfer_entropy_gaussian", "transfer_entropy_ksg"]
