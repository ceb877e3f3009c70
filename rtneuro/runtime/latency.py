"""Latency statistics that stay exact for short runs and bounded for long ones."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["LatencyStats"]


class LatencyStats:
    """Count, max and quantiles of latency samples (microseconds).

    Keeps every sample up to ``exact_cap`` (exact quantiles), and always a
    log-spaced histogram with 0.5 % wide bins from 0.1 us to 1000 s, used
    beyond the cap (quantiles then within 0.5 %).
    """

    LO = 0.1
    RATIO = 1.005
    N_BINS = int(math.log(1e10) / math.log(1.005)) + 2

    def __init__(self, exact_cap: int = 200_000) -> None:
        self.exact_cap = exact_cap
        self.n = 0
        self.max = 0.0
        self.sum = 0.0
        self._values: list[float] = []
        self._hist = np.zeros(self.N_BINS, dtype=np.int64)

    def extend(self, values) -> None:
        if not len(values):
            return
        v = np.asarray(values, dtype=float)
        self.n += v.size
        self.sum += float(v.sum())
        self.max = max(self.max, float(v.max()))
        if len(self._values) < self.exact_cap:
            self._values.extend(v.tolist())
        idx = np.clip((np.log(np.maximum(v, self.LO) / self.LO) / math.log(self.RATIO)).astype(int) + 1, 0, self.N_BINS - 1)
        np.add.at(self._hist, idx, 1)

    def quantile(self, q: float) -> float:
        if self.n == 0:
            return float("nan")
        if self.n <= len(self._values):
            return float(np.quantile(self._values, q))
        target = q * self.n
        k = int(np.searchsorted(np.cumsum(self._hist), target))
        return self.LO * self.RATIO ** max(k - 0.5, 0)

    def summary(self) -> dict:
        if self.n == 0:
            return {"p50": None, "p99": None, "max": None, "mean": None, "n": 0}
        return {
            "p50": round(self.quantile(0.5), 1),
            "p99": round(self.quantile(0.99), 1),
            "max": round(self.max, 1),
            "mean": round(self.sum / self.n, 1),
            "n": self.n,
        }
