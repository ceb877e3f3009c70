"""Modules imported on first use, and SciPy's filter designs cached on disk.

``scipy.signal`` takes 1 to 1.6 s to import (SciPy 1.17 parses every
docstring it decorates). Checking a graph imports every node module it names,
and a file replay's process imports the sources; neither designs a filter.
The node modules reach SciPy's filter design through
``signal = lazy("scipy.signal")``, so only a process that designs a filter
pays for the import.

Most processes that design a filter design the same ones at every start
(the graph's band-pass, its notch): the command line checks the graph, then
the process that runs the node designs it again. The pure design functions
(:data:`CACHED`) are therefore looked up first in an on-disk cache keyed by
the function, its exact arguments and the SciPy and NumPy versions; a miss
calls SciPy and stores what it returned (``.npz``, no pickles), so the next
process reads the same bits without importing ``scipy.signal``. The cache is
``$RTNEURO_CACHE_DIR`` (else ``$XDG_CACHE_HOME/rtneuro``, else
``~/.cache/rtneuro``), ``designs/``; a folder that cannot be written, or an
unreadable entry, only means that SciPy is called.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: the pure design functions of scipy.signal whose results are cached (same arguments, same bits)
CACHED = frozenset({"butter", "cheby1", "iirnotch", "firwin", "kaiserord", "kaiser_beta", "sosfilt_zi", "tf2sos",
                    "get_window", "sosfreqz", "freqz"})
#: an argument array larger than this is not worth a cache entry (its hash costs what the design does)
MAX_ARG_BYTES = 1 << 20


class _LazyModule:
    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported on first use>"


class _Uncacheable(Exception):
    pass


def _key_part(v: Any) -> Any:
    """A canonical, hashable description of an argument (its type and exact value)."""
    if v is None or isinstance(v, (bool, str)):
        return [type(v).__name__, v]
    if isinstance(v, (int, float, complex, np.number)):
        return [type(v).__name__, repr(v.item() if isinstance(v, np.number) else v)]
    if isinstance(v, np.ndarray):
        if v.dtype.hasobject or v.nbytes > MAX_ARG_BYTES:
            raise _Uncacheable
        return ["ndarray", v.dtype.str, list(v.shape), hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()]
    if isinstance(v, (list, tuple)):
        return [type(v).__name__, [_key_part(x) for x in v]]
    raise _Uncacheable


def cache_dir() -> Path:
    base = os.environ.get("RTNEURO_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "rtneuro")
    return Path(base) / "designs"


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"scipy {version('scipy')} numpy {np.__version__}"
    except PackageNotFoundError:  # pragma: no cover - scipy is a dependency
        return f"numpy {np.__version__}"


_VERSIONS: str | None = None


def _entry(fn: str, args: tuple, kwargs: dict) -> Path | None:
    global _VERSIONS
    try:
        desc = repr([fn, _key_part(list(args)), sorted((k, _key_part(v)) for k, v in kwargs.items())])
    except _Uncacheable:
        return None
    if _VERSIONS is None:
        _VERSIONS = _versions()
    digest = hashlib.sha256(f"{_VERSIONS}\n{desc}".encode()).hexdigest()[:40]
    return cache_dir() / f"{fn}-{digest}.npz"


def _pack(result: Any) -> dict[str, Any] | None:
    """``result`` as arrays: one per item (a 0-d array for a scalar) and how to rebuild it (None: not storable)."""
    items = result if isinstance(result, tuple) else (result,)
    arrays: dict[str, Any] = {}
    kinds = []
    for i, x in enumerate(items):
        if isinstance(x, np.ndarray) and not x.dtype.hasobject:
            kinds.append("array")
            arrays[f"r{i}"] = x
        elif isinstance(x, (bool, int, float, complex, np.number)):
            kinds.append(type(x).__name__ if not isinstance(x, np.number) else "np")
            arrays[f"r{i}"] = np.asarray(x)
        else:
            return None
    arrays["kinds"] = np.array(["tuple" if isinstance(result, tuple) else "one", *kinds])
    return arrays


def _unpack(z: Any) -> Any:
    shape, *kinds = (str(k) for k in z["kinds"])
    out: list[Any] = []
    for i, kind in enumerate(kinds):
        a = z[f"r{i}"]
        out.append(a if kind == "array" else a[()] if kind == "np" else {"bool": bool, "int": int, "float": float,
                                                                          "complex": complex}[kind](a.item()))
    return tuple(out) if shape == "tuple" else out[0]


def cached_design(fn: str, func: Callable[[], Callable[..., Any]], args: tuple, kwargs: dict) -> Any:
    """``func()(*args, **kwargs)``, read from the design cache when it holds it (stored there otherwise)."""
    path = _entry(fn, args, kwargs)
    if path is not None and path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return _unpack(z)
        except Exception:  # noqa: BLE001 - a damaged or foreign entry: design again (and replace it)
            pass
    result = func()(*args, **kwargs)
    packed = _pack(result) if path is not None else None
    if packed is not None and path is not None:
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
            try:
                with os.fdopen(fd, "wb") as f:
                    np.savez(f, **packed)
                os.replace(tmp, path)  # atomic: a reader sees a whole entry or none
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
    return result


class _SignalModule(_LazyModule):
    """``scipy.signal`` on first use, its pure design functions through the design cache."""

    def __getattr__(self, attr: str) -> Any:
        if attr not in CACHED:
            return super().__getattr__(attr)

        def design(*args: Any, **kwargs: Any) -> Any:
            return cached_design(attr, lambda: getattr(importlib.import_module(self._name), attr), args, kwargs)

        design.__name__ = attr
        return design


def lazy(name: str) -> Any:
    """``name``'s module, imported when an attribute is first read (then as fast as the module itself);
    ``scipy.signal``'s design functions are read from the design cache (see the module's notes)."""
    return _SignalModule(name) if name == "scipy.signal" else _LazyModule(name)
