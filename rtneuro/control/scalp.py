"""2-D scalp positions of EEG channels, for the dashboard's scalp map.

Channel names are matched (case, dots and spaces aside) against MNE's
``standard_1005`` montage; each matched position is projected azimuthally
and equidistantly from the vertex (as MNE's topomaps do with a sphere): the
unit circle is the head's equator at the fitted sphere, nose up (+y).
"""

from __future__ import annotations

import re
import warnings

import numpy as np

from ..messages import StreamMeta

__all__ = ["scalp_positions", "normalise_name"]

#: A map needs at least this many placed channels.
MIN_CHANNELS = 3


def normalise_name(name: str) -> str:
    """``"Fp1."`` and ``"FP1"`` name the same electrode."""
    return re.sub(r"[.\s_-]", "", name).lower()


def scalp_positions(streams: dict[str, StreamMeta]) -> dict[str, dict[str, list[float]]]:
    """Per signal stream with EEG channels: channel name -> ``[x, y]`` on the unit head circle (nose up).

    Streams with fewer than three channels of known position are left out.
    """
    eeg = {n: m for n, m in streams.items() if m.kind == "sig" and (not m.ch_types or "eeg" in m.ch_types)}
    if not eeg:
        return {}
    import mne

    with warnings.catch_warnings():  # renamed in recent MNE; the positions are the same
        warnings.simplefilter("ignore", FutureWarning)
        montage = mne.channels.make_standard_montage("standard_1005")
    pos = montage.get_positions()["ch_pos"]
    known = {normalise_name(k): np.asarray(v, dtype=float) for k, v in pos.items()}
    pts = np.array(list(known.values()))
    centre = _sphere_centre(pts)
    out: dict[str, dict[str, list[float]]] = {}
    for name, meta in eeg.items():
        placed: dict[str, list[float]] = {}
        for i, ch in enumerate(meta.ch_names):
            if meta.ch_types and i < len(meta.ch_types) and meta.ch_types[i] != "eeg":
                continue
            p = known.get(normalise_name(ch))
            if p is None:
                continue
            v = p - centre
            r = np.linalg.norm(v)
            polar = np.arccos(np.clip(v[2] / r, -1.0, 1.0))  # 0 at the vertex, pi/2 at the equator
            az = np.arctan2(v[1], v[0])
            rho = polar / (np.pi / 2)
            placed[ch] = [round(float(rho * np.cos(az)), 4), round(float(rho * np.sin(az)), 4)]
        if len(placed) >= MIN_CHANNELS:
            out[name] = placed
    return out


def _sphere_centre(pts: np.ndarray) -> np.ndarray:
    """Least-squares sphere through ``pts`` (|p - c|^2 = r^2, linear in c and r^2 - |c|^2)."""
    a = np.c_[2 * pts, np.ones(len(pts))]
    b = (pts ** 2).sum(axis=1)
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    return sol[:3]
