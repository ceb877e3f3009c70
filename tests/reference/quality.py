"""Signal-quality flags, one sample at a time in plain Python."""

from __future__ import annotations

import math

import numpy as np


def quality_loop(x: np.ndarray, flat_tol: float, flat_n: float, clip: float, jump: float, hold_n: int, step: int):
    """Per-frame bitmasks (n_frames, n_channels) and flag changes [(index, channel, bit, on)]."""
    n_times, n_ch = x.shape
    frames, events = [], []
    for c in range(n_ch):
        prev, run = math.nan, 0
        remaining = [0, 0, 0, 0]
        raised = [0, 0, 0, 0]
        col = []
        for n in range(n_times):
            v = float(x[n, c])
            cond = set()
            if not math.isfinite(v):
                cond.add(8)
            else:
                if math.isfinite(prev):
                    d = abs(v - prev)
                    run = run + 1 if d <= flat_tol else 0
                    if d > jump:
                        cond.add(4)
                if run >= flat_n:
                    cond.add(1)
                if abs(v) >= clip:
                    cond.add(2)
                prev = v
            mask = 0
            for b, bit in enumerate((1, 2, 4, 8)):
                if bit in cond:
                    remaining[b] = hold_n
                    on = 1
                elif remaining[b] > 0:
                    remaining[b] -= 1
                    on = 1
                else:
                    on = 0
                if on != raised[b]:
                    raised[b] = on
                    events.append((n, c, bit, on))
                mask |= bit * on
            col.append(mask)
        for f in range(n_times // step):
            m = 0
            for v in col[f * step:(f + 1) * step]:
                m |= v
            if c == 0:
                frames.append([0] * n_ch)
            frames[f][c] = m
    return np.array(frames, dtype=np.int64).reshape(-1, n_ch), sorted(events)
