"""Modules imported on first use.

``scipy.signal`` takes 1.6 s to import (SciPy 1.17 parses every docstring it
decorates). Checking a graph imports every node module it names, and a file
replay's process imports the sources; neither designs a filter. The node
modules reach SciPy's filter design through ``signal = lazy("scipy.signal")``,
so only a process that designs a filter pays for the import.
"""

from __future__ import annotations

import importlib
from typing import Any


class _LazyModule:
    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported on first use>"


def lazy(name: str) -> Any:
    """``name``'s module, imported when an attribute is first read (then as fast as the module itself)."""
    return _LazyModule(name)
