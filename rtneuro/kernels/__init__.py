"""numba kernels: pure functions, state and outputs passed in as arrays.

No classes, no I/O, no globals read at run time. Arrays are
``(n_times, n_channels)`` and C-contiguous.
"""
