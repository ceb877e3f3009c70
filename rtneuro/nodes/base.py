"""The node protocol.

A node is a small stateful class around pure kernels. Its parameters are a
frozen dataclass, so that a configuration entry maps one-to-one onto a
constructor and a graph can be saved and rebuilt. Its life cycle:

``__init__(params, inputs, ctx)``
    Validate the parameters against the input streams' metadata, design
    filters, compute ``self.outputs``. Pure: opens no device or socket, so
    ``rtneuro validate`` can build every node of a graph.
``open()``
    Acquire resources (files, devices).
``warmup()``
    Compile and run the kernels once, so that the first real chunk is fast.
``reset()``
    Create all mutable state (underscore attributes).
``process(chunk, port)``
    Take one chunk of input ``port``; return ``None``, a :class:`Chunk` for
    the main output, or a list of ``(port_name, Chunk)`` pairs.
``tick(now)``
    Optional; called at least every 50 ms with the LSL time (watchdogs).
``end()``
    Every input has ended (end of stream); flush what is pending.
``rehearse()``
    Optional; run the kernels on scratch state just before a chunk is due.
``report()``
    A JSON-able summary for the run report.
``update(params)``
    A live change of the parameters named in ``live``, between two chunks.
``close()``
    Release resources; stimulators go to their safe state.

Sources implement ``start(origin, resume)``, ``next_due()`` (stream time at
which the next chunk is complete, ``None`` when exhausted) and ``read()``
instead of ``process``, and may implement ``prefetch()``, which the runtime
calls between chunks so that ``read()`` has nothing left to compute.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

import numpy as np

from ..errors import ConfigError, did_you_mean
from ..messages import Chunk, StreamMeta
from ..runtime.clock import lsl_clock

__all__ = ["Node", "Source", "GeneratorSource", "NodeContext", "build_params", "param", "regular_rate", "resolve_picks", "window_and_step",
           "frames_chunk"]


def _same_time(t: float) -> float:
    return t


@dataclass(slots=True)
class NodeContext:
    """What the runtime tells a node about where it runs.

    Parameters
    ----------
    node_id : str
        The node's id in the graph; its main output stream has this name.
    base_dir : Path
        Directory relative paths in parameters are resolved against (the
        configuration file's directory).
    clock : Clock or None
        The run's stream clock (``None`` while validating).
    real_clock : callable
        The LSL clock, for deadlines and watchdogs that must follow real
        time whatever the replay speed.
    lsl_time : callable
        Maps a stream time to the LSL time it stands for: the same value in a
        live graph, the moment it is (or would be) replayed otherwise.
    wait_for_streams : bool
        False while ``rtneuro validate`` checks a graph: a live input looks
        for its stream briefly and, when it is not there, describes itself
        from its declared parameters (or raises
        :class:`~rtneuro.errors.StreamNotFound`) instead of waiting.
    """

    node_id: str
    base_dir: Path = Path(".")
    clock: Any = None
    real_clock: Callable[[], float] = lsl_clock
    #: stream time -> LSL time (identity live; the replay schedule otherwise)
    lsl_time: Callable[[float], float] = _same_time
    wait_for_streams: bool = True

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def stream_name(self, port: str = "") -> str:
        return f"{self.node_id}.{port}" if port else self.node_id

    def command_deadline(self, ms: float) -> float | None:
        """The LSL time by which a command made now must be applied; None on the virtual clock.

        As fast as possible (``--speed max``) the data outruns real time and
        every hop waits for the slowest consumer, so how late a command is in
        real time says nothing about the data: such runs carry no deadline and
        decide the same however loaded the machine is.
        """
        clock = self.clock
        if clock is not None and not math.isfinite(clock.speed):
            return None
        return self.real_clock() + ms / 1000.0


class Node:
    """Base class of processing nodes (transforms, controllers, sinks)."""

    #: ``"source"``, ``"transform"``, ``"controller"``, ``"sink"`` or ``"stimulator"``.
    category: ClassVar[str] = "transform"
    #: The parameters dataclass.
    Params: ClassVar[type]
    #: Accepted stream kinds per input position ("sig|feat"); the last entry
    #: applies to any further inputs.
    input_kinds: ClassVar[tuple[str, ...]] = ("sig",)
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int] = 1

    #: Output streams by port name ("" is the main output, named after the node).
    outputs: dict[str, StreamMeta]
    #: Parameters that may change while the graph runs (see :meth:`update`).
    live: ClassVar[tuple[str, ...]] = ()
    #: Live parameters that touch safety, with the direction that is stricter
    #: (``"lower"`` or ``"higher"``; for a value that may be null, null is the
    #: loosest, and ``true``/``false`` flags name the safe one as ``"true"`` or
    #: ``"false"``). While running they can only be made stricter.
    stricter: ClassVar[dict[str, str]] = {}

    def __init__(self, params: Any, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        self.params = params
        self.inputs = list(inputs)
        self.ctx = ctx
        self.outputs = {}
        self._notes: list[str] = []

    def note(self, message: str) -> None:
        """A one-line warning for the run report (logged by the node itself)."""
        self._notes.append(message)

    def take_notes(self) -> list[str]:
        notes, self._notes = self._notes, []
        return notes

    def status(self) -> str:
        """A short state for the live status line ("" for none)."""
        return ""

    def open(self) -> None:
        """Acquire resources (files, devices)."""

    def warmup(self) -> None:
        """Compile kernels and run them once."""

    def reset(self) -> None:
        """Create all mutable state."""

    def process(self, chunk: Chunk, port: int = 0) -> Chunk | list | None:  # pragma: no cover - interface
        raise NotImplementedError

    def end(self) -> None:
        """Every input has ended."""

    def rehearse(self) -> None:
        """Run the kernels of ``process`` on scratch state, changing nothing.

        Called just before the next chunk is due so that the CPU caches hold
        this node's code and data when it arrives (see the service's
        ``_rehearse``). Optional.
        """

    def report(self) -> dict:
        return {}

    def update(self, params: Any) -> None:
        """Take new parameters between two chunks (a live change; only ``live`` ones differ).

        The runtime calls it at a chunk boundary, never during a chunk, with
        parameters built and checked by the same code as the configuration's
        (types, ranges, the dataclass' checks), after a node of the same type
        built with them passed its own checks against the inputs. The default
        swaps ``self.params``, which is enough for a node that reads its live
        parameters from ``self.params`` on every chunk; a node with derived
        state (filter coefficients, cached limits) overrides it and rebuilds
        that state, keeping what it has learnt where it can.
        """
        self.params = params

    def close(self) -> None:
        """Release resources."""


class Source(Node):
    """Base class of sources: nodes without inputs.

    A *paced* source (a replay, a generator) says when its next chunk is due
    and the runtime waits for that moment on the run's clock. A source that
    is not paced (a live inlet) is pulled: ``pull(timeout_s, now)`` returns
    what arrived, waiting up to ``timeout_s`` for it. A source that follows
    the LSL clock (``realtime_only``, an LSL inlet) makes its graph run in
    real time only.
    """

    category: ClassVar[str] = "source"
    paced: ClassVar[bool] = True
    realtime_only: ClassVar[bool] = False
    input_kinds: ClassVar[tuple[str, ...]] = ()
    min_inputs: ClassVar[int] = 0
    max_inputs: ClassVar[int] = 0

    def start(self, origin: float, resume: int = 0) -> None:
        """Sample 0 is acquired at stream time ``origin``; start at ``resume``."""
        raise NotImplementedError  # pragma: no cover - interface

    def next_due(self) -> float | None:
        """Stream time at which the next chunk is complete, or None at the end."""
        raise NotImplementedError  # pragma: no cover - interface

    def read(self) -> Chunk | list:
        """The next chunk (main output) or a list of (port, Chunk)."""
        raise NotImplementedError  # pragma: no cover - interface

    def position(self) -> int:
        """Index of the next sample to read (for resuming after a restart)."""
        return 0

    def prefetch(self) -> None:
        """Prepare the next chunk ahead of its due time, so that ``read`` is instant."""

    def pull(self, timeout_s: float, now: float) -> Chunk | list | None:
        """Sources that are not paced: what arrived, waiting up to ``timeout_s``."""
        raise NotImplementedError  # pragma: no cover - interface


class GeneratorSource(Source):
    """A paced source that computes fixed-size chunks from the sample index.

    Subclasses set ``sfreq``, ``_end`` (total samples, or None for endless)
    and ``_index`` (next sample) and use ``params.chunk_size``; a restart
    resumes at the chunk boundary before the sample it stopped at.
    """

    sfreq: float
    _end: int | None
    _index: int
    _origin: float = 0.0
    _prepared: Any = None

    def start(self, origin: float, resume: int = 0) -> None:
        self._origin = origin
        if resume:
            self._index = resume - resume % self.params.chunk_size
            self._prepared = None

    def position(self) -> int:
        return self._index

    def _remaining(self) -> int:
        n = self.params.chunk_size
        return n if self._end is None else min(n, self._end - self._index)

    def next_due(self) -> float | None:
        n = self._remaining()
        if n <= 0:
            return None
        return self._origin + (self._index + n - 1) / self.sfreq


# -- checks shared by nodes ------------------------------------------------------


def regular_rate(src: StreamMeta, what: str) -> float:
    """The sampling rate of ``src``; a ConfigError when it has none (``what`` needs one)."""
    if not src.sfreq > 0:
        raise ConfigError(f"stream '{src.name}' has no regular sampling rate; {what} needs one")
    return float(src.sfreq)


def frames_chunk(chunk: Chunk, rows: np.ndarray, ends, *, origin: int, first_frame: int, window: int, step: int,
                 fs: float, of: str) -> Chunk:
    """Feature rows of sliding windows as a chunk, timed and traced by the input samples they cover.

    ``ends`` are the windows' ends (one past the last sample) counted from
    the stream index ``origin``; the chunk's time is that of the first
    window's last sample, and ``extra["window"]`` is the input-sample span
    ``[first, last]`` of the last window (the cause a command records).
    """
    last_idx = origin + int(ends[-1]) - 1
    t_first = chunk.t0 + (origin + int(ends[0]) - 1 - chunk.first) / fs
    extra = {"window": [last_idx - window + 1, last_idx], "of": of}
    return Chunk(rows, first_frame, t_first, fs / step, chunk.trace, extra)


def window_and_step(window_s: float, step_s: float, fs: float, min_window: int) -> tuple[int, int]:
    """Sliding-window length and hop in samples; a ConfigError when too short."""
    window, step = int(round(window_s * fs)), int(round(step_s * fs))
    if window < min_window or step < 1:
        raise ConfigError(f"window_s={window_s} and step_s={step_s} give {window} and {step} samples at {fs:g} Hz; "
                          f"need a window of at least {min_window} samples")
    return window, step


def resolve_picks(picks: Sequence[str] | None, src: StreamMeta) -> list[int]:
    """Column indices of the channels named in ``picks`` (all channels when None)."""
    if picks is None:
        return list(range(src.n_channels))
    missing = [p for p in picks if p not in src.ch_names]
    if missing:
        raise ConfigError(f"picks {missing} are not channels of stream '{src.name}'{did_you_mean(missing[0], src.ch_names)}")
    return [src.ch_names.index(p) for p in picks]


# -- parameters ---------------------------------------------------------------


def param(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
          le: float | None = None, lt: float | None = None, doc: str = "") -> Any:
    """A dataclass field with a range checked by :func:`build_params`."""
    meta = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt), ("doc", doc)) if v not in (None, "")}
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


_MISSING = object()


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; return it, converted where lossless."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        options = typing.get_args(tp)
        if value in options and type(value) is type(options[options.index(value)]):
            return value
        raise ConfigError(f"{where}={value!r} is not one of {list(options)}{did_you_mean(value, [str(o) for o in options])}")
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        for arg in args:
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                pass
        literals = [a for a in args if typing.get_origin(a) is Literal]
        if value is not None and len(literals) == 1 and all(a in (type(None), literals[0]) for a in args):
            _coerce(value, literals[0], where)  # raises with the options and a suggestion
        raise ConfigError(f"{where}={value!r} must be {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}={value!r} must be null")
    if tp is bool:
        if type(value) is bool:
            return value
        raise ConfigError(f"{where}={value!r} must be true or false")
    if tp is int:
        if type(value) is int:
            return value
        raise ConfigError(f"{where}={value!r} must be an integer")
    if tp is float:
        if type(value) in (int, float):
            return float(value)
        raise ConfigError(f"{where}={value!r} must be a number")
    if tp is str:
        if type(value) is str:
            return value
        raise ConfigError(f"{where}={value!r} must be a string")
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}={value!r} must be a list ({_type_name(tp)})")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}={value!r} must have {len(args)} items ({_type_name(tp)})")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        kt, vt = typing.get_args(tp) or (Any, Any)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}={value!r} must be a mapping ({_type_name(tp)})")
        return {_coerce(k, kt, f"{where} key"): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    raise ConfigError(f"{where}: unsupported parameter type {_type_name(tp)}")  # pragma: no cover


def _check_range(value: Any, meta: typing.Mapping, where: str) -> None:
    if value is None or isinstance(value, bool):
        return
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if not isinstance(v, (int, float)):
            continue
        for key, ok, text in (
            ("ge", lambda a, b: a >= b, ">="),
            ("gt", lambda a, b: a > b, ">"),
            ("le", lambda a, b: a <= b, "<="),
            ("lt", lambda a, b: a < b, "<"),
        ):
            bound = meta.get(key)
            if bound is not None and not ok(v, bound):
                raise ConfigError(f"{where}={value!r} must be {text} {bound}")


@functools.lru_cache(maxsize=512)
def _hints(cls: type) -> dict[str, Any]:
    """A parameters class' resolved annotations (resolving them costs more than the rest of a check: a live change's path)."""
    return typing.get_type_hints(cls)


def build_params(cls: type, raw: Any, where: str) -> Any:
    """Build a parameters dataclass from a configuration mapping.

    Checks unknown keys (with a suggestion), missing required keys, types and
    ranges; the dataclass' ``__post_init__`` may add cross-field checks by
    raising :class:`ConfigError`.

    Parameters
    ----------
    cls : type
        A dataclass.
    raw : dict or None
        The ``params:`` mapping.
    where : str
        Prefix for error messages (``"node 'bp' params"``).
    """
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    for key in raw:
        if key not in fields:
            raise ConfigError(f"{where}: unknown parameter {key!r}{did_you_mean(key, fields)}; allowed: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}: missing required parameter {name!r} ({_type_name(hints[name])})")
            continue
        value = _coerce(raw[name], hints[name], f"{where}.{name}")
        _check_range(value, f.metadata, f"{where}.{name}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
