"""Decoders: fitted offline, applied online per window by numba kernels.

A decoder is fitted with scikit-learn, pyRiemann or least squares on
recorded data, reduced to plain arrays and applied in the service by a numba
kernel that gives the same labels, probabilities and outputs as the library
it was fitted with. Files are ``.npz`` archives of plain arrays plus a JSON
header, read with ``allow_pickle=False``: a decoder file is data, never code.

- :mod:`.linear`: LDA, logistic regression, ridge.
- :mod:`.csp`: common spatial patterns and filter-bank CSP, log-variance features.
- :mod:`.riemann`: covariance, minimum distance to mean, tangent space.
- :mod:`.kalman`: velocity Kalman filter with closed-loop decoder adaptation.
- :mod:`.poisson`: Poisson population (Bayesian) decoder.
- :mod:`.adaptive`: adaptive LDA (class means from labelled feedback).
- :mod:`.pipeline`, :mod:`.windows`, :mod:`.train`: the whole decoder
  ``rtneuro train`` fits and the ``decoder`` node runs.
"""

from __future__ import annotations

from .adaptive import AdaptiveLda
from .csp import CSP, CSPDecoder, FilterBankCSP, fbcsp_logvar, logvar, logvar_batch, logvar_channels
from .kalman import (
    AdaptRecord,
    CLDAParams,
    KalmanDecoder,
    intended_velocity,
    kalman_run,
    kalman_step,
    kalman_step_steady,
)
from .linear import (
    LINK_IDENTITY,
    LINK_LOGISTIC,
    LINK_SOFTMAX,
    LinearDecoder,
    linear_infer,
    linear_infer_batch,
    training_hash,
)
from .pipeline import DecoderPipeline, PipelineSpec
from .poisson import PoissonDecoder, poisson_infer, poisson_infer_batch
from .riemann import (
    COV_ESTIMATORS,
    MdmDecoder,
    TangentSpaceDecoder,
    covariance,
    covariance_batch,
    estimator_shrinkage,
    mdm_infer,
    tangent_vector,
)
from .simulate import CosinePopulation, SimulatedSession, simulate_cosine_session

__all__ = [
    "COV_ESTIMATORS",
    "MdmDecoder",
    "TangentSpaceDecoder",
    "covariance",
    "covariance_batch",
    "estimator_shrinkage",
    "mdm_infer",
    "tangent_vector",
    "LINK_IDENTITY",
    "LINK_LOGISTIC",
    "LINK_SOFTMAX",
    "AdaptRecord",
    "AdaptiveLda",
    "CLDAParams",
    "CSP",
    "CSPDecoder",
    "CosinePopulation",
    "DecoderPipeline",
    "FilterBankCSP",
    "KalmanDecoder",
    "LinearDecoder",
    "PipelineSpec",
    "PoissonDecoder",
    "SimulatedSession",
    "fbcsp_logvar",
    "intended_velocity",
    "kalman_run",
    "kalman_step",
    "kalman_step_steady",
    "linear_infer",
    "linear_infer_batch",
    "logvar",
    "logvar_batch",
    "logvar_channels",
    "poisson_infer",
    "poisson_infer_batch",
    "simulate_cosine_session",
    "training_hash",
]
