"""Decoders for online inference: parameters fitted offline, applied per feature vector.

A decoder is fitted with scikit-learn on recorded data, reduced to plain arrays
(weights, intercepts, class labels) and applied in the service by a numba
kernel that gives the same labels, probabilities and regression outputs as
scikit-learn. Decoders are saved as ``.npz`` files read with
``allow_pickle=False``: a decoder file is data, never code.
"""

from __future__ import annotations

from .linear import (
    LINK_IDENTITY,
    LINK_LOGISTIC,
    LINK_SOFTMAX,
    LinearDecoder,
    linear_infer,
    linear_infer_batch,
    training_hash,
)

__all__ = [
    "LINK_IDENTITY",
    "LINK_LOGISTIC",
    "LINK_SOFTMAX",
    "LinearDecoder",
    "linear_infer",
    "linear_infer_batch",
    "training_hash",
]
