"""Live parameters: what may change in a running graph, and the check of a change.

A change names ``NODE.PARAM`` and a value. It is checked by the code that
checks the configuration, with the configuration's messages:

1. the node exists, the parameter exists, and the node type lists it in
   ``live`` (:attr:`rtneuro.nodes.base.Node.live`);
2. ``build_params`` with the node's current parameters and the change:
   types, ranges and the parameters' own cross-field checks;
3. a safety parameter (:attr:`~rtneuro.nodes.base.Node.stricter`) only
   moves in its stricter direction;
4. a node of the same type built with the new parameters against the same
   input streams passes its own checks (constructors are pure: they open no
   device or socket).

Every change of a request passes, or none is applied.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ConfigError, RtneuroError, did_you_mean
from ..nodes import NodeContext, build_params, node_class
from ..nodes.base import _type_name

__all__ = ["ControlError", "LiveChange", "live_schema", "validate_changes", "parse_changes", "loosens", "jsonable"]

#: Longest text of an annotation, a reason or a segment label.
MAX_TEXT = 500


class ControlError(RtneuroError):
    """A control request that cannot be applied; ``status`` is its HTTP status.

    400 malformed, 401/403 authentication, 404 unknown node or parameter,
    409 not possible in this state (not live, nothing to pause, no recorder),
    422 an invalid value (type, range, a node's check, a safety loosening),
    503 the run is not running.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True, slots=True)
class LiveChange:
    """A checked change of one node: its new raw parameters and parameters, and what changed."""

    node: str
    raw: dict
    params: Any
    changed: dict


def jsonable(v: Any, nonfinite: Callable[[float], Any] = str) -> Any:
    """``v`` with tuples as lists, keys as strings, NumPy scalars as Python ones and each non-finite float
    as ``nonfinite(x)``: ``str`` ("inf", as the schema shows a bound) or ``lambda x: None`` (records)."""
    if isinstance(v, (list, tuple)):
        return [jsonable(x, nonfinite) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x, nonfinite) for k, x in v.items()}
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return nonfinite(v)
    return v


def live_schema(cls: Any, params: Any) -> dict[str, dict]:
    """Each live parameter of a node: type, range, doc, current value, stricter direction."""
    hints = typing.get_type_hints(cls.Params)
    fields = {f.name: f for f in dataclasses.fields(cls.Params)}
    out = {}
    for name in getattr(cls, "live", ()):
        f = fields.get(name)
        if f is None:
            continue
        row: dict[str, Any] = {"type": _type_name(hints[name]), "value": jsonable(getattr(params, name, None))}
        for key in ("ge", "gt", "le", "lt", "doc"):
            if key in f.metadata:
                row[key] = f.metadata[key]
        row["stricter"] = cls.stricter.get(name)
        out[name] = row
    return out


def loosens(direction: str, old: Any, new: Any) -> bool:
    """Whether moving a safety parameter from ``old`` to ``new`` loosens it."""
    if old == new:
        return False
    if direction in ("true", "false"):
        safe = direction == "true"
        return old is safe and new is not safe
    if old is None:  # null is the loosest: anything is at least as strict
        return False
    if new is None:
        return True
    olds = old if isinstance(old, (list, tuple)) else [old]
    news = new if isinstance(new, (list, tuple)) else [new]
    if len(olds) != len(news):
        return True
    for a, b in zip(olds, news, strict=True):
        if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
            return a != b
        if (direction == "lower" and b > a) or (direction == "higher" and b < a):
            return True
    return False


def parse_changes(changes: Any) -> dict[str, dict[str, Any]]:
    """``{"node.param": value}`` (or ``{"node": {"param": value}}``) -> ``{node: {param: value}}``."""
    if not isinstance(changes, dict) or not changes:
        raise ControlError('"changes" must be a non-empty object such as {"thr.threshold": 2.5}', 400)
    if len(changes) > 256:
        raise ControlError(f"{len(changes)} changes in one request; at most 256", 400)
    out: dict[str, dict[str, Any]] = {}
    for key, value in changes.items():
        if not isinstance(key, str) or len(key) > 200:
            raise ControlError("each change is named 'NODE.PARAM' (a string of at most 200 characters)", 400)
        if "." not in key:
            if isinstance(value, dict):
                for p, v in value.items():
                    if not isinstance(p, str):
                        raise ControlError(f"parameter names of node {key!r} must be strings", 400)
                    out.setdefault(key, {})[p] = v
                continue
            raise ControlError(f"change {key!r} must name NODE.PARAM, such as 'thr.threshold'", 400)
        node, name = key.split(".", 1)
        out.setdefault(node, {})[name] = value
    return out


