"""rtneuro services: one module per kind of long-running process.

Installed as ``rtneuro.services``. Each module is thin: it names its kind and
runs :func:`rtneuro.runtime.service.main`, which hosts the nodes the graph
places in that process. The supervisor picks the module from what a process
holds:

========== ==========================================================
acquire    sources (file replay, synthetic, later LSL inlets); paced by
           the run's clock
process    filters and feature extraction
control    controllers and decoders; sends commands over the
           acknowledged command channel
stimulate  stimulators: the safety gate in front of hardware drivers,
           with its watchdog
========== ==========================================================

A process holding a stimulator is always a ``stimulate`` service; one with
sources is ``acquire``; one with controllers is ``control``; any other is
``process``.
"""

KINDS = ("acquire", "process", "control", "stimulate")
