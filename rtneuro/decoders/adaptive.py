"""Adaptive LDA: class means follow labelled feedback, within a bound.

Supervised mean adaptation after Vidaurre, Kawanabe, von Bünau, Blankertz &
Müller (2011) "Toward unsupervised adaptation of LDA for brain-computer
interfaces", IEEE Trans Biomed Eng 58:587, and Vidaurre, Sannelli, Müller &
Blankertz (2011) Neural Comput 23:791: each labelled feature vector moves
its class mean by ``mu_k <- (1 - eta) mu_k + eta x``; the (shrunk) covariance
stays as calibrated, and the weights and bias are recomputed exactly as
scikit-learn's LDA computes them from means, covariance and priors.

A bad block cannot wreck the decoder: non-finite vectors are never used,
and each class mean stays within ``max_shift`` (Mahalanobis distance under
the calibration covariance) of its calibrated value; a step beyond is
pulled back onto that sphere and counted.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rtneuro.errors import ConfigError

from .linear import LinearDecoder

__all__ = ["AdaptiveLda", "lda_state"]


def lda_state(model: Any) -> dict[str, NDArray[np.float64]]:
    """The arrays adaptive LDA needs from a fitted ``LinearDiscriminantAnalysis`` (lsqr or eigen)."""
    if not hasattr(model, "covariance_"):
        raise ConfigError("adaptive LDA needs an LDA fitted with solver='lsqr' or 'eigen' (store_covariance)")
    return {
        "means": np.asarray(model.means_, dtype=np.float64),
        "covariance": np.asarray(model.covariance_, dtype=np.float64),
        "priors": np.asarray(model.priors_, dtype=np.float64),
    }


class AdaptiveLda:
    """A linear decoder whose LDA class means adapt to labelled feedback.

    Parameters
    ----------
    decoder : LinearDecoder
        The calibrated decoder (kind ``"lda"``); left untouched, a copy adapts.
    means : ndarray, shape (n_classes, n_features)
    covariance : ndarray, shape (n_features, n_features)
    priors : ndarray, shape (n_classes,)
        The LDA's ``means_``, ``covariance_`` and ``priors_`` (:func:`lda_state`).
    rate : float
        ``eta``, the weight of one labelled vector (0 < rate < 1).
    max_shift : float
        Largest Mahalanobis distance a class mean may move from calibration.
    """

    def __init__(self, decoder: LinearDecoder, means: NDArray[np.float64], covariance: NDArray[np.float64],
                 priors: NDArray[np.float64], rate: float = 0.05, max_shift: float = 1.0) -> None:
        if decoder.kind != "lda":
            raise ConfigError(f"adaptation needs an LDA decoder, this one is {decoder.kind!r}; train with classifier: lda")
        if not 0 < rate < 1:
            raise ConfigError(f"adapt rate must be in (0, 1), got {rate}")
        if not max_shift > 0:
            raise ConfigError(f"adapt max_shift must be positive, got {max_shift}")
        K, F = means.shape
        if covariance.shape != (F, F) or priors.shape != (K,) or decoder.n_features != F:
            raise ConfigError(f"LDA state does not match the decoder: means {means.shape}, covariance "
                              f"{covariance.shape}, priors {priors.shape}, decoder of {decoder.n_features} features")
        self.base = decoder
        self.means0 = np.array(means, dtype=np.float64)
        self.means = self.means0.copy()
        self.covariance = np.array(covariance, dtype=np.float64)
        self.precision = np.linalg.pinv(self.covariance)
        self.log_priors = np.log(priors)
        self.rate = float(rate)
        self.max_shift = float(max_shift)
        self.coef = decoder.coef.copy()
        self.intercept = decoder.intercept.copy()
        self.updates = 0
        self.clipped = 0
        self.rejected = 0

    def shift(self) -> NDArray[np.float64]:
        """Mahalanobis distance of each class mean from its calibrated value."""
        d = self.means - self.means0
        return np.sqrt(np.maximum(np.einsum("kf,fg,kg->k", d, self.precision, d), 0.0))

    def update(self, x: NDArray[np.float64], k: int) -> bool:
        """Move class ``k``'s mean toward ``x``; recompute weights and bias. False if refused."""
        if not (0 <= k < self.means.shape[0]) or not np.isfinite(x).all():
            self.rejected += 1
            return False
        mu = (1.0 - self.rate) * self.means[k] + self.rate * x
        d = mu - self.means0[k]
        dist = math.sqrt(max(float(d @ self.precision @ d), 0.0))
        if dist > self.max_shift:
            mu = self.means0[k] + d * (self.max_shift / dist)
            self.clipped += 1
        self.means[k] = mu
        self.updates += 1
        self._weights()
        return True

    def retune(self, rate: float, max_shift: float) -> None:
        """A new rate and bound (a live change): the means stay, pulled back onto a tighter bound at once."""
        if not 0 < rate < 1:
            raise ConfigError(f"adapt rate must be in (0, 1), got {rate}")
        if not max_shift > 0:
            raise ConfigError(f"adapt max_shift must be positive, got {max_shift}")
        self.rate = float(rate)
        self.max_shift = float(max_shift)
        dist = self.shift()
        far = dist > self.max_shift
        if far.any():
            d = self.means[far] - self.means0[far]
            self.means[far] = self.means0[far] + d * (self.max_shift / dist[far])[:, None]
            self._weights()

    def _weights(self) -> None:
        """Weights and bias from the current means."""
        # scikit-learn's LDA (lsqr / eigen): coef = means Sigma^-1, intercept = -0.5 diag(means coef^T) + log priors
        coef = np.linalg.lstsq(self.covariance, self.means.T, rcond=None)[0].T
        intercept = -0.5 * np.einsum("kf,kf->k", self.means, coef) + self.log_priors
        if self.means.shape[0] == 2:
            self.coef[0] = coef[1] - coef[0]
            self.intercept[0] = intercept[1] - intercept[0]
        else:
            self.coef[:] = coef
            self.intercept[:] = intercept

    def infer(self, x: NDArray[np.float64], scores: NDArray[np.float64], proba: NDArray[np.float64]) -> int:
        """Decode one vector with the adapted weights (the same kernel as :class:`LinearDecoder`)."""
        from .linear import linear_infer

        return int(linear_infer(self.coef, self.intercept, x, self.base.link, scores, proba))
