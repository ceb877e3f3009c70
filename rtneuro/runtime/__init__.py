"""The runtime: clocks, the service loop that hosts nodes, and the supervisor.

Import the submodules directly (``rtneuro.runtime.clock``,
``rtneuro.runtime.service``, ``rtneuro.runtime.supervisor``); this package
imports nothing so that nodes can use the clocks without cycles.
"""
