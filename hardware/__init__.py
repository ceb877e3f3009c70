"""Stimulation hardware: drivers behind one small protocol, and device profiles.

Installed as ``rtneuro.hardware``. Drivers are constructed only by the
stimulator node, which wraps each one in the safety gate
(:class:`rtneuro.safety.Gate`); nothing else in rtneuro may call them.

Profiles (``profiles/*.yaml``) hold each device's hard safety limits and are
validated like configurations.
"""

from __future__ import annotations

import importlib

from rtneuro.errors import ConfigError, did_you_mean

DRIVERS: dict[str, str] = {
    "simulated": "rtneuro.hardware.simulated:SimulatedDriver",
    "lsl_markers": "rtneuro.hardware.lsl_markers:LslMarkerDriver",
    "serial": "rtneuro.hardware.serial_driver:SerialDriver",
    "zmq": "rtneuro.hardware.zmq_driver:ZmqDriver",
}


def driver_class(name: str):
    """The driver class registered under ``name``."""
    target = DRIVERS.get(name)
    if target is None:
        raise ConfigError(f"unknown driver {name!r}{did_you_mean(name, DRIVERS)}; available: {', '.join(sorted(DRIVERS))}")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)
