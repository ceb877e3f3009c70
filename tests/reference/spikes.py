"""Slow, obviously-correct spike detection: one channel, one sample at a time."""

from __future__ import annotations

import numpy as np


def noise_init(y: np.ndarray, n_init: int, stride: int) -> np.ndarray:
    """Initial median of ``|y|`` per channel over every ``stride``-th of the first ``n_init`` samples."""
    return np.median(np.abs(y[:n_init:stride]), axis=0).astype(np.float64)


def detect_naive(y: np.ndarray, n_init: int, med0: np.ndarray, k: float, sign: str, win: int, refr: int,
                 up: float = 1.0, down: float = 1.0, adapt: bool = False) -> list[tuple[int, int, float]]:
    """Candidates ``(peak sample, channel, value)`` of filtered ``y`` (n_times, n_channels).

    Detection starts at sample ``n_init`` with the median of ``|y|`` ``med0``
    (threshold ``k * med / 0.6745``, updated after each sample by
    ``med *= up if |y| > med else down`` when ``adapt``). A crossing is a
    sample beyond the threshold after one that was not (samples before
    ``n_init`` count as beyond); it opens a window of ``win`` samples
    whose extremum (earliest on ties) is the peak; no crossing is accepted
    until ``refr`` samples after the peak, nor while a window is open, nor at
    the sample that closes one.
    """
    out = []
    n_times, n_ch = y.shape
    for c in range(n_ch):
        m = float(med0[c])
        thr = m / 0.6745 * k
        prev_b = prev_a = True
        quiet = -1
        pend = None  # [peak, value, sign, end]
        for n in range(n_init, n_times):
            v = y[n, c]
            b = sign in ("neg", "both") and v < -thr
            a = sign in ("pos", "both") and v > thr
            new_b, new_a = b and not prev_b, a and not prev_a
            prev_b, prev_a = b, a
            if adapt:
                m = m * up if abs(v) > m else m * down
                thr = k / 0.6745 * m
            if pend is not None:
                if (pend[2] < 0 and v < pend[1]) or (pend[2] > 0 and v > pend[1]):
                    pend[0], pend[1] = n, v
                if n == pend[3]:
                    out.append((pend[0], c, float(pend[1])))
                    quiet = max(pend[0] + refr, n)
                    pend = None
            elif (new_b or new_a) and n > quiet:
                pend = [n, v, -1 if new_b else 1, n + win]
                if win == 0:
                    out.append((n, c, float(v)))
                    quiet = max(n + refr, n)
                    pend = None
    return out


def dedup_naive(cands: list[tuple[int, int, float]], neigh: np.ndarray, dedup_s: int) -> list[tuple[int, int, float]]:
    """Keep a candidate unless a neighbour within ``dedup_s`` samples is larger (|value|, then earlier, then lower channel)."""
    kept = []
    for p, c, v in cands:
        beaten = False
        for q, d, w in cands:
            if (q, d) == (p, c) or not neigh[c, d] or abs(q - p) > dedup_s:
                continue
            if (abs(w), -q, -d) > (abs(v), -p, -c):
                beaten = True
                break
        if not beaten:
            kept.append((p, c, v))
    return sorted(kept)
