"""Analysis on top of the kernels: information theory and dynamical systems (more to come: coding, circuits).

``rtneuro.analysis.dynamics`` holds phase planes, equilibria, continuation and Lyapunov exponents.
"""

from . import dynamics
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

__all__ = ["dynamics", "channel_capacity", "coding_efficiency", "conditional_mutual_info_discrete", "conditional_mutual_info_ksg",
           "copula_normalize", "delay_embed", "entropy_discrete", "mutual_info_discrete", "mutual_info_gaussian",
           "mutual_info_gcmi", "mutual_info_ksg", "surrogate_test", "transfer_entropy_discrete",
           "transfer_entropy_gaussian", "transfer_entropy_ksg"]
