"""rtneuro: real-time closed-loop neural signal processing.

Graphs of streaming nodes, joined by ZeroMQ, read EEG/LFP/spike-band data live
or from recordings, compute features with numba kernels, and send stimulation
commands through a safety gate. See the README for the command line.
"""

__version__ = "0.1.0"