def validate_changes(graph: Any, current: dict[str, dict], changes: dict[str, dict[str, Any]]) -> list[LiveChange]:
    """Check every change of a request; all pass or a ControlError names the first problem.

    Parameters
    ----------
    graph : rtneuro.config.Graph
        The running graph (node specs, stream metadata, base folder).
    current : dict
        Each node's current raw parameters (the configuration's, with the
        changes applied so far).
    changes : dict
        ``{node: {param: value}}`` (see :func:`parse_changes`).
    """
    out = []
    for nid, values in changes.items():
        spec = graph.nodes.get(nid)
        if spec is None:
            raise ControlError(f"no node {nid!r} in graph '{graph.name}'{did_you_mean(nid, graph.nodes)}; "
                               f"nodes with live parameters: {_with_live(graph)}", 404)
        cls = node_class(spec.type)
        fields = [f.name for f in dataclasses.fields(cls.Params)]
        live = tuple(getattr(cls, "live", ()))
        for name in values:
            if name not in fields:
                raise ControlError(f"node '{nid}' ({spec.type}) has no parameter {name!r}{did_you_mean(name, fields)}; "
                                   f"live: {', '.join(live) or 'none'}", 404)
            if name not in live:
                raise ControlError(f"node '{nid}' parameter {name!r} cannot change while running; "
                                   f"live: {', '.join(live) or 'none'} (change it in the configuration and restart)", 409)
        old_raw = dict(current.get(nid, spec.raw_params) or {})
        raw = {**old_raw, **values}
        where = f"node '{nid}' params"
        try:
            params = build_params(cls.Params, raw, where)
        except ConfigError as exc:
            raise ControlError(str(exc), 422) from None
        old = build_params(cls.Params, old_raw, where)
        for name, direction in cls.stricter.items():
            if name in values and loosens(direction, getattr(old, name), getattr(params, name)):
                raise ControlError(f"node '{nid}' parameter {name!r} can only be made stricter while running "
                                   f"({_stricter_text(direction, getattr(old, name))}); a device profile is never loosened live", 422)
        ctx = NodeContext(node_id=nid, base_dir=graph.base_dir, wait_for_streams=False)
        inputs = [graph.streams[s] for s in spec.inputs]
        try:
            fresh = cls(params, inputs, ctx)
        except ConfigError as exc:
            raise ControlError(f"{where}: {exc}", 422) from None
        except (TypeError, ValueError) as exc:
            raise ControlError(f"{where}: {exc}", 422) from None
        if {k: _shape(m) for k, m in fresh.outputs.items()} != {k: _shape(m) for k, m in spec.outputs.items()}:
            raise ControlError(f"node '{nid}': this change would change its output streams; change it in the "
                               "configuration and restart", 409)
        _check_consumers(graph, nid, fresh, current)
        changed = {k: jsonable(getattr(params, k)) for k in values}
        out.append(LiveChange(nid, raw, params, changed))
    return out


def _shape(meta: Any) -> tuple:
    """What consumers of a stream rely on: name, kind, rate, channels, units, dtype, event codes (not its description)."""
    return (meta.name, meta.kind, meta.sfreq, tuple(meta.ch_names), tuple(meta.ch_types), tuple(meta.units), meta.dtype,
            tuple(sorted((meta.event_id or {}).items())))


def _check_consumers(graph: Any, nid: str, fresh: Any, current: dict[str, dict]) -> None:
    """The nodes fed by a changed node must accept what it now describes (a decimator's anti-aliasing check)."""
    new_meta = {m.name: m for m in fresh.outputs.values()}
    for stream in new_meta:
        for cid, _port in graph.consumers.get(stream, []):
            spec = graph.nodes[cid]
            cls = node_class(spec.type)
            if cls.category in ("sink", "stimulator"):
                continue
            inputs = [new_meta.get(s, graph.streams[s]) for s in spec.inputs]
            try:
                build = build_params(cls.Params, current.get(cid, spec.raw_params), f"node '{cid}' params")
                cls(build, inputs, NodeContext(node_id=cid, base_dir=graph.base_dir, wait_for_streams=False))
            except (ConfigError, TypeError, ValueError) as exc:
                raise ControlError(f"node '{cid}' (fed by '{nid}') would not accept the change: {exc}", 422) from None


def _stricter_text(direction: str, old: Any) -> str:
    if direction in ("true", "false"):
        return f"it may only be set to {direction}"
    return f"{'lower' if direction == 'lower' else 'higher'} than {old!r}" if old is not None else "any value"


def _with_live(graph: Any) -> str:
    names = [nid for nid, spec in graph.nodes.items() if getattr(node_class(spec.type), "live", ())]
    return ", ".join(names) or "none"
