"""What a stimulator delivers, one pulse and one sample at a time."""

from __future__ import annotations

import math

import numpy as np


def delivered(commands: list[tuple], t_end: float, rate: float, channels: list[int]) -> tuple[list[tuple], np.ndarray]:
    """Pulses and the sampled waveform for dated commands, by explicit loops.

    ``commands`` are ``(t, kind, channel, amp, pw, freq, dur)`` in time order,
    ``kind`` one of "level", "off", "pulse", "train". One waveform per
    channel: a new command replaces it (a pulse or a train ends a level, a
    new command cancels the train pulses still to come). A level keeps its
    pulse clock across amplitude changes at the same frequency; any other new
    clock (level or train) pulses at once, or one period after the channel's
    last pulse if that is later. Everything stops at ``t_end``.

    Returns the pulses ``(t, channel, amp, pw)`` in the order generated per
    channel, and the samples from the first command on, one row per sample
    ``k`` covering ``[t_first + k/rate, t_first + (k+1)/rate)`` up to
    ``t_end``: per channel amplitude and frequency at the sample's start,
    pulses, charge (uC) and energy into 1 kOhm (uJ; two phases) within it.
    """
    origin = commands[0][0]
    pulses: list[tuple] = []
    for c in channels:
        level = None  # [amp, pw, freq, p0, k]
        queue: list[tuple] = []
        last = -math.inf
        mine = [x for x in commands if x[2] == c] + [(t_end, "end", c, 0, 0, 0, 0)]
        for i, (t, kind, _c, amp, pw, freq, dur) in enumerate(mine):
            t_next = mine[i + 1][0] if i + 1 < len(mine) else t_end
            if kind == "end":
                break
            for q in queue:  # train pulses before t were delivered, later ones are cancelled
                if q[0] < t:
                    pulses.append((q[0], c, q[1], q[2]))
                    last = q[0]
            queue = []
            if kind == "level":
                if level is not None and level[2] == freq:
                    level[0], level[1] = amp, pw
                else:
                    level = [amp, pw, freq, max(t, last + 1.0 / freq), 0]
            elif kind == "off":
                level = None
            elif kind == "pulse":  # delivered at once
                level = None
                pulses.append((t, c, amp, pw))
                last = t
            elif kind == "train":
                level = None
                n = max(1, int(math.floor(freq * dur + 1e-9)))
                p0 = max(t, last + 1.0 / freq)
                queue = [(p0 + j / freq, amp, pw) for j in range(n)]
            if level is not None:
                while True:
                    tp = level[3] + level[4] / level[2]
                    if tp >= t_next:
                        break
                    pulses.append((tp, c, level[0], level[1]))
                    last = tp
                    level[4] += 1
        for q in queue:
            if q[0] < t_end:
                pulses.append((q[0], c, q[1], q[2]))
    n = 0
    while origin + (n + 1) / rate <= t_end:
        n += 1
    out = np.zeros((n, 5 * len(channels)))
    for j, c in enumerate(channels):
        for k in range(n):
            tk = origin + k / rate
            amp = freq = 0.0
            for t, kind, cc, a, _pw, f, _d in commands:
                if cc == c and t <= tk:  # every command ends a level but a level
                    amp, freq = (a, f) if kind == "level" else (0.0, 0.0)
            out[k, 5 * j] = amp
            out[k, 5 * j + 1] = freq
        for tp, cc, a, pw in pulses:
            if cc != c:
                continue
            k = next((k for k in range(n) if origin + k / rate <= tp < origin + (k + 1) / rate), -1)
            if k >= 0:
                out[k, 5 * j + 2] += 1
                out[k, 5 * j + 3] += a * pw / 1000.0
                out[k, 5 * j + 4] += 2 * a * a * pw * 1e-3
    return pulses, out
