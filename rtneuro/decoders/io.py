"""Model files: plain arrays plus a JSON header in an ``.npz``, never pickle.

Every fitted object of :mod:`rtneuro.decoders` is saved through
:func:`save_arrays` and read back through :func:`load_arrays`, which opens
the archive with ``allow_pickle=False`` and answers any problem (missing,
truncated, foreign, pickled, wrong version) with one :class:`ConfigError`
line naming the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import NDArray

from rtneuro.errors import ConfigError

__all__ = ["ArrayFile", "checked", "save_arrays", "load_arrays", "one_line"]

_META = "meta"
T = TypeVar("T")


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type name when empty)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def save_arrays(
    path: str | os.PathLike[str],
    *,
    format: str,
    version: int,
    meta: Mapping[str, Any],
    arrays: Mapping[str, NDArray[Any]],
) -> Path:
    """Write ``arrays`` and a JSON header atomically to ``path``.

    Parameters
    ----------
    path : path-like
        Destination; written to ``<path>.tmp`` and renamed, so a crash never
        leaves a half-written model under ``path``.
    format, version : str, int
        Written into the header; :func:`load_arrays` checks them.
    meta : mapping
        JSON-serializable header fields.
    arrays : mapping of str to ndarray
        Numeric or unicode arrays (object arrays are refused).

    Returns
    -------
    path : Path
    """
    path = Path(path)
    if _META in arrays:
        raise ConfigError(f"array name {_META!r} is reserved for the header")
    out: dict[str, NDArray[Any]] = {}
    for name, arr in arrays.items():
        a = np.asarray(arr)
        if a.dtype.kind not in "biufcU":
            raise ConfigError(f"array {name!r} of dtype {a.dtype} cannot be saved; use numbers or strings")
        out[name] = a
    header = {"format": format, "version": version, **meta}
    out[_META] = np.array(json.dumps(header))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **out)  # type: ignore[arg-type]
    os.replace(tmp, path)
    return path


def load_arrays(
    path: str | os.PathLike[str],
    *,
    format: str,
    version: int,
    required: Iterable[str],
    optional: Iterable[str] | None = (),
    what: str = "model",
) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    """Read a file written by :func:`save_arrays`, never unpickling anything.

    Parameters
    ----------
    path : path-like
    format, version : str, int
        What the header must say.
    required, optional : iterable of str
        Array names that must / may be present; any other array is refused
        (``optional=None``: any other array is accepted, the caller checks).
    what : str
        How the file is named in messages (``"decoder"``, ``"model"``).

    Returns
    -------
    meta : dict
        The JSON header (including ``format`` and ``version``).
    arrays : dict of str to ndarray

    Raises
    ------
    ConfigError
        One line naming the file and the problem.
    """
    path = Path(path)
    where = f"{what} file {str(path)!r}"
    req = list(required)
    allowed = None if optional is None else set(req) | set(optional) | {_META}
    if not path.is_file():
        raise ConfigError(f"{where}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise ConfigError(f"{where}: a single .npy array, not an .npz {what} archive")
            files = set(npz.files)
            missing = [k for k in [*req, _META] if k not in files]
            extra = [] if allowed is None else sorted(files - allowed)
            if missing or extra:
                raise ConfigError(
                    f"{where}: incomplete or foreign archive (missing arrays {missing}, "
                    f"unexpected arrays {extra})"
                )
            arrays = {k: npz[k] for k in files}
    except ConfigError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise ConfigError(
                f"{where}: contains pickled data, refused ({what} files hold plain arrays only)"
            ) from exc
        raise ConfigError(f"{where}: unreadable ({one_line(exc)})") from exc
    except Exception as exc:  # zipfile.BadZipFile, EOFError, zlib.error, OSError...
        raise ConfigError(f"{where}: corrupt or truncated ({type(exc).__name__}: {one_line(exc)})") from exc
    meta_arr = arrays.pop(_META)
    if meta_arr.dtype.kind != "U" or meta_arr.ndim != 0:
        raise ConfigError(f"{where}: {_META!r} must be a JSON string")
    try:
        meta = json.loads(str(meta_arr))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: header is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != format:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ConfigError(f"{where}: not an rtneuro {what} (format {found!r}, expected {format!r})")
    if meta.get("version") != version:
        raise ConfigError(
            f"{where}: format version {meta.get('version')!r} is not supported "
            f"(this rtneuro reads version {version})"
        )
    return meta, arrays


class ArrayFile:
    """``save`` / ``load`` for a class that turns into arrays and back.

    A subclass defines ``to_arrays() -> (meta, arrays)``, the classmethod
    ``from_arrays(meta, arrays, where)``, and the class attributes
    ``file_format``, ``file_version``, ``file_arrays`` (the arrays a file
    must hold) and ``file_what`` (how messages name the file).
    """

    file_format: ClassVar[str]
    file_version: ClassVar[int] = 1
    file_arrays: ClassVar[tuple[str, ...]] = ()
    file_what: ClassVar[str] = "decoder"

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:  # pragma: no cover - interface
        raise NotImplementedError

    @classmethod
    def from_arrays(cls, meta: dict[str, Any], arrays: dict[str, NDArray[Any]], where: str) -> Any:  # pragma: no cover
        raise NotImplementedError

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write as an ``.npz`` of plain arrays plus a JSON header, atomically (temporary file, then rename)."""
        meta, arrays = self.to_arrays()
        return save_arrays(path, format=self.file_format, version=self.file_version, meta=meta, arrays=arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Any:
        """Read a file written by :meth:`save`, never unpickling anything.

        Raises
        ------
        ConfigError
            One line naming the file and the problem: missing, not an npz
            archive, truncated, holding a pickled object, missing or extra
            arrays, a bad header, or inconsistent arrays.
        """
        meta, arrays = load_arrays(path, format=cls.file_format, version=cls.file_version,
                                   required=cls.file_arrays, what=cls.file_what)
        return cls.from_arrays(meta, arrays, where=f"{cls.file_what} file {str(path)!r}")


def checked(where: str, make: Callable[[], T]) -> T:
    """``make()``, with its errors turned into one ``"<where>: ..."`` ConfigError line.

    For ``from_arrays``: a ConfigError from the constructor gets the file's
    name in front; a TypeError, ValueError or LinAlgError from inconsistent
    arrays becomes ``"<where>: inconsistent contents (...)"``.
    """
    try:
        return make()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    except (TypeError, ValueError, np.linalg.LinAlgError) as exc:
        raise ConfigError(f"{where}: inconsistent contents ({one_line(exc)})") from exc


def require(where: str, meta: Mapping[str, Any], keys: Iterable[str]) -> None:
    """Refuse a header that lacks one of ``keys``: ``"<where>: header lacks 'key'"``."""
    for key in keys:
        if key not in meta:
            raise ConfigError(f"{where}: header lacks {key!r}")


def require_arrays(where: str, arrays: Mapping[str, NDArray[Any]], keys: Iterable[str], floating: bool = False) -> None:
    """Refuse a file that lacks one of the arrays ``keys`` (or, with ``floating``, holds one that is not float)."""
    for key in keys:
        if key not in arrays:
            raise ConfigError(f"{where}: lacks array {key!r}")
        if floating and arrays[key].dtype.kind != "f":
            raise ConfigError(f"{where}: {key!r} must be floating point, got {arrays[key].dtype}")
