"""Slow, whole-signal burst detection: scipy filters, an explicit convolution for the Hilbert part,
thresholds and runs in plain Python. The same definitions as :mod:`rtneuro.kernels.bursts`, written
from the node's docstring, not from the kernel."""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import sosfilt, sosfilt_zi


def bursts_reference(x: np.ndarray, node) -> list[tuple]:
    """Events ``(kind, sample, channel, onset, duration_samples, peak, cycles_per_sample)`` of a ``Bursts`` node's
    parameters (read from the constructed node) on the whole of ``x`` (shape (n_times, n_channels_in))."""
    ip = node._ip
    L, sub, hn, upd, warm, calibrate, min_n, max_n, gap_n, gd, wc, wr, _step, db = (int(v) for v in ip)
    hi_f, lo_f, pct, rel_min, corr_min = (float(v) for v in node._fp)
    M = L // 2
    R = node._ring_len
    xs = x[:, node.picks].astype(float)
    n, C = xs.shape
    band = np.column_stack([sosfilt(node._sos, xs[:, c], zi=sosfilt_zi(node._sos) * xs[0, c])[0] for c in range(C)])
    broad = np.column_stack([sosfilt(node._sos_broad, xs[:, c], zi=sosfilt_zi(node._sos_broad) * xs[0, c])[0]
                             for c in range(C)])
    h = node._h  # h[M + m] multiplies the sample m before the centre... (h * y)[t] = sum_j h[j] y[t - j]
    events: list[tuple] = []
    hist: list[list[float]] = [[] for _ in range(C)]
    thr_hi = [math.inf] * C
    thr_lo = [math.inf] * C
    frozen = False
    mode = [0] * C
    start = [0] * C
    gap = [0] * C
    peak = [0.0] * C
    zc: list[list[float]] = [[] for _ in range(C)]
    prev = [0.0] * C

    def at(y, k, c):
        return y[k, c] if k >= 0 else 0.0

    def window(k, c, w, delay):
        return [(at(band, k - j - M, c), at(broad, k - j - delay, c)) for j in range(w)]

    for k in range(n):
        i = k - M
        valid = k >= R - 1
        for c in range(C):
            im = sum(h[j] * at(band, k - j, c) for j in range(L))
            s = at(band, k - M, c)
            env = math.sqrt(s * s + im * im)
            above = valid and env >= thr_lo[c]
            if mode[c] == 0:
                if above:
                    mode[c], start[c], gap[c], peak[c], zc[c] = 1, i, 0, env, []
            else:
                if above:
                    gap[c] = 0
                    peak[c] = max(peak[c], env)
                    if prev[c] < 0.0 <= s:
                        zc[c].append((i - 1) + (-prev[c]) / (s - prev[c]))
                else:
                    gap[c] += 1
                ended = gap[c] > gap_n
                dur = i - start[c] + 1 - gap[c]
                if mode[c] == 1:
                    if ended:
                        mode[c] = 0
                    elif dur > max_n:
                        mode[c] = 3
                    elif above and dur >= min_n and peak[c] >= thr_hi[c] and _criteria(
                            window(k, c, max(wr, wc), M + db), wr, wc, rel_min, corr_min):
                        mode[c] = 2
                        onset = start[c] - gd
                        events.append((1, k, c, onset, k - onset, peak[c], math.nan))
                elif mode[c] == 2:
                    if ended or dur > max_n:
                        z = zc[c]
                        f = (len(z) - 1) / (z[-1] - z[0]) if len(z) >= 2 and z[-1] > z[0] else math.nan
                        events.append((2 if ended else 3, k, c, start[c] - gd, dur, peak[c], f))
                        mode[c] = 0 if ended else 3
                elif ended:
                    mode[c] = 0
            prev[c] = s
            if valid and k % sub == 0:
                hist[c].append(env)
        if (k + 1) % upd == 0 and len(hist[0]) >= warm and not frozen and (not calibrate or len(hist[0]) >= hn):
            for c in range(C):
                stat = float(np.percentile(hist[c][-hn:], pct))
                thr_hi[c], thr_lo[c] = hi_f * stat, lo_f * stat
            frozen = bool(calibrate)
    return events


def _criteria(win, wr, wc, rel_min, corr_min) -> bool:
    if wr > 0:
        ps = sum(s * s for s, _ in win[:wr])
        pb = sum(b * b for _, b in win[:wr])
        if not (pb > 0 and ps >= rel_min * pb):
            return False
    if wc > 1:
        s = np.array([v[0] for v in win[:wc]])
        b = np.array([v[1] for v in win[:wc]])
        if s.std() == 0 or b.std() == 0 or np.corrcoef(s, b)[0, 1] < corr_min:
            return False
    return True
