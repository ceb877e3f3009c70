"""Graph configuration: YAML schema, node registry lookup, validation, placement.

A graph file::

    name: demo
    runtime:   {speed: realtime, duration_s: 60}
    transport: {scheme: ipc, policy: latest}
    processes: {stimulate: {restart: on-failure, max_restarts: 3}}
    nodes:
      - id: eeg
        type: file_replay
        process: acquire
        params: {path: ../replay_data/S003R01.edf}
      - id: bp
        type: bandpass
        inputs: [eeg]
        params: {l_freq: 1.0, h_freq: 40.0}

The whole file is validated before any socket or device opens: unknown keys
(with a suggestion), types, ranges, missing inputs, cycles, duplicate ids,
stream kinds, and each node's own checks against the metadata of its inputs
(channel names, rates). Every problem is reported, one line each, naming the
file, the line, the node and the fix.

Placement: a node runs in the process named by its ``process`` key. Without
one, sources go to ``acquire``, transforms to ``process``, controllers to
``control``, stimulators to ``stimulate``, and sinks join the process of
their first input.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError, StreamNotFound, did_you_mean
from .messages import SchemaError, StreamMeta
from .nodes import NODE_TYPES, Node, NodeContext, build_params, node_class, param
from .transport import TransportParams

__all__ = ["RuntimeParams", "ControlParams", "UiParams", "ParticipantParams", "ProcessParams", "NodeSpec", "ProcessSpec", "Graph", "load_graph", "parse_speed"]

ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
TOP_KEYS = ("name", "description", "runtime", "transport", "control", "ui", "processes", "nodes")
NODE_KEYS = ("id", "type", "inputs", "params", "process", "feedback")
DEFAULT_PROCESS = {"source": "acquire", "transform": "process", "controller": "control", "stimulator": "stimulate"}


def parse_speed(value: Any) -> str | float:
    """``"realtime"``, ``"max"`` or a positive factor (``8``, ``"8"``, ``"8x"``)."""
    if value in ("realtime", "max"):
        return value
    try:
        v = float(str(value).rstrip("x"))
    except ValueError:
        raise ConfigError(f"speed={value!r}: use 'realtime', 'max' or a factor such as 4") from None
    if not 0 < v <= 1e6:
        raise ConfigError(f"speed={value!r} must be a factor > 0")
    return "realtime" if v == 1.0 else v


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeParams:
    """The ``runtime:`` section."""

    speed: str | float = param("realtime", doc="'realtime', 'max' (virtual clock) or a speed factor")
    duration_s: float | None = param(None, gt=0, doc="stop after this many seconds of real time")
    status_interval_s: float = param(1.0, gt=0, le=60)
    startup_timeout_s: float = param(120.0, gt=0, doc="time allowed for every process to start and compile")
    stop_timeout_s: float = param(1.5, gt=0, le=10, doc="Ctrl-C: time allowed to drain before processes are killed")
    time_origin: Literal["zero", "lsl"] = param("zero", doc="stream time of the first sample: 0 (replays give identical timestamps run after run) or the LSL clock at start")
    prewarm_ms: float = param(0.5, ge=0, le=10, doc="rehearse the path of a source's next chunk this long before it is due (0: off)")
    spin_ms: float = param(0.0, ge=0, le=20, doc="processes fed by other processes poll without sleeping for this long around each predicted input (0: off); costs that much CPU per message")
    cpu_dma_latency_us: int | None = param(None, ge=0, doc="Linux: hold this PM QoS CPU latency (0: no deep idle states) while running; needs write access to /dev/cpu_dma_latency")
    realtime_priority: int | None = param(None, ge=1, le=99, doc="Linux: run the graph's processes (not the supervisor) with SCHED_FIFO at this priority once they are ready, so that nothing else on the machine (a browser, the pages' server) delays the loop; needs root, CAP_SYS_NICE or an rtprio limit")
    restart: Literal["never", "on-failure"] = param("on-failure", doc="default restart policy of processes")
    max_restarts: int = param(3, ge=0)
    restart_backoff_s: float = param(0.5, ge=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "speed", parse_speed(self.speed))


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlParams:
    """The ``control:`` section: the control server (REST + WebSocket) of a running graph."""

    enabled: bool | Literal["auto"] = param("auto", doc="serve the control API while the graph runs; auto: unless the run is as fast as possible "
                                             "(speed max: a replay nobody steers); false: no server (rtneuro stop --now still works)")
    host: str = param("127.0.0.1", doc="address to listen on; anything but loopback needs tls_cert, tls_key and a tokens folder")
    port: int = param(0, ge=0, le=65535, doc="TCP port (0: a free one, listed for the command line)")
    tls_cert: str | None = param(None, doc="PEM certificate (rtneuro keys DIR --tls HOST); relative to the graph file")
    tls_key: str | None = param(None, doc="PEM private key of tls_cert (mode 0600)")
    tokens: str | None = param(None, doc="tokens folder (rtneuro keys DIR --token NAME --role steer|observer); default ~/.config/rtneuro/tokens")
    wait_s: float = param(2.0, gt=0, le=60, doc="a parameter change not applied within this long is answered 'pending' (its ack follows on the WebSocket)")

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("control: give both tls_cert and tls_key, or neither")

    def serves(self, speed: str | float) -> bool:
        """Whether a run at ``speed`` serves the API (``auto``: every run but one as fast as possible)."""
        return self.enabled if isinstance(self.enabled, bool) else speed != "max"


@dataclass(frozen=True, slots=True, kw_only=True)
class ToneParams:
    """``ui.participant.tone``: a Web Audio tone that follows the feedback value."""

    follows: Literal["none", "pitch", "volume"] = param("none", doc="what of the tone follows the value")
    f_min_hz: float = param(220.0, gt=20, le=20000, doc="pitch at the participant display's min (and the tone's pitch when only the volume follows)")
    f_max_hz: float = param(880.0, gt=20, le=20000, doc="pitch at max")


@dataclass(frozen=True, slots=True, kw_only=True)
class CursorParams:
    """``ui.participant.cursor``: the 2-D cursor task (columns of the feedback stream)."""

    x: str | int = param("cursor_x", doc="column of the cursor's x (name or index)")
    y: str | int = param("cursor_y", doc="column of the cursor's y")
    target_x: str | int = param("target_x", doc="column of the target's x")
    target_y: str | int = param("target_y", doc="column of the target's y")
    workspace: float = param(0.2, gt=0, doc="the display spans +-workspace on each axis")
    target_radius: float = param(0.015, gt=0, doc="radius of the target drawn (workspace units)")


@dataclass(frozen=True, slots=True, kw_only=True)
class ParticipantParams:
    """``ui.participant``: what the participant display shows, and from which stream."""

    stream: str = param(doc="the feedback stream (a feature stream, e.g. a bandpower node's id)")
    channel: str | int = param(0, doc="its column: index or channel name")
    display: Literal["bar", "thermometer", "size", "colour", "score", "cursor"] = param("bar", doc="how the value is shown")
    min: float = param(0.0, doc="the value shown empty / smallest / coldest")
    max: float = param(1.0, doc="the value shown full / largest / warmest")
    target: tuple[float, float] | None = param(None, doc="target zone [low, high]: drawn on bar and thermometer; the score counts seconds in it")
    title: str = param("", doc="one line of text above the display")
    tone: dict[str, Any] | None = param(None, doc="a tone that follows the value: {follows: pitch|volume, f_min_hz, f_max_hz}")
    cursor: dict[str, Any] | None = param(None, doc="display cursor: {x, y, target_x, target_y, workspace, target_radius} (columns of the stream)")

    def __post_init__(self) -> None:
        if not self.max > self.min:
            raise ConfigError(f"ui.participant: max ({self.max}) must be above min ({self.min})")
        if self.target is not None and not self.target[1] > self.target[0]:
            raise ConfigError(f"ui.participant.target {list(self.target)}: give [low, high] with high > low")
        if self.tone is not None:
            build_params(ToneParams, self.tone, "ui.participant.tone")
        if self.cursor is not None:
            build_params(CursorParams, self.cursor, "ui.participant.cursor")

    def resolve(self, meta: StreamMeta) -> dict[str, Any]:
        """What the participant display is told in its hello: columns of ``meta`` resolved to indices.

        Raises
        ------
        ConfigError
            A column the stream does not have.
        """
        spec: dict[str, Any] = {"stream": self.stream, "display": self.display, "min": self.min, "max": self.max,
                                "target": list(self.target) if self.target else None, "title": self.title,
                                "tone": asdict(build_params(ToneParams, self.tone or {}, "ui.participant.tone")),
                                "sfreq": meta.sfreq, "channel_names": list(meta.ch_names)}
        if self.display == "cursor":
            cur = build_params(CursorParams, self.cursor or {}, "ui.participant.cursor")
            spec["cursor"] = {"workspace": cur.workspace, "target_radius": cur.target_radius,
                              **{f"{k}_index": column_index(meta, getattr(cur, k), f"ui.participant.cursor.{k}")
                                 for k in ("x", "y", "target_x", "target_y")}}
            spec["channel"] = spec["cursor"]["x_index"]
        else:
            spec["channel"] = column_index(meta, self.channel, "ui.participant.channel")
        return spec


@dataclass(frozen=True, slots=True, kw_only=True)
class UiParams:
    """The ``ui:`` section: the operator dashboard and the participant display, served by the control server."""

    enabled: bool = param(False, doc="serve the pages (rtneuro run --ui turns it on); needs the control server")
    history_s: float = param(30.0, gt=0, le=600, doc="seconds of each viewed stream the server keeps for the pages (at most 32 MB per stream)")
    frame_rate: float = param(30.0, gt=0, le=120, doc="binary frames per second sent to each browser, at most")
    traces: list[str] | None = param(None, doc="streams the dashboard opens with (default: the first signal stream)")
    participant: dict[str, Any] | None = param(None, doc="the participant display: {stream, channel, display, min, max, target, title, tone, cursor}")

    def participant_params(self) -> ParticipantParams | None:
        return None if self.participant is None else build_params(ParticipantParams, self.participant, "ui.participant")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessParams:
    """An entry of the ``processes:`` section."""

    restart: Literal["never", "on-failure"] | None = param(None, doc="default: runtime.restart")
    max_restarts: int | None = param(None, ge=0)
    host: str | None = param(None, doc="tcp: address of the host this process runs on; it binds there (default transport.host)")
    launch: Literal["local", "remote"] = param("local", doc="local: started by the supervisor; remote: started by hand on its host with 'rtneuro serve'")


@dataclass
class NodeSpec:
    id: str
    type: str
    params: Any
    raw_params: dict
    inputs: list[str]
    process: str
    line: int
    category: str = ""
    outputs: dict[str, StreamMeta] = field(default_factory=dict)
    #: streams fed back into a source that models a system (a simulated brain): not dependencies
    feedback: list[str] = field(default_factory=list)


@dataclass
class ProcessSpec:
    name: str
    service: str
    restart: str
    max_restarts: int
    host: str
    launch: str = "local"
    nodes: list[str] = field(default_factory=list)


@dataclass
class Graph:
    """A validated graph: nodes in topological order, streams, placement."""

    path: Path
    base_dir: Path
    name: str
    description: str
    runtime: RuntimeParams
    transport: TransportParams
    nodes: dict[str, NodeSpec]
    processes: dict[str, ProcessSpec]
    streams: dict[str, StreamMeta]
    producer: dict[str, str]
    consumers: dict[str, list[tuple[str, int]]]
    #: validated without waiting for live streams: node id -> what waits for its stream (absent or declared)
    waiting: dict[str, str] = field(default_factory=dict)
    #: nodes not checked because they depend on a live stream that was not there and is not declared
    unchecked: list[str] = field(default_factory=list)
    #: the control server's settings
    control: ControlParams = field(default_factory=ControlParams)
    #: the browser pages' settings
    ui: UiParams = field(default_factory=UiParams)

    def stream_process(self, stream: str) -> str:
        return self.nodes[self.producer[stream]].process

    def remote_consumers(self, stream: str) -> list[str]:
        """Processes other than the producer's that consume ``stream``."""
        home = self.stream_process(stream)
        return sorted({self.nodes[n].process for n, _ in self.consumers.get(stream, []) if self.nodes[n].process != home})

    def to_plan(self) -> dict:
        """A JSON-able description that services rebuild their nodes from."""
        return {
            "path": str(self.path),
            "base_dir": str(self.base_dir),
            "name": self.name,
            "runtime": {k: v for k, v in asdict(self.runtime).items()},
            "transport": asdict(self.transport),
            "nodes": [
                {"id": s.id, "type": s.type, "params": s.raw_params, "inputs": s.inputs, "process": s.process, "line": s.line,
                 "feedback": s.feedback}
                for s in self.nodes.values()
            ],
            "processes": {p.name: asdict(p) for p in self.processes.values()},
            "streams": {k: m.to_dict() for k, m in self.streams.items()},
            "producer": self.producer,
            "consumers": {k: [list(c) for c in v] for k, v in self.consumers.items()},
        }


