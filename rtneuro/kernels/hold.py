"""Non-finite input held at the channel's last finite value, so recursive state is never poisoned."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["held"]


@njit(inline="always", cache=True, nogil=True)
def held(v, last, c):  # pragma: no cover - compiled
    """``(v, 0)`` for a finite ``v`` (remembered as ``last[c]``); ``(last[c], 1)`` otherwise."""
    if np.isfinite(v):
        last[c] = v
        return v, 0
    return last[c], 1
