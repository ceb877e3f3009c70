"""rtneuro: real-time closed-loop neural signal processing.

Graphs of streaming nodes, joined by ZeroMQ, read EEG/LFP/spike-band data live
or from recordings, compute features with numba kernels, and send stimulation
commands through a safety gate. See the README for the command line.
"""

import os as _os
from pathlib import Path as _Path

__version__ = "0.1.0"

# liblsl reads its settings when first used; ours only quiet its INFO logs.
_os.environ.setdefault("LSLAPICFG", str(_Path(__file__).resolve().parent / "lsl_api.cfg"))