# -- YAML with line numbers ---------------------------------------------------


class _LineDict(dict):
    line = 0
    key_lines: dict


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _LineDict:
    out = _LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: key {key!r} appears twice")
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _plain(obj: Any) -> Any:
    """Line-tracking dicts back to plain JSON-able values."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def _read_yaml(path: Path) -> Any:
    if not path.exists():
        raise ConfigError(f"configuration file not found: {path}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{path}:{exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None


# -- validation ---------------------------------------------------------------


class _Errors:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[str] = []

    def add(self, line: int | None, msg: str) -> None:
        where = f"{self.path}:{line}" if line else f"{self.path}"
        self.items.append(f"{where}: {msg}")

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError("\n".join(self.items))


def _line(d: Any, key: str | None = None) -> int | None:
    if isinstance(d, _LineDict):
        return d.key_lines.get(key, d.line) if key else d.line
    return None


def _section(doc: dict, key: str, raw: dict, cls: type, errors: _Errors) -> Any:
    try:
        return build_params(cls, raw, key)
    except ConfigError as exc:
        errors.add(_line(doc, key), str(exc))
        return cls()


def load_graph(path: str | Path, *, overrides: dict | None = None, base_dir: str | Path | None = None,
               extra_nodes: list[dict] | None = None, extra_processes: dict | None = None,
               wait_for_streams: bool = True) -> Graph:
    """Read and validate a graph file.

    Parameters
    ----------
    path : str or Path
        The YAML file.
    overrides : dict or None
        Values replacing those of the ``runtime:`` section (``speed``,
        ``duration_s``) or of ``transport:`` (keys prefixed ``transport.``).
    base_dir : path or None
        Folder relative paths are resolved against (default: the file's).
    extra_nodes : list of dict or None
        Nodes added to the file's (``rtneuro run --record`` adds its recorder).
    extra_processes : dict or None
        Process settings added to the file's ``processes:``.
    wait_for_streams : bool
        False checks the graph without waiting for live streams that are not
        there (``rtneuro validate``): such inputs are described from their
        declared parameters, listed in ``Graph.waiting``, and the nodes that
        cannot be checked without them in ``Graph.unchecked``.

    Raises
    ------
    ConfigError
        Listing every problem found, one per line.
    """
    path = Path(path)
    doc = _read_yaml(path)
    errors = _Errors(path)
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a graph file must be a mapping with a 'nodes' list")
    for key in doc:
        if key not in TOP_KEYS:
            errors.add(_line(doc, key), f"unknown section {key!r}{did_you_mean(key, TOP_KEYS)}; allowed: {', '.join(TOP_KEYS)}")
    overrides = overrides or {}
    rt_raw = dict(doc.get("runtime") or {})
    tr_raw = dict(doc.get("transport") or {})
    ct_raw = dict(doc.get("control") or {})
    ui_raw = dict(doc.get("ui") or {})
    for k, v in overrides.items():
        if v is None:
            continue
        if k.startswith("transport."):
            tr_raw[k.split(".", 1)[1]] = v
        elif k.startswith("control."):
            ct_raw[k.split(".", 1)[1]] = v
        elif k.startswith("ui."):
            ui_raw[k.split(".", 1)[1]] = v
        else:
            rt_raw[k] = v
    runtime = _section(doc, "runtime", rt_raw, RuntimeParams, errors)
    transport = _section(doc, "transport", tr_raw, TransportParams, errors)
    control = _section(doc, "control", ct_raw, ControlParams, errors)
    ui = _section(doc, "ui", ui_raw, UiParams, errors)
    try:
        transport.check()
    except ConfigError as exc:
        errors.add(_line(doc, "transport"), str(exc))
    if runtime.speed == "max" and transport.policy != "lossless":
        # As fast as possible only makes sense without loss: a fast producer
        # must wait for its consumers, or replays would not be reproducible.
        transport = TransportParams(**{**asdict(transport), "policy": "lossless"})

    proc_raw = doc.get("processes") or {}
    proc_params: dict[str, ProcessParams] = {}
    if not isinstance(proc_raw, dict):
        errors.add(_line(doc, "processes"), "'processes' must be a mapping of process name to settings")
        proc_raw = {}
    if extra_processes:
        proc_raw = {**proc_raw, **extra_processes}
    for name, raw in proc_raw.items():
        if not isinstance(name, str) or not ID_RE.match(name):
            errors.add(_line(proc_raw, name), f"process name {name!r} must start with a letter and use letters, digits, '_' or '-'")
            continue
        try:
            proc_params[name] = build_params(ProcessParams, raw, f"process '{name}'")
        except ConfigError as exc:
            errors.add(_line(proc_raw, name), str(exc))

    nodes_raw = doc.get("nodes")
    if isinstance(nodes_raw, list) and nodes_raw and extra_nodes:
        nodes_raw = [*nodes_raw, *extra_nodes]
    if not isinstance(nodes_raw, list) or not nodes_raw:
        errors.add(_line(doc, "nodes"), "'nodes' must be a non-empty list of nodes (each with 'id' and 'type')")
        errors.raise_if_any()
        nodes_raw = []
    specs: dict[str, NodeSpec] = {}
    classes: dict[str, type[Node] | None] = {}
    for i, raw in enumerate(nodes_raw):
        line = _line(raw) or _line(doc, "nodes")
        if not isinstance(raw, dict):
            errors.add(line, f"nodes[{i}] must be a mapping with 'id' and 'type'")
            continue
        nid = raw.get("id")
        label = f"node '{nid}'" if isinstance(nid, str) else f"nodes[{i}]"
        for key in raw:
            if key not in NODE_KEYS:
                errors.add(_line(raw, key), f"{label}: unknown key {key!r}{did_you_mean(key, NODE_KEYS)}; allowed: {', '.join(NODE_KEYS)}")
        if not isinstance(nid, str) or not ID_RE.match(nid):
            errors.add(line, f"{label}: 'id' must be a name starting with a letter, using letters, digits, '_' or '-' (no dots)")
            continue
        if nid in specs:
            errors.add(line, f"{label}: duplicate id (first defined on line {specs[nid].line}); ids must be unique")
            continue
        tname = raw.get("type")
        cls = params = None
        try:
            if not isinstance(tname, str):
                raise ConfigError(f"missing 'type'; known types: {', '.join(sorted(NODE_TYPES))}")
            cls = node_class(tname)
        except ConfigError as exc:
            errors.add(_line(raw, "type"), f"{label}: {exc}")
        if cls is not None:
            label = f"node '{nid}' ({tname})"
            try:
                params = build_params(cls.Params, raw.get("params"), "params")
            except ConfigError as exc:
                errors.add(_line(raw, "params"), f"{label}: {exc}")
        inputs = raw.get("inputs", [])
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(s, str) for s in inputs):
            errors.add(_line(raw, "inputs"), f"{label}: 'inputs' must be a list of stream names")
            inputs = []
        proc = raw.get("process")
        if proc is not None and (not isinstance(proc, str) or not ID_RE.match(proc)):
            errors.add(_line(raw, "process"), f"{label}: 'process' must be a process name")
            proc = None
        feedback = raw.get("feedback", [])
        if isinstance(feedback, str):
            feedback = [feedback]
        if not isinstance(feedback, list) or not all(isinstance(s, str) for s in feedback):
            errors.add(_line(raw, "feedback"), f"{label}: 'feedback' must be a list of stream names")
            feedback = []
        if feedback and cls is not None and not getattr(cls, "feedback_kinds", ()):
            errors.add(_line(raw, "feedback"), f"{label}: takes no feedback; only a source that models a system "
                       "(such as sim_brain) does; use 'inputs' for a processing node")
            feedback = []
        # A node with an error is kept (without class or parameters) so that
        # its consumers do not report it as missing: one problem, one line.
        specs[nid] = NodeSpec(nid, str(tname), params, _plain(raw.get("params") or {}), list(inputs), proc or "",
                              line or 0, cls.category if cls else "", feedback=list(feedback))
        classes[nid] = cls if params is not None else None

    # graph shape: inputs exist, no cycles
    deps: dict[str, list[str]] = {}
    for nid, spec in specs.items():
        deps[nid] = []
        for s in spec.inputs:
            owner = s.split(".", 1)[0]
            if owner not in specs:
                known = list(specs)
                errors.add(spec.line, f"node '{nid}': input '{s}' is not produced by any node{did_you_mean(owner, known)}")
            elif owner == nid:
                errors.add(spec.line, f"node '{nid}': takes its own output '{s}' as input; remove it")
            else:
                deps[nid].append(owner)
    order = _toposort(deps, specs, errors)

    # build every node in order, inferring stream metadata
    streams: dict[str, StreamMeta] = {}
    producer: dict[str, str] = {}
    consumers: dict[str, list[tuple[str, int]]] = {}
    base = Path(base_dir) if base_dir is not None else path.parent
    waiting: dict[str, str] = {}
    unchecked: list[str] = []
    for nid in order:
        spec, cls = specs[nid], classes[nid]
        if cls is None:
            continue  # already reported
        label = f"node '{nid}' ({spec.type})"
        n_in = len(spec.inputs)
        if not cls.min_inputs <= n_in <= cls.max_inputs:
            want = f"{cls.min_inputs}" if cls.min_inputs == cls.max_inputs else f"{cls.min_inputs} to {cls.max_inputs}"
            errors.add(spec.line, f"{label}: takes {want} input(s), got {n_in}")
            continue
        metas: list[StreamMeta] = []
        for k, s in enumerate(spec.inputs):
            meta = streams.get(s)
            if meta is None:
                owner = s.split(".", 1)[0]
                if (owner in waiting or owner in unchecked) and not specs[owner].outputs:
                    unchecked.append(nid)  # its input waits for a live stream
                elif owner in specs and specs[owner].outputs:
                    ports = [m for m in specs[owner].outputs.values()]
                    errors.add(spec.line, f"{label}: node '{owner}' has no output '{s}'; it has {[m.name for m in ports]}")
                break  # otherwise its producer had an error, reported already
            allowed = cls.input_kinds[min(k, len(cls.input_kinds) - 1)].split("|")
            if meta.kind not in allowed:
                errors.add(spec.line, f"{label}: input '{s}' is a '{meta.kind}' stream but this input takes {' or '.join(repr(a) for a in allowed)}")
                break
            metas.append(meta)
        if len(metas) != n_in:
            continue
        try:
            node = cls(spec.params, metas, NodeContext(node_id=nid, base_dir=base, wait_for_streams=wait_for_streams))
        except StreamNotFound as exc:
            waiting[nid] = str(exc)
            continue
        except ConfigError as exc:
            errors.add(spec.line, f"{label}: {exc}")
            continue
        waits = getattr(node, "waiting_for", None)  # a live input described from its declaration
        if waits:
            waiting[nid] = str(waits)
        spec.outputs = dict(node.outputs)
        for meta in node.outputs.values():
            try:  # what receivers will check: a node that announces a bad stream fails here, not at start
                StreamMeta.from_dict(meta.to_dict())
            except SchemaError as exc:
                errors.add(spec.line, f"{label}: output '{meta.name}': {exc}; this is a bug in node type '{spec.type}'")
            streams[meta.name] = meta
            producer[meta.name] = nid
        for k, s in enumerate(spec.inputs):
            consumers.setdefault(s, []).append((nid, k))

    # feedback: streams from later in the graph back into a simulated system (not dependencies: no cycle)
    for nid in order:
        spec, cls = specs[nid], classes[nid]
        for k, s in enumerate(spec.feedback):
            meta = streams.get(s)
            if meta is None:
                if s.split(".", 1)[0] in waiting or s.split(".", 1)[0] in unchecked:
                    continue  # from a live stream that is not there: nothing to check it against
                if s.split(".", 1)[0] in specs:
                    errors.add(spec.line, f"node '{nid}': feedback '{s}' is not a stream of the graph; streams: {sorted(streams)}")
                else:
                    errors.add(spec.line, f"node '{nid}': feedback '{s}' is not produced by any node{did_you_mean(s.split('.', 1)[0], list(specs))}")
                continue
            kinds = getattr(cls, "feedback_kinds", ("sig",))
            if meta.kind not in kinds:
                errors.add(spec.line, f"node '{nid}': feedback '{s}' is a '{meta.kind}' stream; it takes {' or '.join(map(repr, kinds))}")
                continue
            check = getattr(cls, "check_feedback", None)
            if check is not None and spec.params is not None:
                try:
                    check(spec.params, k, meta)
                except ConfigError as exc:
                    errors.add(spec.line, f"node '{nid}': feedback '{s}': {exc}")
                    continue
            consumers.setdefault(s, []).append((nid, len(spec.inputs) + k))  # ports after the inputs

    # placement
    for nid in order:
        spec = specs[nid]
        if not spec.process:
            if spec.category == "sink" and spec.inputs and spec.inputs[0].split(".", 1)[0] in specs:
                spec.process = specs[spec.inputs[0].split(".", 1)[0]].process
            else:
                spec.process = DEFAULT_PROCESS.get(spec.category, "process")
    for name in proc_params:
        if not any(s.process == name for s in specs.values()):
            errors.add(_line(proc_raw, name), f"process '{name}' holds no node; remove it or set 'process: {name}' on a node")
    live = [nid for nid in order if getattr(classes[nid], "realtime_only", False)]
    if live:
        if runtime.speed != "realtime":
            errors.add(_line(doc, "runtime"), f"nodes {live} read live LSL streams: the graph runs in real time only; "
                       f"remove speed={runtime.speed!r}")
        # live data carries LSL timestamps: stream time is the LSL clock
        runtime = replace(runtime, time_origin="lsl")
    by_process: dict[str, set[bool]] = {}
    for nid in order:
        cls = classes[nid]
        if cls is not None and cls.category == "source":
            by_process.setdefault(specs[nid].process, set()).add(bool(getattr(cls, "paced", True)))
    for proc_name, kinds in by_process.items():
        if len(kinds) > 1:
            errors.add(None, f"process '{proc_name}' holds live and paced (replayed or generated) sources; "
                       "place them in different processes")
    for name, pp in proc_params.items():
        if pp.launch == "remote" and transport.scheme != "tcp":
            errors.add(_line(proc_raw, name), f"process '{name}' runs on another host: set transport.scheme: tcp "
                       "and transport.host to the address of this host")
    if transport.keys is not None:  # relative to the graph file, like every other path
        transport = replace(transport, keys=str((base / Path(transport.keys).expanduser()).resolve()))
    problem = transport.security_problem(pp.host for pp in proc_params.values() if pp.host)
    if problem:
        errors.add(_line(doc, "transport"), problem)
    _check_ui(ui, control, runtime, streams, doc, errors)
    errors.raise_if_any()

    processes: dict[str, ProcessSpec] = {}
    for nid in order:
        spec = specs[nid]
        proc = processes.get(spec.process)
        if proc is None:
            pp = proc_params.get(spec.process, ProcessParams())
            proc = ProcessSpec(
                name=spec.process,
                service="",
                restart=pp.restart or runtime.restart,
                max_restarts=runtime.max_restarts if pp.max_restarts is None else pp.max_restarts,
                host=pp.host or transport.host,
                launch=pp.launch,
            )
            processes[spec.process] = proc
        proc.nodes.append(nid)
    for proc in processes.values():
        cats = {specs[n].category for n in proc.nodes}
        proc.service = ("stimulate" if "stimulator" in cats else "acquire" if "source" in cats
                        else "control" if "controller" in cats else "process")
    return Graph(
        path=path, base_dir=base, name=str(doc.get("name") or path.stem), description=str(doc.get("description") or ""),
        runtime=runtime, transport=transport, nodes={n: specs[n] for n in order}, processes=processes,
        streams=streams, producer=producer, consumers=consumers, waiting=waiting, unchecked=unchecked, control=control,
        ui=ui,
    )


def column_index(meta: StreamMeta, col: str | int, what: str) -> int:
    """The index of column ``col`` (a name or an index) of ``meta``, or a ConfigError naming the columns."""
    n = meta.n_channels
    if isinstance(col, int):
        if not 0 <= col < n:
            raise ConfigError(f"{what}: column {col} is out of range; stream '{meta.name}' has {n} (0 to {n - 1})")
        return col
    if col not in meta.ch_names:
        names = ", ".join(list(meta.ch_names)[:12])
        raise ConfigError(f"{what}: stream '{meta.name}' has no column {col!r}{did_you_mean(col, meta.ch_names)}; its columns: {names}")
    return list(meta.ch_names).index(col)


def _check_ui(ui: UiParams, control: ControlParams, runtime: RuntimeParams, streams: dict[str, StreamMeta],
              doc: dict, errors: _Errors) -> None:
    """The ``ui:`` section against the graph: the streams it names exist and have the columns it names."""
    where = _line(doc, "ui")
    if ui.enabled and control.enabled is False:
        errors.add(where, "ui.enabled needs the control server: remove control.enabled: false (or run without --control off)")
    for name in ui.traces or []:
        if name not in streams:
            errors.add(where, f"ui.traces: no stream {name!r}{did_you_mean(name, list(streams))}")
    try:
        part = ui.participant_params()
    except ConfigError as exc:
        errors.add(where, str(exc))
        return
    if part is None:
        return
    meta = streams.get(part.stream)
    if meta is None:
        errors.add(where, f"ui.participant.stream: no stream {part.stream!r}{did_you_mean(part.stream, list(streams))}; "
                   "name a feature stream (a node's id, or id.port)")
        return
    if meta.kind not in ("sig", "feat"):
        errors.add(where, f"ui.participant.stream '{part.stream}' is a {meta.kind} stream; the display follows a feature or signal stream")
        return
    try:
        part.resolve(meta)
    except ConfigError as exc:
        errors.add(where, str(exc))


def _toposort(deps: dict[str, list[str]], specs: dict[str, NodeSpec], errors: _Errors) -> list[str]:
    """Kahn's algorithm, keeping file order among ready nodes; report cycles."""
    indeg = {n: len(set(d)) for n, d in deps.items()}
    users: dict[str, list[str]] = {n: [] for n in deps}
    for n, ds in deps.items():
        for d in set(ds):
            users[d].append(n)
    ready = [n for n in deps if indeg[n] == 0]
    order = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for u in users[n]:
            indeg[u] -= 1
            if indeg[u] == 0:
                ready.append(u)
        ready.sort(key=list(deps).index)
    left = [n for n in deps if n not in order]
    if left:
        cycle = _find_cycle(left, deps)
        errors.add(specs[cycle[0]].line, f"the graph has a cycle: {' -> '.join(cycle + [cycle[0]])}; feedback must go through a stimulator or a delay, not a data input")
    return order


def _find_cycle(nodes: list[str], deps: dict[str, list[str]]) -> list[str]:
    start = nodes[0]
    path, seen = [start], {start}
    cur = start
    while True:
        nxt = next(d for d in deps[cur] if d in nodes)
        if nxt in seen:
            return list(reversed(path[path.index(nxt):]))
        path.append(nxt)
        seen.add(nxt)
        cur = nxt


def plan_to_json(graph: Graph) -> str:
    return json.dumps(graph.to_plan(), indent=1)
